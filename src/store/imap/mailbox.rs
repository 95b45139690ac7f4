//! One user's mailbox on the IMAP server: the [`Mailbox`] trait, each method one command
//! sequence on a pooled connection, bounded by the operation timeout.
//!
//! Changes made for a device (origin `Device`) also prove which MODSEQs they produced, for
//! [`super::ledger`]: HIGHESTMODSEQ/UIDNEXT/MESSAGES are read before and after, STOREs are
//! guarded with `UNCHANGEDSINCE`, and any untagged response about something the operation
//! did not touch means another session was at work, so nothing is claimed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use imap_proto::{MailboxDatum, Response, ResponseCode};

use super::commands::{self, ListEntry, StatusAttrs, encode_name, fetches};
use super::pool::{Credentials, Lease};
use super::session::{ImapError, Outcome, Reply, Session, Untagged};
use super::wire::{self, Arg};
use super::{Inner, RoleNames};
use crate::store::{
    Account, FlagChange, Flags, Folder, FolderId, FolderStatus, Mailbox, MessageState, ModSeq, Origin, Quota, SearchHit, SearchQuery,
    SpecialUse, StoreError, StoreResult, Uid,
};

/// Slack around SEARCH SINCE/BEFORE dates: IMAP compares dates only, in each message's own
/// time zone, so candidates are widened by two days and then filtered by INTERNALDATE.
const DATE_SLACK: i64 = 2 * 86_400;
/// Longest folder name component.
const MAX_FOLDER_NAME: usize = 255;

pub struct ImapMailbox {
    inner: Arc<Inner>,
    account: Account,
    creds: Credentials,
    /// The device changes are made for, when they are a device's.
    device: Option<Arc<str>>,
    /// Synthetic MODSEQ bases by folder, fixed for this handle's life (no CONDSTORE).
    synthetic: Mutex<HashMap<String, u64>>,
    /// Messages the last listing returned, and bodies read ahead for them.
    read_ahead: Mutex<ReadAhead>,
}

/// A sync reads the bodies of the messages a listing (`changed_since`, `messages_below`)
/// just returned, one by one: one round trip each. Reading the next ones in the same UID
/// FETCH saves most of those round trips; bounded in bytes and count, and gone with the
/// handle (one request).
#[derive(Default)]
struct ReadAhead {
    folder: String,
    /// (UID, size) in the order the listing returned them.
    order: Vec<(Uid, u64)>,
    bodies: HashMap<Uid, Bytes>,
}

/// Most bytes and messages read ahead at once.
const READ_AHEAD_BYTES: u64 = 4 * 1024 * 1024;
const READ_AHEAD_COUNT: usize = 64;

impl ReadAhead {
    fn listed(&mut self, folder: &FolderId, states: &[MessageState]) {
        if self.folder != folder.0 {
            self.bodies.clear();
        }
        self.folder = folder.0.clone();
        self.order = states.iter().map(|m| (m.uid, m.size)).collect();
    }

    fn take(&mut self, folder: &FolderId, uid: Uid) -> Option<Bytes> {
        if self.folder == folder.0 { self.bodies.remove(&uid) } else { None }
    }

    /// `uid` and the listed messages after it, within the bounds.
    fn plan(&self, folder: &FolderId, uid: Uid) -> Vec<Uid> {
        let mut out = vec![uid];
        if self.folder != folder.0 {
            return out;
        }
        let Some(at) = self.order.iter().position(|(u, _)| *u == uid) else { return out };
        let mut bytes = self.order[at].1;
        for &(u, size) in &self.order[at + 1..] {
            if out.len() >= READ_AHEAD_COUNT || bytes + size > READ_AHEAD_BYTES {
                break;
            }
            if !self.bodies.contains_key(&u) {
                bytes += size;
                out.push(u);
            }
        }
        out
    }
}

/// Runs `body` (which uses the session `$s`) on a leased connection, bounded by the
/// operation timeout; read-only sequences (`$retry`) are retried once on a fresh connection
/// when a pooled one turns out to be dead.
macro_rules! on_session {
    ($self:ident, $retry:expr, |$s:ident| $body:expr) => {{
        let mut attempt = 0;
        loop {
            let mut lease = $self.lease().await?;
            let result = {
                let $s: &mut Session = &mut lease;
                tokio::time::timeout($self.inner.op_timeout(), $body).await
            };
            match settle(&mut lease, result) {
                Err(StoreError::Unavailable(_)) if $retry && lease.reused && attempt == 0 => {
                    attempt += 1;
                    continue;
                }
                other => break other,
            }
        }
    }};
}

fn settle<T>(lease: &mut Lease, result: Result<StoreResult<T>, tokio::time::error::Elapsed>) -> StoreResult<T> {
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            if matches!(e, StoreError::Unavailable(_)) {
                lease.poison();
            }
            Err(e)
        }
        Err(_) => {
            lease.poison();
            Err(StoreError::Unavailable("the IMAP server did not answer in time".into()))
        }
    }
}

/// Assigns roles: INBOX, then SPECIAL-USE attributes, then the configured names.
pub fn assign_roles(entries: &[ListEntry], names: &RoleNames) -> Vec<Option<SpecialUse>> {
    let mut roles: Vec<Option<SpecialUse>> = vec![None; entries.len()];
    let mut taken: HashSet<SpecialUse> = HashSet::new();
    for (i, e) in entries.iter().enumerate() {
        if e.name == "INBOX" {
            roles[i] = Some(SpecialUse::Inbox);
            taken.insert(SpecialUse::Inbox);
        }
    }
    for (attr, role) in [
        ("\\drafts", SpecialUse::Drafts),
        ("\\sent", SpecialUse::Sent),
        ("\\trash", SpecialUse::Trash),
        ("\\junk", SpecialUse::Junk),
        ("\\archive", SpecialUse::Archive),
    ] {
        if let Some(i) = entries.iter().position(|e| e.selectable() && e.attrs.iter().any(|a| a == attr)) {
            if roles[i].is_none() && taken.insert(role) {
                roles[i] = Some(role);
            }
        }
    }
    for (name, role) in [
        (&names.drafts, SpecialUse::Drafts),
        (&names.sent, SpecialUse::Sent),
        (&names.trash, SpecialUse::Trash),
        (&names.junk, SpecialUse::Junk),
        (&names.archive, SpecialUse::Archive),
    ] {
        if taken.contains(&role) || name.is_empty() {
            continue;
        }
        if let Some(i) = entries.iter().position(|e| e.selectable() && e.name.eq_ignore_ascii_case(name)) {
            if roles[i].is_none() {
                roles[i] = Some(role);
                taken.insert(role);
            }
        }
    }
    roles
}

/// The folder tree from LIST entries (selectable mailboxes only).
pub fn build_folders(entries: &[ListEntry], names: &RoleNames, status: impl Fn(&ListEntry) -> FolderStatus) -> Vec<Folder> {
    let roles = assign_roles(entries, names);
    let selectable: HashSet<&str> = entries.iter().filter(|e| e.selectable()).map(|e| e.name.as_str()).collect();
    let mut out: Vec<Folder> = entries
        .iter()
        .zip(roles)
        .filter(|(e, _)| e.selectable())
        .map(|(e, role)| {
            let (parent, name) = match e.delimiter.as_deref().filter(|d| !d.is_empty()).and_then(|d| e.name.rsplit_once(d)) {
                Some((p, n)) => (selectable.contains(p).then(|| FolderId(p.to_string())), n.to_string()),
                None => (None, e.name.clone()),
            };
            Folder { id: FolderId(e.name.clone()), name, parent, role, status: status(e) }
        })
        .collect();
    out.sort_by(|a, b| (a.role != Some(SpecialUse::Inbox), &a.id).cmp(&(b.role != Some(SpecialUse::Inbox), &b.id)));
    out
}

