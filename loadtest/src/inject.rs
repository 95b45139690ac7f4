//! Putting messages into the store: the admin API's `deliver` (embedded store), LMTP, or
//! IMAP APPEND as the user. Each returns once the store acknowledged the message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Mutex;

use crate::admin::Admin;
use crate::users::UserCred;

/// How long one injection may take.
pub const INJECT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest protocol line accepted from an LMTP or IMAP server.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InjectKind {
    /// `POST /v1/deliver` of the admin API (embedded store).
    Admin,
    /// LMTP (`--lmtp ADDR`): pushsync's own listener or Dovecot's.
    Lmtp,
    /// IMAP APPEND to INBOX as the user (`--imap ADDR`).
    Imap,
}

impl InjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InjectKind::Admin => "admin",
            InjectKind::Lmtp => "lmtp",
            InjectKind::Imap => "imap",
        }
    }
}

pub enum Injector {
    Admin(Arc<Admin>),
    Lmtp { addr: SocketAddr, idle: Mutex<Vec<LineConn>> },
    Imap { addr: SocketAddr, sessions: Mutex<HashMap<String, Arc<Mutex<Option<LineConn>>>>> },
}

impl Injector {
    pub fn lmtp(addr: SocketAddr) -> Injector {
        Injector::Lmtp { addr, idle: Mutex::new(Vec::new()) }
    }

    pub fn imap(addr: SocketAddr) -> Injector {
        Injector::Imap { addr, sessions: Mutex::new(HashMap::new()) }
    }

    /// Delivers `raw` to `user`; an error is a short kind (`http-500`, `lmtp-452`, `io`, ...)
    /// and a description.
    pub async fn deliver(&self, user: &UserCred, raw: Vec<u8>) -> Result<(), (String, String)> {
        let r = tokio::time::timeout(INJECT_TIMEOUT, self.deliver_inner(user, raw)).await;
        r.unwrap_or_else(|_| Err(("timeout".into(), "no acknowledgement in time".into())))
    }

    async fn deliver_inner(&self, user: &UserCred, raw: Vec<u8>) -> Result<(), (String, String)> {
        match self {
            Injector::Admin(admin) => {
                admin.deliver(&user.address, raw).await.map_err(|e| (e.split(':').next().unwrap_or("admin").to_string(), e))
            }
            Injector::Lmtp { addr, idle } => {
                let conn = idle.lock().await.pop();
                let mut conn = match conn {
                    Some(c) => c,
                    None => lmtp_connect(*addr).await.map_err(io_err)?,
                };
                lmtp_send(&mut conn, &user.address, &raw).await?;
                idle.lock().await.push(conn);
                Ok(())
            }
            Injector::Imap { addr, sessions } => {
                let slot = sessions.lock().await.entry(user.login.clone()).or_default().clone();
                let mut slot = slot.lock().await;
                if slot.is_none() {
                    *slot = Some(imap_login(*addr, &user.login, &user.password).await?);
                }
                let conn = slot.as_mut().expect("logged in above");
                let r = imap_append(conn, &raw).await;
                if r.is_err() {
                    *slot = None;
                }
                r
            }
        }
    }
}

fn io_err(e: std::io::Error) -> (String, String) {
    ("io".into(), e.to_string())
}

/// A line-oriented client connection (LMTP, IMAP).
pub struct LineConn {
    r: BufReader<OwnedReadHalf>,
    w: OwnedWriteHalf,
    tag: u64,
}

impl LineConn {
    async fn open(addr: SocketAddr) -> std::io::Result<LineConn> {
        let s = TcpStream::connect(addr).await?;
        let _ = s.set_nodelay(true);
        let (r, w) = s.into_split();
        Ok(LineConn { r: BufReader::new(r), w, tag: 0 })
    }

