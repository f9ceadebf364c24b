//! The SSK 医薬品マスター y-file, full and update files alike: its cp932 bytes decoded, each row
//! typed into a [`YRecord`] (変更区分, 剤形, dates and codes checked column by column), the
//! partial rows of an update file left partial. Pure: parsers take bytes or `&str`; no IO, no
//! clock, no tonic/prost/store engine; knows nothing of how records are applied or looked up.

use super::{
    csv::parse_csv,
    error::{MasterError, field_err},
};

/// Column 31 value the SSK file uses for "not abolished".
pub const NOT_ABOLISHED: u32 = 99_999_999;

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
/// Decodes the cp932 (Windows-31J) bytes SSK publishes. encoding_rs's `SHIFT_JIS` is the WHATWG
/// Shift_JIS decoder, which is Windows-31J (NEC and IBM extensions included). Invalid bytes are an
/// error, never replaced.
pub fn decode_cp932(bytes: &[u8]) -> Result<String, MasterError> {
    encoding_rs::SHIFT_JIS
        .decode_without_bom_handling_and_without_replacement(bytes)
        .map(|s| s.into_owned())
        .ok_or(MasterError::Encoding("cp932"))
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
