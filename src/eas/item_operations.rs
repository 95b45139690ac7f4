//! ItemOperations (MS-ASCMD 2.2.1.10): Fetch of items and attachments (inline base64 or
//! multipart), EmptyFolderContents, and Move of a conversation. Also GetAttachment, the 12.x
//! way to download an attachment.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{BufMut, Bytes, BytesMut};

use super::dispatch::{Ctx, Request};
use super::email::{self, RenderOptions};
use super::error::{CommandResponse, EasError};
use super::folders::{FolderMap, item_uid_in, parse_server_id};
use super::status::ItemOperationsStatus as Status;
use crate::store::{Mailbox, SpecialUse, StoreError};
use crate::wbxml::{Element, tag};

/// Most operations in one request.
const MAX_OPERATIONS: usize = 100;
/// Messages examined per folder when moving a conversation.
const CONVERSATION_SCAN: usize = 1000;

struct Multipart {
    enabled: bool,
    parts: Vec<Bytes>,
}

impl Multipart {
    /// Adds a binary part; returns its number (part 0 is the WBXML response).
    fn add(&mut self, data: Vec<u8>) -> usize {
        self.parts.push(Bytes::from(data));
        self.parts.len()
    }

    /// MS-ASCMD 2.2.1.10.1: part count, then (offset, length) per part, then the parts.
    fn encode(&self, wbxml: Vec<u8>) -> Bytes {
        let count = self.parts.len() + 1;
        let header = 4 + 8 * count;
        let mut out = BytesMut::with_capacity(header + wbxml.len() + self.parts.iter().map(Bytes::len).sum::<usize>());
        out.put_i32_le(count as i32);
        let mut offset = header;
        for len in std::iter::once(wbxml.len()).chain(self.parts.iter().map(Bytes::len)) {
            out.put_i32_le(offset as i32);
            out.put_i32_le(len as i32);
            offset += len;
        }
        out.put_slice(&wbxml);
        for p in &self.parts {
            out.put_slice(p);
        }
        out.freeze()
    }
}

fn status(code: Status) -> String {
    code.code().to_string()
}

pub async fn handle(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    let doc = request.document.ok_or_else(|| EasError::Protocol("ItemOperations needs a body".into()))?;
    let map = ctx.folders().await?;
    let mailbox = ctx.mailbox().await?;
    let mut multipart = Multipart { enabled: ctx.line.params.accept_multipart, parts: Vec::new() };
    let mut response = Element::new(tag::item_operations::RESPONSE);
    for op in doc.elements().take(MAX_OPERATIONS) {
        let out = match op.tag {
            t if t == tag::item_operations::FETCH => fetch(ctx, &map, &mailbox, op, &mut multipart).await?,
            t if t == tag::item_operations::EMPTY_FOLDER_CONTENTS => empty_folder(&map, &mailbox, op).await?,
            t if t == tag::item_operations::MOVE => move_conversation(&map, &mailbox, op).await?,
            other => return Err(EasError::Protocol(format!("unknown ItemOperations operation {other}"))),
        };
        response.push(out);
    }
    let root =
        Element::new(tag::item_operations::ITEM_OPERATIONS).with_text(tag::item_operations::STATUS, status(Status::Success)).with(response);
    if multipart.enabled {
        let body = multipart.encode(crate::wbxml::encode(&root));
        return Ok(CommandResponse::Raw { content_type: "application/vnd.ms-sync.multipart".into(), body });
    }
    Ok(CommandResponse::Wbxml(root))
}

/// Parses `first-last` (inclusive); `None` when malformed.
fn parse_range(s: &str) -> Option<(usize, usize)> {
    let (a, b) = s.trim().split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some((a, b))
}

