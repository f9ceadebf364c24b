//! Leases in the store: a task that one gateway of a fleet must do alone (the relay) is done by
//! whichever gateway holds its lease, a row in `Meta` naming the holding process and the time,
//! on its wall clock, after which another may take it. The holder renews it well before then;
//! a gateway that dies stops renewing, and another takes it once it has expired; one that
//! stops releases it. Taking, renewing and releasing each read the row and write it in one
//! transaction, so of two gateways that try at once one gets it (the store's transactions are
//! serializable). Since the gateways' wall clocks differ a little, a lease may be taken a little
//! early: what the holder writes under its lease checks, in the same transaction, that it
//! still holds it ([`holds`]). A lease given up is never taken again by the same process: a
//! renewal still under way when the process gives it up as it stops (its task is dropped, but
//! not the transaction it handed the store) would otherwise take it back once the release has
//! committed, and hold it, for nobody, a whole term more.
//!
//! Must not depend on: a store engine, gRPC.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

use crate::store::{self, Store, Table, Txn};

use super::{
    Error, Gateway,
    records::{LeaseRecord, LeaseV1, decode, encode},
    schema::lease_key,
};

/// Who takes leases: this gateway process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::service) struct Holder {
    /// Drawn when the process starts: tells it from an earlier run of the same gateway, whose
    /// lease it must not take for its own before it expires.
    instance: [u8; 16],
    /// The gateway's `[gateway]` certificate's SHA-256.
    gateway: [u8; 32],
}

impl Holder {
    /// A new process of the gateway `gateway`.
    pub(in crate::service) fn new(rng: &SystemRandom, gateway: [u8; 32]) -> Holder {
        let mut instance = [0; 16];
        rng.fill(&mut instance).expect("the system RNG works");
        Holder { instance, gateway }
    }

    fn holds(&self, lease: &LeaseV1) -> bool {
        (lease.instance, lease.gateway) == (self.instance, self.gateway)
    }
}

/// The names of the leases a process gave up, read by each run of its takes (a clone shares
/// them).
#[derive(Clone, Debug, Default)]
pub(in crate::service) struct GivenUp(Arc<Mutex<HashSet<String>>>);

impl GivenUp {
    fn add(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned());
    }

    fn has(&self, name: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(name)
    }
}

/// The refusal of a take of a lease this process gave up.
const GIVEN_UP: &str = "this gateway gave the lease up: it is stopping";

/// What a take found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tenure {
    /// The lease is this gateway's until `expires_ms` (Unix milliseconds of its wall clock).
    Held { expires_ms: i64 },
    /// Another gateway process holds it: the gateway's `[gateway]` certificate's SHA-256, and
    /// when its lease expires.
    Elsewhere { gateway: [u8; 32], expires_ms: i64 },
}

/// Whether `me` may write the lease that `found` holds at `now_ms`: when nobody holds it, when
/// it is `me`'s, when it has expired, and on a store that only one process opens (`sole`),
/// where a lease of another is one a process of the past left behind. Otherwise the lease found.
fn may_take(found: Option<LeaseV1>, me: Holder, now_ms: i64, sole: bool) -> Result<(), LeaseV1> {
    match found {
        Some(lease) if !me.holds(&lease) && lease.expires_ms > now_ms && !sole => Err(lease),
        _ => Ok(()),
    }
}

/// The lease `name` as stored, if any.
fn load(tx: &dyn Txn, name: &str) -> Result<Option<LeaseV1>, store::Error> {
    let Some(bytes) = tx.get(Table::Meta, &lease_key(name))? else {
        return Ok(None);
    };
    let LeaseRecord::V1(lease) = decode(&bytes)?;
    Ok(Some(lease))
}

/// Whether `me` holds the lease `name` in `tx`: what a write made under a lease checks in its
/// own transaction. An expired lease nobody took is still its holder's.
pub(in crate::service) fn holds(
    tx: &dyn Txn,
    name: &str,
    me: Holder,
) -> Result<bool, store::Error> {
    Ok(load(tx, name)?.is_some_and(|lease| me.holds(&lease)))
}

