//! The numbering of events on a store whose transactions run side by side (PostgreSQL). A
//! transaction there cannot take the log's next number itself: the counter would be a row
//! every change writes, and numbers taken in transactions that commit in another order would
//! let a feed that resumes after N skip an event numbered below N that committed later. So a
//! change leaves its event pending in `Meta`, under a draw of the store's unique sequence
//! (`events::append`), and the sequencer numbers what has committed, one transaction at a time.
//!
//! Why no consumer ever skips an event: the sequencer's passes each read and write the log's
//! counter, so under SERIALIZABLE they commit one after the other, and each numbers above every
//! number the ones before gave. A reader's snapshot that holds a pass holds every pass before
//! it, so the numbers it sees are every number given up to some point (less those pruned):
//! the log grows only at its end, as on the embedded store. Within a pass the events go in the
//! order of their draws, and a change that read another's result drew after it, so the events
//! of one prescription come in the order they happened. Events of different prescriptions
//! that commit close together may come in either order. The numbers have no gaps; a number is
//! never given twice, as the counter is a row of the same transaction.
//!
//! Passes run whenever a transaction of this gateway commits (woken by `Gateway::committed`)
//! and every `poll` besides, for the events of other gateways on the same database; two
//! gateways' passes at once conflict on the counter, and one runs again.

use std::time::Duration;

use crate::store::{self, Store, Table, Txn};

use super::{
    Error, Gateway, events,
    records::{EventRecord, decode},
    schema::{self, pending_events},
};

/// The most events one pass numbers: a pass stays a short transaction however many wait.
const PASS: usize = 500;

/// After a failed pass, the wait before the next one.
const AFTER_FAILURE: Duration = Duration::from_secs(1);

impl Gateway {
    /// Says that a transaction committed: the feeds are woken at once where its events are in
    /// the log already, the sequencer where they wait for it.
    pub(super) fn committed(&self) {
        if self.store.serial() {
            self.events.notify_waiters();
        } else {
            self.pending.notify_one();
        }
    }

    /// Numbers the pending events, in the order of their draws, at most [`PASS`] of them in one
    /// transaction; returns how many it numbered.
    async fn number_pending_events(&self) -> Result<usize, Error> {
        let numbered = self
            .store
            .transact(|tx: &mut dyn Txn| {
                let range = pending_events();
                let pending = tx.scan_range(Table::Meta, &range.start, &range.end, PASS)?;
                for (key, value) in &pending {
                    let event = decode::<EventRecord>(value)?;
                    let sequence = tx.next_sequence(schema::EVENT_SEQUENCE)?;
                    events::put_numbered(tx, sequence, &event);
                    tx.delete(Table::Meta, key);
                }
                Ok::<_, store::Error>(pending.len())
            })
            .await
            .map_err(Error::from)?
            .map_err(Error::from)?;
        if numbered > 0 {
            self.events.notify_waiters();
        }
        Ok(numbered)
    }

    /// Numbers the events an import left pending, before the expiry sweep or any call can add
    /// one after them, on a store that runs its transactions one at a time: nothing else adds
    /// any there. On one that runs them side by side the sequencers of every gateway number
    /// them in their turn, in the order of their draws, as they do their own.
    pub async fn number_imported_events(&self) -> Result<(), Error> {
        if self.store.serial() {
            while self.number_pending_events().await? > 0 {}
        }
        Ok(())
    }

    /// Numbers pending events for as long as the gateway runs: a pass after each of this
    /// gateway's commits and every `poll`; a failed pass is logged and tried again a second
    /// later. On a store that runs its transactions one at a time nothing is left pending but
    /// what an import brought, which the first pass numbers.
    pub async fn sequence_events(&self, poll: Duration) {
        loop {
            match self.number_pending_events().await {
                Ok(PASS) => continue,
                Ok(_) if self.store.serial() => {
                    self.pending.notified().await;
                }
                Ok(_) => {
                    let _ = tokio::time::timeout(poll, self.pending.notified()).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "numbering the pending events failed");
                    tokio::time::sleep(AFTER_FAILURE).await;
                }
            }
        }
    }
}
