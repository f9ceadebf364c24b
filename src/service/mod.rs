//! The use cases: register, cancel, status and search for clinics; lookup, receive, return and
//! dispense for pharmacies; the expiry sweep and the audit export. They take verified documents
//! and domain types, run each decision and its writes — and the audit record of the call — in one
//! store transaction, and return domain results. Knows no gRPC and no storage engine.

mod audit_chain;
mod audit_checkpoint;
mod audit_edge;
pub mod clinical;
mod events;
mod import;
mod intake;
mod lockout;
mod pseudonym;
pub mod records;
mod relay;
mod search;
mod signatures;

use std::{
    sync::{Arc, RwLock},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use std::collections::BTreeSet;

use prost::Message;
use ring::rand::SecureRandom;

pub use audit_chain::{Page, audit_rows, head_key, heads, link_key, parse_key};
pub use audit_checkpoint::{checkpoint_body, checkpoints_page};
pub use clinical::{
    Acknowledgement, CheckRequest, Clinical, Findings, OnCritical, RequestedOptions,
    migrate_history,
};
pub use events::{EventEntry, EventFilter};
pub use import::{FileOutcome, ImportFile, ImportSummary, imported_files};
pub use intake::{Attestation, Delivery};
pub use lockout::{Locked, LockoutPolicy, MissLimit, Subject};
pub use pseudonym::Pseudonyms;
pub use relay::DeadLetter;
pub use search::migrate_search_index;

use crate::{
    documents::bounded_count,
    domain::{
        checks::{CheckOptions, Consent, Finding, Supply},
        hash::{hex, sha256},
        ids::{Institution, InstitutionCode},
        patient::PatientKey,
        prescription::{
            Lifecycle, LifecycleError, Part, RefillWindow, State, Transition, usable_through,
        },
        rx::{
            DispensedLineFacts, DispensingFacts, DraftFacts, FieldViolation, NamedSigner,
            PrescriptionFacts, RxLine,
        },
        signature::{Refusal, SignedContent, Signer, VerifiedDocument, Verifier},
        time::JapanDate,
    },
    identity::TrustedSenders,
    limits::Limits,
    metrics::Metrics,
    proto::v1::{DispensingRecord, Prescription},
    store::{self, Store, Table, Txn},
};
use records::{
    AcknowledgedV1, AuditV1, AuditV2, ChainedV1, CheckSubjectV1, ConsentMethodV1,
    DispensingRecordRecord, DispensingV2, DocumentRecord, DocumentV1, EventKindV1, OverrideRecord,
    OverrideV1, PrescriptionRecord, PrescriptionV3, RefillWindowV1, StateV1, decode, encode,
};

/// The source of the current time. Only the composition root (app.rs) picks a real clock.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Who is calling: the institution its client certificate names, and that certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub institution: Institution,
    pub certificate_sha256: [u8; 32],
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
    /// A registration with critical findings that are not all acknowledged.
    #[error("unacknowledged critical findings")]
    CriticalFindings {
        findings: Findings,
        unacknowledged: Vec<String>,
    },
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
            Error::ResourceExhausted(_) | Error::RateLimited { .. } => "RESOURCE_EXHAUSTED".into(),
            Error::OutOfRange(_) => "OUT_OF_RANGE".into(),
            Error::CriticalFindings { .. } => "FAILED_PRECONDITION CRITICAL_FINDINGS".into(),
            Error::Internal(_) => "INTERNAL".into(),
        }
    }
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        Error::Internal(e.to_string())
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
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            max_usable_days: 30,
            lockout: LockoutPolicy::default(),
            search_limit: 100,
            checks: CheckPolicy::default(),
            limits: Limits::default(),
            pseudonyms: Pseudonyms::ephemeral(),
            stuck_after: Duration::from_secs(3 * 86_400),
            trusted_senders: TrustedSenders::default(),
            audit_writer: [0; 32],
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

/// The result of a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub id: String,
    pub exchange_number: u32,
    pub state: State,
    pub usable_through: JapanDate,
    /// The checks' findings (masked without consent).
    pub findings: Findings,
}

/// A dispensing record as the prescriber sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DispensingSummary {
    pub record_number: u32,
    pub pharmacy: String,
    pub dispensing_date: String,
    pub is_final: bool,
    pub important_information: bool,
    pub important_message: String,
    pub content: Vec<u8>,
    pub cms_signature: Vec<u8>,
    /// When the gateway received it.
    pub received_at_ms: i64,
}

impl DispensingSummary {
    /// The summary of a stored record, its signature restored.
    fn of(tx: &dyn Txn, d: DispensingV2) -> Result<Self, store::Error> {
        Ok(DispensingSummary {
            cms_signature: signatures::restore(tx, &d.cms)?,
            record_number: d.record_number,
            pharmacy: d.pharmacy,
            dispensing_date: d.dispensing_date,
            is_final: d.is_final,
            important_information: d.important_information,
            important_message: d.important_message,
            content: d.content,
            received_at_ms: d.received_at_ms,
        })
    }
}

/// A prescription's status for its prescriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: String,
    pub institution: String,
    pub number: String,
    pub state: State,
    pub issue_date: String,
    pub usable_through: String,
    pub dispensings: Vec<DispensingSummary>,
    /// Each prescription line's state.
    pub lines: Vec<LineState>,
    /// Total uses (1, or 2–3 for a refill) and uses dispensed so far.
    pub uses: u32,
    pub uses_dispensed: u32,
    /// While a refill awaits its next use: when it may be accepted.
    pub next_use: Option<RefillWindow>,
}

/// A prescription line's dispensing state (as NHS EPS has them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineState {
    /// Given whole.
    Dispensed,
    /// Given in part; the rest is owed.
    Partial,
    /// Nothing given yet; the prescription is still open.
    Owing,
    /// The prescription is closed and this line was not given.
    NotDispensed,
}

/// What a lookup shows a pharmacy: metadata, no drugs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub id: String,
    pub state: State,
    pub issue_date: String,
    pub usable_through: String,
    pub institution: String,
    pub line_count: u32,
}

/// A received prescription: the signed document handed to the pharmacy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub id: String,
    pub state: State,
    pub content: Vec<u8>,
    pub cms_signature: Vec<u8>,
    /// Advisory findings of the prescription against the patient's other medications.
    pub findings: Findings,
}

/// The result of recording a dispensing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispensed {
    pub prescription_id: String,
    pub state: State,
    pub record_number: u32,
}

/// One audit record as exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its writer's sequence (a link) or the store-wide one (an unchained record).
    pub sequence: u64,
    pub entry: ChainedV1,
    /// None for the unchained records of stores written before the chain.
    pub chain: Option<ChainLink>,
}

/// What a third party needs to check a link: its writer, the hash it names and its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    pub writer: [u8; 32],
    pub previous: [u8; 32],
    /// The stored encoding: the link's hash is its SHA-256.
    pub canonical: Vec<u8>,
}

