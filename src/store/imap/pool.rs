//! Connections to the IMAP server: a bounded pool per user under a global cap, reuse of
//! logged-in connections, closing them when idle, and a backoff when the server cannot be
//! reached so that a dead server costs one fast failure per request, not a connect storm.
//!
//! A [`Lease`] is one connection lent to one operation; dropping it returns the connection
//! (unless the operation marked it broken or it timed out) or closes it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::session::{Endpoint, ImapError, Session};
use crate::store::{StoreError, StoreResult};

/// Credentials for a connection of a user.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: Arc<str>,
}

/// Pool settings.
#[derive(Clone, Debug)]
pub struct PoolSettings {
    pub per_user: usize,
    pub global: usize,
    pub idle: Duration,
    pub op_timeout: Duration,
    /// Capabilities never used, whatever the server says (compatibility switch).
    pub disabled_caps: Vec<String>,
}

struct Idle {
    session: Session,
    since: Instant,
    global: OwnedSemaphorePermit,
}

struct UserSlot {
    permits: Arc<Semaphore>,
    idle: Vec<Idle>,
}

/// After a failed connect, further connects wait this long (doubling up to the maximum).
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Backoff {
    until: Option<Instant>,
    current: Duration,
}

pub struct Pool {
    endpoint: Endpoint,
    settings: PoolSettings,
    global: Arc<Semaphore>,
    users: Mutex<HashMap<Arc<str>, UserSlot>>,
    backoff: Mutex<Backoff>,
}

/// A connection lent to one operation.
pub struct Lease {
    pool: Arc<Pool>,
    login: Arc<str>,
    session: Option<Session>,
    global: Option<OwnedSemaphorePermit>,
    _user: OwnedSemaphorePermit,
    /// Came from the idle list (it may have gone stale without us noticing).
    pub reused: bool,
}

impl std::ops::Deref for Lease {
    type Target = Session;
    fn deref(&self) -> &Session {
        self.session.as_ref().expect("leased session")
    }
}

impl std::ops::DerefMut for Lease {
    fn deref_mut(&mut self) -> &mut Session {
        self.session.as_mut().expect("leased session")
    }
}

impl Lease {
    /// Never return this connection to the pool (its operation timed out or failed midway).
    pub fn poison(&mut self) {
        if let Some(s) = self.session.as_mut() {
            s.broken = true;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (Some(session), Some(global)) = (self.session.take(), self.global.take()) else { return };
        if session.broken {
            return;
        }
        let mut users = self.pool.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = users.get_mut(&self.login) {
            slot.idle.push(Idle { session, since: Instant::now(), global });
        }
    }
}

pub fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("IMAP server: {e}"))
}

