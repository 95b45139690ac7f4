//! One IMAP connection: TCP, implicit TLS or STARTTLS, the greeting and capabilities,
//! LOGIN / AUTHENTICATE PLAIN, tagged commands with literals (LITERAL+ when offered), and
//! reading responses.
//!
//! Responses are framed here (a line plus any literals it announces) and parsed by
//! `imap-proto`; a response it does not know (a response code such as `[ALREADYEXISTS]`,
//! `ESEARCH`, extended LIST data) is kept as raw bytes rather than failing the connection.
//! Nothing here has a timeout of its own: callers bound whole operations (see
//! [`super::pool`]), and a connection whose operation timed out is discarded.

use std::collections::HashSet;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use imap_proto::Response;
use imap_proto::{Capability, RequestId, ResponseCode, Status};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::wire::Arg;

/// Largest response accepted (a message literal plus its envelope).
const MAX_RESPONSE: usize = 256 * 1024 * 1024;
/// Literals up to this size go inline with LITERAL- (RFC 7888); LITERAL+ has no limit.
const LITERAL_MINUS_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error("the server closed the connection{0}")]
    Closed(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the server refused: {0}")]
    No(Completion),
    #[error("the server rejected the command: {0}")]
    Bad(Completion),
}

impl ImapError {
    /// Whether the connection is unusable after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ImapError::Io(_) | ImapError::Closed(_) | ImapError::Protocol(_))
    }
}

/// How to reach the server.
#[derive(Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// `imaps://`: TLS from the first byte.
    pub implicit_tls: bool,
    /// Client TLS settings (implicit TLS and STARTTLS).
    pub tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", if self.implicit_tls { "imaps" } else { "imap" }, self.host, self.port)
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    No,
    Bad,
}

/// The tagged end of a command.
#[derive(Debug)]
pub struct Completion {
    pub status: Outcome,
    pub code: Option<ResponseCode<'static>>,
    /// The human-readable text, including any response code imap-proto did not recognise
    /// (e.g. `[ALREADYEXISTS] Mailbox already exists`).
    pub text: String,
}

impl std::fmt::Display for Completion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl Completion {
    /// Whether the text carries this response code (`[OVERQUOTA]`, `[NONEXISTENT]`, ...).
    pub fn has_code(&self, code: &str) -> bool {
        self.text.to_ascii_uppercase().contains(&format!("[{code}"))
    }
}

/// An untagged response.
#[derive(Debug)]
pub enum Untagged {
    Parsed(Response<'static>),
    /// A complete response imap-proto could not parse, CRLF included.
    Raw(Vec<u8>),
}

/// A command's untagged responses and its completion.
#[derive(Debug)]
pub struct Reply {
    pub untagged: Vec<Untagged>,
    pub done: Completion,
}

impl Reply {
    /// Fails unless the command completed with OK.
    pub fn ok(self) -> Result<Reply, ImapError> {
        match self.done.status {
            Outcome::Ok => Ok(self),
            Outcome::No => Err(ImapError::No(self.done)),
            Outcome::Bad => Err(ImapError::Bad(self.done)),
        }
    }

    pub fn data(&self) -> impl Iterator<Item = &Response<'static>> {
        self.untagged.iter().filter_map(|u| match u {
            Untagged::Parsed(r) => Some(r),
            Untagged::Raw(_) => None,
        })
    }
}

/// Capabilities, upper-cased.
#[derive(Debug, Clone, Default)]
pub struct Caps(HashSet<String>);

impl Caps {
    pub fn has(&self, name: &str) -> bool {
        self.0.contains(&name.to_ascii_uppercase())
    }

    fn from_list(list: &[Capability<'_>]) -> Caps {
        Caps(
            list.iter()
                .map(|c| match c {
                    Capability::Imap4rev1 => "IMAP4REV1".to_string(),
                    Capability::Auth(a) => format!("AUTH={}", a.to_ascii_uppercase()),
                    Capability::Atom(a) => a.to_ascii_uppercase(),
                })
                .collect(),
        )
    }

    /// Removes capabilities the operator disabled.
    pub fn without(mut self, disabled: &[String]) -> Caps {
        for d in disabled {
            self.0.remove(&d.to_ascii_uppercase());
        }
        self
    }
}

/// What is selected on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The wire (modified UTF-7) name.
    pub name: String,
    pub uidvalidity: u32,
}

