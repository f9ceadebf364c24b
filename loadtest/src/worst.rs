//! `--scenario worst`: the worst-request budget of issue 22. Against a spawned gateway, the
//! worst CheckPrescription, RegisterPrescription, ReceivePrescription and CheckDispensing its
//! limits allow — as many lines as allowed, every per-request switch on, consent given, against
//! a patient history as large as allowed, with drugs that meet a rule with every entry — each
//! sent alone, `--repetitions` times, with its latency, the size of its answer and the gateway's
//! resident memory around it. Prints a table, then one line of JSON.
//!
//! Every repetition has six patients of its own, so that no per-patient check budget runs out
//! and no registration meets the history bound:
//! - the *check* patient: `--history-entries` lines of itraconazole, in prescriptions of
//!   `--lines` lines from the history clinics, every other one received and dispensed by a
//!   pharmacy. A draft of triazolam lines meets a critical contraindication with every entry.
//! - the *register* patient: the same, one prescription fewer, so that the measured
//!   registration of `--lines` triazolam lines fits the bound. Its acknowledgements are the
//!   critical findings of a CheckPrescription of the same lines just before (measured too), as
//!   many as the gateway takes.
//! - the *receive* patient: the measured clinic's triazolam prescription, registered first
//!   against an empty history; then prescriptions of amlodipine that pharmacies receive and
//!   record as dispensed itraconazole (a dispensing record is neither checked nor compared with
//!   its prescription's drugs, which lets the history grow after it).
//! - the *dispense* patient: a one-line amlodipine prescription, registered and received by the
//!   measured pharmacy first; then undispensed itraconazole from the history clinics, as many
//!   lines as the record has room for beside it. The pharmacy checks a dispensing of it: as
//!   many lines as a record may have, all triazolam (the lines a pharmacy checks may differ from
//!   the prescription's), against every other entry. Its history spends the patient's check
//!   budget once per line (registrations), where a dispensed one spends it twice (registration
//!   and receipt): with the check of 128 lines it stays within 300.
//! - the *grouped* patient: `--history-entries` undispensed lines from the history clinics, of
//!   as many different products as meet a contraindication row of triazolam, in turn. A draft
//!   of triazolam lines then meets one critical finding per (line, row), which names every
//!   product of its row: the answer names about lines × entries drugs.
//! - the *receive-grouped* patient: as the receive patient, its carriers dispensed as those
//!   products in turn.
//!
//! Memory: VmRSS before a call and VmHWM after it, from `/proc/PID/status` of the spawned
//! gateway, with the peak reset in between (`/proc/PID/clear_refs`): the call's peak extra RSS.

