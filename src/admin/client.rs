//! The admin API's client, used by the command-line tools. It finds the running server
//! through the data directory (`server.json`, `admin.token`) unless given a URL and token.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::server::runtime;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "no running server found for data directory {dir} ({reason}); start `pushsync serve` with the same --data-dir, or pass --admin-url and --admin-token"
    )]
    NoServer { dir: String, reason: String },
    #[error("cannot reach the admin API at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the admin API answered {status}: {message}")]
    Api { status: StatusCode, message: String },
    #[error("invalid response from the admin API: {0}")]
    Invalid(String),
}

pub struct AdminClient {
    base: String,
    token: String,
    actor: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// Most time one admin call may take (a restore or backup of a large store takes a while).
const CALL_TIMEOUT: Duration = Duration::from_secs(600);

impl AdminClient {
    pub fn new(base: &str, token: &str) -> Self {
        let actor = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "cli".into());
        AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            actor,
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// Finds the server through the data directory, with optional overrides.
    pub fn discover(data_dir: &Path, url: Option<&str>, token: Option<&str>) -> Result<Self, ClientError> {
        let no_server = |reason: String| ClientError::NoServer { dir: data_dir.display().to_string(), reason };
        let url = match url {
            Some(u) => u.to_string(),
            None => runtime::read_info(data_dir).map_err(|e| no_server(e.to_string()))?.admin_url(),
        };
        let token = match token {
            Some(t) => t.to_string(),
            None => runtime::read_admin_token(data_dir).map_err(|e| no_server(format!("admin token: {e}")))?,
        };
        Ok(AdminClient::new(&url, &token))
    }

    /// Sends a request; returns the body of a 2xx answer.
    pub async fn call(&self, method: Method, path: &str, body: Option<(Bytes, &str)>) -> Result<Bytes, ClientError> {
        let url = format!("{}{}", self.base, path);
        let mut builder = Request::builder()
            .method(method)
            .uri(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header("X-Pushsync-Actor", &self.actor);
        let payload = match body {
            Some((bytes, content_type)) => {
                builder = builder.header(header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let request = builder.body(Full::new(payload)).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let response = tokio::time::timeout(CALL_TIMEOUT, self.http.request(request))
            .await
            .map_err(|_| ClientError::Connect { url: url.clone(), reason: "timed out".into() })?
            .map_err(|e| ClientError::Connect { url: url.clone(), reason: e.to_string() })?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| ClientError::Invalid(e.to_string()))?.to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            return Err(ClientError::Api { status, message });
        }
        Ok(body)
    }

    pub async fn json(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, ClientError> {
        let payload = body.map(|v| (Bytes::from(v.to_string()), "application/json"));
        let bytes = self.call(method, path, payload).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Invalid(e.to_string()))
    }
}

/// Percent-encodes a path segment or query value.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
