//! The server's TLS configuration and its reload: [`TlsFiles`] (where the material lives) load
//! into a [`ServerTls`] (the `rustls::ServerConfig` in force, shared with the accept loop) and a
//! [`TlsReloader`] that puts changed files in force. Files are read together and fingerprinted;
//! they are parsed (`Material`) only when a byte changed, and every CRL is checked against its CA
//! when loaded. The configuration: ring as the one crypto provider, ALPN `h2`, no session
//! resumption, and the `InstitutionVerifier`. Reads files; must not depend on the
//! document-signature code (`domain::signature`, `pki::trust`) or on the accept loop.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
    time::SystemTime,
};

use der::{Decode, Encode, asn1::ObjectIdentifier};
use ring::{digest, signature};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject},
    server::{NoServerSessionStorage, WebPkiClientVerifier},
};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use x509_cert::{
    Certificate,
    crl::CertificateList,
    spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned},
};

use super::{
    error::{TlsError, file_error, read},
    recheck::VerifierInForce,
    verifier::InstitutionVerifier,
};

/// Where the server's TLS material lives. PEM (several certificates per CA file allowed) or DER.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct TlsFiles {
    /// The server certificate, followed by its chain if any.
    pub server_cert: PathBuf,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub server_key: PathBuf,
    /// CAs that issue institution client certificates (trust anchors). They issue the client
    /// certificates directly: a CRL is accepted only from one of these CAs.
    pub client_ca: Vec<PathBuf>,
    /// CRLs of the client CAs; re-read by [`TlsReloader::refresh`]. Empty: no revocation
    /// checking. Otherwise every client CA needs its CRL here (unknown status is refused).
    #[serde(default)]
    pub client_crls: Vec<PathBuf>,
}

impl TlsFiles {
    /// Reads every file and builds the server configuration, with a reloader for later changes.
    pub fn load(&self) -> Result<(ServerTls, TlsReloader), TlsError> {
        let read = FileBytes::read(self)?;
        let seen = read.fingerprint;
        let (config, verifier) = Material::parse(self, read.bytes)?.server_config()?;
        let tls = ServerTls {
            current: Arc::new(RwLock::new(config)),
            verifier: Arc::new(watch::Sender::new(verifier)),
        };
        let reloader = TlsReloader {
            files: self.clone(),
            seen,
            target: tls.clone(),
        };
        Ok((tls, reloader))
    }
}

/// A DER file holds one object and starts with a SEQUENCE tag; anything else is read as PEM.
fn is_der(bytes: &[u8]) -> bool {
    bytes.first() == Some(&0x30)
}

fn certificates(path: &Path, bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = if is_der(bytes) {
        vec![CertificateDer::from(bytes.to_vec())]
    } else {
        CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_error(path, e))?
    };
    if certs.is_empty() {
        return Err(file_error(path, "no certificate found"));
    }
    Ok(certs)
}

/// Every file's bytes, read at one moment in configuration order (server certificate, key,
/// client CAs, CRLs), and their fingerprint: what a reload compares before it parses anything.
struct FileBytes {
    bytes: Vec<Vec<u8>>,
    /// SHA-256 over every file's SHA-256, in configuration order.
    fingerprint: [u8; 32],
}

impl FileBytes {
    fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        let paths = [&files.server_cert, &files.server_key]
            .into_iter()
            .chain(&files.client_ca)
            .chain(&files.client_crls);
        let mut all = digest::Context::new(&digest::SHA256);
        let mut bytes = Vec::new();
        for path in paths {
            let read = read(path)?;
            all.update(digest::digest(&digest::SHA256, &read).as_ref());
            bytes.push(read);
        }
        let mut fingerprint = [0u8; 32];
        fingerprint.copy_from_slice(all.finish().as_ref());
        Ok(FileBytes { bytes, fingerprint })
    }
}

/// Everything a server configuration is built from, parsed from one reading of the files.
struct Material {
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
    roots: RootCertStore,
    crls: Vec<CertificateRevocationListDer<'static>>,
}

