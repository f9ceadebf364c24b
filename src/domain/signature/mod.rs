//! Signed-document verification: decides whether a document is trustworthy medical evidence.
//!
//! In order, failing closed, every refusal with a [`Reason`]: the CMS envelope (one signer, the
//! message digest, the signature), the chain to a trust anchor, the signer profile (keyUsage
//! nonRepudiation and a signature policy), time (signing-time near receipt; the chain valid at
//! signing-time and at receipt), revocation, the healthcare role, and last a strict decode of
//! the content. Success yields a [`VerifiedDocument`], which nothing outside this module can
//! construct.
//!
//! Pure: the receipt time is a parameter, CRLs arrive as bytes; no clock reads, no file or
//! network IO, no tonic, prost or store engine. Every signature goes through `crypto` (ring).

mod chain;
mod cms;
mod crl;
mod crypto;
mod hpki;

use std::{
    fmt,
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use const_oid::ObjectIdentifier;
use der::Decode;
use x509_cert::Certificate;

pub use chain::TrustError;
pub use crl::{CrlError, CrlSet};
pub use hpki::{HcActor, Role, RoleAttributeError, RoleEntry, RoleTable, hc_actors};

/// The machine-readable reason for a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The CMS structure is not a detached SignedData with one signer and the required signed
    /// attributes.
    MalformedSignature,
    DigestMismatch,
    SignatureInvalid,
    UnsupportedAlgorithm,
    CertUntrusted,
    CertNotForSigning,
    SigningTimeOutOfWindow,
    CertExpired,
    CertRevoked,
    RevocationUnknown,
    RoleNotAllowed,
    MalformedContent,
}

impl Reason {
    /// The stable code, as carried in API errors.
    pub fn code(self) -> &'static str {
        match self {
            Reason::MalformedSignature => "MALFORMED_SIGNATURE",
            Reason::DigestMismatch => "DIGEST_MISMATCH",
            Reason::SignatureInvalid => "SIGNATURE_INVALID",
            Reason::UnsupportedAlgorithm => "UNSUPPORTED_ALGORITHM",
            Reason::CertUntrusted => "CERT_UNTRUSTED",
            Reason::CertNotForSigning => "CERT_NOT_FOR_SIGNING",
            Reason::SigningTimeOutOfWindow => "SIGNING_TIME_OUT_OF_WINDOW",
            Reason::CertExpired => "CERT_EXPIRED",
            Reason::CertRevoked => "CERT_REVOKED",
            Reason::RevocationUnknown => "REVOCATION_UNKNOWN",
            Reason::RoleNotAllowed => "ROLE_NOT_ALLOWED",
            Reason::MalformedContent => "MALFORMED_CONTENT",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A refused document: the reason and a detail for the caller, and what a library said about it
/// for the server's log. The detail is our own text and names certificates, algorithms and
/// fields, never document content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct Refusal {
    pub reason: Reason,
    pub detail: String,
    /// The path validator's own diagnostic (its debug text), for the server's log, never for
    /// the caller. It names validation statuses, never document content.
    pub diagnostic: Option<String>,
}

impl Refusal {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        Refusal {
            reason,
            detail: detail.into(),
            diagnostic: None,
        }
    }
}

/// The kinds of signed document, each with the qualifications that may sign it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    Prescription,
    DispensingRecord,
}

impl DocumentKind {
    /// A prescription needs a doctor or dentist, a dispensing record a pharmacist.
    pub fn allowed_roles(self) -> &'static [Role] {
        match self {
            DocumentKind::Prescription => &[Role::Doctor, Role::Dentist],
            DocumentKind::DispensingRecord => &[Role::Pharmacist],
        }
    }
}

/// A document type that can be signed: how its verified bytes are strictly decoded. Implemented
/// outside the domain by the wire types.
pub trait SignedContent: Sized {
    const KIND: DocumentKind;

    /// Decodes `bytes` strictly: unknown fields, a wrong document type, or bytes that do not
    /// re-encode to themselves are errors (returned as a detail without content).
    fn decode_strict(bytes: &[u8]) -> Result<Self, String>;
}

/// Who signed, as read from the verified signer certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// Subject commonName.
    pub name: String,
    /// Subject serialNumber.
    pub serial_number: String,
    /// The qualification used for this document.
    pub role: Role,
    /// SHA-256 of the signer certificate.
    pub certificate_sha256: [u8; 32],
}

/// A document that passed every check. Only [`Verifier::verify`] creates one.
#[derive(Debug, Clone)]
pub struct VerifiedDocument<D> {
    document: D,
    content: Arc<[u8]>,
    cms_signature: Arc<[u8]>,
    signer: Signer,
    signing_time: SystemTime,
    received_at: SystemTime,
}

