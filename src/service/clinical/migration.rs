//! The one-off move of a store written before the one-record-per-patient history layout.

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use crate::store::{self, Store, Table, Txn};

use crate::service::{
    records::{HistoryEntryV1, HistoryEntryV2, MedicationRecord, SlotV1, decode},
    stored::corrupt,
};

use super::history::{entry_v2, insert, load, save};

/// Marks a store whose history is kept one record per patient (`Table::Meta`).
pub(super) const HISTORY_LAYOUT_KEY: &[u8] = b"layout/history-per-patient";

/// Old-layout entries moved per transaction by [`migrate_history`].
pub(super) const MIGRATION_CHUNK: usize = 1_000;

/// The migration logs its progress every this many chunks.
pub(super) const PROGRESS_EVERY: u64 = 100;

/// Rewrites the history of a store written before the one-record-per-patient layout (one key per
/// line: `patient \0 rx \0 id \0 line` and `patient \0 d \0 last-day \0 id \0 record \0 line`)
/// into one record per patient, a chunk per transaction, and marks the store so that later
/// starts skip it. Returns how many old entries it moved. Safe to interrupt: a chunk moves its
/// entries and deletes their old keys in one transaction, and the next start goes on.
pub async fn migrate_history(store: &Arc<dyn Store>) -> Result<u64, store::Error> {
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
        let (next, n) = store
            .transact(move |tx| migrate_chunk(tx, &start))
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
) -> Result<(Option<Vec<u8>>, u64), store::Error> {
    // Keys are patient keys, UTF-8 text that never holds 0xFF.
    let keys = tx.scan_range(Table::Medications, from, &[0xFF], MIGRATION_CHUNK)?;
    let next = match keys.last() {
        Some((last, _)) if keys.len() == MIGRATION_CHUNK => Some([last.as_slice(), &[0]].concat()),
        _ => None,
    };
    let mut by_patient: BTreeMap<String, Vec<HistoryEntryV2>> = BTreeMap::new();
    let mut moved = 0;
    for (k, v) in keys {
        // A patient key never holds 0: a key with one is of the old layout.
        let Some(end) = k.iter().position(|b| *b == 0) else {
            continue;
        };
        let patient = std::str::from_utf8(&k[..end]).map_err(|_| corrupt("history key"))?;
        let MedicationRecord::V1(medication) = decode(&v)?;
        by_patient
            .entry(patient.to_owned())
            .or_default()
            .push(entry_v2(HistoryEntryV1 {
                slot: old_slot(&k[end + 1..])?,
                medication,
            })?);
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

/// The slot of an old-layout key after its patient: `rx \0 id \0 line` or
/// `d \0 last-day \0 id \0 record \0 line` (record and line 4 bytes, big-endian).
pub(super) fn old_slot(rest: &[u8]) -> Result<SlotV1, store::Error> {
    let bad = || corrupt("history key");
    let number = |at: usize| -> Result<u32, store::Error> {
        let bytes = rest.get(at..at + 4).ok_or_else(bad)?;
        Ok(u32::from_be_bytes(bytes.try_into().map_err(|_| bad())?))
    };
    let n = rest.len();
    if rest.starts_with(b"rx\0") && n >= 3 + 1 + 4 {
        return Ok(SlotV1::Undispensed {
            line: number(n - 4)?,
        });
    }
    let dated = rest.strip_prefix(b"d\0").ok_or_else(bad)?;
    let day_end = dated.iter().position(|b| *b == 0).ok_or_else(bad)?;
    let last_day = std::str::from_utf8(&dated[..day_end]).map_err(|_| bad())?;
    if n < 2 + day_end + 1 + 1 + 4 + 1 + 4 {
        return Err(bad());
    }
    Ok(SlotV1::Dispensed {
        last_day: last_day.to_owned(),
        record: number(n - 9)?,
        line: number(n - 4)?,
    })
}
