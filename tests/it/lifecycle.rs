//! How the real `rxgate serve` stops, as a service manager stops it: SIGTERM under load answers
//! every call in flight and loses no acknowledged registration, an open event feed ends cleanly,
//! the drain delay keeps accepting while health says NOT_SERVING, a second signal stops at once,
//! systemd hears READY=1 and STOPPING=1, and `--log-format json` writes one JSON object per line
//! (the store engine's own records among them). Exits are timed from the signal.

use crate::common;

use std::{
    fs,
    path::{Path, PathBuf},
    process::ExitStatus,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use common::{
    dev_pki, patient,
    process::{Rxgate, Serve},
    signed, signer, throttled,
};
use prost::Message;
use rxgate::{
    cli::demo::demo_prescription,
    config::Config,
    domain::time::JapanDate,
    pki::signer::SigningKey,
    wire::proto::v1::{
        self as pb, event_service_client::EventServiceClient,
        prescription_service_client::PrescriptionServiceClient,
    },
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// The registering clinics: certificate and institution code.
const CLINICS: [(&str, &str); 2] = [("clinic", "1310000001"), ("clinic2", "1310000002")];
/// Concurrent registration loops per clinic (the fairness limit lets 8 of one clinic in flight).
const LOOPS_PER_CLINIC: usize = 6;
/// Acknowledged registrations before the signal.
const ACKED_BEFORE_SIGNAL: usize = 30;
/// Anything that should happen promptly on a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(60);

/// The default grace period (`Config::dev` takes the default).
fn grace() -> Duration {
    Duration::from_secs(Config::dev(PathBuf::new(), &dev_pki()).shutdown_grace_secs)
}

/// `rxgate serve --config` with examples/rxgate.toml, its certificate paths made absolute, the
/// store in `dir/store` and `settings` (top-level keys) first; its log in `dir/rxgate.log`.
pub(crate) fn serve_configured(dir: &Path, settings: &str) -> Serve {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = fs::read_to_string(root.join("examples/rxgate.toml")).unwrap();
    let store = "data_dir = \"data/store\"";
    assert!(example.contains(store), "the example names its store");
    let text = example
        .replace("\"certs/", &format!("\"{}/certs/", root.display()))
        .replace(store, &format!("data_dir = {:?}", dir.join("store")));
    let path = dir.join("rxgate.toml");
    fs::write(&path, format!("{settings}\n{text}")).unwrap();
    Serve::config(&path, &dir.join("rxgate.log"))
}

/// Waits in a blocking thread for `server` to exit within `within`; returns its status (None:
/// still running), when it was seen to exit, and the server (for its log).
pub(crate) async fn exited(
    mut server: Rxgate,
    within: Duration,
) -> (Option<ExitStatus>, Instant, Rxgate) {
    tokio::task::spawn_blocking(move || {
        let status = server.exit(within);
        (status, Instant::now(), server)
    })
    .await
    .unwrap()
}

/// What health says of the whole server over `channel` (None: no answer).
async fn health_status(channel: Channel) -> Option<i32> {
    let check = HealthCheckRequest {
        service: String::new(),
    };
    let answer = HealthClient::new(channel).check(check).await.ok()?;
    Some(answer.into_inner().status)
}

/// Asks over `channel` until health says `wanted`; panics if that takes `PROMPTLY`.
pub(crate) async fn until_health(channel: &Channel, wanted: ServingStatus) {
    let deadline = Instant::now() + PROMPTLY;
    while health_status(channel.clone()).await != Some(wanted as i32) {
        assert!(Instant::now() < deadline, "health never said {wanted:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One registration: what was sent and what came back.
struct Call {
    clinic: usize,
    number: String,
    answer: Result<String, tonic::Status>,
    /// The signal had been sent when the answer came.
    answered_after_signal: bool,
}

/// What the registration loops share.
struct Load {
    addr: String,
    doctor: SigningKey,
    today: JapanDate,
    signalled: AtomicBool,
    acked: AtomicUsize,
}

impl Load {
    fn register_request(
        &self,
        clinic: usize,
        number: &str,
        patient_no: u32,
    ) -> pb::RegisterPrescriptionRequest {
        let mut rx = demo_prescription(number, patient(patient_no), self.today);
        rx.institution_code = CLINICS[clinic].1.into();
        pb::RegisterPrescriptionRequest {
            prescription: Some(signed(&self.doctor, rx.encode_to_vec(), SystemTime::now())),
            ..Default::default()
        }
    }
}

async fn register(
    client: &PrescriptionServiceClient<Channel>,
    request: pb::RegisterPrescriptionRequest,
) -> Result<String, tonic::Status> {
    throttled(|| {
        let (mut client, request) = (client.clone(), request.clone());
        async move { client.register_prescription(request).await }
    })
    .await
    .map(|r| r.into_inner().prescription_id)
}

/// Registers new prescriptions one after the other until one is refused.
async fn registration_loop(load: Arc<Load>, clinic: usize, n: usize) -> Vec<Call> {
    let channel = dev_pki()
        .client(CLINICS[clinic].0)
        .connect(&load.addr)
        .await
        .unwrap();
    let client = PrescriptionServiceClient::new(channel);
    let mut calls = Vec::new();
    for i in 0.. {
        let number = format!("TERM-{clinic}-{n}-{i}");
        let patient_no = (clinic * 1_000_000 + n * 10_000 + i) as u32;
        let answer = register(&client, load.register_request(clinic, &number, patient_no)).await;
        if answer.is_ok() {
            load.acked.fetch_add(1, Ordering::SeqCst);
        }
        let refused = answer.is_err();
        calls.push(Call {
            clinic,
            number,
            answer,
            answered_after_signal: load.signalled.load(Ordering::SeqCst),
        });
        if refused {
            break;
        }
    }
    calls
}

/// Every event of a feed from the start, until it ends: Ok if it ended cleanly.
async fn read_feed(addr: String) -> Result<usize, tonic::Status> {
    let channel = dev_pki().client("management").connect(&addr).await.unwrap();
    let request = pb::WatchEventsRequest {
        after_sequence: 0,
        filter: None,
    };
    let mut feed = EventServiceClient::new(channel)
        .watch_events(request)
        .await?
        .into_inner();
    let mut events = 0;
    while feed.message().await?.is_some() {
        events += 1;
    }
    Ok(events)
}

/// Whether `status` says the call never began because the server was draining: UNAVAILABLE,
/// CANCELLED, or the GOAWAY (NO_ERROR) of the connection it was begun on.
fn refused_by_the_drain(status: &tonic::Status) -> bool {
    let go_away = || {
        let mut source = std::error::Error::source(status);
        while let Some(error) = source {
            if let Some(h2) = error.downcast_ref::<h2::Error>() {
                return h2.is_go_away() && h2.reason() == Some(h2::Reason::NO_ERROR);
            }
            source = error.source();
        }
        false
    };
    match status.code() {
        Code::Unavailable | Code::Cancelled => true,
        Code::Internal => go_away(),
        _ => false,
    }
}

/// What a restarted gateway says of each call: an acknowledged registration must be there; a
/// refused one must not (registering the number again with other content must not be
/// ALREADY_EXISTS, which would mean it was stored although the clinic was told otherwise).
async fn lost_or_hidden(server: &Rxgate, load: &Load, calls: &[Call]) -> Vec<String> {
    let mut clients = Vec::new();
    for (name, _) in CLINICS {
        let channel = dev_pki().client(name).connect(&server.addr).await.unwrap();
        clients.push(PrescriptionServiceClient::new(channel));
    }
    let mut problems = Vec::new();
    for (k, call) in calls.iter().enumerate() {
        let client = &clients[call.clinic];
        match &call.answer {
            Ok(id) => {
                let request = pb::GetPrescriptionStatusRequest {
                    prescription_id: id.clone(),
                };
                let status = throttled(|| {
                    let (mut client, request) = (client.clone(), request.clone());
                    async move { client.get_prescription_status(request).await }
                })
                .await;
                if let Err(s) = status {
                    problems.push(format!("{} acknowledged, then lost: {s}", call.number));
                }
            }
            Err(_) => {
                let other = load.register_request(call.clinic, &call.number, 9_000_000 + k as u32);
                if let Err(s) = register(client, other).await {
                    problems.push(format!("{} refused, yet stored: {s}", call.number));
                }
            }
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_answers_every_call_in_flight_ends_feeds_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let server = Serve::dev(&data, &dir.path().join("first.log"))
        .start()
        .await;
    let load = Arc::new(Load {
        addr: server.addr.clone(),
        doctor: signer("doctor"),
        today: JapanDate::of(SystemTime::now()),
        signalled: AtomicBool::new(false),
        acked: AtomicUsize::new(0),
    });
    let feed = tokio::spawn(read_feed(server.addr.clone()));
    let mut loops = tokio::task::JoinSet::new();
    for clinic in 0..CLINICS.len() {
        for n in 0..LOOPS_PER_CLINIC {
            loops.spawn(registration_loop(Arc::clone(&load), clinic, n));
        }
    }
    let deadline = Instant::now() + PROMPTLY;
    while load.acked.load(Ordering::SeqCst) < ACKED_BEFORE_SIGNAL {
        assert!(
            Instant::now() < deadline,
            "too few registrations:\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let signalled_at = Instant::now();
    load.signalled.store(true, Ordering::SeqCst);
    server.signal("TERM");
    let (status, exited_at, server) = exited(server, grace() + PROMPTLY).await;
    let calls: Vec<Call> = loops.join_all().await.into_iter().flatten().collect();
    let log = server.output();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} after SIGTERM:\n{log}"
    );
    assert!(
        exited_at - signalled_at < grace() + Duration::from_secs(1),
        "took {:?} to exit",
        exited_at - signalled_at
    );
    let feed = tokio::time::timeout(PROMPTLY, feed).await.unwrap().unwrap();
    assert!(
        matches!(feed, Ok(events) if events > 0),
        "the feed: {feed:?}"
    );

    let mut problems: Vec<String> = calls
        .iter()
        .filter_map(|c| match &c.answer {
            // Refused before it began: UNAVAILABLE (no connection, or a stream the GOAWAY
            // refused), CANCELLED (queued in the client while its connection closed), or the
            // GOAWAY itself (a call tonic's client began on a connection that had already
            // received it, which tonic reports as INTERNAL). `lost_or_hidden` below checks
            // that none of them was stored.
            Err(s) if !(refused_by_the_drain(s) && c.answered_after_signal) => {
                Some(format!("{}: {:?} {}", c.number, s.code(), s.message()))
            }
            _ => None,
        })
        .collect();
    let in_flight_answered = calls
        .iter()
        .filter(|c| c.answer.is_ok() && c.answered_after_signal)
        .count();
    assert!(
        in_flight_answered > 0,
        "no call was in flight at the signal"
    );

    let server = Serve::dev(&data, &dir.path().join("second.log"))
        .start()
        .await;
    problems.extend(lost_or_hidden(&server, &load, &calls).await);
    assert!(problems.is_empty(), "{problems:#?}\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_delay_keeps_accepting_while_not_serving_and_systemd_hears_of_it() {
    // Long enough for two handshakes and the health polls on a loaded machine.
    let delay = Duration::from_secs(8);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("notify");
    let notifications = tokio::net::UnixDatagram::bind(&socket).unwrap();
    let next_notification = || async {
        let mut buffer = [0; 256];
        let n = tokio::time::timeout(PROMPTLY, notifications.recv(&mut buffer))
            .await
            .expect("a notification")
            .unwrap();
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    };
    let settings = format!("drain_delay_secs = {}", delay.as_secs());
    let server = serve_configured(dir.path(), &settings)
        .env("NOTIFY_SOCKET", &socket)
        .start()
        .await;
    assert_eq!(next_notification().await, "READY=1");

    let signalled_at = Instant::now();
    server.signal("TERM");
    assert_eq!(next_notification().await, "STOPPING=1");
    let channel = dev_pki()
        .client("clinic")
        .connect(&server.addr)
        .await
        .unwrap();
    until_health(&channel, ServingStatus::NotServing).await;
    let fresh = dev_pki().client("clinic2").connect(&server.addr).await;
    let answered = health_status(fresh.expect("a new connection during the delay")).await;
    assert_eq!(answered, Some(ServingStatus::NotServing as i32));
    assert!(
        signalled_at.elapsed() < delay,
        "the checks took longer than the delay"
    );

    let (status, exited_at, server) = exited(server, delay + grace() + PROMPTLY).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}:\n{}",
        server.output()
    );
    let took = exited_at - signalled_at;
    assert!(
        took >= delay && took < delay + grace() + Duration::from_secs(1),
        "took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_the_drain_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_configured(dir.path(), "drain_delay_secs = 120")
        .start()
        .await;
    let channel = dev_pki()
        .client("clinic")
        .connect(&server.addr)
        .await
        .unwrap();
    server.signal("TERM");
    until_health(&channel, ServingStatus::NotServing).await;

    let second_at = Instant::now();
    server.signal("INT");
    let (status, exited_at, server) = exited(server, PROMPTLY).await;
    let log = server.output();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    assert!(
        exited_at - second_at < Duration::from_secs(3),
        "took {:?}",
        exited_at - second_at
    );
    assert!(
        log.contains("a second stop signal during the drain"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_and_carry_the_engines_records() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_configured(dir.path(), "")
        .option("--log-format", "json")
        .rust_log("info,fjall=debug")
        .start()
        .await;
    server.signal("TERM");
    let (status, _, server) = exited(server, grace() + PROMPTLY).await;
    let log = server.output();
    assert!(status.is_some_and(|s| s.success()), "{log}");

    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    for line in &lines {
        let text = |pointer: &str| line.pointer(pointer).and_then(|v| v.as_str());
        assert!(text("/timestamp").is_some(), "{line}");
        assert!(
            ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"].contains(&text("/level").unwrap_or("")),
            "{line}"
        );
        assert!(
            text("/target").is_some() && text("/fields/message").is_some(),
            "{line}"
        );
    }
    let target = |line: &serde_json::Value| line["target"].as_str().unwrap_or("").to_owned();
    assert!(
        lines.iter().any(|l| target(l).starts_with("fjall")),
        "{log}"
    );
    let listening = lines
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("rxgate listening"))
        })
        .expect("the listening line");
    assert!(listening["fields"]["addr"].is_string() && listening["fields"]["metrics"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_outlasts_the_grace_is_cut_and_the_store_still_closes() {
    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let grace = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    let settings = format!("shutdown_grace_secs = {}", grace.as_secs());
    let server = serve_configured(dir.path(), &settings).start().await;
    // A reflection stream lasts as long as its client keeps it open: this one never closes.
    let channel = dev_pki()
        .client("clinic")
        .connect(&server.addr)
        .await
        .unwrap();
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let requests = tokio_stream::iter([list]).chain(tokio_stream::pending());
    let mut open = ServerReflectionClient::new(channel)
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();
    assert!(
        open.message().await.unwrap().is_some(),
        "the stream is open"
    );

    let signalled_at = Instant::now();
    server.signal("TERM");
    let (status, exited_at, server) = exited(server, grace + PROMPTLY).await;
    let log = server.output();
    assert_eq!(status.and_then(|s| s.code()), Some(1), "{log}");
    let took = exited_at - signalled_at;
    assert!(
        took >= grace && took < grace + Duration::from_secs(1),
        "took {took:?}"
    );
    assert!(log.contains("the grace period ran out"), "{log}");
    assert!(log.contains("store closed"), "{log}");
    // Closed properly: the next start opens it at once.
    drop(serve_configured(dir.path(), "").start().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_drains_as_sigterm_does() {
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::dev(&dir.path().join("store"), &dir.path().join("rxgate.log"))
        .start()
        .await;
    server.signal("INT");
    let (status, _, server) = exited(server, grace() + PROMPTLY).await;
    let log = server.output();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}:\n{log}"
    );
    assert!(
        log.contains("stop signal: draining signal=\"SIGINT\"")
            && log.contains("rxgate stopped: drained, store closed"),
        "{log}"
    );
}
