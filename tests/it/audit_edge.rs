//! Every request on an authenticated connection leaves an audit record (issue 24, "Complete"):
//! those refused before any handler runs (an unknown method, an undecodable, oversize or
//! compressed body, a fairness limit) and those the health service answers get one record each,
//! and a handler's call exactly one; a request given up before its handler ran is recorded too;
//! a call whose transaction fails still leaves its record; a flood of refusals is counted into
//! few records, none of its requests left out, while other callers are answered (a call its
//! connection's GOAWAY cut, which tonic's client reports as a refusal, is not one of them), and
//! opening more connections does not buy a client more records.

use crate::common;

use std::time::{Duration, Instant};

use common::{
    Harness,
    raw::{Raw, call_raw, grpc_head, h2_connection},
    start_with,
};
use prost::{Message, bytes::Bytes};
use rxgate::{
    network::FairnessOverride,
    store::{EmbeddedStore, Store, Table, Txn},
    wire::proto::v1::{self as pb},
};
use tokio::task::JoinSet;
use tonic::{Code, codegen::http::uri::PathAndQuery};
use tonic_health::pb::HealthCheckRequest;

const STATUS: &str = "/rxgate.v1.PrescriptionService/GetPrescriptionStatus";
const UNKNOWN: &str = "/rxgate.v1.PrescriptionService/Nope";
const HEALTH: &str = "/grpc.health.v1.Health/Check";
/// The action of a record of counted edge requests.
const COUNTED: &str = "EdgeRequestsCounted";

fn status_request(id: &str) -> Vec<u8> {
    pb::GetPrescriptionStatusRequest {
        prescription_id: id.into(),
    }
    .encode_to_vec()
}

/// Which records the audit trail holds now (an export's own record included).
async fn audit_seen(h: &Harness) -> Seen {
    h.audit_records()
        .await
        .into_iter()
        .map(|r| (r.chain_writer, r.sequence))
        .collect()
}

/// The records an export showed, by chain and place: on PostgreSQL a gateway writes a chain per
/// lane, and an export lists chain after chain, so later records are not all at its end.
type Seen = std::collections::BTreeSet<(Vec<u8>, u64)>;

/// The audit records written since `before` was read, but the exports that read them.
async fn written_since(h: &Harness, before: Seen) -> Vec<pb::AuditRecord> {
    let records = h.audit_records().await;
    records
        .into_iter()
        .filter(|r| !before.contains(&(r.chain_writer.clone(), r.sequence)))
        .filter(|r| r.action != "ExportAudit" && r.action != "AuditChainGenesis")
        .collect()
}

/// One request and the one record it must leave.
struct Case {
    name: &'static str,
    cert: &'static str,
    path: &'static str,
    body: Vec<u8>,
    headers: &'static [(&'static str, &'static str)],
    answer: Result<usize, Code>,
    action: &'static str,
    outcome: &'static str,
}

