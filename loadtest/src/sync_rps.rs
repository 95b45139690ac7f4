//! `sync-rps`: how cheap a Sync that finds nothing new is. K devices of one user, each fully
//! synced, send no-change Syncs back to back over their own keep-alive connection (HTTPS when
//! the URL says so) for a fixed time; reports requests per second, latency and the server's
//! CPU time per request. This is what a fleet of phones that poll instead of push costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

use crate::cli::SyncRpsArgs;
use crate::device::{DevError, Device, DeviceOpts};
use crate::probe::Probe;
use crate::proto::BodyOptions;
use crate::report::{Errors, LatencySummary, fmt_bytes};
use crate::run::{admin_of, resolve, target_spec};
use crate::stats::{Stats, new_hist, record};
use crate::transport::{Channel, Target};
use crate::users::{self, UserCred};

pub const SYNC_RPS_SCHEMA_ID: &str = "pushsync-loadtest/sync-rps/v1";

/// Most windows a device takes to catch up before measuring (a bound, not an expectation).
const MAX_CATCH_UP_WINDOWS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRpsReport {
    pub schema: String,
    pub tool_version: String,
    pub started_at: String,
    pub url: String,
    pub tls: bool,
    pub http_version: String,
    pub user: String,
    pub devices: u64,
    /// Measured phase only (after the warm-up).
    pub secs: f64,
    pub requests: u64,
    pub requests_per_sec: f64,
    /// Requests whose response carried any change (should be 0: nothing is delivered meanwhile).
    pub responses_with_changes: u64,
    pub latency: LatencySummary,
    pub errors: Errors,
    /// Server CPU time over the measured phase, when `--server-pid` was given.
    pub server_cpu_secs: Option<f64>,
    pub server_cpu_us_per_request: Option<f64>,
    pub server_rss_bytes: Option<u64>,
}

pub async fn run(args: SyncRpsArgs) -> anyhow::Result<SyncRpsReport> {
    let bound = args.warmup + args.duration + Duration::from_secs(300);
    tokio::time::timeout(bound, bench(args)).await.map_err(|_| anyhow::anyhow!("sync-rps did not finish within {bound:?}"))?
}

