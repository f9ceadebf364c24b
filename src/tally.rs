//! What a client's requests answered at the edge add to the audit trail, bounded: in each second
//! the first few are recorded one by one, the rest are tallied by (action, outcome) and written
//! as one record of counts. One tally per client certificate, however many connections it
//! opens. Nothing is dropped: every tallied request stays in the tally until it is taken. Must
//! not depend on the service layer or the store.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write its own record.
    Record,
    /// Counted in the tally; `first`: the tally was empty, so the caller must see that it is
    /// taken (at the end of the second) and written.
    Counted { first: bool },
}

/// The tallied requests of one stretch of time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    /// When the first and the last tallied request came (Unix milliseconds).
    pub from_ms: i64,
    pub until_ms: i64,
    /// By (action, outcome).
    pub counts: BTreeMap<(String, String), u64>,
}

/// One client's tally.
#[derive(Debug, Default)]
pub struct Tally {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The second (of a monotonic clock) the recorded count is of.
    second: u64,
    recorded: u32,
    pending: Option<Counts>,
}

impl Tally {
    /// Decides on a request answered in `second` (of a monotonic clock), at `now_ms` (the time
    /// its record shows), with (`action`, `outcome`): its own record while fewer than
    /// `per_second` have had one in its second, else a place in the tally.
    pub fn admit(
        &self,
        (second, now_ms): (u64, i64),
        per_second: u32,
        action: &str,
        outcome: &str,
    ) -> Admit {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if second != state.second {
            state.second = second;
            state.recorded = 0;
        }
        if state.recorded < per_second {
            state.recorded += 1;
            return Admit::Record;
        }
        let first = state.pending.is_none();
        let pending = state.pending.get_or_insert_with(|| Counts {
            from_ms: now_ms,
            until_ms: now_ms,
            counts: BTreeMap::new(),
        });
        pending.until_ms = pending.until_ms.max(now_ms);
        *pending
            .counts
            .entry((action.to_owned(), outcome.to_owned()))
            .or_default() += 1;
        Admit::Counted { first }
    }

    /// Empties the tally: what it held, if anything.
    pub fn take(&self) -> Option<Counts> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .take()
    }

    /// Whether the tally holds nothing and has recorded nothing since `second`.
    fn idle_since(&self, second: u64) -> bool {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.pending.is_none() && state.second < second
    }
}

/// The tallies of every client, by the SHA-256 of its certificate.
#[derive(Debug, Default)]
pub struct Tallies {
    by_client: Mutex<HashMap<[u8; 32], Arc<Tally>>>,
}

/// Above this many tallies, the idle ones are forgotten when a new one is made.
const KEPT: usize = 1024;

impl Tallies {
    /// The tally of the client with `certificate`, at `second`; forgets, when there are many,
    /// those idle for a second or more (a forgotten client starts again from nothing, which is
    /// what it would have in its next second anyway).
    pub fn of(&self, certificate: [u8; 32], second: u64) -> Arc<Tally> {
        let mut by_client = self.by_client.lock().unwrap_or_else(|e| e.into_inner());
        if by_client.len() >= KEPT && !by_client.contains_key(&certificate) {
            by_client.retain(|_, tally| !tally.idle_since(second));
        }
        Arc::clone(by_client.entry(certificate).or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_a_second_are_recorded_and_the_rest_counted() {
        let tally = Tally::default();
        let admits: Vec<_> = (0..5)
            .map(|i| tally.admit((10, 10_000 + i), 2, "UnknownMethod", "UNIMPLEMENTED"))
            .collect();
        assert_eq!(
            admits,
            [
                Admit::Record,
                Admit::Record,
                Admit::Counted { first: true },
                Admit::Counted { first: false },
                Admit::Counted { first: false },
            ]
        );
        // A new second records again; its excess joins the tally not yet taken.
        assert_eq!(tally.admit((11, 11_000), 1, "a", "b"), Admit::Record);
        assert_eq!(
            tally.admit((11, 11_001), 1, "a", "b"),
            Admit::Counted { first: false }
        );
        let counts = tally.take().unwrap();
        assert_eq!((counts.from_ms, counts.until_ms), (10_002, 11_001));
        assert_eq!(
            counts.counts[&("UnknownMethod".into(), "UNIMPLEMENTED".into())],
            3
        );
        assert_eq!(counts.counts[&("a".into(), "b".into())], 1);
        assert_eq!(tally.take(), None, "taken once");
        assert_eq!(
            tally.admit((11, 11_002), 1, "a", "b"),
            Admit::Counted { first: true },
            "an emptied tally asks to be written again"
        );
    }

    #[test]
    fn a_client_keeps_its_tally_across_connections_and_idle_ones_are_forgotten() {
        let tallies = Tallies::default();
        let a = tallies.of([1; 32], 5);
        assert!(
            Arc::ptr_eq(&a, &tallies.of([1; 32], 5)),
            "one tally per client"
        );
        a.admit((5, 5_000), 1, "x", "y");
        a.admit((5, 5_001), 1, "x", "y");
        let client = |n: usize| {
            let mut key = [0; 32];
            key[..8].copy_from_slice(&(n as u64 + 100).to_be_bytes());
            key
        };
        for n in 0..KEPT {
            tallies.of(client(n), 0);
        }
        let held = || tallies.by_client.lock().unwrap().len();
        assert!(held() >= KEPT);
        tallies.of([9; 32], 7);
        assert_eq!(
            held(),
            2,
            "the idle ones forgotten, the one holding a count kept"
        );
        assert!(
            Arc::ptr_eq(&a, &tallies.of([1; 32], 7)),
            "its count is not lost"
        );
    }
}
