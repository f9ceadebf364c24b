//! The embedded store behind [`Store`]: one writer thread, group commit with the fsync on a
//! flusher thread, an answer only after fsync, over an ordered key-value engine ([`Engine`]:
//! fjall by default, sled for stores created by earlier versions). It must not depend on the
//! domain, the protocol types or the async runtime (tokio's channel is used only to answer).
//!
//! # Design
//!
//! - **One key space, one prefix byte per table.** Every [`Table`] is a one-byte key prefix in
//!   a single ordered key space of the engine, so a write set, whatever tables it spans, is one
//!   engine batch, which the engine recovers all-or-nothing after a crash. The prefix bytes are
//!   part of the on-disk format: never renumber them.
//! - **One writer thread runs every transaction and every read, and writes the engine.**
//!   [`EmbeddedStore::submit`] sends the boxed transaction function over a std channel to a
//!   dedicated thread. Transactions therefore run strictly one after another, in submission
//!   order, so a "check, then write" inside one function needs no compare-and-set. A function's
//!   writes go to an in-memory overlay; on `Ok` they join the batch's overlay of committed
//!   writes, on `Err` or panic (caught with `catch_unwind`) they are dropped, so nothing is
//!   written. Reads and scans merge the function's overlay over the batch's over the engine.
//! - **Group commit.** When the thread wakes it takes every queued transaction, up to
//!   [`MAX_BATCH`], runs them one after another (each sees the previous ones' writes, through
//!   the batch's overlay), applies the batch's committed writes as one engine batch and hands
//!   the held-back answers to the flusher thread, which makes the engine durable (write +
//!   fsync) once for every batch handed to it since its last flush, and only then answers.
//!   Under load one apply and one fsync cover many transactions. A crash keeps all of a batch
//!   or none of it, so each transaction's writes stay all-or-nothing.
//! - **The fsync off the writer, the engine's writes on it.** While the flusher waits for the
//!   disk, the writer runs and applies the next batch. The writer applies its batches itself:
//!   sled's `apply_batch` takes a global lock that every read then waits for, so a second
//!   thread applying (measured) kept the writer's reads waiting rather than running beside them.
//! - **Nothing non-durable is revealed.** Only the writer thread reads, so the only non-durable
//!   state anyone can observe is that of the batches applied and not yet flushed. The flusher
//!   answers in batch order, each batch after a flush that began once it was applied, so
//!   every transaction that could have seen such a write (including read-only and rolled-back
//!   ones, whose results may carry what they read) is answered after the flush that made it
//!   durable. A transaction that ran while every applied batch was durable saw only durable
//!   state (`open` makes what the engine recovered durable), so it is answered at once, and a
//!   group of batches without writes needs no flush at all.
//! - **Failures.** If applying a batch or the flush fails, every transaction of the batch still
//!   waiting gets the error (never an `Ok` for data that may not be durable), and the store
//!   then refuses all further transactions with that error: after a failed fsync the state on
//!   disk is unknown, and writes applied in memory but not durable must not be built upon.
//!   Reopening recovers the last durable state.
//! - **Shutdown.** [`EmbeddedStore::close`] (also run on drop) closes the channel; the writer
//!   finishes every transaction already queued, lets the flusher answer, flush and stop, and
//!   both are joined with the engine; then `close` waits until the engine has let go of its
//!   files (sled's IO threads may hold its lock a moment longer), so the directory can be
//!   opened again at once. Later submissions are answered [`Error::Closed`].

use std::collections::BTreeMap;
use std::fmt;
use std::mem;
use std::ops::Bound;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::oneshot;

use super::fjall::FjallEngine;
use super::sled::SledEngine;
use super::{
    Answer, Entry, Error, Outcome, Savepoint, Savepoints, Snapshot, SnapshotAnswer, Stats, Store,
    Table, Txn, TxnFn,
};
use crate::metrics::{Histogram, LATENCY_BUCKETS, SIZE_BUCKETS};

/// The engine's cache of [`EmbeddedStore::open`], in MiB.
pub const DEFAULT_CACHE_MIB: u64 = 128;

