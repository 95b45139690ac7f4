//! The HTTP side of the ActiveSync endpoint: routing, OPTIONS, authentication, the body
//! limit and read timeout, and the per-request tracing span and metrics. What the request
//! *means* is [`crate::eas::dispatch`]'s business.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tracing::Instrument;

use crate::app::App;
use crate::eas::{self, Command, ProtocolVersion, RequestLine};
use crate::metrics::RequestLabels;
use crate::server::auth::parse_basic;

pub const ENDPOINT: &str = "/microsoft-server-activesync";

/// The `MS-Server-ActiveSync` header value: the server's ActiveSync version.
const SERVER_VERSION: &str = "16.1";

pub type HttpResponse = Response<Full<Bytes>>;

/// Builds a plain response with a status and a short text body.
pub fn text(status: StatusCode, body: &str) -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

pub async fn handle(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> HttpResponse {
    if !req.uri().path().trim_end_matches('/').eq_ignore_ascii_case(ENDPOINT) {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let mut response = match *req.method() {
        Method::OPTIONS => options(),
        Method::POST => {
            let span = tracing::info_span!("eas", %peer, user = tracing::field::Empty, device = tracing::field::Empty, cmd = tracing::field::Empty, status = tracing::field::Empty, ms = tracing::field::Empty);
            post(app, req).instrument(span).await
        }
        _ => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use OPTIONS or POST\n");
            r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("OPTIONS,POST"));
            r
        }
    };
    let headers = response.headers_mut();
    headers.insert("MS-Server-ActiveSync", HeaderValue::from_static(SERVER_VERSION));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    response
}

/// `OPTIONS`: the versions and the commands actually implemented.
fn options() -> HttpResponse {
    let mut r = Response::new(Full::new(Bytes::new()));
    let h = r.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static("OPTIONS,POST"));
    h.insert("MS-ASProtocolVersions", HeaderValue::from_static(ProtocolVersion::SUPPORTED_LIST));
    let commands: Vec<&str> = Command::ALL.iter().copied().filter(|c| eas::dispatch::implemented(*c)).map(Command::name).collect();
    if let Ok(v) = HeaderValue::from_str(&commands.join(",")) {
        h.insert("MS-ASProtocolCommands", v);
    }
    h.insert("Public", HeaderValue::from_static("OPTIONS,POST"));
    r
}

async fn post(app: Arc<App>, req: Request<Incoming>) -> HttpResponse {
    let started = Instant::now();
    let span = tracing::Span::current();
    // Parsing, authenticating and reading the request run in their own future, so that the
    // long wait of a Ping keeps none of their state.
    let admitted = match admit(&app, req, &span).await {
        Ok(a) => a,
        Err((command, r)) => {
            record(&app, &span, command, &r, started);
            return r;
        }
    };
    let command = admitted.line.command;
    let r = eas::dispatch::handle(&app, admitted.line, admitted.account, admitted.content_type, admitted.body).await;
    record(&app, &span, command.name(), &r, started);
    r
}

/// What a command needs from an HTTP request that passed the front door.
struct Admitted {
    line: RequestLine,
    account: crate::store::Account,
    content_type: Option<String>,
    body: Bytes,
}

/// The front door: request line, credentials, body limit and read time. An `Err` is the
/// answer to send, with the command's name for the metrics.
async fn admit(app: &App, req: Request<Incoming>, span: &tracing::Span) -> Result<Admitted, (&'static str, HttpResponse)> {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or("");
    let line = match RequestLine::parse(query, &parts.headers) {
        Ok(line) => line,
        Err(e) => {
            tracing::info!(reason = %e, "bad request line");
            let mut r = text(StatusCode::BAD_REQUEST, &format!("{e}\n"));
            if matches!(e, eas::RequestLineError::UnsupportedVersion(_) | eas::RequestLineError::MissingVersion) {
                r.headers_mut().insert("MS-ASProtocolVersions", HeaderValue::from_static(ProtocolVersion::SUPPORTED_LIST));
            }
            return Err(("unknown", r));
        }
    };
    let command = line.command.name();
    span.record("device", line.device_id.as_str());
    span.record("cmd", command);

    let Some(credentials) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(parse_basic) else {
        return Err((command, unauthorized(app)));
    };
    span.record("user", credentials.username.as_str());
    let account = match authenticate(app, &credentials.username, &credentials.password).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            app.metrics.auth_failures.inc();
            tracing::info!("authentication failed");
            tokio::time::sleep(std::time::Duration::from_millis(app.config.auth.failure_delay_ms)).await;
            return Err((command, unauthorized(app)));
        }
        Err(e) => {
            tracing::warn!(error = %e, "the store could not verify credentials");
            let mut r = text(StatusCode::SERVICE_UNAVAILABLE, "mail store unavailable, retry later\n");
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
            return Err((command, r));
        }
    };

    let limit = app.config.limits.max_body_bytes;
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err((command, text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")));
    }
    let body = match tokio::time::timeout(app.config.body_timeout(), Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) => {
            let r = if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() {
                text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")
            } else {
                text(StatusCode::BAD_REQUEST, "could not read the request body\n")
            };
            return Err((command, r));
        }
        Err(_) => {
            tracing::info!("request body read timed out");
            return Err((command, text(StatusCode::REQUEST_TIMEOUT, "request body not received in time\n")));
        }
    };
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    Ok(Admitted { line, account, content_type, body })
}

/// Checks credentials against the cache, then the store.
pub async fn authenticate(app: &App, username: &str, password: &str) -> Result<Option<crate::store::Account>, crate::store::StoreError> {
    if let Some(account) = app.auth.check(username, password) {
        return Ok(Some(account));
    }
    let _one_at_a_time = app.auth.check_lock(username).await;
    // Another request may have verified the same credentials while this one waited.
    if let Some(account) = app.auth.check(username, password) {
        return Ok(Some(account));
    }
    app.metrics.auth_store_checks.inc();
    match app.store.authenticate(username, password).await? {
        Some(mut account) => {
            account.secret = Some(Arc::from(password));
            app.auth.remember(username, password, &account);
            Ok(Some(account))
        }
        None => Ok(None),
    }
}

fn unauthorized(app: &App) -> HttpResponse {
    let mut r = text(StatusCode::UNAUTHORIZED, "authentication required\n");
    let realm = app.config.auth.realm.replace('"', "");
    if let Ok(v) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    r
}

fn record(app: &App, span: &tracing::Span, command: &str, r: &HttpResponse, started: Instant) {
    let status = r.status().as_u16();
    let ms = started.elapsed().as_millis() as u64;
    span.record("status", status);
    span.record("ms", ms);
    tracing::info!(status, ms, "request done");
    app.metrics.requests.get_or_create(&RequestLabels { command: command.to_string(), status }).inc();
}
