//! `rxgate config check FILE`: a configuration read as `serve --config` reads it — its settings
//! and every certificate, key, CRL and key file it names (`[postgres]`'s password and TLS files
//! too), and the drug masters and
//! contraindication table when it names its own instead of the built-in ones — without binding a
//! port or opening the store, so that an operator learns of a mistake before a restart.

use std::{path::Path, sync::Arc};

use anyhow::Context;

use crate::{config::Config, master_files::Sources};

/// Reads and validates the configuration at `path` and loads the files it names; the first
/// problem found is the error.
pub fn check(path: &Path) -> anyhow::Result<()> {
    let config = Config::from_file(path)?;
    config
        .signing
        .load(config.verifier_config()?)
        .context("loading the document-signing trust")?;
    config.tls.load().context("loading the TLS material")?;
    if let Some(postgres) = &config.postgres {
        postgres
            .read_files()
            .map_err(anyhow::Error::msg)
            .context("reading the files of [postgres]")?;
    }
    if let Some(relay) = &config.relay {
        let identity = Arc::new(config.gateway_identity()?);
        relay
            .relay_config(identity)
            .client
            .client_tls_config()
            .context("loading the relay's TLS material")?;
    }
    let checks = &config.checks;
    if checks.masters_dir.is_some() || checks.contraindications.is_some() {
        Sources::read(
            checks.masters_dir.as_deref(),
            checks.contraindications.as_deref(),
        )
        .and_then(|sources| sources.build())
        .context("loading the drug masters")?;
    }
    Ok(())
}
