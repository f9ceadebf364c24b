//! Keeps the clinical data in force in step with the imports in the store. The start builds it
//! from the shipped set and the stored files ([`load_clinical`]); on a store that other gateways
//! write too, a watch reads the imports' version (one small row) every few seconds and, when it
//! moved — an import through another gateway — builds the data again the same way and puts it
//! in force. A gateway that cannot build it (a stored file its binary cannot parse, shipped data
//! the imports do not apply to) keeps the data it has and says so: one ERROR line per version, a
//! metric, and its readiness ([`Gateway::clinical_stale`]). Knows no gRPC and no storage engine.

use std::{path::PathBuf, sync::Arc, time::Duration};

use crate::{
    log_throttle::LogThrottle,
    master_files,
    store::{self, Store, Txn},
};

use super::{
    Clinical, Gateway,
    master_import::{Imported, imported_files, imports_version},
};

/// Where the shipped data is read from: the configured masters folder and contraindication
/// table, or (`None`) the ones embedded in the binary.
#[derive(Clone, Debug, Default)]
pub struct Shipped {
    pub masters_dir: Option<PathBuf>,
    pub contraindications: Option<PathBuf>,
}

/// Why the clinical data could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The stored files could not be read: worth another try.
    #[error("reading the imported drug masters: {0}")]
    Store(#[from] store::Error),
    /// The build was stopped (the runtime is shutting down): worth another try.
    #[error("building the drug masters stopped: {0}")]
    Stopped(String),
    /// The files do not build, and will not until other files are imported (or another binary
    /// reads them).
    #[error("loading the drug masters: {0}")]
    Files(#[from] master_files::Error),
}

/// The store's imports this gateway could not load: their version, and why.
#[derive(Debug, Clone)]
pub(super) struct Stale {
    version: u64,
    reason: String,
}

/// While the imports' version cannot be read (or their files), a WARN line at most once a
/// minute: the store's own failure is reported elsewhere.
static UNREAD: LogThrottle = LogThrottle::new(Duration::from_secs(60));

/// The shipped drug masters and contraindication table, with the files imported into `store`
/// replayed over them in import order; parsed off the async runtime.
pub async fn load_clinical(
    shipped: &Shipped,
    store: &Arc<dyn Store>,
) -> Result<Clinical, LoadError> {
    let (masters, table) = (
        origin(&shipped.masters_dir),
        origin(&shipped.contraindications),
    );
    let started = std::time::Instant::now();
    let Imported { version, files } = imported_files(store).await?;
    let shipped = shipped.clone();
    let (sources, built) = tokio::task::spawn_blocking(move || {
        let mut sources = master_files::Sources::read(
            shipped.masters_dir.as_deref(),
            shipped.contraindications.as_deref(),
        )?;
        for f in files {
            sources.apply(f.kind, f.file)?;
        }
        let built = sources.build()?;
        Ok::<_, master_files::Error>((sources, built))
    })
    .await
    .map_err(|e| LoadError::Stopped(e.to_string()))??;
    tracing::info!(
        %masters,
        contraindications = %table,
        full_file = %built.report.full_file,
        updates = built.report.updates.len(),
        products = built.report.current,
        contraindication_rules = built.table.len(),
        imported_files = version,
        millis = started.elapsed().as_millis() as u64,
        "drug masters loaded"
    );
    Ok(Clinical {
        catalog: built.catalog,
        table: built.table,
        sources,
        report: built.report,
        version,
    })
}

/// Where a configured file or folder comes from, as the log names it.
fn origin(named: &Option<PathBuf>) -> String {
    named
        .as_ref()
        .map_or("embedded".into(), |path| path.display().to_string())
}

impl Gateway {
    /// Reads the imports' version every `period` and loads the data again when it moved, for
    /// as long as the task runs. Only a store that other gateways write needs it: on one this
    /// gateway alone writes, every import is its own and is in force once it answers.
    pub async fn follow_imports(&self, shipped: Shipped, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.catch_up_with_imports(&shipped).await;
        }
    }

    /// Loads the store's imports if their version is not the one in force, and was not found
    /// unloadable before.
    async fn catch_up_with_imports(&self, shipped: &Shipped) {
        let read = self
            .store
            .transact(|tx: &mut dyn Txn| imports_version(tx))
            .await;
        let stored = match read.and_then(|version| version) {
            Ok(stored) => stored,
            Err(error) => return unread(&LoadError::Store(error)),
        };
        let stale_at = self.stale_imports().map(|stale| stale.version);
        if stored == self.clinical().version || stale_at == Some(stored) {
            return;
        }
        // One at a time with this gateway's imports, so that neither puts older data in force
        // over the other's; an import may have put this version in force meanwhile.
        let _one_at_a_time = self.imports.lock().await;
        let in_force = self.clinical().version;
        if stored == in_force {
            return;
        }
        match load_clinical(shipped, &self.store).await {
            Ok(clinical) => {
                tracing::info!(
                    version = clinical.version,
                    "drug masters imported through another gateway put in force"
                );
                self.replace_clinical(Arc::new(clinical));
                self.set_stale_imports(None);
            }
            Err(LoadError::Files(error)) => {
                tracing::error!(
                    version = stored,
                    in_force,
                    %error,
                    "the drug masters imported cannot be loaded: the checks go on with the data \
                     in force, and the gateway reports not ready until an import it can load"
                );
                self.set_stale_imports(Some(Stale {
                    version: stored,
                    reason: format!(
                        "the store's drug-master imports (version {stored}) cannot be loaded, \
                         the checks run on version {in_force}: {error}"
                    ),
                }));
            }
            Err(error) => unread(&error),
        }
    }

    /// Why the clinical data in force is not the store's, while this gateway cannot load the
    /// store's imports.
    pub fn clinical_stale(&self) -> Option<String> {
        self.stale_imports().map(|stale| stale.reason)
    }

    fn stale_imports(&self) -> Option<Stale> {
        let stale = self.stale_imports.lock();
        stale.unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_stale_imports(&self, stale: Option<Stale>) {
        *self.stale_imports.lock().unwrap_or_else(|e| e.into_inner()) = stale;
    }
}

/// Logs, throttled, that the imports could not be read this time.
fn unread(error: &LoadError) {
    if let Some(left_out) = UNREAD.allow() {
        tracing::warn!(%error, left_out, "the drug-master imports were not read; trying again");
    }
}
