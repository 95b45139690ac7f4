//! Sync (MS-ASCMD 2.2.1.21) for the Email class: request parsing (with the empty and
//! partial request forms), client changes, server changes rendered as Email items, and the
//! long-poll form (Wait / HeartbeatInterval) that waits in the push hub.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::dispatch::{Ctx, Request};
use super::email::{self, BodyPreference, RenderOptions};
use super::error::{CommandResponse, EasError};
use super::folders::{FolderMap, item_uid_in, parse_server_id, server_id};
use super::status::SyncStatus;
use super::{ProtocolVersion, compose};
use crate::push::Wake;
use crate::store::{Flags, FolderId, SpecialUse, StoreError};
use crate::sync::{ClientOp, ClientOpResult, CollectionSyncRequest, DeltaOptions, ServerChange, SyncError, filter_cutoff};
use crate::wbxml::{self, Element, tag};

/// The Options a device gave a collection, remembered for requests that omit them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct CollectionOptions {
    filter_type: u8,
    /// (Type, TruncationSize, AllOrNone, Preview)
    preferences: Vec<(u8, Option<u32>, bool, Option<u32>)>,
    mime_support: u8,
}

impl CollectionOptions {
    fn parse(options: &Element) -> CollectionOptions {
        let filter_type =
            options.child_text(tag::air_sync::FILTER_TYPE).and_then(|f| f.trim().parse().ok()).filter(|f| *f <= 7).unwrap_or(0);
        let preferences =
            email::body_preferences(options).into_iter().map(|p| (p.body_type, p.truncation, p.all_or_none, p.preview)).collect();
        let mime_support = options.child_text(tag::air_sync::MIME_SUPPORT).and_then(|m| m.trim().parse().ok()).unwrap_or(0);
        CollectionOptions { filter_type, preferences, mime_support }
    }

    fn body_preferences(&self) -> Vec<BodyPreference> {
        self.preferences
            .iter()
            .map(|&(body_type, truncation, all_or_none, preview)| BodyPreference { body_type, truncation, all_or_none, preview })
            .collect()
    }
}

/// Keys handed to a quarantined device: `Q1`, `Q2`. They are not keys of any real sync
/// state, so once the device is allowed its next Sync gets Status 3 and it starts over,
/// which also removes the notice.
const QUARANTINE_KEYS: [&str; 2] = ["Q1", "Q2"];

/// What a quarantined device sees: every collection empty, and in the Inbox one message
/// telling the user the device waits for an administrator.
async fn quarantined(ctx: &Ctx<'_>, req: &SyncRequest) -> Result<CommandResponse, EasError> {
    let folders = ctx.folders().await?;
    let inbox = folders.with_role(SpecialUse::Inbox).map(|(c, _)| c.clone());
    let mut collections = Element::new(tag::air_sync::COLLECTIONS);
    for c in &req.collections {
        let key = c.sync_key.clone().unwrap_or_default();
        let (next, notice) = match key.trim() {
            "0" => (QUARANTINE_KEYS[0], false),
            k if k == QUARANTINE_KEYS[0] => (QUARANTINE_KEYS[1], inbox.as_deref() == Some(c.collection_id.as_str())),
            k if k == QUARANTINE_KEYS[1] => (QUARANTINE_KEYS[1], false),
            _ => {
                collections.push(collection_status(c, "0", SyncStatus::InvalidSyncKey).element);
                continue;
            }
        };
        let mut e = collection_status(c, next, SyncStatus::Success).element;
        if notice {
            let raw = format!(
                "From: pushsync <postmaster@localhost>\r\nTo: {}\r\nSubject: This device is quarantined\r\nDate: {}\r\n\r\nThis device ({}) is waiting for an administrator to allow it.\r\nMail will sync as soon as it is allowed.\r\n",
                ctx.account.email,
                chrono::Utc::now().to_rfc2822(),
                ctx.device.device_type
            );
            let state = crate::store::MessageState {
                uid: 0,
                modseq: 0,
                flags: Flags::NONE,
                keywords: Vec::new(),
                internal_date: chrono::Utc::now().timestamp(),
                size: raw.len() as u64,
            };
            let render = RenderOptions {
                preferences: Vec::new(),
                mime_support: 0,
                version: ctx.version(),
                collection: c.collection_id.clone(),
                draft_folder: false,
            };
            let add = Element::new(tag::air_sync::ADD)
                .with_text(tag::air_sync::SERVER_ID, format!("{}:quarantine", c.collection_id))
                .with(email::render(raw.as_bytes(), &state, 0, &render));
            e.push(Element::new(tag::air_sync::COMMANDS).with(add));
        }
        collections.push(e);
    }
    Ok(CommandResponse::Wbxml(Element::new(tag::air_sync::SYNC).with(collections)))
}

