//! fjall as the store's [`Engine`]: a log-structured merge tree, the engine of new stores. The
//! only file of the project that names fjall.
//!
//! - **One keyspace.** Every table lives in the keyspace [`KEYSPACE`] under its prefix byte; a
//!   batch is one fjall write batch, written to the journal as one unit and recovered
//!   all-or-nothing after a crash.
//! - **Durability.** A committed batch is in the journal file (written to the OS) and visible at
//!   once; `flush` syncs the journal (`PersistMode::SyncAll`), and only then does the store
//!   answer. Memtables are written out to sorted tables and compacted by fjall's own worker
//!   thread, off the store's writer.
//! - **Large values apart.** The keyspace is created with key-value separation: a value of
//!   1 KiB or more (a prescription's record with its document and signature, a patient's
//!   history) is written once to a blob file when its memtable is flushed, and compaction moves
//!   only a pointer to it, not the value; stale blobs are collected by fjall. This is a property
//!   of the keyspace, chosen when it is created: a store created without it keeps its layout.
//! - **Retired memtables freed off the lock.** fjall drops a flushed memtable when it retires the
//!   last version that held it, in its version housekeeping, with the tree's version lock held
//!   for writing: every read and write of the store waits for that lock, and freeing a 64 MiB
//!   memtable entry by entry held it 40–80 ms (BENCHMARKS.md). After every batch the engine
//!   takes its own reference to the active memtable, and a thread of its own (the reaper) drops
//!   that reference once it is the last one, outside any lock of fjall's.
//! - **Why fjall.** Under the gateway's load a registration writes ten keys at scattered places
//!   (BENCHMARKS.md): sled rewrote and split 16-entry B-tree leaves for each, and its
//!   memory grew with the store; an LSM tree appends them to a memtable, and its memory is its
//!   block cache and its memtables.

mod damage;

use std::any::Any;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use fjall::{
    AbstractTree, Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode,
    Readable,
};

use super::embedded::{Engine, EngineSnapshot, Overlay, spawn};
use super::{Entry, Error};

/// The keyspace holding every table.
const KEYSPACE: &str = "rxgate";

/// fjall's background threads (memtable flushes and compactions). One, not fjall's default of
/// one per core (two here): with two, the first hands every compaction request back to the
/// queue so as to stay free for flushes, and while the second compacts it receives and re-sends
/// the same request in a loop, a busy spin measured at a tenth of a core under load
/// (BENCHMARKS.md). One thread flushes between compactions; with it (and key-value separation)
/// registration ran 4,720 /s against 3,875 (60 s closed loop, BENCHMARKS.md).
const WORKER_THREADS: usize = 1;

/// How often the reaper looks for memtables that only the engine still holds. A flushed
/// memtable waits at most this long to be freed.
const REAP_EVERY: Duration = Duration::from_millis(100);

/// The file fjall keeps its format version in, at the top of its folder.
const VERSION_FILE: &str = "version";

/// Whether `path` holds a fjall store.
pub(crate) fn holds_store(path: &Path) -> bool {
    path.join(VERSION_FILE).is_file() && path.join("keyspaces").is_dir()
}

fn engine_error(error: fjall::Error) -> Error {
    use fjall::LsmError as Lsm;
    match error {
        fjall::Error::Io(e) | fjall::Error::Storage(Lsm::Io(e)) => super::io_error(&e),
        // Stored bytes that fail their checksum or do not parse: the store counts and logs
        // them with the table and key read.
        fjall::Error::Storage(
            e @ (Lsm::ChecksumMismatch { .. }
            | Lsm::Decompress(_)
            | Lsm::InvalidTag(_)
            | Lsm::InvalidTrailer
            | Lsm::InvalidHeader(_)
            | Lsm::Utf8(_)),
        ) => Error::Corrupt(format!("fjall: {e}")),
        other => Error::Engine(other.to_string()),
    }
}