use std::{
    collections::BTreeMap,
    future::Future,
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context;
use prost::Message;
use rxgate::{
    domain::time::JapanDate,
    limits::Limits,
    wire::proto::v1::{
        self as pb, dispensing_service_client::DispensingServiceClient,
        prescription_service_client::PrescriptionServiceClient,
    },
};
use serde_json::{Value, json};
use tonic::{Code, Status, transport::Channel};

use crate::{
    cli::Options,
    corpus::{
        self, ACK_REASON, AMLODIPINE, ATORVASTATIN, Drug, ITRACONAZOLE, Plan, TRIAZOLAM, Unsigned,
    },
    fleet::{Fleet, Member, Shape},
    pki::Minter,
    pool, server,
    signers::Signers,
    spawn::{self, Gateway},
};

/// Issue 22's budget for one request: its latency and the gateway's extra resident memory.
const BUDGET_MS: f64 = 50.0;
const BUDGET_MIB: f64 = 32.0;

/// The answers of these requests are large, and their size is what is measured: the client
/// takes any.
const MAX_ANSWER_BYTES: usize = 1 << 30;

/// Pharmacies that dispense the histories; the first receives the measured prescriptions.
const PHARMACIES: usize = 2;

/// Patients of one repetition: check, register, receive, dispense, grouped, receive-grouped.
const PATIENTS: usize = 6;

/// Receipt codes of every shipped product that meets a contraindication row of triazolam: 87
/// products of itraconazole, fluconazole, voriconazole, posaconazole, miconazole (oral and
/// injection), darunavir, cobicistat and ensitrelvir (8 rows; the two darunavir/cobicistat
/// combinations meet two). Ritonavir's products are left out: ritonavir is contraindicated with
/// voriconazole, and the history's registrations acknowledge nothing.
const TRIAZOLAM_CONTRAINDICATED: &str = "\
    616290164 616290165 616290177 620000121 620000122 620002493 620002494 620002497 620002804 \
    620002805 620003726 620003727 620003728 620004349 620006311 620007077 620007481 620007482 \
    620007914 620008922 620008923 621530003 621530103 621531201 621531301 621542001 621542101 \
    621542201 621543201 621543302 621543402 621569001 621569101 621569201 621569301 621629201 \
    621636802 621639401 621688201 621746701 622053301 622056701 622070301 622070401 622073601 \
    622139201 622139301 622328600 622375301 622403501 622479601 622479701 622480701 622480801 \
    622483001 622483101 622491901 622492001 622492101 622495403 622495503 622499601 622499701 \
    622499801 622507701 622532301 622632903 622683501 622747200 622747300 622747400 622747700 \
    622765200 622765300 622765400 622765500 622765600 622784301 622784401 622972101 628785801 \
    670002493 670002494 670003726 670003727 670003728 676290177";

/// The products of `TRIAZOLAM_CONTRAINDICATED` (the gateway does not compare a line's unit
/// with the master's).
fn contraindicated_with_triazolam() -> Vec<Drug> {
    TRIAZOLAM_CONTRAINDICATED
        .split_whitespace()
        .map(|code| Drug { code, unit: "錠" })
        .collect()
}

/// The sizes a run drives to.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    lines: usize,
    history: usize,
}

impl Sizes {
    /// History prescriptions of a check patient (one fewer for the others).
    fn prescriptions(self) -> usize {
        self.history / self.lines
    }

    /// The `[limits]` the gateway needs for these sizes; `None` for its defaults (`--dev`).
    fn limits(self) -> Option<String> {
        let defaults = Limits::default();
        let default = (self.lines, self.history)
            == (
                defaults.prescription_lines,
                defaults.history_entries_per_patient,
            );
        (!default).then(|| {
            format!(
                "prescription_lines = {}\nhistory_entries_per_patient = {}",
                self.lines, self.history
            )
        })
    }
}

/// Every per-request switch on: the most work a check can be asked for.
fn all_switches() -> Option<pb::CheckOptions> {
    Some(pb::CheckOptions {
        include_same_institution: Some(true),
        caution: Some(true),
        same_class: Some(true),
        within_prescription: Some(true),
    })
}

/// One repetition: its patients and the documents of its measured requests.
struct Repetition {
    check: pb::PatientKey,
    grouped: pb::PatientKey,
    /// The receive patients and the exchange numbers of the prescriptions the pharmacy
    /// receives: history dispensed as itraconazole, as the grouped products.
    received: [(pb::PatientKey, String); 2],
    /// The measured registration for the register patient, unsigned (its prior check) and
    /// signed.
    draft: pb::Prescription,
    signed: pb::SignedDocument,
    /// The dispense patient's prescription, accepted by the measured pharmacy, and the lines of
    /// the dispensing it checks.
    accepted: String,
    dispensing: Vec<pb::DispensedLine>,
}

/// Starts the gateway, builds the histories, measures, reports.
pub async fn run(o: &Options) -> anyhow::Result<()> {
    let sizes = Sizes {
        lines: o.lines,
        history: o.history_entries,
    };
    let binary = spawn::binary(o.rxgate_bin.as_deref())?;
    let gateway = Gateway::start(&binary, sizes.limits().as_deref()).await?;
    let measured = measure(o, sizes, &gateway).await;
    let stopped = gateway.stop().await;
    measured?;
    stopped
}

