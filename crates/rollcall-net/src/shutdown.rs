//! Shutdown signals: turning SIGINT (Ctrl-C) and SIGTERM into a
//! cancellation that every task of the process watches.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::NetError;

/// Resolves on the first SIGINT or SIGTERM (Ctrl-C elsewhere than Unix).
pub async fn wait_for_signal() -> Result<(), NetError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// A token cancelled on the first SIGINT or SIGTERM, by a task on
/// `tracker` that also ends when the token is cancelled another way.
///
/// Must be called inside a tokio runtime.
pub fn ctrl_c_token(tracker: &TaskTracker) -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tracker.spawn(async move {
        tokio::select! {
            result = wait_for_signal() => {
                match result {
                    Ok(()) => info!("shutdown signal received"),
                    Err(error) => tracing::warn!(%error, "cannot listen for signals; shutting down"),
                }
                cancel.cancel();
            }
            () = cancel.cancelled() => {}
        }
    });
    token
}
