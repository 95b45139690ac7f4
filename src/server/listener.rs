//! Accepting client connections: TLS handshake (bounded in time), HTTP/1.1 or HTTP/2 (by
//! ALPN, or by the connection preface on plain HTTP), a cap on simultaneous connections, and
//! graceful shutdown that lets in-flight requests (including woken Pings) finish.
//!
//! Each connection is served by a task specialised for its protocol, rather than one that can
//! do both: a waiting phone holds its connection task for up to an hour, and the task is only
//! as large as the protocol it serves.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::app::App;

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Connection builders, configured once.
struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

fn builders(app: &App) -> Builders {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        // Covers slow request headers and idle keep-alive connections alike (hyper starts
        // it when it begins waiting for the next request); a waiting Ping has already sent
        // its request, so it is never cut by this.
        .header_read_timeout(app.config.header_timeout())
        .keep_alive(true)
        .max_buf_size(64 * 1024);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(60)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(Some(1000));
    Builders { h1, h2 }
}

/// Serves ActiveSync on `listener` until `stop` is cancelled, then waits (at most `drain`)
/// for open connections to finish their requests.
pub async fn serve(app: Arc<App>, listener: TcpListener, tls: Option<TlsAcceptor>, stop: CancellationToken, drain: Duration) {
    let builders = Arc::new(builders(&app));
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(app.config.limits.max_connections));
    let handshake_timeout = Duration::from_secs(app.config.limits.tls_handshake_timeout_secs);

    loop {
        // Hold a permit before accepting: past the cap, connections wait in the kernel's
        // backlog instead of failing on file-descriptor exhaustion.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let (app, builders, tls, watcher, conn_stop) = (app.clone(), builders.clone(), tls.clone(), graceful.watcher(), stop.clone());
        let guard = ConnGuard { _permit: permit, _open: OpenConnection::new(app.metrics.clone()) };
        // This task only handshakes and picks the protocol, then hands the connection to a
        // task of that protocol and ends: its larger state (a TLS handshake) is not kept
        // for the connection's lifetime.
        tokio::spawn(async move {
            match tls {
                Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => {
                        if tls_stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                            tokio::spawn(serve_h2(app, builders, conn_stop, watcher, tls_stream, peer, guard));
                        } else {
                            tokio::spawn(serve_h1(app, builders, watcher, tls_stream, peer, guard));
                        }
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                },
                None => match tokio::time::timeout(app.config.header_timeout(), is_h2_preface(&stream)).await {
                    Ok(Ok(true)) => {
                        tokio::spawn(serve_h2(app, builders, conn_stop, watcher, stream, peer, guard));
                    }
                    Ok(Ok(false)) => {
                        tokio::spawn(serve_h1(app, builders, watcher, stream, peer, guard));
                    }
                    Ok(Err(_)) | Err(_) => {}
                },
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after the shutdown grace period; closing them");
    }
}

/// Whether a plain connection starts with the HTTP/2 preface (prior knowledge, "h2c"),
/// looking without consuming.
async fn is_h2_preface(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(false);
        }
        if n == H2_PREFACE.len() {
            return Ok(true);
        }
        // A partial preface: wait for more.
        stream.readable().await?;
    }
}

fn service(
    app: Arc<App>,
    peer: SocketAddr,
) -> impl hyper::service::Service<Request<Incoming>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send + 'static>
+ Clone
+ Send
+ 'static {
    service_fn(move |req: Request<Incoming>| {
        let app = app.clone();
        async move { Ok::<Response<Full<Bytes>>, Infallible>(super::http::handle(app, req, peer).await) }
    })
}

async fn serve_h1<IO>(app: Arc<App>, builders: Arc<Builders>, watcher: Watcher, io: IO, peer: SocketAddr, _guard: ConnGuard)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = builders.h1.serve_connection(TokioIo::new(io), service(app, peer));
    let _ = watcher.watch(conn).await;
}

/// An HTTP/2 connection lives until the peer closes it, the server stops, or no request has
/// been open on it for the header timeout: hyper closes idle HTTP/1.1 connections itself but
/// would keep an idle HTTP/2 one (answering the peer's PINGs) forever.
async fn serve_h2<IO>(
    app: Arc<App>,
    builders: Arc<Builders>,
    stop: CancellationToken,
    // Held, not used to watch: the server's drain waits until every watcher is gone.
    _watcher: Watcher,
    io: IO,
    peer: SocketAddr,
    _guard: ConnGuard,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle_after = app.config.header_timeout();
    let activity = Arc::new(Activity::default());
    let inner = service(app, peer);
    let counted = {
        let activity = activity.clone();
        service_fn(move |req: Request<Incoming>| {
            let open = activity.open();
            let inner = inner.clone();
            async move {
                let _open = open;
                hyper::service::Service::call(&inner, req).await
            }
        })
    };
    let conn = builders.h2.serve_connection(TokioIo::new(io), counted);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => break,
            _ = stop.cancelled(), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = activity.idle_for(idle_after), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// The requests open on one HTTP/2 connection, to tell when it has been idle.
#[derive(Default)]
struct Activity {
    open: std::sync::atomic::AtomicUsize,
    started: std::sync::atomic::AtomicU64,
    ended: tokio::sync::Notify,
}

impl Activity {
    fn open(self: &Arc<Self>) -> OpenRequest {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.open.fetch_add(1, Ordering::SeqCst);
        OpenRequest(self.clone())
    }

    /// Resolves once no request has been open, nor started, for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.open.load(Ordering::SeqCst) > 0 {
                ended.await;
                continue;
            }
            let started = self.started.load(Ordering::SeqCst);
            tokio::time::sleep(idle).await;
            if self.open.load(Ordering::SeqCst) == 0 && self.started.load(Ordering::SeqCst) == started {
                return;
            }
        }
    }
}

/// One open request; its end may make the connection idle.
struct OpenRequest(Arc<Activity>);

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.ended.notify_waiters();
    }
}

/// What a connection holds while it lives: its place under the connection cap, and its
/// count in the `connections` gauge.
struct ConnGuard {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _open: OpenConnection,
}

/// Counts a connection in the `connections` gauge while it lives.
struct OpenConnection(Arc<crate::metrics::Metrics>);

impl OpenConnection {
    fn new(metrics: Arc<crate::metrics::Metrics>) -> Self {
        metrics.connections.inc();
        OpenConnection(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections.dec();
    }
}

/// Binds a listener, with a clear error naming the address.
pub async fn bind(addr: SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr} ({what}): {e}")))
}
