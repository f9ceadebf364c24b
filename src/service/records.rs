//! The stored records: versioned types apart from the domain structs, encoded with postcard.
//! A record is an enum whose variants are its versions; a new version is a new variant, and
//! old ones stay readable.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::store::Error as StoreError;

/// Encodes a record.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    postcard::to_stdvec(record).expect("records always encode")
}

/// Decodes a record; a failure means the stored bytes are corrupt.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("record: {e}")))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateV1 {
    Registered,
    Accepted(String),
    Dispensed(String),
    Cancelled,
    Expired,
    AwaitingRefill,
}

/// Version 1 of the prescription record, kept to read stores written before partial dispensing
/// and refills (version 2 adds the dispensing progress).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrescriptionV1 {
    pub id: String,
    pub institution: String,
    pub number: String,
    /// The canonical patient key.
    pub patient_key: String,
    pub exchange_number: u32,
    /// YYYY-MM-DD.
    pub issue_date: String,
    pub usable_through: String,
    pub state: StateV1,
    pub returned_by: Option<String>,
    /// The Japan date of the current acceptance, YYYY-MM-DD.
    pub accepted_on: Option<String>,
    pub line_count: u32,
    pub refill_count: u32,
    pub content: Vec<u8>,
    pub cms_signature: Vec<u8>,
    pub content_sha256: [u8; 32],
    pub signer_serial_number: String,
    pub signer_certificate_sha256: [u8; 32],
    pub received_at_ms: i64,
}

/// A refill's next-use window, YYYY-MM-DD dates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefillWindowV1 {
    pub planned: String,
    pub from: String,
    pub until: String,
}

/// Version 2 of the prescription record, kept to read stores written before version 3 (which
/// keeps the signature without its certificates).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrescriptionV2 {
    pub id: String,
    pub institution: String,
    pub number: String,
    /// The canonical patient key.
    pub patient_key: String,
    pub exchange_number: u32,
    /// YYYY-MM-DD.
    pub issue_date: String,
    pub usable_through: String,
    pub state: StateV1,
    pub returned_by: Option<String>,
    /// The Japan date of the current acceptance, YYYY-MM-DD.
    pub accepted_on: Option<String>,
    pub line_count: u32,
    pub refill_count: u32,
    pub content: Vec<u8>,
    pub cms_signature: Vec<u8>,
    pub content_sha256: [u8; 32],
    pub signer_serial_number: String,
    pub signer_certificate_sha256: [u8; 32],
    pub received_at_ms: i64,
    /// Dispensing records registered (parts, or refill uses).
    pub records: u32,
    pub refill_window: Option<RefillWindowV1>,
    /// When the current acceptance happened, and when its last dispensing record arrived.
    pub accepted_at_ms: Option<i64>,
    pub last_record_at_ms: Option<i64>,
}

impl From<PrescriptionV1> for PrescriptionV2 {
    fn from(r: PrescriptionV1) -> Self {
        let dispensed = matches!(r.state, StateV1::Dispensed(_));
        PrescriptionV2 {
            id: r.id,
            institution: r.institution,
            number: r.number,
            patient_key: r.patient_key,
            exchange_number: r.exchange_number,
            issue_date: r.issue_date,
            usable_through: r.usable_through,
            state: r.state,
            returned_by: r.returned_by,
            accepted_on: r.accepted_on,
            line_count: r.line_count,
            refill_count: r.refill_count,
            content: r.content,
            cms_signature: r.cms_signature,
            content_sha256: r.content_sha256,
            signer_serial_number: r.signer_serial_number,
            signer_certificate_sha256: r.signer_certificate_sha256,
            received_at_ms: r.received_at_ms,
            // version 1 knew one final record per prescription
            records: u32::from(dispensed),
            refill_window: None,
            accepted_at_ms: None,
            last_record_at_ms: None,
        }
    }
}