async fn measure(o: &Options, sizes: Sizes, gateway: &Gateway) -> anyhow::Result<()> {
    let preparing = Instant::now();
    let shape = Shape {
        clinics: 1,
        history_clinics: sizes.prescriptions(),
        pharmacies: PHARMACIES,
        connections: 1,
    };
    let fleet = Fleet::connect(
        &Minter::from_dir(&o.tls_dir)?,
        shape,
        &gateway.addr,
        o.rpc_timeout(),
    )
    .await?;
    let (doctor, pharmacist) = o.signer.files();
    let signers = Signers::load(&o.hpki_dir, doctor, pharmacist)?;
    let plan = Plan {
        run: crate::run_tag(),
        today: JapanDate::of(SystemTime::now()),
        signers: &signers,
        options: o,
    };
    let repetitions = o.repetitions.unwrap_or(1);
    let reps = prepare(&plan, &fleet, sizes, repetitions).await?;
    let prepared_s = preparing.elapsed().as_secs_f64();
    let pid = gateway.pid().context("the gateway has exited")?;
    let probe = Probe {
        memory: Memory { pid },
        metrics: gateway.metrics.clone(),
    };
    let phases = run_phases(&plan, &fleet, sizes, &reps, &probe).await?;
    print_report(o, sizes, prepared_s, &phases);
    Ok(())
}

/// Builds every repetition's histories (untimed) and signs its measured registration.
async fn prepare(
    plan: &Plan<'_>,
    fleet: &Fleet,
    sizes: Sizes,
    repetitions: usize,
) -> anyhow::Result<Vec<Repetition>> {
    let clinic = &fleet.clinics[0];
    let measured = |(r, tag): (usize, &str), patient: usize, (drug, lines): (Drug, usize)| {
        let number = format!("LW-{}-{r}-{tag}", plan.run);
        let patient = plan.patient(PATIENTS * r + patient);
        draft(plan, clinic, &number, patient, &[drug], lines)
    };
    let all = |tag: &str, patient: usize, drug: (Drug, usize)| -> Vec<_> {
        (0..repetitions)
            .map(|r| measured((r, tag), patient, drug))
            .collect()
    };
    let drafts = all("reg", 1, (TRIAZOLAM, sizes.lines));
    let received = all("rx", 2, (TRIAZOLAM, sizes.lines));
    let to_dispense = all("dsp", 3, (AMLODIPINE, 1));
    let signed = plan.signers.doctor.sign_all(&drafts)?;
    let received_grouped = all("rxg", 5, (TRIAZOLAM, sizes.lines));
    let registered = register_first(clinic, plan.signers.doctor.sign_all(&received)?).await?;
    let registered_grouped =
        register_first(clinic, plan.signers.doctor.sign_all(&received_grouped)?).await?;
    let accepted = accept_first(plan, fleet, plan.signers.doctor.sign_all(&to_dispense)?).await?;
    let dispensing = dispensing_lines(plan, fleet, &to_dispense[0]);
    let unsigned = (0..repetitions).flat_map(|r| histories(plan, fleet, sizes, r));
    let jobs = plan.sign_history(unsigned.collect())?;
    let concurrency = pool::PER_INSTITUTION * fleet.history_clinics.len().max(1);
    pool::run_bounded(jobs, concurrency, |job| job.run(fleet)).await?;
    Ok(drafts
        .into_iter()
        .zip(signed)
        .zip(registered.into_iter().zip(accepted))
        .zip(registered_grouped)
        .enumerate()
        .map(
            |(r, (((draft, signed), ((exchange, _), accepted)), (grouped_exchange, _)))| {
                Repetition {
                    check: plan.patient(PATIENTS * r),
                    grouped: plan.patient(PATIENTS * r + 4),
                    received: [
                        (plan.patient(PATIENTS * r + 2), exchange),
                        (plan.patient(PATIENTS * r + 5), grouped_exchange),
                    ],
                    draft,
                    signed,
                    accepted,
                    dispensing: dispensing.clone(),
                }
            },
        )
        .collect())
}

