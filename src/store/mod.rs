//! The mail store abstraction: IMAP's data model as a Rust trait.
//!
//! Owns the vocabulary every store backend shares (folders with special-use roles,
//! `UIDVALIDITY`, `UID`, `MODSEQ`, flags, raw RFC 5322 bytes, a per-user change feed) and the
//! [`MailStore`]/[`Mailbox`] traits the sync engine and push hub call. It must not know
//! about ActiveSync: no SyncKeys, no ServerIds, no WBXML. The embedded backend implements it
//! over SQLite; the IMAP backend translates each method into the IMAP commands named in the
//! method docs, so the two are interchangeable.

pub mod embedded;
pub mod feed;
pub mod imap;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use feed::{ChangeFeed, ChangeKind, StoreChange};

/// A message's IMAP UID within its folder.
pub type Uid = u32;
/// An IMAP MODSEQ (RFC 7162): grows on every change to a folder.
pub type ModSeq = u64;

/// A folder's store-side identity, stable across renames where the backend can manage it
/// (the embedded store's row id; the IMAP mailbox name otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FolderId(pub String);

impl std::fmt::Display for FolderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 6154 special-use roles the sync layer maps onto ActiveSync folder types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecialUse {
    Inbox,
    Drafts,
    Sent,
    Trash,
    Junk,
    Archive,
}

impl SpecialUse {
    pub const ALL: [SpecialUse; 6] =
        [SpecialUse::Inbox, SpecialUse::Drafts, SpecialUse::Sent, SpecialUse::Trash, SpecialUse::Junk, SpecialUse::Archive];

    pub fn as_str(self) -> &'static str {
        match self {
            SpecialUse::Inbox => "inbox",
            SpecialUse::Drafts => "drafts",
            SpecialUse::Sent => "sent",
            SpecialUse::Trash => "trash",
            SpecialUse::Junk => "junk",
            SpecialUse::Archive => "archive",
        }
    }

    pub fn parse(s: &str) -> Option<SpecialUse> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// The folder name a new account gets for this role.
    pub fn default_name(self) -> &'static str {
        match self {
            SpecialUse::Inbox => "INBOX",
            SpecialUse::Drafts => "Drafts",
            SpecialUse::Sent => "Sent",
            SpecialUse::Trash => "Trash",
            SpecialUse::Junk => "Junk",
            SpecialUse::Archive => "Archive",
        }
    }
}

/// A folder as `LIST` (with SPECIAL-USE) and `STATUS` describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    pub id: FolderId,
    /// Display name (the last hierarchy component).
    pub name: String,
    pub parent: Option<FolderId>,
    pub role: Option<SpecialUse>,
    pub status: FolderStatus,
}

/// `STATUS folder (UIDVALIDITY UIDNEXT MESSAGES HIGHESTMODSEQ)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FolderStatus {
    pub uidvalidity: u32,
    pub uidnext: Uid,
    pub messages: u32,
    pub highest_modseq: ModSeq,
}

/// IMAP system flags and the `$Forwarded` keyword, as bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Flags(pub u8);

impl Flags {
    pub const SEEN: Flags = Flags(1);
    pub const FLAGGED: Flags = Flags(2);
    pub const ANSWERED: Flags = Flags(4);
    pub const FORWARDED: Flags = Flags(8);
    pub const DELETED: Flags = Flags(16);
    pub const DRAFT: Flags = Flags(32);
    pub const NONE: Flags = Flags(0);

    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }

    pub fn without(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// IMAP names, for the IMAP backend and logs.
    pub fn imap_names(self) -> Vec<&'static str> {
        [
            (Flags::SEEN, "\\Seen"),
            (Flags::FLAGGED, "\\Flagged"),
            (Flags::ANSWERED, "\\Answered"),
            (Flags::FORWARDED, "$Forwarded"),
            (Flags::DELETED, "\\Deleted"),
            (Flags::DRAFT, "\\Draft"),
        ]
        .into_iter()
        .filter(|(f, _)| self.contains(*f))
        .map(|(_, n)| n)
        .collect()
    }

    pub fn from_imap_name(name: &str) -> Flags {
        match name.to_ascii_lowercase().as_str() {
            "\\seen" => Flags::SEEN,
            "\\flagged" => Flags::FLAGGED,
            "\\answered" => Flags::ANSWERED,
            "$forwarded" => Flags::FORWARDED,
            "\\deleted" => Flags::DELETED,
            "\\draft" => Flags::DRAFT,
            _ => Flags::NONE,
        }
    }
}

