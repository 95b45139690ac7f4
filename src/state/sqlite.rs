//! [`StateStore`] on SQLite (`state.db` in the data directory).
//!
//! Records that change as a whole (collection state, hierarchy) are JSON in one column; the
//! snapshot is one narrow row per message so that diffing a 100k-message folder reads only
//! the rows it needs.

use std::collections::HashMap;
use std::path::Path;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::*;
use crate::sqlite::Db;

pub const STATE_FILE: &str = "state.db";

/// `last_seen` is rewritten at most this often per device.
const TOUCH_INTERVAL_SECS: i64 = 60;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE devices (
    id                   INTEGER PRIMARY KEY,
    login                TEXT NOT NULL,
    device_id            TEXT NOT NULL,
    device_type          TEXT NOT NULL,
    protocol_version     TEXT,
    info                 TEXT NOT NULL DEFAULT '{}',
    first_seen           INTEGER NOT NULL,
    last_seen            INTEGER NOT NULL,
    last_sync            INTEGER,
    policy_key           INTEGER NOT NULL DEFAULT 0,
    pending_policy_key   INTEGER NOT NULL DEFAULT 0,
    policy_name          TEXT,
    policy_compliant     INTEGER,
    access               TEXT NOT NULL DEFAULT 'allowed',
    access_reason        TEXT,
    wipe                 TEXT NOT NULL DEFAULT 'none',
    wipe_requested_at    INTEGER,
    wipe_acknowledged_at INTEGER,
    ping                 TEXT,
    hierarchy            TEXT,
    sync_request         BLOB,
    UNIQUE (login, device_id)
);

CREATE TABLE collection_ids (
    login      TEXT NOT NULL,
    folder_key TEXT NOT NULL,
    id         INTEGER NOT NULL,
    PRIMARY KEY (login, folder_key),
    UNIQUE (login, id)
) WITHOUT ROWID;

CREATE TABLE collections (
    device     INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    collection TEXT NOT NULL,
    state      TEXT NOT NULL,
    PRIMARY KEY (device, collection)
) WITHOUT ROWID;

CREATE TABLE items (
    device     INTEGER NOT NULL,
    collection TEXT NOT NULL,
    uid        INTEGER NOT NULL,
    flags      INTEGER NOT NULL,
    keywords   TEXT NOT NULL,
    date       INTEGER NOT NULL,
    PRIMARY KEY (device, collection, uid)
) WITHOUT ROWID;
CREATE INDEX items_by_date ON items(device, collection, date);
"#,
    crate::admin::store::MIGRATION,
    r#"
-- Per-user settings devices manage (out-of-office), as JSON by name.
CREATE TABLE user_settings (
    login TEXT NOT NULL,
    name  TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (login, name)
) WITHOUT ROWID;
"#,
];

pub struct SqliteState {
    db: Db,
}

impl SqliteState {
    pub fn open(data_dir: &Path) -> StateResult<SqliteState> {
        Ok(SqliteState { db: Db::open(&data_dir.join(STATE_FILE), MIGRATIONS)? })
    }

