//! WatchEvents feeds and their bounds: at most `max_per_institution` open at once per institution,
//! a send buffer of `buffer` events (the event log is read a page of that size at a time, so a
//! feed holds at most two pages), and a feed whose client leaves the buffer full for `stall` is
//! cut: its task ends and its slot is freed at once, and the client, if it ever reads again,
//! gets RESOURCE_EXHAUSTED after nothing more (it resumes after the last sequence it received).
//! Knows the gateway's event pages and tonic's `Status`; must not depend on the store.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::mpsc;
use tokio_stream::Stream;
use tonic::Status;

use super::{convert, to_status};
use crate::{
    domain::ids::Institution,
    keyed_slots::{KeyedSlots, Slot},
    log_throttle::LogThrottle,
    service::{EventEntry, EventFilter, Gateway},
    wire::proto::v1 as pb,
};

/// How long an idle feed waits for news before it looks again, unless configured otherwise.
pub const EVENT_POLL: Duration = Duration::from_secs(1);

static CUT: LogThrottle = LogThrottle::new(Duration::from_secs(10));

/// The bounds of WatchEvents feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedLimits {
    /// Feeds one institution may have open at once.
    pub max_per_institution: usize,
    /// Events buffered for a feed's client (and read from the log at a time).
    pub buffer: usize,
    /// How long a full buffer is tolerated before the feed is cut.
    pub stall: Duration,
    /// How long an idle feed waits for news before it looks again: a commit's notification
    /// wakes it at once, so this only bounds how late a missed notification could be noticed.
    pub poll: Duration,
}

/// The open feeds, by institution.
#[derive(Debug)]
pub(super) struct Feeds {
    limits: FeedLimits,
    open: Arc<KeyedSlots<Institution>>,
}

/// One open feed's place; freed when dropped (the feed's task ends).
pub(super) type FeedSlot = Slot<Institution>;

impl Feeds {
    pub(super) fn new(limits: FeedLimits) -> Self {
        Feeds {
            limits,
            open: KeyedSlots::new(limits.max_per_institution),
        }
    }

    pub(super) fn limits(&self) -> FeedLimits {
        self.limits
    }

    /// A feed's place for `who`, or RESOURCE_EXHAUSTED naming the limit.
    pub(super) fn claim(&self, who: &Institution) -> Result<FeedSlot, Status> {
        self.open.take(who).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "at most {} open WatchEvents streams per institution",
                self.open.max()
            ))
        })
    }
}

/// What a feed's task sends: events, or the error that ends the feed.
type Item = Result<pb::Event, Status>;
type Page = (Vec<EventEntry>, Option<u64>);

/// The response stream of a feed: the buffered events, unless the feed was cut, in which case
/// the client gets the cut's status instead of what was still buffered.
struct FeedStream {
    events: mpsc::Receiver<Item>,
    cut: Arc<AtomicBool>,
    ended: bool,
}

impl Stream for FeedStream {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.cut.load(Ordering::Acquire) {
            self.ended = true;
            self.events.close();
            return Poll::Ready(Some(Err(Status::resource_exhausted(
                "feed cut: its send buffer stayed full; resume after the last sequence received",
            ))));
        }
        self.events.poll_recv(cx)
    }
}

/// Starts a feed: `first` is the page already read after `after` (so that an OUT_OF_RANGE was
/// the call's own answer). The feed holds `slot` until it ends.
pub(super) fn start(
    gateway: Arc<Gateway>,
    limits: FeedLimits,
    (filter, after): (EventFilter, u64),
    first: Page,
    slot: FeedSlot,
) -> Pin<Box<dyn Stream<Item = Item> + Send>> {
    let (tx, events) = mpsc::channel(limits.buffer.max(1));
    let cut = Arc::new(AtomicBool::new(false));
    let feed = Feed {
        gateway,
        filter,
        tx,
        cut: Arc::clone(&cut),
        limits,
        _slot: slot,
    };
    tokio::spawn(feed.run(after, first));
    Box::pin(FeedStream {
        events,
        cut,
        ended: false,
    })
}

