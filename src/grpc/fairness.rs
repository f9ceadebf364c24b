//! Per-institution fairness, as a guard (`guard`) in front of every service: a cap on the requests
//! an institution has in flight (a unary call from the request to the end of its answer's body,
//! so that answers a client never reads hold its places and no more; a streaming call until its
//! response headers, so that a feed counts only while it starts) and a token bucket on the rate at which it starts them, with per-institution
//! overrides. A refusal answers RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` detail, before
//! the request body is read. The institution is the caller's TLS identity (`tls::PeerIdentity`
//! in the request extensions). The table of per-institution state forgets idle entries (no
//! request in flight, bucket full: the same as a new entry), so it holds only the institutions
//! active lately. Must not depend on the service layer or the store.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;
use tonic::{Code, Status, codegen::http};
use tonic_types::{ErrorDetails, StatusExt};

use super::{
    guard::{Guard, Pass, Until},
    token_bucket::{Rate, TokenBucket},
};
use crate::{domain::ids::Institution, log_throttle::LogThrottle, tls::ConnectionInfo};

/// What one institution may do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allowance {
    /// Requests in flight at once.
    pub max_in_flight: u32,
    /// Requests started per second, on average.
    pub rate_per_sec: f64,
    /// Requests that may start at once after a quiet spell.
    pub burst: u32,
}

impl Allowance {
    fn rate(&self) -> Rate {
        Rate {
            per_sec: self.rate_per_sec.max(f64::MIN_POSITIVE),
            burst: f64::from(self.burst.max(1)),
        }
    }
}

/// Every institution's allowance.
#[derive(Debug, Clone, PartialEq)]
pub struct FairnessPolicy {
    pub default: Allowance,
    pub overrides: HashMap<Institution, Allowance>,
}

impl FairnessPolicy {
    fn of(&self, who: &Institution) -> Allowance {
        self.overrides.get(who).copied().unwrap_or(self.default)
    }
}

/// How often the table is swept of idle entries.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

static REFUSED: LogThrottle = LogThrottle::new(Duration::from_secs(10));

#[derive(Debug)]
struct Entry {
    in_flight: u32,
    bucket: TokenBucket,
}

#[derive(Debug)]
struct Table {
    entries: HashMap<Institution, Entry>,
    swept: Instant,
}

/// The shared per-institution state.
#[derive(Debug)]
struct Fairness {
    policy: FairnessPolicy,
    table: Mutex<Table>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Refusal {
    InFlight { max: u32 },
    Rate { retry_after: Duration },
}

impl Refusal {
    fn status(self) -> Status {
        let (message, retry_after) = match self {
            Refusal::InFlight { max } => (
                format!("at most {max} requests in flight per institution"),
                Duration::from_millis(100),
            ),
            Refusal::Rate { retry_after } => (
                "request rate over the institution's allowance".to_owned(),
                retry_after,
            ),
        };
        Status::with_error_details(
            Code::ResourceExhausted,
            message,
            ErrorDetails::with_retry_info(Some(retry_after)),
        )
    }
}

impl Fairness {
    /// Admits a request of `who` now, or says why not.
    fn admit(self: &Arc<Self>, who: &Institution) -> Result<Permit, Refusal> {
        let allowance = self.policy.of(who);
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if now.saturating_duration_since(table.swept) >= SWEEP_EVERY {
            self.sweep(&mut table, now);
        }
        let entry = table.entries.entry(who.clone()).or_insert_with(|| Entry {
            in_flight: 0,
            bucket: TokenBucket::full(allowance.rate(), now),
        });
        if entry.in_flight >= allowance.max_in_flight {
            return Err(Refusal::InFlight {
                max: allowance.max_in_flight,
            });
        }
        entry
            .bucket
            .take(allowance.rate(), now)
            .map_err(|retry_after| Refusal::Rate { retry_after })?;
        entry.in_flight += 1;
        Ok(Permit {
            fairness: Arc::clone(self),
            who: who.clone(),
        })
    }

    /// Forgets the entries that are the same as new ones.
    fn sweep(&self, table: &mut Table, now: Instant) {
        table.entries.retain(|who, entry| {
            entry.in_flight > 0 || !entry.bucket.is_full(self.policy.of(who).rate(), now)
        });
        table.swept = now;
    }
}

/// A request in flight; counted until dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    fairness: Arc<Fairness>,
    who: Institution,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut table = self
            .fairness
            .table
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = table.entries.get_mut(&self.who) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
        }
    }
}

