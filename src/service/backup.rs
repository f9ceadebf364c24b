//! The online backup: the dump (`store::dump`) of a snapshot of the running store, streamed
//! from a blocking thread in chunks through a bounded channel, so that neither the async
//! runtime nor the store's writer waits on the client; one backup at a time; audited. Must not
//! depend on the protocol types or an engine.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;

use crate::store::{self, Snapshot, Store, dump};

use super::{Action, Caller, Error, Gateway};

/// The bytes of the dump in one chunk: well under the 256 KiB message limit.
const CHUNK: usize = 64 << 10;

/// Chunks written ahead of the client: what a slow client holds back, and all it holds.
const CHUNKS_AHEAD: usize = 8;

/// The chunks of a backup as they are written; an error ends them.
pub type BackupChunks = mpsc::Receiver<Result<Vec<u8>, Error>>;

/// Whether a backup is running: one at a time.
#[derive(Default)]
pub(super) struct OneBackup(Arc<AtomicBool>);

/// The running backup's hold on [`OneBackup`], let go when it ends however it ends.
struct Running(Arc<AtomicBool>);

impl OneBackup {
    fn start(&self) -> Option<Running> {
        let free = self
            .0
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        free.then(|| Running(Arc::clone(&self.0)))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Gateway {
    /// Starts a backup for `caller`: the dump of a snapshot holding every transaction
    /// submitted before this call, as chunks. Refused (and audited) while another runs, and on
    /// a store that takes no snapshots (sled). The backup is audited before it streams.
    pub async fn backup(&self, caller: &Caller) -> Result<BackupChunks, Error> {
        const ACTION: Action = Action::Backup;
        let Some(running) = self.backups.start() else {
            let busy = Error::ResourceExhausted("one backup at a time: another is running");
            return Err(self.audit_refusal(caller, ACTION, busy).await);
        };
        let snapshot = match self.store.snapshot().await {
            Ok(snapshot) => snapshot,
            Err(store::Error::Unsupported(why)) => {
                let refused = Error::FailedPrecondition(why);
                return Err(self.audit_refusal(caller, ACTION, refused).await);
            }
            Err(other) => return Err(other.into()),
        };
        self.audit_access(caller, ACTION).await?;
        let (chunks, received) = mpsc::channel(CHUNKS_AHEAD);
        tokio::task::spawn_blocking(move || stream(snapshot.as_ref(), chunks, running));
        Ok(received)
    }
}

/// Writes the dump of `snapshot` into `chunks` until done, failed, or the client is gone; lets
/// go of `running` before the stream ends, so that a client that has read to the end can start
/// the next backup at once.
fn stream(snapshot: &dyn Snapshot, chunks: mpsc::Sender<Result<Vec<u8>, Error>>, running: Running) {
    let out = Chunks {
        sender: chunks.clone(),
        buffer: Vec::with_capacity(CHUNK),
    };
    match dump::write(snapshot, out) {
        Ok((_, manifest)) => {
            let entries: u64 = manifest.tables.iter().map(|t| t.entries).sum();
            tracing::info!(entries, "backup streamed");
        }
        Err(dump::Error::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            tracing::warn!("backup ended early: the client went away");
        }
        Err(error) => {
            tracing::error!(%error, "backup failed");
            let _ = chunks.blocking_send(Err(Error::Internal(format!("backup failed: {error}"))));
        }
    }
    drop(running);
    drop(chunks);
}

/// The dump's bytes, sent as chunks of [`CHUNK`] bytes; waits while the channel is full.
struct Chunks {
    sender: mpsc::Sender<Result<Vec<u8>, Error>>,
    buffer: Vec<u8>,
}

impl Chunks {
    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

impl Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = bytes.len().min(CHUNK - self.buffer.len());
        self.buffer.extend_from_slice(&bytes[..n]);
        if self.buffer.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.buffer.is_empty() {
            true => Ok(()),
            false => self.send(),
        }
    }
}
