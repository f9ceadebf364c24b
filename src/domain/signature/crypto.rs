//! Signature verification with `ring`, the project's one crypto provider: document signatures
//! (a narrow profile), certificate and CRL signatures (the usual PKIX algorithms), and the adapter
//! that lets certval verify certificate signatures through the same code.

use const_oid::{
    ObjectIdentifier,
    db::{rfc5912, rfc8410},
};
use der::{Decode, Tagged, asn1::UintRef};
use ring::signature::{self as ring_sig, VerificationAlgorithm};
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};

/// Why a signature could not be verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CryptoError {
    /// The algorithm, key type or key size is outside what we accept.
    Unsupported(String),
    /// The signature does not verify under the key.
    Invalid,
}

/// What a signature protects, which decides the algorithms we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// A CMS signature over a document: RSA PKCS#1 v1.5 with at least 2048 bits, or ECDSA P-256,
    /// each with SHA-256.
    Document,
    /// A certificate or CRL signature: RSA PKCS#1 v1.5 (2048–8192 bits) with SHA-256/384/512,
    /// ECDSA P-256/P-384 with SHA-256/384, Ed25519.
    Certificate,
}

const MIN_RSA_BITS: usize = 2048;

/// Verifies `signature` over `message` by the key in `spki`.
///
/// `signature_alg` is the signature algorithm as stated next to the signature; for CMS it may be
/// the bare key algorithm (`rsaEncryption`), in which case `digest` (the SignerInfo's digest
/// algorithm) supplies the hash.
pub(crate) fn verify(
    purpose: Purpose,
    signature_alg: &ObjectIdentifier,
    digest: Option<&ObjectIdentifier>,
    spki: &SubjectPublicKeyInfoOwned,
    message: &[u8],
    signature: &[u8],
) -> Result<(), CryptoError> {
    let algorithm = select(purpose, signature_alg, digest, spki)?;
    let key = spki.subject_public_key.as_bytes().ok_or_else(|| {
        CryptoError::Unsupported("public key is not a whole number of bytes".into())
    })?;
    ring_sig::UnparsedPublicKey::new(algorithm, key)
        .verify(message, signature)
        .map_err(|_| CryptoError::Invalid)
}

/// The hash an algorithm identifier names, for the combinations we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

fn hash_of_digest(oid: &ObjectIdentifier) -> Option<Hash> {
    match *oid {
        rfc5912::ID_SHA_256 => Some(Hash::Sha256),
        rfc5912::ID_SHA_384 => Some(Hash::Sha384),
        rfc5912::ID_SHA_512 => Some(Hash::Sha512),
        _ => None,
    }
}

enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

fn key_kind(spki: &SubjectPublicKeyInfoOwned) -> Result<KeyKind, CryptoError> {
    match spki.algorithm.oid {
        rfc5912::RSA_ENCRYPTION => Ok(KeyKind::Rsa),
        rfc5912::ID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
            match curve {
                Some(rfc5912::SECP_256_R_1) => Ok(KeyKind::EcP256),
                Some(rfc5912::SECP_384_R_1) => Ok(KeyKind::EcP384),
                Some(other) => Err(CryptoError::Unsupported(format!("elliptic curve {other}"))),
                None => Err(CryptoError::Unsupported(
                    "elliptic curve key without a named curve".into(),
                )),
            }
        }
        rfc8410::ID_ED_25519 => Ok(KeyKind::Ed25519),
        other => Err(CryptoError::Unsupported(format!(
            "public key algorithm {other}"
        ))),
    }
}

/// The modulus size of an RSA public key, in bits.
fn rsa_bits(spki: &SubjectPublicKeyInfoOwned) -> Result<usize, CryptoError> {
    #[derive(der::Sequence)]
    struct RsaPublicKey<'a> {
        modulus: UintRef<'a>,
        #[allow(dead_code)] // decoded for structure only
        public_exponent: UintRef<'a>,
    }
    let malformed = || CryptoError::Unsupported("malformed RSA public key".into());
    let bytes = spki.subject_public_key.as_bytes().ok_or_else(malformed)?;
    let key = RsaPublicKey::from_der(bytes).map_err(|_| malformed())?;
    let modulus = key.modulus.as_bytes();
    let leading = modulus.first().map_or(8, |b| b.leading_zeros() as usize);
    Ok(modulus.len() * 8 - leading)
}

