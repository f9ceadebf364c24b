//! Institution mutual TLS (server config with CRL reload, accept loop, peer identity, test
//! client); must not depend on the document-signature code (`domain::signature`, `trust`), only
//! on `domain::ids`, and uses `ring` as its one crypto provider (never aws-lc-rs).
//!
//! Server side:
//! - [`TlsFiles::load`] gives a [`ServerTls`] (the current `rustls::ServerConfig`, shared) and a
//!   [`TlsReloader`] whose [`TlsReloader::refresh`] puts changed files in force: for new
//!   connections, and for open ones, which check their client certificates against it (`recheck`)
//!   and close if refused. Files are parsed only when their fingerprint changed.
//! - [`incoming`] turns a `TcpListener` into the stream that
//!   `tonic::transport::Server::serve_with_incoming_shutdown` wants. Handshakes run concurrently
//!   (one spawned task each, with a timeout); only completed, authenticated connections come out.
//!   Before TLS it bounds what an unauthenticated peer can hold ([`IncomingConfig`]): one source
//!   address holds at most an eighth of the pending handshakes, open connections are capped,
//!   and accept errors pause the loop rather than spin or end it. After TLS it caps the open
//!   connections of each institution, so that one certificate cannot hold the global cap.
//! - A handler reads the identity with [`peer_identity`] (it is the connection's tonic
//!   `ConnectInfo`, so it sits in the request extensions as a [`PeerIdentity`]).
//!
//! Policy, enforced in the handshake itself (a refused client gets a TLS alert):
//! - a client certificate is required, chained to one of the client CAs, with an extended key
//!   usage extension that names clientAuth (WebPKI alone accepts a certificate without one);
//! - when CRLs are configured, every certificate of the chain must be covered by a CRL of its
//!   issuer (unknown revocation status is refused) and a CRL past its nextUpdate is refused too
//!   (fail closed, like a stale CRL in document verification);
//! - the certificate must name exactly one institution with a URI SAN
//!   `urn:rxgate:institution:<kind>:<code>` ([`institution_of`], prefix compared ignoring case,
//!   so that a second one in other case is ambiguity, refused); otherwise the handshake fails
//!   with `access_denied`, since such a connection could never be authorized.
//!
//! No session resumption: every connection is verified in full against the CRLs in force. At a
//! reload every open connection's client certificate chain is verified again with the new
//! configuration, as a new handshake's would be; a connection that fails is closed, its open
//! calls cut. A connection with no open stream for the idle timeout is closed (`idle`).
//! CRLs are checked when loaded (issuer is a client CA, signature verifies), so a wrong file is
//! refused at load instead of failing every handshake. Limit: client CAs issue the institution
//! certificates directly; a CRL of an intermediate CA cannot be configured.
//!
//! Client side (tests, demos, load tests): [`connect`] and [`ClientFiles`].

use std::{
    fmt, fs, io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use der::{Decode, Encode, asn1::ObjectIdentifier};
use ring::{digest, signature};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
    client::danger::HandshakeSignatureValid,
    pki_types::{
        CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime, pem::PemObject,
    },
    server::{
        NoServerSessionStorage, WebPkiClientVerifier,
        danger::{ClientCertVerified, ClientCertVerifier},
    },
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};
use tokio_rustls::TlsAcceptor;
use tokio_stream::Stream;
use x509_cert::{
    Certificate,
    crl::CertificateList,
    ext::pkix::{SubjectAltName, name::GeneralName},
    spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned},
};

use crate::{
    domain::ids::{INSTITUTION_URI_PREFIX, IdError, Institution},
    log_throttle::LogThrottle,
};

mod admission;
mod backoff;
mod connection;
mod idle;
mod recheck;

use admission::{Admission, PendingSlot, Refused};
use backoff::AcceptBackoff;
pub use connection::{ConnectionInfo, TlsConnection};
pub use idle::{OpenStream, OpenStreams};
use recheck::{Recheck, VerifierInForce};

