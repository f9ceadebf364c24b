//! The relay's records on both sides: `Intake`, which holds the dispensing records a receiving
//! gateway took (by record id and by arrival) and the dead letters of a sending one.

use super::key;

const RECORD: &[u8] = b"record";
const ARRIVAL: &[u8] = b"arrival";
const DEAD: &[u8] = b"dead";

/// `Intake`: a delivered dispensing record's id (the SHA-256 of its content, hex) → its arrival
/// number (8 bytes, big-endian): the record is stored once.
pub(in crate::service) fn intake_record_key(record_id: &str) -> Vec<u8> {
    key(&[RECORD, record_id.as_bytes()])
}

/// `Intake`: a delivered record by its arrival number, a number unique in the store
/// ([`Txn::unique_sequence`](crate::store::Txn::unique_sequence) `intake`, 8 bytes,
/// big-endian), so records sort in the order they arrived.
pub(in crate::service) fn arrival_key(arrival: u64) -> Vec<u8> {
    key(&[ARRIVAL, &arrival.to_be_bytes()])
}

/// `Intake`: a record the relay gave up on, by its event sequence (8 bytes, big-endian).
pub(in crate::service) fn dead_letter_key(sequence: u64) -> Vec<u8> {
    key(&[DEAD, &sequence.to_be_bytes()])
}

/// What an `Intake` key holds, told by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::service) enum IntakeKind {
    /// A delivered record by its id (what follows the prefix).
    Record,
    /// A delivered record by its arrival number.
    Arrival(u64),
    /// A dead letter by its event sequence.
    DeadLetter,
}

/// The kind of an `Intake` key, and what follows its prefix; `None` for a key of no kind.
pub(in crate::service) fn intake_kind(key: &[u8]) -> Option<(IntakeKind, &[u8])> {
    let after = |name: &[u8]| key.strip_prefix(name)?.strip_prefix(&[0]);
    if let Some(id) = after(RECORD) {
        return Some((IntakeKind::Record, id));
    }
    if let Some(rest) = after(ARRIVAL) {
        let arrival = u64::from_be_bytes(rest.try_into().ok()?);
        return Some((IntakeKind::Arrival(arrival), rest));
    }
    after(DEAD).map(|rest| (IntakeKind::DeadLetter, rest))
}
