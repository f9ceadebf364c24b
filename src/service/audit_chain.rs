//! The audit trail as hash chains: one chain per writer (a gateway, named by the SHA-256 of its
//! `[gateway]` certificate, or one of its lanes: [`lane_writer`]), each link keyed by (writer,
//! the writer's own gapless sequence) and holding the SHA-256 of the encoded link before it.
//! The only row a call writes besides its record is its writer's head, so gateways sharing a
//! store never write the same row, nor do the transactions one gateway runs side by side.
//!
//! Links are in [`Table::Audit`] and heads in [`Table::AuditChain`], keyed as `service::schema`
//! lays them out (beside the unchained records of stores written before the chain).

use crate::{
    domain::hash::sha256,
    store::{self, Store, Table, Txn},
};

use super::{
    AuditEntry, Error, Gateway,
    records::{AuditRecord, AuditV2, AuditV3, ChainHeadRecord, ChainHeadV1, ChainedV1},
    records::{decode, encode},
    schema::{self, head_key, link_key, parse_key},
};

/// The head of `writer`'s chain, if it has begun: a row only the holder of the writer's lane
/// writes.
fn head(tx: &dyn Txn, writer: &[u8; 32]) -> Result<Option<ChainHeadV1>, store::Error> {
    tx.get_lane_row(Table::AuditChain, &head_key(writer))?
        .map(|v| decode::<ChainHeadRecord>(&v).map(|ChainHeadRecord::V1(h)| h))
        .transpose()
}

/// Every chain head of the store, by writer.
pub fn heads(tx: &dyn Txn) -> Result<Vec<ChainHeadV1>, store::Error> {
    tx.scan_prefix(Table::AuditChain, schema::HEADS, usize::MAX)?
        .iter()
        .map(|(_, v)| decode::<ChainHeadRecord>(v).map(|ChainHeadRecord::V1(h)| h))
        .collect()
}

/// The writer of `gateway`'s chain in `lane` ([`Txn::lane`]): the gateway itself in lane 0,
/// the only one of an engine that runs transactions one at a time; in lane N the SHA-256 of
/// the gateway's 32 bytes and N's 4 (big-endian). A gateway whose transactions run side by side
/// so keeps a chain per lane, whose head no two of them write at once.
pub(super) fn lane_writer(gateway: &[u8; 32], lane: u32) -> [u8; 32] {
    match lane {
        0 => *gateway,
        n => sha256(&[gateway.as_slice(), &n.to_be_bytes()].concat()),
    }
}

/// Appends `entry` to the chain of `gateway` in the transaction's lane; begins the chain with
/// its genesis link first if it has not begun. The one way an audit record is written.
pub(super) fn append(
    tx: &mut dyn Txn,
    gateway: &[u8; 32],
    time_ms: i64,
    entry: ChainedV1,
) -> Result<(), store::Error> {
    let writer = &lane_writer(gateway, tx.lane());
    let head = match head(tx, writer)? {
        Some(head) => head,
        None => {
            let unchained = tx.sequence(schema::UNCHAINED_AUDIT_SEQUENCE)?;
            let before = ChainHeadV1 {
                writer: *writer,
                sequence: 0,
                hash: [0; 32],
            };
            link(tx, before, ChainedV1::Genesis { time_ms, unchained })
        }
    };
    link(tx, head, entry);
    Ok(())
}

/// Writes the link after `head` and makes it the head.
fn link(tx: &mut dyn Txn, head: ChainHeadV1, entry: ChainedV1) -> ChainHeadV1 {
    let sequence = head.sequence + 1;
    let record = AuditRecord::V3(AuditV3 {
        writer: head.writer,
        sequence,
        previous: head.hash,
        entry,
    });
    let bytes = encode(&record);
    let next = ChainHeadV1 {
        writer: head.writer,
        sequence,
        hash: sha256(&bytes),
    };
    let row = schema::audit_row(&record);
    let key = link_key(&head.writer, sequence);
    tx.put_row(Table::Audit, &key, &bytes, row.columns());
    tx.put_lane_row(
        Table::AuditChain,
        &head_key(&head.writer),
        &encode(&ChainHeadRecord::V1(next)),
    );
    next
}

