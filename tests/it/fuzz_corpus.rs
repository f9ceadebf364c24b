//! The corpus replay: every committed fuzz input (`fuzz/corpus/TARGET/`) and every crash found
//! (`fuzz/regressions/TARGET/`) goes through the same `rxgate::fuzzing` function the cargo-fuzz
//! target calls, so CI runs what the fuzzers found without building them (docs/FUZZING.md).
//! Also the seeds, the corpora's starting points made from the test fixtures: run through their
//! targets, and written on request.

use std::{
    fs,
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
    time::Duration,
};

use crate::common::{dev_pki, patient, signer};
use prost::Message;
use rxgate::{
    cli::demo::{demo_dispensing, demo_prescription},
    domain::{signature::VerifierConfig, time::JapanDate},
    fuzzing,
    wire::proto::v1 as pb,
};

/// A fuzz entry point of `rxgate::fuzzing`.
type Entry = fn(&[u8]);

/// Each target's name (its folder) and entry point.
const TARGETS: [(&str, Entry); 5] = [
    ("cms", fuzzing::cms),
    ("document", fuzzing::document),
    ("master", fuzzing::master),
    ("contraindications", fuzzing::contraindications),
    ("config", fuzzing::config),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The files directly in `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found
}

#[test]
fn every_committed_fuzz_input_replays_without_a_panic() {
    let mut panicked = Vec::new();
    for (name, target) in TARGETS {
        let corpus = files(&root().join("fuzz/corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} holds no input");
        let regressions = files(&root().join("fuzz/regressions").join(name));
        for path in corpus.iter().chain(&regressions) {
            let input = fs::read(path).unwrap();
            if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
                panicked.push(path.strip_prefix(root()).unwrap().display().to_string());
            }
        }
    }
    assert!(panicked.is_empty(), "these inputs panic: {panicked:?}");
}

/// The first `lines` lines of a fixture (bytes, so a cp932 file stays as published).
fn head(path: &str, lines: usize) -> Vec<u8> {
    let bytes = fs::read(root().join(path)).unwrap();
    let mut out = Vec::new();
    for line in bytes.split_inclusive(|&b| b == b'\n').take(lines) {
        out.extend_from_slice(line);
    }
    out
}

/// The header line of a fixture and its lines `from..to`.
fn rows(path: &str, from: usize, to: usize) -> Vec<u8> {
    let bytes = fs::read(root().join(path)).unwrap();
    let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
    [&lines[..1], &lines[from..to.min(lines.len())]]
        .concat()
        .concat()
}

fn signed(name: &str, content: &[u8]) -> Vec<u8> {
    let signing_time = fuzzing::received_at() - Duration::from_secs(60);
    signer(name).sign(content, signing_time).unwrap()
}

/// The seed inputs of each target, named, made from the test fixtures and the dev PKI.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let today = JapanDate::of(fuzzing::received_at());
    let prescription = demo_prescription("RX-FUZZ-0001", patient(1), today).encode_to_vec();
    let dispensing = demo_dispensing("RX-FUZZ-0001", today).encode_to_vec();
    let mut seeds = vec![
        ("document", "prescription".into(), prescription.clone()),
        ("document", "dispensing".into(), dispensing.clone()),
    ];
    for (signer, is_dispensing, content) in [
        ("doctor", false, &prescription),
        ("doctor-ec", false, &prescription),
        ("dentist", false, &prescription),
        ("pharmacist", true, &dispensing),
        ("pharmacist-ec", true, &dispensing),
        ("pharmacist", false, &prescription),
        ("doctor-revoked", false, &prescription),
        ("doctor-auth", false, &prescription),
        ("untrusted-doctor", false, &prescription),
    ] {
        let cms = signed(signer, content);
        let kind = if is_dispensing {
            "dispensing"
        } else {
            "prescription"
        };
        seeds.push((
            "cms",
            format!("{signer}-{kind}"),
            fuzzing::cms_input(is_dispensing, content, &cms),
        ));
    }
    for (name, file) in [
        ("y-all", "tests/data/master/y_ALL20240321_cut.csv"),
        ("y-update", "tests/data/master/y_20240417_cut.csv"),
        ("y-abolish", "tests/data/master/y_20240628_cut.csv"),
        (
            "y-delete-restore",
            "tests/data/master/synthetic_y_delete_restore.csv",
        ),
    ] {
        seeds.push(("master", name.into(), head(file, 6)));
    }
    seeds.push((
        "master",
        "yakka-list".into(),
        head("tests/data/master/mhlw_yakka_list_20250716_cut.csv", 6),
    ));
    seeds.push((
        "master",
        "ippan-master".into(),
        head("tests/data/master/ippan_master_20250814_cut.csv", 8),
    ));
    let table = "data/clinical/contraindications_structured.csv";
    for (from, to) in [(1, 4), (40, 44), (80, 84)] {
        seeds.push((
            "contraindications",
            format!("rows-{from}"),
            rows(table, from, to),
        ));
    }
    seeds.push((
        "config",
        "example".into(),
        fs::read(root().join("examples/rxgate.toml")).unwrap(),
    ));
    seeds
}

/// The fuzzed receipt time lies where the dev PKI's signatures verify to the end, so that the
/// seeds take the mutations through every step (a regenerated PKI or CRL may move it).
#[test]
fn the_signed_seeds_verify_as_of_the_fuzzed_receipt_time() {
    let (verifier, _) = dev_pki().signing().load(VerifierConfig::default()).unwrap();
    let today = JapanDate::of(fuzzing::received_at());
    let at = fuzzing::received_at();
    let content = demo_prescription("RX-FUZZ-0001", patient(1), today).encode_to_vec();
    verifier
        .verify::<pb::Prescription>(&content, &signed("doctor", &content), at)
        .unwrap();
    let content = demo_dispensing("RX-FUZZ-0001", today).encode_to_vec();
    verifier
        .verify::<pb::DispensingRecord>(&content, &signed("pharmacist", &content), at)
        .unwrap();
}

/// The seeds go through their targets without a panic; with `RXGATE_WRITE_FUZZ_SEEDS=1` they
/// are also written into `fuzz/corpus/TARGET/seed-NAME` (once, before fuzzing: the minimized
/// corpora keep what they still add).
#[test]
fn the_seeds_run_through_their_targets() {
    let write = std::env::var_os("RXGATE_WRITE_FUZZ_SEEDS").is_some();
    for (target, name, bytes) in seeds() {
        let (_, entry) = TARGETS.iter().find(|(t, _)| *t == target).unwrap();
        assert!(
            catch_unwind(AssertUnwindSafe(|| entry(&bytes))).is_ok(),
            "seed {target}/{name} panicked"
        );
        if write {
            let dir = root().join("fuzz/corpus").join(target);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}