/// A feed's task.
struct Feed {
    gateway: Arc<Gateway>,
    filter: EventFilter,
    tx: mpsc::Sender<Item>,
    cut: Arc<AtomicBool>,
    limits: FeedLimits,
    _slot: FeedSlot,
}

impl Feed {
    async fn run(self, mut after: u64, first: Page) {
        let notify = self.gateway.events_notifier();
        let mut page = Ok(first);
        // Armed before each read, so that a commit after the read wakes the wait below. The
        // call read the first page before this task could arm anything, so that page is never
        // waited on: with nothing new in it, the feed reads again, armed.
        let mut notified = Box::pin(notify.notified());
        let mut armed_read = false;
        loop {
            let (entries, last) = match page {
                Ok(page) => page,
                Err(e) => {
                    self.send(Err(to_status(e))).await;
                    return;
                }
            };
            for e in entries {
                if !self.send(Ok(convert::event_to_pb(e))).await {
                    return;
                }
            }
            if self.gateway.feeds_closed() {
                return; // shutting down: the consumer resumes after the last event it got
            }
            match last {
                Some(last) => after = last,
                None if armed_read => {
                    tokio::select! {
                        _ = notified.as_mut() => {}
                        _ = tokio::time::sleep(self.limits.poll) => {}
                        _ = self.tx.closed() => return,
                    }
                }
                None => {}
            }
            notified = Box::pin(notify.notified());
            notified.as_mut().enable();
            armed_read = true;
            page = self
                .gateway
                .events_page(self.filter.clone(), after, self.limits.buffer.max(1))
                .await;
        }
    }

    /// Sends one item, waiting at most `stall` for room in the buffer; past that the feed is
    /// cut. False when the item did not go out (the client went away, or the feed was cut).
    async fn send(&self, item: Item) -> bool {
        match tokio::time::timeout(self.limits.stall, self.tx.send(item)).await {
            Ok(sent) => sent.is_ok(),
            Err(_stalled) => {
                self.cut.store(true, Ordering::Release);
                if let Some(left_out) = CUT.allow() {
                    let stall_secs = self.limits.stall.as_secs();
                    tracing::info!(
                        stall_secs,
                        left_out,
                        "event feed cut: its client read nothing"
                    );
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;
    use crate::{domain::ids::InstitutionKind, service::testing};

    /// The call reads the first page before the feed's task starts; an event committed in
    /// between (its notification given before the task was there to hear it) must still reach
    /// the feed, when only a notification can wake it: the poll is an hour.
    #[tokio::test]
    async fn an_event_committed_after_the_first_page_was_read_wakes_the_feed() {
        let dir = tempfile::tempdir().unwrap();
        let (gateway, _) = testing::gateway(dir.path());
        let limits = FeedLimits {
            max_per_institution: 1,
            buffer: 8,
            stall: Duration::from_secs(10),
            poll: Duration::from_secs(3600),
        };
        let filter = EventFilter::default();
        let first = gateway
            .events_page(filter.clone(), 0, limits.buffer)
            .await
            .unwrap();
        assert_eq!(first, (Vec::new(), None), "nothing yet");
        testing::register(&gateway, "FEED-1", 1).await;

        let management = testing::caller(InstitutionKind::Management).institution;
        let slot = Feeds::new(limits).claim(&management).unwrap();
        let mut feed = start(Arc::clone(&gateway), limits, (filter, 0), first, slot);
        let event = tokio::time::timeout(Duration::from_secs(10), feed.next())
            .await
            .expect("the commit's notification wakes the feed")
            .expect("the feed goes on")
            .unwrap();
        assert_eq!(
            (event.sequence, event.prescription_number.as_str()),
            (1, "FEED-1")
        );
    }
}
