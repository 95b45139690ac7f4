//! Server configuration: every option has a default, may be set in the TOML file given with
//! `--config`, and the command-line flags override the file. `docs/CONFIGURATION.md` lists
//! every key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid configuration in {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Value(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the store, device state, certificate and runtime files live.
    pub data_dir: PathBuf,
    /// The ActiveSync listener.
    pub listen: SocketAddr,
    /// The admin API and metrics listener (loopback by default).
    pub admin_listen: SocketAddr,
    /// `embedded`, or `imap://host:port` / `imaps://host:port` for an external IMAP server.
    pub store: String,
    /// Serve plain HTTP (behind a TLS-terminating proxy) instead of HTTPS.
    pub plain_http: bool,
    /// PEM certificate chain and private key; a self-signed pair is generated when absent.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// LMTP delivery listener of the embedded store (off when absent).
    pub lmtp_listen: Option<SocketAddr>,
    pub limits: LimitSettings,
    pub sync: SyncSettings,
    pub ping: PingSettings,
    pub auth: AuthSettings,
    pub mail: MailSettings,
    pub access: AccessSettings,
    pub imap: ImapSettings,
    pub smtp: Option<SmtpSettings>,
    pub webhook: WebhookSettings,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./pushsync-data"),
            listen: ([0, 0, 0, 0], 8443).into(),
            admin_listen: ([127, 0, 0, 1], 8444).into(),
            store: "embedded".into(),
            plain_http: false,
            tls_cert: None,
            tls_key: None,
            lmtp_listen: None,
            limits: LimitSettings::default(),
            sync: SyncSettings::default(),
            ping: PingSettings::default(),
            auth: AuthSettings::default(),
            mail: MailSettings::default(),
            access: AccessSettings::default(),
            imap: ImapSettings::default(),
            smtp: None,
            webhook: WebhookSettings::default(),
        }
    }
}

