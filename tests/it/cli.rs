//! The `rxgate` command as an operator meets it, through the real binary: `--version`, `config
//! check` and configuration errors, the order of `serve --dev`'s checks and banner, `verify`
//! on an unsigned document, `admin stuck` and `audit export` against a running gateway, and
//! `master import`'s file names, progress output and repeated files.

use crate::common;

use std::{
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use common::{Harness, patient, start_with};
use rxgate::{wire::json, wire::proto::v1 as pb};

use crate::import::{LAST_UPDATE, data, masters_without_last_update};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs `rxgate ARGS` in the repository's root (the example configuration's paths are relative
/// to it), its standard error a pipe, not a terminal.
fn rxgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rxgate"))
        .current_dir(ROOT)
        .args(args)
        .output()
        .expect("running rxgate")
}

fn text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn version_names_the_crate_version_and_the_commit() {
    let out = rxgate(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(ROOT)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| stdout(&o).trim().to_owned());
    let expected = match commit {
        Some(commit) => format!("rxgate {} ({commit})\n", env!("CARGO_PKG_VERSION")),
        None => format!("rxgate {}\n", env!("CARGO_PKG_VERSION")),
    };
    assert_eq!(stdout(&out), expected);
}

#[test]
fn a_configuration_error_names_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    for command in [["serve", "--config"], ["config", "check"]] {
        let out = rxgate(&[command[0], command[1], text(&missing)]);
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert_eq!(
            stderr(&out),
            format!(
                "rxgate: reading {}: No such file or directory (os error 2)\n",
                missing.display()
            )
        );
    }
}

/// The example configuration with `from` replaced by `to`, its store in `dir`, written to `dir`.
fn example_config(dir: &Path, from: &str, to: &str) -> std::path::PathBuf {
    let example = std::fs::read_to_string(Path::new(ROOT).join("examples/rxgate.toml")).unwrap();
    assert!(example.contains(from), "the example no longer says {from}");
    let store = dir.join("store");
    let config = example.replace(from, to).replace(
        "data_dir = \"data/store\"",
        &format!("data_dir = {:?}", text(&store)),
    );
    let path = dir.join("rxgate.toml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn config_check_reads_every_file_named_and_opens_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = example_config(dir.path(), "", "");
    let out = rxgate(&["config", "check", text(&good)]);
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "ok\n"),
        "{out:?}"
    );
    assert!(!dir.path().join("store").exists(), "the store was opened");

    // A file it names that `serve` would read only when it loads the TLS material.
    let bad = example_config(
        dir.path(),
        "certs/tls/server.key.pem",
        "certs/tls/no-such.key.pem",
    );
    let out = rxgate(&["config", "check", text(&bad)]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stdout(&out).is_empty(), "{out:?}");
    assert!(
        stderr(&out).contains("certs/tls/no-such.key.pem"),
        "{out:?}"
    );

    // Its own drug masters, in a folder that is not there.
    let masters = example_config(
        dir.path(),
        "# [checks]\n# masters_dir = \"data/masters\"",
        "[checks]\nmasters_dir = \"no-such-masters\"",
    );
    let out = rxgate(&["config", "check", text(&masters)]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr(&out).contains("no-such-masters"), "{out:?}");
}

