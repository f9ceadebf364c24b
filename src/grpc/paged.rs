//! A server stream fed a page at a time (the audit exports): each page is read in its own store
//! transaction, so the store's writer serves other calls between pages however long the export.

use std::{future::Future, pin::Pin, sync::Arc};

use tokio_stream::Stream;
use tonic::Status;

use super::to_status;
use crate::service::{Error, Gateway, Page};

pub(super) type PagedStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Streams what `fetch` reads from `gateway`, page after page: it is given where the last page
/// ended (empty for the first) and answers a page and where to go on, or None after the last.
pub(super) fn stream_pages<T, F, Fut>(gateway: &Arc<Gateway>, fetch: F) -> PagedStream<T>
where
    T: Send + 'static,
    F: Fn(Arc<Gateway>, Vec<u8>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Page<T>, Error>> + Send,
{
    let gateway = Arc::clone(gateway);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut after = Vec::new();
        loop {
            match fetch(Arc::clone(&gateway), after).await {
                Ok((items, next)) => {
                    for item in items {
                        if tx.send(Ok(item)).await.is_err() {
                            return; // the client went away
                        }
                    }
                    match next {
                        Some(n) => after = n,
                        None => return,
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(to_status(e))).await;
                    return;
                }
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
