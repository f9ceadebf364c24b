//! Compiles the public contract in `proto/` with protox (pure Rust), so no system `protoc` is
//! needed, and names the commit the binary is built from (`rxgate --version`).

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    version_with_commit();
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

/// Sets `RXGATE_VERSION`: the crate version and, when built from a git checkout, the short
/// commit (`0.1.0 (ab12cd3)`); only the crate version without git or `.git` (a source archive),
/// never a failed build. Rebuilt when HEAD moves: its file, the folder of the branch it names (a
/// commit writes the loose ref there) and packed-refs; a worktree's are found by `git rev-parse`.
fn version_with_commit() {
    let version = env!("CARGO_PKG_VERSION");
    let git = |args: &[&str]| {
        let out = Command::new("git").args(args).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        out.status.success().then(|| text.trim().to_owned())
    };
    let commit = Path::new(".git")
        .exists()
        .then(|| git(&["rev-parse", "--short", "HEAD"]))
        .flatten();
    let Some(commit) = commit else {
        println!("cargo:rustc-env=RXGATE_VERSION={version}");
        return;
    };
    println!("cargo:rustc-env=RXGATE_VERSION={version} ({commit})");
    let path = |name: &str| git(&["rev-parse", "--git-path", name]).map(PathBuf::from);
    let mut watched: Vec<PathBuf> = [path("HEAD"), path("packed-refs")]
        .into_iter()
        .flatten()
        .collect();
    // A commit writes the branch's loose ref in this folder (the file may not exist yet).
    let branch = git(&["rev-parse", "--symbolic-full-name", "HEAD"]).filter(|b| b != "HEAD");
    if let Some(folder) = branch.and_then(|b| Some(path(&b)?.parent()?.to_owned())) {
        watched.push(folder);
    }
    // A path that does not exist would rerun this script at every build.
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}
