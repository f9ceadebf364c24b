//! Clinical checks (重複投薬等チェック): duplicate medication and contraindications of new
//! prescription lines against the patient's active history, returned as findings shaped like
//! CDS Hooks cards, and consent masking of those findings. Pure functions over data: no IO, no
//! clock (the check date is a parameter), no tonic/prost/store engine, no store; depends only on
//! `domain::master`, `domain::time` and `domain::ids`.
//!
//! Decisions (where the national rules are silent):
//! - Indicators: a `retrieved` 併用禁忌 row is critical; a 併用禁忌 row with any other
//!   verification text, a conditional row (named condition, or "scope uncertain" without one), a
//!   duplicate and a same-class finding are warnings; caution and not-checked are info, except
//!   that a history too large to read whole is a critical not-checked on every line.
//! - The same-institution exclusion (opt-in per request) applies to the whole check, duplicates and
//!   contraindications alike, as the national service excludes the institution's own
//!   prescriptions; a dispensing record is attributed to its prescriber when the caller knows it.
//! - A product whose route is external counts 14 days whatever days supplied says (an external
//!   line supplies a quantity, not a period); so do lines marked as-needed or external.
//! - A YJ code shared by several products resolves to the first current one by receipt code (they
//!   share moieties); a generic-name code meets YJ-prefix scopes of at most nine characters (the
//!   part it shares with the YJ code).
//! - A history code that does not resolve gives every new line a not-checked finding; history
//!   entries sharing a source id count once.
//! - An in-prescription pair (opt-in) is reported on the earlier line.
//! - Findings are grouped: one per (own line, rule) for the table's findings, per (own line,
//!   shared moiety) for duplicates, per own line for same-class and for unknown history codes,
//!   each naming every other drug and every origin it covers. Their number never grows with the
//!   number of history entries, and their ids never depend on the history.

pub mod consent;
pub mod contraindications;
pub mod duplicates;
mod group;
pub mod history;

use std::collections::HashSet;
use std::fmt;

pub use consent::{Consent, mask};
pub use contraindications::{ContraindicationTable, Rule, RuleLevel, RuleSide, TableError};
pub use history::{
    DrugCode, Medication, ResolvedDrug, Source, SourceId, SourceKind, Supply, resolve,
};

use contraindications::RulesOf;
use history::DrugView;

use crate::domain::hash;
use crate::domain::ids::InstitutionCode;
use crate::domain::master::Catalog;
use crate::domain::time::JapanDate;

/// CDS Hooks summaries must stay under 140 characters.
pub const SUMMARY_MAX_CHARS: usize = 139;

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingKind {
    Duplicate,
    Contraindication,
    Conditional,
    Caution,
    SameClass,
    NotChecked,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Duplicate => "duplicate",
            FindingKind::Contraindication => "contraindication",
            FindingKind::Conditional => "conditional",
            FindingKind::Caution => "caution",
            FindingKind::SameClass => "same_class",
            FindingKind::NotChecked => "not_checked",
        }
    }
}

impl fmt::Display for FindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// CDS Hooks card indicator; ordered info < warning < critical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Indicator {
    Info,
    Warning,
    Critical,
}

impl Indicator {
    pub fn as_str(self) -> &'static str {
        match self {
            Indicator::Info => "info",
            Indicator::Warning => "warning",
            Indicator::Critical => "critical",
        }
    }
}

/// A drug as a finding names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DrugRef {
    /// The code as written (receipt, YJ or generic-name code).
    pub code: String,
    /// Product name; `None` when the code did not resolve.
    pub name: Option<String>,
    /// The moiety the finding is about; `None` when the code did not resolve.
    pub moiety: Option<String>,
}

/// Where the other drug of a finding comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A history medication (institution or pharmacy, and date).
    History(Source),
    /// Another line of the prescription under check (only with `within_prescription`).
    ThisPrescription { line: usize },
}

/// One other drug of a finding and every place it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OtherSide {
    pub drug: DrugRef,
    /// Each origin once (history entries from one institution on one date are one origin), in
    /// the order the history lists them, lines of the prescription under check last; never empty.
    pub origins: Vec<Origin>,
}

/// The table rule behind a contraindication / conditional / caution finding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleRef {
    /// `CI-<row>`.
    pub id: String,
    pub mechanism: String,
    /// The rule's `source_ids` (package-insert sources).
    pub source: String,
    pub verification: String,
    pub condition: Option<String>,
}

/// One finding, shaped like a CDS Hooks card.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Finding {
    /// Stable: a hash of kind, own line, own code and what the finding groups by (the rule, or the
    /// shared moiety), never of the history, so the ids a pre-check answers hold at registration.
    pub id: String,
    pub kind: FindingKind,
    pub indicator: Indicator,
    /// Under 140 characters.
    pub summary: String,
    /// Index of the caller's own line (as given in `NewLine::line`).
    pub line: usize,
    /// The caller's own drug; `None` only in masked findings.
    pub own: Option<DrugRef>,
    /// The other drugs, each with every origin, in the order the history lists them; empty for a
    /// not-checked own line and in masked findings.
    pub others: Vec<OtherSide>,
    pub rule: Option<RuleRef>,
}

