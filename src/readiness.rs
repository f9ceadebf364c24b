//! Whether the gateway should take traffic: it is ready while its store takes work, its data disk
//! is above the free-space low-water mark, its clinical data is the store's and it is not
//! draining for shutdown. The one answer
//! that `/readyz` and the gRPC health service both give. Depends only on the store's error type:
//! names neither gRPC nor HTTP, and never the store or the disk itself (it is handed probes), so
//! it can be tested without them.

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
    /// The data disk is below its low-water mark: reads go on, new data is refused (the
    /// refusal's text).
    #[error("{0}")]
    DiskLow(String),
    /// Another gateway imported drug masters or a contraindication table that this one cannot
    /// load (the reason's text): it checks against the data it had. Not ready, for a check
    /// against older masters gives wrong findings — a drug the import added reported as
    /// unknown, a contraindication it added missed — and the gateways that loaded the import
    /// answer rightly: the balancer should send the calls to them.
    #[error("{0}")]
    ClinicalStale(String),
}

/// The gateway's readiness, asked afresh at every check (a failed store is seen at once).
pub(crate) struct Readiness {
    draining: AtomicBool,
    /// Why the store takes no more work, if it does not.
    store_failure: Box<dyn Fn() -> Option<store::Error> + Send + Sync>,
    /// Why new data is refused for want of disk space, while it is.
    disk_low: Box<dyn Fn() -> Option<String> + Send + Sync>,
    /// Why the clinical data in force is not the store's, while it is not.
    clinical_stale: Box<dyn Fn() -> Option<String> + Send + Sync>,
}

impl Readiness {
    /// Ready until `store_failure` names a failure, `disk_low` a shortage of disk space,
    /// `clinical_stale` imports not loaded, or draining begins.
    pub(crate) fn new(
        store_failure: impl Fn() -> Option<store::Error> + Send + Sync + 'static,
        disk_low: impl Fn() -> Option<String> + Send + Sync + 'static,
        clinical_stale: impl Fn() -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        Readiness {
            draining: AtomicBool::new(false),
            store_failure: Box::new(store_failure),
            disk_low: Box::new(disk_low),
            clinical_stale: Box::new(clinical_stale),
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
        if let Some(error) = (self.store_failure)() {
            return Err(NotReady::Store(error));
        }
        if let Some(why) = (self.disk_low)() {
            return Err(NotReady::DiskLow(why));
        }
        match (self.clinical_stale)() {
            Some(why) => Err(NotReady::ClinicalStale(why)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn ready_until_the_store_fails_the_disk_runs_low_the_data_is_stale_or_draining_begins() {
        let failure = Arc::new(Mutex::new(None));
        let low = Arc::new(Mutex::new(None));
        let stale = Arc::new(Mutex::new(None));
        let (probe, disk, imports) = (Arc::clone(&failure), Arc::clone(&low), Arc::clone(&stale));
        let readiness = Readiness::new(
            move || probe.lock().unwrap().clone(),
            move || disk.lock().unwrap().clone(),
            move || imports.lock().unwrap().clone(),
        );
        assert_eq!(readiness.check(), Ok(()));

        let unloadable = "the store's drug-master imports cannot be loaded".to_owned();
        *stale.lock().unwrap() = Some(unloadable.clone());
        assert_eq!(readiness.check(), Err(NotReady::ClinicalStale(unloadable)));
        *stale.lock().unwrap() = None;

        let short = "the data disk is nearly full".to_owned();
        *low.lock().unwrap() = Some(short.clone());
        assert_eq!(readiness.check(), Err(NotReady::DiskLow(short)));
        *low.lock().unwrap() = None;

        let broken = store::Error::Io("no space left on device".into());
        *failure.lock().unwrap() = Some(broken.clone());
        assert_eq!(readiness.check(), Err(NotReady::Store(broken)));

        *failure.lock().unwrap() = None;
        assert_eq!(readiness.check(), Ok(()));
        readiness.begin_draining();
        assert_eq!(readiness.check(), Err(NotReady::Draining));
    }
}
