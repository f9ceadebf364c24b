//! Fairness under hostile clients (issue 22, finding 4): idle pre-TLS connections from one
//! address, an institution flooding the most expensive allowed request, and thousands of
//! never-read event feeds on one HTTP/2 connection. Its own test binary with one test function,
//! so that the scenarios run one after another and the latency bounds measure the server, not
//! other tests sharing the machine. These are the only latency assertions the issue permits.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{dev_pki, line, patient, process::Serve, signed, signer, start_with};
use prost::Message;
use rxgate::{
    cli::demo::demo_prescription,
    domain::time::JapanDate,
    wire::proto::v1::{
        self as pb, event_service_client::EventServiceClient,
        prescription_service_client::PrescriptionServiceClient,
    },
};
use tokio::{net::TcpSocket, task::JoinSet};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_types::StatusExt;

/// Receipt codes from the shipped master: a contraindicated pair, so that every pair of lines of
/// an alternating draft is a finding.
const TRIAZOLAM: &str = "611120055";
const ITRACONAZOLE: &str = "616290177";
/// The largest draft the line limit allows.
fn worst_draft_lines() -> usize {
    rxgate::limits::Limits::default().prescription_lines
}

#[test]
fn one_client_cannot_starve_the_others() {
    // Thousands of sockets in one process: lift the soft limit to the hard one.
    rlimit::increase_nofile_limit(u64::MAX).expect("raising RLIMIT_NOFILE");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        idle_pre_tls_connections().await;
        flooding_institution().await;
        never_read_feeds().await;
    });
}

/// With 3,000 TCP connections from 127.0.0.2 that never send a ClientHello, a client from
/// 127.0.0.1 completes its handshake and a call within 2 s.
async fn idle_pre_tls_connections() {
    let h = start_with(|_| {}).await;
    let target: SocketAddr = h.addr.trim_start_matches("https://").parse().unwrap();
    let mut connecting = JoinSet::new();
    for _ in 0..3_000 {
        connecting.spawn(async move {
            let socket = TcpSocket::new_v4().ok()?;
            socket.bind("127.0.0.2:0".parse().unwrap()).ok()?;
            tokio::time::timeout(Duration::from_secs(3), socket.connect(target))
                .await
                .ok()?
                .ok()
        });
    }
    let mut idle = Vec::new();
    while let Some(joined) = connecting.join_next().await {
        idle.extend(joined.unwrap());
    }
    assert!(idle.len() > 1_000, "only {} idle connections", idle.len());

    let started = Instant::now();
    let call = async {
        let channel = dev_pki().client("clinic").connect(&h.addr).await.unwrap();
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
    };
    let answered = tokio::time::timeout(Duration::from_secs(2), call).await;
    let took = started.elapsed();
    assert!(
        matches!(answered, Ok(Ok(_))),
        "handshake and call from 127.0.0.1 beside {} idle connections: {answered:?} after {took:?}",
        idle.len()
    );
    drop(idle);
    h.shutdown().await;
}

/// The most expensive pre-check the limits allow: alternating contraindicated lines, as many as
/// a draft may have, with every per-request switch on.
fn worst_check(today: JapanDate, n: u32) -> pb::CheckPrescriptionRequest {
    let codes = [TRIAZOLAM, ITRACONAZOLE];
    pb::CheckPrescriptionRequest {
        draft: Some(pb::Prescription {
            institution_code: "1310000002".into(),
            lines: (0..worst_draft_lines())
                .map(|i| line(codes[i % 2]))
                .collect(),
            ..demo_prescription(&format!("A-{n}"), patient(n), today)
        }),
        consent: pb::Consent::Card as i32,
        check_options: Some(pb::CheckOptions {
            include_same_institution: Some(true),
            caution: Some(true),
            same_class: Some(true),
            within_prescription: Some(true),
        }),
    }
}

