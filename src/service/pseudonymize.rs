//! The migration to layout 2: every key that names a patient (`schema::patient_keyed`) and
//! still holds the canonical patient key, as layout 1 and before wrote it, is rewritten to hold
//! the patient's pseudonym, its value unchanged. A page of keys per transaction, so that no
//! transaction grows with the store; safe to interrupt and to run again, since a page deletes
//! the clear keys it rewrites in the transaction that writes their new ones, and a key that
//! holds a pseudonym is passed over. Knows the store contract and the schema, nothing of an
//! engine.

use std::sync::Arc;

use crate::store::{self, Store, Table, Txn};

use super::{
    Pseudonyms,
    clinical::merge_history,
    schema::{PatientKeyed, patient_keyed, successor},
};

/// Keys one transaction reads.
const PAGE: usize = 1_000;

/// Rewrites every clear patient key of `store` under `pseudonyms`; returns how many.
pub(in crate::service) async fn migrate_patient_keys(
    store: &Arc<dyn Store>,
    pseudonyms: &Pseudonyms,
) -> Result<u64, store::Error> {
    let mut moved = 0;
    for kind in patient_keyed() {
        moved += migrate_kind(store, &kind, pseudonyms, PAGE).await?;
    }
    if moved > 0 {
        tracing::info!(entries = moved, "patient keys replaced by pseudonyms");
    }
    Ok(moved)
}

/// Rewrites the clear keys of one `kind`, `page` keys per transaction; returns how many.
async fn migrate_kind(
    store: &Arc<dyn Store>,
    kind: &PatientKeyed,
    pseudonyms: &Pseudonyms,
    page: usize,
) -> Result<u64, store::Error> {
    let (mut moved, mut from) = (0, Some(kind.range.start.clone()));
    while let Some(start) = from.take() {
        let (kind, pseudonyms) = (kind.clone(), pseudonyms.clone());
        let (next, n) = store
            .transact(move |tx| rewrite_page(tx, &kind, &start, &pseudonyms, page))
            .await??;
        (moved, from) = (moved + n, next);
    }
    Ok(moved)
}