/// The delta options a collection was last synced with (Ping's and GetItemEstimate's view).
pub(super) fn delta_options(state: &crate::state::CollectionState) -> DeltaOptions {
    let options: CollectionOptions = state.client_options.as_deref().and_then(|j| serde_json::from_str(j).ok()).unwrap_or_default();
    let filter_type = options.filter_type;
    DeltaOptions { window: usize::MAX / 2, cutoff: filter_cutoff(filter_type, chrono::Utc::now().timestamp()), filter_type }
}

/// A device's change to one item.
#[derive(Debug, Clone)]
enum ClientCommand {
    Add { client_id: String, data: Element },
    Change { server_id: String, data: Element },
    Delete { server_id: String },
    Fetch { server_id: String },
}

#[derive(Debug, Clone)]
struct CollectionRequest {
    /// `None` in a cached (empty) request: the collection's current key.
    sync_key: Option<String>,
    collection_id: String,
    class: Option<String>,
    get_changes: Option<bool>,
    deletes_as_moves: bool,
    window: Option<usize>,
    options: Option<CollectionOptions>,
    commands: Vec<ClientCommand>,
}

#[derive(Debug, Clone, Default)]
struct SyncRequest {
    collections: Vec<CollectionRequest>,
    /// Long-poll interval, seconds.
    heartbeat: Option<u32>,
    window: Option<usize>,
    partial: bool,
}

fn bool_el(e: &Element, t: crate::wbxml::Tag) -> Option<bool> {
    e.child(t).map(|c| c.text_content().is_none_or(|v| v.trim() != "0"))
}

fn parse_request(doc: &Element, max_collections: usize, max_commands: usize) -> Result<SyncRequest, EasError> {
    let mut req = SyncRequest::default();
    let mut command_count = 0usize;
    if let Some(colls) = doc.child(tag::air_sync::COLLECTIONS) {
        for c in colls.children_with(tag::air_sync::COLLECTION) {
            if req.collections.len() >= max_collections {
                return Err(EasError::Status(SyncStatus::TooManyCollections.code()));
            }
            let collection_id = c.child_text(tag::air_sync::COLLECTION_ID).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
            let sync_key = c.child_text(tag::air_sync::SYNC_KEY).map(|s| s.trim().to_string());
            let (Some(collection_id), Some(sync_key)) = (collection_id, sync_key) else {
                return Err(EasError::Protocol("Collection without SyncKey or CollectionId".into()));
            };
            // Options may come per class (Email, SMS); the Email ones (or unclassed) count.
            let options = c
                .children_with(tag::air_sync::OPTIONS)
                .find(|o| o.child_text(tag::air_sync::CLASS).is_none_or(|cl| cl.trim() == "Email"))
                .map(CollectionOptions::parse);
            let mut commands = Vec::new();
            if let Some(cmds) = c.child(tag::air_sync::COMMANDS) {
                for cmd in cmds.elements() {
                    command_count += 1;
                    if command_count > max_commands {
                        return Err(EasError::Protocol(format!("more than {max_commands} client changes")));
                    }
                    let sid = || cmd.child_text(tag::air_sync::SERVER_ID).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
                    let data = || {
                        cmd.child(tag::air_sync::APPLICATION_DATA).cloned().unwrap_or_else(|| Element::new(tag::air_sync::APPLICATION_DATA))
                    };
                    let parsed = match cmd.tag {
                        t if t == tag::air_sync::ADD => ClientCommand::Add {
                            client_id: cmd
                                .child_text(tag::air_sync::CLIENT_ID)
                                .ok_or_else(|| EasError::Protocol("Add without ClientId".into()))?,
                            data: data(),
                        },
                        t if t == tag::air_sync::CHANGE => ClientCommand::Change {
                            server_id: sid().ok_or_else(|| EasError::Protocol("Change without ServerId".into()))?,
                            data: data(),
                        },
                        t if t == tag::air_sync::DELETE => {
                            ClientCommand::Delete { server_id: sid().ok_or_else(|| EasError::Protocol("Delete without ServerId".into()))? }
                        }
                        t if t == tag::air_sync::FETCH => {
                            ClientCommand::Fetch { server_id: sid().ok_or_else(|| EasError::Protocol("Fetch without ServerId".into()))? }
                        }
                        other => return Err(EasError::Protocol(format!("unknown client command {other}"))),
                    };
                    commands.push(parsed);
                }
            }
            req.collections.push(CollectionRequest {
                sync_key: Some(sync_key),
                collection_id,
                class: c.child_text(tag::air_sync::CLASS),
                get_changes: bool_el(c, tag::air_sync::GET_CHANGES),
                deletes_as_moves: bool_el(c, tag::air_sync::DELETES_AS_MOVES).unwrap_or(true),
                window: c.child_text(tag::air_sync::WINDOW_SIZE).and_then(|w| w.trim().parse().ok()),
                options,
                commands,
            });
        }
    }
    if let Some(w) = doc.child_text(tag::air_sync::WAIT) {
        let minutes: u32 = w.trim().parse().map_err(|_| EasError::Protocol("Wait is not a number".into()))?;
        req.heartbeat = Some(minutes.saturating_mul(60));
    }
    if let Some(h) = doc.child_text(tag::air_sync::HEARTBEAT_INTERVAL) {
        req.heartbeat = Some(h.trim().parse().map_err(|_| EasError::Protocol("HeartbeatInterval is not a number".into()))?);
    }
    req.window = doc.child_text(tag::air_sync::WINDOW_SIZE).and_then(|w| w.trim().parse().ok());
    req.partial = bool_el(doc, tag::air_sync::PARTIAL).unwrap_or(false);
    Ok(req)
}

