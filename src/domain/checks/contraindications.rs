//! The contraindication table (data/clinical/contraindications_structured.csv): parsing, the
//! per-side scope test (moiety, YJ prefix, route) and the symmetric pair lookup, plus the
//! contraindication check itself. Pure: parses `&str`; no IO, no clock, no tonic/prost/store engine.

use std::collections::HashMap;

use crate::domain::master::{Route, moieties_of, parse_csv};

use super::history::{DrugView, ResolvedDrug};

/// Why the table text could not be read. Every variant names the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("line {line}: {msg}")]
    Syntax { line: usize, msg: String },
    #[error("line {line}: column {column}: {msg}: {value:?}")]
    Field {
        line: usize,
        column: &'static str,
        value: String,
        msg: &'static str,
    },
}

/// The `level` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuleLevel {
    /// 併用禁忌 (package insert section 2 / 10.1).
    Contraindicated,
    /// 併用禁忌 only in some patients (`condition`).
    Conditional,
    /// 併用注意: a negative control for the national rule; reported only when switched on.
    Caution,
}

/// One side of a rule: the moiety (all components, for a combination named with ・) and the
/// optional product scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSide {
    /// The ingredient as the table names it (Japanese).
    pub name: String,
    /// The English name.
    pub name_en: String,
    /// Moiety keys (`master::moiety_key`); a product matches only if it contains every one.
    pub moieties: Vec<String>,
    /// YJ-code prefixes; empty = every product of the moiety.
    pub yj_prefixes: Vec<String>,
    /// Routes; empty = any route.
    pub routes: Vec<Route>,
}

impl RuleSide {
    /// Whether a resolved drug is on this side: contains the moiety, passes the prefix test
    /// (on its YJ code, or on a generic-name code for prefixes of at most nine characters, the
    /// part a 一般名コード shares with the YJ code), then the route test.
    pub fn matches(&self, drug: &ResolvedDrug) -> bool {
        self.matches_view(&drug.view())
    }

    /// As `matches`, on a borrowed drug.
    pub(crate) fn matches_view(&self, drug: &DrugView<'_>) -> bool {
        if !self.moieties.iter().all(|m| drug.moieties.contains(m)) {
            return false;
        }
        if !self.yj_prefixes.is_empty() {
            let ok = self.yj_prefixes.iter().any(|p| match drug.yj_code {
                Some(yj) => yj.starts_with(p.as_str()),
                None => drug
                    .generic_code
                    .is_some_and(|g| p.len() <= 9 && g.starts_with(p.as_str())),
            });
            if !ok {
                return false;
            }
        }
        self.routes.is_empty() || drug.route.is_some_and(|r| self.routes.contains(&r))
    }
}

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// 1-based data row (the header is not counted), as `contraindications_structured.md` counts.
    pub row: usize,
    pub a: RuleSide,
    pub b: RuleSide,
    pub level: RuleLevel,
    /// The patient condition of a conditional rule.
    pub condition: Option<String>,
    pub mechanism: String,
    /// `retrieved` = read from the package insert; anything else is a doubt.
    pub verification: String,
    /// The `source_ids` column as written: `;`-separated keys into
    /// contraindication_sources.csv, or a parenthesised note where no key exists.
    pub source: String,
}

impl Rule {
    /// Only rows read from the package insert may produce critical findings.
    pub fn is_authoritative(&self) -> bool {
        self.verification == "retrieved"
    }

    /// A stable rule id: `CI-<row>` (the table's data row).
    pub fn id(&self) -> String {
        format!("CI-{}", self.row)
    }
}

/// A rule matched by an ordered pair (x, y): `x_is_a` says which side x took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleMatch<'a> {
    pub rule: &'a Rule,
    pub x_is_a: bool,
}

/// The parsed table with an index by moiety.
#[derive(Debug, Clone, Default)]
pub struct ContraindicationTable {
    rules: Vec<Rule>,
    by_moiety: HashMap<String, Vec<usize>>,
}

const COLUMNS: [&str; 14] = [
    "ingredient_a",
    "ingredient_a_ja",
    "ingredient_b",
    "ingredient_b_ja",
    "level",
    "a_yj_prefixes",
    "a_routes",
    "b_yj_prefixes",
    "b_routes",
    "condition",
    "mechanism",
    "verification",
    "scope_note",
    "source_ids",
];