async fn fetch(
    ctx: &Ctx<'_>,
    map: &FolderMap,
    mailbox: &std::sync::Arc<dyn Mailbox>,
    op: &Element,
    multipart: &mut Multipart,
) -> Result<Element, EasError> {
    let options = op.child(tag::item_operations::OPTIONS);
    let range = options.and_then(|o| o.child_text(tag::item_operations::RANGE));

    // An attachment by FileReference.
    if let Some(reference) = op.child_text(tag::air_sync_base::FILE_REFERENCE) {
        let mut out = Element::new(tag::item_operations::FETCH);
        let bad = |out: Element, s: Status| {
            out.with_text(tag::item_operations::STATUS, status(s)).with_text(tag::air_sync_base::FILE_REFERENCE, reference.clone())
        };
        let Some((collection, uid, index)) = email::parse_file_reference(&reference) else {
            return Ok(bad(out, Status::InvalidAttachment));
        };
        let Some(folder) = map.by_collection(&collection) else { return Ok(bad(out, Status::InvalidAttachment)) };
        let raw = match mailbox.fetch(&folder.id, uid).await {
            Ok(r) => r,
            Err(StoreError::MessageNotFound) => return Ok(bad(out, Status::ObjectNotFoundOrAccessDenied)),
            Err(e) => return Err(e.into()),
        };
        let Some((content_type, data)) = email::attachment_data(&raw, index) else { return Ok(bad(out, Status::InvalidAttachment)) };
        let total = data.len();
        let (slice, range_text) = match &range {
            Some(r) => match parse_range(r) {
                Some((a, _)) if a >= total && total > 0 => return Ok(bad(out, Status::InvalidByteRange)),
                Some((a, b)) => {
                    let end = (b + 1).min(total);
                    (&data[a.min(end)..end], Some(format!("{}-{}", a, end.saturating_sub(1))))
                }
                None => return Ok(bad(out, Status::InvalidByteRange)),
            },
            None => (&data[..], None),
        };
        out.push_text_child(tag::item_operations::STATUS, status(Status::Success));
        out.push_text_child(tag::air_sync_base::FILE_REFERENCE, reference.clone());
        let mut props = Element::new(tag::item_operations::PROPERTIES).with_text(tag::air_sync_base::CONTENT_TYPE, content_type);
        if let Some(r) = range_text {
            props.push_text_child(tag::item_operations::RANGE, r);
            props.push_text_child(tag::item_operations::TOTAL, total.to_string());
        }
        if multipart.enabled {
            let part = multipart.add(slice.to_vec());
            props.push_text_child(tag::item_operations::PART, part.to_string());
        } else {
            props.push_text_child(tag::item_operations::DATA, BASE64.encode(slice));
        }
        out.push(props);
        return Ok(out);
    }

    // A mail item by CollectionId + ServerId, or by LongId (from Search).
    let (collection, server_id, long_id) =
        (op.child_text(tag::air_sync::COLLECTION_ID), op.child_text(tag::air_sync::SERVER_ID), op.child_text(tag::search::LONG_ID));
    let target = match (&server_id, &long_id) {
        (Some(sid), _) => match &collection {
            Some(c) => item_uid_in(sid, c).map(|u| (c.clone(), u)),
            None => parse_server_id(sid).map(|(c, u)| (c.to_string(), u)),
        },
        (None, Some(lid)) => parse_server_id(lid).map(|(c, u)| (c.to_string(), u)),
        (None, None) => return Err(EasError::Protocol("Fetch without FileReference, ServerId or LongId".into())),
    };
    let mut out = Element::new(tag::item_operations::FETCH);
    let not_found = |mut out: Element| {
        out.push_text_child(tag::item_operations::STATUS, status(Status::ObjectNotFoundOrAccessDenied));
        if let Some(c) = &collection {
            out.push_text_child(tag::air_sync::COLLECTION_ID, c.clone());
        }
        if let Some(s) = &server_id {
            out.push_text_child(tag::air_sync::SERVER_ID, s.clone());
        }
        if let Some(l) = &long_id {
            out.push_text_child(tag::search::LONG_ID, l.clone());
        }
        out
    };
    let Some((collection_id, uid)) = target else { return Ok(not_found(out)) };
    let Some(folder) = map.by_collection(&collection_id) else { return Ok(not_found(out)) };
    let Some(state) = mailbox.message_states(&folder.id, &[uid]).await?.into_iter().next() else { return Ok(not_found(out)) };
    let raw = match mailbox.fetch(&folder.id, uid).await {
        Ok(r) => r,
        Err(StoreError::MessageNotFound) => return Ok(not_found(out)),
        Err(e) => return Err(e.into()),
    };
    let render = RenderOptions {
        preferences: options.map(email::body_preferences).unwrap_or_default(),
        mime_support: options.and_then(|o| o.child_text(tag::air_sync::MIME_SUPPORT)).and_then(|m| m.trim().parse().ok()).unwrap_or(0),
        version: ctx.version(),
        collection: collection_id.clone(),
        draft_folder: folder.role == Some(SpecialUse::Drafts),
    };
    out.push_text_child(tag::item_operations::STATUS, status(Status::Success));
    if let Some(l) = &long_id {
        out.push_text_child(tag::search::LONG_ID, l.clone());
    } else {
        out.push_text_child(tag::air_sync::COLLECTION_ID, collection_id.clone());
        out.push_text_child(tag::air_sync::SERVER_ID, super::folders::server_id(&collection_id, uid));
    }
    out.push_text_child(tag::air_sync::CLASS, "Email");
    let mut props = Element::new(tag::item_operations::PROPERTIES);
    email::fill(&mut props, &raw, &state, uid, &render);
    out.push(props);
    Ok(out)
}