/// What the sync engine needs to know about a message without reading it:
/// `UID FETCH … (UID FLAGS MODSEQ INTERNALDATE RFC822.SIZE)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageState {
    pub uid: Uid,
    pub modseq: ModSeq,
    pub flags: Flags,
    /// Keywords other than `$Forwarded`, sorted (ActiveSync categories).
    pub keywords: Vec<String>,
    /// Seconds since the Unix epoch (IMAP INTERNALDATE: when the store received it).
    pub internal_date: i64,
    pub size: u64,
}

/// A flag change: `UID STORE uids +FLAGS (…)` / `-FLAGS (…)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlagChange {
    pub add: Flags,
    pub remove: Flags,
    /// When set, replaces the keyword set (ActiveSync sends categories as a whole).
    pub keywords: Option<Vec<String>>,
}

/// `SEARCH` criteria the ActiveSync Search and Find commands need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SearchQuery {
    /// Folders to search; all mail folders when empty.
    pub folders: Vec<FolderId>,
    /// Free text matched against subject, addresses and body (`TEXT`).
    pub text: Option<String>,
    /// Received strictly after / before, seconds since the epoch (`SINCE`/`BEFORE`).
    pub received_after: Option<i64>,
    pub received_before: Option<i64>,
    /// At most this many hits, newest first.
    pub limit: usize,
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    pub folder: FolderId,
    pub uid: Uid,
    pub internal_date: i64,
}

/// Storage use against quota (`GETQUOTAROOT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub used_bytes: u64,
    pub limit_bytes: Option<u64>,
}

/// A verified user: who they are to the store and to ActiveSync.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    /// Canonical login, lower case: the key of everything per user.
    pub login: Arc<str>,
    /// Primary email address.
    pub email: String,
    pub display_name: Option<String>,
    /// Every address the user receives mail at (primary first).
    pub addresses: Vec<String>,
    /// The password the device presented, kept only for backends that log in with it
    /// (IMAP pass-through). Never logged: `Debug` hides it.
    pub secret: Option<Arc<str>>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account").field("login", &self.login).field("email", &self.email).finish_non_exhaustive()
    }
}

/// Who is making a change, so the change feed can tell a device its own changes apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Origin {
    /// A device, by its DeviceId.
    Device(Arc<str>),
    /// Delivery, an administrator, or anything that is not a device.
    #[default]
    Server,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no such folder")]
    FolderNotFound,
    #[error("no such message")]
    MessageNotFound,
    #[error("a folder with that name already exists")]
    FolderExists,
    #[error("special folders cannot be renamed or deleted")]
    SpecialFolder,
    #[error("invalid folder name")]
    InvalidFolderName,
    #[error("no such user")]
    UserNotFound,
    #[error("a user with that name or address already exists")]
    UserExists,
    #[error("storage quota exceeded ({used} of {limit} bytes used)")]
    QuotaExceeded { used: u64, limit: u64 },
    #[error("message of {size} bytes exceeds the {limit}-byte limit")]
    MessageTooLarge { size: u64, limit: u64 },
    #[error("the folder's UIDVALIDITY changed")]
    UidValidityChanged,
    #[error("mail store unavailable: {0}")]
    Unavailable(String),
    #[error("mail store error: {0}")]
    Internal(String),
}

impl StoreError {
    /// Transient failures a client should retry later.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A mail store: authenticates users and opens their mailboxes.
#[async_trait]
pub trait MailStore: Send + Sync + 'static {
    /// Verifies a login (user name, email address or alias) and password.
    /// `Ok(None)` for wrong credentials. IMAP: `LOGIN` / `AUTHENTICATE PLAIN`.
    async fn authenticate(&self, username: &str, password: &str) -> StoreResult<Option<Account>>;

    /// Opens the mailbox of a verified account; changes through it carry `origin`.
    async fn mailbox(&self, account: &Account, origin: Origin) -> StoreResult<Arc<dyn Mailbox>>;

    /// Subscribes to the account's change feed. Every change committed after this returns is
    /// delivered, in commit order (a subscriber that falls behind is told it lagged).
    /// IMAP: `NOTIFY SET` / `IDLE`, or the server's push webhook.
    async fn watch(&self, account: &Account) -> StoreResult<ChangeFeed>;

    /// A short name for logs and metrics ("embedded", "imap").
    fn kind(&self) -> &'static str;
}

/// One user's mailbox. Every method is one store transaction (or one IMAP command
/// sequence); none loads a whole folder unless its contract says so.
#[async_trait]
pub trait Mailbox: Send + Sync {
    /// All folders with roles and status. IMAP: `LIST "" "*" RETURN (SPECIAL-USE STATUS
    /// (UIDVALIDITY UIDNEXT MESSAGES HIGHESTMODSEQ))`.
    async fn folders(&self) -> StoreResult<Vec<Folder>>;

    /// IMAP: `STATUS folder (UIDVALIDITY UIDNEXT MESSAGES HIGHESTMODSEQ)`.
    async fn status(&self, folder: &FolderId) -> StoreResult<FolderStatus>;