    async fn line(&mut self) -> std::io::Result<String> {
        let mut buf = Vec::new();
        let n = (&mut self.r).take(MAX_LINE as u64).read_until(b'\n', &mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        Ok(String::from_utf8_lossy(&buf).trim_end().to_string())
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.w.write_all(bytes).await?;
        self.w.flush().await
    }
}

use tokio::io::AsyncReadExt as _;

/// Reads an SMTP/LMTP reply (possibly multi-line); returns its code and last line.
async fn smtp_reply(c: &mut LineConn) -> std::io::Result<(u16, String)> {
    loop {
        let l = c.line().await?;
        let code: u16 = l
            .get(..3)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad reply {l:?}")))?;
        if l.as_bytes().get(3) != Some(&b'-') {
            return Ok((code, l));
        }
    }
}

async fn expect(c: &mut LineConn, class: u16, what: &str) -> Result<(), (String, String)> {
    let (code, line) = smtp_reply(c).await.map_err(io_err)?;
    if code / 100 != class {
        return Err((format!("lmtp-{code}"), format!("{what}: {line}")));
    }
    Ok(())
}

async fn lmtp_connect(addr: SocketAddr) -> std::io::Result<LineConn> {
    let mut c = LineConn::open(addr).await?;
    let greet = |r: Result<(), (String, String)>| r.map_err(|(_, m)| std::io::Error::other(m));
    greet(expect(&mut c, 2, "greeting").await)?;
    c.send(b"LHLO loadtest.invalid\r\n").await?;
    greet(expect(&mut c, 2, "LHLO").await)?;
    Ok(c)
}

/// Dot-stuffs a message and ends it with CRLF.CRLF.
pub fn dot_stuff(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + 16);
    let mut at_line_start = true;
    for &b in raw {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

async fn lmtp_send(c: &mut LineConn, to: &str, raw: &[u8]) -> Result<(), (String, String)> {
    c.send(b"MAIL FROM:<loadtest@loadtest.invalid>\r\n").await.map_err(io_err)?;
    expect(c, 2, "MAIL FROM").await?;
    c.send(format!("RCPT TO:<{to}>\r\n").as_bytes()).await.map_err(io_err)?;
    if let Err(e) = expect(c, 2, "RCPT TO").await {
        let _ = c.send(b"RSET\r\n").await;
        let _ = smtp_reply(c).await;
        return Err(e);
    }
    c.send(b"DATA\r\n").await.map_err(io_err)?;
    expect(c, 3, "DATA").await?;
    c.send(&dot_stuff(raw)).await.map_err(io_err)?;
    // One reply per accepted recipient: here exactly one.
    expect(c, 2, "message").await
}

/// An IMAP quoted string.
pub fn imap_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        if ch == '"' || ch == '\\' {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('"');
    out
}

/// Reads until the tagged reply of `tag`; an error unless it is OK.
async fn imap_tagged(c: &mut LineConn, tag: &str) -> Result<String, (String, String)> {
    loop {
        let l = c.line().await.map_err(io_err)?;
        if let Some(rest) = l.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
            return if rest.starts_with("OK") {
                Ok(rest.to_string())
            } else {
                Err((format!("imap-{}", rest.split_whitespace().next().unwrap_or("?").to_lowercase()), l))
            };
        }
    }
}

async fn imap_login(addr: SocketAddr, login: &str, password: &str) -> Result<LineConn, (String, String)> {
    let mut c = LineConn::open(addr).await.map_err(io_err)?;
    let greeting = c.line().await.map_err(io_err)?;
    if !greeting.starts_with("* OK") {
        return Err(("imap-greeting".into(), greeting));
    }
    c.tag += 1;
    let tag = format!("L{}", c.tag);
    c.send(format!("{tag} LOGIN {} {}\r\n", imap_quote(login), imap_quote(password)).as_bytes()).await.map_err(io_err)?;
    imap_tagged(&mut c, &tag).await?;
    Ok(c)
}

async fn imap_append(c: &mut LineConn, raw: &[u8]) -> Result<(), (String, String)> {
    c.tag += 1;
    let tag = format!("A{}", c.tag);
    c.send(format!("{tag} APPEND INBOX {{{}}}\r\n", raw.len()).as_bytes()).await.map_err(io_err)?;
    // Synchronising literal: wait for the continuation.
    loop {
        let l = c.line().await.map_err(io_err)?;
        if l.starts_with('+') {
            break;
        }
        if l.starts_with(&tag) {
            return Err(("imap-append".into(), l));
        }
    }
    let mut payload = raw.to_vec();
    payload.extend_from_slice(b"\r\n");
    c.send(&payload).await.map_err(io_err)?;
    imap_tagged(c, &tag).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuff(b".x"), b"..x\r\n.\r\n");
        assert_eq!(imap_quote(r#"pa"ss\"#), r#""pa\"ss\\""#);
    }

    /// A one-shot LMTP server on loopback that checks the dialogue.
    #[tokio::test]
    async fn lmtp_dialogue() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            w.write_all(b"220 test LMTP\r\n").await.unwrap();
            let mut got = Vec::new();
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).await.unwrap() == 0 {
                    break;
                }
                got.push(line.clone());
                let reply: &[u8] = match line.trim_end() {
                    l if l.starts_with("LHLO") => b"250-test\r\n250 PIPELINING\r\n",
                    l if l.starts_with("MAIL") || l.starts_with("RCPT") => b"250 ok\r\n",
                    "DATA" => b"354 go\r\n",
                    "." => b"250 2.0.0 delivered\r\n",
                    _ => b"",
                };
                w.write_all(reply).await.unwrap();
                if line.trim_end() == "." {
                    break;
                }
            }
            got
        });
        let inj = Injector::lmtp(addr);
        let user = UserCred { index: 0, login: "u".into(), password: "p".into(), address: "u@example.test".into() };
        inj.deliver(&user, b"Subject: x\r\n\r\n.dot\r\n".to_vec()).await.unwrap();
        let got = server.await.unwrap();
        assert!(got.iter().any(|l| l == "RCPT TO:<u@example.test>\r\n"));
        assert!(got.iter().any(|l| l == "..dot\r\n"));
    }
}
