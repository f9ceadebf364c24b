//! Every numeric wire field of the requests and signed documents, and every number written as
//! text (exchange numbers, dates), driven through 0, 1, its bound, max − 1, max and the sign
//! extremes against the real server over mutual TLS (issue 22, "Tests that must exist"). Each
//! answer is either INVALID_ARGUMENT naming the field or the correct answer for that value, never
//! INTERNAL or a dropped call; and after the run no history entry of the store ends before it
//! starts (an overflowed days_supplied once put a dispensed drug's last day in the past).

use crate::common;

use std::time::UNIX_EPOCH;

use common::{Harness, line, patient, prescription, start_with};
use prost::Message;
use rxgate::{
    cli::demo::demo_dispensing,
    domain::hash::{hex, sha256},
    service::records::{HistoryRecord, SlotV2, decode},
    store::{EmbeddedStore, Store, Table},
    wire::proto::v1::{
        self as pb, admin_service_client::AdminServiceClient,
        event_service_client::EventServiceClient, management_intake_client::ManagementIntakeClient,
    },
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

const CLINIC: &str = "1310000001";
const AMLODIPINE: &str = "612170710";

const U32_EDGES: [u32; 9] = [
    0,
    1,
    99,
    365,
    366,
    i32::MAX as u32,
    1 << 31,
    u32::MAX - 1,
    u32::MAX,
];
const U64_EDGES: [u64; 8] = [
    0,
    1,
    366 * 86_400,
    366 * 86_400 + 1,
    i64::MAX as u64,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
];
const I64_EDGES: [i64; 7] = [i64::MIN, i64::MIN + 1, -1, 0, 1, i64::MAX - 1, i64::MAX];
/// Dates at the calendar's edges, and whether each is a date.
const DATES: [(&str, bool); 12] = [
    ("0000-01-01", true),
    ("0000-02-29", true),
    ("1969-12-31", true),
    ("1970-01-01", true),
    ("2023-02-29", false),
    ("2024-02-29", true),
    ("9999-12-31", true),
    ("10000-01-01", false),
    ("-001-01-01", false),
    ("2025-13-01", false),
    ("2025-00-10", false),
    ("2025-01-32", false),
];
const EXCHANGE_NUMBERS: [&str; 10] = [
    "000000",
    "000001",
    "999998",
    "999999",
    "1000000",
    "-00001",
    "+00001",
    "4294967296",
    "18446744073709551616",
    "",
];

/// The correct answer for one value.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Answered.
    Ok,
    /// INVALID_ARGUMENT whose `BadRequest` names one of these fields.
    Invalid(&'static [&'static str]),
    /// Refused with this code (a lifecycle or lookup answer the value leads to).
    Refused(Code),
}

/// Records, for the case `name`, why `got` is not what `want` says (if it is not).
fn judge<T>(failures: &mut Vec<String>, name: String, got: Result<T, Status>, want: Want) {
    let fields = |s: &Status| -> Vec<String> {
        s.get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default()
    };
    let right = match (&got, want) {
        (Ok(_), Want::Ok) => true,
        (Err(s), Want::Invalid(names)) => {
            s.code() == Code::InvalidArgument && fields(s).iter().any(|f| names.contains(&&f[..]))
        }
        (Err(s), Want::Refused(code)) => s.code() == code,
        _ => false,
    };
    if !right {
        let got = got
            .map(|_| "answered")
            .map_err(|s| (s.code(), s.message().to_owned()));
        failures.push(format!("{name}: wanted {want:?}, got {got:?}"));
    }
}

/// `Want::Ok` inside `range`, else INVALID_ARGUMENT naming `field`.
fn within<T: PartialOrd>(
    value: T,
    range: std::ops::RangeInclusive<T>,
    field: &'static [&'static str],
) -> Want {
    if range.contains(&value) {
        Want::Ok
    } else {
        Want::Invalid(field)
    }
}

/// A fresh patient number for each case, so that no per-patient bound is met.
struct Patients(u32);

impl Patients {
    fn next(&mut self) -> u32 {
        self.0 += 1;
        self.0
    }
}

