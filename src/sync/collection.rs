//! Item sync of one collection: SyncKey rotation and retry, client changes, server deltas
//! cut into windows.
//!
//! The device's knowledge is a snapshot (UID → flags, keywords, date) plus three marks:
//! every change with MODSEQ ≤ `changed` and every expunge with MODSEQ ≤ `vanished` is
//! reflected in it, and messages below `fill_below` have not been offered yet. A delta is
//! therefore: expunges after `vanished` the device holds (Delete), changes after `changed`
//! that differ from the snapshot (Change, or Add for new mail), then the next window of the
//! initial fill, newest first (Add), then held messages that left the FilterType window
//! (SoftDelete). Comparing against the snapshot makes every step idempotent: re-running it
//! after a lost response yields the same items, never duplicates.
//!
//! A response's effect on the snapshot is stored as `pending` under the new key and applied
//! only when the device sends that key, so the previous key stays valid for a retry.

use std::collections::HashMap;

use crate::state::{CollectionState, DevicePk, PendingSync, SnapItem, SnapOp, StateStore, SyncMarks};
use crate::store::{FlagChange, Flags, FolderId, FolderStatus, Mailbox, MessageState, StoreError, Uid};

use super::SyncError;

/// The flags ActiveSync represents (Read, Flag, LastVerbExecuted); others never cause a Change.
const SYNCED_FLAGS: Flags = Flags(Flags::SEEN.0 | Flags::FLAGGED.0 | Flags::ANSWERED.0 | Flags::FORWARDED.0);

/// How many changed messages are read from the store per round while scanning.
const SCAN_BATCH: usize = 512;

/// A change the server sends to the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerChange {
    Add(MessageState),
    Change(MessageState),
    Delete(Uid),
    SoftDelete(Uid),
}

impl ServerChange {
    pub fn uid(&self) -> Uid {
        match self {
            ServerChange::Add(m) | ServerChange::Change(m) => m.uid,
            ServerChange::Delete(u) | ServerChange::SoftDelete(u) => *u,
        }
    }

    fn op(&self) -> SnapOp {
        match self {
            ServerChange::Add(m) | ServerChange::Change(m) => SnapOp::Put(m.uid, snap_item(m)),
            ServerChange::Delete(u) | ServerChange::SoftDelete(u) => SnapOp::Remove(*u),
        }
    }
}

/// A change the device sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    SetFlags {
        uid: Uid,
        change: FlagChange,
    },
    /// Delete, or with `move_to`, move there (DeletesAsMoves).
    Delete {
        uid: Uid,
        move_to: Option<FolderId>,
    },
    /// A new item (a draft), identified by the device's ClientId.
    Add {
        client_id: String,
        raw: Vec<u8>,
        flags: Flags,
    },
}

/// What became of a client change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOpResult {
    Done,
    Added(Uid),
    NotFound,
    Failed(String),
}

/// Options of one collection's sync that affect the delta.
#[derive(Debug, Clone, Copy)]
pub struct DeltaOptions {
    /// Most changes to send.
    pub window: usize,
    /// Messages received before this (seconds since the epoch) are outside the FilterType
    /// window; `None` for no filter.
    pub cutoff: Option<i64>,
    /// The FilterType value itself, remembered so a change of filter can be detected.
    pub filter_type: u8,
}

fn snap_item(m: &MessageState) -> SnapItem {
    SnapItem { flags: Flags(m.flags.0 & SYNCED_FLAGS.0), keywords: m.keywords.clone(), date: m.internal_date }
}

fn differs(held: &SnapItem, now: &MessageState) -> bool {
    Flags(now.flags.0 & SYNCED_FLAGS.0) != Flags(held.flags.0 & SYNCED_FLAGS.0) || now.keywords != held.keywords
}