impl<D> VerifiedDocument<D> {
    pub fn document(&self) -> &D {
        &self.document
    }
    /// The exact signed bytes.
    pub fn content(&self) -> &Arc<[u8]> {
        &self.content
    }
    pub fn cms_signature(&self) -> &Arc<[u8]> {
        &self.cms_signature
    }
    pub fn signer(&self) -> &Signer {
        &self.signer
    }
    /// The signing-time attribute (declared by the signer, checked to lie near receipt).
    pub fn signing_time(&self) -> SystemTime {
        self.signing_time
    }
    /// The time the verification was made as of.
    pub fn received_at(&self) -> SystemTime {
        self.received_at
    }
}

/// Verification policy. Every field has a production default except the trust material, which
/// comes separately.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Signer certificates must carry one of these CertificatePolicies OIDs.
    pub signature_policies: Vec<ObjectIdentifier>,
    /// HCActor codedData OID → role.
    pub roles: RoleTable,
    /// How long before receipt a signing-time may lie.
    pub signing_time_window: Duration,
    /// How far after receipt a signing-time may lie (clock skew).
    pub clock_skew: Duration,
    /// Accept a CRL past its nextUpdate instead of answering REVOCATION_UNKNOWN.
    pub allow_stale_crls: bool,
    /// Validated chains kept (0 disables the cache).
    pub chain_cache_capacity: usize,
}

/// HPKI's signature-certificate policy, as read from the MEDIS test certificate.
pub const HPKI_SIGNATURE_POLICY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.392.100495.1.5.1.1.0.1");
/// The development PKI's signature policy (certs/, never in production).
pub const DEV_SIGNATURE_POLICY: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.32473.1.1");

impl Default for VerifierConfig {
    fn default() -> Self {
        VerifierConfig {
            signature_policies: vec![HPKI_SIGNATURE_POLICY, DEV_SIGNATURE_POLICY],
            roles: RoleTable::default(),
            signing_time_window: Duration::from_secs(24 * 60 * 60),
            clock_skew: Duration::from_secs(5 * 60),
            allow_stale_crls: false,
            chain_cache_capacity: 10_000,
        }
    }
}

/// The CRLs in force and their generation (bumped on every replacement).
struct Crls {
    set: Arc<CrlSet>,
    generation: u64,
}

/// Verifies signed documents against configured trust anchors, CRLs and policy.
pub struct Verifier {
    config: VerifierConfig,
    trust: chain::TrustStore,
    cache: chain::ChainCache,
    crls: RwLock<Crls>,
}

/// Certificates from DER or PEM bytes; used to load trust material.
pub fn parse_certificates(bytes: &[u8]) -> Result<Vec<Vec<u8>>, der::Error> {
    use der::Encode;
    if bytes.starts_with(b"-----BEGIN") {
        Certificate::load_pem_chain(bytes)?
            .iter()
            .map(|c| c.to_der())
            .collect()
    } else {
        Certificate::from_der(bytes)?;
        Ok(vec![bytes.to_vec()])
    }
}

/// The signer's certificate as a verification found it among those the signature carries.
struct FoundSigner {
    /// Its index in the envelope's certificates.
    position: usize,
    /// SHA-256 of its DER.
    fingerprint: [u8; 32],
    known: Known,
}

/// The leaf of a chain validated before, or a certificate decoded now and not yet trusted.
enum Known {
    Validated(Arc<chain::Chain>),
    Decoded(Box<Certificate>),
}

impl Known {
    fn certificate(&self) -> &Certificate {
        match self {
            Known::Validated(chain) => chain.leaf(),
            Known::Decoded(cert) => cert,
        }
    }
}

/// A certificate the signature carries, decoded: one that does not decode is refused, as the
/// pharmacy's verifier would refuse the signature that carries it.
fn decode_carried(der: &[u8]) -> Result<Certificate, Refusal> {
    Certificate::from_der(der).map_err(|e| {
        Refusal::new(
            Reason::MalformedSignature,
            format!("embedded certificate: {e}"),
        )
    })
}

impl Verifier {
    /// Chain-cache lookups that hit, and that missed, since start-up.
    pub fn chain_cache_hits_and_misses(&self) -> (u64, u64) {
        self.cache.hits_and_misses()
    }

