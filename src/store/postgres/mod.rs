//! The store on PostgreSQL: the [`Store`] contract over a pool of connections (tokio-postgres
//! with deadpool-postgres), for gateways whose data must outlive one machine.
//!
//! # How a transaction function runs here
//!
//! - **Side by side, SERIALIZABLE.** [`PgStore::submit`] takes a connection from the pool (so at
//!   most `pool_size` functions run at once; the rest wait for one) and runs the function on a
//!   blocking thread of the store's own runtime, never on an async worker, in a transaction
//!   begun `ISOLATION LEVEL SERIALIZABLE`. PostgreSQL's serializable snapshot isolation then
//!   gives the contract's guarantee: the committed transactions have the effect of running one
//!   at a time, so "check, then write" inside one function stays atomic without row locks.
//! - **Reads at once, writes at the end.** Each read is one round trip, made from the blocking
//!   thread (`Handle::block_on`); writes are buffered in the run's overlay (`txn.rs`) and sent
//!   at the end, one statement per table, pipelined, then COMMIT. A function that answers `Err`
//!   writes nothing, but its transaction is committed all the same (empty): a SERIALIZABLE
//!   commit is what proves that what it read was consistent, and the refusal rests on it.
//! - **Re-run on conflict.** A serialization failure or a deadlock (SQLSTATE 40001, 40P01),
//!   met by any read or by the commit, rolls the run back and runs the function again on a
//!   fresh snapshot, at most [`MAX_ATTEMPTS`] times in all; then the answer is
//!   [`Error::Unavailable`] (UNAVAILABLE to the client, who may retry). A re-run first waits up
//!   to a millisecond per run so far, spread, and runs beside the others; the last one runs
//!   alone in the fleet: every run locks the database's table of turns in its BEGIN, shared,
//!   and the last exclusively, so it waits until the runs of every gateway over the database
//!   have ended, holds new ones back until it ends, takes its snapshot after them, and cannot
//!   lose again to them.
//! - **No row every transaction writes.** Such a row would make every pair of concurrent
//!   transactions conflict. So each function holds a lane ([`crate::store::Txn::lane`], taken
//!   when it first asks) under which the service keeps an audit chain of its own, unique
//!   numbers come from the database sequence `rxgate.draws` ([`crate::store::Txn::unique_sequence`]),
//!   and the event log is numbered after the commit by the service's sequencer
//!   ([`crate::store::Store::serial`] is false here).
//! - **Durable before answered.** Every session runs `synchronous_commit = on`, so a COMMIT
//!   returns once its WAL is on disk, and no transaction sees another's writes before then:
//!   nothing a crash could take back is ever revealed.
//! - **A lost connection** (no answer, or the server ending the session: FATAL or PANIC, as
//!   at its shutdown or crash) answers [`Error::Unavailable`]; when it was lost during the
//!   COMMIT the outcome is unknown, which the message says (the client's retry converges
//!   through the calls' idempotency). A connection found lost at a run's BEGIN, before the
//!   function ran, is replaced and the run made on a new one. A lost connection takes the
//!   pool's idle ones with it, so that after a failover the next transactions connect afresh
//!   (a multi-host URL with `target_session_attrs=read-write` finds the new primary) rather
//!   than meet the dead ones one by one; a server gone silent is given up by the kernel
//!   (config.rs: `tcp_user_timeout`, keepalives). Nothing needs a restart.

mod config;
mod lanes;
mod schema;
mod snapshot;
mod txn;

pub use config::{Migrator, PostgresConfig};
pub use schema::{Migrated, SCHEMA_VERSION};

use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Timeouts};
use tokio::runtime::{Handle, Runtime};
use tokio_postgres::error::SqlState;

use super::{
    Answer, Column, Error, Outcome, PoolStats, SnapshotAnswer, Stats, Store, Table, TxnFn,
};
use lanes::{LaneCell, Lanes};
use schema::Statements;
use txn::PgTxn;

/// The most runs of one transaction function (the first and its re-runs after conflicts).
pub const MAX_ATTEMPTS: u32 = 5;

