//! The IMAP backend: pushsync in front of an existing IMAP4rev1 server (Dovecot is the one
//! we test against), implementing [`MailStore`] and [`Mailbox`] with the commands each
//! trait method names.
//!
//! Files and what each owns:
//! - `mod.rs`: [`ImapStore`] (settings, authentication, opening mailboxes, the change feed
//!   entry point, the webhook doorbell) — the only public face of the backend.
//! - [`session`]: one connection: TCP, TLS/STARTTLS, greeting, capabilities, LOGIN or
//!   AUTHENTICATE PLAIN, tagged commands with literals (LITERAL+), response framing; the
//!   grammar itself is parsed by the `imap-proto` crate.
//! - [`wire`]: what we write: quoting, modified UTF-7 names, dates, UID sets, keywords.
//! - [`commands`]: command sequences shared by mailbox and watcher (LIST with SPECIAL-USE and
//!   LIST-STATUS, STATUS, SELECT, UID SEARCH, UID FETCH of states).
//! - [`pool`]: per-user connection pools under a global cap, idle closing, connect backoff.
//! - [`mailbox`]: the [`Mailbox`] trait, one method = one bounded command sequence.
//! - [`ledger`]: attributing changes seen through IMAP to the device that made them.
//! - [`watcher`]: one watcher connection per watched user (NOTIFY, or IDLE plus STATUS
//!   sweeps) turning server-side changes into [`StoreChange`]s.
//!
//! Design notes:
//! - Every operation is bounded by `imap.operation_timeout_secs`; a timed-out or broken
//!   connection is discarded, and a server that cannot be reached yields
//!   [`StoreError::Unavailable`] (the protocol layer answers "server error, retry") at once,
//!   with a short connect backoff, never a hang.
//! - With CONDSTORE/QRESYNC (Dovecot has both) deltas are `CHANGEDSINCE`/`VANISHED`.
//!   Without them, `vanished_since` is `None` (the engine compares UID sets) and MODSEQs are
//!   synthetic: each mailbox handle takes a base larger than any earlier one and gives
//!   message `uid` the MODSEQ `base + uid` (HIGHESTMODSEQ `base + UIDNEXT`), so every
//!   message counts as changed since any mark the device holds. The sync engine compares
//!   each with the device's snapshot, so only real differences are sent: a full UID/FLAGS
//!   scan per sync, which is what a server without CONDSTORE costs. The base is fixed for a
//!   handle's life (one request), so a scan never restarts under the engine's feet.
//! - Push: see [`watcher`] for the change feed and [`ledger`] for how a device's own changes
//!   are recognised. With the Dovecot webhook configured, the watcher stays (it is what
//!   computes exact deltas and attribution); a webhook event only makes it look now instead
//!   of waiting for NOTIFY/IDLE's ~0.5 s batching, and every change is published once,
//!   from one diff against one baseline, whichever of the two noticed it first.

pub mod commands;
pub mod ledger;
pub mod mailbox;
pub mod pool;
pub mod session;
pub mod watcher;
pub mod wire;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use dashmap::DashMap;
use serde::Deserialize;

use self::ledger::Ledger;
use self::pool::{Credentials, Pool, PoolSettings};
use self::session::{Endpoint, ImapError};
use self::watcher::WatcherHandle;
use super::feed::FeedRegistry;
use super::{Account, ChangeFeed, ChangeKind, MailStore, Mailbox, Origin, StoreError, StoreResult};
use crate::config::ImapSettings;

pub use self::commands::store_err;

impl From<ImapError> for StoreError {
    fn from(e: ImapError) -> Self {
        store_err(e)
    }
}

/// Folder names used for roles when the server does not advertise SPECIAL-USE.
#[derive(Debug, Clone)]
pub struct RoleNames {
    pub drafts: String,
    pub sent: String,
    pub trash: String,
    pub junk: String,
    pub archive: String,
}

/// Everything the backend needs from the configuration.
#[derive(Clone)]
pub struct ImapOptions {
    pub endpoint: Endpoint,
    pub pool: PoolSettings,
    /// `(master user, master password)`: pooled and watcher connections log in as
    /// `user*master` (Dovecot's master-user syntax).
    pub master: Option<(String, String)>,
    /// Domain of users who log in without one.
    pub email_domain: String,
    pub roles: RoleNames,
    /// How often the watcher re-arms NOTIFY (or sweeps STATUS without it).
    pub watch_rearm: Duration,
    /// Largest message appended.
    pub max_message_bytes: u64,
    /// Dovecot's push webhook feeds the watchers (shapes how they watch; see `watcher`).
    pub webhook: bool,
}

