//! The load shapes. Open loop: operation i is due at start + i/rate and is timed from then,
//! whatever the server's answers, so a slow server shows as latency instead of as fewer sends
//! (no coordinated omission). Closed loop: N workers, each starting its next operation when its
//! last one ends (finds the maximum throughput; hides queueing by construction).
//! Operations started in the warm-up run but are not recorded.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{task::JoinSet, time::Instant};

use crate::{cli::Load, workload::Workload};

/// When a run measures.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub warmup: Duration,
    pub duration: Duration,
}

/// How a run ended.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// The measured time: from the end of the warm-up until the last operation ended (so a
    /// server that falls behind an open loop's rate shows a lower throughput than the target).
    pub measured: Duration,
    /// The prepared operations ran out before the end.
    pub exhausted: bool,
}

/// Runs `workload` under `load` for the window; returns once every started operation ended.
pub async fn run(load: Load, window: Window, workload: Arc<Workload>) -> anyhow::Result<Outcome> {
    let start = Instant::now();
    let measure_from = start + window.warmup;
    let end = measure_from + window.duration;
    let ran_out = match load {
        Load::Open {
            rate,
            max_in_flight,
        } => open_loop(rate, max_in_flight, start, measure_from, end, workload).await,
        Load::Closed { concurrency } => closed_loop(concurrency, measure_from, end, workload).await,
    };
    anyhow::ensure!(
        ran_out.is_none_or(|at| at > measure_from),
        "the prepared operations ran out during the warm-up: raise --corpus"
    );
    Ok(Outcome {
        measured: Instant::now() - measure_from,
        exhausted: ran_out.is_some(),
    })
}

/// Returns when the operations ran out, if they did.
async fn open_loop(
    rate: f64,
    max_in_flight: usize,
    start: Instant,
    measure_from: Instant,
    end: Instant,
    workload: Arc<Workload>,
) -> Option<Instant> {
    let mut running = JoinSet::new();
    let mut ran_out = None;
    for i in 0.. {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if due >= end {
            break;
        }
        if i >= workload.len() {
            ran_out = Some(due);
            break;
        }
        tokio::time::sleep_until(due).await;
        while running.try_join_next().is_some() {}
        let measured = due >= measure_from;
        if running.len() >= max_in_flight {
            workload.recorder.dropped(measured);
            continue;
        }
        let workload = Arc::clone(&workload);
        running.spawn(async move { workload.run(i, due.into_std(), measured).await });
    }
    running.join_all().await;
    ran_out
}

/// Returns when the operations ran out, if they did.
async fn closed_loop(
    concurrency: usize,
    measure_from: Instant,
    end: Instant,
    workload: Arc<Workload>,
) -> Option<Instant> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let (next, workload) = (Arc::clone(&next), Arc::clone(&workload));
        workers.spawn(async move {
            loop {
                let now = Instant::now();
                if now >= end {
                    return None;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= workload.len() {
                    return Some(now);
                }
                workload.run(i, now.into_std(), now >= measure_from).await;
            }
        });
    }
    workers.join_all().await.into_iter().flatten().min()
}
