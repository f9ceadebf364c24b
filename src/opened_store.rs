//! The store a gateway serves from, as its configuration names it: embedded in the data folder
//! (fjall or sled), or a PostgreSQL database. What differs between them at start and at the end
//! is here; everything else sees an `Arc<dyn Store>`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::config::{Config, StoreEngine};
use crate::service::columns_of;
use crate::store::{EmbeddedStore, PgStore, Store};

/// An open store, with what closing it needs.
pub enum OpenedStore {
    /// In `dir`: its disk's free space is watched, and a failed write ends the process.
    Embedded(Arc<EmbeddedStore>, PathBuf),
    /// In a database: an unreachable database makes the gateway NOT_SERVING until it is back.
    Postgres(Arc<PgStore>),
}

impl OpenedStore {
    /// Opens the store `config` names, off the async runtime (opening replays an embedded
    /// engine's journal, and connects to a database); an error names the folder or the engine.
    pub async fn open(config: &Config) -> anyhow::Result<OpenedStore> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating {}", config.data_dir.display()))?;
        if config.store_engine == Some(StoreEngine::Postgres) {
            let postgres = config.postgres.clone().context("[postgres] is missing")?;
            let store = tokio::task::spawn_blocking(move || PgStore::open(&postgres, columns_of))
                .await
                .context("opening the store in PostgreSQL")?
                .context("opening the store in PostgreSQL")?;
            return Ok(OpenedStore::Postgres(Arc::new(store)));
        }
        let (dir, cache) = (config.data_dir.clone(), config.store_cache_mib);
        let engine = config.store_engine.and_then(StoreEngine::embedded);
        let opening = format!("opening the store {}", dir.display());
        let store =
            tokio::task::spawn_blocking(move || EmbeddedStore::open_with(&dir, engine, cache))
                .await
                .context(opening.clone())?
                .context(opening)?;
        Ok(OpenedStore::Embedded(
            Arc::new(store),
            config.data_dir.clone(),
        ))
    }

    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            OpenedStore::Embedded(store, _) => store.clone(),
            OpenedStore::Postgres(store) => store.clone(),
        }
    }

    /// Closes the store: an embedded one flushes and lets go of its files; a database's
    /// connections are closed once the transactions running end. Blocking work, kept off the
    /// async runtime.
    pub async fn close(self) -> anyhow::Result<()> {
        match self {
            OpenedStore::Embedded(store, _) => tokio::task::spawn_blocking(move || store.close())
                .await
                .context("closing the store")?
                .context("closing the store"),
            OpenedStore::Postgres(store) => tokio::task::spawn_blocking(move || store.close())
                .await
                .context("closing the store"),
        }
    }
}
