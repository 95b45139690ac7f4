//! One simulated phone: OPTIONS, Provision (two steps), FolderSync, the initial Sync of the
//! Inbox (SyncKey 0, then windows), then Ping → (Status 2) Sync → Ping until told to stop.
//! Errors are counted by kind and retried with a bounded backoff; setup gives up after a few
//! attempts in a row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::Full;
use pushsync::wbxml::{self, Element};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::clock::{mono_ns, sleep_or_stop};
use crate::events::Event;
use crate::proto::{self, BodyOptions, SyncResult};
use crate::stats::Stats;
use crate::transport::{Channel, ReqError};
use crate::users::UserCred;

/// Most Sync windows one pass may take (a bound, not a limit a phone would have).
const MAX_WINDOWS: usize = 100_000;
/// Extra time a Ping may take beyond its heartbeat before the device calls it a timeout.
const PING_SLACK: Duration = Duration::from_secs(120);
/// Backoff bounds after an error.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How every device of a run behaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceOpts {
    pub heartbeat_secs: u32,
    /// WindowSize of the Syncs.
    pub window: usize,
    pub body: BodyOptions,
    pub request_timeout_ms: u64,
    pub protocol_version: String,
    pub device_type: String,
    /// Setup attempts in a row before the device gives up.
    pub max_setup_attempts: u32,
    /// The run's tag: messages of other runs are not reported.
    pub run_tag: String,
}

impl Default for DeviceOpts {
    fn default() -> Self {
        DeviceOpts {
            heartbeat_secs: 900,
            window: 100,
            body: BodyOptions::default(),
            request_timeout_ms: 60_000,
            protocol_version: "16.1".into(),
            device_type: "iPhone".into(),
            max_setup_attempts: 5,
            run_tag: String::new(),
        }
    }
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DevError {
    Request {
        cmd: &'static str,
        err: ReqError,
    },
    Http {
        cmd: &'static str,
        status: u16,
    },
    /// HTTP 449 or Status 142-144: the device must provision again.
    ProvisionRequired,
    Status {
        cmd: &'static str,
        status: u32,
    },
    Wbxml {
        cmd: &'static str,
    },
    Protocol {
        cmd: &'static str,
        what: &'static str,
    },
}

impl DevError {
    /// The kind, as counted in the report's `errors.by_kind`.
    pub fn kind(&self) -> String {
        match self {
            DevError::Request { cmd, err } => match err {
                ReqError::Connect(_) => "connect".into(),
                ReqError::Tls(_) => "tls".into(),
                other => format!("{}:{cmd}", other.kind()),
            },
            DevError::Http { cmd, status } => format!("http-{status}:{cmd}"),
            DevError::ProvisionRequired => "provision-required".into(),
            DevError::Status { cmd, status } => format!("status-{status}:{cmd}"),
            DevError::Wbxml { cmd } => format!("wbxml:{cmd}"),
            DevError::Protocol { cmd, what } => format!("protocol:{cmd}:{what}"),
        }
    }
}

impl std::fmt::Display for DevError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DevError::Request { cmd, err } => write!(f, "{cmd}: {err}"),
            other => f.write_str(&other.kind()),
        }
    }
}

/// Where a device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Options,
    Provision,
    FolderSync,
    InitialSync,
    Ping,
}

impl Step {
    /// Where to resume after `err` happened in this step.
    pub fn after_error(self, err: &DevError) -> Step {
        match err {
            DevError::ProvisionRequired => Step::Provision,
            DevError::Status { cmd: "Sync", status: 3 } => Step::InitialSync,
            DevError::Status { cmd: "Sync", status: 12 } | DevError::Status { cmd: "Ping", status: 7 } => Step::FolderSync,
            _ => self,
        }
    }
}

pub struct Device {
    pub user: u32,
    pub device: u16,
    pub device_id: String,
    auth: HeaderValue,
    query: String,
    channel: Channel,
    opts: Arc<DeviceOpts>,
    stats: Arc<Stats>,
    policy_key: Option<String>,
    folder_key: String,
    pub inbox: Option<String>,
    pub sync_key: String,
    heartbeat: u32,
    /// When the last response was complete (monotonic ns).
    last_response: u64,
}

fn encode_query(s: &str) -> String {
    pushsync::admin::client::encode(s)
}

