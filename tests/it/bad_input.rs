//! The bad-input table (issue 22, "Tests that must exist"): hostile and broken requests to every
//! RPC of the five rxgate services, the health service and server reflection, sent through the
//! real server over mutual TLS exactly as given (a raw codec, so that garbage bytes, oversize
//! messages and unknown methods reach the server as a client would send them). It proves, for
//! each row, the status code (and for INVALID_ARGUMENT the field the `BadRequest` names), that the
//! server still answers a health check and a status request afterwards, and, over the whole
//! table, that no key outside the audit table (and its counter) was written.

use crate::common;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::UNIX_EPOCH,
};

use common::{Harness, patient, prescription, raw::call_raw, start_with};
use prost::Message;
use rxgate::{
    cli::demo::demo_dispensing,
    domain::hash::{hex, sha256},
    limits::Limits,
    store::{EmbeddedStore, Store, Table},
    wire::proto::v1::{self as pb, import_master_chunk::Part},
};
use tonic::{Code, Status};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_request::MessageRequest,
};
use tonic_types::StatusExt;

const CLINIC: &str = "1310000001";
const AMLODIPINE: &str = "612170710";

const CHECK_RX: &str = "/rxgate.v1.PrescriptionService/CheckPrescription";
const REGISTER: &str = "/rxgate.v1.PrescriptionService/RegisterPrescription";
const CANCEL: &str = "/rxgate.v1.PrescriptionService/CancelPrescription";
const STATUS: &str = "/rxgate.v1.PrescriptionService/GetPrescriptionStatus";
const SEARCH: &str = "/rxgate.v1.PrescriptionService/SearchPrescriptions";
const LOOKUP: &str = "/rxgate.v1.DispensingService/LookupPrescription";
const RECEIVE: &str = "/rxgate.v1.DispensingService/ReceivePrescription";
const RETURN: &str = "/rxgate.v1.DispensingService/ReturnPrescription";
const RECORD: &str = "/rxgate.v1.DispensingService/RecordDispensing";
const CHECK_DISP: &str = "/rxgate.v1.DispensingService/CheckDispensing";
const WATCH: &str = "/rxgate.v1.EventService/WatchEvents";
const DELIVER: &str = "/rxgate.v1.ManagementIntake/DeliverDispensingRecord";
const STUCK: &str = "/rxgate.v1.AdminService/ListStuckPrescriptions";
const IMPORT: &str = "/rxgate.v1.AdminService/ImportMaster";
const EXPORT: &str = "/rxgate.v1.AdminService/ExportAudit";
const CHECKPOINTS: &str = "/rxgate.v1.AdminService/ExportAuditCheckpoints";
const LOCKOUTS: &str = "/rxgate.v1.AdminService/ListLockouts";
const UNLOCK: &str = "/rxgate.v1.AdminService/Unlock";
const HEALTH: &str = "/grpc.health.v1.Health/Check";
const REFLECTION: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";

/// Every method the table must cover, each with at least three rows.
const COVERED: [&str; 20] = [
    CHECK_RX,
    REGISTER,
    CANCEL,
    STATUS,
    SEARCH,
    LOOKUP,
    RECEIVE,
    RETURN,
    RECORD,
    CHECK_DISP,
    WATCH,
    DELIVER,
    STUCK,
    IMPORT,
    EXPORT,
    CHECKPOINTS,
    LOCKOUTS,
    UNLOCK,
    HEALTH,
    REFLECTION,
];

/// The field an undecodable request is refused under (src/grpc/decode_errors.rs).
const UNDECODABLE: &str = "request";

/// Bodies that are not a protobuf encoding of any message.
const INVALID_VARINT: &[u8] = &[
    0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
];
const WRONG_WIRE_TYPE: &[u8] = &[0x08, 0x01, 0x12, 0x05, 0x01];
const TAG_ZERO: &[u8] = &[0x00, 0x01];
const TRUNCATED: &[u8] = &[0x0a, 0x40, 0x01];
const BAD_UTF8: &[u8] = &[0x0a, 0x02, 0xc3, 0x28];
const END_GROUP: &[u8] = &[0x0c];

/// How long a row's answer may take to end: every row is refused or answered at once, so an
/// answer still open after this (a live feed opened by a bad filter) is a failure, not a wait.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

/// Over the 256 KiB message limit.
const OVERSIZE: usize = 300 * 1024;