    /// The underlying database, for modules that keep their own tables in it (admin).
    pub fn db(&self) -> &Db {
        &self.db
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn json<T: Serialize>(v: &T) -> StateResult<String> {
    serde_json::to_string(v).map_err(|e| StateError::Corrupt(e.to_string()))
}

fn from_json<T: for<'de> Deserialize<'de>>(s: &str) -> StateResult<T> {
    serde_json::from_str(s).map_err(|e| StateError::Corrupt(e.to_string()))
}

const DEVICE_COLUMNS: &str = "id, login, device_id, device_type, protocol_version, info, first_seen, last_seen, last_sync,
    policy_key, pending_policy_key, policy_name, policy_compliant, access, access_reason, wipe, wipe_requested_at,
    wipe_acknowledged_at, ping";

fn device_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Device, String, Option<String>, String, String)> {
    let info: String = r.get(5)?;
    let access: String = r.get(13)?;
    let wipe: String = r.get(15)?;
    let ping: Option<String> = r.get(18)?;
    Ok((
        Device {
            pk: r.get(0)?,
            login: r.get(1)?,
            device_id: r.get(2)?,
            device_type: r.get(3)?,
            protocol_version: r.get(4)?,
            info: DeviceInfo::default(),
            first_seen: r.get(6)?,
            last_seen: r.get(7)?,
            last_sync: r.get(8)?,
            policy_key: r.get::<_, i64>(9)? as u32,
            pending_policy_key: r.get::<_, i64>(10)? as u32,
            policy_name: r.get(11)?,
            policy_compliant: r.get(12)?,
            access: AccessState::Allowed,
            access_reason: r.get(14)?,
            wipe: WipeState::None,
            wipe_requested_at: r.get(16)?,
            wipe_acknowledged_at: r.get(17)?,
            ping: None,
        },
        info,
        ping,
        access,
        wipe,
    ))
}

fn finish_device(parts: (Device, String, Option<String>, String, String)) -> StateResult<Device> {
    let (mut d, info, ping, access, wipe) = parts;
    d.info = from_json(&info)?;
    d.ping = ping.as_deref().map(from_json).transpose()?;
    d.access = AccessState::parse(&access).ok_or_else(|| StateError::Corrupt(format!("access state {access:?}")))?;
    d.wipe = from_json(&format!("\"{wipe}\""))?;
    Ok(d)
}

fn load_device(c: &Connection, login: &str, device_id: &str) -> StateResult<Option<Device>> {
    let row = c
        .query_row(
            &format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE login = ?1 AND device_id = ?2"),
            params![login, device_id],
            device_row,
        )
        .optional()?;
    row.map(finish_device).transpose()
}

fn wipe_text(w: WipeState) -> &'static str {
    match w {
        WipeState::None => "none",
        WipeState::Requested => "requested",
        WipeState::AccountOnlyRequested => "account-only-requested",
        WipeState::Acknowledged => "acknowledged",
    }
}