impl std::fmt::Debug for ImapOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapOptions").field("endpoint", &self.endpoint).field("pool", &self.pool).finish_non_exhaustive()
    }
}

/// Parses `imap://host[:port]` / `imaps://host[:port]`: (host, port, implicit TLS).
pub fn parse_url(url: &str) -> Option<(String, u16, bool)> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("imaps://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("imap://") {
        (false, r)
    } else {
        return None;
    };
    let rest = rest.trim_end_matches('/');
    let default_port = if tls { 993 } else { 143 };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        (host.to_string(), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().ok()?),
            None => (rest.to_string(), default_port),
        }
    };
    (!host.is_empty()).then_some((host, port, tls))
}

/// Client TLS settings: the system's usual web roots plus `ca_file`, or no verification at
/// all when the operator turned it off.
fn tls_config(verify: bool, ca_file: Option<&PathBuf>) -> StoreResult<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Internal(format!("TLS setup: {e}")))?;
    let config = if verify {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| StoreError::Internal(format!("cannot read imap.ca_file {}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| StoreError::Internal(format!("bad certificate in {}: {e}", path.display())))?;
                roots.add(cert).map_err(|e| StoreError::Internal(format!("bad certificate in {}: {e}", path.display())))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider))).with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// `imap.verify_certificates = false`: for test servers with self-signed certificates.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl ImapOptions {
    /// Options for the store URL `url` from the `[imap]` settings.
    pub fn from_settings(url: &str, s: &ImapSettings, max_message_bytes: u64) -> StoreResult<ImapOptions> {
        let (host, port, implicit_tls) = parse_url(url)
            .ok_or_else(|| StoreError::Internal(format!("invalid IMAP store URL {url:?}: use imap://host:port or imaps://host:port")))?;
        let tls = tls_config(s.verify_certificates, s.ca_file.as_ref())?;
        let master = match (&s.master_user, &s.master_password) {
            (Some(u), Some(p)) if !u.is_empty() => Some((u.clone(), p.clone())),
            _ => None,
        };
        Ok(ImapOptions {
            email_domain: s.email_domain.clone().filter(|d| !d.is_empty()).unwrap_or_else(|| host.clone()),
            endpoint: Endpoint { host, port, implicit_tls, tls },
            pool: PoolSettings {
                per_user: s.max_connections_per_user.max(1),
                global: s.max_connections.max(1),
                idle: Duration::from_secs(s.idle_secs.max(1)),
                op_timeout: Duration::from_secs(s.operation_timeout_secs.max(1)),
                disabled_caps: s.disable_extensions.clone(),
            },
            master,
            roles: RoleNames {
                drafts: s.drafts.clone(),
                sent: s.sent.clone(),
                trash: s.trash.clone(),
                junk: s.junk.clone(),
                archive: s.archive.clone(),
            },
            watch_rearm: Duration::from_secs(s.watch_rearm_secs.max(1)),
            max_message_bytes,
            webhook: false,
        })
    }
}

pub(crate) struct Inner {
    pub(crate) pool: Arc<Pool>,
    pub(crate) feed: FeedRegistry,
    pub(crate) ledger: Ledger,
    pub(crate) opts: ImapOptions,
    /// The user name as the user typed it, by canonical login (IMAP servers may be case
    /// sensitive; we key everything by the lower-cased form).
    usernames: DashMap<Arc<str>, String>,
    watchers: Mutex<HashMap<Arc<str>, Weak<WatcherHandle>>>,
    /// The last synthetic MODSEQ base handed out (servers without CONDSTORE).
    synthetic: Mutex<u64>,
}

impl Inner {
    pub(crate) fn op_timeout(&self) -> Duration {
        self.opts.pool.op_timeout
    }

    /// The credentials pooled and watcher connections of this account log in with.
    pub(crate) fn credentials(&self, account: &Account) -> StoreResult<Credentials> {
        let user = self.usernames.get(&account.login).map(|u| u.clone()).unwrap_or_else(|| account.login.to_string());
        match (&self.opts.master, &account.secret) {
            (Some((master, password)), _) => Ok(Credentials { user: format!("{user}*{master}"), password: Arc::from(password.as_str()) }),
            (None, Some(secret)) => Ok(Credentials { user, password: secret.clone() }),
            (None, None) => Err(StoreError::Unavailable("no credentials to log in to the IMAP server with".into())),
        }
    }

