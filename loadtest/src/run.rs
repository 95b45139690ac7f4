//! The push benchmark from start to report: users, worker plan, ramp, settle, injection,
//! drain, stop, report.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rand::Rng;
use tokio::sync::Semaphore;
use tokio::sync::mpsc::unbounded_channel;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin, Discovered};
use crate::cli::{RunArgs, ServerArgs};
use crate::clock::mono_ns;
use crate::device::DeviceOpts;
use crate::events::Event;
use crate::fleet::{self, FleetSpec};
use crate::inject::{InjectKind, Injector};
use crate::probe::{self, Probe, ProcSample};
use crate::progress::Progress;
use crate::proto::{self, BodyOptions};
use crate::report::{
    self, CpuPhases, Devices, Errors, FromSend, LatencySummary, Messages, Phases, Report, Requests, RunConfig, ServerReport,
};
use crate::split;
use crate::stats::{StatsData, encode_hist};
use crate::tracker::Tracker;
use crate::transport::{Target, TargetSpec};
use crate::users::{self, UserCred};
use crate::worker::WorkerHandle;

/// How long the coordinator waits for every process to report its last statistics.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How often processes report counters.
const STATS_INTERVAL_MS: u64 = 500;

/// The server as the options describe it.
pub struct Resolved {
    pub url: String,
    pub discovered: Option<Discovered>,
    pub server_pid: Option<u32>,
}

pub fn resolve(args: &ServerArgs) -> anyhow::Result<Resolved> {
    let discovered = args.data_dir.as_deref().map(admin::discover_server).transpose()?;
    let url = match (&args.url, &discovered) {
        (Some(u), _) => u.clone(),
        (None, Some(d)) => d.url.clone(),
        (None, None) => bail!("give --url (and the admin API), or --data-dir of the running server"),
    };
    let server_pid = match args.server_pid.as_deref() {
        None => None,
        Some("auto") => Some(discovered.as_ref().context("--server-pid auto needs --data-dir")?.pid),
        Some(n) => Some(n.parse().with_context(|| format!("--server-pid {n:?} is not a PID"))?),
    };
    Ok(Resolved { url, discovered, server_pid })
}

pub fn admin_of(args: &ServerArgs) -> anyhow::Result<Admin> {
    Admin::connect(args.data_dir.as_deref(), args.admin_url.as_deref(), args.admin_token.as_deref())
}