impl Material {
    /// Parses `read` (of `files`), checking every CRL against its CA.
    fn parse(files: &TlsFiles, read: Vec<Vec<u8>>) -> Result<Self, TlsError> {
        let mut read = read.into_iter();
        let mut read_hashed = |path: &Path| {
            read.next()
                .ok_or_else(|| file_error(path, "not read with the other files"))
        };

        let cert_bytes = read_hashed(&files.server_cert)?;
        let server_chain = certificates(&files.server_cert, &cert_bytes)?;
        let key_bytes = read_hashed(&files.server_key)?;
        let server_key = if is_der(&key_bytes) {
            PrivateKeyDer::try_from(key_bytes).map_err(|e| file_error(&files.server_key, e))?
        } else {
            PrivateKeyDer::from_pem_slice(&key_bytes)
                .map_err(|e| file_error(&files.server_key, e))?
        };

        if files.client_ca.is_empty() {
            return Err(TlsError::File {
                path: PathBuf::new(),
                detail: "no client CA configured".into(),
            });
        }
        let mut roots = RootCertStore::empty();
        let mut cas = Vec::new();
        for path in &files.client_ca {
            for der in certificates(path, &read_hashed(path)?)? {
                cas.push(Certificate::from_der(&der).map_err(|e| file_error(path, e))?);
                roots.add(der).map_err(|e| file_error(path, e))?;
            }
        }

        let mut crls = Vec::with_capacity(files.client_crls.len());
        let mut issuers = Vec::with_capacity(files.client_crls.len());
        for path in &files.client_crls {
            let bytes = read_hashed(path)?;
            let der = if is_der(&bytes) {
                CertificateRevocationListDer::from(bytes)
            } else {
                CertificateRevocationListDer::from_pem_slice(&bytes)
                    .map_err(|e| file_error(path, e))?
            };
            let issuer = check_crl(path, &der, &cas)?;
            if issuers.contains(&issuer) {
                // rustls would use the first CRL of an issuer only.
                return Err(file_error(path, "a second CRL of the same CA"));
            }
            issuers.push(issuer);
            crls.push(der);
        }

        Ok(Material {
            server_chain,
            server_key,
            roots,
            crls,
        })
    }

    /// The server configuration, and its client verifier (for open connections to check their
    /// certificates again with).
    fn server_config(self) -> Result<(Arc<ServerConfig>, VerifierInForce), TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.roots), provider.clone());
        if !self.crls.is_empty() {
            builder = builder.with_crls(self.crls).enforce_revocation_expiration();
        }
        let verifier: VerifierInForce = Arc::new(InstitutionVerifier {
            inner: builder.build()?,
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::clone(&verifier))
            .with_single_cert(self.server_chain, self.server_key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        // No resumption: every connection is verified in full against the CRLs in force.
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok((Arc::new(config), verifier))
    }
}

/// Checks that a CRL parses, is issued by one of the client CAs and is signed by it (so that a
/// wrong or corrupted CRL is refused when loaded rather than failing every handshake). Returns
/// the index of its CA. Warns about a CRL past its nextUpdate (which refuses every client).
fn check_crl(path: &Path, der: &[u8], cas: &[Certificate]) -> Result<usize, TlsError> {
    let crl = <CertificateList>::from_der(der).map_err(|e| file_error(path, e))?;
    let tbs = &crl.tbs_cert_list;
    let issuer = cas
        .iter()
        .position(|ca| ca.tbs_certificate().subject() == &tbs.issuer)
        .ok_or_else(|| file_error(path, "CRL issued by none of the client CAs"))?;
    let tbs_der = tbs.to_der().map_err(|e| file_error(path, e))?;
    let sig = crl
        .signature
        .as_bytes()
        .ok_or_else(|| file_error(path, "CRL signature is not whole bytes"))?;
    let spki = cas[issuer].tbs_certificate().subject_public_key_info();
    verify_signature(spki, &crl.signature_algorithm, &tbs_der, sig)
        .map_err(|e| file_error(path, format!("CRL signature: {e}")))?;
    if let Some(next) = tbs.next_update
        && next.to_system_time() <= SystemTime::now()
    {
        tracing::warn!(path = %path.display(), "CRL is past its nextUpdate: every client of its CA is refused");
    }
    Ok(issuer)
}

