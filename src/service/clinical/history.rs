//! The index of every patient's medication history (`Table::Medications`): one record per
//! patient, under the patient's pseudonym, so that a check reads one value. Its entries:
//! - an undispensed line of a REGISTERED or ACCEPTED prescription: added at registration,
//!   removed when the line is dispensed or the prescription leaves REGISTERED/ACCEPTED, so these
//!   never accumulate;
//! - a dispensed line, with the last day it can be active (assuming at least the 14 days of an
//!   external or as-needed drug): a check skips those past, and every write of the record drops
//!   them, so the record holds only what may still be active, never the patient's older past.
//!
//! Its bounds (per institution, per record) are checked before a registration writes.

use crate::{
    domain::{
        checks::{
            DrugCode, Medication, Source, SourceId, SourceKind, Supply, history::ASSUMED_DAYS,
        },
        hash,
        ids::InstitutionCode,
        prescription::usable_through,
        rx::{DispensedLineFacts, RxLine},
        time::JapanDate,
    },
    limits::Limits,
    store::{self, Table, Txn},
};

use crate::service::{
    Error,
    pseudonym::PatientPseudonym,
    records::{
        DrugKindV1, HistoryEntryV1, HistoryEntryV2, HistoryRecord, SlotV1, SlotV2, SupplyV1,
        decode, encode,
    },
    schema::history_key,
    stored::{Stored, corrupt},
};

/// Refuses a registration of `lines` more undispensed lines by `institution` that would take
/// the patient's history past either bound. Called before the registration writes anything.
pub fn admit_prescribed(
    history: &PatientHistory,
    institution: &str,
    lines: usize,
    limits: &Limits,
) -> Result<(), Error> {
    let held = held_by(&history.0, institution_number(institution)?);
    within_institution_bound(held + lines, limits)?;
    within_record_bound(history.0.len() + lines, limits)
}

/// The entries that `institution` holds in a patient's record: a clinic's undispensed lines, a
/// pharmacy's dispensed ones.
pub(super) fn held_by(entries: &[HistoryEntryV2], institution: u64) -> usize {
    entries
        .iter()
        .filter(|e| e.source_code == institution)
        .count()
}

pub(super) fn within_institution_bound(held: usize, limits: &Limits) -> Result<(), Error> {
    if held > limits.active_lines_per_institution {
        return Err(Error::ResourceExhausted(
            "limits.active_lines_per_institution: this institution's active lines for the patient",
        ));
    }
    Ok(())
}

pub(super) fn within_record_bound(entries: usize, limits: &Limits) -> Result<(), Error> {
    if entries > limits.history_entries_per_patient {
        return Err(Error::ResourceExhausted(
            "limits.history_entries_per_patient: the patient's active history",
        ));
    }
    Ok(())
}

pub(super) fn supply_v1(supply: Supply) -> SupplyV1 {
    match supply {
        Supply::Days(n) => SupplyV1::Days(n),
        Supply::AsNeeded => SupplyV1::AsNeeded,
        Supply::External => SupplyV1::External,
    }
}

pub(super) fn drug_v1(drug: &DrugCode) -> (DrugKindV1, String) {
    let kind = match drug {
        DrugCode::Receipt(_) => DrugKindV1::Receipt,
        DrugCode::Yj(_) => DrugKindV1::Yj,
        DrugCode::Generic(_) => DrugKindV1::Generic,
    };
    (kind, drug.as_str().to_owned())
}

/// The prescription being registered, as history: one entry per line.
pub struct Prescribed<'a> {
    pub patient: &'a PatientPseudonym,
    pub id: &'a str,
    pub institution: &'a str,
    pub issue_date: JapanDate,
    pub lines: &'a [RxLine],
}

/// The order of a patient's entries, which is the order the checks take them in: the undispensed
/// lines by prescription and line, then the dispensed lines by last day, prescription, record
/// and line.
pub(super) fn order(entry: &HistoryEntryV2) -> (bool, i32, [u8; 16], u32, u32) {
    let id = entry.prescription_id;
    match entry.slot {
        SlotV2::Undispensed { line } => (false, 0, id, 0, line),
        SlotV2::Dispensed {
            last_day,
            record,
            line,
        } => (true, last_day, id, record, line),
    }
}

