//! The exchange-number lockout. Exchange numbers have only 10^6 values, so wrong guesses are
//! counted — per pharmacy, and per patient across pharmacies — and a guess past a limit is
//! refused before it is evaluated. Checking and counting run inside the store transaction of
//! the lookup or receipt itself, so no concurrency lets a guess past a limit, and the counters
//! are in the store, so a restart forgives nothing. Knows no gRPC and no storage engine.
//!
//! Entries, all in [`Table::Lockouts`] (keyed as `schema/lockouts.rs` lays them out):
//! - by pharmacy code, a [`MissCounterRecord`]: the pharmacy's misses. Its lockout refuses the
//!   pharmacy every lookup and receipt.
//! - by patient pseudonym, a [`MissCounterRecord`]: the misses naming the patient, from any
//!   pharmacy. Its lockout refuses the patient only to the pharmacies that missed on them (since
//!   its window began): no pharmacy can lock a patient out of their medication for everyone.
//! - by pseudonym and pharmacy code, a [`MissMarkRecord`]: that a pharmacy missed on a patient.
//!
//! Every entry ends: a counter once its window and its lockout have passed (a touched counter
//! then starts over), a mark once no lockout it takes part in can still hold. [`prune_page`]
//! deletes ended entries a page per transaction.

use std::{fmt, sync::atomic::Ordering, time::Duration};

use crate::{
    domain::{hash::hex, ids::InstitutionCode, patient::PatientKey},
    store::{self, Store, Table, Txn},
};

use super::{
    Action, AuditDraft, Caller, Error, Gateway,
    keeping::Keeping,
    millis,
    records::{MissCounterRecord, MissCounterV1, MissMarkRecord, MissMarkV1, decode, encode},
    schema::{
        LockoutCounter, TEXT_KEYS_END, is_miss_mark, lockout_counter_of, lockout_counters,
        miss_mark_key, patient_counter_key, pharmacy_counter_key, successor,
    },
};

/// Misses allowed within a window, and how long the lockout they trip holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissLimit {
    /// The miss that reaches this count trips the lockout.
    pub max_misses: u32,
    /// Counted from the first miss; a window without a lockout ends and the count starts over.
    pub window: Duration,
    pub lockout: Duration,
}

/// The lockout's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// The misses of one pharmacy.
    pub pharmacy: MissLimit,
    /// The misses naming one patient, whichever pharmacies sent them.
    pub patient: MissLimit,
}

impl Default for LockoutPolicy {
    fn default() -> Self {
        LockoutPolicy {
            pharmacy: MissLimit {
                max_misses: 10,
                window: Duration::from_secs(10 * 60),
                lockout: Duration::from_secs(15 * 60),
            },
            patient: MissLimit {
                max_misses: 10,
                window: Duration::from_secs(86_400),
                lockout: Duration::from_secs(86_400),
            },
        }
    }
}

/// The refusal of a locked-out pharmacy, naming the limit.
const PHARMACY_LIMIT: &str = "lookup_max_misses: this pharmacy sent too many wrong exchange \
                              numbers within lookup_miss_window_secs";
/// The refusal of a patient's lockout.
const PATIENT_LIMIT: &str = "lookup_patient_max_misses: too many wrong exchange numbers named \
                             this patient within lookup_patient_miss_window_secs, some of them \
                             this pharmacy's";

/// What a lockout holds: a pharmacy, or a patient (by pseudonym).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Pharmacy(InstitutionCode),
    Patient([u8; 32]),
}

impl Subject {
    fn key(&self) -> Vec<u8> {
        match self {
            Subject::Pharmacy(code) => pharmacy_counter_key(code.as_str()),
            Subject::Patient(pseudonym) => patient_counter_key(pseudonym),
        }
    }

