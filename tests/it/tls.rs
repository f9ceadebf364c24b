//! Mutual TLS end to end: a real tonic server (the standard health service behind an
//! interceptor that authorizes by `peer_identity`) on 127.0.0.1:0, real clients, real
//! handshakes. Certificates and CRLs that the committed dev PKI lacks are minted per test with
//! the `openssl` CLI and the committed (DEVELOPMENT ONLY) CA key.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use ring::digest;
use rustls::pki_types::{CertificateDer, pem::PemObject};
use rxgate::{
    domain::ids::{Institution, InstitutionKind},
    tls::{
        ClientFiles, IdentityError, IncomingConfig, PeerIdentity, ServerTls, TlsFiles,
        incoming_with, institution_of, peer_identity,
    },
};
use tokio::{io::AsyncReadExt, net::TcpListener, sync::oneshot};
use tonic::{
    Code, Request, Status,
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Server},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::common::{self, dev_pki};

fn tls_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/tls")
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

fn sha256_of_cert(path: &Path) -> [u8; 32] {
    let der = CertificateDer::from_pem_file(path).expect("certificate PEM");
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, &der).as_ref());
    out
}

fn institution(uri: &str) -> Institution {
    Institution::from_uri(uri).expect("institution URI")
}

// ---------------------------------------------------------------------------------------------
// Server and client harness
// ---------------------------------------------------------------------------------------------

struct TestServer {
    addr: String,
    /// Every identity the interceptor saw, allowed or not.
    seen: Arc<Mutex<Vec<PeerIdentity>>>,
    _shutdown: oneshot::Sender<()>,
}

impl TestServer {
    fn seen(&self) -> Vec<PeerIdentity> {
        self.seen.lock().unwrap().clone()
    }
}

/// Serves the health service; the interceptor records the peer identity and lets only clinics
/// and pharmacies through (PERMISSION_DENIED otherwise), as a real handler would.
async fn serve_with(tls: ServerTls, config: IncomingConfig) -> TestServer {
    serve_on("127.0.0.1", tls, config).await
}

/// [`serve_with`] on a port of `ip`.
async fn serve_on(ip: &str, tls: ServerTls, config: IncomingConfig) -> TestServer {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let gate = move |request: Request<()>| -> Result<Request<()>, Status> {
        let peer = peer_identity(&request)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("no peer identity"))?;
        let allowed = matches!(
            peer.institution.kind,
            InstitutionKind::Clinic | InstitutionKind::Pharmacy
        );
        recorded.lock().unwrap().push(peer);
        if allowed {
            Ok(request)
        } else {
            Err(Status::permission_denied("institution kind not allowed"))
        }
    };
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (shutdown, stop) = oneshot::channel::<()>();
    tokio::spawn(async move {
        Server::builder()
            .add_service(InterceptedService::new(health, gate))
            .serve_with_incoming_shutdown(incoming_with(listener, tls, config), async {
                let _ = stop.await;
            })
            .await
            .expect("server");
    });
    TestServer {
        addr: format!("https://{ip}:{port}"),
        seen,
        _shutdown: shutdown,
    }
}

async fn serve(tls: ServerTls) -> TestServer {
    serve_with(tls, IncomingConfig::default()).await
}

async fn serve_files(files: &TlsFiles) -> TestServer {
    let (tls, _reloader) = files.load().expect("TLS files load");
    serve(tls).await
}

async fn check_on(channel: Channel) -> Result<(), Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map(|_| ())
}