fn verify_signature(
    spki: &SubjectPublicKeyInfoOwned,
    algorithm: &AlgorithmIdentifierOwned,
    message: &[u8],
    sig: &[u8],
) -> Result<(), &'static str> {
    use const_oid::db::{rfc5912, rfc8410};
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or("public key is not whole bytes")?;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    let (p256, p384) = (Some(rfc5912::SECP_256_R_1), Some(rfc5912::SECP_384_R_1));
    let oid = algorithm.oid;
    let verifier: &'static dyn signature::VerificationAlgorithm =
        if oid == rfc5912::ECDSA_WITH_SHA_256 && curve == p256 {
            &signature::ECDSA_P256_SHA256_ASN1
        } else if oid == rfc5912::ECDSA_WITH_SHA_256 && curve == p384 {
            &signature::ECDSA_P384_SHA256_ASN1
        } else if oid == rfc5912::ECDSA_WITH_SHA_384 && curve == p256 {
            &signature::ECDSA_P256_SHA384_ASN1
        } else if oid == rfc5912::ECDSA_WITH_SHA_384 && curve == p384 {
            &signature::ECDSA_P384_SHA384_ASN1
        } else if oid == rfc5912::SHA_256_WITH_RSA_ENCRYPTION {
            &signature::RSA_PKCS1_2048_8192_SHA256
        } else if oid == rfc5912::SHA_384_WITH_RSA_ENCRYPTION {
            &signature::RSA_PKCS1_2048_8192_SHA384
        } else if oid == rfc5912::SHA_512_WITH_RSA_ENCRYPTION {
            &signature::RSA_PKCS1_2048_8192_SHA512
        } else if oid == rfc8410::ID_ED_25519 {
            &signature::ED25519
        } else {
            return Err("unsupported signature algorithm");
        };
    signature::UnparsedPublicKey::new(verifier, key)
        .verify(message, sig)
        .map_err(|_| "does not verify with the CA's key")
}

/// The server TLS configuration in force, shared with the [`TlsReloader`] that replaces it.
/// Cheap to clone; every new connection uses the configuration current at its accept, and every
/// open connection checks its client certificate again with each new one.
#[derive(Clone)]
pub struct ServerTls {
    current: Arc<RwLock<Arc<ServerConfig>>>,
    /// The client verifier of `current`, which open connections follow.
    pub(super) verifier: Arc<watch::Sender<VerifierInForce>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The configuration in force now.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.config())
    }

    /// Puts a new configuration in force; open connections check their certificates against
    /// its `verifier`.
    fn replace(&self, (config, verifier): (Arc<ServerConfig>, VerifierInForce)) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        self.verifier.send_replace(verifier);
    }
}

/// Re-reads the [`TlsFiles`] and puts a changed, valid set in force.
pub struct TlsReloader {
    files: TlsFiles,
    seen: [u8; 32],
    target: ServerTls,
}

impl fmt::Debug for TlsReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsReloader")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsReloader {
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Re-reads every file (CRLs, client CAs, server certificate and key) and compares their
    /// fingerprint with the configuration in force; only if a byte changed are they parsed. If
    /// everything loads, the new configuration serves new connections, every open connection
    /// checks its client certificate against it, and this returns `Ok(true)`; `Ok(false)` when
    /// nothing changed. On an error the configuration in force stays, and the same files are
    /// tried again at the next call. Blocking work: call it off the async runtime.
    pub fn refresh(&mut self) -> Result<bool, TlsError> {
        let read = FileBytes::read(&self.files)?;
        if read.fingerprint == self.seen {
            return Ok(false);
        }
        let in_force = Material::parse(&self.files, read.bytes)?.server_config()?;
        self.target.replace(in_force);
        self.seen = read.fingerprint;
        tracing::info!("TLS configuration reloaded");
        Ok(true)
    }
}
