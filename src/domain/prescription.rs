//! The prescription lifecycle: REGISTERED → ACCEPTED (by one pharmacy) → DISPENSED, with
//! CANCELLED (only before acceptance), EXPIRED (an unaccepted prescription past its last usable
//! Japan date) and the return of an accepted prescription (受付取消). Illegal transitions are
//! errors, never silent no-ops; a repeat of the transition that produced the current state by
//! the same party is `Unchanged`, so that retried calls get the current outcome.
//! Pure: `today` comes in as a parameter.

use super::{ids::InstitutionCode, time::JapanDate};

/// Where a prescription is in its lifecycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Registered,
    Accepted { pharmacy: InstitutionCode },
    Dispensed { pharmacy: InstitutionCode },
    Cancelled,
    Expired,
}

impl State {
    /// Active prescriptions hold their exchange number and can be looked up.
    pub fn is_active(&self) -> bool {
        matches!(self, State::Registered | State::Accepted { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            State::Registered => "REGISTERED",
            State::Accepted { .. } => "ACCEPTED",
            State::Dispensed { .. } => "DISPENSED",
            State::Cancelled => "CANCELLED",
            State::Expired => "EXPIRED",
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
}

/// The outcome of an allowed transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The state changes to this.
    To(State),
    /// Already in the state this transition leads to, by the same party: nothing to write.
    Unchanged,
}

/// The last Japan date on which a prescription may be accepted: 4 days counting the issue date,
/// or through a later usable-until date (使用期限), inclusive.
pub fn usable_through(issue_date: JapanDate, usable_until: Option<JapanDate>) -> JapanDate {
    let four_days = issue_date.add_days(3);
    usable_until.map_or(four_days, |until| until.max(four_days))
}

/// A prescription's lifecycle facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifecycle {
    pub state: State,
    pub usable_through: JapanDate,
    /// The pharmacy that last returned it, so that a repeated return is recognised.
    pub returned_by: Option<InstitutionCode>,
}

impl Lifecycle {
    pub fn new(usable_through: JapanDate) -> Self {
        Lifecycle {
            state: State::Registered,
            usable_through,
            returned_by: None,
        }
    }

    /// The state as of `today`: an unaccepted prescription past its last usable date is
    /// expired, whether or not the sweep has written that down yet. An accepted one never
    /// expires silently.
    pub fn state_on(&self, today: JapanDate) -> State {
        match self.state {
            State::Registered if today > self.usable_through => State::Expired,
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
        match self.state_on(today) {
            State::Registered => Ok(Transition::To(State::Accepted {
                pharmacy: pharmacy.clone(),
            })),
            State::Accepted { pharmacy: holder } if holder == *pharmacy => {
                Ok(Transition::Unchanged)
            }
            State::Accepted { .. } => Err(LifecycleError::WithAnotherPharmacy),
            other => Err(Self::refuse_inactive(&other)),
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
                Ok(Transition::To(State::Registered))
            }
            State::Registered if self.returned_by.as_ref() == Some(pharmacy) => {
                Ok(Transition::Unchanged)
            }
            State::Registered | State::Accepted { .. } => Err(LifecycleError::NotAcceptedByCaller),
            other => Err(Self::refuse_inactive(&other)),
        }
    }

    /// The prescriber cancels it, only before acceptance.
    pub fn cancel(&self, today: JapanDate) -> Result<Transition, LifecycleError> {
        match self.state_on(today) {
            State::Registered => Ok(Transition::To(State::Cancelled)),
            State::Cancelled => Ok(Transition::Unchanged),
            State::Accepted { .. } => Err(LifecycleError::AtAPharmacy),
            other => Err(Self::refuse_inactive(&other)),
        }
    }

    /// The accepting pharmacy records the dispensing.
    pub fn dispense(
        &self,
        pharmacy: &InstitutionCode,
        today: JapanDate,
    ) -> Result<Transition, LifecycleError> {
        match self.state_on(today) {
            State::Accepted { pharmacy: holder } if holder == *pharmacy => {
                Ok(Transition::To(State::Dispensed { pharmacy: holder }))
            }
            State::Registered | State::Accepted { .. } => Err(LifecycleError::NotAcceptedByCaller),
            other => Err(Self::refuse_inactive(&other)),
        }
    }

    /// Applies an allowed transition, remembering who returned it.
    pub fn apply(&mut self, transition: Transition) {
        if let Transition::To(next) = transition {
            self.returned_by = match (&self.state, &next) {
                (State::Accepted { pharmacy }, State::Registered) => Some(pharmacy.clone()),
                _ => None,
            };
            self.state = next;
        }
    }

    /// For the expiry sweep: the transition to EXPIRED if it is due.
    pub fn expire(&self, today: JapanDate) -> Option<Transition> {
        (self.state == State::Registered && today > self.usable_through)
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
        let life = Lifecycle::new(usable_through(issue, None));
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
        let mut life = Lifecycle::new(day("2026-11-28"));
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
            life.dispense(&b, today),
            Err(LifecycleError::NotAcceptedByCaller)
        );
        // an accepted prescription does not expire
        assert_eq!(life.state_on(day("2027-01-01")), life.state);
        life.apply(life.dispense(&a, today).unwrap());
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
        let mut life = Lifecycle::new(day("2026-11-28"));
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
        let mut life = Lifecycle::new(day("2026-11-28"));
        life.apply(life.cancel(today).unwrap());
        assert_eq!(life.state, State::Cancelled);
        assert_eq!(life.cancel(today), Ok(Transition::Unchanged));
        assert_eq!(
            life.accept(&code("1340000001"), today),
            Err(LifecycleError::Cancelled)
        );
        let expired = Lifecycle::new(day("2026-11-20"));
        assert_eq!(expired.cancel(today), Err(LifecycleError::Expired));
        assert_eq!(
            expired.accept(&code("1340000001"), today),
            Err(LifecycleError::Expired)
        );
    }
}
