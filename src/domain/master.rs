//! The drug master: parsers for the SSK 医薬品マスター y-file (full and update files), the MHLW
//! 薬価基準収載品目リスト and the 一般名処方マスタ, update application, the active-moiety key and
//! product lookup. Pure: parsers take bytes or `&str`; no IO, no clock, no tonic/prost/store engine.

use std::collections::HashMap;
use std::fmt;

/// Column 31 value the SSK file uses for "not abolished".
pub const NOT_ABOLISHED: u32 = 99_999_999;

/// Why a master file could not be read or applied. Every variant names where the problem is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MasterError {
    #[error("line {line}: {msg}")]
    Syntax { line: usize, msg: String },
    #[error("line {line}: expected 40 or 42 columns, found {found}")]
    ColumnCount { line: usize, found: usize },
    #[error("line {line}, column {column}: {msg}: {value:?}")]
    Field {
        line: usize,
        column: usize,
        value: String,
        msg: &'static str,
    },
    #[error("line {line}: receipt code {code} ({kind:?}) is not in the master")]
    UnknownCode {
        line: usize,
        code: String,
        kind: ChangeKind,
    },
    #[error("line {line}: receipt code {code} is new (3) but already in the master")]
    DuplicateCode { line: usize, code: String },
    #[error("line {line}: missing column {column} ({name})")]
    MissingColumn {
        line: usize,
        column: usize,
        name: &'static str,
    },
    #[error("the text is not valid {0}")]
    Encoding(&'static str),
}

// ---------------------------------------------------------------------------------------------
// CSV

/// Splits RFC 4180 CSV text into records of fields. Quoted fields may hold commas, doubled quotes
/// and line breaks; records end at LF or CRLF. Returns each record with its 1-based line number.
/// A blank final line is not a record.
pub fn parse_csv(text: &str) -> Result<Vec<(usize, Vec<String>)>, MasterError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    let mut line = 1usize;
    while chars.peek().is_some() {
        let start_line = line;
        let mut record = Vec::new();
        loop {
            let mut field = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        None => {
                            return Err(MasterError::Syntax {
                                line: start_line,
                                msg: "unterminated quoted field".into(),
                            });
                        }
                        Some('"') if chars.peek() == Some(&'"') => {
                            chars.next();
                            field.push('"');
                        }
                        Some('"') => break,
                        Some(c) => {
                            if c == '\n' {
                                line += 1;
                            }
                            field.push(c);
                        }
                    }
                }
                match chars.peek() {
                    None | Some(',') | Some('\r') | Some('\n') => {}
                    Some(c) => {
                        return Err(MasterError::Syntax {
                            line,
                            msg: format!("unexpected {c:?} after a closing quote"),
                        });
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if matches!(c, ',' | '\r' | '\n') {
                        break;
                    }
                    if c == '"' {
                        return Err(MasterError::Syntax {
                            line,
                            msg: "quote inside an unquoted field".into(),
                        });
                    }
                    field.push(c);
                    chars.next();
                }
            }
            record.push(field);
            match chars.next() {
                Some(',') => continue,
                Some('\r') => {
                    if chars.next() != Some('\n') {
                        return Err(MasterError::Syntax {
                            line,
                            msg: "CR not followed by LF".into(),
                        });
                    }
                    line += 1;
                    break;
                }
                Some('\n') => {
                    line += 1;
                    break;
                }
                None => break,
                Some(_) => unreachable!("fields stop only at a separator"),
            }
        }
        out.push((start_line, record));
    }
    Ok(out)
}

/// Decodes the cp932 (Windows-31J) bytes SSK publishes. encoding_rs's `SHIFT_JIS` is the WHATWG
/// Shift_JIS decoder, which is Windows-31J (NEC and IBM extensions included). Invalid bytes are an
/// error, never replaced.
pub fn decode_cp932(bytes: &[u8]) -> Result<String, MasterError> {
    encoding_rs::SHIFT_JIS
        .decode_without_bom_handling_and_without_replacement(bytes)
        .map(|s| s.into_owned())
        .ok_or(MasterError::Encoding("cp932"))
}

// ---------------------------------------------------------------------------------------------
// The y-file

