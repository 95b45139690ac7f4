//! An LMTP listener (RFC 2033) so a real MTA (Postfix, Exim) delivers into the embedded
//! store. Each recipient gets its own reply after DATA: 250 once the message is committed,
//! 550 for unknown users (already at RCPT), 552 for oversize or over-quota.
//!
//! Bounded everywhere: line length, recipients per transaction, message size, idle time.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::app::App;
use crate::store::StoreError;
use crate::store::embedded::EmbeddedStore;

/// Longest command line accepted (RFC 5321 allows 512; some MTAs send a little more).
const MAX_LINE: usize = 4096;
const MAX_RECIPIENTS: usize = 1000;
/// Idle time allowed between lines.
const LINE_TIMEOUT: Duration = Duration::from_secs(300);

pub async fn serve(app: Arc<App>, store: EmbeddedStore, listener: TcpListener) {
    let stop = app.shutdown.clone();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "LMTP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let (app, store) = (app.clone(), store.clone());
        tokio::spawn(async move {
            let (r, w) = stream.into_split();
            if let Err(e) = session(&app, &store, r, w).await {
                tracing::debug!(%peer, error = %e, "LMTP session ended");
            }
        });
    }
}

/// Reads one CRLF- (or LF-) terminated line, bounded; `None` at end of input.
async fn read_line<R: AsyncRead + Unpin>(r: &mut BufReader<R>, max: usize) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    loop {
        let buf = tokio::time::timeout(LINE_TIMEOUT, r.fill_buf())
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle timeout"))??;
        if buf.is_empty() {
            return Ok(if line.is_empty() { None } else { Some(line) });
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buf[..=i]);
                r.consume(i + 1);
                break;
            }
            None => {
                let n = buf.len();
                line.extend_from_slice(buf);
                r.consume(n);
            }
        }
        if line.len() > max {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "line too long"));
        }
    }
    if line.len() > max + 2 {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "line too long"));
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

/// The address inside `FROM:<...>` / `TO:<...>` (parameters after it ignored).
fn path_arg(rest: &str) -> Option<String> {
    let rest = rest.trim();
    let start = rest.find('<')?;
    let end = rest[start..].find('>')? + start;
    Some(rest[start + 1..end].trim().to_string())
}

