//! Crash durability end to end: the real `rxgate serve --dev` binary runs as a child process and
//! is killed with SIGKILL while clinics register prescriptions and pharmacies look them up and
//! receive them. After every restart on the same data directory:
//!
//! - every acknowledged registration is there, with its exchange number, as the clinic's status,
//!   a pharmacy's lookup and (for accepted ones) repeated receives all agree;
//! - every acknowledged receive shows ACCEPTED by that pharmacy; an unacknowledged one either
//!   happened (ACCEPTED by the pharmacy that asked) or not (REGISTERED), nothing in between;
//! - every unacknowledged registration either fully exists or not at all: registering the same
//!   signed document again succeeds, returning the stored id if a search finds it.
//!
//! Finally every line the server wrote (JSON, at DEBUG, the gateway and the engines asked for
//! TRACE) is checked for patient data: names, birth dates, insurance and public-funds
//! identifiers, issued exchange numbers, drug codes and dosage text.

use crate::common::{self, dev_pki};

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fs,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use common::{
    process::{Rxgate, Serve},
    signed, signer, throttled,
};
use prost::Message;
use ring::rand::{SecureRandom, SystemRandom};
use rxgate::{
    cli::demo::demo_prescription,
    domain::time::JapanDate,
    pki::signer::SigningKey,
    wire::proto::v1::{
        self as pb, dispensing_service_client::DispensingServiceClient,
        prescription_service_client::PrescriptionServiceClient,
    },
};
use tokio::task::JoinSet;
use tonic::{Code, transport::Channel};

/// How many times the server is killed; it is started once more for the final check.
const ROUNDS: usize = 4;
const CLINIC_TASKS: usize = 4;
/// Per pharmacy.
const PHARMACY_TASKS: usize = 2;
/// How many patient keys the prescriptions are spread over.
const PATIENTS: usize = 32;
/// The kill waits for at least this many acknowledged registrations in the round.
const MIN_REGISTERED_PER_ROUND: usize = 5;
/// Concurrent checkers after a restart.
const CHECKERS: usize = 8;
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for anything that should finish promptly (a round's tasks after the kill).
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

const CLINIC_CODE: &str = "1310000001";

// Distinctive patient data: none of it may ever appear in the server's output.
const PATIENT_NAMES: [&str; 2] = ["ZQ Patient Hanako Taikyu", "耐久試験 花子"];
const BIRTH_DATES: [&str; 2] = ["1957-03-09", "1988-12-30"];
const INSURERS: [&str; 2] = ["06139999", "39131457"];
const SYMBOLS: [&str; 2] = ["ZQ12", "ZQ34"];
const PUBLIC_PAYER: &str = "28139871";
const YJ_CODE: &str = "3999ZQ7F1029";
const RECEIPT_CODE: &str = "629876543";
const DOSAGES: [&str; 2] = ["ZQ-dosage 1日2回朝夕食後", "ZQ-dosage 頓用 発熱時"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pharmacy {
    One,
    Two,
}

impl Pharmacy {
    const ALL: [Pharmacy; 2] = [Pharmacy::One, Pharmacy::Two];

    fn cert(self) -> &'static str {
        match self {
            Pharmacy::One => "pharmacy",
            Pharmacy::Two => "pharmacy2",
        }
    }

    fn code(self) -> &'static str {
        match self {
            Pharmacy::One => "1340000001",
            Pharmacy::Two => "1340000002",
        }
    }

    fn other(self) -> Pharmacy {
        match self {
            Pharmacy::One => Pharmacy::Two,
            Pharmacy::Two => Pharmacy::One,
        }
    }

    fn of_code(code: &str) -> Option<Pharmacy> {
        Pharmacy::ALL.into_iter().find(|p| p.code() == code)
    }
}

/// The patient key number `i`: insurance keys, every eighth a public-funds key.
fn patient_key(i: usize) -> pb::PatientKey {
    use pb::patient_key::Kind;
    let kind = if i % 8 == 7 {
        Kind::PublicFunds(pb::PublicFundsKey {
            payer_number: PUBLIC_PAYER.into(),
            recipient_number: format!("76543{:02}", 90 + i / 8),
        })
    } else {
        Kind::Insurance(pb::InsuranceKey {
            insurer_number: INSURERS[i % 2].into(),
            symbol: SYMBOLS[i % 3 % 2].into(),
            number: format!("76543{i:02}"),
            branch: "01".into(),
        })
    };
    pb::PatientKey { kind: Some(kind) }
}

