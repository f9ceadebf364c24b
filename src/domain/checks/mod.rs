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

use std::collections::{HashMap, HashSet};
use std::fmt;

pub use consent::{Consent, mask};
pub use contraindications::{ContraindicationTable, Rule, RuleLevel, RuleSide, TableError};
pub use history::{
    DrugCode, Medication, ResolvedDrug, Source, SourceId, SourceKind, Supply, resolve,
};

use contraindications::RulesOf;
use group::{By, Groups, Met};
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

/// A drug the new lines are checked against, with every origin of it, each once: every active
/// history entry of one code, or another line of the prescription under check.
#[derive(Debug, Clone)]
pub(crate) struct OtherDrug<'a> {
    pub drug: DrugView<'a>,
    pub origins: Vec<Origin>,
}

impl OtherDrug<'_> {
    fn met(&self) -> Met<'_> {
        Met {
            code: self.drug.code.as_str(),
            origins: &self.origins,
        }
    }
}

/// A history code that did not resolve, with every origin of it.
#[derive(Debug, Clone)]
struct UnknownDrug<'a> {
    code: &'a DrugCode,
    origins: Vec<Origin>,
}

fn own_ref(drug: &DrugView<'_>, moiety: &str) -> DrugRef {
    DrugRef {
        code: drug.code.as_str().to_owned(),
        name: Some(drug.name().into_owned()),
        moiety: Some(moiety.to_owned()),
    }
}

/// Adds `origin` to the entry of `code` in `drugs`, or a new entry made by `new`.
fn gather<'a, T>(
    drugs: &mut Vec<T>,
    at: &mut HashMap<&'a str, usize>,
    (code, origin): (&'a str, Origin),
    new: impl FnOnce(Vec<Origin>) -> T,
    origins: impl Fn(&mut T) -> &mut Vec<Origin>,
) {
    match at.get(code) {
        Some(&i) => {
            let known = origins(&mut drugs[i]);
            if !known.contains(&origin) {
                known.push(origin);
            }
        }
        None => {
            at.insert(code, drugs.len());
            drugs.push(new(vec![origin]));
        }
    }
}

/// The history that counts, by drug code: counted once per source id, not excluded, active
/// today; resolved drugs and unknown codes apart.
fn active_drugs<'a>(
    input: &CheckInput<'a>,
    catalog: &'a Catalog,
    options: &CheckOptions,
) -> (Vec<OtherDrug<'a>>, Vec<UnknownDrug<'a>>) {
    let mut seen = HashSet::with_capacity(input.history.len());
    let (mut active, mut active_at) = (Vec::new(), HashMap::new());
    let (mut unknown, mut unknown_at) = (Vec::new(), HashMap::new());
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
        let met = (med.drug.as_str(), Origin::History(med.source.clone()));
        match DrugView::resolve(catalog, &med.drug) {
            Some(drug) if med.is_active_on(input.today, drug.route) => {
                let new = |origins| OtherDrug { drug, origins };
                gather(&mut active, &mut active_at, met, new, |d| &mut d.origins);
            }
            Some(_) => {}
            // The period of an unknown drug is unknown too: count it as long as it may last.
            None if med.is_active_on(input.today, None) => {
                let new = |origins| UnknownDrug {
                    code: &med.drug,
                    origins,
                };
                gather(&mut unknown, &mut unknown_at, met, new, |d| &mut d.origins);
            }
            None => {}
        }
    }
    (active, unknown)
}