/// The result of one collection, ready to be written into the response.
struct CollectionResult {
    element: Element,
    has_content: bool,
}

fn collection_status(c: &CollectionRequest, key: &str, status: SyncStatus) -> CollectionResult {
    let mut e = Element::new(tag::air_sync::COLLECTION);
    if let Some(class) = &c.class {
        e.push_text_child(tag::air_sync::CLASS, class.clone());
    }
    e.push_text_child(tag::air_sync::SYNC_KEY, key);
    e.push_text_child(tag::air_sync::COLLECTION_ID, c.collection_id.clone());
    e.push_text_child(tag::air_sync::STATUS, status.code().to_string());
    CollectionResult { element: e, has_content: true }
}

pub async fn handle(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    let limits = &ctx.app.config.sync;
    let mut req = match &request.document {
        Some(doc) => {
            let mut req = parse_request(doc, limits.max_collections, limits.max_client_changes)?;
            if req.partial || req.collections.is_empty() {
                // A partial request (or only Wait/HeartbeatInterval) completes the cached one.
                let cached = cached_request(ctx).await?.ok_or(EasError::Status(SyncStatus::IncompleteRequest.code()))?;
                for c in cached.collections {
                    if !req.collections.iter().any(|r| r.collection_id == c.collection_id) {
                        req.collections.push(c);
                    }
                }
                if req.heartbeat.is_none() {
                    req.heartbeat = cached.heartbeat;
                }
            } else if let Some(bytes) = cacheable(doc) {
                ctx.app.state.save_sync_request(ctx.device.pk, &bytes).await?;
            }
            req
        }
        None => cached_request(ctx).await?.ok_or(EasError::Status(SyncStatus::IncompleteRequest.code()))?,
    };
    if req.collections.is_empty() {
        return Err(EasError::Status(SyncStatus::IncompleteRequest.code()));
    }
    let ping = &ctx.app.config.ping;
    if let Some(h) = req.heartbeat
        && (h < ping.min_heartbeat_secs || h > ping.max_heartbeat_secs)
    {
        let limit = if h < ping.min_heartbeat_secs { ping.min_heartbeat_secs } else { ping.max_heartbeat_secs };
        let limit = if doc_uses_wait(&request) { limit / 60 } else { limit };
        let response = Element::new(tag::air_sync::SYNC)
            .with_text(tag::air_sync::STATUS, SyncStatus::InvalidWaitOrHeartbeatInterval.code().to_string())
            .with_text(tag::air_sync::LIMIT, limit.to_string());
        return Ok(CommandResponse::Wbxml(response));
    }
    ctx.app.usage.record_sync(ctx.login(), &ctx.device.device_id);
    if ctx.device.access == crate::state::AccessState::Quarantined {
        return quarantined(ctx, &req).await;
    }

    let deadline = req.heartbeat.map(|h| Instant::now() + Duration::from_secs(h as u64));
    loop {
        // Register before computing so a change committed meanwhile still wakes us.
        let mut registration = match deadline {
            Some(_) => {
                let folders = ctx.folders().await?;
                let watched: Vec<FolderId> =
                    req.collections.iter().filter_map(|c| folders.by_collection(&c.collection_id).map(|f| f.id.clone())).collect();
                Some(ctx.app.hub.register(&ctx.account, &ctx.device.device_id, watched, true).await)
            }
            None => None,
        };
        let results = run_collections(ctx, &mut req).await?;
        let any = results.iter().any(|r| r.has_content);
        if any {
            let mut collections = Element::new(tag::air_sync::COLLECTIONS);
            for r in results {
                collections.push(r.element);
            }
            return Ok(CommandResponse::Wbxml(Element::new(tag::air_sync::SYNC).with(collections)));
        }
        let (Some(deadline), Some(reg)) = (deadline, registration.as_mut()) else {
            return Ok(CommandResponse::Empty);
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Ok(CommandResponse::Empty);
        }
        match reg.wait(remaining).await {
            None | Some(Wake::Superseded) | Some(Wake::Shutdown) => return Ok(CommandResponse::Empty),
            Some(Wake::Kicked) => {
                super::dispatch::recheck_access(ctx).await?;
                return Ok(CommandResponse::Empty);
            }
            Some(Wake::Hierarchy) => {
                let response = Element::new(tag::air_sync::SYNC)
                    .with_text(tag::air_sync::STATUS, SyncStatus::FolderHierarchyChanged.code().to_string());
                return Ok(CommandResponse::Wbxml(response));
            }
            Some(Wake::Changed { committed_at, .. }) => {
                ctx.app.metrics.push_latency.observe(committed_at.elapsed().as_secs_f64());
                ctx.app.usage.record_push(ctx.login());
            }
            Some(Wake::Recheck) => {}
        }
        // A cached request's keys are "current"; after a change they may have moved on.
        for c in &mut req.collections {
            c.commands.clear();
        }
    }
}