/// The gateway's use cases over a store, a verifier and a clock.
pub struct Gateway {
    store: Arc<dyn Store>,
    verifier: Arc<Verifier>,
    clock: Arc<dyn Clock>,
    config: GatewayConfig,
    clinical: RwLock<Arc<Clinical>>,
    /// Imports run one at a time.
    imports: tokio::sync::Mutex<()>,
    /// Woken after every transaction: the event feeds wait on it.
    events: tokio::sync::Notify,
    /// Set when the server shuts down: open event feeds end (their consumers resume later).
    closing: std::sync::atomic::AtomicBool,
    metrics: Arc<Metrics>,
    rng: ring::rand::SystemRandom,
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn key(parts: &[&[u8]]) -> Vec<u8> {
    parts.join(&0u8)
}

fn exchange_key(patient: &str, exchange_number: u32) -> Vec<u8> {
    key(&[
        patient.as_bytes(),
        format!("{exchange_number:06}").as_bytes(),
    ])
}

fn state_v1(state: &State) -> StateV1 {
    match state {
        State::Registered => StateV1::Registered,
        State::Accepted { pharmacy } => StateV1::Accepted(pharmacy.to_string()),
        State::Dispensed { pharmacy } => StateV1::Dispensed(pharmacy.to_string()),
        State::Cancelled => StateV1::Cancelled,
        State::Expired => StateV1::Expired,
        State::AwaitingRefill => StateV1::AwaitingRefill,
    }
}

fn corrupt(what: &str) -> store::Error {
    store::Error::Corrupt(what.to_owned())
}

fn code(s: &str) -> Result<InstitutionCode, store::Error> {
    s.parse().map_err(|_| corrupt("institution code"))
}

fn date(s: &str) -> Result<JapanDate, store::Error> {
    s.parse().map_err(|_| corrupt("date"))
}

/// A stored prescription with its lifecycle decoded.
struct Stored {
    record: PrescriptionV3,
    lifecycle: Lifecycle,
}

fn window_of(w: &RefillWindowV1) -> Result<RefillWindow, store::Error> {
    Ok(RefillWindow {
        planned: date(&w.planned)?,
        from: date(&w.from)?,
        until: date(&w.until)?,
    })
}

impl Stored {
    fn load(tx: &dyn Txn, id: &str) -> Result<Option<Stored>, store::Error> {
        let Some(bytes) = tx.get(Table::Prescriptions, id.as_bytes())? else {
            return Ok(None);
        };
        let record = decode::<PrescriptionRecord>(&bytes)?.current();
        let state = match &record.state {
            StateV1::Registered => State::Registered,
            StateV1::Accepted(p) => State::Accepted { pharmacy: code(p)? },
            StateV1::Dispensed(p) => State::Dispensed { pharmacy: code(p)? },
            StateV1::Cancelled => State::Cancelled,
            StateV1::Expired => State::Expired,
            StateV1::AwaitingRefill => State::AwaitingRefill,
        };
        let lifecycle = Lifecycle {
            state,
            usable_through: date(&record.usable_through)?,
            returned_by: record.returned_by.as_deref().map(code).transpose()?,
            uses: record.refill_count,
            records: record.records,
            refill_window: record.refill_window.as_ref().map(window_of).transpose()?,
        };
        Ok(Some(Stored { record, lifecycle }))
    }

    /// The prescription an index entry (`table`, `key` → id) names; none without the entry, and
    /// corrupt if the entry names no prescription.
    fn indexed(tx: &dyn Txn, table: Table, key: &[u8]) -> Result<Option<Stored>, store::Error> {
        let Some(id) = tx.get(table, key)? else {
            return Ok(None);
        };
        let id = String::from_utf8(id).map_err(|_| corrupt("prescription id"))?;
        Stored::load(tx, &id)?
            .ok_or_else(|| corrupt("index without prescription"))
            .map(Some)
    }

    /// Applies `transition`, keeps the indexes of active prescriptions (and the medication
    /// history) in step, and writes.
    fn apply(
        mut self,
        tx: &mut dyn Txn,
        transition: Transition,
        today: JapanDate,
        now_ms: i64,
    ) -> Result<State, store::Error> {
        let was_active = self.lifecycle.state.is_active();
        let before = self.lifecycle.state.clone();
        let recorded = matches!(transition, Transition::Recorded { .. });
        self.lifecycle.apply(transition);
        let state = self.lifecycle.state.clone();
        let life = &self.lifecycle;
        let r = &mut self.record;
        r.state = state_v1(&state);
        r.returned_by = life.returned_by.as_ref().map(ToString::to_string);
        r.records = life.records;
        if recorded {
            r.last_record_at_ms = Some(now_ms);
        }
        if let (State::AwaitingRefill, Some(w)) = (&state, life.refill_window)
            && r.refill_window.as_ref().map(|old| old.until.as_str()) != Some(&w.until.to_string())
        {
            r.refill_window = Some(RefillWindowV1 {
                planned: w.planned.to_string(),
                from: w.from.to_string(),
                until: w.until.to_string(),
            });
            tx.put(Table::Meta, &expiry_key(&w.until.to_string(), &r.id), b"");
        }
        if matches!(state, State::Accepted { .. }) {
            tx.put(Table::Meta, &accepted_key(&r.id), b"");
        } else {
            tx.delete(Table::Meta, &accepted_key(&r.id));
        }
        match state {
            State::Accepted { .. } if r.accepted_on.is_none() => {
                r.accepted_on = Some(today.to_string());
                r.accepted_at_ms = Some(now_ms);
                r.last_record_at_ms = None;
            }
            State::Accepted { .. } | State::Dispensed { .. } => {}
            _ => {
                r.accepted_on = None;
                r.accepted_at_ms = None;
            }
        }
        if was_active && !state.is_active() {
            tx.delete(
                Table::ByExchange,
                &exchange_key(&r.patient_key, r.exchange_number),
            );
            tx.delete(Table::Meta, &expiry_key(&r.usable_through, &r.id));
            if let Some(w) = &r.refill_window {
                tx.delete(Table::Meta, &expiry_key(&w.until, &r.id));
            }
            clinical::unindex_prescription(tx, &r.patient_key, &r.id, today)?;
        }
        tx.put(
            Table::Prescriptions,
            r.id.as_bytes(),
            &encode(&PrescriptionRecord::V3(r.clone())),
        );
        let kind = match &state {
            _ if recorded => EventKindV1::DispensingRecorded,
            State::Accepted { .. } => EventKindV1::Accepted,
            State::Registered | State::AwaitingRefill => EventKindV1::Returned,
            State::Cancelled => EventKindV1::Cancelled,
            State::Expired => EventKindV1::Expired,
            State::Dispensed { .. } => EventKindV1::DispensingRecorded,
        };
        let pharmacy = match (&state, &before) {
            (State::Accepted { pharmacy } | State::Dispensed { pharmacy }, _)
            | (_, State::Accepted { pharmacy }) => Some(pharmacy.to_string()),
            _ => None,
        };
        let record_number = recorded.then_some(r.records);
        events::append(tx, r, kind, pharmacy, record_number, now_ms)?;
        Ok(state)
    }

    /// The prescription's lines, from its signed content.
    fn lines(&self) -> Result<Vec<RxLine>, store::Error> {
        let document = Prescription::decode(self.record.content.as_slice())
            .map_err(|_| corrupt("stored prescription content"))?;
        PrescriptionFacts::try_from(&document)
            .map(|facts| facts.lines)
            .map_err(|_| corrupt("stored prescription content"))
    }
}

/// The index of ACCEPTED prescriptions (for the stuck report), kept in the Meta table.
fn accepted_key(id: &str) -> Vec<u8> {
    key(&[b"accepted", id.as_bytes()])
}

/// An accepted prescription without a dispensing record for too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub id: String,
    pub institution: String,
    pub number: String,
    pub pharmacy: String,
    pub accepted_at_ms: i64,
    pub last_record_at_ms: Option<i64>,
    pub records: u32,
}

/// The expiry index of active prescriptions, kept in the Meta table: by last usable date.
fn expiry_key(usable_through: &str, id: &str) -> Vec<u8> {
    key(&[b"expiry", usable_through.as_bytes(), id.as_bytes()])
}

