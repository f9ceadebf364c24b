//! Conformance of the certificate path validator against the x509-limbo suite (C2SP x509-limbo,
//! Apache-2.0; the file's format is described in shared/data/x509-limbo/README.md).
//!
//! The suite (41 MB) stays outside the repository: `RXGATE_LIMBO` names `limbo.json`; without
//! it the test says it is skipped and passes. Run with
//! `RXGATE_LIMBO=../shared/data/x509-limbo/limbo.json cargo test --test it limbo:: -- --nocapture`.
//!
//! Only the namespaces about path validation are run: `rfc5280`, `pathlen`, `pathological`,
//! `cve`, `crl` and `bettertls::pathbuilding`. Host names do not apply to document signers, so
//! `expected_peer_name(s)` are ignored. A case is skipped (with its reason) when it needs a
//! feature the harness does not support, an EKU, or per-case algorithm/keyUsage restrictions.
//!
//! A case the suite rejects but we accept ("wrongly accepted") fails the test unless
//! `tests/limbo-exceptions.txt` lists it with a reason; an entry there that is no longer wrongly
//! accepted fails the test too, so the list cannot rot. A case the suite accepts but we refuse
//! ("wrongly rejected") is reported, not fatal: refusing is the safe direction.

use std::{
    collections::{BTreeMap, BTreeSet},
    panic::{AssertUnwindSafe, catch_unwind},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use der::Decode;
use rxgate::domain::{
    signature::{CrlSet, Verifier, VerifierConfig},
    time::JapanDate,
};
use serde::Deserialize;
use x509_cert::Certificate;

/// The exceptions list, compiled in (format in its header).
const EXCEPTIONS: &str = include_str!("../limbo-exceptions.txt");

/// The namespaces run, in table order. A case belongs to the first whose prefix its id has.
const NAMESPACES: &[&str] = &[
    "rfc5280",
    "pathlen",
    "pathological",
    "cve",
    "crl",
    "bettertls::pathbuilding",
];

/// Feature tags the harness supports; a case with any other tag is skipped.
const SUPPORTED_FEATURES: &[&str] = &[
    "has-crl",
    "max-chain-depth",
    "has-policy-constraints",
    "name-constraint-dn",
    "rfc5280-incompatible-with-webpki",
];

#[derive(Deserialize)]
struct Limbo {
    testcases: Vec<Testcase>,
}

#[derive(Deserialize)]
struct Testcase {
    id: String,
    #[serde(default)]
    features: Vec<String>,
    #[serde(default)]
    description: String,
    trusted_certs: Vec<String>,
    untrusted_intermediates: Vec<String>,
    peer_certificate: String,
    validation_time: Option<String>,
    #[serde(default)]
    signature_algorithms: Vec<String>,
    #[serde(default)]
    key_usage: Vec<String>,
    #[serde(default)]
    extended_key_usage: Vec<String>,
    expected_result: Expected,
    max_chain_depth: Option<u64>,
    #[serde(default)]
    crls: Vec<String>,
}

#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
enum Expected {
    #[serde(rename = "SUCCESS")]
    Success,
    #[serde(rename = "FAILURE")]
    Failure,
}

impl Expected {
    fn as_str(self) -> &'static str {
        match self {
            Expected::Success => "SUCCESS",
            Expected::Failure => "FAILURE",
        }
    }
}

/// What rxgate made of one case.
enum Ours {
    Accepted,
    /// Refused (or the harness could not even set the case up): the reason and detail.
    Refused(String),
}

enum Outcome {
    Pass,
    Fail(Ours),
    Skip(String),
}

fn namespace_of(id: &str) -> Option<&'static str> {
    NAMESPACES.iter().copied().find(|ns| {
        id.strip_prefix(ns)
            .is_some_and(|rest| rest.starts_with("::"))
    })
}

/// Why the harness does not run a case, if it does not.
fn skip_reason(case: &Testcase) -> Option<String> {
    let unsupported: Vec<&str> = case
        .features
        .iter()
        .map(String::as_str)
        .filter(|f| !SUPPORTED_FEATURES.contains(f))
        .collect();
    if !unsupported.is_empty() {
        return Some(format!(
            "unsupported feature(s): {}",
            unsupported.join(", ")
        ));
    }
    if !case.extended_key_usage.is_empty() {
        return Some(
            "EKU requirements do not apply to document signers: rxgate does not process EKU".into(),
        );
    }
    if !case.signature_algorithms.is_empty() || !case.key_usage.is_empty() {
        return Some("per-case algorithm/KU restrictions not supported by the harness".into());
    }
    None
}

