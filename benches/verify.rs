//! Signature verification: a whole signed prescription through `Verifier::verify`, with a cold
//! chain (path building and certificate signatures every time) and a cached one.
//! `cargo bench --bench verify`

use std::{path::Path, time::SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message;
use rxgate::{
    domain::signature::VerifierConfig,
    proto::v1::{DocumentType, Prescription},
    signer::SigningKey,
    trust::TrustFiles,
};

fn signed(name: &str, content: &[u8]) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("certs/hpki");
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    SigningKey::new(
        &read(&format!("{name}.cert.pem")),
        &read("sign-ca.cert.pem"),
        &read(&format!("{name}.key.pem")),
    )
    .unwrap()
    .sign(content, SystemTime::now())
    .unwrap()
}

fn verification(c: &mut Criterion) {
    let content = Prescription {
        document_type: DocumentType::Prescription as i32,
        institution_code: "1310000001".into(),
        prescription_number: "RX-BENCH".into(),
        refill_count: 1,
        ..Default::default()
    }
    .encode_to_vec();
    let cold = VerifierConfig {
        chain_cache_capacity: 0,
        ..VerifierConfig::default()
    };
    let mut group = c.benchmark_group("verify_prescription");
    for (key, name) in [("rsa2048", "doctor"), ("ecdsa_p256", "doctor-ec")] {
        let cms = signed(name, &content);
        for (chain, config) in [
            ("cold", cold.clone()),
            ("cached", VerifierConfig::default()),
        ] {
            let (verifier, _) = TrustFiles::dev().load(config).unwrap();
            group.bench_function(format!("{key}/{chain}_chain"), |b| {
                b.iter(|| {
                    verifier
                        .verify::<Prescription>(&content, &cms, SystemTime::now())
                        .unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, verification);
criterion_main!(benches);
