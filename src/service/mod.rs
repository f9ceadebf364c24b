//! The use cases: register, cancel, status and search for clinics (prescriptions.rs, search.rs);
//! lookup, receive, return and dispense for pharmacies (dispensing.rs); the expiry sweep and the
//! stuck report (admin.rs); the audit export (audit_chain.rs). They take verified documents
//! (admission.rs) and domain types, run each decision and its writes — and the audit record of the
//! call (audit.rs) — in one store transaction, and return domain results. This file holds the
//! gateway, the caller, the error, the configuration and the transaction runner. Knows no gRPC
//! and no storage engine.

pub mod acknowledged;
mod admin;
mod admission;
mod audit;
mod audit_chain;
mod audit_checkpoint;
mod audit_edge;
mod audit_export;
mod backup;
pub mod clinical;
mod clock_watch;
mod dispensing;
mod events;
mod feed;
mod free_space;
mod identity_claim;
mod import_watch;
mod intake;
mod keeping;
pub mod layout;
mod lease;
mod lockout;
mod master_import;
mod prescriptions;
mod pseudonym;
mod pseudonymize;
pub mod records;
mod relay_ledger;
#[cfg(test)]
mod rerun;
mod schema;
mod search;
mod sequencer;
mod signatures;
mod stored;
#[cfg(test)]
pub(crate) mod testing;
pub mod verify;

use std::{
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use admin::{ClockConfirmed, Stuck, Sweep};
use audit::AuditDraft;
pub use audit::{Action, AuditReceipt};
pub use audit_chain::{Page, audit_rows, heads};
pub use audit_checkpoint::{checkpoint_body, checkpoints_page};
pub use audit_export::{
    AuditEntry, Audited, AuditedCall, AuditedCaller, ChainLink, CheckSubject, CountedRequests,
    RequestCount,
};
pub use backup::BackupChunks;
pub use clinical::{
    Acknowledgement, CheckRequest, Clinical, Findings, OnCritical, RequestedOptions,
};
pub use dispensing::{Dispensed, Received, Summary};
pub use events::{Event, EventEntry, EventFilter, EventKind};
pub use feed::{EventWatch, Pace};
pub use free_space::{Change, Level, LowWater, Room};
pub use identity_claim::IDENTITY_TERM;
pub use import_watch::{LoadError, Shipped, load_clinical};
pub use intake::{Attestation, Delivery};
pub use lease::Tenure;
pub use lockout::{Locked, LockoutPolicy, MissLimit, Subject};
pub use master_import::{FileOutcome, ImportFile, ImportSummary};
pub use prescriptions::Registered;
pub use pseudonym::{PatientPseudonym, Pseudonyms};
pub use relay_ledger::DeadLetter;
pub use schema::{columns_of, put_record, refuse_clear_patient_key};
pub use schema::{head_key, link_key, parse_key};
pub use stored::{DispensingSummary, LineState, Status};

use crate::{
    domain::{
        checks::CheckOptions,
        ids::Institution,
        prescription::LifecycleError,
        rx::FieldViolation,
        signature::{Refusal, Verifier},
    },
    limits::Limits,
    log_throttle::LogThrottle,
    metrics::Metrics,
    pki::identity::TrustedSenders,
    store::{self, Store, Txn},
};
use clock_watch::{ClockWatch, Reading};
use records::decode;

/// Writes the audit record of a call whose transaction failed, in a transaction of its own.
async fn audit_failed(store: &Arc<dyn Store>, draft: AuditDraft, failed: &Error) {
    let action = draft.action.as_str();
    let outcome: Result<(), Error> = Err(failed.clone());
    let written = store
        .transact(move |tx: &mut dyn Txn| draft.write(tx, &outcome))
        .await;
    if let Err(e) | Ok(Err(e)) = written
        && let Some(left_out) = UNWRITTEN.allow()
    {
        tracing::error!(action, error = %e, left_out,
            "the audit record of a failed call could not be written");
    }
}

/// At most one line a minute for failed calls whose record could not be written either (a
/// failed store fails every call).
static UNWRITTEN: LogThrottle = LogThrottle::new(Duration::from_secs(60));

/// The source of the current time. Only the composition root (app.rs) picks a real clock.
pub trait Clock: Send + Sync + 'static {
    /// The wall clock: dates, expiry and audit times are read from it. An operator or NTP may
    /// step it.
    fn now(&self) -> SystemTime;
    /// A clock that never steps, from an origin of its own: how much time really passed. The
    /// expiry sweep holds the wall clock against it (clock_watch.rs).
    fn steady(&self) -> Duration;
}