#[async_trait]
impl StateStore for SqliteState {
    async fn touch_device(
        &self,
        login: &str,
        device_id: &str,
        device_type: &str,
        version: &str,
        user_agent: Option<&str>,
    ) -> StateResult<Device> {
        let (l, d) = (login.to_string(), device_id.to_string());
        let existing = self.db.read(move |c| Ok(load_device(c, &l, &d))).await??;
        let now = now();
        if let Some(dev) = &existing
            && now - dev.last_seen < TOUCH_INTERVAL_SECS
            && dev.protocol_version.as_deref() == Some(version)
            && dev.device_type == device_type
        {
            return Ok(dev.clone());
        }
        let (l, d, t, v) = (login.to_string(), device_id.to_string(), device_type.to_string(), version.to_string());
        let ua = user_agent.map(str::to_string);
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO devices(login, device_id, device_type, protocol_version, first_seen, last_seen, info)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)
                     ON CONFLICT(login, device_id) DO UPDATE SET device_type = ?3, protocol_version = ?4, last_seen = ?5",
                    params![l, d, t, v, now, json(&DeviceInfo { user_agent: ua.clone(), ..Default::default() })?],
                )?;
                let mut dev = load_device(tx, &l, &d)?.ok_or(StateError::DeviceNotFound)?;
                if ua.is_some() && dev.info.user_agent != ua {
                    dev.info.user_agent = ua;
                    tx.execute("UPDATE devices SET info = ?2 WHERE id = ?1", params![dev.pk, json(&dev.info)?])?;
                }
                Ok::<_, StateError>(dev)
            })
            .await
    }

    async fn device(&self, login: &str, device_id: &str) -> StateResult<Option<Device>> {
        let (l, d) = (login.to_string(), device_id.to_string());
        self.db.read(move |c| Ok(load_device(c, &l, &d))).await?
    }

    async fn save_device(&self, device: &Device) -> StateResult<()> {
        let d = device.clone();
        let info = json(&d.info)?;
        let ping = d.ping.as_ref().map(json).transpose()?;
        self.db
            .write(move |tx| {
                let n = tx.execute(
                    "UPDATE devices SET device_type = ?2, protocol_version = ?3, info = ?4, last_seen = ?5, last_sync = ?6,
                        policy_key = ?7, pending_policy_key = ?8, policy_name = ?9, policy_compliant = ?10, access = ?11,
                        access_reason = ?12, wipe = ?13, wipe_requested_at = ?14, wipe_acknowledged_at = ?15, ping = ?16
                     WHERE id = ?1",
                    params![
                        d.pk,
                        d.device_type,
                        d.protocol_version,
                        info,
                        d.last_seen,
                        d.last_sync,
                        d.policy_key as i64,
                        d.pending_policy_key as i64,
                        d.policy_name,
                        d.policy_compliant,
                        d.access.as_str(),
                        d.access_reason,
                        wipe_text(d.wipe),
                        d.wipe_requested_at,
                        d.wipe_acknowledged_at,
                        ping
                    ],
                )?;
                if n == 0 {
                    return Err(StateError::DeviceNotFound);
                }
                Ok(())
            })
            .await
    }

    async fn remove_device(&self, login: &str, device_id: &str) -> StateResult<bool> {
        let (l, d) = (login.to_string(), device_id.to_string());
        self.db
            .write(move |tx| {
                let pk: Option<i64> =
                    tx.query_row("SELECT id FROM devices WHERE login = ?1 AND device_id = ?2", params![l, d], |r| r.get(0)).optional()?;
                let Some(pk) = pk else { return Ok(false) };
                tx.execute("DELETE FROM items WHERE device = ?1", params![pk])?;
                tx.execute("DELETE FROM collections WHERE device = ?1", params![pk])?;
                tx.execute("DELETE FROM devices WHERE id = ?1", params![pk])?;
                Ok::<_, StateError>(true)
            })
            .await
    }

    async fn list_devices(&self, login: Option<&str>) -> StateResult<Vec<Device>> {
        let login = login.map(str::to_string);
        self.db
            .read(move |c| {
                Ok((|| {
                    let mut stmt = c.prepare(&format!(
                        "SELECT {DEVICE_COLUMNS} FROM devices WHERE ?1 IS NULL OR login = ?1 ORDER BY login, device_id"
                    ))?;
                    let rows = stmt.query_map(params![login], device_row)?.collect::<Result<Vec<_>, _>>()?;
                    rows.into_iter().map(finish_device).collect::<StateResult<Vec<_>>>()
                })())
            })
            .await?
    }

    async fn collection_ids(&self, login: &str, folders: &[FolderId]) -> StateResult<Vec<CollectionId>> {
        let l = login.to_string();
        let keys: Vec<String> = folders.iter().map(|f| f.0.clone()).collect();
        let k2 = keys.clone();
        let known: HashMap<String, i64> = self
            .db
            .read(move |c| {
                let mut stmt = c.prepare_cached("SELECT id FROM collection_ids WHERE login = ?1 AND folder_key = ?2")?;
                let mut out = HashMap::new();
                for k in k2 {
                    if let Some(id) = stmt.query_row(params![l, k], |r| r.get::<_, i64>(0)).optional()? {
                        out.insert(k, id);
                    }
                }
                Ok(out)
            })
            .await?;
        if keys.iter().all(|k| known.contains_key(k)) {
            return Ok(keys.iter().map(|k| known[k].to_string()).collect());
        }
        let l = login.to_string();
        self.db
            .write(move |tx| {
                let mut out = Vec::with_capacity(keys.len());
                for k in keys {
                    let id: Option<i64> = tx
                        .query_row("SELECT id FROM collection_ids WHERE login = ?1 AND folder_key = ?2", params![l, k], |r| r.get(0))
                        .optional()?;
                    let id = match id {
                        Some(id) => id,
                        None => {
                            let next: i64 =
                                tx.query_row("SELECT coalesce(max(id), 0) + 1 FROM collection_ids WHERE login = ?1", params![l], |r| {
                                    r.get(0)
                                })?;
                            tx.execute("INSERT INTO collection_ids(login, folder_key, id) VALUES (?1, ?2, ?3)", params![l, k, next])?;
                            next
                        }
                    };
                    out.push(id.to_string());
                }
                Ok::<_, StateError>(out)
            })
            .await
    }

    async fn folder_for_collection(&self, login: &str, collection: &str) -> StateResult<Option<FolderId>> {
        let Ok(id) = collection.parse::<i64>() else { return Ok(None) };
        let l = login.to_string();
        Ok(self
            .db
            .read(move |c| {
                Ok(c.query_row("SELECT folder_key FROM collection_ids WHERE login = ?1 AND id = ?2", params![l, id], |r| {
                    r.get::<_, String>(0)
                })
                .optional()?)
            })
            .await?
            .map(FolderId))
    }

    async fn hierarchy(&self, device: DevicePk) -> StateResult<HierarchyState> {
        let text: Option<String> = self
            .db
            .read(move |c| {
                Ok(c.query_row("SELECT hierarchy FROM devices WHERE id = ?1", params![device], |r| r.get(0)).optional()?.flatten())
            })
            .await?;
        match text {
            Some(t) => from_json(&t),
            None => Ok(HierarchyState::default()),
        }
    }

    async fn save_hierarchy(&self, device: DevicePk, state: &HierarchyState) -> StateResult<()> {
        let text = json(state)?;
        self.db
            .write(move |tx| {
                tx.execute("UPDATE devices SET hierarchy = ?2 WHERE id = ?1", params![device, text])?;
                Ok::<_, StateError>(())
            })
            .await
    }

    async fn collection(&self, device: DevicePk, collection: &str) -> StateResult<Option<CollectionState>> {
        let c = collection.to_string();
        let text: Option<String> = self
            .db
            .read(move |conn| {
                Ok(conn
                    .query_row("SELECT state FROM collections WHERE device = ?1 AND collection = ?2", params![device, c], |r| r.get(0))
                    .optional()?)
            })
            .await?;
        text.as_deref().map(from_json).transpose()
    }

    async fn collections(&self, device: DevicePk) -> StateResult<Vec<(CollectionId, CollectionState)>> {
        let rows: Vec<(String, String)> = self
            .db
            .read(move |c| {
                let mut stmt = c.prepare_cached("SELECT collection, state FROM collections WHERE device = ?1")?;
                let rows = stmt.query_map(params![device], |r| Ok((r.get(0)?, r.get(1)?)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?;
        rows.into_iter().map(|(id, s)| Ok((id, from_json(&s)?))).collect()
    }

    async fn save_collection(
        &self,
        device: DevicePk,
        collection: &str,
        state: &CollectionState,
        ops: &[SnapOp],
        reset: bool,
    ) -> StateResult<()> {
        let text = json(state)?;
        let c = collection.to_string();
        let ops = ops.to_vec();
        self.db
            .write(move |tx| {
                if reset {
                    tx.execute("DELETE FROM items WHERE device = ?1 AND collection = ?2", params![device, c])?;
                }
                {
                    let mut put = tx.prepare_cached(
                        "INSERT OR REPLACE INTO items(device, collection, uid, flags, keywords, date) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?;
                    let mut del = tx.prepare_cached("DELETE FROM items WHERE device = ?1 AND collection = ?2 AND uid = ?3")?;
                    for op in &ops {
                        match op {
                            SnapOp::Put(uid, item) => {
                                put.execute(params![device, c, uid, item.flags.0 as i64, item.keywords.join(" "), item.date])?;
                            }
                            SnapOp::Remove(uid) => {
                                del.execute(params![device, c, uid])?;
                            }
                        }
                    }
                }
                tx.execute(
                    "INSERT INTO collections(device, collection, state) VALUES (?1, ?2, ?3)
                     ON CONFLICT(device, collection) DO UPDATE SET state = ?3",
                    params![device, c, text],
                )?;
                Ok::<_, StateError>(())
            })
            .await
    }

    async fn remove_collection(&self, device: DevicePk, collection: &str) -> StateResult<()> {
        let c = collection.to_string();
        self.db
            .write(move |tx| {
                tx.execute("DELETE FROM items WHERE device = ?1 AND collection = ?2", params![device, c])?;
                tx.execute("DELETE FROM collections WHERE device = ?1 AND collection = ?2", params![device, c])?;
                Ok::<_, StateError>(())
            })
            .await
    }

    async fn snapshot_items(&self, device: DevicePk, collection: &str, uids: &[Uid]) -> StateResult<HashMap<Uid, SnapItem>> {
        let c = collection.to_string();
        let uids = uids.to_vec();
        Ok(self
            .db
            .read(move |conn| {
                let mut stmt =
                    conn.prepare_cached("SELECT flags, keywords, date FROM items WHERE device = ?1 AND collection = ?2 AND uid = ?3")?;
                let mut out = HashMap::with_capacity(uids.len());
                for uid in uids {
                    if let Some(item) = stmt
                        .query_row(params![device, c, uid], |r| {
                            let kw: String = r.get(1)?;
                            Ok(SnapItem {
                                flags: Flags(r.get::<_, i64>(0)? as u8),
                                keywords: kw.split(' ').filter(|k| !k.is_empty()).map(str::to_string).collect(),
                                date: r.get(2)?,
                            })
                        })
                        .optional()?
                    {
                        out.insert(uid, item);
                    }
                }
                Ok(out)
            })
            .await?)
    }

    async fn snapshot_older_than(&self, device: DevicePk, collection: &str, date: i64, limit: usize) -> StateResult<Vec<Uid>> {
        let c = collection.to_string();
        Ok(self
            .db
            .read(move |conn| {
                let mut stmt = conn
                    .prepare_cached("SELECT uid FROM items WHERE device = ?1 AND collection = ?2 AND date < ?3 ORDER BY date LIMIT ?4")?;
                let rows = stmt.query_map(params![device, c, date, limit as i64], |r| Ok(r.get::<_, i64>(0)? as u32))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?)
    }

    async fn snapshot_count(&self, device: DevicePk, collection: &str, below: Uid, since: i64) -> StateResult<u64> {
        let c = collection.to_string();
        Ok(self
            .db
            .read(move |conn| {
                Ok(conn.query_row(
                    "SELECT count(*) FROM items WHERE device = ?1 AND collection = ?2 AND uid < ?3 AND date >= ?4",
                    params![device, c, below, since],
                    |r| r.get::<_, i64>(0),
                )?)
            })
            .await? as u64)
    }

    async fn snapshot_uids(&self, device: DevicePk, collection: &str) -> StateResult<Vec<Uid>> {
        let c = collection.to_string();
        Ok(self
            .db
            .read(move |conn| {
                let mut stmt = conn.prepare_cached("SELECT uid FROM items WHERE device = ?1 AND collection = ?2 ORDER BY uid")?;
                let rows = stmt.query_map(params![device, c], |r| Ok(r.get::<_, i64>(0)? as u32))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await?)
    }

    async fn user_setting(&self, login: &str, name: &str) -> StateResult<Option<String>> {
        let (l, n) = (login.to_string(), name.to_string());
        Ok(self
            .db
            .read(move |c| {
                Ok(c.query_row("SELECT value FROM user_settings WHERE login = ?1 AND name = ?2", params![l, n], |r| r.get(0)).optional()?)
            })
            .await?)
    }

    async fn set_user_setting(&self, login: &str, name: &str, value: &str) -> StateResult<()> {
        let (l, n, v) = (login.to_string(), name.to_string(), value.to_string());
        self.db
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO user_settings(login, name, value) VALUES (?1, ?2, ?3) ON CONFLICT(login, name) DO UPDATE SET value = ?3",
                    params![l, n, v],
                )?;
                Ok::<_, StateError>(())
            })
            .await
    }

    async fn save_sync_request(&self, device: DevicePk, request: &[u8]) -> StateResult<()> {
        let request = request.to_vec();
        self.db
            .write(move |tx| {
                tx.execute("UPDATE devices SET sync_request = ?2 WHERE id = ?1", params![device, request])?;
                Ok::<_, StateError>(())
            })
            .await
    }

    async fn sync_request(&self, device: DevicePk) -> StateResult<Option<Vec<u8>>> {
        Ok(self
            .db
            .read(move |c| {
                Ok(c.query_row("SELECT sync_request FROM devices WHERE id = ?1", params![device], |r| r.get(0)).optional()?.flatten())
            })
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn devices_are_created_once_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let state = SqliteState::open(dir.path()).unwrap();
        let d1 = state.touch_device("alice", "DEV1", "iPhone", "14.1", Some("Apple-iPhone/1")).await.unwrap();
        let d2 = state.touch_device("alice", "DEV1", "iPhone", "14.1", None).await.unwrap();
        assert_eq!(d1.pk, d2.pk);
        assert_eq!(d2.info.user_agent.as_deref(), Some("Apple-iPhone/1"));
        let mut d = d2.clone();
        d.policy_key = 42;
        d.access = AccessState::Quarantined;
        d.wipe = WipeState::AccountOnlyRequested;
        d.ping = Some(PingCache { heartbeat_secs: 480, folders: vec!["1".into(), "3".into()] });
        state.save_device(&d).await.unwrap();
        drop(state);
        let state = SqliteState::open(dir.path()).unwrap();
        let back = state.device("alice", "DEV1").await.unwrap().unwrap();
        assert_eq!(back, d);
        assert_eq!(state.list_devices(Some("alice")).await.unwrap().len(), 1);
        assert!(state.list_devices(Some("bob")).await.unwrap().is_empty());
        assert!(state.remove_device("alice", "DEV1").await.unwrap());
        assert!(state.device("alice", "DEV1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn collection_ids_are_stable_per_user() {
        let dir = tempfile::tempdir().unwrap();
        let state = SqliteState::open(dir.path()).unwrap();
        let a = state.collection_ids("alice", &[FolderId("10".into()), FolderId("11".into())]).await.unwrap();
        let b = state.collection_ids("alice", &[FolderId("11".into()), FolderId("12".into())]).await.unwrap();
        let c = state.collection_ids("bob", &[FolderId("10".into())]).await.unwrap();
        assert_eq!(a, vec!["1", "2"]);
        assert_eq!(b, vec!["2", "3"]);
        assert_eq!(c, vec!["1"]);
        assert_eq!(state.folder_for_collection("alice", "3").await.unwrap(), Some(FolderId("12".into())));
        assert_eq!(state.folder_for_collection("bob", "3").await.unwrap(), None);
        assert_eq!(state.folder_for_collection("alice", "x").await.unwrap(), None);
    }

    #[tokio::test]
    async fn snapshot_ops_apply_atomically_with_state() {
        let dir = tempfile::tempdir().unwrap();
        let state = SqliteState::open(dir.path()).unwrap();
        let dev = state.touch_device("alice", "D", "t", "16.1", None).await.unwrap();
        let cs = CollectionState {
            epoch: 7,
            key: 1,
            folder: FolderId("1".into()),
            uidvalidity: 9,
            marks: SyncMarks::default(),
            filter_type: 0,
            pending: None,
            client_options: None,
        };
        let item = |date| SnapItem { flags: Flags::SEEN, keywords: vec!["Work".into()], date };
        let ops = vec![SnapOp::Put(1, item(100)), SnapOp::Put(2, item(200)), SnapOp::Put(3, item(300)), SnapOp::Remove(2)];
        state.save_collection(dev.pk, "1", &cs, &ops, false).await.unwrap();
        assert_eq!(state.snapshot_uids(dev.pk, "1").await.unwrap(), vec![1, 3]);
        assert_eq!(state.snapshot_older_than(dev.pk, "1", 250, 10).await.unwrap(), vec![1]);
        let items = state.snapshot_items(dev.pk, "1", &[1, 2, 3]).await.unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[&3], item(300));
        assert_eq!(state.collection(dev.pk, "1").await.unwrap(), Some(cs.clone()));
        state.save_collection(dev.pk, "1", &cs, &[], true).await.unwrap();
        assert!(state.snapshot_uids(dev.pk, "1").await.unwrap().is_empty());
        assert_eq!(cs.parse_key(&cs.key_string(5)), Some(5));
        assert_eq!(cs.parse_key("{00000008}5"), None);
        assert_eq!(cs.parse_key("garbage"), None);
    }
}
