//! A token bucket: `burst` tokens at most, refilled at `rate` per second, one taken per request.
//! Time comes in as a parameter (tokio's `Instant`, so that paused time tests it); no IO, no
//! locking (the caller holds the bucket).

use std::time::Duration;

use tokio::time::Instant;

/// The rate and burst of a bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rate {
    /// Tokens added per second (positive).
    pub(crate) per_sec: f64,
    /// The most tokens the bucket holds (at least 1).
    pub(crate) burst: f64,
}

#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn full(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            tokens: rate.burst,
            updated: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_sec).min(rate.burst);
        self.updated = now;
    }

    /// Takes a token, or says how long until one is there.
    pub(crate) fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / rate.per_sec))
    }

    /// Whether the bucket is full again at `now`: then it is the same as a new one and can be
    /// forgotten.
    pub(crate) fn is_full(&self, rate: Rate, now: Instant) -> bool {
        let mut bucket = self.clone();
        bucket.refill(rate, now);
        bucket.tokens >= rate.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_sec: 10.0,
        burst: 3.0,
    };

    fn assert_wait(taken: Result<(), Duration>, secs: f64) {
        let wait = taken.expect_err("no token left").as_secs_f64();
        assert!((wait - secs).abs() < 1e-6, "waits {wait} s, not {secs} s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_rate() {
        let mut bucket = TokenBucket::full(RATE, Instant::now());
        for _ in 0..3 {
            assert_eq!(bucket.take(RATE, Instant::now()), Ok(()));
        }
        // Empty: the next token comes in a tenth of a second.
        assert_wait(bucket.take(RATE, Instant::now()), 0.1);
        tokio::time::advance(Duration::from_millis(40)).await;
        assert_wait(bucket.take(RATE, Instant::now()), 0.06);
        tokio::time::advance(Duration::from_millis(60)).await;
        assert_eq!(bucket.take(RATE, Instant::now()), Ok(()));
        assert!(bucket.take(RATE, Instant::now()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_bucket_fills_up_to_the_burst_and_no_more() {
        let mut bucket = TokenBucket::full(RATE, Instant::now());
        bucket.take(RATE, Instant::now()).unwrap();
        assert!(!bucket.is_full(RATE, Instant::now()));
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(bucket.is_full(RATE, Instant::now()));
        for _ in 0..3 {
            bucket.take(RATE, Instant::now()).unwrap();
        }
        assert!(bucket.take(RATE, Instant::now()).is_err());
    }
}
