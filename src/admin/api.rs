//! The admin HTTP API (JSON, bearer token) and `/metrics`, on the admin listener.
//!
//! `docs/admin-api.openapi.json` describes every route; a test checks the two agree. Each
//! change is attributed to the `X-Pushsync-Actor` header (the CLI sends the local user name)
//! and written to the audit log.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use super::policy::DevicePolicy;
use super::store::RuleKind;
use crate::app::App;
use crate::eas::ProtocolVersion;
use crate::state::{AccessState, WipeState};
use crate::store::StoreError;
use crate::store::embedded::{EmbeddedStore, NewUser};

#[derive(Clone)]
struct ApiState {
    app: Arc<App>,
    token: Arc<str>,
}

/// An API error with its HTTP status.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<crate::state::StateError> for ApiError {
    fn from(e: crate::state::StateError) -> Self {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::UserNotFound | StoreError::FolderNotFound | StoreError::MessageNotFound => StatusCode::NOT_FOUND,
            StoreError::UserExists | StoreError::FolderExists => StatusCode::CONFLICT,
            StoreError::QuotaExceeded { .. } => StatusCode::INSUFFICIENT_STORAGE,
            StoreError::MessageTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Internal(m) if m.contains("invalid") || m.contains("not an email") || m.contains("empty password") => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(v: Value) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

fn not_found(what: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no such {what}"))
}

fn actor(headers: &HeaderMap) -> String {
    headers
        .get("x-pushsync-actor")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().filter(|c| c.is_ascii_graphic()).take(64).collect::<String>())
        .filter(|s| !s.is_empty())
        .map(|s| format!("admin:{s}"))
        .unwrap_or_else(|| "admin".into())
}

fn embedded(app: &App) -> Result<&EmbeddedStore, ApiError> {
    app.embedded.as_ref().ok_or_else(|| ApiError(StatusCode::CONFLICT, "accounts are managed by the external mail store".into()))
}

/// Routes, for serving and for checking against the OpenAPI document.
fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/v1/users", get(list_users).post(add_user))
        .route("/v1/users/{login}", delete(remove_user))
        .route("/v1/users/{login}/password", put(set_password))
        .route("/v1/users/{login}/quota", put(set_quota))
        .route("/v1/users/{login}/aliases", post(add_alias))
        .route("/v1/users/{login}/restore", post(restore))
        .route("/v1/users/{login}/policy", put(assign_policy))
        .route("/v1/deliver", post(deliver))
        .route("/v1/sync", get(list_sync))
        .route("/v1/sync/{login}", put(set_sync))
        .route("/v1/devices", get(list_devices))
        .route("/v1/devices/{login}/{device_id}", delete(remove_device))
        .route("/v1/devices/{login}/{device_id}/wipe", post(wipe_device))
        .route("/v1/devices/{login}/{device_id}/access", put(set_device_access))
        .route("/v1/policies", get(list_policies))
        .route("/v1/policies/{name}", put(put_policy).delete(delete_policy))
        .route("/v1/policies/{name}/default", post(default_policy))
        .route("/v1/rules", get(list_rules).post(add_rule))
        .route("/v1/rules/{id}", delete(remove_rule))
        .route("/v1/usage", get(usage))
        .route("/v1/audit", get(audit))
        .route("/v1/backup", post(backup))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new().route("/health", get(|| async { "ok\n" })).route("/metrics", get(metrics)).merge(api).with_state(state)
}

/// Serves the admin API until the server shuts down.
pub async fn serve(app: Arc<App>, listener: TcpListener, token: String) {
    let stop = app.shutdown.clone();
    let state = ApiState { app, token: Arc::from(token.as_str()) };
    let router = router(state);
    if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await }).await {
        tracing::error!(error = %e, "admin listener failed");
    }
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let valid = presented.is_some_and(|p| {
        // Constant-time comparison of the token.
        let (a, b) = (p.trim().as_bytes(), state.token.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    });
    if !valid {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(json!({ "error": "a valid admin token is required" })),
        )
            .into_response();
    }
    next.run(request).await
}

async fn metrics(State(s): State<ApiState>) -> Response {
    crate::admin::usage_metrics(&s.app).await;
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.app.metrics.render()).into_response()
}

#[derive(Deserialize)]
struct NewUserBody {
    login: String,
    email: Option<String>,
    display_name: Option<String>,
    password: String,
    /// Enable Mobile Sync for the new user (default true: the embedded quick start sells it).
    #[serde(default = "yes")]
    sync: bool,
}

fn yes() -> bool {
    true
}

async fn list_users(State(s): State<ApiState>) -> ApiResult {
    let users = embedded(&s.app)?.list_users().await?;
    ok(json!({ "users": users }))
}

