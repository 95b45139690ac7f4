//! Benchmarks of pushsync in front of a private Dovecot (not tests: they print figures).
//!
//! ```text
//! cargo run --release --example imap_bench -- push notify 200     # LMTP delivery → Ping answer, IMAP NOTIFY
//! cargo run --release --example imap_bench -- push idle 200       # the same, IDLE (NOTIFY disabled)
//! cargo run --release --example imap_bench -- push webhook 200    # the same, Dovecot's push webhook
//! cargo run --release --example imap_bench -- initial-sync 10000 512
//! cargo run --release --example imap_bench -- serve webhook 100 lt.users   # for pushsync-loadtest
//! ```
//!
//! `serve` starts Dovecot with `n` users (`lt-user-00001`…, password `loadtest-secret-1`,
//! Mobile Sync enabled) and pushsync in front of it (plain HTTP, push by `notify`, `idle` or
//! `webhook`), writes the users file, prints the ActiveSync URL, the LMTP address and the pid
//! to give `pushsync-loadtest`, and runs until interrupted:
//!
//! ```text
//! pushsync-loadtest --url URL --users-file lt.users --inject lmtp --lmtp ADDR --server-pid PID ...
//! ```
//!
//! `push` synchronises a phone, then `n` times: Ping (waits), deliver one message over
//! LMTP, time until the Ping answers Status 2 (from just before the LMTP DATA is sent), Sync
//! the message. `initial-sync` fills INBOX with `n` messages (written into the Maildir and
//! indexed by Dovecot), then times a phone's first sync of it in windows of `window`, and
//! reports the process's resident memory (the server, the phone and the harness together).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::dovecot::{Dovecot, DovecotOptions, free_port};
use common::*;
use pushsync::wbxml::tag;

const SECRET: &str = "bench-webhook-secret";