async fn bench(args: SyncRpsArgs) -> anyhow::Result<SyncRpsReport> {
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let t0 = Instant::now();
    let _ = crate::split::raise_nofile_limit();
    let sa = &args.server;
    let resolved = resolve(sa)?;
    let user = UserCred {
        index: 0,
        login: args.user.clone(),
        password: sa.password.clone(),
        address: if args.user.contains('@') { args.user.clone() } else { format!("{}@{}", args.user, sa.mail_domain) },
    };
    if let Ok(a) = admin_of(sa) {
        users::ensure(Arc::new(a), std::slice::from_ref(&user), 1, |_| {}).await?;
    }
    let target = Target::resolve(&target_spec(sa, &resolved.url)).await?;
    let opts = Arc::new(DeviceOpts {
        window: 512,
        body: BodyOptions { body_type: sa.body_type, truncation: sa.truncation },
        request_timeout_ms: sa.request_timeout.as_millis() as u64,
        protocol_version: sa.protocol_version.clone(),
        ..DeviceOpts::default()
    });
    let stats = Arc::new(Stats::default());
    let k = args.devices.max(1);
    let probe = resolved.server_pid.map(|pid| Probe::new(pid, t0)).transpose()?;
    let barrier = Arc::new(Barrier::new(k + 1));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let changes = Arc::new(AtomicU64::new(0));
    let deadline_total = args.warmup + args.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..k {
        let mut dev = Device::new(&user, i as u16, format!("LTRPS{i:04}"), Channel::own(target.clone()), opts.clone(), stats.clone());
        let (barrier, measuring, changes) = (barrier.clone(), measuring.clone(), changes.clone());
        tasks.spawn(async move {
            let mut hist = new_hist();
            let mut errors: Vec<DevError> = Vec::new();
            let ready: Result<(), DevError> = async {
                dev.setup().await?;
                dev.sync_key_zero().await?;
                for _ in 0..MAX_CATCH_UP_WINDOWS {
                    if !dev.sync_window().await?.0.more_available {
                        break;
                    }
                }
                Ok(())
            }
            .await;
            barrier.wait().await;
            if let Err(e) = ready {
                errors.push(e);
                return (hist, errors);
            }
            let start = Instant::now();
            while start.elapsed() < deadline_total {
                let t = Instant::now();
                match dev.sync_window().await {
                    Ok((r, _)) => {
                        if measuring.load(Ordering::Relaxed) {
                            record(&mut hist, t.elapsed().as_micros() as u64);
                            if r.adds > 0 || !r.subjects.is_empty() {
                                changes.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    Err(e) => {
                        if measuring.load(Ordering::Relaxed) {
                            errors.push(e);
                        }
                        // A bounded pause, so a failing server is not hammered.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            (hist, errors)
        });
    }
    barrier.wait().await;
    tokio::time::sleep(args.warmup).await;
    let before = probe.as_ref().map(|p| p.sample()).transpose()?;
    measuring.store(true, Ordering::Relaxed);
    let measure_started = Instant::now();
    tokio::time::sleep(args.duration).await;
    measuring.store(false, Ordering::Relaxed);
    let secs = measure_started.elapsed().as_secs_f64();
    let after = probe.as_ref().map(|p| p.sample()).transpose()?;

    let mut hist = new_hist();
    let mut errors = Errors::default();
    while let Some(r) = tasks.join_next().await {
        let (h, errs) = r.context("a device task panicked")?;
        hist.add(&h).map_err(|e| anyhow::anyhow!("cannot merge histograms: {e}"))?;
        for e in errs {
            *errors.by_kind.entry(e.kind()).or_default() += 1;
        }
    }
    errors.total = errors.by_kind.values().sum();
    let requests = hist.len();
    let cpu = match (&before, &after) {
        (Some(b), Some(a)) => Some(a.cpu_secs - b.cpu_secs),
        _ => None,
    };
    let report = SyncRpsReport {
        schema: SYNC_RPS_SCHEMA_ID.into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        started_at,
        url: resolved.url.clone(),
        tls: resolved.url.starts_with("https"),
        http_version: if sa.http2 { "2".into() } else { "1.1".into() },
        user: user.login.clone(),
        devices: k as u64,
        secs,
        requests,
        requests_per_sec: requests as f64 / secs.max(1e-9),
        responses_with_changes: changes.load(Ordering::Relaxed),
        latency: LatencySummary::of(&hist),
        errors,
        server_cpu_secs: cpu,
        server_cpu_us_per_request: cpu.filter(|_| requests > 0).map(|c| c * 1e6 / requests as f64),
        server_rss_bytes: after.map(|a| a.rss_bytes),
    };
    if let Some(path) = &sa.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(report)
}

/// The summary printed at the end.
pub fn summary(r: &SyncRpsReport) -> String {
    let l = &r.latency;
    let errors = if r.errors.by_kind.is_empty() {
        "none".to_string()
    } else {
        r.errors.by_kind.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
    };
    let mut out = format!(
        "\npushsync-loadtest sync-rps: {} device(s) of {} sending no-change Syncs, HTTP/{}{}\n\n  \
         requests     {} in {:.1} s: {:.0} per second ({} with changes)\n  \
         latency      p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms\n  \
         errors       {} ({errors})\n",
        r.devices,
        r.user,
        r.http_version,
        if r.tls { " over TLS" } else { ", plain" },
        r.requests,
        r.secs,
        r.requests_per_sec,
        r.responses_with_changes,
        l.p50_ms,
        l.p90_ms,
        l.p99_ms,
        l.p999_ms,
        l.max_ms,
        r.errors.total,
    );
    if let (Some(cpu), Some(per)) = (r.server_cpu_secs, r.server_cpu_us_per_request) {
        out.push_str(&format!(
            "  server       CPU {cpu:.2} s ({per:.0} µs per request), RSS {}\n",
            r.server_rss_bytes.map(|b| fmt_bytes(b as f64)).unwrap_or_else(|| "-".into())
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_the_rate_and_the_server_cost() {
        let r = SyncRpsReport {
            schema: SYNC_RPS_SCHEMA_ID.into(),
            tool_version: "0".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            url: "https://127.0.0.1:1".into(),
            tls: true,
            http_version: "1.1".into(),
            user: "u".into(),
            devices: 4,
            secs: 10.0,
            requests: 12_345,
            requests_per_sec: 1234.5,
            responses_with_changes: 0,
            latency: LatencySummary::default(),
            errors: Errors::default(),
            server_cpu_secs: Some(5.0),
            server_cpu_us_per_request: Some(405.0),
            server_rss_bytes: Some(50 << 20),
        };
        let s = summary(&r);
        assert!(s.contains("1234 per second") || s.contains("1235 per second"), "{s}");
        assert!(s.contains("over TLS"), "{s}");
        assert!(s.contains("405 µs per request"), "{s}");
        let back: SyncRpsReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
