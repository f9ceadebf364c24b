//! The gateway's own signing identity (`[gateway]`: an ECDSA P-256 key and its certificate) and
//! the pinned certificates of the gateways an intake trusts (`intake.trusted_senders`). One
//! identity for everything the gateway itself attests: the relay metadata of a dispensing record
//! (its original receipt time, institution and prescription number) and the checkpoints of its
//! audit chain. The pinned certificates verify both (an intake, `rxgate audit verify`).

use std::{collections::HashMap, path::Path, sync::Arc};

use const_oid::db::rfc5912;
use der::Decode;
use ring::{
    rand::SystemRandom,
    signature::{self as ring_sig, EcdsaKeyPair, KeyPair as _},
};
use serde::Deserialize;
use x509_cert::Certificate;

use crate::{domain::hash::sha256, pki::signer::pem_or_der};

/// What a signature of the identity is about: signed ahead of the message, so that a signature
/// made for one purpose never verifies for another.
pub const RELAY_STATEMENT: &[u8] = b"rxgate.v1.RelayStatement\0";
/// A checkpoint of the audit chains (service::audit_checkpoint).
pub const AUDIT_CHECKPOINT: &[u8] = b"rxgate.v1.AuditCheckpoint\0";

fn in_context(context: &[u8], message: &[u8]) -> Vec<u8> {
    [context, message].concat()
}

/// Where the gateway's signing identity is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityFiles {
    /// PKCS#8 private key, ECDSA P-256 (PEM or DER).
    pub key: std::path::PathBuf,
    /// Its certificate (PEM or DER): what receiving intakes pin.
    pub cert: std::path::PathBuf,
}

/// Why an identity or a trusted sender could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct LoadError {
    path: String,
    reason: String,
}

fn load_error(path: &Path, reason: impl ToString) -> LoadError {
    LoadError {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// A certificate's SHA-256 fingerprint and its ECDSA P-256 public key (the uncompressed point).
fn p256_certificate(path: &Path) -> Result<([u8; 32], Vec<u8>), LoadError> {
    let bytes = std::fs::read(path).map_err(|e| load_error(path, e))?;
    let der = pem_or_der(&bytes, "CERTIFICATE").map_err(|e| load_error(path, e))?;
    let cert = Certificate::from_der(&der).map_err(|e| load_error(path, e))?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok());
    if spki.algorithm.oid != rfc5912::ID_EC_PUBLIC_KEY || curve != Some(rfc5912::SECP_256_R_1) {
        return Err(load_error(path, "not an ECDSA P-256 certificate"));
    }
    let public = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| load_error(path, "malformed public key"))?;
    Ok((sha256(&der), public.to_vec()))
}

/// The gateway's key, with the fingerprint of its certificate.
pub struct GatewayIdentity {
    key: EcdsaKeyPair,
    fingerprint: [u8; 32],
    rng: SystemRandom,
}

impl std::fmt::Debug for GatewayIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GatewayIdentity({})",
            crate::domain::hash::hex(&self.fingerprint)
        )
    }
}

impl GatewayIdentity {
    /// Loads the key and its certificate; refuses a key that is not the certificate's.
    pub fn from_files(files: &IdentityFiles) -> Result<Self, LoadError> {
        let (fingerprint, public) = p256_certificate(&files.cert)?;
        let bytes = std::fs::read(&files.key).map_err(|e| load_error(&files.key, e))?;
        let der = pem_or_der(&bytes, "PRIVATE KEY").map_err(|e| load_error(&files.key, e))?;
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ring_sig::ECDSA_P256_SHA256_ASN1_SIGNING, &der, &rng)
            .map_err(|e| load_error(&files.key, format!("not a P-256 PKCS#8 key: {e}")))?;
        if key.public_key().as_ref() != public.as_slice() {
            return Err(load_error(&files.key, "not the key of the [gateway] cert"));
        }
        Ok(GatewayIdentity {
            key,
            fingerprint,
            rng,
        })
    }

    /// The SHA-256 of the identity's certificate (DER): how a receiver finds the key.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// An ECDSA P-256 SHA-256 signature (ASN.1 DER) over `context` followed by `message`.
    pub fn sign(
        &self,
        context: &[u8],
        message: &[u8],
    ) -> Result<Vec<u8>, ring::error::Unspecified> {
        let signed = in_context(context, message);
        Ok(self.key.sign(&self.rng, &signed)?.as_ref().to_vec())
    }
}

/// Why an attestation was not believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untrusted {
    /// Signed by a key whose certificate this intake does not pin.
    UnknownSender,
    /// The signature does not verify under the pinned key.
    BadSignature,
}

/// The gateways whose attestations are believed (by an intake, by the audit verifier), by
/// certificate fingerprint.
#[derive(Clone, Default)]
pub struct TrustedSenders(Arc<HashMap<[u8; 32], Vec<u8>>>);

impl std::fmt::Debug for TrustedSenders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TrustedSenders({} certificates)", self.0.len())
    }
}

impl TrustedSenders {
    pub fn from_files(paths: &[std::path::PathBuf]) -> Result<Self, LoadError> {
        let keys = paths
            .iter()
            .map(|p| p256_certificate(p))
            .collect::<Result<HashMap<_, _>, _>>()?;
        Ok(TrustedSenders(Arc::new(keys)))
    }

    /// Verifies `signature` over `context` and `message` under the pinned certificate
    /// `fingerprint` names.
    pub fn verify(
        &self,
        fingerprint: &[u8],
        (context, message): (&[u8], &[u8]),
        signature: &[u8],
    ) -> Result<(), Untrusted> {
        let public = <[u8; 32]>::try_from(fingerprint)
            .ok()
            .and_then(|f| self.0.get(&f))
            .ok_or(Untrusted::UnknownSender)?;
        ring_sig::UnparsedPublicKey::new(&ring_sig::ECDSA_P256_SHA256_ASN1, public)
            .verify(&in_context(context, message), signature)
            .map_err(|_| Untrusted::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev_pki::DevPki;

    fn dev_dir() -> std::path::PathBuf {
        DevPki::repository().dir().join("gateway")
    }

    #[test]
    fn a_signature_verifies_only_under_the_pinned_certificate() {
        let files = DevPki::repository().gateway();
        let identity = GatewayIdentity::from_files(&files).unwrap();
        let signature = identity.sign(RELAY_STATEMENT, b"statement").unwrap();
        let trusted = TrustedSenders::from_files(&[files.cert]).unwrap();
        let fp = identity.fingerprint();
        let signed = (RELAY_STATEMENT, b"statement".as_slice());
        assert_eq!(trusted.verify(&fp, signed, &signature), Ok(()));
        for altered in [
            (RELAY_STATEMENT, b"statemenT".as_slice()),
            (b"other\0", b"statement"),
        ] {
            assert_eq!(
                trusted.verify(&fp, altered, &signature),
                Err(Untrusted::BadSignature)
            );
        }
        let other =
            TrustedSenders::from_files(&[dev_dir().join("untrusted-gateway.cert.pem")]).unwrap();
        assert_eq!(
            other.verify(&fp, signed, &signature),
            Err(Untrusted::UnknownSender)
        );
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let files = IdentityFiles {
            key: dev_dir().join("untrusted-gateway.key.pem"),
            cert: dev_dir().join("gateway.cert.pem"),
        };
        let error = GatewayIdentity::from_files(&files).err().unwrap();
        assert!(error.to_string().contains("not the key"), "{error}");
    }
}
