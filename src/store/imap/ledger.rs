//! Attribution of changes seen through IMAP to the device that made them.
//!
//! A change the watcher (or the webhook) reports carries no origin: IMAP does not say
//! which session made it. But a device's own operation, run on our connection, can tell
//! which MODSEQs it produced: the operation takes the folder's HIGHESTMODSEQ before (`h0`)
//! and after (`h1`), and if nothing else touched the folder meanwhile — no untagged
//! response about messages it did not touch, UIDNEXT/MESSAGES moved by exactly its own
//! appends and expunges, STOREs guarded by `UNCHANGEDSINCE h0` — every MODSEQ in
//! `(h0, h1]` is that device's. Those ranges are recorded here.
//!
//! When the watcher sees a folder's HIGHESTMODSEQ go from `a` to `b`, the change is
//! attributed to device `d` only if recorded ranges of `d` cover every MODSEQ in `(a, b]`.
//! Anything uncovered (a delivery, another client, a change we could not prove ours) makes
//! it a change of [`Origin::Server`], which wakes every device: a device is never denied a
//! push for somebody else's change; at worst it is woken by its own.
//!
//! Folder creation, renaming and deletion have no MODSEQ; they are attributed by name: a
//! mailbox name can be created, renamed to or deleted by one successful command at a time,
//! so a hierarchy change that touches only names the device just changed is the device's.
//!
//! Operations in flight are registered too: the webhook can report a change a few
//! milliseconds before the operation that made it has read `h1`, so attribution of a
//! folder waits (briefly, bounded) for the operations on that folder to finish.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::store::{ModSeq, Origin};

/// How long a recorded own change is remembered.
const TTL: Duration = Duration::from_secs(120);
/// Longest wait for operations in flight on a folder before attributing its change.
const PENDING_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
struct Range {
    folder: String,
    from_excl: ModSeq,
    to_incl: ModSeq,
    device: Arc<str>,
    at: Instant,
}

#[derive(Debug, Clone)]
struct NameMark {
    name: String,
    device: Arc<str>,
    at: Instant,
}

#[derive(Default)]
struct State {
    next_id: u64,
    pending: HashMap<u64, Vec<String>>,
    ranges: Vec<Range>,
    names: Vec<NameMark>,
}

impl State {
    fn gc(&mut self) {
        let now = Instant::now();
        self.ranges.retain(|r| now.duration_since(r.at) < TTL);
        self.names.retain(|n| now.duration_since(n.at) < TTL);
    }
}

#[derive(Default)]
struct UserLedger {
    state: Mutex<State>,
    done: Notify,
}

impl UserLedger {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Own changes of every user's devices.
#[derive(Default)]
pub struct Ledger {
    users: DashMap<Arc<str>, Arc<UserLedger>>,
}

/// An operation in flight; dropping it ends it.
pub struct Pending {
    user: Arc<UserLedger>,
    id: u64,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.user.lock().pending.remove(&self.id);
        self.user.done.notify_waiters();
    }
}

impl Ledger {
    fn user(&self, login: &Arc<str>) -> Arc<UserLedger> {
        self.users.entry(login.clone()).or_default().clone()
    }

    /// Registers an operation of a device on `folders` (wire-independent, decoded names).
    pub fn begin(&self, login: &Arc<str>, folders: &[&str]) -> Pending {
        let user = self.user(login);
        let id = {
            let mut st = user.lock();
            st.gc();
            st.next_id += 1;
            let id = st.next_id;
            st.pending.insert(id, folders.iter().map(|f| f.to_string()).collect());
            id
        };
        Pending { user, id }
    }

    /// Records that every MODSEQ in `(from, to]` of `folder` was made by `device`.
    pub fn record(&self, login: &Arc<str>, folder: &str, from: ModSeq, to: ModSeq, device: &Arc<str>) {
        if to <= from {
            return;
        }
        let user = self.user(login);
        let mut st = user.lock();
        st.ranges.push(Range { folder: folder.to_string(), from_excl: from, to_incl: to, device: device.clone(), at: Instant::now() });
    }

    /// Records that `device` created, renamed (both names) or deleted these mailboxes.
    pub fn record_names(&self, login: &Arc<str>, names: &[&str], device: &Arc<str>) {
        let user = self.user(login);
        let mut st = user.lock();
        for name in names {
            st.names.push(NameMark { name: name.to_string(), device: device.clone(), at: Instant::now() });
        }
    }

