//! `rxgate store` on a PostgreSQL store, the database a gateway's configuration names:
//! `migrate` (the schema, as the migration role), `export` (one SERIALIZABLE READ ONLY
//! DEFERRABLE snapshot, consistent while gateways run) and `import`/`restore` (into a migrated,
//! empty database).
//! The dump's writing and loading are `store.rs`'s, the same for every engine. The engine's own
//! calls drive a runtime of their own, so they run here on blocking threads.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};

use super::store::{Loading, Partial, PatientKeys, write_dump};
use crate::{
    config::Config,
    opened_store::OpenedStore,
    service::{Pseudonyms, acknowledged},
    store::{
        Migrated, Migrator, PgStore, Store, Table,
        dump::{self, Manifest},
    },
};

/// Applies the migrations the database in `config` lacks, as `migrator` (the URL's user when
/// `None`): the version it was at and is at now.
pub async fn migrate(config: &Config, migrator: Option<Migrator>) -> anyhow::Result<Migrated> {
    let postgres = config
        .postgres
        .clone()
        .context("the configuration has no [postgres] section")?;
    let migrated =
        tokio::task::spawn_blocking(move || PgStore::migrate(&postgres, migrator.as_ref()));
    migrated.await?.context("migrating the schema")
}

/// Writes the database's store, as one snapshot saw it, to the new file `dest` as a dump; its
/// manifest.
pub(super) async fn export_database(config: &Config, dest: PathBuf) -> anyhow::Result<Manifest> {
    let partial = Partial::create(&dest)?;
    let opened = OpenedStore::open(config).await?;
    let snapshot = opened.store().snapshot().await;
    let written = match snapshot {
        Ok(snapshot) => tokio::task::spawn_blocking(move || write_dump(snapshot.as_ref(), partial))
            .await
            .unwrap_or_else(|e| Err(e.into())),
        Err(e) => Err(anyhow::Error::new(e).context("reading the store")),
    };
    opened.close().await?;
    written.context("exporting the store")
}

/// Loads the dump in `src` into the database `config` names, which must hold this binary's
/// schema (`rxgate store migrate`) and no rows, and saves the acknowledged mark in its
/// `data_dir`; the dump's manifest. The prescriptions' rows name their patients by pseudonym
/// under the configuration's key, as the gateway's would.
pub(super) async fn import_database(config: &Config, src: PathBuf) -> anyhow::Result<Manifest> {
    let pseudonyms =
        Pseudonyms::from_file(&config.audit_pseudonym_key).map_err(anyhow::Error::msg)?;
    let opened = OpenedStore::open(config).await?;
    let store = opened.store();
    let loaded =
        async {
            if let Some(table) = table_with_rows(&store).await? {
                bail!(
                    "the database is not empty ({} holds rows): import only into a new database \
                 that `rxgate store migrate` prepared",
                    dump::name(table)
                );
            }
            let loading = Loading::checked(src.clone()).await?;
            mark_import(&opened, true).await?;
            let keys = PatientKeys::Refused;
            let manifest = loading.into(&store, &pseudonyms, keys).await.with_context(|| {
            format!(
                "importing {} (the database now holds part of it: empty it before importing \
                 again)",
                src.display()
            )
        })?;
            acknowledged::save(&store, config.data_dir.clone(), None).await?;
            mark_import(&opened, false).await?;
            Ok(manifest)
        }
        .await;
    drop(store);
    opened.close().await?;
    loaded
}

/// Marks the database of `opened` as holding part of an import, or as whole again.
async fn mark_import(opened: &OpenedStore, unfinished: bool) -> anyhow::Result<()> {
    let OpenedStore::Postgres(store) = opened else {
        bail!("not a database");
    };
    let store = Arc::clone(store);
    tokio::task::spawn_blocking(move || store.mark_import(unfinished))
        .await?
        .context("marking the import in the database")
}

/// The first table of `store` that holds an entry, if any.
async fn table_with_rows(store: &Arc<dyn Store>) -> anyhow::Result<Option<Table>> {
    let snapshot = store.snapshot().await.context("reading the store")?;
    tokio::task::spawn_blocking(move || {
        for table in Table::ALL {
            if let Some(entry) = snapshot.entries(table).next() {
                entry.context("reading the store")?;
                return Ok(Some(table));
            }
        }
        Ok(None)
    })
    .await?
}
