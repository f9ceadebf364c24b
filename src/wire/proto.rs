//! The generated protobuf types of the public contract (`proto/rxgate/v1`).

/// Package `rxgate.v1`.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/rxgate.v1.rs"));
}

/// The encoded `FileDescriptorSet` of the contract, for JSON mapping and reflection.
pub const DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/rxgate_descriptor.bin"));