/// Runs every check of `input.new_lines` against the active history. Findings come back grouped
/// (see the module's decisions) and sorted by (line, kind, id). Unknown or unresolved codes give
/// `not_checked` (info) findings, never an error. Runs inside the store's writer, so it copies
/// little per medication: codes resolve to views of the catalog's precomputed products, a history
/// line that cannot be active is not resolved, the history is gathered by drug code, a new line's
/// table rules are found once, then tested against each drug, and a finding is made once per
/// group.
pub fn check(
    input: &CheckInput<'_>,
    catalog: &Catalog,
    table: &ContraindicationTable,
    options: &CheckOptions,
) -> Vec<Finding> {
    let (active, unknown) = active_drugs(input, catalog, options);
    let mut groups = Groups::default();
    let mut resolved_lines = Vec::with_capacity(input.new_lines.len());
    for line in input.new_lines {
        let Some(drug) = DrugView::resolve(catalog, &line.drug) else {
            groups.push(not_checked_own(line));
            continue;
        };
        for u in &unknown {
            not_checked_history(&mut groups, line, &drug, u);
        }
        duplicates::duplicate_findings(&mut groups, line.line, &drug, &active, options);
        let rules = table.rules_of(&drug);
        for a in &active {
            contraindication_findings(&mut groups, (line.line, &drug), a, &rules, options);
        }
        resolved_lines.push((line.line, drug, rules));
    }

    if options.within_prescription {
        for (i, (x_line, x, x_rules)) in resolved_lines.iter().enumerate() {
            for (y_line, y, _) in &resolved_lines[i + 1..] {
                let other = OtherDrug {
                    drug: *y,
                    origins: vec![Origin::ThisPrescription { line: *y_line }],
                };
                contraindication_findings(&mut groups, (*x_line, x), &other, x_rules, options);
            }
        }
    }
    groups.finish()
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

/// The not-checked finding of a resolved line against the unknown history code `u`.
fn not_checked_history<'a>(
    groups: &mut Groups<'a>,
    line: &NewLine,
    drug: &DrugView<'_>,
    u: &UnknownDrug<'_>,
) {
    let make = || Finding {
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
        others: Vec::new(),
        rule: None,
    };
    let met = Met {
        code: u.code.as_str(),
        origins: &u.origins,
    };
    let named = || DrugRef {
        code: u.code.as_str().to_owned(),
        name: None,
        moiety: None,
    };
    groups.add(
        (line.line, FindingKind::NotChecked, By::Line),
        make,
        met,
        named,
    );
}

/// The kind and indicator of a finding of `rule`; `None` for a caution row not asked for.
fn rule_level(rule: &Rule, options: &CheckOptions) -> Option<(FindingKind, Indicator)> {
    match rule.level {
        RuleLevel::Contraindicated if rule.is_authoritative() => {
            Some((FindingKind::Contraindication, Indicator::Critical))
        }
        RuleLevel::Contraindicated => Some((FindingKind::Contraindication, Indicator::Warning)),
        RuleLevel::Conditional => Some((FindingKind::Conditional, Indicator::Warning)),
        RuleLevel::Caution if options.caution => Some((FindingKind::Caution, Indicator::Info)),
        RuleLevel::Caution => None,
    }
}

/// How a summary names `rule`'s level.
fn rule_label(rule: &Rule) -> String {
    match (rule.level, &rule.condition) {
        (RuleLevel::Contraindicated, _) if rule.is_authoritative() => "併用禁忌".to_owned(),
        (RuleLevel::Contraindicated, _) => "併用禁忌(未確認)".to_owned(),
        (RuleLevel::Conditional, Some(c)) => format!("条件付き併用禁忌({c})"),
        (RuleLevel::Conditional, None) => "併用禁忌の可能性(添付文書の適用範囲が不確か)".to_owned(),
        (RuleLevel::Caution, _) => "併用注意".to_owned(),
    }
}

/// Contraindication findings of one ordered pair (own line and drug `x` with its rules, the
/// other drug `y`), one group per rule.
fn contraindication_findings<'a>(
    groups: &mut Groups<'a>,
    (line, x): (usize, &DrugView<'_>),
    y: &OtherDrug<'_>,
    x_rules: &RulesOf<'_>,
    options: &CheckOptions,
) {
    for m in x_rules.matching(&y.drug) {
        let rule = m.rule;
        let Some((kind, indicator)) = rule_level(rule, options) else {
            continue;
        };
        let (own_side, other_side) = if m.x_is_a {
            (&rule.a, &rule.b)
        } else {
            (&rule.b, &rule.a)
        };
        let make = || {
            let rule_id = rule.id();
            Finding {
                id: finding_id(&[kind.as_str(), &line.to_string(), x.code.as_str(), &rule_id]),
                kind,
                indicator,
                summary: clip_summary(format!(
                    "{}: {} ({}) と {} ({})",
                    rule_label(rule),
                    x.name(),
                    own_side.name,
                    y.drug.name(),
                    other_side.name
                )),
                line,
                own: Some(own_ref(x, &own_side.moieties.join("・"))),
                others: Vec::new(),
                rule: Some(RuleRef {
                    id: rule_id,
                    mechanism: rule.mechanism.clone(),
                    source: rule.source.clone(),
                    verification: rule.verification.clone(),
                    condition: rule.condition.clone(),
                }),
            }
        };
        let named = || own_ref(&y.drug, &other_side.moieties.join("・"));
        groups.add((line, kind, By::Rule(rule.row)), make, y.met(), named);
    }
}