/// What the audit record of a call says besides its outcome.
#[derive(Debug, Clone)]
struct AuditDraft {
    /// Whose chain the record goes on.
    writer: [u8; 32],
    time_ms: i64,
    caller: Caller,
    signer: Option<Signer>,
    action: &'static str,
    target: Option<String>,
    /// With a clinical check: whom it was about and what it asked.
    check: Option<CheckSubjectV1>,
}

impl AuditDraft {
    fn write<T>(&self, tx: &mut dyn Txn, outcome: &Result<T, Error>) -> Result<(), store::Error> {
        let call = AuditV1 {
            time_ms: self.time_ms,
            institution_kind: self.caller.institution.kind.to_string(),
            institution_code: self.caller.institution.code.to_string(),
            certificate_sha256: self.caller.certificate_sha256,
            signer_serial_number: self.signer.as_ref().map(|s| s.serial_number.clone()),
            signer_certificate_sha256: self.signer.as_ref().map(|s| s.certificate_sha256),
            action: self.action.to_owned(),
            target: self.target.clone(),
            outcome: match outcome {
                Ok(_) => "OK".into(),
                Err(e) => e.audit_outcome(),
            },
        };
        let record = ChainedV1::Call(Box::new(AuditV2 {
            call,
            check: self.check,
        }));
        audit_chain::append(tx, &self.writer, self.time_ms, record)
    }
}

/// The facts of a signed document that attribute it: the institution it is filed under and the
/// person it names as its signer.
trait Attributed {
    const NAMES_ANOTHER_INSTITUTION: &'static str;
    const SIGNER_DIFFERS: &'static str;
    fn filed_under(&self) -> &InstitutionCode;
    fn named_signer(&self) -> &NamedSigner;
    /// How many lines the document has, and how many the limits allow.
    fn lines(&self) -> usize;
    fn max_lines(limits: &Limits) -> usize;
}

impl Attributed for PrescriptionFacts {
    const NAMES_ANOTHER_INSTITUTION: &'static str = "the prescription names another institution";
    const SIGNER_DIFFERS: &'static str = "the prescriber is not the signer";
    fn filed_under(&self) -> &InstitutionCode {
        &self.institution
    }
    fn named_signer(&self) -> &NamedSigner {
        &self.prescriber
    }
    fn lines(&self) -> usize {
        self.lines.len()
    }
    fn max_lines(limits: &Limits) -> usize {
        limits.prescription_lines
    }
}

impl Attributed for DispensingFacts {
    const NAMES_ANOTHER_INSTITUTION: &'static str = "the record names another pharmacy";
    const SIGNER_DIFFERS: &'static str = "the pharmacist is not the signer";
    fn filed_under(&self) -> &InstitutionCode {
        &self.pharmacy
    }
    fn named_signer(&self) -> &NamedSigner {
        &self.pharmacist
    }
    fn lines(&self) -> usize {
        self.lines.len()
    }
    fn max_lines(limits: &Limits) -> usize {
        limits.dispensing_lines
    }
}

/// Names a check's subject in its audit draft and spends its lines of the patient's budget.
fn begin_check(
    tx: &mut dyn Txn,
    draft: &mut AuditDraft,
    (pseudonyms, limits): (&Pseudonyms, &Limits),
    patient: &str,
    lines: usize,
    consent: Consent,
) -> Result<clinical::Budget, store::Error> {
    draft.check = Some(subject_of(pseudonyms, patient, lines, consent));
    clinical::spend_check_budget(tx, patient, lines, draft.time_ms, limits)
}

fn subject_of(
    pseudonyms: &Pseudonyms,
    patient: &str,
    lines: usize,
    consent: Consent,
) -> CheckSubjectV1 {
    CheckSubjectV1 {
        patient_pseudonym: pseudonyms.of(patient),
        lines: lines as u32,
        consent: consent_v1(consent),
    }
}

fn consent_v1(consent: Consent) -> ConsentMethodV1 {
    match consent {
        Consent::Card => ConsentMethodV1::Card,
        Consent::Verbal => ConsentMethodV1::Verbal,
        Consent::None => ConsentMethodV1::None,
    }
}

fn signer_matches(named: &NamedSigner, signer: &Signer) -> bool {
    named.name == signer.name && named.serial_number == signer.serial_number
}

impl Gateway {
    pub fn new(
        store: Arc<dyn Store>,
        verifier: Arc<Verifier>,
        clock: Arc<dyn Clock>,
        clinical: Arc<Clinical>,
        config: GatewayConfig,
    ) -> Self {
        Gateway {
            store,
            verifier,
            clock,
            clinical: RwLock::new(clinical),
            imports: tokio::sync::Mutex::new(()),
            events: tokio::sync::Notify::new(),
            closing: std::sync::atomic::AtomicBool::new(false),
            metrics: Arc::new(Metrics::default()),
            config,
            rng: ring::rand::SystemRandom::new(),
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

    fn draft(&self, caller: &Caller, action: &'static str, now: SystemTime) -> AuditDraft {
        AuditDraft {
            writer: self.config.audit_writer,
            time_ms: millis(now),
            caller: caller.clone(),
            signer: None,
            action,
            target: None,
            check: None,
        }
    }

    /// The gateway's clock, in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        millis(self.clock.now())
    }

    /// The bounds in force.
    pub fn limits(&self) -> &Limits {
        &self.config.limits
    }

    /// Whom a check is about (by pseudonym), its lines and the consent asserted, as its audit
    /// record names them.
    fn subject(&self, patient: &str, lines: usize, check: CheckRequest) -> CheckSubjectV1 {
        subject_of(&self.config.pseudonyms, patient, lines, check.consent)
    }

    /// Names the check's subject in the audit draft; refuses more lines than the consent allows.
    fn check_subject(
        &self,
        draft: &mut AuditDraft,
        patient: &str,
        lines: usize,
        consent: Consent,
    ) -> Result<(), Error> {
        draft.check = Some(subject_of(&self.config.pseudonyms, patient, lines, consent));
        if consent == Consent::None {
            bounded_count("lines", lines, self.config.limits.unconsented_check_lines)
                .map_err(Error::InvalidArgument)?;
        }
        Ok(())
    }

    /// Runs `decide` and the audit record of its outcome in one transaction. The writes of
    /// `decide` are committed whatever its outcome but an internal error (which rolls back
    /// everything): a refusal may count what it refused. A transaction that fails so still
    /// leaves its audit record, written in a transaction of its own.
    async fn run<T: Send + 'static>(
        &self,
        draft: AuditDraft,
        decide: impl FnOnce(&mut dyn Txn, &mut AuditDraft) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (outcome, ()) = self
            .run_noting(draft, move |tx, draft| (decide(tx, draft), ()))
            .await?;
        outcome
    }

