//! The lanes of [`Txn::lane`](crate::store::Txn::lane): small numbers, each held by at most one
//! running function of the process, under which the service keeps a row only that function
//! writes (an audit chain's head).
//!
//! Holding a lane must mean more than "no one else writes its rows now": the holder must also
//! *see* the rows as the lane's last holder left them, or it would read an old head and write a
//! link that is already there. A run's snapshot is taken when it begins, and a function asks
//! for its lane only when it first needs it, later in the run; so a run may take a lane only if
//! its last holder let it go before the run began. Every release is stamped with a tick of a
//! clock of releases, every run notes the clock when it begins; a run takes the lowest free lane
//! released at or before its tick, or a new lane if there is none, never one released after it
//! began (whose holder may have committed after its snapshot). Lanes are taken lazily so that
//! functions that write no audit record (the event sequencer's, the reads) hold none: one call
//! at a time keeps to lane 0, the gateway's own chain. Once taken, a lane is held for all the
//! function's runs, each of which begins after it was taken.
//!
//! Each lane also remembers its rows ([`Txn::get_lane_row`](crate::store::Txn::get_lane_row))
//! as its last holder committed them, so that the next holder need not read them: a read takes a
//! SERIALIZABLE lock on the index page that holds the row, and every lane's head shares one
//! small table, so every other holder's write there would conflict with it. The memory is
//! written only after a COMMIT succeeded, and forgotten when a COMMIT's outcome is unknown.

use std::cell::{Cell, OnceCell};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::store::Table;

/// A lane's rows by table and key, as last committed (`None`: absent).
pub(super) type LaneRows = HashMap<(Table, Vec<u8>), Option<Vec<u8>>>;

/// The free lanes, each with the tick of its release, the lanes made so far, the clock of
/// releases, and what each lane remembers of its rows.
#[derive(Default)]
pub(super) struct Lanes {
    free: Vec<(u32, u64)>,
    made: u32,
    ticks: u64,
    rows: HashMap<u32, LaneRows>,
}

impl Lanes {
    /// The clock of releases now: what a run notes as it begins.
    fn now(lanes: &Mutex<Lanes>) -> u64 {
        lanes.lock().unwrap_or_else(PoisonError::into_inner).ticks
    }

    /// The lowest free lane released at or before `began`, or a new one.
    fn take(&mut self, began: u64) -> u32 {
        let fit = (self.free.iter().enumerate())
            .filter(|(_, (_, released))| *released <= began)
            .min_by_key(|(_, (lane, _))| *lane)
            .map(|(i, _)| i);
        match fit {
            Some(i) => self.free.swap_remove(i).0,
            None => {
                self.made += 1;
                self.made - 1
            }
        }
    }

    fn release(&mut self, lane: u32) {
        self.ticks += 1;
        self.free.push((lane, self.ticks));
    }
}

/// The lane of one function: taken at its first ask, held for all its runs, released when
/// dropped (after the last run has ended).
pub(super) struct LaneCell<'a> {
    lanes: &'a Mutex<Lanes>,
    held: OnceCell<u32>,
    /// The clock of releases when the current run began.
    began: Cell<u64>,
}

impl<'a> LaneCell<'a> {
    pub(super) fn new(lanes: &'a Mutex<Lanes>) -> Self {
        LaneCell {
            lanes,
            held: OnceCell::new(),
            began: Cell::new(0),
        }
    }

    /// Notes that a run begins now (before its BEGIN).
    pub(super) fn run_begins(&self) {
        self.began.set(Lanes::now(self.lanes));
    }

    pub(super) fn number(&self) -> u32 {
        *self.held.get_or_init(|| {
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            lanes.take(self.began.get())
        })
    }

    /// The row as the lane's last holder committed it, if the lane remembers it.
    pub(super) fn remembered(&self, table: Table, key: &[u8]) -> Option<Option<Vec<u8>>> {
        let lane = self.number();
        let lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
        lanes.rows.get(&lane)?.get(&(table, key.to_vec())).cloned()
    }

    /// Remembers `rows` as committed by this function (call once its COMMIT succeeded).
    pub(super) fn remember(&self, rows: LaneRows) {
        if let (Some(lane), false) = (self.held.get(), rows.is_empty()) {
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            lanes.rows.entry(*lane).or_default().extend(rows);
        }
    }

    /// Forgets what the lane remembers (a COMMIT whose outcome is unknown): its next holder reads.
    pub(super) fn forget(&self) {
        if let Some(lane) = self.held.get() {
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            lanes.rows.remove(lane);
        }
    }
}

impl Drop for LaneCell<'_> {
    fn drop(&mut self) {
        if let Some(lane) = self.held.take() {
            let mut lanes = self.lanes.lock().unwrap_or_else(PoisonError::into_inner);
            lanes.release(lane);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A function that begins, takes its lane, and holds it until dropped.
    fn running(lanes: &Mutex<Lanes>) -> LaneCell<'_> {
        let cell = LaneCell::new(lanes);
        cell.run_begins();
        cell
    }

    #[test]
    fn one_function_at_a_time_keeps_to_lane_zero() {
        let lanes = Mutex::new(Lanes::default());
        for _ in 0..3 {
            let f = running(&lanes);
            assert_eq!(f.number(), 0);
        }
    }

    #[test]
    fn functions_at_once_hold_different_lanes_and_an_unasking_one_holds_none() {
        let lanes = Mutex::new(Lanes::default());
        let (a, b, quiet) = (running(&lanes), running(&lanes), running(&lanes));
        assert_eq!((a.number(), b.number()), (0, 1));
        drop(quiet);
        let c = running(&lanes);
        assert_eq!(c.number(), 2);
    }

    #[test]
    fn a_lane_released_after_a_run_began_is_not_taken_by_that_run() {
        let lanes = Mutex::new(Lanes::default());
        let holder = running(&lanes);
        assert_eq!(holder.number(), 0);
        let late = running(&lanes);
        drop(holder);
        // Lane 0's holder may have committed after `late`'s snapshot: `late` gets a new lane.
        assert_eq!(late.number(), 1);
        drop(late);
        // A run that begins after both releases takes the lowest again.
        assert_eq!(running(&lanes).number(), 0);
    }

    #[test]
    fn a_lane_remembers_what_was_committed_and_forgets_an_unknown_outcome() {
        let lanes = Mutex::new(Lanes::default());
        let row = || (Table::AuditChain, b"head".to_vec());
        let f = running(&lanes);
        assert_eq!(f.remembered(row().0, &row().1), None);
        f.remember(LaneRows::from([(row(), Some(b"1".to_vec()))]));
        drop(f);
        let g = running(&lanes);
        assert_eq!(g.remembered(row().0, &row().1), Some(Some(b"1".to_vec())));
        g.forget();
        drop(g);
        let h = running(&lanes);
        assert_eq!(h.number(), 0);
        assert_eq!(h.remembered(row().0, &row().1), None);
        // Another lane remembers nothing of lane 0's rows.
        let other = running(&lanes);
        assert_eq!(other.number(), 1);
        h.remember(LaneRows::from([(row(), Some(b"2".to_vec()))]));
        assert_eq!(other.remembered(row().0, &row().1), None);
    }

    #[test]
    fn a_lane_is_kept_for_every_run_of_its_function() {
        let lanes = Mutex::new(Lanes::default());
        let f = running(&lanes);
        assert_eq!(f.number(), 0);
        f.run_begins();
        assert_eq!(f.number(), 0);
    }
}
