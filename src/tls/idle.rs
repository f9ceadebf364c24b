//! The idle timeout of a connection: its open streams, counted by whoever serves them (the gRPC
//! layer takes an [`OpenStream`] for each call until its response body ends or is dropped), and a
//! timer that says when the connection has had no open stream for its idle timeout. A
//! connection with any open stream (a live event feed above all) is never idle. Pure
//! bookkeeping over tokio's clock (so that paused time tests it): no IO, no TLS.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll, Waker},
    time::Duration,
};

use tokio::time::{Instant, Sleep};

/// The open streams of one connection.
#[derive(Debug)]
pub struct OpenStreams {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    open: usize,
    /// When the last stream ended (or the connection opened).
    idle_since: Instant,
    /// The connection's timer, to wake when its last stream ends.
    waker: Option<Waker>,
}

impl OpenStreams {
    fn new() -> Arc<Self> {
        Arc::new(OpenStreams {
            state: Mutex::new(State {
                open: 0,
                idle_since: Instant::now(),
                waker: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a stream as open until the returned guard is dropped.
    pub fn open(self: &Arc<Self>) -> OpenStream {
        self.lock().open += 1;
        OpenStream(Arc::clone(self))
    }
}

/// One open stream; counted until dropped.
#[derive(Debug)]
pub struct OpenStream(Arc<OpenStreams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.0.lock();
            state.open = state.open.saturating_sub(1);
            if state.open > 0 {
                return;
            }
            state.idle_since = Instant::now();
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Says when a connection has been idle for its timeout.
#[derive(Debug)]
pub(crate) struct IdleTimer {
    streams: Arc<OpenStreams>,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl IdleTimer {
    /// A timer for a connection opened now, with its (so far empty) stream count.
    pub(crate) fn new(timeout: Duration) -> Self {
        let streams = OpenStreams::new();
        let sleep = Box::pin(tokio::time::sleep(timeout));
        IdleTimer {
            streams,
            timeout,
            sleep,
        }
    }

    pub(crate) fn streams(&self) -> &Arc<OpenStreams> {
        &self.streams
    }

    /// Ready once no stream has been open for the timeout; otherwise it wakes `cx` when that
    /// may have become true (at the deadline, or when the last stream ends).
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = {
            let mut state = self.streams.lock();
            if state.open > 0 {
                state.waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            state.idle_since + self.timeout
        };
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        self.sleep.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn expired(timer: &mut IdleTimer) -> bool {
        std::future::poll_fn(|cx| Poll::Ready(timer.poll_expired(cx).is_ready())).await
    }

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_end_of_the_last_stream() {
        let mut timer = IdleTimer::new(Duration::from_secs(10));
        let streams = Arc::clone(timer.streams());
        tokio::time::advance(Duration::from_secs(9)).await;
        let first = streams.open();
        let second = streams.open();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!expired(&mut timer).await, "streams are open");
        drop(first);
        assert!(!expired(&mut timer).await, "one stream is still open");
        drop(second);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!expired(&mut timer).await);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(expired(&mut timer).await);
    }

    #[tokio::test(start_paused = true)]
    async fn the_end_of_the_last_stream_wakes_the_timer() {
        let mut timer = IdleTimer::new(Duration::from_secs(10));
        let stream = timer.streams().open();
        let waited = tokio::spawn(async move {
            std::future::poll_fn(|cx| timer.poll_expired(cx)).await;
            tokio::time::Instant::now()
        });
        tokio::time::advance(Duration::from_secs(100)).await;
        tokio::task::yield_now().await;
        let ended = tokio::time::Instant::now();
        drop(stream);
        assert_eq!(waited.await.unwrap(), ended + Duration::from_secs(10));
    }
}
