//! Certificate revocation lists, configured per issuing CA. A CRL is verified against its CA
//! when it is loaded; lookups then answer "revoked before this time", "not revoked" or
//! "unknown" (no CRL for the issuer, or one past its nextUpdate).

use std::{collections::HashMap, time::SystemTime};

use crate::domain::hash::sha256;
use der::{Decode, Encode, Reader, SliceReader};
use x509_cert::{
    Certificate,
    crl::CertificateList,
    ext::pkix::{CrlReason, KeyUsage, KeyUsages, crl::CrlNumber},
};

use super::crypto::{self, Purpose};

/// Why a CRL could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    #[error("the CRL does not decode: {0}")]
    Malformed(String),
    #[error("the CRL's issuer is not the configured CA")]
    WrongIssuer,
    #[error("the CRL's signature does not verify under the configured CA: {0}")]
    BadSignature(String),
    #[error("the CRL carries a critical extension we do not process: {0}")]
    UnsupportedCriticalExtension(String),
    #[error("two CRLs configured for the same CA")]
    DuplicateIssuer,
    #[error("the CA's keyUsage does not allow it to sign CRLs (cRLSign)")]
    IssuerNotForCrls,
}

/// One verified CRL: the revoked serial numbers of one CA and when the list is fresh.
#[derive(Debug, Clone)]
struct VerifiedCrl {
    next_update: Option<SystemTime>,
    /// Serial number (DER content octets) → revocation time.
    revoked: HashMap<Vec<u8>, SystemTime>,
}

/// The CRLs in force, keyed by the SHA-256 of the issuing CA's SubjectPublicKeyInfo (so a
/// lookup keys on the key that signed the certificate, not on a name that could be reused).
#[derive(Debug, Clone, Default)]
pub struct CrlSet {
    by_issuer_key: HashMap<[u8; 32], VerifiedCrl>,
}

/// The revocation status of one certificate at one time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Good,
    /// Revoked at or before the time asked about.
    Revoked {
        at: SystemTime,
    },
    /// No CRL for the issuer, or its CRL is past nextUpdate.
    Unknown(&'static str),
}

fn spki_key(cert: &Certificate) -> Result<[u8; 32], der::Error> {
    let spki = cert.tbs_certificate().subject_public_key_info().to_der()?;
    Ok(sha256(&spki))
}

/// The DER bytes of the first element inside a SEQUENCE: the signed part of a CRL, exactly as
/// received (re-encoding could differ from what was signed).
fn signed_part(der_bytes: &[u8]) -> Result<&[u8], der::Error> {
    let mut outer = SliceReader::new(der_bytes)?;
    let header = der::Header::peek(&outer)?;
    outer.read_slice(header.encoded_len()?)?; // skip the outer SEQUENCE header
    outer.tlv_bytes()
}

impl CrlSet {
    /// Verifies each `(issuing CA, CRL DER)` pair and builds the set.
    pub fn new<'a>(
        crls: impl IntoIterator<Item = (&'a Certificate, &'a [u8])>,
    ) -> Result<Self, CrlError> {
        let mut by_issuer_key = HashMap::new();
        for (ca, crl_der) in crls {
            let key = spki_key(ca).map_err(|e| CrlError::Malformed(e.to_string()))?;
            let crl = verify_crl(ca, crl_der)?;
            if by_issuer_key.insert(key, crl).is_some() {
                return Err(CrlError::DuplicateIssuer);
            }
        }
        Ok(CrlSet { by_issuer_key })
    }

    /// The status of `cert`, issued by `issuer`, at time `at`. A CRL past its nextUpdate answers
    /// Unknown unless `allow_stale`.
    pub fn status(
        &self,
        cert: &Certificate,
        issuer: &Certificate,
        at: SystemTime,
        allow_stale: bool,
    ) -> Status {
        let Ok(key) = spki_key(issuer) else {
            return Status::Unknown("issuer key does not encode");
        };
        let Some(crl) = self.by_issuer_key.get(&key) else {
            return Status::Unknown("no CRL is configured for the issuing CA");
        };
        let stale = crl.next_update.is_none_or(|next| next < at);
        if stale && !allow_stale {
            return Status::Unknown("the issuing CA's CRL is past its nextUpdate");
        }
        match crl
            .revoked
            .get(cert.tbs_certificate().serial_number().as_bytes())
        {
            Some(&revoked_at) if revoked_at <= at => Status::Revoked { at: revoked_at },
            _ => Status::Good,
        }
    }
}

