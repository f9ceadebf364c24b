//! A store whose files were damaged or lost while the gateway was stopped (issue 27, item 1):
//! the real `rxgate serve --dev` registers prescriptions, is stopped cleanly, and copies of its
//! store are damaged as the reliability drills found them. A store behind what it
//! acknowledged is refused with a message naming what is behind; `--accept-data-loss` starts
//! it, audited, and new events are numbered after the mark; a damaged sled file is an error
//! naming the folder, never a panic; a damaged fjall file (a table, the format marker, a
//! manifest or its pointer) is refused naming the file.

use crate::common::{self, dev_pki};

use std::{
    fs,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use crate::events::take;
use crate::store_verify::fill_past_a_memtable;
use common::{
    process::{Rxgate, Serve},
    signed, signer,
};
use prost::Message;
use rxgate::{
    cli::demo::demo_prescription,
    domain::time::JapanDate,
    store::{EmbeddedStore, EngineKind, mark},
    wire::proto::v1::{
        self as pb, admin_service_client::AdminServiceClient,
        event_service_client::EventServiceClient,
        prescription_service_client::PrescriptionServiceClient,
    },
};

/// Registrations acknowledged before the damage.
pub(crate) const REGISTERED: u32 = 40;

/// A stopped store of `engine` holding `REGISTERED` acknowledged registrations, in `dir`.
pub(crate) async fn registered_store(dir: &Path, engine: EngineKind) -> PathBuf {
    let (store, rxgate) = serving(dir, engine).await;
    let mut clinic = clinic(&rxgate).await;
    for n in 0..REGISTERED {
        register(&mut clinic, &format!("DAMAGE-{n}"), n).await;
    }
    stop(rxgate).await;
    store
}

/// A new store of `engine` in `dir`, and `rxgate serve --dev` on it.
pub(crate) async fn serving(dir: &Path, engine: EngineKind) -> (PathBuf, Rxgate) {
    let store = dir.join("store");
    EmbeddedStore::open_with(&store, Some(engine), 8)
        .unwrap()
        .close()
        .unwrap();
    let rxgate = Serve::dev(&store, &dir.join("first.log")).start().await;
    (store, rxgate)
}

pub(crate) async fn clinic(
    rxgate: &Rxgate,
) -> PrescriptionServiceClient<tonic::transport::Channel> {
    let channel = dev_pki().client("clinic").connect(&rxgate.addr).await;
    PrescriptionServiceClient::new(channel.unwrap())
}

/// Registers the demo prescription `number` for patient `n` (with the patient's card consent);
/// its id.
pub(crate) async fn register(
    clinic: &mut PrescriptionServiceClient<tonic::transport::Channel>,
    number: &str,
    n: u32,
) -> String {
    let now = SystemTime::now();
    let rx = demo_prescription(number, common::fixtures::patient(n), JapanDate::of(now));
    clinic
        .register_prescription(pb::RegisterPrescriptionRequest {
            prescription: Some(signed(&signer("doctor"), rx.encode_to_vec(), now)),
            consent: pb::Consent::Card as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .prescription_id
}

/// SIGTERM, and a clean exit.
pub(crate) async fn stop(mut rxgate: Rxgate) {
    rxgate.signal("TERM");
    let exited =
        tokio::task::spawn_blocking(move || (rxgate.exit(Duration::from_secs(60)), rxgate));
    let (status, rxgate) = exited.await.unwrap();
    assert!(status.is_some_and(|s| s.success()), "{}", rxgate.output());
}

/// The event sequence the store's mark says was acknowledged.
fn acknowledged_events(store: &Path) -> u64 {
    let mark = mark::load(store)
        .unwrap()
        .expect("a mark after a clean stop");
    mark.0["sequence/event"]
}

/// The largest file directly in `dir` (a fjall journal, sled's `db`).
fn largest_file(dir: &Path) -> PathBuf {
    let files = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path());
    (files.filter(|p| p.is_file()))
        .max_by_key(|p| p.metadata().unwrap().len())
        .unwrap()
}

fn cut_to(file: &Path, keep: impl FnOnce(u64) -> u64) {
    let len = file.metadata().unwrap().len();
    let out = fs::OpenOptions::new().write(true).open(file).unwrap();
    out.set_len(keep(len)).unwrap();
}

/// The store is refused, naming the event counter behind; with --accept-data-loss it serves,
/// a new registration's event comes after the mark, and the audit trail records the recovery.
async fn refused_then_recovered(dir: &Path, store: &Path) {
    let acknowledged = acknowledged_events(store);
    assert_eq!(acknowledged, u64::from(REGISTERED));
    let (exited, log) = Serve::dev(store, &dir.join("refused.log")).refused().await;
    assert_eq!(exited, "exit status: 2", "{log}");
    let expected = format!("but {acknowledged} were acknowledged");
    assert!(log.contains("sequence/event: the store holds"), "{log}");
    assert!(log.contains(&expected), "{log}");
    assert!(log.contains("--accept-data-loss"), "{log}");

    let rxgate = Serve::dev(store, &dir.join("recovered.log"))
        .flag("--accept-data-loss")
        .start()
        .await;
    assert!(
        rxgate
            .output()
            .contains("going on as --accept-data-loss asks"),
        "{}",
        rxgate.output()
    );
    let new = register(&mut clinic(&rxgate).await, "DAMAGE-NEW", 999).await;
    let channel = async |name| dev_pki().client(name).connect(&rxgate.addr).await.unwrap();
    let mut feed = EventServiceClient::new(channel("management").await)
        .watch_events(pb::WatchEventsRequest {
            after_sequence: acknowledged,
            filter: None,
        })
        .await
        .unwrap_or_else(|e| panic!("WatchEvents: {e:?}\n{}", rxgate.output()))
        .into_inner();
    let next = take(&mut feed, 1).await.remove(0);
    assert_eq!(next.prescription_id, new);
    // Past the mark with room for what the last second before the loss may have numbered.
    assert_eq!(next.sequence, acknowledged + (1 << 20) + 1);

    let mut admin = AdminServiceClient::new(channel("operator").await);
    let mut records = admin
        .export_audit(pb::ExportAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut recoveries = Vec::new();
    while let Some(record) = records.message().await.unwrap() {
        if format!("{record:?}").contains("AcceptDataLoss") {
            recoveries.push(record);
        }
    }
    assert_eq!(recoveries.len(), 1, "{recoveries:#?}");
    assert!(
        format!("{:?}", recoveries[0]).contains("started by"),
        "{recoveries:#?}"
    );

    stop(rxgate).await;
    // It starts again without the flag: the mark was saved past the recovery.
    let again = Serve::dev(store, &dir.join("again.log")).start().await;
    again.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fjall_journal_cut_in_half_is_refused_then_recovered_past_the_mark() {
    let dir = tempfile::tempdir().unwrap();
    let store = registered_store(dir.path(), EngineKind::Fjall).await;
    cut_to(&largest_file(&store), |len| len / 2);
    refused_then_recovered(dir.path(), &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fjall_store_without_its_keyspaces_is_refused_then_recovered_past_the_mark() {
    let dir = tempfile::tempdir().unwrap();
    let store = registered_store(dir.path(), EngineKind::Fjall).await;
    fs::remove_dir_all(store.join("keyspaces")).unwrap();
    refused_then_recovered(dir.path(), &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_sled_log_is_refused_then_recovered_past_the_mark() {
    let dir = tempfile::tempdir().unwrap();
    let store = registered_store(dir.path(), EngineKind::Sled).await;
    // The log cut to nothing, its snapshots gone: sled reuses freed segments anywhere in the
    // file, so what a partial cut loses depends on where they lay (half of it sometimes lost
    // nothing acknowledged); what is left opens as the drill's 1 MiB cut did, empty.
    cut_to(&store.join("db"), |_| 0);
    for entry in fs::read_dir(&store).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("snap."))
        {
            fs::remove_file(path).unwrap();
        }
    }
    refused_then_recovered(dir.path(), &store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_sled_is_an_error_naming_the_folder_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = registered_store(dir.path(), EngineKind::Sled).await;
    let db = store.join("db");
    let mut bytes = fs::read(&db).unwrap();
    // In the first segment's header: sled 0.34 panicked on it at start ("tried to serialize
    // Uninitialized"), exit 101.
    bytes[20] ^= 0xff;
    fs::write(&db, bytes).unwrap();
    let (exited, log) = Serve::dev(&store, &dir.path().join("flipped.log"))
        .refused()
        .await;
    assert_eq!(exited, "exit status: 2", "{log}");
    let named = format!(
        "the store's files in {} are damaged (sled: ",
        store.display()
    );
    assert!(log.contains(&named), "{log}");
}

/// The gateway refuses `store` (exit 2), naming `file` as the damaged `part` and saying to
/// restore a backup.
async fn refused_naming(dir: &Path, store: &Path, part: &str, file: &Path) {
    let (exited, log) = Serve::dev(store, &dir.join("damaged.log")).refused().await;
    assert_eq!(exited, "exit status: 2", "{log}");
    let named = format!("are damaged: the {part} {}", file.display());
    assert!(log.contains(&named), "{named}: {log}");
    assert!(log.contains("restore a backup"), "{log}");
}

/// The folder of the keyspace that holds the store's tables (fjall's own is `0`).
fn tables_keyspace(store: &Path) -> PathBuf {
    store.join("keyspaces").join("1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_fjall_table_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = registered_store(dir.path(), EngineKind::Fjall).await;
    fill_past_a_memtable(&store).await;
    let table = largest_file(&tables_keyspace(&store).join("tables"));
    cut_to(&table, |len| len / 2);
    refused_naming(dir.path(), &store, "table", &table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_fjall_format_marker_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = registered_store(dir.path(), EngineKind::Fjall).await;
    let marker = store.join("version");
    cut_to(&marker, |len| len - 1);
    refused_naming(dir.path(), &store, "format marker", &marker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_fjall_manifest_pointer_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = registered_store(dir.path(), EngineKind::Fjall).await;
    let current = tables_keyspace(&store).join("current");
    cut_to(&current, |_| 3);
    refused_naming(dir.path(), &store, "manifest pointer", &current).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_fjall_manifest_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = registered_store(dir.path(), EngineKind::Fjall).await;
    let current = fs::read(tables_keyspace(&store).join("current")).unwrap();
    let id = u64::from_le_bytes(current[..8].try_into().unwrap());
    let manifest = tables_keyspace(&store).join(format!("v{id}"));
    cut_to(&manifest, |len| len / 2);
    refused_naming(dir.path(), &store, "manifest", &manifest).await;
}
