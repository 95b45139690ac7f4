//! SendMail, SmartReply and SmartForward (MS-ASCMD 2.2.1.17, .20, .19), in the 14.0+ WBXML
//! form and the 12.x form (MIME body, parameters in the query).
//!
//! The sender is always the authenticated user: a `From` that is not one of the user's
//! addresses is rewritten to the primary address (the display name is kept). `Bcc` is
//! removed from what recipients get and kept in the Sent copy. SmartReply quotes the
//! original; SmartForward includes it and its attachments; with ReplaceMime the device's
//! MIME is sent as it is. The original is then marked \Answered or $Forwarded.

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address as BuilderAddress;
use mail_builder::headers::raw::Raw;
use mail_parser::{Message, MessageParser, MimeHeaders};

use super::dispatch::{Ctx, Request};
use super::error::{CommandResponse, EasError};
use super::folders::{item_uid_in, parse_server_id};
use super::status::CommonStatus;
use super::{Command, ProtocolVersion, compose};
use crate::outbound::SendError;
use crate::store::{Account, FlagChange, Flags, SpecialUse, StoreError};
use crate::wbxml::tag;

/// Whether the request body is a raw MIME message (the 12.x query-parameter form) rather
/// than WBXML.
pub fn takes_raw_mime(command: Command, version: ProtocolVersion, content_type: Option<&str>) -> bool {
    let sending = matches!(command, Command::SendMail | Command::SmartReply | Command::SmartForward);
    let declared_mime = content_type.is_some_and(|c| c.trim().to_ascii_lowercase().starts_with("message/rfc822"));
    sending && (version < ProtocolVersion::V14_0 || declared_mime)
}

/// The user setting holding recently used ClientIds (per device), to refuse a resend.
const SENT_IDS_SETTING: &str = "sent-client-ids";
/// How many ClientIds per device are remembered.
const SENT_IDS_KEPT: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Send,
    Reply,
    Forward,
}

struct Submission {
    client_id: Option<String>,
    save_in_sent: bool,
    replace_mime: bool,
    mime: Vec<u8>,
    /// The original, as (collection id, uid).
    source: Option<(String, u32)>,
}

fn common(status: CommonStatus) -> EasError {
    EasError::Common(status)
}

fn parse(ctx: &Ctx<'_>, request: Request, kind: Kind) -> Result<Submission, EasError> {
    if let Some(raw) = request.raw {
        // 12.x: MIME body; ItemId/CollectionId/LongId and SaveInSent in the query.
        let p = &ctx.line.params;
        let source = match (&p.item_id, &p.collection_id, &p.long_id) {
            (Some(item), Some(coll), _) => item_uid_in(item, coll).or_else(|| item.parse().ok()).map(|u| (coll.clone(), u)),
            (Some(item), None, _) => parse_server_id(item).map(|(c, u)| (c.to_string(), u)),
            (None, _, Some(long)) => parse_server_id(long).map(|(c, u)| (c.to_string(), u)),
            _ => None,
        };
        if kind != Kind::Send && source.is_none() {
            return Err(common(CommonStatus::ItemNotFound));
        }
        return Ok(Submission { client_id: None, save_in_sent: p.save_in_sent, replace_mime: false, mime: raw.to_vec(), source });
    }
    let doc = request.document.ok_or_else(|| EasError::Protocol("no message".into()))?;
    let mime = doc.child(tag::compose_mail::MIME).map(|m| m.bytes_content()).ok_or_else(|| common(CommonStatus::InvalidMime))?;
    let source = doc.child(tag::compose_mail::SOURCE).and_then(|s| {
        let long = s.child_text(tag::compose_mail::LONG_ID);
        let item = s.child_text(tag::compose_mail::ITEM_ID);
        let folder = s.child_text(tag::compose_mail::FOLDER_ID);
        match (item, folder, long) {
            (Some(i), Some(f), _) => item_uid_in(&i, f.trim()).map(|u| (f.trim().to_string(), u)),
            (Some(i), None, _) => parse_server_id(&i).map(|(c, u)| (c.to_string(), u)),
            (None, _, Some(l)) => parse_server_id(&l).map(|(c, u)| (c.to_string(), u)),
            _ => None,
        }
    });
    if kind != Kind::Send && source.is_none() {
        return Err(common(CommonStatus::ItemNotFound));
    }
    Ok(Submission {
        client_id: doc.child_text(tag::compose_mail::CLIENT_ID).map(|c| c.trim().to_string()).filter(|c| !c.is_empty()),
        save_in_sent: doc.child(tag::compose_mail::SAVE_IN_SENT_ITEMS).is_some(),
        replace_mime: doc.child(tag::compose_mail::REPLACE_MIME).is_some(),
        mime,
        source,
    })
}

