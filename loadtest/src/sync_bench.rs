//! `sync-bench`: the initial sync of one large Inbox by K devices at once (a user's phones
//! after a reset, or a migration wave). Reports items per second, per-window latency and
//! the server's memory while it happens. Optionally seeds the Inbox first.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Barrier;

use crate::cli::SyncBenchArgs;
use crate::device::{DevError, Device, DeviceOpts};
use crate::probe::{self, Probe};
use crate::progress::Progress;
use crate::proto::{self, BodyOptions};
use crate::report::{self, Errors, LatencySummary, SyncBenchConfig, SyncBenchReport, SyncBenchServer};
use crate::run::{admin_of, resolve, target_spec};
use crate::stats::{Stats, merge_hists, new_hist, record};
use crate::transport::{Channel, Target};
use crate::users::{self, UserCred};

/// Size of each seeded message.
const SEED_MESSAGE_BYTES: usize = 2048;

struct DeviceResult {
    items: u64,
    windows: u64,
    secs: f64,
    hist: hdrhistogram::Histogram<u64>,
    error: Option<DevError>,
}

/// SyncKey 0, then GetItemEstimate of the Inbox.
async fn estimate(d: &mut Device) -> Result<Option<u64>, DevError> {
    d.sync_key_zero().await?;
    let inbox = d.inbox.clone().unwrap_or_default();
    let key = d.sync_key.clone();
    let doc = d.post("GetItemEstimate", Some(&proto::item_estimate_request(&inbox, &key)), Duration::from_secs(120)).await?;
    Ok(doc.as_ref().and_then(proto::parse_item_estimate))
}

pub async fn run(args: SyncBenchArgs) -> anyhow::Result<SyncBenchReport> {
    let limit = args.timeout;
    tokio::time::timeout(limit, bench(args)).await.map_err(|_| anyhow::anyhow!("sync-bench did not finish within {limit:?} (--timeout)"))?
}

