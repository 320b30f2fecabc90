//! One module per `pipeweave` subcommand.

pub(crate) mod cancel;
pub(crate) mod completions;
pub(crate) mod db;
pub(crate) mod deploy;
pub(crate) mod dev;
pub(crate) mod dlq;
pub(crate) mod dry_run;
pub(crate) mod host;
pub(crate) mod init;
pub(crate) mod logs;
pub(crate) mod orchestrator;
pub(crate) mod register;
pub(crate) mod run;
pub(crate) mod services;
pub(crate) mod status;
pub(crate) mod test;
pub(crate) mod trigger;
pub(crate) mod validate;
pub(crate) mod visualize;

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
