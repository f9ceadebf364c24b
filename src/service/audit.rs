//! The audit record of a call: the draft each use case fills in (caller, signer, target, the
//! subject of a check) and writes with its outcome.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use crate::{
    domain::{
        checks::{CheckOptions, Consent},
        signature::Signer,
    },
    limits::Limits,
    store::{self, Txn},
    wire::documents::bounded_count,
};

use super::{
    Caller, CheckRequest, Error, Findings, Gateway, PatientPseudonym, audit_chain, clinical,
    keeping::{Keeping, Kept},
    millis,
    records::{AuditV1, AuditV2, ChainedV1, CheckSubjectV1, ConsentMethodV1},
};

/// What a call did, as its audit record names it: the RPC it came as (the gRPC layer and the
/// use cases name the same one), or a lockout it tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    CheckPrescription,
    RegisterPrescription,
    CancelPrescription,
    GetPrescriptionStatus,
    SearchPrescriptions,
    CheckDispensing,
    LookupPrescription,
    ReceivePrescription,
    ReturnPrescription,
    RecordDispensing,
    WatchEvents,
    DeliverDispensingRecord,
    ListStuckPrescriptions,
    ListLockouts,
    Unlock,
    ConfirmClock,
    Backup,
    ImportMaster,
    ExportAudit,
    ExportAuditCheckpoints,
    Lockout,
    /// A start past a store behind its acknowledged mark (`serve --accept-data-loss`).
    AcceptDataLoss,
}

impl Action {
    /// The name in the record (the RPC's method name).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::CheckPrescription => "CheckPrescription",
            Action::RegisterPrescription => "RegisterPrescription",
            Action::CancelPrescription => "CancelPrescription",
            Action::GetPrescriptionStatus => "GetPrescriptionStatus",
            Action::SearchPrescriptions => "SearchPrescriptions",
            Action::CheckDispensing => "CheckDispensing",
            Action::LookupPrescription => "LookupPrescription",
            Action::ReceivePrescription => "ReceivePrescription",
            Action::ReturnPrescription => "ReturnPrescription",
            Action::RecordDispensing => "RecordDispensing",
            Action::WatchEvents => "WatchEvents",
            Action::DeliverDispensingRecord => "DeliverDispensingRecord",
            Action::ListStuckPrescriptions => "ListStuckPrescriptions",
            Action::ListLockouts => "ListLockouts",
            Action::Unlock => "Unlock",
            Action::ConfirmClock => "ConfirmClock",
            Action::Backup => "Backup",
            Action::ImportMaster => "ImportMaster",
            Action::ExportAudit => "ExportAudit",
            Action::ExportAuditCheckpoints => "ExportAuditCheckpoints",
            Action::Lockout => "Lockout",
            Action::AcceptDataLoss => "AcceptDataLoss",
        }
    }

    /// Whether the call stores new data (and is refused below the free-space low-water mark,
    /// free_space.rs), beyond its audit record and the lockout counts a miss keeps. An
    /// operator's unlock and clock confirmation write a record's worth and undo a hold, so
    /// they are admitted with the reads, and so is a backup, which writes nothing to this disk.
    pub fn writes_new_data(self) -> bool {
        match self {
            Action::CheckPrescription
            | Action::RegisterPrescription
            | Action::CancelPrescription
            | Action::CheckDispensing
            | Action::ReceivePrescription
            | Action::ReturnPrescription
            | Action::RecordDispensing
            | Action::DeliverDispensingRecord
            | Action::ImportMaster => true,
            Action::GetPrescriptionStatus
            | Action::SearchPrescriptions
            | Action::LookupPrescription
            | Action::WatchEvents
            | Action::ListStuckPrescriptions
            | Action::ListLockouts
            | Action::Unlock
            | Action::ConfirmClock
            | Action::ExportAudit
            | Action::ExportAuditCheckpoints
            | Action::Backup
            | Action::Lockout
            | Action::AcceptDataLoss => false,
        }
    }
}

/// Whether a call's audit record has been handed to the store: set by the service when it
/// submits the transaction that writes the record (which then commits, or is followed by the
/// record of its failure, whatever becomes of the call's caller); read by the edge audit, which
/// records a request whose record never was (refused before its handler, or given up before the
/// handler got that far).
#[derive(Debug, Clone, Default)]
pub struct AuditReceipt(Arc<AtomicBool>);