/// The snapshot as committed, plus uncommitted effects (of the pending response when
/// estimating, of this request's client changes and emitted changes when syncing).
struct View<'a> {
    state: &'a dyn StateStore,
    device: DevicePk,
    collection: &'a str,
    overlay: HashMap<Uid, Option<SnapItem>>,
}

impl<'a> View<'a> {
    fn apply(&mut self, op: &SnapOp) {
        match op {
            SnapOp::Put(uid, item) => self.overlay.insert(*uid, Some(item.clone())),
            SnapOp::Remove(uid) => self.overlay.insert(*uid, None),
        };
    }

    async fn lookup(&self, uids: &[Uid]) -> Result<HashMap<Uid, SnapItem>, SyncError> {
        let unknown: Vec<Uid> = uids.iter().copied().filter(|u| !self.overlay.contains_key(u)).collect();
        let mut held =
            if unknown.is_empty() { HashMap::new() } else { self.state.snapshot_items(self.device, self.collection, &unknown).await? };
        for uid in uids {
            if let Some(entry) = self.overlay.get(uid) {
                match entry {
                    Some(item) => held.insert(*uid, item.clone()),
                    None => held.remove(uid),
                };
            }
        }
        Ok(held)
    }

    async fn all_uids(&self) -> Result<Vec<Uid>, SyncError> {
        let mut uids = self.state.snapshot_uids(self.device, self.collection).await?;
        uids.retain(|u| !matches!(self.overlay.get(u), Some(None)));
        for (uid, entry) in &self.overlay {
            if entry.is_some() && uids.binary_search(uid).is_err() {
                uids.push(*uid);
            }
        }
        uids.sort_unstable();
        uids.dedup();
        Ok(uids)
    }

    async fn older_than(&self, cutoff: i64, limit: usize) -> Result<Vec<Uid>, SyncError> {
        let mut uids = self.state.snapshot_older_than(self.device, self.collection, cutoff, limit + self.overlay.len()).await?;
        uids.retain(|u| !matches!(self.overlay.get(u), Some(None)));
        for (uid, entry) in &self.overlay {
            if let Some(item) = entry
                && item.date < cutoff
                && !uids.contains(uid)
            {
                uids.push(*uid);
            }
        }
        uids.truncate(limit + 1);
        Ok(uids)
    }
}

/// The outcome of computing a delta.
struct Delta {
    changes: Vec<ServerChange>,
    marks: SyncMarks,
    more: bool,
}