/// Version 3 of the prescription record: version 2 with its signature kept without the
/// certificates it carries (`service::signatures`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrescriptionV3 {
    pub id: String,
    pub institution: String,
    pub number: String,
    /// The canonical patient key.
    pub patient_key: String,
    pub exchange_number: u32,
    /// YYYY-MM-DD.
    pub issue_date: String,
    pub usable_through: String,
    pub state: StateV1,
    pub returned_by: Option<String>,
    /// The Japan date of the current acceptance, YYYY-MM-DD.
    pub accepted_on: Option<String>,
    pub line_count: u32,
    pub refill_count: u32,
    pub content: Arc<[u8]>,
    pub cms: SignatureV1,
    pub content_sha256: [u8; 32],
    pub signer_serial_number: String,
    pub signer_certificate_sha256: [u8; 32],
    pub received_at_ms: i64,
    /// Dispensing records registered (parts, or refill uses).
    pub records: u32,
    pub refill_window: Option<RefillWindowV1>,
    /// When the current acceptance happened, and when its last dispensing record arrived.
    pub accepted_at_ms: Option<i64>,
    pub last_record_at_ms: Option<i64>,
}

impl From<PrescriptionV2> for PrescriptionV3 {
    fn from(r: PrescriptionV2) -> Self {
        PrescriptionV3 {
            id: r.id,
            institution: r.institution,
            number: r.number,
            patient_key: r.patient_key,
            exchange_number: r.exchange_number,
            issue_date: r.issue_date,
            usable_through: r.usable_through,
            state: r.state,
            returned_by: r.returned_by,
            accepted_on: r.accepted_on,
            line_count: r.line_count,
            refill_count: r.refill_count,
            content: r.content.into(),
            cms: SignatureV1::whole(r.cms_signature),
            content_sha256: r.content_sha256,
            signer_serial_number: r.signer_serial_number,
            signer_certificate_sha256: r.signer_certificate_sha256,
            received_at_ms: r.received_at_ms,
            records: r.records,
            refill_window: r.refill_window,
            accepted_at_ms: r.accepted_at_ms,
            last_record_at_ms: r.last_record_at_ms,
        }
    }
}

/// A certificate cut out of a stored signature: where it was, and which it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutV1 {
    /// Its offset in the original signature.
    pub at: u32,
    pub sha256: [u8; 32],
}

/// A CMS signature as stored: its bytes without the certificates in `cuts`, which lie in
/// [`Table::Certificates`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureV1 {
    pub rest: Vec<u8>,
    pub cuts: Vec<CutV1>,
}

impl SignatureV1 {
    /// A signature kept whole, as records written before this layout hold theirs.
    pub fn whole(bytes: Vec<u8>) -> Self {
        SignatureV1 {
            rest: bytes,
            cuts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrescriptionRecord {
    V1(PrescriptionV1),
    V2(PrescriptionV2),
    V3(PrescriptionV3),
}

impl PrescriptionRecord {
    /// The record in the current version.
    pub fn current(self) -> PrescriptionV3 {
        match self {
            PrescriptionRecord::V1(r) => PrescriptionV2::from(r).into(),
            PrescriptionRecord::V2(r) => r.into(),
            PrescriptionRecord::V3(r) => r,
        }
    }
}

/// Version 1 of the dispensing record, kept to read stores written before version 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispensingV1 {
    pub prescription_id: String,
    pub record_number: u32,
    pub pharmacy: String,
    pub dispensing_date: String,
    pub is_final: bool,
    pub important_information: bool,
    pub important_message: String,
    pub content: Vec<u8>,
    pub cms_signature: Vec<u8>,
    pub content_sha256: [u8; 32],
    pub signer_serial_number: String,
    pub signer_certificate_sha256: [u8; 32],
    pub received_at_ms: i64,
}

/// Version 2 of the dispensing record: version 1 with its signature kept without the
/// certificates it carries (`service::signatures`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispensingV2 {
    pub prescription_id: String,
    pub record_number: u32,
    pub pharmacy: String,
    pub dispensing_date: String,
    pub is_final: bool,
    pub important_information: bool,
    pub important_message: String,
    pub content: Arc<[u8]>,
    pub cms: SignatureV1,
    pub content_sha256: [u8; 32],
    pub signer_serial_number: String,
    pub signer_certificate_sha256: [u8; 32],
    pub received_at_ms: i64,
}

impl From<DispensingV1> for DispensingV2 {
    fn from(d: DispensingV1) -> Self {
        DispensingV2 {
            prescription_id: d.prescription_id,
            record_number: d.record_number,
            pharmacy: d.pharmacy,
            dispensing_date: d.dispensing_date,
            is_final: d.is_final,
            important_information: d.important_information,
            important_message: d.important_message,
            content: d.content.into(),
            cms: SignatureV1::whole(d.cms_signature),
            content_sha256: d.content_sha256,
            signer_serial_number: d.signer_serial_number,
            signer_certificate_sha256: d.signer_certificate_sha256,
            received_at_ms: d.received_at_ms,
        }
    }
}

/// The stored record of a dispensing record: the pharmacy's signed document (the wire type
/// `DispensingRecord`) with what the gateway learned receiving it, by version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredDispensingRecord {
    V1(DispensingV1),
    V2(DispensingV2),
}

