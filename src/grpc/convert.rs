//! Conversions between the wire and the use cases: request fields into domain types, results into
//! messages, and every `service::Error` into a `tonic::Status` in one exhaustive match.

use std::time::Duration;

use prost::Message;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    domain::{
        checks::{
            Consent, DrugRef, Finding, FindingKind, Indicator, Origin, OtherSide, RuleRef, Source,
            SourceKind,
        },
        hash::{self, hex},
        ids::InstitutionCode,
        patient::PatientKey,
        prescription::{RefillWindow, State},
        rx::{FieldViolation, PrescriptionNumber},
        signature::Refusal,
        time::JapanDate,
    },
    limits::{MAX_IMPORT_BYTES, MAX_IMPORT_FILE_BYTES, MAX_MESSAGE_CHARS},
    log_throttle::LogThrottle,
    master_files::{FileKind, SourceFile},
    service::{
        Acknowledgement, Attestation, AuditEntry, Audited, AuditedCall, AuditedCaller, ChainLink,
        CheckRequest, CheckSubject, ClockConfirmed, CountedRequests, Delivery, DispensingSummary,
        Error, Event, EventEntry, EventKind, FileOutcome, Findings, ImportFile, ImportSummary,
        LineState, RequestCount, RequestedOptions, Status as RxStatus, Stuck,
    },
    wire::documents,
    wire::proto::v1 as pb,
};

/// The longest stuck threshold a caller may ask for (366 days, as `stuck_after_secs` in the
/// configuration): a larger one would wrap the horizon into the future.
pub(super) const MAX_STUCK_AFTER_SECS: u64 = 366 * 86_400;

/// The largest request rxgate decodes; larger ones are RESOURCE_EXHAUSTED. A signed document
/// with its certificate chain is a few KiB.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The two parts of a signed document, which must both be present.
pub(super) fn signed_parts(
    field: &str,
    doc: Option<pb::SignedDocument>,
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    match doc {
        Some(pb::SignedDocument {
            content,
            cms_signature,
        }) if !content.is_empty() && !cms_signature.is_empty() => Ok((content, cms_signature)),
        _ => Err(invalid(field, "content and cms_signature are required")),
    }
}

fn invalid(field: &str, rule: &str) -> Error {
    Error::InvalidArgument(vec![FieldViolation::new(field, rule)])
}

pub(super) fn patient_key(key: Option<&pb::PatientKey>) -> Result<PatientKey, Error> {
    documents::patient_key(key).map_err(|v| Error::InvalidArgument(vec![v]))
}

fn exchange_number(s: &str) -> Result<u32, Error> {
    if s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse()
            .map_err(|_| invalid("exchange_number", "6 digits"))
    } else {
        Err(invalid("exchange_number", "6 digits"))
    }
}

/// A delivery as the intake takes it. The fields beside the signed record are stored as given,
/// so each is checked first: the record id (SHA-256, hex), a receipt time after 1970 and the
/// sender's prescription id, institution code and number in their own forms, so that none is
/// unbounded or unparsable; then the attestation's bounds; then the record.
pub(super) fn delivery(r: pb::DeliverDispensingRecordRequest) -> Result<Delivery, Error> {
    let pb::DeliverDispensingRecordRequest {
        record_id,
        sequence,
        dispensing_record,
        received_unix_ms,
        prescription_id: id,
        institution_code,
        prescription_number,
        attestation,
    } = r;
    hash::from_hex::<32>(&record_id)
        .ok_or_else(|| invalid("record_id", "the SHA-256 of the record's content, hex"))?;
    if received_unix_ms <= 0 {
        return Err(invalid("received_unix_ms", "a time after 1970"));
    }
    prescription_id(&id)?;
    institution_code
        .parse::<InstitutionCode>()
        .map_err(|e| invalid("institution_code", e.rule))?;
    PrescriptionNumber::parse(&prescription_number)
        .ok_or_else(|| invalid("prescription_number", "1-32 printable ASCII characters"))?;
    let attestation = attestation.map(attestation_of).transpose()?;
    let (content, cms_signature) = signed_parts("dispensing_record", dispensing_record)?;
    Ok(Delivery {
        record_id,
        sequence,
        content,
        cms_signature,
        received_at_ms: received_unix_ms,
        prescription_id: id,
        institution: institution_code,
        number: prescription_number,
        attestation,
    })
}

