//! How far the store has acknowledged, kept in its mark (`store::mark`) and checked at start:
//! which counters say it (every `sequence/NAME` counter of the schema, and each audit chain's
//! head), the comparison that refuses a store behind them, and the audited way on past it.
//! Must not depend on the protocol types or an engine.
//!
//! What is written when: the mark is saved once a second while the store moved (`keep`) and
//! once more at a clean close, each time from a read whose answer came after what it read was
//! durable. So the mark is never ahead of an undamaged store, and a crash leaves it at most a
//! second behind. What the check catches: any counter of the mark that the opened store is
//! behind — a lost tail of the journal or log that held one acknowledged registration, event or
//! audited call, a store opened empty. What it cannot catch: a loss of what was acknowledged in
//! the last second before a crash, damage that leaves every counter whole (a flipped byte in
//! an old record: the engine's checksums report that when it is read), or the mark lost with
//! the store (the whole folder gone).

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use crate::{
    domain::{
        hash::hex,
        ids::{Institution, InstitutionCode, InstitutionKind},
    },
    log_throttle::LogThrottle,
    store::{
        self, Store, Txn,
        mark::{self, Mark, Shortfall},
    },
};

use super::{Action, AuditReceipt, Caller, Error, Gateway, audit_chain, schema};

/// The counters a store draws from (`Txn::next_sequence`, `Txn::unique_sequence`).
const SEQUENCES: [&str; 5] = [
    schema::EVENT_SEQUENCE,
    schema::INTAKE_SEQUENCE,
    schema::CONSENT_SEQUENCE,
    schema::IMPORT_SEQUENCE,
    schema::UNCHAINED_AUDIT_SEQUENCE,
];

/// How the mark names the counter `name`: as the store keeps it.
const SEQUENCE_PREFIX: &str = "sequence/";
/// How the mark names an audit chain's head.
const AUDIT_PREFIX: &str = "audit/";

/// How far past the mark (or what was recovered, if more) a recovery moves every counter: the
/// mark is saved once a second, so numbers given in the last seconds before a loss may be
/// above it; 2^20 is more than a second's worth many times over.
const HEADROOM: u64 = 1 << 20;

/// The counters of `mark` this rxgate keeps; any other was written by a newer one, and is
/// left out of the comparison rather than read as lost.
fn known(mark: Mark) -> Mark {
    let (known, unknown): (BTreeMap<_, _>, BTreeMap<_, _>) =
        mark.0.into_iter().partition(|(counter, _)| {
            counter.starts_with(AUDIT_PREFIX)
                || counter
                    .strip_prefix(SEQUENCE_PREFIX)
                    .is_some_and(|name| SEQUENCES.contains(&name))
        });
    if !unknown.is_empty() {
        let names: Vec<&String> = unknown.keys().collect();
        tracing::warn!(
            ?names,
            "the acknowledged mark names counters this rxgate does not keep"
        );
    }
    Mark(known)
}

/// How far the store in `tx` has come.
fn reached_in(tx: &dyn Txn) -> Result<Mark, store::Error> {
    let mut counters = BTreeMap::new();
    for name in SEQUENCES {
        let value = tx.sequence(name)?;
        if value > 0 {
            counters.insert(format!("{SEQUENCE_PREFIX}{name}"), value);
        }
    }
    for head in audit_chain::heads(tx)? {
        counters.insert(
            format!("{AUDIT_PREFIX}{}", hex(&head.writer)),
            head.sequence,
        );
    }
    Ok(Mark(counters))
}

/// How far `store` has come, as durable (a transaction's answer waits for that).
async fn reached(store: &Arc<dyn Store>) -> Result<Mark, store::Error> {
    store.transact(|tx| reached_in(tx)).await?
}

/// Why a store behind its mark may not serve.
#[derive(Debug, thiserror::Error)]
#[error(
    "the store in {dir} is behind what was acknowledged ({shortfalls}): its files were lost or \
     damaged (the mark: {mark}); restore a backup, or start with --accept-data-loss to go on \
     (audited)",
    dir = .dir.display(),
    mark = mark::path(.dir).display(),
    shortfalls = list(.shortfalls),
)]
pub struct Behind {
    pub dir: PathBuf,
    pub shortfalls: Vec<Shortfall>,
}