/// The fairness limits as a [`Guard`]; one per server, shared by every connection.
#[derive(Debug, Clone)]
pub(crate) struct FairnessGuard {
    fairness: Arc<Fairness>,
    /// The paths of the streaming methods, whose calls count in flight only until answered.
    streaming: Arc<HashSet<String>>,
}

impl FairnessGuard {
    pub(crate) fn new(policy: FairnessPolicy, streaming: Arc<HashSet<String>>) -> Self {
        FairnessGuard {
            streaming,
            fairness: Arc::new(Fairness {
                policy,
                table: Mutex::new(Table {
                    entries: HashMap::new(),
                    swept: Instant::now(),
                }),
            }),
        }
    }
}

impl Guard for FairnessGuard {
    /// `None` for a request without an identity.
    type Hold = Option<Permit>;

    fn decide<B>(&self, request: &http::Request<B>) -> Result<Pass<Option<Permit>>, Status> {
        // Every connection comes through the mutual-TLS acceptor; a request without an identity
        // (none in practice) is left to the handlers, which refuse it.
        let Some(connection) = ConnectionInfo::of(request) else {
            return Ok(Pass {
                hold: None,
                until: Until::Answered,
                deadline: None,
            });
        };
        let until = if self.streaming.contains(request.uri().path()) {
            Until::Answered
        } else {
            Until::BodyEnds
        };
        match self.fairness.admit(&connection.peer.institution) {
            Ok(permit) => Ok(Pass {
                hold: Some(permit),
                until,
                deadline: None,
            }),
            Err(refusal) => {
                if let Some(left_out) = REFUSED.allow() {
                    tracing::info!(?refusal, left_out, "request refused by the fairness limits");
                }
                Err(refusal.status())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn institution(uri: &str) -> Institution {
        Institution::from_uri(uri).unwrap()
    }

    fn fairness(default: Allowance, overrides: &[(&Institution, Allowance)]) -> Arc<Fairness> {
        let policy = FairnessPolicy {
            default,
            overrides: overrides
                .iter()
                .map(|(who, a)| ((*who).clone(), *a))
                .collect(),
        };
        Arc::clone(&FairnessGuard::new(policy, Arc::default()).fairness)
    }

    const SMALL: Allowance = Allowance {
        max_in_flight: 2,
        rate_per_sec: 10.0,
        burst: 5,
    };

    #[tokio::test(start_paused = true)]
    async fn in_flight_is_capped_per_institution_and_freed_when_done() {
        let clinic = institution("urn:rxgate:institution:clinic:1310000001");
        let other = institution("urn:rxgate:institution:clinic:1310000002");
        let f = fairness(SMALL, &[]);
        let a = f.admit(&clinic).unwrap();
        let _b = f.admit(&clinic).unwrap();
        assert_eq!(f.admit(&clinic).unwrap_err(), Refusal::InFlight { max: 2 });
        let _c = f.admit(&other).unwrap();
        drop(a);
        let _d = f.admit(&clinic).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_refusal_says_when_to_retry() {
        let clinic = institution("urn:rxgate:institution:clinic:1310000001");
        let f = fairness(SMALL, &[]);
        for _ in 0..5 {
            drop(f.admit(&clinic).unwrap());
        }
        let Err(Refusal::Rate { retry_after }) = f.admit(&clinic) else {
            panic!("the burst is spent");
        };
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_millis(100));
        let status = Refusal::Rate { retry_after }.status();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.get_details_retry_info().unwrap().retry_delay,
            Some(retry_after)
        );
        tokio::time::advance(retry_after).await;
        assert!(f.admit(&clinic).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_override_replaces_the_default_for_its_institution() {
        let big = institution("urn:rxgate:institution:management:1390000001");
        let roomy = Allowance {
            max_in_flight: 100,
            ..SMALL
        };
        let f = fairness(SMALL, &[(&big, roomy)]);
        let held: Vec<_> = (0..5).map(|_| f.admit(&big).unwrap()).collect();
        assert_eq!(held.len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_institutions_are_forgotten() {
        let f = fairness(SMALL, &[]);
        for code in 0..1000u32 {
            let who = institution(&format!("urn:rxgate:institution:clinic:13{code:08}"));
            drop(f.admit(&who).unwrap());
        }
        let busy = institution("urn:rxgate:institution:clinic:1310000001");
        let _held = f.admit(&busy).unwrap();
        assert_eq!(f.table.lock().unwrap().entries.len(), 1001);
        // Once their buckets are full again and the sweep is due, only the busy one is kept.
        tokio::time::advance(SWEEP_EVERY).await;
        let _next = f.admit(&busy).unwrap();
        assert_eq!(f.table.lock().unwrap().entries.len(), 1);
    }
}
