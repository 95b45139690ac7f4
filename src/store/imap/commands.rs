//! The IMAP command sequences the mailbox and the watcher share: LIST (with SPECIAL-USE and
//! LIST-STATUS when offered), STATUS, SELECT, UID SEARCH, UID FETCH of message states, and
//! turning replies into the store's types.

use imap_proto::{AttributeValue, MailboxDatum, NameAttribute, Response, ResponseCode, StatusAttribute};

use super::session::{ImapError, Outcome, Reply, Selected, Session, Untagged};
use super::wire::{self, Arg};
use crate::store::{Flags, FolderStatus, MessageState, ModSeq, StoreError, Uid};

/// Maps a connection-level failure to the store's error; refusals become `Internal` unless
/// the caller maps them to something better first.
pub fn store_err(e: ImapError) -> StoreError {
    match e {
        ImapError::Io(_) | ImapError::Closed(_) | ImapError::Protocol(_) => StoreError::Unavailable(format!("IMAP server: {e}")),
        ImapError::No(c) | ImapError::Bad(c) => StoreError::Internal(format!("IMAP server refused: {c}")),
    }
}

/// The attributes a STATUS (or a NOTIFY STATUS) carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusAttrs {
    pub uidvalidity: Option<u32>,
    pub uidnext: Option<Uid>,
    pub messages: Option<u32>,
    pub highest_modseq: Option<ModSeq>,
}

impl StatusAttrs {
    pub fn from_items(items: &[StatusAttribute]) -> StatusAttrs {
        let mut s = StatusAttrs::default();
        for item in items {
            match item {
                StatusAttribute::UidValidity(v) => s.uidvalidity = Some(*v),
                StatusAttribute::UidNext(v) => s.uidnext = Some(*v),
                StatusAttribute::Messages(v) => s.messages = Some(*v),
                StatusAttribute::HighestModSeq(v) => s.highest_modseq = Some(*v),
                _ => {}
            }
        }
        s
    }

    /// Fills what this STATUS did not carry from an earlier one.
    pub fn over(self, old: FolderStatus) -> FolderStatus {
        FolderStatus {
            uidvalidity: self.uidvalidity.unwrap_or(old.uidvalidity),
            uidnext: self.uidnext.unwrap_or(old.uidnext),
            messages: self.messages.unwrap_or(old.messages),
            highest_modseq: self.highest_modseq.unwrap_or(old.highest_modseq),
        }
    }
}

/// One mailbox as LIST described it.
#[derive(Debug, Clone)]
pub struct ListEntry {
    /// Decoded (UTF-8) full name; `INBOX` in upper case.
    pub name: String,
    /// The name on the wire (modified UTF-7).
    pub wire: String,
    pub delimiter: Option<String>,
    /// Lower-cased attributes: `\noselect`, `\sent`, ...
    pub attrs: Vec<String>,
    pub status: Option<StatusAttrs>,
}

impl ListEntry {
    pub fn selectable(&self) -> bool {
        !self.attrs.iter().any(|a| a == "\\noselect" || a == "\\nonexistent")
    }
}

/// Normalises a mailbox name from the wire: decoded, `INBOX` in upper case.
pub fn decode_name(wire_name: &str) -> String {
    if wire_name.eq_ignore_ascii_case("INBOX") { "INBOX".to_string() } else { wire::decode_mailbox(wire_name) }
}

/// The wire form of a decoded name.
pub fn encode_name(name: &str) -> String {
    wire::encode_mailbox(name)
}