/// The Message-ID of a raw message, if it has one (for servers without UIDPLUS).
fn message_id(raw: &[u8]) -> Option<String> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(raw.len().min(64 * 1024));
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n").peekable();
    while let Some(line) = lines.next() {
        if line.len() >= 11 && line.is_char_boundary(11) && line[..11].eq_ignore_ascii_case("message-id:") {
            let mut value = line[11..].trim().to_string();
            while let Some(next) = lines.peek().filter(|l| l.starts_with([' ', '\t'])) {
                value.push_str(next.trim());
                lines.next();
            }
            return (!value.is_empty()).then_some(value);
        }
    }
    None
}

/// The UIDs a `[MODIFIED set]` response code names (CONDSTORE's refused STOREs).
fn modified_uids(text: &str) -> Vec<Uid> {
    let Some(start) = text.to_ascii_uppercase().find("[MODIFIED ") else { return Vec::new() };
    let rest = &text[start + 10..];
    let set = rest.split(']').next().unwrap_or("");
    let mut out = Vec::new();
    for part in set.split(',') {
        match part.split_once(':') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<Uid>(), b.trim().parse::<Uid>()) {
                    out.extend(a.min(b)..=a.max(b).min(a.min(b).saturating_add(100_000)));
                }
            }
            None => out.extend(part.trim().parse::<Uid>().ok()),
        }
    }
    out
}

/// What an operation for a device saw, to decide whether its MODSEQs are provably its own.
#[derive(Default)]
struct Observed {
    /// UIDs the operation touched, and the MODSEQs its own FETCH responses reported.
    touched: HashSet<Uid>,
    expunged: HashSet<Uid>,
    appended: u32,
    /// Something that was not ours happened (or we cannot tell).
    foreign: bool,
}

impl Observed {
    /// Reads a reply of one of our commands. `own_fetch`: FETCHes of touched UIDs are ours.
    fn read(&mut self, reply: &Reply, own_fetch: bool) {
        for u in &reply.untagged {
            match u {
                Untagged::Parsed(Response::Fetch(_, attrs)) => {
                    let f = commands::fetched(attrs);
                    match f.uid {
                        Some(uid) if own_fetch && self.touched.contains(&uid) => {}
                        _ => self.foreign = true,
                    }
                }
                Untagged::Parsed(Response::Vanished { earlier: false, uids }) => {
                    for r in uids {
                        if r.clone().any(|u| !self.expunged.contains(&u)) {
                            self.foreign = true;
                        }
                    }
                }
                Untagged::Parsed(Response::Expunge(_)) if self.expunged.is_empty() => self.foreign = true,
                Untagged::Parsed(Response::MailboxData(MailboxDatum::Exists(_))) if self.appended == 0 => self.foreign = true,
                // FLAGS/PERMANENTFLAGS/HIGHESTMODSEQ/RECENT updates, COPYUID: neutral.
                _ => {}
            }
        }
        if reply.done.text.to_ascii_uppercase().contains("[MODIFIED") {
            self.foreign = true;
        }
    }
}

/// Folder state before an operation, for proving its MODSEQs.
struct Before {
    name: String,
    wire: String,
    status: StatusAttrs,
}

impl ImapMailbox {
    pub(super) fn new(inner: Arc<Inner>, account: Account, creds: Credentials, origin: Origin) -> Self {
        let device = match origin {
            Origin::Device(d) => Some(d),
            Origin::Server => None,
        };
        ImapMailbox { inner, account, creds, device, synthetic: Mutex::new(HashMap::new()), read_ahead: Mutex::new(ReadAhead::default()) }
    }

    async fn lease(&self) -> StoreResult<Lease> {
        self.inner.pool.lease(&self.account.login, &self.creds).await
    }

    fn synthetic_base(&self, folder: &str) -> u64 {
        let mut map = self.synthetic.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(folder.to_string()).or_insert_with(|| self.inner.synthetic_base())
    }

    fn folder_status(&self, s: &Session, folder: &str, st: StatusAttrs) -> FolderStatus {
        let mut status = st.over(FolderStatus::default());
        if !s.condstore {
            status.highest_modseq = self.synthetic_base(folder) + status.uidnext as u64;
        }
        status
    }

    /// Selects `folder` or fails with `FolderNotFound`.
    async fn select(&self, s: &mut Session, folder: &FolderId) -> StoreResult<String> {
        let wire_name = encode_name(&folder.0);
        match commands::select(s, &wire_name).await? {
            Some(_) => Ok(wire_name),
            None => Err(StoreError::FolderNotFound),
        }
    }

    /// Whether this operation should prove its MODSEQs (a device's, with CONDSTORE).
    fn tracking(&self, s: &Session) -> bool {
        self.device.is_some() && s.condstore
    }

    async fn before(&self, s: &mut Session, folder: &str) -> StoreResult<Before> {
        let wire_name = encode_name(folder);
        let status = commands::status(s, &wire_name).await?;
        Ok(Before { name: folder.to_string(), wire: wire_name, status })
    }

    /// Reads the state after the operation, flushes pending updates of the selected folder,
    /// and records `(h0, h1]` when nothing foreign can have happened.
    async fn prove(
        &self,
        s: &mut Session,
        before: Before,
        mut seen: Observed,
        uidnext_delta: u32,
        messages_delta: i64,
        selected: bool,
    ) -> StoreResult<()> {
        // NOOP, STATUS, NOOP: whatever another session committed up to h1 is reported by one
        // of the two NOOPs (STATUS of the selected mailbox itself runs a NOOP first).
        let after = if selected {
            let noop = s.command("NOOP").await?;
            seen.read(&noop, false);
            let items = commands::status_items(s);
            let reply = s.run(vec![Arg::Text("STATUS".into()), wire::string(&before.wire), Arg::Text(items.into())]).await?.ok()?;
            let mut after = StatusAttrs::default();
            for r in reply.data() {
                if let Response::MailboxData(MailboxDatum::Status { status, .. }) = r {
                    after = StatusAttrs::from_items(status);
                }
            }
            seen.read(&reply, false);
            let noop = s.command("NOOP").await?;
            seen.read(&noop, false);
            after
        } else {
            commands::status(s, &before.wire).await?
        };
        let (Some(h0), Some(h1)) = (before.status.highest_modseq, after.highest_modseq) else { return Ok(()) };
        let uidnext_ok = match (before.status.uidnext, after.uidnext) {
            (Some(a), Some(b)) => b == a + uidnext_delta,
            _ => false,
        };
        let messages_ok = match (before.status.messages, after.messages) {
            (Some(a), Some(b)) => b as i64 == a as i64 + messages_delta,
            _ => false,
        };
        // A folder we do not have selected shows us nothing of other sessions: only a single
        // MODSEQ step, which our change certainly took, is provably ours.
        let steps_ok = selected || h1 == h0 + 1;
        if !seen.foreign
            && uidnext_ok
            && messages_ok
            && steps_ok
            && let Some(device) = &self.device
        {
            self.inner.ledger.record(&self.account.login, &before.name, h0, h1, device);
        }
        Ok(())
    }