    /// Like [`Gateway::run`], for a `decide` that also notes something for after the commit.
    async fn run_noting<T: Send + 'static, N: Send + 'static>(
        &self,
        draft: AuditDraft,
        decide: impl FnOnce(&mut dyn Txn, &mut AuditDraft) -> (Result<T, Error>, N) + Send + 'static,
    ) -> Result<(Result<T, Error>, N), Error> {
        // The draft as `decide` left it, for the record of a transaction that failed.
        let decided = Arc::new(std::sync::Mutex::new(draft.clone()));
        let keep = Arc::clone(&decided);
        let outcome = self
            .store
            .transact(move |tx: &mut dyn Txn| {
                let mut draft = draft;
                let (outcome, noted) = decide(tx, &mut draft);
                let written = match &outcome {
                    // A store error inside `decide` aborts the whole transaction.
                    Err(Error::Internal(e)) => Err(store::Error::Engine(e.clone())),
                    _ => draft.write(tx, &outcome),
                };
                *keep.lock().unwrap_or_else(|e| e.into_inner()) = draft;
                written.map(|()| (outcome, noted))
            })
            .await;
        self.events.notify_waiters();
        let failed = match outcome {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(e)) | Err(e) => Error::from(e),
        };
        let draft = decided.lock().unwrap_or_else(|e| e.into_inner()).clone();
        self.audit_failed(draft, &failed).await;
        Err(failed)
    }

    /// Writes the audit record of a call whose transaction failed, in a transaction of its own.
    async fn audit_failed(&self, draft: AuditDraft, failed: &Error) {
        let action = draft.action;
        let outcome: Result<(), Error> = Err(failed.clone());
        let written = self
            .store
            .transact(move |tx: &mut dyn Txn| draft.write(tx, &outcome))
            .await;
        if let Err(e) | Ok(Err(e)) = written {
            tracing::error!(action, error = %e, "the audit record of a failed call could not be written");
        }
    }

    /// Audits a call refused before it reached any stored state.
    async fn refuse<T: Send + 'static>(&self, draft: AuditDraft, error: Error) -> Result<T, Error> {
        self.run(draft, move |_, _| Err(error)).await
    }

    /// Verifies a signed document on the calling task's thread, not with `spawn_blocking`: a
    /// verification takes ~0.1–0.2 ms with a cached chain (~0.5 ms cold), and handing it to the
    /// blocking pool and back cost more than it freed (register 2,413 → 2,696/s on 2 cores when
    /// inlined; README).
    fn verify<D: SignedContent>(
        &self,
        content: &[u8],
        cms: &[u8],
        now: SystemTime,
    ) -> Result<VerifiedDocument<D>, Error> {
        self.verifier
            .verify::<D>(content, cms, now)
            .map_err(Error::Signature)
    }

    /// What registering and dispensing check alike: the signature, then the document's facts,
    /// which must name the caller's institution and, as prescriber or pharmacist, the signer.
    /// Records the verified signer in the audit draft.
    fn admit<D, F>(
        &self,
        caller: &Caller,
        draft: &mut AuditDraft,
        content: &[u8],
        cms: &[u8],
        now: SystemTime,
    ) -> Result<(VerifiedDocument<D>, F), Error>
    where
        D: SignedContent,
        F: Attributed + for<'a> TryFrom<&'a D, Error = Vec<FieldViolation>>,
    {
        let verified = self.verify::<D>(content, cms, now)?;
        draft.signer = Some(verified.signer().clone());
        let facts = F::try_from(verified.document()).map_err(Error::InvalidArgument)?;
        bounded_count("lines", facts.lines(), F::max_lines(&self.config.limits))
            .map_err(Error::InvalidArgument)?;
        if *facts.filed_under() != caller.institution.code {
            return Err(Error::PermissionDenied(F::NAMES_ANOTHER_INSTITUTION));
        }
        if !signer_matches(facts.named_signer(), verified.signer()) {
            return Err(Error::PermissionDenied(F::SIGNER_DIFFERS));
        }
        Ok((verified, facts))
    }

    /// `n` exchange numbers drawn uniformly from 000000–999999, each round of `n` draws from
    /// one read of the system RNG (a read is a system call).
    fn random_exchange_numbers(&self, n: usize) -> Vec<u32> {
        let mut out = Vec::with_capacity(n);
        let mut bytes = vec![0u8; 4 * n];
        while out.len() < n {
            self.rng.fill(&mut bytes).expect("the system RNG works");
            let draws = bytes
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("four bytes")));
            // Rejection sampling keeps the 10^6 values uniform.
            out.extend(
                draws
                    .filter(|v| *v < u32::MAX - u32::MAX % 1_000_000)
                    .map(|v| v % 1_000_000)
                    .take(n - out.len()),
            );
        }
        out
    }

    fn random_id(&self) -> String {
        let mut b = [0u8; 16];
        self.rng.fill(&mut b).expect("the system RNG works");
        hex(&b)
    }

    /// A clinic registers a doctor-signed prescription, checked against the patient's other
    /// medications: under `OnCritical::RequireOverride` a critical finding must be acknowledged.
    pub async fn register(
        &self,
        caller: &Caller,
        content: Vec<u8>,
        cms: Vec<u8>,
        check: CheckRequest,
        acks: Vec<Acknowledgement>,
    ) -> Result<Registered, Error> {
        let now = self.clock.now();
        let today = JapanDate::of(now);
        let mut draft = self.draft(caller, "RegisterPrescription", now);
        let admitted = self
            .admit::<Prescription, PrescriptionFacts>(caller, &mut draft, &content, &cms, now)
            .and_then(|(verified, facts)| {
                if facts.issue_date.days_until(today).abs() > 1 {
                    return Err(Error::invalid(
                        "issue_date",
                        "must be the Japan date of receipt (one day of tolerance)",
                    ));
                }
                if let Some(until) = facts.usable_until
                    && (until < facts.issue_date
                        || facts.issue_date.days_until(until) > self.config.max_usable_days as i32)
                {
                    return Err(Error::invalid(
                        "usable_until",
                        "must lie between the issue date and the configured maximum",
                    ));
                }
                if facts.refill_count > 1 && longest_days(&facts.lines).is_none() {
                    return Err(Error::invalid(
                        "refill_count",
                        "a refill prescription needs a days-based line (its uses are planned by it)",
                    ));
                }
                Ok((verified, facts))
            });
        let (verified, facts) = match admitted {
            Ok(admitted) => admitted,
            Err(e) => return self.refuse(draft, e).await,
        };
        draft.check = Some(self.subject(facts.patient.canonical(), facts.lines.len(), check));

        let content_sha256 = sha256(verified.content());
        let through = usable_through(facts.issue_date, facts.usable_until);
        let id = self.random_id();
        let candidates = self.random_exchange_numbers(16);
        let signer = verified.signer().clone();
        let (cms, certificates) = signatures::cut(verified.cms_signature());
        let record = PrescriptionV3 {
            id: id.clone(),
            institution: facts.institution.to_string(),
            number: facts.number.as_str().to_owned(),
            patient_key: facts.patient.canonical().to_owned(),
            exchange_number: 0,
            issue_date: facts.issue_date.to_string(),
            usable_through: through.to_string(),
            state: StateV1::Registered,
            returned_by: None,
            accepted_on: None,
            line_count: facts.lines.len() as u32,
            refill_count: facts.refill_count,
            content: verified.content().to_vec(),
            cms,
            content_sha256,
            signer_serial_number: signer.serial_number.clone(),
            signer_certificate_sha256: signer.certificate_sha256,
            received_at_ms: millis(now),
            records: 0,
            refill_window: None,
            accepted_at_ms: None,
            last_record_at_ms: None,
        };
        let checker = self.checker();
        let options = check.options.over(self.config.checks.defaults);
        let on_critical = self.config.checks.on_critical;
        let caller = caller.clone();
        let lines = facts.lines;
        let limits = self.config.limits.clone();
        self.run(draft, move |tx, draft| {
            let new_lines = clinical::new_lines(lines.iter().map(|l| &l.drug));
            let history = clinical::PatientHistory::read(tx, &record.patient_key)?;
            // Spent by every registration, a refused or repeated one too (it is written even
            // when the registration is refused, as the audit record is: that is its point).
            let budget =
                clinical::spend_check_budget(tx, &record.patient_key, lines.len(), draft.time_ms, &limits)?;
            let consent = clinical::budgeted_consent(budget, check.consent);
            let findings_excluding = |tx: &dyn Txn, id: &str| {
                let subject = clinical::Subject {
                    caller: &caller.institution.code,
                    patient: &record.patient_key,
                    today,
                    lines: &new_lines,
                    exclude: Some(id),
                };
                checker.run_on(tx, &subject, &history, &options, consent)
            };
            // The institution's number again: with the same content (the number is part of it),
            // the original answer and nothing new stored; with other content, refused.
            let number_key = key(&[record.institution.as_bytes(), record.number.as_bytes()]);
            if let Some(stored) = Stored::indexed(tx, Table::ByNumber, &number_key)? {
                let id = stored.record.id.clone();
                if stored.record.content_sha256 != content_sha256 {
                    return Err(Error::AlreadyExists(
                        "the institution has registered this prescription number with other content",
                    ));
                }
                draft.target = Some(id.clone());
                return Ok(Registered {
                    findings: findings_excluding(tx, &id)?,
                    id,
                    exchange_number: stored.record.exchange_number,
                    state: stored.lifecycle.state_on(today),
                    usable_through: stored.lifecycle.usable_through,
                });
            }
            clinical::admit_prescribed(&history, &record.institution, lines.len(), &limits)?;
            let findings = findings_excluding(tx, &record.id)?;
            let unacknowledged = clinical::unacknowledged(&findings.shown, &acks);
            if on_critical == OnCritical::RequireOverride && !unacknowledged.is_empty() {
                return Err(Error::CriticalFindings {
                    findings,
                    unacknowledged,
                });
            }
            let mut record = record;
            let exchange_number =
                allocate_exchange_number(tx, &record.patient_key, &candidates, today)?;
            record.exchange_number = exchange_number;
            signatures::store_certificates(tx, &certificates)?;
            let id_bytes = record.id.as_bytes();
            tx.put(
                Table::ByExchange,
                &exchange_key(&record.patient_key, exchange_number),
                id_bytes,
            );
            tx.put(Table::ByPatient, &search::index_key(&record), b"");
            tx.put(Table::ByNumber, &number_key, id_bytes);
            tx.put(
                Table::Meta,
                &expiry_key(&record.usable_through, &record.id),
                b"",
            );
            tx.put(
                Table::Prescriptions,
                id_bytes,
                &encode(&PrescriptionRecord::V3(record.clone())),
            );
            clinical::index_prescription(
                tx,
                history,
                &clinical::Prescribed {
                    patient: &record.patient_key,
                    id: &record.id,
                    institution: &record.institution,
                    issue_date: facts.issue_date,
                    lines: &lines,
                },
                today,
            )?;
            clinical::record_consent(
                tx,
                &record.patient_key,
                &caller,
                check.consent,
                draft.time_ms,
                draft.action,
                Some(&record.id),
            )?;
            record_overrides(
                tx,
                &record,
                &caller,
                &signer,
                draft.time_ms,
                &findings.shown,
                &acks,
            );
            events::append(
                tx,
                &record,
                EventKindV1::Registered,
                None,
                None,
                draft.time_ms,
            )?;
            draft.target = Some(record.id.clone());
            Ok(Registered {
                id: record.id,
                exchange_number,
                state: State::Registered,
                usable_through: through,
                findings,
            })
        })
        .await
    }

    /// The prescribing clinic cancels a prescription not yet accepted.
    pub async fn cancel(&self, caller: &Caller, id: String) -> Result<State, Error> {
        let now = self.clock.now();
        let today = JapanDate::of(now);
        let now_ms = millis(now);
        let caller_code = caller.institution.code.to_string();
        let mut draft = self.draft(caller, "CancelPrescription", now);
        draft.target = Some(id.clone());
        self.run(draft, move |tx, _| {
            let stored = own_prescription(tx, &id, &caller_code)?;
            let transition = stored.lifecycle.cancel(today)?;
            Ok(match transition {
                Transition::Unchanged => stored.lifecycle.state_on(today),
                t => stored.apply(tx, t, today, now_ms)?,
            })
        })
        .await
    }

    /// The status of one of the caller's prescriptions.
    pub async fn status(&self, caller: &Caller, id: String) -> Result<Status, Error> {
        let now = self.clock.now();
        let today = JapanDate::of(now);
        let caller_code = caller.institution.code.to_string();
        let mut draft = self.draft(caller, "GetPrescriptionStatus", now);
        draft.target = Some(id.clone());
        self.run(draft, move |tx, _| {
            let stored = own_prescription(tx, &id, &caller_code)?;
            status_of(tx, stored, today)
        })
        .await
    }

    /// A pharmacy looks at a prescription without changing anything.
    pub async fn lookup(
        &self,
        caller: &Caller,
        patient: PatientKey,
        exchange_number: u32,
    ) -> Result<Summary, Error> {
        let now = self.clock.now();
        let today = JapanDate::of(now);
        let draft = self.draft(caller, "LookupPrescription", now);
        let guessed = patient.clone();
        self.guarded(draft, &guessed, move |tx, draft| {
            let stored = find_active(tx, &patient, exchange_number)?;
            draft.target = Some(stored.record.id.clone());
            let r = &stored.record;
            Ok(Summary {
                id: r.id.clone(),
                state: stored.lifecycle.state_on(today),
                issue_date: r.issue_date.clone(),
                usable_through: r.usable_through.clone(),
                institution: r.institution.clone(),
                line_count: r.line_count,
            })
        })
        .await
    }

    /// A pharmacy accepts a prescription and receives the signed document, with advisory
    /// findings of its lines against the patient's other medications.
    pub async fn receive(
        &self,
        caller: &Caller,
        patient: PatientKey,
        exchange_number: u32,
        check: CheckRequest,
    ) -> Result<Received, Error> {
        let now = self.clock.now();
        let today = JapanDate::of(now);
        let now_ms = millis(now);
        let pharmacy = caller.institution.code.clone();
        let draft = self.draft(caller, "ReceivePrescription", now);
        let checker = self.checker();
        let options = check.options.over(self.config.checks.defaults);
        let asserting = caller.clone();
        let pseudonyms = self.config.pseudonyms.clone();
        let guessed = patient.clone();
        self.guarded(draft, &guessed, move |tx, draft| {
            let stored = find_active(tx, &patient, exchange_number)?;
            draft.target = Some(stored.record.id.clone());
            let transition = stored.lifecycle.accept(&pharmacy, today)?;
            let lines = clinical::new_lines(stored.lines()?.iter().map(|l| &l.drug));
            let patient = &stored.record.patient_key;
            let budget = begin_check(
                tx,
                draft,
                (&pseudonyms, &checker.limits),
                patient,
                lines.len(),
                check.consent,
            )?;
            let subject = clinical::Subject {
                caller: &pharmacy,
                patient: &stored.record.patient_key,
                today,
                lines: &lines,
                exclude: Some(&stored.record.id),
            };
            let consent = clinical::budgeted_consent(budget, check.consent);
            let findings = checker.run(tx, &subject, &options, consent)?;
            let (id, content, cms_signature) = (
                stored.record.id.clone(),
                stored.record.content.clone(),
                signatures::restore(tx, &stored.record.cms)?,
            );
            let patient_key = stored.record.patient_key.clone();
            let state = match transition {
                Transition::Unchanged => stored.lifecycle.state_on(today),
                t => stored.apply(tx, t, today, now_ms)?,
            };
            clinical::record_consent(
                tx,
                &patient_key,
                &asserting,
                check.consent,
                draft.time_ms,
                draft.action,
                Some(&id),
            )?;
            Ok(Received {
                id,
                state,
                content,
                cms_signature,
                findings,
            })
        })
        .await
    }

    /// A clinic's pre-issue check of an unsigned draft. Changes nothing but the audit log, the
    /// consent record and the patient's check budget, which it spends (per patient, across
    /// institutions).
    pub async fn check_prescription(
        &self,
        caller: &Caller,
        draft_facts: DraftFacts,
        check: CheckRequest,
    ) -> Result<Findings, Error> {
        let now = self.clock.now();
        let today = JapanDate::of(now);
        let mut draft = self.draft(caller, "CheckPrescription", now);
        let patient = draft_facts.patient.canonical().to_owned();
        let admitted = self
            .check_subject(&mut draft, &patient, draft_facts.lines.len(), check.consent)
            .and_then(|()| {
                if draft_facts.institution != caller.institution.code {
                    return Err(Error::PermissionDenied(
                        "the draft names another institution",
                    ));
                }
                Ok(())
            });
        if let Err(e) = admitted {
            return self.refuse(draft, e).await;
        }
        let checker = self.checker();
        let options = check.options.over(self.config.checks.defaults);
        let asserting = caller.clone();
        self.run(draft, move |tx, draft| {
            let lines = clinical::new_lines(draft_facts.lines.iter().map(|l| &l.drug));
            let budget = clinical::spend_check_budget(
                tx,
                &patient,
                lines.len(),
                draft.time_ms,
                &checker.limits,
            )?;
            if budget == clinical::Budget::Spent {
                return Err(clinical::budget_refusal(&checker.limits));
            }
            let subject = clinical::Subject {
                caller: &asserting.institution.code,
                patient: &patient,
                today,
                lines: &lines,
                exclude: None,
            };
            let findings = checker.run(tx, &subject, &options, check.consent)?;
            clinical::record_consent(
                tx,
                &patient,
                &asserting,
                check.consent,
                draft.time_ms,
                draft.action,
                None,
            )?;
            Ok(findings)
        })
        .await
    }

    /// The accepting pharmacy checks the lines it is about to dispense (which may differ from
    /// the prescription after a query to the prescriber). Advisory; changes nothing but the audit
    /// log, the consent record and the patient's check budget, which it spends.
    pub async fn check_dispensing(
        &self,
        caller: &Caller,
        id: String,
        lines: Vec<DispensedLineFacts>,
        check: CheckRequest,
    ) -> Result<Findings, Error> {
        let now = self.clock.now();
        let today = JapanDate::of(now);
        let mut draft = self.draft(caller, "CheckDispensing", now);
        draft.target = Some(id.clone());
        if check.consent == Consent::None
            && let Err(e) = bounded_count(
                "lines",
                lines.len(),
                self.config.limits.unconsented_check_lines,
            )
        {
            return self.refuse(draft, Error::InvalidArgument(e)).await;
        }
        let checker = self.checker();
        let options = check.options.over(self.config.checks.defaults);
        let asserting = caller.clone();
        let pseudonyms = self.config.pseudonyms.clone();
        self.run(draft, move |tx, draft| {
            let stored = Stored::load(tx, &id)?.ok_or(Error::NotFound)?;
            match &stored.lifecycle.state {
                State::Accepted { pharmacy } if *pharmacy == asserting.institution.code => {}
                _ => {
                    return Err(Error::PermissionDenied(
                        "only the accepting pharmacy may check a dispensing",
                    ));
                }
            }
            let patient = &stored.record.patient_key;
            let budget = begin_check(
                tx,
                draft,
                (&pseudonyms, &checker.limits),
                patient,
                lines.len(),
                check.consent,
            )?;
            if budget == clinical::Budget::Spent {
                return Err(clinical::budget_refusal(&checker.limits));
            }
            let new_lines = clinical::new_lines(lines.iter().map(|l| &l.drug));
            let subject = clinical::Subject {
                caller: &asserting.institution.code,
                patient,
                today,
                lines: &new_lines,
                exclude: Some(&id),
            };
            let findings = checker.run(tx, &subject, &options, check.consent)?;
            clinical::record_consent(
                tx,
                patient,
                &asserting,
                check.consent,
                draft.time_ms,
                draft.action,
                Some(&id),
            )?;
            Ok(findings)
        })
        .await
    }

    /// The accepting pharmacy hands a prescription back.
    pub async fn give_back(&self, caller: &Caller, id: String) -> Result<State, Error> {
        let now = self.clock.now();
        let today = JapanDate::of(now);
        let now_ms = millis(now);
        let pharmacy = caller.institution.code.clone();
        let mut draft = self.draft(caller, "ReturnPrescription", now);
        draft.target = Some(id.clone());
        self.run(draft, move |tx, _| {
            let stored = Stored::load(tx, &id)?.ok_or(Error::NotFound)?;
            let transition = stored
                .lifecycle
                .give_back(&pharmacy, today)
                .map_err(only_the_holder)?;
            Ok(match transition {
                Transition::Unchanged => stored.lifecycle.state_on(today),
                t => stored.apply(tx, t, today, now_ms)?,
            })
        })
        .await
    }

    /// The accepting pharmacy registers a pharmacist-signed dispensing record.
    pub async fn dispense(
        &self,
        caller: &Caller,
        content: Vec<u8>,
        cms: Vec<u8>,
    ) -> Result<Dispensed, Error> {
        let now = self.clock.now();
        let today = JapanDate::of(now);
        let now_ms = millis(now);
        let mut draft = self.draft(caller, "RecordDispensing", now);
        let admitted = self
            .admit::<DispensingRecord, DispensingFacts>(caller, &mut draft, &content, &cms, now)
            .and_then(|(verified, facts)| {
                if facts.dispensing_date > today {
                    return Err(Error::invalid(
                        "dispensing_date",
                        "must not lie after the date of receipt",
                    ));
                }
                Ok((verified, facts))
            });
        let (verified, facts) = match admitted {
            Ok(admitted) => admitted,
            Err(e) => return self.refuse(draft, e).await,
        };
        let content_sha256 = sha256(verified.content());
        let signer = verified.signer().clone();
        let document = verified.document().clone();
        let record_content = verified.content().to_vec();
        let (record_signature, certificates) = signatures::cut(verified.cms_signature());
        let limits = self.config.limits.clone();
        self.run(draft, move |tx, draft| {
            if let Some(bytes) = tx.get(Table::Documents, &content_sha256)? {
                let DocumentRecord::V1(DocumentV1::Dispensing {
                    prescription_id,
                    record_number,
                }) = decode(&bytes)?
                else {
                    return Err(Error::AlreadyExists(
                        "this content is registered as another kind of document",
                    ));
                };
                let stored = Stored::load(tx, &prescription_id)?
                    .ok_or_else(|| corrupt("document without prescription"))?;
                draft.target = Some(prescription_id.clone());
                return Ok(Dispensed {
                    prescription_id,
                    state: stored.lifecycle.state_on(today),
                    record_number,
                });
            }
            let number_key = key(&[
                facts.institution.as_str().as_bytes(),
                facts.number.as_str().as_bytes(),
            ]);
            let id = tx
                .get(Table::ByNumber, &number_key)?
                .ok_or(Error::NotFound)?;
            let id = String::from_utf8(id).map_err(|_| corrupt("prescription id"))?;
            draft.target = Some(id.clone());
            let stored =
                Stored::load(tx, &id)?.ok_or_else(|| corrupt("index without prescription"))?;
            let record_key = key(&[id.as_bytes(), &facts.record_number.to_be_bytes()]);
            if tx.get(Table::Dispensings, &record_key)?.is_some() {
                return Err(Error::AlreadyExists(
                    "this record number is registered with other content",
                ));
            }
            let prescribed = stored.lines()?;
            let mut progress = LineProgress::of(tx, &id)?;
            progress.add(&facts.lines);
            let part = Part {
                record_number: facts.record_number,
                completes: facts.is_final || progress.all_complete(prescribed.len()),
                dispensing_date: facts.dispensing_date,
                longest_days: longest_days(&prescribed).unwrap_or(0),
            };
            let transition = stored
                .lifecycle
                .dispense(&facts.pharmacy, today, part)
                .map_err(only_the_holder)?;
            if let Some(accepted_on) = &stored.record.accepted_on
                && facts.dispensing_date < date(accepted_on)?
            {
                return Err(Error::invalid(
                    "dispensing_date",
                    "must not lie before the acceptance",
                ));
            }
            // A prescribed line may be given as two products (two strengths), no more: a record
            // cannot add more to the patient's history than its prescription allows.
            if facts.lines.len() > 2 * prescribed.len() {
                return Err(Error::invalid(
                    "lines",
                    "at most two given lines per prescription line",
                ));
            }
            if facts
                .lines
                .iter()
                .any(|l| l.prescription_line as usize >= prescribed.len())
            {
                return Err(Error::invalid(
                    "lines.prescription_line",
                    "must name a line of the prescription",
                ));
            }
            clinical::index_dispensing(
                tx,
                &clinical::Dispensed {
                    patient: &stored.record.patient_key,
                    prescription_id: &id,
                    prescriber: &stored.record.institution,
                    pharmacy: facts.pharmacy.as_str(),
                    date: facts.dispensing_date,
                    record_number: facts.record_number,
                    prescribed: &prescribed,
                    lines: &facts.lines,
                },
                today,
                &limits,
            )?;
            signatures::store_certificates(tx, &certificates)?;
            let record = DispensingV2 {
                prescription_id: id.clone(),
                record_number: facts.record_number,
                pharmacy: facts.pharmacy.to_string(),
                dispensing_date: facts.dispensing_date.to_string(),
                is_final: facts.is_final,
                important_information: facts.important_information,
                important_message: document.important_message.clone(),
                content: record_content,
                cms: record_signature,
                content_sha256,
                signer_serial_number: signer.serial_number.clone(),
                signer_certificate_sha256: signer.certificate_sha256,
                received_at_ms: millis(now),
            };
            tx.put(
                Table::Dispensings,
                &record_key,
                &encode(&DispensingRecordRecord::V2(record)),
            );
            tx.put(
                Table::Documents,
                &content_sha256,
                &encode(&DocumentRecord::V1(DocumentV1::Dispensing {
                    prescription_id: id.clone(),
                    record_number: facts.record_number,
                })),
            );
            let state = stored.apply(tx, transition, today, now_ms)?;
            Ok(Dispensed {
                prescription_id: id,
                state,
                record_number: facts.record_number,
            })
        })
        .await
    }

    /// Writes EXPIRED on every registered prescription past its last usable date as of now;
    /// returns how many. Run periodically by the server.
    pub async fn sweep_expired(&self) -> Result<usize, Error> {
        let now = self.clock.now();
        let (today, now_ms) = (JapanDate::of(now), millis(now));
        let outcome = self
            .store
            .transact(move |tx: &mut dyn Txn| -> Result<usize, store::Error> {
                // Keys sort by date: everything before today's key is past its last usable day.
                let end = key(&[b"expiry", today.to_string().as_bytes()]);
                let mut expired = 0;
                for (k, _) in tx.scan_range(Table::Meta, b"expiry\0", &end, 10_000)? {
                    let id =
                        String::from_utf8_lossy(k.rsplit(|b| *b == 0).next().unwrap_or_default())
                            .into_owned();
                    let Some(stored) = Stored::load(tx, &id)? else {
                        tx.delete(Table::Meta, &k);
                        continue;
                    };
                    match stored.lifecycle.expire(today) {
                        // apply() drops the index entry of a prescription that stops being active
                        Some(t) => {
                            stored.apply(tx, t, today, now_ms)?;
                            expired += 1;
                        }
                        None if !stored.lifecycle.state.is_active() => tx.delete(Table::Meta, &k),
                        // accepted: it does not expire, but stays indexed in case it is returned
                        None => {}
                    }
                }
                Ok(expired)
            })
            .await
            .map_err(Error::from)?;
        self.events.notify_waiters();
        outcome.map_err(Error::from)
    }

    /// The prescriptions ACCEPTED for longer than `after` without a dispensing record since the
    /// acceptance or the last part, oldest first. The index is read a page per transaction, so
    /// the store's writer serves other calls between pages however many are accepted.
    pub async fn stuck(&self, after: Duration) -> Result<Vec<Stuck>, Error> {
        const PAGE: usize = 1_000;
        let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        let horizon = millis(self.clock.now()).saturating_sub(after_ms);
        let mut stuck = Vec::new();
        let mut from = key(&[b"accepted", b""]);
        loop {
            let start = from.clone();
            let (page, next) = self
                .store
                .transact(move |tx: &mut dyn Txn| stuck_page(tx, &start, PAGE, horizon))
                .await
                .map_err(Error::from)?
                .map_err(Error::from)?;
            stuck.extend(page);
            match next {
                Some(next) => from = next,
                None => break,
            }
        }
        stuck.sort_by_key(|s| s.last_record_at_ms.unwrap_or(s.accepted_at_ms));
        Ok(stuck)
    }

    /// Audits a successful access that changes nothing (an audit export).
    pub async fn audit_access(&self, caller: &Caller, action: &'static str) -> Result<(), Error> {
        let draft = self.draft(caller, action, self.clock.now());
        self.run(draft, |_, _| Ok(())).await
    }

    /// Audits a call refused by the protocol layer (for example a caller of the wrong kind).
    pub async fn audit_refusal(
        &self,
        caller: &Caller,
        action: &'static str,
        error: Error,
    ) -> Error {
        let draft = self.draft(caller, action, self.clock.now());
        match self.refuse::<()>(draft, error).await {
            Err(e) => e,
            Ok(()) => Error::Internal("a refusal succeeded".into()),
        }
    }

    /// How long until the next expiry sweep is worth running: at the next Japan midnight.
    pub fn until_next_day(&self) -> Duration {
        let now = self.clock.now();
        let next = JapanDate::of(now).add_days(1).start();
        next.duration_since(now).unwrap_or(Duration::from_secs(1))
    }
}