fn doc_uses_wait(request: &Request) -> bool {
    request.document.as_ref().is_some_and(|d| d.child(tag::air_sync::WAIT).is_some())
}

/// The request without client changes, as the cache keeps it.
fn cacheable(doc: &Element) -> Option<Vec<u8>> {
    let mut copy = doc.clone();
    if let Some(crate::wbxml::Node::Element(colls)) =
        copy.children.iter_mut().find(|n| matches!(n, crate::wbxml::Node::Element(e) if e.tag == tag::air_sync::COLLECTIONS))
    {
        for c in colls.children.iter_mut() {
            if let crate::wbxml::Node::Element(c) = c {
                c.children.retain(|n| !matches!(n, crate::wbxml::Node::Element(e) if e.tag == tag::air_sync::COMMANDS));
            }
        }
    }
    Some(wbxml::encode(&copy))
}

async fn cached_request(ctx: &Ctx<'_>) -> Result<Option<SyncRequest>, EasError> {
    let Some(bytes) = ctx.app.state.sync_request(ctx.device.pk).await? else { return Ok(None) };
    let Ok(doc) = wbxml::decode(&bytes) else { return Ok(None) };
    let limits = &ctx.app.config.sync;
    let mut req = parse_request(&doc, limits.max_collections, limits.max_client_changes)?;
    for c in &mut req.collections {
        // The cached keys are stale: use whatever the collection is at now.
        c.sync_key = None;
        c.commands.clear();
    }
    Ok(Some(req))
}