/// The BEGIN of a run, with the lock of turns by which a run that conflicted
/// [`MAX_ATTEMPTS`]` - 1` times gets the database to itself: every run locks `rxgate.turns`
/// SHARE, the last EXCLUSIVE (migrations/0004.sql), all gateways over the database alike. A
/// table's lock, not an advisory one: `LOCK TABLE` takes no snapshot, so the run's SERIALIZABLE
/// snapshot is taken after it holds its turn (a `SELECT pg_advisory_xact_lock()` takes it
/// before it waits, and the last run then read what the runs it waited for overwrote, and lost
/// to them again). The wait for it is bounded by 5 s rather than by the session's short
/// `lock_timeout` (config.rs), which the run gets back once it holds the lock: a run waits
/// behind the one that runs alone. `RESET` goes back to the value the connection started with,
/// which is why config.rs sets it among the connection's options, never by a `SET`.
macro_rules! begin_taking {
    ($mode:literal) => {
        concat!(
            "BEGIN ISOLATION LEVEL SERIALIZABLE; SET LOCAL lock_timeout = '5s'; \
             LOCK TABLE rxgate.turns IN ",
            $mode,
            " MODE; RESET lock_timeout"
        )
    };
}
/// The BEGIN of a run beside the others, and of the last, alone.
const BESIDE: &str = begin_taking!("SHARE");
const ALONE: &str = begin_taking!("EXCLUSIVE");

/// The longest a transaction waits for a connection of the pool before it is answered
/// UNAVAILABLE: longer than any call's deadline, so that only a stuck database reaches it.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// A store in a PostgreSQL database.
pub struct PgStore {
    shared: Arc<Shared>,
    /// Drives the connections and runs the functions; shut down by [`PgStore::close`].
    runtime: Mutex<Option<Runtime>>,
    handle: Handle,
}

struct Shared {
    pool: Pool,
    sql: Statements,
    counters: Counters,
    /// Why the last attempt to reach the database failed, until one succeeds.
    unreachable: Mutex<Option<Error>>,
    /// The lanes ([`crate::store::Txn::lane`], lanes.rs).
    lanes: Mutex<Lanes>,
}

#[derive(Default)]
struct Counters {
    transactions: AtomicU64,
    commits: AtomicU64,
    retries: AtomicU64,
}

impl PgStore {
    /// Connects to the database `config` names and checks that its schema is this binary's.
    /// `columns` says which typed columns each table declares (the service's schema).
    pub fn open(
        config: &PostgresConfig,
        columns: fn(Table) -> &'static [Column],
    ) -> Result<PgStore, Error> {
        let connection = config.connection(None).map_err(Error::Engine)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(config.pool_size + 2)
            .thread_name("rxgate-store-pg")
            .enable_all()
            .build()
            .map_err(|e| Error::Io(format!("cannot start the store's threads: {e}")))?;
        let manager = Manager::from_config(
            connection.settings,
            connection.tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let wait = Duration::from_millis(config.connect_timeout_ms);
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .timeouts(Timeouts {
                wait: Some(POOL_WAIT),
                create: Some(wait),
                recycle: Some(wait),
            })
            .build()
            .map_err(|e| Error::Engine(format!("the connection pool: {e}")))?;
        let handle = runtime.handle().clone();
        handle.block_on(async {
            let client = pool.get().await.map_err(|e| pool_error(&e))?;
            schema::check(&client).await
        })?;
        let shared = Arc::new(Shared {
            pool,
            sql: Statements::new(columns),
            counters: Counters::default(),
            unreachable: Mutex::new(None),
            lanes: Mutex::new(Lanes::default()),
        });
        Ok(PgStore {
            shared,
            runtime: Mutex::new(Some(runtime)),
            handle,
        })
    }

    /// Applies the migrations the database lacks, connected as `migrator` (the URL's user when
    /// `None`), and grants the URL's user the use of the tables. Drives a runtime of its own:
    /// call it off any async runtime.
    pub fn migrate(
        config: &PostgresConfig,
        migrator: Option<&Migrator>,
    ) -> Result<Migrated, Error> {
        let app_role = config
            .connection(None)
            .map_err(Error::Engine)?
            .settings
            .get_user()
            .unwrap_or("postgres")
            .to_owned();
        let connection = config.connection(migrator).map_err(Error::Engine)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Io(format!("cannot start a runtime: {e}")))?;
        runtime.block_on(async {
            let (mut client, driver) = connection
                .settings
                .connect(connection.tls)
                .await
                .map_err(|e| database_error(&e))?;
            let driving = tokio::spawn(driver);
            let migrated = schema::migrate(&mut client, &app_role).await;
            drop(client);
            let _ = driving.await;
            migrated
        })
    }