/// The longest days supplied among days-based lines, if there is one.
fn longest_days(lines: &[RxLine]) -> Option<u32> {
    lines
        .iter()
        .filter_map(|l| match l.supply {
            Supply::Days(n) => Some(n),
            Supply::AsNeeded | Supply::External => None,
        })
        .max()
}

/// What the dispensing records of a prescription have given, line by line.
#[derive(Debug, Default)]
struct LineProgress {
    complete: BTreeSet<u32>,
    partial: BTreeSet<u32>,
}

impl LineProgress {
    /// From the prescription's registered dispensing records.
    fn of(tx: &dyn Txn, id: &str) -> Result<LineProgress, store::Error> {
        Ok(Self::with_records(tx, id)?.0)
    }

    /// The progress and the stored records it comes from, in record-number order.
    fn with_records(
        tx: &dyn Txn,
        id: &str,
    ) -> Result<(LineProgress, Vec<DispensingV2>), store::Error> {
        let mut progress = LineProgress::default();
        let mut records = Vec::new();
        for (_, v) in tx.scan_prefix(Table::Dispensings, &key(&[id.as_bytes(), b""]), usize::MAX)? {
            let d = decode::<DispensingRecordRecord>(&v)?.current();
            let document = DispensingRecord::decode(d.content.as_slice())
                .map_err(|_| corrupt("stored dispensing record"))?;
            let facts = DispensingFacts::try_from(&document)
                .map_err(|_| corrupt("stored dispensing record"))?;
            progress.add(&facts.lines);
            records.push(d);
        }
        Ok((progress, records))
    }