pub(super) fn is_dispensed(entry: &HistoryEntryV2) -> bool {
    matches!(entry.slot, SlotV2::Dispensed { .. })
}

/// A dispensed line whose last possible day lies before `today`: no check reads it.
pub(super) fn is_past(entry: &HistoryEntryV2, today: JapanDate) -> bool {
    matches!(entry.slot, SlotV2::Dispensed { last_day, .. } if last_day < today.days_since_epoch())
}

/// The line's id in the patient's history, which finding ids are made from.
pub(super) fn source_id(entry: &HistoryEntryV2) -> SourceId {
    let (record, line) = match entry.slot {
        SlotV2::Undispensed { line } => (None, line),
        SlotV2::Dispensed { record, line, .. } => (Some(record), line),
    };
    SourceId {
        prescription: entry.prescription_id,
        record,
        line,
    }
}

/// A prescription id as a history entry keeps it.
pub(super) fn id_bytes(id: &str) -> Result<[u8; 16], store::Error> {
    hash::from_hex(id).ok_or_else(|| corrupt("prescription id"))
}

/// An institution code as a history entry keeps it.
pub(super) fn institution_number(code: &str) -> Result<u64, store::Error> {
    code.parse::<InstitutionCode>()
        .map(|c| c.number())
        .map_err(|_| corrupt("medication institution"))
}

pub(super) fn institution_code(number: u64) -> Result<InstitutionCode, store::Error> {
    InstitutionCode::from_number(number).ok_or_else(|| corrupt("medication institution"))
}

/// A version-1 entry as version 2. What version 2 derives (whether the line was dispensed, its
/// source id) must agree with what version 1 kept: otherwise the record is corrupt.
pub(super) fn entry_v2(entry: HistoryEntryV1) -> Result<HistoryEntryV2, store::Error> {
    let HistoryEntryV1 { slot, medication } = entry;
    let day = |text: &str| {
        text.parse::<JapanDate>()
            .map(JapanDate::days_since_epoch)
            .map_err(|_| corrupt("medication date"))
    };
    let slot = match slot {
        SlotV1::Undispensed { line } => SlotV2::Undispensed { line },
        SlotV1::Dispensed {
            last_day,
            record,
            line,
        } => SlotV2::Dispensed {
            last_day: day(&last_day)?,
            record,
            line,
        },
    };
    let converted = HistoryEntryV2 {
        slot,
        prescription_id: id_bytes(&medication.prescription_id)?,
        drug_kind: medication.drug_kind,
        code: medication.code,
        start: day(&medication.start)?,
        supply: medication.supply,
        source_code: institution_number(&medication.source_code)?,
        prescriber: institution_number(&medication.prescriber)?,
    };
    if medication.dispensed != is_dispensed(&converted)
        || medication.source_id != source_id(&converted).to_string()
    {
        return Err(corrupt("history entry"));
    }
    Ok(converted)
}

/// A patient's history record, as a transaction read it: the check reads it, and the
/// registration that follows adds to it, without reading it again.
pub struct PatientHistory(pub(super) Vec<HistoryEntryV2>);

impl PatientHistory {
    pub fn read(tx: &dyn Txn, patient: &PatientPseudonym) -> Result<PatientHistory, store::Error> {
        load(tx, patient).map(PatientHistory)
    }
}

/// The patient's history record (empty if they have none), as version 2.
pub(super) fn load(
    tx: &dyn Txn,
    patient: &PatientPseudonym,
) -> Result<Vec<HistoryEntryV2>, store::Error> {
    match tx.get(Table::Medications, history_key(patient))? {
        Some(bytes) => entries_of(&bytes),
        None => Ok(Vec::new()),
    }
}

/// The entries of a stored history record, as version 2.
pub(super) fn entries_of(bytes: &[u8]) -> Result<Vec<HistoryEntryV2>, store::Error> {
    match decode(bytes)? {
        HistoryRecord::V2(entries) => Ok(entries),
        // Both versions order entries alike: the day as text or as a number, the id as hex
        // digits or as their bytes.
        HistoryRecord::V1(entries) => entries.into_iter().map(entry_v2).collect(),
    }
}

