//! The results: JSON reports (schemas in `loadtest/report.schema.json` and
//! `loadtest/sync-bench.schema.json`, printed by `pushsync-loadtest schema`) and the summary
//! table printed at the end of a run.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::probe::ProcSample;
use crate::tracker::Outcome;

pub const RUN_SCHEMA_ID: &str = "pushsync-loadtest/report/v1";
pub const SYNC_BENCH_SCHEMA_ID: &str = "pushsync-loadtest/sync-bench/v1";
pub const RUN_SCHEMA: &str = include_str!("../report.schema.json");
pub const SYNC_BENCH_SCHEMA: &str = include_str!("../sync-bench.schema.json");

/// Percentiles of a latency histogram, in milliseconds (µs precision). All zero when `count`
/// is zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

fn ms(us: f64) -> f64 {
    us.round() / 1000.0
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        let q = |q: f64| ms(h.value_at_quantile(q) as f64);
        LatencySummary {
            count: h.len(),
            min_ms: ms(h.min() as f64),
            mean_ms: ms(h.mean()),
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            max_ms: ms(h.max() as f64),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub url: String,
    /// "1.1" or "2".
    pub http_version: String,
    pub tls: bool,
    pub users: u64,
    pub devices_per_user: u64,
    pub devices: u64,
    pub heartbeat_secs: u64,
    pub ramp_rate: f64,
    /// Messages per second asked for.
    pub rate: f64,
    pub messages: Option<u64>,
    pub duration_secs: f64,
    pub miss_timeout_secs: f64,
    /// "admin", "lmtp" or "imap".
    pub inject: String,
    pub latency_origin: String,
    /// Client processes that ran devices (1: the coordinator itself).
    pub processes: u64,
    pub max_conns_per_worker: u64,
    pub window: u64,
    pub run_tag: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    pub users_secs: f64,
    pub ramp_secs: f64,
    pub settle_secs: f64,
    pub inject_secs: f64,
    pub drain_secs: f64,
    pub total_secs: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Devices {
    pub target: u64,
    pub ready: u64,
    pub failed: u64,
    /// Pings in flight when injection started (the client's count).
    pub waiting_before_inject: i64,
    /// The server's `pushsync_waiting_pings` then, when its metrics could be read.
    pub server_waiting_pings: Option<f64>,
    pub server_connections: Option<f64>,
    pub waiting_at_end: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Messages {
    #[serde(flatten)]
    pub outcome: Outcome,
    /// (message, device) pairs received in a Sync that no push of their own preceded.
    pub seen_without_push: u64,
    /// Latencies that came out negative (the device was told before the origin): recorded as 0.
    pub before_origin: u64,
    pub duplicate_seen: u64,
    pub unknown_seen: u64,
    /// Messages per second actually injected.
    pub injected_per_sec: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Requests {
    pub total: u64,
    pub per_sec: f64,
    pub inject_phase_per_sec: f64,
    pub by_command: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Errors {
    pub total: u64,
    pub by_kind: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuPhases {
    pub ramp: f64,
    pub settle: f64,
    pub inject: f64,
    pub drain: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerReport {
    pub pid: u32,
    /// RSS before any device connected.
    pub rss_idle_bytes: u64,
    /// RSS with every ready device waiting in a Ping (after the settle time).
    pub rss_waiting_bytes: u64,
    pub rss_peak_bytes: u64,
    pub rss_end_bytes: u64,
    /// (waiting − idle) / devices waiting.
    pub bytes_per_waiting_device: Option<f64>,
    /// CPU seconds (user + system) over the whole run and per phase.
    pub cpu_secs_total: f64,
    pub cpu_secs: CpuPhases,
    /// CPU during injection as a percentage of one core.
    pub cpu_percent_inject: f64,
    pub open_files_waiting: Option<u64>,
    pub threads: u64,
    pub samples: Vec<ProcSample>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FromSend {
    pub push_latency: LatencySummary,
    pub delivery_latency: LatencySummary,
}

/// The push benchmark's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub tool_version: String,
    pub started_at: String,
    pub config: RunConfig,
    pub phases: Phases,
    pub devices: Devices,
    pub messages: Messages,
    /// "ack" or "send": what push and delivery latencies are measured from.
    pub latency_origin: String,
    pub push_latency: LatencySummary,
    pub delivery_latency: LatencySummary,
    /// The same pairs measured from the moment each injection request was sent (identical to
    /// the above with `latency_origin` "send").
    pub from_send: FromSend,
    /// Injection request sent → store acknowledgement.
    pub inject_latency: LatencySummary,
    /// Device start → setup done (OPTIONS ... initial Sync).
    pub setup_latency: LatencySummary,
    /// Per command, requests that got a 200 (Ping excluded: its duration is the wait).
    pub request_latency: BTreeMap<String, LatencySummary>,
    pub requests: Requests,
    pub ping_status: BTreeMap<String, u64>,
    pub errors: Errors,
    pub server: Option<ServerReport>,
    /// Base64 HdrHistogram V2 serialisations (µs) of `push_latency` and `delivery_latency`,
    /// for merging runs or re-plotting.
    pub histograms: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncBenchConfig {
    pub url: String,
    pub http_version: String,
    pub tls: bool,
    pub user: String,
    pub devices: u64,
    pub window: u64,
    pub body_type: u64,
    pub truncation: u64,
    /// Messages delivered by this run's seeding.
    pub seeded: u64,
    /// Items in the folder according to GetItemEstimate.
    pub folder_items: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncBenchServer {
    pub pid: u32,
    pub rss_before_bytes: u64,
    pub rss_peak_bytes: u64,
    pub rss_after_bytes: u64,
    pub cpu_secs: f64,
    pub samples: Vec<ProcSample>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncBenchReport {
    pub schema: String,
    pub tool_version: String,
    pub started_at: String,
    pub config: SyncBenchConfig,
    pub seed_secs: f64,
    /// First Sync sent → last device done.
    pub total_secs: f64,
    pub items_total: u64,
    pub items_per_sec: f64,
    pub items_per_device: Vec<u64>,
    pub windows: u64,
    pub window_latency: LatencySummary,
    /// Per device: SyncKey 0 → last window.
    pub device_secs: LatencySummary,
    pub errors: Errors,
    pub server: Option<SyncBenchServer>,
}

pub fn fmt_bytes(b: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b;
    let mut u = 0;
    while v.abs() >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{v:.0} {}", UNITS[u]) } else { format!("{v:.1} {}", UNITS[u]) }
}

fn lat_row(out: &mut String, name: &str, s: &LatencySummary) {
    if s.count == 0 {
        let _ = writeln!(out, "  {name:<22} {:>8}  {:>9} {:>9} {:>9} {:>9} {:>9}", 0, "-", "-", "-", "-", "-");
    } else {
        let _ = writeln!(
            out,
            "  {name:<22} {:>8}  {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            s.count, s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms
        );
    }
}

/// The summary table of a push run.
pub fn summary(r: &Report) -> String {
    let c = &r.config;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\npushsync-loadtest: {} devices ({} users x {}), HTTP/{}{}, heartbeat {} s, {} process(es), run {}",
        c.devices,
        c.users,
        c.devices_per_user,
        c.http_version,
        if c.tls { " over TLS" } else { ", plain" },
        c.heartbeat_secs,
        c.processes,
        c.run_tag
    );
    let origin = if r.latency_origin == "ack" {
        "the store's acknowledgement of each message (origin: ack)"
    } else {
        "the moment each injection request was sent (origin: send)"
    };
    let _ = writeln!(out, "Latencies per (message, device) from {origin}:\n");
    let _ = writeln!(out, "  {:<22} {:>8}  {:>9} {:>9} {:>9} {:>9} {:>9}", "", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms");
    lat_row(&mut out, "push (Ping answered)", &r.push_latency);
    lat_row(&mut out, "delivery (in Sync)", &r.delivery_latency);
    if r.latency_origin != "send" {
        lat_row(&mut out, "push, from send", &r.from_send.push_latency);
        lat_row(&mut out, "delivery, from send", &r.from_send.delivery_latency);
    }
    lat_row(&mut out, "injection (send->ack)", &r.inject_latency);
    lat_row(&mut out, "device setup", &r.setup_latency);
    let m = &r.messages;
    let o = &m.outcome;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  devices      {} target, {} ready, {} failed; {} waiting when injection started{}",
        r.devices.target,
        r.devices.ready,
        r.devices.failed,
        r.devices.waiting_before_inject,
        r.devices.server_waiting_pings.map(|w| format!(" (server: {w:.0} waiting Pings)")).unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "  messages     {} injected ({:.1}/s via {}), {} acknowledged, {} injection errors, {} unacknowledged",
        o.injected, m.injected_per_sec, c.inject, o.acked, o.inject_errors, o.unacked
    );
    let _ = writeln!(
        out,
        "  missed       {} pushes missed (no device of the user saw it within {} s), {} of them seen late",
        o.missed, c.miss_timeout_secs, o.seen_late
    );
    let _ = writeln!(
        out,
        "  per device   {} expected, {} seen in time, {} missed; {} arrived without a push of their own; {} before the origin",
        o.device_expected, o.device_seen, o.device_missed, m.seen_without_push, m.before_origin
    );
    let _ = writeln!(
        out,
        "  requests     {} total, {:.1}/s over the run, {:.1}/s during injection",
        r.requests.total, r.requests.per_sec, r.requests.inject_phase_per_sec
    );
    let errors = if r.errors.by_kind.is_empty() {
        "none".to_string()
    } else {
        r.errors.by_kind.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(out, "  errors       {} ({errors})", r.errors.total);
    let _ = writeln!(
        out,
        "  phases       users {:.1} s, ramp {:.1} s, settle {:.1} s, injection {:.1} s, drain {:.1} s, total {:.1} s",
        r.phases.users_secs, r.phases.ramp_secs, r.phases.settle_secs, r.phases.inject_secs, r.phases.drain_secs, r.phases.total_secs
    );
    if let Some(s) = &r.server {
        let _ = writeln!(
            out,
            "  server RSS   {} idle, {} with {} devices waiting ({} per waiting device), peak {}",
            fmt_bytes(s.rss_idle_bytes as f64),
            fmt_bytes(s.rss_waiting_bytes as f64),
            r.devices.waiting_before_inject,
            s.bytes_per_waiting_device.map(fmt_bytes).unwrap_or_else(|| "-".into()),
            fmt_bytes(s.rss_peak_bytes as f64)
        );
        let _ = writeln!(
            out,
            "  server CPU   {:.1} s total: ramp {:.1} s, settle {:.1} s, injection {:.1} s ({:.1}% of a core), drain {:.1} s",
            s.cpu_secs_total, s.cpu_secs.ramp, s.cpu_secs.settle, s.cpu_secs.inject, s.cpu_percent_inject, s.cpu_secs.drain
        );
    }
    out
}

/// The summary table of a sync benchmark.
pub fn sync_bench_summary(r: &SyncBenchReport) -> String {
    let c = &r.config;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\npushsync-loadtest sync-bench: {} device(s) of {} syncing the Inbox ({} items) in windows of {}, HTTP/{}{}\n",
        c.devices,
        c.user,
        c.folder_items.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
        c.window,
        c.http_version,
        if c.tls { " over TLS" } else { ", plain" }
    );
    let _ = writeln!(out, "  {:<22} {:>8}  {:>9} {:>9} {:>9} {:>9} {:>9}", "", "count", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms");
    lat_row(&mut out, "Sync window", &r.window_latency);
    lat_row(&mut out, "whole sync per device", &r.device_secs);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  total        {:.2} s for {} items: {:.0} items/s ({} windows)",
        r.total_secs, r.items_total, r.items_per_sec, r.windows
    );
    let _ = writeln!(out, "  per device   {:?}", r.items_per_device);
    if c.seeded > 0 {
        let _ = writeln!(out, "  seeding      {} messages in {:.1} s", c.seeded, r.seed_secs);
    }
    let errors = if r.errors.by_kind.is_empty() {
        "none".to_string()
    } else {
        r.errors.by_kind.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(out, "  errors       {} ({errors})", r.errors.total);
    if let Some(s) = &r.server {
        let _ = writeln!(
            out,
            "  server       RSS {} before, peak {} during, {} after; CPU {:.2} s",
            fmt_bytes(s.rss_before_bytes as f64),
            fmt_bytes(s.rss_peak_bytes as f64),
            fmt_bytes(s.rss_after_bytes as f64),
            s.cpu_secs
        );
    }
    out
}

/// Checks `value` against a JSON Schema, for the subset the report schemas use: `type`
/// (one or several), `properties`, `required`, `additionalProperties` (false or a schema),
/// `items`, `enum`, `const`, `$ref` to `#/$defs/NAME`. Returns every violation found.
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, schema, value, "$", &mut errors);
    errors
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

fn check(root: &Value, schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        match r.strip_prefix("#/$defs/").and_then(|name| root.get("$defs").and_then(|d| d.get(name))) {
            Some(target) => return check(root, target, v, path, errors),
            None => return errors.push(format!("{path}: unresolvable $ref {r}")),
        }
    }
    if let Some(t) = schema.get("type") {
        let ok = match t {
            Value::String(s) => type_matches(s, v),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|s| type_matches(s, v)),
            _ => true,
        };
        if !ok {
            errors.push(format!("{path}: expected {t}, found {v}"));
            return;
        }
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        errors.push(format!("{path}: expected {c}, found {v}"));
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        errors.push(format!("{path}: {v} is not one of {}", Value::Array(e.clone())));
    }
    if let Value::Object(map) = v {
        let props = schema.get("properties").and_then(Value::as_object);
        for req in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            if !map.contains_key(req) {
                errors.push(format!("{path}: missing {req}"));
            }
        }
        for (k, val) in map {
            let sub = format!("{path}.{k}");
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(root, s, val, &sub, errors),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => errors.push(format!("{sub}: not in the schema")),
                    Some(s @ Value::Object(_)) => check(root, s, val, &sub, errors),
                    _ => {}
                },
            }
        }
    }
    if let (Value::Array(items), Some(s)) = (v, schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            check(root, s, item, &format!("{path}[{i}]"), errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{encode_hist, new_hist, record};

    pub(crate) fn sample_report() -> Report {
        let mut h = new_hist();
        for v in [900u64, 1_500, 2_000, 40_000] {
            record(&mut h, v);
        }
        Report {
            schema: RUN_SCHEMA_ID.into(),
            tool_version: "0.1.0".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            config: RunConfig {
                url: "http://127.0.0.1:8443".into(),
                http_version: "1.1".into(),
                tls: false,
                users: 2,
                devices_per_user: 2,
                devices: 4,
                heartbeat_secs: 900,
                ramp_rate: 100.0,
                rate: 10.0,
                messages: Some(4),
                duration_secs: 60.0,
                miss_timeout_secs: 30.0,
                inject: "admin".into(),
                latency_origin: "ack".into(),
                processes: 1,
                max_conns_per_worker: 15_000,
                window: 100,
                run_tag: "0123abcd".into(),
            },
            phases: Phases { users_secs: 0.1, ramp_secs: 1.0, settle_secs: 1.0, inject_secs: 0.4, drain_secs: 0.1, total_secs: 2.6 },
            devices: Devices {
                target: 4,
                ready: 4,
                failed: 0,
                waiting_before_inject: 4,
                server_waiting_pings: Some(4.0),
                server_connections: None,
                waiting_at_end: 4,
            },
            messages: Messages {
                outcome: Outcome { injected: 4, acked: 4, seen: 4, device_expected: 8, device_seen: 8, ..Outcome::default() },
                injected_per_sec: 9.5,
                ..Messages::default()
            },
            latency_origin: "ack".into(),
            push_latency: LatencySummary::of(&h),
            delivery_latency: LatencySummary::of(&h),
            from_send: FromSend { push_latency: LatencySummary::of(&h), delivery_latency: LatencySummary::of(&h) },
            inject_latency: LatencySummary::of(&h),
            setup_latency: LatencySummary::of(&new_hist()),
            request_latency: [("Sync".to_string(), LatencySummary::of(&h))].into(),
            requests: Requests { total: 40, per_sec: 15.0, inject_phase_per_sec: 20.0, by_command: [("Ping".to_string(), 12u64)].into() },
            ping_status: [("2".to_string(), 8u64)].into(),
            errors: Errors { total: 1, by_kind: [("timeout:Ping".to_string(), 1u64)].into() },
            server: Some(ServerReport {
                pid: 1,
                rss_idle_bytes: 10 << 20,
                rss_waiting_bytes: 11 << 20,
                rss_peak_bytes: 12 << 20,
                rss_end_bytes: 11 << 20,
                bytes_per_waiting_device: Some(262_144.0),
                cpu_secs_total: 1.5,
                cpu_secs: CpuPhases::default(),
                cpu_percent_inject: 3.0,
                open_files_waiting: Some(20),
                threads: 4,
                samples: vec![ProcSample { t: 0.5, rss_bytes: 1, hwm_bytes: 2, cpu_secs: 0.1, threads: 3 }],
            }),
            histograms: [("push_latency".to_string(), encode_hist(&h))].into(),
        }
    }

    #[test]
    fn summaries_are_in_milliseconds() {
        let mut h = new_hist();
        for v in 1..=1000u64 {
            record(&mut h, v * 100); // 0.1 ms .. 100 ms
        }
        let s = LatencySummary::of(&h);
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
        assert_eq!(LatencySummary::of(&new_hist()), LatencySummary::default());
    }

    #[test]
    fn the_report_matches_its_documented_schema() {
        let schema: Value = serde_json::from_str(RUN_SCHEMA).expect("report.schema.json is JSON");
        assert_eq!(schema["properties"]["schema"]["const"], RUN_SCHEMA_ID);
        let mut report = serde_json::to_value(sample_report()).unwrap();
        assert_eq!(validate(&schema, &report), Vec::<String>::new());
        // Without a server and without a message limit too.
        report["server"] = Value::Null;
        report["config"]["messages"] = Value::Null;
        assert_eq!(validate(&schema, &report), Vec::<String>::new());
        // The schema is strict: an undocumented or missing field is caught.
        report["surprise"] = Value::Bool(true);
        report["push_latency"].as_object_mut().unwrap().remove("p99_ms");
        let errors = validate(&schema, &report);
        assert!(errors.iter().any(|e| e.contains("surprise")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("missing p99_ms")), "{errors:?}");
        // And it round-trips through serde.
        let back: Report = serde_json::from_str(&serde_json::to_string(&sample_report()).unwrap()).unwrap();
        assert_eq!(back, sample_report());
        assert!(summary(&back).contains("pushes missed"));
    }

    #[test]
    fn the_sync_bench_report_matches_its_schema() {
        let schema: Value = serde_json::from_str(SYNC_BENCH_SCHEMA).expect("sync-bench.schema.json is JSON");
        let mut h = new_hist();
        record(&mut h, 12_000);
        let r = SyncBenchReport {
            schema: SYNC_BENCH_SCHEMA_ID.into(),
            tool_version: "0.1.0".into(),
            started_at: "2026-01-01T00:00:00Z".into(),
            config: SyncBenchConfig {
                url: "http://127.0.0.1:1".into(),
                http_version: "1.1".into(),
                tls: false,
                user: "lt-sync-00001".into(),
                devices: 2,
                window: 512,
                body_type: 1,
                truncation: 5120,
                seeded: 0,
                folder_items: Some(10),
            },
            seed_secs: 0.0,
            total_secs: 1.0,
            items_total: 20,
            items_per_sec: 20.0,
            items_per_device: vec![10, 10],
            windows: 2,
            window_latency: LatencySummary::of(&h),
            device_secs: LatencySummary::of(&h),
            errors: Errors::default(),
            server: Some(SyncBenchServer {
                pid: 1,
                rss_before_bytes: 1,
                rss_peak_bytes: 2,
                rss_after_bytes: 1,
                cpu_secs: 0.5,
                samples: vec![],
            }),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(validate(&schema, &v), Vec::<String>::new());
        assert!(sync_bench_summary(&r).contains("items/s"));
    }

    #[test]
    fn the_validator_catches_type_errors() {
        let schema = serde_json::json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}, "b": {"enum": ["x"]}}, "additionalProperties": false});
        assert!(validate(&schema, &serde_json::json!({"a": 1})).is_empty());
        assert_eq!(validate(&schema, &serde_json::json!({"a": 1.5})).len(), 1);
        assert_eq!(validate(&schema, &serde_json::json!({"a": 1, "b": "y"})).len(), 1);
        assert_eq!(validate(&schema, &serde_json::json!({})).len(), 1);
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(fmt_bytes(512.0), "512 B");
        assert_eq!(fmt_bytes(16.0 * 1024.0), "16.0 KiB");
        assert_eq!(fmt_bytes(3.5 * 1024.0 * 1024.0), "3.5 MiB");
    }
}