    fn add(&mut self, lines: &[DispensedLineFacts]) {
        for l in lines {
            if l.complete {
                self.complete.insert(l.prescription_line);
            } else {
                self.partial.insert(l.prescription_line);
            }
        }
    }

    fn all_complete(&self, line_count: usize) -> bool {
        (0..line_count as u32).all(|i| self.complete.contains(&i))
    }

    /// Each prescription line's state: given whole, given in part, still owed, or — once the
    /// prescription is closed — not dispensed.
    fn states(&self, line_count: u32, open: bool) -> Vec<LineState> {
        (0..line_count)
            .map(|i| {
                if self.complete.contains(&i) {
                    LineState::Dispensed
                } else if self.partial.contains(&i) {
                    LineState::Partial
                } else if open {
                    LineState::Owing
                } else {
                    LineState::NotDispensed
                }
            })
            .collect()
    }
}

/// Stores the findings a registration acknowledged (those among its findings), with who did.
fn record_overrides(
    tx: &mut dyn Txn,
    record: &PrescriptionV3,
    caller: &Caller,
    signer: &Signer,
    time_ms: i64,
    findings: &[Finding],
    acks: &[Acknowledgement],
) {
    let acknowledged: Vec<AcknowledgedV1> = acks
        .iter()
        .filter_map(|a| {
            let f = findings.iter().find(|f| f.id == a.finding_id)?;
            Some(AcknowledgedV1 {
                finding_id: a.finding_id.clone(),
                kind: f.kind.as_str().to_owned(),
                indicator: f.indicator.as_str().to_owned(),
                reason: a.reason.clone(),
            })
        })
        .collect();
    if acknowledged.is_empty() {
        return;
    }
    let overrides = OverrideRecord::V1(OverrideV1 {
        prescription_id: record.id.clone(),
        time_ms,
        institution_code: caller.institution.code.to_string(),
        certificate_sha256: caller.certificate_sha256,
        signer_serial_number: signer.serial_number.clone(),
        signer_certificate_sha256: signer.certificate_sha256,
        acknowledged,
    });
    tx.put(
        Table::Clinical,
        &key(&[b"override", record.id.as_bytes()]),
        &encode(&overrides),
    );
}

