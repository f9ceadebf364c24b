//! The clinical checks inside the gateway: the drug master and contraindication table in force,
//! the index of every patient's medication history (what a check reads), the check policy, and
//! the records a check leaves behind (the consent asserted, the findings acknowledged).
//!
//! The history index (`Table::Medications`), by canonical patient key:
//! - `patient \0 rx \0 id \0 line`: an undispensed line of a REGISTERED or ACCEPTED
//!   prescription. Written at registration; removed when the line is dispensed or the
//!   prescription leaves REGISTERED/ACCEPTED, so these entries never accumulate.
//! - `patient \0 d \0 last-day \0 id \0 record \0 line`: a dispensed line, keyed by the last day
//!   it can be active (assuming at least the 14 days of an external or as-needed drug), so that a
//!   check reads the range from today on and never the patient's older past.

use std::{sync::Arc, time::Instant};

use crate::{
    domain::{
        checks::{
            self, CheckInput, CheckOptions, Consent, ContraindicationTable, DrugCode, Finding,
            Indicator, Medication, NewLine, Source, SourceKind, Supply, history::ASSUMED_DAYS,
        },
        ids::InstitutionCode,
        master::Catalog,
        prescription::usable_through,
        rx::{DispensedLineFacts, RxLine},
        time::JapanDate,
    },
    masters::{LoadReport, Sources},
    metrics::Metrics,
    store::{self, Table, Txn},
};

use super::{
    Caller, Stored, corrupt, key,
    records::{
        ConsentMethodV1, ConsentRecord, ConsentV1, DrugKindV1, MedicationRecord, MedicationV1,
        SupplyV1, decode, encode,
    },
};

/// At most this many history entries are read for one check (a bound on the work, far above
/// any real patient's active medications).
const HISTORY_LIMIT: usize = 10_000;

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

/// The data in force for a check, and where its time is counted.
pub struct Checker {
    pub clinical: Arc<Clinical>,
    pub metrics: Arc<Metrics>,
}

