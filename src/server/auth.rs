//! HTTP Basic authentication with a cache of verified credentials.
//!
//! Verifying a password costs an argon2 hash (embedded store) or an IMAP login (external
//! store); a phone sends its password with every request, and a Ping storm must not turn
//! into a hashing storm. A verified (user, password) pair is therefore remembered for a
//! configurable time, keyed by a salted SHA-256 of the password that never leaves memory.
//! Passwords are never logged.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use dashmap::DashMap;
use sha2::{Digest, Sha256};

use crate::locks::{KeyGuard, KeyedLocks};
use crate::store::Account;

/// Credentials from an `Authorization: Basic` header.
pub struct BasicCredentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// Parses `Basic base64(user:password)`. A `DOMAIN\user` name keeps only `user`, as phones
/// offer a domain field that single-domain servers ignore.
pub fn parse_basic(header: &str) -> Option<BasicCredentials> {
    let (scheme, value) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = BASE64.decode(value.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    let user = user.rsplit_once('\\').map_or(user, |(_, u)| u).trim();
    if user.is_empty() || user.len() > 256 || password.len() > 1024 {
        return None;
    }
    Some(BasicCredentials { username: user.to_string(), password: password.to_string() })
}

/// Most cached credentials; beyond it new entries are not cached (expired ones are swept).
const MAX_ENTRIES: usize = 200_000;

struct Entry {
    digest: [u8; 32],
    account: Account,
    expires: Instant,
}

pub struct AuthCache {
    entries: DashMap<String, Entry>,
    ttl: Duration,
    key: [u8; 32],
    /// One store check per user name at a time: a phone's parallel requests (or several
    /// phones of one user) wait for the first check instead of each hashing the password.
    checking: KeyedLocks<String>,
}

impl AuthCache {
    pub fn new(ttl: Duration) -> Self {
        AuthCache { entries: DashMap::new(), ttl, key: rand::random(), checking: KeyedLocks::default() }
    }

    /// Serialises store checks of one user name (see `checking`).
    pub async fn check_lock(&self, username: &str) -> KeyGuard<'_, String> {
        self.checking.lock(username.to_ascii_lowercase()).await
    }

    fn digest(&self, username: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(username.as_bytes());
        h.update([0]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// The account if these credentials were verified recently.
    pub fn check(&self, username: &str, password: &str) -> Option<Account> {
        let name = username.to_ascii_lowercase();
        let entry = self.entries.get(&name)?;
        if entry.expires < Instant::now() {
            drop(entry);
            self.entries.remove_if(&name, |_, e| e.expires < Instant::now());
            return None;
        }
        // Constant-time comparison: the digest is secret-derived.
        let d = self.digest(&name, password);
        let equal = d.iter().zip(entry.digest.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        equal.then(|| entry.account.clone())
    }

    /// Remembers credentials the store just verified.
    pub fn remember(&self, username: &str, password: &str, account: &Account) {
        if self.ttl.is_zero() {
            return;
        }
        if self.entries.len() >= MAX_ENTRIES {
            let now = Instant::now();
            self.entries.retain(|_, e| e.expires >= now);
            if self.entries.len() >= MAX_ENTRIES {
                return;
            }
        }
        let name = username.to_ascii_lowercase();
        let digest = self.digest(&name, password);
        self.entries.insert(name, Entry { digest, account: account.clone(), expires: Instant::now() + self.ttl });
    }

    /// Forgets every cached credential of a user (password changed, user removed).
    pub fn forget_user(&self, login: &str) {
        self.entries.retain(|_, e| &*e.account.login != login);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn account() -> Account {
        Account { login: Arc::from("alice"), email: "alice@example.test".into(), display_name: None, addresses: vec![], secret: None }
    }

    #[test]
    fn parses_basic_headers() {
        let h = format!("Basic {}", BASE64.encode("alice@example.test:p:w"));
        let c = parse_basic(&h).unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("alice@example.test", "p:w"));
        let h = format!("basic {}", BASE64.encode("CORP\\alice:pw"));
        assert_eq!(parse_basic(&h).unwrap().username, "alice");
        assert!(parse_basic("Bearer abc").is_none());
        assert!(parse_basic("Basic !!!").is_none());
        assert!(parse_basic(&format!("Basic {}", BASE64.encode("nocolon"))).is_none());
        assert!(parse_basic(&format!("Basic {}", BASE64.encode(":pw"))).is_none());
        assert!(!format!("{c:?}").contains("p:w"), "Debug must not show the password");
    }

    #[test]
    fn caches_only_the_verified_password() {
        let cache = AuthCache::new(Duration::from_secs(60));
        assert!(cache.check("alice", "pw").is_none());
        cache.remember("Alice", "pw", &account());
        assert!(cache.check("alice", "pw").is_some());
        assert!(cache.check("ALICE", "pw").is_some());
        assert!(cache.check("alice", "wrong").is_none());
        cache.forget_user("alice");
        assert!(cache.check("alice", "pw").is_none());
    }

    #[test]
    fn entries_expire() {
        let cache = AuthCache::new(Duration::from_millis(1));
        cache.remember("alice", "pw", &account());
        std::thread::sleep(Duration::from_millis(5));
        assert!(cache.check("alice", "pw").is_none());
    }
}
