//! The clinical checks inside the gateway: the drug master and contraindication table in force,
//! the index of every patient's medication history (what a check reads), the check policy, and
//! the records a check leaves behind (the consent asserted, the findings acknowledged).
//!
//! The history index (`Table::Medications`): one record per patient, under the canonical
//! patient key, so that a check reads one value (the per-line layout of earlier versions is
//! moved into it at start-up by [`migrate_history`]). Its entries:
//! - an undispensed line of a REGISTERED or ACCEPTED prescription: added at registration,
//!   removed when the line is dispensed or the prescription leaves REGISTERED/ACCEPTED, so these
//!   never accumulate;
//! - a dispensed line, with the last day it can be active (assuming at least the 14 days of an
//!   external or as-needed drug): a check skips those past, and every write of the record drops
//!   them, so the record holds only what may still be active, never the patient's older past.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    domain::{
        checks::{
            self, CheckInput, CheckOptions, Consent, ContraindicationTable, DrugCode, Finding,
            Indicator, Medication, NewLine, Source, SourceId, SourceKind, Supply,
            history::ASSUMED_DAYS,
        },
        hash,
        ids::InstitutionCode,
        master::Catalog,
        prescription::usable_through,
        rx::{DispensedLineFacts, RxLine},
        time::JapanDate,
    },
    limits::Limits,
    masters::{LoadReport, Sources},
    metrics::Metrics,
    store::{self, Store, Table, Txn},
};

use super::{
    Caller, Error, Stored, corrupt, key,
    records::{
        CheckBudgetRecord, CheckBudgetV1, ConsentMethodV1, ConsentRecord, ConsentV1, DrugKindV1,
        HistoryEntryV1, HistoryEntryV2, HistoryRecord, MedicationRecord, SlotV1, SlotV2, SupplyV1,
        decode, encode,
    },
};

/// The drug master and the contraindication table a check runs on.
#[derive(Debug)]
pub struct Clinical {
    pub catalog: Catalog,
    pub table: ContraindicationTable,
    /// The files they were built from (an import changes these and rebuilds).
    pub sources: Sources,
    /// What the build found.
    pub report: LoadReport,
    /// The number of files imported over the shipped data (0: the shipped data as it is).
    pub version: u64,
}

/// What a registration does with a critical finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCritical {
    /// Refuse unless every critical finding is acknowledged with a reason (rxgate's default, a
    /// deliberate deviation from the national service).
    RequireOverride,
    /// Register and return the findings, as the national service does.
    Warn,
}

/// The switches a request may set; unset ones take the configured defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestedOptions {
    pub include_same_institution: Option<bool>,
    pub caution: Option<bool>,
    pub same_class: Option<bool>,
    pub within_prescription: Option<bool>,
}

impl RequestedOptions {
    pub fn over(self, defaults: CheckOptions) -> CheckOptions {
        CheckOptions {
            include_same_institution: self
                .include_same_institution
                .unwrap_or(defaults.include_same_institution),
            caution: self.caution.unwrap_or(defaults.caution),
            same_class: self.same_class.unwrap_or(defaults.same_class),
            within_prescription: self
                .within_prescription
                .unwrap_or(defaults.within_prescription),
        }
    }
}

/// What a check request states beside its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckRequest {
    pub consent: Consent,
    pub options: RequestedOptions,
}

/// A prescriber's acknowledgement of a finding, with the reason to go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledgement {
    pub finding_id: String,
    pub reason: String,
}

/// The critical findings that no acknowledgement with a reason covers.
pub fn unacknowledged(findings: &[Finding], acks: &[Acknowledgement]) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f.indicator == Indicator::Critical)
        .filter(|f| {
            !acks
                .iter()
                .any(|a| a.finding_id == f.id && !a.reason.trim().is_empty())
        })
        .map(|f| f.id.clone())
        .collect()
}

/// The drugs of a prescription's (or a dispensing's) lines as the checks take them, numbered
/// from 0.
pub fn new_lines<'a>(drugs: impl Iterator<Item = &'a DrugCode>) -> Vec<NewLine> {
    drugs
        .enumerate()
        .map(|(i, drug)| NewLine {
            line: i,
            drug: drug.clone(),
        })
        .collect()
}

