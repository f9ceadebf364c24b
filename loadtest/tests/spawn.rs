//! The load test end to end, as a functional test (nothing here is timed): `loadtest --spawn`
//! against the real gateway binary for a few seconds at a low rate — every acknowledged
//! registration must read back (`lost` = 0) and the JSON line must carry its stable keys — and
//! the echo ceiling over the same mutual TLS.

use std::{path::PathBuf, process::Command};

use serde_json::Value;

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

/// Runs `loadtest ARGS`; it must succeed; returns its last line of output, parsed.
fn loadtest(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_loadtest"))
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
    let json: Value = serde_json::from_str(last).expect("the last line is JSON");
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
