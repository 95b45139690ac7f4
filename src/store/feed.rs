//! The per-user change feed every store backend publishes into and the push hub reads.
//!
//! One `tokio::sync::broadcast` channel per user with at least one subscriber, created on
//! the first subscription and dropped with the last; publishing to a user nobody watches is
//! a map lookup and nothing else. A subscriber that falls behind is told it lagged, and
//! must treat that as "anything may have changed".

use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use tokio::sync::broadcast;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use super::{FolderId, Origin};

/// What kind of change was committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// New messages (delivery, append, the destination of a move).
    MessageNew,
    /// Flags or keywords changed.
    MessageFlags,
    /// Messages expunged (including the source of a move).
    MessageExpunged,
    /// A folder was created, renamed or deleted: the hierarchy changed.
    Hierarchy,
}

/// One committed change.
#[derive(Debug, Clone)]
pub struct StoreChange {
    /// The folder the change happened in (for `Hierarchy`, the folder created, renamed or
    /// deleted).
    pub folder: FolderId,
    pub kind: ChangeKind,
    /// Who made it: a device's own changes do not wake that device.
    pub origin: Origin,
    /// When the store committed it; push latency is measured from here.
    pub committed_at: Instant,
}

/// What a subscriber receives.
#[derive(Debug, Clone)]
pub enum FeedEvent {
    Change(StoreChange),
    /// Some changes were dropped because the subscriber fell behind.
    Lagged,
    /// The store stopped publishing (shutdown, or the watcher behind an external store died).
    Closed,
}

/// A subscription to one user's changes. Dropping it unsubscribes.
pub struct ChangeFeed {
    changes: BroadcastStream<StoreChange>,
    /// Keeps whatever produces the feed alive (an IMAP watcher) while someone listens.
    _keepalive: Option<Box<dyn Send + Sync>>,
}

impl ChangeFeed {
    pub fn new(rx: broadcast::Receiver<StoreChange>, keepalive: Option<Box<dyn Send + Sync>>) -> Self {
        ChangeFeed { changes: BroadcastStream::new(rx), _keepalive: keepalive }
    }

    /// Waits for the next event.
    pub async fn next(&mut self) -> FeedEvent {
        match self.changes.next().await {
            Some(Ok(change)) => FeedEvent::Change(change),
            Some(Err(BroadcastStreamRecvError::Lagged(_))) => FeedEvent::Lagged,
            None => FeedEvent::Closed,
        }
    }
}

/// Changes buffered per user before a slow subscriber is told it lagged. The push hub reads
/// its feed at once, so a few slots suffice; a lag only costs a re-check. Every watched user
/// pays for these slots, so they are kept few.
const CHANNEL_CAPACITY: usize = 16;

/// The publishing side: a broadcast channel per watched user.
#[derive(Default)]
pub struct FeedRegistry {
    channels: DashMap<Arc<str>, broadcast::Sender<StoreChange>>,
}

impl FeedRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes to `user`'s changes.
    pub fn subscribe(&self, user: &Arc<str>) -> broadcast::Receiver<StoreChange> {
        self.channels.entry(user.clone()).or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0).subscribe()
    }

    /// Publishes a committed change to `user`'s subscribers, if any.
    pub fn publish(&self, user: &str, change: StoreChange) {
        let unwatched = match self.channels.get(user) {
            Some(tx) => tx.send(change).is_err(),
            None => return,
        };
        if unwatched {
            // Last subscriber gone: drop the channel unless someone subscribed meanwhile.
            self.channels.remove_if(user, |_, tx| tx.receiver_count() == 0);
        }
    }

    /// Number of users with a live channel (for tests and metrics).
    pub fn watched_users(&self) -> usize {
        self.channels.len()
    }

    /// Drops every channel so subscribers see `Closed` (shutdown).
    pub fn close_all(&self) {
        self.channels.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(folder: &str) -> StoreChange {
        StoreChange { folder: FolderId(folder.into()), kind: ChangeKind::MessageNew, origin: Origin::Server, committed_at: Instant::now() }
    }

    #[tokio::test]
    async fn delivers_to_subscribers_of_that_user_only() {
        let reg = FeedRegistry::new();
        let alice: Arc<str> = "alice".into();
        let bob: Arc<str> = "bob".into();
        let mut a = ChangeFeed::new(reg.subscribe(&alice), None);
        let mut b = ChangeFeed::new(reg.subscribe(&bob), None);
        reg.publish("alice", change("1"));
        reg.publish("bob", change("2"));
        match a.next().await {
            FeedEvent::Change(c) => assert_eq!(c.folder.0, "1"),
            other => panic!("unexpected {other:?}"),
        }
        match b.next().await {
            FeedEvent::Change(c) => assert_eq!(c.folder.0, "2"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn channels_go_away_with_the_last_subscriber() {
        let reg = FeedRegistry::new();
        let alice: Arc<str> = "alice".into();
        let feed = reg.subscribe(&alice);
        assert_eq!(reg.watched_users(), 1);
        drop(feed);
        reg.publish("alice", change("1"));
        assert_eq!(reg.watched_users(), 0);
        reg.publish("nobody", change("1"));
        assert_eq!(reg.watched_users(), 0);
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_it_lagged() {
        let reg = FeedRegistry::new();
        let alice: Arc<str> = "alice".into();
        let mut feed = ChangeFeed::new(reg.subscribe(&alice), None);
        for _ in 0..CHANNEL_CAPACITY + 10 {
            reg.publish("alice", change("1"));
        }
        assert!(matches!(feed.next().await, FeedEvent::Lagged));
    }
}
