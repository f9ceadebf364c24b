//! The two MHLW lists that name a product's ingredients ([`Ingredients`]): the
//! 薬価基準収載品目リスト (成分名 by YJ code) and the 一般名処方マスタ (成分名 by 一般名コード), and
//! the resolution of a product's 成分名 through them. Pure: parsers take `&str`; no IO, no clock,
//! no tonic/prost/store engine; knows nothing of the y-file.

use std::collections::HashMap;

use super::{
    csv::parse_csv,
    error::{MasterError, field_err},
};

/// 成分名 by YJ code (MHLW 薬価基準収載品目リスト) and by 一般名コード (一般名処方マスタ).
#[derive(Debug, Clone, Default)]
pub struct Ingredients {
    by_yj: HashMap<String, String>,
    /// 成分名 by the YJ code's first nine characters (ingredient, form, strength) where every
    /// listed product of that stem agrees; `None` marks a stem whose products disagree.
    by_yj_stem: HashMap<String, Option<String>>,
    pub(super) by_generic: HashMap<String, String>,
}

fn header_index(header: &[String], name: &'static str, line: usize) -> Result<usize, MasterError> {
    header
        .iter()
        .position(|h| h.trim() == name)
        .ok_or(MasterError::Syntax {
            line,
            msg: format!("no column {name}"),
        })
}

fn keyed_column(
    rows: &[(usize, Vec<String>)],
    key: &'static str,
    value: &'static str,
) -> Result<HashMap<String, String>, MasterError> {
    let Some(((hline, header), body)) = rows.split_first() else {
        return Err(MasterError::Syntax {
            line: 1,
            msg: "no header".into(),
        });
    };
    let (k, v) = (
        header_index(header, key, *hline)?,
        header_index(header, value, *hline)?,
    );
    let mut map = HashMap::with_capacity(body.len());
    for (line, f) in body {
        if f.iter().all(|x| x.is_empty()) {
            continue;
        }
        let code = f.get(k).map(String::as_str).unwrap_or("");
        let name = f.get(v).map(String::as_str).unwrap_or("");
        if code.len() != 12 || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(field_err(
                *line,
                k + 1,
                code,
                "expected a 12-character code",
            ));
        }
        if name.is_empty() {
            return Err(field_err(*line, v + 1, name, "empty 成分名"));
        }
        map.insert(code.to_owned(), name.to_owned());
    }
    Ok(map)
}

fn strip_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

impl Ingredients {
    /// Reads the MHLW 薬価基準収載品目リスト (UTF-8 CSV, header line first).
    pub fn parse_yakka_list(text: &str) -> Result<HashMap<String, String>, MasterError> {
        keyed_column(
            &parse_csv(strip_bom(text))?,
            "薬価基準収載医薬品コード",
            "成分名",
        )
    }

    /// Reads the 一般名処方マスタ (UTF-8 CSV, two title lines, then the header).
    pub fn parse_ippan_master(text: &str) -> Result<HashMap<String, String>, MasterError> {
        let rows = parse_csv(strip_bom(text))?;
        if rows.len() < 3 {
            return Err(MasterError::Syntax {
                line: rows.len() + 1,
                msg: "expected two title lines and a header".into(),
            });
        }
        keyed_column(&rows[2..], "一般名コード", "成分名")
    }

    /// Both lists.
    pub fn from_texts(yakka_list: &str, ippan_master: &str) -> Result<Ingredients, MasterError> {
        Ok(Self::from_maps(
            Self::parse_yakka_list(yakka_list)?,
            Self::parse_ippan_master(ippan_master)?,
        ))
    }

    /// From 成分名 by YJ code and by 一般名コード.
    pub fn from_maps(
        by_yj: HashMap<String, String>,
        by_generic: HashMap<String, String>,
    ) -> Ingredients {
        let mut by_yj_stem: HashMap<String, Option<String>> = HashMap::new();
        for (yj, name) in &by_yj {
            let Some(stem) = yj.get(..9) else { continue };
            by_yj_stem
                .entry(stem.to_owned())
                .and_modify(|n| {
                    if n.as_deref() != Some(name) {
                        *n = None;
                    }
                })
                .or_insert_with(|| Some(name.clone()));
        }
        Ingredients {
            by_yj,
            by_yj_stem,
            by_generic,
        }
    }

    /// 成分名 of a product: by YJ code in the MHLW list; else by its 一般名コード, or the YJ code's
    /// first nine characters + ZZZ, in the 一般名処方マスタ; else from the MHLW list's products
    /// sharing the YJ code's first nine characters (ingredient, form and strength).
    pub fn resolve(&self, yj: Option<&str>, generic_name_code: Option<&str>) -> Option<&str> {
        yj.and_then(|y| self.by_yj(y))
            .or_else(|| generic_name_code.and_then(|g| self.by_generic(g)))
            .or_else(|| {
                let stem = yj?.get(..9)?;
                self.by_generic(&format!("{stem}ZZZ"))
            })
            .or_else(|| self.by_yj_stem(yj?))
    }

    /// 成分名 shared by every listed product whose YJ code starts with the same nine characters.
    pub fn by_yj_stem(&self, yj: &str) -> Option<&str> {
        self.by_yj_stem.get(yj.get(..9)?)?.as_deref()
    }

    /// 成分名 of a YJ code.
    pub fn by_yj(&self, yj: &str) -> Option<&str> {
        self.by_yj.get(yj).map(String::as_str)
    }

    /// 成分名 of a 一般名コード.
    pub fn by_generic(&self, code: &str) -> Option<&str> {
        self.by_generic.get(code).map(String::as_str)
    }
}
