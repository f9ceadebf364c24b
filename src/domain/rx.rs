//! The business facts of verified documents that the gateway acts on, parsed: a prescription's
//! identity, patient, dates and shape, and a dispensing record's. Pure: no IO.

use super::{
    checks::{DrugCode, Supply},
    ids::InstitutionCode,
    patient::PatientKey,
    time::JapanDate,
};

/// The institution's own number for a prescription: 1–32 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PrescriptionNumber(String);

impl PrescriptionNumber {
    pub fn parse(s: &str) -> Option<Self> {
        (!s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_graphic()))
            .then(|| PrescriptionNumber(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The person a document names as its signer (prescriber or pharmacist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedSigner {
    pub name: String,
    pub serial_number: String,
}

/// A prescription, as the gateway needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrescriptionFacts {
    pub institution: InstitutionCode,
    pub number: PrescriptionNumber,
    pub prescriber: NamedSigner,
    pub patient: PatientKey,
    pub issue_date: JapanDate,
    pub usable_until: Option<JapanDate>,
    /// Total number of uses, 1–3.
    pub refill_count: u32,
    pub lines: Vec<RxLine>,
}

/// A prescription line as the checks read it: the drug and how long it lasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxLine {
    pub drug: DrugCode,
    pub supply: Supply,
}

/// The longest days supplied among days-based lines, if there is one.
pub fn longest_days(lines: &[RxLine]) -> Option<u32> {
    lines
        .iter()
        .filter_map(|l| match l.supply {
            Supply::Days(n) => Some(n),
            Supply::AsNeeded | Supply::External => None,
        })
        .max()
}

/// What a pre-issue check reads of an unsigned draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftFacts {
    pub institution: InstitutionCode,
    pub patient: PatientKey,
    pub lines: Vec<RxLine>,
}

/// A line of a dispensing record that gave something (complete or partial).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispensedLineFacts {
    /// The index of the prescription line it fills.
    pub prescription_line: u32,
    /// The drug actually dispensed.
    pub drug: DrugCode,
    /// Days supplied; 0 when the line gives a quantity, not a period (as-needed, external).
    pub days_supplied: u32,
    /// COMPLETE (the line is fully given), not PARTIAL.
    pub complete: bool,
}

/// A dispensing record, as the gateway needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispensingFacts {
    pub institution: InstitutionCode,
    pub number: PrescriptionNumber,
    pub record_number: u32,
    pub is_final: bool,
    pub pharmacy: InstitutionCode,
    pub pharmacist: NamedSigner,
    pub dispensing_date: JapanDate,
    pub important_information: bool,
    /// The lines that gave something; NOT_DISPENSED lines are left out.
    pub lines: Vec<DispensedLineFacts>,
}

/// A field that failed to parse: its path in the document and the rule it broke (never its
/// value, which may be patient data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub rule: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        FieldViolation {
            field: field.into(),
            rule: rule.into(),
        }
    }
}
