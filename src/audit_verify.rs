//! Checks an audit trail: each writer's chain link by link (gapless sequences from a genesis
//! link, each naming the SHA-256 of the one before), the unchained records before the chains,
//! the checkpoints (signature under a pinned `[gateway]` certificate, every head they name
//! present with that hash) and, over a store, the writers' recorded heads. Fed in one pass:
//! checkpoints first, then the records in chain order; it keeps only the heads. Pure.

use std::collections::BTreeMap;

use crate::{
    domain::hash::{hex, sha256},
    pki::identity::{AUDIT_CHECKPOINT, TrustedSenders, Untrusted},
    service::records::decode,
    service::records::{AuditRecord, AuditV3, ChainHeadV1, ChainedV1, SignedCheckpointRecord},
};

/// Something that does not hold: the first place of it that cannot be trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A writer's chain from `sequence` on.
    Link {
        writer: [u8; 32],
        sequence: u64,
        problem: String,
    },
    /// The unchained records (before the chains) from `sequence` on.
    Unchained { sequence: u64, problem: String },
    /// A checkpoint, named by where it came from.
    Checkpoint { origin: String, problem: String },
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Link {
                writer,
                sequence,
                problem,
            } => write!(
                f,
                "writer {}: sequence {sequence}: {problem}",
                short(writer)
            ),
            Finding::Unchained { sequence, problem } => {
                write!(f, "unchained record {sequence}: {problem}")
            }
            Finding::Checkpoint { origin, problem } => write!(f, "checkpoint {origin}: {problem}"),
        }
    }
}

fn short(writer: &[u8; 32]) -> String {
    hex(&writer[..8])
}

/// A writer's chain as read so far.
struct Chain {
    head: ChainHeadV1,
    broken: bool,
    /// A link that fits but for the hash it names: the one before it was altered, or its own
    /// bytes were (then the next link does not name its hash either).
    suspect: Option<ChainHeadV1>,
}

/// A head a checkpoint names, and which checkpoint.
struct Named {
    hash: [u8; 32],
    origin: String,
}

/// The verifier's state; see the module comment for the order it is fed in.
pub struct ChainVerifier {
    trusted: TrustedSenders,
    chains: BTreeMap<[u8; 32], Chain>,
    named: BTreeMap<([u8; 32], u64), Vec<Named>>,
    unchained: u64,
    genesis_unchained: Option<u64>,
    checkpoints: u64,
    findings: Vec<Finding>,
}

/// What the verifier found, and what it read.
#[derive(Debug)]
pub struct Report {
    pub findings: Vec<Finding>,
    pub links: u64,
    pub writers: usize,
    pub unchained: u64,
    pub checkpoints: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for finding in &self.findings {
            writeln!(f, "BAD: {finding}")?;
        }
        let verdict = if self.findings.is_empty() {
            "intact"
        } else {
            "NOT intact"
        };
        write!(
            f,
            "{verdict}: {} links in {} chains, {} unchained records before them, {} checkpoints",
            self.links, self.writers, self.unchained, self.checkpoints
        )
    }
}

impl ChainVerifier {
    /// Believes checkpoints signed by the certificates in `trusted` only.
    pub fn new(trusted: TrustedSenders) -> Self {
        ChainVerifier {
            trusted,
            chains: BTreeMap::new(),
            named: BTreeMap::new(),
            unchained: 0,
            genesis_unchained: None,
            checkpoints: 0,
            findings: Vec::new(),
        }
    }

    /// A checkpoint as stored or logged; `origin` names it in findings.
    pub fn checkpoint(&mut self, stored: &[u8], origin: &str) {
        self.checkpoints += 1;
        let problem = |problem: &str| Finding::Checkpoint {
            origin: origin.to_owned(),
            problem: problem.to_owned(),
        };
        let Ok(SignedCheckpointRecord::V1 { body, signature }) = decode(stored) else {
            return self.findings.push(problem("does not decode"));
        };
        let Ok(checkpoint) = decode::<crate::service::records::CheckpointV1>(&body) else {
            return self.findings.push(problem("its body does not decode"));
        };
        let signed = (AUDIT_CHECKPOINT, body.as_slice());
        match self.trusted.verify(&checkpoint.signer, signed, &signature) {
            Ok(()) => {}
            Err(Untrusted::UnknownSender) => {
                return self.findings.push(problem(&format!(
                    "signed by {}, not a given gateway certificate",
                    hex(&checkpoint.signer)
                )));
            }
            Err(Untrusted::BadSignature) => {
                return self.findings.push(problem("its signature does not verify"));
            }
        }
        let origin = format!("{origin} (number {})", checkpoint.number);
        for head in checkpoint.heads {
            self.named
                .entry((head.writer, head.sequence))
                .or_default()
                .push(Named {
                    hash: head.hash,
                    origin: origin.clone(),
                });
        }
    }