#[test]
fn serve_dev_on_a_public_address_is_refused_before_any_banner() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let out = rxgate(&[
        "serve",
        "--dev",
        "--data-dir",
        text(&store),
        "--listen",
        "0.0.0.0:0",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert_eq!(
        stderr(&out),
        "rxgate: a --dev instance listens on loopback only\n"
    );
}

#[test]
fn verify_of_an_unsigned_document_says_to_sign_it_first() {
    let unsigned = Path::new(ROOT).join("examples/documents/prescription.json");
    let out = rxgate(&["verify", "prescription", text(&unsigned), "--dev"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = stderr(&out);
    assert!(
        said.contains("this looks like an unsigned document: sign it first with `rxgate sign"),
        "{said}"
    );
    assert!(!said.contains("documentType"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_stuck_lists_a_prescription_received_and_never_dispensed() {
    let h = start_with(|_| {}).await;
    let none = operator_cli(&h, &["admin", "stuck"]).await;
    assert_eq!(stdout(&none), "no prescription is stuck\n", "{none:?}");

    let registered = h.register_demo("clinic", "STUCK-1", 1).await;
    h.pharmacy("pharmacy")
        .await
        .receive_prescription(pb::ReceivePrescriptionRequest {
            patient_key: Some(patient(1)),
            exchange_number: registered.exchange_number.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    h.clock.set(h.now() + Duration::from_secs(4 * 86_400));
    let out = operator_cli(&h, &["admin", "stuck"]).await;
    assert!(out.status.success(), "{out:?}");
    let listed = stdout(&out);
    let line = listed
        .lines()
        .find(|l| l.contains(&registered.prescription_id))
        .unwrap_or_else(|| panic!("not listed:\n{listed}"));
    assert!(
        line.contains("STUCK-1") && line.contains("pharmacy 1340000001"),
        "{line}"
    );
    h.shutdown().await;
}

/// `rxgate ARGS --addr` the harness's gateway as the development operator, off the runtime.
pub(crate) async fn operator_cli(h: &Harness, args: &[&str]) -> Output {
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.extend(["--addr".into(), h.addr.clone()]);
    tokio::task::spawn_blocking(move || {
        rxgate(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_export_writes_the_trail_that_audit_verify_reads() {
    let h = start_with(|_| {}).await;
    h.register_demo("clinic", "EXPORT-1", 1).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.json");
    let out = operator_cli(&h, &["audit", "export", "--out", text(&file)]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).ends_with(&format!(
            "audit records and the checkpoints written to {}\n",
            file.display()
        )),
        "{out:?}"
    );
    let export: pb::AuditExport = json::from_json(
        "rxgate.v1.AuditExport",
        &std::fs::read_to_string(&file).unwrap(),
    )
    .unwrap();
    assert!(
        export
            .records
            .iter()
            .any(|r| r.action == "RegisterPrescription"),
        "{:?}",
        export.records.iter().map(|r| &r.action).collect::<Vec<_>>()
    );
    h.shutdown().await;
}

/// A gateway on the shipped masters without their last update (`import::LAST_UPDATE`), and a
/// copy of that update named `name` in `dir`.
async fn gateway_without_last_update(dir: &Path, name: &str) -> (Harness, std::path::PathBuf) {
    let masters = masters_without_last_update(dir);
    let h = start_with(|c| c.checks.masters_dir = Some(masters)).await;
    let copy = dir.join(name);
    let shipped = data().join("masters/y_updates").join(LAST_UPDATE);
    std::fs::copy(shipped, &copy).unwrap();
    (h, copy)
}

/// The summary line of `file` in `master import`'s output.
fn summary_line<'a>(out: &'a str, file: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().next() == Some(file))
        .unwrap_or_else(|| panic!("no line for {file}:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_import_finds_the_official_name_inside_a_renamed_download() {
    let dir = tempfile::tempdir().unwrap();
    let (h, renamed) = gateway_without_last_update(dir.path(), "Y_20250813 (1).CSV.gz").await;
    let out = operator_cli(&h, &["master", "import", text(&renamed)]).await;
    assert!(out.status.success(), "{out:?}");
    let listed = stdout(&out);
    let numbers: Vec<u64> = summary_line(&listed, "y_20250813.csv")
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    // rows, added, changed, abolished, deleted, restored (as tests/it/import.rs)
    assert_eq!(numbers, [87, 12, 74, 1, 0, 0], "{listed}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_import_takes_the_kind_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let (h, renamed) = gateway_without_last_update(dir.path(), "update-20250813.csv.gz").await;
    let out = operator_cli(&h, &["master", "import", text(&renamed)]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = stderr(&out);
    for accepted in [
        "y_ALLYYYYMMDD",
        "y_YYYYMMDD",
        "mhlw_yakka_list",
        "ippan_master",
        "contraindications",
        "--kind",
    ] {
        assert!(said.contains(accepted), "{accepted} not named: {said}");
    }

    let out = operator_cli(
        &h,
        &["master", "import", "--kind", "y-update", text(&renamed)],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    summary_line(&stdout(&out), "y_20250813.csv");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_import_says_already_imported_for_the_shipped_files_and_draws_no_bar_off_a_terminal()
{
    let h = start_with(|_| {}).await;
    let shipped = [
        data().join("masters/y_updates").join(LAST_UPDATE),
        data().join("clinical/contraindications_structured.csv"),
    ];
    let out = operator_cli(
        &h,
        &["master", "import", text(&shipped[0]), text(&shipped[1])],
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let listed = stdout(&out);
    for name in ["y_20250813.csv", "contraindications_structured.csv"] {
        assert!(
            summary_line(&listed, name).contains("already imported"),
            "{listed}"
        );
    }
    assert!(listed.contains("(imported files: 0)"), "{listed}");
    let progress = stderr(&out);
    assert!(
        !progress.contains('\r'),
        "a progress bar on a pipe: {progress:?}"
    );
    assert!(progress.contains("y_20250813.csv"), "{progress:?}");
    h.shutdown().await;
}