/// Calls on `channel` until a call is refused (at most 10 s: a hang, not slowness, fails).
async fn until_refused(channel: Channel, what: &str) {
    for _ in 0..200 {
        if check_on(channel.clone()).await.is_err() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{what} still answered after 10 s");
}

/// An error and all its sources, for assertions on the TLS alert.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// Connects with a fresh channel (a new TLS handshake) and makes one call. A refused handshake
/// shows either at connect or, with TLS 1.3, at the call.
async fn call(server: &TestServer, client: &ClientFiles) -> Result<(), Status> {
    let channel = client
        .connect(&server.addr)
        .await
        .map_err(|e| Status::unavailable(format!("connect: {}", chain(&e))))?;
    check_on(channel).await
}

/// The call failed in the TLS handshake, with the server's `alert` (e.g. "CertificateRevoked"),
/// so no handler could have seen it. With TLS 1.3 the client learns of the refusal after its
/// side of the handshake, so the error may come from connect or from the first call.
fn assert_refused(result: Result<(), Status>, what: &str, alert: &str) {
    let status = result.expect_err(what);
    assert_ne!(status.code(), Code::PermissionDenied, "{what}: {status}");
    let text = chain(&status);
    assert!(
        text.contains(&format!("received fatal alert: {alert}")),
        "{what}: expected alert {alert}: {text}"
    );
}

// ---------------------------------------------------------------------------------------------
// Minting with openssl (the committed CA key is DEVELOPMENT ONLY)
// ---------------------------------------------------------------------------------------------

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl on PATH");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unique_serial() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "0x{:016x}{:04x}",
        nanos,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A client certificate from the dev CA with the profile of the committed ones (clientAuth,
/// digitalSignature) and the given subjectAltName (openssl syntax).
fn mint_client(dir: &Path, name: &str, san: &str) -> ClientFiles {
    mint_client_with(
        dir,
        name,
        &format!("extendedKeyUsage=clientAuth\nsubjectAltName={san}\n"),
    )
}

/// A client certificate from the dev CA (CA:FALSE, digitalSignature) with further `extensions`
/// (openssl extension-file lines).
fn mint_client_with(dir: &Path, name: &str, extensions: &str) -> ClientFiles {
    let key = dir.join(format!("{name}.key.pem"));
    let csr = dir.join(format!("{name}.csr.pem"));
    let cert = dir.join(format!("{name}.cert.pem"));
    let ext = dir.join(format!("{name}.ext"));
    fs::write(
        &ext,
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}"
        ),
    )
    .unwrap();
    let ca = tls_dir().join("ca.cert.pem");
    let ca_key = tls_dir().join("ca.key.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path_str(&key),
    ]);
    openssl(&[
        "req",
        "-new",
        "-key",
        path_str(&key),
        "-subj",
        &format!("/C=JP/O=DEV Test/CN={name}"),
        "-out",
        path_str(&csr),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        path_str(&csr),
        "-CA",
        path_str(&ca),
        "-CAkey",
        path_str(&ca_key),
        "-set_serial",
        &unique_serial(),
        "-days",
        "30",
        "-extfile",
        path_str(&ext),
        "-out",
        path_str(&cert),
    ]);
    ClientFiles { ca, cert, key }
}

/// A CRL listing no certificate, signed with `ca_key` as `ca_cert`; `extra` goes to `openssl ca`.
fn mint_empty_crl(
    dir: &Path,
    name: &str,
    ca_cert: &Path,
    ca_key: &Path,
    extra: &[&str],
) -> PathBuf {
    let work = dir.join(format!("{name}.ca"));
    fs::create_dir_all(&work).unwrap();
    let index = work.join("index.txt");
    let number = work.join("crlnumber");
    let config = work.join("ca.cnf");
    fs::write(&index, "").unwrap();
    fs::write(&number, "1000\n").unwrap();
    fs::write(
        &config,
        format!(
            "[ca]\ndefault_ca = dev\n[dev]\ndatabase = {}\ncrlnumber = {}\n\
             default_md = sha256\ndefault_crl_days = 30\n",
            index.display(),
            number.display()
        ),
    )
    .unwrap();
    let out = dir.join(format!("{name}.crl.pem"));
    let mut args = vec![
        "ca",
        "-config",
        path_str(&config),
        "-gencrl",
        "-cert",
        path_str(ca_cert),
        "-keyfile",
        path_str(ca_key),
        "-out",
        path_str(&out),
    ];
    args.extend_from_slice(extra);
    openssl(&args);
    out
}