/// Column 1, 変更区分.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// 0 継続
    Continued,
    /// 1 抹消: the record is deleted.
    Deleted,
    /// 2 復活: an abolished record is restored.
    Restored,
    /// 3 新規
    New,
    /// 5 変更: only the non-empty fields change.
    Changed,
    /// 9 廃止: carries the code and the 廃止年月日.
    Abolished,
}

impl ChangeKind {
    fn from_field(s: &str) -> Option<Self> {
        Some(match s {
            "0" => Self::Continued,
            "1" => Self::Deleted,
            "2" => Self::Restored,
            "3" => Self::New,
            "5" => Self::Changed,
            "9" => Self::Abolished,
            _ => return None,
        })
    }
}

/// Column 28, 剤形.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DosageForm {
    /// 1 内用
    Internal,
    /// 3 その他 (billing pseudo-products such as 薬剤料減点; no YJ code)
    Other,
    /// 4 注射
    Injection,
    /// 6 外用
    External,
    /// 8 歯科用
    Dental,
}

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

/// One y-file row, typed. Every data field is `None` where the row leaves it empty (update rows
/// of kind 5 and 9 are partial); in a full file the key fields are always present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YRecord {
    /// 1-based line in the source file.
    pub line: usize,
    /// Column 1.
    pub kind: ChangeKind,
    /// Column 3: 9-digit receipt code.
    pub receipt_code: String,
    /// Column 5: 漢字名称.
    pub name: Option<String>,
    /// Column 10: 単位漢字名称.
    pub unit: Option<String>,
    /// Column 12: 新又は現金額 (as published, e.g. "16.50").
    pub price: Option<String>,
    /// Column 14: 麻薬・毒薬・覚醒剤原料・向精神薬.
    pub narcotic_class: Option<u8>,
    /// Column 17: 後発品.
    pub generic_flag: Option<u8>,
    /// Column 28: 剤形.
    pub dosage_form: Option<DosageForm>,
    /// Column 30: 変更年月日 (YYYYMMDD).
    pub changed_on: Option<u32>,
    /// Column 31: 廃止年月日 (YYYYMMDD; 99999999 = not abolished).
    pub abolished_on: Option<u32>,
    /// Column 32: YJ code (12 chars, not unique per product).
    pub yj_code: Option<String>,
    /// Column 34: 経過措置年月日又は商品名医薬品コード使用期限 (YYYYMMDD; 0 = none).
    pub transitional_until: Option<u32>,
    /// Column 37: 一般名コード (12 chars; "" in a full file = none).
    pub generic_name_code: Option<String>,
    /// Column 38: 一般名処方の標準的な記載.
    pub generic_name_label: Option<String>,
    /// Column 41: 長期収載品関連 (a "(選)" 67-code's original receipt code; "0" = none).
    pub long_listed_original: Option<String>,
    /// Column 42: 選定療養区分.
    pub selective_care: Option<String>,
}

impl YRecord {
    /// Whether the record is not abolished (column 31 is 99999999).
    pub fn is_current(&self) -> bool {
        self.abolished_on == Some(NOT_ABOLISHED)
    }

    /// Whether the product may be used on `date` (YYYYMMDD): not abolished by then, and any
    /// transitional-measure expiry (column 34) not passed.
    pub fn is_usable_on(&self, date: u32) -> bool {
        let abolished = matches!(self.abolished_on, Some(d) if d <= date);
        let expired = matches!(self.transitional_until, Some(d) if d != 0 && d < date);
        !abolished && !expired
    }

    /// The original product's receipt code of a "(選)" 67-code (column 41), if any.
    pub fn original_code(&self) -> Option<&str> {
        self.long_listed_original
            .as_deref()
            .filter(|c| *c != "0" && !c.is_empty())
    }

    /// Overwrites the fields `update` fills (a 変更 row).
    fn merge(&mut self, update: &YRecord) {
        fn set<T: Clone>(dst: &mut Option<T>, src: &Option<T>) {
            if let Some(v) = src {
                *dst = Some(v.clone());
            }
        }
        self.line = update.line;
        set(&mut self.name, &update.name);
        set(&mut self.unit, &update.unit);
        set(&mut self.price, &update.price);
        set(&mut self.narcotic_class, &update.narcotic_class);
        set(&mut self.generic_flag, &update.generic_flag);
        set(&mut self.dosage_form, &update.dosage_form);
        set(&mut self.changed_on, &update.changed_on);
        set(&mut self.abolished_on, &update.abolished_on);
        set(&mut self.yj_code, &update.yj_code);
        set(&mut self.transitional_until, &update.transitional_until);
        set(&mut self.generic_name_code, &update.generic_name_code);
        set(&mut self.generic_name_label, &update.generic_name_label);
        set(&mut self.long_listed_original, &update.long_listed_original);
        set(&mut self.selective_care, &update.selective_care);
    }
}

