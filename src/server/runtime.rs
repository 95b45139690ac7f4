//! Runtime files a running server leaves in its data directory so that the command-line
//! tools started with the same `--data-dir` find it: the bound addresses (`server.json`) and
//! the admin API token (`admin.token`, readable by the owner only).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const INFO_FILE: &str = "server.json";
pub const TOKEN_FILE: &str = "admin.token";

/// What a running server announces about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    pub pid: u32,
    pub listen: SocketAddr,
    pub tls: bool,
    pub admin_listen: SocketAddr,
    pub lmtp_listen: Option<SocketAddr>,
    pub webhook_listen: Option<SocketAddr>,
    pub store: String,
}

impl RuntimeInfo {
    /// The admin API's base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_listen)
    }
}

/// Writes `bytes` to `path` readable and writable by the owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

pub fn write_info(data_dir: &Path, info: &RuntimeInfo) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(info).map_err(std::io::Error::other)?;
    write_private(&data_dir.join(INFO_FILE), text.as_bytes())
}

pub fn read_info(data_dir: &Path) -> std::io::Result<RuntimeInfo> {
    let text = std::fs::read_to_string(data_dir.join(INFO_FILE))?;
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

/// The admin token: read from the data directory, or generated (and written) when absent.
pub fn admin_token(data_dir: &Path) -> std::io::Result<String> {
    let path = token_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => {
            let token: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
            write_private(&path, token.as_bytes())?;
            Ok(token)
        }
    }
}

pub fn read_admin_token(data_dir: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(token_path(data_dir))?.trim().to_string())
}

pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TOKEN_FILE)
}

/// Removes the address file on a clean exit (the token stays for the next start).
pub fn clear_info(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(INFO_FILE));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn token_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let t1 = admin_token(dir.path()).unwrap();
        let t2 = admin_token(dir.path()).unwrap();
        assert_eq!(t1, t2);
        assert_eq!(t1.len(), 64);
        let mode = std::fs::metadata(token_path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let info = RuntimeInfo {
            pid: 1,
            listen: "127.0.0.1:1".parse().unwrap(),
            tls: true,
            admin_listen: "127.0.0.1:2".parse().unwrap(),
            lmtp_listen: None,
            webhook_listen: None,
            store: "embedded".into(),
        };
        write_info(dir.path(), &info).unwrap();
        assert_eq!(read_info(dir.path()).unwrap(), info);
        assert_eq!(info.admin_url(), "http://127.0.0.1:2");
    }
}
