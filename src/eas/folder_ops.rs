//! FolderCreate, FolderUpdate and FolderDelete (MS-ASCMD 2.2.1.3, .6, .4): user folders,
//! nested; special folders are protected. Each updates the device's hierarchy SyncKey so its
//! own change does not come back through FolderSync; other devices learn of it through
//! FolderSync and a Ping answered with Status 7.

use super::dispatch::{Ctx, Request};
use super::error::{CommandResponse, EasError};
use super::folders::{FolderMap, eas_type, folder_type};
use super::status::{FolderCreateStatus, FolderDeleteStatus, FolderUpdateStatus};
use crate::state::KnownFolder;
use crate::store::{FolderId, StoreError};
use crate::sync::{SyncError, hierarchy};
use crate::wbxml::{Element, Tag, tag};

fn answer(root: Tag, status: u16, key: Option<u32>) -> CommandResponse {
    let mut e = Element::new(root).with_text(tag::folder_hierarchy::STATUS, status.to_string());
    if let Some(k) = key {
        e.push_text_child(tag::folder_hierarchy::SYNC_KEY, k.to_string());
    }
    CommandResponse::Wbxml(e)
}

/// Checks the hierarchy key before touching the store (so a stale device changes nothing).
fn key_is_current(state: &crate::state::HierarchyState, key: &str) -> bool {
    key.trim().parse::<u32>().is_ok_and(|k| k != 0 && (k == state.key || state.pending.as_ref().is_some_and(|p| p.key == k)))
}

fn parent_of(map: &FolderMap, parent_id: &str) -> Result<Option<FolderId>, ()> {
    match parent_id.trim() {
        "0" | "" => Ok(None),
        id => map.by_collection(id).map(|f| Some(f.id.clone())).ok_or(()),
    }
}

pub async fn create(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    let root = tag::folder_hierarchy::FOLDER_CREATE;
    let doc = request.document.ok_or_else(|| EasError::Protocol("FolderCreate needs a body".into()))?;
    let (Some(key), Some(parent_id), Some(name), Some(kind)) = (
        doc.child_text(tag::folder_hierarchy::SYNC_KEY),
        doc.child_text(tag::folder_hierarchy::PARENT_ID),
        doc.child_text(tag::folder_hierarchy::DISPLAY_NAME),
        doc.child_text(tag::folder_hierarchy::TYPE),
    ) else {
        return Ok(answer(root, FolderCreateStatus::MalformedRequest.code(), None));
    };
    let kind: u8 = kind.trim().parse().unwrap_or(0);
    if kind != folder_type::USER_MAIL && kind != folder_type::USER_GENERIC {
        // Only mail folders exist here.
        return Ok(answer(root, FolderCreateStatus::MalformedRequest.code(), None));
    }
    let _lock = ctx.app.engine.lock_device(ctx.device.pk).await;
    let mut state = ctx.app.state.hierarchy(ctx.device.pk).await?;
    if !key_is_current(&state, &key) {
        return Ok(answer(root, FolderCreateStatus::InvalidSyncKey.code(), None));
    }
    let map = ctx.folders().await?;
    let Ok(parent) = parent_of(&map, &parent_id) else {
        return Ok(answer(root, FolderCreateStatus::ParentFolderNotFound.code(), None));
    };
    let mailbox = ctx.mailbox().await?;
    let created = match mailbox.create_folder(parent.as_ref(), name.trim()).await {
        Ok(id) => id,
        Err(StoreError::FolderExists) => return Ok(answer(root, FolderCreateStatus::FolderExists.code(), None)),
        Err(StoreError::InvalidFolderName) => return Ok(answer(root, FolderCreateStatus::MalformedRequest.code(), None)),
        Err(e) => return Err(e.into()),
    };
    let collection = ctx.app.state.collection_ids(ctx.login(), std::slice::from_ref(&created)).await?.remove(0);
    let new_folder = KnownFolder {
        id: collection.clone(),
        parent: if parent.is_some() { parent_id.trim().to_string() } else { "0".into() },
        name: name.trim().to_string(),
        folder_type: folder_type::USER_MAIL,
    };
    let new_key = match hierarchy::own_change(&mut state, &key, |f| f.push(new_folder)) {
        Ok(k) => k,
        Err(SyncError::InvalidSyncKey) => return Ok(answer(root, FolderCreateStatus::InvalidSyncKey.code(), None)),
        Err(e) => return Err(e.into()),
    };
    ctx.app.state.save_hierarchy(ctx.device.pk, &state).await?;
    let mut e = Element::new(root)
        .with_text(tag::folder_hierarchy::STATUS, FolderCreateStatus::Success.code().to_string())
        .with_text(tag::folder_hierarchy::SYNC_KEY, new_key.to_string());
    e.push_text_child(tag::folder_hierarchy::SERVER_ID, collection);
    Ok(CommandResponse::Wbxml(e))
}