    /// Marks the database as being loaded by an import that has not finished (`unfinished`),
    /// durably, so that every opening refuses it until the mark is taken away once the whole
    /// dump is in (store/unfinished.rs does the same for a folder). Blocking: call it off any
    /// async runtime.
    pub fn mark_import(&self, unfinished: bool) -> Result<(), Error> {
        self.handle.block_on(async {
            let client = self.shared.pool.get().await.map_err(|e| pool_error(&e))?;
            schema::mark_import(&client, unfinished).await
        })
    }

    /// Stops taking work, lets the functions running finish, and closes every connection.
    pub fn close(&self) {
        self.shared.pool.close();
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(runtime) = runtime {
            runtime.shutdown_timeout(Duration::from_secs(10));
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.shared.pool.close();
        let runtime = self
            .runtime
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
}

impl Store for PgStore {
    fn submit(&self, f: TxnFn) -> Answer {
        let shared = Arc::clone(&self.shared);
        let handle = self.handle.clone();
        let running = self.handle.spawn(async move {
            let answer = match shared.pool.get().await {
                Ok(client) => {
                    let running = Arc::clone(&shared);
                    tokio::task::spawn_blocking(move || running.run(client, &handle, &f))
                        .await
                        .unwrap_or_else(|e| {
                            Err(Error::Engine(format!("a transaction's thread failed: {e}")))
                        })
                }
                Err(e) => Err(pool_error(&e)),
            };
            shared.note_reach(&answer);
            answer
        });
        Box::pin(async move { running.await.unwrap_or(Err(Error::Closed)) })
    }

    fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let empty = |bounds| crate::metrics::Histogram::new(bounds).snapshot();
        Stats {
            batches: 0,
            transactions: c.transactions.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            flushes: 0,
            flush_time: Duration::ZERO,
            largest_batch: 0,
            corrupt_reads: 0,
            flush_latency: empty(crate::metrics::LATENCY_BUCKETS),
            batch_size: empty(crate::metrics::SIZE_BUCKETS),
            pool: pool_stats(&self.shared.pool),
        }
    }

    fn serial(&self) -> bool {
        false
    }

    fn failure(&self) -> Option<Error> {
        if self.shared.pool.is_closed() {
            return Some(Error::Closed);
        }
        self.shared
            .unreachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn snapshot(&self) -> SnapshotAnswer {
        snapshot::take(Arc::clone(&self.shared), self.handle.clone())
    }
}

/// How one run ended, before the answer.
enum Run {
    /// Committed (or, for an `Err` outcome, committed empty).
    Done(Outcome),
    /// A conflict: run again.
    Again,
}

/// One connection's part in running a function: it ends each run's transaction, and notes the
/// connection's loss, after which it must not be pooled again.
struct Session<'a> {
    client: &'a Object,
    runtime: &'a Handle,
    /// The lane the function holds for all its runs, once it asks for one.
    lane: LaneCell<'a>,
    /// The connection was lost: a round trip the server did not answer, or answered by ending
    /// the session.
    lost: Cell<bool>,
    /// A run's BEGIN was answered: the function may have run.
    began: Cell<bool>,
}

impl Session<'_> {
    /// Runs `sql` (BEGIN with its lock, COMMIT, ROLLBACK). A failure the server did not answer
    /// (a lost connection, a broken protocol), or answered by ending the session, marks the
    /// connection lost.
    fn end(&self, sql: &str) -> Result<(), tokio_postgres::Error> {
        let ended = self.runtime.block_on(self.client.batch_execute(sql));
        if ended.as_ref().is_err_and(connection_lost) {
            self.lost.set(true);
        }
        ended
    }

    fn rollback(&self) {
        let _ = self.end("ROLLBACK");
    }
}

impl Shared {
    /// Keeps what readiness reports: a database that could not be reached until one answer
    /// comes from it. A conflict is an answer of the database's, and changes nothing.
    fn note_reach(&self, answer: &Result<Outcome, Error>) {
        let unreachable = match answer {
            Err(error @ Error::Unavailable(_)) if !is_conflict(error) => Some(error.clone()),
            Err(Error::Unavailable(_)) => return,
            _ => None,
        };
        *self
            .unreachable
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = unreachable;
    }