/// Bounds on every input path.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitSettings {
    /// Largest request body accepted (413 beyond it).
    pub max_body_bytes: usize,
    /// Time allowed for a request's headers, and for an idle keep-alive connection (HTTP/1.1,
    /// or HTTP/2 with no request open) to start its next request.
    pub header_timeout_secs: u64,
    /// Time allowed to receive a request body.
    pub body_timeout_secs: u64,
    /// Time allowed for a TLS handshake.
    pub tls_handshake_timeout_secs: u64,
    /// Most simultaneous client connections (the process has at most 20,000 open files).
    pub max_connections: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_body_bytes: 64 * 1024 * 1024,
            header_timeout_secs: 60,
            body_timeout_secs: 120,
            tls_handshake_timeout_secs: 10,
            max_connections: 19_000,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncSettings {
    /// WindowSize used when a device sends none.
    pub default_window: usize,
    /// Largest WindowSize honoured (at least 512).
    pub max_window: usize,
    /// Most collections in one Sync request.
    pub max_collections: usize,
    /// Most client changes (Add/Change/Delete/Fetch) in one Sync request.
    pub max_client_changes: usize,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings { default_window: 100, max_window: 512, max_collections: 100, max_client_changes: 1000 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PingSettings {
    /// Shortest and longest HeartbeatInterval accepted, in seconds (Ping and long-poll Sync).
    pub min_heartbeat_secs: u32,
    pub max_heartbeat_secs: u32,
    /// Most folders one Ping may watch.
    pub max_folders: usize,
    /// How long a user's store subscription outlives their last waiting device.
    pub hub_grace_secs: u64,
}

impl Default for PingSettings {
    fn default() -> Self {
        PingSettings { min_heartbeat_secs: 60, max_heartbeat_secs: 3540, max_folders: 300, hub_grace_secs: 30 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// How long a verified password is trusted without asking the store again. Longer than
    /// a Ping heartbeat, so a waiting phone is not re-verified on every round; a password
    /// changed through pushsync is forgotten at once, one changed in an external store after
    /// at most this long.
    pub cache_ttl_secs: u64,
    /// Realm announced in `WWW-Authenticate`.
    pub realm: String,
    /// A wrong password is answered only after this long, to slow down guessing.
    pub failure_delay_ms: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings { cache_ttl_secs: 3600, realm: "pushsync".into(), failure_delay_ms: 1000 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    /// Largest message stored or sent.
    pub max_message_bytes: u64,
    /// Days an expunged message stays recoverable (embedded store).
    pub retention_days: u64,
}

impl Default for MailSettings {
    fn default() -> Self {
        MailSettings { max_message_bytes: 50 * 1024 * 1024, retention_days: 14 }
    }
}

/// Whether a user not listed by the administrator may use Mobile Sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultSyncAccess {
    Enabled,
    Disabled,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessSettings {
    /// Mobile Sync for users the administrator has not listed (a paid add-on: disabled).
    pub default_sync: DefaultSyncAccess,
    /// Access level of a device seen for the first time: allowed, blocked or quarantined.
    pub default_device_access: String,
}

impl Default for AccessSettings {
    fn default() -> Self {
        AccessSettings { default_sync: DefaultSyncAccess::Disabled, default_device_access: "allowed".into() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImapSettings {
    /// Verify the IMAP server's certificate (imaps:// and STARTTLS).
    pub verify_certificates: bool,
    /// Extra PEM CA bundle to trust.
    pub ca_file: Option<PathBuf>,
    /// Most pooled connections per user, and in total.
    pub max_connections_per_user: usize,
    pub max_connections: usize,
    /// Pooled connections idle longer than this are closed.
    pub idle_secs: u64,
    /// Log in as `user*master` with this master user and password, when set.
    pub master_user: Option<String>,
    pub master_password: Option<String>,
    /// Interval of the STATUS sweep for watched folders when NOTIFY is unavailable, and of
    /// re-arming NOTIFY (Dovecot 2.3's watch goes stale).
    pub watch_rearm_secs: u64,
    /// Special-folder names to use when the server does not advertise SPECIAL-USE.
    pub drafts: String,
    pub sent: String,
    pub trash: String,
    pub junk: String,
    pub archive: String,
    /// Time any one IMAP operation may take before the request gets "server error, retry"
    /// and the connection is discarded.
    pub operation_timeout_secs: u64,
    /// Domain appended to logins without one to form the user's email address (default:
    /// the IMAP server's host name).
    pub email_domain: Option<String>,
    /// IMAP extensions never to use even when the server offers them (e.g. `["NOTIFY"]`
    /// to watch with IDLE, `["CONDSTORE", "QRESYNC"]` to sync by UID/FLAGS scans): a
    /// compatibility switch for servers whose implementation is broken.
    pub disable_extensions: Vec<String>,
}

impl Default for ImapSettings {
    fn default() -> Self {
        ImapSettings {
            verify_certificates: true,
            ca_file: None,
            max_connections_per_user: 4,
            max_connections: 2000,
            idle_secs: 300,
            master_user: None,
            master_password: None,
            watch_rearm_secs: 25,
            drafts: "Drafts".into(),
            sent: "Sent".into(),
            trash: "Trash".into(),
            junk: "Junk".into(),
            archive: "Archive".into(),
            operation_timeout_secs: 30,
            email_domain: None,
            disable_extensions: Vec::new(),
        }
    }
}

/// Outgoing mail submission (SendMail/SmartReply/SmartForward).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `starttls` (default), `tls` (implicit) or `none` (loopback relays only).
    #[serde(default = "default_smtp_security")]
    pub security: String,
    /// Authenticate as the sending user with their device password (IMAP deployments), or
    /// with a fixed account when `username` is set.
    pub username: Option<String>,
    pub password: Option<String>,
    #[serde(default)]
    pub pass_through_credentials: bool,
}

fn default_smtp_port() -> u16 {
    587
}

fn default_smtp_security() -> String {
    "starttls".into()
}

/// The push webhook a mail server (Dovecot's push_notification Lua script) posts events to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSettings {
    /// Where to listen (off when absent); loopback or a private network.
    pub listen: Option<SocketAddr>,
    /// Shared secret the poster sends as a bearer token.
    pub secret: Option<String>,
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Invalid { path: path.into(), message: e.to_string() })
    }

    /// Checks values that types alone do not constrain.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.sync.max_window < 512 {
            return Err(ConfigError::Value("sync.max_window must be at least 512".into()));
        }
        if self.sync.default_window == 0 || self.sync.default_window > self.sync.max_window {
            return Err(ConfigError::Value("sync.default_window must be between 1 and sync.max_window".into()));
        }
        if self.ping.min_heartbeat_secs == 0 || self.ping.min_heartbeat_secs > self.ping.max_heartbeat_secs {
            return Err(ConfigError::Value("ping.min_heartbeat_secs must be positive and at most ping.max_heartbeat_secs".into()));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Value("tls_cert and tls_key go together".into()));
        }
        if crate::state::AccessState::parse(&self.access.default_device_access).is_none() {
            return Err(ConfigError::Value("access.default_device_access must be allowed, blocked or quarantined".into()));
        }
        if self.limits.max_connections == 0 || self.limits.max_body_bytes == 0 {
            return Err(ConfigError::Value("limits must be positive".into()));
        }
        if self.webhook.listen.is_some() && self.webhook.secret.as_deref().is_none_or(str::is_empty) {
            return Err(ConfigError::Value("webhook.listen needs webhook.secret".into()));
        }
        Ok(())
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.header_timeout_secs)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.limits.body_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_round_trip_through_toml() {
        let c = Config::default();
        c.validate().unwrap();
        let text = toml::to_string(&c).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back.listen, c.listen);
        assert_eq!(back.admin_listen.ip().to_string(), "127.0.0.1");
    }

    /// docs/CONFIGURATION.md shows every key: its example (with the commented keys switched
    /// on) must parse, and every key of the configuration must appear in it.
    #[test]
    fn the_configuration_document_lists_every_key() {
        let doc = include_str!("../docs/CONFIGURATION.md");
        let block = doc.split("```toml").nth(1).and_then(|b| b.split("```").next()).expect("a toml block");
        let uncommented: String = block
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.starts_with('[')
                        || rest.split_once(" = ").is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) =>
                {
                    rest.to_string()
                }
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let parsed: Config = toml::from_str(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        parsed.validate().unwrap();
        let full = Config { smtp: parsed.smtp.clone(), ..Default::default() };
        let all = toml::to_string(&full).unwrap();
        for line in all.lines() {
            if let Some((key, _)) = line.split_once(" = ") {
                assert!(block.contains(&format!("{key} =")), "docs/CONFIGURATION.md does not mention {key}");
            }
        }
    }

    #[test]
    fn partial_files_keep_defaults_and_unknown_keys_are_refused() {
        let c: Config = toml::from_str("plain_http = true\n[sync]\nmax_window = 1000\n").unwrap();
        assert!(c.plain_http);
        assert_eq!(c.sync.max_window, 1000);
        assert_eq!(c.sync.default_window, 100);
        assert!(toml::from_str::<Config>("no_such_key = 1\n").is_err());
        let small: Config = toml::from_str("[sync]\nmax_window = 100\n").unwrap();
        assert!(small.validate().is_err());
    }
}
