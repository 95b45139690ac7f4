//! The push hub: waiting Pings (and long-poll Syncs) woken by the store's change feed.
//!
//! Owns, per user with a waiting device, one subscription to the store's change feed shared
//! by all that user's waiting devices (taken when the first device waits, dropped a grace
//! period after the last one leaves), and the table of waiting devices. A committed change is
//! matched against the folders each device watches and wakes it at once, unless the device
//! made the change itself. One waiting request per device: a new one supersedes the old.
//! No lock is held across an await. It decides *who* to wake, never *what to answer*: that
//! is [`crate::eas::ping`]'s job.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::feed::FeedEvent;
use crate::store::{Account, ChangeKind, FolderId, Origin, SharedStore, StoreChange};

/// Why a waiting request was woken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// Changes in these watched folders; `committed_at` is when the store committed the first.
    Changed { folders: Vec<FolderId>, committed_at: Instant },
    /// The folder hierarchy changed.
    Hierarchy,
    /// The same device sent a new Ping or long-poll Sync.
    Superseded,
    /// The feed lost events (lag, reconnect): the device must be checked again.
    Recheck,
    /// An administrator cut the device or user off.
    Kicked,
    /// The server is shutting down.
    Shutdown,
}

/// A device waiting for changes.
struct Waiter {
    generation: u64,
    folders: Box<[FolderId]>,
    watch_hierarchy: bool,
    tx: oneshot::Sender<Wake>,
}

/// Per-user state: the waiting devices and the subscription task.
struct UserHub {
    waiters: Mutex<Waiters>,
    /// Signals the subscription task that the last waiter left.
    emptied: Notify,
    /// Becomes true once the subscription is live (or has failed once, so waiters are not
    /// held up by a broken store: they still get their heartbeat and initial check).
    ready: watch::Receiver<bool>,
}

#[derive(Default)]
struct Waiters {
    by_device: HashMap<Arc<str>, Waiter>,
    /// Set by the subscription task when it ends; a closed hub takes no more waiters.
    closed: bool,
}

impl UserHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiters> {
        // A panic while holding this lock cannot leave the map inconsistent (all updates are
        // single inserts/removes), so a poisoned lock is still usable.
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dispatch(&self, change: &StoreChange) -> usize {
        let mut w = self.lock();
        let origin = match &change.origin {
            Origin::Device(d) => Some(d.clone()),
            Origin::Server => None,
        };
        let woken: Vec<Arc<str>> = w
            .by_device
            .iter()
            .filter(|(device, _)| origin.as_ref() != Some(*device))
            .filter(|(_, waiter)| match change.kind {
                ChangeKind::Hierarchy => waiter.watch_hierarchy || waiter.folders.contains(&change.folder),
                _ => waiter.folders.contains(&change.folder),
            })
            .map(|(device, _)| device.clone())
            .collect();
        for device in &woken {
            if let Some(waiter) = w.by_device.remove(device) {
                let wake = match change.kind {
                    ChangeKind::Hierarchy => Wake::Hierarchy,
                    _ => Wake::Changed { folders: vec![change.folder.clone()], committed_at: change.committed_at },
                };
                let _ = waiter.tx.send(wake);
            }
        }
        if w.by_device.is_empty() {
            self.emptied.notify_one();
        }
        woken.len()
    }

    fn wake_all(&self, wake: Wake) -> usize {
        let mut w = self.lock();
        let n = w.by_device.len();
        for (_, waiter) in w.by_device.drain() {
            let _ = waiter.tx.send(wake.clone());
        }
        self.emptied.notify_one();
        n
    }
}

/// A registered waiting request. Await [`Registration::wait`]; dropping it unregisters.
pub struct Registration {
    hub: Arc<UserHub>,
    device: Arc<str>,
    generation: u64,
    rx: oneshot::Receiver<Wake>,
    metrics: Arc<Metrics>,
}