/// The host name the development server certificate names (besides 127.0.0.1 and ::1), for
/// clients that connect by address but check another name. [`connect`] checks the host of the
/// address it connects to.
pub const SERVER_NAME: &str = "localhost";

/// How long a client has to complete its TLS handshake: a real client needs a few round trips,
/// and every pending handshake holds one of the [`MAX_PENDING_HANDSHAKES`] places.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client of [`connect`] waits for its connection and handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How many handshakes may be in progress at once; further connections wait in the backlog.
pub const MAX_PENDING_HANDSHAKES: usize = 1024;

/// How many of the pending handshakes one source address may hold: an eighth, so that one
/// address (a scanner, or connections that never send a ClientHello) cannot fill them.
pub const MAX_PENDING_HANDSHAKES_PER_SOURCE: usize = MAX_PENDING_HANDSHAKES / 8;

/// How many authenticated connections may be open at once.
pub const MAX_CONNECTIONS: usize = 4096;

/// How many of the open connections one institution may hold: without it one certificate could
/// complete [`MAX_CONNECTIONS`] handshakes, hold them idle (answering keepalive pings) and get
/// every other institution's new connection closed. A client needs one connection (the load
/// test's fleet uses one per institution, the fairness test floods with 8); 32 leaves room for
/// several processes per institution while a lockout takes 128 institutions' certificates.
pub const MAX_CONNECTIONS_PER_INSTITUTION: usize = 32;

/// Idle time before TCP keepalive probes (a dead peer is also found by HTTP/2 pings).
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// How long a connection may stay open with no stream open (no call, no feed): a client
/// reconnects in a few milliseconds, and an idle connection holds one of its institution's
/// places.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Why TLS material could not be loaded, or a client could not connect.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: {detail}")]
    File { path: PathBuf, detail: String },
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("connecting: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn file_error(path: &Path, detail: impl fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        detail: detail.to_string(),
    }
}

/// Why a (chain-valid) client certificate names no institution. Never carries certificate
/// contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("no client certificate")]
    NoCertificate,
    #[error("client certificate does not parse")]
    Malformed,
    #[error("client certificate has no institution URI SAN")]
    NoInstitutionUri,
    #[error("client certificate has several institution URI SANs (compared ignoring case)")]
    SeveralInstitutionUris,
    #[error("client certificate institution URI: {0}")]
    InvalidInstitutionUri(IdError),
}

/// The institution a client certificate (DER) names: its one URI SAN starting
/// `urn:rxgate:institution:`. Other SANs are ignored. The prefix is compared ignoring case (a
/// URN's scheme and namespace are case-insensitive), so that a second institution URI in other
/// case is refused as a second institution rather than ignored; one in other than lower case
/// is refused as invalid.
pub fn institution_of(cert_der: &[u8]) -> Result<Institution, IdentityError> {
    let cert = Certificate::from_der(cert_der).map_err(|_| IdentityError::Malformed)?;
    let san = match cert.tbs_certificate().get_extension::<SubjectAltName>() {
        Ok(Some((_critical, san))) => san,
        Ok(None) => return Err(IdentityError::NoInstitutionUri),
        Err(_) => return Err(IdentityError::Malformed),
    };
    let mut institution_uris = san
        .0
        .iter()
        .filter_map(|name| match name {
            GeneralName::UniformResourceIdentifier(uri) => Some(uri.as_str()),
            _ => None,
        })
        .filter(|uri| {
            uri.get(..INSTITUTION_URI_PREFIX.len())
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(INSTITUTION_URI_PREFIX))
        });
    match (institution_uris.next(), institution_uris.next()) {
        (None, _) => Err(IdentityError::NoInstitutionUri),
        (Some(_), Some(_)) => Err(IdentityError::SeveralInstitutionUris),
        (Some(uri), None) => {
            Institution::from_uri(uri).map_err(IdentityError::InvalidInstitutionUri)
        }
    }
}