pub async fn send_mail(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    submit(ctx, request, Kind::Send).await
}

pub async fn smart_reply(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    submit(ctx, request, Kind::Reply).await
}

pub async fn smart_forward(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    submit(ctx, request, Kind::Forward).await
}

async fn submit(ctx: &mut Ctx<'_>, request: Request, kind: Kind) -> Result<CommandResponse, EasError> {
    let sub = parse(ctx, request, kind)?;
    let limit = ctx.app.config.mail.max_message_bytes;
    if sub.mime.len() as u64 > limit {
        return Err(common(CommonStatus::AttachmentIsTooLarge));
    }
    let setting = format!("{SENT_IDS_SETTING}:{}", ctx.device.device_id);
    let mut sent_ids: Vec<String> = match ctx.app.state.user_setting(ctx.login(), &setting).await? {
        Some(j) => serde_json::from_str(&j).unwrap_or_default(),
        None => Vec::new(),
    };
    if let Some(id) = &sub.client_id
        && sent_ids.contains(id)
    {
        return Err(common(CommonStatus::MessagePreviouslySent));
    }
    let parsed =
        MessageParser::default().parse(&sub.mime).filter(|m| !m.headers().is_empty()).ok_or_else(|| common(CommonStatus::InvalidMime))?;

    let map = ctx.folders().await?;
    let mailbox = ctx.mailbox().await?;
    let original = match &sub.source {
        None => None,
        Some((collection, uid)) => {
            let folder = map.by_collection(collection).ok_or_else(|| common(CommonStatus::ItemNotFound))?;
            match mailbox.fetch(&folder.id, *uid).await {
                Ok(raw) => Some((folder.id.clone(), *uid, raw)),
                Err(StoreError::MessageNotFound) => return Err(common(CommonStatus::ItemNotFound)),
                Err(e) => return Err(e.into()),
            }
        }
    };

    let recipients = recipients(&parsed);
    if recipients.is_empty() {
        return Err(common(CommonStatus::MessageHasNoRecipient));
    }
    let (outgoing, sent_copy) = match (&original, kind, sub.replace_mime) {
        (Some((_, _, raw)), Kind::Reply | Kind::Forward, false) => {
            let original = MessageParser::default().parse(raw).ok_or_else(|| common(CommonStatus::MessageReplyFailed))?;
            let built = build_smart(&ctx.account, &parsed, &original, kind).ok_or_else(|| common(CommonStatus::MessageReplyFailed))?;
            (strip_bcc(&built), built)
        }
        _ => {
            let reply_to = original
                .as_ref()
                .and_then(|(_, _, raw)| MessageParser::default().parse(raw).and_then(|o| o.message_id().map(str::to_string)));
            let fixed = rewrite_headers(&sub.mime, &parsed, &ctx.account, reply_to.as_deref());
            (strip_bcc(&fixed), fixed)
        }
    };

    match crate::outbound::send(ctx.app, &ctx.account, &recipients, &outgoing).await {
        Ok(()) => {}
        Err(SendError::ExternalRecipient(r)) | Err(SendError::BadRecipient(r)) => {
            tracing::info!(recipient = %r, "recipient refused");
            return Err(common(CommonStatus::MessageRecipientUnresolved));
        }
        Err(SendError::NoRecipients) => return Err(common(CommonStatus::MessageHasNoRecipient)),
        Err(SendError::TooLarge { .. }) => return Err(common(CommonStatus::AttachmentIsTooLarge)),
        Err(SendError::Local(StoreError::QuotaExceeded { .. })) => return Err(common(CommonStatus::MailSubmissionFailed)),
        Err(e) => {
            tracing::warn!(error = %e, "submission failed");
            return Err(common(CommonStatus::MailSubmissionFailed));
        }
    }
    if let Some(id) = sub.client_id {
        sent_ids.push(id);
        let excess = sent_ids.len().saturating_sub(SENT_IDS_KEPT);
        sent_ids.drain(..excess);
        ctx.app.state.set_user_setting(ctx.login(), &setting, &serde_json::to_string(&sent_ids).unwrap_or_default()).await?;
    }
    if sub.save_in_sent
        && let Some((_, sent)) = map.with_role(SpecialUse::Sent)
        && let Err(e) = mailbox.append(&sent.id, &sent_copy, Flags::SEEN, None).await
    {
        // The message is already sent: failing the command now would make the device send
        // it again. Record the problem instead.
        tracing::warn!(error = %e, "could not save the sent copy");
    }
    if let Some((folder, uid, _)) = original {
        let flag = if kind == Kind::Forward { Flags::FORWARDED } else { Flags::ANSWERED };
        if kind != Kind::Send {
            mailbox.set_flags(&folder, &[uid], &FlagChange { add: flag, ..Default::default() }).await?;
        }
    }
    Ok(CommandResponse::Empty)
}