    fn of_key(key: &[u8]) -> Result<Subject, store::Error> {
        let corrupt = || store::Error::Corrupt("lockout key".into());
        match lockout_counter_of(key).ok_or_else(corrupt)? {
            LockoutCounter::Pharmacy(code) => {
                let code = std::str::from_utf8(code).map_err(|_| corrupt())?;
                code.parse().map(Subject::Pharmacy).map_err(|_| corrupt())
            }
            LockoutCounter::Patient(pseudonym) => pseudonym
                .try_into()
                .map(Subject::Patient)
                .map_err(|_| corrupt()),
        }
    }

    fn limit(&self, policy: &LockoutPolicy) -> MissLimit {
        match self {
            Subject::Pharmacy(_) => policy.pharmacy,
            Subject::Patient(_) => policy.patient,
        }
    }
}

/// As audit records name it (their target).
impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Pharmacy(code) => write!(f, "pharmacy {code}"),
            Subject::Patient(pseudonym) => write!(f, "patient {}", hex(pseudonym)),
        }
    }
}

/// One guess: the pharmacy that sent it and the patient it named.
pub(crate) struct Guess {
    pub pharmacy: InstitutionCode,
    pub patient: [u8; 32],
}

impl Guess {
    fn mark_key(&self) -> Vec<u8> {
        miss_mark_key(&self.patient, self.pharmacy.as_str())
    }
}

/// A lockout tripped by a miss of the pharmacy `by`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Trip {
    pub subject: Subject,
    pub by: InstitutionCode,
}

/// A lockout in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locked {
    pub subject: Subject,
    pub misses: u32,
    pub until_ms: i64,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn counter(tx: &dyn Txn, key: &[u8]) -> Result<Option<MissCounterV1>, store::Error> {
    tx.get(Table::Lockouts, key)?
        .map(|bytes| decode(&bytes).map(|MissCounterRecord::V1(c)| c))
        .transpose()
}

/// The counter if it is in force at `now_ms`: locked, or within its window.
fn in_force(c: MissCounterV1, limit: MissLimit, now_ms: i64) -> Option<MissCounterV1> {
    let holds = match c.locked_until_ms {
        Some(until) => now_ms < until,
        // A window that starts after now (a clock set back) has ended too.
        None => {
            now_ms >= c.window_start_ms
                && now_ms < c.window_start_ms.saturating_add(ms(limit.window))
        }
    };
    holds.then_some(c)
}

fn current(
    tx: &dyn Txn,
    subject: &Subject,
    limit: MissLimit,
    now_ms: i64,
) -> Result<Option<MissCounterV1>, store::Error> {
    Ok(counter(tx, &subject.key())?.and_then(|c| in_force(c, limit, now_ms)))
}

/// Refuses a guess that a lockout holds back: the pharmacy's own, or the patient's if the
/// pharmacy has missed on them since the patient's window began.
pub(crate) fn admit(
    tx: &dyn Txn,
    policy: &LockoutPolicy,
    guess: &Guess,
    now_ms: i64,
) -> Result<(), Error> {
    let pharmacy = Subject::Pharmacy(guess.pharmacy.clone());
    if let Some(until) =
        current(tx, &pharmacy, policy.pharmacy, now_ms)?.and_then(|c| c.locked_until_ms)
    {
        return Err(Error::RateLimited {
            limit: PHARMACY_LIMIT,
            retry_after: Duration::from_millis(until.saturating_sub(now_ms).unsigned_abs()),
        });
    }
    let patient = current(tx, &Subject::Patient(guess.patient), policy.patient, now_ms)?;
    if let Some(c) = patient.filter(|c| c.locked_until_ms.is_some())
        && let Some(bytes) = tx.get(Table::Lockouts, &guess.mark_key())?
        && decode::<MissMarkRecord>(&bytes).map(|MissMarkRecord::V1(m)| m.at_ms)?
            >= c.window_start_ms
    {
        // The whole lockout, not what is left of it: that would tell when others missed.
        return Err(Error::RateLimited {
            limit: PATIENT_LIMIT,
            retry_after: policy.patient.lockout,
        });
    }
    Ok(())
}

