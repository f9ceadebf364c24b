//! The audit trail: `Audit` (the unchained records of stores written before the chain, and the
//! links of every writer's chain), `AuditChain` (the chains' heads and the signed checkpoints),
//! and the columns of an audit record.

use crate::{
    service::records::{AuditRecord, AuditV1, ChainedV1},
    store::{self, Column, Table, Value},
};

use super::{Range, Row, prefix_end, text_or_null};

/// The first byte of a link's key (an unchained record's key starts with 0).
const LINK: u8 = b'c';

/// `Audit`: an unchained record (versions 1 and 2, written before the chain) by the
/// store-wide counter `audit` it was numbered by (8 bytes, big-endian). None is written now;
/// [`parse_key`] reads them.
#[cfg(test)]
pub(in crate::service) fn unchained_key(sequence: u64) -> [u8; 8] {
    sequence.to_be_bytes()
}

/// `Audit`: the link `sequence` of `writer`'s chain: `c`, the writer (the SHA-256 of its
/// `[gateway]` certificate), the writer's own gapless sequence (8 bytes, big-endian).
pub fn link_key(writer: &[u8; 32], sequence: u64) -> Vec<u8> {
    [&[LINK][..], writer, &sequence.to_be_bytes()].concat()
}

/// The end of every `Audit` key: the unchained records, then each writer's chain.
pub(in crate::service) const AUDIT_END: [u8; 42] = [u8::MAX; 42];

/// The writer (for a link) and the sequence an `Audit` key names.
pub fn parse_key(key: &[u8]) -> Result<(Option<[u8; 32]>, u64), store::Error> {
    let corrupt = || store::Error::Corrupt("audit key".into());
    let sequence = |b: &[u8]| b.try_into().map(u64::from_be_bytes).map_err(|_| corrupt());
    match key {
        [LINK, rest @ ..] if rest.len() == 40 => {
            let writer = rest[..32].try_into().map_err(|_| corrupt())?;
            Ok((Some(writer), sequence(&rest[32..])?))
        }
        _ => Ok((None, sequence(key)?)),
    }
}

/// The prefix of every chain head in `AuditChain`.
pub(in crate::service) const HEADS: &[u8] = b"head\0";

/// `AuditChain`: the head of `writer`'s chain (its last link's sequence and hash), written with
/// every link, so that writers sharing a store never write the same row.
pub fn head_key(writer: &[u8; 32]) -> Vec<u8> {
    [HEADS, writer].concat()
}

const CHECKPOINT: &[u8] = b"checkpoint\0";
const LAST_CHECKPOINT: &[u8] = b"last-checkpoint\0";

/// `AuditChain`: the checkpoint `number` of `signer` (a gateway, by the SHA-256 of its
/// certificate; the number 8 bytes, big-endian): every head, signed.
pub(in crate::service) fn checkpoint_key(signer: &[u8; 32], number: u64) -> Vec<u8> {
    [CHECKPOINT, signer, &number.to_be_bytes()].concat()
}

/// Every checkpoint key, by signer and number.
pub(in crate::service) fn checkpoint_range() -> Range {
    Range {
        start: CHECKPOINT.to_vec(),
        end: prefix_end(CHECKPOINT),
    }
}

/// `AuditChain`: the number of `signer`'s last checkpoint (8 bytes, big-endian).
pub(in crate::service) fn last_checkpoint_key(signer: &[u8; 32]) -> Vec<u8> {
    [LAST_CHECKPOINT, signer].concat()
}

/// What an `AuditChain` key holds, told by its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::service) enum AuditChainKind {
    Head,
    Checkpoint,
    LastCheckpoint,
}

/// The kind of an `AuditChain` key; `None` for a key of no kind.
pub(in crate::service) fn audit_chain_kind(key: &[u8]) -> Option<AuditChainKind> {
    [
        (HEADS, AuditChainKind::Head),
        (CHECKPOINT, AuditChainKind::Checkpoint),
        (LAST_CHECKPOINT, AuditChainKind::LastCheckpoint),
    ]
    .into_iter()
    .find_map(|(prefix, kind)| key.starts_with(prefix).then_some(kind))
}

/// The columns of `Audit`. `writer` and `sequence` are a link's (none for the unchained
/// records of older stores, whose key is their store-wide sequence); `time_ms` is when the call,
/// or the first counted request, came (Unix milliseconds); `entry` is "genesis", "call" or
/// "counted"; `action` the RPC's method name (or "Lockout"), `target` what the call named, a
/// prescription id for most; a check's patient is named by its keyed pseudonym, as the record
/// names it.
pub(in crate::service) const AUDIT_COLUMNS: [Column; 9] = columns![
    writer: Bytes nullable, sequence: Integer nullable, time_ms: Integer, entry: Text,
    institution: Text nullable, action: Text nullable, outcome: Text nullable,
    target: Text nullable, patient_pseudonym: Bytes nullable,
];

/// The time, the kind of entry and the institution of a call's record.
fn call(call: &AuditV1) -> (i64, &'static str, Option<&str>) {
    (call.time_ms, "call", Some(call.institution_code.as_str()))
}

/// The columns of an audit record's row.
pub(in crate::service) fn audit_row(record: &AuditRecord) -> Row<'_, 9> {
    let (link, (time_ms, entry, institution), calling, check) = match record {
        AuditRecord::V1(c) => (None, call(c), Some(c), None),
        AuditRecord::V2(r) => (None, call(&r.call), Some(&r.call), r.check.as_ref()),
        AuditRecord::V3(link) => match &link.entry {
            ChainedV1::Genesis { time_ms, .. } => {
                (Some(link), (*time_ms, "genesis", None), None, None)
            }
            ChainedV1::Call(r) => (Some(link), call(&r.call), Some(&r.call), r.check.as_ref()),
            ChainedV1::Counted(c) => {
                let counted = (c.from_ms, "counted", Some(c.institution_code.as_str()));
                (Some(link), counted, None, None)
            }
        },
    };
    Row::new(
        Table::Audit,
        [
            link.map_or(Value::Null, |l| Value::Bytes(&l.writer)),
            link.map_or(Value::Null, |l| {
                Value::Integer(i64::try_from(l.sequence).unwrap_or(i64::MAX))
            }),
            Value::Integer(time_ms),
            Value::Text(entry),
            text_or_null(institution),
            text_or_null(calling.map(|c| c.action.as_str())),
            text_or_null(calling.map(|c| c.outcome.as_str())),
            text_or_null(calling.and_then(|c| c.target.as_deref())),
            check.map_or(Value::Null, |c| Value::Bytes(&c.patient_pseudonym)),
        ],
    )
}
