//! The prescription lifecycle: REGISTERED → ACCEPTED (by one pharmacy) → DISPENSED, with
//! CANCELLED (only before acceptance), EXPIRED (an unaccepted prescription past its last usable
//! Japan date) and the return of an accepted prescription (受付取消); partial dispensing (分割調剤:
//! up to 3 records at the accepting pharmacy, DISPENSED when the lines are complete or a record is
//! final) and refills (リフィル: after each use but the last, AWAITING_REFILL with a window of
//! ±7 days around the planned date, then EXPIRED past it). Illegal transitions are errors, never
//! silent no-ops; a repeat of the transition that produced the current state by the same party is
//! `Unchanged`, so that retried calls get the current outcome.
//! Pure: `today` comes in as a parameter.

use super::{
    ids::InstitutionCode,
    rx::{FieldViolation, PrescriptionFacts, longest_days},
    time::JapanDate,
};

/// Where a prescription is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Registered,
    Accepted {
        pharmacy: InstitutionCode,
    },
    Dispensed {
        pharmacy: InstitutionCode,
    },
    Cancelled,
    Expired,
    /// A refill between uses: the next use may be accepted within the window.
    AwaitingRefill,
}

/// Most dispensing records a prescription takes: 3 parts, or 3 uses of a refill.
pub const MAX_RECORDS: u32 = 3;

/// Days either side of a refill's planned date within which the next use may be accepted.
pub const REFILL_TOLERANCE_DAYS: i32 = 7;

/// When the next use of a refill may be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefillWindow {
    /// The previous use's dispensing date + the longest days supplied among its days-based lines.
    pub planned: JapanDate,
    pub from: JapanDate,
    pub until: JapanDate,
}

impl RefillWindow {
    pub fn around(planned: JapanDate) -> Self {
        RefillWindow {
            planned,
            from: planned.add_days(-REFILL_TOLERANCE_DAYS),
            until: planned.add_days(REFILL_TOLERANCE_DAYS),
        }
    }
}

impl State {
    /// Active prescriptions hold their exchange number and can be looked up.
    pub fn is_active(&self) -> bool {
        matches!(
            self,
            State::Registered | State::Accepted { .. } | State::AwaitingRefill
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            State::Registered => "REGISTERED",
            State::Accepted { .. } => "ACCEPTED",
            State::Dispensed { .. } => "DISPENSED",
            State::Cancelled => "CANCELLED",
            State::Expired => "EXPIRED",
            State::AwaitingRefill => "AWAITING_REFILL",
        }
    }
}

/// Why a transition is refused. None of these names another institution.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    #[error("the prescription has been accepted by a pharmacy")]
    AtAPharmacy,
    #[error("the prescription is with another pharmacy")]
    WithAnotherPharmacy,
    #[error("the prescription has not been accepted by this pharmacy")]
    NotAcceptedByCaller,
    #[error("the prescription has been dispensed")]
    Dispensed,
    #[error("the prescription has been cancelled")]
    Cancelled,
    #[error("the prescription has expired")]
    Expired,
    #[error("a dispensing record has been registered: the prescription can no longer be returned")]
    PartRecorded,
    #[error("a use of this refill prescription has been dispensed: it can no longer be cancelled")]
    UseDispensed,
    #[error("the next use of this refill prescription may be accepted from {0}")]
    TooEarly(JapanDate),
    #[error("record number {got} is out of order: the next record is number {expected}")]
    RecordOutOfOrder { got: u32, expected: u32 },
    #[error("at most 3 dispensing records (parts or refill uses) per prescription")]
    TooManyRecords,
    #[error("a use of a refill prescription is dispensed whole: partial dispensing is refused")]
    PartialRefill,
}

/// The outcome of an allowed transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The state changes to this.
    To(State),
    /// A dispensing record is added; the state becomes this (it may stay ACCEPTED), with the
    /// window of the next refill use if there is one.
    Recorded {
        next: State,
        window: Option<RefillWindow>,
    },
    /// Already in the state this transition leads to, by the same party: nothing to write.
    Unchanged,
}