/// A relay attestation, its bounds checked before its signature is.
fn attestation_of(a: pb::RelayAttestation) -> Result<Attestation, Error> {
    let pb::RelayAttestation {
        statement,
        signature,
        sender_certificate_sha256,
    } = a;
    if statement.len() > 1024 {
        return Err(invalid("attestation.statement", "at most 1 KiB"));
    }
    // An ECDSA P-256 signature in ASN.1 DER is at most 72 bytes.
    if signature.is_empty() || signature.len() > 72 {
        return Err(invalid("attestation.signature", "1-72 bytes"));
    }
    if sender_certificate_sha256.len() != 32 {
        return Err(invalid("attestation.sender_certificate_sha256", "32 bytes"));
    }
    Ok(Attestation {
        statement,
        signature,
        sender_certificate_sha256,
    })
}

/// The lookup key of a pharmacy's request: a patient key and an exchange number.
pub(super) fn patient_and_number(
    key: Option<&pb::PatientKey>,
    number: &str,
) -> Result<(PatientKey, u32), Error> {
    Ok((patient_key(key)?, exchange_number(number)?))
}

pub(super) fn prescription_id(s: &str) -> Result<String, Error> {
    if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(s.to_owned())
    } else {
        Err(invalid("prescription_id", "32 lowercase hex characters"))
    }
}

pub(super) fn date(field: &str, s: &str) -> Result<JapanDate, Error> {
    s.parse().map_err(|_| invalid(field, "a date YYYY-MM-DD"))
}

pub fn state_to_pb(state: &State) -> pb::PrescriptionState {
    match state {
        State::Registered => pb::PrescriptionState::Registered,
        State::Accepted { .. } => pb::PrescriptionState::Accepted,
        State::Dispensed { .. } => pb::PrescriptionState::Dispensed,
        State::Cancelled => pb::PrescriptionState::Cancelled,
        State::Expired => pb::PrescriptionState::Expired,
        State::AwaitingRefill => pb::PrescriptionState::AwaitingRefill,
    }
}

pub(super) fn status_to_pb(s: RxStatus) -> pb::PrescriptionStatus {
    let RxStatus {
        id,
        institution,
        number,
        state,
        issue_date,
        usable_through,
        dispensings,
        lines,
        uses,
        uses_dispensed,
        next_use,
    } = s;
    let pharmacy_code = match &state {
        State::Accepted { pharmacy } | State::Dispensed { pharmacy } => pharmacy.to_string(),
        State::Registered | State::Cancelled | State::Expired | State::AwaitingRefill => {
            String::new()
        }
    };
    let line_state = |line: LineState| match line {
        LineState::Dispensed => pb::LineStatus::Dispensed,
        LineState::Partial => pb::LineStatus::Partial,
        LineState::Owing => pb::LineStatus::Owing,
        LineState::NotDispensed => pb::LineStatus::NotDispensed,
    };
    pb::PrescriptionStatus {
        prescription_id: id,
        institution_code: institution,
        prescription_number: number,
        state: state_to_pb(&state) as i32,
        pharmacy_code,
        issue_date,
        usable_through,
        line_states: lines.into_iter().map(|l| line_state(l) as i32).collect(),
        uses,
        uses_dispensed,
        next_use: next_use.map(|window| {
            let RefillWindow {
                planned,
                from,
                until,
            } = window;
            pb::RefillWindow {
                planned: planned.to_string(),
                from: from.to_string(),
                until: until.to_string(),
            }
        }),
        dispensing_records: dispensings.into_iter().map(dispensing_to_pb).collect(),
    }
}

