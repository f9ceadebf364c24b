//! The sled engine behind [`Store`]: one writer thread, group commit with the fsync on a
//! flusher thread, an answer only after fsync. The only file of the project that names sled; it
//! must not depend on the domain, the protocol types or the async runtime (tokio's channel is
//! used only to answer).
//!
//! # Design
//!
//! - **One tree, one prefix byte per table.** Every [`Table`] is a one-byte key prefix in a single
//!   sled tree, so a write set, whatever tables it spans, is one [`sled::Batch`] applied with
//!   `apply_batch`, which sled recovers all-or-nothing after a crash. The prefix bytes are part
//!   of the on-disk format: never renumber them.
//! - **One writer thread runs every transaction and every read, and writes the tree.**
//!   [`SledStore::submit`] sends the boxed transaction function over a std channel to a
//!   dedicated thread. Transactions therefore run strictly one after another, in submission
//!   order, so a "check, then write" inside one function needs no compare-and-set. A function's
//!   writes go to an in-memory overlay; on `Ok` they join the batch's overlay of committed
//!   writes, on `Err` or panic (caught with `catch_unwind`) they are dropped, so nothing is
//!   written. Reads and scans merge the function's overlay over the batch's over the tree.
//! - **Group commit.** When the thread wakes it takes every queued transaction, up to
//!   [`MAX_BATCH`], runs them one after another (each sees the previous ones' writes, through
//!   the batch's overlay), applies the batch's committed writes as one sled batch and hands the
//!   held-back answers to the flusher thread, which calls `flush()` (write + fsync) once for
//!   every batch handed to it since its last flush, and only then answers. Under load one
//!   `apply_batch` and one fsync cover many transactions: sled rolls its IO buffers at every
//!   `apply_batch` (two log writes each), which one per transaction made the largest cost of a
//!   registration. A crash keeps all of a batch or none of it, so each transaction's writes stay
//!   all-or-nothing.
//! - **The fsync off the writer, the tree on it.** While the flusher waits for the disk, the
//!   writer runs and applies the next batch. The writer applies its batches itself: sled's
//!   `apply_batch` takes a global lock that every read then waits for, so a second thread
//!   applying (measured) kept the writer's reads waiting rather than running beside them.
//! - **Nothing non-durable is revealed.** Only the writer thread reads, so the only non-durable
//!   state anyone can observe is that of the batches applied and not yet flushed. The flusher
//!   answers in batch order, each batch after a flush that began once it was in the tree, so
//!   every transaction that could have seen such a write (including read-only and rolled-back
//!   ones, whose results may carry what they read) is answered after the flush that made it
//!   durable. A transaction that ran while every batch in the tree was durable saw only durable
//!   state (`open` flushes what it recovered), so it is answered at once, and a group of
//!   batches without writes needs no flush at all.
//! - **Failures.** If applying a batch or the flush fails, every transaction of the batch still
//!   waiting gets the error (never an `Ok` for data that may not be durable), and the store
//!   then refuses all further transactions with that error: after a failed fsync the state on
//!   disk is unknown, and writes applied in memory but not durable must not be built upon.
//!   Reopening recovers the last durable state.
//! - **Why not `flush_async`.** sled 0.34.7's `flush_async` can deadlock when several tasks
//!   call it at once (spacejam/sled#1308). A single thread calling the synchronous `flush` has
//!   no such problem and gives group commit for free.
//! - **Shutdown.** [`SledStore::close`] (also run on drop) closes the channel; the writer
//!   finishes every transaction already queued, lets the flusher answer, flush and stop, and
//!   both are joined; then `close` waits for sled's IO threads to let go of the data file (its
//!   lock), so the directory can be opened again at once. Later submissions are answered
//!   [`Error::Closed`].

use std::collections::BTreeMap;
use std::fs::{File, TryLockError};
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{Answer, Entry, Error, Outcome, Stats, Store, Table, Txn, TxnFn};
use crate::metrics::{Histogram, LATENCY_BUCKETS, SIZE_BUCKETS};

/// The page cache of [`SledStore::open`], in MiB (sled's own default is 1 GiB).
pub const DEFAULT_CACHE_MIB: u64 = 256;

/// The most transactions run between two flushes.
pub const MAX_BATCH: usize = 1024;

/// The name of the sled tree holding every table.
const TREE: &str = "rxgate";

/// The file in the store's directory that sled 0.34 keeps its log in and locks while open.
const SLED_DATA_FILE: &str = "db";