/// A line of the prescription under check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLine {
    /// The caller's line index (reported back in every finding).
    pub line: usize,
    pub drug: DrugCode,
}

/// Per-request switches. The defaults are the national rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// Count history prescribed by the caller's own institution (national default: excluded).
    pub include_same_institution: bool,
    /// Report 併用注意 (caution) rows (beyond the national service).
    pub caution: bool,
    /// Report same therapeutic class (YJ digits 1–4) as warnings (beyond the national service).
    pub same_class: bool,
    /// Check contraindicated pairs between the lines of the new prescription itself.
    pub within_prescription: bool,
}

/// The request: who asks, on which date, about which lines, against which history.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput<'a> {
    /// The institution (or pharmacy) running the check: its own prescriptions are excluded.
    pub caller: &'a InstitutionCode,
    /// The check date (Japan calendar day).
    pub today: JapanDate,
    pub new_lines: &'a [NewLine],
    pub history: &'a [Medication],
}

/// A stable id: `F-` + the first 16 bytes of SHA-256 over the parts, each length-prefixed.
pub fn finding_id(parts: &[&str]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p.as_bytes());
    }
    format!("F-{}", hash::hex(&ctx.finish().as_ref()[..16]))
}

/// Cuts a summary to `SUMMARY_MAX_CHARS` characters, ending in `…` when cut.
pub fn clip_summary(s: String) -> String {
    if s.chars().count() <= SUMMARY_MAX_CHARS {
        return s;
    }
    let mut out: String = s.chars().take(SUMMARY_MAX_CHARS - 1).collect();
    out.push('…');
    out
}

/// A resolved history medication that counts on the check date.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ActiveMedication<'a> {
    pub med: &'a Medication,
    pub drug: DrugView<'a>,
}

fn own_ref(drug: &DrugView<'_>, moiety: &str) -> DrugRef {
    DrugRef {
        code: drug.code.as_str().to_owned(),
        name: Some(drug.name().into_owned()),
        moiety: Some(moiety.to_owned()),
    }
}

/// The other drug of a pair, borrowed until a finding needs its origin and id.
#[derive(Debug, Clone, Copy)]
enum Other<'a> {
    History(&'a Medication),
    Line(usize),
}

impl<'a> Other<'a> {
    fn origin(self) -> Origin {
        match self {
            Other::History(med) => Origin::History(med.source.clone()),
            Other::Line(line) => Origin::ThisPrescription { line },
        }
    }
}

/// Runs every check of `input.new_lines` against the active history. Findings come back grouped
/// (see the module's decisions) and sorted by (line, kind, id). Unknown or unresolved codes give `not_checked` (info) findings,
/// never an error. Runs inside the store's writer, so it copies nothing per medication: codes
/// resolve to views of the catalog's precomputed products, a history line that cannot be active is
/// not resolved, and a new line's table rules are found once, then tested against each drug.
pub fn check(
    input: &CheckInput<'_>,
    catalog: &Catalog,
    table: &ContraindicationTable,
    options: &CheckOptions,
) -> Vec<Finding> {
    let mut findings = Vec::new();

    // The history that counts: counted once per source id, not excluded, active today.
    let mut seen = HashSet::with_capacity(input.history.len());
    let mut active: Vec<ActiveMedication<'_>> = Vec::new();
    let mut unresolved: Vec<&Medication> = Vec::new();
    for med in input.history {
        if !seen.insert(med.source_id) {
            continue;
        }
        if !options.include_same_institution && med.prescribing_institution() == input.caller {
            continue;
        }
        if !med.may_be_active_on(input.today) {
            continue;
        }
        match DrugView::resolve(catalog, &med.drug) {
            Some(drug) => {
                if med.is_active_on(input.today, drug.route) {
                    active.push(ActiveMedication { med, drug });
                }
            }
            None => {
                // The period of an unknown drug is unknown too: count it as long as it may last.
                if med.is_active_on(input.today, None) {
                    unresolved.push(med);
                }
            }
        }
    }

    let mut resolved_lines = Vec::with_capacity(input.new_lines.len());
    for line in input.new_lines {
        let Some(drug) = DrugView::resolve(catalog, &line.drug) else {
            findings.push(not_checked_own(line));
            continue;
        };
        for med in &unresolved {
            findings.push(not_checked_history(line, &drug, med));
        }
        findings.extend(duplicates::duplicate_findings(
            line.line, &drug, &active, options,
        ));
        let rules = table.rules_of(&drug);
        for a in &active {
            findings.extend(contraindication_findings(
                line.line,
                &drug,
                &a.drug,
                Other::History(a.med),
                &rules,
                options,
            ));
        }
        resolved_lines.push((line.line, drug, rules));
    }

    if options.within_prescription {
        for (i, (x_line, x, x_rules)) in resolved_lines.iter().enumerate() {
            for (y_line, y, _) in &resolved_lines[i + 1..] {
                findings.extend(contraindication_findings(
                    *x_line,
                    x,
                    y,
                    Other::Line(*y_line),
                    x_rules,
                    options,
                ));
            }
        }
    }

    group::group(findings)
}