/// Counts a miss of `guess` against its pharmacy and its patient, and marks that the pharmacy
/// missed on the patient; returns the lockouts it trips.
pub(crate) fn count_miss(
    tx: &mut dyn Txn,
    policy: &LockoutPolicy,
    guess: &Guess,
    now_ms: i64,
) -> Result<Vec<Trip>, store::Error> {
    let mark = MissMarkRecord::V1(MissMarkV1 { at_ms: now_ms });
    tx.put(Table::Lockouts, &guess.mark_key(), &encode(&mark));
    let mut trips = Vec::new();
    for subject in [
        Subject::Pharmacy(guess.pharmacy.clone()),
        Subject::Patient(guess.patient),
    ] {
        if count(tx, &subject, subject.limit(policy), now_ms)? {
            trips.push(Trip {
                subject,
                by: guess.pharmacy.clone(),
            });
        }
    }
    Ok(trips)
}

/// Counts a miss against `subject`; true if it trips the lockout. A locked subject counts no
/// more (the lockout trips once).
fn count(
    tx: &mut dyn Txn,
    subject: &Subject,
    limit: MissLimit,
    now_ms: i64,
) -> Result<bool, store::Error> {
    let mut c = current(tx, subject, limit, now_ms)?.unwrap_or(MissCounterV1 {
        window_start_ms: now_ms,
        misses: 0,
        locked_until_ms: None,
    });
    if c.locked_until_ms.is_some() {
        return Ok(false);
    }
    c.misses = c.misses.saturating_add(1);
    let trips = c.misses >= limit.max_misses;
    if trips {
        c.locked_until_ms = Some(now_ms.saturating_add(ms(limit.lockout)));
    }
    tx.put(
        Table::Lockouts,
        &subject.key(),
        &encode(&MissCounterRecord::V1(c)),
    );
    Ok(trips)
}

/// Lifts the lockout of `subject` and forgets its misses; false if none is in force.
pub(crate) fn unlock(
    tx: &mut dyn Txn,
    policy: &LockoutPolicy,
    subject: &Subject,
    now_ms: i64,
) -> Result<bool, store::Error> {
    let locked = current(tx, subject, subject.limit(policy), now_ms)?
        .is_some_and(|c| c.locked_until_ms.is_some());
    if locked {
        tx.delete(Table::Lockouts, &subject.key());
    }
    Ok(locked)
}

/// Where the next page of a paged walk starts: after the last key of a full page.
fn next_page(rows: &[store::Entry], page: usize) -> Option<Vec<u8>> {
    (rows.len() == page)
        .then(|| rows.last().map(|(k, _)| successor(k)))
        .flatten()
}

/// The lockouts in force among at most `page` counters from `from` on, and where the next page
/// starts (none at the end).
pub(crate) fn locked_page(
    tx: &dyn Txn,
    policy: &LockoutPolicy,
    from: &[u8],
    page: usize,
    now_ms: i64,
) -> Result<(Vec<Locked>, Option<Vec<u8>>), store::Error> {
    let counters = lockout_counters();
    let start = from.max(counters.start.as_slice());
    let rows = tx.scan_range(Table::Lockouts, start, &counters.end, page)?;
    let next = next_page(&rows, page);
    let mut locked = Vec::new();
    for (k, v) in rows {
        let subject = Subject::of_key(&k)?;
        let MissCounterRecord::V1(c) = decode(&v)?;
        if let Some(c) = in_force(c, subject.limit(policy), now_ms)
            && let Some(until_ms) = c.locked_until_ms
        {
            locked.push(Locked {
                subject,
                misses: c.misses,
                until_ms,
            });
        }
    }
    Ok((locked, next))
}

