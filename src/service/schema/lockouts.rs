//! The exchange-number lockout's counters and marks: `Lockouts`.

use super::{Range, prefix_end};

const PHARMACY: &[u8] = b"pharmacy\0";
const PATIENT: &[u8] = b"patient\0";
const MISSED: &[u8] = b"missed\0";

/// `Lockouts`: a pharmacy's miss counter, by its institution code.
pub(in crate::service) fn pharmacy_counter_key(code: &str) -> Vec<u8> {
    [PHARMACY, code.as_bytes()].concat()
}

/// `Lockouts`: the miss counter of a patient (from any pharmacy), by the patient's keyed
/// pseudonym.
pub(in crate::service) fn patient_counter_key(pseudonym: &[u8; 32]) -> Vec<u8> {
    [PATIENT, pseudonym].concat()
}

/// `Lockouts`: that a pharmacy missed on a patient, by the patient's pseudonym and the
/// pharmacy's code.
pub(in crate::service) fn miss_mark_key(pseudonym: &[u8; 32], pharmacy: &str) -> Vec<u8> {
    [MISSED, pseudonym, pharmacy.as_bytes()].concat()
}

/// Whether a `Lockouts` key is a [`miss_mark_key`].
pub(in crate::service) fn is_miss_mark(key: &[u8]) -> bool {
    key.starts_with(MISSED)
}

/// Every counter key: the prefixes `patient\0` and `pharmacy\0` are neighbours, and the marks
/// sort before them.
pub(in crate::service) fn lockout_counters() -> Range {
    Range {
        start: PATIENT.to_vec(),
        end: prefix_end(PHARMACY),
    }
}

/// Whose counter a `Lockouts` key is: a pharmacy's code, or a patient's pseudonym, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::service) enum LockoutCounter<'a> {
    Pharmacy(&'a [u8]),
    Patient(&'a [u8]),
}

/// The counter a `Lockouts` key names; `None` for a key of no counter.
pub(in crate::service) fn lockout_counter_of(key: &[u8]) -> Option<LockoutCounter<'_>> {
    if let Some(code) = key.strip_prefix(PHARMACY) {
        return Some(LockoutCounter::Pharmacy(code));
    }
    key.strip_prefix(PATIENT).map(LockoutCounter::Patient)
}