    /// Runs `f` on `client` until it commits or fails for good, at most [`MAX_ATTEMPTS`]
    /// times; once more on a new connection if `client` was found lost before `f` ran (its
    /// server gone since it was pooled), which would otherwise cost the caller an UNAVAILABLE.
    fn run(&self, client: Object, runtime: &Handle, f: &TxnFn) -> Result<Outcome, Error> {
        self.counters.transactions.fetch_add(1, Ordering::Relaxed);
        let (answer, unbegun) = self.run_on(client, runtime, f);
        if !unbegun {
            return answer;
        }
        match runtime.block_on(self.pool.get()) {
            Ok(client) => self.run_on(client, runtime, f).0,
            Err(e) => Err(pool_error(&e)),
        }
    }

    /// Runs `f` on `client`; the answer, and whether the connection was lost before `f` ran.
    /// A connection whose transaction may not have ended is closed rather than pooled again:
    /// one that failed to end it, or one the engine itself panicked on (`f`'s own panics are
    /// caught in [`Shared::attempt`], which rolls back), which would otherwise go back to the
    /// pool inside its transaction and hand the next function its old snapshot. A lost one
    /// also takes the pool's idle connections with it: they most likely went to the same
    /// server, and the next transactions had better connect afresh (to whichever host takes
    /// writes now) than find each of them dead in turn.
    fn run_on(
        &self,
        client: Object,
        runtime: &Handle,
        f: &TxnFn,
    ) -> (Result<Outcome, Error>, bool) {
        let session = Session {
            client: &client,
            runtime,
            lane: LaneCell::new(&self.lanes),
            lost: Cell::new(false),
            began: Cell::new(false),
        };
        let mut abandoned = false;
        let answer =
            catch_unwind(AssertUnwindSafe(|| self.attempts(&session, f))).unwrap_or_else(|panic| {
                abandoned = true;
                Err(panicked(panic.as_ref()))
            });
        let (lost, began) = (session.lost.get(), session.began.get());
        drop(session);
        if lost {
            self.pool.retain(|_, _| false);
        }
        if lost || abandoned {
            drop(Object::take(client));
        }
        (answer, lost && !began)
    }

    /// The runs beside the other transactions of the fleet, but the last alone among them (see
    /// `begin_taking`), so that a function that conflicted cannot lose to its neighbours every time.
    fn attempts(&self, session: &Session<'_>, f: &TxnFn) -> Result<Outcome, Error> {
        for attempt in 1..=MAX_ATTEMPTS {
            if attempt > 1 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(backoff(attempt));
            }
            let begin = if attempt < MAX_ATTEMPTS {
                BESIDE
            } else {
                ALONE
            };
            if let Run::Done(outcome) = self.attempt(session, begin, f)? {
                return Ok(outcome);
            }
        }
        Err(conflicted_every_time())
    }

    /// One run of `f` in a transaction of its own.
    fn attempt(&self, session: &Session<'_>, begin: &str, f: &TxnFn) -> Result<Run, Error> {
        session.lane.run_begins();
        session.end(begin).map_err(|e| database_error(&e))?;
        session.began.set(true);
        let mut txn = PgTxn::new(session.client, session.runtime, &self.sql, &session.lane);
        let outcome = catch_unwind(AssertUnwindSafe(|| f(&mut txn)));
        let outcome = match (txn.failed(), outcome) {
            (Some(error), _) => {
                session.rollback();
                return again_or(error);
            }
            (None, Err(panic)) => {
                session.rollback();
                return Err(panicked(panic.as_ref()));
            }
            (None, Ok(outcome)) => outcome,
        };
        let wrote = outcome.is_ok() && txn.wrote();
        if wrote {
            if let Some(table) = txn.row_without_columns() {
                session.rollback();
                return Err(Error::Engine(format!(
                    "a row of {table:?} was written without the columns the table declares"
                )));
            }
            if let Err(e) = txn.send_writes() {
                session.rollback();
                // What the lane remembers may be what the database refused (a link written
                // twice): its next holder reads the rows again.
                session.lane.forget();
                return again_or(database_error(&e));
            }
        }
        let lane_rows = if wrote {
            txn.lane_rows()
        } else {
            Default::default()
        };
        match session.end("COMMIT") {
            Ok(()) => {
                if wrote {
                    self.counters.commits.fetch_add(1, Ordering::Relaxed);
                }
                session.lane.remember(lane_rows);
                Ok(Run::Done(outcome))
            }
            Err(e) if connection_lost(&e) => {
                session.lane.forget();
                Err(Error::Unavailable(format!(
                    "the database connection was lost during COMMIT: the outcome is unknown ({})",
                    described(&e)
                )))
            }
            Err(e) => {
                // A COMMIT refused (a conflict found at the commit) did not commit; the lane's
                // next holder reads its rows again all the same.
                session.lane.forget();
                again_or(database_error(&e))
            }
        }
    }
}