fn dev_files_with_crls(client_crls: Vec<PathBuf>) -> TlsFiles {
    TlsFiles {
        client_crls,
        ..dev_pki().tls()
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn institutions_connect_and_handlers_see_their_identity() {
    let server = serve_files(&dev_pki().tls()).await;
    for (name, uri) in [
        ("clinic", "urn:rxgate:institution:clinic:1310000001"),
        ("pharmacy", "urn:rxgate:institution:pharmacy:1340000001"),
    ] {
        let client = dev_pki().client(name);
        call(&server, &client).await.expect(name);
        let seen = server.seen();
        let peer = seen.last().expect("the handler saw the call");
        assert_eq!(peer.institution, institution(uri), "{name}");
        assert_eq!(
            peer.certificate_sha256,
            sha256_of_cert(&client.cert),
            "{name}"
        );
        let remote = peer.remote_addr.expect("remote address");
        assert!(remote.ip().is_loopback(), "{name}: {remote}");
    }
    assert_eq!(server.seen().len(), 2);
}

#[tokio::test]
async fn the_handler_decides_with_the_identity() {
    // Management and operator authenticate, and the interceptor denies them by kind.
    let server = serve_files(&dev_pki().tls()).await;
    for (name, kind) in [
        ("management", InstitutionKind::Management),
        ("operator", InstitutionKind::Operator),
    ] {
        let status = call(&server, &dev_pki().client(name))
            .await
            .expect_err(name);
        assert_eq!(status.code(), Code::PermissionDenied, "{name}: {status}");
        assert_eq!(server.seen().last().unwrap().institution.kind, kind);
    }
}

#[tokio::test]
async fn one_connection_carries_one_identity_for_all_its_calls() {
    let server = serve_files(&dev_pki().tls()).await;
    let client = dev_pki().client("clinic2");
    let channel = client.connect(&server.addr).await.unwrap();
    for _ in 0..3 {
        check_on(channel.clone()).await.unwrap();
    }
    let seen = server.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(
        seen[0].institution,
        institution("urn:rxgate:institution:clinic:1310000002")
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let server = serve_files(&dev_pki().tls()).await;
    let ca = fs::read(tls_dir().join("ca.cert.pem")).unwrap();
    let tls = ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(Certificate::from_pem(ca));
    let result = async {
        let channel = Endpoint::from_shared(server.addr.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        check_on(channel).await
    }
    .await;
    assert_refused(result, "anonymous client", "CertificateRequired");
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn untrusted_and_revoked_institutions_are_refused() {
    let server = serve_files(&dev_pki().tls()).await;
    assert_refused(
        call(&server, &dev_pki().client("untrusted-clinic")).await,
        "untrusted-clinic",
        "UnknownCA",
    );
    assert_refused(
        call(&server, &dev_pki().client("pharmacy-revoked")).await,
        "pharmacy-revoked",
        "CertificateRevoked",
    );
    assert!(server.seen().is_empty());
    // The server still serves everyone else.
    call(&server, &dev_pki().client("pharmacy")).await.unwrap();
}

#[tokio::test]
async fn without_crls_a_revoked_certificate_is_not_detected() {
    let server = serve_files(&dev_files_with_crls(Vec::new())).await;
    call(&server, &dev_pki().client("pharmacy-revoked"))
        .await
        .unwrap();
    assert_eq!(
        server.seen()[0].institution,
        institution("urn:rxgate:institution:pharmacy:1340000099")
    );
}

#[tokio::test]
async fn a_changed_crl_takes_effect_for_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_key) = (tls_dir().join("ca.cert.pem"), tls_dir().join("ca.key.pem"));
    let empty = mint_empty_crl(dir.path(), "empty", &ca, &ca_key, &[]);
    let watched = dir.path().join("watched.crl.pem");
    fs::copy(&empty, &watched).unwrap();

    let files = dev_files_with_crls(vec![watched.clone()]);
    let (tls, mut reloader) = files.load().unwrap();
    let server = serve(tls).await;
    let revoked = dev_pki().client("pharmacy-revoked");
    let clinic = dev_pki().client("clinic");

    call(&server, &revoked).await.expect("not yet revoked");
    assert!(!reloader.refresh().unwrap(), "nothing changed yet");

    // New handshakes use the new CRL, and open connections are held to it too: the revoked
    // one is closed, the others are left as they are.
    let open = revoked.connect(&server.addr).await.unwrap();
    check_on(open.clone()).await.expect("not yet revoked");
    let open_clinic = clinic.connect(&server.addr).await.unwrap();
    check_on(open_clinic.clone()).await.unwrap();
    let clinic_remote = server.seen().last().unwrap().remote_addr;
    fs::copy(tls_dir().join("ca.crl.pem"), &watched).unwrap();
    assert!(reloader.refresh().unwrap(), "the CRL changed");
    assert!(!reloader.refresh().unwrap(), "and is now in force");
    assert_refused(
        call(&server, &revoked).await,
        "revoked after reload",
        "CertificateRevoked",
    );
    call(&server, &clinic).await.expect("clinic after reload");
    // The open connection's recheck runs off the runtime, in its turn: it is closed soon after.
    until_refused(open, "the revoked connection opened before the reload").await;
    check_on(open_clinic).await.unwrap();
    assert_eq!(
        server.seen().last().unwrap().remote_addr,
        clinic_remote,
        "the clinic's connection was kept"
    );

    // A broken file keeps the configuration in force.
    fs::write(
        &watched,
        "-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n",
    )
    .unwrap();
    reloader.refresh().expect_err("garbage CRL");
    fs::remove_file(&watched).unwrap();
    reloader.refresh().expect_err("missing CRL");
    assert_refused(
        call(&server, &revoked).await,
        "revoked, bad file",
        "CertificateRevoked",
    );
    call(&server, &clinic).await.expect("clinic, bad file");

    // And back: the empty CRL again admits the certificate.
    fs::copy(&empty, &watched).unwrap();
    assert!(reloader.refresh().unwrap());
    call(&server, &revoked).await.expect("un-revoked");
}

#[tokio::test]
async fn crls_not_signed_by_a_client_ca_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    // A CRL of another CA: rustls would ignore it and then refuse every client of the real CA
    // (unknown revocation status).
    let untrusted = mint_empty_crl(
        dir.path(),
        "untrusted",
        &tls_dir().join("untrusted-ca.cert.pem"),
        &tls_dir().join("untrusted-ca.key.pem"),
        &[],
    );
    let err = dev_files_with_crls(vec![untrusted]).load().unwrap_err();
    assert!(err.to_string().contains("none of the client CAs"), "{err}");

    // A CRL naming the real CA as issuer but signed with another key.
    let fake_key = dir.path().join("fake-ca.key.pem");
    let fake_cert = dir.path().join("fake-ca.cert.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        path_str(&fake_key),
    ]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        path_str(&fake_key),
        "-subj",
        "/C=JP/O=rxgate development/CN=DEV rxgate Institution Root CA",
        "-days",
        "30",
        "-out",
        path_str(&fake_cert),
    ]);
    let forged = mint_empty_crl(dir.path(), "forged", &fake_cert, &fake_key, &[]);
    let err = dev_files_with_crls(vec![forged.clone()])
        .load()
        .unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");

    // Two CRLs of the same CA: rustls would read only the first.
    let ca = tls_dir().join("ca.crl.pem");
    let err = dev_files_with_crls(vec![ca.clone(), ca.clone()])
        .load()
        .unwrap_err();
    assert!(err.to_string().contains("second CRL"), "{err}");

    // Reloading to a forged CRL keeps the configuration in force.
    let watched = dir.path().join("watched.crl.pem");
    fs::copy(&ca, &watched).unwrap();
    let (tls, mut reloader) = dev_files_with_crls(vec![watched.clone()]).load().unwrap();
    fs::copy(&forged, &watched).unwrap();
    reloader.refresh().unwrap_err();
    let server = serve(tls).await;
    call(&server, &dev_pki().client("clinic")).await.unwrap();
    assert_refused(
        call(&server, &dev_pki().client("pharmacy-revoked")).await,
        "revoked",
        "CertificateRevoked",
    );
}