impl Pool {
    pub fn new(endpoint: Endpoint, settings: PoolSettings) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            global: Arc::new(Semaphore::new(settings.global.max(1))),
            endpoint,
            settings,
            users: Mutex::new(HashMap::new()),
            backoff: Mutex::new(Backoff::default()),
        });
        tokio::spawn(reap(Arc::downgrade(&pool)));
        pool
    }

    pub fn settings(&self) -> &PoolSettings {
        &self.settings
    }

    fn user_permits(&self, login: &Arc<str>) -> Arc<Semaphore> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users
            .entry(login.clone())
            .or_insert_with(|| UserSlot { permits: Arc::new(Semaphore::new(self.settings.per_user.max(1))), idle: Vec::new() })
            .permits
            .clone()
    }

    fn take_idle(&self, login: &Arc<str>) -> Option<Idle> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.get_mut(login).and_then(|slot| slot.idle.pop())
    }

    /// Closes the longest-idle connection of any user (to make room under the global cap).
    fn evict_one(&self) -> bool {
        let victim = {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            let oldest = users
                .iter()
                .filter_map(|(login, slot)| slot.idle.first().map(|i| (login.clone(), i.since)))
                .min_by_key(|(_, since)| *since)
                .map(|(login, _)| login);
            oldest.and_then(|login| users.get_mut(&login).map(|slot| slot.idle.remove(0)))
        };
        match victim {
            Some(idle) => {
                close_later(idle.session);
                drop(idle.global);
                true
            }
            None => false,
        }
    }

    async fn global_permit(&self) -> StoreResult<OwnedSemaphorePermit> {
        if let Ok(p) = self.global.clone().try_acquire_owned() {
            return Ok(p);
        }
        self.evict_one();
        match tokio::time::timeout(self.settings.op_timeout, self.global.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(StoreError::Unavailable("too many IMAP connections in use".into())),
        }
    }

    fn check_backoff(&self) -> StoreResult<()> {
        let b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        match b.until {
            Some(until) if until > Instant::now() => {
                Err(StoreError::Unavailable(format!("IMAP server {:?} unreachable; retrying shortly", self.endpoint)))
            }
            _ => Ok(()),
        }
    }

    fn note_connect(&self, ok: bool) {
        let mut b = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        if ok {
            *b = Backoff::default();
        } else {
            b.current = if b.current.is_zero() { BACKOFF_MIN } else { (b.current * 2).min(BACKOFF_MAX) };
            b.until = Some(Instant::now() + b.current);
        }
    }

    /// Opens and logs in a new connection. `Ok(None)`: the server refused the credentials.
    pub async fn open(&self, creds: &Credentials) -> StoreResult<Option<Session>> {
        self.check_backoff()?;
        let connect = async {
            let mut s = Session::connect(&self.endpoint, &self.settings.disabled_caps).await?;
            if s.login(&creds.user, &creds.password).await? { Ok::<_, ImapError>(Some(s)) } else { Ok(None) }
        };
        match tokio::time::timeout(self.settings.op_timeout, connect).await {
            Ok(Ok(s)) => {
                self.note_connect(true);
                Ok(s)
            }
            Ok(Err(e)) => {
                if matches!(e, ImapError::Io(_) | ImapError::Closed(_)) {
                    self.note_connect(false);
                }
                Err(unavailable(e))
            }
            Err(_) => {
                self.note_connect(false);
                Err(StoreError::Unavailable("IMAP server did not answer in time".into()))
            }
        }
    }

    /// Lends a logged-in connection of `login`: an idle one if there is a live one, else a
    /// new one. Waits (bounded) while the user already has the maximum in use.
    pub async fn lease(self: &Arc<Self>, login: &Arc<str>, creds: &Credentials) -> StoreResult<Lease> {
        self.lease_inner(login, creds, true).await.map(|l| l.expect("login cannot be refused when not verifying"))
    }

    /// Opens a fresh connection with a user's own credentials (verifying them); the
    /// connection joins the pool afterwards. `Ok(None)` when they are wrong.
    pub async fn verify(self: &Arc<Self>, login: &Arc<str>, creds: &Credentials) -> StoreResult<Option<Lease>> {
        self.lease_inner(login, creds, false).await
    }

    async fn lease_inner(self: &Arc<Self>, login: &Arc<str>, creds: &Credentials, reuse: bool) -> StoreResult<Option<Lease>> {
        let permits = self.user_permits(login);
        let user = match tokio::time::timeout(self.settings.op_timeout, permits.acquire_owned()).await {
            Ok(Ok(p)) => p,
            _ => return Err(StoreError::Unavailable("too many concurrent IMAP operations for this user".into())),
        };
        if reuse {
            while let Some(mut idle) = self.take_idle(login) {
                if idle.since.elapsed() < self.settings.idle && idle.session.probe().await {
                    return Ok(Some(Lease {
                        pool: self.clone(),
                        login: login.clone(),
                        session: Some(idle.session),
                        global: Some(idle.global),
                        _user: user,
                        reused: true,
                    }));
                }
                close_later(idle.session);
            }
        }
        let global = self.global_permit().await?;
        let Some(session) = self.open(creds).await? else { return Ok(None) };
        Ok(Some(Lease {
            pool: self.clone(),
            login: login.clone(),
            session: Some(session),
            global: Some(global),
            _user: user,
            reused: false,
        }))
    }

    /// A connection outside the per-user pool (a watcher's), counted against the global cap.
    pub async fn dedicated(&self, creds: &Credentials) -> StoreResult<(Session, OwnedSemaphorePermit)> {
        let global = self.global_permit().await?;
        match self.open(creds).await? {
            Some(s) => Ok((s, global)),
            None => Err(StoreError::Unavailable("the IMAP server refused the login".into())),
        }
    }

    /// Connections open right now (pooled idle ones and lent ones, watchers included).
    pub fn open_connections(&self) -> usize {
        self.settings.global.max(1) - self.global.available_permits()
    }

    /// Idle connections per user (tests and metrics).
    pub fn idle_connections(&self, login: &str) -> usize {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users.get(login).map_or(0, |s| s.idle.len())
    }

    fn reap_idle(&self) {
        let expired: Vec<Idle> = {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            let mut out = Vec::new();
            let limit = self.settings.idle;
            users.retain(|_, slot| {
                let (old, keep): (Vec<Idle>, Vec<Idle>) =
                    std::mem::take(&mut slot.idle).into_iter().partition(|i| i.since.elapsed() >= limit);
                out.extend(old);
                slot.idle = keep;
                // Forget users with nothing pooled and nothing in use.
                !slot.idle.is_empty() || slot.permits.available_permits() < self.settings.per_user.max(1)
            });
            out
        };
        for idle in expired {
            close_later(idle.session);
        }
    }

    /// Closes every pooled connection (shutdown).
    pub fn close_idle(&self) {
        let all: Vec<Idle> = {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            users.values_mut().flat_map(|s| std::mem::take(&mut s.idle)).collect()
        };
        for idle in all {
            close_later(idle.session);
        }
    }
}

/// Logs a connection out in the background, bounded in time.
fn close_later(session: Session) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(2), session.logout()).await;
    });
}

async fn reap(pool: Weak<Pool>) {
    let period = match pool.upgrade() {
        Some(p) => (p.settings.idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(30)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        match pool.upgrade() {
            Some(p) => p.reap_idle(),
            None => return,
        }
    }
}
