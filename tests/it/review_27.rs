//! Findings of the review of issue 27 (the full disk, `rxgate store verify`, damaged stores
//! named), each through the real binary: a store whose files the gateway's user may not read
//! is not called damaged; an event whose dispensing record is lost is not called sound.

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Output},
};

use rxgate::store::{EmbeddedStore, EngineKind, Table};

use crate::{
    anywhere::is_root,
    common::dev_pki,
    store_verify::{assert_sound, assert_unsound, change, populated_store, verify_by},
};

/// `rxgate store verify --data-dir STORE` as a user other than the files' owner: as `nobody`
/// when this is root (root reads every file), else as this user. The gateway certificate it
/// believes is copied beside the store first (into `dir`, which that user may read): the
/// repository's own copy may sit in a folder only its owner can enter (a CI checkout).
fn verify_as_another_user(dir: &Path, store: &Path) -> Output {
    let cert = dir.join("gateway.cert.pem");
    fs::copy(dev_pki().gateway().cert, &cert).unwrap();
    fs::set_permissions(&cert, fs::Permissions::from_mode(0o644)).unwrap();
    let rxgate = env!("CARGO_BIN_EXE_rxgate");
    let command = if is_root() {
        let mut setpriv = Command::new("setpriv");
        setpriv.args(["--reuid=65534", "--regid=65534", "--clear-groups", rxgate]);
        setpriv
    } else {
        Command::new(rxgate)
    };
    verify_by(command, store, &cert)
}

/// A store left by a start as another user (root, under umask 077) cannot be read by the
/// gateway's user: that is a matter of ownership, and the operator must be told so, not that
/// the files are damaged and a backup must be restored (which would throw away what was
/// written since the backup).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fjall_store_this_user_may_not_read_is_not_called_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    EmbeddedStore::open_with(&store, Some(EngineKind::Fjall), 8)
        .unwrap()
        .close()
        .unwrap();
    for (path, mode) in [(dir.path(), 0o755), (&store, 0o755)] {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }
    let marker = store.join("version");
    fs::set_permissions(&marker, fs::Permissions::from_mode(0o000)).unwrap();

    let output = verify_as_another_user(dir.path(), &store);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(!err.contains("damaged"), "{err}");
    assert!(!err.contains("restore a backup"), "{err}");
    assert!(
        err.contains("may not be read or written by this user"),
        "{err}"
    );
}

/// An event of a dispensing names its record: the event feed (and the relay that reads it)
/// answers every page holding such an event INTERNAL, "event without its dispensing record".
/// A store whose dispensing records were lost with their document index must not be called
/// sound while such an event is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_dispensing_record_is_lost_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated_store(dir.path(), EngineKind::Fjall).await;
    assert_sound(&store);
    change(&store, |tx| {
        for table in [Table::Dispensings, Table::Documents] {
            for (key, _) in tx.scan_prefix(table, b"", 1_000).unwrap() {
                tx.delete(table, &key);
            }
        }
    })
    .await;
    let out = assert_unsound(&store);
    assert!(out.contains("Events key "), "{out}");
    assert!(out.contains("which is not stored"), "{out}");
}
