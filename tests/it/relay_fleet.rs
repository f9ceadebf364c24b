//! One relay in a fleet, with real processes: two gateways over one PostgreSQL database, both
//! with `[relay]` to one upstream (a real rxgate with its intake). Only the holder of the relay's
//! lease relays; when it is killed with SIGKILL in the middle of the stream, the other takes the
//! lease over once it has run out, and the upstream ends up holding every dispensing record
//! exactly once, delivered by one gateway at a time.

use std::{
    fs,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::mpsc;

use crate::{
    common::{dev_pki, intake_rows, postgres, process::Serve, signer},
    lifecycle::serve_configured,
    relay_drill::{Gateway, clients, make_record},
};

/// The lease's term (`[relay] lease_secs`) where a gateway is killed: short, so that the test
/// waits little for it, yet long enough that a renewal must be late by 6.7 s to move it (with
/// 5 s, a renewal late by 3.3 s while the whole suite loaded the machine moved the lease before
/// the kill, and the upstream heard from one gateway only).
const LEASE_SECS: u64 = 10;
/// What a takeover may take beyond the term: the next look (a third of the term), a loaded
/// machine.
const MARGIN: Duration = Duration::from_secs(7);
/// Records made while both gateways run; while the holder is killed (some may be relayed
/// before the kill, all of them on a fast machine); and after the kill, which only the other
/// gateway can relay.
const BEFORE: u32 = 16;
const DURING: u32 = 24;
const AFTER: u32 = 8;

/// The `[gateway]` identities of the two gateways in the development PKI. The upstream trusts
/// both: it notes of each record which one attested it (`attested_by`), the one that delivered it.
const IDENTITIES: [&str; 2] = ["gateway", "gateway-b"];

/// Replaces `from`, which must be there, by `to` in the configuration file `file`.
fn rewrite(file: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{from} is not in\n{text}");
    fs::write(file, text.replace(from, to)).unwrap();
}

/// The upstream: `rxgate serve --config` as the example configures it, its store and log in
/// `dir`, its intake trusting both gateways' attestations.
fn upstream(dir: &Path) -> Serve {
    let serve = serve_configured(dir, "");
    let [_, other] = IDENTITIES.map(|i| {
        dev_pki()
            .gateway()
            .cert
            .with_file_name(format!("{i}.cert.pem"))
    });
    rewrite(
        &dir.join("rxgate.toml"),
        "trusted_senders = [",
        &format!("trusted_senders = [{other:?}, "),
    );
    serve
}

/// A gateway of the fleet: `rxgate serve --config` over the database `postgres`, relaying to
/// `upstream` under a lease of `lease_secs` and signing as the development identity
/// `identity`; its store folder and log in `dir`.
fn fleet_gateway(
    dir: &Path,
    identity: &str,
    postgres: &rxgate::store::PostgresConfig,
    (upstream, lease_secs): (&str, u64),
) -> Serve {
    let management = dev_pki().client("management");
    let settings = format!(
        "store_engine = \"postgres\"\n\
         postgres = {{ url = {:?}, password_file = {:?}, ca_file = {:?}, pool_size = 4 }}\n\
         relay = {{ upstream = {upstream:?}, client_cert = {:?}, client_key = {:?}, \
         upstream_ca = {:?}, lease_secs = {lease_secs} }}\n",
        postgres.url,
        postgres.password_file.as_ref().unwrap(),
        postgres.ca_file.as_ref().unwrap(),
        management.cert,
        management.key,
        management.ca,
    );
    let serve = serve_configured(dir, &settings);
    // The example's [gateway] is the first identity.
    for file in ["key", "cert"] {
        rewrite(
            &dir.join("rxgate.toml"),
            &format!("gateway/gateway.{file}.pem\"\n"),
            &format!("gateway/{identity}.{file}.pem\"\n"),
        );
    }
    serve
}

/// Makes records `range` through the gateway at `addr`, `workers` at a time, saying on `made`
/// when each is made.
async fn make_records(
    addr: String,
    range: std::ops::Range<u32>,
    workers: u32,
    made: mpsc::UnboundedSender<u32>,
) {
    let keys = Arc::new((signer("doctor"), signer("pharmacist")));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (addr, keys, range, made) =
            (addr.clone(), Arc::clone(&keys), range.clone(), made.clone());
        tasks.push(tokio::spawn(async move {
            let (mut clinic, mut pharmacy) = clients(&addr).await;
            for i in range.skip(w as usize).step_by(workers as usize) {
                make_record(&mut clinic, &mut pharmacy, &keys, i).await;
                let _ = made.send(i);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

/// The upstream and two gateways over one new database relaying to it under a lease of
/// `lease_secs`, each in a folder of `dir`, once one of them holds the lease; None when
/// PostgreSQL is not installed.
async fn start(dir: &Path, lease_secs: u64) -> Option<(Gateway, [Gateway; 2])> {
    let database = postgres::installed()?.database();
    let up_dir = dir.join("up");
    fs::create_dir_all(&up_dir).unwrap();
    let up = Gateway(upstream(&up_dir).start().await);
    let mut fleet = Vec::new();
    for identity in IDENTITIES {
        let home = dir.join(identity);
        fs::create_dir_all(&home).unwrap();
        let serve = fleet_gateway(&home, identity, &database, (&up.0.addr, lease_secs));
        fleet.push(Gateway(serve.start().await));
    }
    let fleet: [Gateway; 2] = fleet.try_into().ok()?;
    // Either may take it first: the first's first try runs while the second starts.
    let deadline = Instant::now() + Duration::from_secs(60);
    while fleet[0].metric("rxgate_relay_lease_held").await
        + fleet[1].metric("rxgate_relay_lease_held").await
        == 0
    {
        assert!(Instant::now() < deadline, "no gateway took the lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some((up, fleet))
}

/// Waits until `gateway` holds the lease; fails unless it took it over within `within` after
/// `since`.
async fn takes_over(gateway: &Gateway, since: Instant, within: Duration) {
    gateway
        .until("rxgate_relay_lease_held", |held| held == 1)
        .await;
    let took = since.elapsed();
    assert!(took < within, "took over after {took:?}");
}

/// Which of `fleet` holds the relay's lease (its `rxgate_relay_lease_held`), after checking
/// that exactly one does.
async fn holder(fleet: &[Gateway; 2]) -> usize {
    let held = [
        fleet[0].metric("rxgate_relay_lease_held").await,
        fleet[1].metric("rxgate_relay_lease_held").await,
    ];
    assert_eq!(
        held.iter().sum::<u64>(),
        1,
        "exactly one holds the lease: {held:?}"
    );
    usize::from(held[1] == 1)
}

/// `fleet` as the holder of the relay's lease and the other, after checking that exactly one
/// holds it.
async fn holder_first(fleet: [Gateway; 2]) -> (Gateway, Gateway) {
    let held = holder(&fleet).await;
    let [first, second] = fleet;
    if held == 0 {
        (first, second)
    } else {
        (second, first)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gateway_relays_and_another_takes_over_when_it_is_killed_with_every_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some((up, fleet)) = start(dir.path(), LEASE_SECS).await else {
        return;
    };

    // Records made through both gateways: one relays them all.
    let (made, mut making) = mpsc::unbounded_channel();
    for (n, gateway) in fleet.iter().enumerate() {
        let first = n as u32 * BEFORE / 2;
        let range = first..first + BEFORE / 2;
        make_records(gateway.0.addr.clone(), range, 2, made.clone()).await;
        holder(&fleet).await;
    }
    let (killed, survivor) = holder_first(fleet).await;
    killed
        .until("rxgate_relay_lag_events", |lag| lag == 0)
        .await;
    let before = killed.metric("rxgate_relay_acked_sequence").await;

    // The holder is killed while it relays the records that flow through the other.
    let flowing = tokio::spawn(make_records(
        survivor.0.addr.clone(),
        BEFORE..BEFORE + DURING,
        2,
        made.clone(),
    ));
    for _ in 0..BEFORE + 2 {
        making.recv().await.unwrap();
    }
    killed
        .until("rxgate_relay_acked_sequence", |acked| acked > before)
        .await;
    killed.kill();
    let killed_at = Instant::now();
    let total = BEFORE + DURING + AFTER;
    let made_after = async {
        flowing.await.unwrap();
        make_records(survivor.0.addr.clone(), BEFORE + DURING..total, 2, made).await;
    };
    let term = Duration::from_secs(LEASE_SECS) + MARGIN;
    tokio::join!(takes_over(&survivor, killed_at, term), made_after);

    // Every record reaches the upstream once.
    let events = u64::from(total) * 3;
    survivor
        .until("rxgate_relay_acked_sequence", |acked| acked >= events)
        .await;
    survivor
        .until("rxgate_relay_lag_events", |lag| lag == 0)
        .await;
    assert_eq!(survivor.metric("rxgate_relay_dead_letters_total").await, 0);
    survivor.kill();
    up.kill();
    let upstream_store = rxgate::store::EmbeddedStore::open(&dir.path().join("up/store")).unwrap();
    let held = intake_rows(&upstream_store).await;
    upstream_store.close().unwrap();
    let mut ids: Vec<_> = held.iter().map(|r| r.record.record_id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total as usize, "every record, once");
    assert_eq!(held.len(), ids.len(), "no record twice");

    // Delivered by one gateway at a time: the killed one's first, then the survivor's.
    let by: Vec<_> = held.iter().map(|r| r.attested_by.clone()).collect();
    assert!(
        by.iter().all(Option::is_some),
        "attested by a gateway it trusts"
    );
    let switches = by.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(
        switches, 1,
        "the upstream heard from one gateway, then the other: {by:?}"
    );
}

/// A gateway that stops gives the lease up as it closes its store: the other takes over at its
/// next try (a third of the term), long before the term of the last renewal would have run out
/// (two thirds of it at the least).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_stops_gives_the_lease_up_at_once() {
    const LEASE: Duration = Duration::from_secs(30);
    let dir = tempfile::tempdir().unwrap();
    let Some((up, fleet)) = start(dir.path(), LEASE.as_secs()).await else {
        return;
    };
    let (holder, other) = holder_first(fleet).await;
    holder.0.signal("TERM");
    takes_over(
        &other,
        Instant::now(),
        LEASE * 2 / 3 - Duration::from_secs(3),
    )
    .await;
    holder.kill();
    other.kill();
    up.kill();
}
