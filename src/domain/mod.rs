//! The domain core. Pure: no tonic, prost, store engine or tokio::net; no clock reads; no IO.

pub mod checks;
pub mod hash;
pub mod ids;
pub mod master;
pub mod patient;
pub mod prescription;
pub mod rx;
pub mod signature;
pub mod time;
