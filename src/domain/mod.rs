//! The domain core. Pure: no tonic, prost, sled or tokio::net; no clock reads; no IO.

pub mod signature;
