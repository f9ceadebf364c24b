//! A stored prescription: its record decoded into the domain's lifecycle, each transition
//! applied with the indexes and the event log kept in step; its dispensing progress and the
//! status its prescriber sees.

use std::collections::BTreeSet;

use prost::Message;

use crate::{
    domain::{
        ids::InstitutionCode,
        prescription::{Lifecycle, RefillWindow, State, Transition},
        rx::{DispensedLineFacts, DispensingFacts, PrescriptionFacts, RxLine},
        time::JapanDate,
    },
    store::{self, Table, Txn},
    wire::proto::v1::{DispensingRecord, Prescription},
};

use super::{
    Error, PatientPseudonym, Pseudonyms, clinical, events,
    records::{
        DispensingV2, EventKindV1, PrescriptionRecord, PrescriptionV3, RefillWindowV1, StateV1,
        StoredDispensingRecord, decode, encode,
    },
    schema::{self, accepted_key, dispensings_of, exchange_key, expiry_key, prescription_key},
    signatures,
};

/// Writes `record` in `Prescriptions` with the columns that table declares, its patient named
/// there by `patient`, the pseudonym of its patient key.
pub(super) fn put_prescription(
    tx: &mut dyn Txn,
    record: &PrescriptionV3,
    patient: &PatientPseudonym,
) {
    let row = schema::prescription_row(record, patient.bytes());
    let bytes = encode(&PrescriptionRecord::V3(record.clone()));
    tx.put_row(
        Table::Prescriptions,
        prescription_key(&record.id),
        &bytes,
        row.columns(),
    );
}

/// A prescription's status for its prescriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: String,
    pub institution: String,
    pub number: String,
    pub state: State,
    pub issue_date: String,
    pub usable_through: String,
    pub dispensings: Vec<DispensingSummary>,
    /// Each prescription line's state.
    pub lines: Vec<LineState>,
    /// Total uses (1, or 2–3 for a refill) and uses dispensed so far.
    pub uses: u32,
    pub uses_dispensed: u32,
    /// While a refill awaits its next use: when it may be accepted.
    pub next_use: Option<RefillWindow>,
}

/// A prescription line's dispensing state (as NHS EPS has them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineState {
    /// Given whole.
    Dispensed,
    /// Given in part; the rest is owed.
    Partial,
    /// Nothing given yet; the prescription is still open.
    Owing,
    /// The prescription is closed and this line was not given.
    NotDispensed,
}

pub(super) fn state_v1(state: &State) -> StateV1 {
    match state {
        State::Registered => StateV1::Registered,
        State::Accepted { pharmacy } => StateV1::Accepted(pharmacy.to_string()),
        State::Dispensed { pharmacy } => StateV1::Dispensed(pharmacy.to_string()),
        State::Cancelled => StateV1::Cancelled,
        State::Expired => StateV1::Expired,
        State::AwaitingRefill => StateV1::AwaitingRefill,
    }
}

/// The state a stored record names.
pub(super) fn state_of(state: &StateV1) -> Result<State, store::Error> {
    Ok(match state {
        StateV1::Registered => State::Registered,
        StateV1::Accepted(p) => State::Accepted { pharmacy: code(p)? },
        StateV1::Dispensed(p) => State::Dispensed { pharmacy: code(p)? },
        StateV1::Cancelled => State::Cancelled,
        StateV1::Expired => State::Expired,
        StateV1::AwaitingRefill => State::AwaitingRefill,
    })
}

pub(super) fn corrupt(what: &str) -> store::Error {
    store::Error::Corrupt(what.to_owned())
}

pub(super) fn code(s: &str) -> Result<InstitutionCode, store::Error> {
    s.parse().map_err(|_| corrupt("institution code"))
}

pub(super) fn date(s: &str) -> Result<JapanDate, store::Error> {
    s.parse().map_err(|_| corrupt("date"))
}

/// A stored prescription with its lifecycle decoded.
pub(super) struct Stored {
    pub(super) record: PrescriptionV3,
    pub(super) lifecycle: Lifecycle,
}

pub(super) fn window_of(w: &RefillWindowV1) -> Result<RefillWindow, store::Error> {
    Ok(RefillWindow {
        planned: date(&w.planned)?,
        from: date(&w.from)?,
        until: date(&w.until)?,
    })
}

impl Stored {
    pub(super) fn load(tx: &dyn Txn, id: &str) -> Result<Option<Stored>, store::Error> {
        let Some(bytes) = tx.get(Table::Prescriptions, prescription_key(id))? else {
            return Ok(None);
        };
        let record = decode::<PrescriptionRecord>(&bytes)?.current();
        let state = state_of(&record.state)?;
        let lifecycle = Lifecycle {
            state,
            usable_through: date(&record.usable_through)?,
            returned_by: record.returned_by.as_deref().map(code).transpose()?,
            uses: record.refill_count,
            records: record.records,
            refill_window: record.refill_window.as_ref().map(window_of).transpose()?,
        };
        Ok(Some(Stored { record, lifecycle }))
    }

