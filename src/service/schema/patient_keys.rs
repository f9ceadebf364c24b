//! The kinds of key that name a patient, and where in the key: `ByExchange`, `ByPatient`,
//! `Medications`, and the check budgets and consents in `Clinical`. Each holds the patient's
//! pseudonym (`service::pseudonym::PatientPseudonym`); stores of layout 1 and before held the
//! canonical patient key in the same place, which the layout 2 migration rewrites, and which no
//! key may hold once it has run.

use crate::{
    service::{pseudonym::PatientPseudonym, stored::corrupt},
    store::{self, Table},
};

use super::{Range, TEXT_KEYS_END, check_budgets, consents};

/// One kind of key that names a patient: where its keys lie, and which of a key's parts (those
/// joined by a zero byte, counted from 0) is the patient's. The parts before it are text, so
/// they hold no zero byte; what follows it is kept as it is, binary or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::service) struct PatientKeyed {
    pub(in crate::service) table: Table,
    pub(in crate::service) range: Range,
    part: usize,
}

/// Every kind of key that names a patient.
pub(in crate::service) fn patient_keyed() -> [PatientKeyed; 5] {
    let whole = || Range {
        start: Vec::new(),
        end: TEXT_KEYS_END.to_vec(),
    };
    let kind = |table, range, part| PatientKeyed { table, range, part };
    [
        kind(Table::ByExchange, whole(), 0),
        kind(Table::ByPatient, whole(), 1),
        kind(Table::Medications, whole(), 0),
        kind(Table::Clinical, check_budgets(), 1),
        kind(Table::Clinical, consents(), 1),
    ]
}

impl PatientKeyed {
    /// Where the patient's part of `key` starts and ends (both at the key's end if it has no
    /// such part).
    fn patient_part(&self, key: &[u8]) -> (usize, usize) {
        let next_zero = |from: usize| key[from..].iter().position(|b| *b == 0).map(|at| from + at);
        let mut start = 0;
        for _ in 0..self.part {
            start = next_zero(start).map_or(key.len(), |zero| zero + 1);
        }
        (start, next_zero(start).unwrap_or(key.len()))
    }

    /// The canonical patient key that `key` holds where a key now holds the pseudonym, as
    /// layout 1 and before wrote it; `None` for a key that holds a pseudonym.
    pub(in crate::service) fn clear_patient<'k>(
        &self,
        key: &'k [u8],
    ) -> Result<Option<&'k str>, store::Error> {
        let (start, end) = self.patient_part(key);
        let part = &key[start..end];
        if PatientPseudonym::is_one(part) {
            return Ok(None);
        }
        if part.is_empty() {
            return Err(corrupt("patient key"));
        }
        std::str::from_utf8(part)
            .map(Some)
            .map_err(|_| corrupt("patient key"))
    }

    /// `key` with the patient's part replaced by `pseudonym`, the rest as it is.
    pub(in crate::service) fn with_pseudonym(
        &self,
        key: &[u8],
        pseudonym: &PatientPseudonym,
    ) -> Vec<u8> {
        self.with_part(key, pseudonym.as_str().as_bytes())
    }

    /// `key` as layout 1 wrote it: the canonical patient key `patient` where the pseudonym is.
    /// Only the tests that build such a store write these.
    #[cfg(test)]
    pub(in crate::service) fn in_clear(&self, key: &[u8], patient: &str) -> Vec<u8> {
        self.with_part(key, patient.as_bytes())
    }

    /// `key` with the patient's part replaced by `part`.
    fn with_part(&self, key: &[u8], part: &[u8]) -> Vec<u8> {
        let (start, end) = self.patient_part(key);
        [&key[..start], part, &key[end..]].concat()
    }
}