/// Who checks what, on which day, for which patient.
pub struct Subject<'a> {
    pub caller: &'a InstitutionCode,
    pub patient: &'a str,
    pub today: JapanDate,
    pub lines: &'a [NewLine],
    /// The prescription under check: its own entries never count.
    pub exclude: Option<&'a str>,
}

/// The findings of a check as answered: every critical finding, and the others up to the
/// configured number.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Findings {
    pub shown: Vec<Finding>,
    /// The warning and info findings left out.
    pub omitted: u32,
}

impl Findings {
    /// Keeps every critical finding and `max` others, warnings before info (so that findings of
    /// lesser weight, which a history's unknown codes can multiply, never push a warning out),
    /// each in their order.
    pub fn capped(findings: Vec<Finding>, max: usize) -> Findings {
        let warnings = findings
            .iter()
            .filter(|f| f.indicator == Indicator::Warning)
            .count();
        let (mut warnings_room, mut info_room) = (max, max.saturating_sub(warnings));
        let mut omitted = 0u32;
        let shown = findings
            .into_iter()
            .filter(|f| {
                let room = match f.indicator {
                    Indicator::Critical => return true,
                    Indicator::Warning => &mut warnings_room,
                    Indicator::Info => &mut info_room,
                };
                let keep = *room > 0;
                *room = room.saturating_sub(1);
                omitted += u32::from(!keep);
                keep
            })
            .collect();
        Findings { shown, omitted }
    }
}

/// The data in force for a check, where its time is counted, and the bounds it keeps.
pub struct Checker {
    pub clinical: Arc<Clinical>,
    pub metrics: Arc<Metrics>,
    /// Read: `history_entries_per_patient` and `findings_per_answer`.
    pub limits: Limits,
}

impl Checker {
    /// Reads the patient's history and runs the checks of `subject` against it.
    pub fn run(
        &self,
        tx: &dyn Txn,
        subject: &Subject<'_>,
        options: &CheckOptions,
        consent: Consent,
    ) -> Result<Findings, store::Error> {
        let history = PatientHistory::read(tx, subject.patient)?;
        self.run_on(tx, subject, &history, options, consent)
    }

    /// Runs the checks of `subject` against the patient's history as already read, masks the
    /// findings as the consent requires and caps the non-critical ones. A history over the
    /// configured size is not read in part: every line gets a critical not-checked finding.
    pub fn run_on(
        &self,
        tx: &dyn Txn,
        subject: &Subject<'_>,
        history: &PatientHistory,
        options: &CheckOptions,
        consent: Consent,
    ) -> Result<Findings, store::Error> {
        let started = Instant::now();
        let findings = if history.0.len() > self.limits.history_entries_per_patient {
            checks::not_checked_history_too_large(subject.lines)
        } else {
            let history = active_medications(tx, &history.0, subject.today, subject.exclude)?;
            let input = CheckInput {
                caller: subject.caller,
                today: subject.today,
                new_lines: subject.lines,
                history: &history,
            };
            let c = &self.clinical;
            checks::check(&input, &c.catalog, &c.table, options)
        };
        let findings = checks::mask(findings, consent);
        self.metrics.check.observe_duration(started.elapsed());
        Ok(Findings::capped(findings, self.limits.findings_per_answer))
    }
}

/// Whether a check fitted the patient's check budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// It fitted, and its lines are spent.
    Within,
    /// The window's lines are spent; nothing was written.
    Spent,
}

