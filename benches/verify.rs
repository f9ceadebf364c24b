//! Signature verification: a whole signed prescription through `Verifier::verify`, with a cold
//! chain (path building and certificate signatures every time) and a cached one; and the ceiling
//! beside it, one raw RSA-2048 / ECDSA P-256 signature verification with ring (our one crypto
//! provider) over the same 32-byte digest input.
//! `cargo bench --bench verify`

use std::{path::Path, time::SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message;
use rxgate::{
    dev_pki::DevPki,
    domain::signature::VerifierConfig,
    wire::proto::v1::{DocumentType, Prescription},
};

/// The repository's development PKI.
fn dev_pki() -> DevPki {
    DevPki::locate(Some(&Path::new(env!("CARGO_MANIFEST_DIR")).join("certs"))).unwrap()
}

fn signed(name: &str, content: &[u8]) -> Vec<u8> {
    (dev_pki().signer(name).unwrap())
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
            let (verifier, _) = dev_pki().signing().load(config).unwrap();
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

fn key_der(name: &str) -> Vec<u8> {
    let pem = std::fs::read(dev_pki().dir().join(format!("hpki/{name}.key.pem"))).unwrap();
    der::pem::decode_vec(&pem).unwrap().1
}

fn ceilings(c: &mut Criterion) {
    use ring::signature::{self, KeyPair};
    let rng = ring::rand::SystemRandom::new();
    let message = [7u8; 32];
    let mut group = c.benchmark_group("raw_verify");

    let rsa = signature::RsaKeyPair::from_pkcs8(&key_der("doctor")).unwrap();
    let mut rsa_signature = vec![0; rsa.public().modulus_len()];
    rsa.sign(
        &signature::RSA_PKCS1_SHA256,
        &rng,
        &message,
        &mut rsa_signature,
    )
    .unwrap();
    let rsa_public = signature::UnparsedPublicKey::new(
        &signature::RSA_PKCS1_2048_8192_SHA256,
        rsa.public().as_ref().to_vec(),
    );
    group.bench_function("rsa2048", |b| {
        b.iter(|| rsa_public.verify(&message, &rsa_signature).unwrap())
    });

    let ec = signature::EcdsaKeyPair::from_pkcs8(
        &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &key_der("doctor-ec"),
        &rng,
    )
    .unwrap();
    let ec_signature = ec.sign(&rng, &message).unwrap();
    let ec_public = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        ec.public_key().as_ref().to_vec(),
    );
    group.bench_function("ecdsa_p256", |b| {
        b.iter(|| ec_public.verify(&message, ec_signature.as_ref()).unwrap())
    });
    group.finish();
}

criterion_group!(benches, verification, ceilings);
criterion_main!(benches);
