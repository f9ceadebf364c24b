//! The prescriptions, their dispensing records and their indexes: `Prescriptions`,
//! `ByExchange`, `ByPatient`, `ByNumber`, `Documents`, `Dispensings`, `Certificates`, and the
//! `Meta` entries that index prescriptions; the columns of prescriptions and dispensing records.

use crate::{
    service::{
        pseudonym::PatientPseudonym,
        records::{DispensingV2, PrescriptionV3, StateV1},
    },
    store::{Column, Table, Value},
};

use super::{Range, Row, key, prefix_end, text_or_null};

/// [`Table::Prescriptions`](crate::store::Table::Prescriptions): a prescription record by its
/// id (32 hex digits).
pub(in crate::service) fn prescription_key(id: &str) -> &[u8] {
    id.as_bytes()
}

/// `ByExchange`: the active prescription a pharmacy finds by the patient's pseudonym and the
/// exchange number (six digits) → its id.
pub(in crate::service) fn exchange_key(
    patient: &PatientPseudonym,
    exchange_number: u32,
) -> Vec<u8> {
    key(&[
        patient.as_str().as_bytes(),
        format!("{exchange_number:06}").as_bytes(),
    ])
}

/// `ByPatient`: a clinic's own prescriptions of a patient (by pseudonym) by issue date, keyed
/// by institution first so that a search reads no other institution's entries → ().
pub(in crate::service) fn by_patient_key(
    institution: &str,
    patient: &PatientPseudonym,
    issue_date: &str,
    id: &str,
) -> Vec<u8> {
    key(&[
        institution.as_bytes(),
        patient.as_str().as_bytes(),
        issue_date.as_bytes(),
        id.as_bytes(),
    ])
}

/// The `ByPatient` entries of `institution` for `patient` issued from `from` up to, not
/// including, `until` (dates as YYYY-MM-DD).
pub(in crate::service) fn by_patient_range(
    institution: &str,
    patient: &PatientPseudonym,
    from: &str,
    until: &str,
) -> Range {
    let (institution, patient) = (institution.as_bytes(), patient.as_str().as_bytes());
    Range {
        start: key(&[institution, patient, from.as_bytes()]),
        end: key(&[institution, patient, until.as_bytes()]),
    }
}

/// A `ByPatient` entry as versions before the institution-first layout wrote it: (canonical
/// patient key, issue date, id). Only the search index's migration reads these ([`is_old_by_patient_key`]),
/// and only tests write them.
#[cfg(test)]
pub(in crate::service) fn old_by_patient_key(patient: &str, issue_date: &str, id: &str) -> Vec<u8> {
    key(&[patient.as_bytes(), issue_date.as_bytes(), id.as_bytes()])
}

/// Whether a `ByPatient` key has the layout before the institution-first one: neither a patient
/// key (or pseudonym) nor an institution code holds 0, so an old key has two separators, a
/// current one three.
pub(in crate::service) fn is_old_by_patient_key(key: &[u8]) -> bool {
    key.iter().filter(|b| **b == 0).count() == 2
}

/// The prescription id a `ByPatient` key (either layout) ends in.
pub(in crate::service) fn id_of_by_patient(key: &[u8]) -> &[u8] {
    key.rsplit(|b| *b == 0).next().unwrap_or_default()
}

/// `ByNumber`: a prescription by its institution and the institution's own prescription
/// number → its id (a registration's idempotency key).
pub(in crate::service) fn number_key(institution: &str, number: &str) -> Vec<u8> {
    key(&[institution.as_bytes(), number.as_bytes()])
}

/// `Documents`: a dispensing record's content by its SHA-256 → (prescription id, record
/// number); stores written by earlier versions also hold prescriptions' content here.
pub(in crate::service) fn document_key(content_sha256: &[u8; 32]) -> &[u8] {
    content_sha256
}

/// `Dispensings`: a dispensing record by its prescription id and record number (4 bytes,
/// big-endian, so a prescription's records sort by number).
pub(in crate::service) fn dispensing_key(prescription_id: &str, record_number: u32) -> Vec<u8> {
    key(&[prescription_id.as_bytes(), &record_number.to_be_bytes()])
}

/// The prefix of every `Dispensings` key of one prescription.
pub(in crate::service) fn dispensings_of(prescription_id: &str) -> Vec<u8> {
    key(&[prescription_id.as_bytes(), b""])
}

/// `Certificates`: a DER certificate by its SHA-256, as the stored signatures carried it.
pub(in crate::service) fn certificate_key(sha256: &[u8; 32]) -> &[u8] {
    sha256
}

const ACCEPTED: &[u8] = b"accepted";
const EXPIRY: &[u8] = b"expiry";

/// `Meta`: the index of ACCEPTED prescriptions by id → (), which the stuck report walks.
pub(in crate::service) fn accepted_key(id: &str) -> Vec<u8> {
    key(&[ACCEPTED, id.as_bytes()])
}

