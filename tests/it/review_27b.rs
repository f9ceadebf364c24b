//! An adversarial review of backup, export and import (issue 27, item 3): each test here
//! failed on the code as it was merged.

use std::{fs, io::Write, os::unix::fs::PermissionsExt, process::Command, time::Duration};

use rxgate::{
    store::{
        EngineKind,
        dump::{Error as DumpError, Reader},
        mark,
    },
    wire::proto::v1 as pb,
};
use tokio::time::Instant;

use crate::lifecycle::serve_configured;
use crate::store_damage::{registered_store, stop};
use crate::store_dump::{Load, args, export, narrow_operator, read_to_end, rxgate, text};

/// Anything that should happen promptly on a loaded machine.
const PROMPTLY: Duration = Duration::from_secs(60);

/// A backup whose client stops reading is cut once its buffer has stayed full for the streams'
/// stall time (`network.feeds.stall_secs`), as a feed is: its turn is freed and its snapshot let
/// go, so the next backup is served, and what the stalled client kept is refused as truncated.
/// Before, a client that kept its connection open and read nothing held the one backup turn
/// (and fjall's snapshot, with every version it pins) for as long as it liked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_client_reads_nothing_is_cut_and_frees_its_turn() {
    let dir = tempfile::tempdir().unwrap();
    let serve = serve_configured(dir.path(), "");
    let mut config = fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("rxgate.toml"))
        .unwrap();
    writeln!(config, "\n[network.feeds]\nstall_secs = 1").unwrap();
    let rxgate = serve.start().await;
    let load = Load::start(&rxgate, 4);
    // About 4 kB each: some 2 MB of dump, more than the channel and the windows hold.
    load.acknowledged(500).await;
    load.stop().await;

    let mut stalled = (narrow_operator(&rxgate).await)
        .backup(pb::BackupRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut kept = stalled
        .message()
        .await
        .unwrap()
        .expect("a first chunk")
        .data;

    let given_up = Instant::now() + PROMPTLY;
    let next = loop {
        match narrow_operator(&rxgate)
            .await
            .backup(pb::BackupRequest {})
            .await
        {
            Ok(next) => break next.into_inner(),
            Err(busy) if busy.code() == tonic::Code::ResourceExhausted => {
                assert!(
                    Instant::now() < given_up,
                    "the stalled backup kept its turn"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(other) => panic!("{other:?}"),
        }
    };
    let manifest = read_to_end(next, Vec::new()).await;
    assert!(manifest.tables[0].entries >= 500, "{manifest:?}");

    while let Ok(Some(chunk)) = stalled.message().await {
        kept.extend(chunk.data);
    }
    let mut reader = Reader::new(kept.as_slice()).unwrap();
    let cut = reader.by_ref().find_map(Result::err);
    assert!(matches!(cut, Some(DumpError::Truncated(_))), "{cut:?}");
    stop(rxgate).await;
}

/// The folder a restore creates holds patient data: it is created 0700, as the scratch store of
/// `store verify --dump` is and as the gateway's state folder is installed, whatever the umask
/// of the operator's shell (022 here). Before, it was created with the umask's 0755 and the
/// engine's files in it 0644: any local user could read the restored prescriptions.
#[tokio::test]
async fn a_restore_creates_its_folder_0700() {
    let dir = tempfile::tempdir().unwrap();
    let source = registered_store(dir.path(), EngineKind::Fjall).await;
    let dump = dir.path().join("store.dump");
    export(&source, &dump).await;
    let restored = dir.path().join("restored");
    let mut restore = Command::new("sh");
    restore.args(["-c", "umask 022 && exec \"$0\" \"$@\""]);
    restore.arg(env!("CARGO_BIN_EXE_rxgate"));
    restore
        .args(["store", "restore", "--data-dir"])
        .arg(&restored)
        .arg(&dump);
    let out = tokio::task::spawn_blocking(move || restore.output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let mode = fs::metadata(&restored).unwrap().permissions().mode() & 0o777;
    assert_eq!(format!("{mode:o}"), "700");
}

/// A store behind its acknowledged mark (it lost acknowledged data) is refused by export as the
/// gateway refuses to start it: exported and imported, it would start with a new mark drawn
/// from its own counters, the loss hidden and its numbers given again, where the audited way
/// on (`serve --accept-data-loss`) moves every counter past the mark. Before, it was exported
/// as if whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_of_a_store_behind_its_mark_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = registered_store(dir.path(), EngineKind::Fjall).await;
    let mut ahead = mark::load(&store)
        .unwrap()
        .expect("a mark after a clean stop");
    *ahead.0.get_mut("sequence/event").unwrap() += 5;
    mark::save(&store, &ahead).unwrap();
    let dump = dir.path().join("store.dump");
    let out = rxgate(args(&[&"store", &"export", &"--data-dir", &store, &dump])).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("is behind what was acknowledged"),
        "{}",
        text(&out)
    );
    assert!(!dump.exists());
}
