//! The test harness shared by the integration tests of the running gateway: the real server
//! in-process on 127.0.0.1:0 over mutual TLS, a real store (fjall in a temporary folder, or
//! PostgreSQL: `postgres.rs`), real CMS signatures, and an injected clock.

#![allow(dead_code)] // each test binary uses its own part of the harness

pub(crate) mod audit;
pub(crate) mod cms;
pub(crate) mod exposition;
pub(crate) mod failover;
pub(crate) mod fixtures;
pub(crate) mod fleet;
pub(crate) mod postgres;
pub(crate) mod process;
pub(crate) mod raw;

#[allow(unused_imports)] // as with dead code: each test binary uses its own part
pub(crate) use fixtures::{line, patient, prescription, signed, signer};

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use prost::Message;
use rxgate::{
    app::{self, Server},
    cli::demo::{demo_dispensing, demo_prescription},
    config::Config,
    dev_pki::DevPki,
    domain::time::JapanDate,
    service::Clock,
    wire::proto::v1::{
        self as pb, admin_service_client::AdminServiceClient,
        dispensing_service_client::DispensingServiceClient,
        prescription_service_client::PrescriptionServiceClient,
    },
};
use tonic::transport::Channel;

/// The repository's development PKI (`certs/`), wherever the test runs.
pub(crate) fn dev_pki() -> DevPki {
    let certs = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs");
    DevPki::locate(Some(&certs)).unwrap_or_else(|e| panic!("{e}"))
}

/// The institution code in the development client certificate `name` (its URI SAN).
pub(crate) fn institution_code(name: &str) -> String {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let der = CertificateDer::from_pem_file(dev_pki().client(name).cert).unwrap();
    let institution = rxgate::tls::institution_of(&der).unwrap();
    institution.code.as_str().to_owned()
}

/// The wall clock and the steady clock, both moved by the test only.
pub(crate) struct ManualClock(Mutex<(SystemTime, Duration)>);

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.0.lock().unwrap().0
    }
    fn steady(&self) -> Duration {
        self.0.lock().unwrap().1
    }
}

impl ManualClock {
    fn starting_now() -> Self {
        ManualClock(Mutex::new((SystemTime::now(), Duration::ZERO)))
    }

    /// Time passes to `t`: the steady clock moves on as far as the wall clock moves forward
    /// (setting it back is a step back).
    pub(crate) fn set(&self, t: SystemTime) {
        let (wall, steady) = &mut *self.0.lock().unwrap();
        *steady += t.duration_since(*wall).unwrap_or_default();
        *wall = t;
    }

    /// The wall clock alone is stepped to `t`, as an operator or a time server may step it.
    pub(crate) fn step(&self, t: SystemTime) {
        self.0.lock().unwrap().0 = t;
    }
}

pub(crate) struct Harness {
    server: Option<Server>,
    config: Config,
    pub addr: String,
    pub metrics_addr: std::net::SocketAddr,
    pub clock: Arc<ManualClock>,
    pub dir: tempfile::TempDir,
}

/// Starts the dev configuration on a free port, with a store in a temporary folder (or, with
/// `RXGATE_TEST_STORE=postgres`, in a database of its own: `postgres.rs`), after `adjust` has
/// changed the configuration.
pub(crate) async fn start_with(adjust: impl FnOnce(&mut Config)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::dev(dir.path().join("store"), &dev_pki());
    if postgres::wanted() {
        config.store_engine = Some(rxgate::config::StoreEngine::Postgres);
        config.postgres = Some(postgres::cluster().database());
    }
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics_listen = "127.0.0.1:0".parse().unwrap();
    adjust(&mut config);
    let clock = Arc::new(ManualClock::starting_now());
    start_on(config, clock, dir).await
}

