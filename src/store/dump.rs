//! The dump: every entry of every [`Table`] in one engine-independent file, written and read as
//! a stream in bounded memory, checked as it is read. What `rxgate store export` and `store
//! backup` write and `store import` and `store restore` read. Nothing of the service, the
//! protocol or an engine: tables by name, keys and values as opaque bytes.
//!
//! # Format (version 1; all integers big-endian)
//!
//! ```text
//! header    "RXGDUMP\n" version:u32
//! section   per table, in [`Table::ALL`] order, every table (an empty one too):
//!           'T' name_len:u8 name
//!           'E' key_len:u32 key value_len:u32 value      (per entry, in key order)
//!           'S' entries:u64 sha256:[32]                  (the section's own trailer)
//! manifest  'M' tables:u16 (name_len:u8 name entries:u64 sha256:[32])*  sha256:[32]
//! ```
//!
//! A table's SHA-256 is over its entries as written (`key_len key value_len value`, in order);
//! the manifest's closing SHA-256 is over everything of the manifest before it. The reader
//! checks each section's trailer when it reaches it, so a damaged table is named as soon as it
//! has been read, and the manifest against the sections at the end; nothing may follow it.
//! Within a section each key must be above the one before (a repeat, loaded, would overwrite
//! an entry the manifest counts).
//! A larger version number is a dump this build cannot read and is refused.

use std::io::{self, Read, Write};

use ring::digest::{Context, SHA256};

use super::{Snapshot, Table};

const MAGIC: &[u8; 8] = b"RXGDUMP\n";
/// The format this build writes, and the newest it reads.
pub const VERSION: u32 = 1;
/// The longest key or value a reader takes: more is damage, not data, and is not allocated.
const MAX_LEN: u32 = 256 << 20;

const TABLE: u8 = b'T';
const ENTRY: u8 = b'E';
const SECTION_END: u8 = b'S';
const MANIFEST: u8 = b'M';

/// The name of `table` in a dump: part of the format, never rename.
pub fn name(table: Table) -> &'static str {
    match table {
        Table::Prescriptions => "prescriptions",
        Table::ByExchange => "by_exchange",
        Table::ByPatient => "by_patient",
        Table::ByNumber => "by_number",
        Table::Documents => "documents",
        Table::Dispensings => "dispensings",
        Table::Audit => "audit",
        Table::Meta => "meta",
        Table::Medications => "medications",
        Table::Clinical => "clinical",
        Table::Events => "events",
        Table::EventsByInstitution => "events_by_institution",
        Table::Intake => "intake",
        Table::Certificates => "certificates",
        Table::Lockouts => "lockouts",
        Table::AuditChain => "audit_chain",
    }
}

/// Why a dump cannot be read (or written).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading or writing the dump failed: {0}")]
    Io(#[from] io::Error),
    #[error("not an rxgate dump (its first bytes are not the dump header)")]
    NotADump,
    #[error("the dump is of format version {0}; this rxgate reads version {VERSION} and older")]
    Newer(u32),
    #[error("the dump ends early, in {0}: the file is truncated")]
    Truncated(String),
    #[error("table {table}: {what}")]
    Mismatch { table: &'static str, what: String },
    #[error("the dump is malformed at {at}: {what}")]
    Malformed { at: String, what: String },
    #[error("reading the store failed: {0}")]
    Store(#[from] super::Error),
}

/// Writes every table of `snapshot` to `out` as a dump; the output and the manifest.
pub fn write<W: Write>(snapshot: &dyn Snapshot, out: W) -> Result<(W, Manifest), Error> {
    let mut writer = Writer::new(out)?;
    for table in Table::ALL {
        writer.table(table)?;
        for entry in snapshot.entries(table) {
            let (key, value) = entry?;
            writer.entry(&key, &value)?;
        }
    }
    Ok(writer.finish()?)
}

/// One entry of a dump: its table, key and value.
pub type TableEntry = (Table, Vec<u8>, Vec<u8>);

/// One table's count and hash, as a section trailer and the manifest state them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableSummary {
    pub table: Table,
    pub entries: u64,
    pub sha256: [u8; 32],
}

/// What the dump holds: every table's summary, in [`Table::ALL`] order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub tables: Vec<TableSummary>,
}