/// Computes what to send next. With `count_only`, adds are not limited by the window (an
/// estimate) and nothing about the result is stored.
async fn compute_delta(
    mailbox: &dyn Mailbox,
    folder: &FolderId,
    status: &FolderStatus,
    view: &mut View<'_>,
    marks: SyncMarks,
    opts: &DeltaOptions,
) -> Result<Delta, SyncError> {
    let window = opts.window.max(1);
    let mut out: Vec<ServerChange> = Vec::new();
    let mut new = marks;
    let mut more = false;
    let emit = |out: &mut Vec<ServerChange>, view: &mut View<'_>, change: ServerChange| {
        view.apply(&change.op());
        out.push(change);
    };

    // 1. Expunged messages the device holds.
    let vanished = match mailbox.vanished_since(folder, marks.vanished).await? {
        Some(uids) => uids,
        None => {
            // No QRESYNC: whatever the device holds that the folder lacks is gone.
            let present = mailbox.all_uids(folder).await?;
            let held = view.all_uids().await?;
            held.into_iter().filter(|u| present.binary_search(u).is_err()).collect()
        }
    };
    let held = view.lookup(&vanished).await?;
    let mut gone: Vec<Uid> = vanished.into_iter().filter(|u| held.contains_key(u)).collect();
    gone.sort_unstable();
    if gone.len() > window {
        gone.truncate(window);
        more = true;
    } else {
        new.vanished = status.highest_modseq.max(marks.vanished);
    }
    for uid in gone {
        emit(&mut out, view, ServerChange::Delete(uid));
    }

    // 2. Changes since the mark: flag changes of held messages, and new mail.
    let mut since = marks.changed;
    'scan: while out.len() < window {
        let batch = mailbox.changed_since(folder, since, SCAN_BATCH).await?;
        let exhausted = batch.len() < SCAN_BATCH;
        let uids: Vec<Uid> = batch.iter().map(|m| m.uid).collect();
        let held = view.lookup(&uids).await?;
        let mut i = 0;
        while i < batch.len() {
            // Never split a group of equal MODSEQs: the mark must stay exact.
            let modseq = batch[i].modseq;
            let group_end = batch[i..].iter().position(|m| m.modseq != modseq).map_or(batch.len(), |p| i + p);
            if out.len() >= window {
                more = true;
                new.changed = since;
                break 'scan;
            }
            for m in &batch[i..group_end] {
                match held.get(&m.uid) {
                    Some(item) if differs(item, m) => emit(&mut out, view, ServerChange::Change(m.clone())),
                    Some(_) => {}
                    None => {
                        let in_fill = marks.fill_below.is_some_and(|f| m.uid < f);
                        let in_window = opts.cutoff.is_none_or(|c| m.internal_date >= c);
                        if !in_fill && in_window {
                            emit(&mut out, view, ServerChange::Add(m.clone()));
                        }
                    }
                }
            }
            since = modseq;
            i = group_end;
        }
        if exhausted {
            new.changed = since.max(status.highest_modseq);
            break;
        }
        new.changed = since;
    }
    if out.len() >= window && new.changed < status.highest_modseq {
        more = true;
    }

    // 3. The initial fill, newest first.
    if let Some(mut below) = marks.fill_below {
        while out.len() < window {
            let room = window - out.len();
            let batch = mailbox.messages_below(folder, below, opts.cutoff, room + 1).await?;
            if batch.is_empty() {
                new.fill_below = None;
                break;
            }
            let uids: Vec<Uid> = batch.iter().map(|m| m.uid).collect();
            let held = view.lookup(&uids).await?;
            let mut taken = 0;
            for m in &batch {
                if out.len() >= window {
                    break;
                }
                below = m.uid;
                taken += 1;
                if !held.contains_key(&m.uid) {
                    emit(&mut out, view, ServerChange::Add(m.clone()));
                }
            }
            new.fill_below = Some(below);
            if taken == batch.len() && batch.len() <= room {
                // Read everything below: the fill is complete.
                new.fill_below = None;
                break;
            }
        }
        if new.fill_below.is_some() {
            more = true;
        }
    }

    // 4. Held messages that have left the FilterType window.
    if let Some(cutoff) = opts.cutoff
        && out.len() < window
    {
        let room = window - out.len();
        let old = view.older_than(cutoff, room).await?;
        if old.len() > room {
            more = true;
        }
        for uid in old.into_iter().take(room) {
            emit(&mut out, view, ServerChange::SoftDelete(uid));
        }
    }

    Ok(Delta { changes: out, marks: new, more })
}

/// A collection sync in progress: the engine computed it, the protocol layer renders it
/// (and may drop Adds of messages that vanished meanwhile), then commits it.
pub struct CollectionSync {
    pub(super) device: DevicePk,
    pub(super) collection: String,
    pub(super) state: CollectionState,
    /// True when this request (re)started the collection at SyncKey 0.
    pub bootstrap: bool,
    pub results: Vec<ClientOpResult>,
    pub changes: Vec<ServerChange>,
    pub more_available: bool,
    ops: Vec<SnapOp>,
    marks: SyncMarks,
    client_adds: Vec<(String, Uid)>,
    /// Whether anything (client results or server changes) calls for a new key.
    changed: bool,
}

impl CollectionSync {
    /// Removes a planned change (an Add whose message vanished before it was read).
    pub fn drop_change(&mut self, uid: Uid) {
        self.changes.retain(|c| c.uid() != uid);
        self.ops.retain(|op| match op {
            SnapOp::Put(u, _) | SnapOp::Remove(u) => *u != uid,
        });
    }

