//! Support for the unit tests that need a whole gateway: one over an embedded store in a
//! temporary folder, with the dev trust, the shipped masters and a clock the test moves, and
//! registrations by the dev clinic through it. Test builds only.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use prost::Message;

use super::{
    Caller, CheckRequest, Clinical, Clock, Gateway, GatewayConfig, Registered, RequestedOptions,
};
use crate::{
    cli::demo::{demo_prescription, dev_signer},
    domain::{
        checks::Consent,
        ids::{Institution, InstitutionKind},
        patient::PatientKey,
        signature::VerifierConfig,
        time::JapanDate,
    },
    master_files::Sources,
    pki::trust::TrustFiles,
    store::EmbeddedStore,
    wire::proto::v1 as pb,
};

/// A clock that stands still until the test moves it, so that no date rolls over mid-test.
pub(crate) struct TestClock(Mutex<SystemTime>);

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

impl TestClock {
    pub(crate) fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }

    pub(crate) fn today(&self) -> JapanDate {
        JapanDate::of(self.now())
    }
}

/// A gateway over a new store in `dir` and the clock it reads, set to the current time.
pub(crate) fn gateway(dir: &Path) -> (Arc<Gateway>, Arc<TestClock>) {
    let store = Arc::new(EmbeddedStore::open(dir).unwrap());
    let (verifier, _) = TrustFiles::dev().load(VerifierConfig::default()).unwrap();
    let sources = Sources::shipped().unwrap();
    let built = sources.build().unwrap();
    let clinical = Clinical {
        catalog: built.catalog,
        table: built.table,
        sources,
        report: built.report,
        version: 0,
    };
    let clock = Arc::new(TestClock(Mutex::new(SystemTime::now())));
    let gateway = Gateway::new(
        store,
        Arc::new(verifier),
        clock.clone(),
        Arc::new(clinical),
        GatewayConfig::default(),
    );
    (Arc::new(gateway), clock)
}

/// Dev patient `n`, as a request names it and as the gateway keys it.
pub(crate) fn patient(n: u32) -> (pb::PatientKey, PatientKey) {
    let number = format!("{n:07}");
    let wire = pb::PatientKey {
        kind: Some(pb::patient_key::Kind::Insurance(pb::InsuranceKey {
            insurer_number: "06139999".into(),
            symbol: "ZQ".into(),
            number: number.clone(),
            branch: "01".into(),
        })),
    };
    let key = PatientKey::insurance("06139999", "ZQ", &number, "01").unwrap();
    (wire, key)
}

/// A caller of `kind` with the dev code of that kind.
pub(crate) fn caller(kind: InstitutionKind) -> Caller {
    let code = match kind {
        InstitutionKind::Clinic => "1310000001",
        InstitutionKind::Pharmacy => "1340000001",
        InstitutionKind::Management => "9990000001",
        InstitutionKind::Operator => "9990000002",
    };
    Caller {
        institution: Institution {
            kind,
            code: code.parse().unwrap(),
        },
        certificate_sha256: [0; 32],
        receipt: Default::default(),
    }
}

/// The dev clinic registers the demo prescription `number` for dev patient `n`, today.
pub(crate) async fn register(gateway: &Gateway, number: &str, n: u32) -> Registered {
    let now = gateway.clock.now();
    let content = demo_prescription(number, patient(n).0, JapanDate::of(now)).encode_to_vec();
    let cms = dev_signer("doctor").unwrap().sign(&content, now).unwrap();
    let check = CheckRequest {
        consent: Consent::None,
        options: RequestedOptions::default(),
    };
    gateway
        .register(
            &caller(InstitutionKind::Clinic),
            content,
            cms,
            check,
            Vec::new(),
        )
        .await
        .unwrap()
}
