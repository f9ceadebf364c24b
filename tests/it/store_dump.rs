//! Export, import, online backup and restore (issue 27, item 3), through the real `rxgate`
//! binary: a stopped store with real registrations is exported and imported into each engine
//! (the dumps of both stores agree byte for byte, the audit chain verifies, the gateway serves
//! the records); damaged dumps and non-empty folders are refused; a running fjall gateway is
//! backed up while clinics register, and the restored backup holds every registration
//! acknowledged before the backup was asked for; a second backup waits its turn; a sled gateway
//! and a non-operator are refused.

use crate::common::{self, dev_pki};

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use crate::store_damage::{REGISTERED, clinic, register, registered_store, stop};
use common::process::{Rxgate, Serve};
use rxgate::{
    store::EngineKind,
    wire::proto::v1::{
        self as pb, admin_service_client::AdminServiceClient,
        prescription_service_client::PrescriptionServiceClient,
    },
};
use tokio::sync::Notify;

/// Runs `rxgate ARGS` off the runtime.
pub(crate) async fn rxgate(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_rxgate"))
            .args(args)
            .output()
            .expect("running rxgate")
    })
    .await
    .unwrap()
}

pub(crate) fn args(parts: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<String> {
    (parts.iter())
        .map(|p| p.as_ref().to_string_lossy().into_owned())
        .collect()
}

pub(crate) fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn rxgate_export(store: &Path, dest: &Path) -> Output {
    rxgate(args(&[&"store", &"export", &"--data-dir", &store, &dest])).await
}

/// `rxgate store export`, which must succeed; its output (the manifest).
pub(crate) async fn export(store: &Path, dest: &Path) -> String {
    let out = rxgate_export(store, dest).await;
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `rxgate store import` (or `restore`) into `store` in `engine`.
async fn import(verb: &str, store: &Path, engine: EngineKind, src: &Path) -> Output {
    let engine = engine.to_string();
    rxgate(args(&[
        &"store",
        &verb,
        &"--data-dir",
        &store,
        &"--engine",
        &engine,
        &src,
    ]))
    .await
}

async fn audit_verify(store: &Path) {
    let cert = dev_pki().gateway().cert;
    let out = rxgate(args(&[
        &"audit",
        &"verify",
        &"--data-dir",
        &store,
        &"--gateway-cert",
        &cert,
    ]))
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).starts_with("intact"), "{}", text(&out));
}

/// The prescriptions of `ids` that the gateway does not know.
async fn missing(rxgate: &Rxgate, ids: &[String]) -> Vec<String> {
    let mut clinic = clinic(rxgate).await;
    let mut missing = Vec::new();
    for id in ids {
        let found = clinic
            .get_prescription_status(pb::GetPrescriptionStatusRequest {
                prescription_id: id.clone(),
            })
            .await;
        if found.is_err() {
            missing.push(id.clone());
        }
    }
    missing
}