    /// Whether the response must carry a new SyncKey.
    pub fn has_content(&self) -> bool {
        self.bootstrap || self.changed || !self.changes.is_empty()
    }

    /// Makes the result durable; returns the SyncKey to send.
    pub async fn commit(mut self, state: &dyn StateStore) -> Result<String, SyncError> {
        if self.bootstrap {
            let key = self.state.key_string(self.state.key);
            state.save_collection(self.device, &self.collection, &self.state, &[], true).await?;
            return Ok(key);
        }
        let mut ops = std::mem::take(&mut self.ops);
        for c in &self.changes {
            ops.push(c.op());
        }
        if !self.has_content() && ops.is_empty() {
            // Nothing to tell: the key stays, the marks may still advance (no-op changes).
            if self.state.marks != self.marks {
                self.state.marks = self.marks;
                state.save_collection(self.device, &self.collection, &self.state, &[], false).await?;
            }
            return Ok(self.state.key_string(self.state.key));
        }
        let key = self.state.key + 1;
        self.state.pending = Some(PendingSync { key, marks: self.marks, ops, client_adds: self.client_adds });
        state.save_collection(self.device, &self.collection, &self.state, &[], false).await?;
        Ok(self.state.key_string(key))
    }
}

/// What one collection's Sync asks of the engine.
#[derive(Debug, Clone)]
pub struct CollectionSyncRequest<'a> {
    pub device: DevicePk,
    pub collection: &'a str,
    pub folder: &'a FolderId,
    pub sync_key: &'a str,
    pub options: DeltaOptions,
    pub get_changes: bool,
    pub client_ops: Vec<ClientOp>,
    /// The device's Options (protocol-layer JSON), stored when given.
    pub client_options: Option<String>,
}

/// Starts, or continues, the sync of one collection.
pub(super) async fn begin(
    mailbox: &dyn Mailbox,
    state_store: &dyn StateStore,
    req: CollectionSyncRequest<'_>,
) -> Result<CollectionSync, SyncError> {
    let CollectionSyncRequest { device, collection, folder, sync_key, options, get_changes, client_ops, client_options } = req;
    let opts = &options;
    let status = mailbox.status(folder).await.map_err(|e| match e {
        StoreError::FolderNotFound => SyncError::FolderNotFound,
        e => SyncError::Store(e),
    })?;

    if sync_key.trim() == "0" {
        let state = CollectionState {
            epoch: rand::random::<u32>(),
            key: 1,
            folder: folder.clone(),
            uidvalidity: status.uidvalidity,
            marks: SyncMarks { changed: status.highest_modseq, vanished: status.highest_modseq, fill_below: Some(status.uidnext) },
            filter_type: opts.filter_type,
            pending: None,
            client_options,
        };
        return Ok(CollectionSync {
            device,
            collection: collection.to_string(),
            marks: state.marks,
            state,
            bootstrap: true,
            results: Vec::new(),
            changes: Vec::new(),
            more_available: false,
            ops: Vec::new(),
            client_adds: Vec::new(),
            changed: false,
        });
    }

    let mut st = state_store.collection(device, collection).await?.ok_or(SyncError::InvalidSyncKey)?;
    let key = st.parse_key(sync_key).ok_or(SyncError::InvalidSyncKey)?;
    if st.folder != *folder || st.uidvalidity != status.uidvalidity {
        return Err(SyncError::InvalidSyncKey);
    }
    let mut prior_adds = Vec::new();
    match st.pending.take() {
        Some(p) if p.key == key => {
            // The device received our last response: make it the snapshot.
            st.key = p.key;
            st.marks = p.marks;
            state_store.save_collection(device, collection, &st, &p.ops, false).await?;
        }
        Some(p) if key == st.key => {
            // The last response was lost: recompute from the confirmed snapshot, but remember
            // which Adds were already committed so a resent Add is not appended twice.
            prior_adds = p.client_adds;
        }
        None if key == st.key => {}
        _ => return Err(SyncError::InvalidSyncKey),
    }

    let mut view = View { state: state_store, device, collection, overlay: HashMap::new() };
    let mut ops = Vec::new();
    let mut results = Vec::with_capacity(client_ops.len());
    let mut client_adds = Vec::new();
    let changed_by_client = !client_ops.is_empty();
    for op in client_ops {
        let result = apply_client_op(mailbox, folder, op, &prior_adds, &mut client_adds, &mut ops).await;
        results.push(result);
    }
    for op in &ops {
        view.apply(op);
    }

    if client_options.is_some() {
        st.client_options = client_options;
    }
    let mut marks = st.marks;
    if opts.filter_type != st.filter_type {
        // A wider window must offer older mail again; held messages are skipped by the fill.
        marks.fill_below = Some(status.uidnext);
        st.filter_type = opts.filter_type;
    }
    let delta = if get_changes {
        compute_delta(mailbox, folder, &status, &mut view, marks, opts).await?
    } else {
        Delta { changes: Vec::new(), marks, more: false }
    };

    Ok(CollectionSync {
        device,
        collection: collection.to_string(),
        state: st,
        bootstrap: false,
        results,
        changes: delta.changes,
        more_available: delta.more,
        ops,
        marks: delta.marks,
        client_adds,
        changed: changed_by_client,
    })
}

