//! The leases in `Meta` (`service::lease`): one row per named lease, which says which gateway
//! process holds it and until when.

use super::{Range, key, prefix_end};

/// The prefix of every [`lease_key`].
const LEASE: &[u8] = b"lease";

/// `Meta`: the lease `name` (text, no zero byte) → a `LeaseRecord`.
pub(in crate::service) fn lease_key(name: &str) -> Vec<u8> {
    key(&[LEASE, name.as_bytes()])
}

/// Every [`lease_key`].
fn leases() -> Range {
    let prefix = key(&[LEASE, b""]);
    Range {
        end: prefix_end(&prefix),
        start: prefix,
    }
}

/// Whether `key` is a [`lease_key`].
pub(in crate::service) fn is_lease_key(key: &[u8]) -> bool {
    let leases = leases();
    (leases.start.as_slice()..leases.end.as_slice()).contains(&key)
}