/// A stopped `from` store with registrations, exported and imported into `to`: the second
/// store's dump is the first's byte for byte, its audit chain verifies, and a gateway serves it.
async fn moves(from: EngineKind, to: EngineKind) {
    let dir = tempfile::tempdir().unwrap();
    let source = registered_store(dir.path(), from).await;
    let dump = dir.path().join("store.dump");
    let manifest = export(&source, &dump).await;
    assert!(
        (manifest.lines())
            .any(|l| l.starts_with("prescriptions ")
                && l.contains(&format!(" {REGISTERED} entries"))),
        "{manifest}"
    );
    assert_eq!(
        fs::metadata(&dump).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let moved = dir.path().join("moved");
    let out = import("import", &moved, to, &dump).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), manifest);
    assert_eq!(EngineKind::found_in(&moved).unwrap(), Some(to));
    let again = dir.path().join("again.dump");
    assert_eq!(export(&moved, &again).await, manifest);
    assert!(
        fs::read(&dump).unwrap() == fs::read(&again).unwrap(),
        "the dumps differ"
    );
    audit_verify(&moved).await;

    let rxgate = Serve::dev(&moved, &dir.path().join("moved.log"))
        .start()
        .await;
    let new = register(&mut clinic(&rxgate).await, "MOVED-NEW", 999).await;
    assert_eq!(missing(&rxgate, &[new]).await, Vec::<String>::new());
    stop(rxgate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_store_moves_to_fjall() {
    moves(EngineKind::Sled, EngineKind::Fjall).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fjall_store_moves_to_fjall() {
    moves(EngineKind::Fjall, EngineKind::Fjall).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fjall_store_moves_to_sled() {
    moves(EngineKind::Fjall, EngineKind::Sled).await;
}

/// A non-empty folder, a truncated dump and a dump with a changed byte are refused, each
/// naming why, and the damaged ones before anything is written; a running gateway's store is
/// not exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_of_damage_and_into_a_store_and_exports_of_a_running_one_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let source = registered_store(dir.path(), EngineKind::Fjall).await;
    let dump = dir.path().join("store.dump");
    export(&source, &dump).await;

    let out = import("import", &source, EngineKind::Fjall, &dump).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is not empty (it holds a fjall store)"),
        "{}",
        text(&out)
    );

    let bytes = fs::read(&dump).unwrap();
    let truncated = dir.path().join("truncated.dump");
    fs::write(&truncated, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let damaged = dir.path().join("damaged.dump");
    let mut changed = bytes.clone();
    let at = (bytes.windows(8).position(|w| w == b"DAMAGE-1")).expect("a prescription number");
    changed[at] ^= 0x20;
    fs::write(&damaged, &changed).unwrap();
    for (file, says) in [(&truncated, "truncated"), (&damaged, "table ")] {
        let into = dir.path().join("new");
        let out = import("import", &into, EngineKind::Fjall, file).await;
        assert!(!out.status.success());
        assert!(text(&out).contains(says), "{}", text(&out));
        assert!(!into.exists(), "nothing written for {}", file.display());
    }

    let rxgate = Serve::dev(&source, &dir.path().join("running.log"))
        .start()
        .await;
    let dest = dir.path().join("running.dump");
    let out = rxgate_export(&source, &dest).await;
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is in use by another process (a running gateway)"),
        "{}",
        text(&out)
    );
    assert!(!dest.exists());
    stop(rxgate).await;
}

/// `rxgate store backup DEST` of the gateway, as the development operator.
async fn backup(rxgate: &Rxgate, dest: &Path) -> Output {
    let addr = &rxgate.addr;
    self::rxgate(args(&[&"store", &"backup", &dest, &"--addr", addr])).await
}

/// A gateway serving a store of `engine` with registrations, in `dir`.
async fn serving(dir: &Path, engine: EngineKind) -> (PathBuf, Rxgate) {
    let store = registered_store(dir, engine).await;
    let rxgate = Serve::dev(&store, &dir.join("serving.log")).start().await;
    (store, rxgate)
}

/// Clinics registering in a loop, each acknowledged id kept, until stopped.
pub(crate) struct Load {
    halt: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<String>>>,
    /// Told after every registration.
    progress: Arc<Notify>,
    clinics: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(rxgate: &Rxgate, clinics: u32) -> Load {
        let halt = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let progress = Arc::new(Notify::new());
        let clinics = (0..clinics)
            .map(|c| {
                let (halt, acknowledged) = (halt.clone(), acknowledged.clone());
                let (progress, addr) = (progress.clone(), rxgate.addr.clone());
                tokio::spawn(async move {
                    let channel = dev_pki().client("clinic").connect(&addr).await;
                    let mut clinic = PrescriptionServiceClient::new(channel.unwrap());
                    for n in 0.. {
                        if halt.load(Ordering::Relaxed) {
                            return;
                        }
                        let number = format!("LOAD-{c}-{n}");
                        let id = register(&mut clinic, &number, c * 100_000 + n).await;
                        acknowledged.lock().unwrap().push(id);
                        progress.notify_one();
                    }
                })
            })
            .collect();
        Load {
            halt,
            acknowledged,
            progress,
            clinics,
        }
    }

    /// The ids acknowledged so far, once there are at least `n`.
    pub(crate) async fn acknowledged(&self, n: usize) -> Vec<String> {
        loop {
            let so_far = self.acknowledged.lock().unwrap().clone();
            if so_far.len() >= n {
                return so_far;
            }
            self.progress.notified().await;
        }
    }

    /// Stops the clinics; how many registrations were acknowledged.
    pub(crate) async fn stop(self) -> usize {
        self.halt.store(true, Ordering::Relaxed);
        for clinic in self.clinics {
            clinic.await.unwrap();
        }
        self.acknowledged.lock().unwrap().len()
    }
}

/// A backup of a running fjall gateway while four clinics register: written 0600, restored
/// into a new store that holds every registration acknowledged before the backup was asked
/// for; the backup is audited as the operator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_holds_every_registration_acknowledged_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_, rxgate) = serving(dir.path(), EngineKind::Fjall).await;
    let load = Load::start(&rxgate, 4);
    let before = load.acknowledged(40).await;
    let dest = dir.path().join("backup.dump");
    let out = backup(&rxgate, &dest).await;
    let after = load.stop().await;
    assert!(out.status.success(), "{}\n{}", text(&out), rxgate.output());
    assert_eq!(
        fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(!dir.path().join("backup.dump.partial").exists());
    let audited = backups_audited(&rxgate).await;
    assert_eq!(
        audited,
        [("operator".to_owned(), "OK".to_owned())],
        "{}",
        rxgate.output()
    );
    stop(rxgate).await;

    let restored = dir.path().join("restored");
    let out = import("restore", &restored, EngineKind::Fjall, &dest).await;
    assert!(out.status.success(), "{}", text(&out));
    audit_verify(&restored).await;
    let rxgate = Serve::dev(&restored, &dir.path().join("restored.log"))
        .start()
        .await;
    assert_eq!(
        missing(&rxgate, &before).await,
        Vec::<String>::new(),
        "{} registered in all",
        after
    );
    stop(rxgate).await;
}

/// The Backup calls in the gateway's audit trail: (caller's institution kind, outcome).
async fn backups_audited(rxgate: &Rxgate) -> Vec<(String, String)> {
    let channel = dev_pki()
        .client("operator")
        .connect(&rxgate.addr)
        .await
        .unwrap();
    let mut records = AdminServiceClient::new(channel)
        .export_audit(pb::ExportAuditRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut found = Vec::new();
    while let Some(r) = records.message().await.unwrap() {
        if r.action == "Backup" {
            found.push((r.institution_kind, r.outcome));
        }
    }
    found
}

/// A sled gateway answers FAILED_PRECONDITION saying what to do instead, and writes no file;
/// a clinic is refused PERMISSION_DENIED; both are audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_sled_or_by_a_clinic_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_, rxgate) = serving(dir.path(), EngineKind::Sled).await;
    let dest: PathBuf = dir.path().join("backup.dump");
    let out = backup(&rxgate, &dest).await;
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("FailedPrecondition"), "{said}");
    assert!(said.contains("rxgate store export"), "{said}");
    assert!(!dest.exists() && !dir.path().join("backup.dump.partial").exists());

    let channel = dev_pki()
        .client("clinic")
        .connect(&rxgate.addr)
        .await
        .unwrap();
    let refused = AdminServiceClient::new(channel)
        .backup(pb::BackupRequest {})
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let mut audited = backups_audited(&rxgate).await;
    audited.sort();
    assert_eq!(
        audited,
        [
            ("clinic".to_owned(), "PERMISSION_DENIED".to_owned()),
            ("operator".to_owned(), "FAILED_PRECONDITION".to_owned())
        ]
    );
    stop(rxgate).await;
}

