//! Server reflection as generic tools use it: Python's grpcio-reflection client, which speaks
//! only `grpc.reflection.v1alpha`, lists the services of a running gateway over mutual TLS and
//! resolves one service's file descriptor (`tests/reflection/list_services.py`).
//!
//! The Python modules stay outside the repository: `.ci/run` installs them (`pip install grpcio
//! grpcio-reflection`). Without them the test fails under CI (`CI` set) and otherwise says it is
//! skipped and passes.

use crate::common;

use std::{path::Path, process::Command};

use common::dev_pki;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/reflection/list_services.py"
);

/// Whether python3 can import the reflection client; under CI its absence is a failure.
fn python_reflection_client() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import grpc_reflection.v1alpha"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but python3 cannot import grpc_reflection (.ci/run installs it)"
        );
        println!("reflection: SKIPPED — `pip install grpcio grpcio-reflection` to run it");
    }
    found
}

/// Runs the script against `addr` as the development clinic; its standard output.
fn list_services(addr: &str, service: &str) -> String {
    let client = dev_pki().client("clinic");
    let target = addr.trim_start_matches("https://");
    let paths: [&Path; 3] = [&client.ca, &client.cert, &client.key];
    let out = Command::new("python3")
        .arg(SCRIPT)
        .arg(target)
        .args(paths)
        .arg(service)
        .output()
        .expect("running python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{SCRIPT} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v1alpha_client_lists_the_services_and_resolves_a_descriptor() {
    if !python_reflection_client() {
        return;
    }
    let h = common::start_with(|_| {}).await;
    let addr = h.addr.clone();
    let stdout =
        tokio::task::spawn_blocking(move || list_services(&addr, "rxgate.v1.PrescriptionService"))
            .await
            .unwrap();
    let services: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("service "))
        .collect();
    for expected in [
        "rxgate.v1.PrescriptionService",
        "rxgate.v1.DispensingService",
        "rxgate.v1.AdminService",
        "rxgate.v1.EventService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.contains(&expected),
            "{expected} not listed:\n{stdout}"
        );
    }
    assert!(
        stdout
            .lines()
            .any(|l| l == "method rxgate.v1.PrescriptionService/RegisterPrescription"),
        "the descriptor did not resolve:\n{stdout}"
    );
    h.shutdown().await;
}