/// The most transactions run between two flushes.
pub const MAX_BATCH: usize = 1024;

/// The ordered key space under the store: what its writer and flusher threads need of an
/// engine. Only the writer calls `get`, `range`, `apply` and `snapshot`; only the flusher calls
/// `flush`.
pub(crate) trait Engine: Send + Sync + 'static {
    /// The value of `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;

    /// The entries whose keys are in `[lo, hi)`, in key order.
    fn range<'a>(
        &'a self,
        lo: &[u8],
        hi: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, Error>> + 'a>;

    /// Applies `writes` (`None` = delete) all together: visible at once, durable at the next
    /// `flush`, and after a crash either all there or none.
    fn apply(&self, writes: Overlay) -> Result<(), Error>;

    /// Makes every write applied so far durable (the fsync).
    fn flush(&self) -> Result<(), Error>;

    /// A read-only view of every write applied so far, unchanged by later ones;
    /// [`Error::Unsupported`] from an engine that cannot keep one.
    fn snapshot(&self) -> Result<Box<dyn EngineSnapshot>, Error>;
}

/// An engine's read-only view of its key space at one point ([`Engine::snapshot`]).
pub(crate) trait EngineSnapshot: Send {
    /// The entries whose keys are in `[lo, hi)`, in key order.
    fn range(&self, lo: &[u8], hi: &[u8]) -> Box<dyn Iterator<Item = Result<Entry, Error>> + '_>;
}

/// An engine nothing writes, read as it stands ([`EmbeddedStore::read_stopped`]).
struct Stopped<E>(E);

impl<E: Engine> EngineSnapshot for Stopped<E> {
    fn range(&self, lo: &[u8], hi: &[u8]) -> Box<dyn Iterator<Item = Result<Entry, Error>> + '_> {
        self.0.range(lo, hi)
    }
}

/// An engine's snapshot read by table: the tag added to the bounds, and taken off the keys; a
/// read that finds stored bytes corrupt is counted and logged as the store's own reads are
/// ([`noted`]), so that a backup that meets damage raises the same alert.
struct Tables {
    engine: Box<dyn EngineSnapshot>,
    counters: Arc<Counters>,
}

impl Snapshot for Tables {
    fn entries(&self, table: Table) -> Box<dyn Iterator<Item = Result<Entry, Error>> + '_> {
        let lo = [tag(table)];
        let hi = prefix_end(&lo);
        let mut last = lo.to_vec();
        Box::new(self.engine.range(&lo, &hi).map(move |entry| {
            let (key, value) = noted(&self.counters.corrupt_reads, Place::After(&last), entry)?;
            let entry = (key[1..].to_vec(), value);
            last = key;
            Ok(entry)
        }))
    }
}

/// Starts one of the store's threads, named `rxgate-store-{role}`.
pub(super) fn spawn<T: Send + 'static>(
    role: &str,
    run: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, Error> {
    thread::Builder::new()
        .name(format!("rxgate-store-{role}"))
        .spawn(run)
        .map_err(|e| Error::Io(format!("cannot start the store's {role} thread: {e}")))
}

/// The storage engines a store can be kept in. The data folder's files say which one holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// fjall, a log-structured merge tree: the engine of new stores.
    Fjall,
    /// sled 0.34: the engine of stores created by rxgate before fjall.
    Sled,
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EngineKind::Fjall => "fjall",
            EngineKind::Sled => "sled",
        })
    }
}

impl EngineKind {
    /// The engine whose files are in `path`, if any.
    pub fn found_in(path: &Path) -> Result<Option<EngineKind>, Error> {
        let fjall = super::fjall::holds_store(path);
        let sled = super::sled::holds_store(path);
        match (fjall, sled) {
            (true, true) => Err(Error::Engine(format!(
                "{} holds the files of both a fjall and a sled store",
                path.display()
            ))),
            (true, false) => Ok(Some(EngineKind::Fjall)),
            (false, true) => Ok(Some(EngineKind::Sled)),
            (false, false) => Ok(None),
        }
    }
}

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
        Table::Lockouts => 16,
        Table::AuditChain => 17,
    }
}

