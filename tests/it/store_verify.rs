//! `rxgate store verify` (issue 27, item 2) through the real binary: a store that the real
//! `rxgate serve --dev` filled with registrations (with consents), a dispensing and lockout
//! misses is sound on fjall and on sled; then each kind of damage makes it fail, naming the
//! place: a flipped byte in a fjall table or blob file, a record deleted behind its index and an
//! index entry behind its record, a counter behind, an audit link changed, an acknowledged mark
//! ahead of the store, a store a running gateway holds.

use crate::common::{self, dev_pki};
use crate::store_damage::{clinic, register, serving, stop};

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::process::Serve;
use rxgate::{
    cli::demo,
    domain::hash::{hex, sha256},
    service::{heads, link_key, records},
    store::{EmbeddedStore, EngineKind, Store, Table, Txn, mark},
    wire::proto::v1::{self as pb, dispensing_service_client::DispensingServiceClient},
};

/// Registrations besides the demo's.
const REGISTERED: u32 = 12;

/// A stopped store of `engine` in `dir`, filled through the real gateway: `REGISTERED`
/// registrations with card consent, the demo's walk (register, receive, dispense), and a
/// pharmacy's lookups with a wrong exchange number (the lockout's counters and marks).
pub(crate) async fn populated_store(dir: &Path, engine: EngineKind) -> PathBuf {
    let (store, rxgate) = serving(dir, engine).await;
    let mut clinic = clinic(&rxgate).await;
    for n in 0..REGISTERED {
        register(&mut clinic, &format!("VERIFY-{n}"), n).await;
    }
    demo::run(&rxgate.addr, &dev_pki()).await.unwrap();
    let channel = dev_pki()
        .client("pharmacy")
        .connect(&rxgate.addr)
        .await
        .unwrap();
    let mut pharmacy = DispensingServiceClient::new(channel);
    for wrong in ["000001", "000002"] {
        let missed = pharmacy
            .lookup_prescription(pb::LookupPrescriptionRequest {
                patient_key: Some(common::fixtures::patient(1)),
                exchange_number: wrong.into(),
            })
            .await;
        assert!(missed.is_err(), "{wrong} is not patient 1's number");
    }
    stop(rxgate).await;
    store
}

/// `rxgate store verify --data-dir STORE` believing the dev gateway's checkpoints.
fn verify(store: &Path) -> Output {
    let cert = dev_pki().gateway().cert;
    verify_by(Command::new(env!("CARGO_BIN_EXE_rxgate")), store, &cert)
}

