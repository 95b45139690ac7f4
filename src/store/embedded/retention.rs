//! Deleted-items retention: expunged messages stay recoverable for a configured period.

use rusqlite::params;

use super::mailbox::{NewMessage, append_row};
use super::{EmbeddedStore, text};
use crate::store::{ChangeKind, Flags, Origin, StoreError, StoreResult};

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RestoreReport {
    pub restored: u64,
}

impl EmbeddedStore {
    /// Restores every retained message of `login` expunged at or after `since` (seconds since
    /// the epoch; all retained when `None`) into the folder it was expunged from, or INBOX when
    /// that folder is gone. Restored messages get new UIDs, like any append.
    pub async fn restore(&self, login: &str, since: Option<i64>) -> StoreResult<RestoreReport> {
        let account_id = self.account_id(login).await?.ok_or(StoreError::UserNotFound)?;
        let since = since.unwrap_or(i64::MIN);
        let touched = self
            .inner
            .db
            .write(move |tx| {
                let inbox: i64 =
                    tx.query_row("SELECT id FROM folders WHERE account_id = ?1 AND role = 'inbox'", params![account_id], |r| r.get(0))?;
                let rows: Vec<(i64, i64, i64, String, i64, i64, i64)> = {
                    let mut stmt = tx.prepare(
                        "SELECT r.id, coalesce(f.id, ?3), r.flags, r.keywords, r.internal_date, r.size, r.body_id
                         FROM retained r LEFT JOIN folders f ON f.id = r.folder_id AND f.account_id = r.account_id
                         WHERE r.account_id = ?1 AND r.expunged_at >= ?2 ORDER BY r.id",
                    )?;
                    stmt.query_map(params![account_id, since, inbox], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
                    })?
                    .collect::<Result<_, _>>()?
                };
                let mut touched = Vec::new();
                for (id, folder, flags, keywords, date, size, body) in rows {
                    // Restored mail is not counted against quota refusal: the admin asked for it.
                    let restored = NewMessage {
                        body_id: body,
                        flags: Flags(flags as u8).without(Flags::DELETED),
                        keywords: &keywords,
                        date,
                        size: size as u64,
                    };
                    append_row(tx, account_id, folder, restored)?;
                    tx.execute("DELETE FROM retained WHERE id = ?1", params![id])?;
                    touched.push(folder);
                }
                Ok::<_, StoreError>(touched)
            })
            .await?;
        let restored = touched.len() as u64;
        let mut folders = touched;
        folders.sort_unstable();
        folders.dedup();
        for folder in folders {
            self.inner.publish(login, folder, ChangeKind::MessageNew, &Origin::Server);
        }
        Ok(RestoreReport { restored })
    }

    /// Permanently deletes retained messages expunged before `before` (seconds since the
    /// epoch); returns how many.
    pub async fn purge_retained(&self, before: i64) -> StoreResult<u64> {
        self.inner
            .db
            .write(move |tx| {
                let rows: Vec<(i64, i64)> = {
                    let mut stmt = tx.prepare("SELECT id, body_id FROM retained WHERE expunged_at < ?1 LIMIT 10000")?;
                    stmt.query_map(params![before], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?
                };
                for (id, body) in &rows {
                    tx.execute("DELETE FROM retained WHERE id = ?1", params![id])?;
                    let in_use: bool = tx.query_row(
                        "SELECT EXISTS(SELECT 1 FROM messages WHERE body_id = ?1) OR EXISTS(SELECT 1 FROM retained WHERE body_id = ?1)",
                        params![body],
                        |r| r.get(0),
                    )?;
                    if !in_use {
                        text::unindex(tx, *body)?;
                        tx.execute("DELETE FROM bodies WHERE id = ?1", params![body])?;
                    }
                }
                Ok::<_, StoreError>(rows.len() as u64)
            })
            .await
    }

    /// Purges what is older than the configured retention period.
    pub async fn purge_expired(&self) -> StoreResult<u64> {
        let cutoff = chrono::Utc::now().timestamp() - self.inner.settings.retention.as_secs() as i64;
        let mut total = 0;
        loop {
            let n = self.purge_retained(cutoff).await?;
            total += n;
            if n < 10_000 {
                return Ok(total);
            }
        }
    }

    /// Number of retained messages of a user.
    pub async fn retained_count(&self, login: &str) -> StoreResult<u64> {
        let account_id = self.account_id(login).await?.ok_or(StoreError::UserNotFound)?;
        Ok(self
            .inner
            .db
            .read(move |c| {
                Ok(c.query_row("SELECT count(*) FROM retained WHERE account_id = ?1", params![account_id], |r| r.get::<_, i64>(0))?)
            })
            .await? as u64)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::embedded::test_support::store_with_alice;
    use crate::store::{MailStore, Origin, SpecialUse};

    #[tokio::test]
    async fn expunged_mail_is_restorable_until_purged() {
        let (_dir, store, account) = store_with_alice().await;
        let mb = store.mailbox(&account, Origin::Server).await.unwrap();
        let folders = mb.folders().await.unwrap();
        let inbox = folders.iter().find(|f| f.role == Some(SpecialUse::Inbox)).unwrap().id.clone();
        let work = mb.create_folder(None, "Work").await.unwrap();
        let a = mb.append(&work, b"Subject: a\r\n\r\na\r\n", crate::store::Flags::SEEN, None).await.unwrap();
        let b = mb.append(&work, b"Subject: b\r\n\r\nb\r\n", crate::store::Flags::NONE, None).await.unwrap();
        mb.expunge(&work, &[a]).await.unwrap();
        assert_eq!(store.retained_count("alice").await.unwrap(), 1);
        let report = store.restore("alice", None).await.unwrap();
        assert_eq!(report.restored, 1);
        let uids = mb.all_uids(&work).await.unwrap();
        assert_eq!(uids.len(), 2);
        assert!(uids.iter().all(|u| *u != a), "a restored message gets a new UID");
        let restored = mb.message_states(&work, &[*uids.iter().max().unwrap()]).await.unwrap().remove(0);
        assert!(restored.flags.contains(crate::store::Flags::SEEN), "flags come back too");

        // A message whose folder is gone comes back to INBOX.
        mb.expunge(&work, &[b]).await.unwrap();
        mb.delete_folder(&work).await.unwrap();
        assert_eq!(store.retained_count("alice").await.unwrap(), 2);
        store.restore("alice", Some(chrono::Utc::now().timestamp() - 60)).await.unwrap();
        assert_eq!(mb.status(&inbox).await.unwrap().messages, 2);

        // Purging removes them for good.
        let c = mb.append(&inbox, b"Subject: c\r\n\r\nc\r\n", crate::store::Flags::NONE, None).await.unwrap();
        mb.expunge(&inbox, &[c]).await.unwrap();
        assert_eq!(store.purge_retained(chrono::Utc::now().timestamp() + 1).await.unwrap(), 1);
        assert_eq!(store.retained_count("alice").await.unwrap(), 0);
        assert_eq!(store.restore("alice", None).await.unwrap().restored, 0);
    }
}
