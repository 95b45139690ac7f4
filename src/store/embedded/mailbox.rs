//! One user's mailbox in the embedded store: the [`Mailbox`] trait over SQLite.
//!
//! Every mutating method is one write transaction that bumps the folder's HIGHESTMODSEQ and
//! gives each touched message its own new MODSEQ (so deltas can be cut anywhere), then
//! publishes on the change feed after the commit.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{Inner, text};
use crate::store::{
    ChangeKind, FlagChange, Flags, Folder, FolderId, FolderStatus, Mailbox, MessageState, ModSeq, Origin, Quota, SearchHit, SearchQuery,
    SpecialUse, StoreError, StoreResult, Uid,
};

/// Longest folder name component.
const MAX_FOLDER_NAME: usize = 255;
/// Deepest folder nesting.
const MAX_FOLDER_DEPTH: usize = 16;

pub struct EmbeddedMailbox {
    inner: Arc<Inner>,
    account_id: i64,
    login: Arc<str>,
    origin: Origin,
}

impl EmbeddedMailbox {
    pub(super) fn new(inner: Arc<Inner>, account_id: i64, login: Arc<str>, origin: Origin) -> Self {
        EmbeddedMailbox { inner, account_id, login, origin }
    }

    fn publish(&self, folder: i64, kind: ChangeKind) {
        self.inner.publish(&self.login, folder, kind, &self.origin);
    }
}

fn folder_key(id: &FolderId) -> StoreResult<i64> {
    id.0.parse::<i64>().map_err(|_| StoreError::FolderNotFound)
}

fn fid(id: i64) -> FolderId {
    FolderId(id.to_string())
}

/// Checks the folder belongs to the account.
fn owned_folder(c: &Connection, account_id: i64, folder: i64) -> StoreResult<()> {
    let found: Option<i64> =
        c.query_row("SELECT id FROM folders WHERE id = ?1 AND account_id = ?2", params![folder, account_id], |r| r.get(0)).optional()?;
    found.map(|_| ()).ok_or(StoreError::FolderNotFound)
}

fn status_of(c: &Connection, folder: i64) -> StoreResult<FolderStatus> {
    Ok(c.query_row("SELECT uidvalidity, uidnext, messages, highest_modseq FROM folders WHERE id = ?1", params![folder], |r| {
        Ok(FolderStatus {
            uidvalidity: r.get::<_, i64>(0)? as u32,
            uidnext: r.get::<_, i64>(1)? as u32,
            messages: r.get::<_, i64>(2)? as u32,
            highest_modseq: r.get::<_, i64>(3)? as u64,
        })
    })?)
}

fn keywords_text(k: &[String]) -> String {
    let mut k: Vec<&str> = k.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
    k.sort_unstable();
    k.dedup();
    k.join(" ")
}

fn keywords_list(s: &str) -> Vec<String> {
    s.split(' ').filter(|k| !k.is_empty()).map(str::to_string).collect()
}

const STATE_COLUMNS: &str = "uid, modseq, flags, keywords, internal_date, size";

fn state_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<MessageState> {
    Ok(MessageState {
        uid: r.get::<_, i64>(0)? as u32,
        modseq: r.get::<_, i64>(1)? as u64,
        flags: Flags(r.get::<_, i64>(2)? as u8),
        keywords: keywords_list(&r.get::<_, String>(3)?),
        internal_date: r.get(4)?,
        size: r.get::<_, i64>(5)? as u64,
    })
}