    /// The prescription an index entry (`table`, `key` → id) names; none without the entry, and
    /// corrupt if the entry names no prescription.
    pub(super) fn indexed(
        tx: &dyn Txn,
        table: Table,
        key: &[u8],
    ) -> Result<Option<Stored>, store::Error> {
        let Some(id) = tx.get(table, key)? else {
            return Ok(None);
        };
        let id = String::from_utf8(id).map_err(|_| corrupt("prescription id"))?;
        Stored::load(tx, &id)?
            .ok_or_else(|| corrupt("index without prescription"))
            .map(Some)
    }

    /// Applies `transition`, keeps the indexes of active prescriptions (and the medication
    /// history) in step, and writes (the patient column under `pseudonyms`).
    pub(super) fn apply(
        mut self,
        tx: &mut dyn Txn,
        transition: Transition,
        today: JapanDate,
        now_ms: i64,
        pseudonyms: &Pseudonyms,
    ) -> Result<State, store::Error> {
        let was_active = self.lifecycle.state.is_active();
        let before = self.lifecycle.state.clone();
        let recorded = matches!(transition, Transition::Recorded { .. });
        self.lifecycle.apply(transition);
        let state = self.lifecycle.state.clone();
        let life = &self.lifecycle;
        let r = &mut self.record;
        let patient = pseudonyms.in_keys(&r.patient_key);
        r.state = state_v1(&state);
        r.returned_by = life.returned_by.as_ref().map(ToString::to_string);
        r.records = life.records;
        if recorded {
            r.last_record_at_ms = Some(now_ms);
        }
        if let (State::AwaitingRefill, Some(w)) = (&state, life.refill_window)
            && r.refill_window.as_ref().map(|old| old.until.as_str()) != Some(&w.until.to_string())
        {
            r.refill_window = Some(RefillWindowV1 {
                planned: w.planned.to_string(),
                from: w.from.to_string(),
                until: w.until.to_string(),
            });
            tx.put(Table::Meta, &expiry_key(&w.until.to_string(), &r.id), b"");
        }
        if matches!(state, State::Accepted { .. }) {
            tx.put(Table::Meta, &accepted_key(&r.id), b"");
        } else {
            tx.delete(Table::Meta, &accepted_key(&r.id));
        }
        match state {
            State::Accepted { .. } if r.accepted_on.is_none() => {
                r.accepted_on = Some(today.to_string());
                r.accepted_at_ms = Some(now_ms);
                r.last_record_at_ms = None;
            }
            State::Accepted { .. } | State::Dispensed { .. } => {}
            _ => {
                r.accepted_on = None;
                r.accepted_at_ms = None;
            }
        }
        if was_active && !state.is_active() {
            // Past its last usable day the number was free for the patient's next prescription
            // (allocate_exchange_number): the entry goes only while it still names this one.
            let exchange = exchange_key(&patient, r.exchange_number);
            if tx.get(Table::ByExchange, &exchange)?.as_deref() == Some(r.id.as_bytes()) {
                tx.delete(Table::ByExchange, &exchange);
            }
            tx.delete(Table::Meta, &expiry_key(&r.usable_through, &r.id));
            if let Some(w) = &r.refill_window {
                tx.delete(Table::Meta, &expiry_key(&w.until, &r.id));
            }
            clinical::unindex_prescription(tx, &patient, &r.id, today)?;
        }
        put_prescription(tx, r, &patient);
        let kind = match &state {
            _ if recorded => EventKindV1::DispensingRecorded,
            State::Accepted { .. } => EventKindV1::Accepted,
            State::Registered | State::AwaitingRefill => EventKindV1::Returned,
            State::Cancelled => EventKindV1::Cancelled,
            State::Expired => EventKindV1::Expired,
            State::Dispensed { .. } => EventKindV1::DispensingRecorded,
        };
        let pharmacy = match (&state, &before) {
            (State::Accepted { pharmacy } | State::Dispensed { pharmacy }, _)
            | (_, State::Accepted { pharmacy }) => Some(pharmacy.to_string()),
            _ => None,
        };
        let record_number = recorded.then_some(r.records);
        events::append(tx, r, kind, pharmacy, record_number, now_ms)?;
        Ok(state)
    }

    /// The prescription's lines, from its signed content.
    pub(super) fn lines(&self) -> Result<Vec<RxLine>, store::Error> {
        let document = Prescription::decode(&self.record.content[..])
            .map_err(|_| corrupt("stored prescription content"))?;
        PrescriptionFacts::try_from(&document)
            .map(|facts| facts.lines)
            .map_err(|_| corrupt("stored prescription content"))
    }
}

