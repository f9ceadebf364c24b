//! sled 0.34 as the store's [`Engine`]: the engine of stores created before fjall, kept so that
//! they open as they are. The only file of the project that names sled.
//!
//! - **One tree.** Every table lives in the tree [`TREE`] under its prefix byte, and a batch is
//!   one `apply_batch`, which sled recovers all-or-nothing after a crash.
//! - **Why not `flush_async`.** sled 0.34.7's `flush_async` can deadlock when several tasks
//!   call it at once (spacejam/sled#1308). The store's one flusher thread calls the synchronous
//!   `flush`, which has no such problem.
//! - **Closing.** Dropping the last handle of a sled database does not close its file at once:
//!   jobs of sled's IO thread pool may still hold it (and its lock) for a moment, so the store
//!   waits for [`wait_for_release`] before it reports itself closed.

use std::fs::{File, TryLockError};
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::embedded::{Engine, EngineSnapshot, Overlay};
use super::{Entry, Error};

/// The name of the sled tree holding every table.
const TREE: &str = "rxgate";

/// The file in the store's directory that sled 0.34 keeps its log in and locks while open.
const DATA_FILE: &str = "db";

/// The file sled 0.34 keeps its settings in, beside [`DATA_FILE`].
const CONF_FILE: &str = "conf";

/// How long closing waits for sled to let go of its files.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `path` holds a sled store.
pub(crate) fn holds_store(path: &Path) -> bool {
    path.join(DATA_FILE).is_file() && path.join(CONF_FILE).is_file()
}

/// The file sled locks while the store in `path` is open.
pub(crate) fn lock_file(path: &Path) -> PathBuf {
    path.join(DATA_FILE)
}

fn engine_error(error: ::sled::Error) -> Error {
    match error {
        ::sled::Error::Io(e) => super::io_error(&e),
        ::sled::Error::Corruption { at, .. } => {
            Error::Corrupt(format!("sled corruption at {at:?}"))
        }
        other => Error::Engine(other.to_string()),
    }
}

/// A sled database and the tree that holds the store.
pub(crate) struct SledEngine {
    db: ::sled::Db,
    tree: ::sled::Tree,
}

impl SledEngine {
    /// Opens (or creates) the sled store in `path` with a page cache of `cache_bytes`. sled
    /// 0.34 panics on some damaged files (a flipped byte: "tried to serialize Uninitialized");
    /// that panic is caught and reported as damage to the folder's files, like its own errors.
    pub(crate) fn open(path: &Path, cache_bytes: u64) -> Result<SledEngine, Error> {
        let opened = catch_unwind(|| {
            let db = ::sled::Config::new()
                .path(path)
                .cache_capacity(cache_bytes)
                .open()?;
            let tree = db.open_tree(TREE)?;
            Ok(SledEngine { db, tree })
        });
        let damaged = |why: String| {
            Error::Corrupt(format!(
                "the store's files in {} are damaged (sled: {why})",
                path.display()
            ))
        };
        match opened {
            Ok(Ok(engine)) => Ok(engine),
            Ok(Err(::sled::Error::Corruption { at, .. })) => {
                Err(damaged(format!("corruption at {at:?}")))
            }
            Ok(Err(::sled::Error::Io(e)))
                if e.to_string().starts_with("could not acquire lock") =>
            {
                Err(Error::InUse(path.display().to_string()))
            }
            Ok(Err(e)) => Err(engine_error(e)),
            Err(panic) => Err(damaged(crate::panics::message(panic.as_ref()).to_owned())),
        }
    }
}

impl Engine for SledEngine {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self
            .tree
            .get(key)
            .map_err(engine_error)?
            .map(|v| v.to_vec()))
    }

    fn range<'a>(
        &'a self,
        lo: &[u8],
        hi: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Entry, Error>> + 'a> {
        Box::new(self.tree.range(lo..hi).map(|entry| {
            entry
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(engine_error)
        }))
    }

    fn apply(&self, writes: Overlay) -> Result<(), Error> {
        let mut batch = ::sled::Batch::default();
        for (key, value) in writes {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        self.tree.apply_batch(batch).map_err(engine_error)
    }

    fn flush(&self) -> Result<(), Error> {
        self.db.flush().map(drop).map_err(engine_error)
    }

    /// sled 0.34's iterators see writes made while they run, so it has no consistent view of
    /// a store that goes on writing.
    fn snapshot(&self) -> Result<Box<dyn EngineSnapshot>, Error> {
        Err(Error::Unsupported(
            "a sled store takes no consistent snapshot while it runs: stop the gateway and use \
             `rxgate store export`, or move the store to fjall (export, then import)"
                .into(),
        ))
    }
}

/// Waits until no one holds the lock sled takes on `file`.
pub(crate) fn wait_for_release(file: &Path) -> Result<(), Error> {
    let file = match File::open(file) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::Io(format!("{}: {e}", file.display()))),
    };
    let deadline = Instant::now() + RELEASE_TIMEOUT;
    loop {
        match file.try_lock() {
            // Dropping our handle releases the lock at once.
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Io(format!(
                    "the store's files are still in use {RELEASE_TIMEOUT:?} after closing"
                )));
            }
            Err(TryLockError::Error(e)) => return Err(Error::Io(e.to_string())),
        }
    }
}
