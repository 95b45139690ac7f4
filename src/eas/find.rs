//! Find (MS-ASCMD 2.2.1.2, protocol 16.1): free-text search of the mailbox or the GAL.

use super::directory;
use super::dispatch::{Ctx, Request};
use super::email;
use super::error::{CommandResponse, EasError};
use super::folders::server_id;
use super::search::{Criteria, QueryError, evaluate, gal_properties, range, run_mailbox_search};
use super::status::FindStatus;
use crate::store::Flags;
use crate::wbxml::{Element, tag};

fn status(s: FindStatus) -> Element {
    Element::new(tag::find::FIND).with_text(tag::find::STATUS, s.code().to_string())
}

pub async fn handle(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    let doc = request.document.ok_or_else(|| EasError::Protocol("Find needs a body".into()))?;
    let search_id = doc.child_text(tag::find::SEARCH_ID).unwrap_or_default();
    let Some(exec) = doc.child(tag::find::EXECUTE_SEARCH) else { return Ok(CommandResponse::Wbxml(status(FindStatus::InvalidRequest))) };
    let (criterion, gal) = match (exec.child(tag::find::MAIL_BOX_SEARCH_CRITERION), exec.child(tag::find::GAL_SEARCH_CRITERION)) {
        (Some(c), _) => (c, false),
        (None, Some(c)) => (c, true),
        (None, None) => return Ok(CommandResponse::Wbxml(status(FindStatus::InvalidRequest))),
    };
    let options = criterion.child(tag::find::OPTIONS);
    let Ok((first, last)) = range(options.and_then(|o| o.child_text(tag::find::RANGE))) else {
        return Ok(CommandResponse::Wbxml(status(FindStatus::InvalidRequest)));
    };
    let mut response = Element::new(tag::find::RESPONSE);
    let total;
    let mut shown = 0usize;
    if gal {
        let text = criterion.child(tag::find::QUERY).and_then(|q| q.child_text(tag::find::FREE_TEXT)).unwrap_or_default();
        let entries = directory::entries(ctx.app).await?;
        let hits = directory::search(&entries, &text);
        total = hits.len();
        for e in hits.iter().skip(first).take(last - first + 1) {
            response.push(Element::new(tag::find::RESULT).with(gal_properties(tag::find::PROPERTIES, e)));
            shown += 1;
        }
    } else {
        let Some(query) = criterion.child(tag::find::QUERY) else { return Ok(CommandResponse::Wbxml(status(FindStatus::InvalidRequest))) };
        let alternatives: Vec<Criteria> = match evaluate(query, 0) {
            Ok(a) => a,
            Err(QueryError::TooComplex) | Err(QueryError::Invalid(_)) => {
                return Ok(CommandResponse::Wbxml(status(FindStatus::InvalidRequest)));
            }
        };
        let map = ctx.folders().await?;
        if alternatives.iter().flat_map(|a| &a.collections).any(|c| map.by_collection(c).is_none()) {
            return Ok(CommandResponse::Wbxml(status(FindStatus::FolderSyncRequired)));
        }
        let deep = options.is_some_and(|o| o.child(tag::find::DEEP_TRAVERSAL).is_some());
        let mailbox = ctx.mailbox().await?;
        let hits = run_mailbox_search(&map, mailbox.as_ref(), &alternatives, deep).await?;
        total = hits.len();
        for (collection, hit) in hits.iter().skip(first).take(last - first + 1) {
            let Some(state) = mailbox.message_states(&hit.folder, &[hit.uid]).await?.into_iter().next() else { continue };
            let Ok(raw) = mailbox.fetch(&hit.folder, hit.uid).await else { continue };
            let Some(msg) = mail_parser::MessageParser::default().parse(&raw) else { continue };
            let names = |a: Option<&mail_parser::Address<'_>>| {
                a.map(|l| l.iter().filter_map(|x| x.name().or(x.address())).collect::<Vec<_>>().join("; ")).unwrap_or_default()
            };
            let preview: String =
                msg.body_text(0).unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ").chars().take(255).collect();
            let props = Element::new(tag::find::PROPERTIES)
                .with_text(tag::email::SUBJECT, msg.subject().unwrap_or("").to_string())
                .with_text(tag::email::DATE_RECEIVED, email::eas_date(state.internal_date))
                .with_text(tag::email::DISPLAY_TO, names(msg.to()))
                .with_text(tag::find::DISPLAY_CC, names(msg.cc()))
                .with_text(tag::find::DISPLAY_BCC, names(msg.bcc()))
                .with_text(tag::email::IMPORTANCE, "1")
                .with_text(tag::email::READ, if state.flags.contains(Flags::SEEN) { "1" } else { "0" })
                .with_text(tag::find::HAS_ATTACHMENTS, if msg.attachment_count() > 0 { "1" } else { "0" })
                .with_text(tag::email::FROM, names(msg.from()))
                .with_text(tag::find::PREVIEW, preview);
            response.push(
                Element::new(tag::find::RESULT)
                    .with_text(tag::air_sync::CLASS, "Email")
                    .with_text(tag::air_sync::SERVER_ID, server_id(collection, hit.uid))
                    .with_text(tag::air_sync::COLLECTION_ID, collection.clone())
                    .with(props),
            );
            shown += 1;
        }
    }
    if shown > 0 {
        response.push_text_child(tag::find::RANGE, format!("{}-{}", first, first + shown - 1));
    }
    response.push_text_child(tag::find::TOTAL, total.to_string());
    let mut root = status(FindStatus::Success);
    if !search_id.is_empty() {
        root.push_text_child(tag::find::SEARCH_ID, search_id);
    }
    let mut with_status = Element::new(tag::find::RESPONSE).with_text(tag::find::STATUS, FindStatus::Success.code().to_string());
    with_status.children.extend(response.children);
    root.push(with_status);
    Ok(CommandResponse::Wbxml(root))
}
