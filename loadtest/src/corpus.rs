//! Everything a run sends, made before any clock starts: the patients' histories (registered,
//! some dispensed, by the history clinics and the pharmacies: untimed setup), the measured
//! documents (all signed: a dispensing record names its prescription by institution and number,
//! so the whole flow is prepared), and the acknowledgements of the critical findings that some
//! prescriptions are meant to trigger, learnt from CheckPrescription.
//!
//! Drugs are real receipt codes of the SSK master (as in tests/it/checks.rs): the history holds
//! ordinary drugs with no contraindicated pair among them or with the measured drugs, plus, when
//! findings are asked for, one itraconazole record; a triggering prescription is triazolam, a
//! contraindicated pair with itraconazole (CI table, source HAL/ITR), so its critical finding
//! must be acknowledged under the server's default "require-override" policy. The others are
//! amlodipine. A patient's measured prescriptions all come from one clinic, whose own earlier
//! prescriptions the checks exclude by default: amlodipine again is no duplicate.

use std::collections::BTreeMap;

use anyhow::Context;
use rxgate::{
    cli::demo::{demo_dispensing, demo_prescription},
    domain::time::JapanDate,
    wire::proto::v1::{
        self as pb, dispensing_service_client::DispensingServiceClient,
        prescription_service_client::PrescriptionServiceClient,
    },
};
use tonic::Code;

use crate::{
    cli::{Options, Scenario, picked},
    fleet::{Fleet, Member},
    pool,
    signers::Signers,
};

/// A drug by its receipt code (レセ電コード) and the unit it is prescribed in.
#[derive(Debug, Clone, Copy)]
pub struct Drug {
    pub code: &'static str,
    pub unit: &'static str,
}

/// ハルシオン0.25mg錠: triazolam.
pub const TRIAZOLAM: Drug = Drug {
    code: "611120055",
    unit: "錠",
};
/// イトリゾールカプセル50: itraconazole, contraindicated with triazolam.
pub const ITRACONAZOLE: Drug = Drug {
    code: "616290177",
    unit: "カプセル",
};
/// ノルバスク錠5mg: amlodipine, the measured prescriptions that trigger nothing.
pub const AMLODIPINE: Drug = Drug {
    code: "612170710",
    unit: "錠",
};
/// リピトール錠10mg: atorvastatin, a caution (併用注意) with itraconazole, when asked for.
pub const ATORVASTATIN: Drug = Drug {
    code: "610443014",
    unit: "錠",
};
/// The ordinary history: candesartan, famotidine, loxoprofen, aspirin, pravastatin, metformin
/// (none in the contraindication table).
const HISTORY_DRUGS: [Drug; 6] = [
    Drug {
        code: "610432013",
        unit: "錠",
    },
    Drug {
        code: "612320350",
        unit: "錠",
    },
    Drug {
        code: "620098801",
        unit: "錠",
    },
    Drug {
        code: "610443053",
        unit: "錠",
    },
    Drug {
        code: "612180265",
        unit: "錠",
    },
    Drug {
        code: "621974701",
        unit: "錠",
    },
];

/// The reason sent with every acknowledgement.
pub const ACK_REASON: &str = "load test: prescriber has weighed the interaction and goes on";

/// The measured documents of a scenario.
pub enum Corpus {
    /// Register and full flow.
    Registrations(Vec<Registration>),
    Checks(Vec<Check>),
    /// Serialized registration requests, used in turn.
    Echo(Vec<Vec<u8>>),
}

/// One measured registration, and with the full flow what the pharmacy then does.
pub struct Registration {
    /// Index into `Fleet::clinics`.
    pub clinic: usize,
    /// Index into `Fleet::pharmacies`.
    pub pharmacy: usize,
    pub patient: pb::PatientKey,
    pub number: String,
    pub request: pb::RegisterPrescriptionRequest,
    /// The signed dispensing record (full flow only).
    pub dispensing: Option<pb::SignedDocument>,
    /// Meant to trigger a critical finding.
    pub triggers: bool,
    patient_index: usize,
    draft: pb::Prescription,
}

pub struct Check {
    pub clinic: usize,
    pub request: pb::CheckPrescriptionRequest,
}

/// What the untimed setup did, for the report.
#[derive(Debug, Default, Clone)]
pub struct Setup {
    pub history_registered: usize,
    pub history_dispensed: usize,
    pub acks: Acks,
}

/// How the triggering prescriptions got their acknowledgements.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Acks {
    /// No prescription triggers a finding.
    #[default]
    NotNeeded,
    /// From `checks` CheckPrescription calls; `registrations` requests carry `acks` in all.
    Learnt {
        checks: usize,
        registrations: usize,
        acks: usize,
    },
    /// The server answers CheckPrescription with UNIMPLEMENTED: sent without acknowledgements.
    Unimplemented,
}

