//! The request pipeline after authentication: entitlement, device record, access state,
//! remote wipe, policy key, body decoding, then the command handler; and the one exit where
//! every error becomes its protocol answer.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::OnceCell;

use super::error::{CommandResponse, EasError, HttpResponse, ProvisionNeeded, into_response};
use super::{Command, ProtocolVersion, RequestLine};
use crate::app::App;
use crate::config::DefaultSyncAccess;
use crate::metrics::RequestLabels;
use crate::state::{AccessState, Device, WipeState};
use crate::store::{Account, Mailbox, Origin};
use crate::wbxml::{self, Element};

/// Whether the server implements a command (OPTIONS lists exactly these).
pub fn implemented(command: Command) -> bool {
    super::handler_exists(command)
}

/// Everything a command handler works with.
pub struct Ctx<'a> {
    pub app: &'a App,
    pub line: &'a RequestLine,
    pub account: Account,
    pub device: Device,
    mailbox: OnceCell<Arc<dyn Mailbox>>,
}

impl<'a> Ctx<'a> {
    pub fn version(&self) -> ProtocolVersion {
        self.line.version
    }

    pub fn login(&self) -> &str {
        &self.account.login
    }

    pub fn origin(&self) -> Origin {
        Origin::Device(Arc::from(self.line.device_id.as_str()))
    }

    /// The user's mailbox; changes through it are attributed to this device.
    pub async fn mailbox(&self) -> Result<Arc<dyn Mailbox>, EasError> {
        self.mailbox
            .get_or_try_init(|| async { self.app.store.mailbox(&self.account, self.origin()).await.map_err(EasError::from) })
            .await
            .cloned()
    }

    /// The user's folders with collection ids.
    pub async fn folders(&self) -> Result<super::folders::FolderMap, EasError> {
        let mb = self.mailbox().await?;
        super::folders::FolderMap::load(self.app.state.as_ref(), self.login(), &mb).await
    }
}

/// Commands a quarantined device may still run: enough to set up the account and see that
/// it is quarantined, nothing that reads or sends mail.
fn allowed_in_quarantine(command: Command) -> bool {
    matches!(
        command,
        Command::Provision | Command::FolderSync | Command::Settings | Command::Sync | Command::Ping | Command::GetItemEstimate
    )
}

/// Runs one ActiveSync command for an authenticated user.
pub async fn handle(app: &App, line: RequestLine, account: Account, content_type: Option<String>, body: Bytes) -> HttpResponse {
    let (command, version) = (line.command, line.version);
    match run(app, &line, account, content_type, body).await {
        Ok(response) => response.into_http(),
        Err(e) => {
            match &e {
                EasError::Server(m) => tracing::error!(error = %m, "command failed"),
                EasError::Unavailable(m) => tracing::warn!(error = %m, "store unavailable"),
                other => tracing::info!(error = %other, "command refused"),
            }
            let r = into_response(&e, command, version);
            app.metrics
                .command_statuses
                .get_or_create(&RequestLabels { command: command.name().to_string(), status: r.status().as_u16() })
                .inc();
            r
        }
    }
}

async fn run(
    app: &App,
    line: &RequestLine,
    account: Account,
    content_type: Option<String>,
    body: Bytes,
) -> Result<CommandResponse, EasError> {
    let command = line.command;
    if !implemented(command) {
        return Err(EasError::NotImplemented);
    }
    if !command.versions().contains(&line.version.as_str()) {
        return Err(EasError::Common(super::status::CommonStatus::VersionNotSupported));
    }

    check_entitlement(app, &account).await?;
    let mut device = app
        .state
        .touch_device(&account.login, &line.device_id, &line.device_type, line.version.as_str(), line.user_agent.as_deref())
        .await?;
    if device.access_reason.is_none() {
        crate::admin::access::decide_new_device(app, &mut device).await?;
    }
    check_device(line, &device)?;

    let raw_mime = super::send_mail::takes_raw_mime(command, line.version, content_type.as_deref());
    let document = if body.is_empty() || raw_mime {
        None
    } else {
        let limits = wbxml::Limits::for_body_limit(app.config.limits.max_body_bytes);
        let root = wbxml::decode_with(&body, &limits).map_err(|e| {
            tracing::info!(reason = %e, "malformed WBXML");
            EasError::BadRequest(format!("malformed WBXML: {e}"))
        })?;
        if let Some(expected) = super::error::response_root(command)
            && root.tag != expected
        {
            return Err(EasError::Protocol(format!("root element {} is not {}", root.tag, expected)));
        }
        Some(root)
    };

    let mut ctx = Ctx { app, line, account, device, mailbox: OnceCell::new() };
    let request = Request { document, raw: raw_mime.then_some(body) };
    super::run_command(&mut ctx, request).await
}

async fn check_entitlement(app: &App, account: &Account) -> Result<(), EasError> {
    let entitled = match app.admin.sync_access(&account.login).await? {
        Some(enabled) => enabled,
        None => app.config.access.default_sync == DefaultSyncAccess::Enabled,
    };
    if entitled { Ok(()) } else { Err(EasError::UserDisabled) }
}

/// Access state, remote wipe and policy key of the device, for this request.
fn check_device(line: &RequestLine, device: &Device) -> Result<(), EasError> {
    let command = line.command;
    match device.access {
        AccessState::Blocked => return Err(EasError::DeviceBlocked),
        AccessState::Quarantined if !allowed_in_quarantine(command) => return Err(EasError::DeviceBlocked),
        _ => {}
    }
    match device.wipe {
        WipeState::Requested | WipeState::AccountOnlyRequested if command != Command::Provision => {
            return Err(EasError::Provision(ProvisionNeeded::RemoteWipe));
        }
        WipeState::Acknowledged => return Err(EasError::DeviceBlocked),
        _ => {}
    }
    if command != Command::Provision {
        if device.policy_key == 0 {
            return Err(EasError::Provision(ProvisionNeeded::NotProvisioned));
        }
        match line.policy_key {
            None => return Err(EasError::Provision(ProvisionNeeded::NotProvisioned)),
            Some(k) if k != device.policy_key => return Err(EasError::Provision(ProvisionNeeded::InvalidPolicyKey)),
            Some(_) => {}
        }
    }
    Ok(())
}

/// Runs the access checks again with fresh data: a waiting request whose user or device was
/// cut off meanwhile ends with the answer a new request would get.
pub async fn recheck_access(ctx: &Ctx<'_>) -> Result<(), EasError> {
    check_entitlement(ctx.app, &ctx.account).await?;
    let device =
        ctx.app.state.device(ctx.login(), &ctx.line.device_id).await?.ok_or(EasError::Provision(ProvisionNeeded::NotProvisioned))?;
    check_device(ctx.line, &device)
}

/// A decoded request body.
pub struct Request {
    /// The WBXML document, when the body was WBXML.
    pub document: Option<Element>,
    /// The raw body of a 12.x SendMail/SmartReply/SmartForward (MIME).
    pub raw: Option<Bytes>,
}
