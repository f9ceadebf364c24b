//! The server's deadline for unary calls, as a guard (`guard`): a call whose handler has not answered
//! within the deadline is answered DEADLINE_EXCEEDED, and its handler is dropped (work already
//! handed to the store may still commit, as with any deadline a client sets). Streaming methods
//! are exempt, found by their descriptors rather than listed by hand: a feed lives as long as its
//! client reads it, and is bounded by its own limits instead (see `feed`). tonic's own
//! `Server::timeout` is not used: it answers CANCELLED, and covers a streaming call only until
//! its response headers. Must not depend on the service layer or the store.

use std::{collections::HashSet, sync::Arc, time::Duration};

use prost_reflect::DescriptorPool;
use tonic::{Status, codegen::http};

use super::guard::{Guard, Pass, Until};

/// The paths (`/package.Service/Method`) of the streaming methods in encoded file descriptor
/// sets.
pub(crate) fn streaming_paths(descriptor_sets: &[&[u8]]) -> Result<HashSet<String>, String> {
    let mut paths = HashSet::new();
    for set in descriptor_sets {
        let pool = DescriptorPool::decode(*set).map_err(|e| e.to_string())?;
        for service in pool.services() {
            for method in service.methods() {
                if method.is_client_streaming() || method.is_server_streaming() {
                    paths.insert(format!("/{}/{}", service.full_name(), method.name()));
                }
            }
        }
    }
    Ok(paths)
}

/// The deadline of unary calls, as a [`Guard`].
#[derive(Debug, Clone)]
pub(crate) struct UnaryDeadline {
    deadline: Duration,
    exempt: Arc<HashSet<String>>,
}

impl UnaryDeadline {
    /// Unary calls get `deadline`; the methods whose paths are in `exempt` get none.
    pub(crate) fn new(deadline: Duration, exempt: Arc<HashSet<String>>) -> Self {
        UnaryDeadline { deadline, exempt }
    }
}

impl Guard for UnaryDeadline {
    type Hold = ();

    fn decide<B>(&self, request: &http::Request<B>) -> Result<Pass<()>, Status> {
        let exempt = self.exempt.contains(request.uri().path());
        Ok(Pass {
            hold: (),
            until: Until::Answered,
            deadline: (!exempt).then_some(self.deadline),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streaming_methods_are_found_in_the_descriptors() {
        let paths = streaming_paths(&[
            crate::wire::proto::DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ])
        .unwrap();
        for streaming in [
            "/rxgate.v1.EventService/WatchEvents",
            "/rxgate.v1.AdminService/ExportAudit",
            "/rxgate.v1.AdminService/ImportMaster",
            "/grpc.health.v1.Health/Watch",
        ] {
            assert!(paths.contains(streaming), "{streaming} in {paths:?}");
        }
        assert!(!paths.contains("/rxgate.v1.PrescriptionService/CheckPrescription"));
        assert!(!paths.contains("/grpc.health.v1.Health/Check"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_unary_call_is_answered_deadline_exceeded_and_a_stream_is_not() {
        use tower::{Layer, Service, ServiceExt};
        let slow = tower::service_fn(|_request: http::Request<()>| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(tonic::body::Body::empty()))
        });
        let exempt = Arc::new(HashSet::from(["/s.S/Stream".to_owned()]));
        let deadline = UnaryDeadline::new(Duration::from_secs(10), exempt);
        let mut service = super::super::guard::GuardLayer::new(deadline).layer(slow);
        let request = |path: &str| http::Request::builder().uri(path).body(()).unwrap();

        let started = tokio::time::Instant::now();
        let answer = service.ready().await.unwrap().call(request("/s.S/Unary"));
        let response = answer.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert_eq!(response.headers()["grpc-status"], "4");

        let answer = service.ready().await.unwrap().call(request("/s.S/Stream"));
        assert!(!answer.await.unwrap().headers().contains_key("grpc-status"));
        assert_eq!(started.elapsed(), Duration::from_secs(70));
    }
}
