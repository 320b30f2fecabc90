//! Wake-ups for the scheduler: `LISTEN pipeweave_runs` (the insert
//! trigger notifies once per statement), with the poll interval as the
//! fallback when the listening connection is down.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;

use crate::shutdown::Shutdown;

/// The channel the insert trigger notifies.
pub const CHANNEL: &str = "pipeweave_runs";

/// Listens for enqueue notifications and wakes `wake` for each, until
/// shutdown. Reconnects after a lost connection; while it is down, the
/// scheduler still polls.
pub async fn listen(pool: PgPool, wake: Arc<Notify>, shutdown: Shutdown) {
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            tracing::debug!("listening for enqueued runs");
            loop {
                listener.recv().await?;
                wake.notify_one();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            () = shutdown.wait() => return,
            result = connected => {
                if let Err(error) = result {
                    tracing::warn!(%error, "lost the LISTEN connection; polling until it is back");
                }
            }
        }
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
