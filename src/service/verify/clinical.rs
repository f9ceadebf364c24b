//! The checks of the clinical records and the lockout's: the medication histories, check
//! budgets, consents, acknowledged findings (naming a stored prescription) and imported master
//! files decode, and so do the lockout's counters and marks.

use crate::store::{Error, Txn};

use super::{Bad, prescriptions, wrong};
use crate::service::{
    records::{
        CheckBudgetRecord, ConsentRecord, HistoryRecord, ImportedFileRecord, MissCounterRecord,
        MissMarkRecord, OverrideRecord, decode,
    },
    schema::{ClinicalKind, clinical_kind, is_miss_mark, lockout_counter_of},
};

fn undecoded(e: Error) -> Bad {
    wrong(format!("does not decode: {e}"))
}

/// A patient's medication history decodes.
pub(super) fn history(value: &[u8]) -> Result<(), Bad> {
    decode::<HistoryRecord>(value).map(drop).map_err(undecoded)
}

/// A clinical record decodes as its kind; an override names a stored prescription.
pub(super) fn clinical(tx: &dyn Txn, key: &[u8], value: &[u8]) -> Result<(), Bad> {
    match clinical_kind(key) {
        Some((ClinicalKind::CheckBudget, _)) => {
            decode::<CheckBudgetRecord>(value).map_err(undecoded)?;
        }
        Some((ClinicalKind::Consent(_), _)) => {
            decode::<ConsentRecord>(value).map_err(undecoded)?;
        }
        Some((ClinicalKind::Override, id)) => {
            decode::<OverrideRecord>(value).map_err(undecoded)?;
            prescriptions::load(tx, &prescriptions::id(id)?)?;
        }
        Some((ClinicalKind::Import(_), _)) => {
            decode::<ImportedFileRecord>(value).map_err(undecoded)?;
        }
        None => return Err(wrong("a key of no kind Clinical holds")),
    }
    Ok(())
}

/// A lockout counter or mark decodes.
pub(super) fn lockout(key: &[u8], value: &[u8]) -> Result<(), Bad> {
    if is_miss_mark(key) {
        decode::<MissMarkRecord>(value).map_err(undecoded)?;
    } else if lockout_counter_of(key).is_some() {
        decode::<MissCounterRecord>(value).map_err(undecoded)?;
    } else {
        return Err(wrong("a key of no kind Lockouts holds"));
    }
    Ok(())
}
