//! Whether the gateway should take traffic: it is ready while its store takes work and it is not
//! draining for shutdown. The one answer that `/readyz` and the gRPC health service both give.
//! Depends only on the store's error type: names neither gRPC nor HTTP, and never the store
//! itself (it is handed a probe), so it can be tested without one.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::store;

/// Why the gateway is not ready.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NotReady {
    /// Shutdown has begun: calls in flight finish, new ones should go elsewhere.
    #[error("draining for shutdown")]
    Draining,
    /// The store refuses every transaction (see [`store::Store::failure`]).
    #[error("the store takes no more work: {0}")]
    Store(store::Error),
}

/// The gateway's readiness, asked afresh at every check (a failed store is seen at once).
pub(crate) struct Readiness {
    draining: AtomicBool,
    /// Why the store takes no more work, if it does not.
    store_failure: Box<dyn Fn() -> Option<store::Error> + Send + Sync>,
}

impl Readiness {
    /// Ready until `store_failure` names a failure or draining begins.
    pub(crate) fn new(
        store_failure: impl Fn() -> Option<store::Error> + Send + Sync + 'static,
    ) -> Self {
        Readiness {
            draining: AtomicBool::new(false),
            store_failure: Box::new(store_failure),
        }
    }

    /// Shutdown has begun: not ready from now on, for good.
    pub(crate) fn begin_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// `Ok` while the gateway should take traffic.
    pub(crate) fn check(&self) -> Result<(), NotReady> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(NotReady::Draining);
        }
        match (self.store_failure)() {
            Some(error) => Err(NotReady::Store(error)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn ready_until_the_store_fails_or_draining_begins() {
        let failure = Arc::new(Mutex::new(None));
        let probe = Arc::clone(&failure);
        let readiness = Readiness::new(move || probe.lock().unwrap().clone());
        assert_eq!(readiness.check(), Ok(()));

        let broken = store::Error::Io("no space left on device".into());
        *failure.lock().unwrap() = Some(broken.clone());
        assert_eq!(readiness.check(), Err(NotReady::Store(broken)));

        *failure.lock().unwrap() = None;
        assert_eq!(readiness.check(), Ok(()));
        readiness.begin_draining();
        assert_eq!(readiness.check(), Err(NotReady::Draining));
    }
}