/// Adds `entry` to `entries` (kept in [`order`]) in its place.
pub(super) fn insert(entries: &mut Vec<HistoryEntryV2>, entry: HistoryEntryV2) {
    let at = entries.partition_point(|e| order(e) <= order(&entry));
    entries.insert(at, entry);
}

/// Writes the patient's history record (its entries in [`order`], as [`insert`] keeps them)
/// and, given `today`, without the dispensed lines that can no longer be active (no check reads
/// them again).
pub(super) fn save(
    tx: &mut dyn Txn,
    patient: &PatientPseudonym,
    mut entries: Vec<HistoryEntryV2>,
    today: Option<JapanDate>,
) {
    if let Some(today) = today {
        entries.retain(|e| !is_past(e, today));
    }
    debug_assert!(entries.is_sorted_by(|a, b| order(a) <= order(b)));
    if entries.is_empty() {
        tx.delete(Table::Medications, history_key(patient));
    } else {
        tx.put(
            Table::Medications,
            history_key(patient),
            &encode(&HistoryRecord::V2(entries)),
        );
    }
}

/// Adds the undispensed lines of a newly registered prescription to the patient's history, as
/// this transaction read it.
pub fn index_prescription(
    tx: &mut dyn Txn,
    history: PatientHistory,
    p: &Prescribed<'_>,
    today: JapanDate,
) -> Result<(), store::Error> {
    let PatientHistory(mut entries) = history;
    let prescription_id = id_bytes(p.id)?;
    let institution = institution_number(p.institution)?;
    for (i, line) in p.lines.iter().enumerate() {
        let (drug_kind, code) = drug_v1(&line.drug);
        let entry = HistoryEntryV2 {
            slot: SlotV2::Undispensed { line: i as u32 },
            prescription_id,
            drug_kind,
            code,
            start: p.issue_date.days_since_epoch(),
            supply: supply_v1(line.supply),
            source_code: institution,
            prescriber: institution,
        };
        insert(&mut entries, entry);
    }
    save(tx, p.patient, entries, Some(today));
    Ok(())
}

/// Drops every undispensed line of a prescription that has left REGISTERED/ACCEPTED.
pub fn unindex_prescription(
    tx: &mut dyn Txn,
    patient: &PatientPseudonym,
    id: &str,
    today: JapanDate,
) -> Result<(), store::Error> {
    let id = id_bytes(id)?;
    let mut entries = load(tx, patient)?;
    let before = entries.len();
    entries.retain(|e| is_dispensed(e) || e.prescription_id != id);
    if entries.len() != before {
        save(tx, patient, entries, Some(today));
    }
    Ok(())
}

/// A dispensing record, as history.
pub struct Dispensed<'a> {
    pub patient: &'a PatientPseudonym,
    pub prescription_id: &'a str,
    pub prescriber: &'a str,
    pub pharmacy: &'a str,
    pub date: JapanDate,
    pub record_number: u32,
    /// The prescription's lines (the dosing of a line dispensed without days).
    pub prescribed: &'a [RxLine],
    pub lines: &'a [DispensedLineFacts],
}