pub struct Session {
    io: Stream,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    pos: usize,
    tag_prefix: char,
    next_tag: u32,
    pub caps: Caps,
    pub selected: Option<Selected>,
    /// CONDSTORE/QRESYNC are enabled on this connection.
    pub condstore: bool,
    pub qresync: bool,
    /// The server said BYE or the stream failed: never reuse.
    pub broken: bool,
    /// Capabilities the operator disabled (applied after every capability refresh).
    disabled: Vec<String>,
}

impl Session {
    /// Connects, reads the greeting, upgrades with STARTTLS when offered (or required by
    /// `imaps://`), and learns the capabilities.
    pub async fn connect(endpoint: &Endpoint, disabled: &[String]) -> Result<Session, ImapError> {
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
        let _ = tcp.set_nodelay(true);
        let io = if endpoint.implicit_tls { Stream::Tls(Box::new(tls_handshake(endpoint, tcp).await?)) } else { Stream::Plain(tcp) };
        let mut s = Session {
            io,
            buf: Vec::with_capacity(8192),
            pos: 0,
            tag_prefix: 'p',
            next_tag: 1,
            caps: Caps::default(),
            selected: None,
            condstore: false,
            qresync: false,
            broken: false,
            disabled: disabled.to_vec(),
        };
        match s.read_response().await? {
            Untagged::Parsed(Response::Data { status: Status::Ok | Status::PreAuth, outcome }) => {
                if let Some(ResponseCode::Capabilities(c)) = &outcome.code {
                    s.caps = Caps::from_list(c).without(disabled);
                }
            }
            Untagged::Parsed(Response::Data { status: Status::Bye, outcome }) => {
                return Err(ImapError::Closed(format!(": {}", outcome.information.unwrap_or_default())));
            }
            other => return Err(ImapError::Protocol(format!("unexpected greeting {other:?}"))),
        }
        if s.caps.0.is_empty() {
            s.refresh_capabilities().await?;
        }
        if !endpoint.implicit_tls && s.caps.has("STARTTLS") {
            s.command("STARTTLS").await?.ok()?;
            let Stream::Plain(tcp) = std::mem::replace(&mut s.io, Stream::Gone) else {
                return Err(ImapError::Protocol("STARTTLS on a TLS connection".into()));
            };
            if s.pos < s.buf.len() {
                return Err(ImapError::Protocol("data sent before the TLS handshake".into()));
            }
            s.io = Stream::Tls(Box::new(tls_handshake(endpoint, tcp).await?));
            s.refresh_capabilities().await?;
        }
        Ok(s)
    }

    pub async fn refresh_capabilities(&mut self) -> Result<(), ImapError> {
        let reply = self.command("CAPABILITY").await?.ok()?;
        for r in reply.data() {
            if let Response::Capabilities(c) = r {
                self.caps = Caps::from_list(c).without(&self.disabled);
            }
        }
        Ok(())
    }

