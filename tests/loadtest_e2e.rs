//! The load tester (`loadtest/`, binary `pushsync-loadtest`) against a real server started
//! in-process: two users with two phones each wait in Ping while a few messages are
//! delivered; every message must be pushed to every phone, and the JSON report must follow
//! the schema the tool documents. Once with one process over HTTP/1.1, once split over two
//! worker processes with the phones of a user sharing an HTTP/2 connection.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TestServer;
use serde_json::Value;

/// The `pushsync-loadtest` binary of this build. It belongs to another workspace member,
/// which this package cannot depend on, so it is built here (a no-op when up to date) into
/// the same target directory.
fn loadtest_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // target/<profile>/deps/loadtest_e2e-<hash>
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
    let target_dir = profile_dir.parent().expect("target").to_path_buf();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "pushsync-loadtest", "--bin", "pushsync-loadtest", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir);
    // What cargo set for this test (the package's manifest dir, ...) would look like a changed
    // environment to dependencies' build scripts and rebuild them.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k == "OUT_DIR"
            || k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_")
            || ["CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH", "CARGO_CRATE_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR"]
                .contains(&k.as_ref())
        {
            cmd.env_remove(k.as_ref());
        }
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("cargo runs");
    assert!(status.success(), "building pushsync-loadtest failed");
    let bin = profile_dir.join("pushsync-loadtest");
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}

/// Runs one load test; returns its report.
async fn run(bin: &Path, srv: &TestServer, dir: &Path, name: &str, extra: &[&str]) -> Value {
    let report = dir.join(format!("{name}.json"));
    let plot = dir.join(format!("{name}.svg"));
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--url")
        .arg(format!("http://{}", srv.addr))
        .arg("--admin-url")
        .arg(format!("http://{}", srv.admin))
        .arg("--admin-token")
        .arg(&srv.token)
        .args(["--users", "2", "--devices-per-user", "2", "--messages", "6", "--rate", "10"])
        // The server's shortest heartbeat; nothing here waits for it to expire.
        .args(["--heartbeat", "60s", "--settle", "300ms", "--duration", "10s", "--miss-timeout", "10s", "--ramp-timeout", "20s"])
        .args(["--server-pid", &std::process::id().to_string(), "--quiet"])
        .arg("--report")
        .arg(&report)
        .arg("--plot")
        .arg(&plot)
        .args(extra)
        .kill_on_drop(true);
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the load test stops by itself")
        .expect("the load tester runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{name}: {}\n{stdout}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(30), "{name} took {:?}", started.elapsed());
    assert!(stdout.contains("pushes missed"), "{stdout}");
    let svg = std::fs::read_to_string(&plot).expect("the plot is written");
    assert!(svg.starts_with("<svg"), "{name}: the plot is an SVG");
    serde_json::from_str(&std::fs::read_to_string(&report).expect("the report is written")).expect("the report is JSON")
}

/// Checks the report's keys against the schema the tool prints: every required property
/// present, nothing undocumented, at every level the schema describes.
fn assert_follows_schema(schema: &Value, v: &Value, path: &str) {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(_) => return, // shared definitions: checked by the tool's own tests
        None => schema,
    };
    let Some(obj) = v.as_object() else { return };
    if let Some(req) = schema.get("required").and_then(Value::as_array) {
        for k in req.iter().filter_map(Value::as_str) {
            assert!(obj.contains_key(k), "{path}: {k} is missing");
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        if schema.get("additionalProperties") == Some(&Value::Bool(false)) {
            for k in obj.keys() {
                assert!(props.contains_key(k), "{path}.{k} is not in the schema");
            }
        }
        for (k, s) in props {
            if let Some(child) = obj.get(k) {
                assert_follows_schema(s, child, &format!("{path}.{k}"));
            }
        }
    }
}

fn check(name: &str, r: &Value, schema: &Value, processes: u64, http: &str) {
    assert_follows_schema(schema, r, "$");
    assert_eq!(r["schema"], "pushsync-loadtest/report/v1");
    assert_eq!(r["latency_origin"], "ack", "{name}: the origin is stated");
    assert_eq!(r["config"]["processes"], processes, "{name}");
    assert_eq!(r["config"]["http_version"], http, "{name}");
    assert_eq!(r["devices"]["ready"], 4, "{name}: {}", r["devices"]);
    assert_eq!(r["devices"]["failed"], 0, "{name}");
    let m = &r["messages"];
    assert_eq!(m["injected"], 6, "{name}: {m}");
    assert_eq!(m["acked"], 6, "{name}: {m}");
    assert_eq!(m["missed"], 0, "{name}: every message pushed: {m}");
    assert_eq!(m["device_expected"], 12, "{name}: {m}");
    assert_eq!(m["device_seen"], 12, "{name}: every phone saw every message of its user: {m}");
    assert_eq!(m["unknown_seen"], 0, "{name}");
    let pushed = r["push_latency"]["count"].as_u64().unwrap();
    assert_eq!(pushed + m["seen_without_push"].as_u64().unwrap(), 12, "{name}: each (message, phone) came by push or rode along: {m}");
    assert!(pushed >= 6, "{name}: most deliveries were pushed ({pushed})");
    assert_eq!(r["delivery_latency"]["count"], 12, "{name}");
    assert!(r["push_latency"]["p99_ms"].as_f64().unwrap() < 5_000.0, "{name}: {}", r["push_latency"]);
    assert_eq!(r["errors"]["total"], 0, "{name}: {}", r["errors"]);
    assert!(r["ping_status"]["2"].as_u64().unwrap() >= 6, "{name}");
    let server = &r["server"];
    assert!(server["rss_waiting_bytes"].as_u64().unwrap() > 0, "{name}: {server}");
    assert!(!server["samples"].as_array().unwrap().is_empty() || r["phases"]["total_secs"].as_f64().unwrap() < 1.0, "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_reaches_every_phone_and_the_report_is_well_formed() {
    let bin = tokio::task::spawn_blocking(loadtest_binary).await.unwrap();
    let schema_out = std::process::Command::new(&bin).arg("schema").output().expect("schema");
    let schema: Value = serde_json::from_slice(&schema_out.stdout).expect("the schema is JSON");

    let srv = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();

    let r = run(&bin, &srv, dir.path(), "http1", &[]).await;
    check("http1", &r, &schema, 1, "1.1");
    assert_eq!(r["server"]["pid"], std::process::id());

    // The same users again (reused, not recreated), over HTTP/2 with one connection per
    // user's two phones, and at most one connection per process: two worker processes.
    let r = run(&bin, &srv, dir.path(), "http2-workers", &["--http2", "--devices-per-conn", "2", "--max-conns-per-worker", "1"]).await;
    check("http2-workers", &r, &schema, 2, "2");
}
