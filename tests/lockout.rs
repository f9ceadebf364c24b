//! The exchange-number lockout (issue 23, finding 1) against the real server over mutual TLS:
//! wrong guesses sent all at once, over many connections and pharmacy certificates, are never
//! evaluated past the limit; a lockout survives a restart; the per-patient limit refuses only the
//! pharmacies that missed on the patient; the operator lists and lifts lockouts, audited.
//! Its own test binary, not a module of `tests/it/`: it installs a process-wide tracing
//! subscriber and counts lines in what every server of the process logs.

mod common;

use std::{
    io::Write,
    process::Command,
    sync::{Arc, Mutex, OnceLock},
};

use common::{Harness, dev_pki, patient, start_with};
use prost::Message;
use rxgate::{
    cli::demo::demo_prescription,
    config::Config,
    domain::{hash::hex, patient::PatientKey},
    service::Pseudonyms,
    wire::proto::v1::{
        self as pb, admin_service_client::AdminServiceClient,
        dispensing_service_client::DispensingServiceClient, lockout_subject::Subject,
    },
};
use tonic::{Code, Status, transport::Channel};

/// The per-pharmacy limit of these tests.
const MAX_MISSES: usize = 10;
/// The per-patient limit (the default).
const PATIENT_MAX_MISSES: usize = 10;

/// No fairness refusal gets in the way of a burst: every answer is the lockout's or the lookup's.
fn generous(c: &mut Config) {
    c.lookup_max_misses = MAX_MISSES as u32;
    c.network.fairness.max_in_flight = 10_000;
    c.network.fairness.rate_per_sec = 100_000;
    c.network.fairness.burst = 100_000;
}

fn lookup(n: u32, number: &str) -> pb::LookupPrescriptionRequest {
    pb::LookupPrescriptionRequest {
        patient_key: Some(patient(n)),
        exchange_number: number.into(),
    }
}

/// An exchange number that is not `right`.
fn wrong(i: usize, right: &str) -> String {
    let guess = format!("{:06}", i % 1_000_000);
    if guess == right {
        format!("{:06}", (i + 1) % 1_000_000)
    } else {
        guess
    }
}

/// How a burst was answered.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    not_found: usize,
    locked: usize,
}

impl Tally {
    fn add(&mut self, answer: Result<(), Status>) {
        match answer {
            Ok(()) => self.ok += 1,
            Err(s) if s.code() == Code::NotFound => self.not_found += 1,
            Err(s) if s.code() == Code::ResourceExhausted && s.message().contains("misses") => {
                self.locked += 1
            }
            Err(s) => panic!("unexpected answer: {s:?}"),
        }
    }
}

/// Sends every request of `guesses` at once, each on the client given with it, and tallies the
/// answers.
async fn burst(
    guesses: Vec<(
        DispensingServiceClient<Channel>,
        pb::LookupPrescriptionRequest,
    )>,
) -> Tally {
    let tasks: Vec<_> = guesses
        .into_iter()
        .map(|(mut client, request)| {
            tokio::spawn(async move { client.lookup_prescription(request).await.map(|_| ()) })
        })
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        tally.add(task.await.unwrap());
    }
    tally
}

/// Starts `n` registrations of a clinic (signed beforehand), each on its own task, for patients
/// no guess names.
async fn write_flood(h: &Harness, n: u32) -> Vec<tokio::task::JoinHandle<Result<(), Status>>> {
    let clinic = h.clinic("clinic").await;
    (0..n)
        .map(|i| {
            let rx = demo_prescription(&format!("FLOOD-{i}"), patient(50_000 + i), h.today());
            let request = pb::RegisterPrescriptionRequest {
                prescription: Some(h.sign("doctor", rx.encode_to_vec())),
                consent: pb::Consent::Card as i32,
                ..Default::default()
            };
            let mut clinic = clinic.clone();
            tokio::spawn(async move { clinic.register_prescription(request).await.map(|_| ()) })
        })
        .collect()
}

async fn connections(h: &Harness, name: &str, n: usize) -> Vec<DispensingServiceClient<Channel>> {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(h.pharmacy(name).await);
    }
    clients
}