fn split_list(s: &str) -> Vec<String> {
    s.split(';')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

impl ContraindicationTable {
    /// Parses the CSV text (UTF-8, header line first, columns found by name).
    pub fn parse(text: &str) -> Result<ContraindicationTable, TableError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let rows = parse_csv(text).map_err(|e| TableError::Syntax {
            line: 0,
            msg: e.to_string(),
        })?;
        let Some(((hline, header), body)) = rows.split_first() else {
            return Err(TableError::Syntax {
                line: 1,
                msg: "no header".into(),
            });
        };
        let mut idx = [0usize; 14];
        for (i, name) in COLUMNS.iter().enumerate() {
            idx[i] = header
                .iter()
                .position(|h| h.trim() == *name)
                .ok_or_else(|| TableError::Syntax {
                    line: *hline,
                    msg: format!("no column {name}"),
                })?;
        }
        let mut table = ContraindicationTable::default();
        let mut row_no = 0;
        for (line, f) in body {
            if f.iter().all(|x| x.trim().is_empty()) {
                continue;
            }
            row_no += 1;
            let line = *line;
            let get = |i: usize| f.get(idx[i]).map(|s| s.trim()).unwrap_or("");
            let field = |i: usize, msg: &'static str| TableError::Field {
                line,
                column: COLUMNS[i],
                value: get(i).to_owned(),
                msg,
            };
            let level = match get(4) {
                "contraindicated" => RuleLevel::Contraindicated,
                "contraindicated_conditional" => RuleLevel::Conditional,
                "caution" => RuleLevel::Caution,
                _ => return Err(field(4, "unknown level")),
            };
            let routes = |i: usize| -> Result<Vec<Route>, TableError> {
                split_list(get(i))
                    .iter()
                    .map(|r| match r.as_str() {
                        "oral" => Ok(Route::Oral),
                        "injection" => Ok(Route::Injection),
                        "external" => Ok(Route::External),
                        _ => Err(field(i, "unknown route")),
                    })
                    .collect()
            };
            let prefixes = |i: usize| -> Result<Vec<String>, TableError> {
                let p = split_list(get(i));
                if p.iter()
                    .any(|x| x.len() > 12 || !x.bytes().all(|b| b.is_ascii_alphanumeric()))
                {
                    return Err(field(i, "expected YJ-code prefixes"));
                }
                Ok(p)
            };
            let side =
                |en: usize, ja: usize, pre: usize, rt: usize| -> Result<RuleSide, TableError> {
                    let moieties = moieties_of(get(ja));
                    if moieties.is_empty() {
                        return Err(field(ja, "empty ingredient"));
                    }
                    Ok(RuleSide {
                        name: get(ja).to_owned(),
                        name_en: get(en).to_owned(),
                        moieties,
                        yj_prefixes: prefixes(pre)?,
                        routes: routes(rt)?,
                    })
                };
            let verification = get(11).to_owned();
            if verification.is_empty() {
                return Err(field(11, "empty verification"));
            }
            let rule = Rule {
                row: row_no,
                a: side(0, 1, 5, 6)?,
                b: side(2, 3, 7, 8)?,
                level,
                condition: Some(get(9).to_owned()).filter(|c| !c.is_empty()),
                mechanism: get(10).to_owned(),
                verification,
                source: get(13).to_owned(),
            };
            table.push(rule);
        }
        Ok(table)
    }

    fn push(&mut self, rule: Rule) {
        let i = self.rules.len();
        let mut keys: Vec<&String> = rule.a.moieties.iter().chain(&rule.b.moieties).collect();
        keys.dedup();
        for k in keys {
            let v = self.by_moiety.entry(k.clone()).or_default();
            if !v.contains(&i) {
                v.push(i);
            }
        }
        self.rules.push(rule);
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every rule the pair (x, y) meets, in either orientation (the table is symmetric), in row
    /// order. A rule whose two sides both match in both orientations is reported once.
    pub fn lookup<'a>(&'a self, x: &ResolvedDrug, y: &ResolvedDrug) -> Vec<RuleMatch<'a>> {
        self.rules_of(&x.view()).matching(&y.view()).collect()
    }

    /// The rules `x` is on a side of, in row order: the half of a pair lookup that depends on `x`
    /// alone, done once per new line rather than once per pair.
    pub(crate) fn rules_of(&self, x: &DrugView<'_>) -> RulesOf<'_> {
        let mut candidates: Vec<usize> = x
            .moieties
            .iter()
            .filter_map(|m| self.by_moiety.get(m))
            .flatten()
            .copied()
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        RulesOf(
            candidates
                .into_iter()
                .map(|i| &self.rules[i])
                .map(|rule| SidedRule {
                    rule,
                    x_on_a: rule.a.matches_view(x),
                    x_on_b: rule.b.matches_view(x),
                })
                .filter(|s| s.x_on_a || s.x_on_b)
                .collect(),
        )
    }
}

/// A rule and the sides one drug matches.
#[derive(Debug, Clone, Copy)]
struct SidedRule<'a> {
    rule: &'a Rule,
    x_on_a: bool,
    x_on_b: bool,
}

/// The rules one drug `x` is on a side of (`ContraindicationTable::rules_of`).
#[derive(Debug, Clone)]
pub(crate) struct RulesOf<'a>(Vec<SidedRule<'a>>);

impl<'a> RulesOf<'a> {
    /// The rules the pair (x, y) meets, as `ContraindicationTable::lookup`.
    pub(crate) fn matching<'s>(
        &'s self,
        y: &'s DrugView<'_>,
    ) -> impl Iterator<Item = RuleMatch<'a>> + 's {
        self.0.iter().filter_map(|s| {
            let x_is_a = if s.x_on_a && s.rule.b.matches_view(y) {
                true
            } else if s.x_on_b && s.rule.a.matches_view(y) {
                false
            } else {
                return None;
            };
            Some(RuleMatch {
                rule: s.rule,
                x_is_a,
            })
        })
    }
}
