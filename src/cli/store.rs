//! `rxgate store export`, `import`, `restore` and `backup`: a store's every table as one dump
//! file (`store::dump`). Export reads a stopped store's folder (or a database's snapshot,
//! `store_postgres.rs`); backup asks a running gateway (as an operator) for the dump of a
//! snapshot; import and restore load a dump or a backup into an empty folder (or database),
//! through the store's transactions and `service::put_record`, and save its acknowledged mark.
//! A dump holds patient data: files are created 0600 and appear under their name only once
//! complete.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, IsTerminal, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, bail};
use tokio::sync::mpsc;

use super::master_import::{draw_progress, progress_bar};
use super::store_postgres::{export_database, import_database};
use crate::{
    config::{Config, StoreEngine},
    service::{Pseudonyms, acknowledged, put_record, refuse_clear_patient_key, verify::Highest},
    store::{
        EmbeddedStore, EngineKind, Error as StoreError, Snapshot, Store,
        dump::{self, Manifest, Reader, TableEntry},
        unfinished,
    },
    tls::ClientFiles,
    wire::proto::v1::{self as pb, admin_service_client::AdminServiceClient},
};

/// The most entries, and about the most bytes of keys and values, one import transaction
/// writes: what an import holds in memory, besides the batch being read.
const BATCH_ENTRIES: usize = 1_000;
const BATCH_BYTES: usize = 4 << 20;

/// Batches (import) or chunks (backup) on their way between the reading and the writing side.
const IN_FLIGHT: usize = 4;

/// How much of a dump file is written before it is made durable, so far: the dirty pages a dump
/// leaves for the kernel to write back at once stay this small, so that the store's own fsyncs,
/// on the same disk during a backup, do not wait behind hundreds of MiB of them (BENCHMARKS.md).
const SYNC_EVERY: u64 = 8 << 20;

/// A file being written under a temporary name beside its destination, created 0600, put in
/// place by [`Partial::commit`] once complete and durable, removed if dropped before.
pub(super) struct Partial {
    temp: PathBuf,
    dest: PathBuf,
    file: Option<BufWriter<Paced>>,
}

/// A file made durable every [`SYNC_EVERY`] bytes written.
struct Paced {
    file: File,
    unsynced: u64,
}

impl Write for Paced {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let written = self.file.write(bytes)?;
        self.unsynced += written as u64;
        if self.unsynced >= SYNC_EVERY {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Partial {
    /// Refuses a destination that exists: a dump is never written over anything.
    pub(super) fn create(dest: &Path) -> anyhow::Result<Partial> {
        if dest.exists() {
            return Err(exists(dest));
        }
        let mut temp = dest.as_os_str().to_owned();
        temp.push(".partial");
        let temp = PathBuf::from(temp);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .with_context(|| format!("creating {}", temp.display()))?;
        Ok(Partial {
            temp,
            dest: dest.to_owned(),
            file: Some(BufWriter::with_capacity(
                1 << 20,
                Paced { file, unsynced: 0 },
            )),
        })
    }

    fn writer(&mut self) -> &mut BufWriter<Paced> {
        self.file.as_mut().expect("written before it is committed")
    }

    /// Syncs the file, links it into place (a link, unlike a rename, refuses a destination that
    /// appeared while the dump was written), removes the temporary name and syncs the folder.
    fn commit(mut self) -> anyhow::Result<()> {
        let writer = self.writer();
        writer.flush()?;
        writer.get_ref().file.sync_all()?;
        fs::hard_link(&self.temp, &self.dest).map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => exists(&self.dest),
            _ => anyhow::Error::new(e).context(format!("linking into {}", self.dest.display())),
        })?;
        self.file = None;
        fs::remove_file(&self.temp)?;
        let folder = self.dest.parent().filter(|p| !p.as_os_str().is_empty());
        File::open(folder.unwrap_or(Path::new(".")))?.sync_all()?;
        Ok(())
    }
}