fn cases() -> Vec<Case> {
    let unknown_id = status_request(&"0".repeat(32));
    let case = |name, cert, path, body, answer, action, outcome| Case {
        name,
        cert,
        path,
        body,
        headers: &[],
        answer,
        action,
        outcome,
    };
    vec![
        case(
            "an unknown method",
            "clinic",
            UNKNOWN,
            Vec::new(),
            Err(Code::Unimplemented),
            "UnknownMethod",
            "UNIMPLEMENTED",
        ),
        case(
            "an undecodable body",
            "clinic",
            STATUS,
            vec![
                0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ],
            Err(Code::InvalidArgument),
            "GetPrescriptionStatus",
            "INVALID_ARGUMENT",
        ),
        case(
            "a body over the size limit",
            "clinic",
            STATUS,
            vec![0; 300 * 1024],
            Err(Code::ResourceExhausted),
            "GetPrescriptionStatus",
            "RESOURCE_EXHAUSTED",
        ),
        Case {
            headers: &[("grpc-encoding", "gzip")],
            ..case(
                "a compressed body",
                "clinic",
                STATUS,
                unknown_id.clone(),
                Err(Code::Unimplemented),
                "GetPrescriptionStatus",
                "UNIMPLEMENTED",
            )
        },
        case(
            "a health check",
            "pharmacy",
            HEALTH,
            HealthCheckRequest::default().encode_to_vec(),
            Ok(1),
            "Check",
            "OK",
        ),
        case(
            "a caller of the wrong kind (the handler's)",
            "pharmacy",
            STATUS,
            unknown_id.clone(),
            Err(Code::PermissionDenied),
            "GetPrescriptionStatus",
            "PERMISSION_DENIED",
        ),
        case(
            "a handler's answer",
            "clinic",
            STATUS,
            unknown_id,
            Err(Code::NotFound),
            "GetPrescriptionStatus",
            "NOT_FOUND",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_leaves_exactly_one_record() {
    let h = start_with(|_| {}).await;
    let mut failures = Vec::new();
    for case in cases() {
        let before = audit_seen(&h).await;
        let channel = h.channel(case.cert).await;
        let answer = call_raw(channel, case.path, vec![case.body], case.headers).await;
        let answer = answer.map_err(|s| s.code());
        let written = written_since(&h, before).await;
        let fits = |r: &pb::AuditRecord| {
            r.action == case.action
                && r.outcome.starts_with(case.outcome)
                && r.institution_kind == case.cert
                && (case.action != "UnknownMethod" || r.target == case.path)
        };
        if answer != case.answer || written.len() != 1 || !fits(&written[0]) {
            failures.push(format!(
                "{}: answered {answer:?}, wrote {:?}",
                case.name,
                written
                    .iter()
                    .map(|r| (&r.action, &r.outcome, &r.institution_kind, &r.target))
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fairness_refusal_leaves_a_record() {
    let h = start_with(|config| {
        config.network.fairness.overrides.push(FairnessOverride {
            institution: "urn:rxgate:institution:clinic:1310000001".into(),
            max_in_flight: None,
            rate_per_sec: Some(1),
            burst: Some(1),
        });
    })
    .await;
    let before = audit_seen(&h).await;
    let mut codes = Vec::new();
    let channel = h.channel("clinic").await;
    // Calls one after another until one is refused: the second, unless a loaded machine spaces
    // them a second apart.
    for _ in 0..10 {
        let request = status_request(&"0".repeat(32));
        let answer = call_raw(channel.clone(), STATUS, vec![request], &[]).await;
        codes.push(answer.map_err(|s| s.code()).err());
        if codes.last() == Some(&Some(Code::ResourceExhausted)) {
            break;
        }
    }
    let refused = codes
        .iter()
        .filter(|c| **c == Some(Code::ResourceExhausted))
        .count();
    assert!(
        refused >= 1,
        "the rate of 1 per second refused none: {codes:?}"
    );
    let written = written_since(&h, before).await;
    let outcomes: Vec<_> = written
        .iter()
        .filter(|r| r.action == "GetPrescriptionStatus")
        .map(|r| r.outcome.split(' ').next().unwrap_or_default())
        .collect();
    let mut answered: Vec<_> = codes
        .iter()
        .map(|c| match c {
            Some(Code::ResourceExhausted) => "RESOURCE_EXHAUSTED",
            Some(Code::NotFound) => "NOT_FOUND",
            other => panic!("unexpected answer {other:?}"),
        })
        .collect();
    let mut recorded = outcomes.clone();
    answered.sort_unstable();
    recorded.sort_unstable();
    assert_eq!(recorded, answered, "one record per call, with its outcome");
}

/// Overwrites the one stored prescription of a stopped harness's store with bytes that decode
/// to nothing: in its folder, or in its database as damage there would (the value alone).
async fn damage_the_prescription(stopped: &common::Stopped) {
    if let Some(database) = stopped.database() {
        let changed = common::postgres::cluster().sql_in(
            &database,
            "UPDATE rxgate.prescriptions SET v = '\\xffffffffffffff' RETURNING 1",
        );
        assert_eq!(changed.trim(), "1", "one prescription");
        return;
    }
    let store = EmbeddedStore::open(stopped.store_dir()).unwrap();
    store
        .transact(|tx: &mut dyn Txn| {
            let rows = tx.scan_prefix(Table::Prescriptions, b"", 2)?;
            assert_eq!(rows.len(), 1, "one prescription");
            tx.put(Table::Prescriptions, &rows[0].0, &[0xff; 7]);
            Ok::<_, rxgate::store::Error>(())
        })
        .await
        .unwrap()
        .unwrap();
    store.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_transaction_fails_still_leaves_its_record() {
    let h = start_with(|_| {}).await;
    let id = h
        .register_demo("clinic", "RX-EDGE-1", 1)
        .await
        .prescription_id;
    let stopped = h.stop().await;
    damage_the_prescription(&stopped).await;
    let h = stopped.start().await;

    let before = audit_seen(&h).await;
    let answer = h
        .clinic("clinic")
        .await
        .get_prescription_status(pb::GetPrescriptionStatusRequest {
            prescription_id: id.clone(),
        })
        .await;
    assert_eq!(answer.unwrap_err().code(), Code::Internal);
    let written = written_since(&h, before).await;
    let found: Vec<_> = written
        .iter()
        .map(|r| (r.action.as_str(), r.target.as_str(), r.outcome.as_str()))
        .collect();
    assert_eq!(
        found,
        [("GetPrescriptionStatus", id.as_str(), "INTERNAL")],
        "the failed call's record, written on its own"
    );
}

const FLOOD: usize = 10_000;
/// Requests of the flood in flight at once (on one connection).
const FLOOD_IN_FLIGHT: usize = 64;

/// How the requests of a flood ended in the client.
#[derive(Debug, Default)]
struct Flooded {
    /// Answered UNIMPLEMENTED or RESOURCE_EXHAUSTED (a fairness limit).
    refused: usize,
    /// Lost to the transport in the client: the server answers before it has read the request
    /// and resets the stream (RST_STREAM NO_ERROR, as HTTP/2 allows), and on a fast machine
    /// hyper's client, still sending, now and then fails the call (UNKNOWN "transport error",
    /// CANCELLED for those queued behind it) and resets streams the server may not have taken
    /// yet. And a request's DATA frame that comes after its answer, h2 drops but charges to the
    /// connection's budget for small frames for good: after about 2,000 such, the gateway's h2
    /// ends the connection (GOAWAY ENHANCE_YOUR_CALM), and the calls begun after the last one
    /// it took end RESOURCE_EXHAUSTED in the client. Such a request may never have reached the
    /// server.
    lost: usize,
}

/// Sends `FLOOD` requests to an unknown method as the dev clinic, on one connection.
async fn flood(h: &Harness) -> Flooded {
    let channel = h.channel("clinic").await;
    let mut senders = JoinSet::new();
    for worker in 0..FLOOD_IN_FLIGHT {
        let channel = channel.clone();
        senders.spawn(async move {
            let mut flooded = Flooded::default();
            for _ in (worker..FLOOD).step_by(FLOOD_IN_FLIGHT) {
                let answer = call_raw(channel.clone(), UNKNOWN, vec![Vec::new()], &[]).await;
                let Err(status) = answer else { continue };
                match Ended::of(&status) {
                    Some(Ended::Refused) => flooded.refused += 1,
                    Some(Ended::Lost) => flooded.lost += 1,
                    None => {}
                }
            }
            flooded
        });
    }
    let mut all = Flooded::default();
    for flooded in senders.join_all().await {
        all.refused += flooded.refused;
        all.lost += flooded.lost;
    }
    all
}

/// How a request of the flood ended in the client.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Refused,
    Lost,
}

impl Ended {
    /// How the request answered `status` ended; `None`: neither refused nor lost. A status the
    /// client made of its transport's failure carries that error as its source (an answer read
    /// from the gateway carries none), and is lost whatever its code: tonic's client reports a
    /// connection's GOAWAY ENHANCE_YOUR_CALM as RESOURCE_EXHAUSTED, a fairness refusal's code.
    fn of(status: &tonic::Status) -> Option<Ended> {
        if std::error::Error::source(status).is_some() {
            return Some(Ended::Lost);
        }
        matches!(status.code(), Code::Unimplemented | Code::ResourceExhausted)
            .then_some(Ended::Refused)
    }
}

/// Meanwhile another institution's calls: each must be answered (NOT_FOUND: no such id).
async fn others_answered(h: &Harness, calls: usize) -> Vec<Code> {
    let mut clinic = h.clinic("clinic2").await;
    let mut wrong = Vec::new();
    for _ in 0..calls {
        let answer = clinic
            .get_prescription_status(pb::GetPrescriptionStatusRequest {
                prescription_id: "0".repeat(32),
            })
            .await;
        let code = answer.map_or_else(|s| s.code(), |_| Code::Ok);
        if code != Code::NotFound {
            wrong.push(code);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_methods_is_counted_into_few_records() {
    let h = start_with(|_| {}).await;
    let before = audit_seen(&h).await;
    let started = Instant::now();
    let (flooded, wrong) = tokio::join!(flood(&h), others_answered(&h, 50));
    let took = started.elapsed();
    println!("the flood of {FLOOD} took {took:?}: {flooded:?}");
    assert_eq!(
        flooded.refused + flooded.lost,
        FLOOD,
        "every request of the flood refused"
    );
    assert!(flooded.lost <= FLOOD / 10, "{flooded:?}");
    assert_eq!(wrong, [], "the other clinic's calls answered meanwhile");
    // The counts are written within a second of their last request; a restart waits for them.
    let h = h.restart().await;

    let written = written_since(&h, before).await;
    let clinic: Vec<_> = written
        .iter()
        .filter(|r| r.institution_kind == "clinic" && r.institution_code == "1310000001")
        .collect();
    let one_by_one = clinic
        .iter()
        .filter(|r| r.action == "UnknownMethod" && r.target == UNKNOWN)
        .count() as u64;
    let counted: u64 = clinic
        .iter()
        .filter(|r| r.action == COUNTED)
        .flat_map(|r| &r.counts)
        .filter(|c| c.action == "UnknownMethod")
        .map(|c| c.count)
        .sum();
    // 5 records one by one and one count a second, in every gateway second the flood touched
    // (its first and last may be partial), and never more than 100 for a flood of a few
    // seconds: where a record per request would be thousands.
    let bound = (6 * (took.as_secs() + 2)).max(100);
    assert!(
        clinic.len() as u64 <= bound,
        "{} records for the flood of {FLOOD} in {took:?}",
        clinic.len()
    );
    // Every request the server answered is in a record or a count; of those the client lost,
    // the ones the server took.
    let audited = (one_by_one + counted) as usize;
    assert!(
        (flooded.refused..=FLOOD).contains(&audited),
        "{audited} requests of the flood in a record or a count: {flooded:?}"
    );
}

/// h2 lets a connection send this many empty DATA frames that do not end their stream; the next
/// one ends the connection (GOAWAY ENHANCE_YOUR_CALM).
const EMPTY_DATA_FRAMES: usize = 100;

/// The gateway's HTTP/2 layer (h2) ends a connection that sends it too many small DATA frames
/// (GOAWAY ENHANCE_YOUR_CALM, its guard against floods of frames; a flood of refusals trips it,
/// see [`Flooded::lost`]), and tonic's client reports the calls the GOAWAY cut, which the
/// gateway never took, as RESOURCE_EXHAUSTED, as it reports a fairness refusal. Such a call has
/// no record: a flood counts it lost, not refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_by_the_connections_goaway_is_lost_not_refused() {
    // One stream at a time: a call begun while another is open waits in the client, unsent.
    let h = start_with(|config| config.network.max_concurrent_streams = 1).await;
    let before = audit_seen(&h).await;
    let mut client = h2_connection(&h.addr, "clinic").await;
    // An answer comes after the server's SETTINGS, which the client then keeps to.
    let (first, _) = client
        .send_request(grpc_head(&h.addr, STATUS), true)
        .unwrap();
    first.await.unwrap();
    assert_eq!(client.current_max_send_streams(), 1);

    // A call whose handler waits for a message, and behind it one that waits to be sent ...
    let mut client = client.ready().await.unwrap();
    let (_held, mut body) = client
        .send_request(grpc_head(&h.addr, STATUS), false)
        .unwrap();
    let mut client = client.ready().await.unwrap();
    let (cut, _) = client
        .send_request(grpc_head(&h.addr, UNKNOWN), true)
        .unwrap();
    // ... until the first one's empty frames end the connection.
    for _ in 0..=EMPTY_DATA_FRAMES {
        body.send_data(Bytes::new(), false).unwrap();
    }
    let cut = cut.await.unwrap_err();
    assert!(
        cut.is_go_away() && cut.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM),
        "{cut:?}"
    );
    let status = tonic::Status::from_error(Box::new(cut));
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    let h = h.restart().await;
    let written = written_since(&h, before).await;
    let taken = written.iter().filter(|r| r.target == UNKNOWN).count();
    assert_eq!(taken, 0, "the gateway never took the cut call");
    assert_eq!(Ended::of(&status), Some(Ended::Lost), "{status:?}");
}

/// The records of the dev institution `kind`/`code` among `records` for `action`: how many
/// stand one by one, and how many requests in all (the counts included).
fn accounted(records: &[pb::AuditRecord], code: &str, action: &str) -> (u64, u64) {
    let mine: Vec<_> = records
        .iter()
        .filter(|r| r.institution_code == code)
        .collect();
    let one_by_one = mine.iter().filter(|r| r.action == action).count() as u64;
    let counted: u64 = mine
        .iter()
        .filter(|r| r.action == COUNTED)
        .flat_map(|r| &r.counts)
        .filter(|c| c.action == action)
        .map(|c| c.count)
        .sum();
    (one_by_one, one_by_one + counted)
}

const CLINIC2: &str = "1310000002";
const GIVEN_UP: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_given_up_before_its_handler_ran_leaves_a_record() {
    let h = start_with(|_| {}).await;
    let before = audit_seen(&h).await;
    let channel = h.channel("clinic2").await;
    for _ in 0..GIVEN_UP {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        // A body that never comes, and a client that gives up after 50 ms.
        let mut request = tonic::Request::new(tokio_stream::pending::<Vec<u8>>());
        request.set_timeout(Duration::from_millis(50));
        let path = PathAndQuery::from_static(STATUS);
        let answer = grpc.streaming(request, path, Raw).await;
        assert!(answer.is_err(), "no answer to a request without a body");
    }
    // Counts are written within a second of their last request; a restart waits for them.
    let h = h.restart().await;
    let written = written_since(&h, before).await;
    let (_, all) = accounted(&written, CLINIC2, "GetPrescriptionStatus");
    assert_eq!(
        all, GIVEN_UP,
        "every request given up is in a record or a count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_connections_do_not_buy_more_records() {
    let h = start_with(|_| {}).await;
    let before = audit_seen(&h).await;
    let started = Instant::now();
    for _ in 0..10 {
        let channel = h.channel("clinic2").await;
        for _ in 0..10 {
            let answer = call_raw(channel.clone(), UNKNOWN, vec![Vec::new()], &[]).await;
            assert_eq!(answer.unwrap_err().code(), Code::Unimplemented);
        }
    }
    let seconds = started.elapsed().as_secs();
    let h = h.restart().await;
    let written = written_since(&h, before).await;
    let (one_by_one, all) = accounted(&written, CLINIC2, "UnknownMethod");
    assert_eq!(all, 100, "every request is in a record or a count");
    // 5 a second for the client, whatever its connections: in each of the gateway's seconds the
    // calls touched, which are one more than the whole seconds they took when the calls cross
    // one of its boundaries, and two more at most.
    assert!(
        one_by_one <= 5 * (seconds + 2),
        "{one_by_one} records one by one in {seconds} s over 10 connections"
    );
}
