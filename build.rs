//! Compiles the public contract in `proto/` with protox (pure Rust), so no system `protoc` is
//! needed; names the commit the binary is built from (`rxgate --version`); and lists the shipped
//! drug data for `src/master_files.rs` to embed, so that the binary runs without the source tree
//! and a file added to `data/masters` needs no code change.

use std::{
    env,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    version_with_commit();
    embed_shipped_data()?;
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

/// The shipped drug masters (every `.csv` or `.csv.gz` of `data/masters` and of its `y_updates/`)
/// and the contraindication table, as `include_bytes!` items of `OUT_DIR/shipped_data.rs`:
/// `MASTERS`, each file's path below `data/masters` with its bytes, sorted by path; and
/// `CONTRAINDICATIONS`, the table's name and bytes.
fn embed_shipped_data() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let masters = root.join("data/masters");
    let table = root.join("data/clinical/contraindications_structured.csv");
    println!("cargo:rerun-if-changed=data/masters");
    println!("cargo:rerun-if-changed=data/clinical/contraindications_structured.csv");
    let mut files = Vec::new();
    for dir in [masters.clone(), masters.join("y_updates")] {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if path.is_file() && (name.ends_with(".csv") || name.ends_with(".csv.gz")) {
                files.push(path);
            }
        }
    }
    files.sort();
    let include = |path: &Path| format!("include_bytes!({:?})", path.display().to_string());
    let mut code = String::from("pub(super) const MASTERS: &[(&str, &[u8])] = &[\n");
    for path in &files {
        let below = path.strip_prefix(&masters)?.display().to_string();
        writeln!(code, "    ({below:?}, {}),", include(path))?;
    }
    writeln!(
        code,
        "];\npub(super) const CONTRAINDICATIONS: (&str, &[u8]) = ({:?}, {});",
        "contraindications_structured.csv",
        include(&table)
    )?;
    std::fs::write(
        PathBuf::from(env::var("OUT_DIR")?).join("shipped_data.rs"),
        code,
    )?;
    Ok(())
}
