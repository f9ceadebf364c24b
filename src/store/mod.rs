//! The transactional key-value store API: tables, transactions and the `Store` trait through
//! which the service layer keeps its records, and the embedded store that implements it over
//! a storage engine (fjall for new stores, sled for older ones: each named only in its own
//! file). Nothing here may depend on the domain, the protocol types or any async runtime.
//!
//! Guarantees every engine gives:
//! - Transactions are serializable: the committed ones have the effect of running one at a
//!   time, each seeing the writes of every transaction committed before it, so "check, then
//!   write" inside one function is atomic. (The embedded engine runs them one at a time on one
//!   thread, in submission order; an engine over a database may run them side by side.)
//! - A transaction's writes become visible and durable together, or not at all.
//! - An answer is given only once every write it could have observed is durable, so no answer
//!   (commit, rollback or read) ever reveals state that a crash could take back.
//!
//! What every transaction function must therefore be:
//! - Re-runnable. An engine may run a function more than once (a serialization failure is
//!   retried) and keep only the last run's writes. So a function changes nothing outside its
//!   `Txn`: no counters, metrics, logs or random draws inside it — what must be counted is
//!   written through the `Txn` or noted for after the answer, and random values are drawn
//!   before the function is submitted. The type says so: a [`TxnFn`] is `Fn`, so a function
//!   cannot move a captured value out on its first run and find it gone on the next, and
//!   `Sync`, so an engine that retries may hold it in an `Arc` on whichever thread runs it.
//!   (The embedded engine runs each once.)
//! - Quick and self-contained: it must not block, do IO, or wait on the runtime.

pub mod dump;
mod embedded;
mod fjall;
pub mod mark;
mod postgres;
mod sled;
pub mod unfinished;

pub use embedded::{DEFAULT_CACHE_MIB, EmbeddedStore, EngineKind, MAX_BATCH};
pub use postgres::{MAX_ATTEMPTS, Migrated, Migrator, PgStore, PostgresConfig, SCHEMA_VERSION};

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics;

/// The logical tables. Each engine decides how to keep them apart (a key prefix, a tree, ...).
/// The key layouts are the service's (`service/schema/`, one function per kind of key); what
/// follows says what each table holds. The tables whose rows are written with
/// [`Txn::put_row`] (prescriptions, dispensing records, events, audit records) also declare
/// typed columns there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Table {
    /// Prescription id → prescription record. Columns.
    Prescriptions,
    /// (patient key, exchange number) → prescription id, for active prescriptions.
    ByExchange,
    /// (institution code, patient key, issue date, prescription id) → (): a clinic's own
    /// prescriptions of a patient, so that a search reads no other institution's.
    ByPatient,
    /// (institution, prescription number) → prescription id.
    ByNumber,
    /// SHA-256 of a dispensing record's content → (prescription id, record number). (Stores
    /// written by earlier versions also hold prescriptions' content here.)
    Documents,
    /// (prescription id, record number) → dispensing record. Columns.
    Dispensings,
    /// The audit trail: unchained records by store-wide sequence (older stores), chain links by
    /// writer and the writer's own sequence (service::audit_chain). Columns. Append-only.
    Audit,
    /// Counters (`sequence/NAME`, see [`Txn::next_sequence`] and [`Txn::unique_sequence`]),
    /// the indexes of accepted prescriptions and of active ones by expiry, the event log's
    /// floor, the relay's acknowledged position, the number of the layout that wrote the store
    /// and the marks of finished layout migrations.
    Meta,
    /// The medication history the clinical checks read: one record per patient key (older
    /// stores: one key per line, until their migration).
    Medications,
    /// Clinical records, each kind under a prefix of its own: check budgets and consents by
    /// patient key, acknowledged findings by prescription, imported drug-master files.
    Clinical,
    /// Event sequence number → event (the feed and the relay read it). Columns.
    Events,
    /// (institution, event sequence number) → (): a clinic's own events.
    EventsByInstitution,
    /// Dispensing records received through ManagementIntake (by record id and by arrival), and
    /// the sending relay's dead letters.
    Intake,
    /// SHA-256 of a DER certificate → the certificate, as the stored signatures carried it.
    Certificates,
    /// The exchange-number lockout's miss counters, by pharmacy and by patient pseudonym, and
    /// its marks of which pharmacy missed on which patient.
    Lockouts,
    /// The audit chains' heads, the signed checkpoints over them, and each signer's last.
    AuditChain,
}

