//! Ping (MS-ASCMD 2.2.1.13): the long poll that makes push.
//!
//! Registers the device with the push hub first, then checks for changes the device has
//! not synced yet (answered at once), then waits until the hub wakes it or the heartbeat
//! expires. Parameters are cached per device so an empty Ping reuses them.

use std::time::Duration;

use super::dispatch::{Ctx, Request};
use super::error::{CommandResponse, EasError};
use super::status::PingStatus;
use crate::push::Wake;
use crate::state::PingCache;
use crate::store::FolderId;
use crate::sync::hierarchy;
use crate::wbxml::{Element, tag};

fn response(status: PingStatus) -> Element {
    Element::new(tag::ping::PING).with_text(tag::ping::STATUS, status.code().to_string())
}

fn changed(collections: &[String]) -> Element {
    let mut folders = Element::new(tag::ping::FOLDERS);
    for c in collections {
        folders.push_text_child(tag::ping::FOLDER, c.clone());
    }
    response(PingStatus::ChangesOccurred).with(folders)
}

/// Parses the request and merges it with the cached parameters.
fn parameters(doc: Option<&Element>, cached: Option<&PingCache>) -> Result<Option<PingCache>, EasError> {
    let mut heartbeat = None;
    let mut folders: Option<Vec<String>> = None;
    if let Some(doc) = doc {
        if let Some(h) = doc.child_text(tag::ping::HEARTBEAT_INTERVAL) {
            heartbeat = Some(h.trim().parse::<u32>().map_err(|_| EasError::Protocol("HeartbeatInterval is not a number".into()))?);
        }
        if let Some(f) = doc.child(tag::ping::FOLDERS) {
            let mut ids = Vec::new();
            for folder in f.children_with(tag::ping::FOLDER) {
                let id = folder.child_text(tag::ping::ID).map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
                let id = id.ok_or_else(|| EasError::Protocol("Folder without Id".into()))?;
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            folders = Some(ids);
        }
    }
    let heartbeat = heartbeat.or(cached.map(|c| c.heartbeat_secs));
    let folders = folders.filter(|f| !f.is_empty()).or_else(|| cached.map(|c| c.folders.clone()).filter(|f| !f.is_empty()));
    Ok(match (heartbeat, folders) {
        (Some(heartbeat_secs), Some(folders)) => Some(PingCache { heartbeat_secs, folders }),
        _ => None,
    })
}

pub async fn handle(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    let parsed = parameters(request.document.as_ref(), ctx.device.ping.as_ref())?;
    // The request tree is not needed while waiting.
    drop(request);
    let Some(params) = parsed else {
        ctx.app.metrics.ping_outcome("missing-parameters");
        return Ok(CommandResponse::Wbxml(response(PingStatus::MissingParameters)));
    };
    let limits = &ctx.app.config.ping;
    if params.heartbeat_secs < limits.min_heartbeat_secs || params.heartbeat_secs > limits.max_heartbeat_secs {
        let limit = if params.heartbeat_secs < limits.min_heartbeat_secs { limits.min_heartbeat_secs } else { limits.max_heartbeat_secs };
        ctx.app.metrics.ping_outcome("bad-heartbeat");
        return Ok(CommandResponse::Wbxml(
            response(PingStatus::InvalidHeartbeatInterval).with_text(tag::ping::HEARTBEAT_INTERVAL, limit.to_string()),
        ));
    }
    if params.folders.len() > limits.max_folders {
        ctx.app.metrics.ping_outcome("too-many-folders");
        return Ok(CommandResponse::Wbxml(
            response(PingStatus::TooManyFolders).with_text(tag::ping::MAX_FOLDERS, limits.max_folders.to_string()),
        ));
    }
    if ctx.device.ping.as_ref() != Some(&params) {
        ctx.device.ping = Some(params.clone());
        ctx.app.state.save_device(&ctx.device).await?;
    }

    let map = ctx.folders().await?;
    let mut watched: Vec<(String, FolderId)> = Vec::with_capacity(params.folders.len());
    for id in &params.folders {
        match map.by_collection(id) {
            Some(f) => watched.push((id.clone(), f.id.clone())),
            None => {
                // The device watches a folder that no longer exists: it must FolderSync.
                ctx.app.metrics.ping_outcome("hierarchy");
                return Ok(CommandResponse::Wbxml(response(PingStatus::FolderSyncRequired)));
            }
        }
    }
    let heartbeat = Duration::from_secs(params.heartbeat_secs as u64);
    let deadline = tokio::time::Instant::now() + heartbeat;
    let known = map.known_folders();
    drop(map);

    loop {
        let mut registration =
            ctx.app.hub.register(&ctx.account, &ctx.device.device_id, watched.iter().map(|(_, f)| f.clone()).collect(), true).await;

        // Anything not synced yet answers at once.
        let hierarchy_state = ctx.app.state.hierarchy(ctx.device.pk).await?;
        if hierarchy_state.key != 0 && !hierarchy::same(hierarchy::effective(&hierarchy_state), &known) {
            ctx.app.metrics.ping_outcome("hierarchy");
            return Ok(CommandResponse::Wbxml(response(PingStatus::FolderSyncRequired)));
        }
        let pending = pending_changes(ctx, &watched).await?;
        if !pending.is_empty() {
            ctx.app.metrics.ping_outcome("changes-pending");
            ctx.app.usage.record_push(ctx.login());
            return Ok(CommandResponse::Wbxml(changed(&pending)));
        }
        drop(hierarchy_state);

        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wake = if remaining.is_zero() { None } else { registration.wait(remaining).await };
        drop(registration);
        match wake {
            None => {
                ctx.app.metrics.ping_outcome("expired");
                return Ok(CommandResponse::Wbxml(response(PingStatus::HeartbeatExpired)));
            }
            Some(Wake::Changed { folders, committed_at }) => {
                let ids: Vec<String> = watched.iter().filter(|(_, f)| folders.contains(f)).map(|(c, _)| c.clone()).collect();
                ctx.app.metrics.push_latency.observe(committed_at.elapsed().as_secs_f64());
                ctx.app.metrics.ping_outcome("changes");
                ctx.app.usage.record_push(ctx.login());
                return Ok(CommandResponse::Wbxml(changed(&ids)));
            }
            Some(Wake::Hierarchy) => {
                ctx.app.metrics.ping_outcome("hierarchy");
                return Ok(CommandResponse::Wbxml(response(PingStatus::FolderSyncRequired)));
            }
            Some(Wake::Superseded) => {
                ctx.app.metrics.ping_outcome("superseded");
                return Ok(CommandResponse::Wbxml(response(PingStatus::HeartbeatExpired)));
            }
            Some(Wake::Shutdown) => {
                ctx.app.metrics.ping_outcome("shutdown");
                return Ok(CommandResponse::Wbxml(response(PingStatus::HeartbeatExpired)));
            }
            Some(Wake::Kicked) => {
                ctx.app.metrics.ping_outcome("kicked");
                super::dispatch::recheck_access(ctx).await?;
                return Ok(CommandResponse::Wbxml(response(PingStatus::HeartbeatExpired)));
            }
            Some(Wake::Recheck) => continue,
        }
    }
}

/// Watched collections holding changes the device has not synced.
async fn pending_changes(ctx: &Ctx<'_>, watched: &[(String, FolderId)]) -> Result<Vec<String>, EasError> {
    let mailbox = ctx.mailbox().await?;
    let mut out = Vec::new();
    for (collection, _) in watched {
        let Some(state) = ctx.app.state.collection(ctx.device.pk, collection).await? else { continue };
        let opts = super::sync::delta_options(&state);
        if ctx.app.engine.has_changes(mailbox.as_ref(), ctx.device.pk, collection, &opts).await? {
            out.push(collection.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_ping_reuses_the_cache_and_partial_ones_merge() {
        let cache = PingCache { heartbeat_secs: 480, folders: vec!["1".into()] };
        assert_eq!(parameters(None, Some(&cache)).unwrap(), Some(cache.clone()));
        assert_eq!(parameters(None, None).unwrap(), None);
        let only_heartbeat = Element::new(tag::ping::PING).with_text(tag::ping::HEARTBEAT_INTERVAL, "600");
        assert_eq!(
            parameters(Some(&only_heartbeat), Some(&cache)).unwrap().unwrap(),
            PingCache { heartbeat_secs: 600, folders: vec!["1".into()] }
        );
        assert_eq!(parameters(Some(&only_heartbeat), None).unwrap(), None);
        let bad = Element::new(tag::ping::PING).with_text(tag::ping::HEARTBEAT_INTERVAL, "soon");
        assert!(parameters(Some(&bad), None).is_err());
    }
}
