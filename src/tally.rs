//! What a connection's requests answered at the edge add to the audit trail, bounded: in each
//! second the first few are recorded one by one, the rest are tallied by (action, outcome) and
//! written as one record of counts. Nothing is dropped: every tallied request stays in the tally
//! until it is taken. Must not depend on the service layer or the store.

use std::{collections::BTreeMap, sync::Mutex};

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

/// One connection's tally.
#[derive(Debug, Default)]
pub struct Tally {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The second (Unix seconds) the recorded count is of.
    second: i64,
    recorded: u32,
    pending: Option<Counts>,
}

impl Tally {
    /// Decides on a request answered at `now_ms` with (`action`, `outcome`): its own record while
    /// fewer than `per_second` have had one in its second, else a place in the tally.
    pub fn admit(&self, now_ms: i64, per_second: u32, action: &str, outcome: &str) -> Admit {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let second = now_ms.div_euclid(1000);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_a_second_are_recorded_and_the_rest_counted() {
        let tally = Tally::default();
        let admits: Vec<_> = (0..5)
            .map(|i| tally.admit(10_000 + i, 2, "UnknownMethod", "UNIMPLEMENTED"))
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
        assert_eq!(tally.admit(11_000, 1, "a", "b"), Admit::Record);
        assert_eq!(
            tally.admit(11_001, 1, "a", "b"),
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
            tally.admit(11_002, 1, "a", "b"),
            Admit::Counted { first: true },
            "an emptied tally asks to be written again"
        );
    }
}
