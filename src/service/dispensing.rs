//! The pharmacy's use cases: lookup, receive, return, the dispensing check and the record of
//! a dispensing.

use std::sync::Arc;

use crate::{
    domain::{
        checks::Consent,
        hash::sha256,
        patient::PatientKey,
        prescription::{LifecycleError, Part, State, Transition},
        rx::{DispensedLineFacts, DispensingFacts, longest_days},
        time::JapanDate,
    },
    store::Table,
    wire::documents::bounded_count,
    wire::proto::v1::DispensingRecord,
};

use super::{
    Action, Caller, CheckRequest, Error, Findings, Gateway,
    audit::{begin_check, checked},
    clinical, millis,
    records::{DispensingV2, DocumentRecord, DocumentV1, StoredDispensingRecord, decode, encode},
    schema::{dispensing_key, dispensing_row, document_key, number_key},
    signatures,
    stored::{LineProgress, Stored, corrupt, date, find_active},
};

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

/// Only the holder may return or dispense: say so without naming the holder.
pub(super) fn only_the_holder(e: LifecycleError) -> Error {
    match e {
        LifecycleError::NotAcceptedByCaller => {
            Error::PermissionDenied("only the accepting pharmacy may do this")
        }
        other => other.into(),
    }
}

impl Gateway {
    /// A pharmacy looks at a prescription without changing anything.
    pub async fn lookup(
        &self,
        caller: &Caller,
        patient: PatientKey,
        exchange_number: u32,
    ) -> Result<Summary, Error> {
        let now = self.clock.now();
        let today = JapanDate::of(now);
        let draft = self.draft(caller, Action::LookupPrescription, now);
        let keyed = self.config.pseudonyms.in_keys(patient.canonical());
        self.guarded(draft, &patient, move |tx, draft| {
            let stored = find_active(tx, &keyed, exchange_number)?;
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
        let draft = self.draft(caller, Action::ReceivePrescription, now);
        let checker = self.checker();
        let options = check.options.over(self.config.checks.defaults);
        let asserting = caller.clone();
        let pseudonyms = self.config.pseudonyms.clone();
        let keyed = pseudonyms.in_keys(patient.canonical());
        self.guarded(draft, &patient, move |tx, draft| {
            // Found by the patient's pseudonym, so the record is that patient's.
            let stored = find_active(tx, &keyed, exchange_number)?;
            draft.target = Some(stored.record.id.clone());
            let transition = stored.lifecycle.accept(&pharmacy, today)?;
            let lines = clinical::new_lines(stored.lines()?.iter().map(|l| &l.drug));
            let budget = begin_check(
                tx,
                draft,
                &checker.limits,
                &keyed,
                lines.len(),
                check.consent,
            )?;
            let subject = clinical::Subject {
                caller: &pharmacy,
                patient: &keyed,
                today,
                lines: &lines,
                exclude: Some(&stored.record.id),
            };
            let consent = clinical::budgeted_consent(budget, check.consent);
            let findings = checker.run(tx, &subject, (&options, consent), &mut draft.check_took)?;
            let (id, content, cms_signature) = (
                stored.record.id.clone(),
                stored.record.content.to_vec(),
                signatures::restore(tx, &stored.record.cms)?,
            );
            let state = match transition {
                Transition::Unchanged => stored.lifecycle.state_on(today),
                t => stored.apply(tx, t, today, now_ms, &pseudonyms)?,
            };
            clinical::record_consent(
                tx,
                &keyed,
                &asserting,
                check.consent,
                draft.time_ms,
                draft.action.as_str(),
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
        let mut draft = self.draft(caller, Action::CheckDispensing, now);
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
            let patient = &pseudonyms.in_keys(&stored.record.patient_key);
            let budget = begin_check(
                tx,
                draft,
                &checker.limits,
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

    /// The accepting pharmacy hands a prescription back.
    pub async fn give_back(&self, caller: &Caller, id: String) -> Result<State, Error> {
        let now = self.clock.now();
        let today = JapanDate::of(now);
        let now_ms = millis(now);
        let pharmacy = caller.institution.code.clone();
        let mut draft = self.draft(caller, Action::ReturnPrescription, now);
        draft.target = Some(id.clone());
        let pseudonyms = self.config.pseudonyms.clone();
        self.run(draft, move |tx, _| {
            let stored = Stored::load(tx, &id)?.ok_or(Error::NotFound)?;
            let transition = stored
                .lifecycle
                .give_back(&pharmacy, today)
                .map_err(only_the_holder)?;
            Ok(match transition {
                Transition::Unchanged => stored.lifecycle.state_on(today),
                t => stored.apply(tx, t, today, now_ms, &pseudonyms)?,
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
        let mut draft = self.draft(caller, Action::RecordDispensing, now);
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
        let record_content = Arc::clone(verified.content());
        let (record_signature, certificates) = signatures::cut(verified.cms_signature());
        let limits = self.config.limits.clone();
        let pseudonyms = self.config.pseudonyms.clone();
        self.run(draft, move |tx, draft| {
            if let Some(bytes) = tx.get(Table::Documents, document_key(&content_sha256))? {
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
            let number_key = number_key(facts.institution.as_str(), facts.number.as_str());
            let id = tx
                .get(Table::ByNumber, &number_key)?
                .ok_or(Error::NotFound)?;
            let id = String::from_utf8(id).map_err(|_| corrupt("prescription id"))?;
            draft.target = Some(id.clone());
            let stored =
                Stored::load(tx, &id)?.ok_or_else(|| corrupt("index without prescription"))?;
            let record_key = dispensing_key(&id, facts.record_number);
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
                    patient: &pseudonyms.in_keys(&stored.record.patient_key),
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
                content: Arc::clone(&record_content),
                cms: record_signature.clone(),
                content_sha256,
                signer_serial_number: signer.serial_number.clone(),
                signer_certificate_sha256: signer.certificate_sha256,
                received_at_ms: millis(now),
            };
            let record = StoredDispensingRecord::V2(record);
            let StoredDispensingRecord::V2(written) = &record else {
                unreachable!("built as version 2 just above")
            };
            let row = dispensing_row(written);
            tx.put_row(
                Table::Dispensings,
                &record_key,
                &encode(&record),
                row.columns(),
            );
            tx.put(
                Table::Documents,
                document_key(&content_sha256),
                &encode(&DocumentRecord::V1(DocumentV1::Dispensing {
                    prescription_id: id.clone(),
                    record_number: facts.record_number,
                })),
            );
            let state = stored.apply(tx, transition, today, now_ms, &pseudonyms)?;
            Ok(Dispensed {
                prescription_id: id,
                state,
                record_number: facts.record_number,
            })
        })
        .await
    }
}