async fn apply_client_op(
    mailbox: &dyn Mailbox,
    folder: &FolderId,
    op: ClientOp,
    prior_adds: &[(String, Uid)],
    client_adds: &mut Vec<(String, Uid)>,
    ops: &mut Vec<SnapOp>,
) -> ClientOpResult {
    let outcome: Result<ClientOpResult, StoreError> = async {
        match op {
            ClientOp::SetFlags { uid, change } => {
                mailbox.set_flags(folder, &[uid], &change).await?;
                match mailbox.message_states(folder, &[uid]).await?.first() {
                    Some(m) => {
                        ops.push(SnapOp::Put(uid, snap_item(m)));
                        Ok(ClientOpResult::Done)
                    }
                    None => Ok(ClientOpResult::NotFound),
                }
            }
            ClientOp::Delete { uid, move_to } => {
                let exists = !mailbox.message_states(folder, &[uid]).await?.is_empty();
                ops.push(SnapOp::Remove(uid));
                if !exists {
                    // Already gone (a retry, or deleted elsewhere): the device's wish holds.
                    return Ok(ClientOpResult::Done);
                }
                match move_to {
                    Some(dest) if dest != *folder => {
                        mailbox.move_messages(folder, &[uid], &dest).await?;
                    }
                    _ => mailbox.expunge(folder, &[uid]).await?,
                }
                Ok(ClientOpResult::Done)
            }
            ClientOp::Add { client_id, raw, flags } => {
                if let Some((_, uid)) = prior_adds.iter().find(|(c, _)| *c == client_id) {
                    client_adds.push((client_id, *uid));
                    if let Some(m) = mailbox.message_states(folder, &[*uid]).await?.first() {
                        ops.push(SnapOp::Put(*uid, snap_item(m)));
                    }
                    return Ok(ClientOpResult::Added(*uid));
                }
                let uid = mailbox.append(folder, &raw, flags, None).await?;
                client_adds.push((client_id, uid));
                if let Some(m) = mailbox.message_states(folder, &[uid]).await?.first() {
                    ops.push(SnapOp::Put(uid, snap_item(m)));
                }
                Ok(ClientOpResult::Added(uid))
            }
        }
    }
    .await;
    match outcome {
        Ok(r) => r,
        Err(StoreError::MessageNotFound) => ClientOpResult::NotFound,
        Err(e) => ClientOpResult::Failed(e.to_string()),
    }
}