fn field_err(line: usize, column: usize, value: &str, msg: &'static str) -> MasterError {
    MasterError::Field {
        line,
        column,
        value: value.to_owned(),
        msg,
    }
}

fn opt(f: &[String], column: usize) -> Option<&str> {
    f.get(column - 1)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

fn opt_string(f: &[String], column: usize) -> Option<String> {
    opt(f, column).map(str::to_owned)
}

fn opt_digits(
    f: &[String],
    line: usize,
    column: usize,
    len: usize,
) -> Result<Option<String>, MasterError> {
    match opt(f, column) {
        None => Ok(None),
        Some(v) if v.len() == len && v.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(v.to_owned()))
        }
        Some(v) => Err(field_err(line, column, v, "expected a digit code")),
    }
}

fn opt_date(
    f: &[String],
    line: usize,
    column: usize,
    zero_ok: bool,
) -> Result<Option<u32>, MasterError> {
    match opt(f, column) {
        None => Ok(None),
        Some("0") if zero_ok => Ok(Some(0)),
        Some(v) => {
            let ok = v.len() == 8 && v.bytes().all(|b| b.is_ascii_digit());
            let n: u32 = if ok { v.parse().unwrap_or(0) } else { 0 };
            let (m, d) = (n / 100 % 100, n % 100);
            if n == NOT_ABOLISHED || (ok && (1..=12).contains(&m) && (1..=31).contains(&d)) {
                Ok(Some(n))
            } else {
                Err(field_err(line, column, v, "expected a date YYYYMMDD"))
            }
        }
    }
}

fn opt_small(f: &[String], line: usize, column: usize) -> Result<Option<u8>, MasterError> {
    match opt(f, column) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| field_err(line, column, v, "expected a small number")),
    }
}

fn opt_code12(f: &[String], line: usize, column: usize) -> Result<Option<String>, MasterError> {
    match opt(f, column) {
        None => Ok(None),
        Some(v) if v.len() == 12 && v.bytes().all(|b| b.is_ascii_alphanumeric()) => {
            Ok(Some(v.to_owned()))
        }
        Some(v) => Err(field_err(line, column, v, "expected a 12-character code")),
    }
}

fn parse_y_row(line: usize, f: &[String]) -> Result<YRecord, MasterError> {
    if f.len() != 40 && f.len() != 42 {
        return Err(MasterError::ColumnCount {
            line,
            found: f.len(),
        });
    }
    let kind = ChangeKind::from_field(&f[0])
        .ok_or_else(|| field_err(line, 1, &f[0], "unknown 変更区分"))?;
    if f[1] != "Y" {
        return Err(field_err(line, 2, &f[1], "マスター種別 must be Y"));
    }
    let receipt_code = opt_digits(f, line, 3, 9)?
        .ok_or_else(|| field_err(line, 3, "", "expected a digit code"))?;
    let dosage_form = match opt(f, 28) {
        None => None,
        Some("1") => Some(DosageForm::Internal),
        Some("3") => Some(DosageForm::Other),
        Some("4") => Some(DosageForm::Injection),
        Some("6") => Some(DosageForm::External),
        Some("8") => Some(DosageForm::Dental),
        Some(v) => return Err(field_err(line, 28, v, "unknown 剤形")),
    };
    let long_listed_original = match opt(f, 41) {
        None => None,
        Some("0") => Some("0".to_owned()),
        Some(_) => opt_digits(f, line, 41, 9)?,
    };
    Ok(YRecord {
        line,
        kind,
        receipt_code,
        name: opt_string(f, 5),
        unit: opt_string(f, 10),
        price: opt_string(f, 12),
        narcotic_class: opt_small(f, line, 14)?,
        generic_flag: opt_small(f, line, 17)?,
        dosage_form,
        changed_on: opt_date(f, line, 30, false)?,
        abolished_on: opt_date(f, line, 31, false)?,
        yj_code: opt_code12(f, line, 32)?,
        transitional_until: opt_date(f, line, 34, true)?,
        generic_name_code: opt_code12(f, line, 37)?,
        generic_name_label: opt_string(f, 38),
        long_listed_original,
        selective_care: opt_string(f, 42),
    })
}

