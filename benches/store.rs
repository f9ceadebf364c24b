//! A store commit under concurrency: N writers each commit 1 KiB transactions as fast as the
//! store answers (one writer thread running and applying each batch, the fsync on a flusher
//! thread, at most one fsync per batch), on each engine. Prints throughput and commit latency
//! percentiles per engine and concurrency.
//! `cargo bench --bench store`; under `cargo test` it only checks that the benchmark runs (a few
//! transactions).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rxgate::store::{DEFAULT_CACHE_MIB, EmbeddedStore, EngineKind, Store, Table};

/// Runs `writers` concurrent writers for `per_writer` transactions each; returns the latencies.
async fn run(
    store: Arc<EmbeddedStore>,
    writers: usize,
    per_writer: usize,
) -> (Duration, Vec<Duration>) {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_writer);
            for i in 0..per_writer {
                let key = format!("w{w:03}-{i:08}").into_bytes();
                let t = Instant::now();
                store
                    .transact(move |tx| {
                        tx.put(Table::Meta, &key, &[0xA5; 1024]);
                        Ok::<_, ()>(())
                    })
                    .await
                    .unwrap()
                    .unwrap();
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (started.elapsed(), all)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("store commit, 1 KiB transactions, durable (fsync per batch)");
    println!(
        "{:>6} {:>8} {:>8} {:>10} {:>9} {:>9} {:>9} {:>10}",
        "engine", "writers", "txns", "txn/s", "p50 ms", "p99 ms", "max ms", "per batch"
    );
    let runs = [EngineKind::Fjall, EngineKind::Sled]
        .into_iter()
        .flat_map(|engine| [1, 16, 64, 256].map(|writers| (engine, writers)));
    for (engine, writers) in runs {
        let per_writer = if full { 8_000 / writers.min(64) } else { 2 };
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open_with(dir.path(), Some(engine), DEFAULT_CACHE_MIB).unwrap();
        let store = Arc::new(store);
        let (took, mut latencies) = runtime.block_on(run(Arc::clone(&store), writers, per_writer));
        latencies.sort();
        let stats = store.stats();
        println!(
            "{:>6} {:>8} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>10.1}",
            engine.to_string(),
            writers,
            latencies.len(),
            latencies.len() as f64 / took.as_secs_f64(),
            percentile(&latencies, 0.50).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().unwrap().as_secs_f64() * 1e3,
            stats.transactions as f64 / stats.batches.max(1) as f64,
        );
        assert_eq!(stats.commits as usize, latencies.len());
        Arc::try_unwrap(store).ok().unwrap().close().unwrap();
    }
}