/// Parses `YYYY-MM-DDTHH:MM:SS(.fraction)?(+00:00|Z)`, the suite's validation times (UTC).
fn parse_time(text: &str) -> Result<SystemTime, String> {
    let bad = || format!("unsupported validation_time {text:?}");
    let rest = text
        .strip_suffix("+00:00")
        .or_else(|| text.strip_suffix('Z'))
        .ok_or_else(bad)?;
    let (whole, fraction) = match rest.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (rest, None),
    };
    let b = whole.as_bytes();
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let field = |from: usize, to: usize| -> Result<i64, String> {
        let digits = &whole[from..to];
        if !digits.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        digits.parse().map_err(|_| bad())
    };
    // The calendar date through the project's own date arithmetic: the Japan day starts at
    // 15:00 UTC of the day before, so its start plus nine hours is 00:00 UTC of the date.
    let date: JapanDate = whole[..10].parse().map_err(|_| bad())?;
    let (hour, minute, second) = (field(11, 13)?, field(14, 16)?, field(17, 19)?);
    if hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    let nanos = match fraction {
        None => 0,
        Some(f) if !f.is_empty() && f.bytes().all(|c| c.is_ascii_digit()) => {
            // Nanosecond precision; further digits are dropped.
            let mut digits: String = f.chars().take(9).collect();
            while digits.len() < 9 {
                digits.push('0');
            }
            digits.parse::<u32>().map_err(|_| bad())?
        }
        Some(_) => return Err(bad()),
    };
    let secs = (9 + hour) * 3_600 + minute * 60 + second;
    let base = date.start() + Duration::from_secs(secs as u64);
    Ok(base + Duration::from_nanos(nanos.into()))
}

/// The DER inside one PEM block with the given label. The bytes are passed on as they are
/// (not decoded and re-encoded), so the validator sees exactly what the suite holds.
fn pem_der(pem: &str, label: &str, what: &str) -> Result<Vec<u8>, String> {
    let (found, der) =
        der::pem::decode_vec(pem.as_bytes()).map_err(|e| format!("{what}: bad PEM: {e}"))?;
    if found != label {
        return Err(format!("{what}: PEM label {found:?}, expected {label:?}"));
    }
    Ok(der)
}

fn pem_ders(pems: &[String], label: &str, what: &str) -> Result<Vec<Vec<u8>>, String> {
    pems.iter().map(|p| pem_der(p, label, what)).collect()
}

/// Each CRL paired with the first CA (trusted, then intermediates) under which it verifies; a
/// CRL that pairs with none is left out.
fn crl_set(case: &Testcase, anchors: &[Vec<u8>], presented: &[Vec<u8>]) -> Result<CrlSet, String> {
    let cas: Vec<Certificate> = anchors
        .iter()
        .chain(presented)
        .filter_map(|der| Certificate::from_der(der).ok())
        .collect();
    let crls = pem_ders(&case.crls, "X509 CRL", "CRL")?;
    let mut pairs: Vec<(&Certificate, &[u8])> = Vec::new();
    for crl in &crls {
        if let Some(ca) = cas
            .iter()
            .find(|ca| CrlSet::new([(*ca, crl.as_slice())]).is_ok())
        {
            pairs.push((ca, crl.as_slice()));
        }
    }
    CrlSet::new(pairs).map_err(|e| format!("CRL set: {e}"))
}

/// Runs one case through the validator. A case the harness cannot set up (bad PEM, a CRL set
/// or a `Verifier` that cannot be built) counts as refused, with a detail starting "harness:".
fn run(case: &Testcase) -> Ours {
    let setup = || -> Result<Ours, String> {
        let anchors = pem_ders(&case.trusted_certs, "CERTIFICATE", "trusted certificate")?;
        let presented = pem_ders(
            &case.untrusted_intermediates,
            "CERTIFICATE",
            "untrusted intermediate",
        )?;
        let leaf = pem_der(&case.peer_certificate, "CERTIFICATE", "peer certificate")?;
        let at = match &case.validation_time {
            Some(text) => parse_time(text)?,
            None => SystemTime::now(),
        };
        let max_depth = if case.features.iter().any(|f| f == "max-chain-depth") {
            let depth = case
                .max_chain_depth
                .ok_or("max-chain-depth feature without max_chain_depth")?;
            Some(u8::try_from(depth).unwrap_or(u8::MAX))
        } else {
            None
        };
        let check_revocation = case.features.iter().any(|f| f == "has-crl");
        let crls = if check_revocation {
            crl_set(case, &anchors, &presented)?
        } else {
            CrlSet::default()
        };
        let verifier = Verifier::new(VerifierConfig::default(), &anchors, &[], crls)
            .map_err(|e| format!("Verifier::new: {e}"))?;
        Ok(
            match verifier.validate_certificate(&leaf, &presented, at, max_depth, check_revocation)
            {
                Ok(()) => Ours::Accepted,
                Err(refusal) => Ours::Refused(format!(
                    "{}: {}{}",
                    refusal.reason.code(),
                    refusal.detail,
                    refusal
                        .diagnostic
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                )),
            },
        )
    };
    setup().unwrap_or_else(|e| Ours::Refused(format!("harness: {e}")))
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(non-string panic payload)".into())
}

