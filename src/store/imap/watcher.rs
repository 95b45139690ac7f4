//! The change feed of the IMAP backend: one watcher per user that someone is waiting for.
//!
//! A watcher owns one connection (counted under the global cap) and a *baseline*: the last
//! known STATUS (UIDVALIDITY, UIDNEXT, MESSAGES, HIGHESTMODSEQ) of every mailbox. Whatever
//! makes it look — a NOTIFY `STATUS` line, an IDLE wake-up, a webhook doorbell, the periodic
//! sweep — ends in the same step: compare new STATUS with the baseline, publish one
//! [`StoreChange`] per kind of difference (new messages, expunges, flag changes), attributed
//! by the [`super::ledger`], and move the baseline. Because every change is published from
//! that one diff, a change is published once however many of those sources report it.
//!
//! - INBOX is EXAMINEd and IDLEd on: Dovecot reports news of the selected mailbox from its
//!   own index, reliably, ~0.5 s after the change.
//! - With NOTIFY (RFC 5465) the watcher also issues `NOTIFY SET (selected …) (personal (…))`
//!   and reads the `STATUS` and `LIST` notifications about the other mailboxes. Dovecot
//!   2.3's watch of those goes stale after its list index log rotates, so NOTIFY is re-armed
//!   (and all mailboxes swept) every `imap.watch_rearm_secs`. (With the webhook configured
//!   and NOTIFY available, INBOX is not selected — see `start` for why.)
//! - Without NOTIFY the other mailboxes are swept with LIST-STATUS (or STATUS each) at that
//!   interval.
//! - The webhook (Dovecot's push_notification Lua script) rings the watcher of the user an
//!   event names: it STATUSes the mailboxes named at once, which cuts push latency from the
//!   ~0.5 s IMAP batching floor to a few milliseconds, and still goes through the diff.
//! - When the connection breaks the watcher reconnects with backoff, diffing the fresh
//!   STATUS against the old baseline, so changes made meanwhile are still published. While
//!   it is down, doorbells are published directly (as the server's changes).
//! - The watcher lives while a [`crate::store::ChangeFeed`] holds its handle; the last one
//!   dropped stops it and logs out.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use imap_proto::{MailboxDatum, Response, Status};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::commands::{self, StatusAttrs, decode_name};
use super::pool::Credentials;
use super::session::{ImapError, Outcome, Reply, Session, Untagged};
use super::{Inner, PushBatch};
use crate::store::{Account, ChangeKind, FolderId, FolderStatus, Origin, StoreChange, StoreError, StoreResult};

/// The NOTIFY command (Dovecot needs the event list in parentheses).
const NOTIFY_SET: &str = "NOTIFY SET (selected (MessageNew (UID FLAGS) MessageExpunge FlagChange)) (personal (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange))";
/// Reconnect backoff bounds.
const RECONNECT_MIN: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// Doorbells queued before the watcher falls back to a full sweep.
const BELL_QUEUE: usize = 256;

/// What the webhook tells a watcher.
#[derive(Debug, Clone, Default)]
struct Bell {
    mailboxes: Vec<String>,
    hierarchy: bool,
    /// (mailbox, kind) of each event, published as-is while the watcher is offline.
    direct: Vec<(String, ChangeKind)>,
}

/// A running watcher; dropping the last handle stops it.
pub struct WatcherHandle {
    cancel: CancellationToken,
    bells: mpsc::Sender<Bell>,
    /// Doorbells were dropped (queue full): sweep everything.
    overflow: Arc<AtomicBool>,
    ready: watch::Receiver<Option<Result<(), String>>>,
}

impl WatcherHandle {
    /// Queues a webhook batch (never blocks).
    pub fn ring(&self, batch: &PushBatch) {
        let mut bell = Bell::default();
        for e in &batch.events {
            let Some(kind) = e.kind() else { continue };
            let name = normalise(&e.mailbox);
            if kind == ChangeKind::Hierarchy {
                bell.hierarchy = true;
            } else if !bell.mailboxes.contains(&name) {
                bell.mailboxes.push(name.clone());
            }
            bell.direct.push((name, kind));
            if let Some(old) = &e.mailbox_old {
                bell.direct.push((normalise(old), kind));
            }
        }
        if bell.direct.is_empty() {
            return;
        }
        if self.bells.try_send(bell).is_err() {
            self.overflow.store(true, Ordering::Relaxed);
        }
    }

    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Whether the watcher has taken its baseline.
    pub fn is_ready(&self) -> bool {
        matches!(*self.ready.borrow(), Some(Ok(())))
    }
}