fn dispensing_to_pb(d: DispensingSummary) -> pb::DispensingRecordSummary {
    let DispensingSummary {
        record_number,
        pharmacy,
        dispensing_date,
        is_final,
        important_information,
        important_message,
        content,
        cms_signature,
        // The wire's summary carries no receipt time: the intake's business, not the prescriber's.
        received_at_ms: _,
    } = d;
    pb::DispensingRecordSummary {
        record_number,
        pharmacy_code: pharmacy,
        dispensing_date,
        r#final: is_final,
        important_information,
        important_message,
        record: Some(pb::SignedDocument {
            content,
            cms_signature,
        }),
    }
}

fn event_kind_to_pb(kind: EventKind) -> pb::EventKind {
    match kind {
        EventKind::Registered => pb::EventKind::Registered,
        EventKind::Accepted => pb::EventKind::Accepted,
        EventKind::Returned => pb::EventKind::Returned,
        EventKind::Cancelled => pb::EventKind::Cancelled,
        EventKind::Expired => pb::EventKind::Expired,
        EventKind::DispensingRecorded => pb::EventKind::DispensingRecorded,
    }
}

pub(super) fn event_to_pb(e: EventEntry) -> pb::Event {
    let EventEntry {
        sequence,
        event,
        record,
    } = e;
    let Event {
        time_ms,
        kind,
        prescription_id,
        institution,
        number,
        pharmacy,
        state,
        // The dispensing record (`record`) carries its number.
        record_number: _,
    } = event;
    pb::Event {
        sequence,
        time_unix_ms: time_ms,
        kind: event_kind_to_pb(kind) as i32,
        prescription_id,
        institution_code: institution,
        prescription_number: number,
        pharmacy_code: pharmacy.unwrap_or_default(),
        state: state_to_pb(&state) as i32,
        dispensing_record: record.map(dispensing_to_pb),
    }
}

pub(super) fn stuck_to_pb(s: Stuck) -> pb::StuckPrescription {
    let Stuck {
        id,
        institution,
        number,
        pharmacy,
        accepted_at_ms,
        last_record_at_ms,
        records,
    } = s;
    pb::StuckPrescription {
        prescription_id: id,
        institution_code: institution,
        prescription_number: number,
        pharmacy_code: pharmacy,
        accepted_unix_ms: accepted_at_ms,
        last_record_unix_ms: last_record_at_ms.unwrap_or(0),
        records,
    }
}

pub(super) fn clock_confirmed_to_pb(c: ClockConfirmed) -> pb::ConfirmClockResponse {
    let ClockConfirmed { wall_ms, step } = c;
    pb::ConfirmClockResponse {
        wall_clock_unix_ms: wall_ms,
        step_secs: step.as_secs(),
    }
}

