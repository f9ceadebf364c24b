//! rxgate: an electronic-prescription and pharmacy-dispensing gateway.
//!
//! Code map:
//! - `domain`: the pure core. `domain::signature` verifies signed documents (CMS, chain, HPKI
//!   profile, time, revocation, role) and yields `VerifiedDocument`, the only proof of a verified
//!   signature.
//! - `documents`: the strict decode of the wire document types (`SignedContent`).
//! - `fuzzing`: the fuzz entry points, one per parser (the targets under `fuzz/`, docs/FUZZING.md).
//! - `proto`: the generated types of `proto/rxgate/v1`.
//! - `signer`: makes CMS signatures (for `rxgate sign`, demos and tests).
//! - `identity`: the gateway's own signing key and the gateways an intake pins.
//! - `trust`: loads trust material from files (anchors, CRLs per issuing CA, reloaded on change).
//! - `json`: the protobuf JSON mapping of the contract's messages.
//! - `limits`: the bounds on what one request may ask and one patient's history may hold.
//! - `masters`: the drug masters and contraindication table from files (`Sources`).
//! - `master_import`: the `rxgate master import` client.
//! - `admin_cli`: the `rxgate admin lockouts` and `rxgate admin unlock` client.
//! - `audit_verify`: checks the audit chains and their signed checkpoints; `audit_cli` feeds it
//!   a stopped store or an export (`rxgate audit verify`, `checkpoints`, `export`).
//! - `metrics`: the gateway's counters and histograms; labels only from fixed sets.
//! - `readiness`: whether the gateway should take traffic (a working store, no drain).
//! - `ops`: the operations port: `/metrics`, `/healthz` and `/readyz` over plain HTTP.
//! - `keyed_slots`: counted places per key (handshakes per address, feeds per institution).
//! - `log_throttle`: at most one log line per interval for what a peer can repeat at will.
//! - `tally`: bounds a connection's edge audit records per second; the rest become counts.
//! - `network`: the `[network]` configuration (connection, HTTP/2, feed and fairness limits).
//! - `service`: the use cases, the clinical checks' history index, master imports.
//! - `relay`: pushes dispensing records to the upstream management service.
//! - `store`, `grpc`, `tls`, `app`: the store, the gRPC adapter, mutual TLS, the composition root.
//!
//! Invariants:
//! - The domain never reads the clock and never does IO; time comes in as a parameter.
//! - A business field is read only from content whose signature has been verified.
//! - `ring` is the only crypto provider: every signature is made or verified through it.
//! - `tests/it/invariants.rs` enforces the first (clock, fs, net), the last, and `store`-only
//!   engines.

pub mod admin_cli;
pub mod app;
pub mod audit_cli;
pub mod audit_verify;
pub mod config;
pub mod demo;
pub mod documents;
pub mod domain;
pub mod fuzzing;
pub mod grpc;
pub mod identity;
pub mod json;
pub mod keyed_slots;
pub mod limits;
pub mod log_throttle;
pub mod master_import;
pub mod masters;
pub mod metrics;
pub mod network;
mod ops;
pub mod proto;
mod readiness;
pub mod relay;
pub mod service;
pub mod signer;
pub mod store;
pub mod tally;
pub mod tls;
pub mod trust;