impl Table {
    /// Whether a key of the table is written once and never again (the audit trail): an
    /// engine may refuse a transaction that writes one a second time, rather than replace it.
    pub fn append_only(self) -> bool {
        self == Table::Audit
    }

    /// Every table, in declaration order.
    pub const ALL: [Table; 16] = [
        Table::Prescriptions,
        Table::ByExchange,
        Table::ByPatient,
        Table::ByNumber,
        Table::Documents,
        Table::Dispensings,
        Table::Audit,
        Table::Meta,
        Table::Medications,
        Table::Clinical,
        Table::Events,
        Table::EventsByInstitution,
        Table::Intake,
        Table::Certificates,
        Table::Lockouts,
        Table::AuditChain,
    ];
}

/// A store failure. A failed transaction wrote nothing unless the variant says otherwise.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Reading or writing the files failed (including the fsync that makes a commit durable).
    /// Whether the transaction's writes survive is then unknown; the store refuses further work.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// The file system is full (ENOSPC): an [`Error::Io`] told apart, so that the process can
    /// say what to do (free space) rather than only that the store failed.
    #[error("storage I/O error: no space left on device ({0})")]
    NoSpace(String),
    /// The engine failed for another reason. As with `Io`, the store refuses further work.
    #[error("storage engine error: {0}")]
    Engine(String),
    /// The store has been closed (or its writer has stopped); the transaction did not run.
    #[error("the store is closed")]
    Closed,
    /// Stored bytes do not have the expected form.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The transaction function panicked; nothing was written and the store keeps working.
    #[error("the transaction function panicked (nothing was written): {0}")]
    Panicked(String),
    /// The store's files (in the named folder) are held by another process (a running
    /// gateway); nothing was opened.
    #[error("the store in {0} is in use by another process (a running gateway): stop it first")]
    InUse(String),
    /// The store cannot answer now but may soon: its database cannot be reached, or the
    /// transaction kept conflicting with concurrent ones. Nothing was written, unless the
    /// message says that the outcome is unknown (a connection lost during the commit). The
    /// store keeps working; the client may retry.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store cannot do what was asked of it (its engine has no such thing); it keeps working.
    #[error("not supported: {0}")]
    Unsupported(String),
}

/// One key and its value, as returned by the scans.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The type of a column a table declares: what an engine that keeps columns stores its values
/// as. Plain types only; dates are text (YYYY-MM-DD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Integer,
    Date,
    Bytes,
}

/// One column a table declares beside its key and value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    pub kind: ColumnType,
    /// Whether a row may have no value in it.
    pub nullable: bool,
}

/// A column's value in one row. It borrows from the record being written: handing columns to
/// [`Txn::put_row`] allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Text(&'a str),
    Integer(i64),
    /// YYYY-MM-DD.
    Date(&'a str),
    Bytes(&'a [u8]),
    Null,
}

impl Value<'_> {
    /// Whether the value may stand in `column`.
    pub fn fits(&self, column: &Column) -> bool {
        match self {
            Value::Text(_) => column.kind == ColumnType::Text,
            Value::Integer(_) => column.kind == ColumnType::Integer,
            Value::Date(_) => column.kind == ColumnType::Date,
            Value::Bytes(_) => column.kind == ColumnType::Bytes,
            Value::Null => column.nullable,
        }
    }
}

/// The typed columns of one row, as [`Txn::put_row`] is handed them: the columns its table
/// declares and the row's values, in the same order.
#[derive(Clone, Copy, Debug)]
pub struct Columns<'a> {
    pub declared: &'static [Column],
    pub values: &'a [Value<'a>],
}

