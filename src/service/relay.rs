//! Handing dispensing records back to the prescription management service. The receiving side:
//! `intake` verifies a delivered record as of its original receipt time and stores it once by
//! record id. The sending side's bookkeeping: the relay's acknowledged position in the event log
//! (only ever moved forward, in a transaction of its own, after the upstream acknowledged) and
//! the dead letters of records the upstream refused for good. The relay loop itself, which talks
//! gRPC, is `crate::relay`.

use std::time::{Duration, UNIX_EPOCH};

use crate::{
    domain::{
        hash::{hex, sha256},
        rx::DispensingFacts,
    },
    proto::v1::DispensingRecord,
    store::{self, Store, Table, Txn},
};

use super::{
    Caller, Error, Gateway, key, millis,
    records::{DeadLetterRecord, DeadLetterV1, IntakeRecord, IntakeV1, decode, encode},
};

const ACKED_KEY: &[u8] = b"relay\0acked";

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
}

/// A record the relay gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub sequence: u64,
    pub prescription_id: String,
    pub record_number: u32,
    pub code: String,
    pub message: String,
}

fn u64_of(bytes: &[u8]) -> Result<u64, store::Error> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| store::Error::Corrupt("relay position".into()))
}

impl Gateway {
    /// Takes a delivered dispensing record: verified as of its original receipt (an outage
    /// longer than the signing-time window does not make it unverifiable), stored once by record
    /// id. Returns true for a duplicate.
    pub async fn intake(&self, caller: &Caller, d: Delivery) -> Result<bool, Error> {
        let now = self.clock.now();
        let mut draft = self.draft(caller, "DeliverDispensingRecord", now);
        draft.target = Some(d.record_id.clone());
        if d.record_id != hex(&sha256(&d.content)) {
            let e = Error::invalid("record_id", "must be the SHA-256 of the record's content");
            return self.refuse(draft, e).await;
        }
        let received_at = UNIX_EPOCH + Duration::from_millis(d.received_at_ms.max(0) as u64);
        if received_at > now + Duration::from_secs(300) {
            let e = Error::invalid("received_unix_ms", "must not lie in the future");
            return self.refuse(draft, e).await;
        }
        let verified = match self
            .verify::<DispensingRecord>(&d.content, &d.cms_signature, received_at)
            .and_then(|v| {
                DispensingFacts::try_from(v.document()).map_err(Error::InvalidArgument)?;
                Ok(v)
            }) {
            Ok(v) => v,
            Err(e) => return self.refuse(draft, e).await,
        };
        draft.signer = Some(verified.signer().clone());
        let sender = caller.institution.code.to_string();
        let delivered_at_ms = millis(now);
        self.run(draft, move |tx, _| {
            let id_key = key(&[b"record", d.record_id.as_bytes()]);
            if tx.get(Table::Intake, &id_key)?.is_some() {
                return Ok(true);
            }
            let arrival = tx.next_sequence("intake")?;
            let record = IntakeRecord::V1(IntakeV1 {
                record_id: d.record_id.clone(),
                arrival,
                sender,
                sequence: d.sequence,
                received_at_ms: d.received_at_ms,
                delivered_at_ms,
                prescription_id: d.prescription_id,
                institution: d.institution,
                number: d.number,
                content: d.content,
                cms_signature: d.cms_signature,
            });
            tx.put(Table::Intake, &id_key, &arrival.to_be_bytes());
            tx.put(
                Table::Intake,
                &key(&[b"arrival", &arrival.to_be_bytes()]),
                &encode(&record),
            );
            Ok(false)
        })
        .await
    }

    /// The records received through the intake, in arrival order.
    pub async fn intake_records(&self) -> Result<Vec<IntakeV1>, Error> {
        let read = self
            .store
            .transact(|tx: &mut dyn Txn| {
                tx.scan_prefix(Table::Intake, &key(&[b"arrival", b""]), usize::MAX)?
                    .into_iter()
                    .map(|(_, v)| decode::<IntakeRecord>(&v).map(|IntakeRecord::V1(r)| r))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(Error::from)?;
        read.map_err(Error::from)
    }

    /// The last event sequence the upstream acknowledged (0: none).
    pub async fn relay_position(&self) -> Result<u64, Error> {
        let read = self
            .store
            .transact(|tx: &mut dyn Txn| {
                tx.get(Table::Meta, ACKED_KEY)?
                    .map_or(Ok(0), |b| u64_of(&b))
            })
            .await
            .map_err(Error::from)?;
        read.map_err(Error::from)
    }

    /// Moves the acknowledged position forward to `sequence` (never back), with the dead letter
    /// of the record at `sequence` if the upstream refused it for good.
    pub async fn relay_ack(&self, sequence: u64, dead: Option<DeadLetter>) -> Result<(), Error> {
        let time_ms = millis(self.clock.now());
        let written = self
            .store
            .transact(move |tx: &mut dyn Txn| {
                let current = tx
                    .get(Table::Meta, ACKED_KEY)?
                    .map_or(Ok(0), |b| u64_of(&b))?;
                if sequence > current {
                    tx.put(Table::Meta, ACKED_KEY, &sequence.to_be_bytes());
                }
                if let Some(d) = dead {
                    let record = DeadLetterRecord::V1(DeadLetterV1 {
                        sequence: d.sequence,
                        prescription_id: d.prescription_id,
                        record_number: d.record_number,
                        time_ms,
                        code: d.code,
                        message: d.message,
                    });
                    tx.put(
                        Table::Intake,
                        &key(&[b"dead", &d.sequence.to_be_bytes()]),
                        &encode(&record),
                    );
                }
                Ok::<_, store::Error>(())
            })
            .await
            .map_err(Error::from)?;
        written.map_err(Error::from)
    }

    /// The dead-letter list, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetterV1>, Error> {
        let read = self
            .store
            .transact(|tx: &mut dyn Txn| {
                tx.scan_prefix(Table::Intake, &key(&[b"dead", b""]), usize::MAX)?
                    .into_iter()
                    .map(|(_, v)| decode::<DeadLetterRecord>(&v).map(|DeadLetterRecord::V1(r)| r))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(Error::from)?;
        read.map_err(Error::from)
    }
}