async fn add_user(State(s): State<ApiState>, headers: HeaderMap, axum::Json(body): axum::Json<NewUserBody>) -> ApiResult {
    let who = actor(&headers);
    let store = embedded(&s.app)?;
    let user =
        store.add_user(NewUser { login: body.login, email: body.email, display_name: body.display_name, password: body.password }).await?;
    s.app.admin.audit(&who, "user.add", &user.login, &user.email).await?;
    if body.sync {
        s.app.admin.set_sync_access(&user.login, true, &who).await?;
    }
    Ok((StatusCode::CREATED, axum::Json(json!({ "user": user, "sync_enabled": body.sync }))).into_response())
}

async fn remove_user(State(s): State<ApiState>, headers: HeaderMap, Path(login): Path<String>) -> ApiResult {
    let who = actor(&headers);
    embedded(&s.app)?.remove_user(&login).await?;
    s.app.auth.forget_user(&login);
    s.app.hub.kick_user(&login);
    for d in s.app.state.list_devices(Some(&login)).await? {
        s.app.state.remove_device(&login, &d.device_id).await?;
    }
    s.app.admin.audit(&who, "user.remove", &login, "").await?;
    ok(json!({ "removed": login }))
}

#[derive(Deserialize)]
struct PasswordBody {
    password: String,
}

async fn set_password(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(login): Path<String>,
    axum::Json(b): axum::Json<PasswordBody>,
) -> ApiResult {
    embedded(&s.app)?.set_password(&login, &b.password).await?;
    s.app.auth.forget_user(&login);
    s.app.admin.audit(&actor(&headers), "user.password", &login, "").await?;
    ok(json!({ "login": login }))
}

#[derive(Deserialize)]
struct QuotaBody {
    /// Bytes; null removes the quota.
    bytes: Option<u64>,
}

async fn set_quota(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(login): Path<String>,
    axum::Json(b): axum::Json<QuotaBody>,
) -> ApiResult {
    embedded(&s.app)?.set_quota(&login, b.bytes).await?;
    s.app.admin.audit(&actor(&headers), "user.quota", &login, &b.bytes.map_or("none".into(), |q| q.to_string())).await?;
    ok(json!({ "login": login, "quota_bytes": b.bytes }))
}

#[derive(Deserialize)]
struct AliasBody {
    address: String,
}

async fn add_alias(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(login): Path<String>,
    axum::Json(b): axum::Json<AliasBody>,
) -> ApiResult {
    embedded(&s.app)?.add_alias(&login, &b.address).await?;
    s.app.admin.audit(&actor(&headers), "user.alias", &login, &b.address).await?;
    ok(json!({ "login": login, "alias": b.address }))
}

#[derive(Deserialize, Default)]
struct RestoreBody {
    /// Restore what was deleted at or after this time (seconds since the epoch).
    since: Option<i64>,
}

async fn restore(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(login): Path<String>,
    body: Option<axum::Json<RestoreBody>>,
) -> ApiResult {
    let since = body.and_then(|b| b.0.since);
    let report = embedded(&s.app)?.restore(&login, since).await?;
    s.app.admin.audit(&actor(&headers), "user.restore", &login, &report.restored.to_string()).await?;
    ok(json!({ "login": login, "restored": report.restored }))
}

#[derive(Deserialize)]
struct DeliverQuery {
    to: String,
}

async fn deliver(State(s): State<ApiState>, Query(q): Query<DeliverQuery>, body: Bytes) -> ApiResult {
    let store = embedded(&s.app)?;
    let delivered = crate::delivery::deliver_local(&s.app, store, &q.to, &body).await?;
    ok(json!({ "login": delivered.login, "folder": delivered.folder.0, "uid": delivered.uid }))
}

async fn list_sync(State(s): State<ApiState>) -> ApiResult {
    let users = s.app.admin.list_sync_access().await?;
    ok(json!({ "default": s.app.config.access.default_sync, "users": users }))
}

#[derive(Deserialize)]
struct SyncBody {
    enabled: bool,
}

async fn set_sync(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(login): Path<String>,
    axum::Json(b): axum::Json<SyncBody>,
) -> ApiResult {
    let login = login.to_ascii_lowercase();
    s.app.admin.set_sync_access(&login, b.enabled, &actor(&headers)).await?;
    let kicked = if b.enabled { 0 } else { s.app.hub.kick_user(&login) };
    ok(json!({ "login": login, "enabled": b.enabled, "waiting_requests_ended": kicked }))
}

#[derive(Deserialize)]
struct DeviceQuery {
    user: Option<String>,
}

