//! Which file of a fjall store is damaged, found by reading the files when fjall refuses to
//! open the store: fjall's own errors name none ("Unrecoverable", "File exists",
//! "UnexpectedEof"). The files are checked in the order fjall reads them: the format marker
//! `version`, each keyspace's `current` and the manifest (`vN`) it names, then every table and
//! blob file's trailer and table of contents (sfa archives, checksummed). The journal (`*.jnl`)
//! has no such check: fjall recovers a torn tail by itself, and what that lost the
//! acknowledged mark finds. Names no fjall type; reads only.

use std::fs;
use std::path::{Path, PathBuf};

/// The format marker fjall 3 writes in `version`: its magic bytes and the format number.
const VERSION_MARKER: &[u8] = b"FJL\x03";

/// A damaged file: which, the part of the store it is, and what is wrong with it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Damaged {
    pub(super) file: PathBuf,
    pub(super) part: &'static str,
    pub(super) why: String,
}

/// The first damaged file of the fjall store in `dir`, if its files show one.
pub(super) fn find(dir: &Path) -> Option<Damaged> {
    version(dir).or_else(|| keyspaces(dir).into_iter().find_map(|k| keyspace(&k)))
}

fn damaged(file: PathBuf, part: &'static str, why: impl Into<String>) -> Option<Damaged> {
    Some(Damaged {
        file,
        part,
        why: why.into(),
    })
}

fn version(dir: &Path) -> Option<Damaged> {
    let file = dir.join("version");
    match fs::read(&file) {
        Ok(bytes) if bytes == VERSION_MARKER => None,
        Ok(_) => damaged(file, "format marker", "does not hold fjall 3's marker"),
        Err(e) => damaged(file, "format marker", e.to_string()),
    }
}

/// The keyspaces' folders, in name order.
fn keyspaces(dir: &Path) -> Vec<PathBuf> {
    let mut found = files_in(&dir.join("keyspaces"));
    found.retain(|p| p.is_dir());
    found
}

/// The entries of `dir`, in name order (none if it cannot be read).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    found.sort();
    found
}

/// A keyspace's `current`, the manifest it names, and its tables and blob files.
fn keyspace(dir: &Path) -> Option<Damaged> {
    let current = dir.join("current");
    let id = match fs::read(&current) {
        Ok(bytes) if bytes.len() >= 8 => u64::from_le_bytes(bytes[..8].try_into().ok()?),
        Ok(bytes) => {
            return damaged(
                current,
                "manifest pointer",
                format!("{} bytes", bytes.len()),
            );
        }
        Err(e) => return damaged(current, "manifest pointer", e.to_string()),
    };
    archive(dir.join(format!("v{id}")), "manifest").or_else(|| {
        let tables = files_in(&dir.join("tables"))
            .into_iter()
            .map(|f| (f, "table"));
        let blobs = files_in(&dir.join("blobs"))
            .into_iter()
            .map(|f| (f, "blob file"));
        tables
            .chain(blobs)
            .find_map(|(file, part)| archive(file, part))
    })
}

/// An sfa archive (a manifest, a table, a blob file): its trailer and checksummed table of
/// contents read.
fn archive(file: PathBuf, part: &'static str) -> Option<Damaged> {
    match sfa::Reader::new(&file) {
        Ok(_) => None,
        Err(e) => damaged(file, part, format!("{e:?}")),
    }
}
