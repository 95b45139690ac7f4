//! The binary's own surface: help, the schema it prints, and failing cleanly without a server.

use std::process::Command;
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pushsync-loadtest"))
}

#[test]
fn help_lists_the_options_the_benchmarks_use() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--users",
        "--devices-per-user",
        "--users-file",
        "--heartbeat",
        "--http2",
        "--insecure",
        "--ramp-rate",
        "--max-conns-per-worker",
        "--rate",
        "--inject",
        "--miss-timeout",
        "--server-pid",
        "--report",
        "--plot",
        "--duration",
        "sync-bench",
    ] {
        assert!(help.contains(opt), "--help does not mention {opt}");
    }
    assert!(!help.lines().any(|l| l.trim_start().starts_with("worker")), "the worker subcommand is internal");
    let out = bin().args(["sync-bench", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in ["--devices", "--window", "--seed"] {
        assert!(help.contains(opt), "sync-bench --help does not mention {opt}");
    }
}

#[test]
fn the_printed_schemas_are_the_documented_files() {
    let out = bin().arg("schema").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), include_str!("../report.schema.json"));
    let out = bin().args(["schema", "sync-bench"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), include_str!("../sync-bench.schema.json"));
}

#[test]
fn without_a_server_it_fails_quickly_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = bin().arg("--data-dir").arg(dir.path()).args(["--users", "1"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no running server"), "{}", String::from_utf8_lossy(&out.stderr));
    // A closed port: devices cannot connect, give up after their setup attempts, and the run ends.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = bin()
        .args([
            "--url",
            &format!("http://127.0.0.1:{port}"),
            "--users-file",
            "/dev/null",
            "--inject",
            "lmtp",
            "--lmtp",
            &format!("127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success(), "an empty users file is refused");
    let users = dir.path().join("users.txt");
    std::fs::write(&users, "someone:secret\n").unwrap();
    let out = bin()
        .args(["--url", &format!("http://127.0.0.1:{port}"), "--inject", "lmtp", "--lmtp", &format!("127.0.0.1:{port}"), "--quiet"])
        .arg("--users-file")
        .arg(&users)
        .args(["--max-setup-attempts", "1", "--messages", "1", "--settle", "0s", "--miss-timeout", "1s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("1 failed"), "{stdout}");
    assert!(stdout.contains("connect=1"), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(30));
}
