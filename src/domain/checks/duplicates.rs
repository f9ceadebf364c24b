//! The duplicate-medication check (national rule: same active moiety by the same route) and the
//! optional same-class (同効薬, YJ digits 1–4) warning, for one new line against the active
//! history. Pure: no IO, no clock, no tonic/prost/store engine; depends only on the other check modules.

use super::{
    ActiveMedication, CheckOptions, DrugRef, DrugView, Finding, FindingKind, Indicator, Origin,
    OtherSide, clip_summary, finding_id,
};

/// Duplicate findings (warning) for the new line `line` with drug `drug`: one per active history
/// medication sharing a moiety by the same route (naming the first shared moiety), before
/// `check` groups them by that moiety. With
/// `options.same_class`, a history drug of the same 4-digit class and no shared moiety gives a
/// same-class warning. There is no check inside the new prescription.
pub(crate) fn duplicate_findings(
    line: usize,
    drug: &DrugView<'_>,
    active: &[ActiveMedication<'_>],
    options: &CheckOptions,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for a in active {
        let other = &a.drug;
        let shared = drug.moieties.iter().find(|m| other.moieties.contains(m));
        let (kind, moiety_own, moiety_other, summary) = match shared {
            Some(m) if drug.route == other.route => (
                FindingKind::Duplicate,
                m.clone(),
                m.clone(),
                format!(
                    "重複投薬: {} と {} (同一成分 {m})",
                    drug.name(),
                    other.name()
                ),
            ),
            Some(_) => continue,
            None if options.same_class && !drug.class.is_empty() && drug.class == other.class => (
                FindingKind::SameClass,
                drug.moieties.join("・"),
                other.moieties.join("・"),
                format!(
                    "同効薬: {} と {} (薬効分類 {})",
                    drug.name(),
                    other.name(),
                    drug.class
                ),
            ),
            None => continue,
        };
        out.push(Finding {
            id: finding_id(&[
                kind.as_str(),
                &line.to_string(),
                drug.code.as_str(),
                &moiety_own,
            ]),
            kind,
            indicator: Indicator::Warning,
            summary: clip_summary(summary),
            line,
            own: Some(DrugRef {
                code: drug.code.as_str().to_owned(),
                name: Some(drug.name().into_owned()),
                moiety: Some(moiety_own),
            }),
            others: vec![OtherSide {
                drug: DrugRef {
                    code: other.code.as_str().to_owned(),
                    name: Some(other.name().into_owned()),
                    moiety: Some(moiety_other),
                },
                origins: vec![Origin::History(a.med.source.clone())],
            }],
            rule: None,
        });
    }
    out
}