/// A stored audit row as exported: an unchained record (a call), or a link with its chain fields
/// and its encoding (what the chain hashes).
fn entry_of(key: &[u8], value: &[u8]) -> Result<AuditEntry, store::Error> {
    let (writer, sequence) = parse_key(key)?;
    let (entry, chain) = match decode::<AuditRecord>(value)? {
        AuditRecord::V1(call) => (
            ChainedV1::Call(Box::new(AuditV2 { call, check: None })),
            None,
        ),
        AuditRecord::V2(r) => (ChainedV1::Call(Box::new(r)), None),
        AuditRecord::V3(link) => {
            let chain = super::ChainLink {
                writer: writer.ok_or_else(|| store::Error::Corrupt("unkeyed link".into()))?,
                previous: link.previous,
                canonical: value.to_vec(),
            };
            (link.entry, Some(chain))
        }
    };
    Ok(AuditEntry {
        sequence,
        entry: entry.into(),
        chain,
    })
}

/// The position of a paged read: the last key read.
pub(super) type Cursor = Vec<u8>;

/// A page of a paged read, and where to go on from (None after the last).
pub type Page<T> = (Vec<T>, Option<Cursor>);

/// The rows of `table` in [`floor`, `end`) after the key `after` (all when empty), at most
/// `limit`, and the key to go on from when there may be more.
pub(super) fn rows_after(
    tx: &dyn Txn,
    table: Table,
    (floor, end): (&[u8], &[u8]),
    after: &[u8],
    limit: usize,
) -> Result<Page<store::Entry>, store::Error> {
    let start = schema::successor(after);
    let rows = tx.scan_range(table, floor.max(&start), end, limit)?;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|(k, _)| k.clone()))
        .flatten();
    Ok((rows, next))
}

/// The audit rows (key, stored record) after the key `after`, in key order: the unchained
/// records, then each writer's chain.
pub fn audit_rows(
    tx: &dyn Txn,
    after: &[u8],
    limit: usize,
) -> Result<Page<store::Entry>, store::Error> {
    rows_after(tx, Table::Audit, (&[], &schema::AUDIT_END), after, limit)
}

impl Gateway {
    /// The audit records whose time lies in [from_ms, to_ms), a page at a time: the records
    /// after `after` (from the start when empty), at most `limit` read. In key order: the
    /// unchained records, then each writer's chain in sequence order. Returns the records and
    /// where to go on, or None when the log is exhausted. With `patient`, only the checks of the
    /// patient with that pseudonym.
    pub async fn audit_page(
        &self,
        (from_ms, to_ms): (i64, i64),
        after: Cursor,
        limit: usize,
        patient: Option<[u8; 32]>,
    ) -> Result<Page<AuditEntry>, Error> {
        let outcome = self
            .store
            .transact(move |tx: &mut dyn Txn| -> Result<_, store::Error> {
                let (rows, next) = audit_rows(tx, &after, limit)?;
                let mut entries = Vec::new();
                for (k, v) in rows {
                    let entry = entry_of(&k, &v)?;
                    let about = patient.is_none_or(|p| entry.entry.checked(&p));
                    let time = entry.entry.time_ms();
                    if time >= from_ms && time < to_ms && about {
                        entries.push(entry);
                    }
                }
                Ok((entries, next))
            })
            .await
            .map_err(Error::from)?;
        outcome.map_err(Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_zero_is_the_gateway_and_every_other_lane_a_writer_of_its_own() {
        let gateway = [7; 32];
        assert_eq!(lane_writer(&gateway, 0), gateway);
        let mut pinned = gateway.to_vec();
        pinned.extend_from_slice(&[0, 0, 0, 2]);
        assert_eq!(lane_writer(&gateway, 2), sha256(&pinned));
        let writers: std::collections::BTreeSet<_> =
            (0..64).map(|lane| lane_writer(&gateway, lane)).collect();
        assert_eq!(writers.len(), 64);
    }
}