/// How long `close` waits for sled to let go of its files.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// The key prefix of each table. Part of the on-disk format: never renumber or reuse. Tag 4 is
/// retired: stores written by earlier versions hold a never-read index by (institution, issue
/// date) under it.
fn tag(table: Table) -> u8 {
    match table {
        Table::Prescriptions => 1,
        Table::ByExchange => 2,
        Table::ByPatient => 3,
        Table::ByNumber => 5,
        Table::Documents => 6,
        Table::Dispensings => 7,
        Table::Audit => 8,
        Table::Meta => 9,
        Table::Medications => 10,
        Table::Clinical => 11,
        Table::Events => 12,
        Table::EventsByInstitution => 13,
        Table::Intake => 14,
        Table::Certificates => 15,
    }
}

fn engine_error(error: ::sled::Error) -> Error {
    match error {
        ::sled::Error::Io(e) => Error::Io(e.to_string()),
        ::sled::Error::Corruption { at, .. } => {
            Error::Corrupt(format!("sled corruption at {at:?}"))
        }
        other => Error::Engine(other.to_string()),
    }
}

/// Where a transaction's answer goes.
type Reply = oneshot::Sender<Result<Outcome, Error>>;

/// A queued transaction and where to send its answer.
struct Job {
    f: TxnFn,
    answer: Reply,
}

/// The counters behind [`Stats`], updated by the writer and the flusher threads.
struct Counters {
    batches: AtomicU64,
    transactions: AtomicU64,
    commits: AtomicU64,
    flushes: AtomicU64,
    flush_nanos: AtomicU64,
    largest_batch: AtomicU64,
    flush_latency: Histogram,
    batch_size: Histogram,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            batches: AtomicU64::new(0),
            transactions: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flush_nanos: AtomicU64::new(0),
            largest_batch: AtomicU64::new(0),
            flush_latency: Histogram::new(LATENCY_BUCKETS),
            batch_size: Histogram::new(SIZE_BUCKETS),
        }
    }
}

/// The sled-backed [`Store`]. Cheap to share behind an `Arc`; closing it (or dropping it)
/// finishes queued work, flushes and joins the writer thread.
pub struct SledStore {
    sender: RwLock<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<Result<(), Error>>>>,
    writer_id: ThreadId,
    counters: Arc<Counters>,
    /// The file sled locks while the database is open.
    lock_file: PathBuf,
}

impl SledStore {
    /// Opens (or creates) the store in the directory `path`, with a page cache of
    /// [`DEFAULT_CACHE_MIB`], and starts its writer thread.
    pub fn open(path: &Path) -> Result<SledStore, Error> {
        SledStore::open_with_cache(path, DEFAULT_CACHE_MIB)
    }

    /// [`SledStore::open`] with a page cache of `cache_mib` MiB.
    pub fn open_with_cache(path: &Path, cache_mib: u64) -> Result<SledStore, Error> {
        let db = ::sled::Config::new()
            .path(path)
            .cache_capacity(cache_mib.saturating_mul(1 << 20))
            .open()
            .map_err(engine_error)?;
        let tree = db.open_tree(TREE).map_err(engine_error)?;
        // What was recovered may sit only in the OS page cache (a killed process writes but does
        // not fsync): make it durable before any transaction can read it.
        db.flush().map_err(engine_error)?;
        let (sender, receiver) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared::default());
        let (to_flush, applied) = mpsc::channel();
        let flusher = Flusher {
            db,
            counters: Arc::clone(&counters),
            shared: Arc::clone(&shared),
        };
        let flusher = thread::Builder::new()
            .name("rxgate-store-flusher".into())
            .spawn(move || flusher.run(applied))
            .map_err(|e| Error::Io(format!("cannot start the store's flusher thread: {e}")))?;
        let writer = Writer {
            tree,
            counters: Arc::clone(&counters),
            shared,
            to_flush,
            flusher,
            handed_over: 0,
        };
        let handle = thread::Builder::new()
            .name("rxgate-store-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| Error::Io(format!("cannot start the store's writer thread: {e}")))?;
        Ok(SledStore {
            sender: RwLock::new(Some(sender)),
            writer_id: handle.thread().id(),
            writer: Mutex::new(Some(handle)),
            counters,
            lock_file: path.join(SLED_DATA_FILE),
        })
    }

