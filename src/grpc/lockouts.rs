//! The exchange-number lockouts as AdminService names them: a subject (a pharmacy code or a
//! patient pseudonym) parsed from the wire, and a lockout in force written back.

use crate::{
    domain::{hash, rx::FieldViolation},
    service::{Error, Locked, Subject},
    wire::proto::v1::{self as pb, lockout_subject::Subject as PbSubject},
};

fn invalid(field: &str, rule: &str) -> Error {
    Error::InvalidArgument(vec![FieldViolation::new(field, rule)])
}

/// The subject a request names.
pub(super) fn subject(subject: Option<pb::LockoutSubject>) -> Result<Subject, Error> {
    match subject.and_then(|pb::LockoutSubject { subject }| subject) {
        Some(PbSubject::PharmacyCode(code)) => code
            .parse()
            .map(Subject::Pharmacy)
            .map_err(|_| invalid("subject.pharmacy_code", "10 digits")),
        Some(PbSubject::PatientPseudonym(text)) => hash::from_hex(&text)
            .map(Subject::Patient)
            .ok_or_else(|| invalid("subject.patient_pseudonym", "64 hex digits")),
        None => Err(invalid(
            "subject",
            "a pharmacy code or a patient pseudonym is required",
        )),
    }
}

pub(super) fn lockout_to_pb(locked: Locked) -> pb::Lockout {
    let Locked {
        subject,
        misses,
        until_ms,
    } = locked;
    let subject = match subject {
        Subject::Pharmacy(code) => PbSubject::PharmacyCode(code.to_string()),
        Subject::Patient(pseudonym) => PbSubject::PatientPseudonym(hash::hex(&pseudonym)),
    };
    pb::Lockout {
        subject: Some(pb::LockoutSubject {
            subject: Some(subject),
        }),
        misses,
        locked_until_unix_ms: until_ms,
    }
}