/// Deletes the ended entries among at most `page` from `from` on; returns how many, and where
/// the next page starts (none at the end).
pub(crate) fn prune_page(
    tx: &mut dyn Txn,
    policy: &LockoutPolicy,
    from: &[u8],
    page: usize,
    now_ms: i64,
) -> Result<(usize, Option<Vec<u8>>), store::Error> {
    let rows = tx.scan_range(Table::Lockouts, from, TEXT_KEYS_END, page)?;
    let next = next_page(&rows, page);
    let mut pruned = 0;
    for (k, v) in rows {
        let ended = if is_miss_mark(&k) {
            let MissMarkRecord::V1(m) = decode(&v)?;
            let patient = policy.patient;
            m.at_ms
                .saturating_add(ms(patient.window))
                .saturating_add(ms(patient.lockout))
                <= now_ms
        } else {
            let MissCounterRecord::V1(c) = decode(&v)?;
            in_force(c, Subject::of_key(&k)?.limit(policy), now_ms).is_none()
        };
        if ended {
            tx.delete(Table::Lockouts, &k);
            pruned += 1;
        }
    }
    Ok((pruned, next))
}

/// The audit record of a lockout tripped during the call of `draft`: by the same caller (whose
/// miss tripped it), the lockout as its target, RESOURCE_EXHAUSTED as its outcome.
fn audit_trip(tx: &mut dyn Txn, draft: &AuditDraft, trip: &Trip) -> Result<(), store::Error> {
    let record = AuditDraft {
        writer: draft.writer,
        time_ms: draft.time_ms,
        caller: draft.caller.clone(),
        signer: None,
        action: Action::Lockout,
        target: Some(trip.subject.to_string()),
        check: None,
        kept: Vec::new(),
        check_took: None,
    };
    record.write(tx, &Err::<(), _>(Error::ResourceExhausted("lockout")))
}

/// How many entries one transaction of a paged walk reads.
const PAGE: usize = 1_000;
/// The most lockouts one list answers: an attacker can trip many, and an answer stays small.
const LISTED: usize = 1_000;

