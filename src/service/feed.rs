//! A watch of the event log as a stream: the events after a sequence that a filter lets
//! through, read a page at a time, then, with nothing new, each new page as soon as a commit's
//! notification says there may be one (or after `poll` at the latest). It ends when the gateway
//! closes its feeds (at shutdown; the consumer resumes after the last sequence it received) or
//! after an error. How fast its consumer reads, and what becomes of one that stops reading, is
//! the consumer's business. Knows no protocol.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio_stream::Stream;

use super::{Error, EventEntry, EventFilter, Gateway};

/// How a watch reads the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Events read at a time.
    pub page: usize,
    /// How long a watch with nothing new waits for news before it looks again: a commit's
    /// notification wakes it at once, so this only bounds how late a missed one is noticed.
    pub poll: Duration,
}

/// The next read of a watch, which hands its reader back with what it read. Like any future it
/// does nothing until polled: the watch reads when its consumer asks for more.
type Reading =
    Pin<Box<dyn Future<Output = (Reader, Option<Result<Vec<EventEntry>, Error>>)> + Send>>;

/// The events after a sequence, as [`Gateway::watch`] streams them.
pub struct EventWatch {
    /// The entries read and not yet handed out.
    ready: std::vec::IntoIter<EventEntry>,
    /// None once the watch has ended.
    next: Option<Reading>,
}

/// Where a watch is in the log.
struct Reader {
    gateway: Arc<Gateway>,
    filter: EventFilter,
    /// The last sequence read: the next page begins after it.
    after: u64,
    pace: Pace,
}

impl Gateway {
    /// Watches the events after `after` that `filter` lets through. The first page is read
    /// before this returns, so that OUT_OF_RANGE (`after` before the retained range) is its
    /// answer rather than the stream's.
    pub async fn watch(
        self: &Arc<Self>,
        filter: EventFilter,
        after: u64,
        pace: Pace,
    ) -> Result<EventWatch, Error> {
        let (first, last) = self
            .events_page(filter.clone(), after, pace.page.max(1))
            .await?;
        let reader = Reader {
            gateway: Arc::clone(self),
            filter,
            after: last.unwrap_or(after),
            pace,
        };
        Ok(EventWatch {
            ready: first.into_iter(),
            next: Some(reader.read()),
        })
    }
}

impl Reader {
    fn read(mut self) -> Reading {
        Box::pin(async move {
            let entries = self.next_entries().await;
            (self, entries)
        })
    }

    /// The next entries the filter lets through, read in pages after `after`; None once the
    /// gateway closes its feeds.
    ///
    /// The notification is armed before each read, so that a commit after the read wakes the
    /// wait that follows a read with nothing new. A read of an earlier call (the first page,
    /// read in `watch`, before anything was armed) is never waited on: this call reads again,
    /// armed, first.
    async fn next_entries(&mut self) -> Option<Result<Vec<EventEntry>, Error>> {
        let gateway = Arc::clone(&self.gateway);
        let notify = gateway.events_notifier();
        // Armed before this call's last read, when that read found nothing new.
        let mut armed = None;
        loop {
            if gateway.feeds_closed() {
                return None; // shutting down: the consumer resumes after the last event it got
            }
            if let Some(notified) = armed.take() {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(self.pace.poll) => {}
                }
            }
            let mut notified = Box::pin(notify.notified());
            notified.as_mut().enable();
            let page = gateway
                .events_page(self.filter.clone(), self.after, self.pace.page.max(1))
                .await;
            match page {
                Err(e) => return Some(Err(e)),
                Ok((entries, Some(last))) => {
                    self.after = last;
                    if !entries.is_empty() {
                        return Some(Ok(entries));
                    }
                }
                Ok((_, None)) => armed = Some(notified),
            }
        }
    }
}

impl Stream for EventWatch {
    type Item = Result<EventEntry, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            if let Some(entry) = self.ready.next() {
                return Poll::Ready(Some(Ok(entry)));
            }
            let Some(next) = self.next.as_mut() else {
                return Poll::Ready(None);
            };
            let (reader, entries) = ready!(next.as_mut().poll(cx));
            self.next = None;
            match entries {
                Some(Ok(entries)) => {
                    self.ready = entries.into_iter();
                    self.next = Some(reader.read());
                }
                // The watch ends after an error, and when the gateway closes its feeds.
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => return Poll::Ready(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;
    use crate::service::testing;

    /// `watch` reads the first page before its stream is first polled; an event committed in
    /// between (its notification given before the stream was there to hear it) must still reach
    /// the stream, when only a notification can wake it: the poll is an hour.
    #[tokio::test]
    async fn an_event_committed_after_the_first_page_was_read_wakes_the_feed() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, _) = testing::gateway(dir.path());
        let pace = Pace {
            page: 8,
            poll: Duration::from_secs(3600),
        };
        assert_eq!(gateway.latest_event().await.unwrap(), 0, "nothing yet");
        let mut events = gateway
            .watch(EventFilter::default(), 0, pace)
            .await
            .unwrap();
        testing::register(&gateway, "FEED-1", 1).await;

        let entry = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("the commit's notification wakes the watch")
            .expect("the watch goes on")
            .unwrap();
        assert_eq!((entry.sequence, entry.event.number.as_str()), (1, "FEED-1"));
    }
}
