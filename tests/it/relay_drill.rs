//! The relay drill with real processes: the upstream gateway is down while 500 dispensing records
//! are made at the relaying gateway; then the upstream comes up, and the relaying gateway is
//! killed with SIGKILL while it relays and started again. The upstream must end up holding every
//! record exactly once, in order.

use crate::common::{self, dev_pki};

use std::{
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use common::{
    intake_rows, metrics_text, patient,
    process::{PortHold, Rxgate, Serve},
    signed, signer, throttled,
};
use prost::Message;
use rxgate::{
    cli::demo::{demo_dispensing, demo_prescription},
    domain::time::JapanDate,
    pki::signer::SigningKey,
    wire::proto::v1::{
        self as pb, dispensing_service_client::DispensingServiceClient,
        prescription_service_client::PrescriptionServiceClient,
    },
};
use tonic::transport::Channel;

const RECORDS: u32 = 500;
const WORKERS: u32 = 8;
/// Records made after the crash, through the restarted gateway.
const AFTER_CRASH: u32 = 5;

/// A gateway of the drill: `rxgate serve --dev`, and what the drill reads of it.
pub(crate) struct Gateway(pub(crate) Rxgate);

impl Gateway {
    /// Starts `rxgate serve --dev` on the store `data` (its log beside it), listening on `listen`
    /// or else on a port of its own, relaying to `relay_to` if given; ready once it listens.
    async fn start(
        data: &Path,
        listen: Option<SocketAddr>,
        relay_to: Option<SocketAddr>,
    ) -> Gateway {
        let mut serve = Serve::dev(data, &data.with_extension("log"));
        if let Some(addr) = listen {
            serve = serve.listen(addr);
        }
        if let Some(upstream) = relay_to {
            serve = serve.relay_upstream(format!("https://{upstream}"));
        }
        Gateway(serve.start().await)
    }

    fn output(&self) -> String {
        self.0.output()
    }

    pub(crate) fn kill(self) {
        self.0.kill(); // SIGKILL
    }

    /// The value of one metric.
    pub(crate) async fn metric(&self, name: &str) -> u64 {
        metrics_text(self.0.metrics)
            .await
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Waits until `done` holds for the value of `name`.
    pub(crate) async fn until(&self, name: &str, done: impl Fn(u64) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let value = self.metric(name).await;
            if done(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{name} = {value}\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A clinic's and a pharmacy's client of the gateway at `addr`.
pub(crate) async fn clients(
    addr: &str,
) -> (
    PrescriptionServiceClient<Channel>,
    DispensingServiceClient<Channel>,
) {
    let clinic = dev_pki().client("clinic").connect(addr).await.unwrap();
    let pharmacy = dev_pki().client("pharmacy").connect(addr).await.unwrap();
    (
        PrescriptionServiceClient::new(clinic),
        DispensingServiceClient::new(pharmacy),
    )
}

/// Registers, receives and dispenses prescription `i`.
pub(crate) async fn make_record(
    clinic: &mut PrescriptionServiceClient<Channel>,
    pharmacy: &mut DispensingServiceClient<Channel>,
    keys: &(SigningKey, SigningKey),
    i: u32,
) {
    let today = JapanDate::of(SystemTime::now());
    let number = format!("DRILL-{i:04}");
    let rx = demo_prescription(&number, patient(10_000 + i), today);
    let register = pb::RegisterPrescriptionRequest {
        prescription: Some(signed(&keys.0, rx.encode_to_vec(), SystemTime::now())),
        ..Default::default()
    };
    let r = throttled(|| {
        let (mut clinic, request) = (clinic.clone(), register.clone());
        async move { clinic.register_prescription(request).await }
    })
    .await
    .unwrap()
    .into_inner();
    let receive = pb::ReceivePrescriptionRequest {
        patient_key: Some(patient(10_000 + i)),
        exchange_number: r.exchange_number,
        ..Default::default()
    };
    throttled(|| {
        let (mut pharmacy, request) = (pharmacy.clone(), receive.clone());
        async move { pharmacy.receive_prescription(request).await }
    })
    .await
    .unwrap();
    let record = pb::RecordDispensingRequest {
        dispensing_record: Some(signed(
            &keys.1,
            demo_dispensing(&number, today).encode_to_vec(),
            SystemTime::now(),
        )),
    };
    throttled(|| {
        let (mut pharmacy, request) = (pharmacy.clone(), record.clone());
        async move { pharmacy.record_dispensing(request).await }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_holds_every_record_exactly_once_in_order_after_an_outage_and_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (down_data, up_data) = (dir.path().join("down"), dir.path().join("up"));
    // The upstream's address is named before it exists: held for the whole drill, so that
    // nothing else can take it while the upstream is down.
    let up_port = PortHold::new();
    let down = Gateway::start(&down_data, None, Some(up_port.addr())).await;

    // The upstream is down while every record is made.
    let keys = Arc::new((signer("doctor"), signer("pharmacist")));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (addr, keys) = (down.0.addr.clone(), Arc::clone(&keys));
        workers.push(tokio::spawn(async move {
            let (mut clinic, mut pharmacy) = clients(&addr).await;
            for i in (w..RECORDS).step_by(WORKERS as usize) {
                make_record(&mut clinic, &mut pharmacy, &keys, i).await;
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let events = u64::from(RECORDS) * 3;
    // Nothing can be delivered yet: the relay stops at the first record, the rest wait.
    down.until("rxgate_relay_lag_events", |lag| lag > 0).await;
    assert!(down.metric("rxgate_relay_acked_sequence").await < events);

    // The upstream comes up; the relaying gateway is killed in the middle of relaying.
    let up = Gateway::start(&up_data, Some(up_port.addr()), None).await;
    down.until("rxgate_relay_acked_sequence", |acked| acked >= events / 5)
        .await;
    down.kill();
    // Restarted, it relays what it had not delivered, and then what is made after the crash
    // (which it alone can relay, should the killed one have delivered everything first).
    let down = Gateway::start(&down_data, None, Some(up_port.addr())).await;
    let (mut clinic, mut pharmacy) = clients(&down.0.addr).await;
    for i in RECORDS..RECORDS + AFTER_CRASH {
        make_record(&mut clinic, &mut pharmacy, &keys, i).await;
    }
    let records = RECORDS + AFTER_CRASH;
    let events = u64::from(records) * 3;
    down.until("rxgate_relay_acked_sequence", |acked| acked >= events)
        .await;
    assert_eq!(down.metric("rxgate_relay_dead_letters_total").await, 0);
    down.kill();
    up.kill();

    let upstream_store = rxgate::store::EmbeddedStore::open(&up_data).unwrap();
    let held: Vec<_> = intake_rows(&upstream_store)
        .await
        .into_iter()
        .map(|r| r.record)
        .collect();
    upstream_store.close().unwrap();
    assert_eq!(held.len(), records as usize, "every record, once");
    let mut numbers: Vec<_> = held.iter().map(|r| r.number.clone()).collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), records as usize, "no record twice");
    assert!(
        held.windows(2).all(|w| w[0].sequence < w[1].sequence),
        "in the order of the relaying gateway's event log"
    );
}

/// While the upstream is down the relay waits on its first record; the lag it reports must grow
/// with every record made meanwhile, not stay at what it read before that first delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_grows_while_the_upstream_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let up_port = PortHold::new();
    let down = Gateway::start(&dir.path().join("down"), None, Some(up_port.addr())).await;
    let keys = (signer("doctor"), signer("pharmacist"));
    let addr = down.0.addr.clone();
    let (mut clinic, mut pharmacy) = clients(&addr).await;
    make_record(&mut clinic, &mut pharmacy, &keys, 0).await;
    down.until("rxgate_relay_lag_events", |lag| lag > 0).await;
    let first = down.metric("rxgate_relay_lag_events").await;
    for i in 1..=4 {
        make_record(&mut clinic, &mut pharmacy, &keys, i).await;
    }
    // Four more records, three events each, none delivered.
    down.until("rxgate_relay_lag_events", |lag| lag >= first + 12)
        .await;
    down.kill();
}
