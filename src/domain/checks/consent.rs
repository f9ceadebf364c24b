//! Consent masking: without the patient's consent, findings are reduced so that nothing about the
//! other side (drug, code, institution, date, count) remains. Pure: no IO, no clock, no
//! tonic/prost/sled; depends only on the finding types of `checks`.

use std::collections::BTreeMap;

use super::{Finding, FindingKind, Indicator, finding_id};

/// The patient's consent to other institutions' information being shown, per visit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Consent {
    /// Given at the card reader (マイナ保険証).
    Card,
    /// Given verbally.
    Verbal,
    /// Not given.
    None,
}

impl Consent {
    pub fn is_given(self) -> bool {
        !matches!(self, Consent::None)
    }
}

/// The fixed summary of a masked finding: depends on the kind alone.
fn masked_summary(kind: FindingKind) -> &'static str {
    match kind {
        FindingKind::Duplicate => "重複投薬の可能性があります(同意がないため詳細は表示しません)",
        FindingKind::Contraindication => {
            "併用禁忌の可能性があります(同意がないため詳細は表示しません)"
        }
        FindingKind::Conditional => {
            "条件付き併用禁忌の可能性があります(同意がないため詳細は表示しません)"
        }
        FindingKind::Caution => "併用注意の可能性があります(同意がないため詳細は表示しません)",
        FindingKind::SameClass => "同効薬の可能性があります(同意がないため詳細は表示しません)",
        FindingKind::NotChecked => "確認できなかった薬があります(同意がないため詳細は表示しません)",
    }
}

/// With consent, `findings` unchanged. Without, at most one finding per (own line, kind), in
/// (line, kind) order, carrying only kind, the group's highest indicator, the own line and an id
/// derived from (kind, own line) alone; summary is a fixed text per kind; own drug, other side and
/// rule are dropped.
pub fn mask(findings: Vec<Finding>, consent: Consent) -> Vec<Finding> {
    if consent.is_given() {
        return findings;
    }
    let mut groups: BTreeMap<(usize, FindingKind), Indicator> = BTreeMap::new();
    for f in &findings {
        groups
            .entry((f.line, f.kind))
            .and_modify(|i| *i = (*i).max(f.indicator))
            .or_insert(f.indicator);
    }
    groups
        .into_iter()
        .map(|((line, kind), indicator)| Finding {
            id: finding_id(&["masked", kind.as_str(), &line.to_string()]),
            kind,
            indicator,
            summary: masked_summary(kind).to_owned(),
            line,
            own: None,
            others: Vec::new(),
            rule: None,
        })
        .collect()
}