/// Envelope recipients: To, Cc and Bcc.
fn recipients(msg: &Message<'_>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for list in [msg.to(), msg.cc(), msg.bcc()].into_iter().flatten() {
        for a in list.iter() {
            if let Some(addr) = a.address().map(|s| s.trim().to_string()).filter(|s| s.contains('@'))
                && !out.iter().any(|o| o.eq_ignore_ascii_case(&addr))
            {
                out.push(addr);
            }
        }
    }
    out
}

/// Splits a message at the end of its header block.
fn split_head(raw: &[u8]) -> (&[u8], &[u8]) {
    let crlf = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| (p + 2, p + 4));
    let lf = raw.windows(2).position(|w| w == b"\n\n").map(|p| (p + 1, p + 2));
    match (crlf, lf) {
        (Some(c), Some(l)) if l.0 < c.0 => (&raw[..l.0], &raw[l.0..]),
        (Some(c), _) => (&raw[..c.0], &raw[c.0..]),
        (None, Some(l)) => (&raw[..l.0], &raw[l.0..]),
        (None, None) => (raw, b""),
    }
}

/// Header fields with their continuation lines, as raw text.
fn header_fields(head: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut fields: Vec<(String, Vec<u8>)> = Vec::new();
    for line in head.split_inclusive(|&b| b == b'\n') {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if let Some(last) = fields.last_mut() {
                last.1.extend_from_slice(line);
            }
            continue;
        }
        let name = line
            .iter()
            .position(|&b| b == b':')
            .map(|i| String::from_utf8_lossy(&line[..i]).trim().to_ascii_lowercase())
            .unwrap_or_default();
        fields.push((name, line.to_vec()));
    }
    fields
}

fn strip_bcc(raw: &[u8]) -> Vec<u8> {
    let (head, body) = split_head(raw);
    let mut out: Vec<u8> = header_fields(head).into_iter().filter(|(n, _)| n != "bcc").flat_map(|(_, l)| l).collect();
    out.extend_from_slice(body);
    out
}

/// The device's MIME with the sender fixed and Date, Message-ID and (for replies)
/// In-Reply-To/References added when missing.
fn rewrite_headers(raw: &[u8], parsed: &Message<'_>, account: &Account, in_reply_to: Option<&str>) -> Vec<u8> {
    let (head, body) = split_head(raw);
    let from_ok = parsed
        .from()
        .and_then(|f| f.first())
        .and_then(|a| a.address())
        .is_some_and(|a| account.addresses.iter().chain(std::iter::once(&account.email)).any(|o| o.eq_ignore_ascii_case(a)));
    let display = parsed.from().and_then(|f| f.first()).and_then(|a| a.name()).map(str::to_string).or_else(|| account.display_name.clone());
    let mut out = Vec::with_capacity(raw.len() + 256);
    let fields = header_fields(head);
    let has = |n: &str| fields.iter().any(|(f, _)| f == n);
    let mut saw_from = false;
    for (name, line) in &fields {
        if name == "from" {
            saw_from = true;
            if !from_ok {
                out.extend_from_slice(from_line(display.as_deref(), &account.email).as_bytes());
                continue;
            }
        }
        out.extend_from_slice(line);
        if !line.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    if !saw_from {
        out.extend_from_slice(from_line(display.as_deref(), &account.email).as_bytes());
    }
    if !has("date") {
        out.extend_from_slice(format!("Date: {}\r\n", chrono::Utc::now().to_rfc2822()).as_bytes());
    }
    if !has("message-id") {
        out.extend_from_slice(format!("Message-ID: <{}>\r\n", compose::new_message_id(account)).as_bytes());
    }
    if let Some(id) = in_reply_to {
        if !has("in-reply-to") {
            out.extend_from_slice(format!("In-Reply-To: <{id}>\r\n").as_bytes());
        }
        if !has("references") {
            out.extend_from_slice(format!("References: <{id}>\r\n").as_bytes());
        }
    }
    // `body` still starts with the blank line that ends the header block.
    out.extend_from_slice(body);
    out
}

fn from_line(display: Option<&str>, email: &str) -> String {
    match display {
        Some(n) if !n.is_empty() => format!("From: \"{}\" <{}>\r\n", n.replace(['"', '\r', '\n'], ""), email),
        _ => format!("From: <{email}>\r\n"),
    }
}

fn addresses(a: Option<&mail_parser::Address<'_>>) -> Vec<compose::Mailbox> {
    a.map(|l| {
        l.iter().filter_map(|m| Some(compose::Mailbox { name: m.name().map(str::to_string), email: m.address()?.to_string() })).collect()
    })
    .unwrap_or_default()
}

fn builder_list(list: &[compose::Mailbox]) -> BuilderAddress<'static> {
    BuilderAddress::new_list(list.iter().map(|m| BuilderAddress::new_address(m.name.clone(), m.email.clone())).collect())
}

