//! How a running server ends. It serves until it is asked to stop or one of its tasks ends, for
//! every task runs as long as the server: a background task that panics or returns, or a server
//! that stops accepting, ends the server with the task's name ([`Ending::Failed`]). Asked to
//! stop, it drains: not serving at once (health), still accepting for the drain delay, then
//! the connections are closed and the calls in flight have the grace period to finish
//! ([`Drain`]). Knows tokio only: what "not serving" and "close" do is handed in, and closing
//! the store is the caller's, whatever the ending.

use std::{collections::HashMap, fmt, future::Future, pin::pin, time::Duration};

use tokio::{
    sync::mpsc,
    task::{self, JoinSet},
};

/// The timings of a drain.
#[derive(Clone, Copy, Debug)]
pub struct Drain {
    /// Not serving but still accepting: load balancers hear of it before connections close.
    pub delay: Duration,
    /// How long the calls in flight have, once the connections are closing.
    pub grace: Duration,
}

/// How a server ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// Stopped as asked: every call finished within the grace period.
    Drained,
    /// Stopped as asked, but the grace period ran out: the calls still in flight were cut.
    GraceRanOut,
    /// A task that should have run as long as the server ended, unasked.
    Failed { task: &'static str, why: String },
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::Drained => write!(f, "drained"),
            Ending::GraceRanOut => write!(f, "the grace period ran out: calls in flight were cut"),
            Ending::Failed { task, why } => write!(f, "the task {task:?} {why}"),
        }
    }
}

/// The tasks that run beside the server, each under a name that a failure report gives.
#[derive(Default)]
pub struct Tasks {
    running: JoinSet<()>,
    names: HashMap<task::Id, &'static str>,
}

impl Tasks {
    /// Runs `task` for as long as the server; its end is a failure.
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let id = self.running.spawn(task).id();
        self.names.insert(id, name);
    }

    /// Waits for the first task to end (never, while there is none).
    async fn failure(&mut self) -> Ending {
        let Some(ended) = self.running.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let (id, why) = match ended {
            Ok((id, ())) => (id, "returned".to_owned()),
            Err(e) => (e.id(), failure_of(e)),
        };
        Ending::Failed {
            task: self.names.get(&id).copied().unwrap_or("unnamed"),
            why,
        }
    }
}

/// What a task's join error says happened to it.
fn failure_of(e: task::JoinError) -> String {
    if !e.is_panic() {
        return "was cancelled".to_owned();
    }
    format!(
        "panicked: {}",
        crate::panics::message(e.into_panic().as_ref())
    )
}

/// What the drain does to the server, beside waiting.
pub struct Steps<N, C> {
    /// Health says NOT_SERVING (at once, on the stop request).
    pub not_serving: N,
    /// Stop accepting, send GOAWAY, end the feeds (after the drain delay).
    pub close: C,
}