/// A dispensing record as the lifecycle judges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub record_number: u32,
    /// The record says it completes the prescription, or with it every line is complete.
    pub completes: bool,
    pub dispensing_date: JapanDate,
    /// The longest days supplied among the prescription's days-based lines (refills have one).
    pub longest_days: u32,
}

/// The last Japan date on which a prescription may be accepted: 4 days counting the issue date,
/// or through a later usable-until date (使用期限), inclusive.
pub fn usable_through(issue_date: JapanDate, usable_until: Option<JapanDate>) -> JapanDate {
    let four_days = issue_date.add_days(3);
    usable_until.map_or(four_days, |until| until.max(four_days))
}

/// Whether a prescription with `facts` may be registered on `today`, the first transition of
/// its lifecycle: issued on `today` (a day of tolerance either side, for clocks around
/// midnight), usable until no earlier than its issue date and at most `max_usable_days` after
/// it, and, for a refill, with a days-based line (its uses are planned by the longest).
pub fn registrable(
    facts: &PrescriptionFacts,
    today: JapanDate,
    max_usable_days: u32,
) -> Result<(), FieldViolation> {
    if facts.issue_date.days_until(today).abs() > 1 {
        return Err(FieldViolation::new(
            "issue_date",
            "must be the Japan date of receipt (one day of tolerance)",
        ));
    }
    if let Some(until) = facts.usable_until
        && (until < facts.issue_date || facts.issue_date.days_until(until) > max_usable_days as i32)
    {
        return Err(FieldViolation::new(
            "usable_until",
            "must lie between the issue date and the configured maximum",
        ));
    }
    if facts.refill_count > 1 && longest_days(&facts.lines).is_none() {
        return Err(FieldViolation::new(
            "refill_count",
            "a refill prescription needs a days-based line (its uses are planned by it)",
        ));
    }
    Ok(())
}

/// A prescription's lifecycle facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    pub state: State,
    pub usable_through: JapanDate,
    /// The pharmacy that last returned it, so that a repeated return is recognised.
    pub returned_by: Option<InstitutionCode>,
    /// The total number of uses: 1 for an ordinary prescription, 2 or 3 for a refill.
    pub uses: u32,
    /// Dispensing records registered: the parts of an ordinary prescription, or the uses of a
    /// refill dispensed so far.
    pub records: u32,
    /// The window of a refill's next use, once a use has been dispensed.
    pub refill_window: Option<RefillWindow>,
}

impl Lifecycle {
    pub fn new(usable_through: JapanDate, uses: u32) -> Self {
        Lifecycle {
            state: State::Registered,
            usable_through,
            returned_by: None,
            uses,
            records: 0,
            refill_window: None,
        }
    }

    fn is_refill(&self) -> bool {
        self.uses > 1
    }

    /// The state as of `today`: an unaccepted prescription past its last usable date, or a
    /// refill past its next use's window, is expired, whether or not the sweep has written that
    /// down yet. An accepted one never expires silently.
    pub fn state_on(&self, today: JapanDate) -> State {
        match self.state {
            State::Registered if today > self.usable_through => State::Expired,
            State::AwaitingRefill if self.refill_window.is_some_and(|w| today > w.until) => {
                State::Expired
            }
            ref s => s.clone(),
        }
    }

    fn refuse_inactive(state: &State) -> LifecycleError {
        match state {
            State::Dispensed { .. } => LifecycleError::Dispensed,
            State::Cancelled => LifecycleError::Cancelled,
            _ => LifecycleError::Expired,
        }
    }

    /// A pharmacy receives (accepts) it: the lock.
    pub fn accept(
        &self,
        pharmacy: &InstitutionCode,
        today: JapanDate,
    ) -> Result<Transition, LifecycleError> {
        let accepted = Transition::To(State::Accepted {
            pharmacy: pharmacy.clone(),
        });
        match self.state_on(today) {
            State::Registered => Ok(accepted),
            State::AwaitingRefill => match self.refill_window {
                Some(w) if today < w.from => Err(LifecycleError::TooEarly(w.from)),
                _ => Ok(accepted),
            },
            State::Accepted { pharmacy: holder } if holder == *pharmacy => {
                Ok(Transition::Unchanged)
            }
            State::Accepted { .. } => Err(LifecycleError::WithAnotherPharmacy),
            other => Err(Self::refuse_inactive(&other)),
        }
    }

