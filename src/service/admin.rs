//! The operator's and the gateway's own work: the expiry sweep, held while the wall clock stands
//! stepped forward (clock_watch.rs) and the operator's confirmation of the clock, and the report
//! of stuck prescriptions.

use std::{
    sync::{MutexGuard, PoisonError, atomic::Ordering},
    time::Duration,
};

use crate::{
    domain::{prescription::State, time::JapanDate},
    store::{self, Store, Table, Txn},
};

use super::{
    Action, Caller, Error, Gateway,
    clock_watch::{ClockWatch, Reading, Verdict},
    millis,
    schema::{accepted_range, expired_before, id_of_accepted, id_of_expiry, successor},
    stored::Stored,
};

/// An accepted prescription without a dispensing record for too long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    pub id: String,
    pub institution: String,
    pub number: String,
    pub pharmacy: String,
    pub accepted_at_ms: i64,
    pub last_record_at_ms: Option<i64>,
    pub records: u32,
}

/// One page of the stuck scan: the stuck prescriptions among at most `page` entries of the
/// accepted index from `start`, and the key to go on from (none at the end of the index).
pub(super) fn stuck_page(
    tx: &dyn Txn,
    start: &[u8],
    page: usize,
    horizon: i64,
) -> Result<(Vec<Stuck>, Option<Vec<u8>>), store::Error> {
    let rows = tx.scan_range(Table::Meta, start, &accepted_range().end, page)?;
    let next = (rows.len() == page)
        .then(|| rows.last().map(|(k, _)| successor(k)))
        .flatten();
    let mut stuck = Vec::new();
    for (k, _) in rows {
        let id = id_of_accepted(&k);
        let Some(stored) = Stored::load(tx, &id)? else {
            continue;
        };
        let r = stored.record;
        let (State::Accepted { pharmacy }, Some(accepted_at_ms)) =
            (stored.lifecycle.state, r.accepted_at_ms)
        else {
            continue;
        };
        if r.last_record_at_ms.unwrap_or(accepted_at_ms) < horizon {
            stuck.push(Stuck {
                id: r.id,
                institution: r.institution,
                number: r.number,
                pharmacy: pharmacy.to_string(),
                accepted_at_ms,
                last_record_at_ms: r.last_record_at_ms,
                records: r.records,
            });
        }
    }
    Ok((stuck, next))
}

/// What an expiry sweep did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// It ran and wrote EXPIRED on this many prescriptions.
    Swept(usize),
    /// It did not run: the wall clock stands this far ahead of the steady clock, beyond the
    /// tolerance, since the last sweep.
    Held { step: Duration },
}

/// The wall clock an operator confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockConfirmed {
    /// The wall clock as confirmed, in Unix milliseconds.
    pub wall_ms: i64,
    /// How far it stood ahead of the steady clock since the last sweep (zero: not at all).
    pub step: Duration,
}

impl Gateway {
    /// Writes EXPIRED on every registered prescription past its last usable date as of now, and
    /// says how many; unless the wall clock stepped forward beyond the tolerance since the last
    /// sweep, when it writes nothing and says how far (EXPIRED is for good: a wrong clock must
    /// not make it). Run periodically by the server.
    pub async fn sweep_expired(&self) -> Result<Sweep, Error> {
        let now = self.clock.now();
        // Bound first: the watch's lock must not be held across the sweep's await.
        let verdict = self
            .locked_clock_watch()
            .look(Reading::new(now, self.clock.steady()));
        match verdict {
            Verdict::Hold { step } => {
                self.show_clock_step(step);
                Ok(Sweep::Held { step })
            }
            Verdict::Believe => {
                self.show_clock_step(Duration::ZERO);
                self.expire(now).await.map(Sweep::Swept)
            }
        }
    }