/// Every key of the index of ACCEPTED prescriptions.
pub(in crate::service) fn accepted_range() -> Range {
    let start = key(&[ACCEPTED, b""]);
    Range {
        end: prefix_end(&start),
        start,
    }
}

/// The prescription id of an [`accepted_key`].
pub(in crate::service) fn id_of_accepted(key: &[u8]) -> String {
    let id = key.get(ACCEPTED.len() + 1..).unwrap_or_default();
    String::from_utf8_lossy(id).into_owned()
}

/// `Meta`: the index of active prescriptions by their last usable date (YYYY-MM-DD, so the
/// keys sort by date) and id → (), which the expiry sweep walks. An awaiting refill is indexed
/// by its window's end too.
pub(in crate::service) fn expiry_key(usable_through: &str, id: &str) -> Vec<u8> {
    key(&[EXPIRY, usable_through.as_bytes(), id.as_bytes()])
}

/// The expiry index's entries of dates before `today` (YYYY-MM-DD).
pub(in crate::service) fn expired_before(today: &str) -> Range {
    Range {
        start: key(&[EXPIRY, b""]),
        end: key(&[EXPIRY, today.as_bytes()]),
    }
}

/// Whether a `Meta` key is an [`expiry_key`].
pub(in crate::service) fn is_expiry_key(meta_key: &[u8]) -> bool {
    meta_key.starts_with(&key(&[EXPIRY, b""]))
}

/// The prescription id of an [`expiry_key`].
pub(in crate::service) fn id_of_expiry(key: &[u8]) -> String {
    String::from_utf8_lossy(key.rsplit(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

/// `Meta`: marks a store whose `ByPatient` index has the institution-first layout → ().
pub(in crate::service) const SEARCH_INDEX_LAYOUT_KEY: &[u8] = b"layout/search-index-by-institution";

/// The columns of `Prescriptions`. The patient is named by the keyed pseudonym the audit log
/// uses (`service::Pseudonyms`), never by the canonical patient key: a DBA who holds the
/// pseudonym key can find one patient's prescriptions, a copy of the table names nobody.
///
/// `pharmacy` is the one that holds an ACCEPTED or DISPENSED prescription; times are Unix
/// milliseconds.
pub(in crate::service) const PRESCRIPTION_COLUMNS: [Column; 10] = columns![
    id: Text, institution: Text, number: Text, state: Text, pharmacy: Text nullable,
    issue_date: Date, usable_through: Date, received_at_ms: Integer,
    accepted_at_ms: Integer nullable, patient_pseudonym: Bytes,
];

/// A state as the `state` columns name it.
pub(in crate::service) fn state_name(state: &StateV1) -> &'static str {
    match state {
        StateV1::Registered => "registered",
        StateV1::Accepted(_) => "accepted",
        StateV1::Dispensed(_) => "dispensed",
        StateV1::Cancelled => "cancelled",
        StateV1::Expired => "expired",
        StateV1::AwaitingRefill => "awaiting_refill",
    }
}

/// The pharmacy a state names, if any.
fn holder(state: &StateV1) -> Option<&str> {
    match state {
        StateV1::Accepted(pharmacy) | StateV1::Dispensed(pharmacy) => Some(pharmacy),
        StateV1::Registered | StateV1::Cancelled | StateV1::Expired | StateV1::AwaitingRefill => {
            None
        }
    }
}

/// The columns of a prescription's row; `patient_pseudonym` is the pseudonym of its patient key.
pub(in crate::service) fn prescription_row<'a>(
    r: &'a PrescriptionV3,
    patient_pseudonym: &'a [u8; 32],
) -> Row<'a, 10> {
    Row::new(
        Table::Prescriptions,
        [
            Value::Text(&r.id),
            Value::Text(&r.institution),
            Value::Text(&r.number),
            Value::Text(state_name(&r.state)),
            text_or_null(holder(&r.state)),
            Value::Date(&r.issue_date),
            Value::Date(&r.usable_through),
            Value::Integer(r.received_at_ms),
            r.accepted_at_ms.map_or(Value::Null, Value::Integer),
            Value::Bytes(patient_pseudonym),
        ],
    )
}

/// The columns of `Dispensings`: `is_final` is 1 for the record that completes the
/// prescription (or its use), else 0; `received_at_ms` is in Unix milliseconds.
pub(in crate::service) const DISPENSING_COLUMNS: [Column; 6] = columns![
    prescription_id: Text, record_number: Integer, pharmacy: Text, dispensing_date: Date,
    is_final: Integer, received_at_ms: Integer,
];

/// The columns of a dispensing record's row (of the current version: an older record is read
/// as one).
pub(in crate::service) fn dispensing_row(d: &DispensingV2) -> Row<'_, 6> {
    Row::new(
        Table::Dispensings,
        [
            Value::Text(&d.prescription_id),
            Value::Integer(d.record_number.into()),
            Value::Text(&d.pharmacy),
            Value::Date(&d.dispensing_date),
            Value::Integer(d.is_final.into()),
            Value::Integer(d.received_at_ms),
        ],
    )
}