impl StoredDispensingRecord {
    /// The record in the current version.
    pub fn current(self) -> DispensingV2 {
        match self {
            StoredDispensingRecord::V1(d) => d.into(),
            StoredDispensingRecord::V2(d) => d,
        }
    }
}

/// What a document hash (idempotency key) points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DocumentV1 {
    /// Written for prescriptions by earlier versions only: a prescription's idempotency key is
    /// now its (institution, number), whose record holds the content's hash. Still read, so that
    /// such content offered as a dispensing record is refused as another kind of document.
    Prescription { id: String },
    Dispensing {
        prescription_id: String,
        record_number: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DocumentRecord {
    V1(DocumentV1),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditV1 {
    pub time_ms: i64,
    pub institution_kind: String,
    pub institution_code: String,
    pub certificate_sha256: [u8; 32],
    pub signer_serial_number: Option<String>,
    pub signer_certificate_sha256: Option<[u8; 32]>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
}

/// Version 2 of an audit record: version 1 and, for a clinical check, whom it was about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditV2 {
    pub call: AuditV1,
    pub check: Option<CheckSubjectV1>,
}

/// Whom a check was about, and how much it asked: the patient as a keyed pseudonym (so the log
/// shows who checked whom without holding a patient's identifiers), the lines, the consent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckSubjectV1 {
    pub patient_pseudonym: [u8; 32],
    pub lines: u32,
    pub consent: ConsentMethodV1,
}

/// Versions 1 and 2 are unchained (stores written before the hash chain); version 3 is a link
/// of a writer's chain, and its encoding (the stored value) is what the chain hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditRecord {
    V1(AuditV1),
    V2(AuditV2),
    V3(AuditV3),
}

/// A link of one writer's (one gateway's) audit chain: its own gapless sequence (1, 2, ...) and
/// the SHA-256 of the encoded record before it (zeros before the first).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditV3 {
    /// The SHA-256 of the writer's `[gateway]` certificate.
    pub writer: [u8; 32],
    pub sequence: u64,
    pub previous: [u8; 32],
    pub entry: ChainedV1,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainedV1 {
    /// The first link of a chain: when it began and how many unchained records (versions 1
    /// and 2, keyed 1..=unchained) the store held then.
    Genesis { time_ms: i64, unchained: u64 },
    /// The audit record of a call.
    Call(Box<AuditV2>),
    /// The requests of one connection answered before any handler beyond the per-second number
    /// recorded one by one: how many, of which kind.
    Counted(Box<CountedV1>),
}

/// Requests of one connection (its client certificate) answered before any handler, counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountedV1 {
    pub institution_kind: String,
    pub institution_code: String,
    pub certificate_sha256: [u8; 32],
    /// When the first and the last counted request came.
    pub from_ms: i64,
    pub until_ms: i64,
    /// By action and outcome, in that order.
    pub counts: Vec<CountV1>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountV1 {
    pub action: String,
    pub outcome: String,
    pub count: u64,
}

