//! A shutdown signal that background loops and the HTTP server wait on.

use tokio::sync::watch;

/// Cloneable handle: [`Shutdown::wait`] returns once shutdown began.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// Starts the shutdown of everything holding the paired [`Shutdown`].
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (ShutdownTrigger, Self) {
        let (sender, receiver) = watch::channel(false);
        (ShutdownTrigger(sender), Self(receiver))
    }

    /// Waits until shutdown begins (at once if it already has, or if the
    /// trigger was dropped).
    pub async fn wait(&self) {
        let mut receiver = self.0.clone();
        let _ = receiver.wait_for(|stopping| *stopping).await;
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }
}

impl ShutdownTrigger {
    /// Begins shutdown.
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}
