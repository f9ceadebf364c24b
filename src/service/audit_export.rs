//! The audit trail as an export shows it: each record (`AuditEntry`) with what it is
//! (`Audited`: a chain's genesis, a call and the subject of its check, or requests counted at the
//! edge) and its place in its writer's chain. Made here from the stored records, so that no
//! reader outside the service names a stored version of them. Knows no protocol.

use crate::domain::checks::Consent;

use super::records::{
    AuditV1, AuditV2, ChainedV1, CheckSubjectV1, ConsentMethodV1, CountV1, CountedV1,
};

/// One audit record as exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Its writer's sequence (a link) or the store-wide one (an unchained record).
    pub sequence: u64,
    pub entry: Audited,
    /// None for the unchained records of stores written before the chain.
    pub chain: Option<ChainLink>,
}

/// What a third party needs to check a link: its writer, the hash it names and its encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainLink {
    pub writer: [u8; 32],
    pub previous: [u8; 32],
    /// The stored encoding: the link's hash is its SHA-256.
    pub canonical: Vec<u8>,
}

/// What an audit record is: the beginning of a chain, a call, or requests counted at the edge.
/// The exported form of the stored `ChainedV1`, so that no reader outside the service depends
/// on how a version of the record is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audited {
    /// The first link of a chain: when it began and how many unchained records (keyed
    /// 1..=unchained) the store held then.
    Genesis { time_ms: i64, unchained: u64 },
    /// A call, with the subject of its clinical check if it ran one.
    Call(Box<AuditedCall>),
    /// The requests of one connection answered before any handler beyond those recorded one by
    /// one.
    Counted(Box<CountedRequests>),
}

/// The audit record of a call: who called, who signed, what on which target, with what outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedCall {
    pub time_ms: i64,
    pub caller: AuditedCaller,
    pub signer_serial_number: Option<String>,
    pub signer_certificate_sha256: Option<[u8; 32]>,
    /// The RPC's method name, or `Lockout`.
    pub action: String,
    pub target: Option<String>,
    /// "OK" or the status code name (and the verifier's reason code, if any).
    pub outcome: String,
    pub check: Option<CheckSubject>,
}

/// Who called, as an audit record names the caller: its institution and the SHA-256 of its
/// client certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedCaller {
    pub institution_kind: String,
    pub institution_code: String,
    pub certificate_sha256: [u8; 32],
}

/// Whom a check was about (a keyed pseudonym), how many lines it asked about and the consent
/// asserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckSubject {
    pub patient_pseudonym: [u8; 32],
    pub lines: u32,
    pub consent: Consent,
}

/// Requests of one connection answered before any handler, counted: when the first and the last
/// came, and how many by action and outcome (in that order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountedRequests {
    pub caller: AuditedCaller,
    pub from_ms: i64,
    pub until_ms: i64,
    pub counts: Vec<RequestCount>,
}

/// How many requests of one action were answered with one outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCount {
    pub action: String,
    pub outcome: String,
    pub count: u64,
}

impl Audited {
    /// When it happened (for counted requests, the first).
    pub(super) fn time_ms(&self) -> i64 {
        match self {
            Audited::Genesis { time_ms, .. } => *time_ms,
            Audited::Call(call) => call.time_ms,
            Audited::Counted(counted) => counted.from_ms,
        }
    }

    /// Whether it is a check about the patient of `pseudonym`.
    pub(super) fn checked(&self, pseudonym: &[u8; 32]) -> bool {
        match self {
            Audited::Call(call) => call
                .check
                .is_some_and(|c| c.patient_pseudonym == *pseudonym),
            Audited::Genesis { .. } | Audited::Counted(_) => false,
        }
    }
}

impl From<ChainedV1> for Audited {
    fn from(stored: ChainedV1) -> Audited {
        match stored {
            ChainedV1::Genesis { time_ms, unchained } => Audited::Genesis { time_ms, unchained },
            ChainedV1::Call(call) => Audited::Call(Box::new(call_of(*call))),
            ChainedV1::Counted(counted) => Audited::Counted(Box::new(counted_of(*counted))),
        }
    }
}

fn call_of(stored: AuditV2) -> AuditedCall {
    let AuditV2 { call, check } = stored;
    let AuditV1 {
        time_ms,
        institution_kind,
        institution_code,
        certificate_sha256,
        signer_serial_number,
        signer_certificate_sha256,
        action,
        target,
        outcome,
    } = call;
    let check = check.map(|subject| {
        let CheckSubjectV1 {
            patient_pseudonym,
            lines,
            consent,
        } = subject;
        CheckSubject {
            patient_pseudonym,
            lines,
            consent: consent_of(consent),
        }
    });
    let caller = AuditedCaller {
        institution_kind,
        institution_code,
        certificate_sha256,
    };
    AuditedCall {
        time_ms,
        caller,
        signer_serial_number,
        signer_certificate_sha256,
        action,
        target,
        outcome,
        check,
    }
}

fn counted_of(stored: CountedV1) -> CountedRequests {
    let CountedV1 {
        institution_kind,
        institution_code,
        certificate_sha256,
        from_ms,
        until_ms,
        counts,
    } = stored;
    CountedRequests {
        caller: AuditedCaller {
            institution_kind,
            institution_code,
            certificate_sha256,
        },
        from_ms,
        until_ms,
        counts: counts.into_iter().map(count_of).collect(),
    }
}

fn count_of(stored: CountV1) -> RequestCount {
    let CountV1 {
        action,
        outcome,
        count,
    } = stored;
    RequestCount {
        action,
        outcome,
        count,
    }
}

fn consent_of(stored: ConsentMethodV1) -> Consent {
    match stored {
        ConsentMethodV1::Card => Consent::Card,
        ConsentMethodV1::Verbal => Consent::Verbal,
        ConsentMethodV1::None => Consent::None,
    }
}