impl Checker {
    /// Runs the checks of `subject` against the patient's history and masks the findings as
    /// the consent requires.
    pub fn run(
        &self,
        tx: &dyn Txn,
        subject: &Subject<'_>,
        options: &CheckOptions,
        consent: Consent,
    ) -> Result<Vec<Finding>, store::Error> {
        let started = Instant::now();
        let history = history(tx, subject.patient, subject.today, subject.exclude)?;
        let input = CheckInput {
            caller: subject.caller,
            today: subject.today,
            new_lines: subject.lines,
            history: &history,
        };
        let c = &self.clinical;
        let findings = checks::mask(
            checks::check(&input, &c.catalog, &c.table, options),
            consent,
        );
        self.metrics.check.observe_duration(started.elapsed());
        Ok(findings)
    }
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

fn rx_prefix(patient: &str, id: &str) -> Vec<u8> {
    key(&[patient.as_bytes(), b"rx", id.as_bytes(), b""])
}

fn rx_key(patient: &str, id: &str, line: u32) -> Vec<u8> {
    key(&[
        patient.as_bytes(),
        b"rx",
        id.as_bytes(),
        &line.to_be_bytes(),
    ])
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

/// Indexes the undispensed lines of a newly registered prescription.
pub fn index_prescription(tx: &mut dyn Txn, p: &Prescribed<'_>) {
    for (i, line) in p.lines.iter().enumerate() {
        let (drug_kind, code) = drug_v1(&line.drug);
        let record = MedicationRecord::V1(MedicationV1 {
            drug_kind,
            code,
            start: p.issue_date.to_string(),
            supply: supply_v1(line.supply),
            dispensed: false,
            source_code: p.institution.to_owned(),
            prescriber: p.institution.to_owned(),
            prescription_id: p.id.to_owned(),
            source_id: format!("rx:{}:{i}", p.id),
        });
        tx.put(
            Table::Medications,
            &rx_key(p.patient, p.id, i as u32),
            &encode(&record),
        );
    }
}

/// Drops every undispensed line of a prescription that has left REGISTERED/ACCEPTED.
pub fn unindex_prescription(tx: &mut dyn Txn, patient: &str, id: &str) -> Result<(), store::Error> {
    for (k, _) in tx.scan_prefix(Table::Medications, &rx_prefix(patient, id), usize::MAX)? {
        tx.delete(Table::Medications, &k);
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

/// Indexes the lines a dispensing record gave, in place of the prescription lines they fill: a
/// dispensed line counts once, as what was actually dispensed, from the dispensing date.
pub fn index_dispensing(tx: &mut dyn Txn, d: &Dispensed<'_>) {
    for (i, line) in d.lines.iter().enumerate() {
        tx.delete(
            Table::Medications,
            &rx_key(d.patient, d.prescription_id, line.prescription_line),
        );
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
        let last_day = d.date.add_days(bound_days as i32 - 1);
        let (drug_kind, code) = drug_v1(&line.drug);
        let record = MedicationRecord::V1(MedicationV1 {
            drug_kind,
            code,
            start: d.date.to_string(),
            supply: supply_v1(supply),
            dispensed: true,
            source_code: d.pharmacy.to_owned(),
            prescriber: d.prescriber.to_owned(),
            prescription_id: d.prescription_id.to_owned(),
            source_id: format!("disp:{}:{}:{i}", d.prescription_id, d.record_number),
        });
        tx.put(
            Table::Medications,
            &key(&[
                d.patient.as_bytes(),
                b"d",
                last_day.to_string().as_bytes(),
                d.prescription_id.as_bytes(),
                &d.record_number.to_be_bytes(),
                &(i as u32).to_be_bytes(),
            ]),
            &encode(&record),
        );
    }
}

/// The patient's history that may be active on `today`: the undispensed lines of prescriptions
/// still REGISTERED or ACCEPTED today (one past its last usable day counts as expired before the
/// sweep writes it), and the dispensed lines whose last possible day is today or later; never
/// those of `exclude`.
fn history(
    tx: &dyn Txn,
    patient: &str,
    today: JapanDate,
    exclude: Option<&str>,
) -> Result<Vec<Medication>, store::Error> {
    let undispensed = tx.scan_prefix(
        Table::Medications,
        &key(&[patient.as_bytes(), b"rx", b""]),
        HISTORY_LIMIT,
    )?;
    let dispensed_start = key(&[patient.as_bytes(), b"d", today.to_string().as_bytes()]);
    let mut dispensed_end = key(&[patient.as_bytes(), b"d"]);
    dispensed_end.push(1);
    let dispensed = tx.scan_range(
        Table::Medications,
        &dispensed_start,
        &dispensed_end,
        HISTORY_LIMIT,
    )?;
    let mut out = Vec::with_capacity(undispensed.len() + dispensed.len());
    let mut active: Option<(String, bool)> = None;
    for (_, v) in undispensed {
        let MedicationRecord::V1(m) = decode(&v)?;
        if exclude == Some(m.prescription_id.as_str()) {
            continue;
        }
        let issued: JapanDate = m.start.parse().map_err(|_| corrupt("medication date"))?;
        // An undispensed line is indexed only while its prescription is REGISTERED or ACCEPTED,
        // and none expires within 4 days of its issue (the 4-day rule is the shortest usable
        // period): only an older one needs its state read. Entries of one prescription are
        // adjacent: its state is read once.
        let is_active = match &active {
            _ if today <= usable_through(issued, None) => true,
            Some((id, is_active)) if *id == m.prescription_id => *is_active,
            _ => {
                let is_active = Stored::load(tx, &m.prescription_id)?
                    .is_some_and(|s| s.lifecycle.state_on(today).is_active());
                active = Some((m.prescription_id.clone(), is_active));
                is_active
            }
        };
        if is_active {
            out.push(medication(m)?);
        }
    }
    for (_, v) in dispensed {
        let MedicationRecord::V1(m) = decode(&v)?;
        if exclude != Some(m.prescription_id.as_str()) {
            out.push(medication(m)?);
        }
    }
    Ok(out)
}

fn medication(m: MedicationV1) -> Result<Medication, store::Error> {
    let date: JapanDate = m.start.parse().map_err(|_| corrupt("medication date"))?;
    let institution = |s: &str| -> Result<InstitutionCode, store::Error> {
        s.parse().map_err(|_| corrupt("medication institution"))
    };
    Ok(Medication {
        drug: match m.drug_kind {
            DrugKindV1::Receipt => DrugCode::Receipt(m.code),
            DrugKindV1::Yj => DrugCode::Yj(m.code),
            DrugKindV1::Generic => DrugCode::Generic(m.code),
        },
        start: date,
        supply: match m.supply {
            SupplyV1::Days(n) => Supply::Days(n),
            SupplyV1::AsNeeded => Supply::AsNeeded,
            SupplyV1::External => Supply::External,
        },
        source: Source {
            kind: if m.dispensed {
                SourceKind::Dispensing
            } else {
                SourceKind::Prescription
            },
            code: institution(&m.source_code)?,
            date,
        },
        prescriber: Some(institution(&m.prescriber)?),
        source_id: m.source_id,
    })
}
