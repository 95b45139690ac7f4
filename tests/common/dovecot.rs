//! A private Dovecot for the tests: its own configuration, runtime, state, logs and Maildirs
//! in a temporary directory, IMAP and LMTP on loopback ports, passwd-file users, and
//! optionally the push_notification Lua script posting to a pushsync webhook.
//!
//! Dovecot runs as the `mail` user for mail (uid 8, as Debian ships it) and is stopped with
//! SIGTERM when dropped. When it is not installed, [`Dovecot::start`] returns `None` after
//! printing a loud SKIPPED line, except in CI (`CI` set), where that is a failure.
#![allow(dead_code)]

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// uid/gid of `mail` on Debian.
const MAIL_UID: u32 = 8;

/// What to configure beyond the basics.
#[derive(Clone, Debug, Default)]
pub struct DovecotOptions {
    /// `(url, secret)`: load the push_notification Lua driver posting there.
    pub webhook: Option<(String, String)>,
    /// Default storage quota per user, in bytes (the quota plugin is always loaded; without
    /// this the limit is 1 GiB).
    pub quota_bytes: Option<u64>,
    /// Serve TLS (STARTTLS on the IMAP port, and an imaps port) with a self-signed
    /// certificate for 127.0.0.1, written to `<dir>/ca.pem`.
    pub tls: bool,
    /// `(user, password)` of a master user (`alice*user` logs in as alice).
    pub master: Option<(String, String)>,
}

pub struct Dovecot {
    pub dir: tempfile::TempDir,
    pub imap_port: u16,
    pub lmtp_port: u16,
    /// The implicit-TLS port (with `tls`).
    pub imaps_port: u16,
    opts: DovecotOptions,
    child: Option<Child>,
    users: Mutex<Vec<(String, String, Option<u64>)>>,
}

/// The dovecot binary, if installed.
pub fn binary() -> Option<PathBuf> {
    for p in ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"] {
        if Path::new(p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    let out = Command::new("sh").arg("-c").arg("command -v dovecot").output().ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// Whether the Dovecot tests can run; in CI its absence fails the test.
pub fn available(test: &str) -> bool {
    if binary().is_some() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("dovecot is not installed but CI requires the Dovecot tests ({test}): install dovecot-imapd and dovecot-lmtpd");
    }
    eprintln!("\n*** SKIPPED: dovecot not installed ({test}) ***\n");
    false
}

/// A free loopback port (bound and released: good enough on a test machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// Free loopback ports that differ from each other: all are held at once while probing,
/// so the kernel cannot hand the same one out twice (Dovecot refuses a duplicate listener).
fn distinct_free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    std::array::from_fn(|i| held[i].local_addr().expect("addr").port())
}

fn chown(path: &Path) {
    let _ = Command::new("chown").arg("-R").arg(format!("{MAIL_UID}:{MAIL_UID}")).arg(path).status();
}

impl Dovecot {
    /// Starts a Dovecot with default options; `None` (after a SKIPPED line) when Dovecot is
    /// not installed outside CI.
    pub fn start(test: &str) -> Option<Dovecot> {
        Self::start_with(test, DovecotOptions::default())
    }

    pub fn start_with(test: &str, opts: DovecotOptions) -> Option<Dovecot> {
        if !available(test) {
            return None;
        }
        let dir = tempfile::Builder::new().prefix("pushsync-dovecot-").tempdir().expect("temp dir");
        // Dovecot's unprivileged processes (mail, dovenull) must reach their files.
        let _ = Command::new("chmod").arg("755").arg(dir.path()).status();
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        chown(&dir.path().join("mail"));
        let script = dir.path().join("pushsync-push.lua");
        std::fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/dovecot/pushsync-push.lua"), &script)
            .expect("copy the Lua script");
        let _ = Command::new("chmod").arg("644").arg(&script).status();
        let mut d = Dovecot { dir, imap_port: 0, lmtp_port: 0, imaps_port: 0, opts, child: None, users: Mutex::new(Vec::new()) };
        d.write_tls_and_master();
        d.write_passwd();
        for attempt in 0..3 {
            // The webhook's port is pushsync's to bind later: Dovecot must not take it.
            let webhook_port = d.opts.webhook.as_ref().and_then(|(url, _)| url.rsplit(':').next()?.split('/').next()?.parse::<u16>().ok());
            loop {
                [d.imap_port, d.lmtp_port, d.imaps_port] = distinct_free_ports();
                if !webhook_port.is_some_and(|w| [d.imap_port, d.lmtp_port, d.imaps_port].contains(&w)) {
                    break;
                }
            }
            d.write_config();
            match d.launch() {
                Ok(()) => return Some(d),
                // Another test took a port between our probe and Dovecot's bind: new ports.
                Err(log) if attempt < 2 && log.contains("in use") => {}
                Err(log) => panic!("dovecot did not start:\n{log}"),
            }
        }
        unreachable!("three attempts")
    }