    /// Writes EXPIRED on every registered prescription past its last usable date as of `now`;
    /// not at the data disk's floor, where nothing reaches the store (free_space.rs): until
    /// then the reads say EXPIRED by the date alone, and the events wait.
    async fn expire(&self, now: std::time::SystemTime) -> Result<usize, Error> {
        self.room.admit(false).map_err(|refused| refused.error)?;
        let (today, now_ms) = (JapanDate::of(now), millis(now));
        let pseudonyms = self.config.pseudonyms.clone();
        let outcome = self
            .store
            .transact(move |tx: &mut dyn Txn| -> Result<usize, store::Error> {
                // Keys sort by date: everything before today's key is past its last usable day.
                let past = expired_before(&today.to_string());
                let mut expired = 0;
                for (k, _) in tx.scan_range(Table::Meta, &past.start, &past.end, 10_000)? {
                    let id = id_of_expiry(&k);
                    let Some(stored) = Stored::load(tx, &id)? else {
                        tx.delete(Table::Meta, &k);
                        continue;
                    };
                    match stored.lifecycle.expire(today) {
                        // apply() drops the index entry of a prescription that stops being active
                        Some(t) => {
                            stored.apply(tx, t, today, now_ms, &pseudonyms)?;
                            expired += 1;
                        }
                        None if !stored.lifecycle.state.is_active() => tx.delete(Table::Meta, &k),
                        // accepted: it does not expire, but stays indexed in case it is returned
                        None => {}
                    }
                }
                Ok(expired)
            })
            .await
            .map_err(Error::from)?;
        self.committed();
        let swept = outcome.map_err(Error::from)?;
        // Only a sweep that ran counts: a sweep failing every time shows as none.
        self.metrics.expiry_sweeps.fetch_add(1, Ordering::Relaxed);
        Ok(swept)
    }

    /// The operator says the wall clock is right as it reads now: the expiry sweep takes it as
    /// its baseline, and a hold ends. Audited (action ConfirmClock, the step as the target).
    pub async fn confirm_clock(&self, caller: &Caller) -> Result<ClockConfirmed, Error> {
        let now = self.clock.now();
        let reading = Reading::new(now, self.clock.steady());
        let step = self.locked_clock_watch().step(reading);
        let mut draft = self.draft(caller, Action::ConfirmClock, now);
        draft.target = Some(format!("clock step {} s", step.as_secs()));
        self.run(draft, |_, _| Ok(())).await?;
        self.locked_clock_watch().confirm(reading);
        self.show_clock_step(Duration::ZERO);
        Ok(ClockConfirmed {
            wall_ms: reading.wall_ms,
            step,
        })
    }

    fn locked_clock_watch(&self) -> MutexGuard<'_, ClockWatch> {
        self.clock_watch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The metrics of the watch: the step the sweep is held on (zero: not held).
    fn show_clock_step(&self, step: Duration) {
        let held = u64::from(!step.is_zero());
        self.metrics
            .clock_step_secs
            .store(step.as_secs(), Ordering::Relaxed);
        self.metrics
            .expiry_sweep_held
            .store(held, Ordering::Relaxed);
    }

    /// The prescriptions ACCEPTED for longer than `after` without a dispensing record since the
    /// acceptance or the last part, oldest first. The index is read a page per transaction, so
    /// the store's writer serves other calls between pages however many are accepted.
    pub async fn stuck(&self, after: Duration) -> Result<Vec<Stuck>, Error> {
        const PAGE: usize = 1_000;
        let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
        let horizon = millis(self.clock.now()).saturating_sub(after_ms);
        let mut stuck = Vec::new();
        let mut from = accepted_range().start;
        loop {
            let start = from.clone();
            let (page, next) = self
                .store
                .transact(move |tx: &mut dyn Txn| stuck_page(tx, &start, PAGE, horizon))
                .await
                .map_err(Error::from)?
                .map_err(Error::from)?;
            stuck.extend(page);
            match next {
                Some(next) => from = next,
                None => break,
            }
        }
        stuck.sort_by_key(|s| s.last_record_at_ms.unwrap_or(s.accepted_at_ms));
        Ok(stuck)
    }