/// The answer for a history too large to read whole: a critical not-checked finding on every
/// line, never the findings of a part of it (which could miss exactly what counts).
pub fn not_checked_history_too_large(lines: &[NewLine]) -> Vec<Finding> {
    lines
        .iter()
        .map(|line| {
            Finding {
            id: finding_id(&["not_checked_history", &line.line.to_string()]),
            kind: FindingKind::NotChecked,
            indicator: Indicator::Critical,
            summary: clip_summary(
                "未チェック: 患者の併用薬の記録が上限を超えているため重複・併用禁忌を確認できません"
                    .to_owned(),
            ),
            line: line.line,
            own: Some(DrugRef {
                code: line.drug.as_str().to_owned(),
                name: None,
                moiety: None,
            }),
            others: Vec::new(),
            rule: None,
        }
        })
        .collect()
}

fn not_checked_own(line: &NewLine) -> Finding {
    let code = line.drug.as_str();
    Finding {
        id: finding_id(&["not_checked", &line.line.to_string(), code]),
        kind: FindingKind::NotChecked,
        indicator: Indicator::Info,
        summary: clip_summary(format!(
            "未チェック: コード {code} がマスターにないため重複・併用禁忌を確認できません"
        )),
        line: line.line,
        own: Some(DrugRef {
            code: code.to_owned(),
            name: None,
            moiety: None,
        }),
        others: Vec::new(),
        rule: None,
    }
}

fn not_checked_history(line: &NewLine, drug: &DrugView<'_>, med: &Medication) -> Finding {
    let code = med.drug.as_str();
    Finding {
        id: finding_id(&[
            "not_checked",
            &line.line.to_string(),
            line.drug.as_str(),
            "history",
        ]),
        kind: FindingKind::NotChecked,
        indicator: Indicator::Info,
        summary: clip_summary(
            "未チェック: 併用中の薬にマスターにないものがあるため確認できません".to_owned(),
        ),
        line: line.line,
        own: Some(DrugRef {
            code: drug.code.as_str().to_owned(),
            name: Some(drug.name().into_owned()),
            moiety: None,
        }),
        others: vec![OtherSide {
            drug: DrugRef {
                code: code.to_owned(),
                name: None,
                moiety: None,
            },
            origins: vec![Origin::History(med.source.clone())],
        }],
        rule: None,
    }
}

/// Contraindication findings of one ordered pair (own line drug `x` with its rules, other drug
/// `y`).
fn contraindication_findings(
    line: usize,
    x: &DrugView<'_>,
    y: &DrugView<'_>,
    other: Other<'_>,
    x_rules: &RulesOf<'_>,
    options: &CheckOptions,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for m in x_rules.matching(y) {
        let rule = m.rule;
        let (own_side, other_side) = if m.x_is_a {
            (&rule.a, &rule.b)
        } else {
            (&rule.b, &rule.a)
        };
        let (kind, indicator, label) = match rule.level {
            RuleLevel::Contraindicated if rule.is_authoritative() => (
                FindingKind::Contraindication,
                Indicator::Critical,
                "併用禁忌".to_owned(),
            ),
            RuleLevel::Contraindicated => (
                FindingKind::Contraindication,
                Indicator::Warning,
                "併用禁忌(未確認)".to_owned(),
            ),
            RuleLevel::Conditional => match &rule.condition {
                Some(c) => (
                    FindingKind::Conditional,
                    Indicator::Warning,
                    format!("条件付き併用禁忌({c})"),
                ),
                None => (
                    FindingKind::Conditional,
                    Indicator::Warning,
                    "併用禁忌の可能性(添付文書の適用範囲が不確か)".to_owned(),
                ),
            },
            RuleLevel::Caution if options.caution => {
                (FindingKind::Caution, Indicator::Info, "併用注意".to_owned())
            }
            RuleLevel::Caution => continue,
        };
        let own_moiety = own_side.moieties.join("・");
        let other_moiety = other_side.moieties.join("・");
        let summary = clip_summary(format!(
            "{label}: {} ({}) と {} ({})",
            x.name(),
            own_side.name,
            y.name(),
            other_side.name
        ));
        let rule_id = rule.id();
        out.push(Finding {
            id: finding_id(&[kind.as_str(), &line.to_string(), x.code.as_str(), &rule_id]),
            kind,
            indicator,
            summary,
            line,
            own: Some(own_ref(x, &own_moiety)),
            others: vec![OtherSide {
                drug: own_ref(y, &other_moiety),
                origins: vec![other.origin()],
            }],
            rule: Some(RuleRef {
                id: rule_id,
                mechanism: rule.mechanism.clone(),
                source: rule.source.clone(),
                verification: rule.verification.clone(),
                condition: rule.condition.clone(),
            }),
        });
    }
    out
}
