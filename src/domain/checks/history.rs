//! What a check reads: drug codes resolved through the `Catalog` to moieties, route and class;
//! the patient's history medications and their active period. Pure: no IO, no clock (the check
//! date is a parameter), no tonic/prost/store engine; depends only on `domain::master`, `time`, `ids`.

use std::borrow::Cow;
use std::fmt;

use crate::domain::hash;
use crate::domain::ids::InstitutionCode;
use crate::domain::master::{Catalog, Route};
use crate::domain::time::JapanDate;

/// Days assumed for external-use and as-needed drugs, whose period cannot be computed.
pub const ASSUMED_DAYS: u32 = 14;

/// A drug code as a prescription or dispensing record carries it (kinds 2, 4 and 7).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DrugCode {
    /// レセ電コード, 9 digits (a "(選)" 67-code resolves to its original's ingredient).
    Receipt(String),
    /// YJ code, 12 characters.
    Yj(String),
    /// 一般名コード, 12 characters.
    Generic(String),
}

impl DrugCode {
    pub fn as_str(&self) -> &str {
        match self {
            DrugCode::Receipt(c) | DrugCode::Yj(c) | DrugCode::Generic(c) => c,
        }
    }
}

/// A code resolved to what the checks compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedDrug {
    pub code: DrugCode,
    /// The product name (漢字名称), or for a generic-name code the code's ingredient names.
    pub name: String,
    /// The product's YJ code; `None` for a generic-name code.
    pub yj_code: Option<String>,
    /// The generic-name code, when the line was written with one.
    pub generic_code: Option<String>,
    /// Active-moiety keys (never empty: a code without moieties is unresolved).
    pub moieties: Vec<String>,
    pub route: Option<Route>,
    /// 薬効分類: the YJ (or generic-name) code's first four digits.
    pub class: String,
}

impl ResolvedDrug {
    pub(crate) fn view(&self) -> DrugView<'_> {
        DrugView {
            code: &self.code,
            product_name: Some(&self.name),
            yj_code: self.yj_code.as_deref(),
            generic_code: self.generic_code.as_deref(),
            moieties: &self.moieties,
            route: self.route,
            class: &self.class,
        }
    }
}

/// Resolves a code; `None` if it is unknown or names no ingredient. A YJ code shared by several
/// products (a brand and its "(選)" code) resolves to the first current one by receipt code.
pub fn resolve(catalog: &Catalog, code: &DrugCode) -> Option<ResolvedDrug> {
    let view = DrugView::resolve(catalog, code)?;
    Some(ResolvedDrug {
        code: code.clone(),
        name: view.name().into_owned(),
        yj_code: view.yj_code.map(str::to_owned),
        generic_code: view.generic_code.map(str::to_owned),
        moieties: view.moieties.to_vec(),
        route: view.route,
        class: view.class.to_owned(),
    })
}

/// A `ResolvedDrug` borrowed from the catalog and the code: what `check` compares, without a copy
/// per history medication.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DrugView<'a> {
    pub code: &'a DrugCode,
    /// `None` for a generic-name code, named by its moieties.
    product_name: Option<&'a str>,
    pub yj_code: Option<&'a str>,
    pub generic_code: Option<&'a str>,
    pub moieties: &'a [String],
    pub route: Option<Route>,
    pub class: &'a str,
}

impl<'a> DrugView<'a> {
    /// As `resolve`.
    pub(crate) fn resolve(catalog: &'a Catalog, code: &'a DrugCode) -> Option<DrugView<'a>> {
        let product = match code {
            DrugCode::Receipt(c) => catalog.product(c)?,
            DrugCode::Yj(c) => {
                let mut products = catalog.yj_products(c).filter(|p| !p.moieties.is_empty());
                products
                    .clone()
                    .find(|p| p.current)
                    .or_else(|| products.next())?
            }
            DrugCode::Generic(c) => {
                let g = catalog.generic(c)?;
                return (!g.moieties.is_empty()).then_some(DrugView {
                    code,
                    product_name: None,
                    yj_code: None,
                    generic_code: Some(&g.code),
                    moieties: &g.moieties,
                    route: g.route,
                    class: c.get(..4).unwrap_or(""),
                });
            }
        };
        (!product.moieties.is_empty()).then_some(DrugView {
            code,
            product_name: Some(&product.name),
            yj_code: Some(product.yj_code.as_str()).filter(|y| !y.is_empty()),
            generic_code: None,
            moieties: &product.moieties,
            route: product.route,
            class: &product.class,
        })
    }

    /// The product name, or for a generic-name code its moieties joined with ・.
    pub(crate) fn name(&self) -> Cow<'a, str> {
        match self.product_name {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(self.moieties.join("・")),
        }
    }
}