/// Only the holder may return or dispense: say so without naming the holder.
/// One page of the stuck scan: the stuck prescriptions among at most `page` entries of the
/// accepted index from `start`, and the key to go on from (none at the end of the index).
fn stuck_page(
    tx: &dyn Txn,
    start: &[u8],
    page: usize,
    horizon: i64,
) -> Result<(Vec<Stuck>, Option<Vec<u8>>), store::Error> {
    let prefix = key(&[b"accepted", b""]);
    let mut end = prefix.clone();
    *end.last_mut().expect("the prefix ends in a separator") += 1;
    let rows = tx.scan_range(Table::Meta, start, &end, page)?;
    let next = (rows.len() == page)
        .then(|| rows.last().map(|(k, _)| [k.as_slice(), &[0]].concat()))
        .flatten();
    let mut stuck = Vec::new();
    for (k, _) in rows {
        let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        let Some(stored) = Stored::load(tx, &id)? else {
            continue;
        };
        let r = stored.record;
        let (State::Accepted { pharmacy }, Some(accepted_at_ms)) =
            (stored.lifecycle.state, r.accepted_at_ms)
        else {
            continue;
        };
        if r.last_record_at_ms.unwrap_or(accepted_at_ms) < horizon {
            stuck.push(Stuck {
                id: r.id,
                institution: r.institution,
                number: r.number,
                pharmacy: pharmacy.to_string(),
                accepted_at_ms,
                last_record_at_ms: r.last_record_at_ms,
                records: r.records,
            });
        }
    }
    Ok((stuck, next))
}

