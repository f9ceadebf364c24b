//! The event log: `Events`, `EventsByInstitution`, the log's and the relay's positions in
//! `Meta`, and the columns of an event.

use crate::{
    service::records::{EventKindV1, EventRecord},
    store::{self, Column, Table, Value},
};

use super::{Range, Row, key, prefix_end, prescriptions::state_name, text_or_null};

/// `Events`: an event by its sequence number (8 bytes, big-endian: the log's order).
pub(in crate::service) fn event_key(sequence: u64) -> [u8; 8] {
    sequence.to_be_bytes()
}

/// The `Events` keys from the sequence `first` on.
pub(in crate::service) fn events_from(first: u64) -> Range {
    Range {
        start: event_key(first).to_vec(),
        end: event_key(u64::MAX).to_vec(),
    }
}

/// The `Events` keys after the sequence `after`.
pub(in crate::service) fn events_after(after: u64) -> Range {
    events_from(after.saturating_add(1))
}

/// The sequence number an [`event_key`] holds.
pub(in crate::service) fn event_sequence(key: &[u8]) -> Result<u64, store::Error> {
    key.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| store::Error::Corrupt("event sequence".into()))
}

/// `EventsByInstitution`: an event of one institution's prescriptions, by the institution and
/// the event's sequence → (): a clinic's replay reads only its own.
pub(in crate::service) fn institution_event_key(institution: &str, sequence: u64) -> Vec<u8> {
    key(&[institution.as_bytes(), &event_key(sequence)])
}

/// The `EventsByInstitution` keys of `institution` after the sequence `after`.
pub(in crate::service) fn institution_events_after(institution: &str, after: u64) -> Range {
    let prefix = key(&[institution.as_bytes(), b""]);
    Range {
        start: [prefix.as_slice(), &event_key(after.saturating_add(1))].concat(),
        end: prefix_end(&prefix),
    }
}

/// The event sequence an [`institution_event_key`] ends in (an institution code holds no 0).
pub(in crate::service) fn institution_event_sequence(key: &[u8]) -> Result<u64, store::Error> {
    let at = key
        .iter()
        .position(|b| *b == 0)
        .map_or(key.len(), |p| p + 1);
    event_sequence(&key[at..])
}

/// `Meta`: an event committed on a store whose transactions run side by side, not yet numbered
/// in the log (`service::sequencer`), by the draw that orders it (`PENDING_EVENT_SEQUENCE`, 8
/// bytes, big-endian) → the event record.
pub(in crate::service) fn pending_event_key(draw: u64) -> Vec<u8> {
    [PENDING_EVENTS, &draw.to_be_bytes()].concat()
}

/// The prefix of every [`pending_event_key`].
pub(in crate::service) const PENDING_EVENTS: &[u8] = b"events\0pending\0";

/// Every [`pending_event_key`], in the order of their draws.
pub(in crate::service) fn pending_events() -> Range {
    Range {
        start: PENDING_EVENTS.to_vec(),
        end: prefix_end(PENDING_EVENTS),
    }
}

/// The draw a [`pending_event_key`] holds, if the key is one.
pub(in crate::service) fn pending_event_draw(key: &[u8]) -> Option<u64> {
    let draw = key.strip_prefix(PENDING_EVENTS)?;
    draw.try_into().ok().map(u64::from_be_bytes)
}

/// `Meta`: the first retained event sequence (8 bytes, big-endian; absent: 1).
pub(in crate::service) const EVENTS_FLOOR_KEY: &[u8] = b"events\0floor";

/// `Meta`: the last event sequence the management service acknowledged to the relay (8 bytes,
/// big-endian; absent: 0).
pub(in crate::service) const RELAY_ACKED_KEY: &[u8] = b"relay\0acked";

/// The columns of `Events`: `time_ms` in Unix milliseconds, `state` the prescription's after
/// the event.
pub(in crate::service) const EVENT_COLUMNS: [Column; 7] = columns![
    sequence: Integer, time_ms: Integer, kind: Text, prescription_id: Text, institution: Text,
    pharmacy: Text nullable, state: Text,
];

/// A kind of event as the `kind` column names it.
fn kind_name(kind: EventKindV1) -> &'static str {
    match kind {
        EventKindV1::Registered => "registered",
        EventKindV1::Accepted => "accepted",
        EventKindV1::Returned => "returned",
        EventKindV1::Cancelled => "cancelled",
        EventKindV1::Expired => "expired",
        EventKindV1::DispensingRecorded => "dispensing_recorded",
    }
}

/// The columns of the row of the event `sequence`.
pub(in crate::service) fn event_row(sequence: u64, event: &EventRecord) -> Row<'_, 7> {
    let EventRecord::V1(e) = event;
    Row::new(
        Table::Events,
        [
            Value::Integer(i64::try_from(sequence).unwrap_or(i64::MAX)),
            Value::Integer(e.time_ms),
            Value::Text(kind_name(e.kind)),
            Value::Text(&e.prescription_id),
            Value::Text(&e.institution),
            text_or_null(e.pharmacy.as_deref()),
            Value::Text(state_name(&e.state)),
        ],
    )
}