    /// Logs in; `Ok(false)` when the server refuses the credentials. Uses LOGIN unless the
    /// server forbids it, then AUTHENTICATE PLAIN.
    pub async fn login(&mut self, user: &str, password: &str) -> Result<bool, ImapError> {
        let reply = if self.caps.has("LOGINDISABLED") {
            if !self.caps.has("AUTH=PLAIN") {
                return Err(ImapError::Protocol("the server allows neither LOGIN nor AUTHENTICATE PLAIN".into()));
            }
            let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
            if self.caps.has("SASL-IR") {
                self.run(vec![Arg::Text(format!("AUTHENTICATE PLAIN {token}"))]).await?
            } else {
                self.authenticate_plain(&token).await?
            }
        } else {
            self.run(vec![Arg::Text("LOGIN".into()), super::wire::string(user), super::wire::string(password)]).await?
        };
        match reply.done.status {
            Outcome::Ok => {}
            // RFC 5530: the server cannot check now (a backend down): not a wrong password,
            // which would make phones ask their users for it again.
            Outcome::No if reply.done.has_code("UNAVAILABLE") || reply.done.has_code("SERVERBUG") => return Err(ImapError::No(reply.done)),
            Outcome::No => return Ok(false),
            Outcome::Bad => return Err(ImapError::Bad(reply.done)),
        }
        match &reply.done.code {
            Some(ResponseCode::Capabilities(c)) => self.caps = Caps::from_list(c).without(&self.disabled),
            _ => self.refresh_capabilities().await?,
        }
        if self.caps.has("ENABLE") {
            let what = if self.caps.has("QRESYNC") {
                "ENABLE QRESYNC CONDSTORE"
            } else if self.caps.has("CONDSTORE") {
                "ENABLE CONDSTORE"
            } else {
                ""
            };
            if !what.is_empty() {
                let reply = self.command(what).await?;
                // imap-proto reads `* ENABLED …` as a capability list.
                for r in reply.data() {
                    if let Response::Capabilities(list) = r {
                        let enabled = Caps::from_list(list);
                        self.qresync |= enabled.has("QRESYNC");
                        self.condstore |= enabled.has("CONDSTORE") || enabled.has("QRESYNC");
                    }
                }
            }
        } else if self.caps.has("CONDSTORE") {
            // Any CONDSTORE command enables it; our FETCHes always ask for MODSEQ.
            self.condstore = true;
        }
        Ok(true)
    }

    async fn authenticate_plain(&mut self, token: &str) -> Result<Reply, ImapError> {
        let tag = self.tag();
        self.io.write_all(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes()).await?;
        self.io.flush().await?;
        let mut untagged = Vec::new();
        loop {
            match self.read_response().await? {
                Untagged::Parsed(Response::Continue(_)) => break,
                other => match Self::completion_of(&tag, other) {
                    Ok(done) => return Ok(Reply { untagged, done }),
                    Err(other) => untagged.push(other),
                },
            }
        }
        self.io.write_all(format!("{token}\r\n").as_bytes()).await?;
        self.io.flush().await?;
        self.finish(&tag, untagged).await
    }

    fn tag(&mut self) -> String {
        let t = format!("{}{}", self.tag_prefix, self.next_tag);
        self.next_tag += 1;
        t
    }

    /// Runs a command made of plain text.
    pub async fn command(&mut self, text: &str) -> Result<Reply, ImapError> {
        self.run(vec![Arg::Text(text.to_string())]).await
    }

    /// Runs a command whose parts are joined by spaces; literals are sent as LITERAL+ when
    /// the server allows it, else after its continuation request.
    pub async fn run(&mut self, parts: Vec<Arg>) -> Result<Reply, ImapError> {
        if self.broken {
            return Err(ImapError::Closed(" earlier".into()));
        }
        let tag = self.tag();
        let mut out: Vec<u8> = Vec::with_capacity(128);
        out.extend_from_slice(tag.as_bytes());
        let mut untagged = Vec::new();
        let plus = self.caps.has("LITERAL+");
        let minus = self.caps.has("LITERAL-");
        for part in parts {
            out.push(b' ');
            match part {
                Arg::Text(t) => out.extend_from_slice(t.as_bytes()),
                Arg::Literal(bytes) => {
                    if plus || (minus && bytes.len() <= LITERAL_MINUS_MAX) {
                        out.extend_from_slice(format!("{{{}+}}\r\n", bytes.len()).as_bytes());
                        out.extend_from_slice(&bytes);
                    } else {
                        out.extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
                        self.io.write_all(&out).await.map_err(|e| self.fail(e))?;
                        self.io.flush().await.map_err(|e| self.fail(e))?;
                        out.clear();
                        loop {
                            let r = self.read_response().await?;
                            if let Untagged::Parsed(Response::Continue(_)) = r {
                                break;
                            }
                            match Self::completion_of(&tag, r) {
                                // Refused before the literal was sent.
                                Ok(done) => return Ok(Reply { untagged, done }),
                                Err(r) => untagged.push(r),
                            }
                        }
                        out.extend_from_slice(&bytes);
                    }
                }
            }
        }
        out.extend_from_slice(b"\r\n");
        self.io.write_all(&out).await.map_err(|e| self.fail(e))?;
        self.io.flush().await.map_err(|e| self.fail(e))?;
        self.finish(&tag, untagged).await
    }