/// Parses a y-file (full or update) from its published cp932 bytes.
pub fn parse_y_file(bytes: &[u8]) -> Result<Vec<YRecord>, MasterError> {
    parse_y_text(&decode_cp932(bytes)?)
}

/// Parses y-file text already decoded to UTF-8.
pub fn parse_y_text(text: &str) -> Result<Vec<YRecord>, MasterError> {
    parse_csv(text)?
        .iter()
        .map(|(line, f)| parse_y_row(*line, f))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The master and its updates

/// What one update file did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateSummary {
    pub added: usize,
    pub changed: usize,
    pub abolished: usize,
    pub deleted: usize,
    pub restored: usize,
    /// 0 継続 rows in an update file: treated like 変更 (non-empty fields overwrite).
    pub continued: usize,
}

/// The SSK drug master keyed by receipt code.
#[derive(Debug, Clone, Default)]
pub struct Master {
    records: HashMap<String, YRecord>,
}

impl Master {
    /// Builds the master from a full file's records. Every row is a product whatever its 変更区分
    /// (the full file carries 0 and 5 rows alike); the key columns must be present.
    pub fn from_full(records: Vec<YRecord>) -> Result<Master, MasterError> {
        let mut map = HashMap::with_capacity(records.len() + records.len() / 4);
        for r in records {
            require_full(&r)?;
            if map.contains_key(&r.receipt_code) {
                return Err(MasterError::DuplicateCode {
                    line: r.line,
                    code: r.receipt_code,
                });
            }
            map.insert(r.receipt_code.clone(), r);
        }
        Ok(Master { records: map })
    }

    /// Applies one update file's records. Atomic: every row is checked first, and if any 5/9/1/2
    /// row names a code the master does not hold, or a 3 row one it already holds, nothing is
    /// applied and the error names the line. A diff that does not fit its base means an update was
    /// missed or applied out of order; guessing would corrupt the master.
    pub fn apply_update(&mut self, records: &[YRecord]) -> Result<UpdateSummary, MasterError> {
        // Dry run over key presence, including the effect of earlier rows of the same file.
        let mut overlay: HashMap<&str, bool> = HashMap::new();
        for r in records {
            let code = r.receipt_code.as_str();
            let present = overlay
                .get(code)
                .copied()
                .unwrap_or_else(|| self.records.contains_key(code));
            match r.kind {
                ChangeKind::New => {
                    if present {
                        return Err(MasterError::DuplicateCode {
                            line: r.line,
                            code: code.to_owned(),
                        });
                    }
                    require_full(r)?;
                    overlay.insert(code, true);
                }
                kind => {
                    if !present {
                        return Err(MasterError::UnknownCode {
                            line: r.line,
                            code: code.to_owned(),
                            kind,
                        });
                    }
                    if kind == ChangeKind::Abolished && r.abolished_on.is_none() {
                        return Err(MasterError::MissingColumn {
                            line: r.line,
                            column: 31,
                            name: "廃止年月日",
                        });
                    }
                    if kind == ChangeKind::Deleted {
                        overlay.insert(code, false);
                    }
                }
            }
        }
        let mut s = UpdateSummary::default();
        for r in records {
            match r.kind {
                ChangeKind::New => {
                    self.records.insert(r.receipt_code.clone(), r.clone());
                    s.added += 1;
                }
                ChangeKind::Deleted => {
                    self.records.remove(&r.receipt_code);
                    s.deleted += 1;
                }
                kind => {
                    let Some(e) = self.records.get_mut(&r.receipt_code) else {
                        unreachable!("checked in the dry run");
                    };
                    e.merge(r);
                    match kind {
                        ChangeKind::Abolished => s.abolished += 1,
                        ChangeKind::Restored => {
                            if r.abolished_on.is_none() {
                                e.abolished_on = Some(NOT_ABOLISHED);
                            }
                            s.restored += 1;
                        }
                        ChangeKind::Continued => s.continued += 1,
                        _ => s.changed += 1,
                    }
                    e.kind = kind;
                }
            }
        }
        Ok(s)
    }

