//! The gateway as a process that a service manager (systemd, Docker, Kubernetes) starts and
//! stops: SIGTERM or SIGINT begins the drain, a second one during the drain stops at once; the
//! manager hears when the gateway is ready and when it drains ([`Notifier`]); the ending is
//! logged and told as clean or not, for the exit code. Drives an [`app::Server`]; knows nothing
//! of what it serves.

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::{app, lifecycle::Ending, sd_notify::Notifier};

/// The handlers of the signals that stop the gateway. Installed before the server starts, so
/// that a signal during start-up drains it as soon as it runs instead of killing it.
pub struct StopSignals {
    terminate: Signal,
    interrupt: Signal,
}

impl StopSignals {
    pub fn install() -> std::io::Result<StopSignals> {
        Ok(StopSignals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }

    /// The name of the next stop signal, once it arrives.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }

    /// Tells `systemd` the gateway is ready, runs `server` until a signal stops it or it
    /// fails, and returns whether it ended cleanly (drained within the grace period). A
    /// second signal during the drain returns at once: the caller exits, cutting the calls in
    /// flight and leaving the store to its crash recovery.
    pub async fn serve(
        mut self,
        mut server: app::Server,
        systemd: &Notifier,
    ) -> anyhow::Result<bool> {
        systemd.ready();
        let signal = tokio::select! {
            signal = self.next() => signal,
            ending = server.stopped() => return Ok(reported(ending)),
        };
        tracing::info!(signal, "stop signal: draining");
        systemd.stopping();
        server.stop();
        tokio::select! {
            signal = self.next() => {
                tracing::error!(signal, "a second stop signal during the drain: stopping at once, calls in flight are cut");
                Ok(false)
            }
            ending = server.stopped() => Ok(reported(ending)),
        }
    }
}

/// Logs how the server ended; true if it drained and the store closed. A store that did not
/// close cleanly is an unclean stop (exit 1), whatever the drain did: its next opening
/// recovers it.
fn reported(ending: anyhow::Result<Ending>) -> bool {
    match ending {
        Ok(Ending::Drained) => {
            tracing::info!("rxgate stopped: drained, store closed");
            true
        }
        Ok(ending @ (Ending::GraceRanOut | Ending::Failed { .. })) => {
            tracing::error!(ending = %ending, "rxgate stopped uncleanly; store closed");
            false
        }
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "rxgate stopped; the store did not close"
            );
            false
        }
    }
}