    /// An unchained record (written before the chains), keyed by the store-wide `sequence`.
    pub fn unchained(&mut self, sequence: u64) {
        let expected = self.unchained + 1;
        self.unchained += 1;
        if sequence != expected {
            self.findings.push(Finding::Unchained {
                sequence: expected.min(sequence),
                problem: format!("found {sequence} where {expected} belongs"),
            });
        }
    }

    /// A link of `writer`'s chain at `sequence` (as keyed or exported), its stored bytes
    /// `canonical`; returns it decoded if it fits the chain.
    pub fn link(&mut self, writer: [u8; 32], sequence: u64, canonical: &[u8]) -> Option<AuditV3> {
        let chain = self.chains.entry(writer).or_insert(Chain {
            head: ChainHeadV1 {
                writer,
                sequence: 0,
                hash: [0; 32],
            },
            broken: false,
            suspect: None,
        });
        if chain.broken {
            return None;
        }
        if let Some(suspect) = chain.suspect.take() {
            let vouched = matches!(decode(canonical),
                Ok(AuditRecord::V3(next)) if next.previous == suspect.hash);
            let (sequence, problem) = altered(&suspect, vouched);
            self.reject(writer, sequence, &problem);
            return None;
        }
        match fits(&chain.head, sequence, canonical) {
            Ok(link) => {
                chain.head = ChainHeadV1 {
                    writer,
                    sequence,
                    hash: sha256(canonical),
                };
                if let ChainedV1::Genesis { unchained, .. } = link.entry {
                    self.genesis_unchained = Some(unchained);
                }
                let head = chain.head;
                self.compare_named(&head);
                Some(link)
            }
            Err(Misfit::Unlinked) => {
                chain.suspect = Some(ChainHeadV1 {
                    writer,
                    sequence,
                    hash: sha256(canonical),
                });
                None
            }
            Err(Misfit::Bad(sequence, problem)) => {
                chain.broken = true;
                self.findings.push(Finding::Link {
                    writer,
                    sequence,
                    problem,
                });
                None
            }
        }
    }

    /// Marks the link at `sequence` of `writer` bad for a reason found outside the chain.
    pub fn reject(&mut self, writer: [u8; 32], sequence: u64, problem: &str) {
        if let Some(chain) = self.chains.get_mut(&writer) {
            chain.broken = true;
        }
        self.findings.push(Finding::Link {
            writer,
            sequence,
            problem: problem.to_owned(),
        });
    }

    /// Checks the checkpoints' heads at `head` against it.
    fn compare_named(&mut self, head: &ChainHeadV1) {
        for named in self
            .named
            .remove(&(head.writer, head.sequence))
            .unwrap_or_default()
        {
            if named.hash != head.hash {
                self.findings.push(Finding::Link {
                    writer: head.writer,
                    sequence: head.sequence,
                    problem: format!(
                        "not the link checkpoint {} signed: the chain up to here was rewritten",
                        named.origin
                    ),
                });
            }
        }
    }