    /// The record of a receipt code.
    pub fn record(&self, receipt_code: &str) -> Option<&YRecord> {
        self.records.get(receipt_code)
    }

    /// All records, in no particular order.
    pub fn records(&self) -> impl Iterator<Item = &YRecord> {
        self.records.values()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Number of records not abolished.
    pub fn current_count(&self) -> usize {
        self.records.values().filter(|r| r.is_current()).count()
    }
}

fn require_full(r: &YRecord) -> Result<(), MasterError> {
    let missing = |column, name| MasterError::MissingColumn {
        line: r.line,
        column,
        name,
    };
    if r.name.is_none() {
        return Err(missing(5, "漢字名称"));
    }
    if r.dosage_form.is_none() {
        return Err(missing(28, "剤形"));
    }
    if r.abolished_on.is_none() {
        return Err(missing(31, "廃止年月日"));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Ingredient lists

/// 成分名 by YJ code (MHLW 薬価基準収載品目リスト) and by 一般名コード (一般名処方マスタ).
#[derive(Debug, Clone, Default)]
pub struct Ingredients {
    by_yj: HashMap<String, String>,
    /// 成分名 by the YJ code's first nine characters (ingredient, form, strength) where every
    /// listed product of that stem agrees; `None` marks a stem whose products disagree.
    by_yj_stem: HashMap<String, Option<String>>,
    by_generic: HashMap<String, String>,
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

/// Splits a 成分名 into its ingredients (joined with ・) and normalises each to its moiety key.
pub fn moieties_of(ingredient_name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in ingredient_name.split('・') {
        let key = moiety_key(part);
        if !key.is_empty() && !out.contains(&key) {
            out.push(key);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The active-moiety key

/// Hydrate and solvate words removed from the end of a name (with a numeral prefix: 一水和物).
const HYDRATES: &[&str] = &["水和物", "水加物", "エタノール付加物"];

/// Salt suffixes removed from the end of a name: the acid part of "X…酸塩" and the quaternary
/// "X…化物". Derived from the 成分名 column of the MHLW list (2025-07): every "…酸塩" ending that
/// occurs there after a katakana moiety name. The longest match wins (ステアリン酸塩, not リン酸塩).
const ACID_SALTS: &[&str] = &[
    "塩酸塩",
    "二塩酸塩",
    "硫酸塩",
    "一硫酸塩",
    "硝酸塩",
    "臭化水素酸塩",
    "ヨウ化水素酸塩",
    "リン酸塩",
    "酢酸塩",
    "乳酸塩",
    "クエン酸塩",
    "マレイン酸塩",
    "酒石酸塩",
    "メシル酸塩",
    "ベシル酸塩",
    "トシル酸塩",
    "エシル酸塩",
    "フマル酸塩",
    "コハク酸塩",
    "シュウ酸塩",
    "グルコン酸塩",
    "安息香酸塩",
    "キシナホ酸塩",
    "パモ酸塩",
    "ヒベンズ酸塩",
    "フェンジゾ酸塩",
    "メタンスルホン酸塩",
    "エタンスルホン酸塩",
    "イセチオン酸塩",
    "リンゴ酸塩",
    "ステアリン酸塩",
    "ラクトビオン酸塩",
    "サリチル酸塩",
    "ジサリチル酸塩",
    "オレイン酸塩",
    "臭化物",
    "塩化物",
    "ヨウ化物",
    // Co-crystal former written after a space (エンシトレルビル　フマル酸).
    "フマル酸",
];

/// Cation suffixes ("X ナトリウム").
const CATIONS: &[&str] = &[
    "ナトリウム",
    "カルシウム",
    "カリウム",
    "マグネシウム",
    "メグルミン",
];

/// Prodrug ester groups the contraindication table leaves out of the moiety name
/// (ダビガトランエテキシラート → ダビガトラン).
const PRODRUG_GROUPS: &[&str] = &["エテキシラート"];

const NUMERALS: [char; 11] = [
    '一', '二', '三', '四', '五', '六', '七', '八', '九', '十', '半',
];

fn is_katakana(c: char) -> bool {
    ('\u{30a1}'..='\u{30fa}').contains(&c) || c == 'ー'
}

/// The longest suffix of `s` that can be stripped, and what remains.
fn strip_one(s: &str) -> Option<&str> {
    let mut best: Option<(usize, &str)> = None;
    for suffix in HYDRATES
        .iter()
        .chain(ACID_SALTS)
        .chain(CATIONS)
        .chain(PRODRUG_GROUPS)
    {
        let Some(rest) = s.strip_suffix(suffix) else {
            continue;
        };
        let hydrate = HYDRATES.contains(suffix);
        let rest = if hydrate {
            rest.trim_end_matches(NUMERALS)
        } else {
            rest
        };
        let ends_katakana = rest.chars().last().is_some_and(is_katakana);
        // A salt word is stripped only after a katakana moiety name (so 塩化カリウム, 炭酸水素
        // ナトリウム, 酸化マグネシウム stay whole); a hydrate after anything (硫酸マグネシウム水和物).
        let ok = rest.chars().count() >= 2 && (ends_katakana || hydrate);
        if ok && best.is_none_or(|(len, _)| suffix.len() > len) {
            best = Some((suffix.len(), rest));
        }
    }
    best.map(|(_, rest)| rest)
}

/// The normalised active-moiety key of one ingredient name: NFKC, spaces removed, then hydrate,
/// salt and prodrug suffixes stripped repeatedly (アトルバスタチンカルシウム水和物 → アトルバスタチン,
/// ドネペジル塩酸塩 → ドネペジル). A salt suffix is stripped only when a katakana moiety name of at
/// least two characters remains, so names that legitimately end in such a word (塩化カリウム,
/// 炭酸水素ナトリウム, 硝酸イソソルビド) stay whole.
pub fn moiety_key(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let mut s: String = name.nfkc().filter(|c| !c.is_whitespace()).collect();
    while let Some(rest) = strip_one(&s) {
        let keep = rest.len();
        s.truncate(keep);
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Products

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

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Route::Oral => "oral",
            Route::Injection => "injection",
            Route::External => "external",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_commas_and_line_ends() {
        let rows = parse_csv("\"a\",\"b,c\",\"d\"\"e\"\r\nx,,\"y\nz\"\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], (1, vec!["a".into(), "b,c".into(), "d\"e".into()]));
        assert_eq!(rows[1], (2, vec!["x".into(), "".into(), "y\nz".into()]));
    }

    #[test]
    fn csv_errors_name_the_line() {
        assert!(matches!(
            parse_csv("a\n\"b"),
            Err(MasterError::Syntax { line: 2, .. })
        ));
        assert!(matches!(
            parse_csv("a\n\"b\"c"),
            Err(MasterError::Syntax { line: 2, .. })
        ));
        assert!(matches!(
            parse_csv("a\nb\"c"),
            Err(MasterError::Syntax { line: 2, .. })
        ));
        assert!(matches!(
            parse_csv("a\rb"),
            Err(MasterError::Syntax { line: 1, .. })
        ));
    }

    #[test]
    fn route_from_yj_digits() {
        assert_eq!(Route::from_yj("2325003B2029"), Some(Route::Oral));
        assert_eq!(Route::from_yj("1214405A3036"), Some(Route::Injection));
        assert_eq!(Route::from_yj("2649735S1024"), Some(Route::External));
        assert_eq!(Route::from_yj("1214000A3036"), None);
        assert_eq!(Route::from_yj("12"), None);
    }

    #[test]
    fn moiety_key_keeps_inorganic_and_prefix_names() {
        for (name, key) in [
            ("塩化カリウム", "塩化カリウム"),
            ("炭酸水素ナトリウム", "炭酸水素ナトリウム"),
            ("酸化マグネシウム", "酸化マグネシウム"),
            ("硝酸イソソルビド", "硝酸イソソルビド"),
            ("ジクロフェナクナトリウム", "ジクロフェナク"),
            ("アトルバスタチンカルシウム水和物", "アトルバスタチン"),
            ("シルデナフィルクエン酸塩", "シルデナフィル"),
        ] {
            assert_eq!(moiety_key(name), key, "{name}");
        }
    }
}