async fn register_cases(h: &Harness, p: &mut Patients, failures: &mut Vec<String>) {
    for days in U32_EDGES {
        let mut rx = prescription(h, CLINIC, &format!("DAYS-{days}"), p.next(), &[AMLODIPINE]);
        rx.lines[0].days_supplied = days;
        let want = within(days, 1..=365, &["lines[0].days_supplied"]);
        judge(
            failures,
            format!("register days_supplied {days}"),
            h.register("clinic", &rx).await,
            want,
        );
    }
    for refills in U32_EDGES {
        let mut rx = prescription(
            h,
            CLINIC,
            &format!("REFILL-{refills}"),
            p.next(),
            &[AMLODIPINE],
        );
        rx.refill_count = refills;
        let want = within(refills, 1..=3, &["refill_count"]);
        judge(
            failures,
            format!("register refill_count {refills}"),
            h.register("clinic", &rx).await,
            want,
        );
    }
}

async fn check_prescription_cases(h: &Harness, p: &mut Patients, failures: &mut Vec<String>) {
    let mut clinic = h.clinic("clinic").await;
    for days in U32_EDGES {
        let mut draft = prescription(h, CLINIC, "DRAFT", p.next(), &[AMLODIPINE]);
        draft.lines[0].days_supplied = days;
        let got = clinic
            .check_prescription(pb::CheckPrescriptionRequest {
                draft: Some(draft),
                consent: pb::Consent::Card as i32,
                check_options: None,
            })
            .await;
        let want = within(days, 1..=365, &["lines[0].days_supplied"]);
        judge(failures, format!("check days_supplied {days}"), got, want);
    }
}

/// `Want::Ok` for a date the field may take, else INVALID_ARGUMENT naming `field`.
fn dated(valid: bool, field: &'static [&'static str]) -> Want {
    if valid {
        Want::Ok
    } else {
        Want::Invalid(field)
    }
}

/// A date of a prescription: its field, how to set it, and whether any date passes (an issue
/// date must be today and a usable-until date lie after it, which no edge date does).
type PrescriptionDate = (
    &'static [&'static str],
    fn(&mut pb::Prescription, &str),
    bool,
);

const PRESCRIPTION_DATES: [PrescriptionDate; 3] = [
    (&["issue_date"], |rx, d| rx.issue_date = d.into(), false),
    (&["usable_until"], |rx, d| rx.usable_until = d.into(), false),
    (
        &["patient.birth_date"],
        |rx, d| rx.patient.as_mut().unwrap().birth_date = d.into(),
        true,
    ),
];

async fn date_cases(h: &Harness, p: &mut Patients, failures: &mut Vec<String>) {
    let mut clinic = h.clinic("clinic").await;
    for (date, valid) in DATES {
        for (field, set, may_pass) in PRESCRIPTION_DATES {
            let n = p.next();
            let mut rx = prescription(h, CLINIC, &format!("{}-{date}", field[0]), n, &[AMLODIPINE]);
            set(&mut rx, date);
            let got = h.register("clinic", &rx).await;
            judge(
                failures,
                format!("register {} {date}", field[0]),
                got,
                dated(valid && may_pass, field),
            );
        }
        let search = pb::SearchPrescriptionsRequest {
            patient_key: Some(patient(p.next())),
            issued_from: date.into(),
            issued_to: date.into(),
        };
        let got = clinic.search_prescriptions(search).await;
        judge(
            failures,
            format!("search from {date}"),
            got,
            dated(valid, &["issued_from"]),
        );
    }
}

