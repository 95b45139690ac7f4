//! Accounts of the embedded store: logins, addresses, argon2 password hashes, quotas.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};

use super::EmbeddedStore;
use crate::store::{Account, SpecialUse, StoreError, StoreResult};

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub login: String,
    /// Defaults to the login when it is an address.
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub password: String,
}

/// A user as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UserSummary {
    pub login: String,
    pub email: String,
    pub display_name: Option<String>,
    pub aliases: Vec<String>,
    pub quota_bytes: Option<u64>,
    pub used_bytes: u64,
    pub created_at: i64,
}

/// Longest login or address accepted.
const MAX_NAME_LEN: usize = 254;

fn valid_login(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-@+".contains(c))
        && !s.starts_with(['.', '-', '@', '+'])
}

fn valid_address(s: &str) -> bool {
    valid_login(s) && s.split('@').count() == 2 && !s.ends_with('@')
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl EmbeddedStore {
    /// A valid hash of a random password, verified against when the user does not exist.
    async fn decoy_hash(&self) -> StoreResult<String> {
        let inner = &self.inner;
        inner.decoy_hash.get_or_try_init(|| async { inner.passwords.hash(format!("{:x}", rand::random::<u128>())).await }).await.cloned()
    }

    /// Creates a user with the standard folders (INBOX, Drafts, Sent, Trash, Junk).
    pub async fn add_user(&self, user: NewUser) -> StoreResult<UserSummary> {
        let login = user.login.trim().to_ascii_lowercase();
        if !valid_login(&login) {
            return Err(StoreError::Internal(format!("invalid user name {login:?}")));
        }
        let email = user.email.map(|e| e.trim().to_ascii_lowercase()).unwrap_or_else(|| login.clone());
        if !valid_address(&email) {
            return Err(StoreError::Internal(format!("{email:?} is not an email address (give --email when the user name is not one)")));
        }
        if user.password.is_empty() {
            return Err(StoreError::Internal("empty password".into()));
        }
        let hash = self.inner.passwords.hash(user.password).await?;
        let display_name = user.display_name;
        let (l, e, d) = (login.clone(), email.clone(), display_name.clone());
        let created_at = now();
        self.inner
            .db
            .write(move |tx| {
                let taken: bool = tx.query_row(
                    "SELECT EXISTS(SELECT 1 FROM accounts WHERE login = ?1 OR email = ?1 OR login = ?2 OR email = ?2)
                     OR EXISTS(SELECT 1 FROM aliases WHERE address = ?1 OR address = ?2)",
                    params![l, e],
                    |r| r.get(0),
                )?;
                if taken {
                    return Err(StoreError::UserExists);
                }
                tx.execute(
                    "INSERT INTO accounts(login, email, display_name, password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![l, e, d, hash, created_at],
                )?;
                let account_id = tx.last_insert_rowid();
                for role in [SpecialUse::Inbox, SpecialUse::Drafts, SpecialUse::Sent, SpecialUse::Trash, SpecialUse::Junk] {
                    super::mailbox::insert_folder(tx, account_id, 0, role.default_name(), Some(role))?;
                }
                Ok(())
            })
            .await?;
        Ok(UserSummary { login, email, display_name, aliases: vec![], quota_bytes: None, used_bytes: 0, created_at })
    }

    /// Verifies credentials given as login, email address or alias.
    pub(crate) async fn verify_password(&self, username: &str, password: &str) -> StoreResult<Option<Account>> {
        let name = username.trim().to_ascii_lowercase();
        let row = self
            .inner
            .db
            .read(move |c| {
                Ok(c.query_row(
                    "SELECT a.id, a.password_hash FROM accounts a
                     WHERE a.login = ?1 OR a.email = ?1
                        OR a.id = (SELECT account_id FROM aliases WHERE address = ?1)",
                    params![name],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
                )
                .optional()?)
            })
            .await?;
        let (id, hash) = match row {
            Some((id, hash)) => (Some(id), hash),
            // An unknown user costs as much time as a wrong password: no user-name probing.
            None => (None, self.decoy_hash().await?),
        };
        let ok = self.inner.passwords.verify(password.to_string(), hash).await?;
        match (ok, id) {
            (true, Some(id)) => self.account_by_id(id).await.map(Some),
            _ => Ok(None),
        }
    }

    pub(crate) async fn account_by_id(&self, id: i64) -> StoreResult<Account> {
        self.inner
            .db
            .read(move |c| {
                let (login, email, display_name): (String, String, Option<String>) =
                    c.query_row("SELECT login, email, display_name FROM accounts WHERE id = ?1", params![id], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                    })?;
                let mut addresses = vec![email.clone()];
                let mut stmt = c.prepare_cached("SELECT address FROM aliases WHERE account_id = ?1 ORDER BY address")?;
                for a in stmt.query_map(params![id], |r| r.get::<_, String>(0))? {
                    addresses.push(a?);
                }
                Ok(Account { login: Arc::from(login.as_str()), email, display_name, addresses, secret: None })
            })
            .await
            .map_err(StoreError::from)
    }

    /// The account id of a login, email address or alias.
    pub(crate) async fn account_id(&self, name: &str) -> StoreResult<Option<i64>> {
        let name = name.trim().to_ascii_lowercase();
        Ok(self
            .inner
            .db
            .read(move |c| {
                Ok(c.query_row(
                    "SELECT id FROM accounts WHERE login = ?1 OR email = ?1
                     UNION SELECT account_id FROM aliases WHERE address = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .optional()?)
            })
            .await?)
    }

    /// Finds the account an address (login, email or alias) belongs to.
    pub async fn find_account(&self, name: &str) -> StoreResult<Option<Account>> {
        match self.account_id(name).await? {
            Some(id) => self.account_by_id(id).await.map(Some),
            None => Ok(None),
        }
    }

    pub async fn set_password(&self, login: &str, password: &str) -> StoreResult<()> {
        if password.is_empty() {
            return Err(StoreError::Internal("empty password".into()));
        }
        let id = self.account_id(login).await?.ok_or(StoreError::UserNotFound)?;
        let hash = self.inner.passwords.hash(password.to_string()).await?;
        self.inner
            .db
            .write(move |tx| {
                tx.execute("UPDATE accounts SET password_hash = ?1 WHERE id = ?2", params![hash, id])?;
                Ok::<_, StoreError>(())
            })
            .await
    }

    /// Sets (or with `None`, removes) a user's storage quota.
    pub async fn set_quota(&self, login: &str, quota_bytes: Option<u64>) -> StoreResult<()> {
        let id = self.account_id(login).await?.ok_or(StoreError::UserNotFound)?;
        self.inner
            .db
            .write(move |tx| {
                tx.execute("UPDATE accounts SET quota_bytes = ?1 WHERE id = ?2", params![quota_bytes.map(|q| q as i64), id])?;
                Ok::<_, StoreError>(())
            })
            .await
    }

    pub async fn add_alias(&self, login: &str, address: &str) -> StoreResult<()> {
        let address = address.trim().to_ascii_lowercase();
        if !valid_address(&address) {
            return Err(StoreError::Internal(format!("{address:?} is not an email address")));
        }
        let id = self.account_id(login).await?.ok_or(StoreError::UserNotFound)?;
        self.inner
            .db
            .write(move |tx| {
                let taken: bool = tx.query_row(
                    "SELECT EXISTS(SELECT 1 FROM accounts WHERE login = ?1 OR email = ?1)
                     OR EXISTS(SELECT 1 FROM aliases WHERE address = ?1)",
                    params![address],
                    |r| r.get(0),
                )?;
                if taken {
                    return Err(StoreError::UserExists);
                }
                tx.execute("INSERT INTO aliases(address, account_id) VALUES (?1, ?2)", params![address, id])?;
                Ok(())
            })
            .await
    }

    /// Removes a user, their folders, messages and retained messages.
    pub async fn remove_user(&self, login: &str) -> StoreResult<()> {
        let id = self.account_id(login).await?.ok_or(StoreError::UserNotFound)?;
        self.inner
            .db
            .write(move |tx| {
                // Bodies are shared by messages and retained copies; collect them first.
                let mut stmt = tx.prepare(
                    "SELECT m.body_id FROM messages m JOIN folders f ON f.id = m.folder_id WHERE f.account_id = ?1
                     UNION SELECT body_id FROM retained WHERE account_id = ?1",
                )?;
                let bodies: Vec<i64> = stmt.query_map(params![id], |r| r.get(0))?.collect::<Result<_, _>>()?;
                drop(stmt);
                tx.execute("DELETE FROM messages WHERE folder_id IN (SELECT id FROM folders WHERE account_id = ?1)", params![id])?;
                tx.execute("DELETE FROM retained WHERE account_id = ?1", params![id])?;
                tx.execute("DELETE FROM vanished WHERE folder_id IN (SELECT id FROM folders WHERE account_id = ?1)", params![id])?;
                tx.execute("DELETE FROM folders WHERE account_id = ?1", params![id])?;
                tx.execute("DELETE FROM accounts WHERE id = ?1", params![id])?;
                for body in bodies {
                    super::text::unindex(tx, body)?;
                    tx.execute("DELETE FROM bodies WHERE id = ?1", params![body])?;
                }
                Ok::<_, StoreError>(())
            })
            .await
    }

    pub async fn list_users(&self) -> StoreResult<Vec<UserSummary>> {
        Ok(self
            .inner
            .db
            .read(|c| {
                let mut stmt = c.prepare(
                    "SELECT a.id, a.login, a.email, a.display_name, a.quota_bytes, a.used_bytes, a.created_at,
                            (SELECT group_concat(address, ' ') FROM aliases WHERE account_id = a.id)
                     FROM accounts a ORDER BY a.login",
                )?;
                let rows = stmt.query_map([], |r| {
                    let aliases: Option<String> = r.get(7)?;
                    Ok(UserSummary {
                        login: r.get(1)?,
                        email: r.get(2)?,
                        display_name: r.get(3)?,
                        quota_bytes: r.get::<_, Option<i64>>(4)?.map(|q| q as u64),
                        used_bytes: r.get::<_, i64>(5)? as u64,
                        created_at: r.get(6)?,
                        aliases: aliases.map(|a| a.split(' ').map(str::to_string).collect()).unwrap_or_default(),
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?)
    }

    /// Every address the store delivers to, with its account's login (for directory lookups:
    /// GAL search, ResolveRecipients).
    pub async fn directory(&self) -> StoreResult<Vec<UserSummary>> {
        self.list_users().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MailStore;
    use crate::store::embedded::test_support::store_with_alice;

    #[tokio::test]
    async fn logs_in_by_login_email_or_alias_case_insensitively() {
        let (_dir, store, _) = store_with_alice().await;
        store.add_alias("alice", "a.smith@example.test").await.unwrap();
        for name in ["alice", "ALICE", "alice@example.test", "A.Smith@Example.Test"] {
            let account = store.authenticate(name, "secret").await.unwrap();
            assert_eq!(account.map(|a| a.login.to_string()).as_deref(), Some("alice"), "{name}");
        }
        assert!(store.authenticate("alice", "wrong").await.unwrap().is_none());
        assert!(store.authenticate("nobody", "secret").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn refuses_duplicates_and_bad_names() {
        let (_dir, store, _) = store_with_alice().await;
        let dup = NewUser { login: "Alice".into(), email: Some("other@example.test".into()), display_name: None, password: "x".into() };
        assert!(matches!(store.add_user(dup).await, Err(StoreError::UserExists)));
        let clash = NewUser { login: "bob".into(), email: Some("alice@example.test".into()), display_name: None, password: "x".into() };
        assert!(matches!(store.add_user(clash).await, Err(StoreError::UserExists)));
        let bad = NewUser { login: "bad name".into(), email: None, display_name: None, password: "x".into() };
        assert!(store.add_user(bad).await.is_err());
        let no_address = NewUser { login: "carol".into(), email: None, display_name: None, password: "x".into() };
        assert!(store.add_user(no_address).await.is_err());
    }

    #[tokio::test]
    async fn password_change_quota_and_removal() {
        let (_dir, store, _) = store_with_alice().await;
        store.set_password("alice", "new-secret").await.unwrap();
        assert!(store.authenticate("alice", "secret").await.unwrap().is_none());
        assert!(store.authenticate("alice", "new-secret").await.unwrap().is_some());
        store.set_quota("alice", Some(1000)).await.unwrap();
        let users = store.list_users().await.unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].quota_bytes, Some(1000));
        store.remove_user("alice").await.unwrap();
        assert!(store.list_users().await.unwrap().is_empty());
        assert!(store.authenticate("alice", "new-secret").await.unwrap().is_none());
        assert!(matches!(store.remove_user("alice").await, Err(StoreError::UserNotFound)));
    }
}
