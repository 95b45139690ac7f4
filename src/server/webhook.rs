//! The push webhook: where Dovecot's push_notification Lua script
//! (`contrib/dovecot/pushsync-push.lua`) posts the events of every committed transaction, so
//! a waiting phone hears of new mail milliseconds after delivery instead of after IMAP's
//! batching delay.
//!
//! `POST /dovecot` with `Authorization: Bearer <webhook.secret>` and a JSON
//! [`PushBatch`]; 401 without the secret, 413 past [`MAX_BODY`], 400 for a body that is not
//! a batch, else 204 at once: the request only rings the user's IMAP watcher (which checks
//! the mailboxes itself), so nothing here waits on the mail store. Dovecot's delivery waits
//! for this answer, so it must never stall.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::store::imap::{ImapStore, PushBatch};

/// The path the script posts to.
pub const PATH: &str = "/dovecot";
/// Largest batch accepted (one transaction's events; a huge expunge is cut by Dovecot's
/// own batching long before this).
pub const MAX_BODY: usize = 1024 * 1024;
/// Time allowed for headers and for the body.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most simultaneous webhook connections (Dovecot keeps one per delivering process).
const MAX_CONNECTIONS: usize = 512;

type HttpResponse = Response<Full<Bytes>>;

fn reply(status: StatusCode, text: &'static str) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    if !text.is_empty() {
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    }
    r
}

/// Compares a presented bearer token with the secret without leaking where they differ.
fn authorized(header: Option<&HeaderValue>, secret_digest: &[u8; 32]) -> bool {
    let Some(token) = header.and_then(|h| h.to_str().ok()).and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
    else {
        return false;
    };
    let presented: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    presented.iter().zip(secret_digest.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

async fn handle(store: ImapStore, secret_digest: Arc<[u8; 32]>, req: Request<Incoming>) -> HttpResponse {
    if req.uri().path().trim_end_matches('/') != PATH {
        return reply(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::POST {
        let mut r = reply(StatusCode::METHOD_NOT_ALLOWED, "use POST\n");
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    if !authorized(req.headers().get(header::AUTHORIZATION), &secret_digest) {
        let mut r = reply(StatusCode::UNAUTHORIZED, "bearer token required\n");
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return reply(StatusCode::PAYLOAD_TOO_LARGE, "batch too large\n");
    }
    // Reading the body is what makes hyper answer Dovecot's `Expect: 100-continue`.
    let body = match tokio::time::timeout(READ_TIMEOUT, Limited::new(req.into_body(), MAX_BODY).collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            return reply(StatusCode::PAYLOAD_TOO_LARGE, "batch too large\n");
        }
        _ => return reply(StatusCode::BAD_REQUEST, "could not read the body\n"),
    };
    let batch: PushBatch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            tracing::info!(error = %e, "webhook body is not an event batch");
            return reply(StatusCode::BAD_REQUEST, "not an event batch\n");
        }
    };
    let rung = store.ring(&batch);
    tracing::debug!(user = %batch.user, service = %batch.service, events = batch.events.len(), rung, "webhook batch");
    reply(StatusCode::NO_CONTENT, "")
}

/// Serves the webhook on `listener` until `stop` is cancelled.
pub async fn serve(store: ImapStore, listener: TcpListener, secret: String, stop: CancellationToken) {
    let secret_digest: Arc<[u8; 32]> = Arc::new(Sha256::digest(secret.as_bytes()).into());
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.cancelled() => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let store = store.clone();
        let secret_digest = secret_digest.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |req| {
                let store = store.clone();
                let secret_digest = secret_digest.clone();
                async move { Ok::<_, Infallible>(handle(store, secret_digest, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_checked() {
        let digest: [u8; 32] = Sha256::digest(b"s3cret").into();
        assert!(authorized(Some(&HeaderValue::from_static("Bearer s3cret")), &digest));
        assert!(!authorized(Some(&HeaderValue::from_static("Bearer s3cre")), &digest));
        assert!(!authorized(Some(&HeaderValue::from_static("Basic s3cret")), &digest));
        assert!(!authorized(None, &digest));
    }
}