    /// Stops accepting transactions, finishes those already queued, flushes, joins the writer
    /// thread and waits until sled has released the files, so that the directory can be opened
    /// again at once. Blocks for that long (call it from a blocking context). Idempotent: later
    /// calls, and the drop, do nothing. Returns the final flush's error, if any.
    pub fn close(&self) -> Result<(), Error> {
        drop(
            self.sender
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match handle {
            // Dropped by a transaction function on the writer thread itself: it cannot join
            // itself, and it exits on its own once the queue is drained.
            _ if thread::current().id() == self.writer_id => Ok(()),
            None => Ok(()),
            Some(handle) => {
                let flushed = handle.join().unwrap_or_else(|_| {
                    Err(Error::Engine("the store's writer thread panicked".into()))
                });
                flushed.and(wait_for_release(&self.lock_file))
            }
        }
    }
}

/// Waits until no one holds the lock sled takes on `file`. Dropping the last handle of a sled
/// database does not close its file at once: jobs of sled's IO thread pool may still hold it
/// (and its lock) for a moment, and opening the directory again before then fails.
fn wait_for_release(file: &Path) -> Result<(), Error> {
    let file = match File::open(file) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::Io(format!("{}: {e}", file.display()))),
    };
    let deadline = Instant::now() + RELEASE_TIMEOUT;
    loop {
        match file.try_lock() {
            // Dropping our handle releases the lock at once.
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Io(format!(
                    "the store's files are still in use {RELEASE_TIMEOUT:?} after closing"
                )));
            }
            Err(TryLockError::Error(e)) => return Err(Error::Io(e.to_string())),
        }
    }
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::error!(%error, "closing the store failed");
        }
    }
}

impl Store for SledStore {
    fn submit(&self, f: TxnFn) -> Answer {
        let (answer, receiver) = oneshot::channel();
        let sent = match &*self.sender.read().unwrap_or_else(PoisonError::into_inner) {
            Some(sender) => sender.send(Job { f, answer }).is_ok(),
            None => false,
        };
        if !sent {
            return Box::pin(std::future::ready(Err(Error::Closed)));
        }
        // A dropped answer sender means the writer stopped without answering.
        Box::pin(async move { receiver.await.unwrap_or(Err(Error::Closed)) })
    }

    fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            batches: c.batches.load(Ordering::Relaxed),
            transactions: c.transactions.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            flush_time: Duration::from_nanos(c.flush_nanos.load(Ordering::Relaxed)),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
            flush_latency: c.flush_latency.snapshot(),
            batch_size: c.batch_size.snapshot(),
        }
    }
}

/// What the writer and the flusher share.
#[derive(Default)]
struct Shared {
    /// Set when an apply or a flush failed: every later transaction gets this error.
    failed: OnceLock<Error>,
    /// The number of the last batch a flush has made durable (or that needed none).
    durable: AtomicU64,
}

/// The writer thread's state: it alone runs transactions, reads and writes the tree.
struct Writer {
    tree: ::sled::Tree,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
    to_flush: mpsc::Sender<Applied>,
    flusher: JoinHandle<Result<(), Error>>,
    /// The number of the last batch handed to the flusher.
    handed_over: u64,
}

/// A batch in the tree, handed from the writer to the flusher with its held-back answers.
struct Applied {
    number: u64,
    wrote: bool,
    /// Why its writes are not in the tree, if they are not.
    failed: Option<Error>,
    waiting: Vec<(Reply, Result<Outcome, Error>)>,
}

impl Writer {
    fn run(mut self, receiver: mpsc::Receiver<Job>) -> Result<(), Error> {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // `recv` keeps returning queued jobs after the store has closed the channel, so
        // everything submitted before `close` is run and answered.
        while let Ok(job) = receiver.recv() {
            batch.push(job);
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.run_batch(&mut batch);
        }
        // The flusher answers what it was handed, flushes a last time and stops.
        drop(self.to_flush);
        self.flusher
            .join()
            .unwrap_or_else(|_| Err(Error::Engine("the store's flusher thread panicked".into())))
    }