fn truncate(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    match one_line.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &one_line[..cut]),
        None => one_line,
    }
}

/// `id reason…` per line; `#` starts a comment line. Panics on a malformed or duplicate entry.
fn parse_exceptions(text: &str) -> BTreeMap<String, String> {
    let mut entries = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (id, reason) = line
            .split_once(char::is_whitespace)
            .map(|(id, reason)| (id, reason.trim()))
            .unwrap_or((line, ""));
        assert!(
            !reason.is_empty(),
            "limbo-exceptions.txt line {}: {id} has no reason",
            n + 1
        );
        assert!(
            entries.insert(id.to_owned(), reason.to_owned()).is_none(),
            "limbo-exceptions.txt line {}: {id} is listed twice",
            n + 1
        );
    }
    entries
}

#[derive(Default)]
struct Counts {
    pass: usize,
    fail: usize,
    skip: usize,
}

#[test]
fn x509_limbo() {
    let exceptions = parse_exceptions(EXCEPTIONS);
    let Some(path) = std::env::var_os("RXGATE_LIMBO") else {
        println!("x509-limbo: SKIPPED — set RXGATE_LIMBO to the path of limbo.json");
        return;
    };
    let started = Instant::now();
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("RXGATE_LIMBO={}: {e}", path.to_string_lossy()));
    let limbo: Limbo = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("RXGATE_LIMBO={}: {e}", path.to_string_lossy()));
    drop(bytes);
    let loaded = started.elapsed();

    let mut counts: BTreeMap<&str, Counts> = BTreeMap::new();
    let mut failures: Vec<(&Testcase, String)> = Vec::new();
    let mut wrongly_accepted: Vec<&Testcase> = Vec::new();
    let mut wrongly_rejected: Vec<(&Testcase, String)> = Vec::new();
    let mut skipped: Vec<(&Testcase, String)> = Vec::new();
    // Refusals that came from setting the case up rather than from the validator: shown so a
    // harness fault cannot hide behind an expected FAILURE.
    let mut set_up_refusals: Vec<(&Testcase, String)> = Vec::new();
    for case in &limbo.testcases {
        let Some(ns) = namespace_of(&case.id) else {
            continue;
        };
        let outcome = match skip_reason(case) {
            Some(reason) => Outcome::Skip(reason),
            None => {
                let ours = catch_unwind(AssertUnwindSafe(|| run(case))).unwrap_or_else(|p| {
                    let message = panic_message(p.as_ref());
                    println!("PANIC in {}: {message}", case.id);
                    Ours::Refused(format!("panic: {message}"))
                });
                if let Ours::Refused(why) = &ours
                    && (why.starts_with("harness:") || why.starts_with("panic:"))
                {
                    set_up_refusals.push((case, why.clone()));
                }
                match (&ours, case.expected_result) {
                    (Ours::Accepted, Expected::Success) | (Ours::Refused(_), Expected::Failure) => {
                        Outcome::Pass
                    }
                    _ => Outcome::Fail(ours),
                }
            }
        };
        let row = counts.entry(ns).or_default();
        match outcome {
            Outcome::Pass => row.pass += 1,
            Outcome::Skip(reason) => {
                row.skip += 1;
                skipped.push((case, reason));
            }
            Outcome::Fail(Ours::Accepted) => {
                row.fail += 1;
                failures.push((case, "accepted".into()));
                wrongly_accepted.push(case);
            }
            Outcome::Fail(Ours::Refused(why)) => {
                row.fail += 1;
                failures.push((case, format!("refused — {}", truncate(&why, 150))));
                wrongly_rejected.push((case, why));
            }
        }
    }

    println!();
    println!("x509-limbo ({})", path.to_string_lossy());
    println!(
        "{:<26} {:>5} {:>5} {:>5} {:>6}",
        "namespace", "pass", "fail", "skip", "total"
    );
    let mut total = Counts::default();
    for ns in NAMESPACES {
        let row = counts.get(ns).unwrap_or(&Counts {
            pass: 0,
            fail: 0,
            skip: 0,
        });
        println!(
            "{:<26} {:>5} {:>5} {:>5} {:>6}",
            ns,
            row.pass,
            row.fail,
            row.skip,
            row.pass + row.fail + row.skip
        );
        total.pass += row.pass;
        total.fail += row.fail;
        total.skip += row.skip;
    }
    println!(
        "{:<26} {:>5} {:>5} {:>5} {:>6}",
        "total",
        total.pass,
        total.fail,
        total.skip,
        total.pass + total.fail + total.skip
    );

    println!();
    println!("SKIPPED ({}):", skipped.len());
    for (case, reason) in &skipped {
        println!("  {}: {reason}", case.id);
    }

    println!();
    println!(
        "Refused by the harness or a panic, not by the validator ({}):",
        set_up_refusals.len()
    );
    for (case, why) in &set_up_refusals {
        println!(
            "  {} (expected {}): {}",
            case.id,
            case.expected_result.as_str(),
            truncate(why, 150)
        );
    }

    println!();
    println!("FAILURES ({}):", failures.len());
    for (case, ours) in &failures {
        println!(
            "  {}: expected {}, ours {ours}",
            case.id,
            case.expected_result.as_str()
        );
    }

    println!();
    println!(
        "(a) wrongly accepted — expected FAILURE, we returned Ok ({}):",
        wrongly_accepted.len()
    );
    let mut unexcused = Vec::new();
    for case in &wrongly_accepted {
        match exceptions.get(&case.id) {
            Some(reason) => println!("  {} [excepted: {reason}]", case.id),
            None => {
                println!(
                    "  {} [NOT EXCEPTED — security bug?] {}",
                    case.id,
                    truncate(&case.description, 150)
                );
                unexcused.push(case.id.as_str());
            }
        }
    }
    println!();
    println!(
        "(b) wrongly rejected — expected SUCCESS, we refused ({}; not fatal):",
        wrongly_rejected.len()
    );
    for (case, why) in &wrongly_rejected {
        println!("  {}: {}", case.id, truncate(why, 150));
    }

    let accepted_ids: BTreeSet<&str> = wrongly_accepted.iter().map(|c| c.id.as_str()).collect();
    let stale: Vec<&str> = exceptions
        .keys()
        .map(String::as_str)
        .filter(|id| !accepted_ids.contains(id))
        .collect();
    if !stale.is_empty() {
        println!();
        println!("STALE EXCEPTIONS — listed in limbo-exceptions.txt but not wrongly accepted:");
        for id in &stale {
            println!("  {id}");
        }
    }
    println!();
    println!(
        "x509-limbo: loaded in {:.1?}, total {:.1?}",
        loaded,
        started.elapsed()
    );

    assert!(
        unexcused.is_empty(),
        "x509-limbo: {} case(s) wrongly accepted and not in limbo-exceptions.txt: {unexcused:?}",
        unexcused.len()
    );
    assert!(
        stale.is_empty(),
        "x509-limbo: limbo-exceptions.txt lists case(s) no longer wrongly accepted: {stale:?}"
    );
}