/// Spends `lines` of the patient's check budget, kept in the store so that it holds across
/// institutions, connections and restarts. Every check spends it; what a spent budget means is
/// the caller's: CheckPrescription and CheckDispensing are refused ([`budget_refusal`]), while a
/// registration or receipt is never refused for it but answers its findings masked, as without
/// consent, so that neither is an oracle the budget does not bound. Writes only when within.
pub fn spend_check_budget(
    tx: &mut dyn Txn,
    patient: &str,
    lines: usize,
    now_ms: i64,
    limits: &Limits,
) -> Result<Budget, store::Error> {
    let budget_key = key(&[b"check-budget", patient.as_bytes()]);
    let window_ms = (limits.patient_check_window_secs * 1_000) as i64;
    let spent = match tx.get(Table::Clinical, &budget_key)? {
        Some(bytes) => match decode(&bytes)? {
            CheckBudgetRecord::V1(b) => Some(b),
        },
        None => None,
    };
    // No window yet, one that has ended, or one that starts after now (a clock set back):
    // a new window starts.
    let spent = spent
        .filter(|b| {
            now_ms >= b.window_start_ms && now_ms < b.window_start_ms.saturating_add(window_ms)
        })
        .unwrap_or(CheckBudgetV1 {
            window_start_ms: now_ms,
            lines: 0,
        });
    let after = spent.lines as usize + lines;
    if after > limits.patient_check_lines {
        return Ok(Budget::Spent);
    }
    let record = CheckBudgetRecord::V1(CheckBudgetV1 {
        window_start_ms: spent.window_start_ms,
        lines: after as u32,
    });
    tx.put(Table::Clinical, &budget_key, &encode(&record));
    Ok(Budget::Within)
}

/// The refusal of a pre-check or dispensing check over the patient's budget. It asks the caller
/// to wait the whole window, not until the current one ends: when that is would tell the caller
/// when another institution last checked the patient.
pub fn budget_refusal(limits: &Limits) -> Error {
    Error::RateLimited {
        limit: "limits.patient_check_lines: lines checked for one patient in the window",
        retry_after: Duration::from_secs(limits.patient_check_window_secs),
    }
}

/// The consent a registration or receipt answers under: the one asserted while the patient's
/// check budget lasts, none once it is spent.
pub fn budgeted_consent(budget: Budget, asserted: Consent) -> Consent {
    match budget {
        Budget::Within => asserted,
        Budget::Spent => Consent::None,
    }
}

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
fn held_by(entries: &[HistoryEntryV2], institution: u64) -> usize {
    entries
        .iter()
        .filter(|e| e.source_code == institution)
        .count()
}

fn within_institution_bound(held: usize, limits: &Limits) -> Result<(), Error> {
    if held > limits.active_lines_per_institution {
        return Err(Error::ResourceExhausted(
            "limits.active_lines_per_institution: this institution's active lines for the patient",
        ));
    }
    Ok(())
}

fn within_record_bound(entries: usize, limits: &Limits) -> Result<(), Error> {
    if entries > limits.history_entries_per_patient {
        return Err(Error::ResourceExhausted(
            "limits.history_entries_per_patient: the patient's active history",
        ));
    }
    Ok(())
}

/// Records the consent an institution asserted for a check.
pub fn record_consent(
    tx: &mut dyn Txn,
    patient: &str,
    caller: &Caller,
    consent: Consent,
    time_ms: i64,
    action: &str,
    prescription_id: Option<&str>,
) -> Result<(), store::Error> {
    let sequence = tx.next_sequence("consent")?;
    let record = ConsentRecord::V1(ConsentV1 {
        time_ms,
        institution_kind: caller.institution.kind.to_string(),
        institution_code: caller.institution.code.to_string(),
        certificate_sha256: caller.certificate_sha256,
        method: match consent {
            Consent::Card => ConsentMethodV1::Card,
            Consent::Verbal => ConsentMethodV1::Verbal,
            Consent::None => ConsentMethodV1::None,
        },
        action: action.to_owned(),
        prescription_id: prescription_id.map(str::to_owned),
    });
    tx.put(
        Table::Clinical,
        &key(&[b"consent", patient.as_bytes(), &sequence.to_be_bytes()]),
        &encode(&record),
    );
    Ok(())
}

fn supply_v1(supply: Supply) -> SupplyV1 {
    match supply {
        Supply::Days(n) => SupplyV1::Days(n),
        Supply::AsNeeded => SupplyV1::AsNeeded,
        Supply::External => SupplyV1::External,
    }
}

fn drug_v1(drug: &DrugCode) -> (DrugKindV1, String) {
    let kind = match drug {
        DrugCode::Receipt(_) => DrugKindV1::Receipt,
        DrugCode::Yj(_) => DrugKindV1::Yj,
        DrugCode::Generic(_) => DrugKindV1::Generic,
    };
    (kind, drug.as_str().to_owned())
}

