//! Whether the wall clock may be believed for the expiry sweep: the one use case that makes a
//! reading of it permanent (EXPIRED is written for good, where reads only compute expiry). The
//! wall clock is held against a clock that never steps: how far the wall clock moved ahead of it
//! since the last reading believed is a step. A forward step beyond the tolerance holds the sweep
//! until the wall clock comes back or an operator confirms it; a backward step only makes expiry
//! come later, so the watch follows it. Pure arithmetic on readings handed in: no clock is read
//! here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The two clocks read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reading {
    /// The wall clock, in Unix milliseconds (before 1970: negative).
    pub(crate) wall_ms: i64,
    /// The clock that never steps, from its own origin.
    pub(crate) steady: Duration,
}

impl Reading {
    pub(crate) fn new(wall: SystemTime, steady: Duration) -> Self {
        let wall_ms = match wall.duration_since(UNIX_EPOCH) {
            Ok(after) => millis(after),
            Err(before) => -millis(before.duration()),
        };
        Reading { wall_ms, steady }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What the sweep may do with the wall clock as read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The wall clock moved with the steady one (within the tolerance), moved back, or came back
    /// from a step: believe it.
    Believe,
    /// The wall clock is `step` ahead of where the steady clock says it should be.
    Hold { step: Duration },
}

/// The last reading believed, and how far the wall clock may run ahead of it.
#[derive(Debug)]
pub(crate) struct ClockWatch {
    baseline: Reading,
    tolerance: Duration,
}

impl ClockWatch {
    pub(crate) fn new(at: Reading, tolerance: Duration) -> Self {
        ClockWatch {
            baseline: at,
            tolerance,
        }
    }

    /// How far the wall clock ran ahead of the steady clock since the baseline, in
    /// milliseconds (negative: it fell behind, a backward step).
    fn drift_ms(&self, now: Reading) -> i64 {
        let wall = now.wall_ms.saturating_sub(self.baseline.wall_ms);
        let steady = millis(now.steady.saturating_sub(self.baseline.steady));
        wall.saturating_sub(steady)
    }

    /// The forward step `now` shows against the baseline (zero for none or a backward one).
    pub(crate) fn step(&self, now: Reading) -> Duration {
        Duration::from_millis(self.drift_ms(now).max(0).unsigned_abs())
    }

    /// Before a sweep: hold on a forward step beyond the tolerance (the baseline stays, so that
    /// the wall clock coming back is seen as such); otherwise believe `now` and take it as the
    /// baseline, which is how small drifts and backward steps are followed.
    pub(crate) fn look(&mut self, now: Reading) -> Verdict {
        let step = self.step(now);
        if step > self.tolerance {
            return Verdict::Hold { step };
        }
        self.baseline = now;
        Verdict::Believe
    }

    /// An operator says the wall clock is right: `now` becomes the baseline whatever the step;
    /// returns the step so confirmed.
    pub(crate) fn confirm(&mut self, now: Reading) -> Duration {
        let step = self.step(now);
        self.baseline = now;
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const DAY_MS: i64 = 86_400_000;

    fn at(wall_ms: i64, steady_secs: u64) -> Reading {
        Reading {
            wall_ms,
            steady: Duration::from_secs(steady_secs),
        }
    }

    fn watch() -> ClockWatch {
        ClockWatch::new(at(1_000_000, 100), HOUR)
    }

    #[test]
    fn time_passing_on_both_clocks_is_believed_and_followed() {
        let mut w = watch();
        assert_eq!(w.look(at(1_000_000 + 60_000, 160)), Verdict::Believe);
        // A day later, by both clocks, measured from the new baseline.
        assert_eq!(
            w.look(at(1_060_000 + DAY_MS, 160 + 86_400)),
            Verdict::Believe
        );
        assert_eq!(w.step(at(1_060_000 + DAY_MS, 160 + 86_400)), Duration::ZERO);
    }

    #[test]
    fn a_forward_step_beyond_the_tolerance_holds_and_names_its_size() {
        let mut w = watch();
        let stepped = at(1_000_000 + 4 * DAY_MS + 5_000, 105);
        let step = Duration::from_secs(4 * 86_400);
        assert_eq!(w.look(stepped), Verdict::Hold { step });
        // Still held a minute later: the baseline did not move to the stepped reading.
        let later = at(1_000_000 + 4 * DAY_MS + 65_000, 165);
        assert_eq!(w.look(later), Verdict::Hold { step });
    }

    #[test]
    fn a_step_within_the_tolerance_is_believed_and_one_just_beyond_is_not() {
        let within = at(1_000_000 + 3_600_000, 100);
        assert_eq!(watch().look(within), Verdict::Believe);
        let beyond = at(1_000_000 + 3_600_001, 100);
        let step = HOUR + Duration::from_millis(1);
        assert_eq!(watch().look(beyond), Verdict::Hold { step });
    }

    #[test]
    fn the_wall_clock_coming_back_lifts_the_hold() {
        let mut w = watch();
        assert!(matches!(
            w.look(at(1_000_000 + 4 * DAY_MS, 110)),
            Verdict::Hold { .. }
        ));
        assert_eq!(w.look(at(1_000_000 + 20_000, 120)), Verdict::Believe);
    }

    #[test]
    fn a_backward_step_is_believed_and_becomes_the_baseline() {
        let mut w = watch();
        let back = at(1_000_000 - 4 * DAY_MS, 110);
        assert_eq!(w.look(back), Verdict::Believe);
        assert_eq!(w.step(back), Duration::ZERO);
        // Going forward from there by the steady clock's measure is time passing, not a step;
        // going back to where the wall clock was is a step.
        assert_eq!(
            w.look(at(1_000_000 - 4 * DAY_MS + 60_000, 170)),
            Verdict::Believe
        );
        let forward_again = at(1_000_000 + 60_000, 170);
        let step = Duration::from_secs(4 * 86_400);
        assert_eq!(w.look(forward_again), Verdict::Hold { step });
    }

    #[test]
    fn a_confirmed_step_becomes_the_baseline() {
        let mut w = watch();
        let stepped = at(1_000_000 + 4 * DAY_MS, 100);
        assert!(matches!(w.look(stepped), Verdict::Hold { .. }));
        assert_eq!(w.confirm(stepped), Duration::from_secs(4 * 86_400));
        assert_eq!(
            w.look(at(1_000_000 + 4 * DAY_MS + 1_000, 101)),
            Verdict::Believe
        );
        // Nothing to confirm: a step of zero.
        assert_eq!(
            w.confirm(at(1_000_000 + 4 * DAY_MS + 2_000, 102)),
            Duration::ZERO
        );
    }

    #[test]
    fn readings_before_1970_and_at_the_extremes_do_not_overflow() {
        let before = Reading::new(UNIX_EPOCH - Duration::from_secs(1), Duration::ZERO);
        assert_eq!(before.wall_ms, -1_000);
        let mut w = ClockWatch::new(at(i64::MIN, u64::MAX), HOUR);
        assert_eq!(
            w.look(at(i64::MAX, 0)),
            Verdict::Hold {
                step: Duration::from_millis(i64::MAX.unsigned_abs())
            }
        );
        assert_eq!(w.look(at(i64::MIN, 0)), Verdict::Believe);
    }
}