    pub fn url(&self) -> String {
        format!("imap://127.0.0.1:{}", self.imap_port)
    }

    /// The `imaps://` URL (with `tls`).
    pub fn imaps_url(&self) -> String {
        format!("imaps://127.0.0.1:{}", self.imaps_port)
    }

    /// The self-signed certificate (with `tls`).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn write_tls_and_master(&self) {
        if self.opts.tls {
            let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("certificate");
            std::fs::write(self.dir.path().join("ca.pem"), ck.cert.pem()).expect("cert");
            std::fs::write(self.dir.path().join("key.pem"), ck.key_pair.serialize_pem()).expect("key");
        }
        if let Some((user, password)) = &self.opts.master {
            std::fs::write(self.dir.path().join("master-users"), format!("{user}:{{PLAIN}}{password}::::::\n")).expect("master users");
        }
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.path().join("dovecot.conf")
    }

    fn write_config(&self) {
        let root = self.dir.path().display().to_string();
        let quota = self.opts.quota_bytes.map(|b| format!("{}B", b)).unwrap_or_else(|| "1G".into());
        let (push_plugins, push_settings) = match &self.opts.webhook {
            Some((url, secret)) => (
                " mail_lua push_notification_lua",
                format!(
                    "  push_notification_driver = lua:file={root}/pushsync-push.lua\n  pushsync_url = {url}\n  pushsync_secret = {secret}\n  pushsync_timeout_msecs = 1000\n"
                ),
            ),
            None => ("", String::new()),
        };
        let ssl = if self.opts.tls {
            format!("ssl = yes\nssl_cert = <{root}/ca.pem\nssl_key = <{root}/key.pem\n")
        } else {
            "ssl = no\n".to_string()
        };
        let imaps_port = if self.opts.tls { self.imaps_port } else { 0 };
        let master = match &self.opts.master {
            Some(_) => format!(
                "auth_master_user_separator = *\npassdb {{\n  driver = passwd-file\n  args = {root}/master-users\n  master = yes\n  pass = yes\n}}\n"
            ),
            None => String::new(),
        };
        let conf = format!(
            r#"# Generated by the pushsync tests.
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
instance_name = pushsync-test-{imap}
protocols = imap lmtp
listen = 127.0.0.1
# Room for a benchmark's hundreds of watching and pooled IMAP connections (default 100).
default_process_limit = 1000
{ssl}disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Ln
auth_failure_delay = 0
first_valid_uid = {uid}
mail_location = maildir:~/Maildir
mail_fsync = never
mail_plugins = $mail_plugins quota notify push_notification{push_plugins}
{master}passdb {{
  driver = passwd-file
  args = {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = {root}/passwd
  default_fields = uid={uid} gid={uid} home={root}/mail/%u
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
service submission-login {{
  inet_listener submission {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp}
  }}
}}
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
  mail_max_userip_connections = 1000
}}
namespace inbox {{
  inbox = yes
  separator = /
  mailbox Drafts {{
    special_use = \Drafts
    auto = subscribe
  }}
  mailbox Sent {{
    special_use = \Sent
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \Trash
    auto = subscribe
  }}
  mailbox Junk {{
    special_use = \Junk
    auto = subscribe
  }}
}}
plugin {{
  quota = maildir:User quota
  quota_rule = *:storage={quota}
{push_settings}}}
"#,
            root = root,
            imap = self.imap_port,
            lmtp = self.lmtp_port,
            uid = MAIL_UID,
            quota = quota,
            push_plugins = push_plugins,
            push_settings = push_settings,
            ssl = ssl,
            master = master,
            imaps_port = imaps_port,
        );
        std::fs::write(self.conf_path(), conf).expect("write dovecot.conf");
    }

    fn write_passwd(&self) {
        let users = self.users.lock().unwrap();
        let mut text = String::new();
        for (name, password, quota) in users.iter() {
            let extra = quota.map(|q| format!("userdb_quota_rule=*:storage={q}B")).unwrap_or_default();
            text.push_str(&format!("{name}:{{PLAIN}}{password}::::::{extra}\n"));
        }
        let path = self.dir.path().join("passwd");
        let tmp = self.dir.path().join("passwd.tmp");
        let mut f = std::fs::File::create(&tmp).expect("passwd");
        f.write_all(text.as_bytes()).expect("passwd");
        drop(f);
        std::fs::rename(&tmp, &path).expect("passwd");
    }

    /// Adds (or replaces) a user; Dovecot rereads the passwd file when it changes.
    pub fn add_user(&self, name: &str, password: &str) {
        self.add_user_with_quota(name, password, None);
    }

    /// A user with their own storage quota in bytes.
    pub fn add_user_with_quota(&self, name: &str, password: &str, quota_bytes: Option<u64>) {
        {
            let mut users = self.users.lock().unwrap();
            users.retain(|(n, _, _)| n != name);
            users.push((name.to_string(), password.to_string(), quota_bytes));
        }
        self.write_passwd();
        // passwd-file notices changes by mtime (one-second resolution): make sure it does.
        std::thread::sleep(Duration::from_millis(5));
    }

    fn launch(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("stdout.log")).expect("log");
        let child = Command::new(binary().expect("dovecot"))
            .arg("-F")
            .arg("-c")
            .arg(self.conf_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start dovecot");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.imap_port)) {
                use std::io::Read as _;
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 256];
                if s.read(&mut buf).is_ok_and(|n| n > 0 && buf.starts_with(b"* OK"))
                    && std::net::TcpStream::connect(("127.0.0.1", self.lmtp_port)).is_ok()
                {
                    return Ok(());
                }
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                self.child = None;
                return Err(self.log());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!("dovecot did not start listening:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything Dovecot logged.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for f in ["stdout.log", "dovecot.log"] {
            out.push_str(&std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default());
        }
        out
    }

    /// SIGTERM to the master, then waits for it (and its children) to go.
    pub fn stop(&mut self) {
        self.thaw();
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        // The listeners close with the master; wait until the port is free again.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.imap_port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts it again on the same ports, configuration and mail.
    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.launch().unwrap_or_else(|log| panic!("dovecot did not start again:\n{log}"));
        }
    }

    /// The master and every process it started (pids), from /proc.
    fn process_tree(&self) -> Vec<u32> {
        let Some(master) = self.child.as_ref().map(Child::id) else { return Vec::new() };
        let mut tree = vec![master];
        let mut grew = true;
        while grew {
            grew = false;
            for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
                if tree.contains(&pid) {
                    continue;
                }
                let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
                // pid (comm) state ppid ...
                let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|p| p.parse::<u32>().ok());
                if ppid.is_some_and(|p| tree.contains(&p)) {
                    tree.push(pid);
                    grew = true;
                }
            }
        }
        tree
    }

    fn signal_tree(&self, signal: &str) {
        for pid in self.process_tree() {
            let _ = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).stderr(Stdio::null()).status();
        }
    }

    /// Freezes Dovecot (SIGSTOP to its processes): connections stay open, nothing answers.
    pub fn freeze(&self) {
        self.signal_tree("STOP");
    }

    /// Lets a frozen Dovecot run again.
    pub fn thaw(&self) {
        self.signal_tree("CONT");
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Delivers a message over LMTP; returns when Dovecot answered 250 for the recipient.
    pub async fn deliver(&self, to: &str, raw: &[u8]) -> Result<(), String> {
        tokio::time::timeout(Duration::from_secs(30), lmtp_deliver(self.lmtp_port, to, raw))
            .await
            .map_err(|_| "LMTP timed out".to_string())?
    }

    /// Delivers a small generated message.
    pub async fn deliver_simple(&self, to: &str, subject: &str) {
        let raw = super::message(to, subject, "Hello from Dovecot's LMTP.");
        self.deliver(to, &raw).await.unwrap_or_else(|e| panic!("delivery failed: {e}\n{}", self.log()));
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn lmtp_reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Result<String, String> {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err(format!("LMTP connection closed after {all:?}"));
        }
        all.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return Ok(all);
        }
    }
}

async fn lmtp_deliver(port: u16, to: &str, raw: &[u8]) -> Result<(), String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let expect = |reply: String, code: &str| if reply.starts_with(code) { Ok(()) } else { Err(reply) };
    expect(lmtp_reply(&mut read).await?, "220")?;
    for (cmd, code) in [
        ("LHLO pushsync-tests".to_string(), "250"),
        ("MAIL FROM:<sender@example.test>".to_string(), "250"),
        (format!("RCPT TO:<{to}>"), "250"),
        ("DATA".to_string(), "354"),
    ] {
        write.write_all(format!("{cmd}\r\n").as_bytes()).await.map_err(|e| e.to_string())?;
        expect(lmtp_reply(&mut read).await?, code)?;
    }
    let mut body = Vec::with_capacity(raw.len() + 16);
    for line in raw.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            body.push(b'.');
        }
        body.extend_from_slice(line);
    }
    if !body.ends_with(b"\r\n") {
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b".\r\n");
    write.write_all(&body).await.map_err(|e| e.to_string())?;
    expect(lmtp_reply(&mut read).await?, "250")?;
    let _ = write.write_all(b"QUIT\r\n").await;
    Ok(())
}