/// Names, numbers and documents of one run. The run tag keeps prescription numbers and patients
/// apart from earlier runs against the same server.
pub struct Plan<'a> {
    pub run: String,
    pub today: JapanDate,
    pub signers: &'a Signers,
    pub options: &'a Options,
}

impl Plan<'_> {
    /// Patient `p` of this run (insurance key; the symbol carries the run tag).
    pub fn patient(&self, p: usize) -> pb::PatientKey {
        pb::PatientKey {
            kind: Some(pb::patient_key::Kind::Insurance(pb::InsuranceKey {
                insurer_number: "06139999".into(),
                symbol: format!("LT{}", self.run),
                number: format!("{p:07}"),
                branch: "01".into(),
            })),
        }
    }

    pub fn prescription(
        &self,
        clinic: &Member,
        number: &str,
        patient: pb::PatientKey,
        drug: Drug,
    ) -> pb::Prescription {
        let mut rx = demo_prescription(number, patient, self.today);
        rx.institution_code = clinic.code.clone();
        rx.prescriber = Some(self.signers.doctor.practitioner.clone());
        let line = &mut rx.lines[0];
        line.drug = Some(receipt(drug));
        line.unit = drug.unit.into();
        rx
    }

    pub fn dispensing(
        &self,
        rx: &pb::Prescription,
        pharmacy: &Member,
        drug: Drug,
    ) -> pb::DispensingRecord {
        let mut record = demo_dispensing(&rx.prescription_number, self.today);
        record.institution_code = rx.institution_code.clone();
        record.pharmacy_code = pharmacy.code.clone();
        record.pharmacist = Some(self.signers.pharmacist.practitioner.clone());
        let line = &mut record.lines[0];
        line.drug = Some(receipt(drug));
        line.unit = drug.unit.into();
        record
    }

    /// Registers every patient's history: `--history` prescriptions each, from the history
    /// clinics in turn, the first itraconazole when findings are asked for; `--history-dispensed`
    /// of them are then received and dispensed by a pharmacy. Returns (registered, dispensed).
    pub async fn build_history(&self, fleet: &Fleet) -> anyhow::Result<(usize, usize)> {
        let o = self.options;
        let mut unsigned = Vec::with_capacity(o.patients * o.history);
        for p in 0..o.patients {
            for k in 0..o.history {
                let drug = if k == 0 && o.findings > 0.0 {
                    ITRACONAZOLE
                } else {
                    HISTORY_DRUGS[k % HISTORY_DRUGS.len()]
                };
                let clinic = (p + k) % fleet.history_clinics.len();
                let number = format!("LH-{}-{p}-{k}", self.run);
                let rx = self.prescription(
                    &fleet.history_clinics[clinic],
                    &number,
                    self.patient(p),
                    drug,
                );
                let dispensing = picked(p * o.history + k, o.history_dispensed).then(|| {
                    let ph = (p + k) % fleet.pharmacies.len();
                    (ph, self.dispensing(&rx, &fleet.pharmacies[ph], drug))
                });
                unsigned.push(Unsigned {
                    clinic,
                    patient: self.patient(p),
                    prescription: rx,
                    dispensing,
                });
            }
        }
        let dispensed = unsigned.iter().filter(|u| u.dispensing.is_some()).count();
        let jobs = self.sign_history(unsigned)?;
        let registered = jobs.len();
        // Consecutive jobs go to the history clinics in turn.
        let concurrency = pool::PER_INSTITUTION * fleet.history_clinics.len().max(1);
        pool::run_bounded(jobs, concurrency, |job| job.run(fleet)).await?;
        Ok((registered, dispensed))
    }

    /// Signs history prescriptions and their dispensing records, in bulk.
    pub fn sign_history(&self, unsigned: Vec<Unsigned>) -> anyhow::Result<Vec<HistoryJob>> {
        let rx: Vec<_> = unsigned.iter().map(|u| u.prescription.clone()).collect();
        let records: Vec<_> = unsigned
            .iter()
            .filter_map(|u| u.dispensing.as_ref().map(|(_, record)| record.clone()))
            .collect();
        let signed_rx = self.signers.doctor.sign_all(&rx)?;
        let mut signed_records = self.signers.pharmacist.sign_all(&records)?.into_iter();
        Ok(unsigned
            .into_iter()
            .zip(signed_rx)
            .map(|(u, prescription)| HistoryJob {
                clinic: u.clinic,
                patient: u.patient,
                prescription,
                dispensing: u.dispensing.map(|(ph, _)| {
                    let record = signed_records.next().expect("one per dispensed record");
                    (ph, record)
                }),
            })
            .collect())
    }

    /// The measured registrations (and, with the full flow, their dispensing records), signed.
    /// Operation i: patient p = i mod patients, clinic p mod clinics (each patient's measured
    /// prescriptions come from one clinic, so under the default same-institution exclusion they
    /// do not meet each other as duplicates: a prescription triggers a finding only when picked
    /// by `--findings`), pharmacy i mod pharmacies.
    pub fn registrations(&self, fleet: &Fleet, count: usize) -> anyhow::Result<Vec<Registration>> {
        let o = self.options;
        let clinic = |i: usize| (i % o.patients) % fleet.clinics.len();
        let pharmacy = |i: usize| i % fleet.pharmacies.len();
        let drafts: Vec<_> = (0..count)
            .map(|i| {
                let drug = measured_drug(i, o.findings);
                let number = format!("LT-{}-{i}", self.run);
                let patient = self.patient(i % o.patients);
                (
                    drug,
                    self.prescription(&fleet.clinics[clinic(i)], &number, patient, drug),
                )
            })
            .collect();
        let rx: Vec<_> = drafts.iter().map(|d| d.1.clone()).collect();
        let signed = self.signers.doctor.sign_all(&rx)?;
        let records = if o.scenario == Scenario::FullFlow {
            let docs: Vec<_> = drafts
                .iter()
                .enumerate()
                .map(|(i, (drug, rx))| self.dispensing(rx, &fleet.pharmacies[pharmacy(i)], *drug))
                .collect();
            self.signers.pharmacist.sign_all(&docs)?
        } else {
            Vec::new()
        };
        let mut records = records.into_iter();
        Ok(drafts
            .into_iter()
            .zip(signed)
            .enumerate()
            .map(|(i, ((_, draft), signed))| Registration {
                clinic: clinic(i),
                pharmacy: pharmacy(i),
                patient: self.patient(i % o.patients),
                number: draft.prescription_number.clone(),
                request: register_request(signed),
                dispensing: records.next(),
                triggers: picked(i, o.findings),
                patient_index: i % o.patients,
                draft,
            })
            .collect())
    }

    /// The measured checks: unsigned drafts, consent given, spread over every (clinic, patient)
    /// pair so that the per-pair rate limit is reached as late as possible.
    pub fn checks(&self, fleet: &Fleet, count: usize) -> Vec<Check> {
        let o = self.options;
        (0..count)
            .map(|i| {
                let drug = measured_drug(i, o.findings);
                let clinic = i % fleet.clinics.len();
                let patient = self.patient((i / fleet.clinics.len()) % o.patients);
                let number = format!("LC-{}-{i}", self.run);
                Check {
                    clinic,
                    request: check_request(self.prescription(
                        &fleet.clinics[clinic],
                        &number,
                        patient,
                        drug,
                    )),
                }
            })
            .collect()
    }

    /// Registration-sized payloads for the echo: `count` serialized registration requests of
    /// signed prescriptions (used in turn).
    pub fn echo_payloads(&self, fleet: &Fleet, count: usize) -> anyhow::Result<Vec<Vec<u8>>> {
        use prost::Message;
        let o = self.options;
        let rx: Vec<_> = (0..count)
            .map(|i| {
                let clinic = &fleet.clinics[i % fleet.clinics.len()];
                let number = format!("LE-{}-{i}", self.run);
                let patient = self.patient(i % o.patients);
                self.prescription(clinic, &number, patient, measured_drug(i, o.findings))
            })
            .collect();
        Ok(self
            .signers
            .doctor
            .sign_all(&rx)?
            .into_iter()
            .map(|signed| register_request(signed).encode_to_vec())
            .collect())
    }
}

