//! `rxgate store verify`: reads every entry of every table of an opened store (so an engine
//! reads, and checks the checksum of, every block and blob), and checks that each record
//! decodes as the schema lays it out, that the indexes and the records they point at agree,
//! that no counter is behind what the store holds, and that the audit chains verify
//! (`audit_verify::ChainVerifier`, as `rxgate audit verify` runs it). Stops at the first
//! problem. A function over a `Store`, not a folder: it runs as well on a store a dump was
//! imported into. Knows the store contract and the schema, nothing of an engine or of gRPC.
//!
//! - **Bounded memory.** Each table is read a page at a time, one transaction a page; an index
//!   is checked by point lookups of what it names, never by holding a table. What is kept
//!   across pages is a handful of numbers and the audit chains' heads.
//! - **No patient data in a problem.** A problem names its table and key in hex, but a key
//!   that names a patient (`ByExchange`, `Medications`, a check budget or a consent: its
//!   pseudonym, which the audit log names a patient by too) by its place in the table, and a
//!   `ByPatient` entry by its prescription id.
//! - **The pseudonym key.** The keys that name a patient hold its pseudonym under the gateway's
//!   `audit_pseudonym_key`, so the checks that a prescription's `ByExchange` and `ByPatient`
//!   entries are its own recompute them under that key. Without it (no `--config`) those checks
//!   are skipped, and the summary says so; with another key than the store's, the store's
//!   fingerprint of its key tells, and that is the problem named.
//! - **A stopped store.** The pages are read one transaction each: a store that is written
//!   meanwhile may show an index without its record. The command opens the folder itself, and
//!   an engine's lock refuses one a running gateway holds.

mod clinical;
mod counters;
mod logs;
mod prescriptions;

use std::fmt;
use std::sync::Arc;

use crate::{
    audit_verify::ChainVerifier,
    domain::{hash::hex, time::JapanDate},
    store::{self, Entry, Store, Table, Txn},
};

use super::{
    Pseudonyms, layout,
    records::{ChainHeadRecord, ChainHeadV1, decode},
    schema::{self, AuditChainKind, ClinicalKind, PSEUDONYM_KEY_FINGERPRINT_KEY, id_of_by_patient},
};
pub use counters::Highest;

/// Entries read per transaction: a page of prescriptions with their documents is a few MB.
const PAGE: usize = 512;

/// Above every key of every table: no key layout of the schema begins with 64 bytes 0xFF (the
/// longest binary key part, an audit link's writer and sequence, is 41 bytes after its tag).
const TABLE_END: [u8; 64] = [0xFF; 64];

/// The first problem found: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub table: Table,
    /// The entry, as it may be shown (see the module's documentation).
    pub entry: String,
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} {}: {}", self.table, self.entry, self.what)
    }
}

/// What a sound store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Entries per table, in [`Table::ALL`] order.
    pub entries: Vec<(Table, u64)>,
    pub links: u64,
    pub chains: usize,
    pub checkpoints: u64,
    /// Whether the checks that need the pseudonym key were skipped, for want of it.
    pub skipped_patient_keys: bool,
}

/// What the summary says of the checks skipped without the pseudonym key.
pub const SKIPPED_PATIENT_KEYS: &str = "SKIPPED without the pseudonym key (the gateway's \
     --config names its audit_pseudonym_key): that each prescription has its ByExchange and \
     ByPatient entries, and that each such entry is under its prescription's patient, clinic, \
     issue date and exchange number";

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counts: Vec<String> = (self.entries.iter())
            .map(|(table, n)| format!("{table:?} {n}"))
            .collect();
        write!(
            f,
            "sound: {}; audit: {} links in {} chains, {} checkpoints",
            counts.join(", "),
            self.links,
            self.chains,
            self.checkpoints
        )?;
        if self.skipped_patient_keys {
            write!(f, "; {SKIPPED_PATIENT_KEYS}")?;
        }
        Ok(())
    }
}

/// What the entries are checked against: the date (a prescription usable then must be found
/// by its exchange number), and the pseudonym key the patients' keys are made under (none: the
/// checks that need it are skipped).
#[derive(Clone)]
pub(super) struct Against {
    pub(super) today: JapanDate,
    pub(super) pseudonyms: Option<Pseudonyms>,
}

/// Why one entry is not right: it could not be read, or it is wrong.
enum Bad {
    Read(store::Error),
    Wrong(String),
}

impl From<store::Error> for Bad {
    fn from(error: store::Error) -> Self {
        Bad::Read(error)
    }
}

fn wrong(what: impl Into<String>) -> Bad {
    Bad::Wrong(what.into())
}

/// What reading one page found.
struct PageRead {
    /// How many entries were read, and the last one's key (none: the table is done).
    read: u64,
    last: Option<Vec<u8>>,
    highest: Highest,
    /// The first bad entry: its place in the table, its key, and why.
    bad: Option<(u64, Vec<u8>, String)>,
    /// The audit tables' entries, for the chain verifier (empty for the other tables).
    audit: Vec<Entry>,
}