/// The bytes of a Backup stream read to its end, checked as a dump; its manifest.
pub(crate) async fn read_to_end(
    mut stream: tonic::Streaming<pb::BackupChunk>,
    mut bytes: Vec<u8>,
) -> rxgate::store::dump::Manifest {
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes.extend(chunk.data);
    }
    let mut reader = rxgate::store::dump::Reader::new(bytes.as_slice()).unwrap();
    reader.by_ref().for_each(|entry| drop(entry.unwrap()));
    reader.manifest().cloned().expect("a manifest")
}

/// An operator's client with HTTP/2's initial windows (64 KiB), not tonic's larger ones: it
/// takes in little of a stream it does not read.
pub(crate) async fn narrow_operator(
    rxgate: &Rxgate,
) -> AdminServiceClient<tonic::transport::Channel> {
    let tls = dev_pki().client("operator").client_tls_config().unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(rxgate.addr.clone()).unwrap();
    let endpoint = endpoint.tls_config(tls).unwrap();
    let channel = (endpoint.initial_stream_window_size(65_535))
        .initial_connection_window_size(65_535)
        .connect()
        .await;
    AdminServiceClient::new(channel.unwrap())
}

/// One backup at a time: while one waits on its client (its dump larger than the buffers
/// between), a second is refused RESOURCE_EXHAUSTED; once the first is read to its end, the
/// next is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_backup_is_refused_while_one_streams() {
    let dir = tempfile::tempdir().unwrap();
    let (_, rxgate) = serving(dir.path(), EngineKind::Fjall).await;
    let load = Load::start(&rxgate, 4);
    // About 4 kB each: some 2 MB of dump, twice what the channel and the windows hold.
    load.acknowledged(500).await;
    load.stop().await;
    let operator = || narrow_operator(&rxgate);
    let mut first = operator()
        .await
        .backup(pb::BackupRequest {})
        .await
        .unwrap()
        .into_inner();
    let head = first.message().await.unwrap().expect("a first chunk").data;
    let second = operator().await.backup(pb::BackupRequest {}).await;
    let refused = second.expect_err("a second backup while the first streams");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("one backup at a time"),
        "{refused:?}"
    );

    let manifest = read_to_end(first, head).await;
    let prescriptions = manifest.tables[0].entries;
    assert!(prescriptions >= 500 + u64::from(REGISTERED), "{manifest:?}");
    let next = operator().await.backup(pb::BackupRequest {}).await.unwrap();
    let again = read_to_end(next.into_inner(), Vec::new()).await;
    // The same prescriptions; the audit trail has the two calls since.
    assert_eq!(again.tables[0], manifest.tables[0]);
    assert_eq!(again.tables[6].entries, manifest.tables[6].entries + 2);
    stop(rxgate).await;
}