/// The system clock, and the kernel's boot-time clock as the steady one: it never steps and,
/// unlike `CLOCK_MONOTONIC` (std's `Instant`), goes on while the machine is suspended, when the
/// wall clock goes on too.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn steady(&self) -> Duration {
        // Never negative, so always a Duration.
        Duration::try_from(rustix::time::clock_gettime(rustix::time::ClockId::Boottime))
            .unwrap_or_default()
    }
}

/// Who is calling: the institution its client certificate names, and that certificate; and
/// where the call's audit record is said to be submitted.
#[derive(Debug, Clone)]
pub struct Caller {
    pub institution: Institution,
    pub certificate_sha256: [u8; 32],
    pub receipt: AuditReceipt,
}

/// Why a call was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid argument")]
    InvalidArgument(Vec<FieldViolation>),
    #[error("signature refused: {0}")]
    Signature(Refusal),
    #[error("permission denied: {0}")]
    PermissionDenied(&'static str),
    #[error("not found")]
    NotFound,
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    #[error("already exists: {0}")]
    AlreadyExists(&'static str),
    #[error("resource exhausted: {0}")]
    ResourceExhausted(&'static str),
    /// A rate or budget spent: the call may succeed after `retry_after`.
    #[error("rate limited: {limit}")]
    RateLimited {
        limit: &'static str,
        retry_after: Duration,
    },
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// The data disk is below its free-space low-water mark: new data is refused until it has
    /// room again (free_space.rs).
    #[error(
        "the data disk is nearly full: {free_mib} MiB free, the low-water mark is \
         {low_water_mib} MiB"
    )]
    DiskLow { free_mib: u64, low_water_mib: u64 },
    /// A registration with critical findings that are not all acknowledged.
    #[error("unacknowledged critical findings")]
    CriticalFindings {
        findings: Findings,
        unacknowledged: Vec<String>,
    },
    /// The store failed (its kind kept: I/O, engine, closed, corrupt data, a panicked
    /// transaction); the call's outcome is unknown to its caller only for I/O and engine errors.
    #[error("store: {0}")]
    Store(store::Error),
    /// Anything else that should not happen.
    #[error("internal error")]
    Internal(String),
}

impl Error {
    fn invalid(field: &str, rule: &str) -> Self {
        Error::InvalidArgument(vec![FieldViolation::new(field, rule)])
    }

    /// The outcome as audited: a code name, and the verifier's reason.
    fn audit_outcome(&self) -> String {
        match self {
            Error::InvalidArgument(_) => "INVALID_ARGUMENT".into(),
            Error::Signature(r) => format!("INVALID_ARGUMENT {}", r.reason),
            Error::PermissionDenied(_) => "PERMISSION_DENIED".into(),
            Error::NotFound => "NOT_FOUND".into(),
            Error::FailedPrecondition(_) => "FAILED_PRECONDITION".into(),
            Error::AlreadyExists(_) => "ALREADY_EXISTS".into(),
            Error::ResourceExhausted(_) | Error::RateLimited { .. } | Error::DiskLow { .. } => {
                "RESOURCE_EXHAUSTED".into()
            }
            Error::OutOfRange(_) => "OUT_OF_RANGE".into(),
            Error::CriticalFindings { .. } => "FAILED_PRECONDITION CRITICAL_FINDINGS".into(),
            Error::Store(store::Error::Unavailable(_)) => "UNAVAILABLE".into(),
            Error::Store(_) | Error::Internal(_) => "INTERNAL".into(),
        }
    }
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        Error::Store(e)
    }
}

impl From<LifecycleError> for Error {
    fn from(e: LifecycleError) -> Self {
        Error::FailedPrecondition(e.to_string())
    }
}

/// Policy of the use cases.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The latest usable-until date a prescription may carry, in days after its issue date.
    pub max_usable_days: u32,
    pub lockout: LockoutPolicy,
    /// At most this many prescriptions in one search answer.
    pub search_limit: usize,
    pub checks: CheckPolicy,
    /// The bounds on requests and histories.
    pub limits: Limits,
    /// The keyed pseudonyms that audit records name a checked patient by.
    pub pseudonyms: Pseudonyms,
    /// An ACCEPTED prescription without a dispensing record for this long is stuck.
    pub stuck_after: Duration,
    /// The gateways whose relay attestations the intake believes.
    pub trusted_senders: TrustedSenders,
    /// Whose audit chain this gateway writes: its `[gateway]` certificate's SHA-256.
    pub audit_writer: [u8; 32],
    /// How far the wall clock may step forward between two expiry sweeps before the sweep is
    /// held for an operator's confirmation (clock_watch.rs).
    pub clock_step_tolerance: Duration,
}