impl Gateway {
    /// Runs a lookup or receipt of `patient` behind the lockout, in the one transaction of the
    /// call: a guess a lockout holds back is refused unevaluated, a miss (NOT_FOUND) is counted,
    /// and each lockout it trips is audited; after the commit each trip is logged once and
    /// counted in the metrics.
    pub(super) async fn guarded<T: Send + 'static>(
        &self,
        draft: AuditDraft,
        patient: &PatientKey,
        decide: impl Fn(&mut dyn Txn, &mut AuditDraft) -> Result<T, Error> + Send + Sync + 'static,
    ) -> Result<T, Error> {
        let guess = Guess {
            pharmacy: draft.caller.institution.code.clone(),
            patient: self.config.pseudonyms.of(patient.canonical()),
        };
        let policy = self.config.lockout;
        let (outcome, trips) = self
            .run_noting(draft, move |tx, draft| {
                let now_ms = draft.time_ms;
                if let Err(e) = admit(tx, &policy, &guess, now_ms) {
                    return (Err(e), Vec::new());
                }
                let outcome = decide(tx, draft);
                if !matches!(outcome, Err(Error::NotFound)) {
                    return (outcome, Vec::new());
                }
                // The miss and the lockouts it trips stand although the call is refused.
                let trip_draft = draft.clone();
                let tx = &mut Keeping {
                    tx,
                    kept: &mut draft.kept,
                };
                let trips = count_miss(tx, &policy, &guess, now_ms).and_then(|trips| {
                    for trip in &trips {
                        audit_trip(tx, &trip_draft, trip)?;
                    }
                    Ok(trips)
                });
                match trips {
                    Ok(trips) => (outcome, trips),
                    Err(e) => (Err(e.into()), Vec::new()),
                }
            })
            .await?;
        for trip in trips {
            self.report(&trip);
        }
        outcome
    }

    /// The one log line and the metric of a tripped lockout.
    fn report(&self, trip: &Trip) {
        let metrics = &self.metrics;
        match &trip.subject {
            Subject::Pharmacy(code) => {
                metrics.pharmacy_lockouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pharmacy = %code, "pharmacy locked out: too many wrong exchange numbers");
            }
            Subject::Patient(pseudonym) => {
                metrics.patient_lockouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    pharmacy = %trip.by,
                    patient_pseudonym = %hex(pseudonym),
                    "patient locked for the pharmacies that missed on them: too many wrong exchange numbers"
                );
            }
        }
    }

    /// The lockouts in force (the operator's list), at most [`LISTED`] of them, and whether
    /// more are in force; audited. Read a page per transaction.
    pub async fn lockouts(&self, caller: &Caller) -> Result<(Vec<Locked>, bool), Error> {
        self.audit_access(caller, Action::ListLockouts).await?;
        let policy = self.config.lockout;
        let now_ms = millis(self.clock.now());
        let mut locked = Vec::new();
        let mut from = Vec::new();
        loop {
            let start = std::mem::take(&mut from);
            let (page, next) = self
                .store
                .transact(move |tx: &mut dyn Txn| locked_page(tx, &policy, &start, PAGE, now_ms))
                .await??;
            locked.extend(page);
            match next {
                Some(_) if locked.len() >= LISTED => {
                    locked.truncate(LISTED);
                    return Ok((locked, true));
                }
                Some(next) => from = next,
                None => return Ok((locked, false)),
            }
        }
    }

    /// The operator lifts the lockout of `subject`; NOT_FOUND if none is in force. Audited,
    /// with the lockout as the target.
    pub async fn unlock(&self, caller: &Caller, subject: Subject) -> Result<(), Error> {
        let now = self.clock.now();
        let mut draft = self.draft(caller, Action::Unlock, now);
        draft.target = Some(subject.to_string());
        let policy = self.config.lockout;
        self.run(draft, move |tx, draft| {
            match unlock(tx, &policy, &subject, draft.time_ms)? {
                true => Ok(()),
                false => Err(Error::FailedPrecondition(
                    "no lockout of this pharmacy or patient is in force".into(),
                )),
            }
        })
        .await
    }

    /// Deletes the lockout's ended entries, a page per transaction; returns how many.
    pub async fn prune_lockouts(&self) -> Result<usize, Error> {
        let policy = self.config.lockout;
        let now_ms = millis(self.clock.now());
        let mut pruned = 0;
        let mut from = Vec::new();
        loop {
            let start = std::mem::take(&mut from);
            let (n, next) = self
                .store
                .transact(move |tx: &mut dyn Txn| prune_page(tx, &policy, &start, PAGE, now_ms))
                .await??;
            pruned += n;
            match next {
                Some(next) => from = next,
                None => return Ok(pruned),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;

    const MINUTE: i64 = 60_000;

    fn policy(pharmacy: u32, patient: u32) -> LockoutPolicy {
        let limit = |max_misses| MissLimit {
            max_misses,
            window: Duration::from_secs(600),
            lockout: Duration::from_secs(900),
        };
        LockoutPolicy {
            pharmacy: limit(pharmacy),
            patient: limit(patient),
        }
    }

    fn guess(pharmacy: &str, patient: u8) -> Guess {
        Guess {
            pharmacy: pharmacy.parse().unwrap(),
            patient: [patient; 32],
        }
    }

    /// Runs `f` in a transaction of a new store.
    async fn in_store<T: Send + 'static>(
        f: impl Fn(&mut dyn Txn) -> Result<T, store::Error> + Send + Sync + 'static,
    ) -> T {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let out = store.transact(f).await.unwrap().unwrap();
        store.close().unwrap();
        out
    }

    fn refused(tx: &dyn Txn, policy: &LockoutPolicy, guess: &Guess, now_ms: i64) -> bool {
        admit(tx, policy, guess, now_ms).is_err()
    }

    #[tokio::test]
    async fn the_miss_that_reaches_the_limit_trips_once_and_the_lockout_ends() {
        let p = policy(3, 100);
        let trips = in_store(move |tx| {
            let g = guess("1340000001", 1);
            let mut trips = Vec::new();
            for i in 0..3 {
                assert!(!refused(tx, &p, &g, i), "miss {i}");
                trips.push(count_miss(tx, &p, &g, i)?.len());
            }
            assert!(refused(tx, &p, &g, 3));
            assert!(!refused(tx, &p, &guess("1340000002", 1), 3));
            assert!(refused(tx, &p, &g, 2 + 15 * MINUTE - 1));
            // Once it has ended, the count starts over.
            assert!(!refused(tx, &p, &g, 2 + 15 * MINUTE));
            trips.push(count_miss(tx, &p, &g, 2 + 15 * MINUTE)?.len());
            Ok(trips)
        })
        .await;
        assert_eq!(trips, [0, 0, 1, 0]);
    }

    #[tokio::test]
    async fn a_patients_lockout_refuses_only_the_pharmacies_that_missed_on_them() {
        let p = policy(100, 2);
        let trips = in_store(move |tx| {
            let (a, b, c) = (
                guess("1340000001", 7),
                guess("1340000002", 7),
                guess("1340000003", 7),
            );
            let mut trips = count_miss(tx, &p, &a, 0)?;
            trips.extend(count_miss(tx, &p, &b, 1)?);
            assert!(refused(tx, &p, &a, 2) && refused(tx, &p, &b, 2));
            assert!(!refused(tx, &p, &c, 2), "never missed on the patient");
            assert!(
                !refused(tx, &p, &guess("1340000001", 8), 2),
                "another patient"
            );
            // A miss marks the pharmacy, and trips nothing more.
            trips.extend(count_miss(tx, &p, &c, 3)?);
            assert!(refused(tx, &p, &c, 4));
            Ok(trips)
        })
        .await;
        assert_eq!(
            trips,
            [Trip {
                subject: Subject::Patient([7; 32]),
                by: "1340000002".parse().unwrap(),
            }]
        );
    }

    #[tokio::test]
    async fn unlocking_lifts_a_lockout_in_force_only() {
        let p = policy(1, 100);
        let lifted = in_store(move |tx| {
            let g = guess("1340000001", 1);
            let pharmacy = Subject::Pharmacy(g.pharmacy.clone());
            let before = unlock(tx, &p, &pharmacy, 0)?;
            count_miss(tx, &p, &g, 0)?;
            let listed = locked_page(tx, &p, b"", 10, 1)?.0;
            assert_eq!(listed.len(), 1);
            assert_eq!(listed[0].subject, pharmacy);
            let lifted = unlock(tx, &p, &pharmacy, 1)?;
            assert!(!refused(tx, &p, &g, 2));
            Ok([before, lifted])
        })
        .await;
        assert_eq!(lifted, [false, true]);
    }

    #[tokio::test]
    async fn pruning_deletes_the_ended_entries_a_page_at_a_time() {
        let p = policy(1, 1);
        let left = in_store(move |tx| {
            for n in 0..3 {
                count_miss(tx, &p, &guess(&format!("134000000{n}"), n), 0)?;
            }
            // Three pharmacy counters, three patient counters, three marks.
            let all = |tx: &dyn Txn| tx.scan_prefix(Table::Lockouts, b"", 100).map(|r| r.len());
            assert_eq!(all(tx)?, 9);
            let walk = |tx: &mut dyn Txn, now_ms| -> Result<usize, store::Error> {
                let (mut pruned, mut from) = (0, Vec::new());
                loop {
                    let (n, next) = prune_page(tx, &p, &from, 2, now_ms)?;
                    pruned += n;
                    match next {
                        Some(next) => from = next,
                        None => return Ok(pruned),
                    }
                }
            };
            assert_eq!(walk(tx, 15 * MINUTE - 1)?, 0, "every lockout holds");
            // The counters end with their lockouts; a mark once a lockout could no longer hold.
            assert_eq!(walk(tx, 15 * MINUTE)?, 6);
            assert_eq!(walk(tx, 25 * MINUTE)?, 3);
            all(tx)
        })
        .await;
        assert_eq!(left, 0);
    }
}