/// The drug of measured operation `i`: triazolam when it is one of the `findings` share.
fn measured_drug(i: usize, findings: f64) -> Drug {
    if picked(i, findings) {
        TRIAZOLAM
    } else {
        AMLODIPINE
    }
}

/// A history prescription before signing: its clinic (index into `Fleet::history_clinics`),
/// and perhaps the pharmacy (index into `Fleet::pharmacies`) that dispenses it, with its record.
pub struct Unsigned {
    pub clinic: usize,
    pub patient: pb::PatientKey,
    pub prescription: pb::Prescription,
    pub dispensing: Option<(usize, pb::DispensingRecord)>,
}

/// One history prescription: registered by its clinic, then perhaps received and dispensed.
pub struct HistoryJob {
    clinic: usize,
    patient: pb::PatientKey,
    prescription: pb::SignedDocument,
    /// The pharmacy and its signed record.
    dispensing: Option<(usize, pb::SignedDocument)>,
}

impl HistoryJob {
    pub fn run(self, fleet: &Fleet) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
        let clinic = fleet.history_clinics[self.clinic].channel();
        let pharmacy = self
            .dispensing
            .map(|(ph, record)| (fleet.pharmacies[ph].channel(), record));
        async move {
            let clinic = PrescriptionServiceClient::new(clinic);
            let registered = pool::paced(|| {
                let (mut clinic, rx) = (clinic.clone(), self.prescription.clone());
                async move { clinic.register_prescription(register_request(rx)).await }
            })
            .await
            .context("history: registering")?
            .into_inner();
            if let Some((channel, record)) = pharmacy {
                let pharmacy = DispensingServiceClient::new(channel);
                let receive = receive_request(self.patient, registered.exchange_number);
                pool::paced(|| {
                    let (mut pharmacy, receive) = (pharmacy.clone(), receive.clone());
                    async move { pharmacy.receive_prescription(receive).await }
                })
                .await
                .context("history: receiving")?;
                let dispense = pb::RecordDispensingRequest {
                    dispensing_record: Some(record),
                };
                pool::paced(|| {
                    let (mut pharmacy, dispense) = (pharmacy.clone(), dispense.clone());
                    async move { pharmacy.record_dispensing(dispense).await }
                })
                .await
                .context("history: dispensing")?;
            }
            Ok(())
        }
    }
}