#[tokio::test]
async fn a_crl_past_next_update_refuses_every_client() {
    let dir = tempfile::tempdir().unwrap();
    let stale = mint_empty_crl(
        dir.path(),
        "stale",
        &tls_dir().join("ca.cert.pem"),
        &tls_dir().join("ca.key.pem"),
        &[
            "-crl_lastupdate",
            "20250103000000Z",
            "-crl_nextupdate",
            "20250104000000Z",
        ],
    );
    // It loads (it is a valid CRL of the CA) but fails closed in every handshake.
    let server = serve_files(&dev_files_with_crls(vec![stale])).await;
    assert_refused(
        call(&server, &dev_pki().client("clinic")).await,
        "clinic with a stale CRL",
        "UnknownCA",
    );
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn a_certificate_must_name_exactly_one_valid_institution() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_files(&dev_pki().tls()).await;

    // The control: a minted certificate with a valid institution URI is accepted, so the
    // refusals below are about the URI alone.
    let good = mint_client(
        dir.path(),
        "good",
        "URI:urn:rxgate:institution:clinic:1310000077,DNS:clinic.example",
    );
    call(&server, &good).await.expect("minted clinic");
    assert_eq!(
        server.seen()[0].institution,
        institution("urn:rxgate:institution:clinic:1310000077")
    );

    for (name, san, why) in [
        (
            "nouri",
            "DNS:clinic.example",
            IdentityError::NoInstitutionUri,
        ),
        (
            "otheruri",
            "URI:https://clinic.example/",
            IdentityError::NoInstitutionUri,
        ),
        (
            "badkind",
            "URI:urn:rxgate:institution:shop:1310000077",
            IdentityError::InvalidInstitutionUri(
                Institution::from_uri("urn:rxgate:institution:shop:1310000077").unwrap_err(),
            ),
        ),
        (
            "twouris",
            "URI:urn:rxgate:institution:clinic:1310000077,URI:urn:rxgate:institution:pharmacy:1340000077",
            IdentityError::SeveralInstitutionUris,
        ),
        // URN schemes and namespace ids are case-insensitive: a second institution in other
        // case is a second institution, never silently ignored.
        (
            "twouris-case",
            "URI:urn:rxgate:institution:clinic:1310000077,URI:URN:RXGATE:INSTITUTION:pharmacy:1340000077",
            IdentityError::SeveralInstitutionUris,
        ),
        (
            "twouris-case-first",
            "URI:Urn:RxGate:Institution:pharmacy:1340000077,URI:urn:rxgate:institution:clinic:1310000077",
            IdentityError::SeveralInstitutionUris,
        ),
    ] {
        let client = mint_client(dir.path(), name, san);
        let der = CertificateDer::from_pem_file(&client.cert).unwrap();
        assert_eq!(institution_of(&der), Err(why), "{name}");
        assert_refused(call(&server, &client).await, name, "AccessDenied");
    }
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn a_client_certificate_without_extended_key_usage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve_files(&dev_pki().tls()).await;
    let no_eku = mint_client_with(
        dir.path(),
        "noeku",
        "subjectAltName=URI:urn:rxgate:institution:clinic:1310000077\n",
    );
    assert_refused(
        call(&server, &no_eku).await,
        "a certificate without EKU",
        "UnsupportedCertificate",
    );
    // The same certificate with clientAuth is accepted.
    let with_eku = mint_client(
        dir.path(),
        "witheku",
        "URI:urn:rxgate:institution:clinic:1310000077",
    );
    call(&server, &with_eku).await.unwrap();
    assert_eq!(server.seen().len(), 1);
}

