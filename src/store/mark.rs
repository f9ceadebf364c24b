//! The acknowledged mark: a small file beside the engine's own (`acknowledged` in the data
//! folder) that says how far the store had come when it last answered, as named counters,
//! so that a start can tell a store whose files lost acknowledged writes from a whole one. What
//! the counters are is the service's business; this file only keeps them durably and compares.
//! It must not depend on the domain, the protocol types or an engine.
//!
//! - **Outside the engine.** Damage to the engine's files (a cut journal, a deleted folder, a
//!   shortened log) cannot take the mark with it, unless the whole folder goes.
//! - **Atomic and checked.** The mark is written to a temporary file, synced, renamed over the
//!   old one and the folder synced, so a crash leaves the old mark or the new one; its last
//!   line is the SHA-256 of the lines before it, so a damaged mark is refused, never believed.
//! - **Never ahead of the store.** The counters written are read in a transaction, whose
//!   answer comes only once what it read is durable: an undamaged store is never behind them.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use ring::digest::{SHA256, digest};

use super::Error;

/// The mark's file name in the data folder.
pub const FILE: &str = "acknowledged";

/// The first line of a mark, with the version of its format.
const HEADER: &str = "rxgate acknowledged 1";

/// Named counters, each as far as the store had come.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mark(pub BTreeMap<String, u64>);

/// A counter the store holds less of than the mark says was acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    pub counter: String,
    /// What the store holds (0: nothing).
    pub found: u64,
    pub acknowledged: u64,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: the store holds {} but {} were acknowledged",
            self.counter, self.found, self.acknowledged
        )
    }
}

impl Mark {
    /// The counters of this mark that `found` (the store as opened) is behind, in name order.
    pub fn shortfalls(&self, found: &Mark) -> Vec<Shortfall> {
        (self.0.iter())
            .filter_map(|(counter, &acknowledged)| {
                let found = found.0.get(counter).copied().unwrap_or(0);
                (found < acknowledged).then(|| Shortfall {
                    counter: counter.clone(),
                    found,
                    acknowledged,
                })
            })
            .collect()
    }

    /// The mark as its file holds it.
    fn encode(&self) -> String {
        let mut text = format!("{HEADER}\n");
        for (counter, value) in &self.0 {
            text.push_str(&format!("{counter} {value}\n"));
        }
        let sum = checksum(&text);
        text.push_str(&format!("sha256 {sum}\n"));
        text
    }

    /// Parses a mark's file; `None` for anything it did not write.
    fn decode(text: &str) -> Option<Mark> {
        let body_end = text.trim_end_matches('\n').rfind('\n')? + 1;
        let (body, sum) = text.split_at(body_end);
        if sum.trim_end() != format!("sha256 {}", checksum(body)) {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let counters = lines.map(|line| {
            let (counter, value) = line.split_once(' ')?;
            Some((counter.to_owned(), value.parse().ok()?))
        });
        counters.collect::<Option<_>>().map(Mark)
    }
}

fn checksum(text: &str) -> String {
    super::hex(digest(&SHA256, text.as_bytes()).as_ref())
}

/// Where the mark of the store in `dir` is kept.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The mark of the store in `dir`; `None` if it has none (a new store, or one written before
/// marks were kept). A mark that does not read back as written is an error naming the file.
pub fn load(dir: &Path) -> Result<Option<Mark>, Error> {
    let file = path(dir);
    let text = match fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::Io(format!("{}: {e}", file.display()))),
    };
    match Mark::decode(&text) {
        Some(mark) => Ok(Some(mark)),
        None => Err(Error::Corrupt(format!(
            "{} is damaged (its checksum or form is wrong)",
            file.display()
        ))),
    }
}

/// One save at a time: the periodic save and the last one at close share the temporary file.
static SAVING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Replaces the mark of the store in `dir` with `mark`, durably: a crash leaves the old mark
/// or this one. Blocking IO: call it off the async runtime.
pub fn save(dir: &Path, mark: &Mark) -> Result<(), Error> {
    let _one_at_a_time = SAVING.lock().unwrap_or_else(|e| e.into_inner());
    let file = path(dir);
    let temporary = dir.join(format!("{FILE}.tmp"));
    let io = |what: &Path, e: std::io::Error| Error::Io(format!("{}: {e}", what.display()));
    let mut out = File::create(&temporary).map_err(|e| io(&temporary, e))?;
    out.write_all(mark.encode().as_bytes())
        .and_then(|()| out.sync_all())
        .map_err(|e| io(&temporary, e))?;
    fs::rename(&temporary, &file).map_err(|e| io(&file, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(counters: &[(&str, u64)]) -> Mark {
        Mark(counters.iter().map(|&(c, v)| (c.to_owned(), v)).collect())
    }

    #[test]
    fn a_mark_reads_back_as_written_and_a_changed_byte_is_refused() {
        let written = mark(&[("sequence/event", 45_000), ("audit/ab", 7)]);
        let text = written.encode();
        assert_eq!(Mark::decode(&text), Some(written));
        let changed = text.replacen("45000", "44000", 1);
        assert_eq!(Mark::decode(&changed), None);
        assert_eq!(Mark::decode(&text[..text.len() - 2]), None);
        assert_eq!(Mark::decode(""), None);
        assert_eq!(
            Mark::decode(&Mark::default().encode()),
            Some(Mark::default())
        );
    }

    #[test]
    fn shortfalls_name_each_counter_behind_and_only_those() {
        let acknowledged = mark(&[("a", 10), ("b", 5), ("c", 3)]);
        let found = mark(&[("a", 10), ("b", 4), ("d", 1)]);
        assert_eq!(
            acknowledged.shortfalls(&found),
            [
                Shortfall {
                    counter: "b".into(),
                    found: 4,
                    acknowledged: 5
                },
                Shortfall {
                    counter: "c".into(),
                    found: 0,
                    acknowledged: 3
                },
            ]
        );
        assert!(
            found
                .shortfalls(&mark(&[("a", 11), ("b", 4), ("d", 1)]))
                .is_empty()
        );
    }
}
