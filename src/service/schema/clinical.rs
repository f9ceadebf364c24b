//! The clinical records: `Medications` (with the per-line layout of earlier versions),
//! `Clinical` and the history's layout mark in `Meta`.

use crate::{
    service::{pseudonym::PatientPseudonym, records::SlotV1, stored::corrupt},
    store,
};

use super::{Range, key, prefix_end};

/// `Medications`: a patient's medication history, one record per patient, by the patient's
/// pseudonym (which never holds a zero byte).
pub(in crate::service) fn history_key(patient: &PatientPseudonym) -> &[u8] {
    patient.as_str().as_bytes()
}

const PRESCRIBED_LINE: &[u8] = b"rx";
const DISPENSED_LINE: &[u8] = b"d";

/// `Medications` as versions before the one-record-per-patient layout wrote it, one key per
/// line: a prescribed line by (canonical patient key, `rx`, prescription id, line number). Only the tests
/// that build such a store write these; the migration reads them ([`old_history_entry`]).
#[cfg(test)]
pub(in crate::service) fn old_prescribed_line_key(patient: &str, id: &str, line: u32) -> Vec<u8> {
    key(&[
        patient.as_bytes(),
        PRESCRIBED_LINE,
        id.as_bytes(),
        &line.to_be_bytes(),
    ])
}

/// The per-line layout's dispensed line: (patient, `d`, its last day, prescription id, record
/// number, line number), numbers 4 bytes, big-endian. Written by tests only, as above.
#[cfg(test)]
pub(in crate::service) fn old_dispensed_line_key(
    patient: &str,
    last_day: &str,
    id: &str,
    record: u32,
    line: u32,
) -> Vec<u8> {
    key(&[
        patient.as_bytes(),
        DISPENSED_LINE,
        last_day.as_bytes(),
        id.as_bytes(),
        &record.to_be_bytes(),
        &line.to_be_bytes(),
    ])
}

/// The canonical patient key and the slot of a `Medications` key of the per-line layout; `None`
/// for a key of one record per patient (a patient's key or pseudonym alone, without a zero
/// byte).
pub(in crate::service) fn old_history_entry(
    key: &[u8],
) -> Result<Option<(&str, SlotV1)>, store::Error> {
    let Some(end) = key.iter().position(|b| *b == 0) else {
        return Ok(None);
    };
    let patient = std::str::from_utf8(&key[..end]).map_err(|_| corrupt("history key"))?;
    Ok(Some((patient, old_slot(&key[end + 1..])?)))
}

/// The slot of a per-line key after its patient: `rx \0 id \0 line` or
/// `d \0 last-day \0 id \0 record \0 line` (record and line 4 bytes, big-endian).
fn old_slot(rest: &[u8]) -> Result<SlotV1, store::Error> {
    let bad = || corrupt("history key");
    let number = |at: usize| -> Result<u32, store::Error> {
        let bytes = rest.get(at..at + 4).ok_or_else(bad)?;
        Ok(u32::from_be_bytes(bytes.try_into().map_err(|_| bad())?))
    };
    let n = rest.len();
    let prescribed = key(&[PRESCRIBED_LINE, b""]);
    if rest.starts_with(&prescribed) && n >= prescribed.len() + 1 + 4 {
        return Ok(SlotV1::Undispensed {
            line: number(n - 4)?,
        });
    }
    let dispensed = key(&[DISPENSED_LINE, b""]);
    let dated = rest.strip_prefix(dispensed.as_slice()).ok_or_else(bad)?;
    let day_end = dated.iter().position(|b| *b == 0).ok_or_else(bad)?;
    let last_day = std::str::from_utf8(&dated[..day_end]).map_err(|_| bad())?;
    if n < dispensed.len() + day_end + 1 + 1 + 4 + 1 + 4 {
        return Err(bad());
    }
    Ok(SlotV1::Dispensed {
        last_day: last_day.to_owned(),
        record: number(n - 9)?,
        line: number(n - 4)?,
    })
}