/// A transaction: reads see its own earlier writes; all its writes become visible and durable
/// together, or not at all. Writes are buffered, so they cannot fail; reads can.
pub trait Txn {
    /// The value of `key`, if any.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error>;

    /// Sets `key` to `value`.
    fn put(&mut self, table: Table, key: &[u8], value: &[u8]);

    /// Removes `key` (nothing happens if it is absent).
    fn delete(&mut self, table: Table, key: &[u8]);

    /// The entries whose keys start with `prefix`, in key order, at most `limit` of them, with
    /// this transaction's own writes merged in.
    fn scan_prefix(&self, table: Table, prefix: &[u8], limit: usize) -> Result<Vec<Entry>, Error>;

    /// The entries whose keys are in `[start, end)`, in key order, at most `limit` of them, with
    /// this transaction's own writes merged in. Empty when `start >= end`.
    fn scan_range(
        &self,
        table: Table,
        start: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, Error>;

    /// Marks the transaction's writes so far, for [`Txn::rollback_to`].
    fn savepoint(&mut self) -> Savepoint;

    /// Discards every write made since `savepoint` was taken (and the savepoints taken after
    /// it); the writes before it stay. The savepoint stays usable. Pass only this
    /// transaction's own savepoints that are still in force: an engine may know them by
    /// position alone (the embedded one does), so one from another transaction, or one an
    /// earlier rollback discarded, may name a different savepoint.
    fn rollback_to(&mut self, savepoint: Savepoint);

    /// Sets `key` to `value` in a table that declares typed columns (the service's schema
    /// says which), with this row's `columns`: what an engine over a database would keep as
    /// columns beside the key and the value, so that an operator can query them without
    /// decoding the value. The row is the key and the value alone as far as every read here is
    /// concerned. The default, which the embedded engine keeps, ignores the columns and writes
    /// only the key and the value.
    fn put_row(&mut self, table: Table, key: &[u8], value: &[u8], columns: Columns<'_>) {
        let _ = columns;
        self.put(table, key, value);
    }

    /// The last value [`Txn::next_sequence`] gave for the named counter, or that
    /// [`Txn::unique_sequence`] gave on an engine that keeps its counters in `Meta` (0 before
    /// the first); on one that draws unique values from a database sequence, the stored value
    /// they started past.
    fn sequence(&self, name: &str) -> Result<u64, Error> {
        match self.get(Table::Meta, &sequence_key(name))? {
            None => Ok(0),
            Some(bytes) => Ok(u64::from_be_bytes(bytes.as_slice().try_into().map_err(
                |_| {
                    Error::Corrupt(format!(
                        "sequence {name:?} is {} bytes long, not 8",
                        bytes.len()
                    ))
                },
            )?)),
        }
    }

    /// The next value (1, 2, 3, ...) of the named counter, gap-free and in commit order: a value
    /// is consumed only by a transaction that commits, and a transaction that commits after
    /// another gets a greater one, so a reader that has seen N has seen every value below N.
    /// The counter is kept in [`Table::Meta`] under `sequence/{name}` (8 bytes, big-endian) and
    /// is written with this transaction, which makes it a row every user writes: an engine with
    /// concurrent writers serializes them on it. Only what needs that order may use it (the
    /// event log, which feeds resume after the last sequence they read); a number that only
    /// has to be unique takes [`Txn::unique_sequence`].
    fn next_sequence(&mut self, name: &str) -> Result<u64, Error> {
        let current = self.sequence(name)?;
        let next = current
            .checked_add(1)
            .ok_or_else(|| Error::Corrupt(format!("sequence {name:?} is exhausted")))?;
        self.put(Table::Meta, &sequence_key(name), &next.to_be_bytes());
        Ok(next)
    }

    /// A value of the named counter that no other call in this store gets, greater than every
    /// value it gave before (in the order they were drawn, which need not be the order their
    /// transactions commit in), and that may leave gaps: a rolled-back transaction may consume
    /// one. The default, which the embedded engine keeps, is [`Txn::next_sequence`] on the same
    /// counter (its transactions run one at a time, so its values are gap-free anyway); an
    /// engine with concurrent writers draws them from a database sequence instead (one for
    /// every name), past every stored counter when an import finishes, and so spares its
    /// writers a shared row. Its stored counters then stay behind: a load of its dump raises
    /// them past the numbers the tables hold.
    fn unique_sequence(&mut self, name: &str) -> Result<u64, Error> {
        self.next_sequence(name)
    }

    /// This transaction's lane: a number that no other transaction of this process holds while
    /// this one runs (its runs included), and whose last holder ended before this run began, so
    /// that a row only the holder of a lane writes (an audit chain's head) is never written by
    /// two transactions at once and is read as the last one left it. Lanes are small
    /// (0, 1, 2, ... up to about as many as run at once) and are used again. The default, which
    /// the embedded engine keeps, is 0: its transactions run one at a time.
    fn lane(&self) -> u32 {
        0
    }

    /// The value of `key` in a row that only the holder of this transaction's lane writes
    /// ([`Txn::lane`], [`Txn::put_lane_row`]: an audit chain's head). An engine over a database
    /// may answer from its memory of what the lane's last holder committed rather than read it,
    /// for a database locks what a transaction reads against what every other one writes near
    /// it. The default reads.
    fn get_lane_row(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.get(table, key)
    }

    /// Sets `key` to `value` in a row only the holder of this transaction's lane writes (see
    /// [`Txn::get_lane_row`]). The default puts.
    fn put_lane_row(&mut self, table: Table, key: &[u8], value: &[u8]) {
        self.put(table, key, value);
    }

    /// Whether this transaction's store runs its transactions one at a time
    /// ([`Store::serial`]); the default, the embedded engine's, is true.
    fn serial(&self) -> bool {
        true
    }
}

/// A mark in a transaction's writes ([`Txn::savepoint`]): what a refused decision's writes are
/// rolled back to, so that the transaction can still commit the writes made before it (and
/// after, such as the call's audit record). Only an engine makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Savepoint(usize);

/// A transaction's writes as each of its savepoints found them, the oldest first (a savepoint
/// is its index): what an engine keeps to roll back to one.
pub(crate) struct Savepoints<W>(Vec<W>);

impl<W: Clone> Savepoints<W> {
    pub(crate) fn new() -> Self {
        Savepoints(Vec::new())
    }

