//! The network edge: listeners, TLS, HTTP, authentication, limits and graceful shutdown.
//!
//! Owns sockets and HTTP; hands each ActiveSync request to [`crate::eas`] once it knows who
//! is asking. It must not interpret WBXML or touch the store itself.

pub mod auth;
pub mod http;
pub mod listener;
pub mod runtime;
pub mod tls;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::app::App;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// How long shutdown waits for in-flight requests.
const DRAIN: Duration = Duration::from_secs(10);

/// A started server: its bound addresses and a handle to stop it.
pub struct RunningServer {
    pub app: Arc<App>,
    pub info: runtime::RuntimeInfo,
    pub admin_token: String,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningServer {
    pub fn listen_addr(&self) -> SocketAddr {
        self.info.listen
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.info.admin_listen
    }

    /// Graceful shutdown: every waiting Ping is answered (Status 1) so phones reconnect at
    /// once, in-flight requests finish, listeners close.
    pub async fn shutdown(self) {
        let woken = self.app.hub.wake_all_for_shutdown();
        tracing::info!(waiting_answered = woken, "shutting down");
        self.app.shutdown.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(store) = &self.app.embedded {
            store.close_feeds();
        }
        if let Some(store) = &self.app.imap {
            store.close();
        }
        runtime::clear_info(&self.app.config.data_dir);
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

/// Periodic work: usage counters to disk every minute, expired deleted items purged hourly.
async fn housekeeping(app: Arc<App>) {
    let mut minute = tokio::time::interval(Duration::from_secs(60));
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = minute.tick() => {}
            _ = app.shutdown.cancelled() => break,
        }
        ticks += 1;
        if let Err(e) = app.usage.flush(app.admin.as_ref()).await {
            tracing::warn!(error = %e, "could not record usage");
        }
        if ticks % 60 == 1
            && let Some(store) = &app.embedded
        {
            match store.purge_expired().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(purged = n, "deleted items past retention purged"),
                Err(e) => tracing::warn!(error = %e, "retention purge failed"),
            }
        }
    }
    // Last counts before exit.
    let _ = app.usage.flush(app.admin.as_ref()).await;
}

/// Binds every configured listener and starts serving.
pub async fn start(app: Arc<App>) -> Result<RunningServer, ServerError> {
    let config = &app.config;
    let eas_listener = listener::bind(config.listen, "ActiveSync").await?;
    let admin_listener = listener::bind(config.admin_listen, "admin").await?;
    let tls = if config.plain_http {
        None
    } else {
        Some(TlsAcceptor::from(tls::server_config(config.tls_cert.as_deref(), config.tls_key.as_deref(), &config.data_dir)?))
    };
    let admin_token = runtime::admin_token(&config.data_dir)?;
    let info = runtime::RuntimeInfo {
        pid: std::process::id(),
        listen: eas_listener.local_addr()?,
        tls: tls.is_some(),
        admin_listen: admin_listener.local_addr()?,
        lmtp_listen: None,
        webhook_listen: None,
        store: app.store.kind().to_string(),
    };

    let mut info = info;
    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(listener::serve(app.clone(), eas_listener, tls, app.shutdown.clone(), DRAIN)));
    tasks.push(tokio::spawn(crate::admin::api::serve(app.clone(), admin_listener, admin_token.clone())));
    if let (Some(addr), Some(store)) = (config.lmtp_listen, app.embedded.clone()) {
        let lmtp = listener::bind(addr, "LMTP").await?;
        info.lmtp_listen = Some(lmtp.local_addr()?);
        tasks.push(tokio::spawn(crate::delivery::lmtp::serve(app.clone(), store, lmtp)));
    }
    if let Some(addr) = config.webhook.listen {
        match (app.imap.clone(), config.webhook.secret.clone()) {
            (Some(store), Some(secret)) => {
                let hook = listener::bind(addr, "push webhook").await?;
                info.webhook_listen = Some(hook.local_addr()?);
                tasks.push(tokio::spawn(webhook::serve(store, hook, secret, app.shutdown.clone())));
            }
            _ => tracing::warn!("webhook.listen is set but the store is not IMAP (or no secret): the webhook is off"),
        }
    }
    tasks.push(tokio::spawn(housekeeping(app.clone())));

    runtime::write_info(&config.data_dir, &info)?;
    tracing::info!(listen = %info.listen, tls = info.tls, admin = %info.admin_listen, store = %info.store, "pushsync is serving");
    Ok(RunningServer { app, info, admin_token, tasks })
}
