//! The Email class (MS-ASEMAIL, MS-ASAIRS): a stored RFC 5322 message rendered as the
//! `ApplicationData` a device receives, and a device's Change turned into flag changes.
//!
//! Pure functions over bytes: parsing is mail-parser's, and nothing here touches the store.

use mail_parser::{Address, MessageParser, MimeHeaders, PartType};

use super::ProtocolVersion;
use crate::store::{FlagChange, Flags, MessageState};
use crate::wbxml::{Element, tag};

/// A BodyPreference of the request (MS-ASAIRS 2.2.2.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPreference {
    /// 1 plain text, 2 HTML, 3 RTF, 4 MIME.
    pub body_type: u8,
    pub truncation: Option<u32>,
    pub all_or_none: bool,
    /// Characters of plain-text preview wanted (14.0+), at most 255.
    pub preview: Option<u32>,
}

pub mod body_type {
    pub const PLAIN: u8 = 1;
    pub const HTML: u8 = 2;
    pub const RTF: u8 = 3;
    pub const MIME: u8 = 4;
}

/// How to render items for one collection.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub preferences: Vec<BodyPreference>,
    /// MIMESupport: 0 never, 1 S/MIME only, 2 always send MIME when asked for type 4.
    pub mime_support: u8,
    pub version: ProtocolVersion,
    /// Collection id, for attachment FileReferences.
    pub collection: String,
    /// Render as a draft (Drafts folder, 16.0+ IsDraft/Bcc).
    pub draft_folder: bool,
}

/// Reads BodyPreference elements from an Options-like element.
pub fn body_preferences(options: &Element) -> Vec<BodyPreference> {
    options
        .children_with(tag::air_sync_base::BODY_PREFERENCE)
        .filter_map(|p| {
            let body_type = p.child_text(tag::air_sync_base::TYPE)?.trim().parse().ok()?;
            Some(BodyPreference {
                body_type,
                truncation: p.child_text(tag::air_sync_base::TRUNCATION_SIZE).and_then(|t| t.trim().parse().ok()),
                all_or_none: p.child_text(tag::air_sync_base::ALL_OR_NONE).is_some_and(|v| v.trim() == "1"),
                preview: p.child_text(tag::air_sync_base::PREVIEW).and_then(|t| t.trim().parse::<u32>().ok()).map(|p| p.min(255)),
            })
        })
        .collect()
}

/// `2026-11-26T04:48:00.000Z`.
pub fn eas_date(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S.000Z").to_string())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".into())
}

/// Parses `2026-11-26T04:48:00.000Z` (and the compact `20261126T044800Z`).
pub fn parse_eas_date(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp());
    }
    chrono::NaiveDateTime::parse_from_str(s, "%Y%m%dT%H%M%SZ").ok().map(|d| d.and_utc().timestamp())
}

/// An attachment as listed to devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachmentInfo {
    /// Position among the message's attachments (stable for the stored bytes).
    pub index: usize,
    pub name: String,
    pub content_type: String,
    pub size: usize,
    pub content_id: Option<String>,
    pub inline: bool,
}

/// A FileReference: `<collection>:<uid>:<attachment index>`.
pub fn file_reference(collection: &str, uid: u32, index: usize) -> String {
    format!("{collection}:{uid}:{index}")
}

pub fn parse_file_reference(s: &str) -> Option<(String, u32, usize)> {
    let mut parts = s.trim().rsplitn(3, ':');
    let index = parts.next()?.parse().ok()?;
    let uid = parts.next()?.parse().ok()?;
    let collection = parts.next()?.to_string();
    (!collection.is_empty()).then_some((collection, uid, index))
}

/// Lists a message's attachments.
pub fn attachments(raw: &[u8]) -> Vec<AttachmentInfo> {
    let Some(msg) = MessageParser::default().parse(raw) else { return Vec::new() };
    msg.attachments()
        .enumerate()
        .map(|(index, part)| {
            let content_type = part
                .content_type()
                .map(|ct| match &ct.c_subtype {
                    Some(sub) => format!("{}/{}", ct.c_type, sub),
                    None => ct.c_type.to_string(),
                })
                .unwrap_or_else(|| "application/octet-stream".into());
            let name = part.attachment_name().map(str::to_string).unwrap_or_else(|| match &part.body {
                PartType::Message(m) => format!("{}.eml", m.subject().unwrap_or("message")),
                _ => format!("attachment-{}", index + 1),
            });
            AttachmentInfo {
                index,
                name,
                content_type,
                size: part.contents().len(),
                content_id: part.content_id().map(|c| c.trim_matches(['<', '>']).to_string()),
                inline: part.content_disposition().is_some_and(|d| d.is_inline()),
            }
        })
        .collect()
}