fn assert_locked(answer: Result<impl std::fmt::Debug, Status>, limit: &str) {
    let status = answer.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains(limit), "{}", status.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_guesses_at_once_over_four_connections_and_a_busy_writer_meet_the_limit() {
    let h = start_with(generous).await;
    let rx = h.register_demo("clinic", "BURST-1", 1).await;
    let clients = connections(&h, "pharmacy", 4).await;
    // Each guess names another patient: only the pharmacy's own limit applies. The right
    // number goes last, among them: it is answered only if it is evaluated within the limit.
    let mut guesses: Vec<_> = (0..1_000)
        .map(|i| {
            (
                clients[i % 4].clone(),
                lookup(10_000 + i as u32, &wrong(i, "")),
            )
        })
        .collect();
    guesses.push((clients[3].clone(), lookup(1, &rx.exchange_number)));
    // The store's writer kept busy meanwhile, so that the guesses queue behind it (sent while
    // the writer was stalled, every guess used to be evaluated).
    let flood = write_flood(&h, 200).await;
    let tally = burst(guesses).await;
    for registration in flood {
        registration.await.unwrap().unwrap();
    }
    assert_eq!(tally.not_found, MAX_MISSES, "{tally:?}");
    assert!(tally.ok <= 1, "{tally:?}");
    assert_eq!(tally.locked, 1_001 - MAX_MISSES - tally.ok, "{tally:?}");
    // The right number, after the limit, is refused too.
    let mut pharmacy = clients[0].clone();
    assert_locked(
        pharmacy
            .lookup_prescription(lookup(1, &rx.exchange_number))
            .await,
        "lookup_max_misses",
    );
    // Another pharmacy is not affected.
    let mut other = h.pharmacy("pharmacy2").await;
    other
        .lookup_prescription(lookup(1, &rx.exchange_number))
        .await
        .unwrap();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_pharmacies_guessing_one_patient_meet_the_patient_limit_and_no_one_else_is_refused()
{
    // The pharmacies' own limit is out of reach here: only the patient's applies.
    let h = start_with(|c| {
        generous(c);
        c.lookup_max_misses = 10_000;
    })
    .await;
    let rx = h.register_demo("clinic", "PAT-1", 2).await;
    let other = h.register_demo("clinic", "PAT-2", 3).await;
    let mut racers = Vec::new();
    for i in 1..=16 {
        racers.extend(connections(&h, &format!("race-pharmacy-{i:02}"), 2).await);
    }
    let guesses = (0..640)
        .map(|i| {
            (
                racers[i % racers.len()].clone(),
                lookup(2, &wrong(i, &rx.exchange_number)),
            )
        })
        .collect();
    let tally = burst(guesses).await;
    // Once the patient's limit trips, a pharmacy that has missed on them is refused, and one
    // that had not yet missed gets at most one more miss: the one that marks it.
    assert!(tally.not_found >= PATIENT_MAX_MISSES, "{tally:?}");
    assert!(tally.not_found < PATIENT_MAX_MISSES + 16, "{tally:?}");
    assert_eq!(tally.ok, 0, "{tally:?}");
    // Every racer missed on the patient: each is refused even the right number, for this
    // patient only.
    for (i, racer) in racers.iter().step_by(2).enumerate() {
        let mut racer = racer.clone();
        assert_locked(
            racer
                .lookup_prescription(lookup(2, &rx.exchange_number))
                .await,
            "lookup_patient_max_misses",
        );
        let answer = racer
            .lookup_prescription(lookup(3, &other.exchange_number))
            .await;
        assert!(answer.is_ok(), "racer {i} on another patient: {answer:?}");
    }
    // A pharmacy that never missed on the patient is never refused by their lockout.
    h.pharmacy("pharmacy")
        .await
        .receive_prescription(pb::ReceivePrescriptionRequest {
            patient_key: Some(patient(2)),
            exchange_number: rx.exchange_number.clone(),
            consent: pb::Consent::Card as i32,
            check_options: None,
        })
        .await
        .unwrap();
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockout_survives_a_restart() {
    let h = start_with(generous).await;
    let rx = h.register_demo("clinic", "KEEP-1", 4).await;
    let mut pharmacy = h.pharmacy("pharmacy").await;
    for i in 0..MAX_MISSES {
        let miss = pharmacy
            .lookup_prescription(lookup(4, &wrong(i, &rx.exchange_number)))
            .await
            .unwrap_err();
        assert_eq!(miss.code(), Code::NotFound, "miss {i}");
    }
    let h = h.restart().await;
    let mut pharmacy = h.pharmacy("pharmacy").await;
    assert_locked(
        pharmacy
            .lookup_prescription(lookup(4, &rx.exchange_number))
            .await,
        "lookup_max_misses",
    );
    h.shutdown().await;
}

/// What this test binary's servers log: a writer for one global subscriber, installed once.
#[derive(Clone)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn captured() -> Logs {
        static LOGS: OnceLock<Logs> = OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs(Arc::default());
            let writer = logs.clone();
            tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .init();
            logs
        })
        .clone()
    }

    fn lines_with(&self, text: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(text))
            .map(str::to_owned)
            .collect()
    }
}

/// The pseudonym (hex) the dev gateway names patient `n` by.
fn pseudonym(n: u32) -> String {
    let key = Config::dev("unused".into(), &dev_pki()).audit_pseudonym_key;
    let patient = PatientKey::insurance("06139999", "ZQ", &format!("{n:07}"), "01").unwrap();
    hex(&Pseudonyms::from_file(&key).unwrap().of(patient.canonical()))
}

