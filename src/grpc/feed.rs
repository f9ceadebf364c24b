//! WatchEvents feeds and their bounds: at most `max_per_institution` open at once per institution,
//! a send buffer of `buffer` events (the gateway's watch reads the event log a page of that size
//! at a time, so a feed holds at most two pages), and a feed whose client leaves the buffer full
//! for `stall` is cut: its task ends and its slot is freed at once, and the client, if it ever
//! reads again, gets RESOURCE_EXHAUSTED after nothing more (it resumes after the last sequence it
//! received). The events themselves come from the service's `EventWatch`, which pages, waits
//! for commits and polls; this file adds only what a gRPC client's feed needs. Knows tonic's
//! `Status`; must not depend on the store.

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
use tokio_stream::{Stream, StreamExt};
use tonic::Status;

use super::{convert, to_status};
use crate::{
    domain::ids::Institution,
    keyed_slots::{KeyedSlots, Slot},
    log_throttle::LogThrottle,
    service::{EventWatch, Pace},
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

impl FeedLimits {
    /// How the gateway's watch of a feed reads the log: a page the size of the send buffer.
    pub(super) fn pace(&self) -> Pace {
        Pace {
            page: self.buffer,
            poll: self.poll,
        }
    }
}

/// Starts a feed of `events` (whose first page was read in the call, so that an OUT_OF_RANGE
/// was the call's own answer). The feed holds `slot` until it ends.
pub(super) fn start(
    events: EventWatch,
    limits: FeedLimits,
    slot: FeedSlot,
) -> Pin<Box<dyn Stream<Item = Item> + Send>> {
    let (tx, receiver) = mpsc::channel(limits.buffer.max(1));
    let cut = Arc::new(AtomicBool::new(false));
    let feed = Feed {
        tx,
        cut: Arc::clone(&cut),
        stall: limits.stall,
        _slot: slot,
    };
    tokio::spawn(feed.run(events));
    Box::pin(FeedStream {
        events: receiver,
        cut,
        ended: false,
    })
}

/// A feed's task.
struct Feed {
    tx: mpsc::Sender<Item>,
    cut: Arc<AtomicBool>,
    stall: Duration,
    _slot: FeedSlot,
}

impl Feed {
    /// Sends what `events` yields until it ends (the gateway closing its feeds, or an error,
    /// sent as the last item), the client goes away or the feed is cut.
    async fn run(self, mut events: EventWatch) {
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                _ = self.tx.closed() => return, // the client went away
            };
            let item = match next {
                Some(Ok(entry)) => Ok(convert::event_to_pb(entry)),
                Some(Err(e)) => Err(to_status(e)),
                None => return,
            };
            if !self.send(item).await {
                return;
            }
        }
    }

    /// Sends one item, waiting at most `stall` for room in the buffer; past that the feed is
    /// cut. False when the item did not go out (the client went away, or the feed was cut).
    async fn send(&self, item: Item) -> bool {
        match tokio::time::timeout(self.stall, self.tx.send(item)).await {
            Ok(sent) => sent.is_ok(),
            Err(_stalled) => {
                self.cut.store(true, Ordering::Release);
                if let Some(left_out) = CUT.allow() {
                    let stall_secs = self.stall.as_secs();
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
