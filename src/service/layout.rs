//! Which layout of the store wrote it, checked on every opening: a store written by a newer
//! layout is refused before anything reads or writes it further, an older one is migrated and
//! then stamped with [`CURRENT`]. The stamp sits in `Meta` (`schema::LAYOUT_KEY`), so it is the
//! same in every engine. Knows the store contract and the migrations, nothing of an engine.

use std::sync::Arc;

use crate::store::{self, Store, Table};

use super::{
    Pseudonyms,
    clinical::migrate_history,
    pseudonymize::migrate_patient_keys,
    schema::{LAYOUT_KEY, PSEUDONYM_KEY_FINGERPRINT_KEY, layout_of_stamp, layout_stamp},
    search::migrate_search_index,
};

/// The layout this build writes, and what each number means:
/// - none (no stamp): a store written before versioning (ef6f5b0 and earlier). It may still
///   hold the per-line medication history and the search index keyed (patient, issue date,
///   id); its marks (`HISTORY_LAYOUT_KEY`, `SEARCH_INDEX_LAYOUT_KEY`) say which of the two
///   migrations it has had.
/// - 1: both migrations done: one history record per patient, the search index keyed by
///   institution first.
/// - 2: every key that names a patient (`schema::patient_keyed`) holds the patient's keyed
///   pseudonym instead of the canonical patient key (`pseudonymize`), and `Meta` records the
///   fingerprint of the pseudonym key (`schema::PSEUDONYM_KEY_FINGERPRINT_KEY`).
///
/// A change to what the store holds that an older build would misread raises this number, adds
/// the migration from the number before to [`upgrade`], and commits a store written by the
/// last build of the older layout under `tests/data/upgrade/`.
pub const CURRENT: u32 = 2;

/// Why a store's layout stops its opening.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A later build wrote the store: this one would misread it, and might damage it.
    #[error(
        "this store was written by layout {found}, newer than this rxgate (layout {CURRENT}): \
         run a newer rxgate, or restore the backup taken before the upgrade to run this one"
    )]
    Newer { found: u32 },
    /// The store's keys name patients by pseudonyms under another key than the configured one:
    /// this gateway would find none of them, and would write keys the other key cannot find.
    #[error(
        "this store was built with another audit_pseudonym_key: its keys name patients by \
         pseudonyms under that key, so this gateway would find none of them; configure the \
         audit_pseudonym_key file the store was built with (an existing store's key is never \
         changed)"
    )]
    OtherPseudonymKey,
    /// A migration failed; the store is as that migration's last transaction left it, and the
    /// next opening goes on from there.
    #[error("migrating {step}")]
    Migration {
        step: &'static str,
        source: store::Error,
    },
    /// Reading or writing the stamp failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// The layout that wrote `store` (`None`: before versioning), if this build can read it;
/// [`Error::Newer`] otherwise. Only reads.
pub async fn check(store: &impl Store) -> Result<Option<u32>, Error> {
    let found = store
        .transact(|tx| match tx.get(Table::Meta, LAYOUT_KEY)? {
            Some(stamp) => layout_of_stamp(&stamp).map(Some),
            None => Ok(None),
        })
        .await??;
    match found {
        Some(found) if found > CURRENT => Err(Error::Newer { found }),
        found => Ok(found),
    }
}

/// Makes `store` a store of layout [`CURRENT`] whose patient keys are made under
/// `pseudonyms`: refuses a newer one ([`check`]), and one built under another pseudonym key
/// ([`Error::OtherPseudonymKey`]), before any write; records the key's fingerprint in a store
/// that has none; migrates an older one, then stamps it. Each migration marks its own end or
/// passes over what it has done, so an opening interrupted before the stamp does the rest the
/// next time.
pub async fn upgrade(store: &Arc<dyn Store>, pseudonyms: &Pseudonyms) -> Result<(), Error> {
    let found = check(store).await?;
    claim_pseudonym_key(store, pseudonyms).await?;
    if found == Some(CURRENT) {
        return Ok(());
    }
    (migrate_history(store, pseudonyms).await).map_err(migrating("the medication history"))?;
    (migrate_search_index(store, pseudonyms).await).map_err(migrating("the search index"))?;
    (migrate_patient_keys(store, pseudonyms).await).map_err(migrating("the patient keys"))?;
    store
        .transact(|tx| {
            tx.put(Table::Meta, LAYOUT_KEY, &layout_stamp(CURRENT));
            Ok::<_, store::Error>(())
        })
        .await??;
    tracing::info!(
        from = found.map_or("none".to_owned(), |n| n.to_string()),
        to = CURRENT,
        "store layout upgraded"
    );
    Ok(())
}

/// Refuses `store` if it records the fingerprint of another pseudonym key than that of
/// `pseudonyms`; records it if it records none (a new store, or one of layout 1 or before),
/// before any key is made under the key.
async fn claim_pseudonym_key(store: &Arc<dyn Store>, pseudonyms: &Pseudonyms) -> Result<(), Error> {
    let mine = pseudonyms.fingerprint();
    let recorded = store
        .transact(move |tx| {
            let recorded = tx.get(Table::Meta, PSEUDONYM_KEY_FINGERPRINT_KEY)?;
            if recorded.is_none() {
                tx.put(Table::Meta, PSEUDONYM_KEY_FINGERPRINT_KEY, &mine);
            }
            Ok::<_, store::Error>(recorded)
        })
        .await??;
    match recorded {
        Some(recorded) if recorded != mine => Err(Error::OtherPseudonymKey),
        _ => Ok(()),
    }
}