/// The running count and hash of one table's entries.
struct Tally {
    table: Table,
    entries: u64,
    hash: Context,
}

impl Tally {
    fn new(table: Table) -> Tally {
        Tally {
            table,
            entries: 0,
            hash: Context::new(&SHA256),
        }
    }

    /// Counts an entry, given as its encoded bytes.
    fn add(&mut self, encoded: &[&[u8]]) {
        self.entries += 1;
        for part in encoded {
            self.hash.update(part);
        }
    }

    fn finish(self) -> TableSummary {
        TableSummary {
            table: self.table,
            entries: self.entries,
            sha256: self.hash.finish().as_ref().try_into().expect("32 bytes"),
        }
    }
}

/// Writes a dump: [`Writer::table`] for every table in [`Table::ALL`] order (a table left out
/// is written empty), [`Writer::entry`] for each of its entries in key order, then
/// [`Writer::finish`].
pub struct Writer<W: Write> {
    out: W,
    /// The table being written, and how many of [`Table::ALL`] were begun.
    current: Option<Tally>,
    begun: usize,
    done: Vec<TableSummary>,
}

impl<W: Write> Writer<W> {
    /// Writes the header to `out`.
    pub fn new(mut out: W) -> io::Result<Writer<W>> {
        out.write_all(MAGIC)?;
        out.write_all(&VERSION.to_be_bytes())?;
        Ok(Writer {
            out,
            current: None,
            begun: 0,
            done: Vec::new(),
        })
    }

    /// Begins the section of `table`, after closing the one before and writing empty the
    /// tables between. Tables must come in [`Table::ALL`] order.
    pub fn table(&mut self, table: Table) -> io::Result<()> {
        let Some(at) = Table::ALL[self.begun..].iter().position(|t| *t == table) else {
            return Err(io::Error::other(format!(
                "table {} written out of order",
                name(table)
            )));
        };
        self.end_section()?;
        for skipped in Table::ALL[self.begun..self.begun + at].to_vec() {
            self.begin(skipped)?;
            self.end_section()?;
        }
        self.begin(table)
    }

    fn begin(&mut self, table: Table) -> io::Result<()> {
        let name = name(table).as_bytes();
        self.out.write_all(&[TABLE, name.len() as u8])?;
        self.out.write_all(name)?;
        self.current = Some(Tally::new(table));
        self.begun += 1;
        Ok(())
    }

    fn end_section(&mut self) -> io::Result<()> {
        let Some(tally) = self.current.take() else {
            return Ok(());
        };
        let summary = tally.finish();
        self.out.write_all(&[SECTION_END])?;
        self.out.write_all(&summary.entries.to_be_bytes())?;
        self.out.write_all(&summary.sha256)?;
        self.done.push(summary);
        Ok(())
    }

    /// Writes one entry of the current table.
    pub fn entry(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let tally = self
            .current
            .as_mut()
            .ok_or_else(|| io::Error::other("an entry written before its table"))?;
        let key_len = length(key)?;
        let value_len = length(value)?;
        let encoded = [&key_len[..], key, &value_len[..], value];
        tally.add(&encoded);
        self.out.write_all(&[ENTRY])?;
        for part in encoded {
            self.out.write_all(part)?;
        }
        Ok(())
    }

    /// Closes the last table, writes the tables not yet written (empty) and the manifest, and
    /// flushes; returns the output and the manifest.
    pub fn finish(mut self) -> io::Result<(W, Manifest)> {
        if self.begun < Table::ALL.len() {
            self.table(Table::ALL[Table::ALL.len() - 1])?;
        }
        self.end_section()?;
        let manifest = Manifest { tables: self.done };
        self.out.write_all(&encode_manifest(&manifest))?;
        self.out.flush()?;
        Ok((self.out, manifest))
    }
}

fn length(bytes: &[u8]) -> io::Result<[u8; 4]> {
    u32::try_from(bytes.len())
        .ok()
        .filter(|len| *len <= MAX_LEN)
        .map(u32::to_be_bytes)
        .ok_or_else(|| io::Error::other(format!("a key or value of {} bytes", bytes.len())))
}