/// The last link of a writer's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainHeadV1 {
    pub writer: [u8; 32],
    pub sequence: u64,
    pub hash: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChainHeadRecord {
    V1(ChainHeadV1),
}

/// What a checkpoint attests: every chain head of the store at `time_ms`, as seen by `signer`
/// (its `[gateway]` certificate's SHA-256), its `number`th checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointV1 {
    pub signer: [u8; 32],
    pub number: u64,
    pub time_ms: i64,
    pub heads: Vec<ChainHeadV1>,
}

/// A checkpoint as stored, logged and exported: the encoded [`CheckpointV1`] and the signer's
/// signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SignedCheckpointRecord {
    V1 { body: Vec<u8>, signature: Vec<u8> },
}

/// The per-patient budget of checked lines (CheckPrescription, CheckDispensing): lines counted
/// since the window began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckBudgetV1 {
    pub window_start_ms: i64,
    pub lines: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckBudgetRecord {
    V1(CheckBudgetV1),
}

/// A lockout counter (a pharmacy's or a patient's): the wrong exchange numbers counted since the
/// window began, and until when the lockout they tripped holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissCounterV1 {
    pub window_start_ms: i64,
    pub misses: u32,
    pub locked_until_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MissCounterRecord {
    V1(MissCounterV1),
}

/// That a pharmacy missed on a patient, and when it last did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissMarkV1 {
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MissMarkRecord {
    V1(MissMarkV1),
}

/// The kind of a drug code, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DrugKindV1 {
    Receipt,
    Yj,
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupplyV1 {
    Days(u32),
    AsNeeded,
    External,
}

/// One entry of a patient's medication history: an undispensed prescription line, or a line of
/// a dispensing record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MedicationV1 {
    pub drug_kind: DrugKindV1,
    pub code: String,
    /// YYYY-MM-DD: the issue date (undispensed) or the dispensing date.
    pub start: String,
    pub supply: SupplyV1,
    /// True for a dispensing-record line.
    pub dispensed: bool,
    /// The prescribing institution, or the dispensing pharmacy.
    pub source_code: String,
    /// The institution that prescribed it.
    pub prescriber: String,
    pub prescription_id: String,
    /// Unique per history line.
    pub source_id: String,
}

/// One line of the per-line history layout that stores written before the one-record-per-patient
/// layout; read only to migrate them ([`HistoryRecord`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MedicationRecord {
    V1(MedicationV1),
}

/// Where a history entry stands, and what orders a patient's entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotV1 {
    /// A line of a REGISTERED or ACCEPTED prescription, not yet dispensed.
    Undispensed { line: u32 },
    /// A dispensed line, with the last day (YYYY-MM-DD) it can be active.
    Dispensed {
        last_day: String,
        record: u32,
        line: u32,
    },
}

/// Version 1 of a history entry, kept to read stores written before version 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntryV1 {
    pub slot: SlotV1,
    pub medication: MedicationV1,
}

/// Where a version-2 history entry stands, and what orders a patient's entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlotV2 {
    /// A line of a REGISTERED or ACCEPTED prescription, not yet dispensed.
    Undispensed { line: u32 },
    /// A dispensed line, with the last day it can be active (days since 1970-01-01).
    Dispensed {
        last_day: i32,
        record: u32,
        line: u32,
    },
}

/// Version 2 of a history entry: numbers where version 1 kept text, and nothing that follows
/// from the rest (whether the line was dispensed, and its source id, follow from the slot and
/// the prescription), so that a patient's record decodes with one allocation per entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntryV2 {
    pub slot: SlotV2,
    /// The prescription's id, its 32 hex digits as bytes.
    pub prescription_id: [u8; 16],
    pub drug_kind: DrugKindV1,
    pub code: String,
    /// The issue date (undispensed) or the dispensing date, days since 1970-01-01.
    pub start: i32,
    pub supply: SupplyV1,
    /// The prescribing institution, or the dispensing pharmacy: its 10-digit code as a number.
    pub source_code: u64,
    /// The institution that prescribed it, as a number.
    pub prescriber: u64,
}

