//! GetItemEstimate (MS-ASCMD 2.2.1.9): how many changes the next Sync would bring.

use super::ProtocolVersion;
use super::dispatch::{Ctx, Request};
use super::error::{CommandResponse, EasError};
use super::status::GetItemEstimateStatus;
use crate::sync::{DeltaOptions, SyncError, filter_cutoff};
use crate::wbxml::{Element, tag};

/// Most collections estimated in one request.
const MAX_COLLECTIONS: usize = 300;

fn result(status: GetItemEstimateStatus, collection: &str, estimate: Option<u64>) -> Element {
    let mut c = Element::new(tag::get_item_estimate::COLLECTION).with_text(tag::get_item_estimate::COLLECTION_ID, collection.to_string());
    if let Some(n) = estimate {
        c.push_text_child(tag::get_item_estimate::ESTIMATE, n.to_string());
    }
    Element::new(tag::get_item_estimate::RESPONSE).with_text(tag::get_item_estimate::STATUS, status.code().to_string()).with(c)
}

pub async fn handle(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    let doc = request.document.ok_or_else(|| EasError::Protocol("GetItemEstimate needs a body".into()))?;
    let collections = doc.child(tag::get_item_estimate::COLLECTIONS).ok_or_else(|| EasError::Protocol("no Collections".into()))?;
    let map = ctx.folders().await?;
    let mailbox = ctx.mailbox().await?;
    let mut response = Element::new(tag::get_item_estimate::GET_ITEM_ESTIMATE);
    for c in collections.children_with(tag::get_item_estimate::COLLECTION).take(MAX_COLLECTIONS) {
        let id = c.child_text(tag::get_item_estimate::COLLECTION_ID).map(|s| s.trim().to_string()).unwrap_or_default();
        if map.by_collection(&id).is_none() {
            response.push(result(GetItemEstimateStatus::InvalidCollection, &id, None));
            continue;
        }
        let Some(state) = ctx.app.state.collection(ctx.device.pk, &id).await? else {
            response.push(result(GetItemEstimateStatus::SyncStateNotPrimed, &id, None));
            continue;
        };
        // 14.0+ names the SyncKey the estimate is relative to: it must be current.
        let key = c.child_text(tag::air_sync::SYNC_KEY);
        if ctx.version() >= ProtocolVersion::V14_0 {
            let k = key.as_deref().map(str::trim).unwrap_or("");
            if k == "0" {
                response.push(result(GetItemEstimateStatus::SyncStateNotPrimed, &id, None));
                continue;
            }
            let known = state.parse_key(k).is_some_and(|n| n == state.key || state.pending.as_ref().is_some_and(|p| p.key == n));
            if !known {
                response.push(result(GetItemEstimateStatus::InvalidSyncKey, &id, None));
                continue;
            }
        }
        let filter = c
            .child(tag::air_sync::OPTIONS)
            .and_then(|o| o.child_text(tag::air_sync::FILTER_TYPE))
            .or_else(|| c.child_text(tag::air_sync::FILTER_TYPE))
            .and_then(|f| f.trim().parse::<u8>().ok());
        let opts = match filter {
            Some(f) => DeltaOptions { window: usize::MAX / 2, cutoff: filter_cutoff(f, chrono::Utc::now().timestamp()), filter_type: f },
            None => super::sync::delta_options(&state),
        };
        match ctx.app.engine.estimate(mailbox.as_ref(), ctx.device.pk, &id, &opts).await {
            Ok(Some(n)) => response.push(result(GetItemEstimateStatus::Success, &id, Some(n))),
            Ok(None) => response.push(result(GetItemEstimateStatus::SyncStateNotPrimed, &id, None)),
            Err(SyncError::InvalidSyncKey) => response.push(result(GetItemEstimateStatus::InvalidSyncKey, &id, None)),
            Err(SyncError::FolderNotFound) => response.push(result(GetItemEstimateStatus::InvalidCollection, &id, None)),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(CommandResponse::Wbxml(response))
}