/// The manifest as written, with its closing checksum.
fn encode_manifest(manifest: &Manifest) -> Vec<u8> {
    let mut out = vec![MANIFEST];
    out.extend_from_slice(&(manifest.tables.len() as u16).to_be_bytes());
    for summary in &manifest.tables {
        let name = name(summary.table).as_bytes();
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&summary.entries.to_be_bytes());
        out.extend_from_slice(&summary.sha256);
    }
    let sum = ring::digest::digest(&SHA256, &out);
    out.extend_from_slice(sum.as_ref());
    out
}

/// Reads a dump: an iterator of `(table, key, value)` in the order written, each table's
/// count and hash checked when its section ends; once it has returned `None`,
/// [`Reader::manifest`] is the checked manifest. The first error ends the iteration.
pub struct Reader<R: Read> {
    input: R,
    current: Option<Tally>,
    /// The sections read so far.
    done: Vec<TableSummary>,
    /// The current section's last key: each must be above it, as the writer's key order has it.
    last_key: Option<Vec<u8>>,
    manifest: Option<Manifest>,
    failed: bool,
}

impl<R: Read> Reader<R> {
    /// Reads and checks the header.
    pub fn new(mut input: R) -> Result<Reader<R>, Error> {
        let mut header = [0; 12];
        read_exact(&mut input, &mut header, || "the header".into())?;
        if &header[..8] != MAGIC {
            return Err(Error::NotADump);
        }
        let version = u32::from_be_bytes(header[8..].try_into().expect("4 bytes"));
        match version {
            0 => return Err(Error::NotADump),
            newer if newer > VERSION => return Err(Error::Newer(newer)),
            _ => {}
        }
        Ok(Reader {
            input,
            current: None,
            done: Vec::new(),
            last_key: None,
            manifest: None,
            failed: false,
        })
    }

    /// The manifest, once every entry has been read and checked.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Where the reader is, for an error message.
    fn at(&self) -> String {
        match &self.current {
            Some(tally) => format!("table {}", name(tally.table)),
            None => match self.done.last() {
                Some(last) => format!("after table {}", name(last.table)),
                None => "the first table".into(),
            },
        }
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut buf = [0; N];
        let at = self.at();
        read_exact(&mut self.input, &mut buf, || at)?;
        Ok(buf)
    }

    fn malformed(&self, what: impl Into<String>) -> Error {
        Error::Malformed {
            at: self.at(),
            what: what.into(),
        }
    }

    /// The next entry, or `None` once the manifest has been read and checked.
    fn step(&mut self) -> Result<Option<TableEntry>, Error> {
        loop {
            let [kind] = self.bytes::<1>()?;
            match (kind, self.current.is_some()) {
                (ENTRY, true) => return self.entry().map(Some),
                (SECTION_END, true) => self.end_section()?,
                (TABLE, false) => self.begin()?,
                (MANIFEST, false) => {
                    self.read_manifest()?;
                    return Ok(None);
                }
                (other, _) => return Err(self.malformed(format!("unexpected record {other:#04x}"))),
            }
        }
    }

    fn table_name(&mut self) -> Result<Table, Error> {
        let [len] = self.bytes::<1>()?;
        let mut text = vec![0; usize::from(len)];
        let at = self.at();
        read_exact(&mut self.input, &mut text, || at)?;
        Table::ALL
            .into_iter()
            .find(|t| name(*t).as_bytes() == text.as_slice())
            .ok_or_else(|| {
                self.malformed(format!(
                    "unknown table {:?}",
                    String::from_utf8_lossy(&text)
                ))
            })
    }

    fn begin(&mut self) -> Result<(), Error> {
        let table = self.table_name()?;
        let expected = Table::ALL.get(self.done.len()).copied();
        if expected != Some(table) {
            return Err(self.malformed(format!("table {} out of order", name(table))));
        }
        self.current = Some(Tally::new(table));
        self.last_key = None;
        Ok(())
    }

    fn entry(&mut self) -> Result<TableEntry, Error> {
        let key_len = self.bytes::<4>()?;
        let key = self.sized(key_len)?;
        if self.last_key.as_ref().is_some_and(|last| *last >= key) {
            return Err(self.malformed("a key out of key order (or repeated)"));
        }
        self.last_key = Some(key.clone());
        let value_len = self.bytes::<4>()?;
        let value = self.sized(value_len)?;
        let tally = self.current.as_mut().expect("inside a section");
        tally.add(&[&key_len, &key, &value_len, &value]);
        Ok((tally.table, key, value))
    }

