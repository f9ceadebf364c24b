//! The integration tests, one module per former test file, linked into one binary: each test
//! binary links the whole crate and its dependencies again, so one binary instead of twenty-five
//! is one link (`cargo test --test it MODULE::` runs one file's tests). Two files stay binaries
//! of their own, beside this folder: `fairness.rs` (its latency bounds must measure the server,
//! not other tests sharing the process) and `lockout.rs` (it installs a process-wide tracing
//! subscriber and reads what every server in the process logs). `common` (`tests/common/`) is
//! shared by all three.

#[path = "../common/mod.rs"]
mod common;

mod anywhere;
mod audit_edge;
mod audit_export;
mod audit_trail;
mod bad_input;
mod checks;
mod cli;
mod clinical;
mod clock;
mod connections;
mod crl_fetch;
mod disk_full;
mod dispensing;
mod durability;
mod events;
mod failover;
mod fleet;
mod fuzz_corpus;
mod gateway;
mod hostile;
mod hot_rows;
mod import;
mod import_fleet;
mod intake;
mod invariants;
mod lifecycle;
mod limbo;
mod master;
mod numeric_edges;
mod ops_http;
mod pool_loss;
mod postgres;
mod pseudonymized_keys;
mod reflection;
mod relay;
mod relay_drill;
mod relay_fleet;
mod review_27;
mod review_27b;
mod review_28;
mod review_29;
mod signature;
mod store;
mod store_damage;
mod store_dump;
mod store_dump_checks;
mod store_postgres_moves;
mod store_verify;
mod sync_commit;
mod tls;
mod upgrade;
