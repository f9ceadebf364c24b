//! What the audit-trail tests share: the dev gateway's chain and how a report names a place.

use rxgate::{
    audit_verify::{Finding, Report},
    pki::identity::{GatewayIdentity, TrustedSenders},
};

use super::dev_pki;

/// The dev gateway's writer id: its `[gateway]` certificate's SHA-256.
pub(crate) fn writer() -> [u8; 32] {
    GatewayIdentity::from_files(&dev_pki().gateway())
        .unwrap()
        .fingerprint()
}

pub(crate) fn dev_gateway_certs() -> TrustedSenders {
    TrustedSenders::from_files(&[dev_pki().gateway().cert]).unwrap()
}

/// The one finding of `report`: a link of the dev gateway's chain at `sequence`; its problem.
pub(crate) fn only_bad_link(report: &Report, sequence: u64) -> &str {
    match &report.findings[..] {
        [
            Finding::Link {
                writer: w,
                sequence: s,
                problem,
            },
        ] if *w == writer() && *s == sequence => problem,
        other => panic!("expected one bad link at {sequence}, found {other:?}"),
    }
}
