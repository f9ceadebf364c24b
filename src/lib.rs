//! rxgate: an electronic-prescription and pharmacy-dispensing gateway.
//!
//! Code map (ARCHITECTURE.md has it in full):
//! - `domain`: the pure core. `domain::signature` verifies signed documents (CMS, chain, HPKI
//!   profile, time, revocation, role) and yields `VerifiedDocument`, the only proof of a verified
//!   signature.
//! - `wire`: the generated protobuf types, the strict decode of the signed documents, JSON.
//! - `service`: the use cases, each in one store transaction; `store`: the transactional
//!   key-value store and its engines.
//! - `grpc`, `tls`, `network`: the gRPC adapter and its tower layers, mutual TLS, the
//!   `[network]` bounds; `ops`, `readiness`, `metrics`: the operations port and what it reports;
//!   `disk_watch`: the data disk's free space, measured for the low-water mark.
//! - `app`: the composition root; `config`, `limits`: the configuration.
//! - `lifecycle`: serving until asked to stop or a task fails, and the drain; `signals`,
//!   `sd_notify`: the stop signals and systemd's notifications; `logging`: text or JSON lines.
//! - `pki`: trust anchors and CRLs, the gateway's own identity, the CMS signer; `dev_pki`: where
//!   the development PKI is found at run time (`--dev`, `--dev-certs`, `RXGATE_DEV_CERTS`).
//! - `master_files`: the drug masters and contraindication table from files.
//! - `relay`: pushes dispensing records to the upstream management service, while this gateway
//!   holds the relay's lease (one relay in a fleet).
//! - `cli`: the command-line clients; `audit_verify`: the audit chains' pure verifier.
//! - `fuzzing`: the fuzz entry points, one per parser (the targets under `fuzz/`).
//! - `keyed_slots`, `log_throttle`, `panics`, `tally`: counted places per key, throttled log
//!   lines, what a panic said, the per-client tally of edge audit records.
//!
//! Invariants:
//! - The domain never reads the clock and never does IO; time comes in as a parameter.
//! - A business field is read only from content whose signature has been verified.
//! - `ring` is the only crypto provider: every signature is made or verified through it.
//! - A refused decision writes nothing but its audit record and what it must keep
//!   (`service::run` rolls it back to a savepoint).
//! - `tests/it/invariants.rs` enforces the first (clock, fs, net), the crypto provider,
//!   `store`-only engines, keys laid out only in `service::schema`, the rings apart (no
//!   stored record in `grpc`, no RPC message in `service`), and no `CARGO_MANIFEST_DIR` outside
//!   tests (the binary runs without its source tree).

pub mod app;
pub mod audit_verify;
pub mod cli;
pub mod config;
pub mod dev_pki;
mod disk_watch;
pub mod domain;
pub mod fuzzing;
pub mod grpc;
pub mod keyed_slots;
pub mod lifecycle;
pub mod limits;
pub mod log_throttle;
pub mod logging;
pub mod master_files;
pub mod metrics;
pub mod network;
pub mod opened_store;
mod ops;
mod panics;
pub mod pki;
mod readiness;
pub mod relay;
pub mod sd_notify;
pub mod service;
pub mod signals;
pub mod store;
pub mod tally;
pub mod tls;
pub mod wire;