/// The victim's ordinary call: a one-line pre-check of its own patient.
fn ordinary_check(today: JapanDate, n: u32) -> pb::CheckPrescriptionRequest {
    pb::CheckPrescriptionRequest {
        draft: Some(pb::Prescription {
            lines: vec![line(TRIAZOLAM)],
            ..demo_prescription(&format!("V-{n}"), patient(100_000 + n), today)
        }),
        consent: pb::Consent::Card as i32,
        check_options: None,
    }
}

/// How the attacker fared.
#[derive(Debug, Default)]
struct Flood {
    answered: AtomicU64,
    refused_with_retry_info: AtomicU64,
}

/// One attacking task: the worst request, again and again, on its connection, until `stop`.
/// A refusal is followed by a short pause only so that the test machine's two cores measure the
/// server's fairness rather than a busy loop of refusals.
async fn attack(
    mut client: PrescriptionServiceClient<Channel>,
    today: JapanDate,
    first: u32,
    stop: Arc<AtomicBool>,
    flood: Arc<Flood>,
) {
    let mut n = first;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        match client.check_prescription(worst_check(today, n)).await {
            Ok(_) => {
                flood.answered.fetch_add(1, Ordering::Relaxed);
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                if status.get_details_retry_info().is_some() {
                    flood
                        .refused_with_retry_info
                        .fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("attacker call failed: {status:?}"),
        }
    }
}

/// The attacker: 8 connections of clinic2 with 64 calls in flight on each, from a thread and
/// runtime of its own, as a remote attacker's client would not run on the server's runtime.
fn start_attacker(
    addr: String,
    today: JapanDate,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Flood> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let flood = Arc::new(Flood::default());
            let mut attackers = JoinSet::new();
            for connection in 0..8u32 {
                let channel = dev_pki().client("clinic2").connect(&addr).await.unwrap();
                let client = PrescriptionServiceClient::new(channel);
                for task in 0..64u32 {
                    let first = (connection * 64 + task) * 10_000;
                    let (stop, flood) = (stop.clone(), flood.clone());
                    attackers.spawn(attack(client.clone(), today, first, stop, flood));
                }
            }
            while let Some(joined) = attackers.join_next().await {
                joined.unwrap();
            }
            Arc::into_inner(flood).unwrap()
        })
    })
}