    /// Reads responses until the completion of `tag`.
    async fn finish(&mut self, tag: &str, mut untagged: Vec<Untagged>) -> Result<Reply, ImapError> {
        loop {
            let r = self.read_response().await?;
            let r = match Self::completion_of(tag, r) {
                Ok(done) => {
                    if untagged.iter().any(|u| matches!(u, Untagged::Parsed(Response::Data { status: Status::Ok, outcome }) if outcome.information.as_deref().is_some_and(|i| i.starts_with("[CLOSED]")))) {
                        // A failed SELECT closed the previous mailbox.
                        self.selected = None;
                    }
                    return Ok(Reply { untagged, done });
                }
                Err(r) => r,
            };
            if let Untagged::Parsed(Response::Data { status: Status::Bye, .. }) = &r {
                self.broken = true;
            }
            untagged.push(r);
        }
    }

    /// The completion of `tag`, or the response given back.
    fn completion_of(tag: &str, r: Untagged) -> Result<Completion, Untagged> {
        match r {
            Untagged::Parsed(Response::Done { tag: RequestId(t), status, outcome }) if t == tag => {
                let code_text = outcome.code.as_ref().map(|c| format!("[{c:?}] ")).unwrap_or_default();
                let status = match status {
                    Status::Ok => Outcome::Ok,
                    Status::No => Outcome::No,
                    _ => Outcome::Bad,
                };
                let text = format!("{code_text}{}", outcome.information.as_deref().unwrap_or(""));
                Ok(Completion { status, code: outcome.code, text })
            }
            Untagged::Raw(raw) if raw.starts_with(tag.as_bytes()) && raw.get(tag.len()) == Some(&b' ') => {
                let line = String::from_utf8_lossy(&raw[tag.len() + 1..]).trim_end().to_string();
                let (status, text) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                let status = match status.to_ascii_uppercase().as_str() {
                    "OK" => Outcome::Ok,
                    "NO" => Outcome::No,
                    _ => Outcome::Bad,
                };
                Ok(Completion { status, code: None, text: text.to_string() })
            }
            other => Err(other),
        }
    }

    fn fail(&mut self, e: io::Error) -> ImapError {
        self.broken = true;
        ImapError::Io(e)
    }

    /// Starts IDLE; returns once the server accepted it. End it with [`Session::idle_done`].
    pub async fn idle_start(&mut self) -> Result<String, ImapError> {
        let tag = self.tag();
        self.io.write_all(format!("{tag} IDLE\r\n").as_bytes()).await.map_err(|e| self.fail(e))?;
        self.io.flush().await.map_err(|e| self.fail(e))?;
        loop {
            let r = self.read_response().await?;
            if let Untagged::Parsed(Response::Continue(_)) = r {
                return Ok(tag);
            }
            if let Ok(done) = Self::completion_of(&tag, r) {
                return Err(ImapError::Bad(done));
            }
        }
    }

    /// Ends IDLE; returns the responses that arrived before the completion.
    pub async fn idle_done(&mut self, tag: &str) -> Result<Reply, ImapError> {
        self.io.write_all(b"DONE\r\n").await.map_err(|e| self.fail(e))?;
        self.io.flush().await.map_err(|e| self.fail(e))?;
        self.finish(tag, Vec::new()).await
    }