    /// Messages whose MODSEQ is greater than `since`, lowest MODSEQ first, at most `limit`
    /// (more only to complete a group of messages sharing one MODSEQ, which is never split).
    /// IMAP: `UID FETCH 1:* (UID FLAGS MODSEQ INTERNALDATE RFC822.SIZE) (CHANGEDSINCE since)`.
    async fn changed_since(&self, folder: &FolderId, since: ModSeq, limit: usize) -> StoreResult<Vec<MessageState>>;

    /// UIDs expunged after MODSEQ `since`. IMAP (QRESYNC): `UID FETCH 1:* (UID)
    /// (CHANGEDSINCE since VANISHED)`; without QRESYNC, `None` and the caller compares UID sets.
    async fn vanished_since(&self, folder: &FolderId, since: ModSeq) -> StoreResult<Option<Vec<Uid>>>;

    /// Messages with UID below `below`, highest UID first, at most `limit`, optionally only
    /// those received at or after `received_since`. IMAP: `UID SEARCH UID 1:below-1 SINCE d`
    /// then `UID FETCH` of the highest `limit`.
    async fn messages_below(
        &self,
        folder: &FolderId,
        below: Uid,
        received_since: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<MessageState>>;

    /// The current state of these UIDs (missing ones are absent). IMAP: `UID FETCH set (…)`.
    async fn message_states(&self, folder: &FolderId, uids: &[Uid]) -> StoreResult<Vec<MessageState>>;

    /// Every UID in the folder, ascending. IMAP: `UID SEARCH ALL`. Used only to reconcile a
    /// device whose knowledge predates what `vanished_since` can answer.
    async fn all_uids(&self, folder: &FolderId) -> StoreResult<Vec<Uid>>;

    /// Number of messages with UID below `below` (all when `None`) received at or after
    /// `received_since` (all when `None`). IMAP: `UID SEARCH UID 1:below-1 SINCE d`.
    async fn count(&self, folder: &FolderId, below: Option<Uid>, received_since: Option<i64>) -> StoreResult<u32>;

    /// The raw RFC 5322 message. IMAP: `UID FETCH uid BODY.PEEK[]`.
    async fn fetch(&self, folder: &FolderId, uid: Uid) -> StoreResult<Bytes>;

    /// Appends a message; returns its UID. IMAP: `APPEND folder (flags) date {n+}` with the
    /// UID from UIDPLUS's `APPENDUID`.
    async fn append(&self, folder: &FolderId, raw: &[u8], flags: Flags, internal_date: Option<i64>) -> StoreResult<Uid>;

    /// Changes flags and keywords. IMAP: `UID STORE uids +FLAGS.SILENT (…)`/`-FLAGS.SILENT`.
    async fn set_flags(&self, folder: &FolderId, uids: &[Uid], change: &FlagChange) -> StoreResult<()>;

    /// Moves messages; returns (old UID, new UID) for those moved. IMAP: `UID MOVE` with
    /// UIDPLUS's `COPYUID` (or `UID COPY` + `UID STORE \Deleted` + `UID EXPUNGE`).
    async fn move_messages(&self, from: &FolderId, uids: &[Uid], to: &FolderId) -> StoreResult<Vec<(Uid, Uid)>>;

    /// Removes messages. IMAP: `UID STORE uids +FLAGS.SILENT (\Deleted)` + `UID EXPUNGE uids`.
    async fn expunge(&self, folder: &FolderId, uids: &[Uid]) -> StoreResult<()>;

    /// IMAP: `CREATE parent/name` (hierarchy delimiter of the server).
    async fn create_folder(&self, parent: Option<&FolderId>, name: &str) -> StoreResult<FolderId>;

    /// IMAP: `RENAME old new`. Returns the folder's (possibly new) id.
    async fn rename_folder(&self, folder: &FolderId, new_parent: Option<&FolderId>, new_name: &str) -> StoreResult<FolderId>;

    /// Deletes a folder, its subfolders and their messages. IMAP: `DELETE` (children first).
    async fn delete_folder(&self, folder: &FolderId) -> StoreResult<()>;

    /// IMAP: `UID SEARCH [TEXT t] [SINCE d] [BEFORE d]` per folder (or `ESEARCH`).
    async fn search(&self, query: &SearchQuery) -> StoreResult<Vec<SearchHit>>;

    /// IMAP: `GETQUOTAROOT INBOX`.
    async fn quota(&self) -> StoreResult<Quota>;
}

/// A store shared by every request.
pub type SharedStore = Arc<dyn MailStore>;

/// Finds the folder with a role among `folders`.
pub fn folder_with_role(folders: &[Folder], role: SpecialUse) -> Option<&Folder> {
    folders.iter().find(|f| f.role == Some(role))
}