impl AuditReceipt {
    pub fn submitted(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub(super) fn submit(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What the audit record of a call says besides its outcome.
#[derive(Debug, Clone)]
pub(super) struct AuditDraft {
    /// Whose chain the record goes on.
    pub(super) writer: [u8; 32],
    pub(super) time_ms: i64,
    pub(super) caller: Caller,
    pub(super) signer: Option<Signer>,
    pub(super) action: Action,
    pub(super) target: Option<String>,
    /// With a clinical check: whom it was about and what it asked.
    pub(super) check: Option<CheckSubjectV1>,
    /// The writes the call keeps even if its decision refuses (keeping.rs).
    pub(super) kept: Vec<Kept>,
    /// How long the call's clinical check took, observed in the metrics once committed.
    pub(super) check_took: Option<Duration>,
}

impl AuditDraft {
    pub(super) fn write<T>(
        &self,
        tx: &mut dyn Txn,
        outcome: &Result<T, Error>,
    ) -> Result<(), store::Error> {
        let call = AuditV1 {
            time_ms: self.time_ms,
            institution_kind: self.caller.institution.kind.to_string(),
            institution_code: self.caller.institution.code.to_string(),
            certificate_sha256: self.caller.certificate_sha256,
            signer_serial_number: self.signer.as_ref().map(|s| s.serial_number.clone()),
            signer_certificate_sha256: self.signer.as_ref().map(|s| s.certificate_sha256),
            action: self.action.as_str().to_owned(),
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

/// Names a check's subject in its audit draft and spends its lines of the patient's budget.
pub(super) fn begin_check(
    tx: &mut dyn Txn,
    draft: &mut AuditDraft,
    limits: &Limits,
    patient: &PatientPseudonym,
    lines: usize,
    consent: Consent,
) -> Result<clinical::Budget, store::Error> {
    draft.check = Some(subject_of(patient, lines, consent));
    let tx = &mut Keeping {
        tx,
        kept: &mut draft.kept,
    };
    clinical::spend_check_budget(tx, patient, lines, draft.time_ms, limits)
}

/// Runs a check of `subject` for the call of `draft` and leaves the consent `asserting`
/// asserted on record, as CheckPrescription and CheckDispensing both do.
pub(super) fn checked(
    tx: &mut dyn Txn,
    draft: &mut AuditDraft,
    (checker, subject): (&clinical::Checker, &clinical::Subject<'_>),
    (options, consent): (&CheckOptions, Consent),
    asserting: &Caller,
) -> Result<Findings, store::Error> {
    let findings = checker.run(tx, subject, (options, consent), &mut draft.check_took)?;
    clinical::record_consent(
        tx,
        subject.patient,
        asserting,
        consent,
        draft.time_ms,
        draft.action.as_str(),
        subject.exclude,
    )?;
    Ok(findings)
}

pub(super) fn subject_of(
    patient: &PatientPseudonym,
    lines: usize,
    consent: Consent,
) -> CheckSubjectV1 {
    CheckSubjectV1 {
        patient_pseudonym: *patient.bytes(),
        lines: lines as u32,
        consent: consent_v1(consent),
    }
}

pub(super) fn consent_v1(consent: Consent) -> ConsentMethodV1 {
    match consent {
        Consent::Card => ConsentMethodV1::Card,
        Consent::Verbal => ConsentMethodV1::Verbal,
        Consent::None => ConsentMethodV1::None,
    }
}

impl Gateway {
    pub(super) fn draft(&self, caller: &Caller, action: Action, now: SystemTime) -> AuditDraft {
        AuditDraft {
            writer: self.config.audit_writer,
            time_ms: millis(now),
            caller: caller.clone(),
            signer: None,
            action,
            target: None,
            check: None,
            kept: Vec::new(),
            check_took: None,
        }
    }

    /// Whom a check is about (by pseudonym), its lines and the consent asserted, as its audit
    /// record names them.
    pub(super) fn subject(
        &self,
        patient: &PatientPseudonym,
        lines: usize,
        check: CheckRequest,
    ) -> CheckSubjectV1 {
        subject_of(patient, lines, check.consent)
    }

    /// Names the check's subject in the audit draft; refuses more lines than the consent allows.
    pub(super) fn check_subject(
        &self,
        draft: &mut AuditDraft,
        patient: &PatientPseudonym,
        lines: usize,
        consent: Consent,
    ) -> Result<(), Error> {
        draft.check = Some(subject_of(patient, lines, consent));
        if consent == Consent::None {
            bounded_count("lines", lines, self.config.limits.unconsented_check_lines)
                .map_err(Error::InvalidArgument)?;
        }
        Ok(())
    }

    /// Audits a successful access that changes nothing (an audit export).
    pub async fn audit_access(&self, caller: &Caller, action: Action) -> Result<(), Error> {
        let draft = self.draft(caller, action, self.clock.now());
        self.run(draft, |_, _| Ok(())).await
    }

    /// Audits a call refused by the protocol layer (for example a caller of the wrong kind).
    pub async fn audit_refusal(&self, caller: &Caller, action: Action, error: Error) -> Error {
        let draft = self.draft(caller, action, self.clock.now());
        match self.refuse::<()>(draft, error).await {
            Err(e) => e,
            Ok(()) => Error::Internal("a refusal succeeded".into()),
        }
    }
}
