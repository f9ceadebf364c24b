//! Conversions between the wire and the use cases: request fields into domain types, results into
//! messages, and every `service::Error` into a `tonic::Status` in one exhaustive match.

use std::time::Duration;

use prost::Message;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    domain::{
        checks::{Consent, DrugRef, Finding, FindingKind, Indicator, Origin, SourceKind},
        hash::{self, hex},
        ids::InstitutionCode,
        patient::PatientKey,
        prescription::State,
        rx::{FieldViolation, PrescriptionNumber},
        time::JapanDate,
    },
    limits::{MAX_IMPORT_BYTES, MAX_IMPORT_FILE_BYTES, MAX_MESSAGE_CHARS},
    log_throttle::LogThrottle,
    master_files::{FileKind, SourceFile},
    service::{
        Acknowledgement, AuditEntry, Audited, AuditedCall, AuditedCaller, ChainLink, CheckRequest,
        CheckSubject, CountedRequests, DispensingSummary, Error, Event, EventEntry, EventKind,
        Findings, ImportFile, ImportSummary, LineState, RequestCount, RequestedOptions,
        Status as RxStatus,
    },
    wire::documents,
    wire::proto::v1 as pb,
};

/// The longest stuck threshold a caller may ask for (366 days, as `stuck_after_secs` in the
/// configuration): a larger one would wrap the horizon into the future.
pub const MAX_STUCK_AFTER_SECS: u64 = 366 * 86_400;

/// The largest request rxgate decodes; larger ones are RESOURCE_EXHAUSTED. A signed document
/// with its certificate chain is a few KiB.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The two parts of a signed document, which must both be present.
pub fn signed_parts(
    field: &str,
    doc: Option<pb::SignedDocument>,
) -> Result<(Vec<u8>, Vec<u8>), Error> {
    doc.filter(|d| !d.content.is_empty() && !d.cms_signature.is_empty())
        .map(|d| (d.content, d.cms_signature))
        .ok_or_else(|| invalid(field, "content and cms_signature are required"))
}

fn invalid(field: &str, rule: &str) -> Error {
    Error::InvalidArgument(vec![FieldViolation::new(field, rule)])
}

pub fn patient_key(key: Option<&pb::PatientKey>) -> Result<PatientKey, Error> {
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

/// The fields of a delivery beside the signed record, which the intake stores as given: the
/// record id (SHA-256, hex), a receipt time after 1970 and the sender's prescription id,
/// institution code and number in their own forms, so that none is unbounded or unparsable.
pub fn delivery_fields(r: &pb::DeliverDispensingRecordRequest) -> Result<(), Error> {
    hash::from_hex::<32>(&r.record_id)
        .ok_or_else(|| invalid("record_id", "the SHA-256 of the record's content, hex"))?;
    if r.received_unix_ms <= 0 {
        return Err(invalid("received_unix_ms", "a time after 1970"));
    }
    prescription_id(&r.prescription_id)?;
    r.institution_code
        .parse::<InstitutionCode>()
        .map_err(|e| invalid("institution_code", e.rule))?;
    PrescriptionNumber::parse(&r.prescription_number)
        .ok_or_else(|| invalid("prescription_number", "1-32 printable ASCII characters"))?;
    if let Some(a) = &r.attestation {
        attestation_fields(a)?;
    }
    Ok(())
}

/// Bounds of a relay attestation, checked before its signature is.
fn attestation_fields(a: &pb::RelayAttestation) -> Result<(), Error> {
    if a.statement.len() > 1024 {
        return Err(invalid("attestation.statement", "at most 1 KiB"));
    }
    // An ECDSA P-256 signature in ASN.1 DER is at most 72 bytes.
    if a.signature.is_empty() || a.signature.len() > 72 {
        return Err(invalid("attestation.signature", "1-72 bytes"));
    }
    if a.sender_certificate_sha256.len() != 32 {
        return Err(invalid("attestation.sender_certificate_sha256", "32 bytes"));
    }
    Ok(())
}

/// The lookup key of a pharmacy's request: a patient key and an exchange number.
pub fn patient_and_number(
    key: Option<&pb::PatientKey>,
    number: &str,
) -> Result<(PatientKey, u32), Error> {
    Ok((patient_key(key)?, exchange_number(number)?))
}

pub fn prescription_id(s: &str) -> Result<String, Error> {
    if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(s.to_owned())
    } else {
        Err(invalid("prescription_id", "32 lowercase hex characters"))
    }
}

