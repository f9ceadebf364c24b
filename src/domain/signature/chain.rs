//! Certification path building and RFC 5280 validation, delegated to certval (policy processing
//! included, so the critical CertificatePolicies of real HPKI certificates are understood), with
//! certificate signatures verified by our `crypto`. Revocation is not done here: see `crl`.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use certval::{
    CertFile, CertSource, CertVector, CertificationPathResults, CertificationPathSettings,
    PDVCertificate, PathValidationStatus, PkiEnvironment, TaSource, TimeOfInterest,
};
use const_oid::ObjectIdentifier;
use der::{Decode, Encode};
use x509_cert::Certificate;

use super::crypto::CertvalVerifier;

/// Why no trusted path was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChainError {
    /// A certificate of the best path is outside its validity period at the time asked about.
    NotValidAtTime(String),
    /// No path to a trust anchor, or none that could be validated.
    Untrusted(String),
    /// Paths to a trust anchor were found and none validates: certval's diagnostic for each, for
    /// the server's log (its debug text, not for callers).
    PathInvalid(String),
    /// A path validates, but for none of the required policies.
    NoAcceptablePolicy,
}

/// Why trust material could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error("no trust anchor configured")]
    NoAnchors,
    #[error("certificate {index} of the {what} does not decode: {detail}")]
    BadCertificate {
        what: &'static str,
        index: usize,
        detail: String,
    },
}

/// A validated path, signer first and trust anchor last, with the window in which every one of
/// its certificates is valid.
#[derive(Debug)]
pub(crate) struct Chain {
    pub certs: Vec<Certificate>,
    /// SHA-256 of each of `certs`' DER, in the same order.
    pub fingerprints: Vec<[u8; 32]>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Chain {
    /// The certificate the chain was validated for (the first of `certs`).
    pub(super) fn leaf(&self) -> &Certificate {
        &self.certs[0]
    }

    fn new(certs: Vec<Certificate>) -> Self {
        let validity = |c: &Certificate| {
            let v = c.tbs_certificate().validity();
            (v.not_before.to_system_time(), v.not_after.to_system_time())
        };
        let not_before = certs
            .iter()
            .map(|c| validity(c).0)
            .max()
            .unwrap_or(UNIX_EPOCH);
        let not_after = certs
            .iter()
            .map(|c| validity(c).1)
            .min()
            .unwrap_or(UNIX_EPOCH);
        let fingerprints = certs
            .iter()
            .map(|c| c.to_der().map(|der| crate::domain::hash::sha256(&der)))
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        Chain {
            certs,
            fingerprints,
            not_before,
            not_after,
        }
    }

    /// True when every certificate of the chain is valid at `at` (bounds inclusive).
    pub(super) fn valid_at(&self, at: SystemTime) -> bool {
        self.not_before <= at && at <= self.not_after
    }
}

/// The configured trust anchors and intermediates.
#[derive(Clone)]
pub(crate) struct TrustStore {
    anchors: TaSource,
    intermediates: Vec<Vec<u8>>,
}

fn decode_all(what: &'static str, ders: &[Vec<u8>]) -> Result<(), TrustError> {
    for (index, der) in ders.iter().enumerate() {
        Certificate::from_der(der).map_err(|e| TrustError::BadCertificate {
            what,
            index,
            detail: e.to_string(),
        })?;
    }
    Ok(())
}

fn time_of_interest(at: SystemTime) -> TimeOfInterest {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    // 0 would mean "no time check" to certval; the epoch itself is never a receipt time.
    TimeOfInterest::from_unix_secs(secs.max(1)).unwrap_or_default()
}

impl TrustStore {
    pub(super) fn new(anchors: &[Vec<u8>], intermediates: &[Vec<u8>]) -> Result<Self, TrustError> {
        if anchors.is_empty() {
            return Err(TrustError::NoAnchors);
        }
        decode_all("trust anchors", anchors)?;
        decode_all("intermediates", intermediates)?;
        let mut ta = TaSource::new();
        for der in anchors {
            ta.push(CertFile {
                filename: String::new(),
                bytes: der.clone(),
            });
        }
        ta.initialize().map_err(|e| TrustError::BadCertificate {
            what: "trust anchors",
            index: 0,
            detail: format!("{e:?}"),
        })?;
        Ok(TrustStore {
            anchors: ta,
            intermediates: intermediates.to_vec(),
        })
    }