/// The decoded bytes and content type of attachment `index`.
pub fn attachment_data(raw: &[u8], index: usize) -> Option<(String, Vec<u8>)> {
    let msg = MessageParser::default().parse(raw)?;
    let part = msg.attachments().nth(index)?;
    let content_type = attachments(raw).get(index).map(|a| a.content_type.clone()).unwrap_or_default();
    let bytes = match &part.body {
        PartType::Message(m) => m.raw_message().to_vec(),
        _ => part.contents().to_vec(),
    };
    Some((content_type, bytes))
}

fn address_list(a: Option<&Address<'_>>) -> Option<String> {
    let a = a?;
    let list: Vec<String> = a
        .iter()
        .filter_map(|addr| {
            let email = addr.address()?;
            Some(match addr.name() {
                Some(n) if !n.is_empty() => format!("\"{}\" <{}>", n.replace('"', "'"), email),
                _ => email.to_string(),
            })
        })
        .collect();
    (!list.is_empty()).then(|| list.join(", "))
}

fn display_names(a: Option<&Address<'_>>) -> Option<String> {
    let a = a?;
    let names: Vec<&str> = a.iter().filter_map(|addr| addr.name().filter(|n| !n.is_empty()).or(addr.address())).collect();
    (!names.is_empty()).then(|| names.join("; "))
}

/// Subject without reply/forward prefixes: the thread topic.
pub fn thread_topic(subject: &str) -> String {
    let mut s = subject.trim();
    loop {
        let lower = s.to_ascii_lowercase();
        let cut = ["re:", "fw:", "fwd:", "aw:", "wg:", "sv:", "vs:", "tr:"].iter().find(|p| lower.starts_with(**p)).map(|p| p.len());
        match cut {
            Some(n) => s = s[n..].trim_start(),
            None => return s.to_string(),
        }
    }
}