#[tokio::test]
async fn a_client_checks_the_server_certificate_against_the_host_it_connects_to() {
    // The dev server certificate names localhost, 127.0.0.1 and ::1: not 127.0.0.2.
    let (tls, _reloader) = dev_pki().tls().load().unwrap();
    let server = serve_on("127.0.0.2", tls, IncomingConfig::default()).await;
    let status = call(&server, &dev_pki().client("clinic"))
        .await
        .expect_err("a server certificate that does not name the host");
    let text = chain(&status);
    assert!(text.contains("not valid for name"), "{text}");
    assert!(server.seen().is_empty());
    // The host it names is accepted (every other test connects to 127.0.0.1).
    call(
        &serve_files(&dev_pki().tls()).await,
        &dev_pki().client("clinic"),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_revoked_client_is_cut_off_the_real_server_within_one_crl_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, ca_key) = (tls_dir().join("ca.cert.pem"), tls_dir().join("ca.key.pem"));
    let watched = dir.path().join("watched.crl.pem");
    fs::copy(
        mint_empty_crl(dir.path(), "empty", &ca, &ca_key, &[]),
        &watched,
    )
    .unwrap();
    let h = common::start_with(|config| {
        config.tls.client_crls = vec![watched.clone()];
        config.crl_refresh_secs = 1;
    })
    .await;
    let watch = |channel: Channel| async move {
        let mut watch = HealthClient::new(channel)
            .watch(HealthCheckRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(watch.message().await.unwrap().is_some(), "the first status");
        watch
    };
    let revoked = dev_pki()
        .client("pharmacy-revoked")
        .connect(&h.addr)
        .await
        .unwrap();
    let mut revoked_watch = watch(revoked.clone()).await;
    let mut clinic_watch = watch(h.channel("clinic").await).await;

    fs::copy(tls_dir().join("ca.crl.pem"), &watched).unwrap();
    let cut = tokio::time::timeout(Duration::from_secs(10), revoked_watch.message())
        .await
        .expect("the revoked client's stream ends within 10 s (refreshes every second)");
    assert!(cut.is_err(), "{cut:?}");
    check_on(revoked).await.expect_err("and it is refused");

    // The clinic's stream lived through the reload: it hears the drain of the shutdown.
    let stopping = tokio::spawn(h.shutdown());
    let last = clinic_watch
        .message()
        .await
        .unwrap()
        .expect("a last status");
    assert_eq!(last.status, 2, "NOT_SERVING");
    stopping.await.unwrap();
}

#[tokio::test]
async fn the_server_certificate_is_no_client_certificate() {
    // No clientAuth EKU (and no institution URI): refused in the handshake.
    let server = serve_files(&dev_pki().tls()).await;
    let der = CertificateDer::from_pem_file(tls_dir().join("server.cert.pem")).unwrap();
    assert_eq!(institution_of(&der), Err(IdentityError::NoInstitutionUri));
    assert_refused(
        call(&server, &dev_pki().client("server")).await,
        "server certificate as client",
        "UnsupportedCertificate",
    );
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn every_committed_client_certificate_names_its_institution() {
    for (name, uri) in [
        ("clinic", "urn:rxgate:institution:clinic:1310000001"),
        ("clinic2", "urn:rxgate:institution:clinic:1310000002"),
        ("pharmacy", "urn:rxgate:institution:pharmacy:1340000001"),
        ("pharmacy2", "urn:rxgate:institution:pharmacy:1340000002"),
        ("management", "urn:rxgate:institution:management:9990000001"),
        ("operator", "urn:rxgate:institution:operator:9990000002"),
        (
            "pharmacy-revoked",
            "urn:rxgate:institution:pharmacy:1340000099",
        ),
        (
            "untrusted-clinic",
            "urn:rxgate:institution:clinic:1310000099",
        ),
    ] {
        let der =
            CertificateDer::from_pem_file(tls_dir().join(format!("{name}.cert.pem"))).unwrap();
        assert_eq!(institution_of(&der), Ok(institution(uri)), "{name}");
    }
    assert_eq!(institution_of(b"not DER"), Err(IdentityError::Malformed));
    assert!(peer_identity(&Request::new(())).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_connect_concurrently() {
    let server = Arc::new(serve_files(&dev_pki().tls()).await);
    let names = ["clinic", "clinic2", "pharmacy", "pharmacy2"];
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..50 {
        let server = server.clone();
        let client = dev_pki().client(names[i % names.len()]);
        tasks.spawn(async move { call(&server, &client).await });
    }
    let mut ok = 0;
    while let Some(result) = tasks.join_next().await {
        result.unwrap().expect("concurrent client");
        ok += 1;
    }
    assert_eq!(ok, 50);
    assert_eq!(server.seen().len(), 50);
}

#[tokio::test]
async fn stalled_handshakes_block_no_one_and_time_out() {
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
    let (tls, _reloader) = dev_pki().tls().load().unwrap();
    let config = IncomingConfig {
        handshake_timeout: HANDSHAKE_TIMEOUT,
        ..IncomingConfig::default()
    };
    let server = serve_with(tls, config).await;
    let port: u16 = server.addr.rsplit(':').next().unwrap().parse().unwrap();

    // Clients that connect and never say a word.
    let mut stalled = Vec::new();
    for _ in 0..5 {
        stalled.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    let started = Instant::now();
    call(&server, &dev_pki().client("clinic")).await.unwrap();
    // Well under the timeout, which a client queued behind the stalled ones would wait out.
    assert!(
        started.elapsed() < HANDSHAKE_TIMEOUT - Duration::from_secs(2),
        "the real client waited for the stalled ones: {:?}",
        started.elapsed()
    );

    // The server drops each stalled connection at the handshake timeout.
    for mut tcp in stalled {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(HANDSHAKE_TIMEOUT * 3, tcp.read(&mut buf))
            .await
            .expect("closed by the server within the timeout");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    // And keeps serving.
    call(&server, &dev_pki().client("pharmacy")).await.unwrap();
}
