//! The page `/metrics` serves: the gateway's metrics, the store's commits, the signer-chain
//! cache and the clinical data in force, in the Prometheus text format (version 0.0.4) written
//! by `prometheus-client`. Must not depend on HTTP or gRPC: it only turns figures into text.

use std::{fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, prometheus_text},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::{
    domain::signature::Verifier,
    metrics::describe,
    service::Gateway,
    store::{Stats, Store},
};

/// What the page is made of, read afresh at every scrape.
struct Figures {
    gateway: Arc<Gateway>,
    store: Arc<dyn Store>,
    verifier: Arc<Verifier>,
}

impl fmt::Debug for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Figures").finish_non_exhaustive()
    }
}

/// The page, ready to be rendered at every scrape.
pub(crate) struct Page {
    registry: Registry,
}

/// The HTTP `Content-Type` of the page.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

impl Page {
    pub(crate) fn new(
        gateway: Arc<Gateway>,
        store: Arc<dyn Store>,
        verifier: Arc<Verifier>,
    ) -> Page {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Figures {
            gateway,
            store,
            verifier,
        }));
        Page { registry }
    }

    /// The page's text now.
    pub(crate) fn render(&self) -> Result<String, fmt::Error> {
        let mut text = String::with_capacity(32 * 1024);
        prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl Collector for Figures {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        self.gateway.metrics().encode(&mut out)?;
        store(&mut out, &self.store.stats())?;
        let (hits, misses) = self.verifier.chain_cache_hits_and_misses();
        let mut lookups = out.encode_descriptor(
            "rxgate_chain_cache_lookups",
            "Signer-chain cache lookups, by result.",
            None,
            MetricType::Counter,
        )?;
        for (result, n) in [("hit", hits), ("miss", misses)] {
            ConstCounter::new(n).encode(lookups.encode_family(&[("result", result)])?)?;
        }
        let clinical = self.gateway.clinical();
        describe(
            &mut out,
            "rxgate_master_current_products",
            "Current products in the drug master in force.",
            &ConstGauge::new(clinical.report.current as u64),
        )?;
        describe(
            &mut out,
            "rxgate_master_imported_files",
            "Files imported over the shipped drug masters in force: the imports' version.",
            &ConstGauge::new(clinical.version),
        )?;
        describe(
            &mut out,
            "rxgate_master_stale",
            "1 while the store holds drug-master imports this gateway cannot load (it checks \
             against the data in force and reports not ready).",
            &ConstGauge::new(u64::from(self.gateway.clinical_stale().is_some())),
        )
    }
}

/// The store's commits: counters, the connection pool, flush latency and batch sizes.
fn store(out: &mut DescriptorEncoder, stats: &Stats) -> fmt::Result {
    for (name, help, value) in [
        (
            "rxgate_store_transactions",
            "Store transactions answered.",
            stats.transactions,
        ),
        (
            "rxgate_store_commits",
            "Store transactions that wrote.",
            stats.commits,
        ),
        (
            "rxgate_store_retries",
            "Transaction runs made again after a conflict (PostgreSQL).",
            stats.retries,
        ),
        (
            "rxgate_store_batches",
            "Store batches (group commits).",
            stats.batches,
        ),
        (
            "rxgate_store_flushes",
            "Durability flushes (fsync).",
            stats.flushes,
        ),
        (
            "rxgate_store_corrupt_reads",
            "Reads that found stored bytes corrupt (each logged with its table and key).",
            stats.corrupt_reads,
        ),
    ] {
        describe(out, name, help, &ConstCounter::new(value))?;
    }
    for (name, help, value) in [
        (
            "rxgate_store_pool_connections",
            "Database connections open (PostgreSQL).",
            stats.pool.open,
        ),
        (
            "rxgate_store_pool_idle",
            "Database connections open and unused (PostgreSQL).",
            stats.pool.idle,
        ),
        (
            "rxgate_store_pool_waiting",
            "Transactions waiting for a database connection (PostgreSQL).",
            stats.pool.waiting,
        ),
    ] {
        describe(out, name, help, &ConstGauge::new(value))?;
    }
    describe(
        out,
        "rxgate_store_flush_duration_seconds",
        "Time of one durability flush.",
        &stats.flush_latency,
    )?;
    describe(
        out,
        "rxgate_store_batch_size",
        "Transactions per store batch.",
        &stats.batch_size,
    )
}