    /// Reads the next response (IDLE and NOTIFY wait here; cancel-safe: a partial response
    /// stays in the buffer).
    pub async fn read_response(&mut self) -> Result<Untagged, ImapError> {
        loop {
            if let Some(end) = frame_end(&self.buf[self.pos..]) {
                let start = self.pos;
                self.pos += end;
                let frame = &self.buf[start..start + end];
                let parsed = match Response::parse(frame) {
                    Ok((_, r)) => Untagged::Parsed(r.into_owned()),
                    Err(_) => Untagged::Raw(frame.to_vec()),
                };
                if self.pos == self.buf.len() {
                    self.buf.clear();
                    self.pos = 0;
                } else if self.pos > 64 * 1024 {
                    self.buf.drain(..self.pos);
                    self.pos = 0;
                }
                return Ok(parsed);
            }
            if self.buf.len() - self.pos > MAX_RESPONSE {
                self.broken = true;
                return Err(ImapError::Protocol("response too large".into()));
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            let n = match self.io.read_buf(&mut self.buf).await {
                Ok(n) => n,
                Err(e) => return Err(self.fail(e)),
            };
            if n == 0 {
                self.broken = true;
                return Err(ImapError::Closed(String::new()));
            }
        }
    }

    /// Whether a pooled connection is still usable: polls the socket once without waiting.
    /// A closed socket or a pending BYE means it is not.
    pub async fn probe(&mut self) -> bool {
        if self.broken {
            return false;
        }
        let mut scratch = [0u8; 4096];
        match tokio::time::timeout(std::time::Duration::ZERO, self.io.read(&mut scratch)).await {
            Err(_) => true,
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.broken = true;
                false
            }
            Ok(Ok(n)) => {
                // Unsolicited data (an EXISTS, or a BYE): keep it for the next reader, and
                // drop the connection if it says goodbye.
                self.buf.extend_from_slice(&scratch[..n]);
                let bye = String::from_utf8_lossy(&self.buf[self.pos..]).contains("* BYE");
                if bye {
                    self.broken = true;
                }
                !bye
            }
        }
    }

    /// Sends LOGOUT and closes, bounded by the caller.
    pub async fn logout(mut self) {
        let _ = self.io.write_all(b"z LOGOUT\r\n").await;
        let _ = self.io.flush().await;
        let _ = self.io.shutdown().await;
    }
}

/// The end of the first complete response in `buf` (its line and every literal the line
/// announces), if there is one.
pub fn frame_end(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let nl = buf[at..].windows(2).position(|w| w == b"\r\n")? + at;
        let line = &buf[at..nl];
        match literal_len(line) {
            Some(n) => {
                let next = nl + 2 + n;
                if next > buf.len() {
                    return None;
                }
                at = next;
            }
            None => return Some(nl + 2),
        }
    }
}

/// `{n}` or `{n+}` at the end of a line.
fn literal_len(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"}")?;
    let open = line.iter().rposition(|&b| b == b'{')?;
    let digits = &line[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || digits.len() > 12 {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

async fn tls_handshake(endpoint: &Endpoint, tcp: TcpStream) -> Result<TlsStream<TcpStream>, ImapError> {
    let name = ServerName::try_from(endpoint.host.clone()).map_err(|e| ImapError::Protocol(format!("invalid server name: {e}")))?;
    TlsConnector::from(endpoint.tls.clone()).connect(name, tcp).await.map_err(ImapError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_lines_and_literals() {
        assert_eq!(frame_end(b"* OK hi\r\n* 1"), Some(9));
        assert_eq!(frame_end(b"* OK hi"), None);
        let fetch = b"* 1 FETCH (BODY[] {5}\r\nab\r\nc)\r\nnext";
        assert_eq!(frame_end(fetch), Some(fetch.len() - 4));
        assert_eq!(frame_end(b"* 1 FETCH (BODY[] {5}\r\nab"), None);
        assert_eq!(literal_len(b"a {12+}"), Some(12));
        assert_eq!(literal_len(b"a {x}"), None);
    }

    #[test]
    fn unknown_codes_stay_in_the_text() {
        let (_, r) = Response::parse(b"a1 NO [ALREADYEXISTS] Mailbox already exists\r\n").unwrap();
        let s = Session::completion_text_for_test(&r.into_owned());
        assert!(s.contains("ALREADYEXISTS"), "{s}");
    }

    impl Session {
        fn completion_text_for_test(r: &Response<'static>) -> String {
            match r {
                Response::Done { outcome, .. } => outcome.information.as_deref().unwrap_or("").to_string(),
                _ => String::new(),
            }
        }
    }
}