    fn sized(&mut self, len: [u8; 4]) -> Result<Vec<u8>, Error> {
        let len = u32::from_be_bytes(len);
        if len > MAX_LEN {
            return Err(self.malformed(format!("a length of {len} bytes")));
        }
        let mut buf = vec![0; len as usize];
        let at = self.at();
        read_exact(&mut self.input, &mut buf, || at)?;
        Ok(buf)
    }

    fn end_section(&mut self) -> Result<(), Error> {
        let entries = u64::from_be_bytes(self.bytes::<8>()?);
        let sha256 = self.bytes::<32>()?;
        let found = self.current.take().expect("inside a section").finish();
        let table = name(found.table);
        if found.entries != entries {
            return Err(Error::Mismatch {
                table,
                what: format!("{} entries read, its trailer says {entries}", found.entries),
            });
        }
        if found.sha256 != sha256 {
            return Err(Error::Mismatch {
                table,
                what: "its entries do not hash to its trailer's SHA-256".into(),
            });
        }
        self.done.push(found);
        Ok(())
    }

    fn read_manifest(&mut self) -> Result<(), Error> {
        let count = u16::from_be_bytes(self.bytes::<2>()?);
        let mut tables = Vec::new();
        for _ in 0..count {
            let table = self.table_name()?;
            let entries = u64::from_be_bytes(self.bytes::<8>()?);
            let sha256 = self.bytes::<32>()?;
            tables.push(TableSummary {
                table,
                entries,
                sha256,
            });
        }
        let manifest = Manifest { tables };
        let checksum = self.bytes::<32>()?;
        let encoded = encode_manifest(&manifest);
        if encoded[encoded.len() - 32..] != checksum {
            return Err(self.malformed("the manifest's checksum is wrong"));
        }
        self.check_manifest(&manifest)?;
        let mut rest = [0; 1];
        if self.input.read(&mut rest)? != 0 {
            return Err(self.malformed("bytes follow the manifest"));
        }
        self.manifest = Some(manifest);
        Ok(())
    }

    /// Every table is in the dump, and the manifest says of each what its section said.
    fn check_manifest(&self, manifest: &Manifest) -> Result<(), Error> {
        for (n, table) in Table::ALL.into_iter().enumerate() {
            let (Some(read), Some(stated)) = (self.done.get(n), manifest.tables.get(n)) else {
                return Err(Error::Mismatch {
                    table: name(table),
                    what: "missing from the dump".into(),
                });
            };
            let what = if read.table != stated.table {
                format!("the manifest names {} in its place", name(stated.table))
            } else if read.entries != stated.entries {
                let (said, found) = (stated.entries, read.entries);
                format!("the manifest says {said} entries, {found} were read")
            } else if read.sha256 != stated.sha256 {
                "its entries do not hash to the manifest's SHA-256".into()
            } else {
                continue;
            };
            return Err(Error::Mismatch {
                table: name(table),
                what,
            });
        }
        if manifest.tables.len() != Table::ALL.len() {
            return Err(self.malformed("the manifest names more tables than the dump holds"));
        }
        Ok(())
    }
}

impl<R: Read> Iterator for Reader<R> {
    type Item = Result<TableEntry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.manifest.is_some() {
            return None;
        }
        let step = self.step();
        self.failed = step.is_err();
        step.transpose()
    }
}

