//! Identifiers that parse: once built, an `InstitutionCode` or `ExchangeNumber` is valid.
//! Pure: no IO.

use std::{fmt, str::FromStr};

/// Why an identifier did not parse. The message names the field, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {rule}")]
pub struct IdError {
    pub field: &'static str,
    pub rule: &'static str,
}

fn id_error(field: &'static str, rule: &'static str) -> IdError {
    IdError { field, rule }
}

fn all_digits(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit())
}

/// 医療機関コード / 薬局コード: 10 digits (2 prefecture, 1 点数表 kind, 7 number), kept inline as
/// their ASCII bytes: every check makes two per history line, so none allocates.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstitutionCode([u8; 10]);

impl InstitutionCode {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("an institution code is ASCII digits")
    }

    pub fn number(&self) -> u64 {
        self.0.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'))
    }

    /// The code whose 10 digits (leading zeros included) are `number`; `None` past 10 digits.
    pub fn from_number(number: u64) -> Option<Self> {
        let mut digits = [b'0'; 10];
        let mut rest = number;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        (rest == 0).then_some(InstitutionCode(digits))
    }
}

impl FromStr for InstitutionCode {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        match s.as_bytes().try_into() {
            Ok(digits) if all_digits(s, 10) => Ok(InstitutionCode(digits)),
            _ => Err(id_error("institution code", "must be 10 digits")),
        }
    }
}

impl fmt::Debug for InstitutionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("InstitutionCode")
            .field(&self.as_str())
            .finish()
    }
}

impl fmt::Display for InstitutionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an authenticated institution is, which decides what it may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstitutionKind {
    Clinic,
    Pharmacy,
    /// The prescription management service (hand-back consumers).
    Management,
    /// rxgate's own operators (administration, audit export).
    Operator,
}

impl InstitutionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InstitutionKind::Clinic => "clinic",
            InstitutionKind::Pharmacy => "pharmacy",
            InstitutionKind::Management => "management",
            InstitutionKind::Operator => "operator",
        }
    }
}

impl FromStr for InstitutionKind {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        match s {
            "clinic" => Ok(InstitutionKind::Clinic),
            "pharmacy" => Ok(InstitutionKind::Pharmacy),
            "management" => Ok(InstitutionKind::Management),
            "operator" => Ok(InstitutionKind::Operator),
            _ => Err(id_error(
                "institution kind",
                "must be clinic, pharmacy, management or operator",
            )),
        }
    }
}

impl fmt::Display for InstitutionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated institution: what its client certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Institution {
    pub kind: InstitutionKind,
    pub code: InstitutionCode,
}

/// The URI SAN that names an institution in its client certificate:
/// `urn:rxgate:institution:<kind>:<10-digit code>`.
pub const INSTITUTION_URI_PREFIX: &str = "urn:rxgate:institution:";

impl Institution {
    /// Parses `urn:rxgate:institution:<kind>:<code>`.
    pub fn from_uri(uri: &str) -> Result<Self, IdError> {
        let rest = uri
            .strip_prefix(INSTITUTION_URI_PREFIX)
            .ok_or_else(|| id_error("institution URI", "must start urn:rxgate:institution:"))?;
        let (kind, code) = rest
            .split_once(':')
            .ok_or_else(|| id_error("institution URI", "must be <kind>:<code>"))?;
        Ok(Institution {
            kind: kind.parse()?,
            code: code.parse()?,
        })
    }

    pub fn to_uri(&self) -> String {
        format!("{INSTITUTION_URI_PREFIX}{}:{}", self.kind, self.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn institution_codes_as_numbers() {
        for text in ["0110000019", "1310000017", "9999999999", "0000000000"] {
            let code: InstitutionCode = text.parse().unwrap();
            assert_eq!(InstitutionCode::from_number(code.number()), Some(code));
        }
        assert_eq!(InstitutionCode::from_number(10_000_000_000), None);
    }

    #[test]
    fn institution_uris() {
        let i = Institution::from_uri("urn:rxgate:institution:pharmacy:1340000001").unwrap();
        assert_eq!(i.kind, InstitutionKind::Pharmacy);
        assert_eq!(i.code.as_str(), "1340000001");
        assert_eq!(i.to_uri(), "urn:rxgate:institution:pharmacy:1340000001");
        for bad in [
            "urn:rxgate:institution:pharmacy:134000000",
            "urn:rxgate:institution:pharmacy:13400000011",
            "urn:rxgate:institution:shop:1340000001",
            "urn:rxgate:institution:pharmacy",
            "urn:other:institution:pharmacy:1340000001",
            "urn:rxgate:institution:pharmacy:134000000a",
        ] {
            assert!(Institution::from_uri(bad).is_err(), "{bad}");
        }
    }
}
