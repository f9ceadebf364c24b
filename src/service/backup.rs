//! The online backup: the dump (`store::dump`) of a snapshot of the running store, streamed
//! from a blocking thread in chunks through a bounded channel, so that neither the async
//! runtime nor the store's writer waits on the client; one backup at a time; audited. Must not
//! depend on the protocol types or an engine.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::{
    runtime::Handle,
    sync::mpsc::{self, error::SendTimeoutError},
};

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
    /// a store that takes no snapshots (sled). The backup is audited before it streams. A
    /// client that leaves the chunks unread for `stall` is cut (the stream ends short, which its
    /// dump check reports as truncated): the turn and the snapshot are not held for it.
    pub async fn backup(&self, caller: &Caller, stall: Duration) -> Result<BackupChunks, Error> {
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
        let (sender, received) = mpsc::channel(CHUNKS_AHEAD);
        let chunks = Chunks {
            sender,
            stall,
            runtime: Handle::current(),
            buffer: Vec::with_capacity(CHUNK),
        };
        tokio::task::spawn_blocking(move || stream(snapshot.as_ref(), chunks, running));
        Ok(received)
    }
}

/// Writes the dump of `snapshot` into `chunks` until done, failed, the client is gone or
/// stalled; lets go of `running` before the stream ends, so that a client that has read to the
/// end can start the next backup at once.
fn stream(snapshot: &dyn Snapshot, chunks: Chunks, running: Running) {
    let (sender, runtime, stall) = (chunks.sender.clone(), chunks.runtime.clone(), chunks.stall);
    match dump::write(snapshot, chunks) {
        Ok((_, manifest)) => {
            let entries: u64 = manifest.tables.iter().map(|t| t.entries).sum();
            tracing::info!(entries, "backup streamed");
        }
        Err(dump::Error::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            tracing::warn!("backup ended early: the client went away");
        }
        Err(dump::Error::Io(e)) if e.kind() == io::ErrorKind::TimedOut => {
            tracing::warn!("backup cut: its client read nothing for the stall time");
        }
        Err(error) => {
            tracing::error!(%error, "backup failed");
            let failed = Err(Error::Internal(format!("backup failed: {error}")));
            let _ = runtime.block_on(sender.send_timeout(failed, stall));
        }
    }
    drop(running);
    drop(sender);
}

/// The dump's bytes, sent as chunks of [`CHUNK`] bytes; waits while the channel is full, for
/// `stall` at most.
struct Chunks {
    sender: mpsc::Sender<Result<Vec<u8>, Error>>,
    stall: Duration,
    /// The runtime the channel's timer runs on (the writing thread is a blocking one).
    runtime: Handle,
    buffer: Vec<u8>,
}

impl Chunks {
    /// Sends the buffer: BrokenPipe when the client is gone, TimedOut when it stalled.
    fn send(&mut self) -> io::Result<()> {
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        let sent = self
            .runtime
            .block_on(self.sender.send_timeout(Ok(chunk), self.stall));
        sent.map_err(|e| match e {
            SendTimeoutError::Timeout(_) => io::Error::from(io::ErrorKind::TimedOut),
            SendTimeoutError::Closed(_) => io::Error::from(io::ErrorKind::BrokenPipe),
        })
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