fn verify_crl(ca: &Certificate, crl_der: &[u8]) -> Result<VerifiedCrl, CrlError> {
    let malformed = |e: der::Error| CrlError::Malformed(e.to_string());
    // RFC 5280 6.3.3 (f): a CA whose keyUsage is present must assert cRLSign to issue CRLs.
    match ca.tbs_certificate().get_extension::<KeyUsage>() {
        Ok(None) => {}
        Ok(Some((_, ku))) if ku.0.contains(KeyUsages::CRLSign) => {}
        Ok(Some(_)) | Err(_) => return Err(CrlError::IssuerNotForCrls),
    }
    let crl =
        CertificateList::<x509_cert::certificate::Rfc5280>::from_der(crl_der).map_err(malformed)?;
    let tbs = &crl.tbs_cert_list;
    if tbs.issuer != *ca.tbs_certificate().subject() {
        return Err(CrlError::WrongIssuer);
    }
    if crl.signature_algorithm != tbs.signature {
        return Err(CrlError::Malformed(
            "inner and outer signature algorithms differ".into(),
        ));
    }
    let signature = crl
        .signature
        .as_bytes()
        .ok_or_else(|| CrlError::Malformed("signature is not whole bytes".into()))?;
    crypto::verify(
        Purpose::Certificate,
        &crl.signature_algorithm.oid,
        None,
        ca.tbs_certificate().subject_public_key_info(),
        signed_part(crl_der).map_err(malformed)?,
        signature,
    )
    .map_err(|e| CrlError::BadSignature(format!("{e:?}")))?;

    // Fail closed on anything that would change what the list means (delta CRLs, partitioned
    // or indirect CRLs): we only understand complete, direct CRLs.
    for ext in tbs.crl_extensions.iter().flatten() {
        if ext.critical {
            return Err(CrlError::UnsupportedCriticalExtension(
                ext.extn_id.to_string(),
            ));
        }
    }
    let mut revoked = HashMap::new();
    for entry in tbs.revoked_certificates.iter().flatten() {
        for ext in entry.crl_entry_extensions.iter().flatten() {
            if ext.critical {
                return Err(CrlError::UnsupportedCriticalExtension(
                    ext.extn_id.to_string(),
                ));
            }
        }
        let serial = entry.serial_number.as_bytes().to_vec();
        let at = entry.revocation_date.to_system_time();
        // A serial listed twice counts from its earliest revocation.
        revoked
            .entry(serial)
            .and_modify(|t: &mut SystemTime| *t = (*t).min(at))
            .or_insert(at);
    }
    // Read for structure: a CRL whose number or reason codes do not decode is malformed.
    for ext in tbs.crl_extensions.iter().flatten() {
        if ext.extn_id == const_oid::db::rfc5280::ID_CE_CRL_NUMBER {
            CrlNumber::from_der(ext.extn_value.as_bytes()).map_err(malformed)?;
        }
    }
    for entry in tbs.revoked_certificates.iter().flatten() {
        for ext in entry.crl_entry_extensions.iter().flatten() {
            if ext.extn_id == const_oid::db::rfc5280::ID_CE_CRL_REASONS {
                CrlReason::from_der(ext.extn_value.as_bytes()).map_err(malformed)?;
            }
        }
    }
    Ok(VerifiedCrl {
        next_update: tbs.next_update.map(|t| t.to_system_time()),
        revoked,
    })
}
