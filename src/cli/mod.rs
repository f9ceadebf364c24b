//! The command line: `args` (the clap definitions `main.rs` parses) and the subcommands'
//! work. Clients of a running gateway, over gRPC with mutual TLS as an integrator would talk to
//! it: `admin` (stuck, lockouts, unlock, confirm-clock), `audit` (export; verify and checkpoints also read a
//! stopped store), `master_import` (`rxgate master import`), `store` (`store backup`; `export`,
//! `import` and `restore` of a stopped store) and `demo`. Local work, no gateway: `documents`
//! (`sign`, `verify`), `config_check` (`config check`), `store_verify` (`store verify`, of a
//! stopped store or a database) and `store_postgres` (`store migrate`, and the dumps of a
//! PostgreSQL store).

pub mod admin;
pub mod args;
pub mod audit;
pub mod config_check;
pub mod demo;
pub mod documents;
pub mod master_import;
pub mod store;
pub mod store_postgres;
pub mod store_verify;