    /// Finds a path from `leaf` to a trust anchor, using the configured intermediates and
    /// `presented` ones (those embedded in a signature), that validates at `at`. With
    /// `policies`, RFC 5280 policy processing must end with one of them valid along the whole
    /// path (initial-explicit-policy).
    pub(super) fn validate(
        &self,
        leaf: &[u8],
        presented: &[Vec<u8>],
        at: SystemTime,
        max_depth: Option<u8>,
        policies: Option<&[ObjectIdentifier]>,
    ) -> Result<Chain, ChainError> {
        let untrusted = |what: String| ChainError::Untrusted(what);
        let toi = time_of_interest(at);
        let leaf_cert = Certificate::from_der(leaf)
            .map_err(|e| untrusted(format!("signer certificate does not decode: {e}")))?;
        let validity = leaf_cert.tbs_certificate().validity();
        if validity.not_before.to_system_time() > at || validity.not_after.to_system_time() < at {
            return Err(ChainError::NotValidAtTime("signer certificate".into()));
        }

        let mut cps = CertificationPathSettings::new();
        cps.set_time_of_interest(toi);
        cps.set_check_revocation_status(false);
        // The anchor's own constraints (name constraints, critical extensions) apply too.
        cps.set_enforce_trust_anchor_constraints(true);
        if let Some(depth) = max_depth {
            cps.set_initial_path_length_constraint(depth);
        }
        if let Some(policies) = policies {
            cps.set_initial_policy_set(policies.iter().map(|p| p.to_string()).collect());
            cps.set_initial_explicit_policy_indicator(true);
        }
        let mut pe = PkiEnvironment::new();
        pe.add_validate_path_callback(certval::validate_path_rfc5280);
        pe.add_calculate_hash_callback(certval::calculate_hash_rust_crypto);
        pe.add_verify_signature_message_callback(CertvalVerifier);
        pe.add_trust_anchor_source(Box::new(self.anchors.clone()));

        let mut sources = CertSource::new();
        for der in self.intermediates.iter().chain(presented) {
            sources.push(CertFile {
                filename: String::new(),
                bytes: der.clone(),
            });
        }
        // Certificates that do not decode are skipped by certval; path building decides.
        let _ = sources.initialize(&cps);
        sources.find_all_partial_paths(&pe, &cps);
        pe.add_certificate_source(Box::new(sources));

        let target = PDVCertificate::try_from(leaf)
            .map_err(|_| untrusted("signer certificate does not decode".into()))?;
        let mut paths = Vec::new();
        if pe
            .get_paths_for_target(&target, &mut paths, 0, toi)
            .is_err()
            || paths.is_empty()
        {
            return Err(untrusted("no path to a trust anchor".into()));
        }
        let mut failures = Vec::new();
        for path in &paths {
            let settings = match certval::enforce_trust_anchor_constraints(&cps, &path.trust_anchor)
            {
                Ok(settings) => settings,
                Err(e) => {
                    failures.push(format!("{e:?}"));
                    continue;
                }
            };
            let mut results = CertificationPathResults::new();
            let outcome = pe.validate_path(&pe, &settings, path, &mut results);
            // The status is in the results, or only in the error.
            let status = match (&outcome, results.get_validation_status()) {
                (_, Some(status)) => Some(status),
                (Err(certval::Error::PathValidation(status)), None) => Some(*status),
                _ => None,
            };
            match (outcome, status) {
                (Ok(()), Some(PathValidationStatus::Valid)) => {
                    let mut ders: Vec<&[u8]> = vec![path.target.as_bytes()];
                    ders.extend(path.intermediates.iter().rev().map(|c| c.as_bytes()));
                    ders.push(path.trust_anchor.as_bytes());
                    let certs = ders
                        .into_iter()
                        .map(Certificate::from_der)
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| untrusted(format!("path certificate does not decode: {e}")))?;
                    if certs.iter().any(has_repeated_extension) {
                        // RFC 5280 4.2: an extension appears at most once; a repeated one is
                        // ambiguous (which one did the path validation read?).
                        return Err(untrusted(
                            "a certificate of the path repeats an extension".into(),
                        ));
                    }
                    return Ok(Chain::new(certs));
                }
                (_, Some(PathValidationStatus::NullPolicySet)) if policies.is_some() => {
                    return Err(ChainError::NoAcceptablePolicy);
                }
                (_, Some(PathValidationStatus::InvalidNotBeforeDate))
                | (_, Some(PathValidationStatus::InvalidNotAfterDate)) => {
                    return Err(ChainError::NotValidAtTime(
                        "a CA certificate of the path".into(),
                    ));
                }
                (outcome, status) => failures.push(format!("{status:?} {outcome:?}")),
            }
        }
        Err(ChainError::PathInvalid(failures.join("; ")))
    }
}

fn has_repeated_extension(cert: &Certificate) -> bool {
    let mut seen = std::collections::HashSet::new();
    cert.tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .any(|ext| !seen.insert(ext.extn_id))
}

/// Validated chains by SHA-256 of the signer certificate. Each entry carries its validity window,
/// so an expiry takes effect at once; revocation is looked up afresh on every verification.
pub(crate) struct ChainCache {
    capacity: usize,
    entries: RwLock<HashMap<[u8; 32], Arc<Chain>>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl ChainCache {
    pub(super) fn new(capacity: usize) -> Self {
        ChainCache {
            capacity,
            entries: RwLock::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The cached chain of the signer, if it is valid at `at`. Not counted: a verification
    /// tells [`Self::count`] whether it found its signer's chain.
    pub(super) fn get(&self, signer: &[u8; 32], at: SystemTime) -> Option<Arc<Chain>> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries.get(signer).filter(|c| c.valid_at(at)).cloned()
    }

    /// Counts one verification's lookup, which found a valid chain (`hit`) or did not.
    pub(super) fn count(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Lookups that found a valid chain, and lookups that did not.
    pub(super) fn hits_and_misses(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    pub(super) fn insert(&self, signer: [u8; 32], chain: Arc<Chain>) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&signer) {
            // Bounded: evict one arbitrary entry; a re-verification repopulates it.
            if let Some(victim) = entries.keys().next().copied() {
                entries.remove(&victim);
            }
        }
        entries.insert(signer, chain);
    }
}