/// How long a medication lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Supply {
    /// Days supplied (投与日数); 0 is treated as 1.
    Days(u32),
    /// 頓服: 14 days assumed.
    AsNeeded,
    /// 外用: 14 days assumed.
    External,
}

/// Where a history medication comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A line of a REGISTERED or ACCEPTED prescription not yet dispensed (start = issue date).
    Prescription,
    /// A dispensing record (start = dispensing date).
    Dispensing,
}

/// The other side's origin, as a finding reports it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Source {
    pub kind: SourceKind,
    /// The prescribing institution or the dispensing pharmacy.
    pub code: InstitutionCode,
    /// Issue or dispensing date.
    pub date: JapanDate,
}

/// One medication of the patient's history. The caller builds the history: undispensed lines of
/// REGISTERED/ACCEPTED prescriptions and dispensing-record lines, never the prescription being
/// checked, each dispensed line only through its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Medication {
    pub drug: DrugCode,
    /// Issue date (undispensed line) or dispensing date (dispensed).
    pub start: JapanDate,
    pub supply: Supply,
    pub source: Source,
    /// The institution that prescribed it (for a dispensing record, the original prescription's
    /// institution, when known): the same-institution exclusion compares this; `None` falls back
    /// to `source.code`.
    pub prescriber: Option<InstitutionCode>,
    /// Which history line this is; history entries sharing one are counted once.
    pub source_id: SourceId,
}

/// A history line's identity, which finding ids name the other side by: a line of a prescription,
/// or of one of its dispensing records. Rendered (only when a finding needs it) as
/// `rx:<prescription>:<line>` or `disp:<prescription>:<record>:<line>`, the prescription id in
/// lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceId {
    pub prescription: [u8; 16],
    /// The dispensing record's number; `None` for a line not dispensed.
    pub record: Option<u32>,
    pub line: u32,
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = hash::hex(&self.prescription);
        match self.record {
            None => write!(f, "rx:{id}:{}", self.line),
            Some(record) => write!(f, "disp:{id}:{record}:{}", self.line),
        }
    }
}

impl Medication {
    /// Days the medication lasts; external-use and as-needed count 14, as does any product whose
    /// route is external (a quantity, not a period, is what an external line supplies).
    pub fn days(&self, route: Option<Route>) -> u32 {
        match self.supply {
            Supply::AsNeeded | Supply::External => ASSUMED_DAYS,
            Supply::Days(_) if route == Some(Route::External) => ASSUMED_DAYS,
            Supply::Days(n) => n.max(1),
        }
    }

    /// The last day the medication is active: start + days − 1.
    pub fn last_day(&self, route: Option<Route>) -> JapanDate {
        let days = i32::try_from(self.days(route)).unwrap_or(i32::MAX / 2);
        self.start.add_days(days - 1)
    }

    /// Active on `date` iff date ∈ [start, start + days − 1].
    pub fn is_active_on(&self, date: JapanDate, route: Option<Route>) -> bool {
        self.start <= date && date <= self.last_day(route)
    }

    /// Whether the medication is active on `date` by some route. When it is not, it is inactive
    /// whatever its code resolves to, and the code need not be resolved.
    pub fn may_be_active_on(&self, date: JapanDate) -> bool {
        // The route changes the period only by making it external.
        self.is_active_on(date, None) || self.is_active_on(date, Some(Route::External))
    }

    /// The institution the same-institution exclusion compares.
    pub fn prescribing_institution(&self) -> &InstitutionCode {
        self.prescriber.as_ref().unwrap_or(&self.source.code)
    }
}