impl Registration {
    /// Waits for a wake-up or the end of the heartbeat (`None`).
    pub async fn wait(&mut self, heartbeat: Duration) -> Option<Wake> {
        match tokio::time::timeout(heartbeat, &mut self.rx).await {
            Ok(Ok(wake)) => Some(wake),
            // The hub dropped the sender without a reason: treat like a lost event.
            Ok(Err(_)) => Some(Wake::Recheck),
            Err(_) => None,
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.metrics.waiting.dec();
        let mut w = self.hub.lock();
        if w.by_device.get(&self.device).is_some_and(|x| x.generation == self.generation) {
            w.by_device.remove(&self.device);
            if w.by_device.is_empty() {
                self.hub.emptied.notify_one();
            }
        }
    }
}

/// How long a registration waits for a new subscription to go live before proceeding anyway
/// (the initial check still covers anything committed meanwhile).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(5);
/// Backoff bounds when the store's feed cannot be (re)established.
const RESUBSCRIBE_MIN: Duration = Duration::from_millis(200);
const RESUBSCRIBE_MAX: Duration = Duration::from_secs(30);

pub struct PushHub {
    users: DashMap<Arc<str>, Arc<UserHub>>,
    store: SharedStore,
    metrics: Arc<Metrics>,
    grace: Duration,
    generation: AtomicU64,
    shutdown: CancellationToken,
}

impl PushHub {
    pub fn new(store: SharedStore, metrics: Arc<Metrics>, grace: Duration, shutdown: CancellationToken) -> Arc<Self> {
        Arc::new(PushHub { users: DashMap::new(), store, metrics, grace, generation: AtomicU64::new(1), shutdown })
    }

    /// Registers `device` of `account` as waiting on `folders` (and on the hierarchy when
    /// `watch_hierarchy`). Any earlier waiting request of the device is superseded. Returns
    /// once the user's change feed is live, so the caller can then check for changes that
    /// predate the registration without missing any that follow it.
    pub async fn register(
        self: &Arc<Self>,
        account: &Account,
        device: &str,
        folders: Vec<FolderId>,
        watch_hierarchy: bool,
    ) -> Registration {
        let device: Arc<str> = Arc::from(device);
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut waiter = Some(Waiter { generation, folders: folders.into_boxed_slice(), watch_hierarchy, tx });
        let hub = loop {
            let hub = self.user_hub(account);
            let mut w = hub.lock();
            if w.closed {
                drop(w);
                // The subscription task just ended; take a fresh hub.
                self.users.remove_if(&account.login, |_, h| Arc::ptr_eq(h, &hub));
                continue;
            }
            if let Some(new) = waiter.take()
                && let Some(old) = w.by_device.insert(device.clone(), new)
            {
                let _ = old.tx.send(Wake::Superseded);
            }
            drop(w);
            break hub;
        };
        self.metrics.waiting.inc();
        let mut ready = hub.ready.clone();
        let _ = tokio::time::timeout(SUBSCRIBE_WAIT, ready.wait_for(|r| *r)).await;
        Registration { hub, device, generation, rx, metrics: self.metrics.clone() }
    }

    fn user_hub(self: &Arc<Self>, account: &Account) -> Arc<UserHub> {
        if let Some(h) = self.users.get(&account.login) {
            return h.clone();
        }
        self.users
            .entry(account.login.clone())
            .or_insert_with(|| {
                let (ready_tx, ready_rx) = watch::channel(false);
                let hub = Arc::new(UserHub { waiters: Mutex::new(Waiters::default()), emptied: Notify::new(), ready: ready_rx });
                self.metrics.watched_users.inc();
                tokio::spawn(self.clone().run_subscription(account.clone(), hub.clone(), ready_tx));
                hub
            })
            .clone()
    }

