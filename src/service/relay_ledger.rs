//! Handing dispensing records back to the prescription management service, the sending side's
//! bookkeeping: the relay's acknowledged position in the event log (only ever moved forward, in a
//! transaction of its own, after the upstream acknowledged, and only by the holder of the relay's
//! lease) and the dead letters of records the upstream refused for good. The relay loop itself,
//! which talks gRPC, is `crate::relay`; the receiving side is `intake`.

use std::time::Duration;

use crate::store::{self, Store, Table, Txn};

use super::{
    Error, Gateway, Tenure, lease, millis,
    records::{DeadLetterRecord, DeadLetterV1, encode},
    schema::{RELAY_ACKED_KEY, dead_letter_key},
};

/// The lease that one gateway of a fleet relays under.
const RELAY_LEASE: &str = "relay";

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

    /// Takes the relay's lease for `term`, or renews it (lease.rs).
    pub async fn take_relay_lease(&self, term: Duration) -> Result<Tenure, Error> {
        self.take_lease(RELAY_LEASE, term).await
    }

    /// Gives the relay's lease up if this process holds it: at shutdown, so that another
    /// gateway relays at once.
    pub async fn release_relay_lease(&self) -> Result<(), Error> {
        self.release_lease(RELAY_LEASE).await
    }

    /// Moves the acknowledged position forward to `sequence` (never back), with the dead letter
    /// of the record at `sequence` if the upstream refused it for good; if this process still
    /// holds the relay's lease, checked in the same transaction, so that a relay that lost it
    /// while a delivery was under way writes nothing beside the new holder. Whether it held it.
    pub async fn relay_ack(&self, sequence: u64, dead: Option<DeadLetter>) -> Result<bool, Error> {
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
        let me = self.lease_holder;
        let written = self
            .store
            .transact(move |tx: &mut dyn Txn| {
                if !lease::holds(tx, RELAY_LEASE, me)? {
                    return Ok(false);
                }
                let current = tx
                    .get(Table::Meta, RELAY_ACKED_KEY)?
                    .map_or(Ok(0), |b| u64_of(&b))?;
                if sequence > current {
                    tx.put(Table::Meta, RELAY_ACKED_KEY, &sequence.to_be_bytes());
                }
                if let Some((key, record)) = &dead {
                    tx.put(Table::Intake, key, record);
                }
                Ok::<_, store::Error>(true)
            })
            .await
            .map_err(Error::from)?;
        written.map_err(Error::from)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::service::testing;

    /// The acknowledgement of a relay that does not hold the lease (it lost it, or never took
    /// it) moves nothing; the holder's moves the position.
    #[tokio::test]
    async fn only_the_holder_of_the_lease_moves_the_position() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, _) = testing::gateway(dir.path());
        assert!(!gateway.relay_ack(5, None).await.unwrap());
        assert_eq!(gateway.relay_position().await.unwrap(), 0);
        gateway
            .take_relay_lease(Duration::from_secs(10))
            .await
            .unwrap();
        assert!(gateway.relay_ack(5, None).await.unwrap());
        assert_eq!(gateway.relay_position().await.unwrap(), 5);
        gateway.release_relay_lease().await.unwrap();
        assert!(!gateway.relay_ack(7, None).await.unwrap());
        assert_eq!(gateway.relay_position().await.unwrap(), 5);
    }
}