    /// How long until the next expiry sweep is worth running: at the next Japan midnight.
    pub fn until_next_day(&self) -> Duration {
        let now = self.clock.now();
        let next = JapanDate::of(now).add_days(1).start();
        next.duration_since(now).unwrap_or(Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::ids::InstitutionKind,
        service::{
            prescriptions::allocate_exchange_number,
            records::{PrescriptionRecord, StateV1, encode},
            schema::{accepted_key, exchange_key, expiry_key, prescription_key},
            testing::{self, MIB},
        },
        store::EmbeddedStore,
    };

    #[tokio::test]
    async fn the_stuck_scan_reads_the_accepted_index_a_page_at_a_time_to_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let pages = store
            .transact(|tx: &mut dyn Txn| {
                for id in ["a", "b", "c", "d", "e"] {
                    tx.put(Table::Meta, &accepted_key(id), b"");
                }
                // Neighbours of the index that a page must never read: a key its name starts
                // with ("accepte"), and the first key after it.
                let index = accepted_range();
                tx.put(Table::Meta, &index.start[..index.start.len() - 2], b"");
                tx.put(Table::Meta, &index.end, b"");
                let mut pages = Vec::new();
                let mut from = index.start.clone();
                loop {
                    let rows = tx.scan_range(Table::Meta, &from, &index.end, 10)?;
                    let (stuck, next) = stuck_page(tx, &from, 2, i64::MAX)?;
                    // No prescription behind the keys: nothing is stuck, every key is read once.
                    assert!(stuck.is_empty());
                    pages.push(rows.len().min(2));
                    match next {
                        Some(next) => from = next,
                        None => break,
                    }
                }
                Ok::<_, store::Error>(pages)
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(pages, [2, 2, 1]);
        store.close().unwrap();
    }

    /// A prescription past its last usable day frees its exchange number for the patient's next
    /// one before the sweep has written it EXPIRED; sweeping it afterwards must leave the index
    /// entry, which by then names the new holder.
    #[tokio::test]
    async fn sweeping_an_expired_holder_keeps_the_entry_of_its_numbers_new_holder() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, clock) = testing::gateway(dir.path());
        let old = testing::register(&gateway, "EXP-OLD", 1).await;
        // Past its last usable day, and no sweep yet: still REGISTERED in the store.
        clock.advance(Duration::from_secs(5 * 86_400));
        let today = clock.today();
        let (_, patient) = testing::patient(1);

        // The next prescription draws the old one's number, as registration allocates it.
        let holder = gateway.config.pseudonyms.in_keys(patient.canonical());
        let number = old.exchange_number;
        let new_id = gateway
            .store
            .transact(move |tx: &mut dyn Txn| {
                let number = allocate_exchange_number(tx, &holder, &[number], today)?;
                let mut new = Stored::load(tx, &old.id)?.expect("the old one").record;
                new.id = "0".repeat(32);
                new.usable_through = today.add_days(3).to_string();
                tx.put(
                    Table::ByExchange,
                    &exchange_key(&holder, number),
                    new.id.as_bytes(),
                );
                tx.put(Table::Meta, &expiry_key(&new.usable_through, &new.id), b"");
                tx.put(
                    Table::Prescriptions,
                    prescription_key(&new.id),
                    &encode(&PrescriptionRecord::V3(new.clone())),
                );
                Ok::<_, Error>(new.id)
            })
            .await
            .unwrap()
            .expect("the expired holder frees its number");

        assert_eq!(gateway.sweep_expired().await.unwrap(), Sweep::Swept(1));
        let pharmacy = testing::caller(InstitutionKind::Pharmacy);
        let found = gateway
            .lookup(&pharmacy, patient, old.exchange_number)
            .await
            .expect("the new holder is still found by the number");
        assert_eq!(found.id, new_id);
    }

    /// Below half the low-water mark nothing may reach the store, and the sweep's EXPIRED is no
    /// answer's need (a status read says EXPIRED past the last usable day, swept or not): its
    /// records and events must wait for room, not fill the engine's last of it.
    #[tokio::test]
    async fn at_the_disks_floor_the_sweep_writes_nothing_and_sweeps_with_room_again() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, clock) = testing::gateway(dir.path());
        let old = testing::register(&gateway, "EXP-FLOOR", 1).await;
        clock.advance(Duration::from_secs(5 * 86_400));
        gateway.room().observe(MIB, 10 * MIB);
        let floor = gateway.sweep_expired().await;
        assert!(matches!(floor, Err(Error::DiskLow { .. })), "{floor:?}");
        let id = old.id.clone();
        let stored = gateway
            .store
            .transact(move |tx: &mut dyn Txn| Stored::load(tx, &id))
            .await
            .unwrap()
            .unwrap()
            .expect("registered");
        assert_eq!(stored.record.state, StateV1::Registered, "not swept");

        gateway.room().observe(20 * MIB, 10 * MIB);
        assert_eq!(gateway.sweep_expired().await.unwrap(), Sweep::Swept(1));
    }
}