    async fn wait_idle(&self, user: &Arc<UserLedger>, folders: &[&str]) {
        let deadline = tokio::time::Instant::now() + PENDING_WAIT;
        loop {
            let notified = user.done.notified();
            let busy = user.lock().pending.values().any(|fs| fs.iter().any(|f| folders.contains(&f.as_str())));
            if !busy {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }

    /// Who made the change that moved `folder`'s HIGHESTMODSEQ from `from` to `to`.
    pub async fn attribute(&self, login: &str, folder: &str, from: ModSeq, to: ModSeq) -> Origin {
        let Some(user) = self.users.get(login).map(|u| u.clone()) else { return Origin::Server };
        if to <= from {
            return Origin::Server;
        }
        self.wait_idle(&user, &[folder]).await;
        let st = user.lock();
        let mut by_device: HashMap<&Arc<str>, Vec<(ModSeq, ModSeq)>> = HashMap::new();
        for r in st.ranges.iter().filter(|r| r.folder == folder && r.to_incl > from && r.from_excl < to) {
            by_device.entry(&r.device).or_default().push((r.from_excl, r.to_incl));
        }
        for (device, mut ranges) in by_device {
            ranges.sort_unstable();
            let mut covered = from;
            for (f, t) in ranges {
                if f <= covered && t > covered {
                    covered = t;
                }
            }
            if covered >= to {
                return Origin::Device(device.clone());
            }
        }
        Origin::Server
    }

    /// Who made a hierarchy change touching exactly these mailbox names.
    pub async fn attribute_names(&self, login: &str, names: &[&str]) -> Origin {
        let Some(user) = self.users.get(login).map(|u| u.clone()) else { return Origin::Server };
        if names.is_empty() {
            return Origin::Server;
        }
        self.wait_idle(&user, names).await;
        let mut st = user.lock();
        let mut device: Option<Arc<str>> = None;
        for name in names {
            let Some(mark) = st.names.iter().rev().find(|m| m.name == *name) else { return Origin::Server };
            match &device {
                None => device = Some(mark.device.clone()),
                Some(d) if *d == mark.device => {}
                Some(_) => return Origin::Server,
            }
        }
        // Each mark explains one change: consume them.
        st.names.retain(|m| !names.contains(&m.name.as_str()));
        device.map_or(Origin::Server, Origin::Device)
    }

    /// Forgets users with nothing recorded and nothing in flight.
    pub fn gc(&self) {
        self.users.retain(|_, u| {
            let mut st = u.lock();
            st.gc();
            !(st.pending.is_empty() && st.ranges.is_empty() && st.names.is_empty())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(d: &str) -> Arc<str> {
        Arc::from(d)
    }

    #[tokio::test]
    async fn only_fully_covered_ranges_are_a_devices_own() {
        let ledger = Ledger::default();
        let alice: Arc<str> = "alice".into();
        ledger.record(&alice, "INBOX", 10, 12, &dev("A"));
        ledger.record(&alice, "INBOX", 12, 13, &dev("A"));
        assert_eq!(ledger.attribute("alice", "INBOX", 10, 13).await, Origin::Device(dev("A")));
        assert_eq!(ledger.attribute("alice", "INBOX", 11, 12).await, Origin::Device(dev("A")));
        // A MODSEQ nobody claimed (a delivery at 14) makes it everybody's business.
        assert_eq!(ledger.attribute("alice", "INBOX", 10, 14).await, Origin::Server);
        assert_eq!(ledger.attribute("alice", "INBOX", 9, 13).await, Origin::Server);
        // Two devices' changes in one observation: nobody is suppressed.
        ledger.record(&alice, "INBOX", 13, 14, &dev("B"));
        assert_eq!(ledger.attribute("alice", "INBOX", 10, 14).await, Origin::Server);
        assert_eq!(ledger.attribute("alice", "Sent", 10, 13).await, Origin::Server);
        assert_eq!(ledger.attribute("bob", "INBOX", 10, 13).await, Origin::Server);
    }

    #[tokio::test]
    async fn attribution_waits_for_operations_in_flight() {
        let ledger = Arc::new(Ledger::default());
        let alice: Arc<str> = "alice".into();
        let pending = ledger.begin(&alice, &["INBOX"]);
        let l2 = ledger.clone();
        let a2 = alice.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            l2.record(&a2, "INBOX", 1, 2, &dev("A"));
            drop(pending);
        });
        assert_eq!(ledger.attribute("alice", "INBOX", 1, 2).await, Origin::Device(dev("A")));
    }

    #[tokio::test]
    async fn hierarchy_changes_by_name() {
        let ledger = Ledger::default();
        let alice: Arc<str> = "alice".into();
        ledger.record_names(&alice, &["Projects"], &dev("A"));
        assert_eq!(ledger.attribute_names("alice", &["Other"]).await, Origin::Server);
        assert_eq!(ledger.attribute_names("alice", &["Projects", "Other"]).await, Origin::Server);
        assert_eq!(ledger.attribute_names("alice", &["Projects"]).await, Origin::Device(dev("A")));
        // Consumed: a later deletion of the same name by someone else is not suppressed.
        assert_eq!(ledger.attribute_names("alice", &["Projects"]).await, Origin::Server);
    }
}