    /// A synthetic MODSEQ base larger than every earlier one (see the module notes).
    pub(crate) fn synthetic_base(&self) -> u64 {
        let mut last = self.synthetic.lock().unwrap_or_else(|p| p.into_inner());
        let now = (chrono::Utc::now().timestamp().max(1) as u64) << 32;
        *last = now.max(*last + (1 << 32));
        *last
    }
}

/// The IMAP store (cheap to clone).
#[derive(Clone)]
pub struct ImapStore {
    inner: Arc<Inner>,
}

/// One event from Dovecot's push_notification Lua script (`contrib/dovecot/pushsync-push.lua`).
#[derive(Debug, Clone, Deserialize)]
pub struct PushEvent {
    /// `MessageNew`, `MessageAppend`, `MessageExpunge`, `FlagsSet`, `FlagsClear`,
    /// `MessageRead`, `MessageTrash`, `MailboxCreate`, `MailboxDelete`, `MailboxRename`,
    /// `MailboxSubscribe`, `MailboxUnsubscribe`.
    pub event: String,
    #[serde(default)]
    pub mailbox: String,
    #[serde(default)]
    pub mailbox_old: Option<String>,
}

impl PushEvent {
    /// The change kind the event stands for (`None`: nothing a device syncs).
    pub fn kind(&self) -> Option<ChangeKind> {
        match self.event.as_str() {
            "MessageNew" | "MessageAppend" => Some(ChangeKind::MessageNew),
            "MessageExpunge" => Some(ChangeKind::MessageExpunged),
            "FlagsSet" | "FlagsClear" | "MessageRead" | "MessageTrash" => Some(ChangeKind::MessageFlags),
            "MailboxCreate" | "MailboxDelete" | "MailboxRename" => Some(ChangeKind::Hierarchy),
            _ => None,
        }
    }
}

/// One POST of the Lua script: the events of one committed transaction of one user.
#[derive(Debug, Clone, Deserialize)]
pub struct PushBatch {
    pub user: String,
    /// The Dovecot service that made the change (`lmtp`, `imap`, ...).
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub events: Vec<PushEvent>,
}

impl ImapStore {
    /// A store for `options`; connects lazily.
    pub fn new(opts: ImapOptions) -> ImapStore {
        let pool = Pool::new(opts.endpoint.clone(), opts.pool.clone());
        ImapStore {
            inner: Arc::new(Inner {
                pool,
                feed: FeedRegistry::new(),
                ledger: Ledger::default(),
                opts,
                usernames: DashMap::new(),
                watchers: Mutex::new(HashMap::new()),
                synthetic: Mutex::new(0),
            }),
        }
    }

    /// A store for the URL `url` (`imap://` or `imaps://`) and the `[imap]` settings.
    pub fn from_config(url: &str, settings: &ImapSettings, max_message_bytes: u64) -> StoreResult<ImapStore> {
        Ok(ImapStore::new(ImapOptions::from_settings(url, settings, max_message_bytes)?))
    }

    /// The same, for a server whose push webhook posts to us (`webhook.listen` is set).
    pub fn from_config_with_webhook(url: &str, settings: &ImapSettings, max_message_bytes: u64, webhook: bool) -> StoreResult<ImapStore> {
        let mut opts = ImapOptions::from_settings(url, settings, max_message_bytes)?;
        opts.webhook = webhook;
        Ok(ImapStore::new(opts))
    }

    pub fn options(&self) -> &ImapOptions {
        &self.inner.opts
    }

    /// Tells the watchers of the batch's user that something changed (the webhook). Returns
    /// how many watchers were told: none when nobody of that name is waiting for pushes.
    /// Never blocks.
    pub fn ring(&self, batch: &PushBatch) -> usize {
        let user = batch.user.trim().to_lowercase();
        let local = user.split('@').next().unwrap_or("").to_string();
        let handles: Vec<Arc<WatcherHandle>> = {
            let watchers = self.inner.watchers.lock().unwrap_or_else(|p| p.into_inner());
            watchers
                .iter()
                // Dovecot may name the user differently from the login the phone used
                // (`auth_username_format = %Ln`): ring the local part too. A wrong ring only
                // costs a STATUS: watchers publish what their diff shows, not what they hear.
                .filter(|(login, _)| &***login == user.as_str() || login.split('@').next() == Some(local.as_str()))
                .filter_map(|(_, w)| w.upgrade())
                .collect()
        };
        for h in &handles {
            h.ring(batch);
        }
        handles.len()
    }

