//! The checks of the event log and of the relay's intake: each event decodes under its number,
//! names a stored prescription (and dispensing record) and is in its institution's index,
//! which names only events there are; each intake record decodes, and its id names its arrival.

use crate::store::{Table, Txn};

use super::{Bad, prescriptions, wrong};
use crate::service::{
    records::{DeadLetterRecord, EventRecord, IntakeRecord, decode},
    schema::{
        IntakeKind, arrival_key, dispensing_key, event_key, event_sequence, institution_event_key,
        institution_event_sequence, intake_kind,
    },
};

/// An event: it decodes, its prescription is stored (and the dispensing record it names: the
/// feed and the relay read it with the event), its institution's index names it.
pub(super) fn event(tx: &dyn Txn, key: &[u8], value: &[u8]) -> Result<(), Bad> {
    let sequence = event_sequence(key).map_err(|_| wrong("not an event key"))?;
    let EventRecord::V1(event) =
        decode(value).map_err(|e| wrong(format!("does not decode: {e}")))?;
    prescriptions::load(tx, &event.prescription_id)?;
    if let Some(number) = event.record_number {
        let record = dispensing_key(&event.prescription_id, number);
        if tx.get(Table::Dispensings, &record)?.is_none() {
            return Err(wrong(format!(
                "event {sequence} names dispensing record {number} of prescription {}, which \
                 is not stored",
                event.prescription_id
            )));
        }
    }
    let indexed = institution_event_key(&event.institution, sequence);
    if tx.get(Table::EventsByInstitution, &indexed)?.is_none() {
        return Err(wrong(format!(
            "event {sequence} is missing from EventsByInstitution"
        )));
    }
    Ok(())
}

/// An institution's index entry names an event of that institution.
pub(super) fn institution_event(tx: &dyn Txn, key: &[u8]) -> Result<(), Bad> {
    let sequence = institution_event_sequence(key).map_err(|_| wrong("not an event key"))?;
    let Some(stored) = tx.get(Table::Events, &event_key(sequence))? else {
        return Err(wrong(format!(
            "names event {sequence}, which is not stored"
        )));
    };
    let EventRecord::V1(event) = decode(&stored)
        .map_err(|_| wrong(format!("names event {sequence}, which does not decode")))?;
    if institution_event_key(&event.institution, sequence) != key {
        return Err(wrong(format!(
            "names event {sequence}, of another institution"
        )));
    }
    Ok(())
}

/// An intake entry: a record by its arrival decodes, a record id names its arrival, a dead
/// letter decodes.
pub(super) fn intake(tx: &dyn Txn, key: &[u8], value: &[u8]) -> Result<(), Bad> {
    let undecoded = |e: crate::store::Error| wrong(format!("does not decode: {e}"));
    match intake_kind(key) {
        Some((IntakeKind::Arrival(_), _)) => {
            decode::<IntakeRecord>(value).map_err(undecoded)?;
            Ok(())
        }
        Some((IntakeKind::Record, _)) => {
            let arrival = <[u8; 8]>::try_from(value)
                .map(u64::from_be_bytes)
                .map_err(|_| wrong("its arrival is not 8 bytes"))?;
            match tx.get(Table::Intake, &arrival_key(arrival))? {
                Some(_) => Ok(()),
                None => Err(wrong(format!(
                    "names arrival {arrival}, which is not stored"
                ))),
            }
        }
        Some((IntakeKind::DeadLetter, _)) => {
            decode::<DeadLetterRecord>(value).map_err(undecoded)?;
            Ok(())
        }
        None => Err(wrong("a key of no kind Intake holds")),
    }
}
