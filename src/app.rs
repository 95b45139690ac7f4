//! The shared state of a running server: configuration, the mail store, device state, the
//! sync engine, the push hub, the credential cache and the metrics.
//!
//! Built once at start-up and shared by every connection (`Arc<App>`); it owns nothing that
//! belongs to one request. Listeners live in [`crate::server`], protocol handling in
//! [`crate::eas`].

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::admin::store::{AdminStore, SqliteAdmin};
use crate::admin::usage::UsageRecorder;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::push::PushHub;
use crate::server::auth::AuthCache;
use crate::state::sqlite::SqliteState;
use crate::state::{SharedState, StateError};
use crate::store::embedded::{EmbeddedSettings, EmbeddedStore};
use crate::store::imap::ImapStore;
use crate::store::{SharedStore, StoreError};
use crate::sync::SyncEngine;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot open the mail store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot open the device state: {0}")]
    State(#[from] StateError),
    #[error("cannot use the data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("unsupported store {0:?}: use `embedded`, `imap://host:port` or `imaps://host:port`")]
    UnsupportedStore(String),
}

pub struct App {
    pub config: Config,
    pub store: SharedStore,
    /// The embedded store when it is the backend (account administration, local delivery).
    pub embedded: Option<EmbeddedStore>,
    /// The IMAP store when it is the backend (the push webhook rings its watchers).
    pub imap: Option<ImapStore>,
    pub state: SharedState,
    /// Administrative decisions: entitlement, policies, rules, audit, usage.
    pub admin: Arc<dyn AdminStore>,
    pub usage: UsageRecorder,
    pub engine: SyncEngine,
    pub hub: Arc<PushHub>,
    pub auth: AuthCache,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server begins to shut down.
    pub shutdown: CancellationToken,
}

impl App {
    /// Opens the data directory, the store and the state store.
    pub async fn open(config: Config) -> Result<Arc<App>, AppError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| AppError::DataDir { path: config.data_dir.display().to_string(), source })?;
        let metrics = Arc::new(Metrics::new());
        let shutdown = CancellationToken::new();
        let (store, embedded, imap): (SharedStore, Option<EmbeddedStore>, Option<ImapStore>) = if config.store == "embedded" {
            let settings = EmbeddedSettings {
                max_message_bytes: config.mail.max_message_bytes,
                retention: Duration::from_secs(config.mail.retention_days * 86_400),
            };
            let e = EmbeddedStore::open(&config.data_dir, settings)?;
            (Arc::new(e.clone()), Some(e), None)
        } else if config.store.starts_with("imap://") || config.store.starts_with("imaps://") {
            let webhook = config.webhook.listen.is_some();
            let i = ImapStore::from_config_with_webhook(&config.store, &config.imap, config.mail.max_message_bytes, webhook)?;
            (Arc::new(i.clone()), None, Some(i))
        } else {
            return Err(AppError::UnsupportedStore(config.store.clone()));
        };
        let sqlite_state = SqliteState::open(&config.data_dir)?;
        let admin: Arc<dyn AdminStore> = Arc::new(SqliteAdmin::new(sqlite_state.db().clone()));
        let state: SharedState = Arc::new(sqlite_state);
        let engine = SyncEngine::new(state.clone());
        let hub = PushHub::new(store.clone(), metrics.clone(), Duration::from_secs(config.ping.hub_grace_secs), shutdown.clone());
        let auth = AuthCache::new(Duration::from_secs(config.auth.cache_ttl_secs));
        let usage = UsageRecorder::default();
        Ok(Arc::new(App { config, store, embedded, imap, state, admin, usage, engine, hub, auth, metrics, shutdown }))
    }
}