/// Checks the whole of `store` (see the module's documentation) as of the date `today` (a
/// prescription usable then must be found by its exchange number), its patients' keys under
/// `pseudonyms` (none: those checks are skipped); `progress` is told, after each page, the
/// table and how many of its entries have been read.
pub async fn verify(
    store: &Arc<dyn Store>,
    mut chains: ChainVerifier,
    (today, pseudonyms): (JapanDate, Option<Pseudonyms>),
    progress: &mut (dyn FnMut(Table, u64) + Send),
) -> Result<Summary, Problem> {
    check_layout(store).await?;
    if let Some(pseudonyms) = &pseudonyms {
        check_pseudonym_key(store, pseudonyms).await?;
    }
    let skipped_patient_keys = pseudonyms.is_none();
    let against = Against { today, pseudonyms };
    let mut highest = Highest::default();
    let mut heads = Vec::new();
    let mut entries = Vec::new();
    // The checkpoints go to the verifier before the links, as it asks.
    let order = std::iter::once(Table::AuditChain)
        .chain(Table::ALL.into_iter().filter(|t| *t != Table::AuditChain));
    for table in order {
        let mut walk = Walk::new(table, highest, against.clone());
        while let Some(audit) = walk.next_page(store).await? {
            feed(&mut chains, &mut heads, table, audit);
            progress(table, walk.read);
        }
        highest = walk.highest;
        entries.push((table, walk.read));
    }
    entries.sort_by_key(|(table, _)| Table::ALL.iter().position(|t| t == table));
    counters::check(store, highest).await?;
    let report = chains.finish(Some(&heads));
    if let Some(finding) = report.findings.first() {
        return Err(Problem {
            table: Table::Audit,
            entry: String::from("chain"),
            what: finding.to_string(),
        });
    }
    Ok(Summary {
        entries,
        links: report.links,
        chains: report.writers,
        checkpoints: report.checkpoints,
        skipped_patient_keys,
    })
}

/// Refuses a store whose patients' keys were made under another pseudonym key than
/// `pseudonyms`: every check of them would fail, and name the wrong cause.
async fn check_pseudonym_key(
    store: &Arc<dyn Store>,
    pseudonyms: &Pseudonyms,
) -> Result<(), Problem> {
    let recorded = store
        .transact(|tx| tx.get(Table::Meta, PSEUDONYM_KEY_FINGERPRINT_KEY))
        .await
        .and_then(|read| read);
    let what = match recorded {
        Ok(Some(recorded)) if recorded == pseudonyms.fingerprint() => return Ok(()),
        Ok(Some(_)) => String::from(
            "the store was built with another audit_pseudonym_key than the one --config names",
        ),
        Ok(None) => String::from("the store records no fingerprint of its pseudonym key"),
        Err(e) => format!("reading it failed: {e}"),
    };
    Err(Problem {
        table: Table::Meta,
        entry: format!("key {}", hex(PSEUDONYM_KEY_FINGERPRINT_KEY)),
        what,
    })
}

/// Refuses a store of another layout than this build's: the checks read the current layout.
async fn check_layout(store: &Arc<dyn Store>) -> Result<(), Problem> {
    let problem = |what: String| Problem {
        table: Table::Meta,
        entry: format!("key {}", hex(schema::LAYOUT_KEY)),
        what,
    };
    match layout::check(store).await {
        Ok(Some(layout::CURRENT)) => Ok(()),
        Ok(found) => Err(problem(format!(
            "the store has layout {}, this build checks layout {}: start the gateway once to \
             upgrade it",
            found.map_or_else(
                || String::from("none (before versioning)"),
                |n| n.to_string()
            ),
            layout::CURRENT
        ))),
        Err(e) => Err(problem(e.to_string())),
    }
}

/// A walk over one table, a page at a time.
struct Walk {
    table: Table,
    against: Against,
    after: Option<Vec<u8>>,
    read: u64,
    highest: Highest,
    done: bool,
    /// The last entry read, named as it may be shown.
    last_named: String,
}

impl Walk {
    fn new(table: Table, highest: Highest, against: Against) -> Self {
        Walk {
            table,
            against,
            after: None,
            read: 0,
            highest,
            done: false,
            last_named: String::from("(its first entry)"),
        }
    }

    /// Reads and checks the next page; its audit entries, or none once the table is done.
    async fn next_page(&mut self, store: &Arc<dyn Store>) -> Result<Option<Vec<Entry>>, Problem> {
        if self.done {
            return Ok(None);
        }
        let (table, after, read) = (self.table, self.after.take(), self.read);
        let (highest, against) = (self.highest.clone(), self.against.clone());
        let page = store
            .transact(move |tx: &mut dyn Txn| {
                read_page(tx, table, after.as_deref(), highest.clone(), read, &against)
            })
            .await
            .and_then(|inner| inner);
        let page = page
            .map_err(|e| self.problem(format!("reading after {} failed: {e}", self.last_named)))?;
        if let Some((place, key, what)) = page.bad {
            return Err(Problem {
                table,
                entry: named(table, &key, place),
                what,
            });
        }
        self.read += page.read;
        self.highest = page.highest;
        if let Some(last) = &page.last {
            self.last_named = named(table, last, self.read);
        }
        self.done = page.last.is_none();
        self.after = page.last;
        Ok(Some(page.audit))
    }