    async fn folders_on(&self, s: &mut Session) -> StoreResult<Vec<Folder>> {
        let entries = commands::list(s, true).await?;
        let condstore = s.condstore;
        Ok(build_folders(&entries, &self.inner.opts.roles, |e| {
            let mut st = e.status.unwrap_or_default().over(FolderStatus::default());
            if !condstore {
                st.highest_modseq = self.synthetic_base(&e.name) + st.uidnext as u64;
            }
            st
        }))
    }

    async fn status_on(&self, s: &mut Session, folder: &FolderId) -> StoreResult<FolderStatus> {
        let wire_name = encode_name(&folder.0);
        match commands::status(s, &wire_name).await {
            Ok(st) => Ok(self.folder_status(s, &folder.0, st)),
            Err(ImapError::No(c)) => {
                if commands::exists(s, &wire_name).await? {
                    Err(StoreError::Internal(format!("IMAP STATUS refused: {c}")))
                } else {
                    Err(StoreError::FolderNotFound)
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn changed_since_on(&self, s: &mut Session, folder: &FolderId, since: ModSeq, limit: usize) -> StoreResult<Vec<MessageState>> {
        self.select(s, folder).await?;
        if s.condstore {
            let reply = s.command(&format!("UID FETCH 1:* (UID MODSEQ) (CHANGEDSINCE {since})")).await?.ok()?;
            let mut changed: Vec<(ModSeq, Uid)> =
                fetches(&reply).filter_map(|f| Some((f.modseq?, f.uid?))).filter(|(m, _)| *m > since).collect();
            changed.sort_unstable();
            changed.dedup_by_key(|(_, u)| *u);
            changed.sort_unstable();
            // Cut at `limit`, completing the last MODSEQ group.
            let mut end = changed.len().min(limit.max(1));
            while end > 0 && end < changed.len() && changed[end].0 == changed[end - 1].0 {
                end += 1;
            }
            let uids: Vec<Uid> = changed[..end].iter().map(|(_, u)| *u).collect();
            let cut = changed[..end].last().map_or(since, |(m, _)| *m);
            let mut states = commands::fetch_states(s, &uids, |_| 0).await?;
            // A message that changed again between the two FETCHes now has a MODSEQ past the
            // cut; it comes with a later call, after the messages it overtook.
            states.retain(|m| m.modseq <= cut);
            states.sort_by_key(|m| (m.modseq, m.uid));
            Ok(states)
        } else {
            let base = self.synthetic_base(&folder.0);
            let lo: Uid = if since < base { 1 } else { (since - base).saturating_add(1).min(u32::MAX as u64) as Uid };
            let uids = commands::uid_search(s, vec![Arg::Text(format!("UID {lo}:*"))]).await?;
            let uids: Vec<Uid> = uids.into_iter().filter(|u| *u >= lo).take(limit.max(1)).collect();
            let mut states = commands::fetch_states(s, &uids, |u| base + u as u64).await?;
            states.sort_by_key(|m| m.uid);
            Ok(states)
        }
    }

    async fn vanished_since_on(&self, s: &mut Session, folder: &FolderId, since: ModSeq) -> StoreResult<Option<Vec<Uid>>> {
        if !s.qresync {
            // The engine then compares UID sets; make sure the folder exists all the same.
            self.select(s, folder).await?;
            return Ok(None);
        }
        self.select(s, folder).await?;
        // An explicit range, not `1:*`: in an empty folder `*` names nothing.
        let reply = s.command(&format!("UID FETCH 1:4294967295 (UID) (CHANGEDSINCE {since} VANISHED)")).await?.ok()?;
        let mut uids = Vec::new();
        for r in reply.data() {
            if let Response::Vanished { earlier: true, uids: ranges } = r {
                for range in ranges {
                    for u in range.clone() {
                        if uids.len() >= 10_000_000 {
                            break;
                        }
                        uids.push(u);
                    }
                }
            }
        }
        uids.sort_unstable();
        uids.dedup();
        Ok(Some(uids))
    }

    /// UIDs below `below` received at or after `since` (by INTERNALDATE, exactly), highest
    /// first, at most `limit`, with their states.
    async fn messages_below_on(
        &self,
        s: &mut Session,
        folder: &FolderId,
        below: Uid,
        since: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<MessageState>> {
        self.select(s, folder).await?;
        if below <= 1 || limit == 0 {
            return Ok(Vec::new());
        }
        let mut criteria = vec![Arg::Text(format!("UID 1:{}", below - 1))];
        if let Some(t) = since {
            criteria.push(Arg::Text(format!("SINCE {}", wire::search_date(t - DATE_SLACK))));
        }
        let mut candidates = commands::uid_search(s, criteria).await?;
        candidates.retain(|u| *u < below);
        candidates.reverse();
        let base = self.synthetic_base(&folder.0);
        let mut out = Vec::with_capacity(limit);
        for chunk in candidates.chunks(limit.clamp(1, 1000)) {
            let mut states = commands::fetch_states(s, chunk, |u| base + u as u64).await?;
            states.sort_by_key(|m| std::cmp::Reverse(m.uid));
            for st in states {
                if since.is_none_or(|t| st.internal_date >= t) {
                    out.push(st);
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    async fn count_on(&self, s: &mut Session, folder: &FolderId, below: Option<Uid>, since: Option<i64>) -> StoreResult<u32> {
        self.select(s, folder).await?;
        let range = match below {
            Some(b) if b <= 1 => return Ok(0),
            Some(b) => format!("UID 1:{}", b - 1),
            None => "ALL".to_string(),
        };
        let Some(t) = since else {
            let uids = commands::uid_search(s, vec![Arg::Text(range)]).await?;
            return Ok(uids.iter().filter(|u| below.is_none_or(|b| **u < b)).count() as u32);
        };
        let candidates = commands::uid_search(s, vec![Arg::Text(format!("{range} SINCE {}", wire::search_date(t - DATE_SLACK)))]).await?;
        let sure: HashSet<Uid> = commands::uid_search(s, vec![Arg::Text(format!("{range} SINCE {}", wire::search_date(t + DATE_SLACK)))])
            .await?
            .into_iter()
            .collect();
        let candidates: Vec<Uid> = candidates.into_iter().filter(|u| below.is_none_or(|b| *u < b)).collect();
        let unsure: Vec<Uid> = candidates.iter().copied().filter(|u| !sure.contains(u)).collect();
        let mut n = candidates.len() - unsure.len();
        for chunk in unsure.chunks(2000) {
            let reply = s.command(&format!("UID FETCH {} (UID INTERNALDATE)", wire::uid_set(chunk))).await?.ok()?;
            let wanted: HashSet<Uid> = chunk.iter().copied().collect();
            let mut seen = HashSet::new();
            for f in fetches(&reply) {
                if let (Some(uid), Some(date)) = (f.uid, f.internal_date)
                    && wanted.contains(&uid)
                    && seen.insert(uid)
                    && date >= t
                {
                    n += 1;
                }
            }
        }
        Ok(n as u32)
    }

    /// Selects without a NOOP when already selected: for reading a message's (immutable)
    /// bytes, retried after a NOOP when the UID is missing (one round trip saved per read).
    /// Returns whether the view may be behind.
    async fn select_lazily(&self, s: &mut Session, folder: &FolderId) -> StoreResult<bool> {
        let wire_name = encode_name(&folder.0);
        let was_selected = s.selected.as_ref().is_some_and(|sel| sel.name == wire_name);
        match commands::select_as(s, &wire_name, false).await? {
            Some(_) => Ok(was_selected),
            None => Err(StoreError::FolderNotFound),
        }
    }

    /// `UID FETCH set BODY.PEEK[]`; the first UID must be found (after a NOOP if the view
    /// may be behind), the others are best effort.
    async fn fetch_on(&self, s: &mut Session, folder: &FolderId, uids: &[Uid]) -> StoreResult<HashMap<Uid, Bytes>> {
        let stale = self.select_lazily(s, folder).await?;
        let mut out = HashMap::new();
        for attempt in 0..2 {
            if attempt == 1 {
                if !stale {
                    break;
                }
                s.command("NOOP").await?.ok()?;
            }
            let reply = s.command(&format!("UID FETCH {} (UID BODY.PEEK[])", wire::uid_set(uids))).await?.ok()?;
            for f in fetches(&reply) {
                if let (Some(uid), Some(body)) = (f.uid, f.body)
                    && uids.contains(&uid)
                {
                    out.insert(uid, Bytes::from(body));
                }
            }
            if out.contains_key(&uids[0]) {
                return Ok(out);
            }
        }
        Err(StoreError::MessageNotFound)
    }

    async fn quota_on(&self, s: &mut Session) -> StoreResult<Quota> {
        if !s.caps.has("QUOTA") {
            return Ok(Quota { used_bytes: 0, limit_bytes: None });
        }
        let reply = s.command("GETQUOTAROOT INBOX").await?;
        let mut quota = Quota { used_bytes: 0, limit_bytes: None };
        for r in reply.data() {
            if let Response::Quota(q) = r {
                for res in &q.resources {
                    if matches!(res.name, imap_proto::rfc2087::QuotaResourceName::Storage) {
                        // STORAGE is in units of 1024 octets.
                        quota.used_bytes = quota.used_bytes.max(res.usage * 1024);
                        let limit = res.limit * 1024;
                        quota.limit_bytes = Some(quota.limit_bytes.map_or(limit, |l| l.min(limit)));
                    }
                }
            }
        }
        Ok(quota)
    }

    async fn append_on(
        &self,
        s: &mut Session,
        folder: &FolderId,
        raw: &[u8],
        flags: Flags,
        internal_date: Option<i64>,
    ) -> StoreResult<Uid> {
        let wire_name = self.select(s, folder).await?;
        let tracking = self.tracking(s);
        let _pending = tracking.then(|| self.inner.ledger.begin(&self.account.login, &[folder.0.as_str()]));
        let before = self.before(s, &folder.0).await?;
        let mut command = vec![Arg::Text("APPEND".into()), wire::mailbox(&folder.0)];
        command.push(Arg::Text(format!("({})", flags.imap_names().join(" "))));
        if let Some(date) = internal_date {
            command.push(Arg::Text(wire::date_time(date)));
        }
        command.push(Arg::Literal(raw.to_vec()));
        let reply = s.run(command).await?;
        if reply.done.status != Outcome::Ok {
            return Err(self.append_refused(s, reply).await);
        }
        let mut seen = Observed { appended: 1, ..Observed::default() };
        seen.read(&reply, false);
        let uid = match &reply.done.code {
            Some(ResponseCode::AppendUid(_, set)) => wire::expand_uid_set(set, 1).first().copied(),
            _ => None,
        };
        let uid = match uid {
            Some(u) => u,
            None => self.find_new_uid(s, &wire_name, raw, before.status.uidnext.unwrap_or(1)).await?,
        };
        if tracking {
            seen.touched.insert(uid);
            self.prove(s, before, seen, 1, 1, true).await?;
        }
        Ok(uid)
    }

    /// Maps a refused APPEND to the store's error.
    async fn append_refused(&self, s: &mut Session, reply: Reply) -> StoreError {
        let c = reply.done;
        if c.has_code("OVERQUOTA") || c.text.to_ascii_lowercase().contains("quota") {
            let q = self.quota_on(s).await.unwrap_or(Quota { used_bytes: 0, limit_bytes: None });
            return StoreError::QuotaExceeded { used: q.used_bytes, limit: q.limit_bytes.unwrap_or(q.used_bytes) };
        }
        if c.has_code("TOOBIG") {
            return StoreError::MessageTooLarge { size: 0, limit: self.inner.opts.max_message_bytes };
        }
        if c.has_code("TRYCREATE") || c.has_code("NONEXISTENT") {
            return StoreError::FolderNotFound;
        }
        StoreError::Internal(format!("IMAP APPEND refused: {c}"))
    }

    /// The UID of a message just appended, without UIDPLUS: by Message-ID, else the highest
    /// UID at or above the UIDNEXT seen before.
    async fn find_new_uid(&self, s: &mut Session, wire_name: &str, raw: &[u8], uidnext_before: Uid) -> StoreResult<Uid> {
        commands::select(s, wire_name).await?;
        s.command("NOOP").await?;
        let mut criteria = vec![Arg::Text(format!("UID {uidnext_before}:*"))];
        if let Some(id) = message_id(raw) {
            criteria.push(Arg::Text("HEADER Message-ID".into()));
            criteria.push(wire::string(&id));
        }
        let uids = commands::uid_search(s, criteria).await?;
        uids.into_iter()
            .filter(|u| *u >= uidnext_before)
            .max()
            .ok_or_else(|| StoreError::Internal("cannot find the appended message".into()))
    }

    async fn set_flags_on(&self, s: &mut Session, folder: &FolderId, uids: &[Uid], change: &FlagChange) -> StoreResult<()> {
        self.select(s, folder).await?;
        if uids.is_empty() {
            return Ok(());
        }
        let tracking = self.tracking(s);
        let _pending = tracking.then(|| self.inner.ledger.begin(&self.account.login, &[folder.0.as_str()]));
        let before = if tracking { Some(self.before(s, &folder.0).await?) } else { None };
        let mut seen = Observed { touched: uids.iter().copied().collect(), ..Observed::default() };
        if s.condstore {
            // Compute each message's complete new flag list and store it guarded by its MODSEQ,
            // so a concurrent change is neither overwritten nor claimed as ours.
            let mut todo: Vec<Uid> = uids.to_vec();
            for _round in 0..4 {
                if todo.is_empty() {
                    break;
                }
                let reply = s.command(&format!("UID FETCH {} (UID FLAGS MODSEQ)", wire::uid_set(&todo))).await?.ok()?;
                // Unsolicited news of other messages in this reply came after h0: foreign.
                seen.read(&reply, true);
                let wanted: HashSet<Uid> = todo.iter().copied().collect();
                let mut groups: HashMap<Vec<String>, (Vec<Uid>, ModSeq)> = HashMap::new();
                let mut current: HashMap<Uid, (Vec<String>, ModSeq)> = HashMap::new();
                for r in reply.data() {
                    if let Response::Fetch(_, attrs) = r {
                        let mut uid = None;
                        let mut flags: Option<Vec<String>> = None;
                        let mut modseq = 0;
                        for a in attrs {
                            match a {
                                imap_proto::AttributeValue::Uid(u) => uid = Some(*u),
                                imap_proto::AttributeValue::Flags(f) => flags = Some(f.iter().map(|x| x.to_string()).collect()),
                                imap_proto::AttributeValue::ModSeq(m) => modseq = *m,
                                _ => {}
                            }
                        }
                        if let (Some(uid), Some(flags)) = (uid, flags)
                            && wanted.contains(&uid)
                        {
                            current.insert(uid, (flags, modseq));
                        }
                    }
                }
                for (uid, (flags, modseq)) in current {
                    let new = new_flag_list(&flags, change);
                    let mut old_sorted: Vec<String> = flags.iter().filter(|f| !f.eq_ignore_ascii_case("\\recent")).cloned().collect();
                    old_sorted.sort();
                    if new == old_sorted {
                        continue;
                    }
                    let g = groups.entry(new).or_insert((Vec::new(), 0));
                    g.0.push(uid);
                    g.1 = g.1.max(modseq);
                }
                todo.clear();
                // A device's first round is guarded by h0: any change since, even to these
                // very messages, must not be claimed as the device's.
                let h0 = if seen.foreign { None } else { before.as_ref().and_then(|b| b.status.highest_modseq) };
                for (flags, (group, modseq)) in groups {
                    let guard = h0.unwrap_or(modseq);
                    let reply = s
                        .command(&format!("UID STORE {} (UNCHANGEDSINCE {guard}) FLAGS ({})", wire::uid_set(&group), flags.join(" ")))
                        .await?
                        .ok()?;
                    seen.read(&reply, true);
                    let modified = modified_uids(&reply.done.text);
                    if !modified.is_empty() {
                        seen.foreign = true;
                        todo.extend(modified);
                    }
                }
            }
            if !todo.is_empty() {
                return Err(StoreError::Internal("flags kept changing under us".into()));
            }
        } else {
            let add: Vec<String> = change.add.imap_names().into_iter().map(str::to_string).collect();
            let mut remove: Vec<String> = change.remove.imap_names().into_iter().map(str::to_string).collect();
            let mut add = add;
            if let Some(keywords) = &change.keywords {
                let wanted: Vec<String> = keywords.iter().map(|k| wire::encode_keyword(k.trim())).filter(|k| !k.is_empty()).collect();
                let reply = s.command(&format!("UID FETCH {} (UID FLAGS)", wire::uid_set(uids))).await?.ok()?;
                for r in reply.data() {
                    if let Response::Fetch(_, attrs) = r {
                        for a in attrs {
                            if let imap_proto::AttributeValue::Flags(f) = a {
                                for k in f.iter().filter(|k| wire::decode_keyword(k).is_some() && !wanted.iter().any(|w| w == k.as_ref())) {
                                    if !remove.contains(&k.to_string()) {
                                        remove.push(k.to_string());
                                    }
                                }
                            }
                        }
                    }
                }
                add.extend(wanted);
            }
            if !add.is_empty() {
                s.command(&format!("UID STORE {} +FLAGS.SILENT ({})", wire::uid_set(uids), add.join(" "))).await?.ok()?;
            }
            if !remove.is_empty() {
                s.command(&format!("UID STORE {} -FLAGS.SILENT ({})", wire::uid_set(uids), remove.join(" "))).await?.ok()?;
            }
        }
        if let Some(before) = before {
            self.prove(s, before, seen, 0, 0, true).await?;
        }
        Ok(())
    }

    /// `UID STORE +FLAGS (\Deleted)` then `UID EXPUNGE` (plain EXPUNGE without UIDPLUS,
    /// which also removes other messages marked deleted: such servers leave no choice).
    async fn expunge_on(&self, s: &mut Session, folder: &FolderId, uids: &[Uid]) -> StoreResult<()> {
        self.select(s, folder).await?;
        if uids.is_empty() {
            return Ok(());
        }
        let tracking = self.tracking(s);
        let _pending = tracking.then(|| self.inner.ledger.begin(&self.account.login, &[folder.0.as_str()]));
        let present: Vec<Uid> = commands::uid_search(s, vec![Arg::Text(format!("UID {}", wire::uid_set(uids)))]).await?;
        if present.is_empty() {
            return Ok(());
        }
        let before = if tracking { Some(self.before(s, &folder.0).await?) } else { None };
        let mut seen =
            Observed { touched: present.iter().copied().collect(), expunged: present.iter().copied().collect(), ..Observed::default() };
        let set = wire::uid_set(&present);
        let reply = s.command(&format!("UID STORE {set} +FLAGS (\\Deleted)")).await?.ok()?;
        seen.read(&reply, true);
        let reply =
            if s.caps.has("UIDPLUS") { s.command(&format!("UID EXPUNGE {set}")).await?.ok()? } else { s.command("EXPUNGE").await?.ok()? };
        seen.read(&reply, true);
        if let Some(before) = before {
            self.prove(s, before, seen, 0, -(present.len() as i64), true).await?;
        }
        Ok(())
    }

    async fn move_on(&self, s: &mut Session, from: &FolderId, uids: &[Uid], to: &FolderId) -> StoreResult<Vec<(Uid, Uid)>> {
        self.select(s, from).await?;
        let to_wire = encode_name(&to.0);
        if !commands::exists(s, &to_wire).await? {
            return Err(StoreError::FolderNotFound);
        }
        let present: Vec<Uid> = if uids.is_empty() {
            Vec::new()
        } else {
            commands::uid_search(s, vec![Arg::Text(format!("UID {}", wire::uid_set(uids)))]).await?
        };
        if present.is_empty() {
            return Ok(Vec::new());
        }
        let tracking = self.tracking(s);
        let _pending = tracking.then(|| self.inner.ledger.begin(&self.account.login, &[from.0.as_str(), to.0.as_str()]));
        let (src_before, dst_before) =
            if tracking { (Some(self.before(s, &from.0).await?), Some(self.before(s, &to.0).await?)) } else { (None, None) };
        // Without UIDPLUS, remember Message-IDs to find the copies.
        let ids: HashMap<Uid, String> = if s.caps.has("UIDPLUS") { HashMap::new() } else { self.message_ids(s, &present).await? };
        let dst_uidnext = match &dst_before {
            Some(b) => b.status.uidnext.unwrap_or(1),
            None => commands::status(s, &to_wire).await?.uidnext.unwrap_or(1),
        };
        let mut seen =
            Observed { touched: present.iter().copied().collect(), expunged: present.iter().copied().collect(), ..Observed::default() };
        let set = wire::uid_set(&present);
        let mut pairs: Vec<(Uid, Uid)> = Vec::new();
        let mut collect = |reply: &Reply| {
            let codes = reply.data().filter_map(|r| match r {
                Response::Data { outcome, .. } => outcome.code.as_ref(),
                _ => None,
            });
            for code in codes.chain(reply.done.code.as_ref()) {
                if let ResponseCode::CopyUid(_, src, dst) = code {
                    let src = wire::expand_uid_set(src, 1_000_000);
                    let dst = wire::expand_uid_set(dst, 1_000_000);
                    pairs.extend(src.into_iter().zip(dst));
                }
            }
        };
        if s.caps.has("MOVE") {
            let reply = s.run(vec![Arg::Text(format!("UID MOVE {set}")), wire::mailbox(&to.0)]).await?;
            if reply.done.status != Outcome::Ok {
                return Err(move_refused(reply));
            }
            collect(&reply);
            seen.read(&reply, true);
        } else {
            let reply = s.run(vec![Arg::Text(format!("UID COPY {set}")), wire::mailbox(&to.0)]).await?;
            if reply.done.status != Outcome::Ok {
                return Err(move_refused(reply));
            }
            collect(&reply);
            seen.read(&reply, true);
            let reply = s.command(&format!("UID STORE {set} +FLAGS (\\Deleted)")).await?.ok()?;
            seen.read(&reply, true);
            let reply = if s.caps.has("UIDPLUS") {
                s.command(&format!("UID EXPUNGE {set}")).await?.ok()?
            } else {
                s.command("EXPUNGE").await?.ok()?
            };
            seen.read(&reply, true);
        }
        if pairs.is_empty() {
            pairs = self.find_copies(s, &to_wire, &ids, dst_uidnext).await?;
            commands::select(s, &encode_name(&from.0)).await?;
        }
        if let (Some(src), Some(dst)) = (src_before, dst_before) {
            let moved = pairs.len() as u32;
            self.prove(s, src, seen, 0, -(present.len() as i64), true).await?;
            self.prove(s, dst, Observed::default(), moved, moved as i64, false).await?;
        }
        pairs.sort_unstable();
        Ok(pairs)
    }

    async fn message_ids(&self, s: &mut Session, uids: &[Uid]) -> StoreResult<HashMap<Uid, String>> {
        let reply = s.command(&format!("UID FETCH {} (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])", wire::uid_set(uids))).await?.ok()?;
        let mut out = HashMap::new();
        for f in fetches(&reply) {
            if let (Some(uid), Some(body)) = (f.uid, f.body.as_deref())
                && let Some(id) = message_id(body)
            {
                out.insert(uid, id);
            }
        }
        Ok(out)
    }

    async fn find_copies(
        &self,
        s: &mut Session,
        to_wire: &str,
        ids: &HashMap<Uid, String>,
        uidnext_before: Uid,
    ) -> StoreResult<Vec<(Uid, Uid)>> {
        commands::select(s, to_wire).await?;
        let mut out = Vec::new();
        for (old, id) in ids {
            let found =
                commands::uid_search(s, vec![Arg::Text(format!("UID {uidnext_before}:* HEADER Message-ID")), wire::string(id)]).await?;
            if let Some(new) = found.into_iter().filter(|u| *u >= uidnext_before).max() {
                out.push((*old, new));
            }
        }
        Ok(out)
    }

    /// The hierarchy delimiter (`LIST "" ""`).
    async fn delimiter(&self, s: &mut Session) -> StoreResult<Option<String>> {
        let reply = s.command("LIST \"\" \"\"").await?.ok()?;
        Ok(commands::list_entries(&reply).into_iter().find_map(|e| e.delimiter))
    }

    fn valid_name(name: &str, delimiter: Option<&str>) -> bool {
        let n = name.trim();
        !n.is_empty()
            && n == name
            && n.len() <= MAX_FOLDER_NAME
            && !n.contains(['%', '*', '\r', '\n', '\0'])
            && delimiter.is_none_or(|d| !n.contains(d))
            && !n.eq_ignore_ascii_case("INBOX")
    }

    /// Full name of `name` under `parent`.
    async fn child_name(&self, s: &mut Session, parent: Option<&FolderId>, name: &str) -> StoreResult<String> {
        let delimiter = self.delimiter(s).await?;
        if !Self::valid_name(name, delimiter.as_deref()) {
            return Err(StoreError::InvalidFolderName);
        }
        match parent {
            None => Ok(name.to_string()),
            Some(p) => {
                if !commands::exists(s, &encode_name(&p.0)).await? {
                    return Err(StoreError::FolderNotFound);
                }
                let d = delimiter.ok_or(StoreError::InvalidFolderName)?;
                Ok(format!("{}{d}{name}", p.0))
            }
        }
    }

    /// Selectable and non-selectable descendants of `folder`, deepest first, and the roles
    /// in the whole account.
    async fn subtree(&self, s: &mut Session, folder: &FolderId) -> StoreResult<(Vec<ListEntry>, Vec<(String, Option<SpecialUse>)>)> {
        let entries = commands::list(s, false).await?;
        let roles = assign_roles(&entries, &self.inner.opts.roles);
        let named: Vec<(String, Option<SpecialUse>)> = entries.iter().zip(roles).map(|(e, r)| (e.name.clone(), r)).collect();
        let mut below: Vec<ListEntry> = entries
            .into_iter()
            .filter(|e| e.delimiter.as_deref().is_some_and(|d| e.name.starts_with(&format!("{}{d}", folder.0))))
            .collect();
        below.sort_by_key(|e| std::cmp::Reverse(e.name.len()));
        Ok((below, named))
    }

    async fn create_folder_on(&self, s: &mut Session, parent: Option<&FolderId>, name: &str) -> StoreResult<FolderId> {
        let full = self.child_name(s, parent, name).await?;
        let _pending = self.device.as_ref().map(|_| self.inner.ledger.begin(&self.account.login, &[full.as_str()]));
        let reply = s.run(vec![Arg::Text("CREATE".into()), wire::mailbox(&full)]).await?;
        if reply.done.status != Outcome::Ok {
            if reply.done.has_code("ALREADYEXISTS") || commands::exists(s, &encode_name(&full)).await? {
                return Err(StoreError::FolderExists);
            }
            return Err(StoreError::Internal(format!("IMAP CREATE refused: {}", reply.done)));
        }
        if let Some(device) = &self.device {
            self.inner.ledger.record_names(&self.account.login, &[full.as_str()], device);
        }
        let _ = s.run(vec![Arg::Text("SUBSCRIBE".into()), wire::mailbox(&full)]).await?;
        Ok(FolderId(full))
    }

    async fn rename_folder_on(
        &self,
        s: &mut Session,
        folder: &FolderId,
        new_parent: Option<&FolderId>,
        new_name: &str,
    ) -> StoreResult<FolderId> {
        let (below, roles) = self.subtree(s, folder).await?;
        match roles.iter().find(|(n, _)| *n == folder.0) {
            None => return Err(StoreError::FolderNotFound),
            Some((_, Some(_))) => return Err(StoreError::SpecialFolder),
            Some((_, None)) => {}
        }
        let full = self.child_name(s, new_parent, new_name).await?;
        if full == folder.0 {
            return Ok(folder.clone());
        }
        if let Some(p) = new_parent
            && (p.0 == folder.0 || below.iter().any(|e| e.name == p.0))
        {
            return Err(StoreError::InvalidFolderName);
        }
        let mut names: Vec<String> = vec![folder.0.clone(), full.clone()];
        for e in &below {
            names.push(e.name.clone());
            names.push(format!("{full}{}", &e.name[folder.0.len()..]));
        }
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let _pending = self.device.as_ref().map(|_| self.inner.ledger.begin(&self.account.login, &name_refs));
        let reply = s.run(vec![Arg::Text("RENAME".into()), wire::mailbox(&folder.0), wire::mailbox(&full)]).await?;
        if reply.done.status != Outcome::Ok {
            if reply.done.has_code("ALREADYEXISTS") || commands::exists(s, &encode_name(&full)).await? {
                return Err(StoreError::FolderExists);
            }
            return Err(StoreError::Internal(format!("IMAP RENAME refused: {}", reply.done)));
        }
        if let Some(device) = &self.device {
            self.inner.ledger.record_names(&self.account.login, &name_refs, device);
        }
        if s.selected.as_ref().is_some_and(|sel| sel.name == encode_name(&folder.0)) {
            s.selected = None;
        }
        let _ = s.run(vec![Arg::Text("UNSUBSCRIBE".into()), wire::mailbox(&folder.0)]).await?;
        let _ = s.run(vec![Arg::Text("SUBSCRIBE".into()), wire::mailbox(&full)]).await?;
        Ok(FolderId(full))
    }

    async fn delete_folder_on(&self, s: &mut Session, folder: &FolderId) -> StoreResult<()> {
        let (below, roles) = self.subtree(s, folder).await?;
        match roles.iter().find(|(n, _)| *n == folder.0) {
            None => return Err(StoreError::FolderNotFound),
            Some((_, Some(_))) => return Err(StoreError::SpecialFolder),
            Some((_, None)) => {}
        }
        if below.iter().any(|e| roles.iter().any(|(n, r)| *n == e.name && r.is_some())) {
            return Err(StoreError::SpecialFolder);
        }
        let mut names: Vec<String> = below.iter().map(|e| e.name.clone()).collect();
        names.push(folder.0.clone());
        let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let _pending = self.device.as_ref().map(|_| self.inner.ledger.begin(&self.account.login, &name_refs));
        // Never delete the selected mailbox from under ourselves.
        if s.selected.is_some() {
            let _ = s.command(if s.caps.has("UNSELECT") { "UNSELECT" } else { "CLOSE" }).await?;
            s.selected = None;
        }
        for name in &names {
            let reply = s.run(vec![Arg::Text("DELETE".into()), wire::mailbox(name)]).await?;
            if reply.done.status != Outcome::Ok && commands::exists(s, &encode_name(name)).await? {
                return Err(StoreError::Internal(format!("IMAP DELETE refused: {}", reply.done)));
            }
            let _ = s.run(vec![Arg::Text("UNSUBSCRIBE".into()), wire::mailbox(name)]).await?;
        }
        if let Some(device) = &self.device {
            self.inner.ledger.record_names(&self.account.login, &name_refs, device);
        }
        Ok(())
    }

    async fn search_on(&self, s: &mut Session, query: &SearchQuery) -> StoreResult<Vec<SearchHit>> {
        let folders: Vec<FolderId> = if query.folders.is_empty() {
            commands::list(s, false).await?.into_iter().filter(|e| e.selectable()).map(|e| FolderId(e.name)).collect()
        } else {
            query.folders.clone()
        };
        let limit = query.limit.max(1);
        let mut hits: Vec<SearchHit> = Vec::new();
        for folder in folders {
            if self.select(s, &folder).await.is_err() {
                continue;
            }
            let mut criteria: Vec<Arg> = Vec::new();
            let mut charset = false;
            // Every word must appear, anywhere (as on the embedded store): one TEXT per word,
            // which IMAP ANDs, rather than one TEXT that would look for the exact phrase.
            for word in query.text.as_deref().unwrap_or_default().split_whitespace().take(16) {
                charset |= !word.is_ascii();
                criteria.push(Arg::Text("TEXT".into()));
                criteria.push(wire::string(word));
            }
            if let Some(after) = query.received_after {
                criteria.push(Arg::Text(format!("SINCE {}", wire::search_date(after - DATE_SLACK))));
            }
            if let Some(before) = query.received_before {
                criteria.push(Arg::Text(format!("BEFORE {}", wire::search_date(before + DATE_SLACK))));
            }
            if criteria.is_empty() {
                criteria.push(Arg::Text("ALL".into()));
            }
            if charset {
                criteria.insert(0, Arg::Text("CHARSET UTF-8".into()));
            }
            let mut uids = commands::uid_search(s, criteria).await?;
            uids.reverse();
            uids.truncate((limit * 4).min(2000));
            if uids.is_empty() {
                continue;
            }
            let reply = s.command(&format!("UID FETCH {} (UID INTERNALDATE)", wire::uid_set(&uids))).await?.ok()?;
            let wanted: HashSet<Uid> = uids.iter().copied().collect();
            for f in fetches(&reply) {
                if let (Some(uid), Some(date)) = (f.uid, f.internal_date)
                    && wanted.contains(&uid)
                    && query.received_after.is_none_or(|a| date > a)
                    && query.received_before.is_none_or(|b| date < b)
                    && !hits.iter().any(|h| h.folder == folder && h.uid == uid)
                {
                    hits.push(SearchHit { folder: folder.clone(), uid, internal_date: date });
                }
            }
        }
        hits.sort_by(|a, b| b.internal_date.cmp(&a.internal_date).then(b.uid.cmp(&a.uid)));
        hits.truncate(limit);
        Ok(hits)
    }
}

fn move_refused(reply: Reply) -> StoreError {
    let c = reply.done;
    if c.has_code("TRYCREATE") || c.has_code("NONEXISTENT") {
        StoreError::FolderNotFound
    } else if c.has_code("OVERQUOTA") {
        StoreError::QuotaExceeded { used: 0, limit: 0 }
    } else {
        StoreError::Internal(format!("IMAP MOVE refused: {c}"))
    }
}

/// A message's complete flag list after `change` (sorted; `\Recent` cannot be stored).
fn new_flag_list(current: &[String], change: &FlagChange) -> Vec<String> {
    let (bits, _) = commands::convert_flags(current);
    let bits = bits.union(change.add).without(change.remove);
    let mut out: Vec<String> = bits.imap_names().into_iter().map(str::to_string).collect();
    for f in current {
        let system = !Flags::from_imap_name(f).is_empty() || f.eq_ignore_ascii_case("\\recent");
        let category = wire::decode_keyword(f).is_some();
        // Keywords that are not categories ($MDNSent, NonJunk, ...) stay; categories stay
        // unless the change replaces them.
        if !system && (!category || change.keywords.is_none()) && !out.contains(f) {
            out.push(f.clone());
        }
    }
    if let Some(keywords) = &change.keywords {
        for k in keywords.iter().map(|k| k.trim()).filter(|k| !k.is_empty()) {
            let k = wire::encode_keyword(k);
            if !out.contains(&k) {
                out.push(k);
            }
        }
    }
    out.sort();
    out
}

#[async_trait]
impl Mailbox for ImapMailbox {
    async fn folders(&self) -> StoreResult<Vec<Folder>> {
        on_session!(self, true, |s| self.folders_on(s))
    }

    async fn status(&self, folder: &FolderId) -> StoreResult<FolderStatus> {
        on_session!(self, true, |s| self.status_on(s, folder))
    }

    async fn changed_since(&self, folder: &FolderId, since: ModSeq, limit: usize) -> StoreResult<Vec<MessageState>> {
        let states = on_session!(self, true, |s| self.changed_since_on(s, folder, since, limit))?;
        self.read_ahead.lock().unwrap_or_else(|p| p.into_inner()).listed(folder, &states);
        Ok(states)
    }

    async fn vanished_since(&self, folder: &FolderId, since: ModSeq) -> StoreResult<Option<Vec<Uid>>> {
        on_session!(self, true, |s| self.vanished_since_on(s, folder, since))
    }

    async fn messages_below(
        &self,
        folder: &FolderId,
        below: Uid,
        received_since: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<MessageState>> {
        let states = on_session!(self, true, |s| self.messages_below_on(s, folder, below, received_since, limit))?;
        self.read_ahead.lock().unwrap_or_else(|p| p.into_inner()).listed(folder, &states);
        Ok(states)
    }

    async fn message_states(&self, folder: &FolderId, uids: &[Uid]) -> StoreResult<Vec<MessageState>> {
        let states = on_session!(self, true, |s| async {
            let base = self.synthetic_base(&folder.0);
            // Flags must be current (not the view of a pooled connection): a full select.
            self.select(s, folder).await?;
            Ok(commands::fetch_states(s, uids, |u| base + u as u64).await?)
        })?;
        // In the order asked for, like the embedded store.
        let mut by_uid: HashMap<Uid, MessageState> = states.into_iter().map(|m| (m.uid, m)).collect();
        Ok(uids.iter().filter_map(|u| by_uid.remove(u)).collect())
    }

    async fn all_uids(&self, folder: &FolderId) -> StoreResult<Vec<Uid>> {
        on_session!(self, true, |s| async {
            self.select(s, folder).await?;
            Ok(commands::uid_search(s, vec![Arg::Text("ALL".into())]).await?)
        })
    }

    async fn count(&self, folder: &FolderId, below: Option<Uid>, received_since: Option<i64>) -> StoreResult<u32> {
        on_session!(self, true, |s| self.count_on(s, folder, below, received_since))
    }

    async fn fetch(&self, folder: &FolderId, uid: Uid) -> StoreResult<Bytes> {
        let plan = {
            let mut ahead = self.read_ahead.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(body) = ahead.take(folder, uid) {
                return Ok(body);
            }
            ahead.plan(folder, uid)
        };
        let mut bodies = on_session!(self, true, |s| self.fetch_on(s, folder, &plan))?;
        let body = bodies.remove(&uid).ok_or(StoreError::MessageNotFound)?;
        let mut ahead = self.read_ahead.lock().unwrap_or_else(|p| p.into_inner());
        if ahead.folder == folder.0 {
            ahead.bodies.extend(bodies);
        }
        Ok(body)
    }

    async fn append(&self, folder: &FolderId, raw: &[u8], flags: Flags, internal_date: Option<i64>) -> StoreResult<Uid> {
        let limit = self.inner.opts.max_message_bytes;
        if raw.len() as u64 > limit {
            return Err(StoreError::MessageTooLarge { size: raw.len() as u64, limit });
        }
        on_session!(self, false, |s| self.append_on(s, folder, raw, flags, internal_date))
    }

    async fn set_flags(&self, folder: &FolderId, uids: &[Uid], change: &FlagChange) -> StoreResult<()> {
        on_session!(self, true, |s| self.set_flags_on(s, folder, uids, change))
    }

    async fn move_messages(&self, from: &FolderId, uids: &[Uid], to: &FolderId) -> StoreResult<Vec<(Uid, Uid)>> {
        if from == to {
            return Ok(uids.iter().map(|&u| (u, u)).collect());
        }
        on_session!(self, false, |s| self.move_on(s, from, uids, to))
    }

    async fn expunge(&self, folder: &FolderId, uids: &[Uid]) -> StoreResult<()> {
        on_session!(self, true, |s| self.expunge_on(s, folder, uids))
    }

    async fn create_folder(&self, parent: Option<&FolderId>, name: &str) -> StoreResult<FolderId> {
        on_session!(self, false, |s| self.create_folder_on(s, parent, name))
    }

    async fn rename_folder(&self, folder: &FolderId, new_parent: Option<&FolderId>, new_name: &str) -> StoreResult<FolderId> {
        on_session!(self, false, |s| self.rename_folder_on(s, folder, new_parent, new_name))
    }

    async fn delete_folder(&self, folder: &FolderId) -> StoreResult<()> {
        on_session!(self, false, |s| self.delete_folder_on(s, folder))
    }

    async fn search(&self, query: &SearchQuery) -> StoreResult<Vec<SearchHit>> {
        on_session!(self, true, |s| self.search_on(s, query))
    }

    async fn quota(&self) -> StoreResult<Quota> {
        on_session!(self, true, |s| self.quota_on(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, attrs: &[&str]) -> ListEntry {
        ListEntry {
            name: name.into(),
            wire: name.into(),
            delimiter: Some("/".into()),
            attrs: attrs.iter().map(|a| a.to_string()).collect(),
            status: None,
        }
    }

    fn names() -> RoleNames {
        RoleNames {
            drafts: "Drafts".into(),
            sent: "Sent Items".into(),
            trash: "Trash".into(),
            junk: "Junk".into(),
            archive: "Archive".into(),
        }
    }

    #[test]
    fn roles_come_from_special_use_then_names() {
        let entries = vec![
            entry("INBOX", &[]),
            entry("Gesendet", &["\\sent"]),
            entry("Sent Items", &[]),
            entry("trash", &[]),
            entry("Archive", &["\\noselect"]),
            entry("Archive/2024", &[]),
        ];
        let roles = assign_roles(&entries, &names());
        assert_eq!(roles, vec![Some(SpecialUse::Inbox), Some(SpecialUse::Sent), None, Some(SpecialUse::Trash), None, None]);
        let folders = build_folders(&entries, &names(), |_| FolderStatus::default());
        assert_eq!(folders[0].id.0, "INBOX");
        let child = folders.iter().find(|f| f.id.0 == "Archive/2024").unwrap();
        assert_eq!(child.name, "2024");
        // The parent cannot be selected, so the child hangs at the top.
        assert_eq!(child.parent, None);
        assert!(folders.iter().all(|f| f.id.0 != "Archive"));
    }

    #[test]
    fn flag_lists_keep_server_keywords_and_replace_categories() {
        let current: Vec<String> = ["\\Seen", "$MDNSent", "Work", "\\Recent"].iter().map(|s| s.to_string()).collect();
        let change = FlagChange { add: Flags::FLAGGED, remove: Flags::SEEN, keywords: Some(vec!["Red category".into()]) };
        assert_eq!(new_flag_list(&current, &change), vec!["$MDNSent", "Red~20category", "\\Flagged"]);
        let keep = FlagChange { add: Flags::FORWARDED, remove: Flags::NONE, keywords: None };
        assert_eq!(new_flag_list(&current, &keep), vec!["$Forwarded", "$MDNSent", "Work", "\\Seen"]);
    }

    #[test]
    fn read_ahead_is_bounded_and_follows_the_listing() {
        let folder = FolderId("INBOX".into());
        let state = |uid: Uid, size: u64| MessageState { uid, modseq: 1, flags: Flags::NONE, keywords: vec![], internal_date: 0, size };
        let mut ahead = ReadAhead::default();
        let listing: Vec<MessageState> = (1..=100).rev().map(|u| state(u, 1000)).collect();
        ahead.listed(&folder, &listing);
        let plan = ahead.plan(&folder, 100);
        assert_eq!(plan.len(), READ_AHEAD_COUNT);
        assert_eq!(&plan[..3], &[100, 99, 98]);
        assert_eq!(ahead.plan(&FolderId("Other".into()), 100), vec![100], "another folder: no read-ahead");
        assert_eq!(ahead.plan(&folder, 500), vec![500], "not listed: no read-ahead");
        let big: Vec<MessageState> = (1..=10).map(|u| state(u, READ_AHEAD_BYTES / 3)).collect();
        ahead.listed(&folder, &big);
        assert_eq!(ahead.plan(&folder, 1), vec![1, 2, 3], "bounded in bytes");
        ahead.bodies.insert(2, Bytes::from_static(b"x"));
        assert_eq!(ahead.take(&folder, 2).as_deref(), Some(&b"x"[..]));
        assert_eq!(ahead.take(&folder, 2), None, "a body is handed out once");
    }

    #[test]
    fn helpers() {
        assert_eq!(message_id(b"Subject: x\r\nMessage-ID:\r\n <a@b>\r\n\r\nbody").as_deref(), Some("<a@b>"));
        assert_eq!(message_id(b"Subject: x\r\n\r\nMessage-ID: <no>"), None);
        assert_eq!(modified_uids("[MODIFIED 7,9:11] Conditional STORE failed"), vec![7, 9, 10, 11]);
        assert!(modified_uids("OK Store completed").is_empty());
    }
}
