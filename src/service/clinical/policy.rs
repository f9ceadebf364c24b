//! The check policy: what a caller may ask of a check and what acknowledging a finding takes,
//! the per-patient check budget, and the consent a check leaves on record.

use std::time::Duration;

use crate::{
    domain::checks::{CheckOptions, Consent, Finding, Indicator},
    limits::Limits,
    store::{self, Table, Txn},
};

use crate::service::{
    Caller, Error,
    pseudonym::PatientPseudonym,
    records::{
        CheckBudgetRecord, CheckBudgetV1, ConsentMethodV1, ConsentRecord, ConsentV1, decode, encode,
    },
    schema::{self, check_budget_key, consent_key},
};

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
    patient: &PatientPseudonym,
    lines: usize,
    now_ms: i64,
    limits: &Limits,
) -> Result<Budget, store::Error> {
    let budget_key = check_budget_key(patient);
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

/// Records the consent an institution asserted for a check.
pub fn record_consent(
    tx: &mut dyn Txn,
    patient: &PatientPseudonym,
    caller: &Caller,
    consent: Consent,
    time_ms: i64,
    action: &str,
    prescription_id: Option<&str>,
) -> Result<(), store::Error> {
    // Only unique: a patient's consents are kept, never read as a feed that resumes.
    let sequence = tx.unique_sequence(schema::CONSENT_SEQUENCE)?;
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
        &consent_key(patient, sequence),
        &encode(&record),
    );
    Ok(())
}
