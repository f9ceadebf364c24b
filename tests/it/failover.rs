//! The failover drill (issue 30): two real gateways (`rxgate serve --config`, identities
//! `gateway` and `gateway-b`) over a primary and its synchronous standby
//! (`common::failover::Pair`), reached by one multi-host URL with
//! `target_session_attrs=read-write`. Clients register, receive and dispense through both, and
//! race pharmacies for prescriptions; mid-load the primary's postmaster is killed with SIGKILL,
//! the standby promoted and told to wait for no standby. The gateways must find the new primary
//! by themselves, each acknowledging a registration within [`UNAVAILABLE_AT_MOST`] of the
//! promotion; and the new primary must hold every acknowledged registration and dispensing
//! record once, no prescription accepted by two pharmacies, and a feed that skips nothing. A
//! gateway restarted afterwards starts on the promoted standby: its acknowledged mark is not
//! ahead of it. Skipped, saying so, when PostgreSQL is not installed, except under CI.

use std::{
    collections::BTreeMap,
    fs,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use prost::Message;
use rxgate::{
    cli::demo::{demo_dispensing, demo_prescription},
    domain::time::JapanDate,
    wire::proto::v1::{
        self as pb, dispensing_service_client::DispensingServiceClient,
        prescription_service_client::PrescriptionServiceClient,
    },
};
use tonic::{Code, Status, transport::Channel};

use crate::common::{
    dev_pki, failover::Pair, institution_code, patient, process::Rxgate, signed, signer, throttled,
    whole_feed,
};
use crate::lifecycle::serve_configured;
use crate::store_damage::stop;

/// The most a gateway may take, from `pg_ctl promote` returning, to acknowledge a registration.
const UNAVAILABLE_AT_MOST: Duration = Duration::from_secs(10);
/// Clients registering (and, every other one, receiving and dispensing), spread over both
/// gateways.
const WORKERS: usize = 6;
/// Registrations acknowledged before the primary is killed, and again after the promotion.
const ACKED_BEFORE: usize = 40;
const ACKED_AFTER: usize = 40;
/// Pharmacies racing for each prescription of the race rounds (half through each gateway).
const RACERS: usize = 4;
/// How long a client keeps sending one request while the gateway answers UNAVAILABLE.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// The identities of the two gateways (certs/gateway).
const IDENTITIES: [&str; 2] = ["gateway", "gateway-b"];

/// What the clients were told: the acknowledged registrations, dispensing records and races.
#[derive(Default)]
struct Acknowledged {
    /// Number → (prescription id, through which gateway, when).
    registered: BTreeMap<String, (String, usize, Instant)>,
    /// (prescription id, record number).
    dispensed: Vec<(String, u32)>,
    /// Race prescription number → the pharmacies told that they accepted it.
    races: BTreeMap<String, Vec<String>>,
}

/// Everything the clients share: the gateways' addresses, the tally, and when to stop.
struct Load {
    addrs: Vec<String>,
    acked: Mutex<Acknowledged>,
    /// UNAVAILABLE answers the clients were given (and sent their request again after).
    unavailable: AtomicUsize,
    stop: AtomicBool,
}

impl Load {
    fn registered(&self) -> usize {
        self.acked.lock().unwrap().registered.len()
    }

    /// Waits until `done` holds of the tally; panics after `within`.
    async fn until(&self, within: Duration, what: &str, done: impl Fn(&Acknowledged) -> bool) {
        let deadline = Instant::now() + within;
        while !done(&self.acked.lock().unwrap()) {
            assert!(Instant::now() < deadline, "{what} within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `call` again while the gateway answers UNAVAILABLE (a database it cannot reach, a
    /// commit of unknown outcome) or asks to wait, as a client does that keeps its signed
    /// request: the same bytes each time, which the gateway's idempotency makes one
    /// registration or record.
    async fn until_answered<T, Fut>(&self, mut call: impl FnMut() -> Fut) -> Result<T, Status>
    where
        Fut: std::future::Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + RETRY_FOR;
        loop {
            match throttled(&mut call).await {
                Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                    self.unavailable.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                answered => return answered,
            }
        }
    }
}

async fn channel(addr: &str, client: &str) -> Channel {
    dev_pki().client(client).connect(addr).await.unwrap()
}

/// The registration of the demo prescription `number` for patient `n` by `institution`, signed
/// once.
fn registration(institution: &str, number: &str, n: u32) -> pb::RegisterPrescriptionRequest {
    let now = SystemTime::now();
    let mut rx = demo_prescription(number, patient(n), JapanDate::of(now));
    rx.institution_code = institution.into();
    pb::RegisterPrescriptionRequest {
        prescription: Some(signed(&signer("doctor"), rx.encode_to_vec(), now)),
        ..Default::default()
    }
}

async fn register(
    load: &Load,
    clinic: &PrescriptionServiceClient<Channel>,
    request: &pb::RegisterPrescriptionRequest,
) -> pb::RegisterPrescriptionResponse {
    let answer = load.until_answered(|| {
        let (mut clinic, request) = (clinic.clone(), request.clone());
        async move { clinic.register_prescription(request).await }
    });
    answer.await.unwrap().into_inner()
}

async fn receive(
    load: &Load,
    pharmacy: &DispensingServiceClient<Channel>,
    n: u32,
    exchange: &str,
) -> Result<pb::ReceivePrescriptionResponse, Status> {
    let request = pb::ReceivePrescriptionRequest {
        patient_key: Some(patient(n)),
        exchange_number: exchange.into(),
        ..Default::default()
    };
    let answer = load.until_answered(|| {
        let (mut pharmacy, request) = (pharmacy.clone(), request.clone());
        async move { pharmacy.receive_prescription(request).await }
    });
    answer.await.map(tonic::Response::into_inner)
}

/// Client `w`: registers through gateway `w % 2` until told to stop; every other prescription
/// the dev pharmacy receives and dispenses through the same gateway.
async fn worker(load: Arc<Load>, w: usize) {
    let gateway = w % IDENTITIES.len();
    let addr = &load.addrs[gateway];
    let clinic = PrescriptionServiceClient::new(channel(addr, "clinic").await);
    let pharmacy = DispensingServiceClient::new(channel(addr, "pharmacy").await);
    for i in 0.. {
        if load.stop.load(Ordering::Relaxed) {
            return;
        }
        let number = format!("FO-{w}-{i}");
        let n = 100_000 + 10_000 * u32::try_from(w).unwrap() + i;
        let r = register(&load, &clinic, &registration("1310000001", &number, n)).await;
        let acked = (r.prescription_id.clone(), gateway, Instant::now());
        load.acked
            .lock()
            .unwrap()
            .registered
            .insert(number.clone(), acked);
        if i % 2 == 0 {
            let received = receive(&load, &pharmacy, n, &r.exchange_number)
                .await
                .unwrap();
            assert_eq!(received.state, pb::PrescriptionState::Accepted as i32);
            let record = dispense(&load, &pharmacy, &number).await;
            let dispensed = (record.prescription_id, record.record_number);
            load.acked.lock().unwrap().dispensed.push(dispensed);
        }
    }
}

/// The demo dispensing record of `number`, signed once and sent until answered.
async fn dispense(
    load: &Load,
    pharmacy: &DispensingServiceClient<Channel>,
    number: &str,
) -> pb::RecordDispensingResponse {
    let now = SystemTime::now();
    let record = demo_dispensing(number, JapanDate::of(now));
    let request = pb::RecordDispensingRequest {
        dispensing_record: Some(signed(&signer("pharmacist"), record.encode_to_vec(), now)),
    };
    let answer = load.until_answered(|| {
        let (mut pharmacy, request) = (pharmacy.clone(), request.clone());
        async move { pharmacy.record_dispensing(request).await }
    });
    answer.await.unwrap().into_inner()
}

/// Rounds of a receive race until told to stop: the second clinic registers a prescription
/// (through each gateway in turn), then [`RACERS`] pharmacies, half through each gateway, try
/// to receive it at once; every answer is kept.
async fn racer(load: Arc<Load>) {
    let clinics = [
        PrescriptionServiceClient::new(channel(&load.addrs[0], "clinic2").await),
        PrescriptionServiceClient::new(channel(&load.addrs[1], "clinic2").await),
    ];
    let mut pharmacies = Vec::new();
    for p in 0..RACERS {
        let name = format!("race-pharmacy-{:02}", p + 1);
        let through = &load.addrs[p % load.addrs.len()];
        pharmacies.push((
            name.clone(),
            DispensingServiceClient::new(channel(through, &name).await),
        ));
    }
    for round in 0u32.. {
        if load.stop.load(Ordering::Relaxed) {
            return;
        }
        let (number, n) = (format!("FO-RACE-{round}"), 200_000 + round);
        let clinic = &clinics[round as usize % clinics.len()];
        let r = register(&load, clinic, &registration("1310000002", &number, n)).await;
        let acked = (
            r.prescription_id,
            round as usize % clinics.len(),
            Instant::now(),
        );
        load.acked
            .lock()
            .unwrap()
            .registered
            .insert(number.clone(), acked);
        let racing: Vec<_> = pharmacies
            .iter()
            .cloned()
            .map(|(name, pharmacy)| {
                let (load, exchange) = (Arc::clone(&load), r.exchange_number.clone());
                tokio::spawn(async move { (name, receive(&load, &pharmacy, n, &exchange).await) })
            })
            .collect();
        let mut accepted = Vec::new();
        for racing in racing {
            match racing.await.unwrap() {
                (name, Ok(_)) => accepted.push(name),
                (_, Err(s)) => assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}"),
            }
        }
        load.acked.lock().unwrap().races.insert(number, accepted);
    }
}

/// The `rxgate.toml` of gateway `identity` (examples/rxgate.toml, its own `[gateway]`, both
/// gateways trusted senders) over `url`, in `dir`; started.
async fn gateway(dir: &Path, identity: &str, pair: &Pair) -> Rxgate {
    let serve = serve_configured(dir, "store_engine = \"postgres\"");
    let path = dir.join("rxgate.toml");
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/gateway");
    let cert = |name: &str| certs.join(format!("{name}.cert.pem")).display().to_string();
    let senders: Vec<String> = IDENTITIES.iter().map(|i| cert(i)).collect();
    let text: String = fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|line| match line {
            l if l.starts_with("trusted_senders") => format!("trusted_senders = {senders:?}"),
            l => l
                .replace(
                    "gateway/gateway.key.pem",
                    &format!("gateway/{identity}.key.pem"),
                )
                .replace(
                    "gateway/gateway.cert.pem",
                    &format!("gateway/{identity}.cert.pem"),
                ),
        })
        .map(|line| line + "\n")
        .collect();
    let database = &pair.database;
    let file = |p: &Option<std::path::PathBuf>| p.as_ref().unwrap().display().to_string();
    let postgres = format!(
        "\n[postgres]\nurl = {:?}\npassword_file = {:?}\nca_file = {:?}\npool_size = 4\n",
        pair.url(),
        file(&database.password_file),
        file(&database.ca_file),
    );
    fs::write(&path, text + &postgres).unwrap();
    serve.start().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_the_synchronous_standby_loses_nothing_acknowledged() {
    let Some(pair) = tokio::task::spawn_blocking(Pair::start).await.unwrap() else {
        return;
    };
    let pair = Arc::new(pair);
    let dirs: Vec<_> = IDENTITIES
        .iter()
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let mut gateways = Vec::new();
    for (dir, identity) in dirs.iter().zip(IDENTITIES) {
        gateways.push(gateway(dir.path(), identity, &pair).await);
    }
    let load = Arc::new(Load {
        addrs: gateways.iter().map(|g| g.addr.clone()).collect(),
        acked: Mutex::default(),
        unavailable: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });
    let mut clients: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(worker(Arc::clone(&load), w)))
        .collect();
    clients.push(tokio::spawn(racer(Arc::clone(&load))));

    load.until(RETRY_FOR, "the first registrations", |a| {
        a.registered.len() >= ACKED_BEFORE
    })
    .await;
    let failing = Arc::clone(&pair);
    let promoted = tokio::task::spawn_blocking(move || {
        let promoted = failing.fail_over();
        failing.stand_alone();
        promoted
    });
    let promoted = promoted.await.unwrap();
    let before = load.registered();
    load.until(RETRY_FOR, "registrations after the promotion", |a| {
        a.registered.len() >= before + ACKED_AFTER
    })
    .await;
    load.stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let load = Arc::into_inner(load).unwrap();
    let unavailable = load.unavailable.into_inner();
    eprintln!(
        "failover: the clients were answered UNAVAILABLE {unavailable} times, and sent again"
    );
    assert!(
        unavailable > 0,
        "the primary was killed while no call was under way"
    );
    let acked = load.acked.into_inner().unwrap();
    unavailable_per_gateway(&acked, promoted);
    on_the_new_primary(&pair, &acked);
    the_feed_skips_nothing(&gateways[1], &acked).await;
    restarted_on_the_promoted_standby(gateways, &dirs[0]).await;
}

/// Each gateway acknowledged a registration within [`UNAVAILABLE_AT_MOST`] of the promotion.
fn unavailable_per_gateway(acked: &Acknowledged, promoted: Instant) {
    for (g, identity) in IDENTITIES.iter().enumerate() {
        let first = acked
            .registered
            .values()
            .filter(|(_, through, at)| *through == g && *at > promoted)
            .map(|(_, _, at)| *at - promoted)
            .min()
            .unwrap_or_else(|| panic!("{identity} acknowledged nothing after the promotion"));
        eprintln!(
            "failover: {identity} acknowledged a registration {first:?} after pg_ctl promote returned"
        );
        assert!(first <= UNAVAILABLE_AT_MOST, "{identity}: {first:?}");
    }
}

/// Rows of `sql` run on the new primary, split into their columns.
fn rows(pair: &Pair, sql: &str) -> Vec<Vec<String>> {
    let name = pair.database.url.rsplit('/').next().unwrap();
    let out = pair.standby.sql_in(name, sql);
    out.lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

/// The new primary holds every acknowledged registration and dispensing record once, and
/// each race prescription accepted by the one pharmacy told so.
fn on_the_new_primary(pair: &Pair, acked: &Acknowledged) {
    let stored: BTreeMap<String, Vec<String>> = rows(
        pair,
        "SELECT number, id, count(*) OVER (PARTITION BY number), state, pharmacy \
         FROM rxgate.prescriptions WHERE number LIKE 'FO-%'",
    )
    .into_iter()
    .map(|mut r| (r.remove(0), r))
    .collect();
    for (number, (id, _, _)) in &acked.registered {
        let found = stored.get(number).map(|r| (r[0].as_str(), r[1].as_str()));
        assert_eq!(found, Some((id.as_str(), "1")), "{number}");
    }
    // Each prescription was dispensed once: a retry that recorded again would have added a
    // record of a new number beside the acknowledged one, not a second row of the same key.
    let records: BTreeMap<String, String> = rows(
        pair,
        "SELECT prescription_id, string_agg(record_number::text, ',') FROM rxgate.dispensings \
         GROUP BY prescription_id",
    )
    .into_iter()
    .map(|r| (r[0].clone(), r[1].clone()))
    .collect();
    for (id, number) in &acked.dispensed {
        let numbers = records.get(id).map(String::as_str);
        assert_eq!(numbers, Some(number.to_string().as_str()), "{id}");
    }
    for (number, accepted) in &acked.races {
        assert_eq!(accepted.len(), 1, "{number}: accepted by {accepted:?}");
        let (state, pharmacy) = (&stored[number][2], &stored[number][3]);
        assert_eq!(state, "accepted", "{number}");
        assert_eq!(
            *pharmacy,
            institution_code(&accepted[0]),
            "{number}: held by"
        );
    }
    eprintln!(
        "failover: {} registrations, {} dispensing records and {} races acknowledged, all on \
         the new primary once",
        acked.registered.len(),
        acked.dispensed.len(),
        acked.races.len(),
    );
}

/// The feed from its start, through `through`: every acknowledged registration's Registered
/// event and every acknowledged record's DispensingRecorded event once, the sequences rising.
async fn the_feed_skips_nothing(through: &Rxgate, acked: &Acknowledged) {
    let mut feed = whole_feed(channel(&through.addr, "management").await).await;
    let (mut registered, mut dispensed) = (BTreeMap::new(), BTreeMap::new());
    let mut last = 0;
    // Until the feed is quiet for a second once it holds them all: a duplicate would follow.
    loop {
        let all = acked.registered.keys().all(|n| registered.contains_key(n))
            && acked
                .dispensed
                .iter()
                .all(|(id, _)| dispensed.contains_key(id));
        let wait = if all { 1 } else { 30 };
        let event = match tokio::time::timeout(Duration::from_secs(wait), feed.message()).await {
            Ok(event) => event.unwrap().expect("the feed goes on"),
            Err(_) if all => break,
            Err(_) => panic!("the feed lacks acknowledged events after {wait} s"),
        };
        assert!(event.sequence > last, "{} after {last}", event.sequence);
        last = event.sequence;
        let count = match pb::EventKind::try_from(event.kind) {
            Ok(pb::EventKind::Registered) => registered.entry(event.prescription_number),
            Ok(pb::EventKind::DispensingRecorded) => dispensed.entry(event.prescription_id),
            _ => continue,
        };
        *count.or_insert(0) += 1;
    }
    let twice: Vec<_> = (registered.iter().chain(&dispensed))
        .filter(|(_, count)| **count != 1)
        .collect();
    assert!(twice.is_empty(), "events seen more than once: {twice:?}");
}

/// The first gateway, stopped and started again, starts on the promoted standby (its
/// acknowledged mark is not ahead of what the standby holds) and registers.
async fn restarted_on_the_promoted_standby(mut gateways: Vec<Rxgate>, dir: &tempfile::TempDir) {
    stop(gateways.remove(0)).await;
    let again = crate::common::process::Serve::config(
        &dir.path().join("rxgate.toml"),
        &dir.path().join("rxgate.log"),
    )
    .start()
    .await;
    let mut clinic = PrescriptionServiceClient::new(channel(&again.addr, "clinic").await);
    let request = registration("1310000001", "FO-AFTER", 300_000);
    clinic.register_prescription(request).await.unwrap();
}