impl Device {
    pub fn new(user: &UserCred, device: u16, device_id: String, channel: Channel, opts: Arc<DeviceOpts>, stats: Arc<Stats>) -> Device {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", user.login, user.password));
        let query = format!(
            "User={}&DeviceId={}&DeviceType={}",
            encode_query(&user.login),
            encode_query(&device_id),
            encode_query(&opts.device_type)
        );
        Device {
            user: user.index,
            device,
            device_id,
            auth: HeaderValue::from_str(&format!("Basic {basic}")).expect("base64 is a valid header value"),
            query,
            channel,
            heartbeat: opts.heartbeat_secs,
            opts,
            stats,
            policy_key: None,
            folder_key: "0".into(),
            inbox: None,
            sync_key: "0".into(),
            last_response: 0,
        }
    }

    /// The device id of device `device` of user number `user` in a push run.
    pub fn push_device_id(user: u32, device: u16) -> String {
        format!("LT{user:06}D{device:03}")
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.opts.request_timeout_ms)
    }

    fn request(&self, method: Method, query: &str, body: Bytes) -> Request<Full<Bytes>> {
        let target = self.channel.target();
        let mut b = Request::builder()
            .method(method)
            .uri(target.uri(query))
            .header(header::AUTHORIZATION, self.auth.clone())
            .header("MS-ASProtocolVersion", self.opts.protocol_version.as_str())
            .header(header::USER_AGENT, concat!("pushsync-loadtest/", env!("CARGO_PKG_VERSION")));
        if !target.http2 {
            b = b.header(header::HOST, target.authority.as_str());
        }
        if !body.is_empty() {
            b = b.header(header::CONTENT_TYPE, "application/vnd.ms-sync.wbxml");
        }
        if let Some(k) = &self.policy_key {
            b = b.header("X-MS-PolicyKey", k.as_str());
        }
        b.body(Full::new(body)).expect("valid request")
    }

    /// POSTs a command; the decoded response, `None` for an empty 200.
    pub async fn post(&mut self, cmd: &'static str, body: Option<&Element>, timeout: Duration) -> Result<Option<Element>, DevError> {
        let bytes = body.map(|b| Bytes::from(wbxml::encode(b))).unwrap_or_default();
        let req = self.request(Method::POST, &format!("Cmd={cmd}&{}", self.query), bytes);
        let started = Instant::now();
        let result = self.channel.send(req, timeout, &self.stats).await;
        self.last_response = mono_ns();
        let us = started.elapsed().as_micros() as u64;
        let resp = match result {
            Ok(r) => r,
            Err(err) => {
                self.stats.request(cmd, None, us);
                return Err(DevError::Request { cmd, err });
            }
        };
        let hist = (cmd != "Ping" && resp.status == 200).then_some(cmd);
        self.stats.request(cmd, hist, us);
        match resp.status {
            200 if resp.body.is_empty() => Ok(None),
            200 => wbxml::decode(&resp.body).map(Some).map_err(|_| DevError::Wbxml { cmd }),
            449 => Err(DevError::ProvisionRequired),
            status => Err(DevError::Http { cmd, status }),
        }
    }

    pub async fn options(&mut self) -> Result<(), DevError> {
        let req = self.request(Method::OPTIONS, &self.query.clone(), Bytes::new());
        let started = Instant::now();
        let r = self.channel.send(req, self.timeout(), &self.stats).await;
        let us = started.elapsed().as_micros() as u64;
        match r {
            Ok(resp) if resp.status == 200 => {
                self.stats.request("OPTIONS", Some("OPTIONS"), us);
                Ok(())
            }
            Ok(resp) => {
                self.stats.request("OPTIONS", None, us);
                Err(DevError::Http { cmd: "OPTIONS", status: resp.status })
            }
            Err(err) => {
                self.stats.request("OPTIONS", None, us);
                Err(DevError::Request { cmd: "OPTIONS", err })
            }
        }
    }

    pub async fn provision(&mut self) -> Result<(), DevError> {
        const CMD: &str = "Provision";
        self.policy_key = None;
        let first = proto::provision_request(&self.opts.protocol_version, "LoadTest");
        let doc = self.post(CMD, Some(&first), self.timeout()).await?.ok_or(DevError::Protocol { cmd: CMD, what: "empty" })?;
        let (status, key) = proto::parse_provision(&doc);
        if status != Some(1) {
            return Err(DevError::Status { cmd: CMD, status: status.unwrap_or(0) });
        }
        let temp = key.ok_or(DevError::Protocol { cmd: CMD, what: "no-temporary-key" })?;
        let doc = self
            .post(CMD, Some(&proto::provision_ack(&temp)), self.timeout())
            .await?
            .ok_or(DevError::Protocol { cmd: CMD, what: "empty" })?;
        let (_, key) = proto::parse_provision(&doc);
        self.policy_key = Some(key.ok_or(DevError::Protocol { cmd: CMD, what: "no-final-key" })?);
        Ok(())
    }

    /// FolderSync from key 0 (the device keeps no hierarchy): finds the Inbox.
    pub async fn folder_sync(&mut self) -> Result<(), DevError> {
        const CMD: &str = "FolderSync";
        self.folder_key = "0".into();
        let doc = self
            .post(CMD, Some(&proto::folder_sync_request(&self.folder_key)), self.timeout())
            .await?
            .ok_or(DevError::Protocol { cmd: CMD, what: "empty" })?;
        let r = proto::parse_folder_sync(&doc);
        match r.status {
            Some(1) => {}
            Some(s @ 142..=144) => {
                let _ = s;
                return Err(DevError::ProvisionRequired);
            }
            s => return Err(DevError::Status { cmd: CMD, status: s.unwrap_or(0) }),
        }
        if let Some(k) = r.key {
            self.folder_key = k;
        }
        let inbox = r.inbox.ok_or(DevError::Protocol { cmd: CMD, what: "no-inbox" })?;
        if self.inbox.as_ref() != Some(&inbox) {
            self.sync_key = "0".into();
        }
        self.inbox = Some(inbox);
        Ok(())
    }

    /// OPTIONS, Provision and FolderSync.
    pub async fn setup(&mut self) -> Result<(), DevError> {
        self.options().await?;
        self.provision().await?;
        self.folder_sync().await
    }

    /// Sync with SyncKey 0: the server answers with the first key and no items.
    pub async fn sync_key_zero(&mut self) -> Result<(), DevError> {
        self.sync_key = "0".into();
        let (r, _) = self.sync_window().await?;
        if r.key.is_none() {
            return Err(DevError::Protocol { cmd: "Sync", what: "no-key" });
        }
        Ok(())
    }

    /// One Sync request from the current key; `None` result means "no changes" (empty body).
    /// Returns the parsed window and when its response was complete.
    pub async fn sync_window(&mut self) -> Result<(SyncResult, u64), DevError> {
        const CMD: &str = "Sync";
        let inbox = self.inbox.clone().ok_or(DevError::Protocol { cmd: CMD, what: "no-inbox" })?;
        let req = proto::sync_request(&inbox, &self.sync_key, self.opts.window, Some(self.opts.body));
        let doc = self.post(CMD, Some(&req), self.timeout()).await?;
        let t = self.last_response;
        let Some(doc) = doc else { return Ok((SyncResult { status: Some(1), ..SyncResult::default() }, t)) };
        let r = proto::parse_sync(&doc);
        match r.status {
            Some(1) => {}
            Some(3) => {
                self.sync_key = "0".into();
                return Err(DevError::Status { cmd: CMD, status: 3 });
            }
            Some(142..=144) => return Err(DevError::ProvisionRequired),
            s => return Err(DevError::Status { cmd: CMD, status: s.unwrap_or(0) }),
        }
        if let Some(k) = &r.key {
            self.sync_key = k.clone();
        }
        Ok((r, t))
    }

    /// Syncs until the server has nothing more, reporting injected messages seen.
    async fn sync_changes(&mut self, t_push: Option<u64>, events: &UnboundedSender<Event>) -> Result<(), DevError> {
        for _ in 0..MAX_WINDOWS {
            let (r, t_seen) = self.sync_window().await?;
            for s in &r.subjects {
                if let Some(msg) = proto::parse_subject(&self.opts.run_tag, s) {
                    let _ = events.send(Event::Seen { user: self.user, device: self.device, msg, t_seen, t_push });
                }
            }
            if !r.more_available {
                return Ok(());
            }
        }
        Ok(())
    }

    async fn initial_sync(&mut self, events: &UnboundedSender<Event>) -> Result<(), DevError> {
        self.sync_key_zero().await?;
        self.sync_changes(None, events).await
    }

    /// One Ping and what follows it; returns the next step.
    async fn ping(&mut self, events: &UnboundedSender<Event>) -> Result<Step, DevError> {
        const CMD: &str = "Ping";
        let inbox = self.inbox.clone().ok_or(DevError::Protocol { cmd: CMD, what: "no-inbox" })?;
        let req = proto::ping_request(self.heartbeat, &[&inbox]);
        let timeout = Duration::from_secs(self.heartbeat as u64) + PING_SLACK;
        self.stats.waiting_add(1);
        let r = self.post(CMD, Some(&req), timeout).await;
        self.stats.waiting_add(-1);
        let t_push = self.last_response;
        let doc = r?.ok_or(DevError::Protocol { cmd: CMD, what: "empty" })?;
        let p = proto::parse_ping(&doc);
        let status = p.status.unwrap_or(0);
        self.stats.ping_status(&status.to_string());
        match status {
            1 | 3 => Ok(Step::Ping),
            2 => {
                self.sync_changes(Some(t_push), events).await?;
                Ok(Step::Ping)
            }
            5 => {
                // The server's bound: use it, as a phone does.
                if let Some(h) = p.heartbeat {
                    self.heartbeat = h;
                }
                Ok(Step::Ping)
            }
            7 => Ok(Step::FolderSync),
            142..=144 => Err(DevError::ProvisionRequired),
            s => Err(DevError::Status { cmd: CMD, status: s }),
        }
    }

    async fn step(&mut self, step: Step, events: &UnboundedSender<Event>) -> Result<Step, DevError> {
        match step {
            Step::Options => self.options().await.map(|_| Step::Provision),
            Step::Provision => self.provision().await.map(|_| Step::FolderSync),
            Step::FolderSync => self.folder_sync().await.map(|_| if self.sync_key == "0" { Step::InitialSync } else { Step::Ping }),
            Step::InitialSync => self.initial_sync(events).await.map(|_| Step::Ping),
            Step::Ping => self.ping(events).await,
        }
    }

    /// Lives until `stop`: sets up, reports Ready, then pings.
    pub async fn run(mut self, events: UnboundedSender<Event>, stop: CancellationToken) {
        let mut step = Step::Options;
        let mut ready = false;
        let mut failures = 0u32;
        let setup_started = Instant::now();
        loop {
            let result = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                r = self.step(step, &events) => r,
            };
            match result {
                Ok(next) => {
                    failures = 0;
                    if !ready && next == Step::Ping {
                        ready = true;
                        self.stats.device_ready();
                        self.stats.latency("setup", setup_started.elapsed().as_micros() as u64);
                        let _ = events.send(Event::Ready { user: self.user, device: self.device, t: mono_ns() });
                    }
                    step = next;
                }
                Err(e) => {
                    self.stats.error(&e.kind());
                    failures += 1;
                    if !ready && failures >= self.opts.max_setup_attempts {
                        self.stats.device_failed();
                        let _ = events.send(Event::Failed { user: self.user, device: self.device, error: e.to_string() });
                        break;
                    }
                    step = step.after_error(&e);
                    if matches!(e, DevError::Request { .. }) {
                        self.channel.close();
                    }
                    let backoff = (BACKOFF_MIN * 2u32.saturating_pow(failures.saturating_sub(1).min(8))).min(BACKOFF_MAX);
                    let jitter = Duration::from_millis(rand::random::<u64>() % 250);
                    if !sleep_or_stop(backoff + jitter, &stop).await {
                        break;
                    }
                }
            }
        }
        self.channel.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_stable_kinds_and_restart_points() {
        let e = DevError::Request { cmd: "Ping", err: ReqError::Timeout };
        assert_eq!(e.kind(), "timeout:Ping");
        assert_eq!(DevError::Request { cmd: "Sync", err: ReqError::Connect("refused".into()) }.kind(), "connect");
        assert_eq!(DevError::Http { cmd: "Sync", status: 503 }.kind(), "http-503:Sync");
        assert_eq!(Step::Ping.after_error(&e), Step::Ping);
        assert_eq!(Step::Ping.after_error(&DevError::ProvisionRequired), Step::Provision);
        assert_eq!(Step::Ping.after_error(&DevError::Status { cmd: "Sync", status: 3 }), Step::InitialSync);
        assert_eq!(Step::Ping.after_error(&DevError::Status { cmd: "Ping", status: 7 }), Step::FolderSync);
        assert_eq!(Device::push_device_id(12, 3), "LT000012D003");
    }
}