pub fn date(field: &str, s: &str) -> Result<JapanDate, Error> {
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

pub fn status_to_pb(s: RxStatus) -> pb::PrescriptionStatus {
    let pharmacy_code = match &s.state {
        State::Accepted { pharmacy } | State::Dispensed { pharmacy } => pharmacy.to_string(),
        State::Registered | State::Cancelled | State::Expired | State::AwaitingRefill => {
            String::new()
        }
    };
    pb::PrescriptionStatus {
        prescription_id: s.id,
        institution_code: s.institution,
        prescription_number: s.number,
        state: state_to_pb(&s.state) as i32,
        pharmacy_code,
        issue_date: s.issue_date,
        usable_through: s.usable_through,
        line_states: s
            .lines
            .iter()
            .map(|l| {
                (match l {
                    LineState::Dispensed => pb::LineStatus::Dispensed,
                    LineState::Partial => pb::LineStatus::Partial,
                    LineState::Owing => pb::LineStatus::Owing,
                    LineState::NotDispensed => pb::LineStatus::NotDispensed,
                }) as i32
            })
            .collect(),
        uses: s.uses,
        uses_dispensed: s.uses_dispensed,
        next_use: s.next_use.map(|w| pb::RefillWindow {
            planned: w.planned.to_string(),
            from: w.from.to_string(),
            until: w.until.to_string(),
        }),
        dispensing_records: s.dispensings.into_iter().map(dispensing_to_pb).collect(),
    }
}

fn dispensing_to_pb(d: DispensingSummary) -> pb::DispensingRecordSummary {
    pb::DispensingRecordSummary {
        record_number: d.record_number,
        pharmacy_code: d.pharmacy,
        dispensing_date: d.dispensing_date,
        r#final: d.is_final,
        important_information: d.important_information,
        important_message: d.important_message,
        record: Some(pb::SignedDocument {
            content: d.content,
            cms_signature: d.cms_signature,
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

pub fn event_to_pb(e: EventEntry) -> pb::Event {
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

/// The filter of a feed request: the prescription (if any) and the kinds (if any).
pub fn event_filter(
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
pub fn pseudonym_filter(text: &str) -> Result<Option<[u8; 32]>, Error> {
    if text.is_empty() {
        return Ok(None);
    }
    hash::from_hex(text)
        .map(Some)
        .ok_or_else(|| invalid("patient_pseudonym", "64 hex digits"))
}

/// The consent and switches of a check request. An unspecified consent is no consent.
pub fn check_request(consent: i32, options: Option<&pb::CheckOptions>) -> CheckRequest {
    let consent = match pb::Consent::try_from(consent) {
        Ok(pb::Consent::Card) => Consent::Card,
        Ok(pb::Consent::Verbal) => Consent::Verbal,
        _ => Consent::None,
    };
    let options = options.map_or(RequestedOptions::default(), |o| RequestedOptions {
        include_same_institution: o.include_same_institution,
        caution: o.caution,
        same_class: o.same_class,
        within_prescription: o.within_prescription,
    });
    CheckRequest { consent, options }
}

/// The acknowledgements of a registration: each names a finding; its reason is free text.
pub fn acknowledgements(
    acks: Vec<pb::Acknowledgement>,
    max: usize,
) -> Result<Vec<Acknowledgement>, Error> {
    documents::bounded_count("acknowledgements", acks.len(), max)
        .map_err(Error::InvalidArgument)?;
    let mut violations = Vec::new();
    for (i, a) in acks.iter().enumerate() {
        if a.finding_id.is_empty() || a.finding_id.len() > 64 {
            violations.push(FieldViolation::new(
                format!("acknowledgements[{i}].finding_id"),
                "a finding id",
            ));
        }
        if a.reason.trim().is_empty() || a.reason.chars().count() > MAX_MESSAGE_CHARS {
            violations.push(FieldViolation::new(
                format!("acknowledgements[{i}].reason"),
                "a reason of 1 to 1000 characters",
            ));
        }
    }
    if !violations.is_empty() {
        return Err(Error::InvalidArgument(violations));
    }
    Ok(acks
        .into_iter()
        .map(|a| Acknowledgement {
            finding_id: a.finding_id,
            reason: a.reason,
        })
        .collect())
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
pub async fn import_files(
    mut stream: tonic::Streaming<pb::ImportMasterChunk>,
) -> Result<Vec<ImportFile>, Error> {
    use pb::import_master_chunk::Part;
    let mut files: Vec<(ImportFile, u64)> = Vec::new();
    let mut total = 0u64;
    while let Some(chunk) = stream.message().await.map_err(stream_failure)? {
        match chunk.part {
            Some(Part::File(header)) => {
                if let Some((f, size)) = files.last()
                    && f.file.bytes.len() as u64 != *size
                {
                    return Err(invalid("data", "a file's chunks must add up to its size"));
                }
                let kind = file_kind(header.kind)
                    .ok_or_else(|| invalid("file.kind", "must name the kind of file"))?;
                if header.name.is_empty() || header.name.contains(['/', '\\']) {
                    return Err(invalid("file.name", "a file name without folders"));
                }
                if header.size > MAX_IMPORT_FILE_BYTES {
                    return Err(Error::ResourceExhausted("an import file is over 64 MiB"));
                }
                files.push((
                    ImportFile {
                        kind,
                        file: SourceFile {
                            name: header.name,
                            bytes: Vec::with_capacity(header.size as usize),
                        },
                    },
                    header.size,
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

pub fn import_summary_to_pb(s: ImportSummary) -> pb::ImportMasterSummary {
    pb::ImportMasterSummary {
        files: s
            .files
            .into_iter()
            .map(|(kind, f)| pb::ImportedFile {
                name: f.name,
                kind: file_kind_to_pb(kind) as i32,
                rows: f.rows,
                added: f.added,
                changed: f.changed,
                abolished: f.abolished,
                deleted: f.deleted,
                restored: f.restored,
                already_imported: f.already_imported,
            })
            .collect(),
        master_records: s.master_records,
        current_products: s.current_products,
        contraindication_rules: s.contraindication_rules,
        version: s.version,
    }
}

fn drug_to_pb(drug: &DrugRef) -> pb::DrugReference {
    pb::DrugReference {
        code: drug.code.clone(),
        name: drug.name.clone().unwrap_or_default(),
        moiety: drug.moiety.clone().unwrap_or_default(),
    }
}

fn origin_to_pb(origin: &Origin) -> pb::Origin {
    match origin {
        Origin::History(source) => pb::Origin {
            kind: match source.kind {
                SourceKind::Prescription => pb::OriginKind::Prescription,
                SourceKind::Dispensing => pb::OriginKind::Dispensing,
            } as i32,
            institution_code: source.code.to_string(),
            date: source.date.to_string(),
            line: 0,
        },
        Origin::ThisPrescription { line } => pb::Origin {
            kind: pb::OriginKind::ThisPrescription as i32,
            line: *line as u32,
            ..Default::default()
        },
    }
}

/// A finding as the wire carries it.
pub fn finding_to_pb(f: &Finding) -> pb::Finding {
    let kind = match f.kind {
        FindingKind::Duplicate => pb::FindingKind::Duplicate,
        FindingKind::Contraindication => pb::FindingKind::Contraindication,
        FindingKind::Conditional => pb::FindingKind::Conditional,
        FindingKind::Caution => pb::FindingKind::Caution,
        FindingKind::SameClass => pb::FindingKind::SameClass,
        FindingKind::NotChecked => pb::FindingKind::NotChecked,
    };
    let indicator = match f.indicator {
        Indicator::Info => pb::Indicator::Info,
        Indicator::Warning => pb::Indicator::Warning,
        Indicator::Critical => pb::Indicator::Critical,
    };
    let others: Vec<pb::OtherDrug> = f
        .others
        .iter()
        .map(|o| pb::OtherDrug {
            drug: Some(drug_to_pb(&o.drug)),
            origins: o.origins.iter().map(origin_to_pb).collect(),
        })
        .collect();
    let first = others.first();
    pb::Finding {
        id: f.id.clone(),
        kind: kind as i32,
        indicator: indicator as i32,
        summary: f.summary.clone(),
        line: f.line as u32,
        own: f.own.as_ref().map(drug_to_pb),
        other: first.and_then(|o| o.drug.clone()),
        origin: first.and_then(|o| o.origins.first().cloned()),
        rule: f.rule.as_ref().map(|r| pb::Rule {
            id: r.id.clone(),
            mechanism: r.mechanism.clone(),
            source: r.source.clone(),
            verification: r.verification.clone(),
            condition: r.condition.clone().unwrap_or_default(),
        }),
        others,
    }
}

/// The one mapping of use-case errors to gRPC status. Messages carry no patient data.
pub fn to_status(error: Error) -> Status {
    match error {
        Error::InvalidArgument(violations) => invalid_argument(&violations),
        Error::Signature(refusal) => {
            // A client can send refused signatures at will: one line per 10 s at most.
            static PATH_REFUSED: LogThrottle = LogThrottle::new(Duration::from_secs(10));
            if let Some(diagnostic) = &refusal.diagnostic
                && let Some(left_out) = PATH_REFUSED.allow()
            {
                tracing::info!(
                    reason = refusal.reason.code(),
                    %diagnostic,
                    left_out,
                    "signature refused by path validation"
                );
            }
            let mut details = ErrorDetails::new();
            details.set_error_info(
                refusal.reason.code(),
                "rxgate.signature",
                [("detail".to_owned(), refusal.detail.clone())],
            );
            Status::with_error_details(
                Code::InvalidArgument,
                format!(
                    "signature refused: {}: {}",
                    refusal.reason.code(),
                    refusal.detail
                ),
                details,
            )
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
        Error::CriticalFindings {
            findings,
            unacknowledged,
        } => critical_findings(&findings, &unacknowledged),
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
    for v in shown {
        details.add_bad_request_violation(v.field.clone(), v.rule.clone());
    }
    let mut summary = shown
        .iter()
        .map(|v| format!("{}: {}", v.field, v.rule))
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