async fn bench(args: SyncBenchArgs) -> anyhow::Result<SyncBenchReport> {
    let t0 = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let _ = crate::split::raise_nofile_limit();
    let sa = &args.server;
    let mut progress = Progress::new(sa.quiet);
    let resolved = resolve(sa)?;
    let admin = admin_of(sa).ok().map(Arc::new);
    let user = UserCred {
        index: 0,
        login: args.user.clone(),
        password: sa.password.clone(),
        address: if args.user.contains('@') { args.user.clone() } else { format!("{}@{}", args.user, sa.mail_domain) },
    };
    if let Some(a) = &admin {
        users::ensure(a.clone(), std::slice::from_ref(&user), 1, |_| {}).await?;
    }
    let target = Target::resolve(&target_spec(sa, &resolved.url)).await?;
    let opts = Arc::new(DeviceOpts {
        window: args.window.max(1),
        body: BodyOptions { body_type: sa.body_type, truncation: sa.truncation },
        request_timeout_ms: sa.request_timeout.as_millis() as u64,
        protocol_version: sa.protocol_version.clone(),
        ..DeviceOpts::default()
    });
    let stats = Arc::new(Stats::default());

    // How many items the Inbox has, and seeding up to --seed.
    let mut probe_dev = Device::new(&user, 0, "LTSYNCPROBE".into(), Channel::own(target.clone()), opts.clone(), stats.clone());
    probe_dev.setup().await.map_err(|e| anyhow::anyhow!("the probe device cannot set up: {e}"))?;
    let mut items = estimate(&mut probe_dev).await.map_err(|e| anyhow::anyhow!("GetItemEstimate failed: {e}"))?;
    let mut seeded = 0u64;
    let seed_started = Instant::now();
    if let Some(want) = args.seed {
        let have = items.unwrap_or(0);
        if have < want {
            let admin = admin.clone().context("--seed needs the admin API (--data-dir, or --admin-url and --admin-token)")?;
            let need = want - have;
            progress.phase("seed", Some(need));
            let next = Arc::new(AtomicUsize::new(0));
            let done = Arc::new(AtomicUsize::new(0));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..args.seed_concurrency.max(1) {
                let (admin, next, done, user) = (admin.clone(), next.clone(), done.clone(), user.clone());
                tasks.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed) as u64;
                        if i >= need {
                            return Ok::<(), anyhow::Error>(());
                        }
                        let raw = proto::message_of_size("seed", have + i + 1, &user.address, SEED_MESSAGE_BYTES);
                        admin.deliver(&user.address, raw).await.map_err(|e| anyhow::anyhow!("seeding failed: {e}"))?;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            loop {
                tokio::select! {
                    r = tasks.join_next() => match r {
                        Some(r) => r??,
                        None => break,
                    },
                    _ = tokio::time::sleep(Duration::from_millis(250)) => progress.update(done.load(Ordering::Relaxed) as u64, "delivering through the admin API".into()),
                }
            }
            seeded = need;
            items = estimate(&mut probe_dev).await.map_err(|e| anyhow::anyhow!("GetItemEstimate failed: {e}"))?;
            progress.println(format!(
                "seeded {need} messages in {:.1} s; the Inbox now holds {}",
                seed_started.elapsed().as_secs_f64(),
                items.map(|n| n.to_string()).unwrap_or_else(|| "?".into())
            ));
        }
    }
    let seed_secs = if seeded > 0 { seed_started.elapsed().as_secs_f64() } else { 0.0 };
    drop(probe_dev);

    // The devices: set up first, then all sync at once.
    let k = args.devices.max(1);
    let probe = resolved.server_pid.map(|pid| Probe::new(pid, t0)).transpose()?.map(Arc::new);
    progress.phase("sync", items.map(|n| n * k as u64));
    let barrier = Arc::new(Barrier::new(k + 1));
    let synced = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..k {
        let mut dev = Device::new(&user, i as u16, format!("LTSYNC{i:03}"), Channel::own(target.clone()), opts.clone(), stats.clone());
        let (barrier, synced) = (barrier.clone(), synced.clone());
        tasks.spawn(async move {
            let setup = dev.setup().await;
            barrier.wait().await;
            let mut r = DeviceResult { items: 0, windows: 0, secs: 0.0, hist: new_hist(), error: None };
            if let Err(e) = setup {
                r.error = Some(e);
                return r;
            }
            let started = Instant::now();
            let result: Result<(), DevError> = async {
                dev.sync_key_zero().await?;
                loop {
                    let w = Instant::now();
                    let (s, _) = dev.sync_window().await?;
                    record(&mut r.hist, w.elapsed().as_micros() as u64);
                    r.windows += 1;
                    r.items += s.adds as u64;
                    synced.fetch_add(s.adds, Ordering::Relaxed);
                    if !s.more_available {
                        return Ok(());
                    }
                }
            }
            .await;
            r.secs = started.elapsed().as_secs_f64();
            r.error = result.err();
            r
        });
    }
    let before = probe.as_ref().map(|p| p.sample()).transpose()?;
    barrier.wait().await;
    let sync_started = Instant::now();
    let sampler_stop = tokio_util::sync::CancellationToken::new();
    let samples = probe.as_ref().map(|p| probe::spawn_sampler(p.clone(), Duration::from_millis(250), sampler_stop.clone()));
    let mut results = Vec::new();
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                Some(r) => results.push(r.context("a device task panicked")?),
                None => break,
            },
            _ = tokio::time::sleep(Duration::from_millis(250)) => progress.update(synced.load(Ordering::Relaxed) as u64, format!("{} of {k} devices done", results.len())),
        }
    }
    let total_secs = sync_started.elapsed().as_secs_f64();
    sampler_stop.cancel();
    let after = probe.as_ref().map(|p| p.sample()).transpose()?;
    progress.finish();

    let mut window_hists = std::collections::BTreeMap::new();
    let mut device_hist = new_hist();
    let mut errors = Errors { total: 0, by_kind: stats.snapshot().counters.errors };
    for r in &results {
        merge_hists(&mut window_hists, &[("w".to_string(), r.hist.clone())].into());
        if r.error.is_none() {
            record(&mut device_hist, (r.secs * 1e6) as u64);
        }
        if let Some(e) = &r.error {
            *errors.by_kind.entry(e.kind()).or_default() += 1;
        }
    }
    errors.total = errors.by_kind.values().sum();
    let window_hist = window_hists.remove("w").unwrap_or_else(new_hist);
    let items_total: u64 = results.iter().map(|r| r.items).sum();
    let server = match (&probe, before, after) {
        (Some(p), Some(b), Some(a)) => {
            let samples = samples.map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).clone()).unwrap_or_default();
            let peak = samples.iter().map(|s| s.rss_bytes).chain([b.rss_bytes, a.rss_bytes]).max().unwrap_or(0);
            Some(SyncBenchServer {
                pid: p.pid(),
                rss_before_bytes: b.rss_bytes,
                rss_peak_bytes: peak,
                rss_after_bytes: a.rss_bytes,
                cpu_secs: a.cpu_secs - b.cpu_secs,
                samples,
            })
        }
        _ => None,
    };
    let report = SyncBenchReport {
        schema: report::SYNC_BENCH_SCHEMA_ID.into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        started_at,
        config: SyncBenchConfig {
            url: resolved.url.clone(),
            http_version: if sa.http2 { "2".into() } else { "1.1".into() },
            tls: resolved.url.starts_with("https"),
            user: user.login.clone(),
            devices: k as u64,
            window: opts.window as u64,
            body_type: sa.body_type as u64,
            truncation: sa.truncation as u64,
            seeded,
            folder_items: items,
        },
        seed_secs,
        total_secs,
        items_total,
        items_per_sec: items_total as f64 / total_secs.max(1e-9),
        items_per_device: results.iter().map(|r| r.items).collect(),
        windows: results.iter().map(|r| r.windows).sum(),
        window_latency: LatencySummary::of(&window_hist),
        device_secs: LatencySummary::of(&device_hist),
        errors,
        server,
    };
    if let Some(path) = &sa.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(report)
}
