//! Conversions between the wire and the use cases: request fields into domain types, results into
//! messages, and every `service::Error` into a `tonic::Status` in one exhaustive match.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{
    documents,
    domain::{
        hash::hex, patient::PatientKey, prescription::State, rx::FieldViolation, time::JapanDate,
    },
    proto::v1 as pb,
    service::{AuditEntry, Error, Status as RxStatus},
};

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
    }
}

pub fn status_to_pb(s: RxStatus) -> pb::PrescriptionStatus {
    let pharmacy_code = match &s.state {
        State::Accepted { pharmacy } | State::Dispensed { pharmacy } => pharmacy.to_string(),
        State::Registered | State::Cancelled | State::Expired => String::new(),
    };
    pb::PrescriptionStatus {
        prescription_id: s.id,
        institution_code: s.institution,
        prescription_number: s.number,
        state: state_to_pb(&s.state) as i32,
        pharmacy_code,
        issue_date: s.issue_date,
        usable_through: s.usable_through,
        dispensing_records: s
            .dispensings
            .into_iter()
            .map(|d| pb::DispensingRecordSummary {
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
            })
            .collect(),
    }
}

pub fn audit_to_pb(e: AuditEntry) -> pb::AuditRecord {
    let r = e.record;
    pb::AuditRecord {
        sequence: e.sequence,
        time_unix_ms: r.time_ms,
        institution_kind: r.institution_kind,
        institution_code: r.institution_code,
        certificate_sha256: hex(&r.certificate_sha256),
        signer_serial_number: r.signer_serial_number.unwrap_or_default(),
        signer_certificate_sha256: r
            .signer_certificate_sha256
            .map(|h| hex(&h))
            .unwrap_or_default(),
        action: r.action,
        target: r.target.unwrap_or_default(),
        outcome: r.outcome,
    }
}

/// The one mapping of use-case errors to gRPC status. Messages carry no patient data.
pub fn to_status(error: Error) -> Status {
    match error {
        Error::InvalidArgument(violations) => {
            let mut details = ErrorDetails::new();
            for v in &violations {
                details.add_bad_request_violation(v.field.clone(), v.rule.clone());
            }
            let summary = violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.rule))
                .collect::<Vec<_>>()
                .join("; ");
            Status::with_error_details(Code::InvalidArgument, summary, details)
        }
        Error::Signature(refusal) => {
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
        Error::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            Status::internal("internal error")
        }
    }
}