/// `Meta`: marks a store whose `Medications` has the one-record-per-patient layout → ().
pub(in crate::service) const HISTORY_LAYOUT_KEY: &[u8] = b"layout/history-per-patient";

const CHECK_BUDGET: &[u8] = b"check-budget";
const CONSENT: &[u8] = b"consent";
const OVERRIDE: &[u8] = b"override";

/// `Clinical`: a patient's check budget (lines checked in the current window), by the
/// patient's pseudonym.
pub(in crate::service) fn check_budget_key(patient: &PatientPseudonym) -> Vec<u8> {
    key(&[CHECK_BUDGET, patient.as_str().as_bytes()])
}

/// `Clinical`: a consent an institution asserted for a check of a patient, by the patient's
/// pseudonym and a number unique in the store
/// ([`Txn::unique_sequence`](crate::store::Txn::unique_sequence) `consent`, 8 bytes,
/// big-endian), so a patient's consents sort in the order they were drawn.
pub(in crate::service) fn consent_key(patient: &PatientPseudonym, sequence: u64) -> Vec<u8> {
    key(&[
        CONSENT,
        patient.as_str().as_bytes(),
        &sequence.to_be_bytes(),
    ])
}

/// Every check budget in `Clinical`.
pub(in crate::service) fn check_budgets() -> Range {
    prefixed_range(CHECK_BUDGET)
}

/// Every consent in `Clinical`.
pub(in crate::service) fn consents() -> Range {
    prefixed_range(CONSENT)
}

/// The keys that start with `name` and the separator after it.
fn prefixed_range(name: &[u8]) -> Range {
    let start = key_prefix(name);
    Range {
        end: prefix_end(&start),
        start,
    }
}

/// `Clinical`: the findings a registration acknowledged, by prescription id.
pub(in crate::service) fn override_key(prescription_id: &str) -> Vec<u8> {
    key(&[OVERRIDE, prescription_id.as_bytes()])
}

/// The prefix of every imported master file in `Clinical`.
pub(in crate::service) const IMPORTS: &[u8] = b"import\0";

/// `Clinical`: an imported master file, by a number unique in the store
/// ([`Txn::unique_sequence`](crate::store::Txn::unique_sequence) `import`, 8 bytes,
/// big-endian) drawn in import order, so a later import sorts after, and is replayed after, an
/// earlier one.
pub(in crate::service) fn import_key(sequence: u64) -> Vec<u8> {
    [IMPORTS, &sequence.to_be_bytes()].concat()
}

/// What a `Clinical` key holds, told by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::service) enum ClinicalKind {
    CheckBudget,
    /// With the consent's number (`consent`).
    Consent(u64),
    /// With the prescription id.
    Override,
    /// With the file's number (`import`).
    Import(u64),
}

/// The kind of a `Clinical` key, and what follows its prefix; `None` for a key of no kind.
pub(in crate::service) fn clinical_kind(key: &[u8]) -> Option<(ClinicalKind, &[u8])> {
    let number = |rest: &[u8]| {
        let at = rest.len().checked_sub(8)?;
        Some(u64::from_be_bytes(rest[at..].try_into().ok()?))
    };
    let prefixed = |name: &[u8]| key.strip_prefix(key_prefix(name).as_slice());
    if let Some(rest) = prefixed(CHECK_BUDGET) {
        return Some((ClinicalKind::CheckBudget, rest));
    }
    if let Some(rest) = prefixed(CONSENT) {
        return Some((ClinicalKind::Consent(number(rest)?), rest));
    }
    if let Some(rest) = prefixed(OVERRIDE) {
        return Some((ClinicalKind::Override, rest));
    }
    let rest = key.strip_prefix(IMPORTS)?;
    Some((ClinicalKind::Import(number(rest)?), rest))
}

/// `name` and the separator after it.
fn key_prefix(name: &[u8]) -> Vec<u8> {
    key(&[name, b""])
}
