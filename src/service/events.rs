//! The event log: every state change of a prescription (expiry sweeps included) and every
//! dispensing record, appended in the same transaction as the change itself, so that neither
//! ever exists without the other. Sequence numbers come from `Txn::next_sequence`, the store's
//! gap-free, commit-ordered counter — taken by the change itself on a store that runs its
//! transactions one at a time, by the sequencer once it committed on one that runs them side by
//! side (`sequencer.rs`): they only grow, a rolled-back transaction consumes none, and an event
//! numbered later is never visible before one numbered earlier, so a feed that resumes after the
//! last sequence it read misses nothing; the log has no gaps except below the retained range, which
//! `events_page` refuses to read into (OUT_OF_RANGE). A per-institution index serves a clinic's
//! replay. Key layouts are `schema`'s.

use crate::{
    domain::{ids::InstitutionCode, prescription::State},
    store::{self, Store, Table, Txn},
};

use super::{
    DispensingSummary, Error, Gateway, millis,
    records::{
        EventKindV1, EventRecord, EventV1, PrescriptionV3, StoredDispensingRecord, decode, encode,
    },
    schema::{
        self, EVENTS_FLOOR_KEY, dispensing_key, event_key, event_sequence, events_after,
        events_from, institution_event_key, institution_event_sequence, institution_events_after,
        pending_event_key,
    },
    stored::{corrupt, state_of},
};

/// An event as the feed hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEntry {
    pub sequence: u64,
    pub event: Event,
    /// With `DispensingRecorded`: the record.
    pub record: Option<DispensingSummary>,
}

/// What happened to a prescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Registered,
    Accepted,
    Returned,
    Cancelled,
    Expired,
    DispensingRecorded,
}

/// One event of the log, as a reader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub time_ms: i64,
    pub kind: EventKind,
    pub prescription_id: String,
    pub institution: String,
    pub number: String,
    pub pharmacy: Option<String>,
    /// The state after the event.
    pub state: State,
    /// With `DispensingRecorded`: the record's number.
    pub record_number: Option<u32>,
}

impl EventKind {
    fn of(kind: EventKindV1) -> EventKind {
        match kind {
            EventKindV1::Registered => EventKind::Registered,
            EventKindV1::Accepted => EventKind::Accepted,
            EventKindV1::Returned => EventKind::Returned,
            EventKindV1::Cancelled => EventKind::Cancelled,
            EventKindV1::Expired => EventKind::Expired,
            EventKindV1::DispensingRecorded => EventKind::DispensingRecorded,
        }
    }
}

impl Event {
    fn of(e: EventV1) -> Result<Event, store::Error> {
        let EventV1 {
            time_ms,
            kind,
            prescription_id,
            institution,
            number,
            pharmacy,
            state,
            record_number,
        } = e;
        Ok(Event {
            time_ms,
            kind: EventKind::of(kind),
            prescription_id,
            institution,
            number,
            pharmacy,
            state: state_of(&state)?,
            record_number,
        })
    }
}

/// Which events a reader may and wants to see.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only the events of this institution's prescriptions (a clinic); `None`: all (management).
    pub institution: Option<InstitutionCode>,
    pub prescription_id: Option<String>,
    /// Empty: every kind.
    pub kinds: Vec<EventKind>,
}

impl EventFilter {
    fn wants(&self, e: &EventV1) -> bool {
        self.prescription_id
            .as_ref()
            .is_none_or(|id| *id == e.prescription_id)
            && (self.kinds.is_empty() || self.kinds.contains(&EventKind::of(e.kind)))
    }
}

/// Appends an event about `record` (its state as it now is): numbered at once on a store that
/// runs its transactions one at a time, whose counter is in commit order; on one that runs them
/// side by side, left pending under a draw, for the sequencer to number once it has committed
/// (`sequencer.rs`): a shared counter there would make every change conflict with every other.
pub(super) fn append(
    tx: &mut dyn Txn,
    record: &PrescriptionV3,
    kind: EventKindV1,
    pharmacy: Option<String>,
    record_number: Option<u32>,
    time_ms: i64,
) -> Result<(), store::Error> {
    let event = EventRecord::V1(EventV1 {
        time_ms,
        kind,
        prescription_id: record.id.clone(),
        institution: record.institution.clone(),
        number: record.number.clone(),
        pharmacy,
        state: record.state.clone(),
        record_number,
    });
    if tx.serial() {
        // Gap-free and in commit order: a feed resumes after the last sequence it read.
        let sequence = tx.next_sequence(schema::EVENT_SEQUENCE)?;
        put_numbered(tx, sequence, &event);
    } else {
        let draw = tx.unique_sequence(schema::PENDING_EVENT_SEQUENCE)?;
        tx.put(Table::Meta, &pending_event_key(draw), &encode(&event));
    }
    Ok(())
}

/// Writes `event` into the log as number `sequence`, with its institution's index entry.
pub(super) fn put_numbered(tx: &mut dyn Txn, sequence: u64, event: &EventRecord) {
    let EventRecord::V1(e) = event;
    tx.put(
        Table::EventsByInstitution,
        &institution_event_key(&e.institution, sequence),
        b"",
    );
    tx.put_row(
        Table::Events,
        &event_key(sequence),
        &encode(event),
        schema::event_row(sequence, event).columns(),
    );
}

