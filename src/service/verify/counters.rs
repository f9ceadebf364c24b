//! The checks of `Meta` (the store's counters, the layout stamp, the indexes of accepted and
//! expiring prescriptions, the log's positions) and of the audit tables' entries as entries
//! (the chains themselves are the verifier's); and, once every table has been read, that no
//! counter is behind the highest number the store holds.

use std::sync::Arc;

use crate::{
    domain::hash::hex,
    store::{self, Store, Table, Txn, sequence_name},
};

use super::{Bad, Problem, prescriptions, wrong};
use crate::service::{
    records::{AuditRecord, ChainHeadRecord, EventRecord, StateV1, decode},
    schema::{
        AuditChainKind, CONSENT_SEQUENCE, EVENT_SEQUENCE, IMPORT_SEQUENCE, INTAKE_SEQUENCE,
        MetaKind, PENDING_EVENT_SEQUENCE, UNCHAINED_AUDIT_SEQUENCE, audit_chain_kind, meta_kind,
        parse_key,
    },
};

/// The highest number of each counted kind the tables hold, as read so far.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Highest {
    pub(super) event: u64,
    pub(super) intake: u64,
    pub(super) consent: u64,
    pub(super) import: u64,
    pub(super) unchained_audit: u64,
    pub(super) pending_event: u64,
}

/// Raises `highest` to `number`.
pub(super) fn raise(highest: &mut u64, number: u64) {
    *highest = (*highest).max(number);
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
pub(super) fn meta(
    tx: &dyn Txn,
    key: &[u8],
    value: &[u8],
    highest: &mut Highest,
) -> Result<(), Bad> {
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
        Some(MetaKind::PendingEvent(draw)) => {
            decode::<EventRecord>(value).map_err(|e| wrong(format!("does not decode: {e}")))?;
            raise(&mut highest.pending_event, draw);
            Ok(())
        }
        None => Err(wrong("a key of no kind Meta holds")),
    }
}

/// An entry of `Audit`: its key parses; an unchained record (of older stores) decodes.
pub(super) fn audit(key: &[u8], value: &[u8], highest: &mut Highest) -> Result<(), Bad> {
    let (writer, sequence) = parse_key(key).map_err(|_| wrong("not an audit key"))?;
    if writer.is_none() {
        decode::<AuditRecord>(value).map_err(|e| wrong(format!("does not decode: {e}")))?;
        raise(&mut highest.unchained_audit, sequence);
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
/// log's and the older stores' audit counter: the unique numbers come from a database sequence there, which its counters do not
/// follow (`Txn::unique_sequence`).
pub(super) async fn check(store: &Arc<dyn Store>, highest: Highest) -> Result<(), Problem> {
    let mut counters = vec![
        (EVENT_SEQUENCE, highest.event),
        (UNCHAINED_AUDIT_SEQUENCE, highest.unchained_audit),
    ];
    if store.serial() {
        counters.extend([
            (INTAKE_SEQUENCE, highest.intake),
            (CONSENT_SEQUENCE, highest.consent),
            (IMPORT_SEQUENCE, highest.import),
            (PENDING_EVENT_SEQUENCE, highest.pending_event),
        ]);
    }
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
