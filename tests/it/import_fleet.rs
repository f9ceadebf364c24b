//! Master imports in a fleet: gateways over one PostgreSQL database (`common::fleet`), the
//! import sent through one of them with `rxgate master import` (the real binary). The others
//! put it in force within their poll of the imports' version; one that cannot load it keeps
//! checking with the data it has, says so in `/readyz`, the gRPC health service and
//! `rxgate_master_stale`, and comes back once an import it can load follows.

use std::path::{Path, PathBuf};

use rxgate::master_files::gunzip_bounded;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::{
    common::{Harness, fleet},
    import::{
        ADDED_IN_LAST_UPDATE, LAST_UPDATE, data, findings_for, import_cli,
        masters_without_last_update, not_checked,
    },
    lifecycle::until_health,
    ops_http::get,
    relay::until_metric,
};

/// Imports `files` through `h` with the real binary; panics unless it succeeded.
fn import(h: &Harness, files: &[&Path]) {
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| import_cli(h, files));
    assert!(ok, "{stdout}\n{stderr}");
}

/// The shipped update file of 2025-08-13.
fn last_update() -> PathBuf {
    data().join("masters/y_updates").join(LAST_UPDATE)
}

/// Whether the configuration is the fleet's second gateway's (`gateway-b`).
fn is_b(config: &rxgate::config::Config) -> bool {
    config
        .gateway
        .cert
        .file_name()
        .is_some_and(|name| name == "gateway-b.cert.pem")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_through_one_gateway_is_in_force_on_the_other_within_its_poll() {
    let root = tempfile::tempdir().unwrap();
    let masters_dir = masters_without_last_update(root.path());
    let Some(fleet) = fleet::start(2, |c| c.checks.masters_dir = Some(masters_dir.clone())).await
    else {
        return;
    };
    let (a, b) = (&fleet[0], &fleet[1]);
    assert!(not_checked(&findings_for(b, ADDED_IN_LAST_UPDATE).await));

    import(a, &[&last_update()]);
    assert!(!not_checked(&findings_for(a, ADDED_IN_LAST_UPDATE).await));
    // Awaited by its version rather than by checks, which the per-patient budget would stop.
    until_metric(b, "rxgate_master_imported_files 1").await;
    assert!(!not_checked(&findings_for(b, ADDED_IN_LAST_UPDATE).await));
    assert_eq!(
        b.metrics_line("rxgate_master_stale ").await,
        "rxgate_master_stale 0"
    );
    assert_eq!(get(b.metrics_addr, "/readyz").await.0, 200);
    for h in fleet {
        h.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_cannot_load_an_import_is_not_ready_until_one_it_can_load() {
    let root = tempfile::tempdir().unwrap();
    let masters_dir = masters_without_last_update(root.path());
    // B runs on the shipped masters, which hold the update of 2025-08-13 already: the same
    // file imported under the next day's name adds products B has, which B cannot load.
    let Some(fleet) = fleet::start(2, |c| {
        c.checks.masters_dir = (!is_b(c)).then(|| masters_dir.clone());
    })
    .await
    else {
        return;
    };
    let (a, b) = (&fleet[0], &fleet[1]);
    let again = root.path().join("y_20250814.csv.gz");
    std::fs::copy(last_update(), &again).unwrap();
    import(a, &[&again]);

    until_metric(b, "rxgate_master_stale 1").await;
    let (status, body) = get(b.metrics_addr, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cannot be loaded"), "{body}");
    assert!(
        body.contains("y_20250814"),
        "the reason names the file: {body}"
    );
    until_health(&b.channel("clinic").await, ServingStatus::NotServing).await;
    assert_eq!(
        b.metrics_line("rxgate_master_imported_files ").await,
        "rxgate_master_imported_files 0",
        "B checks with the data it had"
    );
    assert!(!not_checked(&findings_for(b, ADDED_IN_LAST_UPDATE).await));
    assert_eq!(get(a.metrics_addr, "/readyz").await.0, 200);

    // A full file of a later date supersedes the update: every gateway can load that. (The
    // shipped one less its last product, or it would be the file in force already.)
    let shipped = std::fs::read(data().join("masters/y_ALL20240321.csv.gz")).unwrap();
    let shipped = gunzip_bounded(&shipped).unwrap();
    let last = shipped
        .trim_ascii_end()
        .iter()
        .rposition(|b| *b == b'\n')
        .unwrap();
    let full = root.path().join("y_ALL20250815.csv");
    std::fs::write(&full, &shipped[..=last]).unwrap();
    // Not through B: its data is not the store's, and an import over it would drop A's.
    let (ok, _, stderr) = tokio::task::block_in_place(|| import_cli(b, &[&full]));
    assert!(!ok && stderr.contains("FailedPrecondition"), "{stderr}");
    import(a, &[&full]);
    until_metric(b, "rxgate_master_stale 0").await;
    until_health(&b.channel("clinic").await, ServingStatus::Serving).await;
    assert_eq!(get(b.metrics_addr, "/readyz").await.0, 200);
    assert_eq!(
        b.metrics_line("rxgate_master_imported_files ").await,
        "rxgate_master_imported_files 2"
    );
    for h in fleet {
        h.shutdown().await;
    }
}
