//! Compiles the public contract in `proto/` with protox (pure Rust), so no system `protoc` is needed.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/rxgate/v1/documents.proto",
        "proto/rxgate/v1/checks.proto",
        "proto/rxgate/v1/common.proto",
        "proto/rxgate/v1/prescription_service.proto",
        "proto/rxgate/v1/dispensing_service.proto",
        "proto/rxgate/v1/admin_service.proto",
        "proto/rxgate/v1/event_service.proto",
        "proto/rxgate/v1/management_intake.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(protos, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // The descriptor set also serves JSON mapping (`rxgate sign`) and, later, server reflection.
    std::fs::write(
        out.join("rxgate_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
