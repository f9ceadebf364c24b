//! `rxgate audit export` and `rxgate audit verify --export`: an export carries what a third
//! party needs (each link's chain fields and bytes, the signed checkpoints); verifying it passes
//! untouched and names the first bad sequence after each kind of tampering with the file.

use crate::common::{self, dev_pki};

use std::{path::Path, process::Command};

use common::{
    audit::{dev_gateway_certs, only_bad_link},
    start_with,
};
use rxgate::{
    audit_verify::{ChainVerifier, Finding, Report},
    cli,
    wire::json,
    wire::proto::v1 as pb,
};

const EXPORT: &str = "rxgate.v1.AuditExport";

/// A gateway's export, after six audited exports and a restart (whose checkpoint binds links
/// 1..=7; the export's own two calls are links 8 and 9).
async fn exported(file: &Path) {
    let h = start_with(|_| {}).await;
    for _ in 0..6 {
        h.audit_records().await;
    }
    let h = h.restart().await;
    let operator = dev_pki().client("operator");
    assert_eq!(
        cli::audit::export(&h.addr, &operator, file).await.unwrap(),
        9
    );
    h.shutdown().await;
}

fn verify(file: &Path) -> Report {
    cli::audit::verify_export(file, ChainVerifier::new(dev_gateway_certs()), &[]).unwrap()
}

/// `pristine` changed by `tamper`, written to `file`.
fn tampered(pristine: &pb::AuditExport, file: &Path, tamper: fn(&mut pb::AuditExport)) {
    let mut export = pristine.clone();
    tamper(&mut export);
    std::fs::write(file, json::to_json(EXPORT, &export).unwrap()).unwrap();
}

type Tamper = fn(&mut pb::AuditExport);

/// Record 4 (an ExportAudit) shown and encoded as another action, consistently.
fn rename_action(export: &mut pb::AuditExport) {
    let record = &mut export.records[3];
    let at = record
        .canonical
        .windows(6)
        .position(|w| w == b"Export")
        .unwrap();
    record.canonical[at] = b'e';
    record.action = "exportAudit".into();
}

#[tokio::test]
async fn an_export_verifies_and_names_the_first_bad_sequence_after_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.json");
    exported(&file).await;
    let report = verify(&file);
    assert!(report.findings.is_empty(), "{report}");
    assert_eq!((report.links, report.checkpoints), (9, 1));
    let pristine: pb::AuditExport =
        json::from_json(EXPORT, &std::fs::read_to_string(&file).unwrap()).unwrap();

    // Records are exported in sequence order: records[i] is sequence i + 1.
    let cases: [(&str, Tamper, u64, &str); 7] = [
        // In the hash the link names.
        (
            "a changed byte",
            |e| e.records[3].canonical[40] ^= 1,
            4,
            "altered",
        ),
        (
            "a changed record, its fields too",
            rename_action,
            4,
            "altered",
        ),
        (
            "a deleted record",
            |e| drop(e.records.remove(3)),
            4,
            "missing",
        ),
        (
            "two swapped records",
            |e| e.records.swap(3, 4),
            4,
            "missing",
        ),
        (
            "an inserted record",
            |e| e.records.insert(4, e.records[1].clone()),
            5,
            "2 comes again",
        ),
        (
            "a field shown other than its bytes say",
            |e| e.records[3].outcome = "PERMISSION_DENIED".into(),
            4,
            "not what its bytes say",
        ),
        (
            "a truncated tail",
            |e| e.records.truncate(5),
            6,
            "names sequence 7",
        ),
    ];
    for (what, tamper, sequence, problem) in cases {
        tampered(&pristine, &file, tamper);
        let report = verify(&file);
        let found = only_bad_link(&report, sequence);
        assert!(found.contains(problem), "{what}: {report}");
    }

    tampered(&pristine, &file, |e| {
        let signed = &mut e.checkpoints[0].signed;
        let last = signed.len() - 1;
        signed[last] ^= 1;
    });
    let report = verify(&file);
    assert!(
        matches!(&report.findings[..], [Finding::Checkpoint { problem, .. }]
            if problem == "its signature does not verify"),
        "{report}"
    );
}

#[tokio::test]
async fn the_command_exits_non_zero_naming_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.json");
    exported(&file).await;
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_rxgate"))
            .args(["audit", "verify", "--export"])
            .arg(&file)
            .arg("--gateway-cert")
            .arg(dev_pki().gateway().cert)
            .output()
            .unwrap()
    };
    let intact = run();
    assert!(intact.status.success(), "{intact:?}");
    assert!(String::from_utf8_lossy(&intact.stdout).starts_with("intact: 9 links"));

    let pristine: pb::AuditExport =
        json::from_json(EXPORT, &std::fs::read_to_string(&file).unwrap()).unwrap();
    tampered(&pristine, &file, |e| drop(e.records.remove(2)));
    let broken = run();
    assert_eq!(broken.status.code(), Some(1), "{broken:?}");
    let out = String::from_utf8_lossy(&broken.stdout);
    assert!(out.contains(": sequence 3: missing"), "{out}");
    assert!(out.contains("NOT intact"), "{out}");
}