impl Drop for WatcherHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Mailbox names from the webhook are UTF-8 already; INBOX in upper case.
fn normalise(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") { "INBOX".into() } else { name.to_string() }
}

/// The watcher of `account`, started if needed; returns once it has its baseline (or
/// failed to get one).
pub(super) async fn watcher_for(inner: &Arc<Inner>, account: &Account) -> StoreResult<Arc<WatcherHandle>> {
    let creds = inner.credentials(account)?;
    let handle = {
        let mut watchers = inner.watchers();
        match watchers.get(&account.login).and_then(Weak::upgrade) {
            Some(h) => h,
            None => {
                watchers.retain(|_, w| w.strong_count() > 0);
                let (bell_tx, bell_rx) = mpsc::channel(BELL_QUEUE);
                let (ready_tx, ready_rx) = watch::channel(None);
                let cancel = CancellationToken::new();
                let overflow = Arc::new(AtomicBool::new(false));
                let handle =
                    Arc::new(WatcherHandle { cancel: cancel.clone(), bells: bell_tx, overflow: overflow.clone(), ready: ready_rx });
                watchers.insert(account.login.clone(), Arc::downgrade(&handle));
                let w = Watcher {
                    inner: inner.clone(),
                    login: account.login.clone(),
                    creds,
                    baseline: HashMap::new(),
                    have_baseline: false,
                    condstore: false,
                    idle_inbox: true,
                    overflow,
                };
                tokio::spawn(w.run(bell_rx, cancel, ready_tx));
                handle
            }
        }
    };
    let mut ready = handle.ready.clone();
    let wait = inner.op_timeout() * 2 + Duration::from_secs(1);
    let outcome = match tokio::time::timeout(wait, ready.wait_for(Option::is_some)).await {
        Ok(Ok(r)) => r.clone().unwrap_or(Ok(())),
        Ok(Err(_)) => Err("the watcher stopped".to_string()),
        Err(_) => Err("the IMAP server did not answer in time".to_string()),
    };
    match outcome {
        Ok(()) => Ok(handle),
        Err(e) => {
            let mut watchers = inner.watchers();
            if watchers.get(&account.login).is_some_and(|w| w.as_ptr() == Arc::as_ptr(&handle)) {
                watchers.remove(&account.login);
            }
            Err(StoreError::Unavailable(format!("cannot watch the IMAP server: {e}")))
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Notify,
    Idle,
}

enum End {
    Stopped,
    Broken(StoreError),
}

struct Watcher {
    inner: Arc<Inner>,
    login: Arc<str>,
    creds: Credentials,
    baseline: HashMap<String, FolderStatus>,
    have_baseline: bool,
    condstore: bool,
    /// INBOX is EXAMINEd and IDLEd on (see `start`).
    idle_inbox: bool,
    overflow: Arc<AtomicBool>,
}

/// The kinds of change between two STATUS of one mailbox.
pub fn diff(old: &FolderStatus, new: &FolderStatus) -> Vec<ChangeKind> {
    if new.uidvalidity != old.uidvalidity {
        return vec![ChangeKind::MessageNew, ChangeKind::MessageExpunged];
    }
    let mut kinds = Vec::new();
    let added = new.uidnext.saturating_sub(old.uidnext);
    if added > 0 {
        kinds.push(ChangeKind::MessageNew);
    }
    if old.messages as u64 + added as u64 > new.messages as u64 {
        kinds.push(ChangeKind::MessageExpunged);
    }
    if kinds.is_empty() && new.highest_modseq > old.highest_modseq {
        kinds.push(ChangeKind::MessageFlags);
    }
    kinds
}

impl Watcher {
    fn publish(&self, folder: &str, kind: ChangeKind, origin: Origin) {
        tracing::debug!(user = %self.login, folder, ?kind, ?origin, "store change");
        self.inner
            .feed
            .publish(&self.login, StoreChange { folder: FolderId(folder.to_string()), kind, origin, committed_at: Instant::now() });
    }

    async fn bounded<T>(&self, f: impl std::future::Future<Output = Result<T, ImapError>>) -> StoreResult<T> {
        match tokio::time::timeout(self.inner.op_timeout(), f).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(StoreError::Unavailable("the IMAP server did not answer in time".into())),
        }
    }

    /// A new STATUS of `name`: publishes the difference and moves the baseline. Returns false
    /// when the mailbox is not in the baseline (a sweep is needed).
    async fn observe(&mut self, name: &str, attrs: StatusAttrs) -> bool {
        let Some(old) = self.baseline.get(name).copied() else { return false };
        let new = attrs.over(old);
        let kinds = diff(&old, &new);
        self.baseline.insert(name.to_string(), new);
        if kinds.is_empty() {
            return true;
        }
        let origin = if self.condstore && new.uidvalidity == old.uidvalidity && new.highest_modseq > old.highest_modseq {
            self.inner.ledger.attribute(&self.login, name, old.highest_modseq, new.highest_modseq).await
        } else {
            Origin::Server
        };
        for kind in kinds {
            self.publish(name, kind, origin.clone());
        }
        true
    }

    /// Lists every mailbox with its status: hierarchy changes and status changes against the
    /// baseline are published; the result becomes the baseline.
    async fn sweep(&mut self, s: &mut Session) -> StoreResult<()> {
        let entries = self.bounded(commands::list(s, true)).await?;
        let fresh: HashMap<String, FolderStatus> = entries
            .into_iter()
            .filter(|e| e.selectable())
            .map(|e| (e.name.clone(), e.status.unwrap_or_default().over(FolderStatus::default())))
            .collect();
        if self.have_baseline {
            let old_names: HashSet<&String> = self.baseline.keys().collect();
            let new_names: HashSet<&String> = fresh.keys().collect();
            let changed: Vec<&str> = old_names.symmetric_difference(&new_names).map(|n| n.as_str()).collect();
            if !changed.is_empty() {
                let origin = self.inner.ledger.attribute_names(&self.login, &changed).await;
                for name in &changed {
                    self.publish(name, ChangeKind::Hierarchy, origin.clone());
                }
            }
            for (name, status) in &fresh {
                if self.baseline.contains_key(name) {
                    let attrs = StatusAttrs {
                        uidvalidity: Some(status.uidvalidity),
                        uidnext: Some(status.uidnext),
                        messages: Some(status.messages),
                        highest_modseq: self.condstore.then_some(status.highest_modseq),
                    };
                    self.observe(name, attrs).await;
                }
            }
        }
        self.baseline = fresh;
        self.have_baseline = true;
        Ok(())
    }

    /// STATUS of the named mailboxes (a doorbell, an IDLE wake-up).
    async fn check(&mut self, s: &mut Session, names: &[String]) -> StoreResult<bool> {
        let mut need_sweep = false;
        for name in names {
            if !self.baseline.contains_key(name) {
                need_sweep = true;
                continue;
            }
            // STATUS of the selected mailbox (INBOX under IDLE) shows the session's view,
            // which only a NOOP brings up to date.
            if s.selected.as_ref().is_some_and(|sel| decode_name(&sel.name) == *name) {
                let reply = self.bounded(s.command("NOOP")).await?;
                need_sweep |= self.absorb(reply.untagged).await?;
            }
            let items = commands::status_items(s);
            let command = vec![super::wire::Arg::Text("STATUS".into()), super::wire::mailbox(name), super::wire::Arg::Text(items.into())];
            let reply = self.bounded(s.run(command)).await?;
            // Gone (deleted or renamed): the sweep publishes the hierarchy change.
            need_sweep |= reply.done.status != Outcome::Ok;
            // The reply holds this mailbox's STATUS, and any NOTIFY lines that came with it.
            need_sweep |= self.absorb(reply.untagged).await?;
        }
        Ok(need_sweep)
    }

    /// Unsolicited responses of NOTIFY (or a command's reply): STATUS lines are
    /// observations, LIST lines and overflows call for a sweep.
    async fn absorb(&mut self, untagged: Vec<Untagged>) -> Result<bool, StoreError> {
        let mut need_sweep = false;
        for u in untagged {
            match u {
                Untagged::Parsed(Response::MailboxData(MailboxDatum::Status { mailbox, status })) => {
                    let name = decode_name(&mailbox);
                    if !self.observe(&name, StatusAttrs::from_items(&status)).await {
                        need_sweep = true;
                    }
                }
                Untagged::Parsed(Response::MailboxData(MailboxDatum::List(_))) => need_sweep = true,
                Untagged::Parsed(Response::Data { status: Status::Bye, .. }) => {
                    return Err(StoreError::Unavailable("the IMAP server said BYE".into()));
                }
                Untagged::Parsed(Response::Data { outcome, .. })
                    if outcome.information.as_deref().is_some_and(|i| i.to_ascii_uppercase().contains("NOTIFICATIONOVERFLOW")) =>
                {
                    need_sweep = true;
                }
                Untagged::Raw(raw) => {
                    let line = String::from_utf8_lossy(&raw).to_ascii_uppercase();
                    // Extended LIST data (`("OLDNAME" …)`) is beyond imap-proto.
                    if line.starts_with("* LIST") || line.contains("NOTIFICATIONOVERFLOW") {
                        need_sweep = true;
                    }
                }
                _ => {}
            }
        }
        Ok(need_sweep)
    }

    /// Connects, logs in, sweeps (diffing against the old baseline after a reconnect), and
    /// arms NOTIFY or IDLE.
    async fn start(&mut self) -> StoreResult<(Session, tokio::sync::OwnedSemaphorePermit, Mode, Option<String>)> {
        let (mut s, permit) = self.inner.pool.dedicated(&self.creds).await?;
        self.condstore = s.condstore;
        self.sweep(&mut s).await?;
        // INBOX, where most news lands, is watched as the selected mailbox under IDLE: Dovecot
        // reports it from the mailbox's own index, which does not go stale the way its NOTIFY
        // watch of other mailboxes (on the mailbox list index) can. With the webhook in front
        // and NOTIFY behind, INBOX is not selected: a webhook's STATUS of a selected mailbox
        // needs a NOOP first, and Dovecot answers that NOOP in two writes under NOTIFY, which
        // Nagle and delayed ACKs turn into a 40 ms stall on every push.
        let notify = s.caps.has("NOTIFY");
        self.idle_inbox = !(notify && self.inner.opts.webhook);
        if self.idle_inbox && !self.bounded(commands::examine(&mut s, "INBOX")).await? {
            return Err(StoreError::Internal("no INBOX to watch".into()));
        }
        let mut mode = Mode::Idle;
        if notify {
            let reply = self.bounded(s.command(NOTIFY_SET)).await?;
            if reply.done.status == Outcome::Ok {
                mode = Mode::Notify;
            } else {
                tracing::info!(user = %self.login, reply = %reply.done, "NOTIFY refused; watching with IDLE");
            }
        }
        // IDLE as well under NOTIFY: Dovecot reports the selected mailbox's news only while
        // the client idles (it missed a first delivery to INBOX otherwise).
        let tag = self.arm_idle(&mut s).await?;
        Ok((s, permit, mode, Some(tag)))
    }

    async fn arm_idle(&mut self, s: &mut Session) -> StoreResult<String> {
        if !self.idle_inbox {
            return Ok(String::new());
        }
        if s.selected.as_ref().is_none_or(|sel| sel.name != "INBOX") && !self.bounded(commands::examine(s, "INBOX")).await? {
            return Err(StoreError::Internal("no INBOX to IDLE on".into()));
        }
        if !s.caps.has("IDLE") {
            // Neither NOTIFY nor IDLE: the periodic sweep is all there is.
            return Ok(String::new());
        }
        self.bounded(s.idle_start()).await
    }

    async fn run(mut self, mut bells: mpsc::Receiver<Bell>, cancel: CancellationToken, ready: watch::Sender<Option<Result<(), String>>>) {
        let mut backoff = RECONNECT_MIN;
        loop {
            let started = tokio::select! {
                r = self.start() => r,
                _ = cancel.cancelled() => return,
            };
            match started {
                Ok((mut s, permit, mode, idle_tag)) => {
                    ready.send_replace(Some(Ok(())));
                    backoff = RECONNECT_MIN;
                    let end = self.serve(&mut s, mode, idle_tag, &mut bells, &cancel).await;
                    match end {
                        End::Stopped => {
                            let _ = tokio::time::timeout(Duration::from_secs(2), s.logout()).await;
                            drop(permit);
                            return;
                        }
                        End::Broken(e) => {
                            tracing::info!(user = %self.login, error = %e, "IMAP watcher connection lost; reconnecting");
                            drop(s);
                            drop(permit);
                        }
                    }
                }
                Err(e) => {
                    if !self.have_baseline {
                        ready.send_replace(Some(Err(e.to_string())));
                        return;
                    }
                    tracing::info!(user = %self.login, error = %e, retry_ms = backoff.as_millis() as u64, "IMAP watcher cannot reconnect yet");
                    if self.offline(backoff, &mut bells, &cancel).await {
                        return;
                    }
                    backoff = (backoff * 2).min(RECONNECT_MAX);
                }
            }
        }
    }

    /// Waits out a reconnect backoff; doorbells meanwhile are published as they come.
    /// Returns true when stopped.
    async fn offline(&mut self, d: Duration, bells: &mut mpsc::Receiver<Bell>, cancel: &CancellationToken) -> bool {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return false,
                _ = cancel.cancelled() => return true,
                bell = bells.recv() => match bell {
                    Some(bell) => {
                        for (name, kind) in bell.direct {
                            self.publish(&name, kind, Origin::Server);
                        }
                    }
                    None => return true,
                },
            }
        }
    }

    async fn serve(
        &mut self,
        s: &mut Session,
        mode: Mode,
        mut idle_tag: Option<String>,
        bells: &mut mpsc::Receiver<Bell>,
        cancel: &CancellationToken,
    ) -> End {
        let period = self.inner.opts.watch_rearm;
        let mut rearm = tokio::time::Instant::now() + period;
        loop {
            let idling = idle_tag.as_deref().is_some_and(|t| !t.is_empty());
            let waiting_on_server = mode == Mode::Notify || idling;
            let event = tokio::select! {
                _ = cancel.cancelled() => {
                    if let Some(tag) = idle_tag.take().filter(|t| !t.is_empty()) {
                        let _ = tokio::time::timeout(Duration::from_secs(2), s.idle_done(&tag)).await;
                    }
                    return End::Stopped;
                }
                r = s.read_response(), if waiting_on_server => Event::Server(r),
                b = bells.recv() => match b { Some(b) => Event::Bell(b), None => return End::Stopped },
                _ = tokio::time::sleep_until(rearm) => Event::Rearm,
            };
            let result = self.handle(s, mode, &mut idle_tag, event, bells).await;
            match result {
                Ok(rearmed) => {
                    if rearmed {
                        rearm = tokio::time::Instant::now() + period;
                    }
                }
                Err(e) => return End::Broken(e),
            }
        }
    }

    /// Handles one event; returns whether the watch was re-armed.
    async fn handle(
        &mut self,
        s: &mut Session,
        mode: Mode,
        idle_tag: &mut Option<String>,
        event: Event,
        bells: &mut mpsc::Receiver<Bell>,
    ) -> StoreResult<bool> {
        match &event {
            Event::Server(Err(e)) => return Err(StoreError::Unavailable(format!("IMAP server: {e}"))),
            Event::Server(Ok(Untagged::Parsed(Response::Data { status: Status::Bye, .. }))) => {
                return Err(StoreError::Unavailable("the IMAP server said BYE".into()));
            }
            // Nothing to look into: stay idle.
            Event::Server(Ok(u)) if !relevant(u) => return Ok(false),
            _ => {}
        }
        // Leave IDLE before any command; keep what arrived meanwhile.
        let mut pending: Vec<Untagged> = Vec::new();
        if let Some(tag) = idle_tag.take().filter(|t| !t.is_empty()) {
            let reply: Reply = self.bounded(s.idle_done(&tag)).await?;
            pending.extend(reply.untagged);
        }
        let mut need_sweep = self.overflow.swap(false, Ordering::Relaxed);
        let mut names: Vec<String> = Vec::new();
        let mut rearmed = false;
        match event {
            Event::Server(Ok(u)) => pending.push(u),
            Event::Server(Err(_)) => unreachable!("handled above"),
            Event::Bell(first) => {
                let mut bell = Some(first);
                // Coalesce everything already queued into one round of STATUS.
                while let Some(b) = bell {
                    need_sweep |= b.hierarchy;
                    for m in b.mailboxes {
                        if !names.contains(&m) {
                            names.push(m);
                        }
                    }
                    bell = bells.try_recv().ok();
                }
            }
            Event::Rearm => {
                need_sweep = true;
                if mode == Mode::Notify {
                    let reply = self.bounded(s.command(NOTIFY_SET)).await?;
                    pending.extend(reply.untagged);
                }
                rearmed = true;
            }
        }
        // News of the examined INBOX (EXISTS, FETCH, VANISHED) calls for a look at INBOX;
        // STATUS and LIST lines (NOTIFY's other mailboxes) are absorbed as they are.
        let (inbox_news, rest): (Vec<Untagged>, Vec<Untagged>) = pending.into_iter().partition(inbox_event);
        if !inbox_news.is_empty() {
            // Without CONDSTORE a flag change shows only as a FETCH.
            if !self.condstore && inbox_news.iter().any(|u| matches!(u, Untagged::Parsed(Response::Fetch(..)))) {
                self.publish("INBOX", ChangeKind::MessageFlags, Origin::Server);
            }
            if !names.iter().any(|n| n == "INBOX") {
                names.push("INBOX".into());
            }
        }
        need_sweep |= self.absorb(rest).await?;
        need_sweep |= self.check(s, &names).await?;
        if need_sweep {
            // The sweep's own replies are the new baseline; LIST lines in it are ours.
            self.sweep(s).await?;
        }
        *idle_tag = Some(self.arm_idle(s).await?);
        Ok(rearmed)
    }
}

