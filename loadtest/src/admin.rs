//! The server's admin API, through the same client and discovery (`--data-dir` →
//! `server.json` + `admin.token`) the `pushsync` command uses.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use bytes::Bytes;
use http::{Method, StatusCode};
use pushsync::admin::client::{AdminClient, ClientError, encode};
use pushsync::server::runtime;
use serde_json::{Value, json};

pub struct Admin {
    client: AdminClient,
    pub url: String,
}

/// What a running server announced in its data directory.
pub struct Discovered {
    /// ActiveSync base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    pub admin_url: String,
    pub lmtp: Option<SocketAddr>,
    pub pid: u32,
    pub store: String,
}

/// Reads `server.json` of a running server. An unspecified listen address (0.0.0.0) is
/// reached through loopback.
pub fn discover_server(data_dir: &Path) -> anyhow::Result<Discovered> {
    let info = runtime::read_info(data_dir).with_context(|| format!("no running server found in {} (server.json)", data_dir.display()))?;
    let loopback = |a: SocketAddr| -> SocketAddr {
        if a.ip().is_unspecified() {
            let ip = if a.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
            SocketAddr::new(ip, a.port())
        } else {
            a
        }
    };
    Ok(Discovered {
        url: format!("{}://{}", if info.tls { "https" } else { "http" }, loopback(info.listen)),
        admin_url: format!("http://{}", loopback(info.admin_listen)),
        lmtp: info.lmtp_listen.map(loopback),
        pid: info.pid,
        store: info.store,
    })
}

impl Admin {
    /// The admin API from explicit URL and token, or discovered through `data_dir`.
    pub fn connect(data_dir: Option<&Path>, url: Option<&str>, token: Option<&str>) -> anyhow::Result<Admin> {
        let dir = data_dir.unwrap_or(Path::new("."));
        let url = match url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => match data_dir {
                Some(d) => discover_server(d)?.admin_url,
                None => anyhow::bail!("give --admin-url and --admin-token, or --data-dir of the running server"),
            },
        };
        let token = match token {
            Some(t) => t.to_string(),
            None => match data_dir {
                Some(d) => runtime::read_admin_token(d).with_context(|| format!("cannot read the admin token in {}", d.display()))?,
                None => anyhow::bail!("give --admin-token (or --data-dir of the running server)"),
            },
        };
        let client = AdminClient::discover(dir, Some(&url), Some(&token))?;
        Ok(Admin { client, url })
    }

    /// Delivers a raw message; returns once the store committed it.
    pub async fn deliver(&self, to: &str, raw: Vec<u8>) -> Result<(), String> {
        self.client
            .call(Method::POST, &format!("/v1/deliver?to={}", encode(to)), Some((Bytes::from(raw), "message/rfc822")))
            .await
            .map(|_| ())
            .map_err(|e| describe(&e))
    }

    pub async fn list_users(&self) -> anyhow::Result<HashSet<String>> {
        let v = self.client.json(Method::GET, "/v1/users", None).await?;
        Ok(v["users"].as_array().map(|a| a.iter().filter_map(|u| u["login"].as_str().map(str::to_string)).collect()).unwrap_or_default())
    }

    /// Creates a user with Mobile Sync enabled; false when it already exists.
    pub async fn add_user(&self, login: &str, email: &str, password: &str) -> anyhow::Result<bool> {
        let body = json!({ "login": login, "email": email, "display_name": login, "password": password, "sync": true });
        match self.client.json(Method::POST, "/v1/users", Some(body)).await {
            Ok(_) => Ok(true),
            Err(ClientError::Api { status: StatusCode::CONFLICT, .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// (Mobile Sync enabled by default?, logins explicitly enabled).
    pub async fn sync_access(&self) -> anyhow::Result<(bool, HashSet<String>)> {
        let v: Value = self.client.json(Method::GET, "/v1/sync", None).await?;
        let default = v["default"].as_str() == Some("enabled");
        let enabled = v["users"]
            .as_array()
            .map(|a| {
                a.iter().filter(|u| u["enabled"].as_bool() == Some(true)).filter_map(|u| u["login"].as_str().map(str::to_string)).collect()
            })
            .unwrap_or_default();
        Ok((default, enabled))
    }

    pub async fn enable_sync(&self, login: &str) -> anyhow::Result<()> {
        self.client.json(Method::PUT, &format!("/v1/sync/{}", encode(login)), Some(json!({ "enabled": true }))).await?;
        Ok(())
    }

    /// The OpenMetrics text of `/metrics`.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let body = self.client.call(Method::GET, "/metrics", None).await?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

/// An error as counted by kind: `admin-409`, `admin-connect`, ...
fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Api { status, message } => format!("http-{}: {message}", status.as_u16()),
        ClientError::Connect { reason, .. } => format!("connect: {reason}"),
        other => other.to_string(),
    }
}

/// The value of an unlabelled gauge or counter in OpenMetrics text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?;
        let rest = rest.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values_are_found() {
        let text =
            "# TYPE pushsync_waiting_pings gauge\npushsync_waiting_pings 42\npushsync_waiting_pings_total 7\npushsync_connections 43\n";
        assert_eq!(metric_value(text, "pushsync_waiting_pings"), Some(42.0));
        assert_eq!(metric_value(text, "pushsync_connections"), Some(43.0));
        assert_eq!(metric_value(text, "pushsync_nothing"), None);
    }
}
