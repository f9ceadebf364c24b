//! Handing dispensing records back to the prescription management service, the sending side's
//! bookkeeping: the relay's acknowledged position in the event log (only ever moved forward, in a
//! transaction of its own, after the upstream acknowledged) and the dead letters of records the
//! upstream refused for good. The relay loop itself, which talks gRPC, is `crate::relay`; the
//! receiving side is `intake`.

use crate::store::{self, Store, Table, Txn};

use super::{
    Error, Gateway, millis,
    records::{DeadLetterRecord, DeadLetterV1, encode},
    schema::{RELAY_ACKED_KEY, dead_letter_key},
};

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
    /// The last event sequence the upstream acknowledged (0: none).
    pub async fn relay_position(&self) -> Result<u64, Error> {
        let read = self
            .store
            .transact(|tx: &mut dyn Txn| {
                tx.get(Table::Meta, RELAY_ACKED_KEY)?
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
        // Encoded once, before the transaction: a run borrows it.
        let dead = dead.map(|d| {
            let key = dead_letter_key(d.sequence);
            let record = DeadLetterRecord::V1(DeadLetterV1 {
                sequence: d.sequence,
                prescription_id: d.prescription_id,
                record_number: d.record_number,
                time_ms,
                code: d.code,
                message: d.message,
            });
            (key, encode(&record))
        });
        let written = self
            .store
            .transact(move |tx: &mut dyn Txn| {
                let current = tx
                    .get(Table::Meta, RELAY_ACKED_KEY)?
                    .map_or(Ok(0), |b| u64_of(&b))?;
                if sequence > current {
                    tx.put(Table::Meta, RELAY_ACKED_KEY, &sequence.to_be_bytes());
                }
                if let Some((key, record)) = &dead {
                    tx.put(Table::Intake, key, record);
                }
                Ok::<_, store::Error>(())
            })
            .await
            .map_err(Error::from)?;
        written.map_err(Error::from)
    }
}