    /// A savepoint at `writes` as they are now.
    pub(crate) fn take(&mut self, writes: &W) -> Savepoint {
        self.0.push(writes.clone());
        Savepoint(self.0.len() - 1)
    }

    /// Puts `writes` back as they were at `savepoint`, which stays usable; the later ones go.
    pub(crate) fn roll_back(&mut self, savepoint: Savepoint, writes: &mut W) {
        if let Some(then) = self.0.get(savepoint.0) {
            writes.clone_from(then);
            self.0.truncate(savepoint.0 + 1);
        }
    }
}

/// Moves the named counter of [`Txn::next_sequence`] up to `at_least` if it is below, so that
/// the values it gives next are above it: how a store that lost acknowledged writes is made
/// never to give their numbers again.
pub fn raise_sequence(tx: &mut dyn Txn, name: &str, at_least: u64) -> Result<(), Error> {
    if tx.sequence(name)? < at_least {
        tx.put(Table::Meta, &sequence_key(name), &at_least.to_be_bytes());
    }
    Ok(())
}

/// An engine's I/O error as the store reports it: a full file system by name.
fn io_error(error: &std::io::Error) -> Error {
    match error.kind() {
        std::io::ErrorKind::StorageFull => Error::NoSpace(error.to_string()),
        _ => Error::Io(error.to_string()),
    }
}

/// Where the counter `name` of [`Txn::next_sequence`] is kept.
fn sequence_key(name: &str) -> Vec<u8> {
    [SEQUENCES, name.as_bytes()].concat()
}

const SEQUENCES: &[u8] = b"sequence/";

/// The name of the counter a `Meta` key keeps, if it is a counter's ([`sequence_key`]): what
/// a check of the whole store reads it by.
pub fn sequence_name(key: &[u8]) -> Option<&[u8]> {
    key.strip_prefix(SEQUENCES)
}

/// `bytes` as lowercase hex digits, as the store shows keys and checksums (the domain's own
/// `hex` is out of this module's reach).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A transaction's result with its type erased, so that [`Store`] can stay dyn-compatible:
/// `Ok` commits the writes, `Err` rolls them back.
pub type Outcome = Result<Box<dyn Any + Send>, Box<dyn Any + Send>>;

/// A type-erased transaction function, as the engine runs it: as many times as the engine needs
/// (see the module's contract), from any thread.
pub type TxnFn = Box<dyn Fn(&mut dyn Txn) -> Outcome + Send + Sync + 'static>;

/// The answer to a submitted transaction: its outcome once durable, or why it has none.
pub type Answer = Pin<Box<dyn Future<Output = Result<Outcome, Error>> + Send + 'static>>;

/// A consistent, read-only view of the whole store as it stood at one point of its
/// transaction order, readable from any thread while the store goes on ([`Store::snapshot`]).
pub trait Snapshot: Send {
    /// The entries of `table`, in key order.
    fn entries(&self, table: Table) -> Box<dyn Iterator<Item = Result<Entry, Error>> + '_>;
}

/// The answer to [`Store::snapshot`].
pub type SnapshotAnswer =
    Pin<Box<dyn Future<Output = Result<Box<dyn Snapshot>, Error>> + Send + 'static>>;

/// Counters describing the work a store has done since it was opened. The batches, flushes
/// and their distributions are the embedded engine's (zero and empty on PostgreSQL, whose
/// server flushes), the retries PostgreSQL's.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Groups of transactions run together (each ending in at most one flush).
    pub batches: u64,
    /// Transactions answered, whatever their outcome.
    pub transactions: u64,
    /// Transactions that committed at least one write.
    pub commits: u64,
    /// Runs of transaction functions made again after a conflict with concurrent ones.
    pub retries: u64,
    /// Durability flushes (fsyncs); at most one per batch, none for batches that wrote nothing.
    pub flushes: u64,
    /// Time spent in those flushes.
    pub flush_time: Duration,
    /// The most transactions seen in one batch.
    pub largest_batch: u64,
    /// Reads that found stored bytes corrupt (a failed checksum): each also logged, with its
    /// table and key.
    pub corrupt_reads: u64,
    /// The distribution of flush latencies (seconds).
    pub flush_latency: metrics::Snapshot,
    /// The distribution of batch sizes (transactions).
    pub batch_size: metrics::Snapshot,
    /// The connections to the database (PostgreSQL; all zero on the embedded engine).
    pub pool: PoolStats,
}