/// Inserts a folder row with a fresh UIDVALIDITY.
pub(super) fn insert_folder(tx: &Transaction<'_>, account_id: i64, parent: i64, name: &str, role: Option<SpecialUse>) -> StoreResult<i64> {
    // UIDVALIDITY only has to differ from any earlier folder at this name: time plus the
    // row id is unique for the life of the store.
    let clash: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM folders WHERE account_id = ?1 AND parent_id = ?2 AND name = ?3 COLLATE NOCASE)",
        params![account_id, parent, name],
        |r| r.get(0),
    )?;
    if clash {
        return Err(StoreError::FolderExists);
    }
    let next_id: i64 = tx.query_row("SELECT coalesce(max(id), 0) + 1 FROM folders", [], |r| r.get(0))?;
    let uidvalidity = ((chrono::Utc::now().timestamp() as u64).wrapping_add(next_id as u64) & 0x7FFF_FFFF).max(1) as i64;
    tx.execute(
        "INSERT INTO folders(account_id, parent_id, name, role, uidvalidity) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![account_id, parent, name, role.map(|r| r.as_str()), uidvalidity],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Reserves `n` consecutive MODSEQs in a folder; returns the first.
fn next_modseqs(tx: &Transaction<'_>, folder: i64, n: u64) -> StoreResult<ModSeq> {
    let first: i64 = tx.query_row(
        "UPDATE folders SET highest_modseq = highest_modseq + ?2 WHERE id = ?1 RETURNING highest_modseq - ?2 + 1",
        params![folder, n as i64],
        |r| r.get(0),
    )?;
    Ok(first as u64)
}

/// Moves messages into retention and records them as vanished. Returns the bytes freed.
fn expunge_rows(tx: &Transaction<'_>, account_id: i64, folder: i64, uids: &[Uid], now: i64) -> StoreResult<u64> {
    let folder_name: String = tx.query_row("SELECT name FROM folders WHERE id = ?1", params![folder], |r| r.get(0))?;
    let mut existing = Vec::with_capacity(uids.len());
    {
        let mut stmt =
            tx.prepare_cached("SELECT flags, keywords, internal_date, size, body_id FROM messages WHERE folder_id = ?1 AND uid = ?2")?;
        for &uid in uids {
            if let Some(row) = stmt
                .query_row(params![folder, uid], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?, r.get::<_, i64>(4)?))
                })
                .optional()?
            {
                existing.push((uid, row));
            }
        }
    }
    if existing.is_empty() {
        return Ok(0);
    }
    let first = next_modseqs(tx, folder, existing.len() as u64)?;
    let mut freed = 0u64;
    for (i, (uid, (flags, keywords, date, size, body))) in existing.into_iter().enumerate() {
        tx.execute(
            "INSERT INTO retained(account_id, folder_id, folder_name, flags, keywords, internal_date, size, body_id, expunged_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![account_id, folder, folder_name, flags, keywords, date, size, body, now],
        )?;
        tx.execute("DELETE FROM messages WHERE folder_id = ?1 AND uid = ?2", params![folder, uid])?;
        tx.execute(
            "INSERT OR REPLACE INTO vanished(folder_id, uid, modseq) VALUES (?1, ?2, ?3)",
            params![folder, uid, (first + i as u64) as i64],
        )?;
        tx.execute("UPDATE folders SET messages = messages - 1 WHERE id = ?1", params![folder])?;
        freed += size as u64;
    }
    tx.execute("UPDATE accounts SET used_bytes = max(0, used_bytes - ?2) WHERE id = ?1", params![account_id, freed as i64])?;
    Ok(freed)
}

/// A stored body and the attributes of the message to create from it.
pub(super) struct NewMessage<'a> {
    pub body_id: i64,
    pub flags: Flags,
    pub keywords: &'a str,
    pub date: i64,
    pub size: u64,
}