/// Syncs `collection` to the end from `key`; returns the new key and the number of Adds.
async fn sync_to_end(phone: &Phone, collection_id: &str, mut key: String, window: usize) -> (String, usize) {
    let mut adds = 0;
    loop {
        let r = phone.post("Sync", Some(&sync_request(collection_id, &key, window, vec![]))).await;
        if r.body.is_empty() {
            return (key, adds);
        }
        let doc = r.doc();
        let c = collection(&doc);
        key = text_of(c, tag::air_sync::SYNC_KEY);
        adds += commands(c).iter().filter(|(cmd, _)| cmd == "Add").count();
        if c.child(tag::air_sync::MORE_AVAILABLE).is_none() && commands(c).is_empty() {
            return (key, adds);
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// Dovecot with `users` (login, password), and pushsync in front of it pushing by `mode`
/// (`webhook`, `notify` or `idle`; `BENCH_DISABLE` lists IMAP extensions not to use), every
/// user enabled for Mobile Sync.
async fn start(name: &str, mode: &str, users: &[(String, String)]) -> Option<(Dovecot, TestServer)> {
    let hook_port = free_port();
    let webhook = mode == "webhook";
    let opts = DovecotOptions {
        webhook: webhook.then(|| (format!("http://127.0.0.1:{hook_port}/dovecot"), SECRET.to_string())),
        ..Default::default()
    };
    let dovecot = Dovecot::start_with(name, opts)?;
    for (login, password) in users {
        dovecot.add_user(login, password);
    }
    let idle = mode == "idle";
    let srv = TestServer::start_imap(&dovecot, move |c| {
        c.ping.min_heartbeat_secs = 1;
        if webhook {
            c.webhook.listen = Some(format!("127.0.0.1:{hook_port}").parse().unwrap());
            c.webhook.secret = Some(SECRET.into());
        }
        if idle {
            c.imap.disable_extensions = vec!["NOTIFY".into()];
        }
        if let Ok(disabled) = std::env::var("BENCH_DISABLE") {
            c.imap.disable_extensions = disabled.split(',').map(str::to_string).collect();
        }
    })
    .await;
    for (login, _) in users {
        srv.enable_sync(login).await;
    }
    Some((dovecot, srv))
}

async fn push(mode: &str, n: usize) {
    let Some((dovecot, srv)) = start("imap_bench", mode, &[("alice".into(), PASSWORD.into())]).await else { return };
    dovecot.deliver_simple("alice@example.test", "first").await;
    let mut phone = srv.phone("alice", "BENCH");
    let inbox = phone.folder_id("2").await;
    let r = phone.post("Sync", Some(&sync_request(&inbox, "0", 100, vec![]))).await.doc();
    let (mut key, _) = sync_to_end(&phone, &inbox, text_of(collection(&r), tag::air_sync::SYNC_KEY), 100).await;

    let mut samples = Vec::with_capacity(n);
    let mut misses = 0;
    for i in 0..n {
        let mut pinger = srv.phone("alice", "BENCH");
        pinger.policy_key = phone.policy_key;
        let folder = inbox.clone();
        let wait = tokio::spawn(async move { pinger.post("Ping", Some(&ping(120, &[&folder]))).await.doc() });
        while srv.app().hub.waiting_devices() < 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Past the Ping's initial check, and (for IMAP) a moment for the watcher to settle.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let raw = message("alice@example.test", &format!("bench {i}"), "Push latency benchmark.");
        let sent = Instant::now();
        dovecot.deliver("alice@example.test", &raw).await.expect("deliver");
        let r = tokio::time::timeout(Duration::from_secs(60), wait).await.expect("Ping answered").unwrap();
        let took = sent.elapsed();
        if text_of(&r, tag::ping::STATUS) != "2" {
            misses += 1;
        }
        samples.push(took);
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            eprintln!("{i}: {:.1} ms", took.as_secs_f64() * 1e3);
        }
        let (k, _) = sync_to_end(&phone, &inbox, key, 100).await;
        key = k;
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "push via {mode}: n={} p50={:.1} ms p90={:.1} ms p99={:.1} ms max={:.1} ms mean={:.1} ms (not status 2: {misses})",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.90).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3,
        mean.as_secs_f64() * 1e3,
    );
}

async fn initial_sync(n: usize, window: usize) {
    let Some(dovecot) = Dovecot::start("imap_bench") else { return };
    dovecot.add_user("alice", PASSWORD);
    // One delivery creates the Maildir; the rest are written straight into it.
    dovecot.deliver_simple("alice@example.test", "first").await;
    let new_dir = dovecot.dir.path().join("mail/alice/Maildir/new");
    let fill = Instant::now();
    let base = chrono::Utc::now().timestamp() - n as i64 * 60;
    for i in 1..n {
        let raw = format!(
            "From: Sender <sender@example.test>\r\nTo: alice@example.test\r\nSubject: message {i}\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench-{i}@example.test>\r\n\r\nBody of message {i}.\r\n"
        );
        let path = new_dir.join(format!("{}.M{i}P1.bench", base + i as i64));
        std::fs::write(&path, raw).unwrap();
    }
    let _ = std::process::Command::new("chown").arg("-R").arg("8:8").arg(&new_dir).status();
    let srv = TestServer::start_imap(&dovecot, |_| {}).await;
    srv.enable_sync("alice").await;
    // Let Dovecot index the new files once, outside the measurement.
    let account = srv.app().store.authenticate("alice", PASSWORD).await.unwrap().unwrap();
    let mb = srv.app().store.mailbox(&account, pushsync::store::Origin::Server).await.unwrap();
    let count = mb.status(&pushsync::store::FolderId("INBOX".into())).await.unwrap().messages;
    println!("filled INBOX with {count} messages in {:.1} s", fill.elapsed().as_secs_f64());

    let (rss0, _) = memory();
    let started = Instant::now();
    let mut phone = srv.phone("alice", "BENCH");
    let inbox = phone.folder_id("2").await;
    let r = phone.post("Sync", Some(&sync_request(&inbox, "0", window, vec![]))).await.doc();
    let mut key = text_of(collection(&r), tag::air_sync::SYNC_KEY);
    let mut adds = 0;
    let mut rounds = 0;
    let mut slowest = Duration::ZERO;
    loop {
        let t = Instant::now();
        let r = phone.post("Sync", Some(&sync_request(&inbox, &key, window, vec![]))).await;
        slowest = slowest.max(t.elapsed());
        if r.body.is_empty() {
            break;
        }
        let doc = r.doc();
        let c = collection(&doc);
        key = text_of(c, tag::air_sync::SYNC_KEY);
        adds += commands(c).iter().filter(|(cmd, _)| cmd == "Add").count();
        rounds += 1;
        if c.child(tag::air_sync::MORE_AVAILABLE).is_none() {
            break;
        }
    }
    let took = started.elapsed();
    let (rss1, hwm) = memory();
    println!(
        "initial sync: {adds} messages in {rounds} windows of {window}: {:.2} s total, slowest window {:.0} ms; RSS {} MiB before, {} MiB after, peak {} MiB",
        took.as_secs_f64(),
        slowest.as_secs_f64() * 1e3,
        rss0 / 1024,
        rss1 / 1024,
        hwm / 1024
    );
}

/// Dovecot and pushsync for `pushsync-loadtest` to drive, until Ctrl-C.
async fn serve(mode: &str, users: usize, users_file: &str) {
    let users: Vec<(String, String)> = (1..=users).map(|i| (format!("lt-user-{i:05}"), "loadtest-secret-1".to_string())).collect();
    let Some((dovecot, srv)) = start("imap_bench_serve", mode, &users).await else { return };
    let file: String = users.iter().map(|(login, password)| format!("{login}:{password}\n")).collect();
    std::fs::write(users_file, file).expect("write the users file");
    println!("url=http://{} lmtp=127.0.0.1:{} pid={} users={} mode={mode}", srv.addr, dovecot.lmtp_port, std::process::id(), users.len());
    let _ = tokio::signal::ctrl_c().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("push") => {
            let mode = args.get(1).map(String::as_str).unwrap_or("notify");
            let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200);
            push(mode, n).await;
        }
        Some("initial-sync") => {
            let n = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
            let window = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(512);
            initial_sync(n, window).await;
        }
        Some("serve") => {
            let mode = args.get(1).map(String::as_str).unwrap_or("notify");
            let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
            let file = args.get(3).map(String::as_str).unwrap_or("lt.users");
            serve(mode, n, file).await;
        }
        _ => eprintln!(
            "usage: imap_bench push (notify|idle|webhook) [n] | initial-sync [n] [window] | serve (notify|idle|webhook) [n] [users-file]"
        ),
    }
}
