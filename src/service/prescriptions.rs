//! The clinic's use cases: register, cancel, status and the pre-issue check of a draft.

use std::{sync::Arc, time::Duration};

use ring::rand::SecureRandom;

use crate::{
    domain::{
        checks::Finding,
        hash::{hex, sha256},
        prescription::{State, Transition, registrable, usable_through},
        rx::{DraftFacts, PrescriptionFacts},
        signature::Signer,
        time::JapanDate,
    },
    store::{Table, Txn},
    wire::proto::v1::Prescription,
};

use super::{
    Acknowledgement, Action, Caller, CheckRequest, Error, Findings, Gateway, OnCritical,
    PatientPseudonym,
    audit::checked,
    clinical, events,
    keeping::Keeping,
    millis,
    records::{
        AcknowledgedV1, EventKindV1, OverrideRecord, OverrideV1, PrescriptionV3, StateV1, encode,
    },
    schema::{exchange_key, expiry_key, number_key, override_key},
    search, signatures,
    stored::{Status, Stored, corrupt, own_prescription, put_prescription, status_of},
};

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

/// Stores the findings a registration acknowledged (those among its findings), with who did.
pub(super) fn record_overrides(
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
        &override_key(&record.id),
        &encode(&overrides),
    );
}

/// A free exchange number for the patient: one not held by another of their active
/// prescriptions (an expired holder, not yet swept, frees its number).
pub(super) fn allocate_exchange_number(
    tx: &dyn Txn,
    patient: &PatientPseudonym,
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

impl Gateway {
    /// `n` exchange numbers drawn uniformly from 000000–999999, each round of `n` draws from
    /// one read of the system RNG (a read is a system call).
    pub(super) fn random_exchange_numbers(&self, n: usize) -> Vec<u32> {
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

    pub(super) fn random_id(&self) -> String {
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
        let mut draft = self.draft(caller, Action::RegisterPrescription, now);
        let admitted = self
            .admit::<Prescription, PrescriptionFacts>(caller, &mut draft, &content, &cms, now)
            .and_then(|(verified, facts)| {
                registrable(&facts, today, self.config.max_usable_days)
                    .map_err(|v| Error::InvalidArgument(vec![v]))?;
                Ok((verified, facts))
            });
        let (verified, facts) = match admitted {
            Ok(admitted) => admitted,
            Err(e) => return self.refuse(draft, e).await,
        };
        let patient = self.config.pseudonyms.in_keys(facts.patient.canonical());
        draft.check = Some(self.subject(&patient, facts.lines.len(), check));

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
            content: Arc::clone(verified.content()),
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
            let history = clinical::PatientHistory::read(tx, &patient)?;
            // Spent by every registration, a refused or repeated one too (kept when the
            // registration is refused, as the audit record is: that is its point).
            let budget = clinical::spend_check_budget(
                &mut Keeping {
                    tx,
                    kept: &mut draft.kept,
                },
                &patient,
                lines.len(),
                draft.time_ms,
                &limits,
            )?;
            let consent = clinical::budgeted_consent(budget, check.consent);
            let findings_excluding = |tx: &dyn Txn, id: &str, took: &mut Option<Duration>| {
                let subject = clinical::Subject {
                    caller: &caller.institution.code,
                    patient: &patient,
                    today,
                    lines: &new_lines,
                    exclude: Some(id),
                };
                checker.run_on(tx, &subject, &history, (&options, consent), took)
            };
            // The institution's number again: with the same content (the number is part of it),
            // the original answer and nothing new stored; with other content, refused.
            let number_key = number_key(&record.institution, &record.number);
            if let Some(stored) = Stored::indexed(tx, Table::ByNumber, &number_key)? {
                let id = stored.record.id.clone();
                if stored.record.content_sha256 != content_sha256 {
                    return Err(Error::AlreadyExists(
                        "the institution has registered this prescription number with other content",
                    ));
                }
                draft.target = Some(id.clone());
                return Ok(Registered {
                    findings: findings_excluding(tx, &id, &mut draft.check_took)?,
                    id,
                    exchange_number: stored.record.exchange_number,
                    state: stored.lifecycle.state_on(today),
                    usable_through: stored.lifecycle.usable_through,
                });
            }
            clinical::admit_prescribed(&history, &record.institution, lines.len(), &limits)?;
            let findings = findings_excluding(tx, &record.id, &mut draft.check_took)?;
            let unacknowledged = clinical::unacknowledged(&findings.shown, &acks);
            if on_critical == OnCritical::RequireOverride && !unacknowledged.is_empty() {
                return Err(Error::CriticalFindings {
                    findings,
                    unacknowledged,
                });
            }
            let exchange_number =
                allocate_exchange_number(tx, &patient, &candidates, today)?;
            // A clone of the prepared record, cheap: its document bytes are shared.
            let record = PrescriptionV3 {
                exchange_number,
                ..record.clone()
            };
            signatures::store_certificates(tx, &certificates)?;
            let id_bytes = record.id.as_bytes();
            tx.put(
                Table::ByExchange,
                &exchange_key(&patient, exchange_number),
                id_bytes,
            );
            tx.put(Table::ByPatient, &search::index_key(&record, &patient), b"");
            tx.put(Table::ByNumber, &number_key, id_bytes);
            tx.put(
                Table::Meta,
                &expiry_key(&record.usable_through, &record.id),
                b"",
            );
            put_prescription(tx, &record, &patient);
            clinical::index_prescription(
                tx,
                history,
                &clinical::Prescribed {
                    patient: &patient,
                    id: &record.id,
                    institution: &record.institution,
                    issue_date: facts.issue_date,
                    lines: &lines,
                },
                today,
            )?;
            clinical::record_consent(
                tx,
                &patient,
                &caller,
                check.consent,
                draft.time_ms,
                draft.action.as_str(),
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
        let mut draft = self.draft(caller, Action::CancelPrescription, now);
        draft.target = Some(id.clone());
        let pseudonyms = self.config.pseudonyms.clone();
        self.run(draft, move |tx, _| {
            let stored = own_prescription(tx, &id, &caller_code)?;
            let transition = stored.lifecycle.cancel(today)?;
            Ok(match transition {
                Transition::Unchanged => stored.lifecycle.state_on(today),
                t => stored.apply(tx, t, today, now_ms, &pseudonyms)?,
            })
        })
        .await
    }

    /// The status of one of the caller's prescriptions.
    pub async fn status(&self, caller: &Caller, id: String) -> Result<Status, Error> {
        let now = self.clock.now();
        let today = JapanDate::of(now);
        let caller_code = caller.institution.code.to_string();
        let mut draft = self.draft(caller, Action::GetPrescriptionStatus, now);
        draft.target = Some(id.clone());
        self.run(draft, move |tx, _| {
            let stored = own_prescription(tx, &id, &caller_code)?;
            status_of(tx, stored, today)
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
        let mut draft = self.draft(caller, Action::CheckPrescription, now);
        let patient = self
            .config
            .pseudonyms
            .in_keys(draft_facts.patient.canonical());
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
                &mut Keeping {
                    tx,
                    kept: &mut draft.kept,
                },
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
            Ok(checked(
                tx,
                draft,
                (&checker, &subject),
                (&options, check.consent),
                &asserting,
            )?)
        })
        .await
    }
}