pub fn target_spec(args: &ServerArgs, url: &str) -> TargetSpec {
    TargetSpec {
        url: url.to_string(),
        insecure: args.insecure,
        ca_cert: args.ca_cert.clone(),
        http2: args.http2,
        devices_per_conn: args.devices_per_conn.max(1),
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn merged(stats: &Mutex<Vec<StatsData>>) -> StatsData {
    let mut out = StatsData::default();
    for s in lock(stats).iter() {
        out.merge(s);
    }
    out
}

fn cpu(probe: &Option<Arc<Probe>>) -> Option<ProcSample> {
    probe.as_ref().and_then(|p| p.sample().ok())
}

fn live(tracker: &Tracker, stats: &StatsData, rss: Option<u64>) -> String {
    let p = LatencySummary::of(&tracker.push);
    let push = if p.count > 0 { format!(" | push p50 {:.1} p99 {:.1} ms", p.p50_ms, p.p99_ms) } else { String::new() };
    let rss = rss.map(|r| format!(" | server {}", report::fmt_bytes(r as f64))).unwrap_or_default();
    format!(
        "ready {} failed {} waiting {} | req {} err {}{push}{rss}",
        tracker.devices_ready(),
        tracker.failed_devices,
        stats.counters.waiting,
        stats.counters.total_requests(),
        stats.counters.total_errors()
    )
}

/// Runs the push benchmark and returns its report (also written and plotted as asked).
pub async fn run(args: RunArgs) -> anyhow::Result<Report> {
    let t0 = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (nofile, _) = split::raise_nofile_limit().unwrap_or((1024, 1024));
    let sa = &args.server;
    let mut progress = Progress::new(sa.quiet);
    let resolved = resolve(sa)?;
    let need_admin = args.users_file.is_none() && !args.no_create || args.inject == InjectKind::Admin;
    let admin = match admin_of(sa) {
        Ok(a) => Some(Arc::new(a)),
        Err(e) if need_admin => return Err(e.context("the admin API is needed to create users or deliver messages")),
        Err(_) => None,
    };
    if args.devices_per_user == 0 {
        bail!("--devices-per-user must be at least 1");
    }
    if args.rate.is_nan() || args.rate <= 0.0 {
        bail!("--rate must be positive");
    }

    // Users.
    let users: Vec<UserCred> = match &args.users_file {
        Some(f) => users::read_users_file(f, &sa.mail_domain, args.users)?,
        None => users::generated(args.users.unwrap_or(10), &args.user_prefix, &sa.password, &sa.mail_domain),
    };
    if args.users_file.is_none() && !args.no_create {
        let admin = admin.clone().context("admin API")?;
        progress.phase("users", Some(users.len() as u64));
        let done = Arc::new(AtomicUsize::new(0));
        let d2 = done.clone();
        let ensure = users::ensure(admin, &users, args.create_concurrency, move |n| d2.store(n, Ordering::Relaxed));
        tokio::pin!(ensure);
        let ensured = loop {
            tokio::select! {
                r = &mut ensure => break r?,
                _ = tokio::time::sleep(Duration::from_millis(250)) => progress.update(done.load(Ordering::Relaxed) as u64, "creating test users".into()),
            }
        };
        progress.println(format!(
            "users: {} created, {} reused, Mobile Sync enabled for {} more",
            ensured.created, ensured.reused, ensured.sync_enabled
        ));
    }
    let users_secs = t0.elapsed();

    // Devices, processes.
    let run_tag = format!("{:08x}", rand::random::<u32>());
    let target = target_spec(sa, &resolved.url);
    Target::resolve(&target).await?;
    let dpu = args.devices_per_user as usize;
    let total_devices = users.len() * dpu;
    let per_conn = if sa.http2 { sa.devices_per_conn.max(1) } else { 1 };
    let budget = split::budget(args.max_conns_per_worker, nofile);
    if budget < args.max_conns_per_worker {
        progress.println(format!("note: {} open files allowed per process: at most {budget} connections per process", nofile));
    }
    let shares = split::plan(users.len(), dpu, budget, per_conn).map_err(anyhow::Error::msg)?;
    let device = DeviceOpts {
        heartbeat_secs: args.heartbeat.as_secs().clamp(1, u32::MAX as u64) as u32,
        window: args.window.max(1),
        body: BodyOptions { body_type: sa.body_type, truncation: sa.truncation },
        request_timeout_ms: sa.request_timeout.as_millis() as u64,
        protocol_version: sa.protocol_version.clone(),
        device_type: "iPhone".into(),
        max_setup_attempts: args.max_setup_attempts.max(1),
        run_tag: run_tag.clone(),
    };
    let specs: Vec<FleetSpec> = shares
        .iter()
        .map(|s| FleetSpec {
            target: target.clone(),
            users: users[s.users.clone()].to_vec(),
            devices_per_user: args.devices_per_user,
            ramp_rate: args.ramp_rate * s.devices as f64 / total_devices as f64,
            device: device.clone(),
            stats_interval_ms: STATS_INTERVAL_MS,
        })
        .collect();

    // The server's footprint before any device.
    let probe = resolved.server_pid.map(|pid| Probe::new(pid, t0)).transpose()?.map(Arc::new);
    let sampler_stop = CancellationToken::new();
    let samples = probe.as_ref().map(|p| probe::spawn_sampler(p.clone(), Duration::from_secs(1), sampler_stop.clone()));
    let idle = cpu(&probe);

    // Collect events from every process.
    let miss_timeout_ns = args.miss_timeout.as_nanos() as u64;
    let tracker = Arc::new(Mutex::new(Tracker::new(args.origin, miss_timeout_ns)));
    let source_stats = Arc::new(Mutex::new(vec![StatsData::default(); specs.len()]));
    let done = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = unbounded_channel::<(usize, Event)>();
    let collector = {
        let (tracker, source_stats, done) = (tracker.clone(), source_stats.clone(), done.clone());
        tokio::spawn(async move {
            while let Some((src, ev)) = rx.recv().await {
                match ev {
                    Event::Ready { user, device, .. } => lock(&tracker).device_ready(user, device),
                    Event::Failed { .. } => lock(&tracker).failed_devices += 1,
                    Event::Seen { user, device, msg, t_seen, t_push } => lock(&tracker).seen(user, device, msg, t_seen, t_push),
                    Event::Stats { stats } => match StatsData::from_wire(&stats) {
                        Ok(s) => lock(&source_stats)[src] = s,
                        Err(e) => eprintln!("process {src}: {e}"),
                    },
                    Event::Done => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    // Start the devices.
    let stop = CancellationToken::new();
    let mut workers: Vec<WorkerHandle> = Vec::new();
    let mut local: Option<tokio::task::JoinHandle<anyhow::Result<()>>> = None;
    let ramp_started = Instant::now();
    if specs.len() == 1 {
        let (ftx, mut frx) = unbounded_channel::<Event>();
        let fwd = tx.clone();
        tokio::spawn(async move {
            while let Some(e) = frx.recv().await {
                let _ = fwd.send((0, e));
            }
        });
        local = Some(tokio::spawn(fleet::run(specs[0].clone(), ftx, stop.clone())));
    } else {
        let exe = std::env::current_exe().context("cannot find this program to start workers")?;
        progress.println(format!("{} devices over {} worker processes (at most {budget} connections each)", total_devices, specs.len()));
        for (i, spec) in specs.iter().enumerate() {
            workers.push(WorkerHandle::spawn(&exe, i, spec, tx.clone()).await?);
        }
    }
    drop(tx);

    // Ramp: until every device is ready or gave up.
    progress.phase("ramp", Some(total_devices as u64));
    loop {
        let (ready, failed, line) = {
            let t = lock(&tracker);
            let s = merged(&source_stats);
            (t.devices_ready(), t.failed_devices as usize, live(&t, &s, samples.as_ref().and_then(|v| lock(v).last().map(|x| x.rss_bytes))))
        };
        progress.update((ready + failed) as u64, line);
        if ready + failed >= total_devices {
            break;
        }
        if ramp_started.elapsed() > args.ramp_timeout {
            progress.println(format!("ramp timeout: {ready} of {total_devices} devices ready, {failed} failed"));
            break;
        }
        if done.load(Ordering::Relaxed) >= specs.len() || local.as_ref().is_some_and(|l| l.is_finished()) {
            progress.println("the device processes ended early");
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ramp_secs = ramp_started.elapsed();
    let cpu_ramp_end = cpu(&probe);

    // Settle, then the footprint with everyone waiting.
    progress.phase("settle", None);
    let settle_started = Instant::now();
    while settle_started.elapsed() < args.settle {
        let line = live(&lock(&tracker), &merged(&source_stats), None);
        progress.update(0, line);
        tokio::time::sleep(Duration::from_millis(250).min(args.settle)).await;
    }
    let waiting_sample = cpu(&probe);
    let open_files_waiting = probe.as_ref().and_then(|p| p.open_files());
    let waiting_clients = merged(&source_stats).counters.waiting;
    let (server_waiting, server_conns) = match &admin {
        Some(a) => match a.metrics().await {
            Ok(text) => (admin::metric_value(&text, "pushsync_waiting_pings"), admin::metric_value(&text, "pushsync_connections")),
            Err(_) => (None, None),
        },
        None => (None, None),
    };
    let settle_secs = settle_started.elapsed();
    let requests_before_inject = merged(&source_stats).counters.total_requests();

    // Inject.
    let injector = Arc::new(match args.inject {
        InjectKind::Admin => Injector::Admin(admin.clone().context("admin API")?),
        InjectKind::Lmtp => {
            let addr = args
                .lmtp
                .or(resolved.discovered.as_ref().and_then(|d| d.lmtp))
                .context("--inject lmtp needs --lmtp ADDR (or a server with an LMTP listener in --data-dir)")?;
            Injector::lmtp(addr)
        }
        InjectKind::Imap => Injector::imap(args.imap.context("--inject imap needs --imap ADDR")?),
    });
    let eligible: Vec<u32> = lock(&tracker).eligible_users().to_vec();
    let by_index: Arc<Vec<UserCred>> = Arc::new(users.clone());
    let inject_len = args.messages.unwrap_or((args.rate * args.duration.as_secs_f64()).ceil() as u64);
    progress.phase("inject", Some(inject_len));
    let inject_started = Instant::now();
    let deadline = tokio::time::Instant::now() + args.duration;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let slots = Arc::new(Semaphore::new(args.inject_concurrency.max(1)));
    let mut inflight = JoinSet::new();
    let shown_errors = Arc::new(AtomicUsize::new(0));
    let mut seq = 0u64;
    let mut last_update = Instant::now();
    if eligible.is_empty() {
        progress.println("no device is ready: nothing to inject");
    } else {
        let start = tokio::time::Instant::now();
        loop {
            if args.messages.is_some_and(|m| seq >= m) {
                break;
            }
            let at = start + interval.mul_f64(seq as f64);
            if at >= deadline {
                break;
            }
            tokio::time::sleep_until(at).await;
            let Ok(permit) = slots.clone().acquire_owned().await else { break };
            seq += 1;
            let user = by_index[eligible[rand::thread_rng().gen_range(0..eligible.len())] as usize].clone();
            let (tr, inj, tag, shown, quiet) = (tracker.clone(), injector.clone(), run_tag.clone(), shown_errors.clone(), sa.quiet);
            let n = seq;
            inflight.spawn(async move {
                let _permit = permit;
                let raw = proto::message(&tag, n, &user.address);
                let sent = mono_ns();
                lock(&tr).injected(n, user.index, sent);
                let r = inj.deliver(&user, raw).await;
                let at = mono_ns();
                match r {
                    Ok(()) => lock(&tr).acked(n, at),
                    Err((kind, msg)) => {
                        lock(&tr).inject_failed(n, &kind, at);
                        if !quiet && shown.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("injection to {} failed: {msg}", user.login);
                        }
                    }
                }
            });
            while inflight.try_join_next().is_some() {}
            if last_update.elapsed() >= Duration::from_millis(250) {
                last_update = Instant::now();
                let line = {
                    let t = lock(&tracker);
                    format!(
                        "acked {} seen {} | {}",
                        t.acked_count(),
                        t.seen_count(),
                        live(&t, &merged(&source_stats), samples.as_ref().and_then(|v| lock(v).last().map(|x| x.rss_bytes)))
                    )
                };
                progress.update(seq, line);
            }
        }
    }
    while inflight.join_next().await.is_some() {}
    let inject_secs = inject_started.elapsed();
    let requests_after_inject = merged(&source_stats).counters.total_requests();
    let cpu_inject_end = cpu(&probe);

    // Drain: until every ready device saw every message, or the miss timeout passed.
    progress.phase("drain", None);
    let drain_started = Instant::now();
    loop {
        let (settled, last, line) = {
            let t = lock(&tracker);
            (
                t.settled(),
                t.last_settled,
                format!("seen {} of {} | {}", t.seen_count(), t.injected_count(), live(&t, &merged(&source_stats), None)),
            )
        };
        progress.update(0, line);
        if settled {
            break;
        }
        let since_last = Duration::from_nanos(mono_ns().saturating_sub(last));
        if since_last > args.miss_timeout && drain_started.elapsed() > Duration::from_millis(100) {
            break;
        }
        if drain_started.elapsed() > args.miss_timeout + Duration::from_secs(5) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_secs = drain_started.elapsed();
    let cpu_drain_end = cpu(&probe);
    let waiting_at_end = merged(&source_stats).counters.waiting;

    // Stop every process and collect its last statistics.
    progress.phase("stop", None);
    stop.cancel();
    for w in &mut workers {
        w.stop().await;
    }
    let stop_deadline = Instant::now() + STOP_TIMEOUT;
    while done.load(Ordering::Relaxed) < specs.len() && Instant::now() < stop_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(l) = local {
        match tokio::time::timeout(STOP_TIMEOUT, l).await {
            Ok(Ok(Err(e))) => progress.println(format!("devices: {e:#}")),
            Ok(Err(e)) => progress.println(format!("devices: {e}")),
            _ => {}
        }
    }
    for w in &mut workers {
        if tokio::time::timeout(Duration::from_secs(5), w.child.wait()).await.is_err() {
            let _ = w.child.kill().await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), collector).await;
    sampler_stop.cancel();
    let end_sample = cpu(&probe);
    progress.finish();

    // The report.
    let stats = merged(&source_stats);
    let t = lock(&tracker);
    let outcome = t.outcome();
    let run_secs = t0.elapsed();
    let device_secs = run_secs.saturating_sub(users_secs).as_secs_f64().max(1e-9);
    let mut errors = Errors { total: 0, by_kind: stats.counters.errors.clone() };
    for (k, v) in &t.inject_errors_by_kind {
        *errors.by_kind.entry(format!("inject:{k}")).or_default() += v;
    }
    errors.total = errors.by_kind.values().sum();
    let waiting_for_memory = server_waiting.map(|w| w as i64).unwrap_or(waiting_clients);
    let server = match (&probe, idle, waiting_sample, end_sample) {
        (Some(p), Some(idle), Some(waiting), Some(end)) => {
            let c = |s: Option<ProcSample>| s.map(|s| s.cpu_secs).unwrap_or(end.cpu_secs);
            let (c0, c1, c2, c3, c4) = (idle.cpu_secs, c(cpu_ramp_end), waiting.cpu_secs, c(cpu_inject_end), c(cpu_drain_end));
            Some(ServerReport {
                pid: p.pid(),
                rss_idle_bytes: idle.rss_bytes,
                rss_waiting_bytes: waiting.rss_bytes,
                rss_peak_bytes: end.hwm_bytes,
                rss_end_bytes: end.rss_bytes,
                bytes_per_waiting_device: (waiting_for_memory > 0)
                    .then(|| (waiting.rss_bytes as f64 - idle.rss_bytes as f64) / waiting_for_memory as f64),
                cpu_secs_total: end.cpu_secs - c0,
                cpu_secs: CpuPhases { ramp: c1 - c0, settle: c2 - c1, inject: c3 - c2, drain: c4 - c3 },
                cpu_percent_inject: (c3 - c2) / inject_secs.as_secs_f64().max(1e-9) * 100.0,
                open_files_waiting,
                threads: waiting.threads,
                samples: samples.map(|s| lock(&s).clone()).unwrap_or_default(),
            })
        }
        _ => None,
    };
    let report = Report {
        schema: report::RUN_SCHEMA_ID.into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        started_at,
        config: RunConfig {
            url: resolved.url.clone(),
            http_version: if sa.http2 { "2".into() } else { "1.1".into() },
            tls: resolved.url.starts_with("https"),
            users: users.len() as u64,
            devices_per_user: dpu as u64,
            devices: total_devices as u64,
            heartbeat_secs: device.heartbeat_secs as u64,
            ramp_rate: args.ramp_rate,
            rate: args.rate,
            messages: args.messages,
            duration_secs: secs(args.duration),
            miss_timeout_secs: secs(args.miss_timeout),
            inject: args.inject.as_str().into(),
            latency_origin: t.origin().as_str().into(),
            processes: specs.len() as u64,
            max_conns_per_worker: budget as u64,
            window: device.window as u64,
            run_tag,
        },
        phases: Phases {
            users_secs: secs(users_secs),
            ramp_secs: secs(ramp_secs),
            settle_secs: secs(settle_secs),
            inject_secs: secs(inject_secs),
            drain_secs: secs(drain_secs),
            total_secs: secs(run_secs),
        },
        devices: Devices {
            target: total_devices as u64,
            ready: t.devices_ready() as u64,
            failed: t.failed_devices,
            waiting_before_inject: waiting_clients,
            server_waiting_pings: server_waiting,
            server_connections: server_conns,
            waiting_at_end,
        },
        messages: Messages {
            outcome,
            seen_without_push: t.seen_without_push,
            before_origin: t.before_origin,
            duplicate_seen: t.duplicate_seen,
            unknown_seen: t.unknown_seen,
            injected_per_sec: seq as f64 / inject_secs.as_secs_f64().max(1e-9),
        },
        latency_origin: t.origin().as_str().into(),
        push_latency: LatencySummary::of(&t.push),
        delivery_latency: LatencySummary::of(&t.delivery),
        from_send: FromSend {
            push_latency: LatencySummary::of(&t.push_from_send),
            delivery_latency: LatencySummary::of(&t.delivery_from_send),
        },
        inject_latency: LatencySummary::of(&t.inject),
        setup_latency: stats.hists.get("setup").map(LatencySummary::of).unwrap_or_default(),
        request_latency: stats
            .hists
            .iter()
            .filter(|(k, _)| k.as_str() != "setup")
            .map(|(k, h)| (k.clone(), LatencySummary::of(h)))
            .collect(),
        requests: Requests {
            total: stats.counters.total_requests(),
            per_sec: stats.counters.total_requests() as f64 / device_secs,
            inject_phase_per_sec: requests_after_inject.saturating_sub(requests_before_inject) as f64 / inject_secs.as_secs_f64().max(1e-9),
            by_command: stats.counters.requests.clone(),
        },
        ping_status: stats.counters.ping_status.clone(),
        errors,
        server,
        histograms: [("push_latency".to_string(), encode_hist(&t.push)), ("delivery_latency".to_string(), encode_hist(&t.delivery))].into(),
    };
    drop(t);
    if let Some(path) = &sa.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let t = lock(&tracker);
        let title = format!("pushsync: {} devices, {} messages (latency from {})", total_devices, outcome.injected, report.latency_origin);
        crate::plot::write_cdf_svg(path, &title, &[("push (Ping answered)", &t.push), ("delivery (in Sync)", &t.delivery)])?;
    }
    Ok(report)
}