/// Why the store in `dir` could not be opened: held by another process, files this user may
/// not use (a start as another user left them: a matter of ownership, not of damage, which
/// the files' reads would otherwise be taken for), or a damaged file named (`damage::find`),
/// with what to do; else fjall's error as it is.
fn open_error(dir: &Path, error: fjall::Error) -> Error {
    let shown = dir.display();
    match error {
        fjall::Error::Locked => Error::InUse(shown.to_string()),
        fjall::Error::Io(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Error::Engine(format!(
                "the store's files in {shown} may not be read or written by this user ({e}): \
                 give them to the gateway's user (a start as another user, root, may have left \
                 them)"
            ))
        }
        error => match damage::find(dir) {
            Some(d) => Error::Engine(format!(
                "the store's files in {shown} are damaged: the {} {} ({}; fjall: {error}): \
                 restore a backup (--accept-data-loss does not start a store whose files \
                 cannot be read)",
                d.part,
                d.file.display(),
                d.why,
            )),
            None => engine_error(error),
        },
    }
}

/// A fjall database and the keyspace that holds the store.
pub(crate) struct FjallEngine {
    db: Database,
    space: Keyspace,
    memtables: Arc<Memtables>,
    /// The reaper thread, and the sender whose drop stops it.
    reaper: Option<(Sender<()>, JoinHandle<()>)>,
}

/// The memtables that were active after the engine's batches, oldest first, each held until
/// fjall has let go of it (see the module's documentation). The type is fjall's own; it is held, never looked into.
#[derive(Default)]
struct Memtables(Mutex<Vec<Arc<dyn Any + Send + Sync>>>);

impl Memtables {
    /// Holds `active` unless it is already the newest one held.
    fn hold(&self, active: Arc<dyn Any + Send + Sync>) {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !held
            .last()
            .is_some_and(|newest| Arc::ptr_eq(newest, &active))
        {
            held.push(active);
        }
    }

    /// Takes out the memtables that nobody but this list holds any more.
    fn take_released(&self) -> Vec<Arc<dyn Any + Send + Sync>> {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        held.extract_if(.., |m| Arc::strong_count(m) == 1).collect()
    }
}

/// The reaper's loop: every [`REAP_EVERY`], frees the memtables only the engine still holds,
/// until `stop` is dropped.
fn reap(memtables: &Memtables, stop: &mpsc::Receiver<()>) {
    loop {
        let stopping = matches!(
            stop.recv_timeout(REAP_EVERY),
            Err(RecvTimeoutError::Disconnected)
        );
        drop(memtables.take_released());
        if stopping {
            return;
        }
    }
}

impl FjallEngine {
    /// Opens (or creates) the fjall store in `path` with a block cache of `cache_bytes`.
    pub(crate) fn open(path: &Path, cache_bytes: u64) -> Result<FjallEngine, Error> {
        let db = Database::builder(path)
            .cache_size(cache_bytes)
            .worker_threads(WORKER_THREADS)
            .open()
            .map_err(|e| open_error(path, e))?;
        let space = db
            .keyspace(KEYSPACE, || {
                KeyspaceCreateOptions::default()
                    .with_kv_separation(Some(KvSeparationOptions::default()))
            })
            .map_err(|e| open_error(path, e))?;
        let memtables = Arc::new(Memtables::default());
        let (stop_reaper, stop) = mpsc::channel();
        let reaper = {
            let memtables = Arc::clone(&memtables);
            spawn("reaper", move || reap(&memtables, &stop))?
        };
        Ok(FjallEngine {
            db,
            space,
            memtables,
            reaper: Some((stop_reaper, reaper)),
        })
    }
}

impl Drop for FjallEngine {
    fn drop(&mut self) {
        if let Some((stop, reaper)) = self.reaper.take() {
            drop(stop);
            // A panicked reaper has nothing left to do; what it held is freed with the list.
            let _ = reaper.join();
        }
    }
}

impl Engine for FjallEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .space
            .get(key)
            .map_err(engine_error)?
            .map(|v| v.to_vec()))
    }

    fn range<'a>(
        &'a self,
        lo: &[u8],
        hi: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, Error>> + 'a> {
        Box::new(self.space.range(lo..hi).map(|guard| {
            guard
                .into_inner()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(engine_error)
        }))
    }

    fn apply(&self, writes: Overlay) -> Result<(), Error> {
        let mut batch = self.db.batch();
        for (key, value) in writes {
            match value {
                Some(value) => batch.insert(&self.space, key, value),
                None => batch.remove(&self.space, key),
            }
        }
        batch.commit().map_err(engine_error)?;
        self.memtables.hold(self.space.tree.active_memtable());
        Ok(())
    }

    fn flush(&self) -> Result<(), Error> {
        self.db.persist(PersistMode::SyncAll).map_err(engine_error)
    }

    /// fjall's cross-keyspace snapshot: the sequence number of the last batch committed, read
    /// through the same keyspace; fjall keeps the versions it needs until it is dropped.
    fn snapshot(&self) -> Result<Box<dyn EngineSnapshot>, Error> {
        Ok(Box::new(FjallSnapshot {
            snapshot: self.db.snapshot(),
            space: self.space.clone(),
        }))
    }
}

