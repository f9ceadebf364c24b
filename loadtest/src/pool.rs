//! Untimed bulk work (setup, audit): run a task per item, a bounded number at once.

use std::future::Future;

use anyhow::Context;
use tokio::task::JoinSet;

/// How many untimed calls one institution has in flight at once: half of what the gateway allows
/// per institution (`[network.fairness] max_in_flight`, 8 by default), so that calls spread over
/// the institutions in turn are never refused.
pub const PER_INSTITUTION: usize = 4;

/// Sends `call` again, after the delay the gateway's RetryInfo asks for, while the gateway refuses
/// it with RESOURCE_EXHAUSTED for an institution's rate: the untimed preparation then goes as
/// fast as the gateway lets each institution, as a well-behaved client would. Any other answer
/// (a refusal without a RetryInfo included) is returned.
pub async fn paced<T, Fut>(mut call: impl FnMut() -> Fut) -> Result<T, tonic::Status>
where
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    use tonic_types::StatusExt;
    loop {
        match call().await {
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                let Some(delay) = s.get_details_retry_info().and_then(|r| r.retry_delay) else {
                    return Err(s);
                };
                tokio::time::sleep(delay).await;
            }
            answered => return answered,
        }
    }
}

/// Runs `task(item)` for every item with at most `limit` in flight; the results in completion
/// order. The first error stops the rest (tasks in flight are aborted).
pub async fn run_bounded<I, T, F, Fut>(
    items: impl IntoIterator<Item = I>,
    limit: usize,
    mut task: F,
) -> anyhow::Result<Vec<T>>
where
    F: FnMut(I) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let mut items = items.into_iter();
    let mut running = JoinSet::new();
    let mut done = Vec::new();
    loop {
        while running.len() < limit.max(1) {
            let Some(item) = items.next() else { break };
            running.spawn(task(item));
        }
        let Some(joined) = running.join_next().await else {
            return Ok(done);
        };
        done.push(joined.context("a task panicked")??);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_item_runs_once_and_errors_stop_the_rest() {
        let mut squares = run_bounded(0..100u64, 7, |i| async move { Ok(i * i) })
            .await
            .unwrap();
        squares.sort();
        assert_eq!(squares, (0..100u64).map(|i| i * i).collect::<Vec<_>>());

        let failed = run_bounded(0..100u64, 7, |i| async move {
            anyhow::ensure!(i != 50, "item {i}");
            Ok(i)
        })
        .await;
        assert_eq!(failed.unwrap_err().to_string(), "item 50");
    }
}