#[test]
fn parses_validation_times() {
    let t = |s| parse_time(s).unwrap().duration_since(UNIX_EPOCH).unwrap();
    assert_eq!(t("1970-01-01T00:00:03+00:00"), Duration::from_secs(3));
    assert_eq!(
        t("2024-04-01T00:00:00+00:00"),
        Duration::from_secs(1_711_929_600)
    );
    assert_eq!(t("2000-02-29T12:34:56Z"), Duration::from_secs(951_827_696));
    assert_eq!(
        t("2024-03-01T00:00:00.999+00:00"),
        Duration::new(1_709_251_200, 999_000_000)
    );
    assert!(parse_time("2024-04-01T00:00:00+01:00").is_err());
    assert!(parse_time("2024-04-01 00:00:00Z").is_err());
    assert!(parse_time("2024-13-01T00:00:00Z").is_err());
    assert!(parse_time("2024-04-01T00:00:00.+00:00").is_err());
}

#[test]
fn selects_namespaces() {
    assert_eq!(namespace_of("rfc5280::ee-critical-aia"), Some("rfc5280"));
    assert_eq!(
        namespace_of("bettertls::pathbuilding::tc1"),
        Some("bettertls::pathbuilding")
    );
    assert_eq!(namespace_of("bettertls::nameconstraints::tc1"), None);
    assert_eq!(namespace_of("webpki::foo"), None);
    assert_eq!(namespace_of("crlx::foo"), None);
}

#[test]
fn exceptions_file_parses() {
    parse_exceptions(EXCEPTIONS);
}