impl Gateway {
    /// Takes the lease `name` for `term` if it is free, expired or this process's own (then
    /// renewing it); else says who holds it. Refuses (FAILED_PRECONDITION) a lease this process
    /// gave up.
    ///
    /// An embedded store is opened by one process at a time (the only stores that run their
    /// transactions one at a time, `Store::serial`): there a lease another holder left behind
    /// was a process's that is gone, and is taken at once.
    pub(in crate::service) async fn take_lease(
        &self,
        name: &str,
        term: Duration,
    ) -> Result<Tenure, Error> {
        let (me, now_ms, sole) = (self.lease_holder, self.now_ms(), self.store.serial());
        let name = name.to_owned();
        let expires_ms = now_ms.saturating_add(term.as_millis() as i64);
        let given_up = self.leases_given_up.clone();
        let taken = self
            .store
            .transact(move |tx: &mut dyn Txn| {
                // In every run: one that follows the release's commit must write nothing.
                if given_up.has(&name) {
                    return Ok(None);
                }
                if let Err(other) = may_take(load(tx, &name)?, me, now_ms, sole) {
                    return Ok(Some(Tenure::Elsewhere {
                        gateway: other.gateway,
                        expires_ms: other.expires_ms,
                    }));
                }
                let lease = LeaseV1 {
                    instance: me.instance,
                    gateway: me.gateway,
                    expires_ms,
                };
                tx.put(
                    Table::Meta,
                    &lease_key(&name),
                    &encode(&LeaseRecord::V1(lease)),
                );
                Ok::<_, store::Error>(Some(Tenure::Held { expires_ms }))
            })
            .await
            .map_err(Error::from)?;
        taken?.ok_or_else(|| Error::FailedPrecondition(GIVEN_UP.into()))
    }

    /// Gives the lease `name` up for good (the process stops): frees it if this process holds
    /// it, so that another gateway may take it at once.
    pub(in crate::service) async fn release_lease(&self, name: &str) -> Result<(), Error> {
        self.leases_given_up.add(name);
        let (me, name) = (self.lease_holder, name.to_owned());
        let released = self
            .store
            .transact(move |tx: &mut dyn Txn| {
                if holds(tx, &name, me)? {
                    tx.delete(Table::Meta, &lease_key(&name));
                }
                Ok::<_, store::Error>(())
            })
            .await
            .map_err(Error::from)?;
        released.map_err(Error::from)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        service::{
            layout,
            testing::{self, TestClock, Twice},
        },
        store::EmbeddedStore,
    };

    const TERM: Duration = Duration::from_secs(10);

    fn holder(gateway: u8) -> Holder {
        Holder::new(&SystemRandom::new(), [gateway; 32])
    }

    fn lease(of: Holder, expires_ms: i64) -> Option<LeaseV1> {
        Some(LeaseV1 {
            instance: of.instance,
            gateway: of.gateway,
            expires_ms,
        })
    }

    #[test]
    fn a_lease_is_taken_when_free_expired_or_own_and_refused_while_another_holds_it() {
        let (me, other) = (holder(1), holder(2));
        let earlier_run = Holder {
            gateway: me.gateway,
            ..holder(1)
        };
        let cases = [
            ("free", None, false, true),
            ("own, running", lease(me, 2_000), false, true),
            ("own, expired", lease(me, 500), false, true),
            ("another's, running", lease(other, 2_000), false, false),
            ("another's, expiring now", lease(other, 1_000), false, true),
            ("another's, expired", lease(other, 500), false, true),
            (
                "an earlier run's, running",
                lease(earlier_run, 2_000),
                false,
                false,
            ),
            (
                "another's, running, sole store",
                lease(other, 2_000),
                true,
                true,
            ),
        ];
        for (what, found, sole, taken) in cases {
            assert_eq!(may_take(found, me, 1_000, sole).is_ok(), taken, "{what}");
        }
    }

    /// Two gateway processes over one store, each with a clock of its own (read a moment
    /// apart: the leases' terms are far longer).
    fn two_gateways(store: Arc<dyn Store>) -> [(Arc<Gateway>, Arc<TestClock>); 2] {
        [
            testing::gateway_over(Arc::clone(&store)),
            testing::gateway_over(store),
        ]
    }