/// What a row must be answered with.
#[derive(Debug)]
enum Want {
    /// INVALID_ARGUMENT whose `BadRequest` names exactly this field.
    Invalid(&'static str),
    /// INVALID_ARGUMENT whose `BadRequest` names this field first, of at most 16 (the rest are
    /// counted in the message, so that the status stays a header a client reads).
    InvalidMany(&'static str),
    /// This status code (INVALID_ARGUMENT here only from services that give no `BadRequest`).
    Code(Code),
    /// A correct answer to a strange request: this many response messages.
    Answered(usize),
}

/// One bad request: who sends it, to which method, the request messages as bytes.
struct Row {
    name: &'static str,
    cert: &'static str,
    path: &'static str,
    messages: Vec<Vec<u8>>,
    want: Want,
}

/// A row of one request message.
fn one(
    name: &'static str,
    cert: &'static str,
    path: &'static str,
    message: &impl Message,
    want: Want,
) -> Row {
    raw(name, cert, path, &message.encode_to_vec(), want)
}

/// A row of one request body given as bytes.
fn raw(name: &'static str, cert: &'static str, path: &'static str, body: &[u8], want: Want) -> Row {
    Row {
        name,
        cert,
        path,
        messages: vec![body.to_vec()],
        want,
    }
}

/// A row of several request messages (a client stream).
fn stream(
    name: &'static str,
    cert: &'static str,
    path: &'static str,
    messages: Vec<Vec<u8>>,
    want: Want,
) -> Row {
    Row {
        name,
        cert,
        path,
        messages,
        want,
    }
}

/// What the rows act on: a prescription the dev pharmacy has accepted (patient 1) and one still
/// registered (patient 2), both of the dev clinic.
struct Fixture {
    accepted: pb::RegisterPrescriptionResponse,
    open: pb::RegisterPrescriptionResponse,
}

impl Fixture {
    async fn set_up(h: &Harness) -> Fixture {
        let rx = prescription(h, CLINIC, "BAD-1", 1, &[AMLODIPINE]);
        let accepted = h.register("clinic", &rx).await.unwrap();
        h.pharmacy("pharmacy")
            .await
            .receive_prescription(pb::ReceivePrescriptionRequest {
                patient_key: Some(patient(1)),
                exchange_number: accepted.exchange_number.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        let rx = prescription(h, CLINIC, "BAD-2", 2, &[AMLODIPINE]);
        let open = h.register("clinic", &rx).await.unwrap();
        Fixture { accepted, open }
    }
}

/// `n` copies of `line`, each filling another prescription line.
fn distinct(line: &pb::DispensedLine, n: u32) -> Vec<pb::DispensedLine> {
    (0..n)
        .map(|i| pb::DispensedLine {
            prescription_line: i,
            ..line.clone()
        })
        .collect()
}

/// Text of `n` characters (each three bytes in UTF-8).
fn text(n: usize) -> String {
    "錠".repeat(n)
}

#[rustfmt::skip]
fn check_prescription_rows(h: &Harness) -> Vec<Row> {
    let draft = |lines: Vec<pb::PrescriptionLine>, consent: pb::Consent| {
        let mut draft = prescription(h, CLINIC, "DRAFT", 3, &[]);
        draft.lines = lines;
        pb::CheckPrescriptionRequest {
            draft: Some(draft),
            consent: consent as i32,
            check_options: None,
        }
    };
    let line = |f: fn(&mut pb::PrescriptionLine)| {
        let mut line = common::line(AMLODIPINE);
        f(&mut line);
        vec![line]
    };
    let card = pb::Consent::Card;
    let mut other = draft(line(|_| {}), card);
    other.draft.as_mut().unwrap().institution_code = "1310000002".into();
    vec![
        one("check: a line past the limit", "clinic", CHECK_RX, &draft(vec![common::line(AMLODIPINE); Limits::default().prescription_lines + 1], card), Want::Invalid("draft.lines")),
        one("check: 11 lines without consent", "clinic", CHECK_RX, &draft(vec![common::line(AMLODIPINE); 11], pb::Consent::None), Want::Invalid("lines")),
        one("check: no lines", "clinic", CHECK_RX, &draft(vec![], card), Want::Invalid("lines")),
        one("check: days_supplied u32::MAX", "clinic", CHECK_RX, &draft(line(|l| l.days_supplied = u32::MAX), card), Want::Invalid("lines[0].days_supplied")),
        one("check: a unit past MAX_TEXT_CHARS", "clinic", CHECK_RX, &draft(line(|l| l.unit = text(129)), card), Want::Invalid("lines[0].unit")),
        one("check: instructions past MAX_MESSAGE_CHARS", "clinic", CHECK_RX, &draft(line(|l| l.dosage_instructions = text(1_001)), card), Want::Invalid("lines[0].dosage_instructions")),
        one("check: a draft over 256 KiB", "clinic", CHECK_RX, &draft(line(|l| l.dosage_instructions = "x".repeat(OVERSIZE)), card), Want::Code(Code::ResourceExhausted)),
        one("check: a draft of another institution", "clinic", CHECK_RX, &other, Want::Code(Code::PermissionDenied)),
        one("check: a pharmacy calls", "pharmacy", CHECK_RX, &draft(line(|_| {}), card), Want::Code(Code::PermissionDenied)),
        raw("check: garbage (an invalid varint)", "clinic", CHECK_RX, INVALID_VARINT, Want::Invalid(UNDECODABLE)),
    ]
}

#[rustfmt::skip]
fn register_rows(h: &Harness) -> Vec<Row> {
    let signed = |rx: pb::Prescription, acknowledgements: Vec<pb::Acknowledgement>| {
        pb::RegisterPrescriptionRequest {
            prescription: Some(h.sign("doctor", rx.encode_to_vec())),
            consent: pb::Consent::Card as i32,
            check_options: None,
            acknowledgements,
        }
    };
    let rx = |number: &str, f: fn(&mut pb::Prescription)| {
        let mut rx = prescription(h, CLINIC, number, 4, &[AMLODIPINE]);
        f(&mut rx);
        signed(rx, vec![])
    };
    let ack = |reason: String| pb::Acknowledgement {
        finding_id: "f".repeat(32),
        reason,
    };
    let mut unsigned = rx("BAD-R0", |_| {});
    unsigned.prescription.as_mut().unwrap().cms_signature.clear();
    let mut again = prescription(h, CLINIC, "BAD-1", 1, &[AMLODIPINE, AMLODIPINE]);
    again.lines[1].days_supplied = 7;
    vec![
        one("register: a line past the limit", "clinic", REGISTER, &rx("BAD-R1", |p| p.lines = vec![p.lines[0].clone(); Limits::default().prescription_lines + 1]), Want::Invalid("lines")),
        one("register: refill_count u32::MAX", "clinic", REGISTER, &rx("BAD-R2", |p| p.refill_count = u32::MAX), Want::Invalid("refill_count")),
        one("register: a patient name past MAX_TEXT_CHARS", "clinic", REGISTER, &rx("BAD-R3", |p| p.patient.as_mut().unwrap().name = text(129)), Want::Invalid("patient.name")),
        one("register: issued 9999-12-31", "clinic", REGISTER, &rx("BAD-R4", |p| p.issue_date = "9999-12-31".into()), Want::Invalid("issue_date")),
        one("register: days_supplied 366", "clinic", REGISTER, &rx("BAD-R5", |p| p.lines[0].days_supplied = 366), Want::Invalid("lines[0].days_supplied")),
        one("register: 257 acknowledgements", "clinic", REGISTER, &signed(prescription(h, CLINIC, "BAD-R6", 4, &[AMLODIPINE]), vec![ack("r".into()); 257]), Want::Invalid("acknowledgements")),
        one("register: a reason past MAX_MESSAGE_CHARS", "clinic", REGISTER, &signed(prescription(h, CLINIC, "BAD-R7", 4, &[AMLODIPINE]), vec![ack(text(1_001))]), Want::Invalid("acknowledgements[0].reason")),
        one("register: no signature", "clinic", REGISTER, &unsigned, Want::Invalid("prescription")),
        one("register: a number again with other content", "clinic", REGISTER, &signed(again, vec![]), Want::Code(Code::AlreadyExists)),
        raw("register: garbage (truncated)", "clinic", REGISTER, TRUNCATED, Want::Invalid(UNDECODABLE)),
    ]
}

fn id_request(id: impl Into<String>) -> pb::CancelPrescriptionRequest {
    pb::CancelPrescriptionRequest {
        prescription_id: id.into(),
    }
}

fn status_request(id: impl Into<String>) -> pb::GetPrescriptionStatusRequest {
    pb::GetPrescriptionStatusRequest {
        prescription_id: id.into(),
    }
}

#[rustfmt::skip]
fn cancel_and_status_rows(f: &Fixture) -> Vec<Row> {
    let open = f.open.prescription_id.clone();
    vec![
        one("cancel: an id of 300 characters", "clinic", CANCEL, &id_request("a".repeat(300)), Want::Invalid("prescription_id")),
        one("cancel: an unknown id", "clinic", CANCEL, &id_request("0".repeat(32)), Want::Code(Code::NotFound)),
        one("cancel: another clinic's prescription", "clinic2", CANCEL, &id_request(open.clone()), Want::Code(Code::PermissionDenied)),
        one("cancel: a pharmacy calls", "pharmacy", CANCEL, &id_request(open.clone()), Want::Code(Code::PermissionDenied)),
        raw("cancel: garbage (an id not UTF-8)", "clinic", CANCEL, BAD_UTF8, Want::Invalid(UNDECODABLE)),
        one("status: an upper-case id", "clinic", STATUS, &status_request(open.to_uppercase()), Want::Invalid("prescription_id")),
        one("status: an empty id", "clinic", STATUS, &status_request(""), Want::Invalid("prescription_id")),
        one("status: the operator calls", "operator", STATUS, &status_request(open), Want::Code(Code::PermissionDenied)),
        raw("status: garbage (tag 0)", "clinic", STATUS, TAG_ZERO, Want::Invalid(UNDECODABLE)),
    ]
}

#[rustfmt::skip]
fn search_rows() -> Vec<Row> {
    let search = |from: &str, to: &str| pb::SearchPrescriptionsRequest {
        patient_key: Some(patient(1)),
        issued_from: from.into(),
        issued_to: to.into(),
    };
    let mut long_number = search("2025-01-01", "2025-01-02");
    if let Some(pb::patient_key::Kind::Insurance(i)) = long_number
        .patient_key
        .as_mut()
        .and_then(|k| k.kind.as_mut())
    {
        i.number = "1".repeat(300);
    }
    let mut keyless = search("2025-01-01", "2025-01-02");
    keyless.patient_key = None;
    vec![
        one("search: 30 February", "clinic", SEARCH, &search("2025-02-30", "2025-03-01"), Want::Invalid("issued_from")),
        one("search: year 10000", "clinic", SEARCH, &search("2025-01-01", "10000-01-01"), Want::Invalid("issued_to")),
        one("search: no patient key", "clinic", SEARCH, &keyless, Want::Invalid("patient_key")),
        one("search: an insured number of 300 digits", "clinic", SEARCH, &long_number, Want::Invalid("patient_key (insurance number)")),
        one("search: the calendar's extremes", "clinic", SEARCH, &search("0000-01-01", "9999-12-31"), Want::Invalid("issued_from")),
        one("search: a pharmacy calls", "pharmacy", SEARCH, &search("2025-01-01", "2025-01-02"), Want::Code(Code::PermissionDenied)),
    ]
}

#[rustfmt::skip]
fn lookup_and_receive_rows() -> Vec<Row> {
    let lookup = |number: &str| pb::LookupPrescriptionRequest {
        patient_key: Some(patient(1)),
        exchange_number: number.into(),
    };
    let receive = |number: &str| pb::ReceivePrescriptionRequest {
        patient_key: Some(patient(1)),
        exchange_number: number.into(),
        consent: pb::Consent::Card as i32,
        check_options: None,
    };
    let mut keyless = lookup("123456");
    keyless.patient_key = None;
    let mut lettered = receive("123456");
    lettered.patient_key = Some(pb::PatientKey {
        kind: Some(pb::patient_key::Kind::Insurance(pb::InsuranceKey {
            insurer_number: "0613999X".into(),
            symbol: "ZQ".into(),
            number: "0000001".into(),
            branch: "01".into(),
        })),
    });
    vec![
        one("lookup: five digits", "pharmacy", LOOKUP, &lookup("12345"), Want::Invalid("exchange_number")),
        one("lookup: full-width digits", "pharmacy", LOOKUP, &lookup("１２３４５６"), Want::Invalid("exchange_number")),
        one("lookup: no patient key", "pharmacy", LOOKUP, &keyless, Want::Invalid("patient_key")),
        one("lookup: a clinic calls", "clinic", LOOKUP, &lookup("123456"), Want::Code(Code::PermissionDenied)),
        raw("lookup: garbage (an end-group tag)", "pharmacy", LOOKUP, END_GROUP, Want::Invalid(UNDECODABLE)),
        one("receive: 300 digits", "pharmacy", RECEIVE, &receive(&"9".repeat(300)), Want::Invalid("exchange_number")),
        one("receive: a signed number", "pharmacy", RECEIVE, &receive("-00001"), Want::Invalid("exchange_number")),
        one("receive: an insurer number with a letter", "pharmacy", RECEIVE, &lettered, Want::Invalid("patient_key (insurer number)")),
        one("receive: a clinic calls", "clinic2", RECEIVE, &receive("123456"), Want::Code(Code::PermissionDenied)),
    ]
}

#[rustfmt::skip]
fn return_rows(f: &Fixture) -> Vec<Row> {
    let back = |id: &str| pb::ReturnPrescriptionRequest {
        prescription_id: id.into(),
    };
    let accepted = f.accepted.prescription_id.as_str();
    vec![
        one("return: an id of 33 characters", "pharmacy", RETURN, &back(&"a".repeat(33)), Want::Invalid("prescription_id")),
        one("return: by a pharmacy that does not hold it", "pharmacy2", RETURN, &back(accepted), Want::Code(Code::PermissionDenied)),
        one("return: a clinic calls", "clinic", RETURN, &back(accepted), Want::Code(Code::PermissionDenied)),
        raw("return: garbage (an invalid varint)", "pharmacy", RETURN, INVALID_VARINT, Want::Invalid(UNDECODABLE)),
    ]
}

/// A dispensing record of the accepted prescription, changed by `f`, signed by the pharmacist.
fn record(h: &Harness, f: impl FnOnce(&mut pb::DispensingRecord)) -> pb::SignedDocument {
    let mut record = demo_dispensing("BAD-1", h.today());
    f(&mut record);
    h.sign("pharmacist", record.encode_to_vec())
}

#[rustfmt::skip]
fn record_rows(h: &Harness) -> Vec<Row> {
    let rec = |f: fn(&mut pb::DispensingRecord)| pb::RecordDispensingRequest {
        dispensing_record: Some(record(h, f)),
    };
    vec![
        one("record: days_supplied u32::MAX", "pharmacy", RECORD, &rec(|r| r.lines[0].days_supplied = u32::MAX), Want::Invalid("lines[0].days_supplied")),
        one("record: days_supplied 2^31 + 5", "pharmacy", RECORD, &rec(|r| r.lines[0].days_supplied = (1 << 31) + 5), Want::Invalid("lines[0].days_supplied")),
        one("record: record_number 0", "pharmacy", RECORD, &rec(|r| r.record_number = 0), Want::Invalid("record_number")),
        one("record: record_number u32::MAX", "pharmacy", RECORD, &rec(|r| r.record_number = u32::MAX), Want::Invalid("record_number")),
        one("record: prescription_line u32::MAX", "pharmacy", RECORD, &rec(|r| r.lines[0].prescription_line = u32::MAX), Want::Invalid("lines[0].prescription_line")),
        one("record: prescription_line past the prescription (unindexed field, reported)", "pharmacy", RECORD, &rec(|r| r.lines[0].prescription_line = 1), Want::Invalid("lines.prescription_line")),
        one("record: no lines", "pharmacy", RECORD, &rec(|r| r.lines.clear()), Want::Invalid("lines")),
        one("record: 129 lines", "pharmacy", RECORD, &rec(|r| r.lines = distinct(&r.lines[0], 129)), Want::Invalid("lines")),
        one("record: a line twice", "pharmacy", RECORD, &rec(|r| r.lines = vec![r.lines[0].clone(); 2]), Want::Invalid("lines[1].prescription_line")),
        one("record: one line 128 times", "pharmacy", RECORD, &rec(|r| r.lines = vec![r.lines[0].clone(); 128]), Want::InvalidMany("lines[1].prescription_line")),
        one("record: a message past MAX_MESSAGE_CHARS", "pharmacy", RECORD, &rec(|r| r.important_message = text(1_001)), Want::Invalid("important_message")),
        one("record: dispensed 9999-12-31", "pharmacy", RECORD, &rec(|r| r.dispensing_date = "9999-12-31".into()), Want::Invalid("dispensing_date")),
        one("record: dispensed 0000-01-01", "pharmacy", RECORD, &rec(|r| r.dispensing_date = "0000-01-01".into()), Want::Invalid("dispensing_date")),
        one("record: a clinic calls", "clinic", RECORD, &rec(|_| {}), Want::Code(Code::PermissionDenied)),
    ]
}

#[rustfmt::skip]
fn check_dispensing_rows(h: &Harness, f: &Fixture) -> Vec<Row> {
    let line = demo_dispensing("BAD-1", h.today()).lines[0].clone();
    let check = |id: &str, lines: Vec<pb::DispensedLine>, consent: pb::Consent| {
        pb::CheckDispensingRequest {
            prescription_id: id.into(),
            lines,
            consent: consent as i32,
            check_options: None,
        }
    };
    let id = f.accepted.prescription_id.as_str();
    let card = pb::Consent::Card;
    let mut long = line.clone();
    long.days_supplied = 1 << 31;
    vec![
        one("check dispensing: 129 lines", "pharmacy", CHECK_DISP, &check(id, distinct(&line, 129), card), Want::Invalid("lines")),
        one("check dispensing: 11 lines without consent", "pharmacy", CHECK_DISP, &check(id, distinct(&line, 11), pb::Consent::None), Want::Invalid("lines")),
        one("check dispensing: no lines", "pharmacy", CHECK_DISP, &check(id, vec![], card), Want::Invalid("lines")),
        one("check dispensing: days_supplied 2^31", "pharmacy", CHECK_DISP, &check(id, vec![long], card), Want::Invalid("lines[0].days_supplied")),
        one("check dispensing: a malformed id", "pharmacy", CHECK_DISP, &check("x", vec![line.clone()], card), Want::Invalid("prescription_id")),
        one("check dispensing: not the accepting pharmacy", "pharmacy2", CHECK_DISP, &check(id, vec![line.clone()], card), Want::Code(Code::PermissionDenied)),
        one("check dispensing: a clinic calls", "clinic", CHECK_DISP, &check(id, vec![line], card), Want::Code(Code::PermissionDenied)),
    ]
}

#[rustfmt::skip]
fn watch_rows() -> Vec<Row> {
    let watch = |id: String, kinds: Vec<i32>| pb::WatchEventsRequest {
        after_sequence: 0,
        filter: Some(pb::EventFilter {
            prescription_id: id,
            kinds,
        }),
    };
    let registered = pb::EventKind::Registered as i32;
    vec![
        one("watch: a pharmacy reads the feed", "pharmacy", WATCH, &watch(String::new(), vec![]), Want::Code(Code::PermissionDenied)),
        one("watch: a malformed prescription id", "clinic", WATCH, &watch("Z".repeat(32), vec![]), Want::Invalid("prescription_id")),
        one("watch: an unknown kind", "clinic", WATCH, &watch(String::new(), vec![i32::MAX]), Want::Invalid("filter.kinds")),
        one("watch: one kind 60,000 times", "clinic", WATCH, &watch(String::new(), vec![registered; 60_000]), Want::Invalid("filter.kinds")),
        one("watch: a filter over 256 KiB", "clinic", WATCH, &watch("a".repeat(OVERSIZE), vec![]), Want::Code(Code::ResourceExhausted)),
        raw("watch: garbage (truncated)", "clinic", WATCH, TRUNCATED, Want::Invalid(UNDECODABLE)),
    ]
}

#[rustfmt::skip]
fn deliver_rows(h: &Harness) -> Vec<Row> {
    let signed = record(h, |_| {});
    let deliver = |document: pb::SignedDocument, f: fn(&mut pb::DeliverDispensingRecordRequest)| {
        let mut request = pb::DeliverDispensingRecordRequest {
            record_id: hex(&sha256(&document.content)),
            sequence: 1,
            dispensing_record: Some(document),
            received_unix_ms: h.now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64,
            prescription_id: "0".repeat(32),
            institution_code: CLINIC.into(),
            prescription_number: "BAD-1".into(),
            attestation: None,
        };
        f(&mut request);
        request
    };
    let days = record(h, |r| r.lines[0].days_supplied = u32::MAX);
    vec![
        one("deliver: a record id not the content's", "management", DELIVER, &deliver(signed.clone(), |d| d.record_id = "0".repeat(64)), Want::Invalid("record_id")),
        one("deliver: received at i64::MAX", "management", DELIVER, &deliver(signed.clone(), |d| d.received_unix_ms = i64::MAX), Want::Invalid("received_unix_ms")),
        one("deliver: received at i64::MIN", "management", DELIVER, &deliver(signed.clone(), |d| d.received_unix_ms = i64::MIN), Want::Invalid("received_unix_ms")),
        one("deliver: no signature", "management", DELIVER, &deliver(signed.clone(), |d| d.dispensing_record = None), Want::Invalid("dispensing_record")),
        one("deliver: days_supplied u32::MAX", "management", DELIVER, &deliver(days, |_| {}), Want::Invalid("lines[0].days_supplied")),
        one("deliver: a prescription number of 100 KiB", "management", DELIVER, &deliver(signed.clone(), |d| d.prescription_number = "9".repeat(100 * 1024)), Want::Invalid("prescription_number")),
        one("deliver: a clinic delivers", "clinic", DELIVER, &deliver(signed, |_| {}), Want::Code(Code::PermissionDenied)),
        raw("deliver: garbage (bytes not UTF-8)", "management", DELIVER, BAD_UTF8, Want::Invalid(UNDECODABLE)),
    ]
}

#[rustfmt::skip]
fn stuck_and_export_rows() -> Vec<Row> {
    let stuck = |secs: u64| pb::ListStuckPrescriptionsRequest {
        stuck_after_secs: secs,
    };
    let export = |from: i64, to: i64, pseudonym: String| pb::ExportAuditRequest {
        from_unix_ms: from,
        to_unix_ms: to,
        patient_pseudonym: pseudonym,
    };
    vec![
        one("stuck: u64::MAX seconds", "operator", STUCK, &stuck(u64::MAX), Want::Invalid("stuck_after_secs")),
        one("stuck: 366 days and a second", "operator", STUCK, &stuck(366 * 86_400 + 1), Want::Invalid("stuck_after_secs")),
        one("stuck: a clinic calls", "clinic", STUCK, &stuck(1), Want::Code(Code::PermissionDenied)),
        raw("stuck: garbage (a wrong wire type)", "operator", STUCK, WRONG_WIRE_TYPE, Want::Invalid(UNDECODABLE)),
        one("export: 63 hex digits", "operator", EXPORT, &export(0, 0, "a".repeat(63)), Want::Invalid("patient_pseudonym")),
        one("export: 64 digits not hex", "operator", EXPORT, &export(0, 0, "g".repeat(64)), Want::Invalid("patient_pseudonym")),
        one("export: from i64::MAX to i64::MIN", "operator", EXPORT, &export(i64::MAX, i64::MIN, String::new()), Want::Answered(0)),
        one("export: a pharmacy calls", "pharmacy", EXPORT, &export(0, 0, String::new()), Want::Code(Code::PermissionDenied)),
        raw("export: garbage (tag 0)", "operator", EXPORT, TAG_ZERO, Want::Invalid(UNDECODABLE)),
        one("checkpoints: a pharmacy calls", "pharmacy", CHECKPOINTS, &pb::ExportAuditCheckpointsRequest {}, Want::Code(Code::PermissionDenied)),
        one("checkpoints: a clinic calls", "clinic", CHECKPOINTS, &pb::ExportAuditCheckpointsRequest {}, Want::Code(Code::PermissionDenied)),
        raw("checkpoints: garbage (a truncated field)", "operator", CHECKPOINTS, TRUNCATED, Want::Invalid(UNDECODABLE)),
    ]
}

#[rustfmt::skip]
fn lockout_rows() -> Vec<Row> {
    use pb::lockout_subject::Subject;
    let unlock = |subject: Option<Subject>| pb::UnlockRequest {
        subject: Some(pb::LockoutSubject { subject }),
    };
    let pharmacy = |code: &str| unlock(Some(Subject::PharmacyCode(code.into())));
    let patient = |text: String| unlock(Some(Subject::PatientPseudonym(text)));
    vec![
        one("lockouts: none in force", "operator", LOCKOUTS, &pb::ListLockoutsRequest {}, Want::Answered(1)),
        one("lockouts: a pharmacy calls", "pharmacy", LOCKOUTS, &pb::ListLockoutsRequest {}, Want::Code(Code::PermissionDenied)),
        raw("lockouts: garbage (tag 0)", "operator", LOCKOUTS, TAG_ZERO, Want::Invalid(UNDECODABLE)),
        raw("lockouts: garbage (an invalid varint)", "operator", LOCKOUTS, INVALID_VARINT, Want::Invalid(UNDECODABLE)),
        one("unlock: no subject", "operator", UNLOCK, &unlock(None), Want::Invalid("subject")),
        one("unlock: a pharmacy code of 9 digits", "operator", UNLOCK, &pharmacy("134000000"), Want::Invalid("subject.pharmacy_code")),
        one("unlock: a pharmacy code of 300 KiB", "operator", UNLOCK, &pharmacy(&"1".repeat(OVERSIZE)), Want::Code(Code::ResourceExhausted)),
        one("unlock: 63 hex digits", "operator", UNLOCK, &patient("a".repeat(63)), Want::Invalid("subject.patient_pseudonym")),
        one("unlock: 64 digits not hex", "operator", UNLOCK, &patient("g".repeat(64)), Want::Invalid("subject.patient_pseudonym")),
        one("unlock: nothing locked", "operator", UNLOCK, &pharmacy("1340000001"), Want::Code(Code::FailedPrecondition)),
        one("unlock: a pharmacy unlocks itself", "pharmacy", UNLOCK, &pharmacy("1340000001"), Want::Code(Code::PermissionDenied)),
        raw("unlock: garbage (a truncated subject)", "operator", UNLOCK, &[0x0a, 0x02, 0x0a, 0x80], Want::Invalid(UNDECODABLE)),
    ]
}

fn header(name: &str, kind: pb::MasterFileKind, size: u64) -> Vec<u8> {
    let file = pb::ImportFileHeader {
        name: name.into(),
        kind: kind as i32,
        size,
    };
    pb::ImportMasterChunk {
        part: Some(Part::File(file)),
    }
    .encode_to_vec()
}

fn data(bytes: &[u8]) -> Vec<u8> {
    pb::ImportMasterChunk {
        part: Some(Part::Data(bytes.to_vec())),
    }
    .encode_to_vec()
}

#[rustfmt::skip]
fn import_rows() -> Vec<Row> {
    use pb::MasterFileKind::{Contraindications, Unspecified, YFull};
    let table = header("ci.csv", Contraindications, 6);
    vec![
        stream("import: nothing", "operator", IMPORT, vec![], Want::Invalid("file")),
        stream("import: data before a header", "operator", IMPORT, vec![data(b"x")], Want::Invalid("data")),
        stream("import: a file of 64 MiB and a byte", "operator", IMPORT, vec![header("y.csv", YFull, (64 << 20) + 1)], Want::Code(Code::ResourceExhausted)),
        stream("import: a file name with folders", "operator", IMPORT, vec![header("../y.csv", YFull, 1), data(b"x")], Want::Invalid("file.name")),
        stream("import: an unspecified kind", "operator", IMPORT, vec![header("y.csv", Unspecified, 1), data(b"x")], Want::Invalid("file.kind")),
        stream("import: chunks past the size", "operator", IMPORT, vec![header("y.csv", YFull, 1), data(b"xy")], Want::Invalid("data")),
        stream("import: a table of garbage", "operator", IMPORT, vec![table, data(b"\x00\xff,\n;;")], Want::Invalid("files")),
        stream("import: a chunk over 256 KiB", "operator", IMPORT, vec![header("y.csv", YFull, OVERSIZE as u64), data(&vec![b'x'; OVERSIZE])], Want::Code(Code::ResourceExhausted)),
        stream("import: garbage (a wrong wire type)", "operator", IMPORT, vec![WRONG_WIRE_TYPE.to_vec()], Want::Invalid("chunks")),
        stream("import: a clinic imports", "clinic", IMPORT, vec![header("y.csv", YFull, 1), data(b"x")], Want::Code(Code::PermissionDenied)),
    ]
}

#[rustfmt::skip]
fn health_and_reflection_rows() -> Vec<Row> {
    let health = |service: String| HealthCheckRequest { service };
    let reflect = |request: Option<MessageRequest>| ServerReflectionRequest {
        host: String::new(),
        message_request: request,
    };
    let symbol = |n: usize| Some(MessageRequest::FileContainingSymbol("x".repeat(n)));
    vec![
        one("health: an unknown service", "pharmacy", HEALTH, &health("rxgate.v1.Nope".into()), Want::Code(Code::NotFound)),
        one("health: a service name of 5 MiB", "pharmacy", HEALTH, &health("x".repeat(5 << 20)), Want::Code(Code::ResourceExhausted)),
        one("health: a service name of 300 KiB", "pharmacy", HEALTH, &health("x".repeat(OVERSIZE)), Want::Code(Code::ResourceExhausted)),
        raw("health: garbage (bytes not UTF-8)", "pharmacy", HEALTH, BAD_UTF8, Want::Invalid(UNDECODABLE)),
        one("reflection: no message request", "clinic", REFLECTION, &reflect(None), Want::Code(Code::InvalidArgument)),
        one("reflection: an unknown symbol of 8 KiB", "clinic", REFLECTION, &reflect(symbol(8 * 1024)), Want::Code(Code::NotFound)),
        one("reflection: an unknown symbol of 200 KiB (echoed in a trailer the client refuses, reported)", "clinic", REFLECTION, &reflect(symbol(200 * 1024)), Want::Code(Code::ResourceExhausted)),
        one("reflection: a request over 256 KiB (dropped, reported)", "clinic", REFLECTION, &reflect(symbol(5 << 20)), Want::Answered(0)),
        raw("reflection: garbage (dropped, reported)", "clinic", REFLECTION, TRUNCATED, Want::Answered(0)),
    ]
}

#[rustfmt::skip]
fn unknown_method_rows() -> Vec<Row> {
    let empty: &[u8] = &[];
    vec![
        raw("unknown: a method of the prescription service", "clinic", "/rxgate.v1.PrescriptionService/Nope", empty, Want::Code(Code::Unimplemented)),
        raw("unknown: a service", "clinic", "/rxgate.v1.Nope/Call", empty, Want::Code(Code::Unimplemented)),
        raw("unknown: a method of the health service", "pharmacy", "/grpc.health.v1.Health/Nope", empty, Want::Code(Code::Unimplemented)),
        raw("unknown: a method of reflection", "operator", "/grpc.reflection.v1.ServerReflection/Nope", empty, Want::Code(Code::Unimplemented)),
        raw("unknown: a path outside gRPC", "clinic", "/", empty, Want::Code(Code::Unimplemented)),
    ]
}

/// Every row of the table.
fn rows(h: &Harness, f: &Fixture) -> Vec<Row> {
    [
        check_prescription_rows(h),
        register_rows(h),
        cancel_and_status_rows(f),
        search_rows(),
        lookup_and_receive_rows(),
        return_rows(f),
        record_rows(h),
        check_dispensing_rows(h, f),
        watch_rows(),
        deliver_rows(h),
        stuck_and_export_rows(),
        lockout_rows(),
        import_rows(),
        health_and_reflection_rows(),
        unknown_method_rows(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Calls `path` as the dev institution `cert` with `messages` as the request stream, exactly as
/// given, and reads the answer to its end: how many messages it had, or its status.
async fn call(
    h: &Harness,
    cert: &str,
    path: &'static str,
    messages: Vec<Vec<u8>>,
) -> Result<usize, Status> {
    call_raw(h.channel(cert).await, path, messages, &[]).await
}

/// Whether `got` is what `row` wants; if not, why not.
fn judge(row: &Row, got: Result<usize, Status>) -> Result<(), String> {
    let fields = |s: &Status| -> Vec<String> {
        s.get_details_bad_request()
            .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default()
    };
    match (&row.want, got) {
        (Want::Invalid(field), Err(s))
            if s.code() == Code::InvalidArgument && fields(&s) == [*field] =>
        {
            Ok(())
        }
        (Want::InvalidMany(field), Err(s))
            if s.code() == Code::InvalidArgument
                && fields(&s).len() == 16
                && fields(&s)[0] == *field
                && s.message().ends_with("more") =>
        {
            Ok(())
        }
        (Want::Code(code), Err(s)) if s.code() == *code => Ok(()),
        (Want::Answered(n), Ok(got)) if got == *n => Ok(()),
        (want, got) => Err(format!(
            "{}: wanted {want:?}, got {:?}",
            row.name,
            got.map_err(|s| (
                s.code(),
                s.message().chars().take(200).collect::<String>(),
                fields(&s)
            ))
        )),
    }
}

/// Asserts that every method the table covers has at least three rows.
fn assert_coverage(rows: &[Row]) {
    for path in COVERED {
        let n = rows.iter().filter(|r| r.path == path).count();
        assert!(n >= 3, "{path} has {n} rows; the table wants at least 3");
    }
}

/// Whether the server still answers: a health check, and the clinic's status of a prescription.
async fn still_answers(h: &Harness, f: &Fixture) -> Result<(), String> {
    let mut health = HealthClient::new(h.channel("pharmacy").await);
    health
        .check(HealthCheckRequest::default())
        .await
        .map_err(|s| format!("health check: {s:?}"))?;
    let status = h
        .clinic("clinic")
        .await
        .get_prescription_status(status_request(f.open.prescription_id.clone()))
        .await
        .map_err(|s| format!("status: {s:?}"))?;
    match status.into_inner().state() {
        pb::PrescriptionState::Registered => Ok(()),
        state => Err(format!("status: the open prescription is {state:?}")),
    }
}

/// Every key and value of the closed store at `dir`, but the audit trail (records, chain heads,
/// checkpoints), the
/// event log's retention floor (which the server writes at start-up, whatever it is asked) and the
/// patients' check budgets (which every check spends, a refused registration's too: that is what
/// keeps registration from being an oracle outside the budget).
type Snapshot = BTreeMap<(String, Vec<u8>), Vec<u8>>;

async fn snapshot(dir: &Path) -> Snapshot {
    let store = EmbeddedStore::open(dir).unwrap();
    let mut all = Snapshot::new();
    let audit = [Table::Audit, Table::AuditChain];
    for table in Table::ALL.into_iter().filter(|t| !audit.contains(t)) {
        let entries = store
            .transact(move |tx| tx.scan_prefix(table, b"", usize::MAX))
            .await
            .unwrap()
            .unwrap();
        for (key, value) in entries {
            let counter = table == Table::Meta && key == b"events\0floor";
            let budget = table == Table::Clinical && key.starts_with(b"check-budget\0");
            if !counter && !budget {
                all.insert((format!("{table:?}"), key), value);
            }
        }
    }
    store.close().unwrap();
    all
}

/// The keys written, changed or removed between two snapshots.
fn changes(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let keys: BTreeSet<_> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .map(|(table, key)| format!("{table} {}", String::from_utf8_lossy(key)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_is_refused_and_writes_nothing_but_the_audit() {
    let h = start_with(|_| {}).await;
    let fixture = Fixture::set_up(&h).await;
    let stopped = h.stop().await;
    let before = snapshot(stopped.store_dir()).await;
    let h = stopped.start().await;

    let rows = rows(&h, &fixture);
    assert_coverage(&rows);
    let mut failures = Vec::new();
    for row in rows {
        let answer = call(&h, row.cert, row.path, row.messages.clone());
        let Ok(got) = tokio::time::timeout(ANSWER_WITHIN, answer).await else {
            failures.push(format!(
                "{}: no end of the answer within {ANSWER_WITHIN:?}",
                row.name
            ));
            continue;
        };
        failures.extend(judge(&row, got).err());
        if let Err(e) = still_answers(&h, &fixture).await {
            failures.push(format!("{}: afterwards, {e}", row.name));
        }
    }

    let stopped = h.stop().await;
    let written = changes(&before, &snapshot(stopped.store_dir()).await);
    assert!(
        failures.is_empty() && written.is_empty(),
        "rows failed:\n{}\nwritten outside the audit table: {written:?}",
        failures.join("\n")
    );
}