    /// A verifier for the given anchors and intermediates (DER), CRLs and policy.
    pub fn new(
        config: VerifierConfig,
        anchors: &[Vec<u8>],
        intermediates: &[Vec<u8>],
        crls: CrlSet,
    ) -> Result<Self, TrustError> {
        Ok(Verifier {
            cache: chain::ChainCache::new(config.chain_cache_capacity),
            trust: chain::TrustStore::new(anchors, intermediates)?,
            crls: RwLock::new(Crls {
                set: Arc::new(crls),
                generation: 0,
            }),
            config,
        })
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.config
    }

    /// Puts a new set of CRLs in force for every verification that starts from now on.
    /// Returns the new generation.
    pub fn replace_crls(&self, crls: CrlSet) -> u64 {
        let mut current = self.crls.write().unwrap_or_else(|e| e.into_inner());
        current.set = Arc::new(crls);
        current.generation += 1;
        current.generation
    }

    /// The generation of the CRLs in force.
    pub fn crl_generation(&self) -> u64 {
        self.crls
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .generation
    }

    fn crl_set(&self) -> Arc<CrlSet> {
        Arc::clone(&self.crls.read().unwrap_or_else(|e| e.into_inner()).set)
    }

    fn build_chain(
        &self,
        leaf: &[u8],
        presented: &[Vec<u8>],
        at: SystemTime,
        max_depth: Option<u8>,
        policies: Option<&[ObjectIdentifier]>,
    ) -> Result<chain::Chain, Refusal> {
        self.trust
            .validate(leaf, presented, at, max_depth, policies)
            .map_err(|e| match e {
                chain::ChainError::NotValidAtTime(which) => {
                    Refusal::new(Reason::CertExpired, format!("{which}: not valid"))
                }
                chain::ChainError::Untrusted(why) => Refusal::new(Reason::CertUntrusted, why),
                chain::ChainError::PathInvalid(diagnostic) => Refusal {
                    diagnostic: Some(diagnostic),
                    ..Refusal::new(
                        Reason::CertUntrusted,
                        "the certification path does not validate",
                    )
                },
                chain::ChainError::NoAcceptablePolicy => Refusal::new(
                    Reason::CertNotForSigning,
                    "no configured signature policy is valid along the certification path",
                ),
            })
    }

    fn check_revocation(&self, chain: &chain::Chain, at: SystemTime) -> Result<(), Refusal> {
        let crls = self.crl_set();
        for pair in chain.certs.windows(2) {
            let (cert, issuer) = (&pair[0], &pair[1]);
            match crls.status(cert, issuer, at, self.config.allow_stale_crls) {
                crl::Status::Good => {}
                crl::Status::Revoked { .. } => {
                    return Err(Refusal::new(
                        Reason::CertRevoked,
                        format!(
                            "certificate issued by {} is revoked",
                            issuer.tbs_certificate().subject()
                        ),
                    ));
                }
                crl::Status::Unknown(why) => {
                    return Err(Refusal::new(Reason::RevocationUnknown, why));
                }
            }
        }
        Ok(())
    }

    /// The certificate the envelope's signer identifier names, in the order carried: a
    /// certificate whose chain the cache holds, valid at `at`, is the leaf of that chain and is
    /// not decoded again. Every other certificate carried must decode too, unless it is one of
    /// that cached chain's: the signature is handed out as received.
    fn find_signer(
        &self,
        envelope: &cms::Envelope<'_>,
        at: SystemTime,
    ) -> Result<FoundSigner, Refusal> {
        let mut found = None;
        for (position, der) in envelope.certificates.iter().enumerate() {
            let fingerprint = super::hash::sha256(der);
            if found.is_some() {
                if !matches!(&found, Some(FoundSigner { known: Known::Validated(chain), .. })
                    if chain.fingerprints.contains(&fingerprint))
                {
                    decode_carried(der)?;
                }
                continue;
            }
            let known = match self.cache.get(&fingerprint, at) {
                Some(chain) => Known::Validated(chain),
                None => Known::Decoded(Box::new(decode_carried(der)?)),
            };
            if envelope.is_signed_by(known.certificate()) {
                found = Some(FoundSigner {
                    position,
                    fingerprint,
                    known,
                });
            }
        }
        found.ok_or_else(|| {
            Refusal::new(
                Reason::MalformedSignature,
                "the signer's certificate is not embedded",
            )
        })
    }

    /// Validates a certificate on its own, outside any document: a path from `leaf` through the
    /// configured and `presented` intermediates to a trust anchor, valid at `at` (with at most
    /// `max_depth` intermediates when given), then, if `check_revocation`, its status in the CRLs
    /// in force. For tools and the x509-limbo conformance test; documents use [`Self::verify`].
    pub fn validate_certificate(
        &self,
        leaf: &[u8],
        presented: &[Vec<u8>],
        at: SystemTime,
        max_depth: Option<u8>,
        check_revocation: bool,
    ) -> Result<(), Refusal> {
        let chain = self.build_chain(leaf, presented, at, max_depth, None)?;
        if check_revocation {
            self.check_revocation(&chain, at)?;
        }
        Ok(())
    }