/// `count` wrong guesses of the dev institution `name`, one after another, naming patient `n`
/// (or patients `n`, `n + 1`, … with `spread`).
async fn miss(h: &Harness, name: &str, n: u32, count: u32, spread: bool) -> Tally {
    let mut pharmacy = h.pharmacy(name).await;
    let mut tally = Tally::default();
    for i in 0..count {
        let who = if spread { n + i } else { n };
        let answer = pharmacy
            .lookup_prescription(lookup(who, &wrong(i as usize, "")))
            .await;
        tally.add(answer.map(|_| ()));
    }
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_trip_is_logged_once_counted_and_audited() {
    let logs = Logs::captured();
    let h = start_with(generous).await;
    // The tenth miss trips the pharmacy's limit and the patient's at once; the rest are refused.
    let tally = miss(&h, "pharmacy2", 20, 30, false).await;
    assert_eq!(
        (tally.not_found, tally.locked),
        (MAX_MISSES, 20),
        "{tally:?}"
    );

    let pharmacy_lines = logs.lines_with("pharmacy locked out");
    let ours: Vec<_> = pharmacy_lines
        .iter()
        .filter(|l| l.contains("1340000002"))
        .collect();
    assert_eq!(ours.len(), 1, "{pharmacy_lines:?}");
    let patient_lines = logs.lines_with(&pseudonym(20));
    assert_eq!(patient_lines.len(), 1, "{patient_lines:?}");
    assert!(
        patient_lines[0].contains("pharmacy=1340000002"),
        "{patient_lines:?}"
    );
    assert!(
        logs.lines_with("0000020").is_empty(),
        "a patient number was logged"
    );

    assert_eq!(
        h.metrics_line("rxgate_pharmacy_lockouts_total").await,
        "rxgate_pharmacy_lockouts_total 1"
    );
    assert_eq!(
        h.metrics_line("rxgate_patient_lockouts_total").await,
        "rxgate_patient_lockouts_total 1"
    );

    let trips: Vec<_> = h
        .audit_records()
        .await
        .into_iter()
        .filter(|r| r.action == "Lockout")
        .map(|r| (r.institution_code, r.target, r.outcome))
        .collect();
    let exhausted = "RESOURCE_EXHAUSTED".to_owned();
    assert_eq!(
        trips,
        [
            (
                "1340000002".into(),
                "pharmacy 1340000002".into(),
                exhausted.clone()
            ),
            (
                "1340000002".into(),
                format!("patient {}", pseudonym(20)),
                exhausted
            ),
        ]
    );
    h.shutdown().await;
}

/// Runs `rxgate admin ARGS --addr …` as the dev operator: whether it succeeded, and its output.
fn admin_cli(h: &Harness, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rxgate"))
        .arg("admin")
        .args(args)
        .args(["--addr", &h.addr])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text.into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_lists_and_lifts_lockouts_and_each_unlock_is_audited() {
    let h = start_with(|c| {
        generous(c);
        c.lookup_max_misses = 20;
    })
    .await;
    let rx = h.register_demo("clinic", "UNL-1", 40).await;
    let other = h.register_demo("clinic", "UNL-2", 41).await;
    // A pharmacy locked out (misses spread over patients), and a patient locked for another.
    miss(&h, "pharmacy", 100, 20, true).await;
    miss(&h, "race-pharmacy-01", 41, 10, false).await;
    let (ok, listed) = admin_cli(&h, &["lockouts"]);
    assert!(ok, "{listed}");
    assert!(
        listed.contains("pharmacy 1340000001  misses 20"),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("patient {}  misses 10", pseudonym(41))),
        "{listed}"
    );

    let (ok, out) = admin_cli(&h, &["unlock", "1340000001"]);
    assert!(ok, "{out}");
    let mut pharmacy = h.pharmacy("pharmacy").await;
    pharmacy
        .lookup_prescription(lookup(40, &rx.exchange_number))
        .await
        .unwrap();
    let (ok, out) = admin_cli(&h, &["unlock", "--patient-pseudonym", &pseudonym(41)]);
    assert!(ok, "{out}");
    let mut racer = h.pharmacy("race-pharmacy-01").await;
    racer
        .lookup_prescription(lookup(41, &other.exchange_number))
        .await
        .unwrap();

    // Nothing left to lift: said so.
    let mut admin = AdminServiceClient::new(h.channel("operator").await);
    let again = admin
        .unlock(pb::UnlockRequest {
            subject: Some(pb::LockoutSubject {
                subject: Some(Subject::PharmacyCode("1340000001".into())),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition, "{again:?}");
    let (ok, listed) = admin_cli(&h, &["lockouts"]);
    assert!(ok && listed == "no lockout in force\n", "{listed}");

    let unlocks: Vec<_> = h
        .audit_records()
        .await
        .into_iter()
        .filter(|r| r.action == "Unlock")
        .map(|r| (r.institution_code, r.target, r.outcome))
        .collect();
    let operator = "9990000002".to_owned();
    assert_eq!(
        unlocks,
        [
            (operator.clone(), "pharmacy 1340000001".into(), "OK".into()),
            (
                operator.clone(),
                format!("patient {}", pseudonym(41)),
                "OK".into()
            ),
            (
                operator,
                "pharmacy 1340000001".into(),
                "FAILED_PRECONDITION".into()
            ),
        ]
    );
    h.shutdown().await;
}
