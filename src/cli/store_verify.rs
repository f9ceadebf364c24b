//! `rxgate store verify`: opens a stopped gateway's store (an engine's lock refuses one a
//! running gateway holds) or the PostgreSQL store a configuration names, reads it through the
//! `Store` trait alone, checks it whole (`service::verify`, the patients' keys under the
//! gateway's pseudonym key when it is given) and that its acknowledged mark is not ahead of it
//! (`service::acknowledged::compare`), and names the first problem. A dump
//! is checked by loading it (which checks its manifest) into a scratch store beside it, which
//! is then checked the same way and removed. A progress line is drawn on standard error when
//! it is a terminal.

use std::fs::{self, DirBuilder};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};

use super::store::StoreAt;
use crate::{
    audit_verify::ChainVerifier,
    domain::time::JapanDate,
    opened_store::OpenedStore,
    service::{Pseudonyms, acknowledged, verify},
    store::{self, EmbeddedStore, EngineKind, Store, Table},
};

/// How often the progress line is redrawn at most.
const REDRAW: Duration = Duration::from_millis(200);

/// Verifies the store `at` names (a stopped one's folder, or a database), believing the
/// checkpoints `chains` trusts, its patients' keys under `pseudonyms` (none: those checks
/// skipped, as the summary says): its summary when sound, else the first problem (both one
/// line). Err when it cannot be opened.
pub async fn verify(
    at: StoreAt,
    chains: ChainVerifier,
    pseudonyms: Option<Pseudonyms>,
) -> anyhow::Result<Result<String, String>> {
    match at {
        StoreAt::Folder(dir) => verify_folder(&dir, chains, pseudonyms).await,
        StoreAt::Database(config) => {
            let opened = OpenedStore::open(&config).await?;
            let verdict = verify_store(opened.store(), &config.data_dir, chains, pseudonyms).await;
            opened.close().await?;
            verdict
        }
    }
}

/// Verifies the stopped store in `dir`.
async fn verify_folder(
    dir: &Path,
    chains: ChainVerifier,
    pseudonyms: Option<Pseudonyms>,
) -> anyhow::Result<Result<String, String>> {
    store::unfinished::refuse(dir)?;
    if EngineKind::found_in(dir)?.is_none() {
        bail!("{} holds no store", dir.display());
    }
    let opening = format!("opening the store {}", dir.display());
    let store = {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir))
            .await
            .context(opening.clone())?
            .context(opening)?
    };
    let store = Arc::new(store);
    let verdict = verify_store(store.clone(), dir, chains, pseudonyms).await;
    tokio::task::spawn_blocking(move || store.close()).await??;
    verdict
}

/// Verifies `store` whole, and that the acknowledged mark kept in `mark_dir` is not ahead of it.
async fn verify_store(
    store: Arc<dyn Store>,
    mark_dir: &Path,
    chains: ChainVerifier,
    pseudonyms: Option<Pseudonyms>,
) -> anyhow::Result<Result<String, String>> {
    let mut progress = Progress::new();
    let today = JapanDate::of(SystemTime::now());
    let verdict = verify::verify(&store, chains, (today, pseudonyms), &mut |table, read| {
        progress.show(table, read)
    })
    .await
    .map_err(|problem| problem.to_string());
    progress.end();
    Ok(match verdict {
        Ok(summary) => mark_not_ahead(&store, mark_dir)
            .await?
            .map(|()| summary.to_string()),
        Err(problem) => Err(problem),
    })
}

/// Verifies the dump in `dump` (an export or a backup): loads it into a scratch store in
/// `DUMP.verifying` (0700: it holds patient data; refused if it exists), verifies that, and
/// removes it. Err when the dump is damaged (its manifest disagrees) or cannot be loaded.
pub async fn verify_dump(
    dump: &Path,
    chains: ChainVerifier,
    pseudonyms: Option<Pseudonyms>,
) -> anyhow::Result<Result<String, String>> {
    let scratch = Scratch::beside(dump)?;
    let manifest =
        super::store::import_folder(scratch.0.clone(), EngineKind::Fjall, dump.to_owned()).await?;
    let entries: u64 = manifest.tables.iter().map(|t| t.entries).sum();
    let verdict = verify_folder(&scratch.0, chains, pseudonyms).await?;
    Ok(
        verdict
            .map(|summary| format!("{summary}; the dump's {entries} entries match its manifest")),
    )
}

/// A scratch folder, removed with what it holds when dropped.
struct Scratch(PathBuf);

impl Scratch {
    /// `DUMP.verifying`, new, readable by its owner only.
    fn beside(dump: &Path) -> anyhow::Result<Scratch> {
        let mut name = dump.as_os_str().to_owned();
        name.push(".verifying");
        let dir = PathBuf::from(name);
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating the scratch folder {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The store is not behind its acknowledged mark (none: a new store, or an older version's).
async fn mark_not_ahead(store: &Arc<dyn Store>, dir: &Path) -> anyhow::Result<Result<(), String>> {
    let behind = acknowledged::compare(store, dir.to_owned()).await?;
    if behind.shortfalls.is_empty() {
        return Ok(Ok(()));
    }
    Ok(Err(behind.to_string()))
}

/// The progress line: the table being read and how many of its entries, on a terminal only.
struct Progress {
    terminal: bool,
    drawn: Option<Instant>,
}

impl Progress {
    fn new() -> Self {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            drawn: None,
        }
    }

    fn show(&mut self, table: Table, read: u64) {
        if !self.terminal || self.drawn.is_some_and(|at| at.elapsed() < REDRAW) {
            return;
        }
        self.drawn = Some(Instant::now());
        eprint!("\r\x1b[Kverifying {table:?}: {read} entries");
        let _ = std::io::stderr().flush();
    }

    fn end(&self) {
        if self.drawn.is_some() {
            eprint!("\r\x1b[K");
        }
    }
}