fn only_the_holder(e: LifecycleError) -> Error {
    match e {
        LifecycleError::NotAcceptedByCaller => {
            Error::PermissionDenied("only the accepting pharmacy may do this")
        }
        other => other.into(),
    }
}

fn own_prescription(tx: &dyn Txn, id: &str, caller_code: &str) -> Result<Stored, Error> {
    let stored = Stored::load(tx, id)?.ok_or(Error::NotFound)?;
    if stored.record.institution != caller_code {
        return Err(Error::PermissionDenied(
            "the prescription belongs to another institution",
        ));
    }
    Ok(stored)
}

/// The active prescription with this patient key and exchange number. A wrong number and a
/// wrong patient are the same NOT_FOUND.
fn find_active(tx: &dyn Txn, patient: &PatientKey, exchange_number: u32) -> Result<Stored, Error> {
    let key = exchange_key(patient.canonical(), exchange_number);
    Stored::indexed(tx, Table::ByExchange, &key)?.ok_or(Error::NotFound)
}

/// A free exchange number for the patient: one not held by another of their active
/// prescriptions (an expired holder, not yet swept, frees its number).
fn allocate_exchange_number(
    tx: &dyn Txn,
    patient: &str,
    candidates: &[u32],
    today: JapanDate,
) -> Result<u32, Error> {
    for &candidate in candidates {
        match tx.get(Table::ByExchange, &exchange_key(patient, candidate))? {
            None => return Ok(candidate),
            Some(id) => {
                let id = String::from_utf8(id).map_err(|_| corrupt("prescription id"))?;
                let holder = Stored::load(tx, &id)?;
                if holder.is_none_or(|h| !h.lifecycle.state_on(today).is_active()) {
                    return Ok(candidate);
                }
            }
        }
    }
    Err(Error::ResourceExhausted(
        "no free exchange number for this patient",
    ))
}

fn status_of(tx: &dyn Txn, stored: Stored, today: JapanDate) -> Result<Status, Error> {
    let r = &stored.record;
    let (progress, records) = LineProgress::with_records(tx, &r.id)?;
    let dispensings = records
        .into_iter()
        .map(|d| DispensingSummary::of(tx, d))
        .collect::<Result<_, _>>()?;
    let state = stored.lifecycle.state_on(today);
    let life = &stored.lifecycle;
    let refill = life.uses > 1;
    Ok(Status {
        id: r.id.clone(),
        institution: r.institution.clone(),
        number: r.number.clone(),
        lines: progress.states(r.line_count, state.is_active()),
        uses: life.uses,
        uses_dispensed: if refill {
            life.records
        } else {
            u32::from(matches!(state, State::Dispensed { .. }))
        },
        next_use: life
            .refill_window
            .filter(|_| state == State::AwaitingRefill),
        state,
        issue_date: r.issue_date.clone(),
        usable_through: r.usable_through.clone(),
        dispensings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;

    #[tokio::test]
    async fn the_stuck_scan_reads_the_accepted_index_a_page_at_a_time_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let pages = store
            .transact(|tx: &mut dyn Txn| {
                for id in ["a", "b", "c", "d", "e"] {
                    tx.put(Table::Meta, &accepted_key(id), b"");
                }
                // Neighbours of the index that a page must never read.
                tx.put(Table::Meta, b"accepte", b"");
                tx.put(Table::Meta, b"accepted\x01", b"");
                let mut pages = Vec::new();
                let mut from = key(&[b"accepted", b""]);
                loop {
                    let rows = tx.scan_range(Table::Meta, &from, b"accepted\x01", 10)?;
                    let (stuck, next) = stuck_page(tx, &from, 2, i64::MAX)?;
                    // No prescription behind the keys: nothing is stuck, every key is read once.
                    assert!(stuck.is_empty());
                    pages.push(rows.len().min(2));
                    match next {
                        Some(next) => from = next,
                        None => break,
                    }
                }
                Ok::<_, store::Error>(pages)
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(pages, [2, 2, 1]);
        store.close().unwrap();
    }
}