/// Where a transaction's answer goes.
type Reply = oneshot::Sender<Result<Outcome, Error>>;

/// A queued transaction (or snapshot) and where to send its answer.
struct Job {
    work: Work,
    answer: Reply,
}

/// What a job asks of the writer.
enum Work {
    /// Run the function in a transaction.
    Run(TxnFn),
    /// Take a snapshot of the engine once the writes of every earlier job are in it, and
    /// answer it (boxed as a `Box<dyn Snapshot>`) once they are durable.
    Snapshot,
}

/// The counters behind [`Stats`], updated by the writer and the flusher threads.
struct Counters {
    batches: AtomicU64,
    transactions: AtomicU64,
    commits: AtomicU64,
    flushes: AtomicU64,
    flush_nanos: AtomicU64,
    largest_batch: AtomicU64,
    corrupt_reads: AtomicU64,
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
            corrupt_reads: AtomicU64::new(0),
            flush_latency: Histogram::new(LATENCY_BUCKETS),
            batch_size: Histogram::new(SIZE_BUCKETS),
        }
    }
}

/// The embedded [`Store`]. Cheap to share behind an `Arc`; closing it (or dropping it)
/// finishes queued work, flushes and joins the writer thread.
pub struct EmbeddedStore {
    sender: RwLock<Option<mpsc::Sender<Job>>>,
    writer: Mutex<Option<JoinHandle<Result<(), Error>>>>,
    writer_id: ThreadId,
    counters: Arc<Counters>,
    /// Shared with the writer and the flusher, to tell whether a write or a flush failed.
    shared: Arc<Shared>,
    engine: EngineKind,
    /// A file the engine's own threads may still hold locked for a moment after closing.
    lock_file: Option<PathBuf>,
}

impl EmbeddedStore {
    /// Opens (or creates) the store in the directory `path` with a cache of
    /// [`DEFAULT_CACHE_MIB`], in the engine its files name (fjall for a new store), and starts
    /// its writer thread.
    pub fn open(path: &Path) -> Result<EmbeddedStore, Error> {
        EmbeddedStore::open_with(path, None, DEFAULT_CACHE_MIB)
    }

    /// [`EmbeddedStore::open`] with a cache of `cache_mib` MiB and, if `engine` is given, that
    /// engine: a new store is created in it, and an existing store kept in another engine is
    /// refused rather than opened empty beside it.
    pub fn open_with(
        path: &Path,
        engine: Option<EngineKind>,
        cache_mib: u64,
    ) -> Result<EmbeddedStore, Error> {
        super::unfinished::refuse(path)?;
        EmbeddedStore::open_unchecked(path, engine, cache_mib)
    }

    /// Creates the store an import loads, in `path`, which [`super::unfinished::begin`] has
    /// marked first (so that a kill at any point after leaves a folder every opening refuses):
    /// the one opening that does not refuse that mark.
    pub fn create_to_import(path: &Path, engine: EngineKind) -> Result<EmbeddedStore, Error> {
        EmbeddedStore::open_unchecked(path, Some(engine), DEFAULT_CACHE_MIB)
    }

    /// [`EmbeddedStore::open_with`] whatever an unfinished import left.
    fn open_unchecked(
        path: &Path,
        engine: Option<EngineKind>,
        cache_mib: u64,
    ) -> Result<EmbeddedStore, Error> {
        let kind = match (EngineKind::found_in(path)?, engine) {
            (Some(found), Some(wanted)) if found != wanted => {
                return Err(Error::Engine(format!(
                    "{} holds a {found} store, not a {wanted} one",
                    path.display()
                )));
            }
            (found, wanted) => found.or(wanted).unwrap_or(EngineKind::Fjall),
        };
        let cache_bytes = cache_mib.saturating_mul(1 << 20);
        match kind {
            EngineKind::Fjall => {
                let engine = FjallEngine::open(path, cache_bytes)?;
                EmbeddedStore::start(Arc::new(engine), kind, None)
            }
            EngineKind::Sled => {
                let engine = SledEngine::open(path, cache_bytes)?;
                let lock_file = Some(super::sled::lock_file(path));
                EmbeddedStore::start(Arc::new(engine), kind, lock_file)
            }
        }
    }