/// How many changes the next Sync would send (GetItemEstimate), assuming the device received
/// the last response. `None` when the collection has never been synced.
pub(super) async fn estimate(
    mailbox: &dyn Mailbox,
    state_store: &dyn StateStore,
    device: DevicePk,
    collection: &str,
    opts: &DeltaOptions,
) -> Result<Option<u64>, SyncError> {
    let Some(st) = state_store.collection(device, collection).await? else { return Ok(None) };
    let status = mailbox.status(&st.folder).await.map_err(|e| match e {
        StoreError::FolderNotFound => SyncError::FolderNotFound,
        e => SyncError::Store(e),
    })?;
    if status.uidvalidity != st.uidvalidity {
        return Err(SyncError::InvalidSyncKey);
    }
    let mut view = View { state: state_store, device, collection, overlay: HashMap::new() };
    let mut marks = st.marks;
    if let Some(p) = &st.pending {
        for op in &p.ops {
            view.apply(op);
        }
        marks = p.marks;
    }
    if opts.filter_type != st.filter_type {
        marks.fill_below = Some(status.uidnext);
    }
    // The fill is counted, not listed: it can be the whole folder.
    let fill = marks.fill_below.take();
    let unlimited = DeltaOptions { window: usize::MAX / 2, ..*opts };
    let delta = compute_delta(mailbox, &st.folder, &status, &mut view, marks, &unlimited).await?;
    let mut total = delta.changes.len() as u64;
    if let Some(below) = fill {
        let in_store = mailbox.count(&st.folder, Some(below), opts.cutoff).await? as u64;
        let held = state_store.snapshot_count(device, collection, below, opts.cutoff.unwrap_or(i64::MIN)).await?;
        total += in_store.saturating_sub(held);
    }
    Ok(Some(total))
}

/// Whether the device has anything to sync in this collection (Ping's check).
pub(super) async fn has_changes(
    mailbox: &dyn Mailbox,
    state_store: &dyn StateStore,
    device: DevicePk,
    collection: &str,
    opts: &DeltaOptions,
) -> Result<bool, SyncError> {
    let Some(st) = state_store.collection(device, collection).await? else { return Ok(false) };
    let marks = st.pending.as_ref().map_or(st.marks, |p| p.marks);
    let status = match mailbox.status(&st.folder).await {
        Ok(s) => s,
        Err(StoreError::FolderNotFound) => return Ok(true),
        Err(e) => return Err(SyncError::Store(e)),
    };
    if status.uidvalidity != st.uidvalidity || marks.fill_below.is_some() {
        return Ok(true);
    }
    // Quick check first: nothing happened since the marks and no window boundary moved.
    let quiet = status.highest_modseq <= marks.changed.min(marks.vanished);
    if quiet && opts.cutoff.is_none() {
        return Ok(false);
    }
    Ok(estimate(mailbox, state_store, device, collection, opts).await?.unwrap_or(0) > 0)
}

/// See [`crate::sync::SyncEngine::note_moved`]. The snapshot and the pending response are
/// both updated: whichever the device's next key confirms, the move is already known.
pub(super) async fn note_moved(
    state_store: &dyn StateStore,
    device: DevicePk,
    (from, uid): (&str, Uid),
    to: Option<(&str, &MessageState)>,
) -> Result<(), SyncError> {
    if let Some(mut st) = state_store.collection(device, from).await? {
        if let Some(p) = st.pending.as_mut() {
            p.ops.push(SnapOp::Remove(uid));
        }
        state_store.save_collection(device, from, &st, &[SnapOp::Remove(uid)], false).await?;
    }
    if let Some((dest, message)) = to
        && let Some(mut st) = state_store.collection(device, dest).await?
    {
        let put = SnapOp::Put(message.uid, snap_item(message));
        if let Some(p) = st.pending.as_mut() {
            p.ops.push(put.clone());
        }
        state_store.save_collection(device, dest, &st, &[put], false).await?;
    }
    Ok(())
}
