//! The load test end to end, as a functional test (nothing here is timed): `loadtest --spawn`
//! against the real gateway binary for a few seconds at a low rate — every acknowledged
//! registration must read back (`lost` = 0) and the JSON line must carry its stable keys — and
//! the echo ceiling over the same mutual TLS; and the worst requests at small sizes.

use std::{path::PathBuf, process::Command};

use serde_json::{Value, json};

/// The keys every JSON line carries, whatever the scenario (null when they do not apply).
const STABLE_KEYS: [&str; 15] = [
    "scenario",
    "registrations_with_findings",
    "findings_returned",
    "duration_s",
    "rate_target",
    "register_per_s",
    "full_flow_per_s",
    "echo_per_s",
    "p50_ms",
    "p99_ms",
    "p999_ms",
    "max_ms",
    "errors",
    "acknowledged",
    "lost",
];

/// The gateway binary, built into the same folder as `loadtest` (`cargo test` at the workspace
/// root builds both packages before running any test).
fn rxgate_binary() -> PathBuf {
    let loadtest = PathBuf::from(env!("CARGO_BIN_EXE_loadtest"));
    let rxgate = loadtest.with_file_name(format!("rxgate{}", std::env::consts::EXE_SUFFIX));
    assert!(
        rxgate.is_file(),
        "no rxgate binary at {}: run the tests from the workspace root (cargo test), or \
         `cargo build --bin rxgate` first",
        rxgate.display()
    );
    rxgate
}

/// Runs `loadtest ARGS` from the repository root, as its README does; it must succeed; returns
/// its last line of output, parsed.
fn last_json(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(args)
        .output()
        .expect("running loadtest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "loadtest failed: {}",
        output.status
    );
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).expect("the last line is JSON")
}

/// Runs a load (`loadtest ARGS`), which must succeed; its JSON line, with every stable key.
fn loadtest(args: &[&str]) -> Value {
    let json = last_json(args);
    for key in STABLE_KEYS {
        assert!(json.get(key).is_some(), "no {key} in {json}");
    }
    json
}

#[test]
fn a_short_full_flow_run_against_the_spawned_gateway_loses_nothing() {
    let rxgate = rxgate_binary();
    let json = loadtest(&[
        "--spawn",
        "--rxgate-bin",
        rxgate.to_str().unwrap(),
        "--scenario",
        "full-flow",
        "--rate",
        "20",
        "--warmup",
        "0.5",
        "--duration",
        "2",
        "--patients",
        "8",
        "--history",
        "20",
        "--clinics",
        "3",
        "--history-clinics",
        "2",
        "--pharmacies",
        "3",
        "--findings",
        "0.2",
    ]);
    assert_eq!(json["scenario"], "full-flow");
    assert_eq!(json["errors"], 0, "{json}");
    assert_eq!(json["lost"], 0, "{json}");
    // Every started flow is audited, the warm-up's too: 20/s for 2.5 s.
    assert!(json["acknowledged"].as_u64().unwrap() >= 45, "{json}");
    assert!(json["full_flow_per_s"].as_f64().unwrap() > 0.0, "{json}");
    assert!(json["register_per_s"].as_f64().unwrap() > 0.0, "{json}");
    // Only the prescriptions picked by --findings meet a finding (a patient's measured
    // prescriptions come from one clinic, excluded from its own checks), and each a critical one.
    let critical = json["registrations_with_critical_findings"]
        .as_u64()
        .unwrap();
    assert!(critical > 0, "{json}");
    assert_eq!(json["registrations_with_findings"], critical, "{json}");
    // The gateway's own account of the same run, from its /metrics: every acknowledged
    // registration was answered OK inside it, checked, and flushed.
    let server = &json["server"];
    let registered = server["rpcs"]["RegisterPrescription"]["ok"]
        .as_f64()
        .unwrap();
    assert_eq!(registered, json["acknowledged"].as_f64().unwrap(), "{json}");
    assert!(
        server["rpcs"]["RecordDispensing"]["mean_ms"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert!(server["check_mean_ms"].as_f64().unwrap() > 0.0, "{json}");
    assert!(server["flushes"].as_f64().unwrap() > 0.0, "{json}");
}

/// The echo in the load test's own process, and (`--spawn`) in a process of its own.
#[test]
fn the_echo_ceiling_runs_over_the_same_mutual_tls() {
    for spawn in [false, true] {
        let mut args = vec![
            "--scenario",
            "echo",
            "--concurrency",
            "4",
            "--warmup",
            "0.2",
            "--duration",
            "1",
            "--clinics",
            "2",
        ];
        if spawn {
            args.push("--spawn");
        }
        let json = loadtest(&args);
        assert_eq!(json["errors"], 0, "{json}");
        assert_eq!(json["lost"], 0);
        assert!(json["echo_per_s"].as_f64().unwrap() > 0.0, "{json}");
        assert_eq!(json["register_per_s"], Value::Null);
        assert_eq!(
            json["server"],
            Value::Null,
            "the echo has no gateway metrics"
        );
    }
}

/// The worst requests at small sizes (4 lines, histories of 12 entries: the spawned gateway is
/// configured with them): every triazolam line meets one critical finding, however many
/// itraconazole entries, the registration acknowledges all of its own and registers, the
/// dispensing check names as many lines as allowed, a history of different products names
/// each, and the run reads the gateway's memory.
#[test]
fn the_worst_requests_meet_one_critical_finding_per_line() {
    let rxgate = rxgate_binary();
    let (lines, history) = (4, 12);
    let json = last_json(&[
        "--spawn",
        "--rxgate-bin",
        rxgate.to_str().unwrap(),
        "--scenario",
        "worst",
        "--repetitions",
        "2",
        "--lines",
        &lines.to_string(),
        "--history-entries",
        &history.to_string(),
    ]);
    assert_eq!(json["scenario"], "worst");
    let requests = &json["requests"];
    let critical = |name: &str| requests[name]["critical"].as_u64().unwrap();
    for name in [
        "check",
        "check-mix",
        "check-unconsented",
        "check-grouped",
        "check-before-register",
        "register",
        "receive",
        "receive-grouped",
        "check-dispensing",
    ] {
        assert_eq!(requests[name]["codes"], json!({"Ok": 2}), "{name}: {json}");
        assert!(requests[name]["peak_extra_rss_mib"].is_number(), "{json}");
        assert!(requests[name]["rss_before_mib"].as_f64().unwrap() > 0.0);
    }
    // One per line, naming every entry.
    for name in ["check", "check-before-register", "register", "receive"] {
        assert_eq!(critical(name), lines, "{name}: {json}");
    }
    let dispensing_lines = rxgate::limits::Limits::default().dispensing_lines as u64;
    assert_eq!(critical("check-dispensing"), dispensing_lines, "{json}");
    // A history of different products of triazolam's rows: one finding per (line, row), and
    // every line's findings name every entry.
    assert!(critical("check-grouped") >= lines, "{json}");
    let named = |name: &str| requests[name]["named"].as_u64().unwrap();
    assert!(named("check-grouped") >= lines * history, "{json}");
    // Received against as many dispensed, less the received prescription's own lines.
    assert!(critical("receive-grouped") >= lines, "{json}");
    assert!(
        named("receive-grouped") >= lines * (history - lines),
        "{json}"
    );
    // Without consent, one masked finding per line and kind.
    assert_eq!(critical("check-unconsented"), lines, "{json}");
    // The mix meets duplicates and cautions too.
    assert!(
        requests["check-mix"]["others"].as_u64().unwrap() > 0,
        "{json}"
    );
}
