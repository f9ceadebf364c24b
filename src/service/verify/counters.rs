//! The checks of `Meta` (the store's counters, the layout stamp, the indexes of accepted and
//! expiring prescriptions, the log's positions, the leases) and of the audit tables' entries as entries
//! (the chains themselves are the verifier's); and, once every table has been read, that no
//! counter is behind the highest number the store holds.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    domain::hash::hex,
    store::{self, Store, Table, Txn, sequence_name},
};

use super::{Bad, Problem, prescriptions, wrong};
use crate::service::{
    records::{AuditRecord, ChainHeadRecord, EventRecord, LeaseRecord, StateV1, decode},
    schema::{
        AuditChainKind, CONSENT_SEQUENCE, IMPORT_SEQUENCE, INTAKE_SEQUENCE, MetaKind,
        PENDING_EVENT_SEQUENCE, audit_chain_kind, counted, meta_kind, parse_key,
    },
};

/// The counters of `Txn::unique_sequence`, which a store whose transactions run side by side
/// does not follow: it draws their numbers from a database sequence.
const UNIQUE: [&str; 4] = [
    INTAKE_SEQUENCE,
    CONSENT_SEQUENCE,
    IMPORT_SEQUENCE,
    PENDING_EVENT_SEQUENCE,
];

/// The highest number of each counter the keys noted so far hold (`schema::counted`): what
/// each counter must be at least, or it would give a number again. The check of a whole store
/// compares its counters with it; a load of a dump (`rxgate store import`, `restore`) raises
/// them to it, since a dump of a store that draws unique numbers from a database sequence
/// carries counters behind its keys.
#[derive(Debug, Clone, Default)]
pub struct Highest(BTreeMap<&'static str, u64>);

impl Highest {
    /// Notes the number `key` of `table` holds, if it holds one.
    pub fn note(&mut self, table: Table, key: &[u8]) {
        if let Some((name, number)) = counted(table, key) {
            let highest = self.0.entry(name).or_default();
            *highest = (*highest).max(number);
        }
    }

    /// Raises each counter in `tx` to the highest number noted of it (one already there or
    /// past it stays).
    pub fn raise_counters(&self, tx: &mut dyn Txn) -> Result<(), store::Error> {
        for (name, &number) in &self.0 {
            store::raise_sequence(tx, name, number)?;
        }
        Ok(())
    }
}

/// A value of `len` bytes, or wrong.
fn sized(value: &[u8], len: usize) -> Result<(), Bad> {
    if value.len() == len {
        Ok(())
    } else {
        Err(wrong(format!("is {} bytes long, not {len}", value.len())))
    }
}

/// An entry of `Meta`.
pub(super) fn meta(tx: &dyn Txn, key: &[u8], value: &[u8]) -> Result<(), Bad> {
    if sequence_name(key).is_some() {
        return sized(value, 8);
    }
    match meta_kind(key) {
        Some(MetaKind::Layout) => sized(value, 4),
        Some(MetaKind::Position) => sized(value, 8),
        Some(MetaKind::PseudonymKeyFingerprint) => sized(value, 32),
        Some(MetaKind::LayoutMark) => Ok(()),
        Some(MetaKind::Accepted(id)) => match prescriptions::load(tx, &id)?.state {
            StateV1::Accepted(_) => Ok(()),
            _ => Err(wrong(format!(
                "prescription {id} is indexed as accepted, but is not"
            ))),
        },
        // Left behind by a refill's earlier window or an ended prescription, the expiry sweep
        // drops such an entry; an active prescription's own is checked from its record.
        Some(MetaKind::Expiry(_)) => Ok(()),
        Some(MetaKind::PendingEvent(_)) => decode::<EventRecord>(value)
            .map(drop)
            .map_err(|e| wrong(format!("does not decode: {e}"))),
        Some(MetaKind::Lease) => decode::<LeaseRecord>(value)
            .map(drop)
            .map_err(|e| wrong(format!("does not decode: {e}"))),
        None => Err(wrong("a key of no kind Meta holds")),
    }
}

/// An entry of `Audit`: its key parses; an unchained record (of older stores) decodes.
pub(super) fn audit(key: &[u8], value: &[u8]) -> Result<(), Bad> {
    let (writer, _) = parse_key(key).map_err(|_| wrong("not an audit key"))?;
    if writer.is_none() {
        decode::<AuditRecord>(value).map_err(|e| wrong(format!("does not decode: {e}")))?;
    }
    Ok(())
}

/// An entry of `AuditChain`: a head decodes and is its writer's; a last checkpoint's number is
/// 8 bytes (a checkpoint goes to the verifier).
pub(super) fn audit_chain(key: &[u8], value: &[u8]) -> Result<(), Bad> {
    match audit_chain_kind(key) {
        Some(AuditChainKind::Head) => {
            let ChainHeadRecord::V1(head) =
                decode(value).map_err(|e| wrong(format!("does not decode: {e}")))?;
            if !key.ends_with(&head.writer) {
                return Err(wrong(format!(
                    "holds the head of writer {}",
                    hex(&head.writer)
                )));
            }
            Ok(())
        }
        Some(AuditChainKind::Checkpoint) => Ok(()),
        Some(AuditChainKind::LastCheckpoint) => sized(value, 8),
        None => Err(wrong("a key of no kind AuditChain holds")),
    }
}

/// Each counter is at least the highest number of its kind the tables hold: a counter behind
/// would give a number again. On a store whose transactions run side by side only the event
/// log's and the older stores' audit counter: the unique numbers come from a database sequence
/// there, which its counters do not follow ([`UNIQUE`]).
pub(super) async fn check(store: &Arc<dyn Store>, highest: Highest) -> Result<(), Problem> {
    let serial = store.serial();
    let counters: Vec<(&str, u64)> = (highest.0.into_iter())
        .filter(|(name, _)| serial || !UNIQUE.contains(name))
        .collect();
    let behind = store
        .transact(move |tx: &mut dyn Txn| {
            for &(name, held) in &counters {
                let counter = tx.sequence(name)?;
                if counter < held {
                    return Ok(Some((name, counter, held)));
                }
            }
            Ok::<_, store::Error>(None)
        })
        .await
        .and_then(|inner| inner);
    let problem = |entry: String, what: String| Problem {
        table: Table::Meta,
        entry,
        what,
    };
    match behind {
        Ok(None) => Ok(()),
        Ok(Some((name, counter, held))) => Err(problem(
            format!("counter sequence/{name}"),
            format!("is {counter}, behind the highest number the store holds, {held}"),
        )),
        Err(e) => Err(problem(
            String::from("counters"),
            format!("reading failed: {e}"),
        )),
    }
}
