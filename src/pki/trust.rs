//! Trust material from files: trust anchors, intermediates and one CRL file per issuing CA,
//! turned into a [`Verifier`]; and [`CrlWatcher`], which puts changed CRL files in force.

use std::{
    fs,
    path::{Path, PathBuf},
};

use der::Decode;
use ring::digest;
use x509_cert::Certificate;

use crate::domain::signature::{
    CrlError, CrlSet, TrustError, Verifier, VerifierConfig, parse_certificates,
};

/// Why trust material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a certificate: {detail}")]
    Certificate { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    CrlFile { path: PathBuf, detail: String },
    #[error("CRL {path}: {source}")]
    Crl { path: PathBuf, source: CrlError },
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// One CRL file and the CA that issues it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrlFile {
    /// The issuing CA's certificate (PEM or DER).
    pub ca: PathBuf,
    /// The CRL (PEM or DER); re-read when it changes.
    pub crl: PathBuf,
}

/// Where the trust material lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustFiles {
    /// Trust anchors (PEM, several per file allowed, or DER).
    pub anchors: Vec<PathBuf>,
    /// Intermediate CAs known in advance (signatures may embed others).
    #[serde(default)]
    pub intermediates: Vec<PathBuf>,
    /// One CRL per issuing CA. A certificate whose issuer has no CRL here is REVOCATION_UNKNOWN.
    #[serde(default)]
    pub crls: Vec<CrlFile>,
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    fs::read(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<Vec<u8>>, Error> {
    parse_certificates(&read(path)?).map_err(|e| Error::Certificate {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

fn single_certificate(path: &Path) -> Result<Certificate, Error> {
    let ders = certificates(path)?;
    let [der] = ders.as_slice() else {
        return Err(Error::Certificate {
            path: path.to_owned(),
            detail: format!("expected one certificate, found {}", ders.len()),
        });
    };
    Certificate::from_der(der).map_err(|e| Error::Certificate {
        path: path.to_owned(),
        detail: e.to_string(),
    })
}

/// The DER of a CRL file in PEM ("X509 CRL") or DER.
fn crl_der(path: &Path, bytes: &[u8]) -> Result<Vec<u8>, Error> {
    if !bytes.starts_with(b"-----BEGIN") {
        return Ok(bytes.to_vec());
    }
    match der::pem::decode_vec(bytes) {
        Ok(("X509 CRL", der)) => Ok(der),
        Ok((label, _)) => Err(Error::CrlFile {
            path: path.to_owned(),
            detail: format!("expected a PEM X509 CRL, found {label}"),
        }),
        Err(e) => Err(Error::CrlFile {
            path: path.to_owned(),
            detail: e.to_string(),
        }),
    }
}

impl TrustFiles {
    /// Loads everything and builds the verifier, with a watcher for the CRL files.
    pub fn load(&self, config: VerifierConfig) -> Result<(Verifier, CrlWatcher), Error> {
        let anchors = self
            .anchors
            .iter()
            .map(|p| certificates(p))
            .collect::<Result<Vec<_>, _>>()?
            .concat();
        let intermediates = self
            .intermediates
            .iter()
            .map(|p| certificates(p))
            .collect::<Result<Vec<_>, _>>()?
            .concat();
        let mut watcher = CrlWatcher {
            files: self
                .crls
                .iter()
                .map(|f| Ok((single_certificate(&f.ca)?, f.crl.clone())))
                .collect::<Result<Vec<_>, Error>>()?,
            seen: None,
        };
        let (files, fingerprint) = watcher.read_files()?;
        let crls = watcher.parse(&files)?;
        watcher.seen = Some(fingerprint);
        let verifier = Verifier::new(config, &anchors, &intermediates, crls)?;
        Ok((verifier, watcher))
    }
}

/// Watches the configured CRL files and puts a changed set in force. Each look reads the files
/// and compares their fingerprint (SHA-256 of every file's bytes) with the set in force; only a
/// changed set is parsed and verified. Blocking work: call [`CrlWatcher::refresh`] off the
/// async runtime (`spawn_blocking`).
pub struct CrlWatcher {
    files: Vec<(Certificate, PathBuf)>,
    /// SHA-256 over every CRL file's bytes, as last put in force.
    seen: Option<Vec<u8>>,
}

impl CrlWatcher {
    /// Every CRL file's DER, and the fingerprint of their bytes.
    fn read_files(&self) -> Result<(Vec<Vec<u8>>, Vec<u8>), Error> {
        let mut ders = Vec::with_capacity(self.files.len());
        let mut all = digest::Context::new(&digest::SHA256);
        for (_, path) in &self.files {
            let bytes = read(path)?;
            all.update(digest::digest(&digest::SHA256, &bytes).as_ref());
            ders.push(crl_der(path, &bytes)?);
        }
        Ok((ders, all.finish().as_ref().to_vec()))
    }

    /// The CRL set of `ders` (one per file, in order), each verified against its CA.
    fn parse(&self, ders: &[Vec<u8>]) -> Result<CrlSet, Error> {
        let mut set = Vec::with_capacity(ders.len());
        for ((ca, path), der) in self.files.iter().zip(ders) {
            // Verify each on its own first, so that an error names the file.
            CrlSet::new([(ca, der.as_slice())]).map_err(|source| Error::Crl {
                path: path.to_path_buf(),
                source,
            })?;
            set.push((ca, der.as_slice()));
        }
        CrlSet::new(set).map_err(|source| Error::Crl {
            path: PathBuf::new(),
            source,
        })
    }

    /// Re-reads the CRL files; if any changed and all verify, puts them in force and returns the
    /// new generation. Unchanged files are not parsed. On an error the CRLs in force stay as
    /// they are.
    pub fn refresh(&mut self, verifier: &Verifier) -> Result<Option<u64>, Error> {
        let (ders, fingerprint) = self.read_files()?;
        if self.seen.as_ref() == Some(&fingerprint) {
            return Ok(None);
        }
        let crls = self.parse(&ders)?;
        self.seen = Some(fingerprint);
        Ok(Some(verifier.replace_crls(crls)))
    }
}