/// The refusal of a destination that exists.
fn exists(dest: &Path) -> anyhow::Error {
    anyhow::anyhow!("{} exists: name a new file", dest.display())
}

impl Drop for Partial {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// The open error of a store, said for an operator.
fn opening(dir: &Path, error: StoreError) -> anyhow::Error {
    match error {
        in_use @ StoreError::InUse(_) => {
            anyhow::anyhow!("{in_use}, or take an online backup with `rxgate store backup`")
        }
        other => anyhow::Error::new(other).context(format!("opening {}", dir.display())),
    }
}

/// Writes the stopped store in `dir` to the new file `dest` as a dump; its manifest. A store
/// behind its acknowledged mark is refused, as `serve` refuses it.
async fn export_stopped(dir: PathBuf, dest: PathBuf) -> anyhow::Result<Manifest> {
    refuse_behind(&dir).await?;
    tokio::task::spawn_blocking(move || {
        let snapshot = EmbeddedStore::read_stopped(&dir).map_err(|e| opening(&dir, e))?;
        let partial = Partial::create(&dest)?;
        write_dump(snapshot.as_ref(), partial)
            .with_context(|| format!("exporting {}", dir.display()))
    })
    .await?
}

/// Writes every table of `snapshot` into `partial` as a dump and puts the file in place; the
/// dump's manifest.
pub(super) fn write_dump(
    snapshot: &dyn Snapshot,
    mut partial: Partial,
) -> anyhow::Result<Manifest> {
    let (_, manifest) = dump::write(snapshot, partial.writer())?;
    partial.commit()?;
    Ok(manifest)
}

/// Refuses the stopped store in `dir` if it is behind its acknowledged mark (it lost what was
/// acknowledged): imported, it would start with a new mark drawn from its own counters, the
/// loss hidden and its numbers given again. `serve --accept-data-loss` is the audited way on.
async fn refuse_behind(dir: &Path) -> anyhow::Result<()> {
    if EngineKind::found_in(dir)?.is_none() {
        return Ok(()); // nothing to open (and a store not to create): the export says so
    }
    let opened = {
        let dir = dir.to_owned();
        tokio::task::spawn_blocking(move || EmbeddedStore::open(&dir))
    };
    let store = Arc::new(opened.await?.map_err(|e| opening(dir, e))?);
    let behind =
        acknowledged::compare(&(Arc::clone(&store) as Arc<dyn Store>), dir.to_owned()).await;
    tokio::task::spawn_blocking(move || store.close()).await??;
    let behind = behind?;
    match behind.shortfalls.is_empty() {
        true => Ok(()),
        false => Err(behind.into()),
    }
}

/// Why `dir` cannot take an import, if it cannot: it must be new or an empty folder.
fn refusal(dir: &Path) -> anyhow::Result<Option<String>> {
    let mut entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let Some(first) = entries.next().transpose()? else {
        return Ok(None);
    };
    Ok(Some(match EngineKind::found_in(dir)? {
        Some(engine) => format!("it holds a {engine} store"),
        None => format!("it holds {:?}", first.file_name()),
    }))
}

/// Where a store command finds its store.
pub enum StoreAt {
    /// An embedded store's folder.
    Folder(PathBuf),
    /// The PostgreSQL database a gateway's configuration names; the acknowledged mark is kept
    /// in its `data_dir`, as the gateway keeps it.
    Database(Box<Config>),
}

impl StoreAt {
    /// The store `--data-dir` names, or else the one the configuration in `config` names.
    pub fn named(data_dir: Option<PathBuf>, config: Option<&Path>) -> anyhow::Result<StoreAt> {
        match (data_dir, config) {
            (Some(dir), _) => Ok(StoreAt::Folder(dir)),
            (None, Some(file)) => {
                let config = Config::from_file(file)?;
                Ok(match config.store_engine {
                    Some(StoreEngine::Postgres) => StoreAt::Database(Box::new(config)),
                    _ => StoreAt::Folder(config.data_dir),
                })
            }
            (None, None) => bail!("name the store's --data-dir or the gateway's --config"),
        }
    }
}

/// Writes the store `at` names to the new file `dest` as a dump; its manifest. A folder's store
/// must be stopped; a database is read in one snapshot while gateways run.
pub async fn export(at: StoreAt, dest: PathBuf) -> anyhow::Result<Manifest> {
    match at {
        StoreAt::Folder(dir) => export_stopped(dir, dest).await,
        StoreAt::Database(config) => export_database(&config, dest).await,
    }
}

/// Loads the dump (an export or a backup) in `src` into the new store `at` names, kept in
/// `engine` (postgres: a database, named by a configuration), and saves its acknowledged mark;
/// the dump's manifest.
pub async fn import(at: StoreAt, engine: StoreEngine, src: PathBuf) -> anyhow::Result<Manifest> {
    match (at, engine.embedded()) {
        (StoreAt::Folder(dir), Some(engine)) => import_folder(dir, engine, src).await,
        (StoreAt::Database(config), None) => import_database(&config, src).await,
        (StoreAt::Folder(_), None) => {
            bail!(
                "--engine postgres loads the database a --config names (store_engine = \"postgres\")"
            )
        }
        (StoreAt::Database(_), Some(_)) => {
            bail!("the configuration names a PostgreSQL store: say --engine postgres")
        }
    }
}

/// Loads the dump in `src` into a new store in `dir`, kept in `engine`. A new `dir` is created
/// 0700 (it will hold patient data, and the engine creates its files with the umask's modes);
/// an existing empty one keeps its mode. If loading fails part-way (a full disk), the folder
/// holds part of the store: remove it and import again.
pub(super) async fn import_folder(
    dir: PathBuf,
    engine: EngineKind,
    src: PathBuf,
) -> anyhow::Result<Manifest> {
    if let Some(why) = refusal(&dir)? {
        bail!(
            "{} is not empty ({why}): import only into a new or empty folder",
            dir.display()
        );
    }
    let loading = Loading::checked(src.clone()).await?;
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    unfinished::begin(&dir)
        .with_context(|| format!("marking {} as being loaded", dir.display()))?;
    let opened = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || EmbeddedStore::create_to_import(&dir, engine))
    };
    let store = opened.await?.map_err(|e| opening(&dir, e))?;
    let store: Arc<EmbeddedStore> = Arc::new(store);
    // The embedded engines keep no typed columns: the rows' pseudonyms go unused.
    let manifest = loading
        .into(&store, &Pseudonyms::ephemeral(), PatientKeys::AsDumped)
        .await
        .with_context(|| {
            format!(
                "importing {} ({} now holds part of it: remove the folder before importing again)",
                src.display(),
                dir.display()
            )
        })?;
    acknowledged::save(&(Arc::clone(&store) as Arc<dyn Store>), dir.clone(), None).await?;
    tokio::task::spawn_blocking(move || store.close()).await??;
    unfinished::end(&dir).with_context(|| format!("marking {} as whole", dir.display()))?;
    Ok(manifest)
}