/// The histories of repetition `r`'s patients: the check patient's as large as allowed, the
/// register patient's a prescription short of it, the receive patients' carriers, the dispense
/// patient's and the grouped patient's undispensed lines.
fn histories(plan: &Plan<'_>, fleet: &Fleet, sizes: Sizes, r: usize) -> Vec<Unsigned> {
    let n = sizes.prescriptions();
    let grouped = contraindicated_with_triazolam();
    let itraconazole = &[ITRACONAZOLE][..];
    let mut all: Vec<Unsigned> = [
        ("chk", 0, n, ITRACONAZOLE, itraconazole),
        ("reg", 1, n - 1, ITRACONAZOLE, itraconazole),
        ("car", 2, n - 1, AMLODIPINE, itraconazole),
        ("cag", 5, n - 1, AMLODIPINE, &grouped),
    ]
    .into_iter()
    .flat_map(|(tag, patient, count, drug, dispensed_as)| {
        let key = plan.patient(PATIENTS * r + patient);
        let shape = (drug, sizes.lines, dispensed_as);
        history(plan, fleet, (r, tag), key, count, shape)
    })
    .collect();
    let entries = sizes.prescriptions() * sizes.lines;
    let undispensed_of = |(tag, patient, drugs, entries): (&str, usize, &[Drug], usize)| {
        let key = plan.patient(PATIENTS * r + patient);
        undispensed(plan, fleet, (r, tag), key, (drugs, entries), sizes)
    };
    // The dispense patient's record holds the accepted prescription's line beside them.
    all.extend(undispensed_of(("dsp", 3, &[ITRACONAZOLE], entries - 1)));
    all.extend(undispensed_of(("grp", 4, &grouped, entries)));
    all
}

/// `entries` lines of `drugs` in turn for `patient`, in prescriptions of `sizes.lines` lines,
/// one from each history clinic, none dispensed.
fn undispensed(
    plan: &Plan<'_>,
    fleet: &Fleet,
    (r, tag): (usize, &str),
    patient: pb::PatientKey,
    (drugs, entries): (&[Drug], usize),
    sizes: Sizes,
) -> Vec<Unsigned> {
    (0..entries.div_ceil(sizes.lines))
        .map(|k| {
            let lines = sizes.lines.min(entries - k * sizes.lines);
            let clinic = &fleet.history_clinics[k];
            let number = format!("LW-{}-{r}-{tag}-{k}", plan.run);
            let drugs = in_turn(drugs, k * sizes.lines, lines);
            let rx = draft(plan, clinic, &number, patient.clone(), &drugs, lines);
            Unsigned {
                clinic: k,
                patient: patient.clone(),
                prescription: rx,
                dispensing: None,
            }
        })
        .collect()
}

/// A prescription (or draft) of `lines` lines of `drugs` in turn, by `clinic`.
fn draft(
    plan: &Plan<'_>,
    clinic: &Member,
    number: &str,
    patient: pb::PatientKey,
    drugs: &[Drug],
    lines: usize,
) -> pb::Prescription {
    let mut rx = plan.prescription(clinic, number, patient, drugs[0]);
    let template = rx.lines[0].clone();
    rx.lines = (0..lines)
        .map(|i| {
            let drug = drugs[i % drugs.len()];
            pb::PrescriptionLine {
                drug: Some(corpus::receipt(drug)),
                unit: drug.unit.into(),
                ..template.clone()
            }
        })
        .collect();
    rx
}

/// `n` of `drugs` in turn, from the `from`th on.
fn in_turn(drugs: &[Drug], from: usize, n: usize) -> Vec<Drug> {
    drugs.iter().cycle().skip(from).take(n).copied().collect()
}

/// `count` history prescriptions of `drug` for `patient`, one from each history clinic; every
/// other one (every one, for a carrier of amlodipine) is dispensed, as `dispensed_as` in turn.
fn history(
    plan: &Plan<'_>,
    fleet: &Fleet,
    (r, tag): (usize, &str),
    patient: pb::PatientKey,
    count: usize,
    (drug, lines, dispensed_as): (Drug, usize, &[Drug]),
) -> Vec<Unsigned> {
    (0..count)
        .map(|k| {
            let clinic = &fleet.history_clinics[k];
            let number = format!("LW-{}-{r}-{tag}-{k}", plan.run);
            let rx = draft(plan, clinic, &number, patient.clone(), &[drug], lines);
            let dispensing = (k % 2 == 0 || drug.code != ITRACONAZOLE.code).then(|| {
                let ph = k % PHARMACIES;
                let drugs = in_turn(dispensed_as, k * lines, lines);
                (ph, dispensed(plan, &rx, &fleet.pharmacies[ph], &drugs))
            });
            Unsigned {
                clinic: k,
                patient: patient.clone(),
                prescription: rx,
                dispensing,
            }
        })
        .collect()
}