fn attr_name(a: &NameAttribute<'_>) -> String {
    match a {
        NameAttribute::NoInferiors => "\\noinferiors".into(),
        NameAttribute::NoSelect => "\\noselect".into(),
        NameAttribute::Marked => "\\marked".into(),
        NameAttribute::Unmarked => "\\unmarked".into(),
        NameAttribute::All => "\\all".into(),
        NameAttribute::Archive => "\\archive".into(),
        NameAttribute::Drafts => "\\drafts".into(),
        NameAttribute::Flagged => "\\flagged".into(),
        NameAttribute::Junk => "\\junk".into(),
        NameAttribute::Sent => "\\sent".into(),
        NameAttribute::Trash => "\\trash".into(),
        NameAttribute::Extension(e) => e.to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// The STATUS items to ask for.
pub fn status_items(s: &Session) -> &'static str {
    if s.condstore { "(UIDVALIDITY UIDNEXT MESSAGES HIGHESTMODSEQ)" } else { "(UIDVALIDITY UIDNEXT MESSAGES)" }
}

/// `* LIST` and `* STATUS` data of a reply, in order.
pub fn list_entries(reply: &Reply) -> Vec<ListEntry> {
    let mut out: Vec<ListEntry> = Vec::new();
    for r in reply.data() {
        match r {
            Response::MailboxData(MailboxDatum::List(l)) => {
                let wire_name = l.name.to_string();
                out.push(ListEntry {
                    name: decode_name(&wire_name),
                    wire: wire_name,
                    delimiter: l.delimiter.as_ref().map(|d| d.to_string()),
                    attrs: l.name_attributes.iter().map(attr_name).filter(|a| !a.is_empty()).collect(),
                    status: None,
                });
            }
            Response::MailboxData(MailboxDatum::Status { mailbox, status }) => {
                let name = decode_name(mailbox);
                if let Some(e) = out.iter_mut().rev().find(|e| e.name == name) {
                    e.status = Some(StatusAttrs::from_items(status));
                }
            }
            _ => {}
        }
    }
    out
}

/// Every mailbox, with its status when `with_status` (LIST-STATUS in one round trip when
/// the server offers it, else one STATUS per selectable mailbox).
pub async fn list(s: &mut Session, with_status: bool) -> Result<Vec<ListEntry>, ImapError> {
    let special = s.caps.has("SPECIAL-USE") && s.caps.has("LIST-EXTENDED");
    let list_status = with_status && s.caps.has("LIST-STATUS") && s.caps.has("LIST-EXTENDED");
    let command = match (special, list_status) {
        (true, true) => format!("LIST \"\" \"*\" RETURN (SPECIAL-USE STATUS {})", status_items(s)),
        (false, true) => format!("LIST \"\" \"*\" RETURN (STATUS {})", status_items(s)),
        (true, false) => "LIST \"\" \"*\" RETURN (SPECIAL-USE)".to_string(),
        (false, false) => "LIST \"\" \"*\"".to_string(),
    };
    let reply = s.command(&command).await?.ok()?;
    let mut entries = list_entries(&reply);
    if with_status {
        for e in entries.iter_mut().filter(|e| e.selectable() && e.status.is_none()) {
            e.status = Some(status(s, &e.wire).await?);
        }
    }
    Ok(entries)
}

/// Whether a mailbox exists (and can be selected).
pub async fn exists(s: &mut Session, wire_name: &str) -> Result<bool, ImapError> {
    let reply = s.run(vec![Arg::Text("LIST \"\"".into()), wire::string(wire_name)]).await?.ok()?;
    Ok(list_entries(&reply).iter().any(|e| e.selectable()))
}

/// `STATUS mailbox (…)`. For the selected mailbox a NOOP first: Dovecot answers STATUS of
/// the selected mailbox from the session's view, which only a NOOP updates.
pub async fn status(s: &mut Session, wire_name: &str) -> Result<StatusAttrs, ImapError> {
    if s.selected.as_ref().is_some_and(|sel| sel.name == wire_name) {
        s.command("NOOP").await?.ok()?;
    }
    let items = status_items(s);
    let reply = s.run(vec![Arg::Text("STATUS".into()), wire::string(wire_name), Arg::Text(items.into())]).await?.ok()?;
    let wanted = decode_name(wire_name);
    let mut out = StatusAttrs::default();
    for r in reply.data() {
        // Only the mailbox asked about: a NOTIFY connection also gets other mailboxes' STATUS.
        if let Response::MailboxData(MailboxDatum::Status { mailbox, status }) = r
            && decode_name(mailbox) == wanted
        {
            out = StatusAttrs::from_items(status);
        }
    }
    Ok(out)
}

/// What SELECT told us.
#[derive(Debug, Clone, Copy)]
pub struct SelectInfo {
    pub uidvalidity: u32,
}

/// Selects a mailbox unless it already is. A mailbox that does not exist gives
/// `Ok(None)`.
pub async fn select(s: &mut Session, wire_name: &str) -> Result<Option<SelectInfo>, ImapError> {
    select_as(s, wire_name, true).await
}

/// [`select`]; with `sync` false an already selected mailbox is used as the session sees
/// it (for a FETCH of given UIDs that retries after a NOOP when one is missing).
pub async fn select_as(s: &mut Session, wire_name: &str, sync: bool) -> Result<Option<SelectInfo>, ImapError> {
    if let Some(sel) = &s.selected
        && sel.name == wire_name
    {
        let uidvalidity = sel.uidvalidity;
        // Already selected (a pooled connection): bring the session's view up to date, or
        // FETCH and SEARCH would not see what other sessions did since its last command.
        if sync {
            s.command("NOOP").await?.ok()?;
        }
        return Ok(Some(SelectInfo { uidvalidity }));
    }
    s.selected = None;
    let reply = s.run(vec![Arg::Text("SELECT".into()), wire::string(wire_name)]).await?;
    if reply.done.status != Outcome::Ok {
        if exists(s, wire_name).await? {
            return Err(ImapError::No(reply.done));
        }
        return Ok(None);
    }
    let mut uidvalidity = 0;
    for r in reply.data() {
        if let Response::Data { outcome, .. } = r
            && let Some(ResponseCode::UidValidity(v)) = outcome.code
        {
            uidvalidity = v;
        }
    }
    s.selected = Some(Selected { name: wire_name.to_string(), uidvalidity });
    Ok(Some(SelectInfo { uidvalidity }))
}

/// `EXAMINE mailbox` (read-only: the watcher's view of INBOX). `Ok(false)` when it does not
/// exist.
pub async fn examine(s: &mut Session, wire_name: &str) -> Result<bool, ImapError> {
    s.selected = None;
    let reply = s.run(vec![Arg::Text("EXAMINE".into()), wire::string(wire_name)]).await?;
    if reply.done.status != Outcome::Ok {
        return Ok(false);
    }
    let mut uidvalidity = 0;
    for r in reply.data() {
        if let Response::Data { outcome, .. } = r
            && let Some(ResponseCode::UidValidity(v)) = outcome.code
        {
            uidvalidity = v;
        }
    }
    s.selected = Some(Selected { name: wire_name.to_string(), uidvalidity });
    Ok(true)
}

/// `UID SEARCH criteria` → ascending UIDs.
pub async fn uid_search(s: &mut Session, criteria: Vec<Arg>) -> Result<Vec<Uid>, ImapError> {
    let mut parts = vec![Arg::Text("UID SEARCH".into())];
    parts.extend(criteria);
    let reply = s.run(parts).await?.ok()?;
    let mut uids = Vec::new();
    for u in &reply.untagged {
        match u {
            Untagged::Parsed(Response::MailboxData(MailboxDatum::Search(ids))) => uids.extend_from_slice(ids),
            // `* SEARCH 1 2 (MODSEQ 5)` and other forms imap-proto does not know.
            Untagged::Raw(raw) => {
                let line = String::from_utf8_lossy(raw);
                if let Some(rest) = line.strip_prefix("* SEARCH") {
                    uids.extend(rest.split_whitespace().take_while(|w| !w.starts_with('(')).filter_map(|w| w.parse::<Uid>().ok()));
                }
            }
            _ => {}
        }
    }
    uids.sort_unstable();
    uids.dedup();
    Ok(uids)
}

/// What a FETCH response said about a message.
#[derive(Debug, Default)]
pub struct Fetched {
    pub uid: Option<Uid>,
    pub modseq: Option<ModSeq>,
    pub flags: Option<(Flags, Vec<String>)>,
    pub internal_date: Option<i64>,
    pub size: Option<u64>,
    pub body: Option<Vec<u8>>,
}

/// Converts IMAP flags into our flag bits and the category keywords.
pub fn convert_flags<S: AsRef<str>>(flags: &[S]) -> (Flags, Vec<String>) {
    let mut bits = Flags::NONE;
    let mut keywords = Vec::new();
    for f in flags {
        let f = f.as_ref();
        let bit = Flags::from_imap_name(f);
        if !bit.is_empty() {
            bits = bits.union(bit);
        } else if let Some(k) = wire::decode_keyword(f) {
            keywords.push(k);
        }
    }
    keywords.sort_unstable();
    keywords.dedup();
    (bits, keywords)
}

pub fn fetched(attrs: &[AttributeValue<'static>]) -> Fetched {
    let mut f = Fetched::default();
    for a in attrs {
        match a {
            AttributeValue::Uid(u) => f.uid = Some(*u),
            AttributeValue::ModSeq(m) => f.modseq = Some(*m),
            AttributeValue::Flags(list) => f.flags = Some(convert_flags(list)),
            AttributeValue::InternalDate(d) => f.internal_date = wire::parse_internal_date(d),
            AttributeValue::Rfc822Size(n) => f.size = Some(*n as u64),
            AttributeValue::BodySection { data, .. } => f.body = data.as_ref().map(|d| d.to_vec()),
            AttributeValue::Rfc822(data) => f.body = data.as_ref().map(|d| d.to_vec()),
            _ => {}
        }
    }
    f
}

/// Every FETCH response of a reply.
pub fn fetches(reply: &Reply) -> impl Iterator<Item = Fetched> + '_ {
    reply.data().filter_map(|r| match r {
        Response::Fetch(_, attrs) => Some(fetched(attrs)),
        _ => None,
    })
}

/// The FETCH items of a message state.
pub fn state_items(s: &Session) -> &'static str {
    if s.condstore { "(UID FLAGS MODSEQ INTERNALDATE RFC822.SIZE)" } else { "(UID FLAGS INTERNALDATE RFC822.SIZE)" }
}