/// A dispensing record as the prescriber sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispensingSummary {
    pub record_number: u32,
    pub pharmacy: String,
    pub dispensing_date: String,
    pub is_final: bool,
    pub important_information: bool,
    pub important_message: String,
    pub content: Vec<u8>,
    pub cms_signature: Vec<u8>,
    /// When the gateway received it.
    pub received_at_ms: i64,
}

impl DispensingSummary {
    /// The summary of a stored record, its signature restored.
    pub(super) fn of(tx: &dyn Txn, d: DispensingV2) -> Result<Self, store::Error> {
        Ok(DispensingSummary {
            cms_signature: signatures::restore(tx, &d.cms)?,
            record_number: d.record_number,
            pharmacy: d.pharmacy,
            dispensing_date: d.dispensing_date,
            is_final: d.is_final,
            important_information: d.important_information,
            important_message: d.important_message,
            content: d.content.to_vec(),
            received_at_ms: d.received_at_ms,
        })
    }
}

/// What the dispensing records of a prescription have given, line by line.
#[derive(Debug, Default)]
pub(super) struct LineProgress {
    pub(super) complete: BTreeSet<u32>,
    pub(super) partial: BTreeSet<u32>,
}

impl LineProgress {
    /// From the prescription's registered dispensing records.
    pub(super) fn of(tx: &dyn Txn, id: &str) -> Result<LineProgress, store::Error> {
        Ok(Self::with_records(tx, id)?.0)
    }

    /// The progress and the stored records it comes from, in record-number order.
    pub(super) fn with_records(
        tx: &dyn Txn,
        id: &str,
    ) -> Result<(LineProgress, Vec<DispensingV2>), store::Error> {
        let mut progress = LineProgress::default();
        let mut records = Vec::new();
        for (_, v) in tx.scan_prefix(Table::Dispensings, &dispensings_of(id), usize::MAX)? {
            let d = decode::<StoredDispensingRecord>(&v)?.current();
            let document = DispensingRecord::decode(&d.content[..])
                .map_err(|_| corrupt("stored dispensing record"))?;
            let facts = DispensingFacts::try_from(&document)
                .map_err(|_| corrupt("stored dispensing record"))?;
            progress.add(&facts.lines);
            records.push(d);
        }
        Ok((progress, records))
    }

    pub(super) fn add(&mut self, lines: &[DispensedLineFacts]) {
        for l in lines {
            if l.complete {
                self.complete.insert(l.prescription_line);
            } else {
                self.partial.insert(l.prescription_line);
            }
        }
    }

    pub(super) fn all_complete(&self, line_count: usize) -> bool {
        (0..line_count as u32).all(|i| self.complete.contains(&i))
    }

    /// Each prescription line's state: given whole, given in part, still owed, or — once the
    /// prescription is closed — not dispensed.
    pub(super) fn states(&self, line_count: u32, open: bool) -> Vec<LineState> {
        (0..line_count)
            .map(|i| {
                if self.complete.contains(&i) {
                    LineState::Dispensed
                } else if self.partial.contains(&i) {
                    LineState::Partial
                } else if open {
                    LineState::Owing
                } else {
                    LineState::NotDispensed
                }
            })
            .collect()
    }
}

pub(super) fn status_of(tx: &dyn Txn, stored: Stored, today: JapanDate) -> Result<Status, Error> {
    let r = &stored.record;
    let (progress, records) = LineProgress::with_records(tx, &r.id)?;
    let dispensings = records
        .into_iter()
        .map(|d| DispensingSummary::of(tx, d))
        .collect::<Result<_, _>>()?;
    let state = stored.lifecycle.state_on(today);
    let life = &stored.lifecycle;
    let refill = life.uses > 1;
    Ok(Status {
        id: r.id.clone(),
        institution: r.institution.clone(),
        number: r.number.clone(),
        lines: progress.states(r.line_count, state.is_active()),
        uses: life.uses,
        uses_dispensed: if refill {
            life.records
        } else {
            u32::from(matches!(state, State::Dispensed { .. }))
        },
        next_use: life
            .refill_window
            .filter(|_| state == State::AwaitingRefill),
        state,
        issue_date: r.issue_date.clone(),
        usable_through: r.usable_through.clone(),
        dispensings,
    })
}

pub(super) fn own_prescription(tx: &dyn Txn, id: &str, caller_code: &str) -> Result<Stored, Error> {
    let stored = Stored::load(tx, id)?.ok_or(Error::NotFound)?;
    if stored.record.institution != caller_code {
        return Err(Error::PermissionDenied(
            "the prescription belongs to another institution",
        ));
    }
    Ok(stored)
}

/// The active prescription with this patient (by pseudonym) and exchange number. A wrong
/// number and a wrong patient are the same NOT_FOUND.
pub(super) fn find_active(
    tx: &dyn Txn,
    patient: &PatientPseudonym,
    exchange_number: u32,
) -> Result<Stored, Error> {
    let key = exchange_key(patient, exchange_number);
    Stored::indexed(tx, Table::ByExchange, &key)?.ok_or(Error::NotFound)
}
