//! SQLite access shared by the embedded mail store and the device-state store.
//!
//! Owns connection handling only: one writer connection (SQLite allows one writer at a time,
//! so writes queue here instead of spinning on `SQLITE_BUSY`) and a small pool of reader
//! connections that run concurrently with it under WAL. Every call runs on the blocking
//! thread pool so the async runtime never waits on disk; callers wait for a connection
//! asynchronously first, so a burst queues without tying up blocking threads or opening
//! extra connections. Schemas and queries belong to the modules that own the data.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, Transaction};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database task failed: {0}")]
    Task(String),
    #[error("database schema version {found} is newer than this build understands ({known})")]
    SchemaTooNew { found: i64, known: i64 },
}

/// How many reader connections are kept open.
const READERS: usize = 4;

/// A SQLite database file with one writer and pooled readers.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    /// One permit: the turn of the writer connection.
    writer_turn: Arc<tokio::sync::Semaphore>,
    readers: Mutex<Vec<Connection>>,
    /// One permit per pooled reader: holding one guarantees a connection in the pool.
    reader_turns: Arc<tokio::sync::Semaphore>,
}

impl Db {
    /// Opens (creating if needed) the database and brings its schema up to date. `migrations`
    /// are applied in order; `PRAGMA user_version` records how many have run.
    pub fn open(path: &Path, migrations: &[&str]) -> Result<Db, DbError> {
        let mut writer = open_connection(path, true)?;
        migrate(&mut writer, migrations)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open_connection(path, false)?);
        }
        Ok(Db {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: Mutex::new(writer),
                writer_turn: Arc::new(tokio::sync::Semaphore::new(1)),
                readers: Mutex::new(readers),
                reader_turns: Arc::new(tokio::sync::Semaphore::new(READERS)),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on a reader connection (a consistent snapshot for the duration of `f` when
    /// it opens a transaction; plain statements see the latest commit).
    pub async fn read<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, DbError> + Send + 'static,
    {
        // The permit travels with the work: it is released when the connection is back,
        // even if this future is dropped meanwhile.
        let turn = self.inner.reader_turns.clone().acquire_owned().await.map_err(|e| DbError::Task(e.to_string()))?;
        let pool = self.inner.clone();
        run_blocking(move || {
            let _turn = turn;
            let conn = pool.readers.lock().map_err(|_| DbError::Task("reader pool poisoned".into()))?.pop();
            // The permit promises a pooled connection; a missing one (a panic lost it) is
            // replaced.
            let conn = match conn {
                Some(c) => c,
                None => open_connection(&pool.path, false)?,
            };
            let result = f(&conn);
            if let Ok(mut readers) = pool.readers.lock() {
                readers.push(conn);
            }
            result
        })
        .await
    }

    /// Runs `f` inside one write transaction, committed (durably) before this returns;
    /// rolled back if `f` fails.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, E> + Send + 'static,
    {
        let inner = self.inner.clone();
        let turn = self.inner.writer_turn.clone().acquire_owned().await.map_err(|e| E::from(DbError::Task(e.to_string())))?;
        let joined = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let mut conn = inner.writer.lock().map_err(|_| DbError::Task("writer poisoned".into()))?;
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(DbError::from)?;
            let value = f(&tx)?;
            tx.commit().map_err(DbError::from)?;
            Ok(value)
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(e) => Err(E::from(DbError::Task(e.to_string()))),
        }
    }

    /// Copies the whole database into `dest` with SQLite's online backup, consistent even
    /// while writers run.
    pub async fn backup_to(&self, dest: PathBuf) -> Result<(), DbError> {
        let inner = self.inner.clone();
        run_blocking(move || {
            let src = open_connection(&inner.path, false)?;
            let mut dst = Connection::open(&dest)?;
            let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
            backup.run_to_completion(256, std::time::Duration::from_millis(0), None)?;
            Ok(())
        })
        .await
    }
}

async fn run_blocking<T, F>(f: F) -> Result<T, DbError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, DbError> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| DbError::Task(e.to_string()))?
}

fn open_connection(path: &Path, writer: bool) -> Result<Connection, DbError> {
    let flags = if writer {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    if writer {
        // WAL: readers never block the writer. synchronous=FULL: a commit is on disk before
        // it returns, so an acknowledged message or sync state survives power loss too.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
    }
    conn.pragma_update(None, "cache_size", -8192)?; // 8 MiB per connection
    Ok(conn)
}

fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<(), DbError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = migrations.len() as i64;
    if version > known {
        return Err(DbError::SchemaTooNew { found: version, known });
    }
    for (i, sql) in migrations.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn migrates_writes_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let migrations = ["CREATE TABLE t(x INTEGER);", "ALTER TABLE t ADD COLUMN y TEXT;"];
        let db = Db::open(&path, &migrations).unwrap();
        db.write(|tx| {
            tx.execute("INSERT INTO t(x, y) VALUES (1, 'a')", [])?;
            Ok::<_, DbError>(())
        })
        .await
        .unwrap();
        let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(n, 1);
        drop(db);
        // Reopening does not re-run migrations.
        let db = Db::open(&path, &migrations).unwrap();
        let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(n, 1);
        // A build that knows fewer migrations refuses the newer schema.
        drop(db);
        assert!(matches!(Db::open(&path, &migrations[..1]), Err(DbError::SchemaTooNew { found: 2, known: 1 })));
    }

    #[tokio::test]
    async fn a_failed_write_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db"), &["CREATE TABLE t(x INTEGER);"]).unwrap();
        let r: Result<(), DbError> = db
            .write(|tx| {
                tx.execute("INSERT INTO t(x) VALUES (1)", [])?;
                Err(DbError::Task("boom".into()))
            })
            .await;
        assert!(r.is_err());
        let n: i64 = db.read(|c| Ok(c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)).await.unwrap();
        assert_eq!(n, 0);
    }
}