/// Appends a stored body as a new message; returns its UID. Quota and size were checked by
/// the caller.
pub(super) fn append_row(tx: &Transaction<'_>, account_id: i64, folder: i64, m: NewMessage<'_>) -> StoreResult<Uid> {
    let NewMessage { body_id, flags, keywords, date, size } = m;
    let (uid, modseq): (i64, i64) = tx.query_row(
        "UPDATE folders SET uidnext = uidnext + 1, highest_modseq = highest_modseq + 1, messages = messages + 1
         WHERE id = ?1 RETURNING uidnext - 1, highest_modseq",
        params![folder],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    tx.execute(
        "INSERT INTO messages(folder_id, uid, modseq, flags, keywords, internal_date, size, body_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![folder, uid, modseq, flags.0 as i64, keywords, date, size as i64, body_id],
    )?;
    tx.execute("UPDATE accounts SET used_bytes = used_bytes + ?2 WHERE id = ?1", params![account_id, size as i64])?;
    Ok(uid as u32)
}

/// Refuses a message that would take the account over quota.
pub(super) fn check_quota(tx: &Transaction<'_>, account_id: i64, size: u64) -> StoreResult<()> {
    let (used, quota): (i64, Option<i64>) =
        tx.query_row("SELECT used_bytes, quota_bytes FROM accounts WHERE id = ?1", params![account_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if let Some(limit) = quota
        && used as u64 + size > limit as u64
    {
        return Err(StoreError::QuotaExceeded { used: used as u64, limit: limit as u64 });
    }
    Ok(())
}

/// Stores the bytes and their search index; returns the body id.
pub(super) fn insert_body(tx: &Transaction<'_>, raw: &[u8], indexed: &text::IndexedText) -> StoreResult<i64> {
    tx.execute("INSERT INTO bodies(raw) VALUES (?1)", params![raw])?;
    let body_id = tx.last_insert_rowid();
    text::index(tx, body_id, indexed)?;
    Ok(body_id)
}

fn valid_folder_name(name: &str) -> bool {
    let n = name.trim();
    !n.is_empty() && n.len() <= MAX_FOLDER_NAME && n == name && !n.contains(['/', '\0', '\r', '\n'])
}

fn folder_depth(c: &Connection, mut folder: i64) -> StoreResult<usize> {
    let mut depth = 0;
    while folder != 0 {
        depth += 1;
        if depth > MAX_FOLDER_DEPTH + 1 {
            break;
        }
        folder = c.query_row("SELECT parent_id FROM folders WHERE id = ?1", params![folder], |r| r.get(0))?;
    }
    Ok(depth)
}

/// The folder and all its descendants, children after parents.
fn subtree(c: &Connection, root: i64) -> StoreResult<Vec<i64>> {
    let mut stmt = c.prepare(
        "WITH RECURSIVE t(id) AS (SELECT ?1 UNION ALL SELECT f.id FROM folders f JOIN t ON f.parent_id = t.id) SELECT id FROM t",
    )?;
    let ids = stmt.query_map(params![root], |r| r.get(0))?.collect::<Result<Vec<i64>, _>>()?;
    Ok(ids)
}

#[async_trait]
impl Mailbox for EmbeddedMailbox {
    async fn folders(&self) -> StoreResult<Vec<Folder>> {
        let account_id = self.account_id;
        Ok(self
            .inner
            .db
            .read(move |c| {
                let mut stmt = c.prepare_cached(
                    "SELECT id, parent_id, name, role, uidvalidity, uidnext, messages, highest_modseq
                     FROM folders WHERE account_id = ?1 ORDER BY parent_id, id",
                )?;
                let rows = stmt.query_map(params![account_id], |r| {
                    let parent: i64 = r.get(1)?;
                    let role: Option<String> = r.get(3)?;
                    Ok(Folder {
                        id: fid(r.get(0)?),
                        parent: (parent != 0).then(|| fid(parent)),
                        name: r.get(2)?,
                        role: role.as_deref().and_then(SpecialUse::parse),
                        status: FolderStatus {
                            uidvalidity: r.get::<_, i64>(4)? as u32,
                            uidnext: r.get::<_, i64>(5)? as u32,
                            messages: r.get::<_, i64>(6)? as u32,
                            highest_modseq: r.get::<_, i64>(7)? as u64,
                        },
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?)
    }

    async fn status(&self, folder: &FolderId) -> StoreResult<FolderStatus> {
        let (account_id, folder) = (self.account_id, folder_key(folder)?);
        self.inner
            .db
            .read(move |c| {
                Ok(match owned_folder(c, account_id, folder) {
                    Ok(()) => status_of(c, folder),
                    Err(e) => Err(e),
                })
            })
            .await?
    }

    async fn changed_since(&self, folder: &FolderId, since: ModSeq, limit: usize) -> StoreResult<Vec<MessageState>> {
        let (account_id, folder) = (self.account_id, folder_key(folder)?);
        self.inner
            .db
            .read(move |c| {
                Ok((|| {
                    owned_folder(c, account_id, folder)?;
                    let mut stmt = c.prepare_cached(&format!(
                        "SELECT {STATE_COLUMNS} FROM messages WHERE folder_id = ?1 AND modseq > ?2 ORDER BY modseq LIMIT ?3"
                    ))?;
                    let rows = stmt.query_map(params![folder, since as i64, limit as i64], state_row)?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })())
            })
            .await?
    }

    async fn vanished_since(&self, folder: &FolderId, since: ModSeq) -> StoreResult<Option<Vec<Uid>>> {
        let (account_id, folder) = (self.account_id, folder_key(folder)?);
        self.inner
            .db
            .read(move |c| {
                Ok((|| {
                    owned_folder(c, account_id, folder)?;
                    let mut stmt = c.prepare_cached("SELECT uid FROM vanished WHERE folder_id = ?1 AND modseq > ?2 ORDER BY uid")?;
                    let rows = stmt.query_map(params![folder, since as i64], |r| Ok(r.get::<_, i64>(0)? as u32))?;
                    Ok(Some(rows.collect::<Result<Vec<_>, _>>()?))
                })())
            })
            .await?
    }

    async fn messages_below(
        &self,
        folder: &FolderId,
        below: Uid,
        received_since: Option<i64>,
        limit: usize,
    ) -> StoreResult<Vec<MessageState>> {
        let (account_id, folder) = (self.account_id, folder_key(folder)?);
        self.inner
            .db
            .read(move |c| {
                Ok((|| {
                    owned_folder(c, account_id, folder)?;
                    let mut stmt = c.prepare_cached(&format!(
                        "SELECT {STATE_COLUMNS} FROM messages WHERE folder_id = ?1 AND uid < ?2 AND internal_date >= ?3
                         ORDER BY uid DESC LIMIT ?4"
                    ))?;
                    let since = received_since.unwrap_or(i64::MIN);
                    let rows = stmt.query_map(params![folder, below as i64, since, limit as i64], state_row)?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })())
            })
            .await?
    }

    async fn message_states(&self, folder: &FolderId, uids: &[Uid]) -> StoreResult<Vec<MessageState>> {
        let (account_id, folder) = (self.account_id, folder_key(folder)?);
        let uids = uids.to_vec();
        self.inner
            .db
            .read(move |c| {
                Ok((|| {
                    owned_folder(c, account_id, folder)?;
                    let mut stmt = c.prepare_cached(&format!("SELECT {STATE_COLUMNS} FROM messages WHERE folder_id = ?1 AND uid = ?2"))?;
                    let mut out = Vec::with_capacity(uids.len());
                    for uid in uids {
                        if let Some(s) = stmt.query_row(params![folder, uid], state_row).optional()? {
                            out.push(s);
                        }
                    }
                    Ok(out)
                })())
            })
            .await?
    }

    async fn all_uids(&self, folder: &FolderId) -> StoreResult<Vec<Uid>> {
        let (account_id, folder) = (self.account_id, folder_key(folder)?);
        self.inner
            .db
            .read(move |c| {
                Ok((|| {
                    owned_folder(c, account_id, folder)?;
                    let mut stmt = c.prepare_cached("SELECT uid FROM messages WHERE folder_id = ?1 ORDER BY uid")?;
                    let rows = stmt.query_map(params![folder], |r| Ok(r.get::<_, i64>(0)? as u32))?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })())
            })
            .await?
    }

    async fn count(&self, folder: &FolderId, below: Option<Uid>, received_since: Option<i64>) -> StoreResult<u32> {
        let (account_id, folder) = (self.account_id, folder_key(folder)?);
        self.inner
            .db
            .read(move |c| {
                Ok((|| {
                    owned_folder(c, account_id, folder)?;
                    let n: i64 = c.query_row(
                        "SELECT count(*) FROM messages WHERE folder_id = ?1 AND uid < ?2 AND internal_date >= ?3",
                        params![folder, below.map(i64::from).unwrap_or(i64::MAX), received_since.unwrap_or(i64::MIN)],
                        |r| r.get(0),
                    )?;
                    Ok(n as u32)
                })())
            })
            .await?
    }

    async fn fetch(&self, folder: &FolderId, uid: Uid) -> StoreResult<Bytes> {
        let (account_id, folder) = (self.account_id, folder_key(folder)?);
        self.inner
            .db
            .read(move |c| {
                Ok((|| {
                    owned_folder(c, account_id, folder)?;
                    let raw: Option<Vec<u8>> = c
                        .query_row(
                            "SELECT b.raw FROM messages m JOIN bodies b ON b.id = m.body_id WHERE m.folder_id = ?1 AND m.uid = ?2",
                            params![folder, uid],
                            |r| r.get(0),
                        )
                        .optional()?;
                    raw.map(Bytes::from).ok_or(StoreError::MessageNotFound)
                })())
            })
            .await?
    }

    async fn append(&self, folder: &FolderId, raw: &[u8], flags: Flags, internal_date: Option<i64>) -> StoreResult<Uid> {
        let (account_id, folder_id) = (self.account_id, folder_key(folder)?);
        let size = raw.len() as u64;
        let limit = self.inner.settings.max_message_bytes;
        if size > limit {
            return Err(StoreError::MessageTooLarge { size, limit });
        }
        let raw = raw.to_vec();
        let indexed = text::extract(&raw);
        let date = internal_date.unwrap_or_else(|| chrono::Utc::now().timestamp());
        let uid = self
            .inner
            .db
            .write(move |tx| {
                owned_folder(tx, account_id, folder_id)?;
                check_quota(tx, account_id, size)?;
                let body = insert_body(tx, &raw, &indexed)?;
                append_row(tx, account_id, folder_id, NewMessage { body_id: body, flags, keywords: "", date, size })
            })
            .await?;
        self.publish(folder_id, ChangeKind::MessageNew);
        Ok(uid)
    }

    async fn set_flags(&self, folder: &FolderId, uids: &[Uid], change: &FlagChange) -> StoreResult<()> {
        let (account_id, folder_id) = (self.account_id, folder_key(folder)?);
        let uids = uids.to_vec();
        let change = change.clone();
        let changed = self
            .inner
            .db
            .write(move |tx| {
                owned_folder(tx, account_id, folder_id)?;
                let mut updates = Vec::new();
                {
                    let mut stmt = tx.prepare_cached("SELECT flags, keywords FROM messages WHERE folder_id = ?1 AND uid = ?2")?;
                    for &uid in &uids {
                        let Some((flags, keywords)) = stmt
                            .query_row(params![folder_id, uid], |r| Ok((Flags(r.get::<_, i64>(0)? as u8), r.get::<_, String>(1)?)))
                            .optional()?
                        else {
                            continue;
                        };
                        let new_flags = flags.union(change.add).without(change.remove);
                        let new_keywords = change.keywords.as_deref().map(keywords_text).unwrap_or_else(|| keywords.clone());
                        // Unchanged messages keep their MODSEQ: IMAP's STORE only bumps real changes.
                        if new_flags != flags || new_keywords != keywords {
                            updates.push((uid, new_flags, new_keywords));
                        }
                    }
                }
                if updates.is_empty() {
                    return Ok(false);
                }
                let first = next_modseqs(tx, folder_id, updates.len() as u64)?;
                for (i, (uid, flags, keywords)) in updates.into_iter().enumerate() {
                    tx.execute(
                        "UPDATE messages SET flags = ?3, keywords = ?4, modseq = ?5 WHERE folder_id = ?1 AND uid = ?2",
                        params![folder_id, uid, flags.0 as i64, keywords, (first + i as u64) as i64],
                    )?;
                }
                Ok::<_, StoreError>(true)
            })
            .await?;
        if changed {
            self.publish(folder_id, ChangeKind::MessageFlags);
        }
        Ok(())
    }

    async fn move_messages(&self, from: &FolderId, uids: &[Uid], to: &FolderId) -> StoreResult<Vec<(Uid, Uid)>> {
        let (account_id, src, dst) = (self.account_id, folder_key(from)?, folder_key(to)?);
        if src == dst {
            return Ok(uids.iter().map(|&u| (u, u)).collect());
        }
        let uids = uids.to_vec();
        let moved = self
            .inner
            .db
            .write(move |tx| {
                owned_folder(tx, account_id, src)?;
                owned_folder(tx, account_id, dst)?;
                let mut present = Vec::new();
                {
                    let mut stmt = tx.prepare_cached("SELECT EXISTS(SELECT 1 FROM messages WHERE folder_id = ?1 AND uid = ?2)")?;
                    for &uid in &uids {
                        if stmt.query_row(params![src, uid], |r| r.get::<_, bool>(0))? {
                            present.push(uid);
                        }
                    }
                }
                if present.is_empty() {
                    return Ok(Vec::new());
                }
                let src_first = next_modseqs(tx, src, present.len() as u64)?;
                let mut moved = Vec::with_capacity(present.len());
                for (i, uid) in present.into_iter().enumerate() {
                    let (new_uid, modseq): (i64, i64) = tx.query_row(
                        "UPDATE folders SET uidnext = uidnext + 1, highest_modseq = highest_modseq + 1, messages = messages + 1
                         WHERE id = ?1 RETURNING uidnext - 1, highest_modseq",
                        params![dst],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?;
                    tx.execute(
                        "UPDATE messages SET folder_id = ?3, uid = ?4, modseq = ?5 WHERE folder_id = ?1 AND uid = ?2",
                        params![src, uid, dst, new_uid, modseq],
                    )?;
                    tx.execute(
                        "INSERT OR REPLACE INTO vanished(folder_id, uid, modseq) VALUES (?1, ?2, ?3)",
                        params![src, uid, (src_first + i as u64) as i64],
                    )?;
                    tx.execute("UPDATE folders SET messages = messages - 1 WHERE id = ?1", params![src])?;
                    moved.push((uid, new_uid as u32));
                }
                Ok::<_, StoreError>(moved)
            })
            .await?;
        if !moved.is_empty() {
            self.publish(src, ChangeKind::MessageExpunged);
            self.publish(dst, ChangeKind::MessageNew);
        }
        Ok(moved)
    }

    async fn expunge(&self, folder: &FolderId, uids: &[Uid]) -> StoreResult<()> {
        let (account_id, folder_id) = (self.account_id, folder_key(folder)?);
        let uids = uids.to_vec();
        let now = chrono::Utc::now().timestamp();
        let freed = self
            .inner
            .db
            .write(move |tx| {
                owned_folder(tx, account_id, folder_id)?;
                let before: i64 = tx.query_row("SELECT messages FROM folders WHERE id = ?1", params![folder_id], |r| r.get(0))?;
                expunge_rows(tx, account_id, folder_id, &uids, now)?;
                let after: i64 = tx.query_row("SELECT messages FROM folders WHERE id = ?1", params![folder_id], |r| r.get(0))?;
                Ok::<_, StoreError>(before != after)
            })
            .await?;
        if freed {
            self.publish(folder_id, ChangeKind::MessageExpunged);
        }
        Ok(())
    }

    async fn create_folder(&self, parent: Option<&FolderId>, name: &str) -> StoreResult<FolderId> {
        if !valid_folder_name(name) {
            return Err(StoreError::InvalidFolderName);
        }
        let account_id = self.account_id;
        let parent = parent.map(folder_key).transpose()?.unwrap_or(0);
        let name = name.to_string();
        let id = self
            .inner
            .db
            .write(move |tx| {
                if parent != 0 {
                    owned_folder(tx, account_id, parent)?;
                    if folder_depth(tx, parent)? >= MAX_FOLDER_DEPTH {
                        return Err(StoreError::InvalidFolderName);
                    }
                }
                insert_folder(tx, account_id, parent, &name, None)
            })
            .await?;
        self.publish(id, ChangeKind::Hierarchy);
        Ok(fid(id))
    }

    async fn rename_folder(&self, folder: &FolderId, new_parent: Option<&FolderId>, new_name: &str) -> StoreResult<FolderId> {
        if !valid_folder_name(new_name) {
            return Err(StoreError::InvalidFolderName);
        }
        let (account_id, folder_id) = (self.account_id, folder_key(folder)?);
        let parent = new_parent.map(folder_key).transpose()?.unwrap_or(0);
        let name = new_name.to_string();
        self.inner
            .db
            .write(move |tx| {
                owned_folder(tx, account_id, folder_id)?;
                let role: Option<String> = tx.query_row("SELECT role FROM folders WHERE id = ?1", params![folder_id], |r| r.get(0))?;
                if role.is_some() {
                    return Err(StoreError::SpecialFolder);
                }
                if parent != 0 {
                    owned_folder(tx, account_id, parent)?;
                    // A folder cannot move under itself or its descendants.
                    if subtree(tx, folder_id)?.contains(&parent) {
                        return Err(StoreError::InvalidFolderName);
                    }
                    if folder_depth(tx, parent)? >= MAX_FOLDER_DEPTH {
                        return Err(StoreError::InvalidFolderName);
                    }
                }
                let clash: bool = tx.query_row(
                    "SELECT EXISTS(SELECT 1 FROM folders WHERE account_id = ?1 AND parent_id = ?2 AND name = ?3 COLLATE NOCASE AND id != ?4)",
                    params![account_id, parent, name, folder_id],
                    |r| r.get(0),
                )?;
                if clash {
                    return Err(StoreError::FolderExists);
                }
                tx.execute("UPDATE folders SET name = ?2, parent_id = ?3 WHERE id = ?1", params![folder_id, name, parent])?;
                Ok(())
            })
            .await?;
        self.publish(folder_id, ChangeKind::Hierarchy);
        Ok(fid(folder_id))
    }

    async fn delete_folder(&self, folder: &FolderId) -> StoreResult<()> {
        let (account_id, folder_id) = (self.account_id, folder_key(folder)?);
        let now = chrono::Utc::now().timestamp();
        self.inner
            .db
            .write(move |tx| {
                owned_folder(tx, account_id, folder_id)?;
                let ids = subtree(tx, folder_id)?;
                for &id in &ids {
                    let role: Option<String> = tx.query_row("SELECT role FROM folders WHERE id = ?1", params![id], |r| r.get(0))?;
                    if role.is_some() {
                        return Err(StoreError::SpecialFolder);
                    }
                }
                // Deepest first, so a retained message names its own folder; its messages stay
                // recoverable like any expunged message.
                for &id in ids.iter().rev() {
                    let uids: Vec<u32> = {
                        let mut stmt = tx.prepare_cached("SELECT uid FROM messages WHERE folder_id = ?1")?;
                        stmt.query_map(params![id], |r| Ok(r.get::<_, i64>(0)? as u32))?.collect::<Result<_, _>>()?
                    };
                    expunge_rows(tx, account_id, id, &uids, now)?;
                    tx.execute("DELETE FROM vanished WHERE folder_id = ?1", params![id])?;
                    tx.execute("DELETE FROM folders WHERE id = ?1", params![id])?;
                }
                Ok(())
            })
            .await?;
        self.publish(folder_id, ChangeKind::Hierarchy);
        Ok(())
    }

    async fn search(&self, query: &SearchQuery) -> StoreResult<Vec<SearchHit>> {
        let account_id = self.account_id;
        let folders: Vec<i64> = query.folders.iter().map(folder_key).collect::<StoreResult<_>>()?;
        let fts = match &query.text {
            Some(t) => match text::fts_query(t) {
                Some(q) => Some(q),
                None => return Ok(Vec::new()),
            },
            None => None,
        };
        let after = query.received_after.unwrap_or(i64::MIN);
        let before = query.received_before.unwrap_or(i64::MAX);
        let limit = query.limit.max(1) as i64;
        Ok(self
            .inner
            .db
            .read(move |c| {
                let sql = search_sql(fts.is_some(), &folders);
                let mut stmt = c.prepare(&sql)?;
                let rows = stmt.query_map(params![fts, account_id, after, before, limit], |r| {
                    Ok(SearchHit { folder: fid(r.get(0)?), uid: r.get::<_, i64>(1)? as u32, internal_date: r.get(2)? })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?)
    }

    async fn quota(&self) -> StoreResult<Quota> {
        let account_id = self.account_id;
        Ok(self
            .inner
            .db
            .read(move |c| {
                Ok(c.query_row("SELECT used_bytes, quota_bytes FROM accounts WHERE id = ?1", params![account_id], |r| {
                    Ok(Quota { used_bytes: r.get::<_, i64>(0)? as u64, limit_bytes: r.get::<_, Option<i64>>(1)?.map(|q| q as u64) })
                })?)
            })
            .await?)
    }
}

/// The SQL of a search. With text, the full-text index drives the query (`CROSS JOIN` fixes
/// the join order): left to itself SQLite walked the messages by date and probed the index
/// once per message, which is quadratic for a common word in a large folder.
fn search_sql(with_text: bool, folders: &[i64]) -> String {
    let folder_filter = if folders.is_empty() {
        String::new()
    } else {
        format!(" AND m.folder_id IN ({})", folders.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(","))
    };
    if with_text {
        format!(
            "SELECT m.folder_id, m.uid, m.internal_date FROM body_text t
             CROSS JOIN messages m ON m.body_id = t.rowid JOIN folders f ON f.id = m.folder_id
             WHERE body_text MATCH ?1 AND f.account_id = ?2 AND m.internal_date > ?3 AND m.internal_date < ?4{folder_filter}
             ORDER BY m.internal_date DESC LIMIT ?5"
        )
    } else {
        format!(
            "SELECT m.folder_id, m.uid, m.internal_date FROM messages m JOIN folders f ON f.id = m.folder_id
             WHERE ?1 IS NULL AND f.account_id = ?2 AND m.internal_date > ?3 AND m.internal_date < ?4{folder_filter}
             ORDER BY m.internal_date DESC LIMIT ?5"
        )
    }
}

#[cfg(test)]
mod tests {
    use crate::store::embedded::test_support::store_with_alice;
    use crate::store::embedded::{EmbeddedSettings, EmbeddedStore};
    use crate::store::{Flags, MailStore, Origin, SpecialUse, StoreError};

    #[tokio::test]
    async fn a_text_search_is_driven_by_the_full_text_index() {
        let (_dir, store, _account) = store_with_alice().await;
        for folders in [vec![], vec![3, 4]] {
            let sql = format!("EXPLAIN QUERY PLAN {}", super::search_sql(true, &folders));
            let plan: Vec<String> = store
                .inner
                .db
                .read(move |c| {
                    let mut stmt = c.prepare(&sql)?;
                    let rows = stmt.query_map(rusqlite::params!["\"x\"*", 1, 0, 1, 10], |r| r.get::<_, String>(3))?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await
                .unwrap();
            assert!(plan.first().is_some_and(|p| p.contains("VIRTUAL TABLE")), "{plan:?}");
            assert!(plan.iter().any(|p| p.contains("messages_by_body")), "{plan:?}");
        }
    }

    #[tokio::test]
    async fn a_25_megabyte_message_round_trips() {
        let (_dir, store, account) = store_with_alice().await;
        let mb = store.mailbox(&account, Origin::Server).await.unwrap();
        let inbox = mb.folders().await.unwrap().into_iter().find(|f| f.role == Some(SpecialUse::Inbox)).unwrap().id;
        let mut raw = b"Subject: big\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
        raw.extend((0..25 * 1024 * 1024).map(|i| b"abcdefghijklmnopqrstuvwxyz\r\n"[i % 28]));
        let uid = mb.append(&inbox, &raw, Flags::NONE, None).await.unwrap();
        let back = mb.fetch(&inbox, uid).await.unwrap();
        assert_eq!(back.len(), raw.len());
        assert!(back == raw);
        assert_eq!(mb.quota().await.unwrap().used_bytes, raw.len() as u64);
    }

    #[tokio::test]
    async fn size_and_quota_limits_refuse_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedSettings { max_message_bytes: 1000, ..Default::default() }).unwrap();
        store
            .add_user(crate::store::embedded::NewUser {
                login: "alice".into(),
                email: Some("alice@example.test".into()),
                display_name: None,
                password: "pw".into(),
            })
            .await
            .unwrap();
        let account = store.find_account("alice").await.unwrap().unwrap();
        let mb = store.mailbox(&account, Origin::Server).await.unwrap();
        let inbox = mb.folders().await.unwrap().into_iter().find(|f| f.role == Some(SpecialUse::Inbox)).unwrap().id;
        assert!(matches!(
            mb.append(&inbox, &[b'x'; 1001], Flags::NONE, None).await,
            Err(StoreError::MessageTooLarge { size: 1001, limit: 1000 })
        ));
        store.set_quota("alice", Some(1500)).await.unwrap();
        mb.append(&inbox, &[b'x'; 1000], Flags::NONE, None).await.unwrap();
        assert!(matches!(
            mb.append(&inbox, &[b'x'; 600], Flags::NONE, None).await,
            Err(StoreError::QuotaExceeded { used: 1000, limit: 1500 })
        ));
        assert!(matches!(store.deliver("alice@example.test", &[b'x'; 600]).await, Err(StoreError::QuotaExceeded { .. })));
        assert!(matches!(store.deliver("nobody@example.test", b"x").await, Err(StoreError::UserNotFound)));
        let q = mb.quota().await.unwrap();
        assert_eq!((q.used_bytes, q.limit_bytes), (1000, Some(1500)));
    }
}
