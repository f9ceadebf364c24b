//! Keyed pseudonyms of patients: HMAC-SHA-256 of the canonical patient key under a secret of
//! the gateway's. The audit log names a checked patient by one, and every key of the store that
//! is a patient's holds one (never the patient key: a key is indexed, and an SQL engine prints
//! keys in its server log). The log and the store can then show everything of one patient (an
//! operator who knows the patient's identifiers and the key computes the pseudonym) while a
//! copy of either alone names nobody. Uses `ring` only; knows no store and no protocol.

use std::{fmt, path::Path, sync::Arc};

use crate::domain::hash::{from_hex, hex};

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

    /// The pseudonym of the canonical patient key `patient` as the store's keys hold it.
    pub fn in_keys(&self, patient: &str) -> PatientPseudonym {
        let bytes = self.of(patient);
        PatientPseudonym {
            hex: hex(&bytes),
            bytes,
        }
    }

    /// What a store records of the key it was built under: the pseudonym of a fixed label, which
    /// tells two keys apart and gives neither away.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.of(FINGERPRINT_LABEL)
    }
}

/// The label whose pseudonym is the key's fingerprint: no canonical patient key (each starts
/// with its kind and `|`) is this text, so no patient shares the fingerprint.
const FINGERPRINT_LABEL: &str = "rxgate: the fingerprint of the pseudonym key";

/// A patient's pseudonym as the store's keys hold it: its 64 lowercase hex digits, so it holds
/// neither a zero byte nor 0xFF, as the schema's text parts must not, and never looks like a
/// canonical patient key (which holds `|`). Made by [`Pseudonyms::in_keys`] only, with the
/// pseudonym itself, which the audit log and the typed columns hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PatientPseudonym {
    hex: String,
    bytes: [u8; 32],
}

impl PatientPseudonym {
    /// As the store's keys hold it.
    pub fn as_str(&self) -> &str {
        &self.hex
    }

    /// The pseudonym itself.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Whether a key part is a pseudonym as [`Pseudonyms::in_keys`] writes it (and not, as
    /// stores of earlier layouts held, a canonical patient key).
    pub fn is_one(part: &[u8]) -> bool {
        part.len() == 64 && part.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
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

    /// The store's keys hold these: a change of the function makes every store unreadable, so
    /// the bytes are pinned, and so is the fingerprint a store records.
    #[test]
    fn a_key_pseudonym_is_the_hmac_in_lowercase_hex() {
        let pseudonyms = Pseudonyms::new(&[7; 32]).unwrap();
        let keyed = pseudonyms.in_keys("pub|8:12345678|7:1234567");
        assert_eq!(keyed.bytes(), &pseudonyms.of("pub|8:12345678|7:1234567"));
        assert_eq!(
            keyed.as_str(),
            "7cccc778898c1feaf3f921093f2bbfaac8300c69af169abd42b34c511c08c8a9"
        );
        assert!(PatientPseudonym::is_one(keyed.as_str().as_bytes()));
        assert!(!PatientPseudonym::is_one(b"pub|8:12345678|7:1234567"));
        assert!(!PatientPseudonym::is_one(&keyed.as_str().as_bytes()[1..]));
        assert_eq!(
            hex(&pseudonyms.fingerprint()),
            "9d51233b18607e4528699f242f1d5eb62f14f6849cbb647d74ab9e380116440a"
        );
        assert_ne!(
            pseudonyms.fingerprint(),
            Pseudonyms::new(&[8; 32]).unwrap().fingerprint()
        );
    }
}
