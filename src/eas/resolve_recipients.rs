//! ResolveRecipients (MS-ASCMD 2.2.1.15): names to addresses, from the directory.

use super::directory;
use super::dispatch::{Ctx, Request};
use super::error::{CommandResponse, EasError};
use super::status::{ResolveRecipientsResponseStatus, ResolveRecipientsStatus};
use crate::wbxml::{Element, tag};

/// Most names resolved in one request, and most candidates returned per name by default.
const MAX_NAMES: usize = 100;
const DEFAULT_AMBIGUOUS: usize = 20;

pub async fn handle(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    let doc = request.document.ok_or_else(|| EasError::Protocol("ResolveRecipients needs a body".into()))?;
    let names: Vec<String> = doc
        .children_with(tag::resolve_recipients::TO)
        .filter_map(|t| t.text_content())
        .map(|t| t.trim().to_string())
        .take(MAX_NAMES + 1)
        .collect();
    if names.is_empty() || names.len() > MAX_NAMES {
        let r = Element::new(tag::resolve_recipients::RESOLVE_RECIPIENTS)
            .with_text(tag::resolve_recipients::STATUS, ResolveRecipientsStatus::ProtocolError.code().to_string());
        return Ok(CommandResponse::Wbxml(r));
    }
    let max_ambiguous = doc
        .child(tag::resolve_recipients::OPTIONS)
        .and_then(|o| o.child_text(tag::resolve_recipients::MAX_AMBIGUOUS_RECIPIENTS))
        .and_then(|m| m.trim().parse::<usize>().ok())
        .unwrap_or(DEFAULT_AMBIGUOUS)
        .min(DEFAULT_AMBIGUOUS);
    let entries = directory::entries(ctx.app).await?;
    let mut root = Element::new(tag::resolve_recipients::RESOLVE_RECIPIENTS)
        .with_text(tag::resolve_recipients::STATUS, ResolveRecipientsStatus::Success.code().to_string());
    for name in names {
        let exact: Vec<&directory::Entry> = entries.iter().filter(|e| e.is(&name)).collect();
        let hits = if exact.is_empty() { directory::search(&entries, &name) } else { exact };
        let shown: Vec<&&directory::Entry> = hits.iter().take(max_ambiguous.max(1)).collect();
        let status = match hits.len() {
            0 => ResolveRecipientsResponseStatus::NotResolved,
            1 => ResolveRecipientsResponseStatus::Success,
            n if n > shown.len() => ResolveRecipientsResponseStatus::AmbiguousPartial,
            _ => ResolveRecipientsResponseStatus::Ambiguous,
        };
        let mut response = Element::new(tag::resolve_recipients::RESPONSE)
            .with_text(tag::resolve_recipients::TO, name.clone())
            .with_text(tag::resolve_recipients::STATUS, status.code().to_string());
        // With a partial list, RecipientCount tells the device how many there are in all.
        response.push_text_child(tag::resolve_recipients::RECIPIENT_COUNT, hits.len().to_string());
        for e in shown {
            response.push(
                Element::new(tag::resolve_recipients::RECIPIENT)
                    .with_text(tag::resolve_recipients::TYPE, "1")
                    .with_text(tag::resolve_recipients::DISPLAY_NAME, e.display_name.clone())
                    .with_text(tag::resolve_recipients::EMAIL_ADDRESS, e.email.clone()),
            );
        }
        root.push(response);
    }
    Ok(CommandResponse::Wbxml(root))
}
