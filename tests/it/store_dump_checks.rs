//! A dump checked whole (`rxgate store verify --dump`: its manifest, then every record through
//! a scratch store) and an import cut short never taken for a whole store, through the real
//! `rxgate` binary.

use crate::common::{dev_pki, process::Serve};
use crate::store_damage::registered_store;
use crate::store_dump::{args, export, rxgate, text};
use crate::store_verify::fill_past_a_memtable;

use std::{
    fs,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use rxgate::store::EngineKind;

/// `rxgate store verify --dump DUMP`, believing the dev gateway's checkpoints.
async fn verify_dump(dump: &Path) -> Output {
    let cert = dev_pki().gateway().cert;
    rxgate(args(&[
        &"store",
        &"verify",
        &"--dump",
        &dump,
        &"--gateway-cert",
        &cert,
    ]))
    .await
}

/// The scratch folder `store verify --dump` loads `dump` into.
fn scratch(dump: &Path) -> std::path::PathBuf {
    dump.with_file_name(format!(
        "{}.verifying",
        dump.file_name().unwrap().to_string_lossy()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sound_dump_verifies_and_a_changed_byte_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = registered_store(dir.path(), EngineKind::Fjall).await;
    let dump = dir.path().join("store.dump");
    export(&store, &dump).await;

    let out = verify_dump(&dump).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("match its manifest"), "{}", text(&out));
    assert!(!scratch(&dump).exists(), "the scratch store is removed");

    // A byte of the last record of the dump changed: the manifest disagrees with what is read.
    let mut bytes = fs::read(&dump).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x20;
    let changed = dir.path().join("changed.dump");
    fs::write(&changed, bytes).unwrap();
    let out = verify_dump(&changed).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("is refused"), "{}", text(&out));
    assert!(!scratch(&changed).exists(), "the scratch store is removed");
}

/// An import killed part-way leaves its mark in the folder; the gateway, `store export` and
/// `store verify` all refuse the folder, naming the unfinished import.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_cut_short_is_refused_by_every_reader() {
    let dir = tempfile::tempdir().unwrap();
    let store = registered_store(dir.path(), EngineKind::Fjall).await;
    fill_past_a_memtable(&store).await;
    let dump = dir.path().join("store.dump");
    export(&store, &dump).await;

    let target = dir.path().join("imported");
    let mut import = Command::new(env!("CARGO_BIN_EXE_rxgate"))
        .args(["store", "import", "--data-dir"])
        .arg(&target)
        .arg(&dump)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let marker = target.join("import-unfinished");
    let began = Instant::now();
    while !marker.exists() {
        assert!(
            import.try_wait().unwrap().is_none(),
            "the import ended before it was seen loading"
        );
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "the import never began loading"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    import.kill().unwrap();
    import.wait().unwrap();

    let (exited, log) = Serve::dev(&target, &dir.path().join("refused.log"))
        .refused()
        .await;
    assert_eq!(exited, "exit status: 2", "{log}");
    assert!(log.contains("did not finish"), "{log}");

    let out = rxgate(args(&[
        &"store",
        &"export",
        &"--data-dir",
        &target,
        &dir.path().join("again.dump"),
    ]))
    .await;
    assert!(
        !out.status.success() && text(&out).contains("did not finish"),
        "{}",
        text(&out)
    );

    let cert = dev_pki().gateway().cert;
    let out = rxgate(args(&[
        &"store",
        &"verify",
        &"--data-dir",
        &target,
        &"--gateway-cert",
        &cert,
    ]))
    .await;
    assert!(
        !out.status.success() && text(&out).contains("did not finish"),
        "{}",
        text(&out)
    );
}