/// The error of the migration of `step`.
fn migrating(step: &'static str) -> impl FnOnce(store::Error) -> Error {
    move |source| Error::Migration { step, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        service::{
            schema::{HISTORY_LAYOUT_KEY, SEARCH_INDEX_LAYOUT_KEY},
            testing::fixed_pseudonyms,
        },
        store::{EmbeddedStore, EngineKind, Entry},
    };

    /// A new store in `engine`, in a folder of its own.
    fn open(engine: EngineKind) -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with(dir.path(), Some(engine), 8).unwrap();
        (dir, Arc::new(store))
    }

    async fn put_stamp(store: &Arc<dyn Store>, stamp: &'static [u8]) {
        store
            .transact(move |tx| {
                tx.put(Table::Meta, LAYOUT_KEY, stamp);
                Ok::<_, store::Error>(())
            })
            .await
            .unwrap()
            .unwrap();
    }

    async fn meta(store: &Arc<dyn Store>) -> Vec<Entry> {
        let all = store.transact(|tx| tx.scan_prefix(Table::Meta, b"", 100));
        all.await.unwrap().unwrap()
    }

    #[tokio::test]
    async fn an_unstamped_store_is_migrated_then_stamped_once() {
        for engine in [EngineKind::Fjall, EngineKind::Sled] {
            let (_dir, store) = open(engine);
            assert_eq!(check(&store).await.unwrap(), None, "{engine}");
            upgrade(&store, &fixed_pseudonyms()).await.unwrap();
            assert_eq!(check(&store).await.unwrap(), Some(CURRENT), "{engine}");
            let stamped = meta(&store).await;
            let keys: Vec<&[u8]> = stamped.iter().map(|(k, _)| k.as_slice()).collect();
            assert_eq!(
                keys,
                [
                    LAYOUT_KEY,
                    HISTORY_LAYOUT_KEY,
                    SEARCH_INDEX_LAYOUT_KEY,
                    PSEUDONYM_KEY_FINGERPRINT_KEY
                ],
                "{engine}"
            );
            upgrade(&store, &fixed_pseudonyms()).await.unwrap();
            assert_eq!(meta(&store).await, stamped, "{engine}");
        }
    }

    #[tokio::test]
    async fn a_newer_store_is_refused_before_any_write() {
        const NEWER: [u8; 4] = (CURRENT + 1).to_be_bytes();
        for engine in [EngineKind::Fjall, EngineKind::Sled] {
            let (_dir, store) = open(engine);
            put_stamp(&store, &NEWER).await;
            let refused = upgrade(&store, &fixed_pseudonyms()).await.unwrap_err();
            assert!(
                matches!(refused, Error::Newer { found } if found == CURRENT + 1),
                "{engine}: {refused:?}"
            );
            assert_eq!(
                refused.to_string(),
                format!(
                    "this store was written by layout {}, newer than this rxgate (layout {CURRENT}): \
                     run a newer rxgate, or restore the backup taken before the upgrade to run \
                     this one",
                    CURRENT + 1
                )
            );
            let untouched = vec![(LAYOUT_KEY.to_vec(), NEWER.to_vec())];
            assert_eq!(meta(&store).await, untouched, "{engine}");
        }
    }

    /// A store records the pseudonym key it was built under; a gateway with another key is
    /// refused before any write, one with the same key goes on.
    #[tokio::test]
    async fn a_store_of_another_pseudonym_key_is_refused_before_any_write() {
        let (_dir, store) = open(EngineKind::Fjall);
        let built_with = fixed_pseudonyms();
        upgrade(&store, &built_with).await.unwrap();
        let stamped = meta(&store).await;
        let fingerprint = (stamped.iter()).find(|(k, _)| k == PSEUDONYM_KEY_FINGERPRINT_KEY);
        assert_eq!(fingerprint.unwrap().1, built_with.fingerprint());

        let other = Pseudonyms::new(&[8; 32]).unwrap();
        let refused = upgrade(&store, &other).await.unwrap_err();
        assert!(matches!(refused, Error::OtherPseudonymKey), "{refused:?}");
        assert!(
            refused.to_string().contains("audit_pseudonym_key"),
            "{refused}"
        );
        assert_eq!(meta(&store).await, stamped);
        upgrade(&store, &built_with).await.unwrap();
    }

    #[tokio::test]
    async fn a_stamp_that_is_no_layout_number_is_corrupt() {
        let (_dir, store) = open(EngineKind::Fjall);
        put_stamp(&store, b"\x01").await;
        let refused = check(&store).await.unwrap_err();
        assert!(
            matches!(refused, Error::Store(store::Error::Corrupt(_))),
            "{refused:?}"
        );
    }
}