/// The authenticated peer of a connection: the tonic `ConnectInfo` of a [`TlsConnection`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    pub institution: Institution,
    /// SHA-256 of the client (end-entity) certificate's DER.
    pub certificate_sha256: [u8; 32],
    pub remote_addr: Option<SocketAddr>,
}

impl PeerIdentity {
    fn of(cert_der: &[u8], remote_addr: Option<SocketAddr>) -> Result<Self, IdentityError> {
        let institution = institution_of(cert_der)?;
        let certificate_sha256 = crate::domain::hash::sha256(cert_der);
        Ok(PeerIdentity {
            institution,
            certificate_sha256,
            remote_addr,
        })
    }
}

/// The authenticated peer of the connection a request came on. `None` only for a request that
/// did not come through [`incoming`] (e.g. a unit test calling a handler directly).
pub fn peer_identity<T>(request: &tonic::Request<T>) -> Option<&PeerIdentity> {
    request
        .extensions()
        .get::<ConnectionInfo>()
        .map(|info| &info.peer)
}

// ---------------------------------------------------------------------------------------------
// Files and server configuration
// ---------------------------------------------------------------------------------------------

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
    /// The committed development PKI (certs/tls). Development only: never in production.
    pub fn dev() -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/tls");
        TlsFiles {
            server_cert: dir.join("server.cert.pem"),
            server_key: dir.join("server.key.pem"),
            client_ca: vec![dir.join("ca.cert.pem")],
            client_crls: vec![dir.join("ca.crl.pem")],
        }
    }

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

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
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

/// Whether a certificate (DER) has an extended key usage extension that names clientAuth.
/// WebPKI accepts a certificate without the extension for any purpose; the gateway does not.
fn names_client_auth(cert_der: &[u8]) -> bool {
    use x509_cert::ext::pkix::ExtendedKeyUsage;
    let Ok(cert) = Certificate::from_der(cert_der) else {
        return false;
    };
    match cert.tbs_certificate().get_extension::<ExtendedKeyUsage>() {
        Ok(Some((_critical, eku))) => eku.0.contains(&const_oid::db::rfc5280::ID_KP_CLIENT_AUTH),
        Ok(None) | Err(_) => false,
    }
}