/// A connection pool's state, at the moment [`Store::stats`] was asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open.
    pub open: u64,
    /// Of those, unused.
    pub idle: u64,
    /// Transactions waiting for a connection.
    pub waiting: u64,
}

/// The store: runs transaction functions one at a time and answers only once their writes
/// are durable.
///
/// Design: the one required method, [`Store::submit`], takes a boxed, type-erased function and
/// returns a boxed future, so the trait is dyn-compatible (`Arc<dyn Store>` works) and engines
/// implement one simple method. Callers use the generic [`Store::transact`], which erases and
/// restores the types; it needs a sized receiver, so for dynamic dispatch hold an
/// `Arc<dyn Store>`, itself a `Store`:
///
/// ```
/// use rxgate::store::{Error, Store, Table};
///
/// async fn register(store: &impl Store, record: Vec<u8>) -> Result<u64, Error> {
///     let id = store
///         .transact(move |tx| {
///             let id = tx.next_sequence("prescription")?;
///             tx.put(Table::Prescriptions, &id.to_be_bytes(), &record);
///             Ok::<_, Error>(id)
///         })
///         .await??;
///     Ok(id)
/// }
/// ```
pub trait Store: Send + Sync + 'static {
    /// Queues `f` to run in a transaction, now (not when the answer is first polled).
    ///
    /// `f` runs on the engine's writer thread, never on the async runtime: it must be quick and
    /// must not block on anything (no IO, no locks held elsewhere, no waiting on the runtime).
    /// If it returns `Ok`, its writes are committed atomically; if it returns `Err` or panics,
    /// nothing is written. The answer resolves only once the commit is durable and, for any
    /// transaction, once every write it could have observed is durable. Dropping the answer
    /// does not cancel the transaction: it may still commit.
    fn submit(&self, f: TxnFn) -> Answer;

    /// What the store has done so far.
    fn stats(&self) -> Stats;

    /// Why the store takes no more work, if it does not: a failed write or flush (after which
    /// every transaction is refused), a stopped writer, or a close. `None` while it works.
    /// Readiness and the gRPC health service report from this.
    fn failure(&self) -> Option<Error>;

    /// Whether the store runs its transactions one at a time (the embedded engine): then a row
    /// every transaction writes, such as [`Txn::next_sequence`]'s counter, costs nothing, and
    /// the event log can be numbered in the transactions themselves. An engine that runs them
    /// side by side answers false, and the service numbers its events after they commit.
    fn serial(&self) -> bool {
        true
    }

    /// A snapshot that holds every transaction submitted before this call and nothing later,
    /// answered once everything it holds is durable (so, like any answer, it reveals nothing a
    /// crash could take back). Reading it does not hold up the store's transactions. An engine
    /// that cannot take one answers [`Error::Unsupported`], which the default does.
    fn snapshot(&self) -> SnapshotAnswer {
        let why = "this store takes no snapshots".to_owned();
        Box::pin(std::future::ready(Err(Error::Unsupported(why))))
    }

    /// Runs `f` in a transaction; see [`Store::submit`] for when it runs and what it may do.
    /// The outer `Result` is the store's (`Err` means the outcome is unknown or it never ran),
    /// the inner one is `f`'s own (`Err` means rolled back).
    fn transact<T, E, F>(
        &self,
        f: F,
    ) -> impl Future<Output = Result<Result<T, E>, Error>> + Send + 'static + use<Self, T, E, F>
    where
        Self: Sized,
        T: Send + 'static,
        E: Send + 'static,
        F: Fn(&mut dyn Txn) -> Result<T, E> + Send + Sync + 'static,
    {
        transact_on(self, f)
    }
}

