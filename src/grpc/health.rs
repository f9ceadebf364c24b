//! The gRPC health service (`grpc.health.v1.Health`), told the truth: the server as a whole
//! (`""`) and every gateway service report SERVING only while the gateway is ready
//! ([`Readiness`]: a working store, room on the data disk, no drain). A failed store or a disk
//! below its low-water mark is seen within one follow period;
//! the drain at once, before any connection drains, and for as long as the drain delay lasts.
//! Depends on tonic-health and the readiness answer; knows nothing of the use cases.

use std::{sync::Arc, time::Duration};

use tokio::sync::Mutex;
use tonic::server::NamedService;
use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};

use super::Services;
use crate::{
    readiness::Readiness,
    wire::proto::v1::{
        admin_service_server::AdminServiceServer,
        dispensing_service_server::DispensingServiceServer,
        event_service_server::EventServiceServer, management_intake_server::ManagementIntakeServer,
        prescription_service_server::PrescriptionServiceServer,
    },
};

/// The names the health service answers for: the server as a whole, then each service.
const NAMES: [&str; 6] = [
    "",
    <PrescriptionServiceServer<Services> as NamedService>::NAME,
    <DispensingServiceServer<Services> as NamedService>::NAME,
    <AdminServiceServer<Services> as NamedService>::NAME,
    <EventServiceServer<Services> as NamedService>::NAME,
    <ManagementIntakeServer<Services> as NamedService>::NAME,
];

/// Keeps the health service's statuses in step with the gateway's readiness.
pub(crate) struct Health {
    reporter: HealthReporter,
    readiness: Arc<Readiness>,
    /// Whether SERVING is reported (`None` before the first report). Held while reporting, so
    /// a report computed before the drain cannot land after it.
    serving: Mutex<Option<bool>>,
}

impl Health {
    /// The health service, reporting the readiness of now.
    pub(crate) async fn start(
        readiness: Arc<Readiness>,
    ) -> (Arc<Health>, HealthServer<HealthService>) {
        let reporter = HealthReporter::new();
        let service = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
        let health = Arc::new(Health {
            reporter,
            readiness,
            serving: Mutex::new(None),
        });
        health.report().await;
        (health, service)
    }

    /// Reports the readiness of now to every name, if it changed.
    async fn report(&self) {
        self.report_with(&mut *self.serving.lock().await).await;
    }

    /// [`Health::report`] with the lock on what is reported already held.
    async fn report_with(&self, serving: &mut Option<bool>) {
        let ready = self.readiness.check();
        if *serving == Some(ready.is_ok()) {
            return;
        }
        let status = match &ready {
            Ok(()) => ServingStatus::Serving,
            // The store logs its own failure as an error, the disk watch a shortage as a
            // warning; a drain is routine.
            Err(why) => {
                tracing::info!(reason = %why, "grpc health: not serving");
                ServingStatus::NotServing
            }
        };
        for name in NAMES {
            self.reporter.set_service_status(name, status).await;
        }
        *serving = Some(ready.is_ok());
    }

    /// Checks the readiness every `period`, for as long as the task runs.
    pub(crate) async fn follow(self: Arc<Self>, period: Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            self.report().await;
        }
    }

    /// Shutdown begins: NOT_SERVING everywhere before this returns, for good.
    pub(crate) async fn begin_drain(&self) {
        let mut serving = self.serving.lock().await;
        self.readiness.begin_draining();
        self.report_with(&mut serving).await;
    }

    /// The connections are closing: every open `Watch` ends after its last answer (NOT_SERVING),
    /// so that no watcher holds the drain open (as `Gateway::close_feeds` does for event feeds).
    /// Later `Check` calls get NOT_FOUND.
    pub(crate) async fn end_watches(&self) {
        let mut reporter = self.reporter.clone();
        for name in NAMES {
            reporter.clear_service_status(name).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::Request;
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus as Status,
        health_server::Health as _,
    };

    use super::*;
    use crate::store;

    async fn status(service: &HealthService, name: &str) -> i32 {
        let request = Request::new(HealthCheckRequest {
            service: name.into(),
        });
        service.check(request).await.unwrap().into_inner().status
    }

    #[tokio::test]
    async fn a_failed_store_is_not_serving_and_a_drain_ends_the_statuses() {
        let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let probe = Arc::clone(&failed);
        let readiness = Arc::new(Readiness::new(
            move || {
                probe
                    .load(std::sync::atomic::Ordering::SeqCst)
                    .then_some(store::Error::Closed)
            },
            || None,
            || None,
        ));
        let (health, _) = Health::start(readiness).await;
        let service = HealthService::from_health_reporter(health.reporter.clone());
        for name in NAMES {
            assert_eq!(status(&service, name).await, Status::Serving as i32);
        }

        failed.store(true, std::sync::atomic::Ordering::SeqCst);
        health.report().await;
        for name in NAMES {
            assert_eq!(status(&service, name).await, Status::NotServing as i32);
        }
        failed.store(false, std::sync::atomic::Ordering::SeqCst);
        health.report().await;
        assert_eq!(status(&service, "").await, Status::Serving as i32);

        health.begin_drain().await;
        health.report().await;
        assert_eq!(status(&service, "").await, Status::NotServing as i32);
        health.end_watches().await;
        let request = Request::new(HealthCheckRequest { service: "".into() });
        let gone = service.check(request).await.unwrap_err();
        assert_eq!(gone.code(), tonic::Code::NotFound);
        health.report().await;
        assert!(
            service
                .check(Request::new(HealthCheckRequest::default()))
                .await
                .is_err()
        );
    }
}