async fn session<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(app: &App, store: &EmbeddedStore, r: R, mut w: W) -> std::io::Result<()> {
    let mut r = BufReader::new(r);
    let limit = store.settings().max_message_bytes;
    w.write_all(b"220 pushsync LMTP ready\r\n").await?;
    let mut greeted = false;
    let mut mail_from: Option<String> = None;
    let mut recipients: Vec<String> = Vec::new();
    while let Some(line) = read_line(&mut r, MAX_LINE).await? {
        let text = String::from_utf8_lossy(&line).to_string();
        let (verb, rest) = text.split_once(' ').unwrap_or((text.as_str(), ""));
        let reply: String = match verb.to_ascii_uppercase().as_str() {
            "LHLO" => {
                greeted = true;
                format!("250-pushsync\r\n250-PIPELINING\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 SIZE {limit}\r\n")
            }
            "HELO" | "EHLO" => "500 5.5.1 this is LMTP: use LHLO\r\n".into(),
            "MAIL" if !greeted => "503 5.5.1 LHLO first\r\n".into(),
            "MAIL" => match rest.to_ascii_uppercase().starts_with("FROM:").then(|| path_arg(&rest[5..])).flatten() {
                Some(from) => {
                    let size = rest
                        .to_ascii_uppercase()
                        .split_whitespace()
                        .find_map(|p| p.strip_prefix("SIZE=").and_then(|s| s.parse::<u64>().ok()));
                    if size.is_some_and(|s| s > limit) {
                        "552 5.3.4 message too large\r\n".into()
                    } else {
                        mail_from = Some(from);
                        recipients.clear();
                        "250 2.1.0 OK\r\n".into()
                    }
                }
                None => "501 5.5.4 syntax: MAIL FROM:<address>\r\n".into(),
            },
            "RCPT" if mail_from.is_none() => "503 5.5.1 MAIL first\r\n".into(),
            "RCPT" => match rest.to_ascii_uppercase().starts_with("TO:").then(|| path_arg(&rest[3..])).flatten() {
                Some(to) if recipients.len() >= MAX_RECIPIENTS => {
                    let _ = to;
                    "452 4.5.3 too many recipients\r\n".into()
                }
                Some(to) => match store.is_local_recipient(&to).await {
                    Ok(true) => {
                        recipients.push(to);
                        "250 2.1.5 OK\r\n".into()
                    }
                    Ok(false) => format!("550 5.1.1 <{to}>: no such user\r\n"),
                    Err(_) => "451 4.3.0 temporary failure\r\n".into(),
                },
                None => "501 5.5.4 syntax: RCPT TO:<address>\r\n".into(),
            },
            "DATA" if recipients.is_empty() => "503 5.5.1 no valid recipients\r\n".into(),
            "DATA" => {
                w.write_all(b"354 go ahead, end with <CRLF>.<CRLF>\r\n").await?;
                w.flush().await?;
                let body = read_data(&mut r, limit).await?;
                let mut replies = String::new();
                for rcpt in &recipients {
                    let line = match &body {
                        None => "552 5.3.4 message too large\r\n".to_string(),
                        Some(bytes) => match crate::delivery::deliver_local(app, store, rcpt, bytes).await {
                            Ok(d) => format!("250 2.1.5 <{rcpt}> delivered (uid {})\r\n", d.uid),
                            Err(StoreError::UserNotFound) => format!("550 5.1.1 <{rcpt}>: no such user\r\n"),
                            Err(StoreError::QuotaExceeded { .. }) => format!("552 5.2.2 <{rcpt}>: mailbox full\r\n"),
                            Err(StoreError::MessageTooLarge { .. }) => "552 5.3.4 message too large\r\n".to_string(),
                            Err(e) => {
                                tracing::error!(error = %e, "LMTP delivery failed");
                                format!("451 4.3.0 <{rcpt}>: temporary failure\r\n")
                            }
                        },
                    };
                    replies.push_str(&line);
                }
                mail_from = None;
                recipients.clear();
                replies
            }
            "RSET" => {
                mail_from = None;
                recipients.clear();
                "250 2.0.0 OK\r\n".into()
            }
            "NOOP" => "250 2.0.0 OK\r\n".into(),
            "QUIT" => {
                w.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            "VRFY" => "252 2.5.2 cannot verify\r\n".into(),
            _ => "500 5.5.2 unknown command\r\n".into(),
        };
        w.write_all(reply.as_bytes()).await?;
        w.flush().await?;
    }
    Ok(())
}

/// Reads the DATA section with dot-unstuffing; `None` (after draining it) when it exceeds
/// `limit` bytes.
async fn read_data<R: AsyncRead + Unpin>(r: &mut BufReader<R>, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut out = Vec::new();
    let mut too_large = false;
    loop {
        // Message lines may be long (RFC 5322 allows 998; some mail is worse): allow 1 MiB.
        let Some(line) = read_line(r, 1024 * 1024).await? else {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed in DATA"));
        };
        if line == b"." {
            break;
        }
        if too_large {
            continue;
        }
        let content = line.strip_prefix(b".").unwrap_or(&line);
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
        if out.len() as u64 > limit {
            too_large = true;
            out = Vec::new();
        }
    }
    Ok(if too_large { None } else { Some(out) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(path_arg("<bob@example.test> SIZE=100").as_deref(), Some("bob@example.test"));
        assert_eq!(path_arg(" <> ").as_deref(), Some(""));
        assert_eq!(path_arg("bob"), None);
    }

    #[tokio::test]
    async fn data_is_unstuffed_and_bounded() {
        let input: &[u8] = b"Subject: x\r\n\r\n..dot\r\nline\r\n.\r\n";
        let mut r = BufReader::new(input);
        assert_eq!(read_data(&mut r, 1000).await.unwrap().unwrap(), b"Subject: x\r\n\r\n.dot\r\nline\r\n");
        let mut r = BufReader::new(input);
        assert_eq!(read_data(&mut r, 5).await.unwrap(), None);
        let mut r = BufReader::new(&b"no end\r\n"[..]);
        assert!(read_data(&mut r, 1000).await.is_err());
    }
}