/// A dump checked whole and opened again to be loaded, with the count of its bytes read.
pub(super) struct Loading {
    reader: Reader<Counted<BufReader<File>>>,
    read: Arc<AtomicU64>,
    total: u64,
}

impl Loading {
    /// Reads the whole dump in `src` and checks it (each table's count and hash, the manifest),
    /// so that a damaged or truncated one is refused before anything is written; then opens it
    /// again for [`Loading::into`].
    pub(super) async fn checked(src: PathBuf) -> anyhow::Result<Loading> {
        let checked = {
            let src = src.clone();
            tokio::task::spawn_blocking(move || check(&src))
        };
        checked.await??;
        let file = File::open(&src).with_context(|| format!("opening {}", src.display()))?;
        let total = file.metadata()?.len();
        let read = Arc::new(AtomicU64::new(0));
        let input = Counted {
            inner: BufReader::with_capacity(1 << 20, file),
            read: Arc::clone(&read),
        };
        let reader = Reader::new(input).with_context(|| format!("reading {}", src.display()))?;
        Ok(Loading {
            reader,
            read,
            total,
        })
    }

    /// Loads the dump into `store` (with a progress bar on a terminal); its manifest.
    pub(super) async fn into(
        self,
        store: &impl Store,
        pseudonyms: &Pseudonyms,
        keys: PatientKeys,
    ) -> anyhow::Result<Manifest> {
        let Loading {
            reader,
            read,
            total,
        } = self;
        let progress = io::stderr()
            .is_terminal()
            .then(|| draw_progress(Arc::clone(&read), total));
        let loaded = load(store, reader, pseudonyms, keys).await;
        if let Some(progress) = progress {
            progress.abort();
            eprintln!("{}", progress_bar(read.load(Ordering::Relaxed), total));
        }
        loaded
    }
}

