//! The fuzz entry points: one function per parser that faces the network or the official data
//! files. Each feeds its bytes to the real code and ignores a refusal; a panic is the bug. The
//! cargo-fuzz targets under `fuzz/` call these, and `tests/it/fuzz_corpus.rs` replays every
//! committed corpus file through them (docs/FUZZING.md).

use std::{
    sync::OnceLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::{
    config::Config,
    dev_pki::DevPki,
    domain::{
        checks::ContraindicationTable,
        master::{Ingredients, Master, parse_y_file},
        rx::{DispensingFacts, DraftFacts, PrescriptionFacts},
        signature::{SignedContent, Verifier, VerifierConfig},
    },
    wire::documents::lines_to_dispense,
    wire::proto::v1::{DispensingRecord, Prescription},
};

/// The receipt time of every fuzzed signature (2027-06-01T00:00:00Z): inside the dev PKI's
/// validity and its CRLs', so a seed signed a minute earlier verifies to the end.
pub const RECEIVED_AT_SECS: u64 = 1_811_808_000;

/// [`RECEIVED_AT_SECS`] as a time.
pub fn received_at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(RECEIVED_AT_SECS)
}

/// The dev PKI's verifier (its `hpki/`, found as `dev_pki` says: run from the repository root),
/// without a chain cache, so that one input always takes the same path whatever ran before it.
fn dev_verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| {
        let config = VerifierConfig {
            chain_cache_capacity: 0,
            ..VerifierConfig::default()
        };
        DevPki::locate(None)
            .unwrap_or_else(|e| panic!("{e}"))
            .signing()
            .load(config)
            .expect("the committed dev PKI loads")
            .0
    })
}

/// The input of [`cms`]: a kind byte (bit 0 set: a dispensing record, else a prescription), the
/// content's length (u16, little-endian), the content, then the CMS signature.
pub fn cms_input(dispensing: bool, content: &[u8], cms: &[u8]) -> Vec<u8> {
    let length = u16::try_from(content.len()).expect("a fuzz content under 64 KiB");
    let mut input = vec![u8::from(dispensing)];
    input.extend_from_slice(&length.to_le_bytes());
    input.extend_from_slice(content);
    input.extend_from_slice(cms);
    input
}

/// A signed document's whole verification (CMS parse, digest, signature, chain, profile, time,
/// revocation, role, strict decode) with the dev trust, over content and signature split from
/// `data` as [`cms_input`] lays them out (a length past the end takes all that is left).
pub fn cms(data: &[u8]) {
    let [kind, low, high, rest @ ..] = data else {
        return;
    };
    let (content, signature) =
        rest.split_at(usize::from(u16::from_le_bytes([*low, *high])).min(rest.len()));
    let verifier = dev_verifier();
    if kind & 1 == 0 {
        let _ = verifier.verify::<Prescription>(content, signature, received_at());
    } else {
        let _ = verifier.verify::<DispensingRecord>(content, signature, received_at());
    }
}

/// The strict decode of signed content as each document type, then its parse into the domain's
/// facts (what the use cases read once a signature has verified).
pub fn document(data: &[u8]) {
    if let Ok(p) = Prescription::decode_strict(data) {
        let _ = PrescriptionFacts::try_from(&p);
        let _ = DraftFacts::try_from(&p);
    }
    if let Ok(r) = DispensingRecord::decode_strict(data) {
        let _ = DispensingFacts::try_from(&r);
        let _ = lines_to_dispense(&r.lines);
    }
}

/// An SSK y-file (cp932 CSV) into records, a master built from them and the same records
/// applied as an update; and the bytes as the MHLW ingredient lists (UTF-8 CSV).
pub fn master(data: &[u8]) {
    if let Ok(records) = parse_y_file(data)
        && let Ok(mut master) = Master::from_full(records.clone())
    {
        let _ = master.apply_update(&records);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Ingredients::parse_yakka_list(text);
        let _ = Ingredients::parse_ippan_master(text);
    }
}

/// The contraindication table (UTF-8 CSV).
pub fn contraindications(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ContraindicationTable::parse(text);
    }
}

/// The configuration from TOML text and every check of it that reads no file.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(config) = toml::from_str::<Config>(text)
    {
        let _ = config.validate_settings();
        let _ = config.verifier_config();
        let _ = config.checks.policy();
    }
}
