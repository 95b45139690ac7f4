//! The embedded mail store: a durable IMAP-model store in the data directory.
//!
//! Owns accounts (argon2 password hashes, addresses, quotas), folders and messages in one
//! SQLite database (`store.db`, WAL, `synchronous=FULL`): a message is acknowledged only after
//! the transaction holding its bytes, its UID and its folder's new UIDNEXT/HIGHESTMODSEQ has
//! reached the disk, so a crash can neither lose it nor reuse its UID. Expunged messages are
//! retained for a configurable period and can be restored. Every commit is published on the
//! in-process change feed before the call returns. It must not know about ActiveSync.

mod accounts;
mod delivery;
mod mailbox;
mod password;
mod retention;
mod schema;
mod text;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::feed::FeedRegistry;
use super::{Account, ChangeFeed, ChangeKind, FolderId, MailStore, Mailbox, Origin, StoreChange, StoreError, StoreResult};
use crate::sqlite::{Db, DbError};

pub use accounts::{NewUser, UserSummary};
pub use delivery::Delivered;
pub use mailbox::EmbeddedMailbox;
pub use retention::RestoreReport;

/// Settings of the embedded store.
#[derive(Debug, Clone)]
pub struct EmbeddedSettings {
    /// Largest message accepted, in bytes.
    pub max_message_bytes: u64,
    /// How long expunged messages stay recoverable.
    pub retention: std::time::Duration,
}

impl Default for EmbeddedSettings {
    fn default() -> Self {
        EmbeddedSettings { max_message_bytes: 50 * 1024 * 1024, retention: std::time::Duration::from_secs(14 * 86_400) }
    }
}

/// A cheap-to-clone handle on the embedded store.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) feed: FeedRegistry,
    pub(crate) settings: EmbeddedSettings,
    passwords: password::PasswordWorkers,
    decoy_hash: tokio::sync::OnceCell<String>,
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        StoreError::Internal(e.to_string())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Internal(e.to_string())
    }
}

/// The file holding the store inside the data directory.
pub const STORE_FILE: &str = "store.db";

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path, settings: EmbeddedSettings) -> StoreResult<EmbeddedStore> {
        let db = Db::open(&data_dir.join(STORE_FILE), schema::MIGRATIONS)?;
        let passwords = password::PasswordWorkers::start();
        Ok(EmbeddedStore {
            inner: Arc::new(Inner { db, feed: FeedRegistry::new(), settings, passwords, decoy_hash: tokio::sync::OnceCell::new() }),
        })
    }

    pub fn settings(&self) -> &EmbeddedSettings {
        &self.inner.settings
    }

    /// Copies the store into `dest` (a file path), consistent while the server runs.
    pub async fn backup_to(&self, dest: std::path::PathBuf) -> StoreResult<()> {
        Ok(self.inner.db.backup_to(dest).await?)
    }

    /// Ends every change feed (graceful shutdown).
    pub fn close_feeds(&self) {
        self.inner.feed.close_all();
    }
}

impl Inner {
    pub(crate) fn publish(&self, login: &str, folder: i64, kind: ChangeKind, origin: &Origin) {
        self.feed.publish(
            login,
            StoreChange { folder: FolderId(folder.to_string()), kind, origin: origin.clone(), committed_at: Instant::now() },
        );
    }
}

#[async_trait]
impl MailStore for EmbeddedStore {
    async fn authenticate(&self, username: &str, password: &str) -> StoreResult<Option<Account>> {
        self.verify_password(username, password).await
    }

    async fn mailbox(&self, account: &Account, origin: Origin) -> StoreResult<Arc<dyn Mailbox>> {
        let id = self.account_id(&account.login).await?.ok_or(StoreError::UserNotFound)?;
        Ok(Arc::new(EmbeddedMailbox::new(self.inner.clone(), id, account.login.clone(), origin)))
    }

    async fn watch(&self, account: &Account) -> StoreResult<ChangeFeed> {
        Ok(ChangeFeed::new(self.inner.feed.subscribe(&account.login), None))
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A store in a fresh temporary directory, with user `alice` (password `secret`).
    pub async fn store_with_alice() -> (tempfile::TempDir, EmbeddedStore, Account) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path(), EmbeddedSettings::default()).expect("open store");
        store
            .add_user(NewUser {
                login: "alice".into(),
                email: Some("alice@example.test".into()),
                display_name: Some("Alice".into()),
                password: "secret".into(),
            })
            .await
            .expect("add alice");
        let account = store.authenticate("alice", "secret").await.expect("auth").expect("alice exists");
        (dir, store, account)
    }
}