    fn start(
        engine: Arc<dyn Engine>,
        kind: EngineKind,
        lock_file: Option<PathBuf>,
    ) -> Result<EmbeddedStore, Error> {
        // What was recovered may sit only in the OS page cache (a killed process writes but does
        // not fsync): make it durable before any transaction can read it.
        engine.flush()?;
        let (sender, receiver) = mpsc::channel();
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared::default());
        let (to_flush, applied) = mpsc::channel();
        let flusher = Flusher {
            engine: Arc::clone(&engine),
            counters: Arc::clone(&counters),
            shared: Arc::clone(&shared),
        };
        let flusher = spawn("flusher", move || flusher.run(applied))?;
        let writer = Writer {
            engine,
            counters: Arc::clone(&counters),
            shared: Arc::clone(&shared),
            to_flush,
            flusher,
            handed_over: 0,
        };
        let handle = spawn("writer", move || writer.run(receiver))?;
        Ok(EmbeddedStore {
            sender: RwLock::new(Some(sender)),
            writer_id: handle.thread().id(),
            writer: Mutex::new(Some(handle)),
            counters,
            shared,
            engine: kind,
            lock_file,
        })
    }

    /// The existing store in `path`, opened for reading alone, without a writer: nothing else
    /// can write it while the view lives (the engine's lock keeps a gateway out, and
    /// [`Error::InUse`] says one holds it now), so its plain reads are a consistent view, in
    /// either engine. How a stopped store is exported.
    pub fn read_stopped(path: &Path) -> Result<Box<dyn Snapshot>, Error> {
        super::unfinished::refuse(path)?;
        let engine: Box<dyn EngineSnapshot> = match EngineKind::found_in(path)? {
            None => {
                return Err(Error::Engine(format!("{} holds no store", path.display())));
            }
            Some(EngineKind::Fjall) => {
                Box::new(Stopped(FjallEngine::open(path, DEFAULT_CACHE_MIB << 20)?))
            }
            Some(EngineKind::Sled) => {
                Box::new(Stopped(SledEngine::open(path, DEFAULT_CACHE_MIB << 20)?))
            }
        };
        let counters = Arc::new(Counters::default());
        Ok(Box::new(Tables { engine, counters }))
    }

    /// The engine the store is kept in.
    pub fn engine(&self) -> EngineKind {
        self.engine
    }

    /// Stops accepting transactions, finishes those already queued, flushes, joins the writer
    /// thread and waits until the engine has released the files, so that the directory can be
    /// opened again at once. Blocks for that long (call it from a blocking context).
    /// Idempotent: later calls, and the drop, do nothing. Returns the final flush's error, if
    /// any.
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
                let released = match &self.lock_file {
                    Some(file) => super::sled::wait_for_release(file),
                    None => Ok(()),
                };
                flushed.and(released)
            }
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        if let Err(error) = self.close() {
            tracing::error!(%error, "closing the store failed");
        }
    }
}

impl EmbeddedStore {
    /// Queues `work` to the writer; the receiver of its answer, or `None` once closed.
    fn queue(&self, work: Work) -> Option<oneshot::Receiver<Result<Outcome, Error>>> {
        let (answer, receiver) = oneshot::channel();
        match &*self.sender.read().unwrap_or_else(PoisonError::into_inner) {
            Some(sender) => sender
                .send(Job { work, answer })
                .is_ok()
                .then_some(receiver),
            None => None,
        }
    }
}

impl Store for EmbeddedStore {
    fn submit(&self, f: TxnFn) -> Answer {
        let Some(receiver) = self.queue(Work::Run(f)) else {
            return Box::pin(std::future::ready(Err(Error::Closed)));
        };
        // A dropped answer sender means the writer stopped without answering.
        Box::pin(async move { receiver.await.unwrap_or(Err(Error::Closed)) })
    }