/// [`verify`] run by `command` (the binary, or a wrapper that runs it as another user),
/// believing the checkpoints of the gateway certificate `cert`.
pub(crate) fn verify_by(mut command: Command, store: &Path, cert: &Path) -> Output {
    command
        .args(["store", "verify", "--data-dir"])
        .arg(store)
        .arg("--gateway-cert")
        .arg(cert)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Verify passes, and counts at least one entry of each kind the store was filled with.
pub(crate) fn assert_sound(store: &Path) {
    let output = verify(store);
    let out = stdout(&output);
    assert!(output.status.success(), "{output:?}");
    assert!(out.starts_with("sound: "), "{out}");
    for filled in ["Dispensings", "Clinical", "Lockouts", "Events", "Audit"] {
        let zero = format!("{filled} 0,");
        assert!(
            out.contains(filled) && !out.contains(&zero),
            "{filled}: {out}"
        );
    }
}

/// Verify fails (exit 1) with one line naming the problem; that line.
pub(crate) fn assert_unsound(store: &Path) -> String {
    let output = verify(store);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let out = stdout(&output);
    assert!(out.starts_with("NOT sound: "), "{out}");
    out
}

/// Runs `change` in one transaction on the stopped store, through the library.
pub(crate) async fn change(store: &Path, change: impl Fn(&mut dyn Txn) + Send + Sync + 'static) {
    let opened = EmbeddedStore::open(store).unwrap();
    opened
        .transact(move |tx| {
            change(tx);
            Ok::<_, rxgate::store::Error>(())
        })
        .await
        .unwrap()
        .unwrap();
    opened.close().unwrap();
}

/// The first key of `table` and its value.
async fn first(store: &Path, table: Table) -> (Vec<u8>, Vec<u8>) {
    let opened = EmbeddedStore::open(store).unwrap();
    let rows = opened
        .transact(move |tx| tx.scan_prefix(table, b"", 1))
        .await
        .unwrap()
        .unwrap();
    opened.close().unwrap();
    rows.into_iter().next().expect("the table is not empty")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filled_fjall_store_is_sound() {
    let dir = tempfile::tempdir().unwrap();
    assert_sound(&populated_store(dir.path(), EngineKind::Fjall).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filled_sled_store_is_sound() {
    let dir = tempfile::tempdir().unwrap();
    assert_sound(&populated_store(dir.path(), EngineKind::Sled).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prescription_deleted_behind_its_index_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated_store(dir.path(), EngineKind::Fjall).await;
    let (key, _) = first(&store, Table::Prescriptions).await;
    let id = String::from_utf8(key.clone()).unwrap();
    change(&store, move |tx| tx.delete(Table::Prescriptions, &key)).await;
    let out = assert_unsound(&store);
    let named = format!("names prescription {id}, which is not stored");
    assert!(out.contains(&named), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_entry_deleted_behind_its_prescription_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated_store(dir.path(), EngineKind::Fjall).await;
    let (key, id) = first(&store, Table::ByExchange).await;
    change(&store, move |tx| tx.delete(Table::ByExchange, &key)).await;
    // Its key is the patient's pseudonym: the check needs the gateway's pseudonym key.
    let config = crate::pseudonymized_keys::dev_config(dir.path());
    let output = crate::pseudonymized_keys::verify_store(&store, Some(&config));
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let out = stdout(&output);
    let named = format!(
        "Prescriptions key {}: it is usable today, but its exchange number does not find it",
        hex(&id)
    );
    assert!(out.contains(&named), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_behind_the_events_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated_store(dir.path(), EngineKind::Fjall).await;
    change(&store, |tx| {
        tx.put(Table::Meta, b"sequence/event", &3u64.to_be_bytes())
    })
    .await;
    let out = assert_unsound(&store);
    assert!(
        out.contains(
            "Meta counter sequence/event: is 3, behind the highest number the store holds"
        ),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mark_ahead_of_the_store_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated_store(dir.path(), EngineKind::Fjall).await;
    let mut ahead = mark::load(&store)
        .unwrap()
        .expect("a mark after a clean stop");
    let events = ahead.0.get_mut("sequence/event").unwrap();
    *events += 5;
    let acknowledged = *events;
    mark::save(&store, &ahead).unwrap();
    let out = assert_unsound(&store);
    let named = format!("but {acknowledged} were acknowledged");
    assert!(out.contains("is behind what was acknowledged"), "{out}");
    assert!(out.contains(&named), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_audit_link_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated_store(dir.path(), EngineKind::Fjall).await;
    let opened = EmbeddedStore::open(&store).unwrap();
    let head = opened
        .transact(|tx| heads(tx))
        .await
        .unwrap()
        .unwrap()
        .remove(0);
    opened.close().unwrap();
    assert!(head.sequence > 3, "{head:?}");
    let link = link_key(&head.writer, 2);
    change(&store, move |tx| {
        let stored = tx.get(Table::Audit, &link).unwrap().unwrap();
        let mut link_record: records::AuditRecord = records::decode(&stored).unwrap();
        let records::AuditRecord::V3(chained) = &mut link_record else {
            panic!("a chain link")
        };
        chained.sequence = 2;
        if let records::ChainedV1::Call(call) = &mut chained.entry {
            call.call.outcome = String::from("OK, really");
        }
        tx.put(Table::Audit, &link, &records::encode(&link_record));
    })
    .await;
    let out = assert_unsound(&store);
    assert!(out.contains("Audit chain: writer "), "{out}");
    assert!(out.contains("altered"), "{out}");
}

/// A stopped fjall store with tables and blob files, in a folder of its own; its file under
/// `keyspaces/1/{part}/` (`tables` or `blobs`) with a byte flipped in the middle.
async fn flipped_in(part: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = populated_store(dir.path(), EngineKind::Fjall).await;
    fill_past_a_memtable(&store).await;
    assert_sound(&store);
    let files = engine_files(&store.join("keyspaces/1").join(part));
    let (file, len) = files.iter().max_by_key(|(_, len)| *len).unwrap();
    let mut bytes = fs::read(file).unwrap();
    bytes[(*len / 2) as usize] ^= 0xff;
    fs::write(file, bytes).unwrap();
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_fjall_table_file_is_named() {
    let (_dir, store) = flipped_in("tables").await;
    let out = assert_unsound(&store);
    assert!(out.contains("reading after"), "{out}");
    assert!(out.to_lowercase().contains("checksum"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_a_fjall_blob_file_is_named() {
    let (_dir, store) = flipped_in("blobs").await;
    let out = assert_unsound(&store);
    assert!(out.contains("Certificates"), "{out}");
    assert!(out.contains("stored data is corrupt"), "{out}");
    assert!(out.to_lowercase().contains("checksum"), "{out}");
}

/// A read that meets the flipped byte is counted, for `rxgate_store_corrupt_reads_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_read_is_counted() {
    let (_dir, store) = flipped_in("blobs").await;
    let opened = EmbeddedStore::open(&store).unwrap();
    assert_eq!(opened.stats().corrupt_reads, 0);
    let mut after = Vec::new();
    let failed = loop {
        let from = after.clone();
        let page = opened
            .transact(move |tx| tx.scan_range(Table::Certificates, &from, &[0xff; 33], 500))
            .await
            .unwrap();
        match page {
            Ok(rows) if rows.is_empty() => panic!("every certificate read back"),
            Ok(rows) => after = [rows.last().unwrap().0.as_slice(), &[0]].concat(),
            Err(error) => break error,
        }
    };
    assert!(
        matches!(failed, rxgate::store::Error::Corrupt(_)),
        "{failed:?}"
    );
    assert_eq!(opened.stats().corrupt_reads, 1);
    opened.close().unwrap();
}

/// A backup's read that meets the flipped byte (through a snapshot, off the writer) is counted
/// and logged as the store's own reads are: a nightly backup raises the same alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_read_through_a_snapshot_is_counted() {
    let (_dir, store) = flipped_in("blobs").await;
    let opened = EmbeddedStore::open(&store).unwrap();
    let snapshot = opened.snapshot().await.unwrap();
    let failed = snapshot
        .entries(Table::Certificates)
        .find_map(Result::err)
        .expect("a read meets the flipped byte");
    assert!(
        matches!(failed, rxgate::store::Error::Corrupt(_)),
        "{failed:?}"
    );
    assert_eq!(opened.stats().corrupt_reads, 1);
    drop(snapshot);
    opened.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_a_running_gateway_holds_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let rxgate = Serve::dev(&store, &dir.path().join("serve.log"))
        .start()
        .await;
    let output = verify(&store);
    rxgate.kill();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(err.contains("in use by another process"), "{err}");
}

/// Certificates (valid entries: each under its SHA-256) of 4 KiB each, past fjall's 64 MiB
/// memtable, so that fjall writes its tables and blob files as a store in use has them.
pub(crate) async fn fill_past_a_memtable(store: &Path) {
    let opened = EmbeddedStore::open(store).unwrap();
    for batch in 0..20u32 {
        opened
            .transact(move |tx| {
                for n in 0..1_000u32 {
                    let value: Vec<u8> = [batch, n]
                        .iter()
                        .flat_map(|v| v.to_be_bytes())
                        .cycle()
                        .take(4_096)
                        .collect();
                    tx.put(Table::Certificates, &sha256(&value), &value);
                }
                Ok::<_, rxgate::store::Error>(())
            })
            .await
            .unwrap()
            .unwrap();
    }
    opened.close().unwrap();
}

/// A prescription whose stored bytes fail their checksum answers INTERNAL, as before; the
/// gateway logs the read with its table and key and counts it in
/// `rxgate_store_corrupt_reads_total`, so that an alert can fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_logs_and_counts_a_corrupt_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = populated_store(dir.path(), EngineKind::Fjall).await;
    let (key, _) = first(&store, Table::Prescriptions).await;
    fill_past_a_memtable(&store).await;
    flip_after(&store.join("keyspaces/1"), &key);
    let rxgate = Serve::dev(&store, &dir.path().join("corrupt.log"))
        .start()
        .await;
    let id = String::from_utf8(key.clone()).unwrap();
    let status = clinic(&rxgate)
        .await
        .get_prescription_status(pb::GetPrescriptionStatusRequest {
            prescription_id: id,
        })
        .await;
    assert_eq!(status.unwrap_err().code(), tonic::Code::Internal);
    let (_, metrics) = crate::ops_http::get(rxgate.metrics, "/metrics").await;
    let log = rxgate.output();
    rxgate.kill();
    let counted = (metrics.lines())
        .find_map(|l| l.strip_prefix("rxgate_store_corrupt_reads_total "))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert_eq!(counted, "1", "{metrics}");
    let logged = format!("table=Prescriptions key={} place=the key", hex(&key));
    let lines: Vec<&str> = (log.lines())
        .filter(|l| l.contains("a stored record is corrupt"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains(&logged), "{log}");
}

/// Flips the byte after the first place `needle` stands in a file under `dir` (a table or a
/// blob file): that entry's block or blob no longer matches its checksum.
fn flip_after(dir: &Path, needle: &[u8]) {
    for (file, _) in engine_files(dir) {
        let mut bytes = fs::read(&file).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[at + needle.len()] ^= 0xff;
            fs::write(&file, bytes).unwrap();
            return;
        }
    }
    panic!("no file under {} holds the key", dir.display());
}

/// Every file under `dir`, with its length.
fn engine_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(engine_files(&path));
        } else {
            let len = path.metadata().unwrap().len();
            found.push((path, len));
        }
    }
    found
}
