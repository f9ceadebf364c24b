//! The accept loop's pause after an accept error that is not one connection's own (out of file
//! descriptors, EMFILE or ENFILE; out of buffers): 100 ms, doubling to 1 s, short again after the
//! next successful accept. The loop neither spins on an error that repeats until something is
//! closed, nor gives up. Only tokio's timer; no IO.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Sleep;

/// The first pause.
const FIRST: Duration = Duration::from_millis(100);
/// The longest pause.
const LONGEST: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub(crate) struct AcceptBackoff {
    /// The length of the next pause.
    next: Duration,
    pause: Option<Pin<Box<Sleep>>>,
}

impl AcceptBackoff {
    pub(crate) fn new() -> Self {
        AcceptBackoff {
            next: FIRST,
            pause: None,
        }
    }

    /// Starts a pause after an error; returns its length.
    pub(crate) fn pause(&mut self) -> Duration {
        let length = self.next;
        self.next = (length * 2).min(LONGEST);
        self.pause = Some(Box::pin(tokio::time::sleep(length)));
        length
    }

    /// Ready when no pause is running; otherwise leaves a waker for its end.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(pause) = &mut self.pause {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.pause = None;
        }
        Poll::Ready(())
    }

    /// After a successful accept: the next pause is the first one again.
    pub(crate) fn reset(&mut self) {
        self.next = FIRST;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(backoff: &mut AcceptBackoff) -> bool {
        let waker = std::task::Waker::noop();
        backoff
            .poll_ready(&mut Context::from_waker(waker))
            .is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_double_to_a_second_and_shorten_after_a_success() {
        let mut backoff = AcceptBackoff::new();
        let lengths: Vec<_> = (0..6).map(|_| backoff.pause().as_millis()).collect();
        assert_eq!(lengths, [100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.pause(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_the_loop_until_it_ends() {
        let mut backoff = AcceptBackoff::new();
        assert!(ready(&mut backoff), "no pause before any error");
        backoff.pause();
        assert!(!ready(&mut backoff));
        tokio::time::advance(Duration::from_millis(99)).await;
        assert!(!ready(&mut backoff));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(ready(&mut backoff));
        // The next error pauses longer.
        backoff.pause();
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(!ready(&mut backoff));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(ready(&mut backoff));
    }
}