    /// Verifies `cms_signature` over `content` as of `received_at`, then decodes the content as
    /// `D`.
    pub fn verify<D: SignedContent>(
        &self,
        content: &[u8],
        cms_signature: &[u8],
        received_at: SystemTime,
    ) -> Result<VerifiedDocument<D>, Refusal> {
        // 1. The envelope's structure, and the signer's certificate among those it carries.
        let envelope = cms::parse(cms_signature)?;
        let found = self.find_signer(&envelope, received_at)?;
        self.cache.count(matches!(found.known, Known::Validated(_)));

        // 2. The signed attributes, the digest and the signature.
        let signing_time = envelope.verify(content, found.known.certificate())?;

        // 3. The chain to a trust anchor, valid at receipt.
        let chain = match found.known {
            Known::Validated(chain) => chain,
            Known::Decoded(_) => {
                let leaf = envelope.certificates[found.position];
                let others: Vec<Vec<u8>> = envelope
                    .certificates
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != found.position)
                    .map(|(_, der)| der.to_vec())
                    .collect();
                let chain = Arc::new(self.build_chain(
                    leaf,
                    &others,
                    received_at,
                    None,
                    Some(&self.config.signature_policies),
                )?);
                self.cache.insert(found.fingerprint, Arc::clone(&chain));
                chain
            }
        };
        let fingerprint = found.fingerprint;
        let signer = chain.leaf();

        // 4. The signer profile: a signature certificate, not an authentication one.
        if !hpki::has_non_repudiation(signer) {
            return Err(Refusal::new(
                Reason::CertNotForSigning,
                "signer certificate lacks keyUsage nonRepudiation",
            ));
        }
        let policies = hpki::policies(signer).map_err(|e| {
            Refusal::new(
                Reason::CertNotForSigning,
                format!("certificatePolicies: {e}"),
            )
        })?;
        if !policies
            .iter()
            .any(|p| *p != hpki::ANY_POLICY && self.config.signature_policies.contains(p))
        {
            return Err(Refusal::new(
                Reason::CertNotForSigning,
                "signer certificate has no configured signature policy",
            ));
        }

        // 5. Time: signing-time is self-declared, so it must lie close to receipt, and the whole
        //    chain must be valid both then and at receipt.
        if signing_time > received_at + self.config.clock_skew
            || signing_time + self.config.signing_time_window < received_at
        {
            return Err(Refusal::new(
                Reason::SigningTimeOutOfWindow,
                "signing-time is too far from the time of receipt",
            ));
        }
        if !chain.valid_at(signing_time) {
            return Err(Refusal::new(
                Reason::CertExpired,
                "a certificate of the chain is not valid at signing-time",
            ));
        }

        // 6. Revocation, as of receipt: signing-time cannot prove a signature predates it.
        self.check_revocation(&chain, received_at)?;

        // 7. The qualification.
        let actors = hpki::hc_actors(signer)
            .map_err(|e| Refusal::new(Reason::RoleNotAllowed, e.to_string()))?;
        let role = match hpki::judge_roles(&actors, &self.config.roles) {
            hpki::RoleOutcome::NameMismatch { oid } => {
                return Err(Refusal::new(
                    Reason::RoleNotAllowed,
                    format!("role name disagrees with role OID {oid}"),
                ));
            }
            hpki::RoleOutcome::Qualified(roles) => roles
                .into_iter()
                .find(|r| D::KIND.allowed_roles().contains(r))
                .ok_or_else(|| {
                    Refusal::new(
                        Reason::RoleNotAllowed,
                        format!("the signer holds no qualification for a {:?}", D::KIND),
                    )
                })?,
        };
        let identity = hpki::subject_identity(signer).ok_or_else(|| {
            Refusal::new(
                Reason::CertNotForSigning,
                "signer subject lacks a single commonName and serialNumber",
            )
        })?;

        // 8. Only now is the content read.
        let document = D::decode_strict(content)
            .map_err(|detail| Refusal::new(Reason::MalformedContent, detail))?;

        Ok(VerifiedDocument {
            document,
            content: Arc::from(content),
            cms_signature: Arc::from(cms_signature),
            signer: Signer {
                name: identity.name,
                serial_number: identity.serial_number,
                role,
                certificate_sha256: fingerprint,
            },
            signing_time,
            received_at,
        })
    }
}