async fn list_devices(State(s): State<ApiState>, Query(q): Query<DeviceQuery>) -> ApiResult {
    let devices = s.app.state.list_devices(q.user.as_deref()).await?;
    ok(json!({ "devices": devices }))
}

async fn remove_device(State(s): State<ApiState>, headers: HeaderMap, Path((login, device_id)): Path<(String, String)>) -> ApiResult {
    s.app.hub.kick_device(&login, &device_id);
    if !s.app.state.remove_device(&login, &device_id).await? {
        return Err(not_found("device"));
    }
    s.app.admin.audit(&actor(&headers), "device.remove", &format!("{login}/{device_id}"), "").await?;
    ok(json!({ "removed": device_id }))
}

#[derive(Deserialize, Default)]
struct WipeBody {
    #[serde(default)]
    account_only: bool,
}

async fn wipe_device(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((login, device_id)): Path<(String, String)>,
    body: Option<axum::Json<WipeBody>>,
) -> ApiResult {
    let account_only = body.is_some_and(|b| b.0.account_only);
    let mut device = s.app.state.device(&login, &device_id).await?.ok_or_else(|| not_found("device"))?;
    // Before 16.1 a device knows only the full RemoteWipe: an account-only request must not
    // turn into erasing the whole phone.
    let speaks_account_only_wipe =
        device.protocol_version.as_deref().and_then(ProtocolVersion::parse).is_some_and(|v| v >= ProtocolVersion::V16_1);
    if account_only && !speaks_account_only_wipe {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "an account-only wipe needs ActiveSync 16.1 and this device speaks {}; block the device, or request a full wipe",
                device.protocol_version.as_deref().unwrap_or("an unknown version")
            ),
        ));
    }
    device.wipe = if account_only { WipeState::AccountOnlyRequested } else { WipeState::Requested };
    device.wipe_requested_at = Some(chrono::Utc::now().timestamp());
    s.app.state.save_device(&device).await?;
    s.app.hub.kick_device(&login, &device_id);
    s.app
        .admin
        .audit(&actor(&headers), if account_only { "device.wipe.account" } else { "device.wipe" }, &format!("{login}/{device_id}"), "")
        .await?;
    ok(json!({ "device": device }))
}

#[derive(Deserialize)]
struct AccessBody {
    state: AccessState,
}

async fn set_device_access(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path((login, device_id)): Path<(String, String)>,
    axum::Json(b): axum::Json<AccessBody>,
) -> ApiResult {
    let mut device = s.app.state.device(&login, &device_id).await?.ok_or_else(|| not_found("device"))?;
    device.access = b.state;
    device.access_reason = Some(super::access::REASON_ADMIN.into());
    s.app.state.save_device(&device).await?;
    if b.state != AccessState::Allowed {
        s.app.hub.kick_device(&login, &device_id);
    }
    s.app.admin.audit(&actor(&headers), &format!("device.{}", b.state.as_str()), &format!("{login}/{device_id}"), "").await?;
    ok(json!({ "device": device }))
}

async fn list_policies(State(s): State<ApiState>) -> ApiResult {
    ok(json!({ "policies": s.app.admin.policies().await? }))
}

/// Devices on a policy must provision again to receive it.
async fn force_reprovision(app: &App, logins: &[String]) -> Result<usize, ApiError> {
    let mut n = 0;
    for login in logins {
        for mut d in app.state.list_devices(Some(login)).await? {
            if d.policy_key != 0 {
                d.policy_key = 0;
                d.policy_compliant = None;
                app.state.save_device(&d).await?;
                app.hub.kick_device(login, &d.device_id);
                n += 1;
            }
        }
    }
    Ok(n)
}

/// Logins whose policy in force is `name` (assigned explicitly or through the default).
async fn users_of_policy(app: &App, name: &str) -> Result<Vec<String>, ApiError> {
    let mut logins: Vec<String> = app.state.list_devices(None).await?.into_iter().map(|d| d.login).collect();
    logins.sort();
    logins.dedup();
    let mut out = Vec::new();
    for l in logins {
        if app.admin.policy_for(&l).await?.name == name {
            out.push(l);
        }
    }
    Ok(out)
}

async fn put_policy(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Json(policy): axum::Json<DevicePolicy>,
) -> ApiResult {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "policy names are 1-64 letters, digits, - _ .".into()));
    }
    s.app.admin.put_policy(&name, &policy, &actor(&headers)).await?;
    let affected = users_of_policy(&s.app, &name).await?;
    let reprovisioned = force_reprovision(&s.app, &affected).await?;
    ok(json!({ "policy": name, "devices_reprovisioning": reprovisioned }))
}