/// What the pool holds.
fn pool_stats(pool: &Pool) -> PoolStats {
    let status = pool.status();
    PoolStats {
        open: status.size as u64,
        idle: status.available as u64,
        waiting: status.waiting as u64,
    }
}

/// The pause before run `attempt` (2, 3, ...): up to a millisecond per run so far, spread by
/// the clock's nanoseconds, so that the transactions that conflicted do not meet again at once.
fn backoff(attempt: u32) -> Duration {
    let spread = std::time::SystemTime::UNIX_EPOCH
        .elapsed()
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    Duration::from_micros(spread % (1000 * u64::from(attempt - 1)))
}

/// Ends whatever transaction `client` is in, then lets it go back to the pool; a connection
/// that cannot end it is closed instead.
async fn rolled_back(client: Object) {
    if client.batch_execute("ROLLBACK").await.is_err() {
        drop(Object::take(client));
    }
}

/// The answer to a run that panicked.
fn panicked(panic: &(dyn std::any::Any + Send)) -> Error {
    Error::Panicked(crate::panics::message(panic).to_owned())
}

/// A conflict is run again; any other error is the answer.
fn again_or(error: Error) -> Result<Run, Error> {
    if is_conflict(&error) {
        Ok(Run::Again)
    } else {
        Err(error)
    }
}

/// The prefix of the message of a conflict's [`Error::Unavailable`], by which it is told apart.
const CONFLICT: &str = "a conflict with a concurrent transaction";

fn is_conflict(error: &Error) -> bool {
    matches!(error, Error::Unavailable(why) if why.starts_with(CONFLICT))
}

/// The answer of a function whose every run met a conflict: a conflict still, which says
/// nothing of whether the database can be reached.
fn conflicted_every_time() -> Error {
    Error::Unavailable(format!("{CONFLICT}, met by each of {MAX_ATTEMPTS} runs"))
}

/// Whether `error` ended the connection: the server did not answer (a lost connection, a
/// broken protocol), or answered by ending the session (FATAL or PANIC: an administrator's
/// shutdown, a crash of the server, its postmaster gone), at any point of what it was doing.
fn connection_lost(error: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::Severity;
    error.as_db_error().is_none_or(|db| {
        matches!(
            db.parsed_severity(),
            Some(Severity::Fatal | Severity::Panic)
        )
    })
}

/// A database error as the store reports it.
fn database_error(error: &tokio_postgres::Error) -> Error {
    let why = described(error);
    let Some(db) = error.as_db_error() else {
        return Error::Unavailable(format!("the database cannot be reached: {why}"));
    };
    let code = db.code();
    match *code {
        SqlState::T_R_SERIALIZATION_FAILURE
        | SqlState::T_R_DEADLOCK_DETECTED
        | SqlState::LOCK_NOT_AVAILABLE => Error::Unavailable(format!("{CONFLICT}: {why}")),
        SqlState::DISK_FULL => Error::NoSpace(why),
        // A session the server ended (FATAL, PANIC) is a lost connection whatever its SQLSTATE
        // (an idle transaction's timeout is 25P03, an internal failure XX000).
        _ if connection_lost(error)
            || code.code().starts_with("08")
            || code.code().starts_with("53")
            || code.code().starts_with("57")
            || *code == SqlState::READ_ONLY_SQL_TRANSACTION =>
        {
            Error::Unavailable(why)
        }
        _ => Error::Engine(why),
    }
}

/// What went wrong, in words: the server's message and SQLSTATE, never its detail, which can
/// quote a row's key; or the client's error with its causes.
fn described(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut why = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        why = format!("{why}: {inner}");
        cause = inner.source();
    }
    why
}

fn pool_error(error: &deadpool_postgres::PoolError) -> Error {
    match error {
        deadpool_postgres::PoolError::Backend(e) => database_error(e),
        deadpool_postgres::PoolError::Closed => Error::Closed,
        other => Error::Unavailable(format!("no database connection: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Readiness keeps a function that conflicted every time from saying the database is out of
    /// reach (`Shared::note_reach`).
    #[test]
    fn a_function_that_conflicted_every_time_answers_a_conflict() {
        assert!(is_conflict(&conflicted_every_time()));
    }
}
