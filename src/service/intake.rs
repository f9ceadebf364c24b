//! The receiving side of the relay (ManagementIntake): a delivered dispensing record is verified
//! and stored once by record id. Its signature is judged as of the sender's original receipt
//! time only when a gateway this intake pins attests that time (a signed RelayStatement);
//! otherwise as of now, so that no caller can backdate a record past its signer's revocation.
//! The record's institution and prescription number must be the signed record's own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost::Message;

use crate::{
    domain::{
        hash::{hex, sha256},
        rx::DispensingFacts,
    },
    pki::identity::{RELAY_STATEMENT, Untrusted},
    store::Table,
    wire::proto::v1::{DispensingRecord, RelayStatement},
};

use super::{
    Action, Caller, Error, Gateway, millis,
    records::{IntakeRecord, IntakeV1, IntakeV2, encode},
    schema::{self, arrival_key, intake_record_key},
};

/// A dispensing record as a relaying gateway delivers it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub record_id: String,
    pub sequence: u64,
    pub content: Vec<u8>,
    pub cms_signature: Vec<u8>,
    pub received_at_ms: i64,
    pub prescription_id: String,
    pub institution: String,
    pub number: String,
    pub attestation: Option<Attestation>,
}

/// A sending gateway's signature over a delivery's metadata.
#[derive(Debug, Clone)]
pub struct Attestation {
    /// A serialized RelayStatement.
    pub statement: Vec<u8>,
    pub signature: Vec<u8>,
    pub sender_certificate_sha256: Vec<u8>,
}

/// The time a delivery is judged as of, and who attested it.
struct Basis {
    at: SystemTime,
    attested_by: Option<String>,
}

const NOT_THE_REQUESTS: &str = "must state the request's record_id, received_unix_ms, \
     prescription_id, institution_code and prescription_number";

impl Delivery {
    fn statement(&self) -> RelayStatement {
        RelayStatement {
            record_id: self.record_id.clone(),
            received_unix_ms: self.received_at_ms,
            prescription_id: self.prescription_id.clone(),
            institution_code: self.institution.clone(),
            prescription_number: self.number.clone(),
        }
    }

    fn received_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.received_at_ms.max(0) as u64)
    }

    /// The signed record's own institution and number must be the ones delivered beside it.
    fn matches(&self, facts: &DispensingFacts) -> Result<(), Error> {
        if facts.institution.to_string() != self.institution {
            return Err(Error::invalid(
                "institution_code",
                "must equal the signed dispensing record's",
            ));
        }
        if facts.number.as_str() != self.number {
            return Err(Error::invalid(
                "prescription_number",
                "must equal the signed dispensing record's",
            ));
        }
        Ok(())
    }
}

impl Gateway {
    /// What a delivery is judged as of: the attested receipt time (verified before the
    /// statement is decoded), or now when nothing is attested.
    fn basis(&self, d: &Delivery, now: SystemTime) -> Result<Basis, Error> {
        let Some(a) = &d.attestation else {
            return Ok(Basis {
                at: now,
                attested_by: None,
            });
        };
        let signed = (RELAY_STATEMENT, a.statement.as_slice());
        self.config
            .trusted_senders
            .verify(&a.sender_certificate_sha256, signed, &a.signature)
            .map_err(|e| match e {
                Untrusted::UnknownSender => Error::PermissionDenied(
                    "the relay attestation is signed by a gateway this intake does not pin",
                ),
                Untrusted::BadSignature => {
                    Error::invalid("attestation.signature", "does not verify")
                }
            })?;
        let statement = RelayStatement::decode(a.statement.as_slice())
            .map_err(|_| Error::invalid("attestation.statement", "a RelayStatement"))?;
        if statement != d.statement() {
            return Err(Error::invalid("attestation.statement", NOT_THE_REQUESTS));
        }
        Ok(Basis {
            at: d.received_at(),
            attested_by: Some(hex(&a.sender_certificate_sha256)),
        })
    }

    /// Takes a delivered dispensing record: verified as of its attested receipt (an outage
    /// longer than the signing-time window does not make it unverifiable) or as of now, stored
    /// once by record id. Returns true for a duplicate.
    pub async fn intake(&self, caller: &Caller, d: Delivery) -> Result<bool, Error> {
        let now = self.clock.now();
        let mut draft = self.draft(caller, Action::DeliverDispensingRecord, now);
        draft.target = Some(d.record_id.clone());
        if d.record_id != hex(&sha256(&d.content)) {
            let e = Error::invalid("record_id", "must be the SHA-256 of the record's content");
            return self.refuse(draft, e).await;
        }
        if d.received_at() > now + Duration::from_secs(300) {
            let e = Error::invalid("received_unix_ms", "must not lie in the future");
            return self.refuse(draft, e).await;
        }
        let judged = self.basis(&d, now).and_then(|basis| {
            let verified =
                self.verify::<DispensingRecord>(&d.content, &d.cms_signature, basis.at)?;
            let facts =
                DispensingFacts::try_from(verified.document()).map_err(Error::InvalidArgument)?;
            d.matches(&facts)?;
            Ok((verified.signer().clone(), basis.attested_by))
        });
        let (signer, attested_by) = match judged {
            Ok(judged) => judged,
            Err(e) => return self.refuse(draft, e).await,
        };
        draft.signer = Some(signer);
        // The arrival is drawn by each run of the transaction; the documents are shared by all.
        let delivered = IntakeV1 {
            record_id: d.record_id,
            arrival: 0,
            sender: caller.institution.code.to_string(),
            sequence: d.sequence,
            received_at_ms: d.received_at_ms,
            delivered_at_ms: millis(now),
            prescription_id: d.prescription_id,
            institution: d.institution,
            number: d.number,
            content: d.content.into(),
            cms_signature: d.cms_signature.into(),
        };
        self.run(draft, move |tx, _| {
            let id_key = intake_record_key(&delivered.record_id);
            if tx.get(Table::Intake, &id_key)?.is_some() {
                return Ok(true);
            }
            // Only unique, in arrival order: nothing reads the intake as a feed that resumes.
            let arrival = tx.unique_sequence(schema::INTAKE_SEQUENCE)?;
            let record = IntakeRecord::V2(IntakeV2 {
                record: IntakeV1 {
                    arrival,
                    ..delivered.clone()
                },
                attested_by: attested_by.clone(),
            });
            tx.put(Table::Intake, &id_key, &arrival.to_be_bytes());
            tx.put(Table::Intake, &arrival_key(arrival), &encode(&record));
            Ok(false)
        })
        .await
    }
}
