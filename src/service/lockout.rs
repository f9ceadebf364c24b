//! Counts each pharmacy's lookup misses (a wrong exchange number or patient) and locks a pharmacy
//! out for a while after too many in a window: exchange numbers have only 10^6 values, so
//! guessing must be throttled.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, SystemTime},
};

use crate::domain::ids::InstitutionCode;

/// Lockout policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Misses allowed in `window` before the lockout.
    pub max_misses: usize,
    pub window: Duration,
    /// How long a locked-out pharmacy is refused.
    pub lockout: Duration,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            max_misses: 10,
            window: Duration::from_secs(10 * 60),
            lockout: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Default)]
struct Misses {
    recent: VecDeque<SystemTime>,
    locked_until: Option<SystemTime>,
}

/// The miss counters. In memory: a restart forgives, which errs towards availability; every miss
/// and every refusal is in the audit log.
pub struct Lockout {
    policy: LockoutPolicy,
    misses: Mutex<HashMap<InstitutionCode, Misses>>,
}

impl Lockout {
    pub fn new(policy: LockoutPolicy) -> Self {
        Lockout {
            policy,
            misses: Mutex::new(HashMap::new()),
        }
    }

    /// True if the pharmacy is locked out at `now`.
    pub fn is_locked(&self, pharmacy: &InstitutionCode, now: SystemTime) -> bool {
        let misses = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        misses
            .get(pharmacy)
            .and_then(|m| m.locked_until)
            .is_some_and(|until| now < until)
    }

    /// Counts a miss; returns true if it locks the pharmacy out.
    pub fn record_miss(&self, pharmacy: &InstitutionCode, now: SystemTime) -> bool {
        let mut all = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        let m = all.entry(pharmacy.clone()).or_default();
        let horizon = now
            .checked_sub(self.policy.window)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        while m.recent.front().is_some_and(|t| *t < horizon) {
            m.recent.pop_front();
        }
        m.recent.push_back(now);
        if m.recent.len() >= self.policy.max_misses {
            m.recent.clear();
            m.locked_until = Some(now + self.policy.lockout);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_max_misses_in_the_window_then_forgives() {
        let lockout = Lockout::new(LockoutPolicy {
            max_misses: 3,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(300),
        });
        let p: InstitutionCode = "1340000001".parse().unwrap();
        let other: InstitutionCode = "1340000002".parse().unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(!lockout.record_miss(&p, t0));
        // a miss outside the window does not count with later ones
        assert!(!lockout.record_miss(&p, t0 + Duration::from_secs(61)));
        assert!(!lockout.record_miss(&p, t0 + Duration::from_secs(62)));
        assert!(lockout.record_miss(&p, t0 + Duration::from_secs(63)));
        assert!(lockout.is_locked(&p, t0 + Duration::from_secs(64)));
        assert!(!lockout.is_locked(&other, t0 + Duration::from_secs(64)));
        assert!(!lockout.is_locked(&p, t0 + Duration::from_secs(63 + 300)));
    }
}
