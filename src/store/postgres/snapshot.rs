//! [`Store::snapshot`](crate::store::Store::snapshot) on PostgreSQL: a SERIALIZABLE, READ ONLY,
//! DEFERRABLE transaction on a connection of its own, read table by table in pages of [`PAGE`]
//! rows. DEFERRABLE makes its start wait for a safe snapshot (the serializable transactions
//! running beside it ended): a plain REPEATABLE READ one can see a transaction without another
//! that the serial order puts before it (the read-only anomaly), a state the store never was in.
//! It holds one connection of the pool while it is read, and no lock that writers wait for.

use std::sync::Arc;

use deadpool_postgres::Object;
use tokio::runtime::Handle;

use super::{Shared, database_error, pool_error};
use crate::store::{Entry, Error, Snapshot, SnapshotAnswer, Table};

/// Rows read per round trip.
const PAGE: i64 = 1_000;

struct PgSnapshot {
    /// Taken back by `drop`, which ends its transaction.
    client: Option<Object>,
    shared: Arc<Shared>,
    runtime: Handle,
}

/// Begins the snapshot's transaction on a connection of the pool.
pub(super) fn take(shared: Arc<Shared>, runtime: Handle) -> SnapshotAnswer {
    let handle = runtime.clone();
    let began = runtime.spawn(async move {
        let client = shared.pool.get().await.map_err(|e| pool_error(&e))?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE; SELECT 1")
            .await
            .map_err(|e| database_error(&e))?;
        Ok::<_, Error>((client, shared))
    });
    Box::pin(async move {
        let (client, shared) = began.await.map_err(|_| Error::Closed)??;
        Ok(Box::new(PgSnapshot {
            client: Some(client),
            shared,
            runtime: handle,
        }) as Box<dyn Snapshot>)
    })
}

impl PgSnapshot {
    /// The page of `table` from `from` on.
    fn page(&self, table: Table, from: &[u8]) -> Result<Vec<Entry>, Error> {
        let query = &self.shared.sql.of(table).scan_open;
        let client = self.client.as_ref().ok_or(Error::Closed)?;
        self.runtime
            .block_on(async {
                let statement = client.prepare_cached(query).await?;
                client.query(&statement, &[&from, &PAGE]).await
            })
            .map(|rows| rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
            .map_err(|e| database_error(&e))
    }
}

impl Snapshot for PgSnapshot {
    fn entries(&self, table: Table) -> Box<dyn Iterator<Item = Result<Entry, Error>> + '_> {
        let mut next: Option<Vec<u8>> = Some(Vec::new());
        let mut page = Vec::new().into_iter();
        Box::new(std::iter::from_fn(move || {
            loop {
                if let Some(entry) = page.next() {
                    return Some(Ok(entry));
                }
                let from = next.take()?;
                match self.page(table, &from) {
                    Ok(rows) => {
                        if rows.len() as i64 == PAGE {
                            next = rows.last().map(|(k, _)| [k.as_slice(), &[0]].concat());
                        }
                        page = rows.into_iter();
                    }
                    Err(error) => return Some(Err(error)),
                }
            }
        }))
    }
}

impl Drop for PgSnapshot {
    fn drop(&mut self) {
        // The connection goes back to the pool only once its transaction has ended; this may
        // run on an async thread, so the ending is left to the store's runtime.
        if let Some(client) = self.client.take() {
            self.runtime.spawn(super::rolled_back(client));
        }
    }
}