fn display_address(a: Option<&mail_parser::Address<'_>>) -> String {
    addresses(a)
        .iter()
        .map(|m| match &m.name {
            Some(n) => format!("{n} <{}>", m.email),
            None => m.email.clone(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Builds a SmartReply (quoted original) or SmartForward (original and its attachments).
fn build_smart(account: &Account, new: &Message<'_>, original: &Message<'_>, kind: Kind) -> Option<Vec<u8>> {
    let new_text = new.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    let new_html = new
        .html_bodies()
        .any(|p| matches!(p.body, mail_parser::PartType::Html(_)))
        .then(|| new.body_html(0).map(|h| h.into_owned()))
        .flatten();
    let orig_text = original.body_text(0).map(|t| t.into_owned()).unwrap_or_default();
    let orig_from = display_address(original.from());
    let orig_date = original.date().map(|d| d.to_rfc822()).unwrap_or_default();
    let orig_subject = original.subject().unwrap_or("").to_string();

    let (text, html) = match kind {
        Kind::Reply => {
            let quoted: String = orig_text.lines().map(|l| format!("> {l}\r\n")).collect();
            let text = format!("{new_text}\r\n\r\nOn {orig_date}, {orig_from} wrote:\r\n{quoted}");
            let html = new_html.map(|h| {
                format!(
                    "{h}<br><div>On {}, {} wrote:</div><blockquote>{}</blockquote>",
                    html_escape(&orig_date),
                    html_escape(&orig_from),
                    original.body_html(0).unwrap_or_default()
                )
            });
            (text, html)
        }
        _ => {
            let header = format!(
                "-------- Forwarded message --------\r\nFrom: {orig_from}\r\nDate: {orig_date}\r\nSubject: {orig_subject}\r\nTo: {}\r\n\r\n",
                display_address(original.to())
            );
            let text = format!("{new_text}\r\n\r\n{header}{orig_text}");
            let html = new_html.map(|h| {
                format!("{h}<br><div>{}</div>{}", html_escape(&header).replace("\r\n", "<br>"), original.body_html(0).unwrap_or_default())
            });
            (text, html)
        }
    };

    let sender = BuilderAddress::new_address(account.display_name.clone(), account.email.clone());
    let mut b = MessageBuilder::new()
        .from(sender)
        .subject(new.subject().unwrap_or("").to_string())
        .date(chrono::Utc::now().timestamp())
        .message_id(compose::new_message_id(account));
    let (to, cc, bcc) = (addresses(new.to()), addresses(new.cc()), addresses(new.bcc()));
    if !to.is_empty() {
        b = b.to(builder_list(&to));
    }
    if !cc.is_empty() {
        b = b.cc(builder_list(&cc));
    }
    if !bcc.is_empty() {
        b = b.bcc(builder_list(&bcc));
    }
    if let Some(imp) = new.header_raw("Importance") {
        b = b.header("Importance", Raw::new(imp.trim().to_string()));
    }
    if let Some(id) = original.message_id() {
        let mut refs: Vec<String> =
            original.references().as_text_list().map(|l| l.iter().map(|s| s.to_string()).collect()).unwrap_or_default();
        if let Some(r) = original.references().as_text() {
            refs.push(r.to_string());
        }
        refs.push(id.to_string());
        if kind == Kind::Reply {
            b = b.in_reply_to(id.to_string());
        }
        b = b.references(refs);
    }
    b = b.text_body(text);
    if let Some(h) = html {
        b = b.html_body(h);
    }
    let mut attach = |m: &Message<'_>| {
        for part in m.attachments() {
            let ct = part
                .content_type()
                .map(|c| format!("{}/{}", c.c_type, c.c_subtype.as_deref().unwrap_or("octet-stream")))
                .unwrap_or_else(|| "application/octet-stream".into());
            let name = part.attachment_name().unwrap_or("attachment").to_string();
            let data = match &part.body {
                mail_parser::PartType::Message(inner) => inner.raw_message().to_vec(),
                _ => part.contents().to_vec(),
            };
            b = std::mem::take(&mut b).attachment(ct, name, data);
        }
    };
    attach(new);
    if kind == Kind::Forward {
        attach(original);
    }
    b.write_to_vec().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn alice() -> Account {
        Account {
            login: Arc::from("alice"),
            email: "alice@example.test".into(),
            display_name: Some("Alice".into()),
            addresses: vec!["alice@example.test".into()],
            secret: None,
        }
    }

    #[test]
    fn a_foreign_from_is_rewritten_and_bcc_stripped_for_recipients() {
        let raw = b"From: Boss <boss@example.test>\r\nTo: bob@example.test\r\nBcc: secret@example.test\r\nSubject: hi\r\n\r\nbody\r\n";
        let parsed = MessageParser::default().parse(raw).unwrap();
        assert_eq!(recipients(&parsed), vec!["bob@example.test", "secret@example.test"]);
        let fixed = rewrite_headers(raw, &parsed, &alice(), None);
        let out = MessageParser::default().parse(&fixed).unwrap();
        assert_eq!(out.from().unwrap().first().unwrap().address(), Some("alice@example.test"));
        assert!(out.message_id().is_some() && out.date().is_some());
        assert!(out.body_text(0).unwrap().contains("body"));
        let stripped = strip_bcc(&fixed);
        assert!(!String::from_utf8_lossy(&stripped).to_ascii_lowercase().contains("bcc:"));
        // The user's own address stays as written.
        let own = b"From: \"Me\" <alice@example.test>\r\nTo: bob@example.test\r\n\r\nx\r\n";
        let p = MessageParser::default().parse(own).unwrap();
        assert!(String::from_utf8_lossy(&rewrite_headers(own, &p, &alice(), Some("orig@x"))).contains("In-Reply-To: <orig@x>"));
    }

    #[test]
    fn smart_reply_quotes_and_forward_attaches() {
        let original = b"From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: Plan\r\nMessage-ID: <orig@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nThe plan.\r\n--b\r\nContent-Type: text/plain; name=\"plan.txt\"\r\nContent-Disposition: attachment; filename=\"plan.txt\"\r\n\r\nsteps\r\n--b--\r\n";
        let new = b"From: alice@example.test\r\nTo: bob@example.test\r\nSubject: Re: Plan\r\n\r\nSounds good.\r\n";
        let (o, n) = (MessageParser::default().parse(original).unwrap(), MessageParser::default().parse(new).unwrap());
        let reply = build_smart(&alice(), &n, &o, Kind::Reply).unwrap();
        let r = MessageParser::default().parse(&reply).unwrap();
        let text = r.body_text(0).unwrap();
        assert!(text.contains("Sounds good.") && text.contains("> The plan."), "{text}");
        assert_eq!(r.in_reply_to().as_text(), Some("orig@example.test"));
        assert_eq!(r.attachment_count(), 0);
        let fwd = build_smart(&alice(), &n, &o, Kind::Forward).unwrap();
        let f = MessageParser::default().parse(&fwd).unwrap();
        assert!(f.body_text(0).unwrap().contains("Forwarded message"));
        assert_eq!(f.attachment_count(), 1);
        assert_eq!(f.attachment(0).unwrap().attachment_name(), Some("plan.txt"));
    }
}