    /// Where a prescription waits when no pharmacy holds it.
    fn unheld(&self) -> State {
        if self.refill_window.is_some() {
            State::AwaitingRefill
        } else {
            State::Registered
        }
    }

    /// The accepting pharmacy hands it back so that another may take it.
    pub fn give_back(
        &self,
        pharmacy: &InstitutionCode,
        today: JapanDate,
    ) -> Result<Transition, LifecycleError> {
        match self.state_on(today) {
            State::Accepted { pharmacy: holder } if holder == *pharmacy => {
                if !self.is_refill() && self.records > 0 {
                    return Err(LifecycleError::PartRecorded);
                }
                Ok(Transition::To(self.unheld()))
            }
            State::Registered | State::AwaitingRefill
                if self.returned_by.as_ref() == Some(pharmacy) =>
            {
                Ok(Transition::Unchanged)
            }
            State::Registered | State::AwaitingRefill | State::Accepted { .. } => {
                Err(LifecycleError::NotAcceptedByCaller)
            }
            other => Err(Self::refuse_inactive(&other)),
        }
    }

    /// The prescriber cancels it, only before acceptance.
    pub fn cancel(&self, today: JapanDate) -> Result<Transition, LifecycleError> {
        match self.state_on(today) {
            State::Registered => Ok(Transition::To(State::Cancelled)),
            State::Cancelled => Ok(Transition::Unchanged),
            State::Accepted { .. } if self.records == 0 => Err(LifecycleError::AtAPharmacy),
            State::Accepted { .. } | State::AwaitingRefill => Err(LifecycleError::UseDispensed),
            other => Err(Self::refuse_inactive(&other)),
        }
    }

    /// The accepting pharmacy registers a dispensing record: a part of an ordinary prescription
    /// (DISPENSED once it completes the prescription, else still ACCEPTED) or a whole use of a
    /// refill (AWAITING_REFILL until the last use, then DISPENSED).
    pub fn dispense(
        &self,
        pharmacy: &InstitutionCode,
        today: JapanDate,
        part: Part,
    ) -> Result<Transition, LifecycleError> {
        let holder = match self.state_on(today) {
            State::Accepted { pharmacy: holder } if holder == *pharmacy => holder,
            State::Registered | State::AwaitingRefill | State::Accepted { .. } => {
                return Err(LifecycleError::NotAcceptedByCaller);
            }
            other => return Err(Self::refuse_inactive(&other)),
        };
        let expected = self.records + 1;
        if expected > MAX_RECORDS {
            return Err(LifecycleError::TooManyRecords);
        }
        if part.record_number != expected {
            return Err(LifecycleError::RecordOutOfOrder {
                got: part.record_number,
                expected,
            });
        }
        let dispensed = State::Dispensed { pharmacy: holder };
        if !self.is_refill() {
            let next = if part.completes {
                dispensed
            } else {
                self.state.clone()
            };
            return Ok(Transition::Recorded { next, window: None });
        }
        if !part.completes {
            return Err(LifecycleError::PartialRefill);
        }
        if expected < self.uses {
            let planned = part
                .dispensing_date
                .add_days(i32::try_from(part.longest_days).unwrap_or(i32::MAX / 4));
            Ok(Transition::Recorded {
                next: State::AwaitingRefill,
                window: Some(RefillWindow::around(planned)),
            })
        } else {
            Ok(Transition::Recorded {
                next: dispensed,
                window: None,
            })
        }
    }

    /// Applies an allowed transition, remembering who returned it.
    pub fn apply(&mut self, transition: Transition) {
        let next = match transition {
            Transition::Unchanged => return,
            Transition::To(next) => next,
            Transition::Recorded { next, window } => {
                self.records += 1;
                if window.is_some() {
                    self.refill_window = window;
                }
                next
            }
        };
        self.returned_by = match (&self.state, &next) {
            (State::Accepted { pharmacy }, State::Registered | State::AwaitingRefill) => {
                Some(pharmacy.clone())
            }
            _ => None,
        };
        self.state = next;
    }

