//! Makes detached CMS signatures (RFC 5652 SignedData, CAdES-BES signed attributes) over document
//! bytes, the way a clinic's or pharmacy's system would: for `rxgate sign`, demos and tests.
//! Keys are PKCS#8 (RSA or ECDSA P-256); signing goes through `ring`.

use std::time::SystemTime;

use cms::{
    cert::{CertificateChoices, IssuerAndSerialNumber},
    content_info::{CmsVersion, ContentInfo},
    signed_data::{
        CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo,
        SignerInfos,
    },
};
use const_oid::db::{rfc5911, rfc5912};
use der::{
    Any, Decode, Encode,
    asn1::{OctetString, SetOfVec},
};
use ring::{
    digest,
    rand::SystemRandom,
    signature::{self as ring_sig, EcdsaKeyPair, RsaKeyPair},
};
use x509_cert::{Certificate, attr::Attribute, spki::AlgorithmIdentifierOwned, time::Time};

/// Why a signing key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("private key: {0}")]
    Key(String),
    #[error("the private key does not match the certificate")]
    KeyMismatch,
    #[error("encoding: {0}")]
    Encoding(#[from] der::Error),
    #[error("signing failed")]
    Signing,
}

enum KeyPair {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
}

/// A signer: certificate, intermediates to embed, and the private key.
pub struct SigningKey {
    certificate: Certificate,
    chain: Vec<Certificate>,
    key: KeyPair,
    rng: SystemRandom,
}

pub(crate) fn pem_or_der(bytes: &[u8], label: &str) -> Result<Vec<u8>, String> {
    if bytes.starts_with(b"-----BEGIN") {
        let (found, der) = der::pem::decode_vec(bytes).map_err(|e| e.to_string())?;
        if found != label {
            return Err(format!("expected a PEM {label}, found {found}"));
        }
        Ok(der)
    } else {
        Ok(bytes.to_vec())
    }
}

impl SigningKey {
    /// Loads a signer from a certificate (PEM or DER), intermediates to embed (PEM, possibly
    /// several per file) and a PKCS#8 private key (PEM or DER).
    pub fn new(certificate: &[u8], chain: &[u8], private_key: &[u8]) -> Result<Self, Error> {
        let cert_der = pem_or_der(certificate, "CERTIFICATE").map_err(Error::Certificate)?;
        let certificate =
            Certificate::from_der(&cert_der).map_err(|e| Error::Certificate(e.to_string()))?;
        let chain = if chain.is_empty() {
            Vec::new()
        } else {
            Certificate::load_pem_chain(chain).map_err(|e| Error::Certificate(e.to_string()))?
        };
        let key_der = pem_or_der(private_key, "PRIVATE KEY").map_err(Error::Key)?;
        let rng = SystemRandom::new();
        let spki = certificate.tbs_certificate().subject_public_key_info();
        let key = match spki.algorithm.oid {
            rfc5912::RSA_ENCRYPTION => KeyPair::Rsa(
                RsaKeyPair::from_pkcs8(&key_der).map_err(|e| Error::Key(e.to_string()))?,
            ),
            rfc5912::ID_EC_PUBLIC_KEY => KeyPair::Ecdsa(
                EcdsaKeyPair::from_pkcs8(&ring_sig::ECDSA_P256_SHA256_ASN1_SIGNING, &key_der, &rng)
                    .map_err(|e| Error::Key(e.to_string()))?,
            ),
            other => return Err(Error::Key(format!("unsupported key algorithm {other}"))),
        };
        let public = match &key {
            KeyPair::Rsa(k) => ring_sig::KeyPair::public_key(k).as_ref().to_vec(),
            KeyPair::Ecdsa(k) => ring_sig::KeyPair::public_key(k).as_ref().to_vec(),
        };
        if spki.subject_public_key.as_bytes() != Some(public.as_slice()) {
            return Err(Error::KeyMismatch);
        }
        Ok(SigningKey {
            certificate,
            chain,
            key,
            rng,
        })
    }

    /// Signs `content` with `signing_time` as the declared signing-time; returns the DER of a
    /// detached CMS ContentInfo(SignedData).
    pub fn sign(&self, content: &[u8], signing_time: SystemTime) -> Result<Vec<u8>, Error> {
        let sha256 = AlgorithmIdentifierOwned {
            oid: rfc5912::ID_SHA_256,
            parameters: None,
        };
        let message_digest = digest::digest(&digest::SHA256, content);
        // RFC 5652 §11.3: UTCTime through 2049, GeneralizedTime after.
        let mut time = Time::try_from(signing_time)?;
        if let Time::GeneralTime(t) = time
            && t.to_date_time().year() < 2050
        {
            time = Time::UtcTime(der::asn1::UtcTime::from_date_time(t.to_date_time())?);
        }
        let attribute = |oid, value: Any| -> Result<Attribute, der::Error> {
            Ok(Attribute {
                oid,
                values: SetOfVec::try_from(vec![value])?,
            })
        };
        let signed_attrs = SetOfVec::try_from(vec![
            attribute(
                rfc5911::ID_CONTENT_TYPE,
                Any::encode_from(&rfc5911::ID_DATA)?,
            )?,
            attribute(rfc5911::ID_SIGNING_TIME, Any::encode_from(&time)?)?,
            attribute(
                rfc5911::ID_MESSAGE_DIGEST,
                Any::encode_from(&OctetString::new(message_digest.as_ref())?)?,
            )?,
        ])?;
        let to_sign = signed_attrs.to_der()?;
        let (signature, signature_algorithm) = match &self.key {
            KeyPair::Rsa(key) => {
                let mut sig = vec![0; key.public().modulus_len()];
                key.sign(&ring_sig::RSA_PKCS1_SHA256, &self.rng, &to_sign, &mut sig)
                    .map_err(|_| Error::Signing)?;
                (
                    sig,
                    AlgorithmIdentifierOwned {
                        oid: rfc5912::RSA_ENCRYPTION,
                        parameters: Some(Any::null()),
                    },
                )
            }
            KeyPair::Ecdsa(key) => {
                let sig = key.sign(&self.rng, &to_sign).map_err(|_| Error::Signing)?;
                (
                    sig.as_ref().to_vec(),
                    AlgorithmIdentifierOwned {
                        oid: rfc5912::ECDSA_WITH_SHA_256,
                        parameters: None,
                    },
                )
            }
        };
        let tbs = self.certificate.tbs_certificate();
        let signer_info = SignerInfo {
            version: CmsVersion::V1,
            sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer: tbs.issuer().clone(),
                serial_number: tbs.serial_number().clone(),
            }),
            digest_alg: sha256.clone(),
            signed_attrs: Some(signed_attrs),
            signature_algorithm,
            signature: OctetString::new(signature)?,
            unsigned_attrs: None,
        };
        let certificates = std::iter::once(&self.certificate)
            .chain(&self.chain)
            .map(|c| CertificateChoices::Certificate(c.clone()))
            .collect::<Vec<_>>();
        let signed_data = SignedData {
            version: CmsVersion::V1,
            digest_algorithms: SetOfVec::try_from(vec![sha256])?,
            encap_content_info: EncapsulatedContentInfo {
                econtent_type: rfc5911::ID_DATA,
                econtent: None,
            },
            certificates: Some(CertificateSet::try_from(certificates)?),
            crls: None,
            signer_infos: SignerInfos::try_from(vec![signer_info])?,
        };
        let info = ContentInfo {
            content_type: rfc5911::ID_SIGNED_DATA,
            content: Any::encode_from(&signed_data)?,
        };
        Ok(info.to_der()?)
    }
}
