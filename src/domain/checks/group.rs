//! Grouping of a check's findings: the findings of one (line, history entry) pair each, merged
//! by id into one finding that names every other drug and every origin it covers. Pure: no IO,
//! no clock, no tonic/prost/store engine; depends only on the finding types of `checks`.

use std::collections::HashMap;

use super::{Finding, OtherSide};

/// Merges the findings sharing an id (the id names the group: kind, line, own drug, rule or
/// moiety) into the first of them, and sorts the result by (line, kind, id). A merged finding's
/// other drugs keep the order they came in, each once, and so do each drug's origins.
pub(super) fn group(findings: Vec<Finding>) -> Vec<Finding> {
    let mut at: HashMap<String, usize> = HashMap::new();
    let mut grouped: Vec<Finding> = Vec::new();
    for f in findings {
        match at.get(&f.id) {
            Some(&i) => merge(&mut grouped[i].others, f.others),
            None => {
                at.insert(f.id.clone(), grouped.len());
                grouped.push(f);
            }
        }
    }
    grouped.sort_by(|a, b| (a.line, a.kind, &a.id).cmp(&(b.line, b.kind, &b.id)));
    grouped
}

fn merge(into: &mut Vec<OtherSide>, from: Vec<OtherSide>) {
    for side in from {
        match into.iter_mut().find(|o| o.drug == side.drug) {
            Some(known) => {
                for origin in side.origins {
                    if !known.origins.contains(&origin) {
                        known.origins.push(origin);
                    }
                }
            }
            None => into.push(side),
        }
    }
}