    /// The verdict; over a store, `heads` are the writers' recorded heads.
    pub fn finish(mut self, heads: Option<&[ChainHeadV1]>) -> Report {
        let suspects: Vec<_> = self.chains.values().filter_map(|c| c.suspect).collect();
        for suspect in suspects {
            let (sequence, problem) = altered(&suspect, true);
            self.reject(suspect.writer, sequence, &format!("{problem} (or it was)"));
        }
        for head in heads.unwrap_or_default() {
            self.compare_head(head);
        }
        let named = std::mem::take(&mut self.named);
        for ((writer, sequence), names) in named {
            let chain = self.chains.get(&writer);
            if chain.is_some_and(|c| c.broken) {
                continue; // reported where it broke
            }
            let end = chain.map_or(0, |c| c.head.sequence);
            for name in names {
                self.findings.push(Finding::Link {
                    writer,
                    sequence: end + 1,
                    problem: format!(
                        "missing: checkpoint {} names sequence {sequence}, the chain ends at {end}",
                        name.origin
                    ),
                });
            }
        }
        if let Some(genesis) = self.genesis_unchained.filter(|n| *n != self.unchained) {
            self.findings.push(Finding::Unchained {
                sequence: genesis.min(self.unchained) + 1,
                problem: format!(
                    "the chains began after {genesis} unchained records; {} are here",
                    self.unchained
                ),
            });
        }
        Report {
            links: self.chains.values().map(|c| c.head.sequence).sum(),
            writers: self.chains.len(),
            unchained: self.unchained,
            checkpoints: self.checkpoints,
            findings: self.findings,
        }
    }

    /// A writer's recorded head must be its chain's last link.
    fn compare_head(&mut self, recorded: &ChainHeadV1) {
        let Some(chain) = self.chains.get(&recorded.writer).filter(|c| !c.broken) else {
            if !self.chains.contains_key(&recorded.writer) {
                self.findings.push(Finding::Link {
                    writer: recorded.writer,
                    sequence: 1,
                    problem: format!("missing: the writer's head is at {}", recorded.sequence),
                });
            }
            return;
        };
        let end = chain.head;
        let problem = if end.sequence < recorded.sequence {
            Some((end.sequence + 1, "missing: the writer's head is further"))
        } else if end.sequence > recorded.sequence {
            Some((recorded.sequence + 1, "after the writer's head"))
        } else if end.hash != recorded.hash {
            Some((end.sequence, "altered: not the writer's recorded head"))
        } else {
            None
        };
        if let Some((sequence, problem)) = problem {
            self.findings.push(Finding::Link {
                writer: recorded.writer,
                sequence,
                problem: problem.to_owned(),
            });
        }
    }
}

/// Why a link does not fit after a chain's head.
enum Misfit {
    /// The first sequence that cannot be trusted, and why.
    Bad(u64, String),
    /// It fits but for the hash it names.
    Unlinked,
}

fn bad(sequence: u64, problem: impl Into<String>) -> Misfit {
    Misfit::Bad(sequence, problem.into())
}

/// The first bad sequence, and why, about a link `suspect` that names another hash than its
/// predecessor's: the predecessor if the next link `vouched` for the suspect's bytes (named
/// their hash), otherwise the suspect itself.
fn altered(suspect: &ChainHeadV1, vouched: bool) -> (u64, String) {
    let sequence = suspect.sequence;
    if vouched {
        let problem = format!("altered: its hash is not the one sequence {sequence} names");
        (sequence - 1, problem)
    } else {
        let problem = "altered: neither the hash it names nor its own is in the chain";
        (sequence, problem.to_owned())
    }
}

/// The link `canonical` decoded, if it is the one after `head` at `sequence`.
fn fits(head: &ChainHeadV1, sequence: u64, canonical: &[u8]) -> Result<AuditV3, Misfit> {
    let expected = head.sequence + 1;
    if sequence > expected {
        return Err(bad(
            expected,
            format!("missing: the chain goes on at {sequence}"),
        ));
    }
    if sequence < expected {
        return Err(bad(
            expected,
            format!("missing: {sequence} comes again instead"),
        ));
    }
    let link = match decode::<AuditRecord>(canonical) {
        Ok(AuditRecord::V3(link)) => link,
        Ok(_) => return Err(bad(sequence, "not a chain link")),
        Err(_) => return Err(bad(sequence, "does not decode")),
    };
    if link.writer != head.writer || link.sequence != sequence {
        let short_writer = short(&link.writer);
        let problem = format!("holds sequence {} of writer {short_writer}", link.sequence);
        return Err(bad(sequence, problem));
    }
    let genesis = matches!(link.entry, ChainedV1::Genesis { .. });
    if genesis != (sequence == 1) {
        return Err(bad(sequence, "a genesis link only begins a chain"));
    }
    match (link.previous == head.hash, head.sequence) {
        (true, _) => Ok(link),
        (false, 0) => Err(bad(sequence, "the genesis link names a predecessor")),
        (false, _) => Err(Misfit::Unlinked),
    }
}