/// The prescription being registered, as history: one entry per line.
pub struct Prescribed<'a> {
    pub patient: &'a str,
    pub id: &'a str,
    pub institution: &'a str,
    pub issue_date: JapanDate,
    pub lines: &'a [RxLine],
}

/// The order of a patient's entries, which is the order the checks take them in: the undispensed
/// lines by prescription and line, then the dispensed lines by last day, prescription, record
/// and line.
fn order(entry: &HistoryEntryV2) -> (bool, i32, [u8; 16], u32, u32) {
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

fn is_dispensed(entry: &HistoryEntryV2) -> bool {
    matches!(entry.slot, SlotV2::Dispensed { .. })
}

/// A dispensed line whose last possible day lies before `today`: no check reads it.
fn is_past(entry: &HistoryEntryV2, today: JapanDate) -> bool {
    matches!(entry.slot, SlotV2::Dispensed { last_day, .. } if last_day < today.days_since_epoch())
}

/// The line's id in the patient's history, which finding ids are made from.
fn source_id(entry: &HistoryEntryV2) -> SourceId {
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
fn id_bytes(id: &str) -> Result<[u8; 16], store::Error> {
    hash::from_hex(id).ok_or_else(|| corrupt("prescription id"))
}

/// An institution code as a history entry keeps it.
fn institution_number(code: &str) -> Result<u64, store::Error> {
    code.parse::<InstitutionCode>()
        .map(|c| c.number())
        .map_err(|_| corrupt("medication institution"))
}

fn institution_code(number: u64) -> Result<InstitutionCode, store::Error> {
    InstitutionCode::from_number(number).ok_or_else(|| corrupt("medication institution"))
}

/// A version-1 entry as version 2. What version 2 derives (whether the line was dispensed, its
/// source id) must agree with what version 1 kept: otherwise the record is corrupt.
fn entry_v2(entry: HistoryEntryV1) -> Result<HistoryEntryV2, store::Error> {
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
pub struct PatientHistory(Vec<HistoryEntryV2>);

impl PatientHistory {
    pub fn read(tx: &dyn Txn, patient: &str) -> Result<PatientHistory, store::Error> {
        load(tx, patient).map(PatientHistory)
    }
}

/// The patient's history record (empty if they have none), as version 2.
fn load(tx: &dyn Txn, patient: &str) -> Result<Vec<HistoryEntryV2>, store::Error> {
    let Some(bytes) = tx.get(Table::Medications, patient.as_bytes())? else {
        return Ok(Vec::new());
    };
    match decode(&bytes)? {
        HistoryRecord::V2(entries) => Ok(entries),
        // Both versions order entries alike: the day as text or as a number, the id as hex
        // digits or as their bytes.
        HistoryRecord::V1(entries) => entries.into_iter().map(entry_v2).collect(),
    }
}

/// Adds `entry` to `entries` (kept in [`order`]) in its place.
fn insert(entries: &mut Vec<HistoryEntryV2>, entry: HistoryEntryV2) {
    let at = entries.partition_point(|e| order(e) <= order(&entry));
    entries.insert(at, entry);
}

/// Writes the patient's history record (its entries in [`order`], as [`insert`] keeps them)
/// and, given `today`, without the dispensed lines that can no longer be active (no check reads
/// them again).
fn save(
    tx: &mut dyn Txn,
    patient: &str,
    mut entries: Vec<HistoryEntryV2>,
    today: Option<JapanDate>,
) {
    if let Some(today) = today {
        entries.retain(|e| !is_past(e, today));
    }
    debug_assert!(entries.is_sorted_by(|a, b| order(a) <= order(b)));
    if entries.is_empty() {
        tx.delete(Table::Medications, patient.as_bytes());
    } else {
        tx.put(
            Table::Medications,
            patient.as_bytes(),
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
    patient: &str,
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
    pub patient: &'a str,
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
fn active_medications(
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

/// Marks a store whose history is kept one record per patient (`Table::Meta`).
const HISTORY_LAYOUT_KEY: &[u8] = b"layout/history-per-patient";

/// Old-layout entries moved per transaction by [`migrate_history`].
const MIGRATION_CHUNK: usize = 1_000;

/// The migration logs its progress every this many chunks.
const PROGRESS_EVERY: u64 = 100;

/// Rewrites the history of a store written before the one-record-per-patient layout (one key per
/// line: `patient \0 rx \0 id \0 line` and `patient \0 d \0 last-day \0 id \0 record \0 line`)
/// into one record per patient, a chunk per transaction, and marks the store so that later
/// starts skip it. Returns how many old entries it moved. Safe to interrupt: a chunk moves its
/// entries and deletes their old keys in one transaction, and the next start goes on.
pub async fn migrate_history(store: &Arc<dyn Store>) -> Result<u64, store::Error> {
    let done = store
        .transact(|tx| Ok::<_, store::Error>(tx.get(Table::Meta, HISTORY_LAYOUT_KEY)?.is_some()))
        .await??;
    if done {
        return Ok(0);
    }
    let started = Instant::now();
    let mut from = Vec::new();
    let mut moved = 0;
    for chunk in 1.. {
        let start = std::mem::take(&mut from);
        let (next, n) = store
            .transact(move |tx| migrate_chunk(tx, &start))
            .await??;
        moved += n;
        let Some(next) = next else {
            break;
        };
        from = next;
        if chunk % PROGRESS_EVERY == 0 {
            tracing::info!(entries = moved, "migrating the medication history");
        }
    }
    store
        .transact(|tx| {
            tx.put(Table::Meta, HISTORY_LAYOUT_KEY, b"");
            Ok::<_, store::Error>(())
        })
        .await??;
    if moved > 0 {
        tracing::info!(
            entries = moved,
            millis = started.elapsed().as_millis() as u64,
            "medication history migrated to one record per patient"
        );
    }
    Ok(moved)
}

/// Moves the old-layout entries among the `MIGRATION_CHUNK` keys from `from` on; returns where
/// the next chunk starts (none after the last) and how many entries it moved.
fn migrate_chunk(tx: &mut dyn Txn, from: &[u8]) -> Result<(Option<Vec<u8>>, u64), store::Error> {
    // Keys are patient keys, UTF-8 text that never holds 0xFF.
    let keys = tx.scan_range(Table::Medications, from, &[0xFF], MIGRATION_CHUNK)?;
    let next = match keys.last() {
        Some((last, _)) if keys.len() == MIGRATION_CHUNK => Some([last.as_slice(), &[0]].concat()),
        _ => None,
    };
    let mut by_patient: BTreeMap<String, Vec<HistoryEntryV2>> = BTreeMap::new();
    let mut moved = 0;
    for (k, v) in keys {
        // A patient key never holds 0: a key with one is of the old layout.
        let Some(end) = k.iter().position(|b| *b == 0) else {
            continue;
        };
        let patient = std::str::from_utf8(&k[..end]).map_err(|_| corrupt("history key"))?;
        let MedicationRecord::V1(medication) = decode(&v)?;
        by_patient
            .entry(patient.to_owned())
            .or_default()
            .push(entry_v2(HistoryEntryV1 {
                slot: old_slot(&k[end + 1..])?,
                medication,
            })?);
        tx.delete(Table::Medications, &k);
        moved += 1;
    }
    for (patient, old) in by_patient {
        let mut entries = load(tx, &patient)?;
        for entry in old {
            insert(&mut entries, entry);
        }
        save(tx, &patient, entries, None);
    }
    Ok((next, moved))
}

/// The slot of an old-layout key after its patient: `rx \0 id \0 line` or
/// `d \0 last-day \0 id \0 record \0 line` (record and line 4 bytes, big-endian).
fn old_slot(rest: &[u8]) -> Result<SlotV1, store::Error> {
    let bad = || corrupt("history key");
    let number = |at: usize| -> Result<u32, store::Error> {
        let bytes = rest.get(at..at + 4).ok_or_else(bad)?;
        Ok(u32::from_be_bytes(bytes.try_into().map_err(|_| bad())?))
    };
    let n = rest.len();
    if rest.starts_with(b"rx\0") && n >= 3 + 1 + 4 {
        return Ok(SlotV1::Undispensed {
            line: number(n - 4)?,
        });
    }
    let dated = rest.strip_prefix(b"d\0").ok_or_else(bad)?;
    let day_end = dated.iter().position(|b| *b == 0).ok_or_else(bad)?;
    let last_day = std::str::from_utf8(&dated[..day_end]).map_err(|_| bad())?;
    if n < 2 + day_end + 1 + 1 + 4 + 1 + 4 {
        return Err(bad());
    }
    Ok(SlotV1::Dispensed {
        last_day: last_day.to_owned(),
        record: number(n - 9)?,
        line: number(n - 4)?,
    })
}

fn medication(entry: &HistoryEntryV2) -> Result<Medication, store::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{service::records::MedicationV1, store::EmbeddedStore};

    const TODAY: &str = "2026-12-01";

    #[test]
    fn a_capped_answer_keeps_every_critical_and_warnings_before_info() {
        let finding = |line: usize, indicator: Indicator| Finding {
            id: format!("F-{line}"),
            kind: checks::FindingKind::NotChecked,
            indicator,
            summary: String::new(),
            line,
            own: None,
            others: Vec::new(),
            rule: None,
        };
        use Indicator::{Critical, Info, Warning};
        // Info on the first lines (as unknown history codes give), warnings after them.
        let all = vec![
            finding(0, Info),
            finding(1, Info),
            finding(2, Critical),
            finding(3, Warning),
            finding(4, Critical),
            finding(5, Warning),
            finding(6, Info),
        ];
        let kept = |max| {
            let capped = Findings::capped(all.clone(), max);
            let lines: Vec<_> = capped.shown.iter().map(|f| f.line).collect();
            (lines, capped.omitted)
        };
        assert_eq!(kept(1), (vec![2, 3, 4], 4));
        assert_eq!(kept(3), (vec![0, 2, 3, 4, 5], 2));
        assert_eq!(kept(10), (vec![0, 1, 2, 3, 4, 5, 6], 0));
    }

    /// The `n`th test prescription's id.
    fn rx(n: u8) -> String {
        hash::hex(&[n; 16])
    }

    fn day(text: &str) -> i32 {
        text.parse::<JapanDate>().unwrap().days_since_epoch()
    }

    fn old_rx_key(patient: &str, id: &str, line: u32) -> Vec<u8> {
        key(&[
            patient.as_bytes(),
            b"rx",
            id.as_bytes(),
            &line.to_be_bytes(),
        ])
    }

    fn old_dispensed_key(
        patient: &str,
        last_day: &str,
        id: &str,
        record: u32,
        line: u32,
    ) -> Vec<u8> {
        key(&[
            patient.as_bytes(),
            b"d",
            last_day.as_bytes(),
            id.as_bytes(),
            &record.to_be_bytes(),
            &line.to_be_bytes(),
        ])
    }

    fn line(id: &str, source_id: String, dispensed: bool) -> MedicationV1 {
        MedicationV1 {
            drug_kind: DrugKindV1::Receipt,
            code: "610443014".into(),
            start: TODAY.into(),
            supply: SupplyV1::Days(14),
            dispensed,
            source_code: "1310000017".into(),
            prescriber: "1310000017".into(),
            prescription_id: id.into(),
            source_id,
        }
    }

    fn put_old(tx: &mut dyn Txn, key: Vec<u8>, m: MedicationV1) {
        tx.put(Table::Medications, &key, &encode(&MedicationRecord::V1(m)));
    }

    async fn read<T: Send + 'static>(
        store: &Arc<dyn Store>,
        f: impl FnOnce(&mut dyn Txn) -> Result<T, store::Error> + Send + 'static,
    ) -> T {
        store.transact(f).await.unwrap().unwrap()
    }

    /// A store of the per-line layout (with zero bytes in its keys, a patient spanning several
    /// chunks, a dispensed line past its last day) reads the same history after the migration,
    /// keeps no old key, and is migrated only once.
    #[tokio::test]
    async fn old_layout_histories_move_into_one_record_per_patient() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        const MANY: u32 = 2 * MIGRATION_CHUNK as u32 + 500;
        read(&store, |tx| {
            let (p1, p2, p3, p4) = (rx(1), rx(2), rx(3), rx(4));
            for l in [1, 0] {
                put_old(
                    tx,
                    old_rx_key("A", &p1, l),
                    line(&p1, format!("rx:{p1}:{l}"), false),
                );
            }
            let d = |day: &str, l: u32| old_dispensed_key("A", day, &p2, 1, l);
            put_old(
                tx,
                d("2026-12-20", 0),
                line(&p2, format!("disp:{p2}:1:0"), true),
            );
            put_old(
                tx,
                d("2026-11-01", 1),
                line(&p2, format!("disp:{p2}:1:1"), true),
            );
            put_old(
                tx,
                old_rx_key("B", &p3, 0),
                line(&p3, format!("rx:{p3}:0"), false),
            );
            for l in 0..MANY {
                put_old(
                    tx,
                    old_rx_key("C", &p4, l),
                    line(&p4, format!("rx:{p4}:{l}"), false),
                );
            }
            Ok(())
        })
        .await;

        assert_eq!(migrate_history(&store).await.unwrap(), 5 + u64::from(MANY));

        let today: JapanDate = TODAY.parse().unwrap();
        let (a, a_history, b, c, old_keys) = read(&store, move |tx| {
            let old_keys = tx
                .scan_prefix(Table::Medications, b"", usize::MAX)?
                .into_iter()
                .filter(|(k, _)| k.contains(&0))
                .count();
            Ok((
                load(tx, "A")?,
                active_medications(tx, &load(tx, "A")?, today, None)?,
                load(tx, "B")?,
                load(tx, "C")?,
                old_keys,
            ))
        })
        .await;
        assert_eq!(old_keys, 0);
        let slots: Vec<_> = a.iter().map(|e| e.slot).collect();
        let dispensed = |last_day: &str, line: u32| SlotV2::Dispensed {
            last_day: day(last_day),
            record: 1,
            line,
        };
        assert_eq!(
            slots,
            [
                SlotV2::Undispensed { line: 0 },
                SlotV2::Undispensed { line: 1 },
                dispensed("2026-11-01", 1),
                dispensed("2026-12-20", 0),
            ]
        );
        let ids: Vec<_> = a_history.iter().map(|m| m.source_id.to_string()).collect();
        let (p1, p2) = (rx(1), rx(2));
        assert_eq!(
            ids,
            [
                format!("rx:{p1}:0"),
                format!("rx:{p1}:1"),
                format!("disp:{p2}:1:0")
            ]
        );
        assert_eq!(b.len(), 1);
        assert_eq!(c.len(), MANY as usize);
        assert!(c.windows(2).all(|w| order(&w[0]) < order(&w[1])));

        // Marked as done: an old-layout key written now is not moved again.
        read(&store, |tx| {
            let p5 = rx(5);
            put_old(
                tx,
                old_rx_key("D", &p5, 0),
                line(&p5, format!("rx:{p5}:0"), false),
            );
            Ok(())
        })
        .await;
        assert_eq!(migrate_history(&store).await.unwrap(), 0);
    }

    /// Writing a patient's record drops the dispensed lines that can no longer be active, and a
    /// dispensing replaces the undispensed line it fills.
    #[test]
    fn a_record_keeps_only_what_may_be_active() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let today: JapanDate = TODAY.parse().unwrap();
        let entries = runtime.block_on(read(&store, move |tx| {
            let drug = || DrugCode::Receipt("610443014".into());
            let lines = vec![
                RxLine {
                    drug: drug(),
                    supply: Supply::Days(7),
                };
                2
            ];
            let history = PatientHistory::read(tx, "A")?;
            index_prescription(
                tx,
                history,
                &Prescribed {
                    patient: "A",
                    id: &rx(1),
                    institution: "1310000017",
                    issue_date: today.add_days(-30),
                    lines: &lines,
                },
                today.add_days(-30),
            )?;
            let facts = [DispensedLineFacts {
                prescription_line: 1,
                drug: drug(),
                days_supplied: 7,
                complete: true,
            }];
            let dispensed = Dispensed {
                patient: "A",
                prescription_id: &rx(1),
                prescriber: "1310000017",
                pharmacy: "1340000011",
                date: today.add_days(-30),
                record_number: 1,
                prescribed: &lines,
                lines: &facts,
            };
            index_dispensing(tx, &dispensed, today.add_days(-30), &Limits::default())
                .map_err(|e| store::Error::Engine(e.to_string()))?;
            let after = load(tx, "A")?;
            // A later write, on a day past the dispensed line's last one, drops it.
            unindex_prescription(tx, "A", &rx(1), today)?;
            Ok((after, load(tx, "A")?))
        }));
        let (after_dispensing, later) = entries;
        let slots: Vec<_> = after_dispensing.iter().map(|e| e.slot).collect();
        assert_eq!(
            slots,
            [
                SlotV2::Undispensed { line: 0 },
                SlotV2::Dispensed {
                    last_day: today.add_days(-30 + 13).days_since_epoch(),
                    record: 1,
                    line: 0,
                },
            ]
        );
        assert!(later.is_empty());
    }

    /// A version-1 record (one per patient, text fields) reads as version 2 with the same
    /// source ids, so finding ids stay the same; the patient's next change writes it as
    /// version 2; an entry whose kept source id disagrees with its slot is refused as corrupt.
    #[tokio::test]
    async fn version_1_records_read_as_version_2() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let (p1, p2) = (rx(1), rx(2));
        let v1 = |slot: SlotV1, medication: MedicationV1| HistoryEntryV1 { slot, medication };
        let record = HistoryRecord::V1(vec![
            v1(
                SlotV1::Undispensed { line: 0 },
                line(&p1, format!("rx:{p1}:0"), false),
            ),
            v1(
                SlotV1::Dispensed {
                    last_day: "2026-12-20".into(),
                    record: 2,
                    line: 0,
                },
                MedicationV1 {
                    source_code: "1340000011".into(),
                    ..line(&p2, format!("disp:{p2}:2:0"), true)
                },
            ),
        ]);
        let mut wrong = line(&p1, format!("rx:{p1}:1"), false);
        wrong.source_id = format!("rx:{p1}:9");
        let bad = HistoryRecord::V1(vec![v1(SlotV1::Undispensed { line: 1 }, wrong)]);
        let today: JapanDate = TODAY.parse().unwrap();
        let (history, bad_read, stored) = read(&store, move |tx| {
            tx.put(Table::Medications, b"A", &encode(&record));
            tx.put(Table::Medications, b"B", &encode(&bad));
            let history = active_medications(tx, &load(tx, "A")?, today, None)?;
            let bad_read = load(tx, "B").map(|_| ());
            // A new prescription for A: the record is written again, as version 2.
            let lines = [RxLine {
                drug: DrugCode::Receipt("610443014".into()),
                supply: Supply::Days(7),
            }];
            let prescribed = Prescribed {
                patient: "A",
                id: &rx(3),
                institution: "1310000017",
                issue_date: today,
                lines: &lines,
            };
            let before = PatientHistory::read(tx, "A")?;
            index_prescription(tx, before, &prescribed, today)?;
            let stored = tx.get(Table::Medications, b"A")?.unwrap();
            Ok((history, bad_read, stored))
        })
        .await;
        let ids: Vec<_> = history.iter().map(|m| m.source_id.to_string()).collect();
        assert_eq!(ids, [format!("rx:{p1}:0"), format!("disp:{p2}:2:0")]);
        assert_eq!(history[1].source.kind, SourceKind::Dispensing);
        assert_eq!(history[1].source.code.as_str(), "1340000011");
        assert_eq!(
            history[1].prescriber.as_ref().map(InstitutionCode::as_str),
            Some("1310000017")
        );
        assert_eq!(history[0].start, today);
        assert!(matches!(bad_read, Err(store::Error::Corrupt(_))));
        let HistoryRecord::V2(entries) = decode(&stored).unwrap() else {
            panic!("the record was written again as version 1");
        };
        assert_eq!(entries.len(), 3);
        assert!(entries.windows(2).all(|w| order(&w[0]) < order(&w[1])));
    }
}