/// The dispensing record of every line of `rx`, line i as `drugs[i]`.
fn dispensed(
    plan: &Plan<'_>,
    rx: &pb::Prescription,
    pharmacy: &Member,
    drugs: &[Drug],
) -> pb::DispensingRecord {
    let mut record = plan.dispensing(rx, pharmacy, drugs[0]);
    let template = record.lines[0].clone();
    record.lines = drugs
        .iter()
        .enumerate()
        .map(|(i, drug)| pb::DispensedLine {
            prescription_line: i as u32,
            drug: Some(corpus::receipt(*drug)),
            unit: drug.unit.into(),
            ..template.clone()
        })
        .collect();
    record
}

/// The lines of the worst dispensing check of `rx`: as many as a record may have, each
/// triazolam. A check names each (prescribed line, drug) once; it does not compare the lines
/// with the prescription (the record does), so line i names prescribed line i.
fn dispensing_lines(
    plan: &Plan<'_>,
    fleet: &Fleet,
    rx: &pb::Prescription,
) -> Vec<pb::DispensedLine> {
    let record = plan.dispensing(rx, &fleet.pharmacies[0], TRIAZOLAM);
    let template = record.lines[0].clone();
    (0..Limits::default().dispensing_lines)
        .map(|i| pb::DispensedLine {
            prescription_line: i as u32,
            ..template.clone()
        })
        .collect()
}

/// Registers the receive (or dispense) patients' prescriptions while their histories are empty;
/// their exchange numbers and prescription ids.
async fn register_first(
    clinic: &Member,
    signed: Vec<pb::SignedDocument>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut registered = Vec::with_capacity(signed.len());
    for document in signed {
        let answer = PrescriptionServiceClient::new(clinic.channel())
            .register_prescription(corpus::register_request(document))
            .await
            .context("registering a prescription to receive")?
            .into_inner();
        registered.push((answer.exchange_number, answer.prescription_id));
    }
    Ok(registered)
}

/// Registers the dispense patients' prescriptions, and the measured pharmacy receives them,
/// while their histories are empty; their prescription ids.
async fn accept_first(
    plan: &Plan<'_>,
    fleet: &Fleet,
    signed: Vec<pb::SignedDocument>,
) -> anyhow::Result<Vec<String>> {
    let registered = register_first(&fleet.clinics[0], signed).await?;
    let mut accepted = Vec::with_capacity(registered.len());
    for (r, (exchange, id)) in registered.into_iter().enumerate() {
        let patient = plan.patient(PATIENTS * r + 3);
        pharmacy_client(fleet)
            .receive_prescription(corpus::receive_request(patient, exchange))
            .await
            .context("receiving a prescription to dispense")?;
        accepted.push(id);
    }
    Ok(accepted)
}

/// What one answer was.
#[derive(Debug, Clone)]
struct Answer {
    code: Code,
    /// The encoded answer, or an error's message and details.
    bytes: usize,
    /// An error's message.
    message: Option<String>,
    /// The ids of its critical findings.
    critical: Vec<String>,
    /// Its warning and info findings, and those it says it left out.
    others: usize,
    omitted: u32,
    /// The other drugs its findings name, summed over the findings.
    named: usize,
}

impl Answer {
    fn of<M: Message>(
        answer: Result<tonic::Response<M>, Status>,
        findings: impl Fn(&M) -> (&[pb::Finding], u32),
    ) -> Answer {
        let answer = match answer {
            Ok(answer) => answer.into_inner(),
            Err(status) => {
                return Answer {
                    code: status.code(),
                    bytes: status.message().len() + status.details().len(),
                    message: Some(status.message().to_owned()),
                    critical: Vec::new(),
                    others: 0,
                    omitted: 0,
                    named: 0,
                };
            }
        };
        let (findings, omitted) = findings(&answer);
        let named = findings.iter().map(|f| f.others.len()).sum();
        let (critical, others): (Vec<_>, Vec<_>) = findings
            .iter()
            .partition(|f| f.indicator == pb::Indicator::Critical as i32);
        Answer {
            code: Code::Ok,
            bytes: answer.encoded_len(),
            message: None,
            critical: critical.into_iter().map(|f| f.id.clone()).collect(),
            others: others.len(),
            omitted,
            named,
        }
    }
}

