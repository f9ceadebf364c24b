//! The operations port (`/metrics`, `/healthz`, `/readyz`) and the gRPC health service against
//! hostile and unlucky clients: the real server in-process, requests over mutual TLS.

use crate::common::{self, exposition};

use std::{net::SocketAddr, time::Duration};

use common::{Harness, start_with};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinSet,
    time::timeout,
};
use tonic::{codegen::http::uri::PathAndQuery, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Long enough for a loaded machine; a hang, not slowness, is what these limits catch.
const PATIENCE: Duration = Duration::from_secs(60);

/// `GET path` on the operations port: the status code and the body.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: ops\r\nconnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_owned())
}

/// The samples of `/metrics`, read strictly.
async fn scrape(h: &Harness) -> (String, Vec<exposition::Sample>) {
    let (status, page) = get(h.metrics_addr, "/metrics").await;
    assert_eq!(status, 200, "{page}");
    let samples = exposition::parse(&page).unwrap_or_else(|e| panic!("unparseable /metrics: {e}"));
    (page, samples)
}

/// One unary call to `path` with an empty message; its status is whatever the server says.
async fn call(channel: Channel, path: String) {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = PathAndQuery::try_from(path).unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let answer = grpc.unary(tonic::Request::new(()), path, codec).await;
    assert!(answer.is_err(), "an unknown method answered");
}

/// Calls every path, 32 at a time.
async fn call_all(channel: &Channel, paths: impl IntoIterator<Item = String>) {
    let mut calls = JoinSet::new();
    for path in paths {
        if calls.len() == 32 {
            calls.join_next().await.unwrap().unwrap();
        }
        calls.spawn(call(channel.clone(), path));
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_share_one_series_and_the_page_stays_parseable() {
    // The 2,001 calls go out at once: an allowance that takes them all, so that every one is
    // answered UNIMPLEMENTED (the per-institution rate is tests/fairness.rs's subject).
    let h = start_with(|c| {
        c.network.fairness.max_in_flight = 10_000;
        c.network.fairness.rate_per_sec = 100_000;
        c.network.fairness.burst = 100_000;
    })
    .await;
    let channel = h.channel("clinic").await;
    let (before, _) = scrape(&h).await;
    let paths = (0..2_000).map(|i| match i % 2 {
        0 => format!("/rxgate.v1.PrescriptionService/NoSuchMethod{i}"),
        _ => format!("/x{i}/y{i}"),
    });
    call_all(&channel, paths).await;
    call_all(&channel, ["/x/a\"b".to_owned()]).await;

    let (page, samples) = scrape(&h).await;
    let unknown: Vec<_> = samples
        .iter()
        .filter(|s| s.name == "rxgate_requests_total" && s.label("rpc") == Some("unknown"))
        .collect();
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(unknown[0].value, 2_001.0);
    let rpcs: std::collections::BTreeSet<_> =
        samples.iter().filter_map(|s| s.label("rpc")).collect();
    assert!(
        rpcs.iter()
            .all(|r| !r.contains("NoSuchMethod") && !r.starts_with('y') && !r.contains('"')),
        "{rpcs:?}"
    );
    // One counter and one histogram more than before, whatever the paths were.
    assert!(
        page.len() < before.len() + 4 * 1024 && page.len() < 64 * 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        page.len()
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_label_carries_an_institution_code_or_a_patient_attribute() {
    let h = start_with(|_| {}).await;
    let registered = h.register_demo("clinic", "LBL-1", 7).await;
    h.receive_and_dispense_demo("LBL-1", 7, &registered.exchange_number)
        .await;
    let channel = h.channel("clinic").await;
    let paths = [
        "/rxgate.v1.PrescriptionService/1310000001",
        "/1340000001/06139999",
        "/x/0000007",
    ];
    call_all(&channel, paths.map(str::to_owned)).await;

    let (_, samples) = scrape(&h).await;
    let forbidden = ["1310000001", "1340000001", "06139999", "0000007", "ZQ"];
    for sample in &samples {
        for (name, value) in &sample.labels {
            assert!(
                !forbidden.iter().any(|f| value.contains(f)),
                "{}{{{name}={value:?}}}",
                sample.name
            );
        }
    }
    assert!(
        samples
            .iter()
            .any(|s| s.label("rpc") == Some("RecordDispensing")),
        "the calls were counted"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_does_not_block_a_scrape() {
    let h = start_with(|_| {}).await;
    let slow = TcpStream::connect(h.metrics_addr).await.unwrap();
    let (mut slow_reader, mut slow_writer) = slow.into_split();
    // One byte of a request every 2 s, as the attacker of issue 22 did.
    let trickle = tokio::spawn(async move {
        for byte in b"GET /metrics HTTP/1.1\r\nhost: slow\r\n\r\n" {
            if slow_writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    let slow_answered = async move {
        let mut buf = [0u8; 1];
        let _ = slow_reader.read(&mut buf).await;
    };
    tokio::select! {
        biased;
        (status, _) = get(h.metrics_addr, "/metrics") => assert_eq!(status, 200),
        () = slow_answered => panic!("the scrape waited until the slow client was done"),
    }
    trickle.abort();
    h.shutdown().await;
}

/// The next status a health watch reports, or `None` if the watch has ended.
async fn next_status(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
) -> Option<i32> {
    let next = timeout(PATIENCE, watch.message()).await;
    next.expect("a health update").unwrap().map(|r| r.status)
}

/// Opens a call on `channel` that the server cannot finish until `hold` is dropped: a unary
/// RPC whose request stream stays open without a message. It keeps the drain from ending.
fn hold_the_drain(channel: Channel) -> tokio::sync::mpsc::Sender<()> {
    let (hold, held) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let path =
            PathAndQuery::from_static("/rxgate.v1.PrescriptionService/GetPrescriptionStatus");
        let codec = tonic_prost::ProstCodec::<(), ()>::default();
        let requests = tokio_stream::wrappers::ReceiverStream::new(held);
        let _ = grpc
            .client_streaming(tonic::Request::new(requests), path, codec)
            .await;
    });
    hold
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_grpc_health_turn_off_when_shutdown_begins() {
    let h = start_with(|_| {}).await;
    let ops = h.metrics_addr;
    assert_eq!(get(ops, "/healthz").await.0, 200);
    assert_eq!(get(ops, "/readyz").await.0, 200);
    assert_eq!(get(ops, "/nothing").await.0, 404);

    let channel = h.channel("clinic").await;
    let mut health = HealthClient::new(channel.clone());
    let mut watches = Vec::new();
    for service in [
        "",
        "rxgate.v1.PrescriptionService",
        "rxgate.v1.EventService",
    ] {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        let mut watch = health.watch(request).await.unwrap().into_inner();
        assert_eq!(
            next_status(&mut watch).await,
            Some(ServingStatus::Serving as i32)
        );
        watches.push(watch);
    }
    let hold = hold_the_drain(channel);
    // Answered after the held call's headers, which came first on the same connection.
    health.check(HealthCheckRequest::default()).await.unwrap();

    let stopping = tokio::spawn(h.shutdown());
    for watch in &mut watches {
        assert_eq!(
            next_status(watch).await,
            Some(ServingStatus::NotServing as i32)
        );
        assert_eq!(
            next_status(watch).await,
            None,
            "a watch ends with the drain"
        );
    }
    let (status, body) = get(ops, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "not ready: draining for shutdown\n");
    assert_eq!(get(ops, "/healthz").await.0, 200, "alive while draining");

    drop(hold);
    timeout(PATIENCE, stopping)
        .await
        .expect("the server stopped once the held call ended")
        .unwrap();
}
