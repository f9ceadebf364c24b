//! The duplicate-medication check (national rule: same active moiety by the same route) and the
//! optional same-class (同効薬, YJ digits 1–4) warning, for one new line against the active
//! history. Pure: no IO, no clock, no tonic/prost/store engine; depends only on the other check modules.

use super::group::{By, Groups};
use super::{
    CheckOptions, DrugRef, DrugView, Finding, FindingKind, Indicator, OtherDrug, clip_summary,
    finding_id,
};

/// Duplicate findings (warning) for the new line `line` with drug `drug`: one per moiety it
/// shares by the same route with active history drugs (the first shared moiety of each), naming
/// them all. With `options.same_class`, history drugs of the same 4-digit class and no shared
/// moiety give one same-class warning. There is no check inside the new prescription.
pub(super) fn duplicate_findings<'a>(
    groups: &mut Groups<'a>,
    line: usize,
    drug: &DrugView<'a>,
    active: &[OtherDrug<'_>],
    options: &CheckOptions,
) {
    for a in active {
        let other = &a.drug;
        let shared = drug.moieties.iter().find(|m| other.moieties.contains(m));
        let (kind, by) = match shared {
            Some(m) if drug.route == other.route => (FindingKind::Duplicate, By::Moiety(m)),
            Some(_) => continue,
            None if options.same_class && !drug.class.is_empty() && drug.class == other.class => {
                (FindingKind::SameClass, By::Line)
            }
            None => continue,
        };
        // What each side names as its moiety: the shared one, or (same class) all of its own.
        let (moiety_own, moiety_other) = match shared {
            Some(m) => (m.clone(), m.clone()),
            None => (drug.moieties.join("・"), other.moieties.join("・")),
        };
        let make = || {
            let summary = match shared {
                Some(m) => format!(
                    "重複投薬: {} と {} (同一成分 {m})",
                    drug.name(),
                    other.name()
                ),
                None => format!(
                    "同効薬: {} と {} (薬効分類 {})",
                    drug.name(),
                    other.name(),
                    drug.class
                ),
            };
            Finding {
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
                    moiety: Some(moiety_own.clone()),
                }),
                others: Vec::new(),
                rule: None,
            }
        };
        let named = || DrugRef {
            code: other.code.as_str().to_owned(),
            name: Some(other.name().into_owned()),
            moiety: Some(moiety_other),
        };
        groups.add((line, kind, by), make, a.met(), named);
    }
}