/// Registers a prescription of amlodipine for patient `n` and has the dev pharmacy accept it.
async fn accepted(h: &Harness, number: &str, n: u32) -> pb::RegisterPrescriptionResponse {
    let registered = h
        .register("clinic", &prescription(h, CLINIC, number, n, &[AMLODIPINE]))
        .await
        .unwrap();
    h.pharmacy("pharmacy")
        .await
        .receive_prescription(pb::ReceivePrescriptionRequest {
            patient_key: Some(patient(n)),
            exchange_number: registered.exchange_number.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    registered
}

/// Records the dispensing of prescription `number`, changed by `f`, signed by the pharmacist.
async fn record(
    h: &Harness,
    number: &str,
    f: impl FnOnce(&mut pb::DispensingRecord),
) -> Result<tonic::Response<pb::RecordDispensingResponse>, Status> {
    let mut record = demo_dispensing(number, h.today());
    record.lines[0].drug = line(AMLODIPINE).drug;
    f(&mut record);
    h.pharmacy("pharmacy")
        .await
        .record_dispensing(pb::RecordDispensingRequest {
            dispensing_record: Some(h.sign("pharmacist", record.encode_to_vec())),
        })
        .await
}

const PRESCRIPTION_LINE: &[&str] = &["lines[0].prescription_line", "lines.prescription_line"];

async fn record_cases(h: &Harness, p: &mut Patients, failures: &mut Vec<String>) {
    for value in U32_EDGES {
        let number = format!("REC-DAYS-{value}");
        accepted(h, &number, p.next()).await;
        let got = record(h, &number, |r| r.lines[0].days_supplied = value).await;
        judge(
            failures,
            format!("record days_supplied {value}"),
            got,
            within(value, 0..=365, &["lines[0].days_supplied"]),
        );
        let number = format!("REC-NUMBER-{value}");
        accepted(h, &number, p.next()).await;
        let want = match value {
            1 => Want::Ok,
            2..=99 => Want::Refused(Code::FailedPrecondition),
            _ => Want::Invalid(&["record_number"]),
        };
        judge(
            failures,
            format!("record record_number {value}"),
            record(h, &number, |r| r.record_number = value).await,
            want,
        );
        let number = format!("REC-LINE-{value}");
        accepted(h, &number, p.next()).await;
        let got = record(h, &number, |r| r.lines[0].prescription_line = value).await;
        judge(
            failures,
            format!("record prescription_line {value}"),
            got,
            within(value, 0..=0, PRESCRIPTION_LINE),
        );
    }
    let number = "REC-DATE";
    accepted(h, number, p.next()).await;
    for (date, _) in DATES {
        let got = record(h, number, |r| r.dispensing_date = date.into()).await;
        judge(
            failures,
            format!("record dispensing_date {date}"),
            got,
            Want::Invalid(&["dispensing_date"]),
        );
    }
}

/// A dispensed line's numeric field: its name, how to set it, its range and its field path.
type LineField = (
    &'static str,
    fn(&mut pb::DispensedLine, u32),
    std::ops::RangeInclusive<u32>,
    &'static [&'static str],
);

const CHECKED_LINE_FIELDS: [LineField; 2] = [
    (
        "days_supplied",
        |l, v| l.days_supplied = v,
        0..=365,
        &["lines[0].days_supplied"],
    ),
    (
        "prescription_line",
        |l, v| l.prescription_line = v,
        0..=4_095,
        &["lines[0].prescription_line"],
    ),
];

async fn check_dispensing_cases(h: &Harness, p: &mut Patients, failures: &mut Vec<String>) {
    let id = accepted(h, "CHECK-DISP", p.next()).await.prescription_id;
    let mut pharmacy = h.pharmacy("pharmacy").await;
    for value in U32_EDGES {
        for (field, set, range, path) in CHECKED_LINE_FIELDS {
            let mut line = demo_dispensing("CHECK-DISP", h.today()).lines[0].clone();
            set(&mut line, value);
            let request = pb::CheckDispensingRequest {
                prescription_id: id.clone(),
                lines: vec![line],
                consent: pb::Consent::Card as i32,
                check_options: None,
            };
            let got = pharmacy.check_dispensing(request).await;
            judge(
                failures,
                format!("check dispensing {field} {value}"),
                got,
                within(value, range, path),
            );
        }
    }
}

async fn lookup_cases(h: &Harness, p: &mut Patients, failures: &mut Vec<String>) {
    // Another pharmacy than the rest of the run: its misses (at most 10 before a lockout) are
    // the four well-formed numbers here.
    let mut pharmacy = h.pharmacy("pharmacy2").await;
    let n = p.next();
    for number in EXCHANGE_NUMBERS {
        let request = pb::LookupPrescriptionRequest {
            patient_key: Some(patient(n)),
            exchange_number: number.into(),
        };
        let six_digits = number.len() == 6 && number.bytes().all(|b| b.is_ascii_digit());
        let want = if six_digits {
            Want::Refused(Code::NotFound)
        } else {
            Want::Invalid(&["exchange_number"])
        };
        judge(
            failures,
            format!("lookup exchange number {number:?}"),
            pharmacy.lookup_prescription(request).await,
            want,
        );
    }
}

async fn admin_cases(h: &Harness, failures: &mut Vec<String>) {
    let mut admin = AdminServiceClient::new(h.channel("operator").await);
    for secs in U64_EDGES {
        let request = pb::ListStuckPrescriptionsRequest {
            stuck_after_secs: secs,
        };
        let got = admin.list_stuck_prescriptions(request).await;
        judge(
            failures,
            format!("stuck_after_secs {secs}"),
            got,
            within(secs, 0..=366 * 86_400, &["stuck_after_secs"]),
        );
    }
    for from in I64_EDGES {
        for to in I64_EDGES {
            let request = pb::ExportAuditRequest {
                from_unix_ms: from,
                to_unix_ms: to,
                patient_pseudonym: String::new(),
            };
            let got = match admin.export_audit(request).await {
                Ok(answer) => drain(answer.into_inner()).await,
                Err(s) => Err(s),
            };
            judge(
                failures,
                format!("export from {from} to {to}"),
                got,
                Want::Ok,
            );
        }
    }
}

/// Reads a stream to its end: how many messages it had, or the status it ended with.
async fn drain<T>(mut stream: tonic::Streaming<T>) -> Result<usize, Status> {
    let mut n = 0;
    while stream.message().await?.is_some() {
        n += 1;
    }
    Ok(n)
}

async fn watch_cases(h: &Harness, failures: &mut Vec<String>) {
    let mut feed = EventServiceClient::new(h.channel("clinic").await);
    for after in U64_EDGES {
        let request = pb::WatchEventsRequest {
            after_sequence: after,
            filter: None,
        };
        // The feed is live: its answer is its headers (the first page was read before them).
        judge(
            failures,
            format!("watch after_sequence {after}"),
            feed.watch_events(request).await,
            Want::Ok,
        );
    }
}

async fn deliver_cases(h: &Harness, failures: &mut Vec<String>) {
    let mut intake = ManagementIntakeClient::new(h.channel("management").await);
    let now_ms = h.now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    let document = h.sign(
        "pharmacist",
        demo_dispensing("SENT-1", h.today()).encode_to_vec(),
    );
    let delivery = |sequence: u64, received_unix_ms: i64| pb::DeliverDispensingRecordRequest {
        record_id: hex(&sha256(&document.content)),
        sequence,
        dispensing_record: Some(document.clone()),
        received_unix_ms,
        prescription_id: "0".repeat(32),
        institution_code: CLINIC.into(),
        prescription_number: "SENT-1".into(),
        attestation: None,
    };
    for sequence in U64_EDGES {
        let got = intake
            .deliver_dispensing_record(delivery(sequence, now_ms))
            .await;
        judge(
            failures,
            format!("deliver sequence {sequence}"),
            got,
            Want::Ok,
        );
    }
    for received in I64_EDGES {
        let want = match received {
            // An unattested receipt time is not believed: the record is judged as of now.
            1 => Want::Ok,
            _ => Want::Invalid(&["received_unix_ms"]),
        };
        let got = intake
            .deliver_dispensing_record(delivery(1, received))
            .await;
        judge(
            failures,
            format!("deliver received_unix_ms {received}"),
            got,
            want,
        );
    }
}

/// Every dispensed entry of every patient's history whose last day precedes its start.
async fn reversed_history(dir: &std::path::Path) -> Vec<String> {
    let store = EmbeddedStore::open(dir).unwrap();
    let records = store
        .transact(|tx| tx.scan_prefix(Table::Medications, b"", usize::MAX))
        .await
        .unwrap()
        .unwrap();
    store.close().unwrap();
    let mut reversed = Vec::new();
    for (patient, bytes) in records {
        let HistoryRecord::V2(entries) = decode(&bytes).unwrap() else {
            panic!("a version-1 history written by this build");
        };
        for e in entries {
            if let SlotV2::Dispensed { last_day, .. } = e.slot
                && last_day < e.start
            {
                reversed.push(format!(
                    "{}: {} to {last_day}",
                    String::from_utf8_lossy(&patient),
                    e.start
                ));
            }
        }
    }
    reversed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_numeric_edge_is_refused_by_name_or_answered_correctly() {
    let h = start_with(|_| {}).await;
    let (mut patients, mut failures) = (Patients(0), Vec::new());
    register_cases(&h, &mut patients, &mut failures).await;
    check_prescription_cases(&h, &mut patients, &mut failures).await;
    date_cases(&h, &mut patients, &mut failures).await;
    record_cases(&h, &mut patients, &mut failures).await;
    check_dispensing_cases(&h, &mut patients, &mut failures).await;
    lookup_cases(&h, &mut patients, &mut failures).await;
    admin_cases(&h, &mut failures).await;
    watch_cases(&h, &mut failures).await;
    deliver_cases(&h, &mut failures).await;
    let stopped = h.stop().await;
    let reversed = reversed_history(stopped.store_dir()).await;
    assert!(
        failures.is_empty() && reversed.is_empty(),
        "cases failed:\n{}\nhistory entries ending before they start: {reversed:?}",
        failures.join("\n")
    );
}