/// A patient's whole medication history as the checks read it: one record per patient, its
/// entries in the order the checks take them. Written as version 2; a version-1 record is
/// read as version 2 and rewritten as such at the patient's next change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HistoryRecord {
    V1(Vec<HistoryEntryV1>),
    V2(Vec<HistoryEntryV2>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsentMethodV1 {
    Card,
    Verbal,
    None,
}

/// A consent (or its absence) as an institution asserted it for one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentV1 {
    pub time_ms: i64,
    pub institution_kind: String,
    pub institution_code: String,
    pub certificate_sha256: [u8; 32],
    pub method: ConsentMethodV1,
    /// The RPC the check ran in.
    pub action: String,
    pub prescription_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsentRecord {
    V1(ConsentV1),
}

/// One acknowledged finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcknowledgedV1 {
    pub finding_id: String,
    pub kind: String,
    pub indicator: String,
    pub reason: String,
}

/// The findings a prescriber acknowledged to register a prescription, and who did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverrideV1 {
    pub prescription_id: String,
    pub time_ms: i64,
    pub institution_code: String,
    pub certificate_sha256: [u8; 32],
    pub signer_serial_number: String,
    pub signer_certificate_sha256: [u8; 32],
    pub acknowledged: Vec<AcknowledgedV1>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OverrideRecord {
    V1(OverrideV1),
}

/// The kinds of file a master import takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MasterFileKindV1 {
    YFull,
    YUpdate,
    YakkaList,
    IppanMaster,
    Contraindications,
}

/// An imported master file, kept so that a restart replays it over the shipped master.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedFileV1 {
    pub name: String,
    pub kind: MasterFileKindV1,
    pub sha256: [u8; 32],
    pub time_ms: i64,
    pub institution_code: String,
    pub certificate_sha256: [u8; 32],
    /// The file as imported, gzip-compressed.
    pub gzip: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImportedFileRecord {
    V1(ImportedFileV1),
}

/// What happened to a prescription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKindV1 {
    Registered,
    Accepted,
    Returned,
    Cancelled,
    Expired,
    DispensingRecorded,
}

/// One entry of the event log, written in the same transaction as the change it reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventV1 {
    pub time_ms: i64,
    pub kind: EventKindV1,
    pub prescription_id: String,
    pub institution: String,
    pub number: String,
    pub pharmacy: Option<String>,
    /// The state after the event.
    pub state: StateV1,
    /// With `DispensingRecorded`: the record's number.
    pub record_number: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventRecord {
    V1(EventV1),
}

/// A dispensing record received through ManagementIntake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeV1 {
    pub record_id: String,
    /// The arrival order at this gateway.
    pub arrival: u64,
    /// The sender (its institution code) and its event sequence number.
    pub sender: String,
    pub sequence: u64,
    pub received_at_ms: i64,
    pub delivered_at_ms: i64,
    pub prescription_id: String,
    pub institution: String,
    pub number: String,
    pub content: Arc<[u8]>,
    pub cms_signature: Arc<[u8]>,
}

/// A dispensing record received through ManagementIntake, with who attested its metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntakeV2 {
    /// `prescription_id` is the sender's id (scoped to `sender`); `received_at_ms` is the
    /// sender's receipt time as claimed, which the record was verified as of only if attested.
    pub record: IntakeV1,
    /// The SHA-256 (hex) of the pinned gateway certificate that attested the metadata; none:
    /// unattested, the record was verified as of its delivery.
    pub attested_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntakeRecord {
    V1(IntakeV1),
    V2(IntakeV2),
}

impl IntakeRecord {
    /// The record as the current version (version 1 was written before attestations: its
    /// receipt time was believed as sent).
    pub fn current(self) -> IntakeV2 {
        match self {
            IntakeRecord::V1(record) => IntakeV2 {
                record,
                attested_by: None,
            },
            IntakeRecord::V2(r) => r,
        }
    }
}

/// A dispensing record the upstream refused for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterV1 {
    pub sequence: u64,
    pub prescription_id: String,
    pub record_number: u32,
    pub time_ms: i64,
    /// The upstream's status code and message.
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadLetterRecord {
    V1(DeadLetterV1),
}

