//! FolderSync (MS-ASCMD 2.2.1.5): the folder hierarchy as Add/Update/Delete deltas.

use super::dispatch::{Ctx, Request};
use super::error::{CommandResponse, EasError};
use super::status::FolderSyncStatus;
use crate::state::KnownFolder;
use crate::sync::{SyncError, hierarchy};
use crate::wbxml::{Element, tag};

fn folder_element(t: crate::wbxml::Tag, f: &KnownFolder) -> Element {
    Element::new(t)
        .with_text(tag::folder_hierarchy::SERVER_ID, f.id.clone())
        .with_text(tag::folder_hierarchy::PARENT_ID, f.parent.clone())
        .with_text(tag::folder_hierarchy::DISPLAY_NAME, f.name.clone())
        .with_text(tag::folder_hierarchy::TYPE, f.folder_type.to_string())
}

pub async fn handle(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    let doc = request.document.ok_or_else(|| EasError::Protocol("FolderSync needs a body".into()))?;
    let key = doc.child_text(tag::folder_hierarchy::SYNC_KEY).ok_or_else(|| EasError::Protocol("FolderSync without SyncKey".into()))?;
    let current = ctx.folders().await?.known_folders();

    let _lock = ctx.app.engine.lock_device(ctx.device.pk).await;
    let mut state = ctx.app.state.hierarchy(ctx.device.pk).await?;
    let delta = match hierarchy::folder_sync(&mut state, &key, current) {
        Ok(d) => d,
        Err(SyncError::InvalidSyncKey) => return Err(EasError::Status(FolderSyncStatus::InvalidSyncKey.code())),
        Err(e) => return Err(e.into()),
    };
    ctx.app.state.save_hierarchy(ctx.device.pk, &state).await?;

    let mut changes = Element::new(tag::folder_hierarchy::CHANGES)
        .with_text(tag::folder_hierarchy::COUNT, (delta.adds.len() + delta.updates.len() + delta.deletes.len()).to_string());
    for f in &delta.adds {
        changes.push(folder_element(tag::folder_hierarchy::ADD, f));
    }
    for f in &delta.updates {
        changes.push(folder_element(tag::folder_hierarchy::UPDATE, f));
    }
    for id in &delta.deletes {
        changes.push(Element::new(tag::folder_hierarchy::DELETE).with_text(tag::folder_hierarchy::SERVER_ID, id.clone()));
    }
    let response = Element::new(tag::folder_hierarchy::FOLDER_SYNC)
        .with_text(tag::folder_hierarchy::STATUS, FolderSyncStatus::Success.code().to_string())
        .with_text(tag::folder_hierarchy::SYNC_KEY, delta.key.to_string())
        .with(changes);
    Ok(CommandResponse::Wbxml(response))
}