/// While one institution floods the worst allowed pre-check on 8 connections, the other
/// institution's slowest call stays within 1 s, and the flood is refused with RetryInfo.
async fn flooding_institution() {
    let h = start_with(|_| {}).await;
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = start_attacker(h.addr.clone(), h.today(), stop.clone());
    // Let the flood build up before the victim starts.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut victim = h.clinic("clinic").await;
    let mut slowest = Duration::ZERO;
    for n in 0..40 {
        let started = Instant::now();
        victim
            .check_prescription(ordinary_check(h.today(), n))
            .await
            .expect("the victim's call");
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let flood = tokio::task::spawn_blocking(move || attacker.join().unwrap())
        .await
        .unwrap();
    let answered = flood.answered.load(Ordering::Relaxed);
    let refused = flood.refused_with_retry_info.load(Ordering::Relaxed);
    assert!(
        slowest <= Duration::from_secs(1),
        "the victim's slowest call took {slowest:?} (attacker: {answered} answered, {refused} refused)"
    );
    assert!(answered > 0, "the attacker was never served");
    assert!(
        refused > 0,
        "the flood was never refused with RetryInfo ({answered} answered)"
    );
    h.shutdown().await;
}

/// Registers `count` demo prescriptions (one event each) through the spawned server.
async fn fill_event_log(addr: &str, count: u32) {
    let key = Arc::new(signer("doctor"));
    let clinic =
        PrescriptionServiceClient::new(dev_pki().client("clinic").connect(addr).await.unwrap());
    let today = JapanDate::of(std::time::SystemTime::now());
    let mut tasks = JoinSet::new();
    for worker in 0..8 {
        let (key, mut clinic) = (key.clone(), clinic.clone());
        tasks.spawn(async move {
            for n in (worker..count).step_by(8) {
                let rx = demo_prescription(&format!("FEED-{n}"), patient(n), today);
                let document = signed(&key, rx.encode_to_vec(), std::time::SystemTime::now());
                clinic
                    .register_prescription(pb::RegisterPrescriptionRequest {
                        prescription: Some(document),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.unwrap();
    }
}

/// The server reset the stream with REFUSED_STREAM: more concurrent streams than it allows.
fn refused_stream(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable && format!("{status:?}").contains("REFUSED_STREAM")
}

/// A connection that reads almost nothing: a 4 KiB stream window and the smallest connection
/// window HTTP/2 has, so that whatever a feed sends piles up at the server.
async fn stingy_channel(addr: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(addr.to_owned())
        .unwrap()
        .initial_stream_window_size(4096)
        .initial_connection_window_size(65_535)
        .tls_config(dev_pki().client("management").client_tls_config().unwrap())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn watch_all() -> pb::WatchEventsRequest {
    pb::WatchEventsRequest {
        after_sequence: 0,
        filter: None,
    }
}

/// 3,000 never-read WatchEvents streams on one HTTP/2 connection to a spawned server: its RSS
/// grows by at most 64 MiB, the streams beyond the per-institution limit are refused with
/// RESOURCE_EXHAUSTED naming it, and a feed left full for 10 s is disconnected, its slot freed.
async fn never_read_feeds() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let server = Serve::dev(&store, &store.with_extension("log"))
        .start()
        .await;
    fill_event_log(&server.addr, 400).await;
    let before = server.rss();

    let channel = stingy_channel(&server.addr).await;
    // One answered call first: the client then knows the server's SETTINGS, so it queues
    // streams beyond the per-connection cap instead of racing the server into refusing them.
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap();
    let mut opening = JoinSet::new();
    for _ in 0..3_000 {
        let mut client = EventServiceClient::new(channel.clone());
        opening.spawn(async move { client.watch_events(watch_all()).await });
    }
    let (mut open, mut refusals) = (Vec::new(), Vec::new());
    while let Some(joined) = opening.join_next().await {
        match joined.unwrap() {
            Ok(stream) => open.push(stream.into_inner()),
            Err(status) => refusals.push(status),
        }
    }
    // Time for whatever the server buffers for the open feeds to pile up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = server.rss().saturating_sub(before);
    assert!(
        grown <= 64 << 20,
        "RSS grew by {} MiB with {} open feeds",
        grown >> 20,
        open.len()
    );
    assert_eq!(open.len(), 4, "open feeds of one institution");
    // Refused by the feed limit, or earlier by the institution's in-flight or rate limit, or
    // reset by the per-connection stream cap.
    for status in &refusals {
        assert!(
            status.code() == Code::ResourceExhausted || refused_stream(status),
            "{status:?}"
        );
    }
    let feed_limit = "at most 4 open WatchEvents streams per institution";
    assert!(
        refusals.iter().any(|s| s.message() == feed_limit),
        "no refusal names the feed limit"
    );

    // The unread feeds are cut after 10 s of a full buffer, which frees their slots.
    let started = Instant::now();
    let mut reader = EventServiceClient::new(
        dev_pki()
            .client("management")
            .connect(&server.addr)
            .await
            .unwrap(),
    );
    let reopened = loop {
        match reader.watch_events(watch_all()).await {
            Ok(stream) => break stream.into_inner(),
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                assert!(
                    started.elapsed() < Duration::from_secs(20),
                    "no slot freed within 20 s"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    drop(reopened);
    // A cut feed, read at last, ends with an error after what was buffered.
    let mut cut = open.pop().unwrap();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(10), cut.message()).await {
            Ok(Ok(Some(_))) => {}
            Ok(other) => break other,
            Err(_) => panic!("a cut feed neither ended nor sent"),
        }
    };
    let status = ended.expect_err("a cut feed ends with an error status");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}