/// Who holds a lease (`service::lease`) and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseV1 {
    /// The holding process's own random number: tells a gateway from an earlier run of itself.
    pub instance: [u8; 16],
    /// The holding gateway's `[gateway]` certificate's SHA-256: who it is, for an operator.
    pub gateway: [u8; 32],
    /// Unix milliseconds of the holder's wall clock, after which another may take the lease.
    pub expires_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseRecord {
    V1(LeaseV1),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes written by version 1 of the format stay readable: a change that breaks this breaks
    /// every existing store.
    #[test]
    fn version_1_records_round_trip_and_keep_their_encoding() {
        let record = DocumentRecord::V1(DocumentV1::Dispensing {
            prescription_id: "ab".into(),
            record_number: 2,
        });
        let bytes = encode(&record);
        assert_eq!(bytes, [0, 1, 2, b'a', b'b', 2]);
        assert_eq!(decode::<DocumentRecord>(&bytes).unwrap(), record);
        assert!(decode::<DocumentRecord>(&[7]).is_err());
    }

    /// The signed documents a record shares as `Arc<[u8]>` (so that a transaction run again
    /// copies none) encode and decode as the `Vec<u8>` they were before: the stored bytes are
    /// those every earlier version wrote.
    #[test]
    fn shared_documents_keep_the_encoding_of_byte_vectors() {
        let bytes: Vec<u8> = (0..=255).collect();
        let shared: Arc<[u8]> = Arc::from(bytes.as_slice());
        assert_eq!(encode(&shared), encode(&bytes));
        assert_eq!(decode::<Arc<[u8]>>(&encode(&bytes)).unwrap(), shared);
    }

    /// Records written before the signatures lost their certificates read as the current
    /// version, with their signature kept whole: byte for byte what was stored.
    #[test]
    fn older_prescription_and_dispensing_records_read_with_whole_signatures() {
        let cms = vec![0x30, 3, 2, 1, 9];
        let v2 = PrescriptionV2 {
            id: "p".into(),
            institution: "1310000001".into(),
            number: "N-1".into(),
            patient_key: "k".into(),
            exchange_number: 123_456,
            issue_date: "2026-12-02".into(),
            usable_through: "2026-12-05".into(),
            state: StateV1::Accepted("1340000001".into()),
            returned_by: None,
            accepted_on: Some("2026-12-02".into()),
            line_count: 1,
            refill_count: 0,
            content: vec![1, 2],
            cms_signature: cms.clone(),
            content_sha256: [7; 32],
            signer_serial_number: "S".into(),
            signer_certificate_sha256: [8; 32],
            received_at_ms: 5,
            records: 1,
            refill_window: None,
            accepted_at_ms: Some(6),
            last_record_at_ms: None,
        };
        let bytes = encode(&PrescriptionRecord::V2(v2.clone()));
        let current = decode::<PrescriptionRecord>(&bytes).unwrap().current();
        assert_eq!(current.cms, SignatureV1::whole(cms.clone()));
        assert_eq!(
            (current.id, current.exchange_number, current.records),
            (v2.id, v2.exchange_number, v2.records)
        );
        assert_eq!(current.accepted_at_ms, Some(6));

        let v1 = DispensingV1 {
            prescription_id: "p".into(),
            record_number: 2,
            pharmacy: "1340000001".into(),
            dispensing_date: "2026-12-02".into(),
            is_final: true,
            important_information: false,
            important_message: String::new(),
            content: vec![3],
            cms_signature: cms.clone(),
            content_sha256: [1; 32],
            signer_serial_number: "P".into(),
            signer_certificate_sha256: [2; 32],
            received_at_ms: 9,
        };
        let bytes = encode(&StoredDispensingRecord::V1(v1));
        let current = decode::<StoredDispensingRecord>(&bytes).unwrap().current();
        assert_eq!(current.cms, SignatureV1::whole(cms));
        assert_eq!((current.record_number, current.received_at_ms), (2, 9));
    }
}