    /// Users with a live watcher (tests and metrics).
    pub fn watched_users(&self) -> usize {
        let watchers = self.inner.watchers.lock().unwrap_or_else(|p| p.into_inner());
        watchers.values().filter(|w| w.strong_count() > 0).count()
    }

    /// Users whose watcher is up and has its baseline (tests and metrics).
    pub fn ready_watchers(&self) -> usize {
        let watchers = self.inner.watchers.lock().unwrap_or_else(|p| p.into_inner());
        watchers.values().filter_map(Weak::upgrade).filter(|w| w.is_ready()).count()
    }

    /// Connections to the IMAP server open now.
    pub fn open_connections(&self) -> usize {
        self.inner.pool.open_connections()
    }

    /// Ends every change feed and closes pooled connections (graceful shutdown).
    pub fn close(&self) {
        self.inner.feed.close_all();
        let handles: Vec<Arc<WatcherHandle>> = {
            let mut watchers = self.inner.watchers.lock().unwrap_or_else(|p| p.into_inner());
            watchers.drain().filter_map(|(_, w)| w.upgrade()).collect()
        };
        for h in handles {
            h.stop();
        }
        self.inner.pool.close_idle();
    }

    fn account_for(&self, username: &str) -> Account {
        let login: Arc<str> = Arc::from(username.to_lowercase());
        let email = if login.contains('@') { login.to_string() } else { format!("{login}@{}", self.inner.opts.email_domain) };
        Account { login, email: email.clone(), display_name: None, addresses: vec![email], secret: None }
    }
}

#[async_trait]
impl MailStore for ImapStore {
    async fn authenticate(&self, username: &str, password: &str) -> StoreResult<Option<Account>> {
        let username = username.trim();
        if username.is_empty() || password.is_empty() || username.contains(['\r', '\n', '\0']) {
            return Ok(None);
        }
        let mut account = self.account_for(username);
        let creds = Credentials { user: username.to_string(), password: Arc::from(password) };
        match self.inner.pool.verify(&account.login, &creds).await? {
            // The logged-in connection goes back to the pool for the request that follows.
            Some(lease) => drop(lease),
            None => return Ok(None),
        }
        self.inner.usernames.insert(account.login.clone(), username.to_string());
        account.secret = Some(Arc::from(password));
        Ok(Some(account))
    }

    async fn mailbox(&self, account: &Account, origin: Origin) -> StoreResult<Arc<dyn Mailbox>> {
        let creds = self.inner.credentials(account)?;
        Ok(Arc::new(mailbox::ImapMailbox::new(self.inner.clone(), account.clone(), creds, origin)))
    }

    async fn watch(&self, account: &Account) -> StoreResult<ChangeFeed> {
        // Subscribe first: whatever the watcher publishes once it is ready reaches us.
        let rx = self.inner.feed.subscribe(&account.login);
        let handle = watcher::watcher_for(&self.inner, account).await?;
        Ok(ChangeFeed::new(rx, Some(Box::new(handle))))
    }

    fn kind(&self) -> &'static str {
        "imap"
    }
}

impl Inner {
    pub(crate) fn watchers(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Weak<WatcherHandle>>> {
        self.watchers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls() {
        assert_eq!(parse_url("imap://127.0.0.1:1143"), Some(("127.0.0.1".into(), 1143, false)));
        assert_eq!(parse_url("imaps://mail.example.test"), Some(("mail.example.test".into(), 993, true)));
        assert_eq!(parse_url("imap://[::1]:143/"), Some(("::1".into(), 143, false)));
        assert_eq!(parse_url("imap://host"), Some(("host".into(), 143, false)));
        assert_eq!(parse_url("http://host"), None);
        assert_eq!(parse_url("imap://host:x"), None);
        assert_eq!(parse_url("imap://"), None);
    }

    #[test]
    fn push_events_map_to_change_kinds() {
        let batch: PushBatch = serde_json::from_str(
            r#"{"user":"alice","service":"lmtp","events":[{"event":"MessageNew","mailbox":"INBOX","uid":7,"uidvalidity":1700000000,"flags":[],"keywords":[]},{"event":"MailboxRename","mailbox":"B","mailbox_old":"A"},{"event":"MailboxSubscribe","mailbox":"B"}]}"#,
        )
        .unwrap();
        let kinds: Vec<_> = batch.events.iter().map(PushEvent::kind).collect();
        assert_eq!(kinds, vec![Some(ChangeKind::MessageNew), Some(ChangeKind::Hierarchy), None]);
        assert_eq!(batch.events[1].mailbox_old.as_deref(), Some("A"));
    }
}