    #[tokio::test]
    async fn a_lease_moves_only_once_expired_or_released() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(Twice::side_by_side(
            EmbeddedStore::open(dir.path()).unwrap(),
        ));
        let bystander = testing::gateway_over(Arc::clone(&store)).0;
        let [(a, clock_a), (b, clock_b)] = two_gateways(store);
        let held = |gateway: &Gateway| Tenure::Held {
            expires_ms: gateway.now_ms() + 10_000,
        };
        assert_eq!(a.take_lease("task", TERM).await.unwrap(), held(&a));
        let refused = b.take_lease("task", TERM).await.unwrap();
        let Tenure::Elsewhere { expires_ms, .. } = refused else {
            panic!("taken while held: {refused:?}");
        };
        assert_eq!(
            refused,
            Tenure::Elsewhere {
                gateway: a.config.audit_writer,
                expires_ms
            }
        );

        // Renewed before it expires, it stays a's.
        for clock in [&clock_a, &clock_b] {
            clock.advance(TERM / 2);
        }
        assert_eq!(a.take_lease("task", TERM).await.unwrap(), held(&a));
        for clock in [&clock_a, &clock_b] {
            clock.advance(TERM / 2);
        }
        assert!(matches!(
            b.take_lease("task", TERM).await.unwrap(),
            Tenure::Elsewhere { .. }
        ));

        // a stops renewing: once it has expired, b takes it, and a cannot take it back.
        clock_b.advance(TERM);
        assert_eq!(b.take_lease("task", TERM).await.unwrap(), held(&b));
        assert!(matches!(
            a.take_lease("task", TERM).await.unwrap(),
            Tenure::Elsewhere { .. }
        ));

        // A release by one who does not hold it changes nothing; the holder's frees it at once.
        bystander.release_lease("task").await.unwrap();
        assert!(matches!(
            a.take_lease("task", TERM).await.unwrap(),
            Tenure::Elsewhere { .. }
        ));
        b.release_lease("task").await.unwrap();
        assert_eq!(a.take_lease("task", TERM).await.unwrap(), held(&a));
        assert!(
            matches!(
                b.take_lease("other", TERM).await.unwrap(),
                Tenure::Held { .. }
            ),
            "leases are by name"
        );
    }

    /// A renewal that runs after the release (one under way as the process stopped, re-run once
    /// the release committed) does not take the lease back: it would hold it for nobody.
    #[tokio::test]
    async fn a_lease_given_up_is_not_taken_back_by_its_process() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(Twice::side_by_side(
            EmbeddedStore::open(dir.path()).unwrap(),
        ));
        let [(stopping, _), (other, _)] = two_gateways(store);
        stopping.take_lease("task", TERM).await.unwrap();
        stopping.release_lease("task").await.unwrap();
        let renewed = stopping.take_lease("task", TERM).await;
        assert!(
            matches!(&renewed, Err(Error::FailedPrecondition(why)) if why == GIVEN_UP),
            "{renewed:?}"
        );
        assert!(matches!(
            other.take_lease("task", TERM).await.unwrap(),
            Tenure::Held { .. }
        ));
    }

    /// On an embedded store, which one process opens at a time, a lease left behind by a
    /// process that died is taken at once.
    #[tokio::test]
    async fn on_an_embedded_store_a_lease_left_behind_is_taken_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let [(dead, _), (next, _)] = two_gateways(store);
        assert!(matches!(
            dead.take_lease("task", TERM).await.unwrap(),
            Tenure::Held { .. }
        ));
        assert!(matches!(
            next.take_lease("task", TERM).await.unwrap(),
            Tenure::Held { .. }
        ));
    }

    /// `store verify` knows a lease row, and checks that it decodes.
    #[tokio::test]
    async fn store_verify_reads_a_lease() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, _) = testing::gateway(dir.path());
        layout::upgrade(&gateway.store, &gateway.config.pseudonyms)
            .await
            .unwrap();
        gateway.take_lease("task", TERM).await.unwrap();
        testing::verify_store(&gateway).await.unwrap();
        let spoilt = gateway.store.transact(|tx: &mut dyn Txn| {
            tx.put(Table::Meta, &lease_key("task"), &[7]);
            Ok::<_, store::Error>(())
        });
        spoilt.await.unwrap().unwrap();
        let problem = testing::verify_store(&gateway).await.unwrap_err();
        assert!(problem.to_string().contains("does not decode"), "{problem}");
    }
}