/// A fjall snapshot of the store's keyspace.
struct FjallSnapshot {
    snapshot: fjall::Snapshot,
    space: Keyspace,
}

impl EngineSnapshot for FjallSnapshot {
    fn range(&self, lo: &[u8], hi: &[u8]) -> Box<dyn Iterator<Item = Result<Entry, Error>> + '_> {
        Box::new(self.snapshot.range(&self.space, lo..hi).map(|guard| {
            guard
                .into_inner()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(engine_error)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value of `len` bytes that names its key.
    fn value(key: u32, len: usize) -> Vec<u8> {
        key.to_be_bytes()
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    fn write(engine: &FjallEngine, keys: std::ops::Range<u32>, len: usize) {
        let writes = keys
            .map(|k| (k.to_be_bytes().to_vec(), Some(value(k, len))))
            .collect();
        engine.apply(writes).unwrap();
        engine.flush().unwrap();
        // Out of the memtable into a sorted table and, for the large values, a blob file.
        engine.space.rotate_memtable_and_wait().unwrap();
    }

    fn held(engine: &FjallEngine) -> usize {
        engine.memtables.0.lock().unwrap().len()
    }

    /// A memtable is held once, however often it is written into, and let go of only when the
    /// list holds its last reference.
    #[test]
    fn a_memtable_is_released_only_when_the_list_holds_the_last_reference() {
        let list = Memtables::default();
        let first: Arc<dyn Any + Send + Sync> = Arc::new(1u8);
        let second: Arc<dyn Any + Send + Sync> = Arc::new(2u8);
        list.hold(Arc::clone(&first));
        list.hold(Arc::clone(&first));
        list.hold(Arc::clone(&second));
        assert_eq!(list.0.lock().unwrap().len(), 2);
        assert!(
            list.take_released().is_empty(),
            "both still referenced elsewhere"
        );
        drop(first);
        let released = list.take_released();
        assert_eq!(released.len(), 1);
        assert_eq!(released[0].downcast_ref::<u8>(), Some(&1));
        assert_eq!(list.0.lock().unwrap().len(), 1, "the second stays held");
    }

    /// The engine holds the memtable it writes into; once fjall has flushed memtables and
    /// retired the versions that held them, the reaper lets them go: the engine does not keep
    /// memtables beyond fjall's own.
    #[test]
    fn flushed_memtables_are_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let engine = FjallEngine::open(dir.path(), 8 << 20).unwrap();
        write(&engine, 0..10, 100);
        assert_eq!(held(&engine), 1, "the memtable written into is held");
        for round in 1..10 {
            write(&engine, round * 10..round * 10 + 10, 100);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while held(&engine) > 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(REAP_EVERY);
        }
        assert!(
            held(&engine) <= 2,
            "{} of 10 flushed memtables still held",
            held(&engine)
        );
        assert_eq!(
            engine.get(&5u32.to_be_bytes()).unwrap(),
            Some(value(5, 100))
        );
    }

    /// Large values, kept apart in blob files, and small ones read back after flushes,
    /// overwrites (stale blobs), a full compaction and a reopen.
    #[test]
    fn values_kept_apart_read_back_after_compaction_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = FjallEngine::open(dir.path(), 8 << 20).unwrap();
            write(&engine, 0..400, 3_000);
            write(&engine, 400..800, 100);
            assert!(
                engine.space.blob_file_count() > 0,
                "3 kB values went to blob files"
            );
            write(&engine, 0..200, 5_000);
            engine.space.major_compact().unwrap();
        }
        let engine = FjallEngine::open(dir.path(), 8 << 20).unwrap();
        for k in 0..800u32 {
            let len = match k {
                0..200 => 5_000,
                200..400 => 3_000,
                _ => 100,
            };
            let got = engine.get(&k.to_be_bytes()).unwrap();
            assert_eq!(got, Some(value(k, len)), "key {k}");
        }
        let all = engine.range(&[0], &[0xff]).count();
        assert_eq!(all, 800);
    }
}