async fn empty_folder(map: &FolderMap, mailbox: &std::sync::Arc<dyn Mailbox>, op: &Element) -> Result<Element, EasError> {
    let id = op.child_text(tag::air_sync::COLLECTION_ID).unwrap_or_default();
    let mut out = Element::new(tag::item_operations::EMPTY_FOLDER_CONTENTS);
    let Some(folder) = map.by_collection(id.trim()) else {
        return Ok(out
            .with_text(tag::item_operations::STATUS, status(Status::ObjectNotFoundOrAccessDenied))
            .with_text(tag::air_sync::COLLECTION_ID, id));
    };
    let uids = mailbox.all_uids(&folder.id).await?;
    for chunk in uids.chunks(1000) {
        mailbox.expunge(&folder.id, chunk).await?;
    }
    let delete_subfolders =
        op.child(tag::item_operations::OPTIONS).and_then(|o| o.child(tag::item_operations::DELETE_SUB_FOLDERS)).is_some();
    if delete_subfolders {
        // A special folder below (a Sent kept under Inbox, say) cannot be deleted: it stays,
        // rather than failing the request after the messages are already gone.
        let children: Vec<_> =
            map.iter().filter(|(_, f)| f.parent.as_ref() == Some(&folder.id) && f.role.is_none()).map(|(_, f)| f.id.clone()).collect();
        for child in children {
            match mailbox.delete_folder(&child).await {
                Ok(()) | Err(StoreError::FolderNotFound) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    out.push_text_child(tag::item_operations::STATUS, status(Status::Success));
    out.push_text_child(tag::air_sync::COLLECTION_ID, id);
    Ok(out)
}

async fn move_conversation(map: &FolderMap, mailbox: &std::sync::Arc<dyn Mailbox>, op: &Element) -> Result<Element, EasError> {
    let conversation = op.child(tag::item_operations::CONVERSATION_ID).map(|c| c.bytes_content()).unwrap_or_default();
    let dest = op.child_text(tag::item_operations::DST_FLD_ID).unwrap_or_default();
    let mut out = Element::new(tag::item_operations::MOVE);
    let reply = |out: Element, s: u16| {
        out.with_text(tag::item_operations::STATUS, s.to_string())
            .with(Element::opaque(tag::item_operations::CONVERSATION_ID, conversation.clone()))
    };
    if conversation.is_empty() {
        return Ok(reply(out, Status::ProtocolError.code()));
    }
    let Some(dest_folder) = map.by_collection(dest.trim()) else {
        return Ok(reply(out, super::status::CommonStatus::MoveCommandInvalidDestinationFolder.code()));
    };
    for (_, folder) in map.iter() {
        if folder.id == dest_folder.id || matches!(folder.role, Some(SpecialUse::Trash) | Some(SpecialUse::Junk)) {
            continue;
        }
        let recent = mailbox.messages_below(&folder.id, u32::MAX, None, CONVERSATION_SCAN).await?;
        let mut uids = Vec::new();
        for m in recent {
            let Ok(raw) = mailbox.fetch(&folder.id, m.uid).await else { continue };
            if let Some(msg) = mail_parser::MessageParser::default().parse(&raw)
                && email::conversation_id(&msg).as_slice() == conversation.as_slice()
            {
                uids.push(m.uid);
            }
        }
        if !uids.is_empty() {
            mailbox.move_messages(&folder.id, &uids, &dest_folder.id).await?;
        }
    }
    out = reply(out, Status::Success.code());
    Ok(out)
}

/// GetAttachment (12.x): `AttachmentName` is the FileReference; the body is the attachment.
pub async fn get_attachment(ctx: &mut Ctx<'_>, _request: Request) -> Result<CommandResponse, EasError> {
    let reference =
        ctx.line.params.attachment_name.clone().ok_or_else(|| EasError::BadRequest("GetAttachment without AttachmentName".into()))?;
    let (collection, uid, index) =
        email::parse_file_reference(&reference).ok_or_else(|| EasError::BadRequest("malformed AttachmentName".into()))?;
    let map = ctx.folders().await?;
    let folder = map.by_collection(&collection).ok_or(EasError::Common(super::status::CommonStatus::ItemNotFound))?;
    let mailbox = ctx.mailbox().await?;
    let raw = match mailbox.fetch(&folder.id, uid).await {
        Ok(r) => r,
        Err(StoreError::MessageNotFound) => return Err(EasError::Common(super::status::CommonStatus::ItemNotFound)),
        Err(e) => return Err(e.into()),
    };
    let (content_type, data) = email::attachment_data(&raw, index).ok_or(EasError::Common(super::status::CommonStatus::ItemNotFound))?;
    Ok(CommandResponse::Raw { content_type, body: Bytes::from(data) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_layout() {
        let mut m = Multipart { enabled: true, parts: vec![] };
        assert_eq!(m.add(b"abc".to_vec()), 1);
        let out = m.encode(b"WB".to_vec());
        let int = |i: usize| i32::from_le_bytes(out[i..i + 4].try_into().unwrap());
        assert_eq!(int(0), 2);
        assert_eq!((int(4), int(8)), (20, 2));
        assert_eq!((int(12), int(16)), (22, 3));
        assert_eq!(&out[20..], b"WBabc");
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("0-99"), Some((0, 99)));
        assert_eq!(parse_range("5-4"), None);
        assert_eq!(parse_range("x"), None);
    }
}
