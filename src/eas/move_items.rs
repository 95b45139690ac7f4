//! MoveItems (MS-ASCMD 2.2.1.12): moves between any folders, with the new ServerId in
//! DstMsgId; the device's own snapshots are updated so the move is not echoed back.

use super::dispatch::{Ctx, Request};
use super::error::{CommandResponse, EasError};
use super::folders::{item_uid_in, server_id};
use super::status::MoveItemsStatus;
use crate::store::StoreError;
use crate::wbxml::{Element, tag};

/// Most moves in one request.
const MAX_MOVES: usize = 1000;

fn response(src: &str, status: MoveItemsStatus, dst: Option<String>) -> Element {
    let mut r = Element::new(tag::move_::RESPONSE)
        .with_text(tag::move_::SRC_MSG_ID, src.to_string())
        .with_text(tag::move_::STATUS, status.code().to_string());
    if let Some(d) = dst {
        r.push_text_child(tag::move_::DST_MSG_ID, d);
    }
    r
}

pub async fn handle(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    let doc = request.document.ok_or_else(|| EasError::Protocol("MoveItems needs a body".into()))?;
    let map = ctx.folders().await?;
    let mailbox = ctx.mailbox().await?;
    let mut out = Element::new(tag::move_::MOVE_ITEMS);
    let _lock = ctx.app.engine.lock_device(ctx.device.pk).await;
    for m in doc.children_with(tag::move_::MOVE).take(MAX_MOVES) {
        let src_msg = m.child_text(tag::move_::SRC_MSG_ID).unwrap_or_default();
        let src_fld = m.child_text(tag::move_::SRC_FLD_ID).unwrap_or_default();
        let dst_fld = m.child_text(tag::move_::DST_FLD_ID).unwrap_or_default();
        let Some(source) = map.by_collection(src_fld.trim()) else {
            out.push(response(&src_msg, MoveItemsStatus::InvalidSourceId, None));
            continue;
        };
        let Some(uid) = item_uid_in(&src_msg, src_fld.trim()) else {
            out.push(response(&src_msg, MoveItemsStatus::InvalidSourceId, None));
            continue;
        };
        let Some(dest) = map.by_collection(dst_fld.trim()) else {
            out.push(response(&src_msg, MoveItemsStatus::InvalidDestinationId, None));
            continue;
        };
        if source.id == dest.id {
            out.push(response(&src_msg, MoveItemsStatus::SameSourceAndDestination, None));
            continue;
        }
        let moved = match mailbox.move_messages(&source.id, &[uid], &dest.id).await {
            Ok(m) => m,
            Err(StoreError::FolderNotFound) => {
                out.push(response(&src_msg, MoveItemsStatus::InvalidDestinationId, None));
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "move failed");
                out.push(response(&src_msg, MoveItemsStatus::MoveFailure, None));
                continue;
            }
        };
        let Some(&(_, new_uid)) = moved.first() else {
            out.push(response(&src_msg, MoveItemsStatus::InvalidSourceId, None));
            continue;
        };
        let state = mailbox.message_states(&dest.id, &[new_uid]).await?.into_iter().next();
        ctx.app.engine.note_moved(ctx.device.pk, (src_fld.trim(), uid), state.as_ref().map(|s| (dst_fld.trim(), s))).await?;
        out.push(response(&src_msg, MoveItemsStatus::Success, Some(server_id(dst_fld.trim(), new_uid))));
    }
    Ok(CommandResponse::Wbxml(out))
}
