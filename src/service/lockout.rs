//! Counts events per key in a sliding window and locks the key out for a while after too many:
//! each pharmacy's lookup misses (a wrong exchange number or patient — exchange numbers have
//! only 10^6 values, so guessing must be throttled) and each (institution, patient) pair's
//! pre-issue checks (a check that could be run freely would be an oracle on someone's
//! medication).

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    sync::Mutex,
    time::{Duration, SystemTime},
};

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

impl Misses {
    /// True while the key is locked out or has events that still count.
    fn matters(&self, now: SystemTime, horizon: SystemTime) -> bool {
        self.locked_until.is_some_and(|until| now < until)
            || self.recent.back().is_some_and(|t| *t >= horizon)
    }
}

/// The counters, by key. In memory: a restart forgives, which errs towards availability; every
/// counted event and every refusal is in the audit log.
pub struct Lockout<K> {
    policy: LockoutPolicy,
    misses: Mutex<Counters<K>>,
}

struct Counters<K> {
    by_key: HashMap<K, Misses>,
    /// Forgotten keys are pruned when the map grows past this.
    prune_at: usize,
}

/// The fewest keys at which pruning starts.
const PRUNE_FLOOR: usize = 1024;

impl<K: Hash + Eq + Clone> Lockout<K> {
    pub fn new(policy: LockoutPolicy) -> Self {
        Lockout {
            policy,
            misses: Mutex::new(Counters {
                by_key: HashMap::new(),
                prune_at: PRUNE_FLOOR,
            }),
        }
    }

    /// True if the key is locked out at `now`.
    pub fn is_locked(&self, key: &K, now: SystemTime) -> bool {
        let counters = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        counters
            .by_key
            .get(key)
            .and_then(|m| m.locked_until)
            .is_some_and(|until| now < until)
    }

    /// Counts an event; returns true if it locks the key out.
    pub fn record_miss(&self, key: &K, now: SystemTime) -> bool {
        let mut counters = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        let horizon = now
            .checked_sub(self.policy.window)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        if counters.by_key.len() >= counters.prune_at {
            counters.by_key.retain(|_, m| m.matters(now, horizon));
            counters.prune_at = (counters.by_key.len() * 2).max(PRUNE_FLOOR);
        }
        let m = counters.by_key.entry(key.clone()).or_default();
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
    use crate::domain::ids::InstitutionCode;

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

    #[test]
    fn keys_that_no_longer_matter_are_forgotten_but_lockouts_are_kept() {
        let lockout = Lockout::new(LockoutPolicy {
            max_misses: 2,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(3600),
        });
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(!lockout.record_miss(&u32::MAX, t0));
        assert!(lockout.record_miss(&u32::MAX, t0));
        for k in 0..PRUNE_FLOOR as u32 - 1 {
            lockout.record_miss(&k, t0);
        }
        // a minute later every other key's one event is out of the window
        lockout.record_miss(&0, t0 + Duration::from_secs(120));
        let kept = lockout.misses.lock().unwrap().by_key.len();
        assert_eq!(kept, 2, "the locked key and the new event remain");
        assert!(lockout.is_locked(&u32::MAX, t0 + Duration::from_secs(120)));
    }
}
