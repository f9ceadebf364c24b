//! A binary that runs anywhere: a copy of `rxgate`, with the repository hidden under an empty
//! folder (a private mount namespace: `unshare -m`, which needs root, as CI is), serves with a
//! configuration that names only certificates (the drug data is embedded), and `rxgate demo`,
//! pointed at the copied certificates, completes against it. And `serve --dev` where there is
//! no development PKI says where it looked and how to name another folder.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::common::process;

/// The repository root, which the copy must not need.
const REPOSITORY: &str = env!("CARGO_MANIFEST_DIR");

/// What the demo prints last when every step behaved (src/cli/demo.rs).
const DEMO_DONE: &str = "demo: every step behaved";

/// A configuration as an operator writes it: the certificates and keys, the store, the
/// addresses; nothing about the drug data. Paths are relative to the working directory.
const CONFIG: &str = r#"
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
data_dir = "store"
signature_policies = ["1.2.392.100495.1.5.1.1.0.1", "1.3.6.1.4.1.32473.1.1"]
audit_pseudonym_key = "certs/audit/pseudonym-dev.key"

[signing]
anchors = ["certs/hpki/root.cert.pem"]
intermediates = ["certs/hpki/sign-ca.cert.pem"]
crls = [
  { ca = "certs/hpki/root.cert.pem", crl = "certs/hpki/root.crl.pem" },
  { ca = "certs/hpki/sign-ca.cert.pem", crl = "certs/hpki/sign-ca.crl.pem" },
]

[[roles]]
oid = "1.2.392.100495.1.6.1.1"
role = "doctor"
name = "Medical Doctor"

[[roles]]
oid = "1.2.392.100495.1.6.1.3"
role = "pharmacist"
name = "Pharmacist"

[tls]
server_cert = "certs/tls/server.cert.pem"
server_key = "certs/tls/server.key.pem"
client_ca = ["certs/tls/ca.cert.pem"]
client_crls = ["certs/tls/ca.crl.pem"]

[gateway]
key = "certs/gateway/gateway.key.pem"
cert = "certs/gateway/gateway.cert.pem"
"#;

/// Whether this process runs as root (`id -u` is 0).
pub(crate) fn is_root() -> bool {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .expect("running id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Whether a test that needs `unshare -m` may run: as root. Elsewhere it says it is skipped,
/// except under CI, which runs as root: there it panics, so that the test is never skipped.
pub(crate) fn may_unshare() -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but this is not root: `unshare -m` needs root"
    );
    eprintln!("skipped: not root (id -u is not 0), and `unshare -m` needs root");
    false
}

/// Copies the files of the folders `from/NAME` for each name into `to/NAME`.
fn copy_folders(from: &Path, to: &Path, names: &[&str]) {
    for name in names {
        fs::create_dir_all(to.join(name)).unwrap();
        for entry in fs::read_dir(from.join(name)).unwrap() {
            let path = entry.unwrap().path();
            fs::copy(&path, to.join(name).join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// `program ARGS` in a mount namespace of its own where `empty` is bind-mounted over the
/// repository, run in `cwd`.
fn with_repository_hidden(empty: &Path, cwd: &Path, program: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("unshare");
    command
        .args([
            "-m",
            "sh",
            "-c",
            r#"mount --bind "$1" "$2" && shift 2 && exec "$@""#,
            "sh",
        ])
        .arg(empty)
        .arg(REPOSITORY)
        .arg(program)
        .args(args)
        .current_dir(cwd)
        .env_remove("RXGATE_DEV_CERTS");
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_serves_and_demos_with_the_repository_hidden() {
    if !may_unshare() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (install, empty) = (dir.path().join("install"), dir.path().join("empty"));
    fs::create_dir_all(&empty).unwrap();
    copy_folders(
        &Path::new(REPOSITORY).join("certs"),
        &install.join("certs"),
        &["tls", "hpki", "gateway", "audit"],
    );
    let binary = install.join("rxgate");
    fs::copy(env!("CARGO_BIN_EXE_rxgate"), &binary).unwrap();
    fs::write(install.join("rxgate.toml"), CONFIG).unwrap();

    let mut serve = with_repository_hidden(
        &empty,
        &install,
        &binary,
        &["serve", "--config", "rxgate.toml"],
    );
    serve.env("RUST_LOG", "info");
    let server = process::start(serve, &dir.path().join("serve.log")).await;
    let log = server.output();
    assert!(
        log.contains("drug masters loaded") && log.contains("masters=embedded"),
        "{log}"
    );

    let certs = install.join("certs");
    let args = ["demo", "--addr", &server.addr, "--dev-certs"];
    let demo = with_repository_hidden(&empty, dir.path(), &binary, &args)
        .arg(&certs)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&demo.stdout);
    let stderr = String::from_utf8_lossy(&demo.stderr);
    assert!(demo.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.lines().last(), Some(DEMO_DONE), "{stdout}");
    server.kill();
}

#[test]
fn serve_dev_without_a_development_pki_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rxgate"))
        .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
        .args(["--metrics-listen", "127.0.0.1:0", "--data-dir", "store"])
        .current_dir(dir.path())
        .env_remove("RXGATE_DEV_CERTS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let looked: PathBuf = dir.path().canonicalize().unwrap().join("certs");
    for part in [
        format!("no development PKI in {}", looked.display()),
        "certs/ of the working directory".to_owned(),
        "--dev-certs DIR or RXGATE_DEV_CERTS".to_owned(),
    ] {
        assert!(stderr.contains(&part), "{part:?} not in: {stderr}");
    }
    assert!(!stderr.contains("DEVELOPMENT INSTANCE"), "{stderr}");
}
