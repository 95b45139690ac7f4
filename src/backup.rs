//! Consistent backups of the data directory while the server runs.
//!
//! Each database is copied with SQLite's online backup (a consistent snapshot even while
//! writers run). Device state is copied *before* the mail store, so a restored pair never
//! has devices that know of changes the store lacks: after a restore, devices sync forward.
//! Restore: stop the server and copy the backup's files into the data directory.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::state::sqlite::STATE_FILE;
use crate::store::embedded::STORE_FILE;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot create {0}: {1}")]
    Create(PathBuf, std::io::Error),
    #[error("{0} already exists")]
    Exists(PathBuf),
    #[error("backup of {0} failed: {1}")]
    Sqlite(String, rusqlite::Error),
    #[error("{0} holds no pushsync data")]
    NoData(PathBuf),
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BackupReport {
    pub directory: PathBuf,
    pub files: Vec<String>,
    pub bytes: u64,
}

/// Files copied as they are (small, rarely written).
const PLAIN_FILES: &[&str] = &["admin.token", "tls/cert.pem", "tls/key.pem"];

fn copy_database(src: &Path, dst: &Path) -> Result<u64, BackupError> {
    let name = src.display().to_string();
    let from = rusqlite::Connection::open_with_flags(src, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| BackupError::Sqlite(name.clone(), e))?;
    from.busy_timeout(std::time::Duration::from_secs(30)).map_err(|e| BackupError::Sqlite(name.clone(), e))?;
    let mut to = rusqlite::Connection::open(dst).map_err(|e| BackupError::Sqlite(name.clone(), e))?;
    let backup = rusqlite::backup::Backup::new(&from, &mut to).map_err(|e| BackupError::Sqlite(name.clone(), e))?;
    backup.run_to_completion(1024, std::time::Duration::from_millis(0), None).map_err(|e| BackupError::Sqlite(name.clone(), e))?;
    drop(backup);
    Ok(std::fs::metadata(dst).map(|m| m.len()).unwrap_or(0))
}

/// Backs `data_dir` up into a new directory `dest` (created; must not exist).
pub fn backup_data_dir(data_dir: &Path, dest: &Path) -> Result<BackupReport, BackupError> {
    if !data_dir.join(STATE_FILE).exists() && !data_dir.join(STORE_FILE).exists() {
        return Err(BackupError::NoData(data_dir.to_path_buf()));
    }
    if dest.exists() && std::fs::read_dir(dest).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(BackupError::Exists(dest.to_path_buf()));
    }
    std::fs::create_dir_all(dest).map_err(|e| BackupError::Create(dest.to_path_buf(), e))?;
    let mut report = BackupReport { directory: dest.to_path_buf(), files: Vec::new(), bytes: 0 };
    // State before store: see the module docs.
    for db in [STATE_FILE, STORE_FILE] {
        let src = data_dir.join(db);
        if src.exists() {
            report.bytes += copy_database(&src, &dest.join(db))?;
            report.files.push(db.to_string());
        }
    }
    for f in PLAIN_FILES {
        let src = data_dir.join(f);
        if src.exists() {
            let dst = dest.join(f);
            if let Some(parent) = dst.parent() {
                std::fs::create_dir_all(parent).map_err(|e| BackupError::Create(parent.to_path_buf(), e))?;
            }
            report.bytes += std::fs::copy(&src, &dst).map_err(|e| BackupError::Create(dst.clone(), e))?;
            report.files.push(f.to_string());
        }
    }
    Ok(report)
}

/// The backup the admin API runs for a live server.
pub async fn backup(app: &crate::app::App, dest: &Path) -> Result<BackupReport, BackupError> {
    let (data_dir, dest) = (app.config.data_dir.clone(), dest.to_path_buf());
    tokio::task::spawn_blocking(move || backup_data_dir(&data_dir, &dest))
        .await
        .map_err(|e| BackupError::Create(PathBuf::new(), std::io::Error::other(e.to_string())))?
}
