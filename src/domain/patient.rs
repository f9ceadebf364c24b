//! The patient key: the insurance identifiers (保険者番号 + 記号 + 番号 + 枝番) or, for a patient
//! covered by public funds alone, 公費負担者番号 + 受給者番号, in one canonical encoding.
//! Pure: no IO. A change of insurance changes the key and so starts a new history.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

use super::ids::IdError;

/// A patient's lookup key. Its canonical encoding is tagged with the kind and every field is
/// length-prefixed, so no two different patients encode alike.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PatientKey(String);

/// Key material is patient data: never print it.
impl fmt::Debug for PatientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PatientKey(..)")
    }
}

/// NFKC, then without any white space: full-width and half-width forms compare equal.
fn normalise(s: &str) -> String {
    s.nfkc().filter(|c| !c.is_whitespace()).collect()
}

fn digits(field: &'static str, s: &str, lens: &[usize]) -> Result<String, IdError> {
    let n = normalise(s);
    if lens.contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()) {
        Ok(n)
    } else {
        Err(IdError {
            field,
            rule: "wrong number of digits",
        })
    }
}

fn text(field: &'static str, s: &str, required: bool) -> Result<String, IdError> {
    let n = normalise(s);
    if required && n.is_empty() {
        return Err(IdError {
            field,
            rule: "must not be empty",
        });
    }
    if n.chars().count() > 40 || n.chars().any(char::is_control) {
        return Err(IdError {
            field,
            rule: "at most 40 printable characters",
        });
    }
    Ok(n)
}

fn encode(kind: &str, fields: &[&str]) -> String {
    let mut out = String::from(kind);
    for f in fields {
        out.push_str(&format!("|{}:{f}", f.len()));
    }
    out
}

impl PatientKey {
    /// 保険者番号 (6 or 8 digits), 記号 (may be empty), 番号, 枝番 (2 digits or empty).
    pub fn insurance(
        insurer_number: &str,
        symbol: &str,
        number: &str,
        branch: &str,
    ) -> Result<Self, IdError> {
        let insurer = digits("insurer number", insurer_number, &[6, 8])?;
        let symbol = text("insurance symbol", symbol, false)?;
        let number = text("insurance number", number, true)?;
        let branch = digits("insurance branch", branch, &[0, 2])?;
        Ok(PatientKey(encode(
            "ins",
            &[&insurer, &symbol, &number, &branch],
        )))
    }

    /// 公費負担者番号 (8 digits) and 受給者番号 (7 digits).
    pub fn public_funds(payer_number: &str, recipient_number: &str) -> Result<Self, IdError> {
        let payer = digits("public funds payer number", payer_number, &[8])?;
        let recipient = digits("public funds recipient number", recipient_number, &[7])?;
        Ok(PatientKey(encode("pub", &[&payer, &recipient])))
    }

    /// The canonical encoding (for storage keys).
    pub fn canonical(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ins(i: &str, s: &str, n: &str, b: &str) -> PatientKey {
        PatientKey::insurance(i, s, n, b).unwrap()
    }

    #[test]
    fn fields_cannot_run_into_each_other() {
        assert_ne!(
            ins("06139999", "12", "345", "01"),
            ins("06139999", "123", "45", "01")
        );
        assert_ne!(
            ins("06139999", "", "12345", "01"),
            ins("06139999", "1", "2345", "01")
        );
    }

    #[test]
    fn an_empty_symbol_is_its_own_value() {
        let empty = ins("06139999", "", "345", "01");
        assert!(empty.canonical().contains("|0:|"), "{}", empty.canonical());
        assert_ne!(empty, ins("06139999", "0", "345", "01"));
    }

    #[test]
    fn an_insurance_key_never_equals_a_public_funds_key() {
        let public = PatientKey::public_funds("12131415", "1234567").unwrap();
        assert!(public.canonical().starts_with("pub|"));
        assert_ne!(ins("121314", "15", "1234567", ""), public);
        assert!(
            ins("121314", "15", "1234567", "")
                .canonical()
                .starts_with("ins|")
        );
    }

    #[test]
    fn full_width_and_spaces_normalise() {
        assert_eq!(
            ins("０６１３９９９９", "ＡＢ １２", "３４５", "０１"),
            ins("06139999", "AB12", "345", "01")
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(PatientKey::insurance("0613999", "1", "2", "01").is_err()); // 7 digits
        assert!(PatientKey::insurance("06139999", "1", "", "01").is_err()); // no number
        assert!(PatientKey::insurance("06139999", "1", "2", "1").is_err()); // branch 1 digit
        assert!(PatientKey::public_funds("1213141", "1234567").is_err());
        assert!(PatientKey::public_funds("12131415", "123456").is_err());
    }

    #[test]
    fn debug_output_hides_the_key() {
        assert_eq!(
            format!("{:?}", ins("06139999", "12", "345", "01")),
            "PatientKey(..)"
        );
    }
}