pub async fn update(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    let root = tag::folder_hierarchy::FOLDER_UPDATE;
    let doc = request.document.ok_or_else(|| EasError::Protocol("FolderUpdate needs a body".into()))?;
    let (Some(key), Some(server_id), Some(parent_id), Some(name)) = (
        doc.child_text(tag::folder_hierarchy::SYNC_KEY),
        doc.child_text(tag::folder_hierarchy::SERVER_ID),
        doc.child_text(tag::folder_hierarchy::PARENT_ID),
        doc.child_text(tag::folder_hierarchy::DISPLAY_NAME),
    ) else {
        return Ok(answer(root, FolderUpdateStatus::MalformedRequest.code(), None));
    };
    let _lock = ctx.app.engine.lock_device(ctx.device.pk).await;
    let mut state = ctx.app.state.hierarchy(ctx.device.pk).await?;
    if !key_is_current(&state, &key) {
        return Ok(answer(root, FolderUpdateStatus::InvalidSyncKey.code(), None));
    }
    let map = ctx.folders().await?;
    let Some(folder) = map.by_collection(server_id.trim()) else {
        return Ok(answer(root, FolderUpdateStatus::FolderNotFound.code(), None));
    };
    if folder.role.is_some() {
        return Ok(answer(root, FolderUpdateStatus::FolderExistsOrSpecialFolder.code(), None));
    }
    let Ok(parent) = parent_of(&map, &parent_id) else {
        return Ok(answer(root, FolderUpdateStatus::ParentFolderNotFound.code(), None));
    };
    let mailbox = ctx.mailbox().await?;
    match mailbox.rename_folder(&folder.id, parent.as_ref(), name.trim()).await {
        Ok(_) => {}
        Err(StoreError::FolderExists) | Err(StoreError::SpecialFolder) => {
            return Ok(answer(root, FolderUpdateStatus::FolderExistsOrSpecialFolder.code(), None));
        }
        Err(StoreError::FolderNotFound) => return Ok(answer(root, FolderUpdateStatus::FolderNotFound.code(), None)),
        Err(StoreError::InvalidFolderName) => return Ok(answer(root, FolderUpdateStatus::MalformedRequest.code(), None)),
        Err(e) => return Err(e.into()),
    }
    let (id, parent_id, name) =
        (server_id.trim().to_string(), if parent.is_some() { parent_id.trim().to_string() } else { "0".into() }, name.trim().to_string());
    let kind = eas_type(folder.role);
    let new_key = match hierarchy::own_change(&mut state, &key, |folders| {
        folders.retain(|f| f.id != id);
        folders.push(KnownFolder { id: id.clone(), parent: parent_id, name, folder_type: kind });
    }) {
        Ok(k) => k,
        Err(SyncError::InvalidSyncKey) => return Ok(answer(root, FolderUpdateStatus::InvalidSyncKey.code(), None)),
        Err(e) => return Err(e.into()),
    };
    ctx.app.state.save_hierarchy(ctx.device.pk, &state).await?;
    Ok(answer(root, FolderUpdateStatus::Success.code(), Some(new_key)))
}

pub async fn delete(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    let root = tag::folder_hierarchy::FOLDER_DELETE;
    let doc = request.document.ok_or_else(|| EasError::Protocol("FolderDelete needs a body".into()))?;
    let (Some(key), Some(server_id)) = (doc.child_text(tag::folder_hierarchy::SYNC_KEY), doc.child_text(tag::folder_hierarchy::SERVER_ID))
    else {
        return Ok(answer(root, FolderDeleteStatus::MalformedRequest.code(), None));
    };
    let _lock = ctx.app.engine.lock_device(ctx.device.pk).await;
    let mut state = ctx.app.state.hierarchy(ctx.device.pk).await?;
    if !key_is_current(&state, &key) {
        return Ok(answer(root, FolderDeleteStatus::InvalidSyncKey.code(), None));
    }
    let map = ctx.folders().await?;
    let Some(folder) = map.by_collection(server_id.trim()) else {
        return Ok(answer(root, FolderDeleteStatus::FolderNotFound.code(), None));
    };
    if folder.role.is_some() {
        return Ok(answer(root, FolderDeleteStatus::SpecialFolder.code(), None));
    }
    // The folder and its descendants disappear from the device's view.
    let mut gone = vec![server_id.trim().to_string()];
    let known = map.known_folders();
    loop {
        let more: Vec<String> = known.iter().filter(|f| gone.contains(&f.parent) && !gone.contains(&f.id)).map(|f| f.id.clone()).collect();
        if more.is_empty() {
            break;
        }
        gone.extend(more);
    }
    let mailbox = ctx.mailbox().await?;
    match mailbox.delete_folder(&folder.id).await {
        Ok(()) => {}
        Err(StoreError::SpecialFolder) => return Ok(answer(root, FolderDeleteStatus::SpecialFolder.code(), None)),
        Err(StoreError::FolderNotFound) => return Ok(answer(root, FolderDeleteStatus::FolderNotFound.code(), None)),
        Err(e) => return Err(e.into()),
    }
    for c in &gone {
        ctx.app.state.remove_collection(ctx.device.pk, c).await?;
    }
    let new_key = match hierarchy::own_change(&mut state, &key, |folders| folders.retain(|f| !gone.contains(&f.id))) {
        Ok(k) => k,
        Err(SyncError::InvalidSyncKey) => return Ok(answer(root, FolderDeleteStatus::InvalidSyncKey.code(), None)),
        Err(e) => return Err(e.into()),
    };
    ctx.app.state.save_hierarchy(ctx.device.pk, &state).await?;
    Ok(answer(root, FolderDeleteStatus::Success.code(), Some(new_key)))
}