/// The gateway's resident memory, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Resident {
    rss: u64,
    hwm: u64,
}

/// The spawned gateway's `/proc` entries.
struct Memory {
    pid: u32,
}

impl Memory {
    fn read(&self) -> anyhow::Result<Resident> {
        let path = format!("/proc/{}/status", self.pid);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        resident(&text).with_context(|| format!("no VmRSS and VmHWM in {path}"))
    }

    /// Resets the peak (VmHWM) to the current RSS (Linux 4.0 and later); false if refused.
    fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").is_ok()
    }
}

/// VmRSS and VmHWM of a `/proc/PID/status` text.
fn resident(status: &str) -> Option<Resident> {
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..]
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    };
    Some(Resident {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

/// What a measurement reads of the gateway.
struct Probe {
    memory: Memory,
    /// Its metrics port.
    metrics: String,
}

/// One worst request, sent once per repetition.
struct Phase {
    name: &'static str,
    rpc: &'static str,
    latencies: Vec<Duration>,
    answers: Vec<Answer>,
    /// The largest VmHWM after a call less VmRSS before it, KiB.
    peak_extra: u64,
    /// Whether every peak was reset before its call (else it may be an earlier one).
    peak_reset: bool,
    /// VmRSS before the first call and after the last, KiB.
    rss: (u64, u64),
    /// The gateway's own figures over the phase (its mean latency, the check's mean).
    server: Option<Value>,
}

impl Probe {
    /// Sends `call(r)` for every repetition r, one at a time.
    async fn phase<F, Fut>(
        &self,
        (name, rpc): (&'static str, &'static str),
        repetitions: usize,
        mut call: F,
    ) -> anyhow::Result<Phase>
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = Answer>,
    {
        let before = server::Scrape::read(&self.metrics).await.ok();
        let first = self.memory.read()?.rss;
        let (mut latencies, mut answers) = (Vec::new(), Vec::new());
        let (mut peak_extra, mut peak_reset) = (0, true);
        for r in 0..repetitions {
            peak_reset &= self.memory.reset_peak();
            let resident = self.memory.read()?.rss;
            let started = Instant::now();
            answers.push(call(r).await);
            latencies.push(started.elapsed());
            peak_extra = peak_extra.max(self.memory.read()?.hwm.saturating_sub(resident));
        }
        let last = self.memory.read()?.rss;
        let after = server::Scrape::read(&self.metrics).await.ok();
        let server = before
            .zip(after)
            .map(|(b, a)| server::figures(&b, &a, &[rpc]));
        Ok(Phase {
            name,
            rpc,
            latencies,
            answers,
            peak_extra,
            peak_reset,
            rss: (first, last),
            server,
        })
    }
}

fn clinic_client(fleet: &Fleet) -> PrescriptionServiceClient<Channel> {
    PrescriptionServiceClient::new(fleet.clinics[0].channel())
        .max_decoding_message_size(MAX_ANSWER_BYTES)
}

fn pharmacy_client(fleet: &Fleet) -> DispensingServiceClient<Channel> {
    DispensingServiceClient::new(fleet.pharmacies[0].channel())
        .max_decoding_message_size(MAX_ANSWER_BYTES)
}

/// A CheckPrescription of `drugs` in turn, `lines` lines, by the measured clinic.
async fn check(
    plan: &Plan<'_>,
    fleet: &Fleet,
    patient: &pb::PatientKey,
    (drugs, lines, consent): (&[Drug], usize, pb::Consent),
) -> Answer {
    let number = format!("LW-{}-draft", plan.run);
    let draft = draft(
        plan,
        &fleet.clinics[0],
        &number,
        patient.clone(),
        drugs,
        lines,
    );
    check_draft(fleet, draft, consent).await
}

async fn check_draft(fleet: &Fleet, draft: pb::Prescription, consent: pb::Consent) -> Answer {
    let request = pb::CheckPrescriptionRequest {
        consent: consent as i32,
        check_options: all_switches(),
        ..corpus::check_request(draft)
    };
    let answer = clinic_client(fleet).check_prescription(request).await;
    Answer::of(answer, |a| (&a.findings, a.omitted))
}

/// Every phase, in order: the checks, then the registration (acknowledging what its own check
/// found), then the receipt and the check of its dispensing.
async fn run_phases(
    plan: &Plan<'_>,
    fleet: &Fleet,
    sizes: Sizes,
    reps: &[Repetition],
    probe: &Probe,
) -> anyhow::Result<Vec<Phase>> {
    let n = reps.len();
    let limits = Limits::default();
    let worst = (&[TRIAZOLAM][..], sizes.lines, pb::Consent::Card);
    let mix = (
        &[TRIAZOLAM, ITRACONAZOLE, ATORVASTATIN][..],
        sizes.lines,
        pb::Consent::Card,
    );
    let unconsented_lines = sizes.lines.min(limits.unconsented_check_lines);
    let unconsented = (&[TRIAZOLAM][..], unconsented_lines, pb::Consent::None);
    let check_rpc = "CheckPrescription";
    let mut phases = Vec::new();
    for (name, shape, patient) in [
        ("check", worst, 0),
        ("check-mix", mix, 0),
        ("check-unconsented", unconsented, 0),
        ("check-grouped", worst, 1),
    ] {
        let phase = probe.phase((name, check_rpc), n, |r| {
            let patients = [&reps[r].check, &reps[r].grouped];
            check(plan, fleet, patients[patient], shape)
        });
        phases.push(phase.await?);
    }
    let prior = probe
        .phase(("check-before-register", check_rpc), n, |r| {
            check_draft(fleet, reps[r].draft.clone(), pb::Consent::Card)
        })
        .await?;
    let acks: Vec<Vec<pb::Acknowledgement>> = prior
        .answers
        .iter()
        .map(|a| acknowledgements(&a.critical, limits.acknowledgements))
        .collect();
    phases.push(prior);
    let register = probe.phase(("register", "RegisterPrescription"), n, |r| {
        register(fleet, reps[r].signed.clone(), acks[r].clone())
    });
    phases.push(register.await?);
    for (name, k) in [("receive", 0), ("receive-grouped", 1)] {
        let phase = probe.phase((name, "ReceivePrescription"), n, |r| {
            receive(fleet, &reps[r].received[k])
        });
        phases.push(phase.await?);
    }
    let dispensing = probe.phase(("check-dispensing", "CheckDispensing"), n, |r| {
        check_dispensing(fleet, &reps[r])
    });
    phases.push(dispensing.await?);
    Ok(phases)
}

/// Acknowledgements of the first `max` of `critical`.
fn acknowledgements(critical: &[String], max: usize) -> Vec<pb::Acknowledgement> {
    critical
        .iter()
        .take(max)
        .map(|id| pb::Acknowledgement {
            finding_id: id.clone(),
            reason: ACK_REASON.into(),
        })
        .collect()
}

async fn register(
    fleet: &Fleet,
    signed: pb::SignedDocument,
    acknowledgements: Vec<pb::Acknowledgement>,
) -> Answer {
    let request = pb::RegisterPrescriptionRequest {
        check_options: all_switches(),
        acknowledgements,
        ..corpus::register_request(signed)
    };
    let answer = clinic_client(fleet).register_prescription(request).await;
    Answer::of(answer, |a| (&a.findings, a.findings_omitted))
}

async fn receive(fleet: &Fleet, (patient, exchange): &(pb::PatientKey, String)) -> Answer {
    let request = pb::ReceivePrescriptionRequest {
        check_options: all_switches(),
        ..corpus::receive_request(patient.clone(), exchange.clone())
    };
    let answer = pharmacy_client(fleet).receive_prescription(request).await;
    Answer::of(answer, |a| (&a.findings, a.findings_omitted))
}

async fn check_dispensing(fleet: &Fleet, rep: &Repetition) -> Answer {
    let request = pb::CheckDispensingRequest {
        prescription_id: rep.accepted.clone(),
        lines: rep.dispensing.clone(),
        consent: pb::Consent::Card as i32,
        check_options: all_switches(),
    };
    let answer = pharmacy_client(fleet).check_dispensing(request).await;
    Answer::of(answer, |a| (&a.findings, a.omitted))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A phase's figures, as the JSON line gives them.
fn figures(p: &Phase) -> Value {
    let mut sorted = p.latencies.clone();
    sorted.sort();
    let last = p.answers.last();
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &p.answers {
        *codes.entry(format!("{:?}", a.code)).or_default() += 1;
        if let Some(message) = &a.message {
            *errors.entry(message).or_default() += 1;
        }
    }
    let (max_ms, peak_mib) = (ms(sorted[sorted.len() - 1]), mib(p.peak_extra));
    json!({
        "rpc": p.rpc,
        "calls": sorted.len(),
        "codes": codes,
        "errors": errors,
        "min_ms": ms(sorted[0]),
        "median_ms": ms(sorted[sorted.len() / 2]),
        "max_ms": max_ms,
        "answer_bytes": last.map(|a| a.bytes),
        "critical": last.map(|a| a.critical.len()),
        "others": last.map(|a| a.others),
        "omitted": last.map(|a| a.omitted),
        "named": last.map(|a| a.named),
        "peak_extra_rss_mib": peak_mib,
        "peak_reset": p.peak_reset,
        "rss_before_mib": mib(p.rss.0),
        "rss_after_mib": mib(p.rss.1),
        "server_mean_ms": p.server.as_ref().map(|s| s["rpcs"][p.rpc]["mean_ms"].clone()),
        "check_mean_ms": p.server.as_ref().map(|s| s["check_mean_ms"].clone()),
        "within_budget": max_ms <= BUDGET_MS && peak_mib <= BUDGET_MIB,
    })
}

fn print_report(o: &Options, sizes: Sizes, prepared_s: f64, phases: &[Phase]) {
    println!(
        "rxgate worst requests: {} lines per prescription, histories of {} entries, {} \
         repetitions, {} signers; setup {prepared_s:.1} s; budget {BUDGET_MS} ms and \
         {BUDGET_MIB} MiB of extra RSS per request",
        sizes.lines,
        sizes.history,
        o.repetitions.unwrap_or(1),
        o.signer.describe()
    );
    println!(
        "{:<22} {:>8} {:>8} {:>8} {:>9} {:>9} {:>10} {:>8} {:>7} {:>7} {:>9} {:>6}",
        "request",
        "min ms",
        "med ms",
        "max ms",
        "srv ms",
        "check ms",
        "answer KiB",
        "critical",
        "others",
        "named",
        "peak MiB",
        "budget"
    );
    let mut requests = serde_json::Map::new();
    for p in phases {
        let f = figures(p);
        let num = |key: &str| f[key].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:<22} {:>8.1} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>10.0} {:>8.0} {:>7.0} {:>7.0} {:>9.1} {:>6}  {}",
            p.name,
            num("min_ms"),
            num("median_ms"),
            num("max_ms"),
            num("server_mean_ms"),
            num("check_mean_ms"),
            num("answer_bytes") / 1024.0,
            num("critical"),
            num("others"),
            num("named"),
            num("peak_extra_rss_mib"),
            if f["within_budget"] == true {
                "met"
            } else {
                "NOT"
            },
            f["codes"],
        );
        requests.insert(p.name.into(), f);
    }
    let line = json!({
        "scenario": "worst",
        "lines": sizes.lines,
        "history_entries": sizes.history,
        "repetitions": o.repetitions,
        "requests": requests,
    });
    println!("{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_read_from_the_status_text() {
        let status = "Name:\trxgate\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t9\n";
        assert_eq!(
            resident(status),
            Some(Resident {
                rss: 102_400,
                hwm: 204_800
            })
        );
        assert_eq!(resident("VmRSS:\t1 kB\n"), None);
    }

    #[test]
    fn only_other_sizes_than_the_defaults_configure_the_gateway() {
        let d = Limits::default();
        let default = Sizes {
            lines: d.prescription_lines,
            history: d.history_entries_per_patient,
        };
        assert_eq!(default.limits(), None);
        let small = Sizes {
            lines: 4,
            history: 12,
        };
        assert_eq!(
            small.limits().as_deref(),
            Some("prescription_lines = 4\nhistory_entries_per_patient = 12")
        );
        assert_eq!(small.prescriptions(), 3);
    }
}