/// `read_exact`, with an early end reported as truncation at `at`.
fn read_exact(
    input: &mut impl Read,
    buf: &mut [u8],
    at: impl FnOnce() -> String,
) -> Result<(), Error> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => Error::Truncated(at()),
        _ => Error::Io(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut writer = Writer::new(Vec::new()).unwrap();
        writer.table(Table::ByExchange).unwrap();
        writer.entry(b"k1", b"v1").unwrap();
        writer.entry(b"k2", b"").unwrap();
        writer.table(Table::Meta).unwrap();
        writer
            .entry(b"sequence/event", &7u64.to_be_bytes())
            .unwrap();
        writer.finish().unwrap().0
    }

    fn read_all(bytes: &[u8]) -> Result<(Vec<TableEntry>, Manifest), Error> {
        let mut reader = Reader::new(bytes)?;
        let entries = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
        Ok((entries, reader.manifest().cloned().expect("a manifest")))
    }

    #[test]
    fn entries_come_back_as_written_with_every_table_in_the_manifest() {
        let (entries, manifest) = read_all(&sample()).unwrap();
        assert_eq!(
            entries,
            [
                (Table::ByExchange, b"k1".to_vec(), b"v1".to_vec()),
                (Table::ByExchange, b"k2".to_vec(), Vec::new()),
                (
                    Table::Meta,
                    b"sequence/event".to_vec(),
                    7u64.to_be_bytes().to_vec()
                ),
            ]
        );
        let counts: Vec<u64> = manifest.tables.iter().map(|s| s.entries).collect();
        let mut expected = vec![0; Table::ALL.len()];
        expected[1] = 2;
        expected[7] = 1;
        assert_eq!(counts, expected);
    }

    /// The bytes of version 1, as written on 2026-12-06: a dump written today must still be
    /// these, and read back as written. A change to the format that breaks this must raise
    /// [`VERSION`] and keep a reader of version 1 (with every table a newer version adds read
    /// as empty), for the backups already taken.
    #[test]
    fn version_1_is_pinned_to_the_bytes_of_a_committed_dump() {
        let pinned = include_bytes!("../../tests/data/dump/v1-sample.dump");
        assert_eq!(sample(), pinned, "the format of version 1 changed");
        let (entries, _) = read_all(pinned).unwrap();
        assert_eq!(entries.len(), 3);
    }

    #[test]
    fn every_truncation_is_refused() {
        let whole = sample();
        for len in 0..whole.len() {
            let error = read_all(&whole[..len]).unwrap_err();
            assert!(
                matches!(error, Error::Truncated(_)),
                "cut at {len}: {error}"
            );
        }
    }

    #[test]
    fn a_changed_byte_is_refused_naming_the_table() {
        let mut bytes = sample();
        let at = bytes.windows(2).position(|w| w == b"v1").unwrap();
        bytes[at] = b'w';
        let error = read_all(&bytes).unwrap_err().to_string();
        assert!(error.contains("table by_exchange"), "{error}");
    }

    #[test]
    fn a_newer_version_and_trailing_bytes_are_refused() {
        let mut newer = sample();
        newer[11] = 2;
        assert!(matches!(read_all(&newer), Err(Error::Newer(2))));
        let mut longer = sample();
        longer.push(0);
        let error = read_all(&longer).unwrap_err().to_string();
        assert!(error.contains("bytes follow the manifest"), "{error}");
    }

    /// Version 0 was never written: a header that says it is not a dump this reader knows.
    #[test]
    fn version_zero_is_refused() {
        let mut zero = sample();
        zero[11] = 0;
        let error = read_all(&zero).unwrap_err();
        assert!(matches!(error, Error::NotADump), "{error}");
    }

    #[test]
    fn a_manifest_that_disagrees_with_a_section_is_refused_naming_the_table() {
        let bytes = sample();
        let (_, mut manifest) = read_all(&bytes).unwrap();
        let tail = encode_manifest(&manifest).len();
        manifest.tables[7].entries = 2;
        let mut changed = bytes[..bytes.len() - tail].to_vec();
        changed.extend(encode_manifest(&manifest));
        let error = read_all(&changed).unwrap_err().to_string();
        assert_eq!(
            error,
            "table meta: the manifest says 2 entries, 1 were read"
        );
    }

    /// A table whose keys do not rise (a repeated key, or one out of order) is not an export:
    /// loaded, a repeat would overwrite the entry before it and the store would hold fewer
    /// entries than the manifest counts.
    #[test]
    fn keys_that_do_not_rise_are_refused() {
        for keys in [[b"k1", b"k1"], [b"k2", b"k1"]] {
            let mut writer = Writer::new(Vec::new()).unwrap();
            writer.table(Table::ByExchange).unwrap();
            for key in keys {
                writer.entry(key, b"v").unwrap();
            }
            let bytes = writer.finish().unwrap().0;
            let error = read_all(&bytes).unwrap_err().to_string();
            assert!(error.contains("table by_exchange"), "{keys:?}: {error}");
            assert!(error.contains("key order"), "{keys:?}: {error}");
        }
    }

    #[test]
    fn a_changed_manifest_is_refused() {
        let mut bytes = sample();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let error = read_all(&bytes).unwrap_err().to_string();
        assert!(error.contains("checksum"), "{error}");
    }
}