/// An `Arc<dyn Store>` (or any `Arc` of a store) is a store too, so `transact` can be called on
/// it directly.
impl<S: Store + ?Sized> Store for Arc<S> {
    fn submit(&self, f: TxnFn) -> Answer {
        (**self).submit(f)
    }

    fn stats(&self) -> Stats {
        (**self).stats()
    }

    fn failure(&self) -> Option<Error> {
        (**self).failure()
    }

    fn serial(&self) -> bool {
        (**self).serial()
    }

    fn snapshot(&self) -> SnapshotAnswer {
        (**self).snapshot()
    }
}

/// Submits `f` with its result type erased, and restores the type in the answer.
fn transact_on<S, T, E, F>(
    store: &S,
    f: F,
) -> impl Future<Output = Result<Result<T, E>, Error>> + Send + 'static + use<S, T, E, F>
where
    S: Store + ?Sized,
    T: Send + 'static,
    E: Send + 'static,
    F: Fn(&mut dyn Txn) -> Result<T, E> + Send + Sync + 'static,
{
    let answer = store.submit(Box::new(move |tx: &mut dyn Txn| match f(tx) {
        Ok(value) => Ok(Box::new(value) as Box<dyn Any + Send>),
        Err(error) => Err(Box::new(error) as Box<dyn Any + Send>),
    }));
    async move {
        let mismatch = || Error::Engine("the engine answered with a value of another type".into());
        match answer.await? {
            Ok(value) => value
                .downcast::<T>()
                .map(|v| Ok(*v))
                .map_err(|_| mismatch()),
            Err(error) => error
                .downcast::<E>()
                .map(|e| Err(*e))
                .map_err(|_| mismatch()),
        }
    }
}
