//! Product lookup ([`Catalog`]): the y-master with the ingredient lists, every product and every
//! 一般名コード resolved once to what the checks see ([`Product`], [`GenericName`]: moieties,
//! [`Route`], class). Pure: no IO, no clock, no tonic/prost/store engine.

use std::{collections::HashMap, fmt};

use super::{
    ingredients::Ingredients,
    moiety::moieties_of,
    y_file::{DosageForm, YRecord},
    y_master::Master,
};

/// Route of administration, from the YJ code's digits 5–7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Oral,
    Injection,
    External,
}

impl Route {
    /// Digits 5–7 of a YJ or generic-name code: 001–399 oral, 400–699 injection, 700–999 external.
    pub fn from_yj(code: &str) -> Option<Route> {
        let serial: u16 = code.get(4..7)?.parse().ok()?;
        match serial {
            1..=399 => Some(Route::Oral),
            400..=699 => Some(Route::Injection),
            700..=999 => Some(Route::External),
            _ => None,
        }
    }

    /// The route a 剤形 implies (dental and other products have none).
    pub fn from_dosage_form(form: DosageForm) -> Option<Route> {
        match form {
            DosageForm::Internal => Some(Route::Oral),
            DosageForm::Injection => Some(Route::Injection),
            DosageForm::External => Some(Route::External),
            DosageForm::Dental | DosageForm::Other => None,
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Route::Oral => "oral",
            Route::Injection => "injection",
            Route::External => "external",
        })
    }
}

/// A product as the checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    pub receipt_code: String,
    pub yj_code: String,
    pub name: String,
    /// Active-moiety keys; empty when no ingredient list names the product.
    pub moieties: Vec<String>,
    /// From the YJ code's digits 5–7; `None` if the YJ code has no valid serial.
    pub route: Option<Route>,
    /// The YJ code's first four digits (薬効分類).
    pub class: String,
    /// Not abolished.
    pub current: bool,
}

/// What a 一般名コード stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericName {
    pub code: String,
    pub moieties: Vec<String>,
    pub route: Option<Route>,
}

/// The master with ingredient lists: resolves codes to products and moieties. Every product and
/// every 一般名コード is resolved once, here: a moiety key costs normalisation and string work that
/// the checks, run inside the store's writer, cannot afford per call.
#[derive(Debug, Clone)]
pub struct Catalog {
    master: Master,
    ingredients: Ingredients,
    /// The product of every record, by receipt code.
    products: HashMap<String, Product>,
    /// Receipt codes by YJ code, sorted.
    by_yj: HashMap<String, Vec<String>>,
    /// What every 一般名コード of the 一般名処方マスタ stands for.
    generics: HashMap<String, GenericName>,
}

impl Catalog {
    pub fn new(master: Master, ingredients: Ingredients) -> Catalog {
        let mut by_yj: HashMap<String, Vec<String>> = HashMap::new();
        for r in master.records() {
            if let Some(yj) = &r.yj_code {
                by_yj
                    .entry(yj.clone())
                    .or_default()
                    .push(r.receipt_code.clone());
            }
        }
        for codes in by_yj.values_mut() {
            codes.sort();
        }
        let generics = ingredients
            .by_generic
            .iter()
            .map(|(code, name)| {
                let generic = GenericName {
                    code: code.clone(),
                    moieties: moieties_of(name),
                    route: Route::from_yj(code),
                };
                (code.clone(), generic)
            })
            .collect();
        let mut catalog = Catalog {
            master,
            ingredients,
            products: HashMap::new(),
            by_yj,
            generics,
        };
        catalog.products = catalog
            .master
            .records()
            .map(|r| (r.receipt_code.clone(), catalog.product_of(r)))
            .collect();
        catalog
    }

    pub fn master(&self) -> &Master {
        &self.master
    }

    /// 成分名 of a record: a "(選)" 67-code uses its original's; else by YJ code in the MHLW list;
    /// else by the record's 一般名コード, or the YJ code's first nine characters + ZZZ, in the
    /// 一般名処方マスタ; else from the MHLW list's products sharing the YJ code's first nine
    /// characters (a product delisted from the 2025 list while still current in the y-master).
    pub fn ingredient_name(&self, record: &YRecord) -> Option<&str> {
        let record = match record.original_code().and_then(|c| self.master.record(c)) {
            Some(original) => original,
            None => record,
        };
        self.ingredients.resolve(
            record.yj_code.as_deref(),
            record.generic_name_code.as_deref(),
        )
    }

    fn product_of(&self, r: &YRecord) -> Product {
        let yj = r.yj_code.clone().unwrap_or_default();
        Product {
            receipt_code: r.receipt_code.clone(),
            route: Route::from_yj(&yj),
            class: yj.get(..4).unwrap_or("").to_owned(),
            yj_code: yj,
            name: r.name.clone().unwrap_or_default(),
            moieties: self.ingredient_name(r).map(moieties_of).unwrap_or_default(),
            current: r.is_current(),
        }
    }

    /// The product of a receipt code.
    pub fn product(&self, receipt_code: &str) -> Option<&Product> {
        self.products.get(receipt_code)
    }

    /// The products sharing a YJ code (a brand and its "(選)" 67-code, for one), by receipt code.
    pub fn yj_products(&self, yj_code: &str) -> impl Iterator<Item = &Product> + Clone {
        self.by_yj
            .get(yj_code)
            .into_iter()
            .flatten()
            .filter_map(|c| self.product(c))
    }

    /// A 一般名コード's moieties (from the 一般名処方マスタ) and route (from its digits 5–7).
    pub fn generic(&self, code: &str) -> Option<&GenericName> {
        self.generics.get(code)
    }

    /// An owned copy of `product`.
    pub fn by_receipt(&self, receipt_code: &str) -> Option<Product> {
        self.product(receipt_code).cloned()
    }

    /// Owned copies of `yj_products`.
    pub fn by_yj(&self, yj_code: &str) -> Vec<Product> {
        self.yj_products(yj_code).cloned().collect()
    }

    /// An owned copy of `generic`.
    pub fn by_generic(&self, code: &str) -> Option<GenericName> {
        self.generic(code).cloned()
    }

    /// All products, in no particular order.
    pub fn products(&self) -> impl Iterator<Item = Product> + '_ {
        self.products.values().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_from_yj_digits() {
        assert_eq!(Route::from_yj("2325003B2029"), Some(Route::Oral));
        assert_eq!(Route::from_yj("1214405A3036"), Some(Route::Injection));
        assert_eq!(Route::from_yj("2649735S1024"), Some(Route::External));
        assert_eq!(Route::from_yj("1214000A3036"), None);
        assert_eq!(Route::from_yj("12"), None);
    }
}
