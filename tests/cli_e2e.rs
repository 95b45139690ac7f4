//! The `pushsync` binary as administrators use it: serve, user management through the
//! running server, deliver, LMTP from a real client, crash safety, backup, wbxml tools.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_pushsync");

struct Server {
    child: Child,
    dir: PathBuf,
}

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> Server {
        let _ = std::fs::remove_file(dir.join("server.json"));
        let mut args =
            vec!["serve", "--plain-http", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--lmtp-listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let child = Command::new(BIN)
            .args(&args)
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pushsync serve");
        let started = Instant::now();
        while !dir.join("server.json").exists() {
            assert!(started.elapsed() < Duration::from_secs(30), "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Server { child, dir: dir.to_path_buf() }
    }

    fn info(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(self.dir.join("server.json")).unwrap()).unwrap()
    }

    fn lmtp(&self) -> String {
        self.info()["lmtp_listen"].as_str().unwrap().to_string()
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }

    fn stop(mut self) {
        unsafe_sigterm(self.child.id());
        let _ = self.child.wait();
        std::mem::forget(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
}

/// Runs `pushsync ARGS --data-dir DIR` with `stdin`; returns (success, stdout, stderr).
fn cli(dir: &Path, args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pushsync");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn users_delivery_quota_backup_through_the_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    let (ok, out, err) = cli(dir.path(), &["user", "add", "alice", "--email", "alice@example.test", "--password-stdin"], b"s3cret\n");
    assert!(ok, "{out}{err}");
    assert!(out.contains("Mobile Sync: enabled"), "{out}");
    let (ok, out, _) = cli(dir.path(), &["user", "add", "bob", "--email", "bob@example.test"], b"");
    assert!(ok && out.contains("password: "), "a generated password is printed once: {out}");
    let (ok, _, err) = cli(dir.path(), &["user", "add", "alice", "--email", "other@example.test", "--password-stdin"], b"x\n");
    assert!(!ok && err.contains("409"), "{err}");
    let (ok, out, _) = cli(dir.path(), &["user", "list"], b"");
    assert!(ok && out.contains("alice@example.test") && out.contains("bob@example.test"));

    let (ok, out, err) = cli(dir.path(), &["deliver", "alice"], b"Subject: via cli\r\n\r\nhello\r\n");
    assert!(ok, "{err}");
    assert!(out.contains("delivered to alice"), "{out}");
    // Odd MIME is stored as bytes, never refused.
    let (ok, _, err) = cli(dir.path(), &["deliver", "alice"], b"\x00\xffno headers at all\r\n--broken\r\n");
    assert!(ok, "{err}");

    let (ok, _, _) = cli(dir.path(), &["user", "quota", "alice", "1K"], b"");
    assert!(ok);
    let big = format!("Subject: big\r\n\r\n{}\r\n", "x".repeat(4000));
    let (ok, _, err) = cli(dir.path(), &["deliver", "alice"], big.as_bytes());
    assert!(!ok && err.contains("quota"), "{err}");
    let (ok, _, err) = cli(dir.path(), &["deliver", "nobody"], b"Subject: x\r\n\r\nx\r\n");
    assert!(!ok && err.contains("404"), "{err}");

    let (ok, out, _) = cli(dir.path(), &["sync", "list"], b"");
    assert!(ok && out.contains("\"alice\""), "{out}");
    let (ok, _, _) = cli(dir.path(), &["sync", "disable", "bob"], b"");
    assert!(ok);
    let (ok, out, _) = cli(dir.path(), &["audit"], b"");
    assert!(ok && out.contains("sync.disable") && out.contains("user.add"), "{out}");
    let (ok, out, _) = cli(dir.path(), &["usage", "--format", "csv"], b"");
    assert!(ok && out.starts_with("month,login"), "{out}");

    // Backup while running, then restore into a fresh data directory and find the mail.
    let backup = dir.path().join("backup-1");
    let (ok, out, err) = cli(dir.path(), &["backup", "--to", backup.to_str().unwrap()], b"");
    assert!(ok, "{out}{err}");
    assert!(backup.join("store.db").exists() && backup.join("state.db").exists());
    server.stop();
    let restored = tempfile::tempdir().unwrap();
    for f in ["store.db", "state.db", "admin.token"] {
        std::fs::copy(backup.join(f), restored.path().join(f)).unwrap();
    }
    let again = Server::start(restored.path(), &[]);
    let (ok, out, _) = cli(restored.path(), &["user", "list"], b"");
    assert!(ok && out.contains("alice@example.test"), "{out}");
    again.stop();
}

#[test]
fn wbxml_tools_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let wbxml = [0x03u8, 0x01, 0x6A, 0x00, 0x00, 0x07, 0x56, 0x52, 0x03, b'0', 0x00, 0x01, 0x01];
    let (ok, xml, err) = cli(dir.path(), &["wbxml", "decode"], &wbxml);
    assert!(ok, "{err}");
    assert!(xml.contains("<FolderHierarchy:SyncKey>0</FolderHierarchy:SyncKey>"), "{xml}");
    let mut child = Command::new(BIN).args(["wbxml", "encode"]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(xml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, wbxml);
    let (ok, _, err) = cli(dir.path(), &["wbxml", "decode"], b"garbage");
    assert!(!ok && err.contains("WBXML"), "{err}");
}

#[test]
fn lmtp_from_a_real_client_delivers_per_recipient() {
    if Command::new("python3").arg("--version").output().is_err() {
        panic!("python3 is needed for the LMTP client test");
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pushsync.toml");
    std::fs::write(&cfg, "[mail]\nmax_message_bytes = 20000\n").unwrap();
    let server = Server::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    assert!(cli(dir.path(), &["user", "add", "alice", "--email", "alice@example.test", "--password-stdin"], b"pw\n").0);
    assert!(cli(dir.path(), &["user", "add", "bob", "--email", "bob@example.test", "--password-stdin"], b"pw\n").0);
    let (host, port) = server.lmtp().rsplit_once(':').map(|(h, p)| (h.to_string(), p.to_string())).unwrap();
    let script = format!(
        r#"
import smtplib
s = smtplib.LMTP("{host}", {port})
msg = b"From: sender@example.test\r\nTo: alice@example.test\r\nSubject: over lmtp\r\n\r\nhello\r\n"
refused = s.sendmail("sender@example.test", ["alice@example.test", "nobody@example.test", "bob+lists@example.test"], msg)
print("REFUSED", sorted((k, v[0]) for k, v in refused.items()))
try:
    s.sendmail("sender@example.test", ["alice@example.test"], b"Subject: big\r\n\r\n" + b"x" * 30000 + b"\r\n")
    print("BIG accepted")
except smtplib.SMTPException as e:
    print("BIG refused", e)
s.quit()
"#
    );
    let out = Command::new("python3").arg("-c").arg(&script).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("REFUSED [('nobody@example.test', 550)]"), "{text}");
    assert!(text.contains("BIG refused") && text.contains("552"), "{text}");
    // Both known recipients have it.
    let (_, out, _) = cli(dir.path(), &["user", "list"], b"");
    let users: serde_json::Value = serde_json::from_str(&out).unwrap();
    for u in users["users"].as_array().unwrap() {
        assert!(u["used_bytes"].as_u64().unwrap() > 0, "{} received nothing", u["login"]);
    }
    server.stop();
}

/// A minimal LMTP client: returns the per-recipient reply codes, or None on a dead server.
async fn lmtp_send(addr: &str, to: &str, subject: &str) -> Option<u16> {
    let stream = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await.ok()?.ok()?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>, line: &mut String) -> Option<u16> {
        loop {
            line.clear();
            if r.read_line(line).await.ok()? == 0 {
                return None;
            }
            if line.as_bytes().get(3) != Some(&b'-') {
                return line.get(..3)?.parse().ok();
            }
        }
    }
    reply(&mut r, &mut line).await?;
    let body = format!("LHLO t\r\nMAIL FROM:<s@example.test>\r\nRCPT TO:<{to}>\r\nDATA\r\n");
    w.write_all(body.as_bytes()).await.ok()?;
    for _ in 0..4 {
        reply(&mut r, &mut line).await?;
    }
    w.write_all(format!("Subject: {subject}\r\n\r\nbody\r\n.\r\n").as_bytes()).await.ok()?;
    let code = reply(&mut r, &mut line).await?;
    let _ = w.write_all(b"QUIT\r\n").await;
    Some(code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deliveries_survive_kill_9_and_uids_are_never_reused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]);
    assert!(cli(dir.path(), &["user", "add", "alice", "--email", "alice@example.test", "--password-stdin"], b"pw\n").0);
    let lmtp = server.lmtp();
    // Four concurrent senders; the server is killed while they run.
    let mut tasks = Vec::new();
    for t in 0..4 {
        let lmtp = lmtp.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..1000 {
                let subject = format!("crash-{t}-{i}");
                match lmtp_send(&lmtp, "alice@example.test", &subject).await {
                    Some(250) => acked.push(subject),
                    _ => break,
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.kill9();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(!acked.is_empty(), "some deliveries were acknowledged before the kill");

    let server = Server::start(dir.path(), &[]);
    let db = rusqlite::Connection::open_with_flags(dir.path().join("store.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut stmt = db.prepare("SELECT b.raw FROM messages m JOIN bodies b ON b.id = m.body_id").unwrap();
    let stored: Vec<String> =
        stmt.query_map([], |r| r.get::<_, Vec<u8>>(0)).unwrap().map(|r| String::from_utf8_lossy(&r.unwrap()).into_owned()).collect();
    for subject in &acked {
        assert!(stored.iter().any(|m| m.contains(&format!("Subject: {subject}\r\n"))), "{subject} was acknowledged but is gone");
    }
    let max_uid: i64 = db.query_row("SELECT max(uid) FROM messages", [], |r| r.get(0)).unwrap();
    let uidnext: i64 = db.query_row("SELECT uidnext FROM folders WHERE role = 'inbox'", [], |r| r.get(0)).unwrap();
    assert!(uidnext > max_uid);
    drop(stmt);
    drop(db);
    assert_eq!(lmtp_send(&server.lmtp(), "alice@example.test", "after restart").await, Some(250));
    let db = rusqlite::Connection::open_with_flags(dir.path().join("store.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let newest: i64 = db.query_row("SELECT max(uid) FROM messages", [], |r| r.get(0)).unwrap();
    assert!(newest > max_uid, "a UID was reused after the crash");
    eprintln!("{} deliveries acknowledged before kill -9, all present after restart", acked.len());
    server.stop();
}
