//! What administrators decide, kept durably: Mobile Sync entitlement per user, named device
//! policies and their assignment, device access rules, the append-only audit log and the
//! usage counters billing reads.
//!
//! Lives in the device-state database (`state.db`, its own tables) behind [`AdminStore`].
//! Answers on the request path (entitlement, the user's policy, rules) come from memory;
//! every change writes through.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use dashmap::DashMap;
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::policy::DevicePolicy;
use crate::sqlite::Db;
use crate::state::{AccessState, StateError, StateResult};

/// Migration of the admin tables, applied as part of the state database's schema.
pub const MIGRATION: &str = r#"
CREATE TABLE sync_access (
    login      TEXT PRIMARY KEY,
    enabled    INTEGER NOT NULL,
    changed_by TEXT NOT NULL,
    changed_at INTEGER NOT NULL
);
-- Every entitlement change, for billing by day.
CREATE TABLE sync_access_events (
    id      INTEGER PRIMARY KEY,
    login   TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX sync_access_events_by_time ON sync_access_events(at);

CREATE TABLE policies (
    name       TEXT PRIMARY KEY,
    settings   TEXT NOT NULL,
    is_default INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
);
CREATE TABLE user_policies (
    login  TEXT PRIMARY KEY,
    policy TEXT NOT NULL REFERENCES policies(name) ON DELETE CASCADE
);

CREATE TABLE access_rules (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,     -- device_type, model, user
    pattern    TEXT NOT NULL,
    access     TEXT NOT NULL,     -- allowed, blocked, quarantined
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE audit_log (
    id     INTEGER PRIMARY KEY,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT ''
);
-- The log is append-only: the database refuses to change or remove entries.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;

CREATE TABLE usage_daily (
    day    TEXT NOT NULL,            -- YYYY-MM-DD (UTC)
    login  TEXT NOT NULL,
    syncs  INTEGER NOT NULL DEFAULT 0,
    pushes INTEGER NOT NULL DEFAULT 0,
    devices TEXT NOT NULL DEFAULT '', -- space-separated device ids active that day
    PRIMARY KEY (day, login)
) WITHOUT ROWID;
"#;

/// The built-in policy's name (permissive; used until an administrator sets a default).
pub const BUILTIN_POLICY: &str = "default";

/// A user's entitlement as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncAccess {
    pub login: String,
    pub enabled: bool,
    pub changed_by: String,
    pub changed_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedPolicy {
    pub name: String,
    pub is_default: bool,
    pub settings: DevicePolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    DeviceType,
    Model,
    /// Exempts (or restricts) one user's devices.
    User,
}

impl RuleKind {
    fn as_str(self) -> &'static str {
        match self {
            RuleKind::DeviceType => "device_type",
            RuleKind::Model => "model",
            RuleKind::User => "user",
        }
    }

    fn parse(s: &str) -> Option<RuleKind> {
        match s {
            "device_type" => Some(RuleKind::DeviceType),
            "model" => Some(RuleKind::Model),
            "user" => Some(RuleKind::User),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessRule {
    pub id: i64,
    pub kind: RuleKind,
    /// Matched case-insensitively; a trailing `*` matches any suffix.
    pub pattern: String,
    pub access: AccessState,
    pub created_by: String,
    pub created_at: i64,
}

impl AccessRule {
    pub fn matches(&self, value: &str) -> bool {
        let (p, v) = (self.pattern.to_ascii_lowercase(), value.to_ascii_lowercase());
        match p.strip_suffix('*') {
            Some(prefix) => v.starts_with(prefix),
            None => p == v,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// Counted activity to add to a user's day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageDelta {
    pub day: String,
    pub login: String,
    pub syncs: u64,
    pub pushes: u64,
    pub device_ids: Vec<String>,
}

/// Per user and day: Sync requests, pushes delivered, devices active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    pub day: String,
    pub login: String,
    pub syncs: u64,
    pub pushes: u64,
    pub devices: u64,
}

#[async_trait]
pub trait AdminStore: Send + Sync + 'static {
    /// The user's stored entitlement (`None`: not listed, the configured default applies).
    async fn sync_access(&self, login: &str) -> StateResult<Option<bool>>;
    async fn set_sync_access(&self, login: &str, enabled: bool, actor: &str) -> StateResult<()>;
    async fn list_sync_access(&self) -> StateResult<Vec<SyncAccess>>;
    /// Users enabled at any moment of each day of `[from, to)` (seconds), per day.
    async fn enabled_users_by_day(&self, from: i64, to: i64) -> StateResult<Vec<(String, Vec<String>)>>;

    async fn policies(&self) -> StateResult<Vec<NamedPolicy>>;
    async fn put_policy(&self, name: &str, settings: &DevicePolicy, actor: &str) -> StateResult<()>;
    async fn delete_policy(&self, name: &str, actor: &str) -> StateResult<bool>;
    async fn set_default_policy(&self, name: &str, actor: &str) -> StateResult<bool>;
    async fn assign_policy(&self, login: &str, policy: Option<&str>, actor: &str) -> StateResult<bool>;
    /// Logins a policy is assigned to (explicitly).
    async fn policy_users(&self, name: &str) -> StateResult<Vec<String>>;
    /// The policy in force for a user: assigned, else the default, else the built-in one.
    async fn policy_for(&self, login: &str) -> StateResult<NamedPolicy>;

    async fn rules(&self) -> StateResult<Vec<AccessRule>>;
    async fn add_rule(&self, kind: RuleKind, pattern: &str, access: AccessState, actor: &str) -> StateResult<AccessRule>;
    async fn remove_rule(&self, id: i64, actor: &str) -> StateResult<bool>;

    async fn audit(&self, actor: &str, action: &str, target: &str, detail: &str) -> StateResult<()>;
    async fn audit_log(&self, since: i64, limit: usize) -> StateResult<Vec<AuditEntry>>;

    /// Adds to the usage counters of users for days.
    async fn add_usage(&self, rows: &[UsageDelta]) -> StateResult<()>;
    async fn usage(&self, from_day: &str, to_day: &str) -> StateResult<Vec<UsageRow>>;
}

pub struct SqliteAdmin {
    db: Db,
    access_cache: DashMap<String, Option<bool>>,
    policy_cache: RwLock<Option<Arc<PolicyCache>>>,
}

/// Policies and assignments in memory (small, read on every Provision).
struct PolicyCache {
    policies: HashMap<String, NamedPolicy>,
    assignments: HashMap<String, String>,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn json<T: Serialize>(v: &T) -> StateResult<String> {
    serde_json::to_string(v).map_err(|e| StateError::Corrupt(e.to_string()))
}

fn audit_row(tx: &rusqlite::Transaction<'_>, actor: &str, action: &str, target: &str, detail: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO audit_log(at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now(), actor, action, target, detail],
    )?;
    Ok(())
}

impl SqliteAdmin {
    /// Uses the (already migrated) state database.
    pub fn new(db: Db) -> Self {
        SqliteAdmin { db, access_cache: DashMap::new(), policy_cache: RwLock::new(None) }
    }

    fn invalidate_policies(&self) {
        if let Ok(mut c) = self.policy_cache.write() {
            *c = None;
        }
    }

    async fn policy_cache(&self) -> StateResult<Arc<PolicyCache>> {
        if let Ok(c) = self.policy_cache.read()
            && let Some(c) = c.as_ref()
        {
            return Ok(c.clone());
        }
        type PolicyRows = Vec<(String, String, bool)>;
        type AssignmentRows = Vec<(String, String)>;
        let (rows, assignments): (PolicyRows, AssignmentRows) = self
            .db
            .read(|c| {
                let mut s = c.prepare("SELECT name, settings, is_default FROM policies")?;
                let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<Vec<_>, _>>()?;
                let mut s = c.prepare("SELECT login, policy FROM user_policies")?;
                let a = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>()?;
                Ok((rows, a))
            })
            .await?;
        let mut policies = HashMap::new();
        for (name, settings, is_default) in rows {
            let settings: DevicePolicy = serde_json::from_str(&settings).map_err(|e| StateError::Corrupt(e.to_string()))?;
            policies.insert(name.clone(), NamedPolicy { name, is_default, settings });
        }
        let cache = Arc::new(PolicyCache { policies, assignments: assignments.into_iter().collect() });
        if let Ok(mut c) = self.policy_cache.write() {
            *c = Some(cache.clone());
        }
        Ok(cache)
    }
}

#[async_trait]
impl AdminStore for SqliteAdmin {
    async fn sync_access(&self, login: &str) -> StateResult<Option<bool>> {
        if let Some(v) = self.access_cache.get(login) {
            return Ok(*v);
        }
        let l = login.to_string();
        let v: Option<bool> = self
            .db
            .read(move |c| Ok(c.query_row("SELECT enabled FROM sync_access WHERE login = ?1", params![l], |r| r.get(0)).optional()?))
            .await?;
        self.access_cache.insert(login.to_string(), v);
        Ok(v)
    }

    async fn set_sync_access(&self, login: &str, enabled: bool, actor: &str) -> StateResult<()> {
        let (l, a) = (login.to_string(), actor.to_string());
        self.db
            .write(move |tx| {
                let t = now();
                tx.execute(
                    "INSERT INTO sync_access(login, enabled, changed_by, changed_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(login) DO UPDATE SET enabled = ?2, changed_by = ?3, changed_at = ?4",
                    params![l, enabled, a, t],
                )?;
                tx.execute("INSERT INTO sync_access_events(login, enabled, at) VALUES (?1, ?2, ?3)", params![l, enabled, t])?;
                audit_row(tx, &a, if enabled { "sync.enable" } else { "sync.disable" }, &l, "")?;
                Ok::<_, StateError>(())
            })
            .await?;
        self.access_cache.insert(login.to_string(), Some(enabled));
        Ok(())
    }

    async fn list_sync_access(&self) -> StateResult<Vec<SyncAccess>> {
        Ok(self
            .db
            .read(|c| {
                let mut s = c.prepare("SELECT login, enabled, changed_by, changed_at FROM sync_access ORDER BY login")?;
                let rows = s.query_map([], |r| {
                    Ok(SyncAccess { login: r.get(0)?, enabled: r.get(1)?, changed_by: r.get(2)?, changed_at: r.get(3)? })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?)
    }

    async fn enabled_users_by_day(&self, from: i64, to: i64) -> StateResult<Vec<(String, Vec<String>)>> {
        let events: Vec<(String, bool, i64)> = self
            .db
            .read(move |c| {
                let mut s = c.prepare("SELECT login, enabled, at FROM sync_access_events WHERE at < ?1 ORDER BY at, id")?;
                let rows = s.query_map(params![to], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?;
        Ok(enabled_by_day(&events, from, to))
    }

    async fn policies(&self) -> StateResult<Vec<NamedPolicy>> {
        let cache = self.policy_cache().await?;
        let mut v: Vec<NamedPolicy> = cache.policies.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    async fn put_policy(&self, name: &str, settings: &DevicePolicy, actor: &str) -> StateResult<()> {
        let (n, s, a) = (name.to_string(), json(settings)?, actor.to_string());
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO policies(name, settings, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(name) DO UPDATE SET settings = ?2, updated_at = ?3",
                    params![n, s, now()],
                )?;
                audit_row(tx, &a, "policy.put", &n, &s)?;
                Ok::<_, StateError>(())
            })
            .await?;
        self.invalidate_policies();
        Ok(())
    }

    async fn delete_policy(&self, name: &str, actor: &str) -> StateResult<bool> {
        let (n, a) = (name.to_string(), actor.to_string());
        let deleted = self
            .db
            .write(move |tx| {
                tx.execute("DELETE FROM user_policies WHERE policy = ?1", params![n])?;
                let n_deleted = tx.execute("DELETE FROM policies WHERE name = ?1", params![n])?;
                if n_deleted > 0 {
                    audit_row(tx, &a, "policy.delete", &n, "")?;
                }
                Ok::<_, StateError>(n_deleted > 0)
            })
            .await?;
        self.invalidate_policies();
        Ok(deleted)
    }

    async fn set_default_policy(&self, name: &str, actor: &str) -> StateResult<bool> {
        let (n, a) = (name.to_string(), actor.to_string());
        let done = self
            .db
            .write(move |tx| {
                let exists: bool = tx.query_row("SELECT EXISTS(SELECT 1 FROM policies WHERE name = ?1)", params![n], |r| r.get(0))?;
                if !exists {
                    return Ok(false);
                }
                tx.execute("UPDATE policies SET is_default = (name = ?1)", params![n])?;
                audit_row(tx, &a, "policy.default", &n, "")?;
                Ok::<_, StateError>(true)
            })
            .await?;
        self.invalidate_policies();
        Ok(done)
    }

    async fn assign_policy(&self, login: &str, policy: Option<&str>, actor: &str) -> StateResult<bool> {
        let (l, p, a) = (login.to_string(), policy.map(str::to_string), actor.to_string());
        let done = self
            .db
            .write(move |tx| {
                match &p {
                    Some(p) => {
                        let exists: bool =
                            tx.query_row("SELECT EXISTS(SELECT 1 FROM policies WHERE name = ?1)", params![p], |r| r.get(0))?;
                        if !exists {
                            return Ok(false);
                        }
                        tx.execute(
                            "INSERT INTO user_policies(login, policy) VALUES (?1, ?2) ON CONFLICT(login) DO UPDATE SET policy = ?2",
                            params![l, p],
                        )?;
                    }
                    None => {
                        tx.execute("DELETE FROM user_policies WHERE login = ?1", params![l])?;
                    }
                }
                audit_row(tx, &a, "policy.assign", &l, p.as_deref().unwrap_or("(default)"))?;
                Ok::<_, StateError>(true)
            })
            .await?;
        self.invalidate_policies();
        Ok(done)
    }

    async fn policy_users(&self, name: &str) -> StateResult<Vec<String>> {
        let cache = self.policy_cache().await?;
        let mut v: Vec<String> = cache.assignments.iter().filter(|(_, p)| *p == name).map(|(l, _)| l.clone()).collect();
        v.sort();
        Ok(v)
    }

    async fn policy_for(&self, login: &str) -> StateResult<NamedPolicy> {
        let cache = self.policy_cache().await?;
        if let Some(p) = cache.assignments.get(login).and_then(|n| cache.policies.get(n)) {
            return Ok(p.clone());
        }
        if let Some(p) = cache.policies.values().find(|p| p.is_default) {
            return Ok(p.clone());
        }
        Ok(NamedPolicy { name: BUILTIN_POLICY.into(), is_default: true, settings: DevicePolicy::default() })
    }

    async fn rules(&self) -> StateResult<Vec<AccessRule>> {
        let rows: Vec<(i64, String, String, String, String, i64)> = self
            .db
            .read(|c| {
                let mut s = c.prepare("SELECT id, kind, pattern, access, created_by, created_at FROM access_rules ORDER BY id")?;
                let rows = s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?;
        rows.into_iter()
            .map(|(id, kind, pattern, access, created_by, created_at)| {
                Ok(AccessRule {
                    id,
                    kind: RuleKind::parse(&kind).ok_or_else(|| StateError::Corrupt(format!("rule kind {kind}")))?,
                    pattern,
                    access: AccessState::parse(&access).ok_or_else(|| StateError::Corrupt(format!("rule access {access}")))?,
                    created_by,
                    created_at,
                })
            })
            .collect()
    }

    async fn add_rule(&self, kind: RuleKind, pattern: &str, access: AccessState, actor: &str) -> StateResult<AccessRule> {
        let (p, a) = (pattern.to_string(), actor.to_string());
        let t = now();
        let id = self
            .db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO access_rules(kind, pattern, access, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![kind.as_str(), p, access.as_str(), a, t],
                )?;
                let id = tx.last_insert_rowid();
                audit_row(tx, &a, "rule.add", &format!("{}={}", kind.as_str(), p), access.as_str())?;
                Ok::<_, StateError>(id)
            })
            .await?;
        Ok(AccessRule { id, kind, pattern: pattern.to_string(), access, created_by: actor.to_string(), created_at: t })
    }

    async fn remove_rule(&self, id: i64, actor: &str) -> StateResult<bool> {
        let a = actor.to_string();
        self.db
            .write(move |tx| {
                let n = tx.execute("DELETE FROM access_rules WHERE id = ?1", params![id])?;
                if n > 0 {
                    audit_row(tx, &a, "rule.remove", &id.to_string(), "")?;
                }
                Ok::<_, StateError>(n > 0)
            })
            .await
    }

    async fn audit(&self, actor: &str, action: &str, target: &str, detail: &str) -> StateResult<()> {
        let (a, ac, t, d) = (actor.to_string(), action.to_string(), target.to_string(), detail.to_string());
        self.db
            .write(move |tx| {
                audit_row(tx, &a, &ac, &t, &d)?;
                Ok::<_, StateError>(())
            })
            .await
    }

    async fn audit_log(&self, since: i64, limit: usize) -> StateResult<Vec<AuditEntry>> {
        Ok(self
            .db
            .read(move |c| {
                let mut s = c.prepare("SELECT id, at, actor, action, target, detail FROM audit_log WHERE at >= ?1 ORDER BY id LIMIT ?2")?;
                let rows = s.query_map(params![since, limit as i64], |r| {
                    Ok(AuditEntry {
                        id: r.get(0)?,
                        at: r.get(1)?,
                        actor: r.get(2)?,
                        action: r.get(3)?,
                        target: r.get(4)?,
                        detail: r.get(5)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?)
    }

    async fn add_usage(&self, rows: &[UsageDelta]) -> StateResult<()> {
        let rows = rows.to_vec();
        self.db
            .write(move |tx| {
                for r in rows {
                    let existing: Option<String> = tx
                        .query_row("SELECT devices FROM usage_daily WHERE day = ?1 AND login = ?2", params![r.day, r.login], |x| x.get(0))
                        .optional()?;
                    let mut devices: std::collections::BTreeSet<String> =
                        existing.unwrap_or_default().split(' ').filter(|d| !d.is_empty()).map(str::to_string).collect();
                    devices.extend(r.device_ids.iter().cloned());
                    let devices = devices.into_iter().collect::<Vec<_>>().join(" ");
                    tx.execute(
                        "INSERT INTO usage_daily(day, login, syncs, pushes, devices) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT(day, login) DO UPDATE SET syncs = syncs + ?3, pushes = pushes + ?4, devices = ?5",
                        params![r.day, r.login, r.syncs as i64, r.pushes as i64, devices],
                    )?;
                }
                Ok::<_, StateError>(())
            })
            .await
    }

    async fn usage(&self, from_day: &str, to_day: &str) -> StateResult<Vec<UsageRow>> {
        let (f, t) = (from_day.to_string(), to_day.to_string());
        Ok(self
            .db
            .read(move |c| {
                let mut s = c.prepare(
                    "SELECT day, login, syncs, pushes, devices FROM usage_daily WHERE day >= ?1 AND day < ?2 ORDER BY day, login",
                )?;
                let rows = s.query_map(params![f, t], |r| {
                    let devices: String = r.get(4)?;
                    Ok(UsageRow {
                        day: r.get(0)?,
                        login: r.get(1)?,
                        syncs: r.get::<_, i64>(2)? as u64,
                        pushes: r.get::<_, i64>(3)? as u64,
                        devices: devices.split(' ').filter(|d| !d.is_empty()).count() as u64,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?)
    }
}

/// The billing report of one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    pub month: String,
    /// Users with Mobile Sync enabled at any moment of the month.
    pub enabled_users: usize,
    /// Sum over days of users enabled that day.
    pub enabled_user_days: usize,
    pub days: Vec<UsageDay>,
    pub users: Vec<UsageUser>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageDay {
    pub day: String,
    pub enabled_users: usize,
    pub active_devices: u64,
    pub syncs: u64,
    pub pushes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageUser {
    pub login: String,
    pub days_enabled: usize,
    pub syncs: u64,
    pub pushes: u64,
    /// Most devices active on one day.
    pub active_devices: u64,
}

impl UsageReport {
    /// One row per user: login, days enabled, syncs, pushes, active devices.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("month,login,days_enabled,syncs,pushes,active_devices\n");
        for u in &self.users {
            out.push_str(&format!("{},{},{},{},{},{}\n", self.month, u.login, u.days_enabled, u.syncs, u.pushes, u.active_devices));
        }
        out
    }
}

/// Builds the report of `month` (`YYYY-MM`).
pub async fn usage_report(store: &dyn AdminStore, month: &str) -> Result<UsageReport, String> {
    let first =
        chrono::NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d").map_err(|_| format!("{month:?} is not a month (YYYY-MM)"))?;
    let next = first.checked_add_months(chrono::Months::new(1)).ok_or("month out of range")?;
    let (from, end) = (
        first.and_hms_opt(0, 0, 0).ok_or("bad date")?.and_utc().timestamp(),
        next.and_hms_opt(0, 0, 0).ok_or("bad date")?.and_utc().timestamp(),
    );
    // Days that have not begun yet are not billed.
    let now = chrono::Utc::now().timestamp();
    let to = end.min(now - now.rem_euclid(86_400) + 86_400);
    let enabled = store.enabled_users_by_day(from, to).await.map_err(|e| e.to_string())?;
    let rows = store.usage(&first.format("%Y-%m-%d").to_string(), &next.format("%Y-%m-%d").to_string()).await.map_err(|e| e.to_string())?;
    let mut users: std::collections::BTreeMap<String, UsageUser> = std::collections::BTreeMap::new();
    let mut days = Vec::new();
    for (day, logins) in &enabled {
        for l in logins {
            users
                .entry(l.clone())
                .or_insert_with(|| UsageUser { login: l.clone(), days_enabled: 0, syncs: 0, pushes: 0, active_devices: 0 })
                .days_enabled += 1;
        }
        let today: Vec<&UsageRow> = rows.iter().filter(|r| &r.day == day).collect();
        days.push(UsageDay {
            day: day.clone(),
            enabled_users: logins.len(),
            active_devices: today.iter().map(|r| r.devices).sum(),
            syncs: today.iter().map(|r| r.syncs).sum(),
            pushes: today.iter().map(|r| r.pushes).sum(),
        });
    }
    for r in &rows {
        let u = users.entry(r.login.clone()).or_insert_with(|| UsageUser {
            login: r.login.clone(),
            days_enabled: 0,
            syncs: 0,
            pushes: 0,
            active_devices: 0,
        });
        u.syncs += r.syncs;
        u.pushes += r.pushes;
        u.active_devices = u.active_devices.max(r.devices);
    }
    Ok(UsageReport {
        month: month.to_string(),
        enabled_users: users.values().filter(|u| u.days_enabled > 0).count(),
        enabled_user_days: enabled.iter().map(|(_, l)| l.len()).sum(),
        days,
        users: users.into_values().collect(),
    })
}

/// For each UTC day in `[from, to)`, the users enabled at any moment of it, given the
/// entitlement events (ordered by time).
pub fn enabled_by_day(events: &[(String, bool, i64)], from: i64, to: i64) -> Vec<(String, Vec<String>)> {
    const DAY: i64 = 86_400;
    let mut out = Vec::new();
    let mut state: HashMap<&str, bool> = HashMap::new();
    let mut i = 0;
    let mut day_start = from - from.rem_euclid(DAY);
    while day_start < to {
        let day_end = day_start + DAY;
        // Apply everything before the day: who is enabled when it starts.
        while i < events.len() && events[i].2 < day_start {
            state.insert(&events[i].0, events[i].1);
            i += 1;
        }
        let mut enabled: std::collections::BTreeSet<String> = state.iter().filter(|(_, e)| **e).map(|(l, _)| l.to_string()).collect();
        // Anyone enabled during the day counts for it too.
        let mut j = i;
        while j < events.len() && events[j].2 < day_end {
            if events[j].1 {
                enabled.insert(events[j].0.clone());
            }
            j += 1;
        }
        let date = chrono::DateTime::from_timestamp(day_start, 0).map(|d| d.format("%Y-%m-%d").to_string()).unwrap_or_default();
        out.push((date, enabled.into_iter().collect()));
        day_start = day_end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::sqlite::SqliteState;

    fn admin() -> (tempfile::TempDir, SqliteAdmin) {
        let dir = tempfile::tempdir().unwrap();
        let state = SqliteState::open(dir.path()).unwrap();
        let admin = SqliteAdmin::new(state.db().clone());
        (dir, admin)
    }

    #[tokio::test]
    async fn entitlement_is_stored_cached_and_audited() {
        let (_d, a) = admin();
        assert_eq!(a.sync_access("alice").await.unwrap(), None);
        a.set_sync_access("alice", true, "admin").await.unwrap();
        assert_eq!(a.sync_access("alice").await.unwrap(), Some(true));
        a.set_sync_access("alice", false, "ops").await.unwrap();
        assert_eq!(a.sync_access("alice").await.unwrap(), Some(false));
        let list = a.list_sync_access().await.unwrap();
        assert_eq!((list[0].enabled, list[0].changed_by.as_str()), (false, "ops"));
        let log = a.audit_log(0, 10).await.unwrap();
        assert_eq!(log.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["sync.enable", "sync.disable"]);
    }

    #[tokio::test]
    async fn the_audit_log_cannot_be_rewritten() {
        let (_d, a) = admin();
        a.audit("admin", "test", "x", "").await.unwrap();
        let r: Result<(), StateError> =
            a.db.write(|tx| {
                tx.execute("DELETE FROM audit_log", [])?;
                Ok(())
            })
            .await;
        assert!(r.is_err());
        let r: Result<(), StateError> =
            a.db.write(|tx| {
                tx.execute("UPDATE audit_log SET actor = 'x'", [])?;
                Ok(())
            })
            .await;
        assert!(r.is_err());
        assert_eq!(a.audit_log(0, 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn policies_resolve_assigned_then_default_then_builtin() {
        let (_d, a) = admin();
        assert_eq!(a.policy_for("alice").await.unwrap().name, BUILTIN_POLICY);
        let strict = DevicePolicy { device_password_enabled: true, ..Default::default() };
        a.put_policy("strict", &strict, "admin").await.unwrap();
        a.put_policy("staff", &DevicePolicy::default(), "admin").await.unwrap();
        assert!(a.set_default_policy("staff", "admin").await.unwrap());
        assert_eq!(a.policy_for("alice").await.unwrap().name, "staff");
        assert!(a.assign_policy("alice", Some("strict"), "admin").await.unwrap());
        assert_eq!(a.policy_for("alice").await.unwrap().settings, strict);
        assert_eq!(a.policy_users("strict").await.unwrap(), vec!["alice"]);
        assert!(!a.assign_policy("alice", Some("missing"), "admin").await.unwrap());
        assert!(a.delete_policy("strict", "admin").await.unwrap());
        assert_eq!(a.policy_for("alice").await.unwrap().name, "staff");
    }

    #[tokio::test]
    async fn rules_match_with_wildcards() {
        let (_d, a) = admin();
        let r = a.add_rule(RuleKind::DeviceType, "Android*", AccessState::Quarantined, "admin").await.unwrap();
        assert!(r.matches("AndroidPhone") && r.matches("androidtablet") && !r.matches("iPhone"));
        assert_eq!(a.rules().await.unwrap(), vec![r.clone()]);
        assert!(a.remove_rule(r.id, "admin").await.unwrap());
        assert!(a.rules().await.unwrap().is_empty());
    }

    #[test]
    fn enabled_users_by_day_counts_anyone_enabled_during_the_day() {
        let d = 86_400;
        let events = vec![
            ("a".to_string(), true, 10),
            ("b".to_string(), true, d + 10),
            ("a".to_string(), false, d + 20),
            ("b".to_string(), false, 2 * d + 5),
        ];
        let days = enabled_by_day(&events, 0, 4 * d);
        let counts: Vec<usize> = days.iter().map(|(_, u)| u.len()).collect();
        assert_eq!(counts, vec![1, 2, 1, 0]);
        assert_eq!(days[0].0, "1970-01-01");
    }

    #[tokio::test]
    async fn usage_accumulates() {
        let (_d, a) = admin();
        let row =
            |s, p, d: &str| UsageDelta { day: "2026-11-26".into(), login: "alice".into(), syncs: s, pushes: p, device_ids: vec![d.into()] };
        a.add_usage(&[row(3, 1, "A")]).await.unwrap();
        a.add_usage(&[row(2, 4, "B"), row(0, 0, "A")]).await.unwrap();
        let u = a.usage("2026-11-01", "2026-12-01").await.unwrap();
        assert_eq!((u[0].syncs, u[0].pushes, u[0].devices), (5, 5, 2));
        assert!(a.usage("2026-12-01", "2027-01-01").await.unwrap().is_empty());
    }
}
