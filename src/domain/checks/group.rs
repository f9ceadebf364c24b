//! Grouping of a check's findings: one finding per (own line, kind, what it groups by), naming
//! every other drug and every origin it covers. A finding is made once, when its group first
//! meets a drug; a further drug or entry only adds a name or an origin, so the check's cost per
//! (line, history drug) pair stays small. Pure: no IO, no clock, no tonic/prost/store engine;
//! depends only on the finding types of `checks`.

use std::collections::HashMap;

use super::{DrugRef, Finding, FindingKind, Origin, OtherSide};

/// What a finding groups by, besides its own line and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum By<'a> {
    /// A row of the contraindication table.
    Rule(usize),
    /// The moiety the own drug shares with the others (duplicates).
    Moiety(&'a str),
    /// Nothing more: one finding per own line and kind.
    Line,
}

/// A group: the own line, the kind, and what else the finding groups by.
pub(super) type Key<'a> = (usize, FindingKind, By<'a>);

/// A drug a finding meets: its code as written and every origin of it, each once.
#[derive(Debug, Clone)]
pub(super) struct Met<'o> {
    pub code: &'o str,
    pub origins: &'o [Origin],
}

/// The findings of one check, being grouped.
#[derive(Debug, Default)]
pub(super) struct Groups<'a> {
    at: HashMap<Key<'a>, usize>,
    findings: Vec<Finding>,
}

impl<'a> Groups<'a> {
    /// A finding that groups nothing (an own code not in the master).
    pub(super) fn push(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// Adds the drug `met` to the finding of `key`, which `make` makes (without other drugs)
    /// when the group is new; `drug` names the met drug when the finding does not name it yet.
    pub(super) fn add(
        &mut self,
        key: Key<'a>,
        make: impl FnOnce() -> Finding,
        met: Met<'_>,
        drug: impl FnOnce() -> DrugRef,
    ) {
        let findings = &mut self.findings;
        let i = *self.at.entry(key).or_insert_with(|| {
            findings.push(make());
            findings.len() - 1
        });
        let others = &mut findings[i].others;
        match others.iter_mut().find(|o| o.drug.code == met.code) {
            Some(known) => {
                for origin in met.origins {
                    if !known.origins.contains(origin) {
                        known.origins.push(origin.clone());
                    }
                }
            }
            None => others.push(OtherSide {
                drug: drug(),
                origins: met.origins.to_vec(),
            }),
        }
    }

    /// The findings, sorted by (line, kind, id).
    pub(super) fn finish(mut self) -> Vec<Finding> {
        self.findings
            .sort_by(|a, b| (a.line, a.kind, &a.id).cmp(&(b.line, b.kind, &b.id)));
        self.findings
    }
}