/// Whether an unsolicited response calls for a look: news of INBOX, NOTIFY's STATUS and
/// LIST lines, an overflow.
fn relevant(u: &Untagged) -> bool {
    match u {
        Untagged::Parsed(Response::MailboxData(MailboxDatum::Status { .. } | MailboxDatum::List(_))) => true,
        Untagged::Parsed(Response::Data { outcome, .. }) => {
            outcome.information.as_deref().is_some_and(|i| i.to_ascii_uppercase().contains("NOTIFICATIONOVERFLOW"))
        }
        Untagged::Raw(raw) => {
            let line = String::from_utf8_lossy(raw).to_ascii_uppercase();
            line.starts_with("* LIST") || line.starts_with("* STATUS") || line.contains("NOTIFICATIONOVERFLOW")
        }
        other => inbox_event(other),
    }
}

/// An untagged response about the examined mailbox's messages.
fn inbox_event(u: &Untagged) -> bool {
    matches!(
        u,
        Untagged::Parsed(
            Response::MailboxData(MailboxDatum::Exists(_))
                | Response::Expunge(_)
                | Response::Vanished { earlier: false, .. }
                | Response::Fetch(..)
        )
    )
}

enum Event {
    Server(Result<Untagged, ImapError>),
    Bell(Bell),
    Rearm,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(uidnext: u32, messages: u32, modseq: u64) -> FolderStatus {
        FolderStatus { uidvalidity: 7, uidnext, messages, highest_modseq: modseq }
    }

    #[test]
    fn status_differences_become_change_kinds() {
        assert_eq!(diff(&st(5, 4, 10), &st(5, 4, 10)), vec![]);
        assert_eq!(diff(&st(5, 4, 10), &st(6, 5, 11)), vec![ChangeKind::MessageNew]);
        assert_eq!(diff(&st(5, 4, 10), &st(5, 3, 11)), vec![ChangeKind::MessageExpunged]);
        assert_eq!(diff(&st(5, 4, 10), &st(5, 4, 11)), vec![ChangeKind::MessageFlags]);
        // A move in and one out between two looks.
        assert_eq!(diff(&st(5, 4, 10), &st(6, 4, 12)), vec![ChangeKind::MessageNew, ChangeKind::MessageExpunged]);
        let mut recreated = st(5, 4, 10);
        recreated.uidvalidity = 8;
        assert_eq!(diff(&st(5, 4, 10), &recreated), vec![ChangeKind::MessageNew, ChangeKind::MessageExpunged]);
    }
}