/// The default of [`GatewayConfig::max_usable_days`] (and of the configuration's).
pub const MAX_USABLE_DAYS: u32 = 30;

/// The default of [`GatewayConfig::stuck_after`] (and of the configuration's).
pub const STUCK_AFTER: Duration = Duration::from_secs(3 * 86_400);

/// The default of [`GatewayConfig::clock_step_tolerance`] (and of the configuration's).
pub const CLOCK_STEP_TOLERANCE: Duration = Duration::from_secs(3600);

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_usable_days: MAX_USABLE_DAYS,
            lockout: LockoutPolicy::default(),
            search_limit: 100,
            checks: CheckPolicy::default(),
            limits: Limits::default(),
            pseudonyms: Pseudonyms::ephemeral(),
            stuck_after: STUCK_AFTER,
            trusted_senders: TrustedSenders::default(),
            audit_writer: [0; 32],
            clock_step_tolerance: CLOCK_STEP_TOLERANCE,
        }
    }
}

/// Policy of the clinical checks.
#[derive(Debug, Clone)]
pub struct CheckPolicy {
    /// What a registration with a critical finding does.
    pub on_critical: OnCritical,
    /// The switches a request leaves unset (default: the national rules).
    pub defaults: CheckOptions,
}

impl Default for CheckPolicy {
    fn default() -> Self {
        CheckPolicy {
            on_critical: OnCritical::RequireOverride,
            defaults: CheckOptions::default(),
        }
    }
}