/// A complete message state from a FETCH (MODSEQ given by `modseq` when the server has
/// none).
pub fn to_state(f: &Fetched, modseq: impl Fn(Uid) -> ModSeq) -> Option<MessageState> {
    let uid = f.uid?;
    let (flags, keywords) = f.flags.clone()?;
    Some(MessageState {
        uid,
        modseq: f.modseq.unwrap_or_else(|| modseq(uid)),
        flags,
        keywords,
        // Unsolicited FETCHes (another session's flag change) carry no date: not a state.
        internal_date: f.internal_date?,
        size: f.size.unwrap_or(0),
    })
}

/// `UID FETCH set (UID FLAGS MODSEQ INTERNALDATE RFC822.SIZE)` in the selected mailbox,
/// keeping only the UIDs asked for (other FETCHes may be unsolicited updates).
pub async fn fetch_states(s: &mut Session, uids: &[Uid], modseq: impl Fn(Uid) -> ModSeq) -> Result<Vec<MessageState>, ImapError> {
    let mut out = Vec::with_capacity(uids.len());
    if uids.is_empty() {
        return Ok(out);
    }
    let wanted: std::collections::HashSet<Uid> = uids.iter().copied().collect();
    // Long sets are cut so a command line stays reasonable.
    let mut sorted: Vec<Uid> = wanted.iter().copied().collect();
    sorted.sort_unstable();
    for chunk in sorted.chunks(2000) {
        let reply = s.command(&format!("UID FETCH {} {}", wire::uid_set(chunk), state_items(s))).await?.ok()?;
        for f in fetches(&reply) {
            if f.uid.is_some_and(|u| wanted.contains(&u))
                && let Some(st) = to_state(&f, &modseq)
                && !out.iter().any(|o: &MessageState| o.uid == st.uid)
            {
                out.push(st);
            }
        }
    }
    Ok(out)
}