    /// Runs the batch's transactions in order, applies their writes to the tree and hands the
    /// answers to the flusher; answers at once those that saw only durable state.
    fn run_batch(&mut self, batch: &mut Vec<Job>) {
        let c = &self.counters;
        c.batches.fetch_add(1, Ordering::Relaxed);
        c.transactions
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        c.largest_batch
            .fetch_max(batch.len() as u64, Ordering::Relaxed);
        c.batch_size.observe(batch.len() as f64);

        // Answers held back until the writes they could have seen are durable.
        let mut waiting = Vec::new();
        // The writes the batch's transactions committed, not yet in the tree.
        let mut committed = Overlay::new();
        for job in batch.drain(..) {
            let result = match self.shared.failed.get() {
                Some(error) => Err(error.clone()),
                None => self.run_one(job.f, &mut committed),
            };
            let tree_durable = self.shared.durable.load(Ordering::Acquire) == self.handed_over;
            if committed.is_empty() && tree_durable {
                // Saw only durable state. The caller may be gone: fine.
                let _ = job.answer.send(result);
            } else {
                waiting.push((job.answer, result));
            }
        }
        if waiting.is_empty() {
            return;
        }
        self.handed_over += 1;
        let applied = Applied {
            number: self.handed_over,
            wrote: !committed.is_empty(),
            failed: self.apply(committed),
            waiting,
        };
        if let Err(mpsc::SendError(applied)) = self.to_flush.send(applied) {
            // The flusher is gone (it panicked): nothing more becomes durable.
            let error = Error::Engine("the store's flusher thread stopped".into());
            let _ = self.shared.failed.set(error.clone());
            for (answer, _) in applied.waiting {
                let _ = answer.send(Err(error.clone()));
            }
        }
    }

    /// Applies a batch's committed writes to the tree as one sled batch; the error, if that
    /// failed (or the store had failed before).
    fn apply(&self, committed: Overlay) -> Option<Error> {
        if let Some(error) = self.shared.failed.get() {
            return Some(error.clone());
        }
        if committed.is_empty() {
            return None;
        }
        let mut writes = ::sled::Batch::default();
        for (key, value) in committed {
            match value {
                Some(value) => writes.insert(key, value),
                None => writes.remove(key),
            }
        }
        self.tree
            .apply_batch(writes)
            .err()
            .map(|e| fail(&self.shared, e))
    }

    /// Runs one transaction function over the tree and the batch's `committed` writes, and
    /// adds its own writes to them if it returned `Ok`.
    fn run_one(&mut self, f: TxnFn, committed: &mut Overlay) -> Result<Outcome, Error> {
        let mut txn = SledTxn {
            tree: &self.tree,
            committed,
            writes: Overlay::new(),
        };
        // The overlay is discarded after a panic, so no broken state can be observed.
        let outcome = catch_unwind(AssertUnwindSafe(|| f(&mut txn)))
            .map_err(|payload| Error::Panicked(panic_message(payload.as_ref())))?;
        let writes = txn.writes;
        if outcome.is_ok() && !writes.is_empty() {
            committed.extend(writes);
            self.counters.commits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(outcome)
    }
}

/// Records a failed apply or flush: the store refuses every later transaction with it.
fn fail(shared: &Shared, e: ::sled::Error) -> Error {
    let error = engine_error(e);
    tracing::error!(%error, "store write failed: refusing further transactions");
    let _ = shared.failed.set(error.clone());
    error
}

/// The flusher thread's state: it alone flushes, and answers what waited for a flush.
struct Flusher {
    db: ::sled::Db,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
}

impl Flusher {
    fn run(self, applied: mpsc::Receiver<Applied>) -> Result<(), Error> {
        while let Ok(first) = applied.recv() {
            let mut group = vec![first];
            group.extend(applied.try_iter());
            self.flush(group);
        }
        match self.shared.failed.get() {
            Some(error) => Err(error.clone()),
            None => self.db.flush().map(drop).map_err(engine_error),
        }
    }

    /// Flushes once for every batch in the tree so far (those of `group` among them), then
    /// answers them in order. A group that wrote nothing needs no flush: every batch before
    /// it was answered after its own.
    fn flush(&self, group: Vec<Applied>) {
        let flush_failed = match self.shared.failed.get() {
            Some(error) => Some(error.clone()),
            None if group.iter().any(|a| a.wrote) => {
                let started = Instant::now();
                let flushed = self.db.flush();
                self.counted_flush(started.elapsed());
                flushed.err().map(|e| fail(&self.shared, e))
            }
            None => None,
        };
        let last = group.last().map_or(0, |a| a.number);
        self.shared.durable.store(last, Ordering::Release);
        for applied in group {
            let failed = applied.failed.or_else(|| flush_failed.clone());
            for (answer, result) in applied.waiting {
                let result = match &failed {
                    Some(error) => Err(error.clone()),
                    None => result,
                };
                let _ = answer.send(result);
            }
        }
    }

