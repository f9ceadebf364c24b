//! Master imports into a running gateway: `rxgate master import` (the real binary) streams an
//! official update file to AdminService.ImportMaster; it takes effect at once, survives a
//! restart and is not applied twice; a contraindication table import replaces the table; bad
//! streams and bad files change nothing.

use crate::common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::{Harness, patient, start_with};
use rxgate::{
    cli::demo::demo_prescription,
    config::Config,
    wire::proto::v1::{self as pb, admin_service_client::AdminServiceClient},
};
use tonic::Code;

/// A receipt code added (変更区分 3) by the update file of 2025-08-13: アルプロスタジル注10μgシリンジ.
pub(crate) const ADDED_IN_LAST_UPDATE: &str = "621620802";
pub(crate) const LAST_UPDATE: &str = "y_20250813.csv.gz";

/// The repository's `data/`: the shipped drug data as files.
pub(crate) fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// A masters folder like the shipped one without its last update file.
pub(crate) fn masters_without_last_update(root: &Path) -> PathBuf {
    let shipped = data().join("masters");
    let dir = root.join("masters");
    std::fs::create_dir_all(dir.join("y_updates")).unwrap();
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    for entry in std::fs::read_dir(shipped.join("y_updates")).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != LAST_UPDATE {
            std::fs::copy(&path, dir.join("y_updates").join(path.file_name().unwrap())).unwrap();
        }
    }
    dir
}

pub(crate) async fn findings_for(h: &Harness, code: &str) -> Vec<pb::Finding> {
    let mut draft = demo_prescription("IMP-1", patient(1), h.today());
    draft.lines[0].drug = Some(pb::DrugCode {
        kind: pb::DrugCodeKind::Receipt as i32,
        code: code.into(),
    });
    h.clinic("clinic")
        .await
        .check_prescription(pb::CheckPrescriptionRequest {
            draft: Some(draft),
            consent: pb::Consent::Card as i32,
            check_options: None,
        })
        .await
        .unwrap()
        .into_inner()
        .findings
}

pub(crate) fn not_checked(findings: &[pb::Finding]) -> bool {
    findings
        .iter()
        .any(|f| f.kind() == pb::FindingKind::NotChecked)
}

/// Runs `rxgate master import` against the harness's gateway.
pub(crate) fn import_cli(h: &Harness, files: &[&Path]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rxgate"))
        .args(["master", "import", "--addr", &h.addr])
        .args(files)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_update_takes_effect_at_once_survives_a_restart_and_applies_once() {
    let root = tempfile::tempdir().unwrap();
    let masters_dir = masters_without_last_update(root.path());
    let store = root.path().join("store");
    let configure = |c: &mut Config| {
        c.data_dir = store.clone();
        c.checks.masters_dir = Some(masters_dir.clone());
    };
    let h = start_with(configure).await;
    assert!(not_checked(&findings_for(&h, ADDED_IN_LAST_UPDATE).await));

    let update = data().join("masters/y_updates").join(LAST_UPDATE);
    let (ok, stdout, stderr) = import_cli(&h, &[&update]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("MB"), "no progress shown: {stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("y_20250813.csv"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let numbers: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    // rows, added, changed, abolished, deleted, restored: the file's 12 new, 74 changed, 1 abolished
    assert_eq!(numbers, [87, 12, 74, 1, 0, 0], "{stdout}");
    assert!(stdout.contains("20523 current products"), "{stdout}");
    assert!(!not_checked(&findings_for(&h, ADDED_IN_LAST_UPDATE).await));

    // After a restart the import is replayed over the configured masters.
    h.shutdown().await;
    let h = start_with(configure).await;
    assert!(!not_checked(&findings_for(&h, ADDED_IN_LAST_UPDATE).await));
    let (ok, stdout, stderr) = import_cli(&h, &[&update]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("already imported"), "{stdout}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contraindication_table_import_replaces_the_table_and_a_bad_one_changes_nothing() {
    let h = start_with(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(data().join("clinical/contraindications_structured.csv")).unwrap();
    // Keep the header and the first rule only.
    let small: String = shipped.lines().take(2).map(|l| format!("{l}\n")).collect();
    let small_path = dir.path().join("contraindications_small.csv");
    std::fs::write(&small_path, &small).unwrap();
    let broken_path = dir.path().join("contraindications_broken.csv");
    std::fs::write(&broken_path, format!("{small}only,three,columns\n")).unwrap();

    let (ok, stdout, stderr) = import_cli(&h, &[&broken_path]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("InvalidArgument"), "{stderr}");
    // Refused: nothing stored, nothing put in force.
    assert_eq!(
        h.metrics_line("rxgate_master_imported_files ").await,
        "rxgate_master_imported_files 0"
    );
    let (ok, stdout, stderr) = import_cli(&h, &[&small_path]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("1 contraindication rules"), "{stdout}");
    assert_eq!(
        h.metrics_line("rxgate_master_imported_files ").await,
        "rxgate_master_imported_files 1"
    );

    // A misnamed file is refused by the command before anything is sent.
    let (ok, _, stderr) = import_cli(&h, &[&dir.path().join("notes.csv")]);
    assert!(!ok);
    assert!(stderr.contains("notes.csv"), "{stderr}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_streams_are_checked_and_only_operators_import() {
    use pb::import_master_chunk::Part;
    let h = start_with(|_| {}).await;
    let header = |size| pb::ImportMasterChunk {
        part: Some(Part::File(pb::ImportFileHeader {
            name: "contraindications_x.csv".into(),
            kind: pb::MasterFileKind::Contraindications as i32,
            size,
        })),
    };
    let data = |b: &[u8]| pb::ImportMasterChunk {
        part: Some(Part::Data(b.to_vec())),
    };
    let cases: Vec<(Vec<pb::ImportMasterChunk>, Code)> = vec![
        (vec![data(b"x")], Code::InvalidArgument),
        (vec![header(5), data(b"abc")], Code::InvalidArgument),
        (vec![header(2), data(b"abc")], Code::InvalidArgument),
        (vec![], Code::InvalidArgument),
        (vec![header(100 << 20)], Code::ResourceExhausted),
    ];
    let mut operator = AdminServiceClient::new(h.channel("operator").await);
    for (chunks, code) in cases {
        let e = operator
            .import_master(tokio_stream::iter(chunks))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
    }
    let e = AdminServiceClient::new(h.channel("clinic").await)
        .import_master(tokio_stream::iter(vec![header(1), data(b"a")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    h.shutdown().await;
}