    /// For the expiry sweep: the transition to EXPIRED if it is due.
    pub fn expire(&self, today: JapanDate) -> Option<Transition> {
        (matches!(self.state, State::Registered | State::AwaitingRefill)
            && self.state_on(today) == State::Expired)
            .then_some(Transition::To(State::Expired))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> InstitutionCode {
        s.parse().unwrap()
    }

    fn day(s: &str) -> JapanDate {
        s.parse().unwrap()
    }

    fn whole(record_number: u32, date: JapanDate) -> Part {
        Part {
            record_number,
            completes: true,
            dispensing_date: date,
            longest_days: 14,
        }
    }

    fn part(record_number: u32, date: JapanDate) -> Part {
        Part {
            completes: false,
            ..whole(record_number, date)
        }
    }

    #[test]
    fn three_parts_then_no_fourth_and_no_return_after_a_part() {
        let a = code("1340000001");
        let today = day("2026-11-25");
        let mut life = Lifecycle::new(day("2026-11-28"), 1);
        life.apply(life.accept(&a, today).unwrap());
        assert_eq!(
            life.dispense(&a, today, part(2, today)),
            Err(LifecycleError::RecordOutOfOrder {
                got: 2,
                expected: 1
            })
        );
        life.apply(life.dispense(&a, today, part(1, today)).unwrap());
        assert_eq!(
            life.state,
            State::Accepted {
                pharmacy: a.clone()
            }
        );
        assert_eq!(life.give_back(&a, today), Err(LifecycleError::PartRecorded));
        assert_eq!(life.cancel(today), Err(LifecycleError::UseDispensed));
        life.apply(life.dispense(&a, today, part(2, today)).unwrap());
        life.apply(life.dispense(&a, today, part(3, today)).unwrap());
        assert_eq!(life.records, 3);
        assert_eq!(
            life.dispense(&a, today, whole(4, today)),
            Err(LifecycleError::TooManyRecords)
        );
        // a final part completes it
        let mut life = Lifecycle::new(day("2026-11-28"), 1);
        life.apply(life.accept(&a, today).unwrap());
        life.apply(life.dispense(&a, today, part(1, today)).unwrap());
        life.apply(life.dispense(&a, today, whole(2, today)).unwrap());
        assert_eq!(life.state, State::Dispensed { pharmacy: a });
    }

    #[test]
    fn refill_uses_wait_in_their_window_then_expire() {
        let (a, b) = (code("1340000001"), code("1340000002"));
        let today = day("2026-11-25");
        let mut life = Lifecycle::new(day("2026-11-28"), 3);
        life.apply(life.accept(&a, today).unwrap());
        assert_eq!(
            life.dispense(&a, today, part(1, today)),
            Err(LifecycleError::PartialRefill)
        );
        life.apply(life.dispense(&a, today, whole(1, today)).unwrap());
        assert_eq!(life.state, State::AwaitingRefill);
        let w = life.refill_window.unwrap();
        assert_eq!(
            (w.planned, w.from, w.until),
            (day("2026-12-09"), day("2026-12-02"), day("2026-12-16"))
        );
        assert_eq!(life.cancel(today), Err(LifecycleError::UseDispensed));
        // the 4-day rule no longer applies; the window does
        assert_eq!(life.state_on(day("2026-12-01")), State::AwaitingRefill);
        assert_eq!(
            life.accept(&b, day("2026-12-01")),
            Err(LifecycleError::TooEarly(day("2026-12-02")))
        );
        assert_eq!(life.expire(day("2026-12-16")), None);
        assert_eq!(life.state_on(day("2026-12-17")), State::Expired);
        assert_eq!(
            life.expire(day("2026-12-17")),
            Some(Transition::To(State::Expired))
        );
        // another pharmacy takes the second use, may return it, then the third use ends it
        life.apply(life.accept(&b, day("2026-12-02")).unwrap());
        life.apply(life.give_back(&b, day("2026-12-02")).unwrap());
        assert_eq!(life.state, State::AwaitingRefill);
        life.apply(life.accept(&b, day("2026-12-03")).unwrap());
        life.apply(
            life.dispense(&b, day("2026-12-03"), whole(2, day("2026-12-03")))
                .unwrap(),
        );
        assert_eq!(life.refill_window.unwrap().planned, day("2026-12-17"));
        life.apply(life.accept(&a, day("2026-12-17")).unwrap());
        life.apply(
            life.dispense(&a, day("2026-12-17"), whole(3, day("2026-12-17")))
                .unwrap(),
        );
        assert_eq!(
            life.state,
            State::Dispensed {
                pharmacy: a.clone()
            }
        );
        assert_eq!(
            life.accept(&b, day("2026-12-18")),
            Err(LifecycleError::Dispensed)
        );
    }

    #[test]
    fn usable_for_four_days_counting_the_issue_date() {
        let issue = day("2026-11-25");
        assert_eq!(usable_through(issue, None), day("2026-11-28"));
        assert_eq!(
            usable_through(issue, Some(day("2026-11-26"))),
            day("2026-11-28")
        );
        assert_eq!(
            usable_through(issue, Some(day("2026-12-05"))),
            day("2026-12-05")
        );
        let life = Lifecycle::new(usable_through(issue, None), 1);
        assert_eq!(life.state_on(day("2026-11-28")), State::Registered);
        assert_eq!(life.state_on(day("2026-11-29")), State::Expired);
        assert_eq!(life.expire(day("2026-11-28")), None);
        assert_eq!(
            life.expire(day("2026-11-29")),
            Some(Transition::To(State::Expired))
        );
    }

    #[test]
    fn the_whole_way_and_the_refusals() {
        let (a, b) = (code("1340000001"), code("1340000002"));
        let today = day("2026-11-25");
        let mut life = Lifecycle::new(day("2026-11-28"), 1);
        life.apply(life.accept(&a, today).unwrap());
        assert_eq!(
            life.state,
            State::Accepted {
                pharmacy: a.clone()
            }
        );
        assert_eq!(life.accept(&a, today), Ok(Transition::Unchanged));
        assert_eq!(
            life.accept(&b, today),
            Err(LifecycleError::WithAnotherPharmacy)
        );
        assert_eq!(life.cancel(today), Err(LifecycleError::AtAPharmacy));
        assert_eq!(
            life.dispense(&b, today, whole(1, today)),
            Err(LifecycleError::NotAcceptedByCaller)
        );
        // an accepted prescription does not expire
        assert_eq!(life.state_on(day("2027-01-01")), life.state);
        life.apply(life.dispense(&a, today, whole(1, today)).unwrap());
        assert_eq!(
            life.state,
            State::Dispensed {
                pharmacy: a.clone()
            }
        );
        assert_eq!(life.cancel(today), Err(LifecycleError::Dispensed));
        assert_eq!(life.accept(&b, today), Err(LifecycleError::Dispensed));
    }

    #[test]
    fn return_then_another_pharmacy() {
        let (a, b) = (code("1340000001"), code("1340000002"));
        let today = day("2026-11-25");
        let mut life = Lifecycle::new(day("2026-11-28"), 1);
        assert_eq!(
            life.give_back(&a, today),
            Err(LifecycleError::NotAcceptedByCaller)
        );
        life.apply(life.accept(&a, today).unwrap());
        life.apply(life.give_back(&a, today).unwrap());
        assert_eq!(life.state, State::Registered);
        assert_eq!(life.give_back(&a, today), Ok(Transition::Unchanged));
        assert_eq!(
            life.give_back(&b, today),
            Err(LifecycleError::NotAcceptedByCaller)
        );
        life.apply(life.accept(&b, today).unwrap());
        assert_eq!(life.state, State::Accepted { pharmacy: b });
        assert_eq!(life.returned_by, None);
    }

    #[test]
    fn cancel_only_before_acceptance_and_idempotently() {
        let today = day("2026-11-25");
        let mut life = Lifecycle::new(day("2026-11-28"), 1);
        life.apply(life.cancel(today).unwrap());
        assert_eq!(life.state, State::Cancelled);
        assert_eq!(life.cancel(today), Ok(Transition::Unchanged));
        assert_eq!(
            life.accept(&code("1340000001"), today),
            Err(LifecycleError::Cancelled)
        );
        let expired = Lifecycle::new(day("2026-11-20"), 1);
        assert_eq!(expired.cancel(today), Err(LifecycleError::Expired));
        assert_eq!(
            expired.accept(&code("1340000001"), today),
            Err(LifecycleError::Expired)
        );
    }
}
