//! Local delivery: resolving a recipient address (with `+detail`) to an account and folder,
//! and committing the message there.

use rusqlite::{OptionalExtension, params};

use super::mailbox::{NewMessage, append_row, check_quota, insert_body};
use super::{EmbeddedStore, text};
use crate::store::{ChangeKind, Flags, FolderId, Origin, StoreError, StoreResult, Uid};

/// Where a delivered message landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub login: String,
    pub folder: FolderId,
    pub uid: Uid,
}

/// Splits `local+detail@domain` into (`local@domain`, `detail`).
fn split_detail(address: &str) -> (String, Option<String>) {
    let address = address.trim().trim_start_matches('<').trim_end_matches('>').to_ascii_lowercase();
    if let Some((local, domain)) = address.split_once('@')
        && let Some((base, detail)) = local.split_once('+')
    {
        return (format!("{base}@{domain}"), Some(detail.to_string()).filter(|d| !d.is_empty()));
    }
    if let Some((base, detail)) = address.split_once('+')
        && !address.contains('@')
    {
        return (base.to_string(), Some(detail.to_string()).filter(|d| !d.is_empty()));
    }
    (address, None)
}

impl EmbeddedStore {
    /// Whether `address` names a local user (with or without `+detail`).
    pub async fn is_local_recipient(&self, address: &str) -> StoreResult<bool> {
        let (base, _) = split_detail(address);
        Ok(self.account_id(&base).await?.is_some())
    }

    /// Delivers `raw` to the user `address` names: into the folder named by `+detail` when it
    /// exists, else INBOX. Returns once the message is durably committed.
    pub async fn deliver(&self, address: &str, raw: &[u8]) -> StoreResult<Delivered> {
        let (base, detail) = split_detail(address);
        let account_id = self.account_id(&base).await?.ok_or(StoreError::UserNotFound)?;
        let size = raw.len() as u64;
        let limit = self.inner.settings.max_message_bytes;
        if size > limit {
            return Err(StoreError::MessageTooLarge { size, limit });
        }
        let raw = raw.to_vec();
        let indexed = text::extract(&raw);
        let now = chrono::Utc::now().timestamp();
        let (login, folder, uid) = self
            .inner
            .db
            .write(move |tx| {
                let login: String = tx.query_row("SELECT login FROM accounts WHERE id = ?1", params![account_id], |r| r.get(0))?;
                let by_detail: Option<i64> = match &detail {
                    Some(d) => tx
                        .query_row(
                            "SELECT id FROM folders WHERE account_id = ?1 AND name = ?2 COLLATE NOCASE ORDER BY parent_id, id LIMIT 1",
                            params![account_id, d],
                            |r| r.get(0),
                        )
                        .optional()?,
                    None => None,
                };
                let folder = match by_detail {
                    Some(f) => f,
                    None => {
                        tx.query_row("SELECT id FROM folders WHERE account_id = ?1 AND role = 'inbox'", params![account_id], |r| r.get(0))?
                    }
                };
                check_quota(tx, account_id, size)?;
                let body = insert_body(tx, &raw, &indexed)?;
                let uid =
                    append_row(tx, account_id, folder, NewMessage { body_id: body, flags: Flags::NONE, keywords: "", date: now, size })?;
                Ok::<_, StoreError>((login, folder, uid))
            })
            .await?;
        self.inner.publish(&login, folder, ChangeKind::MessageNew, &Origin::Server);
        Ok(Delivered { login, folder: FolderId(folder.to_string()), uid })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_plus_detail() {
        assert_eq!(split_detail("Alice+Lists@Example.test"), ("alice@example.test".into(), Some("lists".into())));
        assert_eq!(split_detail("<alice@example.test>"), ("alice@example.test".into(), None));
        assert_eq!(split_detail("alice+@example.test"), ("alice@example.test".into(), None));
        assert_eq!(split_detail("alice+x"), ("alice".into(), Some("x".into())));
    }
}