/// The WebPKI client verifier (chain, EKU clientAuth when present, CRLs), then the gateway's
/// own rules: an EKU extension naming clientAuth, and one institution URI.
#[derive(Debug)]
struct InstitutionVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for InstitutionVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if !names_client_auth(end_entity) {
            tracing::debug!("client certificate refused: no extended key usage clientAuth");
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::InvalidPurpose,
            ));
        }
        match institution_of(end_entity) {
            Ok(_) => Ok(verified),
            Err(e) => {
                tracing::debug!(error = %e, "client certificate refused");
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The server TLS configuration in force, shared with the [`TlsReloader`] that replaces it.
/// Cheap to clone; every new connection uses the configuration current at its accept, and every
/// open connection checks its client certificate again with each new one.
#[derive(Clone)]
pub struct ServerTls {
    current: Arc<RwLock<Arc<ServerConfig>>>,
    /// The client verifier of `current`, which open connections follow.
    verifier: Arc<watch::Sender<VerifierInForce>>,
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

// ---------------------------------------------------------------------------------------------
// Accepting connections
// ---------------------------------------------------------------------------------------------

/// Limits of the accept loop.
#[derive(Debug, Clone)]
pub struct IncomingConfig {
    pub handshake_timeout: Duration,
    pub max_pending_handshakes: usize,
    /// Pending handshakes one source address may hold; its further connections are closed
    /// right after accept.
    pub max_pending_handshakes_per_source: usize,
    /// Open authenticated connections; above it new connections are closed right after accept.
    pub max_connections: usize,
    /// Open authenticated connections one institution may hold; its further connections are
    /// closed right after their handshake.
    pub max_connections_per_institution: usize,
    /// Idle time before TCP keepalive probes; `None`: the system's setting.
    pub tcp_keepalive: Option<Duration>,
    /// How long a connection with no open stream is kept. Streams count only where the server
    /// takes an [`OpenStream`] for each (the gateway's gRPC layer does, from the request to
    /// the end of its answer); elsewhere every connection is closed this long after it opened.
    pub idle_timeout: Duration,
    /// Counts failed handshakes (timeouts, TLS errors, refused certificates) for /metrics.
    pub handshake_failures: Arc<AtomicU64>,
}

impl Default for IncomingConfig {
    fn default() -> Self {
        IncomingConfig {
            handshake_timeout: HANDSHAKE_TIMEOUT,
            max_pending_handshakes: MAX_PENDING_HANDSHAKES,
            max_pending_handshakes_per_source: MAX_PENDING_HANDSHAKES_PER_SOURCE,
            max_connections: MAX_CONNECTIONS,
            max_connections_per_institution: MAX_CONNECTIONS_PER_INSTITUTION,
            tcp_keepalive: Some(TCP_KEEPALIVE),
            idle_timeout: IDLE_TIMEOUT,
            handshake_failures: Arc::default(),
        }
    }
}

/// The accept loop, with the default limits. See [`Incoming`].
pub fn incoming(listener: TcpListener, tls: ServerTls) -> Incoming {
    incoming_with(listener, tls, IncomingConfig::default())
}

/// The accept loop. See [`Incoming`].
pub fn incoming_with(listener: TcpListener, tls: ServerTls, config: IncomingConfig) -> Incoming {
    Incoming {
        listener,
        tls,
        admission: Admission::new(
            config.max_pending_handshakes_per_source,
            config.max_connections,
            config.max_connections_per_institution,
        ),
        config,
        handshakes: JoinSet::new(),
        backoff: AcceptBackoff::new(),
    }
}

/// A stream of authenticated connections for
/// `tonic::transport::Server::serve_with_incoming_shutdown`. Each accepted TCP connection gets
/// its own task for the handshake (with the configuration in force at accept, and a timeout);
/// connections come out in the order their handshakes complete. A connection whose source
/// address holds its share of the pending handshakes, or that comes while the open connections
/// are at their cap, is closed right after accept; one whose institution holds its share of the
/// open connections is closed right after its handshake. A failed handshake is counted and
/// dropped; refusals and failures are logged at most once per [`REFUSAL_LOG_EVERY`]. The stream
/// never yields an error and never ends: after an accept error such as EMFILE it pauses (100 ms
/// doubling to 1 s) and accepts again. Dropping it closes the listener and aborts the
/// handshakes in progress. Must be polled inside a Tokio runtime.
pub struct Incoming {
    listener: TcpListener,
    tls: ServerTls,
    config: IncomingConfig,
    admission: Admission,
    handshakes: JoinSet<Option<TlsConnection>>,
    backoff: AcceptBackoff,
}

/// How often each kind of refusal or failure of the accept loop may be logged.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

static ACCEPT_ERRORS: LogThrottle = LogThrottle::new(REFUSAL_LOG_EVERY);
static SOURCE_BUSY: LogThrottle = LogThrottle::new(REFUSAL_LOG_EVERY);
static TOO_MANY_CONNECTIONS: LogThrottle = LogThrottle::new(REFUSAL_LOG_EVERY);
static HANDSHAKE_FAILED: LogThrottle = LogThrottle::new(REFUSAL_LOG_EVERY);
static INSTITUTION_BUSY: LogThrottle = LogThrottle::new(REFUSAL_LOG_EVERY);

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("listener", &self.listener)
            .field("pending_handshakes", &self.handshakes.len())
            .finish_non_exhaustive()
    }
}

impl Incoming {
    /// Accepts what the listener has ready (up to the handshake limit) and spawns handshakes.
    /// Leaves a waker on the listener (or on the backoff timer) unless the limit is reached.
    fn accept_ready(&mut self, cx: &mut Context<'_>) {
        while self.handshakes.len() < self.config.max_pending_handshakes.max(1) {
            if self.backoff.poll_ready(cx).is_pending() {
                return;
            }
            match self.listener.poll_accept(cx) {
                Poll::Pending => return,
                Poll::Ready(Ok((tcp, remote))) => {
                    self.backoff.reset();
                    self.admit(tcp, remote);
                }
                Poll::Ready(Err(e)) if is_connection_error(&e) => {
                    tracing::debug!(error = %e, "accept failed");
                }
                Poll::Ready(Err(e)) => {
                    // E.g. out of file descriptors: wait rather than spin.
                    let pause = self.backoff.pause();
                    if let Some(left_out) = ACCEPT_ERRORS.allow() {
                        let pause_ms = pause.as_millis() as u64;
                        tracing::warn!(error = %e, pause_ms, left_out, "accept failed; pausing");
                    }
                }
            }
        }
    }

    /// Spawns the handshake of an accepted connection, or closes it at once (by dropping it).
    fn admit(&mut self, tcp: TcpStream, remote: SocketAddr) {
        match self.admission.admit(remote.ip()) {
            Ok(slot) => {
                let handshake = Handshake {
                    acceptor: self.tls.acceptor(),
                    reloads: self.tls.verifier.subscribe(),
                    timeout: self.config.handshake_timeout,
                    idle_timeout: self.config.idle_timeout,
                    tcp_keepalive: self.config.tcp_keepalive,
                    failures: Arc::clone(&self.config.handshake_failures),
                    max_per_institution: self.config.max_connections_per_institution,
                    slot,
                };
                self.handshakes.spawn(handshake.run(tcp, remote));
            }
            Err(Refused::SourceBusy) => {
                if let Some(left_out) = SOURCE_BUSY.allow() {
                    tracing::warn!(source = %remote.ip(), left_out,
                        "connection closed: its address holds its share of the pending handshakes");
                }
            }
            Err(Refused::TooManyConnections) => {
                if let Some(left_out) = TOO_MANY_CONNECTIONS.allow() {
                    let max = self.config.max_connections;
                    tracing::warn!(
                        max,
                        left_out,
                        "connection closed: open connections at the cap"
                    );
                }
            }
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

impl Stream for Incoming {
    type Item = Result<TlsConnection, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            this.accept_ready(cx);
            match this.handshakes.poll_join_next(cx) {
                Poll::Ready(Some(Ok(Some(connection)))) => {
                    return Poll::Ready(Some(Ok(connection)));
                }
                Poll::Ready(Some(Ok(None))) => {}
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(error = %e, "TLS handshake task failed");
                }
                // Nothing in progress, or nothing finished: the wakers are set.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// One accepted connection's handshake, holding its pending place until it ends.
struct Handshake {
    acceptor: TlsAcceptor,
    /// The reloads after the configuration of `acceptor`, for the connection to follow.
    reloads: watch::Receiver<VerifierInForce>,
    timeout: Duration,
    idle_timeout: Duration,
    tcp_keepalive: Option<Duration>,
    failures: Arc<AtomicU64>,
    /// For the log line of a connection refused for its institution.
    max_per_institution: usize,
    slot: PendingSlot,
}

impl Handshake {
    async fn run(self, tcp: TcpStream, remote: SocketAddr) -> Option<TlsConnection> {
        // gRPC is request/response over small frames: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        if let Some(idle) = self.tcp_keepalive {
            let keepalive = socket2::TcpKeepalive::new().with_time(idle);
            let _ = socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive);
        }
        let stream = match tokio::time::timeout(self.timeout, self.acceptor.accept(tcp)).await {
            Err(_elapsed) => return self.failed(remote, "TLS handshake timed out"),
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                return self.failed(remote, "TLS handshake failed");
            }
            Ok(Ok(stream)) => stream,
        };
        // The verifier already refused a certificate without an institution: this cannot fail
        // for a completed handshake, but is checked again rather than assumed.
        let identity = match stream.get_ref().1.peer_certificates() {
            Some([end_entity, ..]) => PeerIdentity::of(end_entity, Some(remote)),
            _ => Err(IdentityError::NoCertificate),
        };
        match identity {
            Ok(peer) => {
                let institution = peer.institution.to_uri();
                // Refused, the stream is dropped here: the connection is closed, and its client
                // sees it at its first call.
                let Some(open) = self.slot.into_open(&peer.institution) else {
                    if let Some(left_out) = INSTITUTION_BUSY.allow() {
                        let max = self.max_per_institution;
                        tracing::warn!(
                            %remote,
                            %institution,
                            max,
                            left_out,
                            "connection closed: its institution holds its share of the connections"
                        );
                    }
                    return None;
                };
                tracing::debug!(%remote, %institution, "mutual TLS established");
                let recheck = Recheck::new(self.reloads);
                Some(TlsConnection::new(
                    stream,
                    peer,
                    self.idle_timeout,
                    recheck,
                    open,
                ))
            }
            Err(e) => {
                tracing::debug!(%remote, error = %e, "TLS connection refused");
                self.failed(remote, "TLS connection refused")
            }
        }
    }

    /// Counts a failed handshake and logs it (throttled).
    fn failed(self, remote: SocketAddr, what: &'static str) -> Option<TlsConnection> {
        self.failures.fetch_add(1, Ordering::Relaxed);
        if let Some(left_out) = HANDSHAKE_FAILED.allow() {
            tracing::info!(%remote, left_out, "{what}");
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

/// A client's TLS files: the CA that issued the server certificate, and the client's own
/// certificate and key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct ClientFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientFiles {
    /// A client of the committed development PKI: `dev("clinic")` is certs/tls/clinic.cert.pem
    /// and clinic.key.pem, with ca.cert.pem. Development only.
    pub fn dev(name: &str) -> Self {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/tls");
        ClientFiles {
            ca: dir.join("ca.cert.pem"),
            cert: dir.join(format!("{name}.cert.pem")),
            key: dir.join(format!("{name}.key.pem")),
        }
    }

    /// The tonic client TLS configuration: trust `ca`, present `cert`/`key`, expect the server
    /// certificate to name the host of the address connected to.
    pub fn client_tls_config(&self) -> Result<tonic::transport::ClientTlsConfig, TlsError> {
        use tonic::transport::{Certificate as CaCertificate, ClientTlsConfig, Identity};
        Ok(ClientTlsConfig::new()
            .ca_certificate(CaCertificate::from_pem(read(&self.ca)?))
            .identity(Identity::from_pem(read(&self.cert)?, read(&self.key)?)))
    }

    /// Connects to `addr` (e.g. `https://127.0.0.1:50051`).
    pub async fn connect(&self, addr: &str) -> Result<tonic::transport::Channel, TlsError> {
        let endpoint = tonic::transport::Endpoint::from_shared(addr.to_owned())?
            .connect_timeout(CONNECT_TIMEOUT)
            .tls_config(self.client_tls_config()?)?;
        Ok(endpoint.connect().await?)
    }
}

/// Connects to `addr` (e.g. `https://127.0.0.1:50051`) with mutual TLS. With TLS 1.3 a client
/// learns that the server refused its certificate only when it reads, so a refusal may surface
/// at the first call rather than here.
pub async fn connect(
    addr: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<tonic::transport::Channel, TlsError> {
    ClientFiles {
        ca: ca.to_owned(),
        cert: cert.to_owned(),
        key: key.to_owned(),
    }
    .connect(addr)
    .await
}