async fn start_on(config: Config, clock: Arc<ManualClock>, dir: tempfile::TempDir) -> Harness {
    let server = app::start(config.clone(), clock.clone()).await.unwrap();
    Harness {
        addr: format!("https://127.0.0.1:{}", server.addr.port()),
        metrics_addr: server.metrics_addr,
        server: Some(server),
        config,
        clock,
        dir,
    }
}

impl Harness {
    pub(crate) async fn channel(&self, name: &str) -> Channel {
        dev_pki().client(name).connect(&self.addr).await.unwrap()
    }
    pub(crate) async fn clinic(&self, name: &str) -> PrescriptionServiceClient<Channel> {
        PrescriptionServiceClient::new(self.channel(name).await)
    }
    pub(crate) async fn pharmacy(&self, name: &str) -> DispensingServiceClient<Channel> {
        DispensingServiceClient::new(self.channel(name).await)
    }
    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }
    pub(crate) fn today(&self) -> JapanDate {
        JapanDate::of(self.now())
    }
    /// `content` signed by the dev signer `name` (certs/hpki) as of the harness's clock.
    pub(crate) fn sign(&self, name: &str, content: Vec<u8>) -> pb::SignedDocument {
        signed(&signer(name), content, self.now())
    }
    pub(crate) async fn shutdown(mut self) -> tempfile::TempDir {
        self.server.take().unwrap().shutdown().await.unwrap();
        self.dir
    }
    /// Stops the server and keeps what starting it again needs, so that a test can open the
    /// closed store in between (`Stopped::store_dir`).
    pub(crate) async fn stop(mut self) -> Stopped {
        self.server.take().unwrap().shutdown().await.unwrap();
        Stopped {
            config: self.config,
            clock: self.clock,
            dir: self.dir,
        }
    }

    /// Stops the server and starts it again on the same store, configuration and clock (on a
    /// new port, unless the configuration names one).
    pub(crate) async fn restart(self) -> Harness {
        self.restart_with(|_| {}).await
    }

    /// Like `restart`, with the configuration changed by `adjust`.
    pub(crate) async fn restart_with(mut self, adjust: impl FnOnce(&mut Config)) -> Harness {
        self.server.take().unwrap().shutdown().await.unwrap();
        adjust(&mut self.config);
        start_on(self.config, self.clock, self.dir).await
    }

    /// The line of GET /metrics that starts with `prefix` (empty if none).
    pub(crate) async fn metrics_line(&self, prefix: &str) -> String {
        metrics_text(self.metrics_addr)
            .await
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_owned()
    }

    /// Every audit record, as the dev operator exports them.
    pub(crate) async fn audit_records(&self) -> Vec<pb::AuditRecord> {
        let mut admin = AdminServiceClient::new(self.channel("operator").await);
        let mut stream = admin
            .export_audit(pb::ExportAuditRequest::default())
            .await
            .unwrap()
            .into_inner();
        let mut records = Vec::new();
        while let Some(r) = stream.message().await.unwrap() {
            records.push(r);
        }
        records
    }

    /// Registers `rx`, signed by the dev doctor, as the dev clinic `clinic`.
    pub(crate) async fn register(
        &self,
        clinic: &str,
        rx: &pb::Prescription,
    ) -> Result<pb::RegisterPrescriptionResponse, tonic::Status> {
        self.clinic(clinic)
            .await
            .register_prescription(pb::RegisterPrescriptionRequest {
                prescription: Some(self.sign("doctor", rx.encode_to_vec())),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Registers the demo prescription `number` for patient `n` as the dev clinic `clinic`.
    pub(crate) async fn register_demo(
        &self,
        clinic: &str,
        number: &str,
        n: u32,
    ) -> pb::RegisterPrescriptionResponse {
        let mut rx = demo_prescription(number, patient(n), self.today());
        if clinic == "clinic2" {
            rx.institution_code = "1310000002".into();
        }
        self.register(clinic, &rx).await.unwrap()
    }

    /// The dev pharmacy receives the demo prescription `number` of patient `n` and dispenses it.
    pub(crate) async fn receive_and_dispense_demo(&self, number: &str, n: u32, exchange: &str) {
        let mut pharmacy = self.pharmacy("pharmacy").await;
        pharmacy
            .receive_prescription(pb::ReceivePrescriptionRequest {
                patient_key: Some(patient(n)),
                exchange_number: exchange.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let record = demo_dispensing(number, self.today());
        pharmacy
            .record_dispensing(pb::RecordDispensingRequest {
                dispensing_record: Some(self.sign("pharmacist", record.encode_to_vec())),
            })
            .await
            .unwrap();
    }
}

/// A stopped harness: its store closed, its configuration and clock kept.
pub(crate) struct Stopped {
    config: Config,
    clock: Arc<ManualClock>,
    dir: tempfile::TempDir,
}

impl Stopped {
    /// The folder of the closed store (`EmbeddedStore::open` takes it).
    pub(crate) fn store_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// The name of the database the store is kept in, if it is in PostgreSQL.
    pub(crate) fn database(&self) -> Option<String> {
        let url = &self.config.postgres.as_ref()?.url;
        url.rsplit('/').next().map(str::to_owned)
    }

    /// The closed store opened again, in whichever engine it is kept; close it before starting.
    pub(crate) async fn reopen(&self) -> rxgate::opened_store::OpenedStore {
        rxgate::opened_store::OpenedStore::open(&self.config)
            .await
            .unwrap()
    }

    /// Starts the server again on the same store, configuration and clock.
    pub(crate) async fn start(self) -> Harness {
        start_on(self.config, self.clock, self.dir).await
    }
}

/// Calls again, after the delay the gateway asks for, while it refuses with RESOURCE_EXHAUSTED
/// and a RetryInfo (its per-institution rate and in-flight limits): the checks read back as fast
/// as the gateway lets one institution, and a refusal of another kind is the answer.
pub(crate) async fn throttled<T, Fut>(mut call: impl FnMut() -> Fut) -> Result<T, tonic::Status>
where
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    use tonic_types::StatusExt;
    loop {
        match call().await {
            Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                let Some(delay) = s.get_details_retry_info().and_then(|r| r.retry_delay) else {
                    return Err(s);
                };
                tokio::time::sleep(delay).await;
            }
            answered => return answered,
        }
    }
}

/// The whole feed (WatchEvents from its start, live), as the dev management service watches
/// it over `channel` (a channel of the client `management`).
pub(crate) async fn whole_feed(channel: Channel) -> tonic::Streaming<pb::Event> {
    rxgate::wire::proto::v1::event_service_client::EventServiceClient::new(channel)
        .watch_events(pb::WatchEventsRequest {
            after_sequence: 0,
            filter: None,
        })
        .await
        .unwrap()
        .into_inner()
}

/// The text of GET /metrics at `addr`.
pub(crate) async fn metrics_text(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    socket.read_to_string(&mut text).await.unwrap();
    text
}

/// The fields of the `BadRequest` detail of an INVALID_ARGUMENT status.
pub(crate) fn bad_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("a BadRequest detail")
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect()
}

/// The records the intake of a stopped harness's store holds, in arrival order.
pub(crate) async fn intake_records(stopped: &Stopped) -> Vec<rxgate::service::records::IntakeV2> {
    let opened = stopped.reopen().await;
    let records = intake_rows(&opened.store()).await;
    opened.close().await.unwrap();
    records
}

/// The records the intake of `store` holds, in arrival order.
pub(crate) async fn intake_rows(
    store: &impl rxgate::store::Store,
) -> Vec<rxgate::service::records::IntakeV2> {
    use rxgate::{
        service::records::{IntakeRecord, decode},
        store::Table,
    };
    let rows = store
        .transact(|tx| tx.scan_prefix(Table::Intake, b"arrival\0", usize::MAX))
        .await
        .unwrap()
        .unwrap();
    rows.iter()
        .map(|(_, v)| decode::<IntakeRecord>(v).unwrap().current())
        .collect()
}