fn select(
    purpose: Purpose,
    signature_alg: &ObjectIdentifier,
    digest: Option<&ObjectIdentifier>,
    spki: &SubjectPublicKeyInfoOwned,
) -> Result<&'static dyn VerificationAlgorithm, CryptoError> {
    let unsupported = || {
        CryptoError::Unsupported(format!(
            "signature algorithm {signature_alg} for {purpose:?}"
        ))
    };
    let kind = key_kind(spki)?;
    // The hash the signature algorithm itself names; `rsaEncryption` names none (CMS only).
    let named_hash = match *signature_alg {
        rfc5912::SHA_256_WITH_RSA_ENCRYPTION | rfc5912::ECDSA_WITH_SHA_256 => Some(Hash::Sha256),
        rfc5912::SHA_384_WITH_RSA_ENCRYPTION | rfc5912::ECDSA_WITH_SHA_384 => Some(Hash::Sha384),
        rfc5912::SHA_512_WITH_RSA_ENCRYPTION => Some(Hash::Sha512),
        rfc5912::RSA_ENCRYPTION | rfc8410::ID_ED_25519 => None,
        _ => return Err(unsupported()),
    };
    let digest_hash = digest
        .map(|d| hash_of_digest(d).ok_or_else(unsupported))
        .transpose()?;
    let hash = match (named_hash, digest_hash) {
        (Some(named), Some(digest)) if named != digest => return Err(unsupported()),
        (Some(h), _) | (None, Some(h)) => Some(h),
        (None, None) => None,
    };
    let is_rsa_alg = matches!(
        *signature_alg,
        rfc5912::RSA_ENCRYPTION
            | rfc5912::SHA_256_WITH_RSA_ENCRYPTION
            | rfc5912::SHA_384_WITH_RSA_ENCRYPTION
            | rfc5912::SHA_512_WITH_RSA_ENCRYPTION
    );
    let is_ecdsa_alg = matches!(
        *signature_alg,
        rfc5912::ECDSA_WITH_SHA_256 | rfc5912::ECDSA_WITH_SHA_384
    );
    if *signature_alg == rfc5912::RSA_ENCRYPTION && purpose == Purpose::Certificate {
        return Err(unsupported());
    }
    match (purpose, kind, hash) {
        (_, KeyKind::Rsa, Some(hash)) if is_rsa_alg => {
            let bits = rsa_bits(spki)?;
            if bits < MIN_RSA_BITS {
                return Err(CryptoError::Unsupported(format!("RSA key of {bits} bits")));
            }
            match (purpose, hash) {
                (_, Hash::Sha256) => Ok(&ring_sig::RSA_PKCS1_2048_8192_SHA256),
                (Purpose::Certificate, Hash::Sha384) => Ok(&ring_sig::RSA_PKCS1_2048_8192_SHA384),
                (Purpose::Certificate, Hash::Sha512) => Ok(&ring_sig::RSA_PKCS1_2048_8192_SHA512),
                _ => Err(unsupported()),
            }
        }
        (_, KeyKind::EcP256, Some(Hash::Sha256)) if is_ecdsa_alg => {
            Ok(&ring_sig::ECDSA_P256_SHA256_ASN1)
        }
        (Purpose::Certificate, KeyKind::EcP256, Some(Hash::Sha384)) if is_ecdsa_alg => {
            Ok(&ring_sig::ECDSA_P256_SHA384_ASN1)
        }
        (Purpose::Certificate, KeyKind::EcP384, Some(Hash::Sha384)) if is_ecdsa_alg => {
            Ok(&ring_sig::ECDSA_P384_SHA384_ASN1)
        }
        (Purpose::Certificate, KeyKind::EcP384, Some(Hash::Sha256)) if is_ecdsa_alg => {
            Ok(&ring_sig::ECDSA_P384_SHA256_ASN1)
        }
        (Purpose::Certificate, KeyKind::Ed25519, None)
            if *signature_alg == rfc8410::ID_ED_25519 =>
        {
            Ok(&ring_sig::ED25519)
        }
        _ => Err(unsupported()),
    }
}

/// Signature algorithm parameters must be absent or NULL: parameterised schemes (RSASSA-PSS)
/// are not accepted.
pub(crate) fn parameters_acceptable(alg: &AlgorithmIdentifierOwned) -> bool {
    alg.parameters
        .as_ref()
        .is_none_or(|p| p.tag() == der::Tag::Null)
}

/// certval's hook for certificate and CRL signatures, answered by [`verify`].
pub(crate) struct CertvalVerifier;

impl certval::VerifySignatureMessage for CertvalVerifier {
    fn verify_signature_message(
        &self,
        _pe: &certval::PkiEnvironment,
        message_to_verify: &[u8],
        signature: &der::asn1::BitString,
        signature_alg: &AlgorithmIdentifierOwned,
        spki: &SubjectPublicKeyInfoOwned,
    ) -> certval::Result<()> {
        let invalid = || {
            certval::Error::PathValidation(
                certval::PathValidationStatus::SignatureVerificationFailure,
            )
        };
        if !parameters_acceptable(signature_alg) {
            return Err(invalid());
        }
        let signature = signature.as_bytes().ok_or_else(invalid)?;
        verify(
            Purpose::Certificate,
            &signature_alg.oid,
            None,
            spki,
            message_to_verify,
            signature,
        )
        .map_err(|_| invalid())
    }
}

#[cfg(test)]
mod tests {
    use der::{Any, asn1::BitString};

    use super::*;

    fn ec_key(parameters: Option<Any>) -> SubjectPublicKeyInfoOwned {
        SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid: rfc5912::ID_EC_PUBLIC_KEY,
                parameters,
            },
            subject_public_key: BitString::from_bytes(&[4]).unwrap(),
        }
    }

    /// An unsupported curve is named by its OID, in our words, not in a type's debug text.
    #[test]
    fn an_unsupported_curve_is_named_by_its_oid() {
        let p521 = Any::encode_from(&rfc5912::SECP_521_R_1).unwrap();
        let unsupported = |spki| match key_kind(&spki) {
            Err(CryptoError::Unsupported(why)) => why,
            _ => panic!("supported"),
        };
        assert_eq!(
            unsupported(ec_key(Some(p521))),
            "elliptic curve 1.3.132.0.35"
        );
        assert_eq!(
            unsupported(ec_key(None)),
            "elliptic curve key without a named curve"
        );
    }
}