    fn problem(&self, what: String) -> Problem {
        Problem {
            table: self.table,
            entry: format!("after {}", self.last_named),
            what,
        }
    }
}

/// Reads the page of `table` after `after` (from the start: none) and checks each entry.
fn read_page(
    tx: &dyn Txn,
    table: Table,
    after: Option<&[u8]>,
    mut highest: Highest,
    before: u64,
    against: &Against,
) -> Result<PageRead, store::Error> {
    let start = after.map(schema::successor).unwrap_or_default();
    let rows = tx.scan_range(table, &start, &TABLE_END, PAGE)?;
    let read = rows.len() as u64;
    let last = (rows.len() == PAGE)
        .then(|| rows.last().map(|(k, _)| k.clone()))
        .flatten();
    let mut bad = None;
    for (n, (key, value)) in rows.iter().enumerate() {
        match check_entry(tx, table, key, value, against) {
            Ok(()) => highest.note(table, key),
            Err(Bad::Read(e)) => return Err(e),
            Err(Bad::Wrong(what)) => {
                bad = Some((before + n as u64 + 1, key.clone(), what));
                break;
            }
        }
    }
    let audit = match table {
        Table::Audit | Table::AuditChain if bad.is_none() => rows,
        _ => Vec::new(),
    };
    Ok(PageRead {
        read,
        last,
        highest,
        bad,
        audit,
    })
}

/// Checks one entry of `table`.
fn check_entry(
    tx: &dyn Txn,
    table: Table,
    key: &[u8],
    value: &[u8],
    against: &Against,
) -> Result<(), Bad> {
    let pseudonyms = against.pseudonyms.as_ref();
    match table {
        Table::Prescriptions => prescriptions::prescription(tx, key, value, against),
        Table::ByExchange => prescriptions::by_exchange(tx, key, value, pseudonyms),
        Table::ByPatient => prescriptions::by_patient(tx, key, pseudonyms),
        Table::ByNumber => prescriptions::by_number(tx, key, value),
        Table::Documents => prescriptions::document(tx, key, value),
        Table::Dispensings => prescriptions::dispensing(tx, key, value),
        Table::Certificates => prescriptions::certificate(key, value),
        Table::Meta => counters::meta(tx, key, value),
        Table::Events => logs::event(tx, key, value),
        Table::EventsByInstitution => logs::institution_event(tx, key),
        Table::Intake => logs::intake(tx, key, value),
        Table::Medications => clinical::history(value),
        Table::Clinical => clinical::clinical(tx, key, value),
        Table::Lockouts => clinical::lockout(key, value),
        Table::Audit => counters::audit(key, value),
        Table::AuditChain => counters::audit_chain(key, value),
    }
}

/// Hands the audit tables' entries to the chain verifier: the checkpoints, and the links in
/// key order (a writer's chain in sequence order); keeps the heads for its verdict. Each entry
/// has passed [`check_entry`], so its key parses and a head decodes.
fn feed(
    chains: &mut ChainVerifier,
    heads: &mut Vec<ChainHeadV1>,
    table: Table,
    entries: Vec<Entry>,
) {
    for (key, value) in entries {
        match (table, schema::audit_chain_kind(&key)) {
            (Table::AuditChain, Some(AuditChainKind::Checkpoint)) => {
                chains.checkpoint(&value, &format!("stored {}", hex(&key)));
            }
            (Table::AuditChain, Some(AuditChainKind::Head)) => {
                heads.extend(decode(&value).map(|ChainHeadRecord::V1(head)| head));
            }
            (Table::Audit, _) => match schema::parse_key(&key) {
                Ok((None, sequence)) => chains.unchained(sequence),
                Ok((Some(writer), sequence)) => {
                    chains.link(writer, sequence, &value);
                }
                Err(_) => {}
            },
            _ => {}
        }
    }
}

/// How an entry of `table` is named in a problem: its key in hex, but never a patient key
/// (see the module's documentation); `place` is its place in the table (1: the first).
fn named(table: Table, key: &[u8], place: u64) -> String {
    let by_place = || format!("entry #{place} (its key names a patient, not shown)");
    match table {
        Table::ByExchange | Table::Medications => by_place(),
        Table::ByPatient => format!(
            "entry #{place} of prescription {}",
            String::from_utf8_lossy(id_of_by_patient(key))
        ),
        Table::Clinical => match schema::clinical_kind(key) {
            Some((ClinicalKind::CheckBudget | ClinicalKind::Consent(_), _)) => by_place(),
            _ => format!("key {}", hex(key)),
        },
        _ => format!("key {}", hex(key)),
    }
}