    fn counted_flush(&self, took: Duration) {
        let c = &self.counters;
        c.flushes.fetch_add(1, Ordering::Relaxed);
        c.flush_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        c.flush_latency.observe_duration(took);
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Writes by key as the tree keys them (table tag + key); `None` = deleted.
type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A transaction on the writer thread: the tree, the writes of this batch's earlier
/// transactions, and this transaction's own, each shadowing the ones before.
struct SledTxn<'a> {
    tree: &'a ::sled::Tree,
    committed: &'a Overlay,
    writes: Overlay,
}

impl SledTxn<'_> {
    /// The overlays over the tree, the newest first.
    fn layers(&self) -> impl Iterator<Item = &Overlay> {
        [&self.writes, self.committed].into_iter()
    }
}

fn tree_key(table: Table, key: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(key.len() + 1);
    full.push(tag(table));
    full.extend_from_slice(key);
    full
}

/// The smallest key greater than every key starting with `prefix`, which starts with a table
/// tag (never 0xFF), so one always exists.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            break;
        }
    }
    end
}

impl SledTxn<'_> {
    /// The entries in `[lo, hi)` of the tree with the overlays merged in, at most `limit`, with
    /// the table tag removed from the keys.
    fn scan(&self, lo: Vec<u8>, hi: Vec<u8>, limit: usize) -> Result<Vec<Entry>, Error> {
        let mut out = Vec::new();
        if limit == 0 || lo >= hi {
            return Ok(out);
        }
        let bounds = (
            Bound::Included(lo.as_slice()),
            Bound::Excluded(hi.as_slice()),
        );
        let mut base = self.tree.range(lo.as_slice()..hi.as_slice());
        let mut layers: Vec<_> = self
            .layers()
            .map(|o| o.range::<[u8], _>(bounds).peekable())
            .collect();
        let mut next_base = base.next().transpose().map_err(engine_error)?;
        while out.len() < limit {
            let heads = layers
                .iter_mut()
                .filter_map(|l| l.peek().map(|(k, _)| k.as_slice()));
            let Some(key) = heads
                .chain(next_base.as_ref().map(|(k, _)| k.as_ref()))
                .min()
                .map(<[u8]>::to_vec)
            else {
                break;
            };
            // Every source at this key moves on; the newest one's value (or deletion) counts.
            let stored = next_base.take_if(|(k, _)| k.as_ref() == key.as_slice());
            if stored.is_some() {
                next_base = base.next().transpose().map_err(engine_error)?;
            }
            let mut newest = None;
            for layer in &mut layers {
                if let Some((_, written)) = layer.next_if(|(k, _)| k.as_slice() == key.as_slice()) {
                    newest = newest.or(Some(written));
                }
            }
            let value = match newest {
                Some(written) => written.clone(),
                None => stored.map(|(_, v)| v.to_vec()),
            };
            if let Some(value) = value {
                out.push((key[1..].to_vec(), value));
            }
        }
        Ok(out)
    }
}

impl Txn for SledTxn<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let key = tree_key(table, key);
        match self.layers().find_map(|o| o.get(&key)) {
            Some(written) => Ok(written.clone()),
            None => Ok(self
                .tree
                .get(&key)
                .map_err(engine_error)?
                .map(|v| v.to_vec())),
        }
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) {
        self.writes
            .insert(tree_key(table, key), Some(value.to_vec()));
    }

    fn delete(&mut self, table: Table, key: &[u8]) {
        self.writes.insert(tree_key(table, key), None);
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, Error> {
        let lo = tree_key(table, prefix);
        let hi = prefix_end(&lo);
        self.scan(lo, hi, limit)
    }

    fn scan_range(
        &self,
        table: Table,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, Error> {
        self.scan(tree_key(table, start), tree_key(table, end), limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_distinct_and_never_ff() {
        let mut tags: Vec<u8> = Table::ALL.iter().map(|t| tag(*t)).collect();
        tags.sort_unstable();
        tags.dedup();
        assert_eq!(tags.len(), Table::ALL.len());
        assert!(tags.iter().all(|t| *t != u8::MAX));
    }

    #[test]
    fn prefix_end_skips_trailing_ff() {
        assert_eq!(prefix_end(&[3, 1, 0xFF, 0xFF]), vec![3, 2]);
        assert_eq!(prefix_end(&[3]), vec![4]);
        assert_eq!(prefix_end(&[3, 0xFF]), vec![4]);
    }
}