async fn run_collections(ctx: &Ctx<'_>, req: &mut SyncRequest) -> Result<Vec<CollectionResult>, EasError> {
    let folders = ctx.folders().await?;
    let trash = folders.with_role(SpecialUse::Trash).map(|(_, f)| f.id.clone());
    let drafts = folders.with_role(SpecialUse::Drafts).map(|(c, _)| c.clone());
    let mut global_room = req.window.map(|w| w.clamp(1, ctx.app.config.sync.max_window)).unwrap_or(usize::MAX);
    let mut results = Vec::with_capacity(req.collections.len());
    let _lock = ctx.app.engine.lock_device(ctx.device.pk).await;
    for c in req.collections.iter_mut() {
        let window = c
            .window
            .filter(|w| *w > 0)
            .unwrap_or(ctx.app.config.sync.default_window)
            .min(ctx.app.config.sync.max_window)
            .min(global_room.max(1));
        let result = run_collection(ctx, &folders, c, window, trash.as_ref(), drafts.as_deref()).await?;
        if let Some(r) = &result.1 {
            global_room = global_room.saturating_sub(*r);
        }
        results.push(result.0);
    }
    Ok(results)
}

/// Runs one collection; returns its result and how many changes it sent.
async fn run_collection(
    ctx: &Ctx<'_>,
    folders: &FolderMap,
    c: &mut CollectionRequest,
    window: usize,
    trash: Option<&FolderId>,
    drafts_collection: Option<&str>,
) -> Result<(CollectionResult, Option<usize>), EasError> {
    let Some(folder) = folders.by_collection(&c.collection_id) else {
        return Ok((collection_status(c, c.sync_key.as_deref().unwrap_or("0"), SyncStatus::FolderHierarchyChanged), None));
    };
    let stored = ctx.app.state.collection(ctx.device.pk, &c.collection_id).await?;
    let sync_key = match &c.sync_key {
        Some(k) => k.clone(),
        None => match &stored {
            Some(st) => st.key_string(st.key),
            None => return Ok((collection_status(c, "0", SyncStatus::InvalidSyncKey), None)),
        },
    };
    let options = c
        .options
        .clone()
        .or_else(|| stored.as_ref().and_then(|s| s.client_options.as_deref()).and_then(|j| serde_json::from_str(j).ok()))
        .unwrap_or_default();
    let options_json = c.options.as_ref().and_then(|o| serde_json::to_string(o).ok());
    let bootstrap = sync_key.trim() == "0";
    let get_changes = !bootstrap && c.get_changes.unwrap_or(true);
    let now = chrono::Utc::now().timestamp();
    let delta = DeltaOptions { window, cutoff: filter_cutoff(options.filter_type, now), filter_type: options.filter_type };
    let render = RenderOptions {
        preferences: options.body_preferences(),
        mime_support: options.mime_support,
        version: ctx.version(),
        collection: c.collection_id.clone(),
        draft_folder: drafts_collection == Some(c.collection_id.as_str()),
    };

    // Client changes → store operations.
    let mut ops = Vec::new();
    let mut op_refs: Vec<(usize, String)> = Vec::new(); // (index into commands, server id or client id)
    let mut fetches = Vec::new();
    let mut item_errors: Vec<(crate::wbxml::Tag, String, SyncStatus)> = Vec::new();
    if !bootstrap {
        for (i, cmd) in c.commands.iter().enumerate() {
            match cmd {
                ClientCommand::Change { server_id: sid, data } => match item_uid_in(sid, &c.collection_id) {
                    Some(uid) => {
                        ops.push(ClientOp::SetFlags { uid, change: email::flag_change(data) });
                        op_refs.push((i, sid.clone()));
                    }
                    None => item_errors.push((tag::air_sync::CHANGE, sid.clone(), SyncStatus::ObjectNotFound)),
                },
                ClientCommand::Delete { server_id: sid } => match item_uid_in(sid, &c.collection_id) {
                    Some(uid) => {
                        let move_to = if c.deletes_as_moves { trash.filter(|t| **t != folder.id).cloned() } else { None };
                        ops.push(ClientOp::Delete { uid, move_to });
                        op_refs.push((i, sid.clone()));
                    }
                    None => item_errors.push((tag::air_sync::DELETE, sid.clone(), SyncStatus::ObjectNotFound)),
                },
                ClientCommand::Add { client_id, data } => {
                    if ctx.version() >= ProtocolVersion::V16_0 && render.draft_folder {
                        let raw = compose::build_draft(&ctx.account, data);
                        ops.push(ClientOp::Add { client_id: client_id.clone(), raw, flags: Flags::DRAFT.union(Flags::SEEN) });
                        op_refs.push((i, client_id.clone()));
                    } else {
                        item_errors.push((tag::air_sync::ADD, client_id.clone(), SyncStatus::ConversionError));
                    }
                }
                ClientCommand::Fetch { server_id: sid } => fetches.push(sid.clone()),
            }
        }
    }

    let mailbox = ctx.mailbox().await?;
    let mut sync = match ctx
        .app
        .engine
        .begin_collection(
            mailbox.as_ref(),
            CollectionSyncRequest {
                device: ctx.device.pk,
                collection: &c.collection_id,
                folder: &folder.id,
                sync_key: &sync_key,
                options: delta,
                get_changes,
                client_ops: ops,
                client_options: options_json,
            },
        )
        .await
    {
        Ok(s) => s,
        Err(SyncError::InvalidSyncKey) => return Ok((collection_status(c, "0", SyncStatus::InvalidSyncKey), None)),
        Err(SyncError::FolderNotFound) => return Ok((collection_status(c, &sync_key, SyncStatus::FolderHierarchyChanged), None)),
        Err(e) => return Err(e.into()),
    };

    // Render server changes; an Add whose message vanished meanwhile is dropped.
    let mut commands = Element::new(tag::air_sync::COMMANDS);
    let mut sent = 0usize;
    let mut vanished = Vec::new();
    for change in &sync.changes {
        let sid = server_id(&c.collection_id, change.uid());
        match change {
            ServerChange::Add(m) | ServerChange::Change(m) => {
                let is_add = matches!(change, ServerChange::Add(_));
                let data = if is_add {
                    match mailbox.fetch(&folder.id, m.uid).await {
                        Ok(raw) => email::render(&raw, m, m.uid, &render),
                        Err(StoreError::MessageNotFound) => {
                            vanished.push(m.uid);
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    change_data(m, render.version)
                };
                let t = if is_add { tag::air_sync::ADD } else { tag::air_sync::CHANGE };
                commands.push(Element::new(t).with_text(tag::air_sync::SERVER_ID, sid).with(data));
            }
            ServerChange::Delete(_) => commands.push(Element::new(tag::air_sync::DELETE).with_text(tag::air_sync::SERVER_ID, sid)),
            ServerChange::SoftDelete(_) => commands.push(Element::new(tag::air_sync::SOFT_DELETE).with_text(tag::air_sync::SERVER_ID, sid)),
        }
        sent += 1;
    }
    for uid in vanished {
        sync.drop_change(uid);
    }

    // Responses: successful Adds, failed Changes/Deletes, Fetches.
    let mut responses = Element::new(tag::air_sync::RESPONSES);
    for ((i, id), result) in op_refs.iter().zip(sync.results.iter()) {
        match (&c.commands[*i], result) {
            (ClientCommand::Add { .. }, ClientOpResult::Added(uid)) => responses.push(
                Element::new(tag::air_sync::ADD)
                    .with_text(tag::air_sync::CLIENT_ID, id.clone())
                    .with_text(tag::air_sync::SERVER_ID, server_id(&c.collection_id, *uid))
                    .with_text(tag::air_sync::STATUS, "1"),
            ),
            (ClientCommand::Add { .. }, _) => responses.push(
                Element::new(tag::air_sync::ADD)
                    .with_text(tag::air_sync::CLIENT_ID, id.clone())
                    .with_text(tag::air_sync::STATUS, SyncStatus::ServerError.code().to_string()),
            ),
            (cmd, ClientOpResult::NotFound) | (cmd, ClientOpResult::Failed(_)) => {
                let t = if matches!(cmd, ClientCommand::Delete { .. }) { tag::air_sync::DELETE } else { tag::air_sync::CHANGE };
                let status = if matches!(result, ClientOpResult::NotFound) { SyncStatus::ObjectNotFound } else { SyncStatus::ServerError };
                responses.push(
                    Element::new(t)
                        .with_text(tag::air_sync::SERVER_ID, id.clone())
                        .with_text(tag::air_sync::STATUS, status.code().to_string()),
                );
            }
            _ => {}
        }
    }
    for (t, id, status) in item_errors {
        let id_tag = if t == tag::air_sync::ADD { tag::air_sync::CLIENT_ID } else { tag::air_sync::SERVER_ID };
        responses.push(Element::new(t).with_text(id_tag, id).with_text(tag::air_sync::STATUS, status.code().to_string()));
    }
    for sid in fetches {
        responses.push(fetch_response(&mailbox, folders, &sid, &render).await?);
    }
    let has_responses = responses.elements().next().is_some();

    let has_content = sync.has_content() || has_responses;
    let more = sync.more_available;
    let key = sync.commit(ctx.app.state.as_ref()).await?;
    ctx.app.metrics.items_synced.inc_by(sent as u64);

    let mut e = Element::new(tag::air_sync::COLLECTION);
    if let Some(class) = &c.class {
        e.push_text_child(tag::air_sync::CLASS, class.clone());
    }
    e.push_text_child(tag::air_sync::SYNC_KEY, key.clone());
    e.push_text_child(tag::air_sync::COLLECTION_ID, c.collection_id.clone());
    e.push_text_child(tag::air_sync::STATUS, SyncStatus::Success.code().to_string());
    if commands.elements().next().is_some() {
        e.push(commands);
    }
    if has_responses {
        e.push(responses);
    }
    if more {
        e.push(Element::new(tag::air_sync::MORE_AVAILABLE));
    }
    // A later round of a long poll continues from the key just handed out.
    c.sync_key = Some(key);
    Ok((CollectionResult { element: e, has_content: has_content || more }, Some(sent)))
}

/// A Change carries only what can change on the server side: Read, Flag, Categories, and
/// (14.0+) the last verb when the message was replied to or forwarded from elsewhere.
fn change_data(m: &crate::store::MessageState, version: ProtocolVersion) -> Element {
    let mut data =
        Element::new(tag::air_sync::APPLICATION_DATA).with_text(tag::email::READ, if m.flags.contains(Flags::SEEN) { "1" } else { "0" });
    let mut flag = Element::new(tag::email::FLAG);
    if m.flags.contains(Flags::FLAGGED) {
        flag.push_text_child(tag::email::STATUS, "2");
        flag.push_text_child(tag::email::FLAG_TYPE, "Follow up");
    }
    data.push(flag);
    let mut cats = Element::new(tag::email::CATEGORIES);
    for k in &m.keywords {
        cats.push_text_child(tag::email::CATEGORY, email::keyword_to_category(k));
    }
    data.push(cats);
    if version >= ProtocolVersion::V14_0 {
        if m.flags.contains(Flags::FORWARDED) {
            data.push_text_child(tag::email2::LAST_VERB_EXECUTED, "3");
        } else if m.flags.contains(Flags::ANSWERED) {
            data.push_text_child(tag::email2::LAST_VERB_EXECUTED, "1");
        }
    }
    data
}

async fn fetch_response(
    mailbox: &std::sync::Arc<dyn crate::store::Mailbox>,
    folders: &FolderMap,
    sid: &str,
    render: &RenderOptions,
) -> Result<Element, EasError> {
    let not_found = || {
        Element::new(tag::air_sync::FETCH)
            .with_text(tag::air_sync::SERVER_ID, sid.to_string())
            .with_text(tag::air_sync::STATUS, SyncStatus::ObjectNotFound.code().to_string())
    };
    let Some((coll, uid)) = parse_server_id(sid) else { return Ok(not_found()) };
    let Some(folder) = folders.by_collection(coll) else { return Ok(not_found()) };
    let Some(state) = mailbox.message_states(&folder.id, &[uid]).await?.into_iter().next() else { return Ok(not_found()) };
    let raw = match mailbox.fetch(&folder.id, uid).await {
        Ok(r) => r,
        Err(StoreError::MessageNotFound) => return Ok(not_found()),
        Err(e) => return Err(e.into()),
    };
    Ok(Element::new(tag::air_sync::FETCH)
        .with_text(tag::air_sync::SERVER_ID, sid.to_string())
        .with_text(tag::air_sync::STATUS, "1")
        .with(email::render(&raw, &state, uid, render)))
}