/// The gateway's use cases over a store, a verifier and a clock.
pub struct Gateway {
    store: Arc<dyn Store>,
    verifier: Arc<Verifier>,
    clock: Arc<dyn Clock>,
    config: GatewayConfig,
    clinical: RwLock<Arc<Clinical>>,
    /// Imports run one at a time, and one at a time with the loads of other gateways' imports.
    imports: tokio::sync::Mutex<()>,
    /// The store's imports this gateway could not load, while it cannot (import_watch.rs); a
    /// std mutex, never held across an await.
    stale_imports: std::sync::Mutex<Option<import_watch::Stale>>,
    /// Backups too.
    backups: backup::OneBackup,
    /// Woken once new events are in the log: the event feeds wait on it.
    events: tokio::sync::Notify,
    /// Woken after every transaction on a store that runs them side by side, whose events
    /// wait for the sequencer (sequencer.rs).
    pending: tokio::sync::Notify,
    /// Set when the server shuts down: open event feeds end (their consumers resume later).
    closing: std::sync::atomic::AtomicBool,
    metrics: Arc<Metrics>,
    rng: ring::rand::SystemRandom,
    /// What the expiry sweep believes of the wall clock; a std mutex, never held across an
    /// await.
    clock_watch: std::sync::Mutex<ClockWatch>,
    /// The data disk's room as the disk watch last measured it: what the calls are admitted by.
    room: Arc<Room>,
    /// This process, as the leases it takes name it (lease.rs).
    lease_holder: lease::Holder,
    /// The leases this process gave up as it stops, which it never takes again (lease.rs).
    leases_given_up: lease::GivenUp,
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Gateway {
    pub fn new(
        store: Arc<dyn Store>,
        verifier: Arc<Verifier>,
        clock: Arc<dyn Clock>,
        clinical: Arc<Clinical>,
        config: GatewayConfig,
    ) -> Self {
        let reading = Reading::new(clock.now(), clock.steady());
        let rng = ring::rand::SystemRandom::new();
        Gateway {
            lease_holder: lease::Holder::new(&rng, config.audit_writer),
            leases_given_up: lease::GivenUp::default(),
            clock_watch: std::sync::Mutex::new(ClockWatch::new(
                reading,
                config.clock_step_tolerance,
            )),
            store,
            verifier,
            clock,
            clinical: RwLock::new(clinical),
            imports: tokio::sync::Mutex::new(()),
            stale_imports: std::sync::Mutex::new(None),
            backups: backup::OneBackup::default(),
            events: tokio::sync::Notify::new(),
            pending: tokio::sync::Notify::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
            metrics: Arc::new(Metrics::default()),
            config,
            rng,
            room: Arc::default(),
        }
    }

    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// The configured stuck threshold.
    pub fn stuck_after(&self) -> Duration {
        self.config.stuck_after
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The data disk's room, for the watch that measures it (plenty until it does).
    pub fn room(&self) -> &Arc<Room> {
        &self.room
    }

    fn checker(&self) -> clinical::Checker {
        clinical::Checker {
            clinical: self.clinical(),
            metrics: Arc::clone(&self.metrics),
            limits: self.config.limits.clone(),
        }
    }

    /// The drug master and contraindication table in force.
    pub fn clinical(&self) -> Arc<Clinical> {
        Arc::clone(&self.clinical.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts another master and table in force for every check that starts afterwards.
    pub fn replace_clinical(&self, clinical: Arc<Clinical>) {
        *self.clinical.write().unwrap_or_else(|e| e.into_inner()) = clinical;
    }

    /// The gateway's clock, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        millis(self.clock.now())
    }

    /// The bounds in force.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// Runs `decide` and the audit record of its outcome in one transaction. A refusal rolls
    /// back every write of `decide` but those it made through its draft's `Keeping` (keeping.rs)
    /// and commits the audit record of the refusal; so does an internal error or corrupt stored
    /// data. A store that fails (I/O, engine, closed) aborts the whole transaction, and the
    /// call's audit record follows in a transaction of its own. Before any of it, the data
    /// disk's room admits the call or refuses it (free_space.rs): this is the one place that
    /// decides, by the draft's action, which calls a nearly full disk still takes.
    async fn run<T: Send + 'static>(
        &self,
        draft: AuditDraft,
        decide: impl Fn(&mut dyn Txn, &mut AuditDraft) -> Result<T, Error> + Send + Sync + 'static,
    ) -> Result<T, Error> {
        let (outcome, ()) = self
            .run_noting(draft, move |tx, draft| (decide(tx, draft), ()))
            .await?;
        outcome
    }

    /// Like [`Gateway::run`], for a `decide` that also notes something for after the commit.
    /// What follows the submission runs on a task of its own: a caller that stops waiting (a
    /// client's cancel, the deadline) must not keep a failed call's record from being written.
    async fn run_noting<T: Send + 'static, N: Send + 'static>(
        &self,
        draft: AuditDraft,
        decide: impl Fn(&mut dyn Txn, &mut AuditDraft) -> (Result<T, Error>, N) + Send + Sync + 'static,
    ) -> Result<(Result<T, Error>, N), Error> {
        let writes = draft.action.writes_new_data();
        self.run_admitted(writes, draft, decide).await
    }

    /// [`Gateway::run_noting`] for a call that `writes` new data or not: first the disk's room
    /// is asked whether it may run at all (free_space.rs).
    async fn run_admitted<T: Send + 'static, N: Send + 'static>(
        &self,
        writes: bool,
        draft: AuditDraft,
        decide: impl Fn(&mut dyn Txn, &mut AuditDraft) -> (Result<T, Error>, N) + Send + Sync + 'static,
    ) -> Result<(Result<T, Error>, N), Error> {
        if let Err(refused) = self.room.admit(writes) {
            return Err(self.refused_for_room(draft, refused).await);
        }
        // The draft as `decide` left it, for the record of a transaction that failed.
        let decided = Arc::new(std::sync::Mutex::new(draft.clone()));
        let keep = Arc::clone(&decided);
        let receipt = draft.caller.receipt.clone();
        let committed = self.store.transact(move |tx: &mut dyn Txn| {
            let mut draft = draft.clone();
            let before = tx.savepoint();
            let (outcome, noted) = decide(tx, &mut draft);
            let written = match &outcome {
                Err(Error::Store(e)) if !matches!(e, store::Error::Corrupt(_)) => Err(e.clone()),
                Err(_) => {
                    tx.rollback_to(before);
                    keeping::replay(tx, &draft.kept).and_then(|()| draft.write(tx, &outcome))
                }
                Ok(_) => draft.write(tx, &outcome),
            };
            *keep.lock().unwrap_or_else(|e| e.into_inner()) = draft;
            written.map(|()| (outcome, noted))
        });
        receipt.submit();
        let store = Arc::clone(&self.store);
        let metrics = Arc::clone(&self.metrics);
        let finished = tokio::spawn(async move {
            let draft = || decided.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let failed = match committed.await {
                Ok(Ok(done)) => {
                    if let Some(took) = draft().check_took {
                        metrics.check.observe_duration(took);
                    }
                    return Ok(done);
                }
                Ok(Err(e)) | Err(e) => Error::from(e),
            };
            audit_failed(&store, draft(), &failed).await;
            Err(failed)
        })
        .await;
        self.committed();
        finished.map_err(|e| Error::Internal(format!("the transaction's task: {e}")))?
    }

    /// A call the disk's room does not admit: its refusal is audited in a transaction of its
    /// own (on a task of its own, as a failed call's is), unless the disk is at its floor, where
    /// nothing is written: the edge audit's log line counts it (audit_edge.rs).
    async fn refused_for_room(&self, draft: AuditDraft, refused: free_space::Refused) -> Error {
        let error = refused.error;
        if refused.audited {
            draft.caller.receipt.submit();
            let (store, failed) = (Arc::clone(&self.store), error.clone());
            let _ = tokio::spawn(async move { audit_failed(&store, draft, &failed).await }).await;
        }
        error
    }

    /// Audits a call refused before it reached any stored state. It stores nothing but its
    /// record, so a disk below its low-water mark admits it as it admits a read: the caller
    /// hears why it was refused, not that the disk is nearly full.
    async fn refuse<T: Send + 'static>(&self, draft: AuditDraft, error: Error) -> Result<T, Error> {
        let refusing = move |_: &mut dyn Txn, _: &mut AuditDraft| (Err(error.clone()), ());
        let (outcome, ()) = self.run_admitted(false, draft, refusing).await?;
        outcome
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::{
        domain::ids::InstitutionKind,
        service::testing::{MIB, audit_records, caller, gateway},
    };

    /// Runs a call of `action` whose decision only notes that it ran: its answer, whether it
    /// ran, and how many audit records it left.
    async fn call(gateway: &Gateway, action: Action) -> (Result<(), Error>, bool, usize) {
        let before = audit_records(gateway).await;
        let ran = Arc::new(AtomicBool::new(false));
        let running = Arc::clone(&ran);
        let clinic = caller(InstitutionKind::Clinic);
        let draft = gateway.draft(&clinic, action, SystemTime::now());
        let answer = gateway
            .run(draft, move |_, _| {
                running.store(true, Ordering::SeqCst);
                Ok(())
            })
            .await;
        let audited = audit_records(gateway).await - before;
        (answer, ran.load(Ordering::SeqCst), audited)
    }

    #[tokio::test]
    async fn a_nearly_full_disk_refuses_new_data_before_it_runs_and_audits_the_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, _) = gateway(dir.path());
        let low = Error::DiskLow {
            free_mib: 6,
            low_water_mib: 10,
        };
        // The chain's first record comes with its genesis link: begun here, so that the
        // counts below are the calls' records alone.
        assert_eq!(call(&gateway, Action::ExportAudit).await.0, Ok(()));
        gateway.room().observe(6 * MIB, 10 * MIB);
        let register = call(&gateway, Action::RegisterPrescription).await;
        assert_eq!(register, (Err(low), false, 1));
        let status = call(&gateway, Action::GetPrescriptionStatus).await;
        assert_eq!(status, (Ok(()), true, 1));
        let clinic = caller(InstitutionKind::Clinic);
        let denied = Error::PermissionDenied("not a pharmacy");
        let refusal = gateway
            .audit_refusal(&clinic, Action::ReceivePrescription, denied.clone())
            .await;
        assert_eq!(refusal, denied, "a refusal keeps its reason");

        // At the floor nothing reaches the store.
        gateway.room().observe(MIB, 10 * MIB);
        let floor = Error::DiskLow {
            free_mib: 1,
            low_water_mib: 10,
        };
        let status = call(&gateway, Action::GetPrescriptionStatus).await;
        assert_eq!(status, (Err(floor), false, 0));

        gateway.room().observe(11 * MIB, 10 * MIB);
        let register = call(&gateway, Action::RegisterPrescription).await;
        assert_eq!(register, (Ok(()), true, 1));
    }

    #[test]
    fn the_steady_clock_counts_from_boot_and_never_goes_back() {
        let (first, second) = (SystemClock.steady(), SystemClock.steady());
        assert!(first > Duration::ZERO, "{first:?}");
        assert!(second >= first, "{first:?} then {second:?}");
    }
}
