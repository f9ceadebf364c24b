//! Admission around TLS: how many handshakes one source address may have pending, how many
//! authenticated connections may be open at once (checked before TLS, when nothing is known of
//! the peer), and how many of them one institution may hold (checked after TLS, when its
//! certificate has named it). Each admitted connection holds a guard that gives its places back
//! when dropped, however its handshake or its life ends (completion, timeout, failure, abort).
//! Pure bookkeeping: no IO, no TLS, no clock.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use crate::{
    domain::ids::Institution,
    keyed_slots::{KeyedSlots, Slot},
};

/// Why a new connection was closed right after accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its source address already holds its share of the pending handshakes.
    SourceBusy,
    /// The open authenticated connections are at their cap.
    TooManyConnections,
}

/// The places of one accept loop.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    /// Pending handshakes by source address.
    pending: Arc<KeyedSlots<IpAddr>>,
    /// Open connections by institution, so that one certificate cannot fill `max_open` and
    /// lock every other institution out.
    per_institution: Arc<KeyedSlots<Institution>>,
    open: Arc<AtomicUsize>,
    max_open: usize,
}

impl Admission {
    pub(crate) fn new(per_source: usize, max_open: usize, per_institution: usize) -> Self {
        Admission {
            pending: KeyedSlots::new(per_source),
            per_institution: KeyedSlots::new(per_institution),
            open: Arc::default(),
            max_open: max_open.max(1),
        }
    }

    /// A pending-handshake place for a connection from `source`. Refused while that address
    /// holds its share, or while the open connections are at the cap (checked here, at accept:
    /// handshakes already under way may still complete, so the cap can be passed by at most
    /// the pending handshakes).
    pub(crate) fn admit(&self, source: IpAddr) -> Result<PendingSlot, Refused> {
        if self.open.load(Ordering::Relaxed) >= self.max_open {
            return Err(Refused::TooManyConnections);
        }
        let slot = self
            .pending
            .take(&source_key(source))
            .ok_or(Refused::SourceBusy)?;
        Ok(PendingSlot {
            _slot: slot,
            per_institution: Arc::clone(&self.per_institution),
            open: Arc::clone(&self.open),
        })
    }

    /// Authenticated connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// The source a pending handshake is counted under: an IPv4 address as it is (an IPv4-mapped
/// IPv6 address as its IPv4 one), an IPv6 address by its /64 — the block one host is commonly
/// given, so that cycling through its addresses buys no more places.
fn source_key(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
    }
}

/// A handshake's place; given back when dropped.
#[derive(Debug)]
pub(crate) struct PendingSlot {
    _slot: Slot<IpAddr>,
    per_institution: Arc<KeyedSlots<Institution>>,
    open: Arc<AtomicUsize>,
}

impl PendingSlot {
    /// The handshake succeeded and the certificate named `institution`: the connection now
    /// counts as open (and no longer as pending), unless that institution already holds its
    /// share of the open connections (`None`: the caller closes it). Either way the pending
    /// place is given back.
    pub(crate) fn into_open(self, institution: &Institution) -> Option<OpenSlot> {
        let institution_slot = self.per_institution.take(institution)?;
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(OpenSlot {
            open: Arc::clone(&self.open),
            _institution: institution_slot,
        })
    }
}

/// An open connection's places (among all, and among its institution's); given back when the
/// connection is dropped.
#[derive(Debug)]
pub(crate) struct OpenSlot {
    open: Arc<AtomicUsize>,
    _institution: Slot<Institution>,
}

impl Drop for OpenSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn institution(code: &str) -> Institution {
        Institution::from_uri(&format!("urn:rxgate:institution:clinic:{code}")).unwrap()
    }

    #[test]
    fn ipv6_sources_count_by_their_64_bit_prefix() {
        let admission = Admission::new(1, 100, 10);
        let _held = admission.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(admission.admit(ip("2001:db8:1:2:ffff::7")).is_err());
        assert!(admission.admit(ip("2001:db8:1:3::1")).is_ok());
        let _v4 = admission.admit(ip("192.0.2.1")).unwrap();
        assert!(admission.admit(ip("::ffff:192.0.2.1")).is_err());
    }

    #[test]
    fn one_source_holds_at_most_its_share_of_pending_handshakes() {
        let admission = Admission::new(2, 100, 100);
        let first = admission.admit(ip("127.0.0.2")).unwrap();
        let _second = admission.admit(ip("127.0.0.2")).unwrap();
        assert_eq!(
            admission.admit(ip("127.0.0.2")).unwrap_err(),
            Refused::SourceBusy
        );
        // Another address is not affected.
        let _other = admission.admit(ip("127.0.0.1")).unwrap();
        // A handshake that ends (here: fails) gives its place back.
        drop(first);
        let _third = admission.admit(ip("127.0.0.2")).unwrap();
        assert_eq!(
            admission.admit(ip("127.0.0.2")).unwrap_err(),
            Refused::SourceBusy
        );
    }

    #[test]
    fn the_table_forgets_an_address_with_its_last_handshake() {
        let admission = Admission::new(4, 100, 100);
        let slots: Vec<_> = (1..=50)
            .map(|i| admission.admit(ip(&format!("10.0.0.{i}"))).unwrap())
            .collect();
        assert_eq!(admission.pending.keys(), 50);
        drop(slots);
        assert_eq!(admission.pending.keys(), 0);
    }

    #[test]
    fn open_connections_are_capped_and_counted_until_closed() {
        let admission = Admission::new(8, 2, 8);
        let clinic = institution("1310000001");
        let a = admission.admit(ip("127.0.0.1")).unwrap();
        let a = a.into_open(&clinic).unwrap();
        let b = admission.admit(ip("127.0.0.1")).unwrap();
        let b = b.into_open(&clinic).unwrap();
        assert_eq!(admission.open(), 2);
        assert_eq!(admission.pending.keys(), 0);
        assert_eq!(
            admission.admit(ip("127.0.0.3")).unwrap_err(),
            Refused::TooManyConnections
        );
        drop(a);
        let _c = admission.admit(ip("127.0.0.3")).unwrap();
        drop(b);
        assert_eq!(admission.open(), 0);
    }

    #[test]
    fn one_institution_holds_at_most_its_share_of_open_connections() {
        let admission = Admission::new(8, 100, 2);
        let (clinic, other) = (institution("1310000001"), institution("1310000002"));
        let open = |who: &Institution| admission.admit(ip("127.0.0.1")).unwrap().into_open(who);
        let a = open(&clinic).unwrap();
        let _b = open(&clinic).unwrap();
        assert!(open(&clinic).is_none());
        // The refused connection holds neither an open nor a pending place.
        assert_eq!(admission.open(), 2);
        assert_eq!(admission.pending.keys(), 0);
        // Another institution is not affected.
        let _c = open(&other).unwrap();
        // A connection that ends gives its institution's place back.
        drop(a);
        let _d = open(&clinic).unwrap();
        assert!(open(&clinic).is_none());
        assert_eq!(admission.per_institution.keys(), 2);
    }
}