pub fn receipt(drug: Drug) -> pb::DrugCode {
    pb::DrugCode {
        kind: pb::DrugCodeKind::Receipt as i32,
        code: drug.code.into(),
    }
}

/// Consent is given at every call, so that findings come unmasked (their ids are the ones the
/// checks report).
pub fn register_request(signed: pb::SignedDocument) -> pb::RegisterPrescriptionRequest {
    pb::RegisterPrescriptionRequest {
        prescription: Some(signed),
        consent: pb::Consent::Card as i32,
        ..Default::default()
    }
}

pub fn receive_request(
    patient: pb::PatientKey,
    exchange_number: String,
) -> pb::ReceivePrescriptionRequest {
    pb::ReceivePrescriptionRequest {
        patient_key: Some(patient),
        exchange_number,
        consent: pb::Consent::Card as i32,
        ..Default::default()
    }
}

pub fn check_request(draft: pb::Prescription) -> pb::CheckPrescriptionRequest {
    pb::CheckPrescriptionRequest {
        draft: Some(draft),
        consent: pb::Consent::Card as i32,
        ..Default::default()
    }
}

/// Learns the critical findings of every triggering registration with one CheckPrescription per
/// (clinic, patient) pair (finding ids are stable; one line each, well within the patient's check
/// budget) and puts their acknowledgements into the requests. An UNIMPLEMENTED answer is
/// noted and the requests go without acknowledgements.
pub async fn acknowledge(
    fleet: &Fleet,
    registrations: &mut [Registration],
) -> anyhow::Result<Acks> {
    let mut pairs: BTreeMap<(usize, usize), pb::Prescription> = BTreeMap::new();
    for r in registrations.iter().filter(|r| r.triggers) {
        pairs
            .entry((r.clinic, r.patient_index))
            .or_insert_with(|| r.draft.clone());
    }
    let check = |(pair, draft): ((usize, usize), pb::Prescription)| {
        let channel = fleet.clinics[pair.0].channel();
        async move {
            let clinic = PrescriptionServiceClient::new(channel);
            let findings = pool::paced(|| {
                let (mut clinic, draft) = (clinic.clone(), draft.clone());
                async move { clinic.check_prescription(check_request(draft)).await }
            })
            .await
            .context("CheckPrescription")?
            .into_inner()
            .findings;
            let critical: Vec<String> = findings
                .into_iter()
                .filter(|f| f.indicator == pb::Indicator::Critical as i32)
                .map(|f| f.id)
                .collect();
            anyhow::Ok((pair, critical))
        }
    };
    let mut pairs = pairs.into_iter();
    let Some(first) = pairs.next() else {
        return Ok(Acks::NotNeeded);
    };
    let first = match check(first).await {
        Err(e) if status_code(&e) == Some(Code::Unimplemented) => return Ok(Acks::Unimplemented),
        other => other?,
    };
    let mut learnt: BTreeMap<(usize, usize), Vec<String>> =
        // The pairs come clinic by clinic: one clinic's share at a time.
        pool::run_bounded(pairs, pool::PER_INSTITUTION, check)
            .await?
            .into_iter()
            .collect();
    learnt.insert(first.0, first.1);
    let (mut with, mut acks) = (0, 0);
    for r in registrations.iter_mut().filter(|r| r.triggers) {
        let ids = &learnt[&(r.clinic, r.patient_index)];
        r.request.acknowledgements = ids
            .iter()
            .map(|id| pb::Acknowledgement {
                finding_id: id.clone(),
                reason: ACK_REASON.into(),
            })
            .collect();
        with += usize::from(!ids.is_empty());
        acks += ids.len();
    }
    Ok(Acks::Learnt {
        checks: learnt.len(),
        registrations: with,
        acks,
    })
}

fn status_code(e: &anyhow::Error) -> Option<Code> {
    e.downcast_ref::<tonic::Status>().map(tonic::Status::code)
}
