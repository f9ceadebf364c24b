//! `rxgate audit verify`, `rxgate audit checkpoints` and `rxgate audit export`: the audit trail
//! read from a stopped store's folder, from an export file (an `AuditExport` as protobuf JSON)
//! or from a running gateway (as an operator), fed to the [`ChainVerifier`].

use std::path::Path;

use anyhow::Context;
use tokio_stream::StreamExt;

use crate::{
    audit_verify::{ChainVerifier, Report},
    domain::hash::{from_hex_bytes, hex},
    service::{AuditEntry, ChainLink, audit_rows, checkpoint_body, checkpoints_page, heads},
    service::{Page, layout, parse_key, records::ChainHeadV1},
    store::{EmbeddedStore, Entry, Error as StoreError, Store, Txn},
    tls::ClientFiles,
    wire::json,
    wire::proto::v1::{self as pb, admin_service_client::AdminServiceClient},
};

/// Rows read per store transaction.
const PAGE: usize = 1_000;
const EXPORT: &str = "rxgate.v1.AuditExport";

/// The checkpoints in a file: every `checkpoint=HEX` of its lines (a gateway's log, or what
/// `rxgate audit checkpoints` prints), each named by its line.
pub fn checkpoints_in(path: &Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let Some((_, rest)) = line.split_once("checkpoint=") else {
            continue;
        };
        let digits = rest.split(|c: char| !c.is_ascii_hexdigit()).next();
        let bytes = digits
            .and_then(from_hex_bytes)
            .with_context(|| format!("{}:{}: the checkpoint is not hex", path.display(), n + 1))?;
        found.push((format!("{}:{}", path.display(), n + 1), bytes));
    }
    Ok(found)
}

/// Opens the closed store at `dir` to read, refusing one written by a newer layout (which this
/// build might misread); an older one is read as it is, not migrated.
async fn open(dir: &Path) -> anyhow::Result<EmbeddedStore> {
    let opening = || format!("opening {}", dir.display());
    let store = EmbeddedStore::open(dir).with_context(opening)?;
    layout::check(&store).await.with_context(opening)?;
    Ok(store)
}

/// Reads the closed store at `dir` a page at a time: `read(tx, after)` answers rows and the key
/// to go on from.
async fn pages<T, F>(store: &EmbeddedStore, read: F) -> anyhow::Result<Vec<Vec<T>>>
where
    T: Send + 'static,
    F: Fn(&dyn Txn, &[u8]) -> Result<Page<T>, StoreError> + Copy + Send + Sync + 'static,
{
    let mut all = Vec::new();
    let mut after = Vec::new();
    loop {
        let (page, next) = store
            .transact(move |tx: &mut dyn Txn| read(tx, &after))
            .await??;
        all.push(page);
        match next {
            Some(next) => after = next,
            None => return Ok(all),
        }
    }
}

fn checkpoint_page(tx: &dyn Txn, after: &[u8]) -> Result<Page<Vec<u8>>, StoreError> {
    checkpoints_page(tx, after, PAGE)
}

fn audit_page(tx: &dyn Txn, after: &[u8]) -> Result<Page<Entry>, StoreError> {
    audit_rows(tx, after, PAGE)
}

/// Verifies the audit trail of the closed store at `dir`, with `external` checkpoints besides
/// its own.
pub async fn verify_store(
    dir: &Path,
    mut verifier: ChainVerifier,
    external: &[(String, Vec<u8>)],
) -> anyhow::Result<Report> {
    let store = open(dir).await?;
    for (n, stored) in pages(&store, checkpoint_page)
        .await?
        .iter()
        .flatten()
        .enumerate()
    {
        verifier.checkpoint(stored, &format!("stored #{}", n + 1));
    }
    for (origin, stored) in external {
        verifier.checkpoint(stored, origin);
    }
    for (key, value) in pages(&store, audit_page).await?.into_iter().flatten() {
        match parse_key(&key)? {
            (None, sequence) => verifier.unchained(sequence),
            (Some(writer), sequence) => {
                verifier.link(writer, sequence, &value);
            }
        }
    }
    let recorded: Vec<ChainHeadV1> = store.transact(|tx: &mut dyn Txn| heads(tx)).await??;
    store.close()?;
    Ok(verifier.finish(Some(&recorded)))
}

/// Verifies an export file (see [`export`]), with `external` checkpoints besides its own. Each
/// record's fields must be what its canonical bytes say.
pub fn verify_export(
    path: &Path,
    mut verifier: ChainVerifier,
    external: &[(String, Vec<u8>)],
) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let export: pb::AuditExport = json::from_json(EXPORT, &text)?;
    for (n, c) in export.checkpoints.iter().enumerate() {
        verifier.checkpoint(&c.signed, &format!("exported #{}", n + 1));
    }
    for (origin, stored) in external {
        verifier.checkpoint(stored, origin);
    }
    for record in export.records {
        if record.canonical.is_empty() {
            verifier.unchained(record.sequence);
            continue;
        }
        let Ok(writer) = <[u8; 32]>::try_from(record.chain_writer.as_slice()) else {
            anyhow::bail!(
                "record {}: the chain writer is not 32 bytes",
                record.sequence
            );
        };
        let Some(link) = verifier.link(writer, record.sequence, &record.canonical) else {
            continue;
        };
        let shown = crate::grpc::audit_to_pb(AuditEntry {
            sequence: record.sequence,
            entry: link.entry.into(),
            chain: Some(ChainLink {
                writer,
                previous: link.previous,
                canonical: record.canonical.clone(),
            }),
        });
        if shown != record {
            verifier.reject(
                writer,
                record.sequence,
                "its fields are not what its bytes say",
            );
        }
    }
    Ok(verifier.finish(None))
}

/// The checkpoints of the closed store at `dir`, each on two lines: what it says, and itself
/// (`checkpoint=HEX`, which `rxgate audit verify --checkpoints` reads).
pub async fn list_checkpoints(dir: &Path) -> anyhow::Result<String> {
    let store = open(dir).await?;
    let stored = pages(&store, checkpoint_page).await?;
    store.close()?;
    let mut out = String::new();
    for signed in stored.iter().flatten() {
        let body = checkpoint_body(signed)?;
        let heads: Vec<String> = body
            .heads
            .iter()
            .map(|h| format!("{}@{} {}", hex(&h.writer[..8]), h.sequence, hex(&h.hash)))
            .collect();
        out += &format!(
            "signer {} number {} time_unix_ms {} heads {}\ncheckpoint={}\n",
            hex(&body.signer[..8]),
            body.number,
            body.time_ms,
            heads.join(", "),
            hex(signed)
        );
    }
    Ok(out)
}

/// Writes the whole audit trail of the gateway at `addr` (ExportAudit, unfiltered, and
/// ExportAuditCheckpoints) to `out` as an `AuditExport` in protobuf JSON.
pub async fn export(addr: &str, operator: &ClientFiles, out: &Path) -> anyhow::Result<usize> {
    let channel = operator
        .connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let mut client = AdminServiceClient::new(channel);
    let checkpoints = client
        .export_audit_checkpoints(pb::ExportAuditCheckpointsRequest {})
        .await?
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await?;
    let records = client
        .export_audit(pb::ExportAuditRequest::default())
        .await?
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await?;
    let count = records.len();
    let export = pb::AuditExport {
        records,
        checkpoints,
    };
    std::fs::write(out, json::to_json(EXPORT, &export)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(count)
}
