//! The one-off move of a store written before the one-record-per-patient history layout.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use crate::store::{self, Store, Table, Txn};

use crate::service::{
    Pseudonyms,
    pseudonym::PatientPseudonym,
    records::{HistoryEntryV1, HistoryEntryV2, MedicationRecord, decode},
    schema::{HISTORY_LAYOUT_KEY, TEXT_KEYS_END, old_history_entry, successor},
};

use super::history::{entries_of, entry_v2, insert, load, save};

/// Old-layout entries moved per transaction by [`migrate_history`].
pub(super) const MIGRATION_CHUNK: usize = 1_000;

/// The migration logs its progress every this many chunks.
pub(super) const PROGRESS_EVERY: u64 = 100;

/// Rewrites the history of a store written before the one-record-per-patient layout (one key per
/// line: `schema::old_prescribed_line_key`, `schema::old_dispensed_line_key`) into one record
/// per patient under the patient's pseudonym in `pseudonyms`, a chunk per transaction, and
/// marks the store so that later starts skip it. Returns how many old entries it moved. Safe
/// to interrupt: a chunk moves its entries and deletes their old keys in one transaction, and
/// the next start goes on.
pub(in crate::service) async fn migrate_history(
    store: &Arc<dyn Store>,
    pseudonyms: &Pseudonyms,
) -> Result<u64, store::Error> {
    let done = store
        .transact(|tx| Ok::<_, store::Error>(tx.get(Table::Meta, HISTORY_LAYOUT_KEY)?.is_some()))
        .await??;
    if done {
        return Ok(0);
    }
    let started = Instant::now();
    let mut from = Vec::new();
    let mut moved = 0;
    for chunk in 1.. {
        let start = std::mem::take(&mut from);
        let pseudonyms = pseudonyms.clone();
        let (next, n) = store
            .transact(move |tx| migrate_chunk(tx, &start, &pseudonyms))
            .await??;
        moved += n;
        let Some(next) = next else {
            break;
        };
        from = next;
        if chunk % PROGRESS_EVERY == 0 {
            tracing::info!(entries = moved, "migrating the medication history");
        }
    }
    store
        .transact(|tx| {
            tx.put(Table::Meta, HISTORY_LAYOUT_KEY, b"");
            Ok::<_, store::Error>(())
        })
        .await??;
    if moved > 0 {
        tracing::info!(
            entries = moved,
            millis = started.elapsed().as_millis() as u64,
            "medication history migrated to one record per patient"
        );
    }
    Ok(moved)
}

/// Moves the old-layout entries among the `MIGRATION_CHUNK` keys from `from` on; returns where
/// the next chunk starts (none after the last) and how many entries it moved.
pub(super) fn migrate_chunk(
    tx: &mut dyn Txn,
    from: &[u8],
    pseudonyms: &Pseudonyms,
) -> Result<(Option<Vec<u8>>, u64), store::Error> {
    let keys = tx.scan_range(Table::Medications, from, TEXT_KEYS_END, MIGRATION_CHUNK)?;
    let next = match keys.last() {
        Some((last, _)) if keys.len() == MIGRATION_CHUNK => Some(successor(last)),
        _ => None,
    };
    let mut by_patient: BTreeMap<PatientPseudonym, Vec<HistoryEntryV2>> = BTreeMap::new();
    let mut moved = 0;
    for (k, v) in keys {
        let Some((patient, slot)) = old_history_entry(&k)? else {
            continue;
        };
        let MedicationRecord::V1(medication) = decode(&v)?;
        by_patient
            .entry(pseudonyms.in_keys(patient))
            .or_default()
            .push(entry_v2(HistoryEntryV1 { slot, medication })?);
        tx.delete(Table::Medications, &k);
        moved += 1;
    }
    for (patient, old) in by_patient {
        let mut entries = load(tx, &patient)?;
        for entry in old {
            insert(&mut entries, entry);
        }
        save(tx, &patient, entries, None);
    }
    Ok((next, moved))
}

/// Adds the entries of the history record `bytes` (as a clear patient key held it) to the
/// record of the patient's `pseudonym`: layout 2's migration of a `Medications` key.
pub(in crate::service) fn merge_history(
    tx: &mut dyn Txn,
    pseudonym: &PatientPseudonym,
    bytes: &[u8],
) -> Result<(), store::Error> {
    let mut entries = load(tx, pseudonym)?;
    for entry in entries_of(bytes)? {
        insert(&mut entries, entry);
    }
    save(tx, pseudonym, entries, None);
    Ok(())
}