fn floor(tx: &dyn Txn) -> Result<u64, store::Error> {
    tx.get(Table::Meta, EVENTS_FLOOR_KEY)?
        .map_or(Ok(1), |b| event_sequence(&b))
}

/// The sequences after `after` that the filter's institution may see, at most `limit`.
fn sequences_after(
    tx: &dyn Txn,
    filter: &EventFilter,
    after: u64,
    limit: usize,
) -> Result<Vec<u64>, store::Error> {
    match &filter.institution {
        None => {
            let range = events_after(after);
            tx.scan_range(Table::Events, &range.start, &range.end, limit)?
                .iter()
                .map(|(k, _)| event_sequence(k))
                .collect()
        }
        Some(institution) => {
            let range = institution_events_after(institution.as_str(), after);
            tx.scan_range(Table::EventsByInstitution, &range.start, &range.end, limit)?
                .iter()
                .map(|(k, _)| institution_event_sequence(k))
                .collect()
        }
    }
}

fn dispensing_summary(
    tx: &dyn Txn,
    e: &EventV1,
) -> Result<Option<DispensingSummary>, store::Error> {
    let Some(number) = e.record_number else {
        return Ok(None);
    };
    let Some(bytes) = tx.get(
        Table::Dispensings,
        &dispensing_key(&e.prescription_id, number),
    )?
    else {
        return Err(corrupt("event without its dispensing record"));
    };
    let d = decode::<StoredDispensingRecord>(&bytes)?.current();
    DispensingSummary::of(tx, d).map(Some)
}

impl Gateway {
    /// The events after `after` that `filter` lets through, a page at a time: the entries and
    /// the last sequence read (resume after it), or `None` when nothing newer exists yet.
    /// OUT_OF_RANGE when `after` lies before the retained range.
    pub async fn events_page(
        &self,
        filter: EventFilter,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<EventEntry>, Option<u64>), Error> {
        self.store
            .transact(move |tx: &mut dyn Txn| {
                let floor = floor(tx)?;
                if after.saturating_add(1) < floor {
                    return Ok(Err(Error::OutOfRange(format!(
                        "events before sequence {floor} are no longer retained"
                    ))));
                }
                let sequences = sequences_after(tx, &filter, after, limit)?;
                let mut entries = Vec::with_capacity(sequences.len());
                for &sequence in &sequences {
                    let bytes = tx
                        .get(Table::Events, &event_key(sequence))?
                        .ok_or_else(|| corrupt("indexed event missing"))?;
                    let EventRecord::V1(event) = decode(&bytes)?;
                    if filter.wants(&event) {
                        let record = dispensing_summary(tx, &event)?;
                        entries.push(EventEntry {
                            sequence,
                            event: Event::of(event)?,
                            record,
                        });
                    }
                }
                Ok::<_, store::Error>(Ok((entries, sequences.last().copied())))
            })
            .await
            .map_err(Error::from)?
            .map_err(Error::from)?
    }

    /// The newest event's sequence number (0: none yet).
    pub async fn latest_event(&self) -> Result<u64, Error> {
        let read = self
            .store
            .transact(|tx: &mut dyn Txn| tx.sequence(schema::EVENT_SEQUENCE))
            .await
            .map_err(Error::from)?;
        read.map_err(Error::from)
    }

    /// Wakes every feed waiting for new events (called after each committed transaction).
    pub fn events_notifier(&self) -> &tokio::sync::Notify {
        &self.events
    }

    /// Ends every open feed (at shutdown): a feed checks this whenever it wakes.
    pub fn close_feeds(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.events.notify_waiters();
    }

    pub fn feeds_closed(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Deletes the events older than `retention_ms`, oldest first, but none at or after
    /// `keep_from` (the relay's first unacknowledged sequence); returns how many.
    pub async fn prune_events(
        &self,
        retention_ms: i64,
        keep_from: Option<u64>,
    ) -> Result<usize, Error> {
        let horizon = millis(self.clock.now()).saturating_sub(retention_ms);
        let pruned = self
            .store
            .transact(move |tx: &mut dyn Txn| {
                let mut pruned = 0;
                let mut next_floor = None;
                let range = events_from(floor(tx)?);
                for (k, v) in tx.scan_range(Table::Events, &range.start, &range.end, 10_000)? {
                    let sequence = event_sequence(&k)?;
                    let EventRecord::V1(event) = decode(&v)?;
                    if event.time_ms >= horizon || keep_from.is_some_and(|keep| sequence >= keep) {
                        next_floor = Some(sequence);
                        break;
                    }
                    tx.delete(Table::Events, &k);
                    tx.delete(
                        Table::EventsByInstitution,
                        &institution_event_key(&event.institution, sequence),
                    );
                    pruned += 1;
                    next_floor = Some(sequence + 1);
                }
                if let Some(f) = next_floor {
                    tx.put(Table::Meta, EVENTS_FLOOR_KEY, &f.to_be_bytes());
                }
                Ok::<_, store::Error>(pruned)
            })
            .await
            .map_err(Error::from)?
            .map_err(Error::from)?;
        Ok(pruned)
    }
}