/// Every identifier of every patient key, for the log check.
fn patient_key_strings() -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..PATIENTS {
        match patient_key(i).kind {
            Some(pb::patient_key::Kind::Insurance(k)) => {
                out.extend([k.insurer_number, k.symbol, k.number]);
            }
            Some(pb::patient_key::Kind::PublicFunds(k)) => {
                out.extend([k.payer_number, k.recipient_number]);
            }
            None => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

fn random_u64(rng: &SystemRandom) -> u64 {
    let mut b = [0u8; 8];
    rng.fill(&mut b).expect("system RNG");
    u64::from_le_bytes(b)
}

fn random_id(rng: &SystemRandom) -> String {
    let mut b = [0u8; 16];
    rng.fill(&mut b).expect("system RNG");
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// A prescription with the distinctive patient data, one of two line shapes.
fn prescription(number: &str, patient: usize, variant: u64, today: JapanDate) -> pb::Prescription {
    let mut rx = demo_prescription(number, patient_key(patient), today);
    let v = (variant % 2) as usize;
    if let Some(p) = rx.patient.as_mut() {
        p.name = PATIENT_NAMES[v].into();
        p.birth_date = BIRTH_DATES[v].into();
    }
    rx.lines = vec![if v == 0 {
        pb::PrescriptionLine {
            drug: Some(pb::DrugCode {
                kind: pb::DrugCodeKind::Yj as i32,
                code: YJ_CODE.into(),
            }),
            quantity: "2".into(),
            unit: "錠".into(),
            dosage_instructions: DOSAGES[0].into(),
            dosing: pb::Dosing::Days as i32,
            days_supplied: 7,
        }
    } else {
        pb::PrescriptionLine {
            drug: Some(pb::DrugCode {
                kind: pb::DrugCodeKind::Receipt as i32,
                code: RECEIPT_CODE.into(),
            }),
            quantity: "0.5".into(),
            unit: "包".into(),
            dosage_instructions: DOSAGES[1].into(),
            dosing: pb::Dosing::AsNeeded as i32,
            days_supplied: 0,
        }
    }];
    rx
}

// ---------------------------------------------------------------------------------------------
// The model: what the clients were told
// ---------------------------------------------------------------------------------------------

/// A registration request as sent.
#[derive(Clone)]
struct Attempt {
    number: String,
    patient: usize,
    signed: pb::SignedDocument,
}

#[derive(Clone)]
struct Registration {
    attempt: Attempt,
    id: String,
    exchange_number: String,
    /// Acknowledged to that pharmacy, or seen after a restart.
    accepted_by: Option<Pharmacy>,
    /// A receive was sent by this pharmacy and not (yet) acknowledged.
    receive_pending: Option<Pharmacy>,
}

#[derive(Default)]
struct RoundStats {
    registered: usize,
    received: usize,
    looked_up: usize,
}

#[derive(Default)]
struct Model {
    /// By prescription id.
    registrations: BTreeMap<String, Registration>,
    /// Registrations sent but not acknowledged, by prescription number.
    unacked: BTreeMap<String, Attempt>,
    /// Registered prescriptions the pharmacies may still look up and receive.
    queue: VecDeque<String>,
    /// Every exchange number the server issued.
    issued: BTreeSet<String>,
    /// Failures while the server was up: these are bugs.
    unexpected: Vec<String>,
    stats: RoundStats,
}

struct Ctx {
    model: Mutex<Model>,
    killed: AtomicBool,
    doctor: SigningKey,
    rng: SystemRandom,
    today: JapanDate,
}

impl Ctx {
    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }

    /// An error from a call: expected once the server has been killed, a bug before.
    fn call_failed(&self, what: String, status: &tonic::Status) {
        if !self.killed() {
            self.model().unexpected.push(format!(
                "{what}: {:?} {} (while the server was up)",
                status.code(),
                status.message()
            ));
        }
    }

    fn unexpected(&self, what: String) {
        self.model().unexpected.push(what);
    }
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

fn connect_failed(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// Starts `rxgate serve --dev` on `data_dir` (on ports of its own, every line it writes in
/// `log`) and waits until it answers a gRPC call; returns it and how long that took.
async fn start_server(data_dir: &Path, log: PathBuf, rng: &SystemRandom) -> (Rxgate, Duration) {
    let started = Instant::now();
    // JSON lines, everything at DEBUG, the gateway's own TRACE, and the engines asked for TRACE
    // too (their TRACE records name keys: the gateway must cap them whatever RUST_LOG says).
    let server = Serve::dev(data_dir, &log)
        .rust_log("debug,rxgate=trace,fjall=trace,lsm_tree=trace,sled=trace")
        .option("--log-format", "json")
        .start()
        .await;
    let deadline = started + READY_TIMEOUT;
    loop {
        if let Ok(channel) = dev_pki().client("clinic").connect(&server.addr).await {
            let answer = PrescriptionServiceClient::new(channel)
                .get_prescription_status(pb::GetPrescriptionStatusRequest {
                    prescription_id: random_id(rng),
                })
                .await;
            match answer {
                Err(s) if matches!(s.code(), Code::NotFound | Code::PermissionDenied) => {
                    return (server, started.elapsed());
                }
                Ok(_) => panic!("a random prescription id was found"),
                Err(_) => {}
            }
        }
        assert!(
            Instant::now() < deadline,
            "the server did not become ready within {READY_TIMEOUT:?}:\n{}",
            server.output()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Clients {
    clinic: PrescriptionServiceClient<Channel>,
    pharmacy: [DispensingServiceClient<Channel>; 2],
}

impl Clients {
    async fn connect(addr: &str) -> Clients {
        let channel = |name: &'static str| async move {
            dev_pki()
                .client(name)
                .connect(addr)
                .await
                .unwrap_or_else(|e| panic!("connecting as {name}: {e}"))
        };
        Clients {
            clinic: PrescriptionServiceClient::new(channel("clinic").await),
            pharmacy: [
                DispensingServiceClient::new(channel(Pharmacy::One.cert()).await),
                DispensingServiceClient::new(channel(Pharmacy::Two.cert()).await),
            ],
        }
    }

    fn pharmacy(&self, p: Pharmacy) -> DispensingServiceClient<Channel> {
        self.pharmacy[p as usize].clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Load: clinics and pharmacies at work until the kill
// ---------------------------------------------------------------------------------------------

async fn clinic_task(ctx: Arc<Ctx>, addr: String, round: usize, task: usize) {
    let channel = match dev_pki().client("clinic").connect(&addr).await {
        Ok(c) => c,
        Err(e) => {
            if !ctx.killed() {
                ctx.unexpected(connect_failed("clinic connect", e));
            }
            return;
        }
    };
    let clinic = PrescriptionServiceClient::new(channel);
    let mut i = 0;
    while !ctx.killed() {
        let number = format!("DUR-{round}-{task}-{i}");
        i += 1;
        let r = random_u64(&ctx.rng);
        let patient = (r % PATIENTS as u64) as usize;
        let content = prescription(&number, patient, r >> 32, ctx.today).encode_to_vec();
        let attempt = Attempt {
            number: number.clone(),
            patient,
            signed: signed(&ctx.doctor, content, SystemTime::now()),
        };
        ctx.model().unacked.insert(number.clone(), attempt.clone());
        let answer = register_paced(&clinic, &attempt.signed).await;
        match answer {
            Ok(r) => {
                let r = r.into_inner();
                if r.state != pb::PrescriptionState::Registered as i32
                    || r.exchange_number.len() != 6
                {
                    ctx.unexpected(format!(
                        "register {number}: state {} exchange number of {} characters",
                        r.state,
                        r.exchange_number.len()
                    ));
                }
                let mut m = ctx.model();
                m.unacked.remove(&number);
                m.issued.insert(r.exchange_number.clone());
                m.queue.push_back(r.prescription_id.clone());
                m.stats.registered += 1;
                m.registrations.insert(
                    r.prescription_id.clone(),
                    Registration {
                        attempt,
                        id: r.prescription_id,
                        exchange_number: r.exchange_number,
                        accepted_by: None,
                        receive_pending: None,
                    },
                );
            }
            Err(s) => ctx.call_failed(format!("register {number}"), &s),
        }
    }
}

async fn pharmacy_task(ctx: Arc<Ctx>, addr: String, pharmacy: Pharmacy) {
    let channel = match dev_pki().client(pharmacy.cert()).connect(&addr).await {
        Ok(c) => c,
        Err(e) => {
            if !ctx.killed() {
                ctx.unexpected(connect_failed("pharmacy connect", e));
            }
            return;
        }
    };
    let client = DispensingServiceClient::new(channel);
    while !ctx.killed() {
        let next = {
            let mut m = ctx.model();
            m.queue.pop_front().map(|id| {
                let r = &m.registrations[&id];
                (
                    id,
                    patient_key(r.attempt.patient),
                    r.exchange_number.clone(),
                )
            })
        };
        let Some((id, key, exchange_number)) = next else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        // The gateway's per-institution rate refuses with a RetryInfo: wait and send again.
        let lookup = pb::LookupPrescriptionRequest {
            patient_key: Some(key.clone()),
            exchange_number: exchange_number.clone(),
        };
        let looked = throttled(|| {
            let (mut client, lookup) = (client.clone(), lookup.clone());
            async move { client.lookup_prescription(lookup).await }
        })
        .await;
        match looked {
            Ok(s) => {
                let s = s.into_inner();
                if s.prescription_id != id || s.state != pb::PrescriptionState::Registered as i32 {
                    ctx.unexpected(format!(
                        "lookup of {id} by {pharmacy:?} found {} in state {}",
                        s.prescription_id, s.state
                    ));
                }
                ctx.model().stats.looked_up += 1;
            }
            Err(s) => {
                ctx.model().queue.push_front(id.clone());
                ctx.call_failed(format!("lookup {id} by {pharmacy:?}"), &s);
                continue;
            }
        }
        // A third stay with the patient: never received.
        if random_u64(&ctx.rng).is_multiple_of(3) {
            continue;
        }
        if let Some(r) = ctx.model().registrations.get_mut(&id) {
            r.receive_pending = Some(pharmacy);
        }
        let receive = pb::ReceivePrescriptionRequest {
            patient_key: Some(key),
            exchange_number,
            ..Default::default()
        };
        let received = throttled(|| {
            let (mut client, receive) = (client.clone(), receive.clone());
            async move { client.receive_prescription(receive).await }
        })
        .await;
        match received {
            Ok(r) => {
                let r = r.into_inner();
                let mut m = ctx.model();
                let reg = m.registrations.get_mut(&id).expect("registered");
                reg.receive_pending = None;
                reg.accepted_by = Some(pharmacy);
                let handed_over = r.prescription.as_ref().map(|d| &d.content)
                    == Some(&reg.attempt.signed.content);
                m.stats.received += 1;
                if r.prescription_id != id
                    || r.state != pb::PrescriptionState::Accepted as i32
                    || !handed_over
                {
                    m.unexpected.push(format!(
                        "receive of {id} by {pharmacy:?}: id {}, state {}, document handed over \
                         matches: {handed_over}",
                        r.prescription_id, r.state,
                    ));
                }
            }
            Err(s) => ctx.call_failed(format!("receive {id} by {pharmacy:?}"), &s),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checks after a restart
// ---------------------------------------------------------------------------------------------

fn state_name(s: i32) -> &'static str {
    pb::PrescriptionState::try_from(s).map_or("?", |s| s.as_str_name())
}

/// Registers `signed` as `clinic`, waiting out the gateway's per-institution rate as a client
/// would.
async fn register_paced(
    clinic: &PrescriptionServiceClient<Channel>,
    signed: &pb::SignedDocument,
) -> Result<tonic::Response<pb::RegisterPrescriptionResponse>, tonic::Status> {
    let register = pb::RegisterPrescriptionRequest {
        prescription: Some(signed.clone()),
        ..Default::default()
    };
    throttled(|| {
        let (mut clinic, register) = (clinic.clone(), register.clone());
        async move { clinic.register_prescription(register).await }
    })
    .await
}

/// `pharmacy` receives the registration again.
fn receive(
    clients: &Clients,
    pharmacy: Pharmacy,
    key: &pb::PatientKey,
    reg: &Registration,
) -> impl std::future::Future<
    Output = Result<tonic::Response<pb::ReceivePrescriptionResponse>, tonic::Status>,
> + use<> {
    let mut client = clients.pharmacy(pharmacy);
    let request = pb::ReceivePrescriptionRequest {
        patient_key: Some(key.clone()),
        exchange_number: reg.exchange_number.clone(),
        ..Default::default()
    };
    async move { client.receive_prescription(request).await }
}

/// Checks one registration against the restarted server; returns who holds it now.
async fn check_one(clients: &Clients, reg: &Registration) -> Result<Option<Pharmacy>, String> {
    let id = &reg.id;
    let status = throttled(|| {
        let mut clinic = clients.clinic.clone();
        let request = pb::GetPrescriptionStatusRequest {
            prescription_id: id.clone(),
        };
        async move { clinic.get_prescription_status(request).await }
    })
    .await
    .map_err(|s| format!("{id}: status: {:?} {}", s.code(), s.message()))?
    .into_inner();
    if status.prescription_id != *id
        || status.prescription_number != reg.attempt.number
        || status.institution_code != CLINIC_CODE
    {
        return Err(format!(
            "{id}: status names {} / {} / {}, registered as {}",
            status.prescription_id,
            status.institution_code,
            status.prescription_number,
            reg.attempt.number
        ));
    }
    let holder = match pb::PrescriptionState::try_from(status.state) {
        Ok(pb::PrescriptionState::Registered) if status.pharmacy_code.is_empty() => None,
        Ok(pb::PrescriptionState::Accepted) => Some(
            Pharmacy::of_code(&status.pharmacy_code)
                .ok_or_else(|| format!("{id}: accepted by unknown {}", status.pharmacy_code))?,
        ),
        _ => {
            return Err(format!(
                "{id}: status {} pharmacy {:?}",
                state_name(status.state),
                status.pharmacy_code
            ));
        }
    };
    match (reg.accepted_by, holder) {
        (Some(acked), Some(h)) if acked == h => {}
        (Some(acked), _) => {
            return Err(format!(
                "{id}: acknowledged receive by {acked:?} lost: status {} pharmacy {:?}",
                state_name(status.state),
                status.pharmacy_code
            ));
        }
        (None, Some(h)) if reg.receive_pending == Some(h) => {} // an unacknowledged receive
        (None, Some(h)) => {
            return Err(format!("{id}: ACCEPTED by {h:?}, which never asked"));
        }
        (None, None) => {}
    }

    let key = patient_key(reg.attempt.patient);
    let looker = holder.unwrap_or(Pharmacy::One);
    let summary = throttled(|| {
        let mut pharmacy = clients.pharmacy(looker);
        let request = pb::LookupPrescriptionRequest {
            patient_key: Some(key.clone()),
            exchange_number: reg.exchange_number.clone(),
        };
        async move { pharmacy.lookup_prescription(request).await }
    })
    .await
    .map_err(|s| format!("{id}: lookup: {:?} {}", s.code(), s.message()))?
    .into_inner();
    if summary.prescription_id != *id
        || summary.state != status.state
        || summary.institution_code != CLINIC_CODE
        || summary.issue_date != status.issue_date
        || summary.usable_through != status.usable_through
    {
        return Err(format!(
            "{id}: lookup disagrees with the status: found {} in {} (status {})",
            summary.prescription_id,
            state_name(summary.state),
            state_name(status.state)
        ));
    }

    if let Some(h) = holder {
        let again = throttled(|| receive(clients, h, &key, reg))
            .await
            .map_err(|s| {
                format!(
                    "{id}: repeated receive by {h:?}: {:?} {}",
                    s.code(),
                    s.message()
                )
            })?
            .into_inner();
        if again.prescription_id != *id
            || again.state != pb::PrescriptionState::Accepted as i32
            || again.prescription.as_ref().map(|d| &d.content) != Some(&reg.attempt.signed.content)
        {
            return Err(format!(
                "{id}: repeated receive by {h:?} answered {} in {}",
                again.prescription_id,
                state_name(again.state)
            ));
        }
        let other = h.other();
        match throttled(|| receive(clients, other, &key, reg)).await {
            Err(s) if s.code() == Code::FailedPrecondition => {}
            Err(s) => {
                return Err(format!(
                    "{id}: receive by {other:?} (held by {h:?}): {:?} {}",
                    s.code(),
                    s.message()
                ));
            }
            Ok(_) => return Err(format!("{id}: received by {other:?} while held by {h:?}")),
        }
    }
    Ok(holder)
}

/// Checks the given registrations concurrently; updates the model with what was seen and
/// returns the failures.
async fn check_all(ctx: &Ctx, clients: &Arc<Clients>, regs: Vec<Registration>) -> Vec<String> {
    let chunk = regs.len().div_ceil(CHECKERS).max(1);
    let mut set = JoinSet::new();
    for part in regs.chunks(chunk) {
        let part = part.to_vec();
        let clients = Arc::clone(clients);
        set.spawn(async move {
            let mut out = Vec::new();
            for reg in part {
                let seen = check_one(&clients, &reg).await;
                out.push((reg.id, seen));
            }
            out
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = set.join_next().await {
        let mut m = ctx.model();
        for (id, seen) in done.expect("checker task") {
            match seen {
                Ok(holder) => {
                    let reg = m.registrations.get_mut(&id).expect("registered");
                    let interrupted = reg.receive_pending.take().is_some();
                    match holder {
                        // What survived a restart is durable: from now on it is acknowledged.
                        Some(h) => reg.accepted_by = Some(h),
                        // The interrupted receive did not happen: a pharmacy may try again.
                        None if interrupted => m.queue.push_back(id),
                        None => {}
                    }
                }
                Err(e) => failures.push(e),
            }
        }
    }
    failures
}

/// Registers again, with the very same signed document, every registration that was sent but
/// not acknowledged. Each must either have been stored whole (a search finds it and the answer
/// is its id) or not at all (a new registration). Returns the failures and how many had been
/// stored.
async fn reregister_unacked(ctx: &Ctx, clients: &Arc<Clients>) -> (Vec<String>, usize) {
    let unacked: Vec<Attempt> = std::mem::take(&mut ctx.model().unacked)
        .into_values()
        .collect();
    let mut failures = Vec::new();
    let mut stored = 0;
    let mut fresh = Vec::new();
    let mut clinic = clients.clinic.clone();
    for attempt in unacked {
        let number = &attempt.number;
        let found = clinic
            .search_prescriptions(pb::SearchPrescriptionsRequest {
                patient_key: Some(patient_key(attempt.patient)),
                issued_from: ctx.today.add_days(-1).to_string(),
                issued_to: ctx.today.add_days(1).to_string(),
            })
            .await;
        let found = match found {
            Ok(f) => f.into_inner().prescriptions,
            Err(s) => {
                failures.push(format!(
                    "search for {number}: {:?} {}",
                    s.code(),
                    s.message()
                ));
                continue;
            }
        };
        // The search answer is capped at 100: below that, "absent" is conclusive.
        let conclusive = found.len() < 100;
        let existing: Vec<_> = found
            .iter()
            .filter(|s| s.prescription_number == *number)
            .collect();
        if existing.len() > 1 {
            failures.push(format!("{number}: stored {} times", existing.len()));
            continue;
        }
        let answer = register_paced(&clinic, &attempt.signed).await;
        let r = match answer {
            Ok(r) => r.into_inner(),
            Err(s) => {
                failures.push(format!(
                    "registering unacknowledged {number} again ({} stored): {:?} {}",
                    if existing.is_empty() { "not" } else { "was" },
                    s.code(),
                    s.message()
                ));
                continue;
            }
        };
        if r.state != pb::PrescriptionState::Registered as i32 {
            failures.push(format!("{number} again: state {}", state_name(r.state)));
        }
        let mut m = ctx.model();
        match existing.first() {
            Some(e) => {
                stored += 1;
                if e.prescription_id != r.prescription_id {
                    failures.push(format!(
                        "{number} again: answered {} but {} is stored",
                        r.prescription_id, e.prescription_id
                    ));
                }
            }
            None if conclusive && m.registrations.contains_key(&r.prescription_id) => {
                failures.push(format!(
                    "{number} again: answered the id of another registration"
                ));
            }
            None => {}
        }
        m.issued.insert(r.exchange_number.clone());
        m.queue.push_back(r.prescription_id.clone());
        let reg = Registration {
            attempt: attempt.clone(),
            id: r.prescription_id.clone(),
            exchange_number: r.exchange_number,
            accepted_by: None,
            receive_pending: None,
        };
        m.registrations.insert(reg.id.clone(), reg.clone());
        fresh.push(reg);
    }
    failures.extend(check_all(ctx, clients, fresh).await);
    (failures, stored)
}

// ---------------------------------------------------------------------------------------------
// The log check
// ---------------------------------------------------------------------------------------------

/// Removes ANSI escape sequences (the server colours its log even into a file).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The line without its leading RFC 3339 timestamp, whose microseconds are 6 digits too.
fn without_timestamp(line: &str) -> &str {
    let trimmed = line.trim_start();
    // A JSON line: {"timestamp":"2026-…Z",…
    if let Some(rest) = trimmed.strip_prefix("{\"timestamp\":\"") {
        return rest.split_once('"').map_or(rest, |(_, after)| after);
    }
    match trimmed.split_once(' ') {
        Some((first, rest))
            if first.len() >= 20
                && first.ends_with('Z')
                && first.as_bytes()[4] == b'-'
                && first.as_bytes()[10] == b'T' =>
        {
            rest
        }
        _ => trimmed,
    }
}

/// The maximal runs of ASCII digits in `line`, except the numbers of HTTP/2 frame fields: h2's
/// debug lines print frame headers (never payloads), and its constant window update of 983041
/// bytes, or a stream id, must not pass for an exchange number.
fn digit_runs(line: &str) -> Vec<&str> {
    let bytes = line.as_bytes();
    let mut runs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let before = &line[..start];
        if !(before.ends_with("size_increment: ") || before.ends_with("StreamId(")) {
            runs.push(&line[start..i]);
        }
    }
    runs
}

fn check_logs(logs: &[PathBuf], issued: &BTreeSet<String>, starts: usize) {
    let mut text_needles: Vec<String> = PATIENT_NAMES
        .iter()
        .chain(&BIRTH_DATES)
        .chain(&[YJ_CODE])
        .chain(&DOSAGES)
        .chain(&[
            "ZQ-dosage",
            "朝夕食後",
            "発熱時",
            "Hanako Taikyu",
            "耐久試験",
        ])
        .map(|s| s.to_string())
        .collect();
    // All-digit strings count only as a whole number (non-digits on both sides).
    let mut digit_needles: BTreeSet<String> = issued.clone();
    digit_needles.insert(RECEIPT_CODE.to_owned());
    for s in patient_key_strings() {
        if s.bytes().all(|b| b.is_ascii_digit()) {
            digit_needles.insert(s);
        } else {
            text_needles.push(s);
        }
    }

    let mut lines = 0;
    let mut listening = 0;
    let mut leaks = Vec::new();
    let mut panics = Vec::new();
    for log in logs {
        let text = fs::read(log).unwrap_or_else(|e| panic!("reading {}: {e}", log.display()));
        let text = String::from_utf8_lossy(&text);
        for raw in text.lines() {
            let line = strip_ansi(raw);
            lines += 1;
            if line.contains("rxgate listening") {
                listening += 1;
            }
            if line.contains("panicked") {
                panics.push(line.clone());
            }
            let body = without_timestamp(&line);
            for needle in &text_needles {
                if body.contains(needle.as_str()) {
                    leaks.push(format!("{needle:?} in {}: {line}", log.display()));
                }
            }
            for run in digit_runs(body) {
                if digit_needles.contains(run) {
                    leaks.push(format!("{run:?} in {}: {line}", log.display()));
                }
            }
        }
    }
    println!(
        "log check: {lines} lines from {} server runs checked for {} strings ({} issued exchange \
         numbers)",
        logs.len(),
        text_needles.len() + digit_needles.len(),
        issued.len()
    );
    assert!(lines > 0, "the server wrote nothing");
    assert_eq!(
        listening, starts,
        "expected one \"rxgate listening\" line per start"
    );
    assert!(
        panics.is_empty(),
        "the server panicked:\n{}",
        panics.join("\n")
    );
    assert!(
        leaks.is_empty(),
        "the server logged patient data ({} hits):\n{}",
        leaks.len(),
        leaks
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

fn fail_if(failures: &[String], when: &str) {
    assert!(
        failures.is_empty(),
        "{when}: {} failures:\n{}",
        failures.len(),
        failures
            .iter()
            .take(30)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_work_survives_sigkill() {
    let test_started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("store");
    let ctx = Arc::new(Ctx {
        model: Mutex::new(Model::default()),
        killed: AtomicBool::new(false),
        doctor: signer("doctor"),
        rng: SystemRandom::new(),
        today: JapanDate::of(SystemTime::now()),
    });
    let mut logs = Vec::new();

    for round in 0..=ROUNDS {
        let log = dir.path().join(format!("server-{round}.log"));
        logs.push(log.clone());
        let (server, ready_in) = start_server(&data_dir, log, &ctx.rng).await;
        let clients = Arc::new(Clients::connect(&server.addr).await);

        // After a crash: everything acknowledged is there, consistently.
        let checked = ctx.model().registrations.len();
        let check_started = Instant::now();
        let regs: Vec<Registration> = ctx.model().registrations.values().cloned().collect();
        let failures = check_all(&ctx, &clients, regs).await;
        fail_if(&failures, &format!("after restart {round}"));
        let unacked = ctx.model().unacked.len();
        let (failures, stored) = reregister_unacked(&ctx, &clients).await;
        fail_if(&failures, &format!("re-registering after restart {round}"));
        println!(
            "start {round}: ready in {ready_in:?}; {checked} registrations checked, {unacked} \
             unacknowledged registered again ({stored} had been stored) in {:?}",
            check_started.elapsed()
        );
        if round == ROUNDS {
            break;
        }

        // Load, then SIGKILL in the middle of it.
        ctx.killed.store(false, Ordering::SeqCst);
        ctx.model().stats = RoundStats::default();
        let mut tasks = JoinSet::new();
        for task in 0..CLINIC_TASKS {
            tasks.spawn(clinic_task(
                Arc::clone(&ctx),
                server.addr.clone(),
                round,
                task,
            ));
        }
        for pharmacy in Pharmacy::ALL {
            for _ in 0..PHARMACY_TASKS {
                tasks.spawn(pharmacy_task(
                    Arc::clone(&ctx),
                    server.addr.clone(),
                    pharmacy,
                ));
            }
        }
        // 300-800 ms of load, and at least a few acknowledged registrations (a slow machine may
        // need longer for its first ones).
        let load_started = Instant::now();
        tokio::time::sleep(Duration::from_millis(300 + random_u64(&ctx.rng) % 500)).await;
        while ctx.model().stats.registered < MIN_REGISTERED_PER_ROUND {
            assert!(
                load_started.elapsed() < STEP_TIMEOUT,
                "round {round}: fewer than {MIN_REGISTERED_PER_ROUND} registrations in \
                 {STEP_TIMEOUT:?}: {:?}",
                ctx.model().unexpected
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let load = load_started.elapsed();
        ctx.killed.store(true, Ordering::SeqCst);
        server.kill();
        let killed_at = Instant::now();
        let drained = tokio::time::timeout(STEP_TIMEOUT, async {
            while let Some(done) = tasks.join_next().await {
                done.expect("client task");
            }
        })
        .await;
        assert!(drained.is_ok(), "client calls hung after the kill");
        let drain = killed_at.elapsed();
        drop(clients);

        let m = ctx.model();
        fail_if(
            &m.unexpected,
            &format!("round {round} while the server was up"),
        );
        println!(
            "round {round}: killed after {load:?} of load (clients done {drain:?} later): {} \
             registered, {} looked up, {} received, {} registrations and {} receives \
             unacknowledged",
            m.stats.registered,
            m.stats.looked_up,
            m.stats.received,
            m.unacked.len(),
            m.registrations
                .values()
                .filter(|r| r.receive_pending.is_some())
                .count()
        );
    }

    let (total, accepted, issued) = {
        let m = ctx.model();
        let accepted = m
            .registrations
            .values()
            .filter(|r| r.accepted_by.is_some())
            .count();
        (m.registrations.len(), accepted, m.issued.clone())
    };
    println!("in all: {total} prescriptions, {accepted} accepted by a pharmacy");
    assert!(accepted > 0, "no prescription was ever received");
    let log_check_started = Instant::now();
    check_logs(&logs, &issued, ROUNDS + 1);
    println!("log check took {:?}", log_check_started.elapsed());
    println!("durability test took {:?}", test_started.elapsed());
}

/// The log scanner itself: colours and the timestamp are removed, digit runs are whole numbers,
/// and h2's frame numbers are not mistaken for exchange numbers.
#[test]
fn log_scanner_sees_through_colours_and_timestamps() {
    let raw = "\u{1b}[2m2026-11-25T14:38:06.744288Z\u{1b}[0m \u{1b}[34mDEBUG\u{1b}[0m x: \
               exchange\u{1b}[2m=\u{1b}[0m123456 name=\u{1b}[3m耐久試験 花子\u{1b}[0m";
    let line = strip_ansi(raw);
    let body = without_timestamp(&line);
    assert!(!body.contains("744288"), "{body}");
    assert!(body.contains(PATIENT_NAMES[1]), "{body}");
    assert_eq!(digit_runs(body), ["123456"]);
    assert_eq!(
        digit_runs("a1234567b 12345 x654321"),
        ["1234567", "12345", "654321"]
    );
    let frame = "WindowUpdate { stream_id: StreamId(0), size_increment: 983041 } StreamId(123457)";
    assert!(digit_runs(frame).is_empty(), "{:?}", digit_runs(frame));
}