    /// One user's subscription: reads the change feed and wakes matching waiters, until no
    /// device has waited for the grace period.
    async fn run_subscription(self: Arc<Self>, account: Account, hub: Arc<UserHub>, ready: watch::Sender<bool>) {
        let mut backoff = RESUBSCRIBE_MIN;
        let mut reconnecting = false;
        'outer: loop {
            let feed = tokio::select! {
                f = self.store.watch(&account) => f,
                _ = self.shutdown.cancelled() => break 'outer,
            };
            let mut feed = match feed {
                Ok(feed) => feed,
                Err(e) => {
                    tracing::warn!(user = %account.login, error = %e, "cannot watch the store for changes; retrying");
                    let _ = ready.send(true);
                    if self.pause(&account, &hub, backoff).await {
                        break 'outer;
                    }
                    backoff = (backoff * 2).min(RESUBSCRIBE_MAX);
                    reconnecting = true;
                    continue;
                }
            };
            backoff = RESUBSCRIBE_MIN;
            let _ = ready.send(true);
            if reconnecting {
                // Events may have been missed while the feed was down.
                hub.wake_all(Wake::Recheck);
            }
            loop {
                let idle = hub.lock().by_device.is_empty();
                let event = tokio::select! {
                    e = feed.next() => e,
                    _ = hub.emptied.notified(), if !idle => continue,
                    _ = tokio::time::sleep(self.grace), if idle => {
                        if self.try_close(&account, &hub) {
                            break 'outer;
                        }
                        continue;
                    }
                    _ = self.shutdown.cancelled() => break 'outer,
                };
                match event {
                    FeedEvent::Change(change) => {
                        hub.dispatch(&change);
                    }
                    FeedEvent::Lagged => {
                        hub.wake_all(Wake::Recheck);
                    }
                    FeedEvent::Closed => {
                        reconnecting = true;
                        if self.pause(&account, &hub, backoff).await {
                            break 'outer;
                        }
                        continue 'outer;
                    }
                }
            }
        }
        // Only shutdown ends the task with devices still waiting: answer them.
        hub.lock().closed = true;
        hub.wake_all(Wake::Shutdown);
        self.users.remove_if(&account.login, |_, h| Arc::ptr_eq(h, &hub));
        self.metrics.watched_users.dec();
    }

    /// Sleeps `d` (a retry backoff); true when the task should end: shutdown, or nobody
    /// waits any more.
    async fn pause(&self, account: &Account, hub: &Arc<UserHub>, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = self.shutdown.cancelled() => return true,
        }
        self.try_close(account, hub)
    }

    /// Closes the hub if nobody waits; returns whether it did.
    fn try_close(&self, account: &Account, hub: &Arc<UserHub>) -> bool {
        let mut w = hub.lock();
        if !w.by_device.is_empty() {
            return false;
        }
        w.closed = true;
        drop(w);
        self.users.remove_if(&account.login, |_, h| Arc::ptr_eq(h, hub));
        true
    }

    /// Wakes every waiting request of a user (Mobile Sync disabled, password changed).
    pub fn kick_user(&self, login: &str) -> usize {
        self.users.get(login).map(|h| h.wake_all(Wake::Kicked)).unwrap_or(0)
    }

    /// Wakes a device's waiting request (blocked, wiped, removed, policy changed).
    pub fn kick_device(&self, login: &str, device: &str) -> bool {
        let Some(hub) = self.users.get(login).map(|h| h.clone()) else { return false };
        let mut w = hub.lock();
        match w.by_device.remove(device) {
            Some(waiter) => {
                let _ = waiter.tx.send(Wake::Kicked);
                true
            }
            None => false,
        }
    }

    /// Answers every waiting request (graceful shutdown).
    pub fn wake_all_for_shutdown(&self) -> usize {
        self.users.iter().map(|h| h.wake_all(Wake::Shutdown)).sum()
    }

    /// Users with a live subscription.
    pub fn watched_users(&self) -> usize {
        self.users.len()
    }

    /// Devices waiting right now.
    pub fn waiting_devices(&self) -> usize {
        self.users.iter().map(|h| h.lock().by_device.len()).sum()
    }
}

#[cfg(test)]
mod tests;