fn list(shortfalls: &[Shortfall]) -> String {
    let all: Vec<String> = shortfalls.iter().map(ToString::to_string).collect();
    all.join("; ")
}

/// The counters of the store in `dir` that are behind its mark (none for a store without a
/// mark: a new one, or the first start of a version that keeps marks). Writes nothing.
pub async fn compare(store: &Arc<dyn Store>, dir: PathBuf) -> anyhow::Result<Behind> {
    let load = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || mark::load(&dir))
    };
    let acknowledged = load.await??;
    let found = reached(store).await?;
    let shortfalls = acknowledged.map_or_else(Vec::new, |mark| known(mark).shortfalls(&found));
    Ok(Behind { dir, shortfalls })
}

/// Saves how far `store` has come as the mark of `dir`, unless it is `last`; returns it.
pub async fn save(
    store: &Arc<dyn Store>,
    dir: PathBuf,
    last: Option<Mark>,
) -> Result<Mark, store::Error> {
    let now = reached(store).await?;
    if last.as_ref() == Some(&now) {
        return Ok(now);
    }
    tokio::task::spawn_blocking(move || mark::save(&dir, &now).map(|()| now))
        .await
        .map_err(|e| store::Error::Io(format!("saving the acknowledged mark: {e}")))?
}

/// A mark that cannot be saved (a full or failing disk) is logged once a minute, with how many
/// failures were left out, not once a second.
static UNSAVED: LogThrottle = LogThrottle::new(Duration::from_secs(60));

/// Keeps the mark of `dir` up to date every `every`, for as long as the task runs. A failed
/// save leaves the old mark (behind the store, so still true) and is tried again.
pub async fn keep(store: Arc<dyn Store>, dir: PathBuf, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = None;
    loop {
        tick.tick().await;
        match save(&store, dir.clone(), last.clone()).await {
            Ok(saved) => last = Some(saved),
            Err(e) => {
                if let Some(left_out) = UNSAVED.allow() {
                    tracing::error!(error = %e, left_out, "the acknowledged mark was not saved");
                }
            }
        }
    }
}

impl Gateway {
    /// Goes on past what a damaged store lost, as the operator asked (`--accept-data-loss`):
    /// every counter moves [`HEADROOM`] past the mark or what was recovered, whichever is
    /// higher, so that no number given before the loss is given again, not even one given in
    /// the last second before it, which the mark may not hold (the event feed jumps there: a
    /// consumer resuming anywhere before the jump misses nothing new); and the audit trail
    /// records it, with what was behind, in the same transaction. Audit chains are not moved: a
    /// chain's links stay contiguous, and this record says where it lost its tail.
    /// `by` says who started it, as the host knows them (user and host).
    pub async fn accept_data_loss(&self, behind: Behind, by: &str) -> Result<(), Error> {
        let operator = Caller {
            institution: Institution {
                kind: InstitutionKind::Operator,
                code: InstitutionCode::from_number(0).expect("0 has 10 digits"),
            },
            certificate_sha256: [0; 32],
            receipt: AuditReceipt::default(),
        };
        let mut draft = self.draft(&operator, Action::AcceptDataLoss, self.clock.now());
        draft.target = Some(format!("{} (started by {by})", list(&behind.shortfalls)));
        self.run(draft, move |tx, _| {
            for name in SEQUENCES {
                let counter = format!("{SEQUENCE_PREFIX}{name}");
                let acknowledged = (behind.shortfalls.iter())
                    .find(|s| s.counter == counter)
                    .map_or(0, |s| s.acknowledged);
                let floor = tx.sequence(name)?.max(acknowledged) + HEADROOM;
                store::raise_sequence(tx, name, floor)?;
            }
            Ok(())
        })
        .await
    }
}
