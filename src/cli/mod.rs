//! The command-line clients of a running gateway, each a subcommand of `rxgate` (`main.rs` parses
//! the arguments and calls them): `admin` (lockouts, unlock), `audit` (verify, checkpoints,
//! export), `master_import` (`rxgate master import`) and `demo`. Each talks to the gateway as an
//! integrator would, over gRPC with mutual TLS, or reads a stopped store.

pub mod admin;
pub mod args;
pub mod audit;
pub mod config_check;
pub mod demo;
pub mod documents;
pub mod master_import;