    /// Taken by the writer in submission order, after applying the writes queued before it,
    /// and handed out by the flusher once they are durable; read on the caller's thread.
    fn snapshot(&self) -> SnapshotAnswer {
        let Some(receiver) = self.queue(Work::Snapshot) else {
            return Box::pin(std::future::ready(Err(Error::Closed)));
        };
        Box::pin(async move {
            let taken = receiver.await.unwrap_or(Err(Error::Closed))?;
            let snapshot = taken
                .ok()
                .and_then(|s| s.downcast::<Box<dyn Snapshot>>().ok());
            snapshot.map(|s| *s).ok_or_else(|| {
                Error::Engine("the writer answered a snapshot with another value".into())
            })
        })
    }

    fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            batches: c.batches.load(Ordering::Relaxed),
            transactions: c.transactions.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            retries: 0,
            flushes: c.flushes.load(Ordering::Relaxed),
            flush_time: Duration::from_nanos(c.flush_nanos.load(Ordering::Relaxed)),
            largest_batch: c.largest_batch.load(Ordering::Relaxed),
            corrupt_reads: c.corrupt_reads.load(Ordering::Relaxed),
            flush_latency: c.flush_latency.snapshot(),
            batch_size: c.batch_size.snapshot(),
            pool: super::PoolStats::default(),
        }
    }

    fn failure(&self) -> Option<Error> {
        if let Some(error) = self.shared.failed.get() {
            return Some(error.clone());
        }
        match &*self.writer.lock().unwrap_or_else(PoisonError::into_inner) {
            None => Some(Error::Closed),
            // The writer only returns once the store is closed: finished early, it panicked.
            Some(writer) if writer.is_finished() => {
                Some(Error::Engine("the store's writer thread stopped".into()))
            }
            Some(_) => None,
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

/// The writer thread's state: it alone runs transactions, reads and writes the engine.
struct Writer {
    engine: Arc<dyn Engine>,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
    to_flush: mpsc::Sender<Applied>,
    flusher: JoinHandle<Result<(), Error>>,
    /// The number of the last batch handed to the flusher.
    handed_over: u64,
}

/// A batch applied to the engine, handed from the writer to the flusher with its held-back answers.
struct Applied {
    number: u64,
    wrote: bool,
    /// Why its writes are not in the engine, if they are not.
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

    /// Runs the batch's transactions in order, applies their writes to the engine and hands the
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
        // The writes the batch's transactions committed, not yet in the engine.
        let mut committed = Overlay::new();
        for job in batch.drain(..) {
            let result = match (self.shared.failed.get(), job.work) {
                (Some(error), _) => Err(error.clone()),
                (None, Work::Run(f)) => self.run_one(f, &mut committed),
                (None, Work::Snapshot) => {
                    // The snapshot must hold every write before it: those of the batch so far
                    // go to the engine (and their answers to the flusher) first.
                    self.hand_over(mem::take(&mut committed), mem::take(&mut waiting));
                    self.take_snapshot()
                }
            };
            let engine_durable = self.shared.durable.load(Ordering::Acquire) == self.handed_over;
            if committed.is_empty() && engine_durable {
                // Saw only durable state. The caller may be gone: fine.
                let _ = job.answer.send(result);
            } else {
                waiting.push((job.answer, result));
            }
        }
        self.hand_over(committed, waiting);
    }

    /// The engine's snapshot, as a snapshot of the store's tables.
    fn take_snapshot(&self) -> Result<Outcome, Error> {
        let tables: Box<dyn Snapshot> = Box::new(Tables {
            engine: self.engine.snapshot()?,
            counters: Arc::clone(&self.counters),
        });
        Ok(Ok(Box::new(tables)))
    }

    /// Applies `committed` to the engine and hands the answers `waiting` for it (or for
    /// earlier batches) to the flusher, to be sent once durable.
    fn hand_over(&mut self, committed: Overlay, waiting: Vec<(Reply, Result<Outcome, Error>)>) {
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

    /// Applies a batch's committed writes to the engine as one batch; the error, if that
    /// failed (or the store had failed before).
    fn apply(&self, committed: Overlay) -> Option<Error> {
        if let Some(error) = self.shared.failed.get() {
            return Some(error.clone());
        }
        if committed.is_empty() {
            return None;
        }
        self.engine
            .apply(committed)
            .err()
            .map(|e| fail(&self.shared, e))
    }

    /// Runs one transaction function over the engine and the batch's `committed` writes, and
    /// adds its own writes to them if it returned `Ok`.
    fn run_one(&mut self, f: TxnFn, committed: &mut Overlay) -> Result<Outcome, Error> {
        let mut txn = EngineTxn {
            engine: self.engine.as_ref(),
            corrupt_reads: &self.counters.corrupt_reads,
            committed,
            writes: Overlay::new(),
            savepoints: Savepoints::new(),
        };
        // The overlay is discarded after a panic, so no broken state can be observed.
        let outcome = catch_unwind(AssertUnwindSafe(|| f(&mut txn))).map_err(|payload| {
            Error::Panicked(crate::panics::message(payload.as_ref()).to_owned())
        })?;
        let writes = txn.writes;
        if outcome.is_ok() && !writes.is_empty() {
            committed.extend(writes);
            self.counters.commits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(outcome)
    }
}

/// Records a failed apply or flush: the store refuses every later transaction with it.
fn fail(shared: &Shared, error: Error) -> Error {
    tracing::error!(%error, "store write failed: refusing further transactions");
    let _ = shared.failed.set(error.clone());
    error
}

/// The flusher thread's state: it alone flushes, and answers what waited for a flush.
struct Flusher {
    engine: Arc<dyn Engine>,
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
            None => self.engine.flush(),
        }
    }

    /// Flushes once for every batch applied so far (those of `group` among them), then
    /// answers them in order. A group that wrote nothing needs no flush: every batch before
    /// it was answered after its own.
    fn flush(&self, group: Vec<Applied>) {
        let flush_failed = match self.shared.failed.get() {
            Some(error) => Some(error.clone()),
            None if group.iter().any(|a| a.wrote) => {
                let started = Instant::now();
                let flushed = self.engine.flush();
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

/// Writes by key as the engine keys them (table tag + key); `None` = deleted.
pub(crate) type Overlay = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A transaction on the writer thread: the engine, the writes of this batch's earlier
/// transactions, and this transaction's own, each shadowing the ones before.
struct EngineTxn<'a> {
    engine: &'a dyn Engine,
    /// Counts the reads that found stored bytes corrupt ([`EngineTxn::noted`]).
    corrupt_reads: &'a AtomicU64,
    committed: &'a Overlay,
    writes: Overlay,
    savepoints: Savepoints<Overlay>,
}

impl EngineTxn<'_> {
    /// The overlays over the engine, the newest first.
    fn layers(&self) -> impl Iterator<Item = &Overlay> {
        [&self.writes, self.committed].into_iter()
    }
}

/// Passes on what the engine answered a read at `place`; stored bytes found corrupt (a
/// failed checksum) are counted (`rxgate_store_corrupt_reads_total`, for an alert) and
/// logged with the table and the key, here, once per read, rather than left to the caller,
/// which sees only an internal error. The key is shown in hex, but not in the tables whose
/// keys hold a patient key.
fn noted<T>(
    corrupt_reads: &AtomicU64,
    place: Place<'_>,
    read: Result<T, Error>,
) -> Result<T, Error> {
    if let Err(error @ Error::Corrupt(_)) = &read {
        corrupt_reads.fetch_add(1, Ordering::Relaxed);
        let (Place::At(key) | Place::After(key)) = place;
        let table = table_of(key);
        let shown = match table {
            Some(Table::ByExchange | Table::ByPatient | Table::Medications | Table::Clinical) => {
                String::from("(holds a patient key: not shown)")
            }
            _ => super::hex(key.get(1..).unwrap_or_default()),
        };
        let table = table.map_or_else(|| String::from("unknown"), |t| format!("{t:?}"));
        let place = match place {
            Place::At(_) => "the key",
            Place::After(_) => "at or after the key",
        };
        tracing::error!(
            %table, key = %shown, %place, %error,
            "a stored record is corrupt: run `rxgate store verify` on a stopped copy, and \
             restore a backup"
        );
    }
    read
}

/// Where a read went: one engine key, or on from one (a scan's start, or its last key read).
#[derive(Clone, Copy)]
enum Place<'a> {
    At(&'a [u8]),
    After(&'a [u8]),
}

/// The table an engine key is in, by its tag.
fn table_of(key: &[u8]) -> Option<Table> {
    let tag_byte = *key.first()?;
    Table::ALL.into_iter().find(|t| tag(*t) == tag_byte)
}

fn engine_key(table: Table, key: &[u8]) -> Vec<u8> {
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

impl EngineTxn<'_> {
    /// The entries in `[lo, hi)` of the engine with the overlays merged in, at most `limit`, with
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
        let mut base = self.engine.range(&lo, &hi);
        let mut layers: Vec<_> = self
            .layers()
            .map(|o| o.range::<[u8], _>(bounds).peekable())
            .collect();
        let mut next_base = noted(
            self.corrupt_reads,
            Place::After(&lo),
            base.next().transpose(),
        )?;
        while out.len() < limit {
            let heads = layers
                .iter_mut()
                .filter_map(|l| l.peek().map(|(k, _)| k.as_slice()));
            let Some(key) = heads
                .chain(next_base.as_ref().map(|(k, _)| k.as_slice()))
                .min()
                .map(<[u8]>::to_vec)
            else {
                break;
            };
            // Every source at this key moves on; the newest one's value (or deletion) counts.
            let stored = next_base.take_if(|(k, _)| k.as_slice() == key.as_slice());
            if stored.is_some() {
                next_base = noted(
                    self.corrupt_reads,
                    Place::After(&key),
                    base.next().transpose(),
                )?;
            }
            let mut newest = None;
            for layer in &mut layers {
                if let Some((_, written)) = layer.next_if(|(k, _)| k.as_slice() == key.as_slice()) {
                    newest = newest.or(Some(written));
                }
            }
            let value = match newest {
                Some(written) => written.clone(),
                None => stored.map(|(_, v)| v),
            };
            if let Some(value) = value {
                out.push((key[1..].to_vec(), value));
            }
        }
        Ok(out)
    }
}

impl Txn for EngineTxn<'_> {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let key = engine_key(table, key);
        match self.layers().find_map(|o| o.get(&key)) {
            Some(written) => Ok(written.clone()),
            None => noted(self.corrupt_reads, Place::At(&key), self.engine.get(&key)),
        }
    }

    fn put(&mut self, table: Table, key: &[u8], value: &[u8]) {
        self.writes
            .insert(engine_key(table, key), Some(value.to_vec()));
    }

    fn delete(&mut self, table: Table, key: &[u8]) {
        self.writes.insert(engine_key(table, key), None);
    }

    fn savepoint(&mut self) -> Savepoint {
        self.savepoints.take(&self.writes)
    }

    fn rollback_to(&mut self, savepoint: Savepoint) {
        self.savepoints.roll_back(savepoint, &mut self.writes);
    }

    fn scan_prefix(&self, table: Table, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, Error> {
        let lo = engine_key(table, prefix);
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
        self.scan(engine_key(table, start), engine_key(table, end), limit)
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

    /// An engine that keeps nothing; when `broken`, its writes fail as a full disk makes them.
    struct Disk {
        broken: bool,
    }

    impl Engine for Disk {
        fn get(&self, _: &[u8]) -> Result<Option<Vec<u8>>, Error> {
            Ok(None)
        }
        fn range<'a>(
            &'a self,
            _: &[u8],
            _: &[u8],
        ) -> Box<dyn Iterator<Item = Result<Entry, Error>> + 'a> {
            Box::new(std::iter::empty())
        }
        fn apply(&self, _: Overlay) -> Result<(), Error> {
            match self.broken {
                true => Err(Error::Io("no space left on device".into())),
                false => Ok(()),
            }
        }
        fn flush(&self) -> Result<(), Error> {
            Ok(())
        }
        fn snapshot(&self) -> Result<Box<dyn EngineSnapshot>, Error> {
            Err(Error::Unsupported("a disk that keeps nothing".into()))
        }
    }

    fn on(disk: Disk) -> EmbeddedStore {
        EmbeddedStore::start(Arc::new(disk), EngineKind::Fjall, None).unwrap()
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_from_then_on() {
        let store = on(Disk { broken: true });
        assert_eq!(store.failure(), None, "a store that has not failed yet");
        let read = store.transact(|tx| tx.get(Table::Meta, b"k")).await;
        assert_eq!(read, Ok(Ok(None)));
        assert_eq!(store.failure(), None, "reads write nothing");

        let write = store
            .transact(|tx| {
                tx.put(Table::Meta, b"k", b"v");
                Ok::<_, Error>(())
            })
            .await;
        let broken = Error::Io("no space left on device".into());
        assert_eq!(write, Err(broken.clone()));
        assert_eq!(store.failure(), Some(broken.clone()));
        assert_eq!(store.close(), Err(broken.clone()));
        assert_eq!(
            store.failure(),
            Some(broken),
            "the first failure stays the reason"
        );
    }

    #[test]
    fn a_closed_store_reports_it() {
        let store = on(Disk { broken: false });
        assert_eq!(store.failure(), None);
        store.close().unwrap();
        assert_eq!(store.failure(), Some(Error::Closed));
    }

    #[tokio::test]
    async fn a_rollback_to_a_savepoint_keeps_only_the_writes_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let seen = store
            .transact(|tx| {
                tx.put(Table::Meta, b"before", b"1");
                let outer = tx.savepoint();
                tx.put(Table::Meta, b"between", b"2");
                tx.put(Table::Meta, b"before", b"changed");
                let inner = tx.savepoint();
                tx.delete(Table::Meta, b"between");
                tx.rollback_to(inner);
                let between = tx.get(Table::Meta, b"between")?;
                tx.rollback_to(outer);
                tx.put(Table::Meta, b"after", b"3");
                // The outer savepoint outlives a rollback to it; the inner one did not.
                tx.rollback_to(inner);
                Ok::<_, Error>(between)
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            seen,
            Some(b"2".to_vec()),
            "the inner rollback undid the delete"
        );
        let stored = store
            .transact(|tx| {
                ["before", "between", "after"]
                    .map(|k| tx.get(Table::Meta, k.as_bytes()))
                    .into_iter()
                    .collect::<Result<Vec<_>, Error>>()
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, [Some(b"1".to_vec()), None, Some(b"3".to_vec())]);
    }

    /// A snapshot holds what was submitted before it, in the same batch too, and nothing
    /// submitted after, however long it is read.
    #[tokio::test]
    async fn a_snapshot_holds_what_came_before_it_and_nothing_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        // The writer waits in this transaction until the three below are queued: they run in
        // one batch.
        let (release, released) = mpsc::channel::<()>();
        let released = Mutex::new(released); // a transaction function is Sync; a receiver is not
        let held = store.transact(move |_| {
            let released = released.lock().unwrap();
            released.recv().map_err(|_| Error::Closed)
        });
        let put = |key: &'static [u8]| {
            store.transact(move |tx| {
                tx.put(Table::Events, key, b"v");
                Ok::<_, Error>(())
            })
        };
        let before = put(b"before");
        let snapshot = store.snapshot();
        let after = put(b"after");
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        before.await.unwrap().unwrap();
        let snapshot = snapshot.await.unwrap();
        after.await.unwrap().unwrap();
        put(b"later").await.unwrap().unwrap();
        let keys: Vec<Vec<u8>> = snapshot
            .entries(Table::Events)
            .map(|e| e.unwrap().0)
            .collect();
        assert_eq!(keys, [b"before".to_vec()]);
        assert_eq!(snapshot.entries(Table::Meta).count(), 0);
    }

    #[test]
    fn prefix_end_skips_trailing_ff() {
        assert_eq!(prefix_end(&[3, 1, 0xFF, 0xFF]), vec![3, 2]);
        assert_eq!(prefix_end(&[3]), vec![4]);
        assert_eq!(prefix_end(&[3, 0xFF]), vec![4]);
    }
}