/// Adds the lines a dispensing record gave, in place of the prescription lines they fill: a
/// dispensed line counts once, as what was actually dispensed, from the dispensing date.
/// Refused, before anything is written, if the pharmacy would hold more of the patient's lines
/// than its bound; never for the record's own bound: a dispensing is a legal record whose drugs
/// the checks must see, so a record it takes past the bound is kept whole and checked as
/// not-checked. (It cannot grow far: every entry comes from a registration the bound admitted,
/// and a prescribed line gives at most two dispensed ones.)
pub fn index_dispensing(
    tx: &mut dyn Txn,
    d: &Dispensed<'_>,
    today: JapanDate,
    limits: &Limits,
) -> Result<(), Error> {
    let prescription_id = id_bytes(d.prescription_id)?;
    let (pharmacy, prescriber) = (
        institution_number(d.pharmacy)?,
        institution_number(d.prescriber)?,
    );
    let mut entries = load(tx, d.patient)?;
    entries.retain(|e| match e.slot {
        SlotV2::Undispensed { line } => {
            e.prescription_id != prescription_id
                || !d.lines.iter().any(|l| l.prescription_line == line)
        }
        SlotV2::Dispensed { .. } => true,
    });
    for (i, line) in d.lines.iter().enumerate() {
        let supply = match line.days_supplied {
            0 => d
                .prescribed
                .get(line.prescription_line as usize)
                .map_or(Supply::AsNeeded, |l| l.supply),
            n => Supply::Days(n),
        };
        let bound_days = match supply {
            Supply::Days(n) => n.max(ASSUMED_DAYS),
            Supply::AsNeeded | Supply::External => ASSUMED_DAYS,
        };
        // Days are bounded at the edge (365); a value past i32 is refused, never wrapped.
        let bound_days = i32::try_from(bound_days).map_err(|_| corrupt("days supplied"))?;
        let last_day = d.date.add_days(bound_days - 1);
        let (drug_kind, code) = drug_v1(&line.drug);
        let entry = HistoryEntryV2 {
            slot: SlotV2::Dispensed {
                last_day: last_day.days_since_epoch(),
                record: d.record_number,
                line: i as u32,
            },
            prescription_id,
            drug_kind,
            code,
            start: d.date.days_since_epoch(),
            supply: supply_v1(supply),
            source_code: pharmacy,
            prescriber,
        };
        insert(&mut entries, entry);
    }
    entries.retain(|e| !is_past(e, today));
    within_institution_bound(held_by(&entries, pharmacy), limits)?;
    save(tx, d.patient, entries, Some(today));
    Ok(())
}

/// The patient's history that may be active on `today`: the undispensed lines of prescriptions
/// still REGISTERED or ACCEPTED today (one past its last usable day counts as expired before the
/// sweep writes it), and the dispensed lines whose last possible day is today or later; never
/// those of `exclude`.
pub(super) fn active_medications(
    tx: &dyn Txn,
    entries: &[HistoryEntryV2],
    today: JapanDate,
    exclude: Option<&str>,
) -> Result<Vec<Medication>, store::Error> {
    let exclude = exclude.map(id_bytes).transpose()?;
    let mut out = Vec::with_capacity(entries.len());
    let mut active: Option<([u8; 16], bool)> = None;
    let (dispensed, undispensed): (Vec<_>, Vec<_>) = entries
        .iter()
        .filter(|e| exclude != Some(e.prescription_id))
        .partition(|e| is_dispensed(e));
    for entry in undispensed {
        let issued = JapanDate::from_days_since_epoch(entry.start);
        // An undispensed line is kept only while its prescription is REGISTERED or ACCEPTED, and
        // none expires within 4 days of its issue (the 4-day rule is the shortest usable
        // period): only an older one needs its state read. Entries of one prescription are
        // adjacent: its state is read once.
        let is_active = match active {
            _ if today <= usable_through(issued, None) => true,
            Some((id, is_active)) if id == entry.prescription_id => is_active,
            _ => {
                let is_active = Stored::load(tx, &hash::hex(&entry.prescription_id))?
                    .is_some_and(|s| s.lifecycle.state_on(today).is_active());
                active = Some((entry.prescription_id, is_active));
                is_active
            }
        };
        if is_active {
            out.push(medication(entry)?);
        }
    }
    for entry in dispensed.into_iter().filter(|e| !is_past(e, today)) {
        out.push(medication(entry)?);
    }
    Ok(out)
}

pub(super) fn medication(entry: &HistoryEntryV2) -> Result<Medication, store::Error> {
    let date = JapanDate::from_days_since_epoch(entry.start);
    let code = entry.code.clone();
    Ok(Medication {
        drug: match entry.drug_kind {
            DrugKindV1::Receipt => DrugCode::Receipt(code),
            DrugKindV1::Yj => DrugCode::Yj(code),
            DrugKindV1::Generic => DrugCode::Generic(code),
        },
        start: date,
        supply: match entry.supply {
            SupplyV1::Days(n) => Supply::Days(n),
            SupplyV1::AsNeeded => Supply::AsNeeded,
            SupplyV1::External => Supply::External,
        },
        source: Source {
            kind: if is_dispensed(entry) {
                SourceKind::Dispensing
            } else {
                SourceKind::Prescription
            },
            code: institution_code(entry.source_code)?,
            date,
        },
        prescriber: Some(institution_code(entry.prescriber)?),
        source_id: source_id(entry),
    })
}
