//! Rate-limited logging for what a broken or hostile peer can repeat at will (failed
//! handshakes, refused connections, accept errors, cut feeds): at most one line per interval,
//! carrying the count of the lines left out, so that a flood of refusals cannot also flood the
//! log. Depends on nothing but tokio's clock (so that paused time tests it).

use std::{
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

/// One kind of log line, throttled.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// When the next line may be written (`None`: now).
    next: Option<Instant>,
    /// Lines left out since the last one written.
    left_out: u64,
}

impl LogThrottle {
    /// At most one line per `every`; `const` so that a throttle can be a `static` beside the
    /// code that logs.
    pub const fn new(every: Duration) -> Self {
        LogThrottle {
            every,
            state: Mutex::new(State {
                next: None,
                left_out: 0,
            }),
        }
    }

    /// `Some(left_out)` when a line may be written now (`left_out`: how many were left out since
    /// the last one); `None` when this one is to be left out.
    pub fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.next.is_some_and(|next| now < next) {
            state.left_out += 1;
            return None;
        }
        state.next = Some(now + self.every);
        Some(std::mem::take(&mut state.left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_interval_counting_the_rest() {
        let throttle = LogThrottle::new(Duration::from_secs(10));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        assert_eq!(throttle.allow(), None);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(throttle.allow(), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(throttle.allow(), Some(3));
        assert_eq!(throttle.allow(), None);
    }
}
