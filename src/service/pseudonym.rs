//! Keyed pseudonyms of patients for the audit log: HMAC-SHA-256 of the canonical patient key
//! under a secret of the gateway's. The log can then show every check of one patient (an
//! operator who knows the patient's identifiers and the key computes the pseudonym) while a
//! copy of the log alone names nobody. Uses `ring` only; knows no store and no protocol.

use std::{fmt, path::Path, sync::Arc};

use crate::domain::hash::from_hex;

use ring::{hmac, rand::SecureRandom};

/// The shortest key accepted, in bytes: the HMAC-SHA-256 output length.
pub(super) const MIN_KEY_BYTES: usize = 32;

/// The pseudonym function under one key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct Pseudonyms(Arc<hmac::Key>);

impl Pseudonyms {
    /// Pseudonyms under `key`, which must be at least [`MIN_KEY_BYTES`] long.
    pub fn new(key: &[u8]) -> Result<Self, String> {
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the pseudonym key must have at least {MIN_KEY_BYTES} bytes"
            ));
        }
        Ok(Pseudonyms(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, key))))
    }

    /// Pseudonyms under the key in the file at `path`: 64 hex digits (surrounding whitespace is
    /// ignored).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let key = from_hex::<32>(text.trim()).ok_or_else(|| {
            format!(
                "{}: the audit pseudonym key must be 64 hex digits",
                path.display()
            )
        })?;
        Pseudonyms::new(&key)
    }

    /// Pseudonyms under a random key that dies with the process: for tests and benchmarks that
    /// build a gateway without a configuration.
    pub fn ephemeral() -> Self {
        let mut key = [0u8; MIN_KEY_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut key)
            .expect("the system RNG works");
        Pseudonyms(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &key)))
    }

    /// The pseudonym of the canonical patient key `patient`.
    pub fn of(&self, patient: &str) -> [u8; 32] {
        let tag = hmac::sign(&self.0, patient.as_bytes());
        tag.as_ref().try_into().expect("HMAC-SHA-256 is 32 bytes")
    }
}

impl fmt::Debug for Pseudonyms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pseudonyms(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_key_one_pseudonym_per_patient() {
        let a = Pseudonyms::new(&[7; 32]).unwrap();
        let b = Pseudonyms::new(&[8; 32]).unwrap();
        assert_eq!(a.of("p1"), a.of("p1"));
        assert_ne!(a.of("p1"), a.of("p2"));
        assert_ne!(a.of("p1"), b.of("p1"));
        assert!(Pseudonyms::new(&[7; 31]).is_err());
        assert_eq!(format!("{a:?}"), "Pseudonyms(..)");
    }
}