/// Reads the whole dump in `src` and checks it (each table's count and hash, the manifest).
fn check(src: &Path) -> anyhow::Result<()> {
    let file = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let refused = || format!("{} is refused", src.display());
    let mut reader = Reader::new(BufReader::with_capacity(1 << 20, file)).with_context(refused)?;
    reader
        .try_for_each(|entry| entry.map(drop))
        .with_context(refused)
}

/// What a load may do with keys that name a patient in clear (a dump of a store of layout 1,
/// which the gateway's start migrates).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum PatientKeys {
    /// Load them as they are: a folder the gateway migrates at its start.
    AsDumped,
    /// Refuse the dump at the first, before it is written: a database indexes its keys and
    /// keeps them in its WAL and backups, so no patient identifier may ever enter one.
    Refused,
}

/// Writes every entry `reader` gives to `store` as the service writes it
/// (`service::put_record`), a batch per transaction, each durable before the next; then raises
/// each counter past the numbers the loaded keys hold; the manifest once the whole dump has
/// been read and checked. A dump of a store that draws its unique numbers from a database
/// sequence (PostgreSQL) carries counters behind its keys: loaded as they are, the store would
/// give those numbers again and write over what they name (an embedded store, which draws from
/// its counters), or its import would move the database sequence only past them.
async fn load<R: Read + Send + 'static>(
    store: &impl Store,
    reader: Reader<R>,
    pseudonyms: &Pseudonyms,
    keys: PatientKeys,
) -> anyhow::Result<Manifest> {
    let (batches, mut received) = mpsc::channel(IN_FLIGHT);
    let reading = tokio::task::spawn_blocking(move || read_batches(reader, &batches));
    let mut highest = Highest::default();
    while let Some(batch) = received.recv().await {
        for (table, key, _) in &batch {
            highest.note(*table, key);
        }
        let pseudonyms = pseudonyms.clone();
        store
            .transact(move |tx| {
                for (table, key, value) in &batch {
                    if keys == PatientKeys::Refused {
                        refuse_clear_patient_key(*table, key)?;
                    }
                    put_record(tx, *table, key, value, &pseudonyms)?;
                }
                Ok::<_, StoreError>(())
            })
            .await??;
    }
    let manifest = reading.await??;
    store
        .transact(move |tx| highest.raise_counters(tx))
        .await??;
    Ok(manifest)
}

type Batch = Vec<TableEntry>;