/// The filter of a feed request: the prescription (if any) and the kinds (if any).
pub(super) fn event_filter(
    filter: Option<pb::EventFilter>,
) -> Result<(Option<String>, Vec<EventKind>), Error> {
    let Some(pb::EventFilter {
        prescription_id: id,
        kinds,
    }) = filter
    else {
        return Ok((None, Vec::new()));
    };
    let id = (!id.is_empty()).then(|| prescription_id(&id)).transpose()?;
    let kinds = kinds
        .iter()
        .map(|k| match pb::EventKind::try_from(*k) {
            Ok(pb::EventKind::Registered) => Ok(EventKind::Registered),
            Ok(pb::EventKind::Accepted) => Ok(EventKind::Accepted),
            Ok(pb::EventKind::Returned) => Ok(EventKind::Returned),
            Ok(pb::EventKind::Cancelled) => Ok(EventKind::Cancelled),
            Ok(pb::EventKind::Expired) => Ok(EventKind::Expired),
            Ok(pb::EventKind::DispensingRecorded) => Ok(EventKind::DispensingRecorded),
            _ => Err(invalid("filter.kinds", "known event kinds")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Each kind at most once, so that the list (read for every event of the feed) stays short.
    if kinds
        .iter()
        .enumerate()
        .any(|(i, k)| kinds[..i].contains(k))
    {
        return Err(invalid("filter.kinds", "each event kind at most once"));
    }
    Ok((id, kinds))
}

/// An audit record as exported: the fields its kind of entry has; the others stay empty.
pub fn audit_to_pb(e: AuditEntry) -> pb::AuditRecord {
    let AuditEntry {
        sequence,
        entry,
        chain,
    } = e;
    let (chain_writer, previous_sha256, canonical) = chain.map(link_to_pb).unwrap_or_default();
    // Every field named, so that a new one is decided on here; each kind of entry below fills in
    // what it has.
    let empty = pb::AuditRecord {
        sequence,
        time_unix_ms: 0,
        institution_kind: String::new(),
        institution_code: String::new(),
        certificate_sha256: String::new(),
        signer_serial_number: String::new(),
        signer_certificate_sha256: String::new(),
        action: String::new(),
        target: String::new(),
        outcome: String::new(),
        patient_pseudonym: String::new(),
        line_count: 0,
        consent: String::new(),
        chain_writer,
        previous_sha256,
        canonical,
        counts: Vec::new(),
        until_unix_ms: 0,
    };
    match entry {
        Audited::Genesis { time_ms, unchained } => pb::AuditRecord {
            time_unix_ms: time_ms,
            action: GENESIS.into(),
            target: unchained.to_string(),
            outcome: "OK".into(),
            ..empty
        },
        Audited::Call(call) => {
            let AuditedCall {
                time_ms,
                caller,
                signer_serial_number,
                signer_certificate_sha256,
                action,
                target,
                outcome,
                check,
            } = *call;
            let (institution_kind, institution_code, certificate_sha256) = caller_to_pb(caller);
            let (patient_pseudonym, line_count, consent) =
                check.map(check_to_pb).unwrap_or_default();
            pb::AuditRecord {
                time_unix_ms: time_ms,
                institution_kind,
                institution_code,
                certificate_sha256,
                signer_serial_number: signer_serial_number.unwrap_or_default(),
                signer_certificate_sha256: signer_certificate_sha256
                    .map(|h| hex(&h))
                    .unwrap_or_default(),
                action,
                target: target.unwrap_or_default(),
                outcome,
                patient_pseudonym,
                line_count,
                consent,
                ..empty
            }
        }
        Audited::Counted(counted) => {
            let CountedRequests {
                caller,
                from_ms,
                until_ms,
                counts,
            } = *counted;
            let (institution_kind, institution_code, certificate_sha256) = caller_to_pb(caller);
            pb::AuditRecord {
                time_unix_ms: from_ms,
                until_unix_ms: until_ms,
                institution_kind,
                institution_code,
                certificate_sha256,
                action: COUNTED.into(),
                outcome: "OK".into(),
                counts: counts.into_iter().map(count_to_pb).collect(),
                ..empty
            }
        }
    }
}

/// A chain link's writer, the hash it names and its encoding.
fn link_to_pb(link: ChainLink) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let ChainLink {
        writer,
        previous,
        canonical,
    } = link;
    (writer.to_vec(), previous.to_vec(), canonical)
}

/// A caller's institution kind and code, and its certificate's SHA-256 in hex.
fn caller_to_pb(caller: AuditedCaller) -> (String, String, String) {
    let AuditedCaller {
        institution_kind,
        institution_code,
        certificate_sha256,
    } = caller;
    (institution_kind, institution_code, hex(&certificate_sha256))
}

/// A check's patient pseudonym in hex, its lines and its consent.
fn check_to_pb(subject: CheckSubject) -> (String, u32, String) {
    let CheckSubject {
        patient_pseudonym,
        lines,
        consent,
    } = subject;
    let consent = match consent {
        Consent::Card => "CARD",
        Consent::Verbal => "VERBAL",
        Consent::None => "NONE",
    };
    (hex(&patient_pseudonym), lines, consent.into())
}

fn count_to_pb(c: RequestCount) -> pb::AuditCount {
    let RequestCount {
        action,
        outcome,
        count,
    } = c;
    pb::AuditCount {
        action,
        outcome,
        count,
    }
}

/// The action of a chain's genesis link in an export (its target: the unchained records before).
const GENESIS: &str = "AuditChainGenesis";
/// The action of a record of counted edge requests (its counts say of what).
const COUNTED: &str = "EdgeRequestsCounted";

/// The patient pseudonym an audit export is filtered by: empty for none, else 64 hex digits.
pub(super) fn pseudonym_filter(text: &str) -> Result<Option<[u8; 32]>, Error> {
    if text.is_empty() {
        return Ok(None);
    }
    hash::from_hex(text)
        .map(Some)
        .ok_or_else(|| invalid("patient_pseudonym", "64 hex digits"))
}

/// The consent and switches of a check request. An unspecified consent is no consent.
pub(super) fn check_request(consent: i32, options: Option<pb::CheckOptions>) -> CheckRequest {
    let consent = match pb::Consent::try_from(consent) {
        Ok(pb::Consent::Card) => Consent::Card,
        Ok(pb::Consent::Verbal) => Consent::Verbal,
        _ => Consent::None,
    };
    let options = options.map_or(RequestedOptions::default(), |o| {
        let pb::CheckOptions {
            include_same_institution,
            caution,
            same_class,
            within_prescription,
        } = o;
        RequestedOptions {
            include_same_institution,
            caution,
            same_class,
            within_prescription,
        }
    });
    CheckRequest { consent, options }
}

/// The acknowledgements of a registration: each names a finding; its reason is free text.
pub(super) fn acknowledgements(
    acks: Vec<pb::Acknowledgement>,
    max: usize,
) -> Result<Vec<Acknowledgement>, Error> {
    documents::bounded_count("acknowledgements", acks.len(), max)
        .map_err(Error::InvalidArgument)?;
    let mut violations = Vec::new();
    let mut parsed = Vec::with_capacity(acks.len());
    for (i, ack) in acks.into_iter().enumerate() {
        let pb::Acknowledgement { finding_id, reason } = ack;
        if finding_id.is_empty() || finding_id.len() > 64 {
            violations.push(FieldViolation::new(
                format!("acknowledgements[{i}].finding_id"),
                "a finding id",
            ));
        }
        if reason.trim().is_empty() || reason.chars().count() > MAX_MESSAGE_CHARS {
            violations.push(FieldViolation::new(
                format!("acknowledgements[{i}].reason"),
                "a reason of 1 to 1000 characters",
            ));
        }
        parsed.push(Acknowledgement { finding_id, reason });
    }
    if !violations.is_empty() {
        return Err(Error::InvalidArgument(violations));
    }
    Ok(parsed)
}

fn file_kind(kind: i32) -> Option<FileKind> {
    match pb::MasterFileKind::try_from(kind).ok()? {
        pb::MasterFileKind::YFull => Some(FileKind::YFull),
        pb::MasterFileKind::YUpdate => Some(FileKind::YUpdate),
        pb::MasterFileKind::YakkaList => Some(FileKind::YakkaList),
        pb::MasterFileKind::IppanMaster => Some(FileKind::IppanMaster),
        pb::MasterFileKind::Contraindications => Some(FileKind::Contraindications),
        pb::MasterFileKind::Unspecified => None,
    }
}

/// The wire name of a master file kind.
pub fn file_kind_to_pb(kind: FileKind) -> pb::MasterFileKind {
    match kind {
        FileKind::YFull => pb::MasterFileKind::YFull,
        FileKind::YUpdate => pb::MasterFileKind::YUpdate,
        FileKind::YakkaList => pb::MasterFileKind::YakkaList,
        FileKind::IppanMaster => pb::MasterFileKind::IppanMaster,
        FileKind::Contraindications => pb::MasterFileKind::Contraindications,
    }
}

/// Reads an import stream: each file is a header, then its bytes in chunks adding up to the
/// size the header declares.
pub(super) async fn import_files(
    mut stream: tonic::Streaming<pb::ImportMasterChunk>,
) -> Result<Vec<ImportFile>, Error> {
    use pb::import_master_chunk::Part;
    let mut files: Vec<(ImportFile, u64)> = Vec::new();
    let mut total = 0u64;
    while let Some(chunk) = stream.message().await.map_err(stream_failure)? {
        let pb::ImportMasterChunk { part } = chunk;
        match part {
            Some(Part::File(header)) => {
                let pb::ImportFileHeader { name, kind, size } = header;
                if let Some((last, declared)) = files.last()
                    && last.file.bytes.len() as u64 != *declared
                {
                    return Err(invalid("data", "a file's chunks must add up to its size"));
                }
                let kind = file_kind(kind)
                    .ok_or_else(|| invalid("file.kind", "must name the kind of file"))?;
                if name.is_empty() || name.contains(['/', '\\']) {
                    return Err(invalid("file.name", "a file name without folders"));
                }
                if size > MAX_IMPORT_FILE_BYTES {
                    return Err(Error::ResourceExhausted("an import file is over 64 MiB"));
                }
                files.push((
                    ImportFile {
                        kind,
                        file: SourceFile {
                            name,
                            bytes: Vec::with_capacity(size as usize),
                        },
                    },
                    size,
                ));
            }
            Some(Part::Data(data)) => {
                let (f, size) = files
                    .last_mut()
                    .ok_or_else(|| invalid("data", "a file header must come first"))?;
                total += data.len() as u64;
                if f.file.bytes.len() as u64 + data.len() as u64 > *size {
                    return Err(invalid("data", "more bytes than the header's size"));
                }
                if total > MAX_IMPORT_BYTES {
                    return Err(Error::ResourceExhausted("an import is over 256 MiB"));
                }
                f.file.bytes.extend_from_slice(&data);
            }
            None => return Err(invalid("part", "a chunk is a file header or data")),
        }
    }
    if files.is_empty() {
        return Err(invalid("file", "at least one file is required"));
    }
    if files
        .iter()
        .any(|(f, size)| f.file.bytes.len() as u64 != *size)
    {
        return Err(invalid("data", "a file's chunks must add up to its size"));
    }
    Ok(files.into_iter().map(|(f, _)| f).collect())
}

/// Why an import stream failed: a chunk over the message limit is RESOURCE_EXHAUSTED, as any
/// oversize request is; anything else (an undecodable chunk) the client's error.
fn stream_failure(status: Status) -> Error {
    match status.code() {
        Code::OutOfRange | Code::ResourceExhausted => {
            Error::ResourceExhausted("an import chunk is over the 256 KiB message limit")
        }
        _ => invalid(
            "chunks",
            &format!("the stream failed: {}", status.message()),
        ),
    }
}

pub(super) fn import_summary_to_pb(s: ImportSummary) -> pb::ImportMasterSummary {
    let ImportSummary {
        files,
        master_records,
        current_products,
        contraindication_rules,
        version,
    } = s;
    pb::ImportMasterSummary {
        files: files
            .into_iter()
            .map(|(kind, outcome)| imported_to_pb(kind, outcome))
            .collect(),
        master_records,
        current_products,
        contraindication_rules,
        version,
    }
}

fn imported_to_pb(kind: FileKind, outcome: FileOutcome) -> pb::ImportedFile {
    let FileOutcome {
        name,
        rows,
        added,
        changed,
        abolished,
        deleted,
        restored,
        already_imported,
    } = outcome;
    pb::ImportedFile {
        name,
        kind: file_kind_to_pb(kind) as i32,
        rows,
        added,
        changed,
        abolished,
        deleted,
        restored,
        already_imported,
    }
}

fn drug_to_pb(drug: &DrugRef) -> pb::DrugReference {
    let DrugRef { code, name, moiety } = drug;
    pb::DrugReference {
        code: code.clone(),
        name: name.clone().unwrap_or_default(),
        moiety: moiety.clone().unwrap_or_default(),
    }
}

fn origin_to_pb(origin: &Origin) -> pb::Origin {
    match origin {
        Origin::History(Source { kind, code, date }) => pb::Origin {
            kind: match kind {
                SourceKind::Prescription => pb::OriginKind::Prescription,
                SourceKind::Dispensing => pb::OriginKind::Dispensing,
            } as i32,
            institution_code: code.to_string(),
            date: date.to_string(),
            line: 0,
        },
        Origin::ThisPrescription { line } => pb::Origin {
            kind: pb::OriginKind::ThisPrescription as i32,
            institution_code: String::new(),
            date: String::new(),
            line: *line as u32,
        },
    }
}

fn other_to_pb(other: &OtherSide) -> pb::OtherDrug {
    let OtherSide { drug, origins } = other;
    pb::OtherDrug {
        drug: Some(drug_to_pb(drug)),
        origins: origins.iter().map(origin_to_pb).collect(),
    }
}

fn rule_to_pb(rule: &RuleRef) -> pb::Rule {
    let RuleRef {
        id,
        mechanism,
        source,
        verification,
        condition,
    } = rule;
    pb::Rule {
        id: id.clone(),
        mechanism: mechanism.clone(),
        source: source.clone(),
        verification: verification.clone(),
        condition: condition.clone().unwrap_or_default(),
    }
}

/// A finding as the wire carries it: its first other drug and origin also on their own, for
/// clients that show one.
pub(super) fn finding_to_pb(f: &Finding) -> pb::Finding {
    let Finding {
        id,
        kind,
        indicator,
        summary,
        line,
        own,
        others,
        rule,
    } = f;
    let kind = match kind {
        FindingKind::Duplicate => pb::FindingKind::Duplicate,
        FindingKind::Contraindication => pb::FindingKind::Contraindication,
        FindingKind::Conditional => pb::FindingKind::Conditional,
        FindingKind::Caution => pb::FindingKind::Caution,
        FindingKind::SameClass => pb::FindingKind::SameClass,
        FindingKind::NotChecked => pb::FindingKind::NotChecked,
    };
    let indicator = match indicator {
        Indicator::Info => pb::Indicator::Info,
        Indicator::Warning => pb::Indicator::Warning,
        Indicator::Critical => pb::Indicator::Critical,
    };
    let others: Vec<pb::OtherDrug> = others.iter().map(other_to_pb).collect();
    let first = others.first();
    pb::Finding {
        id: id.clone(),
        kind: kind as i32,
        indicator: indicator as i32,
        summary: summary.clone(),
        line: *line as u32,
        own: own.as_ref().map(drug_to_pb),
        other: first.and_then(|o| o.drug.clone()),
        origin: first.and_then(|o| o.origins.first().cloned()),
        rule: rule.as_ref().map(rule_to_pb),
        others,
    }
}

/// The one mapping of use-case errors to gRPC status. Messages carry no patient data.
pub(super) fn to_status(error: Error) -> Status {
    match error {
        Error::InvalidArgument(violations) => invalid_argument(&violations),
        Error::Signature(refusal) => {
            let Refusal {
                reason,
                detail,
                diagnostic,
            } = refusal;
            // A client can send refused signatures at will: one line per 10 s at most.
            static PATH_REFUSED: LogThrottle = LogThrottle::new(Duration::from_secs(10));
            if let Some(diagnostic) = &diagnostic
                && let Some(left_out) = PATH_REFUSED.allow()
            {
                tracing::info!(
                    reason = reason.code(),
                    %diagnostic,
                    left_out,
                    "signature refused by path validation"
                );
            }
            let message = format!("signature refused: {}: {detail}", reason.code());
            let mut details = ErrorDetails::new();
            details.set_error_info(
                reason.code(),
                "rxgate.signature",
                [("detail".to_owned(), detail)],
            );
            Status::with_error_details(Code::InvalidArgument, message, details)
        }
        Error::PermissionDenied(why) => Status::permission_denied(why),
        Error::NotFound => Status::not_found("no such prescription"),
        Error::FailedPrecondition(why) => Status::failed_precondition(why),
        Error::AlreadyExists(why) => Status::already_exists(why),
        Error::ResourceExhausted(why) => Status::resource_exhausted(why),
        Error::RateLimited { limit, retry_after } => {
            let mut details = ErrorDetails::new();
            details.set_retry_info(Some(retry_after));
            Status::with_error_details(Code::ResourceExhausted, limit, details)
        }
        Error::OutOfRange(why) => Status::out_of_range(why),
        e @ Error::DiskLow { .. } => Status::resource_exhausted(e.to_string()),
        Error::CriticalFindings {
            findings,
            unacknowledged,
        } => critical_findings(&findings, &unacknowledged),
        Error::Store(error @ crate::store::Error::Unavailable(_)) => {
            tracing::warn!(%error, "store unavailable");
            Status::unavailable("the store is unavailable; retry later")
        }
        Error::Store(error) => {
            tracing::error!(%error, "store error");
            Status::internal("internal error")
        }
        Error::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            Status::internal("internal error")
        }
    }
}

/// The most field violations one status names. Each of a request's lines can break several
/// rules, and the status travels as HTTP/2 headers, which clients refuse past a size (16 KiB in
/// hyper): so the first ones are named and the rest counted.
const MAX_VIOLATIONS: usize = 16;

/// INVALID_ARGUMENT with a `google.rpc.BadRequest` naming the first violations.
fn invalid_argument(violations: &[FieldViolation]) -> Status {
    let shown = &violations[..violations.len().min(MAX_VIOLATIONS)];
    let mut details = ErrorDetails::new();
    for FieldViolation { field, rule } in shown {
        details.add_bad_request_violation(field.clone(), rule.clone());
    }
    let mut summary = shown
        .iter()
        .map(|FieldViolation { field, rule }| format!("{field}: {rule}"))
        .collect::<Vec<_>>()
        .join("; ");
    if violations.len() > shown.len() {
        summary.push_str(&format!("; and {} more", violations.len() - shown.len()));
    }
    Status::with_error_details(Code::InvalidArgument, summary, details)
}

/// The most finding ids, and findings, a refused registration names in its details. Details
/// travel in an HTTP/2 trailer, which clients bound (tonic's to 16 KiB): a refusal naming every
/// finding of a large check was never read, and cost the client its connection.
const REFUSAL_IDS: usize = 32;
const REFUSAL_FINDINGS: usize = 8;

/// FAILED_PRECONDITION for a registration with unacknowledged critical findings: a
/// `google.rpc.PreconditionFailure` naming the first [`REFUSAL_IDS`] finding ids to acknowledge,
/// and the first [`REFUSAL_FINDINGS`] findings, critical first, as an `rxgate.v1.CheckFindings`
/// that says how many it left out (CheckPrescription of the same draft answers them all, with
/// the same ids). Each names its first other drug and origin only (`others` left empty): a
/// finding may cover a whole history of origins. The message is fixed: the findings say what
/// consent allows.
fn critical_findings(findings: &Findings, unacknowledged: &[String]) -> Status {
    const MESSAGE: &str = "critical findings must be acknowledged with a reason (see details; \
                           CheckPrescription of the draft lists every finding)";
    let precondition = tonic_types::pb::PreconditionFailure {
        violations: unacknowledged
            .iter()
            .take(REFUSAL_IDS)
            .map(|id| tonic_types::pb::precondition_failure::Violation {
                r#type: "CRITICAL_FINDING".into(),
                subject: id.clone(),
                description: "acknowledge with a reason".into(),
            })
            .collect(),
    };
    let (critical, other): (Vec<_>, Vec<_>) = findings
        .shown
        .iter()
        .partition(|f| f.indicator == Indicator::Critical);
    let named: Vec<_> = critical
        .into_iter()
        .chain(other)
        .take(REFUSAL_FINDINGS)
        .map(|f| pb::Finding {
            others: Vec::new(),
            ..finding_to_pb(f)
        })
        .collect();
    let left_out = (findings.shown.len() - named.len()) as u32 + findings.omitted;
    let findings = pb::CheckFindings {
        findings: named,
        truncated: left_out > 0,
        omitted: left_out,
    };
    let status = tonic_types::pb::Status {
        code: Code::FailedPrecondition as i32,
        message: MESSAGE.into(),
        details: vec![
            prost_types::Any {
                type_url: "type.googleapis.com/google.rpc.PreconditionFailure".into(),
                value: precondition.encode_to_vec(),
            },
            prost_types::Any {
                type_url: "type.googleapis.com/rxgate.v1.CheckFindings".into(),
                value: findings.encode_to_vec(),
            },
        ],
    };
    Status::with_details(
        Code::FailedPrecondition,
        MESSAGE,
        status.encode_to_vec().into(),
    )
}
