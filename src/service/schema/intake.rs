//! The relay's records on both sides: `Intake`, which holds the dispensing records a receiving
//! gateway took (by record id and by arrival) and the dead letters of a sending one.

use super::key;

/// `Intake`: a delivered dispensing record's id (the SHA-256 of its content, hex) → its arrival
/// number (8 bytes, big-endian): the record is stored once.
pub(in crate::service) fn intake_record_key(record_id: &str) -> Vec<u8> {
    key(&[b"record", record_id.as_bytes()])
}

/// `Intake`: a delivered record by its arrival number, a number unique in the store
/// ([`Txn::unique_sequence`](crate::store::Txn::unique_sequence) `intake`, 8 bytes,
/// big-endian), so records sort in the order they arrived.
pub(in crate::service) fn arrival_key(arrival: u64) -> Vec<u8> {
    key(&[b"arrival", &arrival.to_be_bytes()])
}

/// `Intake`: a record the relay gave up on, by its event sequence (8 bytes, big-endian).
pub(in crate::service) fn dead_letter_key(sequence: u64) -> Vec<u8> {
    key(&[b"dead", &sequence.to_be_bytes()])
}