/// Reads the dump into batches for [`load`]; the checked manifest at the end.
fn read_batches<R: Read>(
    mut reader: Reader<R>,
    batches: &mpsc::Sender<Batch>,
) -> anyhow::Result<Manifest> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    for entry in reader.by_ref() {
        let entry = entry?;
        bytes += entry.1.len() + entry.2.len();
        batch.push(entry);
        if batch.len() == BATCH_ENTRIES || bytes >= BATCH_BYTES {
            bytes = 0;
            batches
                .blocking_send(std::mem::take(&mut batch))
                .map_err(|_| anyhow::anyhow!("the store stopped taking batches"))?;
        }
    }
    if !batch.is_empty() {
        batches
            .blocking_send(batch)
            .map_err(|_| anyhow::anyhow!("the store stopped taking batches"))?;
    }
    Ok(reader
        .manifest()
        .cloned()
        .expect("the reader ended at its manifest"))
}

/// A reader that counts the bytes read through it (for the progress bar).
pub(super) struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Writes the backup of the gateway at `addr` to the new file `dest`, checking it as it comes
/// (every table's count and hash, the manifest); its manifest.
pub async fn backup(addr: &str, operator: &ClientFiles, dest: PathBuf) -> anyhow::Result<Manifest> {
    let partial = Partial::create(&dest)?;
    let channel = operator
        .connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let mut stream = AdminServiceClient::new(channel)
        .backup(pb::BackupRequest {})
        .await
        .map_err(|s| anyhow::anyhow!("backup refused: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    let (chunks, received) = mpsc::channel(IN_FLIGHT);
    let writing = tokio::task::spawn_blocking(move || check_and_keep(partial, received));
    let mut failure = None;
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                if chunks.send(chunk.data).await.is_err() {
                    break; // the writer stopped: its error says why
                }
            }
            Ok(None) => break,
            Err(status) => {
                failure = Some(anyhow::anyhow!(
                    "the backup broke off: {:?}: {}",
                    status.code(),
                    status.message()
                ));
                break;
            }
        }
    }
    drop(chunks);
    let written = writing.await?;
    match failure {
        Some(failure) => Err(failure),
        None => written,
    }
}

/// Reads the dump arriving in `chunks` through [`Reader`], keeping every byte in `partial`,
/// and commits it once the manifest has checked.
fn check_and_keep(
    mut partial: Partial,
    chunks: mpsc::Receiver<Vec<u8>>,
) -> anyhow::Result<Manifest> {
    let input = Tee {
        chunks,
        current: io::Cursor::new(Vec::new()),
        copy: partial.writer(),
    };
    let mut reader = Reader::new(input)?;
    for entry in reader.by_ref() {
        entry?;
    }
    let manifest = reader
        .manifest()
        .cloned()
        .expect("the reader ended at its manifest");
    drop(reader);
    partial.commit()?;
    Ok(manifest)
}

/// The bytes of the chunks received, as a `Read`, each chunk copied to a file as it is taken.
struct Tee<'a> {
    chunks: mpsc::Receiver<Vec<u8>>,
    current: io::Cursor<Vec<u8>>,
    copy: &'a mut BufWriter<Paced>,
}

impl Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match self.chunks.blocking_recv() {
                Some(chunk) => {
                    self.copy.write_all(&chunk)?;
                    self.current = io::Cursor::new(chunk);
                }
                None => return Ok(0),
            }
        }
    }
}

/// One line per table: its entries and hash.
pub fn render(manifest: &Manifest) -> String {
    manifest
        .tables
        .iter()
        .map(|t| {
            format!(
                "{:<22} {:>10} entries  sha256 {}\n",
                dump::name(t.table),
                t.entries,
                crate::domain::hash::hex(&t.sha256)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file that appears under the destination's name while the dump is written (a backup
    /// takes minutes) is not replaced: a dump is never written over anything.
    #[test]
    fn a_destination_that_appears_meanwhile_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("store.dump");
        let mut partial = Partial::create(&dest).unwrap();
        partial.writer().write_all(b"the dump").unwrap();
        fs::write(&dest, b"another file").unwrap();
        let error = partial.commit().unwrap_err().to_string();
        assert!(error.contains("exists"), "{error}");
        assert_eq!(fs::read(&dest).unwrap(), b"another file");
        assert!(!dir.path().join("store.dump.partial").exists());
    }
}
