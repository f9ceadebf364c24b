//! fjall as the store's [`Engine`]: a log-structured merge tree, the engine of new stores. The
//! only file of the project that names fjall.
//!
//! - **One keyspace.** Every table lives in the keyspace [`KEYSPACE`] under its prefix byte; a
//!   batch is one fjall write batch, written to the journal as one unit and recovered
//!   all-or-nothing after a crash.
//! - **Durability.** A committed batch is in the journal file (written to the OS) and visible at
//!   once; `flush` syncs the journal (`PersistMode::SyncAll`), and only then does the store
//!   answer. Memtables are written out to sorted tables and compacted by fjall's own worker
//!   threads, off the store's writer.
//! - **Why fjall.** Under the gateway's load a registration writes ten keys at scattered places
//!   (README, Performance): sled rewrote and split 16-entry B-tree leaves for each, and its
//!   memory grew with the store; an LSM tree appends them to a memtable, and its memory is its
//!   block cache and its memtables.

use std::path::Path;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

use super::embedded::{Engine, Overlay};
use super::{Entry, Error};

/// The keyspace holding every table.
const KEYSPACE: &str = "rxgate";

/// The file fjall keeps its format version in, at the top of its folder.
const VERSION_FILE: &str = "version";

/// Whether `path` holds a fjall store.
pub(crate) fn holds_store(path: &Path) -> bool {
    path.join(VERSION_FILE).is_file() && path.join("keyspaces").is_dir()
}

fn engine_error(error: fjall::Error) -> Error {
    match error {
        fjall::Error::Io(e) => Error::Io(e.to_string()),
        other => Error::Engine(other.to_string()),
    }
}

/// A fjall database and the keyspace that holds the store.
pub(crate) struct FjallEngine {
    db: Database,
    space: Keyspace,
}

impl FjallEngine {
    /// Opens (or creates) the fjall store in `path` with a block cache of `cache_bytes`.
    pub(crate) fn open(path: &Path, cache_bytes: u64) -> Result<FjallEngine, Error> {
        let db = Database::builder(path)
            .cache_size(cache_bytes)
            .open()
            .map_err(engine_error)?;
        let space = db
            .keyspace(KEYSPACE, KeyspaceCreateOptions::default)
            .map_err(engine_error)?;
        Ok(FjallEngine { db, space })
    }
}

impl Engine for FjallEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .space
            .get(key)
            .map_err(engine_error)?
            .map(|v| v.to_vec()))
    }

    fn range<'a>(
        &'a self,
        lo: &[u8],
        hi: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, Error>> + 'a> {
        Box::new(self.space.range(lo..hi).map(|guard| {
            guard
                .into_inner()
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(engine_error)
        }))
    }

    fn apply(&self, writes: Overlay) -> Result<(), Error> {
        let mut batch = self.db.batch();
        for (key, value) in writes {
            match value {
                Some(value) => batch.insert(&self.space, key, value),
                None => batch.remove(&self.space, key),
            }
        }
        batch.commit().map_err(engine_error)
    }

    fn flush(&self) -> Result<(), Error> {
        self.db.persist(PersistMode::SyncAll).map_err(engine_error)
    }
}