/// Rewrites the clear keys among the `page` keys of `kind` from `from` on; returns where the
/// next page starts (none after the last) and how many it rewrote. A medication history is
/// merged into one its patient may already have under the pseudonym (the history's own
/// migration writes those); the other kinds' new keys are new.
fn rewrite_page(
    tx: &mut dyn Txn,
    kind: &PatientKeyed,
    from: &[u8],
    pseudonyms: &Pseudonyms,
    page: usize,
) -> Result<(Option<Vec<u8>>, u64), store::Error> {
    let rows = tx.scan_range(kind.table, from, &kind.range.end, page)?;
    let next = match rows.last() {
        Some((last, _)) if rows.len() == page => Some(successor(last)),
        _ => None,
    };
    let mut moved = 0;
    for (key, value) in &rows {
        let Some(patient) = kind.clear_patient(key)? else {
            continue;
        };
        let pseudonym = pseudonyms.in_keys(patient);
        tx.delete(kind.table, key);
        match kind.table {
            Table::Medications => merge_history(tx, &pseudonym, value)?,
            _ => tx.put(kind.table, &kind.with_pseudonym(key, &pseudonym), value),
        }
        moved += 1;
    }
    Ok((next, moved))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        service::{
            records::{
                DrugKindV1, HistoryEntryV2, HistoryRecord, SlotV2, SupplyV1, decode, encode,
            },
            schema::{
                TEXT_KEYS_END, by_patient_key, check_budget_key, consent_key, exchange_key,
                history_key, override_key,
            },
            testing::{fixed_pseudonyms, keyed},
        },
        store::{EmbeddedStore, EngineKind, Entry},
    };

    const CLEAR: &str = "ins|8:06139999|2:12|3:401|2:01";

    /// An undispensed line `line` of the prescription with id bytes `[id; 16]`.
    fn entry(id: u8, line: u32) -> HistoryEntryV2 {
        HistoryEntryV2 {
            slot: SlotV2::Undispensed { line },
            prescription_id: [id; 16],
            drug_kind: DrugKindV1::Receipt,
            code: "610443014".into(),
            start: 20_000,
            supply: SupplyV1::Days(14),
            source_code: 1_310_000_001,
            prescriber: 1_310_000_001,
        }
    }

    fn history(entries: Vec<HistoryEntryV2>) -> Vec<u8> {
        encode(&HistoryRecord::V2(entries))
    }

    /// Every entry of every table that can name a patient.
    async fn all(store: &Arc<dyn Store>) -> Vec<(Table, Entry)> {
        let tables = [
            Table::ByExchange,
            Table::ByPatient,
            Table::Medications,
            Table::Clinical,
        ];
        let read = store.transact(move |tx| {
            let mut all = Vec::new();
            for table in tables {
                let rows = tx.scan_range(table, b"", TEXT_KEYS_END, usize::MAX)?;
                all.extend(rows.into_iter().map(|row| (table, row)));
            }
            Ok::<_, store::Error>(all)
        });
        read.await.unwrap().unwrap()
    }

    /// A store as layout 1 left it (the canonical patient key in each kind of key that names a
    /// patient, three consents so that pages of two end inside them) and a history the
    /// history's migration already wrote under the pseudonym: every clear key is rewritten in
    /// pages, with its value, the two histories merge, nothing else moves, and a second run
    /// finds nothing to do. On each embedded engine.
    #[tokio::test]
    async fn every_clear_patient_key_is_rewritten_in_pages() {
        for engine in [EngineKind::Fjall, EngineKind::Sled] {
            let dir = tempfile::tempdir().unwrap();
            let store = EmbeddedStore::open_with(dir.path(), Some(engine), 8).unwrap();
            rewritten_in_pages(Arc::new(store)).await;
        }
    }

    async fn rewritten_in_pages(store: Arc<dyn Store>) {
        let p = keyed(CLEAR);
        let [exchange, search, medications, budget, consent] = patient_keyed();
        let mut current = vec![
            (&exchange, exchange_key(&p, 42), b"id1".to_vec()),
            (
                &search,
                by_patient_key("1310000001", &p, "2026-12-07", "id1"),
                Vec::new(),
            ),
            (&budget, check_budget_key(&p), b"budget".to_vec()),
        ];
        for n in 1..=3u64 {
            current.push((&consent, consent_key(&p, n), n.to_be_bytes().to_vec()));
        }
        let layout_1: Vec<(Table, Vec<u8>, Vec<u8>)> = (current.iter())
            .map(|(kind, key, value)| (kind.table, kind.in_clear(key, CLEAR), value.clone()))
            .collect();
        let old_history = medications.in_clear(history_key(&p), CLEAR);
        store
            .transact(move |tx| {
                for (table, key, value) in &layout_1 {
                    tx.put(*table, key, value);
                }
                tx.put(
                    Table::Medications,
                    &old_history,
                    &history(vec![entry(1, 0)]),
                );
                let migrated = history(vec![entry(2, 0)]);
                tx.put(Table::Medications, history_key(&keyed(CLEAR)), &migrated);
                tx.put(Table::Clinical, &override_key("id1"), b"override");
                Ok::<_, store::Error>(())
            })
            .await
            .unwrap()
            .unwrap();

        let pseudonyms = fixed_pseudonyms();
        let mut moved = 0;
        for kind in patient_keyed() {
            moved += migrate_kind(&store, &kind, &pseudonyms, 2).await.unwrap();
        }
        assert_eq!(moved, 7);

        let mut expected: Vec<(Table, Entry)> = (current.into_iter())
            .map(|(kind, key, value)| (kind.table, (key, value)))
            .collect();
        expected.push((Table::Clinical, (override_key("id1"), b"override".to_vec())));
        let mut found = all(&store).await;
        let (table, (key, merged)) = found.remove(2);
        assert_eq!(
            (table, key.as_slice()),
            (Table::Medications, history_key(&p))
        );
        let HistoryRecord::V2(mut entries) = decode(&merged).unwrap() else {
            panic!("written as version 2");
        };
        entries.sort_by_key(|e| e.prescription_id);
        assert_eq!(entries, [entry(1, 0), entry(2, 0)]);
        assert_eq!(found, expected);
        assert_eq!(migrate_patient_keys(&store, &pseudonyms).await, Ok(0));
    }
}