/// 16 bytes naming the conversation: the thread's first Message-ID (or the topic).
pub fn conversation_id(msg: &mail_parser::Message<'_>) -> [u8; 16] {
    use sha2::Digest;
    let root = msg
        .references()
        .as_text_list()
        .and_then(|l| l.first().map(|s| s.to_string()))
        .or_else(|| msg.references().as_text().map(str::to_string))
        .or_else(|| msg.in_reply_to().as_text().map(str::to_string))
        .or_else(|| msg.message_id().map(str::to_string))
        .unwrap_or_else(|| thread_topic(msg.subject().unwrap_or("")).to_lowercase());
    let d = sha2::Sha256::digest(root.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// A 5-byte ConversationIndex block: the high bytes of the message time as a FILETIME.
fn conversation_index(unix: i64) -> [u8; 5] {
    let filetime = ((unix.max(0) as u64) + 11_644_473_600) * 10_000_000;
    let b = filetime.to_be_bytes();
    [b[1], b[2], b[3], b[4], b[5]]
}

fn importance(msg: &mail_parser::Message<'_>) -> u8 {
    let header = |n: &str| msg.header_raw(n).map(|v| v.trim().to_ascii_lowercase());
    match header("Importance").as_deref() {
        Some("high") => return 2,
        Some("low") => return 0,
        _ => {}
    }
    match header("X-Priority").as_deref().and_then(|p| p.chars().next()) {
        Some('1') | Some('2') => 2,
        Some('4') | Some('5') => 0,
        _ => 1,
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn cut_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The Body element for the first preference we can serve.
fn body_element(raw: &[u8], msg: &mail_parser::Message<'_>, opts: &RenderOptions, is_smime: bool) -> (Element, u8) {
    // mail-parser lists text parts as HTML bodies too (for conversion): look for real HTML.
    let native = if msg.html_bodies().any(|p| matches!(p.body, PartType::Html(_))) { body_type::HTML } else { body_type::PLAIN };
    // RTF is not offered: the next preference (or plain text) is used instead. MIME follows
    // MIMESupport (2: always, 1: S/MIME only), or is sent when it is all the device asked for.
    let mime_ok = opts.mime_support == 2 || (opts.mime_support == 1 && is_smime) || opts.preferences.len() == 1;
    let chosen = opts
        .preferences
        .iter()
        .find(|p| matches!(p.body_type, body_type::PLAIN | body_type::HTML) || (p.body_type == body_type::MIME && mime_ok))
        .copied()
        .unwrap_or(BodyPreference { body_type: body_type::PLAIN, truncation: None, all_or_none: false, preview: None });
    let preview = opts.preferences.iter().filter_map(|p| p.preview).max();

    let mut body = Element::new(tag::air_sync_base::BODY);
    body.push_text_child(tag::air_sync_base::TYPE, chosen.body_type.to_string());
    let data: Result<String, Vec<u8>> = match chosen.body_type {
        body_type::MIME => String::from_utf8(raw.to_vec()).map_err(|e| e.into_bytes()),
        body_type::HTML => Ok(msg
            .body_html(0)
            .map(|h| h.into_owned())
            .unwrap_or_else(|| format!("<html><body><pre>{}</pre></body></html>", html_escape(&msg.body_text(0).unwrap_or_default())))),
        _ => Ok(msg.body_text(0).map(|t| t.into_owned()).unwrap_or_default()),
    };
    let size = match &data {
        Ok(s) => s.len(),
        Err(b) => b.len(),
    };
    body.push_text_child(tag::air_sync_base::ESTIMATED_DATA_SIZE, size.to_string());
    let limit = chosen.truncation.map(|t| t as usize);
    let truncated = limit.is_some_and(|l| size > l);
    if truncated {
        body.push_text_child(tag::air_sync_base::TRUNCATED, "1");
    }
    let send = !(truncated && chosen.all_or_none);
    if send {
        match data {
            Ok(text) => {
                let text = limit.map_or(text.as_str(), |l| cut_utf8(&text, l));
                if !text.is_empty() {
                    body.push_text_child(tag::air_sync_base::DATA, text);
                }
            }
            Err(bytes) => {
                let bytes = &bytes[..limit.unwrap_or(bytes.len()).min(bytes.len())];
                body.push(Element::opaque(tag::air_sync_base::DATA, bytes.to_vec()));
            }
        }
    }
    if let Some(n) = preview
        && opts.version >= ProtocolVersion::V14_0
        && n > 0
    {
        let text = msg.body_text(0).unwrap_or_default();
        let p: String = text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(n as usize).collect();
        let p = p.trim_end();
        if !p.is_empty() {
            body.push_text_child(tag::air_sync_base::PREVIEW, p);
        }
    }
    (body, native)
}

/// Categories are IMAP keywords; keywords cannot hold spaces, so a space is stored as `_`.
pub fn category_to_keyword(category: &str) -> String {
    category.trim().chars().map(|c| if c.is_whitespace() { '_' } else { c }).filter(|c| !"(){%*\"\\]".contains(*c)).collect()
}

pub fn keyword_to_category(keyword: &str) -> String {
    keyword.replace('_', " ")
}

/// Renders a message as the Email-class ApplicationData of a Sync Add (or the Properties of
/// an ItemOperations/Search result, which carry the same children).
pub fn render(raw: &[u8], state: &MessageState, uid: u32, opts: &RenderOptions) -> Element {
    let mut data = Element::new(tag::air_sync::APPLICATION_DATA);
    fill(&mut data, raw, state, uid, opts);
    data
}

/// Adds the Email properties to `out` (ApplicationData, Properties or Result children).
pub fn fill(out: &mut Element, raw: &[u8], state: &MessageState, uid: u32, opts: &RenderOptions) {
    let parsed = MessageParser::default().parse(raw);
    let Some(msg) = parsed.as_ref() else {
        // Not even headers: still show the item, with its raw bytes as the body.
        out.push_text_child(tag::email::SUBJECT, "(unreadable message)");
        out.push_text_child(tag::email::DATE_RECEIVED, eas_date(state.internal_date));
        out.push_text_child(tag::email::READ, if state.flags.contains(Flags::SEEN) { "1" } else { "0" });
        out.push_text_child(tag::email::MESSAGE_CLASS, "IPM.Note");
        return;
    };
    if let Some(to) = address_list(msg.to()) {
        out.push_text_child(tag::email::TO, to);
    }
    if let Some(cc) = address_list(msg.cc()) {
        out.push_text_child(tag::email::CC, cc);
    }
    if let Some(from) = address_list(msg.from()) {
        out.push_text_child(tag::email::FROM, from);
    }
    let subject = msg.subject().unwrap_or("").to_string();
    out.push_text_child(tag::email::SUBJECT, subject.clone());
    if let Some(reply_to) = address_list(msg.reply_to()) {
        out.push_text_child(tag::email::REPLY_TO, reply_to);
    }
    out.push_text_child(tag::email::DATE_RECEIVED, eas_date(state.internal_date));
    if let Some(d) = display_names(msg.to()) {
        out.push_text_child(tag::email::DISPLAY_TO, d);
    }
    out.push_text_child(tag::email::THREAD_TOPIC, thread_topic(&subject));
    out.push_text_child(tag::email::IMPORTANCE, importance(msg).to_string());
    out.push_text_child(tag::email::READ, if state.flags.contains(Flags::SEEN) { "1" } else { "0" });

    let atts = attachments(raw);
    if !atts.is_empty() {
        let mut list = Element::new(tag::air_sync_base::ATTACHMENTS);
        for a in &atts {
            let mut e = Element::new(tag::air_sync_base::ATTACHMENT)
                .with_text(tag::air_sync_base::DISPLAY_NAME, a.name.clone())
                .with_text(tag::air_sync_base::FILE_REFERENCE, file_reference(&opts.collection, uid, a.index))
                .with_text(tag::air_sync_base::METHOD, "1")
                .with_text(tag::air_sync_base::ESTIMATED_DATA_SIZE, a.size.to_string());
            if let Some(cid) = &a.content_id {
                e.push_text_child(tag::air_sync_base::CONTENT_ID, cid.clone());
            }
            if a.inline {
                e.push_text_child(tag::air_sync_base::IS_INLINE, "1");
            }
            list.push(e);
        }
        out.push(list);
    }

    let content_type = msg
        .content_type()
        .map(|c| format!("{}/{}", c.c_type, c.c_subtype.as_deref().unwrap_or("")))
        .unwrap_or_default()
        .to_ascii_lowercase();
    let class = match content_type.as_str() {
        "multipart/signed" => "IPM.Note.SMIME.MultipartSigned",
        "application/pkcs7-mime" | "application/x-pkcs7-mime" => "IPM.Note.SMIME",
        _ => "IPM.Note",
    };
    let (body, native) = body_element(raw, msg, opts, class != "IPM.Note");
    out.push(body);

    out.push_text_child(tag::email::MESSAGE_CLASS, class);
    out.push_text_child(tag::email::INTERNET_CPID, "65001");
    let mut flag = Element::new(tag::email::FLAG);
    if state.flags.contains(Flags::FLAGGED) {
        flag.push_text_child(tag::email::STATUS, "2");
        flag.push_text_child(tag::email::FLAG_TYPE, "Follow up");
    }
    out.push(flag);
    out.push_text_child(tag::email::CONTENT_CLASS, "urn:content-classes:message");
    out.push_text_child(tag::air_sync_base::NATIVE_BODY_TYPE, native.to_string());

    if opts.version >= ProtocolVersion::V14_0 {
        out.push(Element::opaque(tag::email2::CONVERSATION_ID, conversation_id(msg).to_vec()));
        out.push(Element::opaque(tag::email2::CONVERSATION_INDEX, conversation_index(state.internal_date).to_vec()));
        if state.flags.contains(Flags::FORWARDED) {
            out.push_text_child(tag::email2::LAST_VERB_EXECUTED, "3");
        } else if state.flags.contains(Flags::ANSWERED) {
            out.push_text_child(tag::email2::LAST_VERB_EXECUTED, "1");
        }
        if let (Some(sender), Some(from)) =
            (msg.sender().and_then(|s| s.first()).and_then(|a| a.address()), msg.from().and_then(|f| f.first()).and_then(|a| a.address()))
            && !sender.eq_ignore_ascii_case(from)
        {
            out.push_text_child(tag::email2::SENDER, sender.to_string());
        }
    }
    if !state.keywords.is_empty() {
        let mut cats = Element::new(tag::email::CATEGORIES);
        for k in &state.keywords {
            cats.push_text_child(tag::email::CATEGORY, keyword_to_category(k));
        }
        out.push(cats);
    }
    if opts.version >= ProtocolVersion::V16_0 && (opts.draft_folder || state.flags.contains(Flags::DRAFT)) {
        out.push_text_child(tag::email2::IS_DRAFT, "1");
        if let Some(bcc) = address_list(msg.bcc()) {
            out.push_text_child(tag::email2::BCC, bcc);
        }
    }
}

/// What a device's Change (ApplicationData) asks for: Read, Flag and Categories.
pub fn flag_change(application_data: &Element) -> FlagChange {
    let mut change = FlagChange::default();
    if let Some(read) = application_data.child_text(tag::email::READ) {
        match read.trim() {
            "1" => change.add = change.add.union(Flags::SEEN),
            "0" => change.remove = change.remove.union(Flags::SEEN),
            _ => {}
        }
    }
    if let Some(flag) = application_data.child(tag::email::FLAG) {
        // An empty Flag clears it; Status 2 sets it; 1 (complete) and 0 clear it.
        match flag.child_text(tag::email::STATUS).as_deref().map(str::trim) {
            Some("2") => change.add = change.add.union(Flags::FLAGGED),
            _ => change.remove = change.remove.union(Flags::FLAGGED),
        }
    }
    if let Some(cats) = application_data.child(tag::email::CATEGORIES) {
        let mut keywords: Vec<String> = cats
            .children_with(tag::email::CATEGORY)
            .filter_map(|c| c.text_content())
            .map(|c| category_to_keyword(&c))
            .filter(|k| !k.is_empty() && k.len() <= 128)
            .take(32)
            .collect();
        keywords.sort();
        keywords.dedup();
        change.keywords = Some(keywords);
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &[u8] = b"From: Bob Example <bob@example.test>\r\nTo: Alice <alice@example.test>, carol@example.test\r\nCc: dave@example.test\r\nSubject: Re: Lunch\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <m2@example.test>\r\nReferences: <m1@example.test>\r\nImportance: high\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee you at noon.\r\n--b\r\nContent-Type: application/pdf; name=\"menu.pdf\"\r\nContent-Disposition: attachment; filename=\"menu.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n";

    fn state() -> MessageState {
        MessageState {
            uid: 7,
            modseq: 1,
            flags: Flags::SEEN.union(Flags::FLAGGED),
            keywords: vec!["Red_Category".into()],
            internal_date: 1_795_600_000,
            size: MESSAGE.len() as u64,
        }
    }

    fn opts(prefs: Vec<BodyPreference>) -> RenderOptions {
        RenderOptions { preferences: prefs, mime_support: 0, version: ProtocolVersion::V16_1, collection: "5".into(), draft_folder: false }
    }

    #[test]
    fn renders_the_email_properties() {
        let pref = BodyPreference { body_type: 1, truncation: Some(5), all_or_none: false, preview: Some(8) };
        let d = render(MESSAGE, &state(), 7, &opts(vec![pref]));
        let t = |tg| d.child_text(tg);
        assert_eq!(t(tag::email::FROM).as_deref(), Some("\"Bob Example\" <bob@example.test>"));
        assert_eq!(t(tag::email::TO).as_deref(), Some("\"Alice\" <alice@example.test>, carol@example.test"));
        assert_eq!(t(tag::email::DISPLAY_TO).as_deref(), Some("Alice; carol@example.test"));
        assert_eq!(t(tag::email::SUBJECT).as_deref(), Some("Re: Lunch"));
        assert_eq!(t(tag::email::THREAD_TOPIC).as_deref(), Some("Lunch"));
        assert_eq!(t(tag::email::IMPORTANCE).as_deref(), Some("2"));
        assert_eq!(t(tag::email::READ).as_deref(), Some("1"));
        assert_eq!(t(tag::email::DATE_RECEIVED).as_deref(), Some(eas_date(1_795_600_000).as_str()));
        let body = d.child(tag::air_sync_base::BODY).unwrap();
        assert_eq!(body.child_text(tag::air_sync_base::DATA).as_deref(), Some("See y"));
        assert_eq!(body.child_text(tag::air_sync_base::TRUNCATED).as_deref(), Some("1"));
        assert_eq!(body.child_text(tag::air_sync_base::PREVIEW).as_deref(), Some("See you"));
        let att = d.child(tag::air_sync_base::ATTACHMENTS).unwrap().child(tag::air_sync_base::ATTACHMENT).unwrap();
        assert_eq!(att.child_text(tag::air_sync_base::DISPLAY_NAME).as_deref(), Some("menu.pdf"));
        assert_eq!(att.child_text(tag::air_sync_base::FILE_REFERENCE).as_deref(), Some("5:7:0"));
        let flag = d.child(tag::email::FLAG).unwrap();
        assert_eq!(flag.child_text(tag::email::STATUS).as_deref(), Some("2"));
        assert_eq!(d.child(tag::email::CATEGORIES).unwrap().child_text(tag::email::CATEGORY).as_deref(), Some("Red Category"));
        assert_eq!(d.child(tag::email2::CONVERSATION_ID).unwrap().bytes_content().len(), 16);
    }

    #[test]
    fn all_or_none_omits_data_and_mime_is_raw() {
        let pref = BodyPreference { body_type: 1, truncation: Some(3), all_or_none: true, preview: None };
        let d = render(MESSAGE, &state(), 7, &opts(vec![pref]));
        let body = d.child(tag::air_sync_base::BODY).unwrap();
        assert!(body.child(tag::air_sync_base::DATA).is_none());
        let mime = BodyPreference { body_type: 4, truncation: None, all_or_none: false, preview: None };
        let d = render(MESSAGE, &state(), 7, &opts(vec![mime]));
        let body = d.child(tag::air_sync_base::BODY).unwrap();
        assert_eq!(body.child_text(tag::air_sync_base::TYPE).as_deref(), Some("4"));
        assert_eq!(body.child(tag::air_sync_base::DATA).unwrap().bytes_content(), MESSAGE);
        let html = BodyPreference { body_type: 2, truncation: None, all_or_none: false, preview: None };
        let d = render(MESSAGE, &state(), 7, &opts(vec![html]));
        let html_body = d.child(tag::air_sync_base::BODY).unwrap();
        assert_eq!(html_body.child_text(tag::air_sync_base::TYPE).as_deref(), Some("2"));
        let data = html_body.child_text(tag::air_sync_base::DATA).unwrap();
        assert!(data.contains("See you at noon.") && data.contains('<'), "{data}");
    }

    #[test]
    fn garbage_still_renders() {
        let d = render(&[0xFF, 0xFE, 0x00], &state(), 1, &opts(vec![]));
        assert!(d.child(tag::email::SUBJECT).is_some());
    }

    #[test]
    fn attachments_and_references() {
        let a = attachments(MESSAGE);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].content_type, "application/pdf");
        let (ct, bytes) = attachment_data(MESSAGE, 0).unwrap();
        assert_eq!((ct.as_str(), bytes.as_slice()), ("application/pdf", b"%PDF-1.4\n".as_slice()));
        assert!(attachment_data(MESSAGE, 1).is_none());
        assert_eq!(parse_file_reference("5:7:0"), Some(("5".into(), 7, 0)));
        assert_eq!(parse_file_reference("7:0"), None);
    }

    #[test]
    fn changes_become_flag_changes() {
        let data = Element::new(tag::air_sync::APPLICATION_DATA)
            .with_text(tag::email::READ, "1")
            .with(Element::new(tag::email::FLAG))
            .with(Element::new(tag::email::CATEGORIES).with_text(tag::email::CATEGORY, "Blue Team"));
        let c = flag_change(&data);
        assert!(c.add.contains(Flags::SEEN));
        assert!(c.remove.contains(Flags::FLAGGED));
        assert_eq!(c.keywords, Some(vec!["Blue_Team".to_string()]));
        let only_read = flag_change(&Element::new(tag::air_sync::APPLICATION_DATA).with_text(tag::email::READ, "0"));
        assert_eq!((only_read.remove, only_read.keywords), (Flags::SEEN, None));
    }

    #[test]
    fn dates() {
        assert_eq!(eas_date(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_eas_date("2026-11-26T04:48:00.000Z"), Some(1_795_668_480));
        assert_eq!(parse_eas_date("20261126T044800Z"), Some(1_795_668_480));
        assert_eq!(parse_eas_date("yesterday"), None);
    }
}