/// Runs `serving` (the server, which ends only once closed) and `tasks` until a stop request
/// arrives on `stops` (or every sender is gone), then drains as `drain` says; returns how it
/// ended. The tasks are aborted (dropped) when it returns.
pub async fn supervise<E: fmt::Display>(
    serving: impl Future<Output = Result<(), E>>,
    mut tasks: Tasks,
    mut stops: mpsc::UnboundedReceiver<()>,
    drain: Drain,
    steps: Steps<impl Future<Output = ()>, impl Future<Output = ()>>,
) -> Ending {
    let mut serving = pin!(serving);
    let server_failed = |ended: Result<(), E>| Ending::Failed {
        task: "grpc server",
        why: match ended {
            Ok(()) => "stopped accepting".to_owned(),
            Err(e) => format!("failed: {e}"),
        },
    };
    tokio::select! {
        ended = &mut serving => return server_failed(ended),
        failure = tasks.failure() => return failure,
        _ = stops.recv() => {}
    }
    tracing::info!(
        delay_secs = drain.delay.as_secs(),
        grace_secs = drain.grace.as_secs(),
        "draining: not serving"
    );
    steps.not_serving.await;
    tokio::select! {
        ended = &mut serving => return server_failed(ended),
        failure = tasks.failure() => return failure,
        () = tokio::time::sleep(drain.delay) => {}
    }
    tracing::info!("draining: closing the connections");
    steps.close.await;
    tokio::select! {
        ended = &mut serving => match ended {
            Ok(()) => Ending::Drained,
            failed => server_failed(failed),
        },
        failure = tasks.failure() => failure,
        () = tokio::time::sleep(drain.grace) => Ending::GraceRanOut,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::{sync::oneshot, time::Instant};

    use super::*;

    const DRAIN: Drain = Drain {
        delay: Duration::from_secs(5),
        grace: Duration::from_secs(10),
    };

    /// The steps, each noting when it ran (seconds since `start`); `close` also tells the
    /// server to end.
    fn steps(
        start: Instant,
        log: &Arc<Mutex<Vec<(&'static str, u64)>>>,
        closed: oneshot::Sender<()>,
    ) -> Steps<impl Future<Output = ()>, impl Future<Output = ()>> {
        let note = |step| {
            let log = Arc::clone(log);
            move || log.lock().unwrap().push((step, start.elapsed().as_secs()))
        };
        let (not_serving, close) = (note("not serving"), note("close"));
        Steps {
            not_serving: async move { not_serving() },
            close: async move {
                close();
                let _ = closed.send(());
            },
        }
    }

    /// A server that ends `after` it is closed (never, if `None`).
    async fn server(closed: oneshot::Receiver<()>, after: Option<Duration>) -> Result<(), String> {
        let _ = closed.await;
        match after {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
        Ok(())
    }

    async fn stopped_with(
        server_ends: Option<Duration>,
    ) -> (Ending, Vec<(&'static str, u64)>, u64) {
        let start = Instant::now();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (closed_tx, closed_rx) = oneshot::channel();
        let (stop, stops) = mpsc::unbounded_channel();
        stop.send(()).unwrap();
        let ending = supervise(
            server(closed_rx, server_ends),
            Tasks::default(),
            stops,
            DRAIN,
            steps(start, &log, closed_tx),
        )
        .await;
        let log = log.lock().unwrap().clone();
        (ending, log, start.elapsed().as_secs())
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_drains_not_serving_first_then_closing_after_the_delay() {
        let (ending, log, took) = stopped_with(Some(Duration::from_secs(3))).await;
        assert_eq!(ending, Ending::Drained);
        assert_eq!(log, [("not serving", 0), ("close", 5)]);
        assert_eq!(took, 8);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_that_outlast_the_grace_are_cut_at_its_end() {
        let (ending, log, took) = stopped_with(None).await;
        assert_eq!(ending, Ending::GraceRanOut);
        assert_eq!(log, [("not serving", 0), ("close", 5)]);
        assert_eq!(took, 15);
    }

    /// Serves with `tasks` and no stop request until something ends.
    async fn served_with(tasks: Tasks, serving: Option<Result<(), String>>) -> Ending {
        let (_stop, stops) = mpsc::unbounded_channel();
        let (closed_tx, _closed_rx) = oneshot::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let serving = async move {
            match serving {
                Some(ended) => ended,
                None => std::future::pending().await,
            }
        };
        supervise(
            serving,
            tasks,
            stops,
            DRAIN,
            steps(Instant::now(), &log, closed_tx),
        )
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn a_background_task_that_panics_or_returns_ends_the_server_with_its_name() {
        let mut tasks = Tasks::default();
        tasks.spawn("forever", std::future::pending());
        tasks.spawn("expiry sweep", async { panic!("the clock went backwards") });
        let failed = served_with(tasks, None).await;
        assert_eq!(
            failed,
            Ending::Failed {
                task: "expiry sweep",
                why: "panicked: the clock went backwards".into()
            }
        );

        let mut tasks = Tasks::default();
        tasks.spawn("forever", std::future::pending());
        tasks.spawn("metrics port", async {});
        let failed = served_with(tasks, None).await;
        assert_eq!(failed.to_string(), "the task \"metrics port\" returned");
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_ends_unasked_is_a_failure() {
        for (ended, why) in [
            (Ok(()), "stopped accepting"),
            (Err("listener closed".to_owned()), "failed: listener closed"),
        ] {
            let failed = served_with(Tasks::default(), Some(ended)).await;
            assert_eq!(
                failed,
                Ending::Failed {
                    task: "grpc server",
                    why: why.into()
                }
            );
        }
    }
}