async fn delete_policy(State(s): State<ApiState>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    let affected = users_of_policy(&s.app, &name).await?;
    if !s.app.admin.delete_policy(&name, &actor(&headers)).await? {
        return Err(not_found("policy"));
    }
    let reprovisioned = force_reprovision(&s.app, &affected).await?;
    ok(json!({ "deleted": name, "devices_reprovisioning": reprovisioned }))
}

async fn default_policy(State(s): State<ApiState>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    let before = s.app.state.list_devices(None).await?;
    let mut before_policy = std::collections::HashMap::new();
    for d in &before {
        if !before_policy.contains_key(&d.login) {
            before_policy.insert(d.login.clone(), s.app.admin.policy_for(&d.login).await?.name);
        }
    }
    if !s.app.admin.set_default_policy(&name, &actor(&headers)).await? {
        return Err(not_found("policy"));
    }
    let mut changed = Vec::new();
    for (login, old) in before_policy {
        if s.app.admin.policy_for(&login).await?.name != old {
            changed.push(login);
        }
    }
    let reprovisioned = force_reprovision(&s.app, &changed).await?;
    ok(json!({ "default": name, "devices_reprovisioning": reprovisioned }))
}

#[derive(Deserialize)]
struct AssignBody {
    /// Policy name; null returns the user to the default.
    policy: Option<String>,
}

async fn assign_policy(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(login): Path<String>,
    axum::Json(b): axum::Json<AssignBody>,
) -> ApiResult {
    let login = login.to_ascii_lowercase();
    let before = s.app.admin.policy_for(&login).await?;
    if !s.app.admin.assign_policy(&login, b.policy.as_deref(), &actor(&headers)).await? {
        return Err(not_found("policy"));
    }
    let after = s.app.admin.policy_for(&login).await?;
    let reprovisioned = if before != after { force_reprovision(&s.app, std::slice::from_ref(&login)).await? } else { 0 };
    ok(json!({ "login": login, "policy": after.name, "devices_reprovisioning": reprovisioned }))
}

async fn list_rules(State(s): State<ApiState>) -> ApiResult {
    ok(json!({ "default": s.app.config.access.default_device_access, "rules": s.app.admin.rules().await? }))
}

#[derive(Deserialize)]
struct RuleBody {
    kind: RuleKind,
    pattern: String,
    access: AccessState,
}

async fn add_rule(State(s): State<ApiState>, headers: HeaderMap, axum::Json(b): axum::Json<RuleBody>) -> ApiResult {
    if b.pattern.trim().is_empty() || b.pattern.len() > 128 {
        return Err(ApiError(StatusCode::BAD_REQUEST, "a rule needs a pattern of at most 128 characters".into()));
    }
    let rule = s.app.admin.add_rule(b.kind, b.pattern.trim(), b.access, &actor(&headers)).await?;
    Ok((StatusCode::CREATED, axum::Json(json!({ "rule": rule }))).into_response())
}

async fn remove_rule(State(s): State<ApiState>, headers: HeaderMap, Path(id): Path<i64>) -> ApiResult {
    if !s.app.admin.remove_rule(id, &actor(&headers)).await? {
        return Err(not_found("rule"));
    }
    ok(json!({ "removed": id }))
}

#[derive(Deserialize)]
struct UsageQuery {
    /// `YYYY-MM`
    month: String,
    #[serde(default)]
    format: Option<String>,
}

async fn usage(State(s): State<ApiState>, Query(q): Query<UsageQuery>) -> ApiResult {
    s.app.usage.flush(s.app.admin.as_ref()).await?;
    let report = super::store::usage_report(s.app.admin.as_ref(), &q.month).await.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    match q.format.as_deref() {
        Some("csv") => Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], report.to_csv()).into_response()),
        None | Some("json") => ok(serde_json::to_value(&report).unwrap_or(Value::Null)),
        Some(other) => Err(ApiError(StatusCode::BAD_REQUEST, format!("unknown format {other:?} (json or csv)"))),
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    since: Option<i64>,
    limit: Option<usize>,
}

async fn audit(State(s): State<ApiState>, Query(q): Query<AuditQuery>) -> ApiResult {
    let entries = s.app.admin.audit_log(q.since.unwrap_or(0), q.limit.unwrap_or(1000).min(10_000)).await?;
    ok(json!({ "entries": entries }))
}

#[derive(Deserialize)]
struct BackupBody {
    to: String,
}

async fn backup(State(s): State<ApiState>, headers: HeaderMap, axum::Json(b): axum::Json<BackupBody>) -> ApiResult {
    let report =
        crate::backup::backup(&s.app, std::path::Path::new(&b.to)).await.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    s.app.admin.audit(&actor(&headers), "backup", &b.to, "").await?;
    ok(serde_json::to_value(&report).unwrap_or(Value::Null))
}
