//! One module per `pipeweave` subcommand.

pub(crate) mod db;
pub(crate) mod dev;
pub(crate) mod host;
pub(crate) mod orchestrator;
pub(crate) mod register;
pub(crate) mod run;

/// Completes on Ctrl-C or SIGTERM, for commands that serve until stopped.
pub(crate) async fn stop_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut terminate) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = interrupt.await;
            return;
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
