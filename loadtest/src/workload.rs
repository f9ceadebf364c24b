//! One measured operation of each scenario, timed and recorded: the drivers say which and when.
//! The first call of an operation is timed from the operation's start as the driver gives it
//! (in open loop, the intended start); every later call of a full flow from its own send.

use std::{sync::Mutex, time::Instant};

use rxgate::wire::proto::v1::{
    self as pb, dispensing_service_client::DispensingServiceClient,
    prescription_service_client::PrescriptionServiceClient,
};
use tonic::Status;

use crate::{
    corpus::{Corpus, Registration, receive_request},
    echo::{EchoRequest, echo_service_client::EchoServiceClient},
    fleet::Fleet,
    report::{Recorder, Rpc},
};

/// A registration the server acknowledged, to read back after the run.
#[derive(Debug, Clone)]
pub struct Acked {
    pub clinic: usize,
    pub prescription_id: String,
    pub number: String,
    /// Its dispensing record was acknowledged too.
    pub dispensed: bool,
}

pub struct Workload {
    pub fleet: Fleet,
    corpus: Corpus,
    pub recorder: Recorder,
    acked: Mutex<Vec<Acked>>,
}

impl Workload {
    pub fn new(fleet: Fleet, corpus: Corpus) -> Self {
        Workload {
            fleet,
            corpus,
            recorder: Recorder::default(),
            acked: Mutex::new(Vec::new()),
        }
    }

    /// How many operations can be run (the echo reuses its payloads: no limit).
    pub fn len(&self) -> usize {
        match &self.corpus {
            Corpus::Registrations(r) => r.len(),
            Corpus::Checks(c) => c.len(),
            Corpus::Echo(_) => usize::MAX,
        }
    }

    /// Every registration the server acknowledged.
    pub fn acked(&self) -> Vec<Acked> {
        self.acked.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs operation `i`, started at `start`; records it if `measured`.
    pub async fn run(&self, i: usize, start: Instant, measured: bool) {
        match &self.corpus {
            Corpus::Registrations(r) => self.register(&r[i], start, measured).await,
            Corpus::Checks(c) => {
                let check = &c[i];
                let mut client =
                    PrescriptionServiceClient::new(self.fleet.clinics[check.clinic].channel());
                let answer = client.check_prescription(check.request.clone()).await;
                self.record(Rpc::Check, start, measured, answer);
            }
            Corpus::Echo(payloads) => {
                let clinic = &self.fleet.clinics[i % self.fleet.clinics.len()];
                let mut client = EchoServiceClient::new(clinic.channel());
                let request = EchoRequest {
                    payload: payloads[i % payloads.len()].clone(),
                };
                let answer = client.echo(request).await;
                self.record(Rpc::Echo, start, measured, answer);
            }
        }
    }

    /// Records a call that started at `start`; its answer on success.
    fn record<T>(
        &self,
        rpc: Rpc,
        start: Instant,
        measured: bool,
        answer: Result<tonic::Response<T>, Status>,
    ) -> Option<T> {
        match answer {
            Ok(response) => {
                self.recorder.ok(rpc, start.elapsed(), measured);
                Some(response.into_inner())
            }
            Err(status) => {
                self.recorder.error(rpc, status.code(), measured);
                None
            }
        }
    }

    /// Registers; with a dispensing record, goes on through lookup, receive and dispense.
    async fn register(&self, r: &Registration, start: Instant, measured: bool) {
        let mut clinic = PrescriptionServiceClient::new(self.fleet.clinics[r.clinic].channel());
        let answer = clinic.register_prescription(r.request.clone()).await;
        let Some(registered) = self.record(Rpc::Register, start, measured, answer) else {
            return;
        };
        let findings = &registered.findings;
        let critical = findings
            .iter()
            .filter(|f| f.indicator == pb::Indicator::Critical as i32)
            .count();
        self.recorder.findings(findings.len(), critical, measured);
        let dispensed = match &r.dispensing {
            Some(record) => self.dispense(r, record, &registered, measured).await,
            None => false,
        };
        if dispensed {
            self.recorder.ok(Rpc::Flow, start.elapsed(), measured);
        }
        self.acked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Acked {
                clinic: r.clinic,
                prescription_id: registered.prescription_id,
                number: r.number.clone(),
                dispensed,
            });
    }

    /// Lookup → receive → dispense at the registration's pharmacy; true if every call succeeded.
    async fn dispense(
        &self,
        r: &Registration,
        record: &pb::SignedDocument,
        registered: &pb::RegisterPrescriptionResponse,
        measured: bool,
    ) -> bool {
        let mut pharmacy =
            DispensingServiceClient::new(self.fleet.pharmacies[r.pharmacy].channel());
        let sent = Instant::now();
        let answer = pharmacy
            .lookup_prescription(pb::LookupPrescriptionRequest {
                patient_key: Some(r.patient.clone()),
                exchange_number: registered.exchange_number.clone(),
            })
            .await;
        if self.record(Rpc::Lookup, sent, measured, answer).is_none() {
            return false;
        }
        let sent = Instant::now();
        let answer = pharmacy
            .receive_prescription(receive_request(
                r.patient.clone(),
                registered.exchange_number.clone(),
            ))
            .await;
        if self.record(Rpc::Receive, sent, measured, answer).is_none() {
            return false;
        }
        let sent = Instant::now();
        let answer = pharmacy
            .record_dispensing(pb::RecordDispensingRequest {
                dispensing_record: Some(record.clone()),
            })
            .await;
        self.record(Rpc::Dispense, sent, measured, answer).is_some()
    }
}
