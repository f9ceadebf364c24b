//! `examples/crl-fetch.sh`, the job that brings a CA's CRL to the file the gateway re-reads: it
//! replaces the file only with a CRL that is signed by the CA, not stale and not older, and
//! otherwise leaves it as it was and exits non-zero with the reason.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/crl-fetch.sh");
const HPKI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/certs/hpki");

fn hpki(name: &str) -> PathBuf {
    Path::new(HPKI).join(name)
}

fn url(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn fetch(source: &Path, ca: &Path, dest: &Path) -> Output {
    Command::new("sh")
        .arg(SCRIPT)
        .args([
            url(source),
            ca.display().to_string(),
            dest.display().to_string(),
        ])
        .output()
        .expect("running crl-fetch.sh")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A folder with `dest.pem` holding `initial` (a copy of a committed CRL).
fn place(initial: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest.pem");
    fs::copy(hpki(initial), &dest).unwrap();
    (dir, dest)
}

/// Refused: exit 1, the reason on standard error, the file in place unchanged.
fn assert_refused(out: &Output, dest: &Path, before: &[u8], reason: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", stderr(out));
    assert!(stderr(out).contains(reason), "{}", stderr(out));
    assert_eq!(
        fs::read(dest).unwrap(),
        before,
        "the CRL in place was changed"
    );
}

#[test]
fn a_current_crl_replaces_a_stale_one_and_a_second_run_changes_nothing() {
    let (_dir, dest) = place("sign-ca-stale.crl.pem");
    let ca = hpki("sign-ca.cert.pem");
    let out = fetch(&hpki("sign-ca.crl.pem"), &ca, &dest);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read(&dest).unwrap(),
        fs::read(hpki("sign-ca.crl.pem")).unwrap()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("replaced"));

    let again = fetch(&hpki("sign-ca.crl.pem"), &ca, &dest);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(again.stdout.is_empty(), "nothing to replace");
}

#[test]
fn a_der_crl_is_stored_as_pem() {
    let (dir, dest) = place("sign-ca-stale.crl.pem");
    let der = dir.path().join("served.crl");
    let converted = Command::new("openssl")
        .args(["crl", "-outform", "DER", "-in"])
        .arg(hpki("sign-ca.crl.pem"))
        .arg("-out")
        .arg(&der)
        .status()
        .unwrap();
    assert!(converted.success());
    let out = fetch(&der, &hpki("sign-ca.cert.pem"), &dest);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read(&dest).unwrap(),
        fs::read(hpki("sign-ca.crl.pem")).unwrap()
    );
}

#[test]
fn stale_foreign_unfetchable_and_non_crl_files_are_refused() {
    let (_dir, dest) = place("sign-ca.crl.pem");
    let before = fs::read(&dest).unwrap();
    let ca = hpki("sign-ca.cert.pem");
    let cases = [
        (hpki("sign-ca-stale.crl.pem"), "is stale"),
        (hpki("root.crl.pem"), "is not signed by"),
        (hpki("no-such.crl.pem"), "fetching"),
        (hpki("root.cert.pem"), "is not a CRL"),
    ];
    for (source, reason) in cases {
        assert_refused(&fetch(&source, &ca, &dest), &dest, &before, reason);
    }
}

/// Runs `openssl` with `args`, panicking with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {}", stderr(&out));
}

/// A throw-away CA in `dir` that issues a fresh CRL with the given number.
fn crl_numbered(dir: &Path, number: &str) -> PathBuf {
    fs::write(dir.join("index.txt"), "").unwrap();
    fs::write(dir.join("crlnumber"), format!("{number}\n")).unwrap();
    fs::write(
        dir.join("ca.cnf"),
        "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
         default_md = sha256\ndefault_crl_days = 30\n",
    )
    .unwrap();
    if !dir.join("ca.key.pem").exists() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key.pem",
                "-out",
                "ca.cert.pem",
                "-subj",
                "/CN=crl-fetch test CA",
                "-days",
                "2",
            ],
        );
    }
    let out = format!("crl-{number}.pem");
    openssl(
        dir,
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-gencrl",
            "-cert",
            "ca.cert.pem",
            "-keyfile",
            "ca.key.pem",
            "-out",
            &out,
        ],
    );
    dir.join(out)
}

#[test]
fn an_older_crl_never_replaces_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let newer = crl_numbered(dir.path(), "05");
    let older = crl_numbered(dir.path(), "02");
    let ca = dir.path().join("ca.cert.pem");
    let dest = dir.path().join("dest.pem");
    fs::copy(&newer, &dest).unwrap();
    let before = fs::read(&dest).unwrap();
    assert_refused(&fetch(&older, &ca, &dest), &dest, &before, "is older than");
}

#[test]
fn a_crl_signed_by_another_key_under_the_same_name_is_refused() {
    let (ours, theirs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let in_place = crl_numbered(ours.path(), "02");
    // The same subject, another key: only the signature tells them apart.
    let forged = crl_numbered(theirs.path(), "09");
    let dest = ours.path().join("dest.pem");
    fs::copy(&in_place, &dest).unwrap();
    let before = fs::read(&dest).unwrap();
    let ca = ours.path().join("ca.cert.pem");
    assert_refused(
        &fetch(&forged, &ca, &dest),
        &dest,
        &before,
        "is not signed by",
    );
}
