//! Signed checkpoints of the audit chains: every head of the store (writer, sequence, hash) and
//! the time, signed with the gateway's key, kept in [`Table::AuditChain`] by the signer and its
//! own number (`schema::checkpoint_key`), and logged whole so that a copy lives outside the
//! store. A checkpoint is written only when a chain has moved since the signer's last one.

use std::sync::Arc;

use crate::{
    domain::hash::hex,
    pki::identity::{AUDIT_CHECKPOINT, GatewayIdentity},
    store::{self, Store, Table, Txn},
};

use super::{
    Error, Gateway, audit_chain,
    audit_chain::Page,
    millis,
    records::{CheckpointV1, SignedCheckpointRecord, decode, encode},
    schema::{checkpoint_key, checkpoint_range, last_checkpoint_key},
};

/// The body of a stored checkpoint (its signature unchecked: the verifier checks it).
pub fn checkpoint_body(stored: &[u8]) -> Result<CheckpointV1, store::Error> {
    let SignedCheckpointRecord::V1 { body, .. } = decode(stored)?;
    decode(&body)
}

/// The last checkpoint `signer` wrote, if any.
fn last(tx: &dyn Txn, signer: &[u8; 32]) -> Result<Option<CheckpointV1>, store::Error> {
    let Some(number) = tx.get(Table::AuditChain, &last_checkpoint_key(signer))? else {
        return Ok(None);
    };
    let number = number
        .as_slice()
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| store::Error::Corrupt("last checkpoint number".into()))?;
    tx.get(Table::AuditChain, &checkpoint_key(signer, number))?
        .map(|stored| checkpoint_body(&stored))
        .transpose()
}

/// Writes a checkpoint signed by `identity` if a chain moved since its last one; returns it as
/// stored.
fn write(
    tx: &mut dyn Txn,
    identity: &GatewayIdentity,
    time_ms: i64,
) -> Result<Option<Vec<u8>>, store::Error> {
    let signer = identity.fingerprint();
    let heads = audit_chain::heads(tx)?;
    let last = last(tx, &signer)?;
    if heads.is_empty() || last.as_ref().is_some_and(|l| l.heads == heads) {
        return Ok(None);
    }
    let checkpoint = CheckpointV1 {
        signer,
        number: last.map_or(1, |l| l.number + 1),
        time_ms,
        heads,
    };
    let body = encode(&checkpoint);
    let signature = identity
        .sign(AUDIT_CHECKPOINT, &body)
        .map_err(|_| store::Error::Engine("signing an audit checkpoint failed".into()))?;
    let stored = encode(&SignedCheckpointRecord::V1 { body, signature });
    let number = checkpoint.number.to_be_bytes();
    tx.put(
        Table::AuditChain,
        &checkpoint_key(&signer, checkpoint.number),
        &stored,
    );
    tx.put(Table::AuditChain, &last_checkpoint_key(&signer), &number);
    Ok(Some(stored))
}

/// The stored checkpoints after `after` (from the first when empty), at most `limit`, and the
/// key to go on from when there may be more.
pub fn checkpoints_page(
    tx: &dyn Txn,
    after: &[u8],
    limit: usize,
) -> Result<Page<Vec<u8>>, store::Error> {
    let range = checkpoint_range();
    let (rows, next) = audit_chain::rows_after(
        tx,
        Table::AuditChain,
        (&range.start, &range.end),
        after,
        limit,
    )?;
    Ok((rows.into_iter().map(|(_, v)| v).collect(), next))
}

impl Gateway {
    /// Writes a checkpoint signed by `identity` if a chain moved since its last one, and logs
    /// it whole (hex) at INFO.
    pub async fn checkpoint_audit(&self, identity: Arc<GatewayIdentity>) -> Result<(), Error> {
        let time_ms = millis(self.clock.now());
        let written = self
            .store
            .transact(move |tx: &mut dyn Txn| write(tx, &identity, time_ms))
            .await
            .map_err(Error::from)?
            .map_err(Error::from)?;
        if let Some(stored) = written {
            let body = checkpoint_body(&stored)?;
            tracing::info!(
                number = body.number,
                heads = body.heads.len(),
                checkpoint = %hex(&stored),
                "audit checkpoint"
            );
        }
        Ok(())
    }

    /// The stored checkpoints, a page at a time (see [`checkpoints_page`]).
    pub async fn audit_checkpoints(
        &self,
        after: Vec<u8>,
        limit: usize,
    ) -> Result<Page<Vec<u8>>, Error> {
        self.store
            .transact(move |tx: &mut dyn Txn| checkpoints_page(tx, &after, limit))
            .await
            .map_err(Error::from)?
            .map_err(Error::from)
    }
}
