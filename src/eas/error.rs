//! Every error a command can end with, and the one place where errors become protocol
//! answers: an HTTP status for older protocol versions and request-level problems, or a
//! `Status` in the command's response body.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use super::status::*;
use super::{Command, ProtocolVersion};
use crate::store::StoreError;
use crate::sync::SyncError;
use crate::wbxml::{self, Element, Tag};

/// Why a device must run Provision before anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionNeeded {
    /// No policy key yet.
    NotProvisioned,
    /// The policy changed since the device acknowledged it.
    PolicyRefresh,
    /// The key the device sent is not the one it was given.
    InvalidPolicyKey,
    /// An administrator asked for a wipe.
    RemoteWipe,
}

#[derive(Debug, thiserror::Error)]
pub enum EasError {
    /// The request is not something this server can interpret (HTTP 400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The body is valid WBXML but not a valid request of the command: the command's
    /// protocol-error status.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A status defined for this command, in the response's root `Status`.
    #[error("command status {0}")]
    Status(u16),
    /// A common status (14.0+), or its HTTP equivalent for older versions.
    #[error("{0:?}")]
    Common(CommonStatus),
    #[error("the user is not enabled for Mobile Sync")]
    UserDisabled,
    #[error("the device is blocked")]
    DeviceBlocked,
    #[error("provisioning required: {0:?}")]
    Provision(ProvisionNeeded),
    #[error("the command is not implemented")]
    NotImplemented,
    /// A transient failure: the device should retry later.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// An internal failure.
    #[error("server error: {0}")]
    Server(String),
}

impl From<StoreError> for EasError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m) => EasError::Unavailable(m),
            StoreError::QuotaExceeded { .. } => EasError::Common(CommonStatus::MailboxQuotaExceeded),
            e => EasError::Server(e.to_string()),
        }
    }
}

impl From<crate::state::StateError> for EasError {
    fn from(e: crate::state::StateError) -> Self {
        EasError::Server(e.to_string())
    }
}

impl From<SyncError> for EasError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Store(s) => s.into(),
            SyncError::State(s) => s.into(),
            // Commands map these to their own statuses before they get here.
            SyncError::InvalidSyncKey => EasError::Protocol("invalid sync key".into()),
            SyncError::FolderNotFound => EasError::Protocol("unknown folder".into()),
        }
    }
}

/// What a command produced.
pub enum CommandResponse {
    Wbxml(Element),
    /// HTTP 200 with no body (the empty Sync response).
    Empty,
    /// Another content type (GetAttachment, multipart ItemOperations).
    Raw {
        content_type: String,
        body: Bytes,
    },
}

pub type HttpResponse = Response<Full<Bytes>>;

pub const WBXML_CONTENT_TYPE: &str = "application/vnd.ms-sync.wbxml";

impl CommandResponse {
    pub fn into_http(self) -> HttpResponse {
        match self {
            CommandResponse::Wbxml(root) => body_response(StatusCode::OK, WBXML_CONTENT_TYPE, Bytes::from(wbxml::encode(&root))),
            CommandResponse::Empty => Response::new(Full::new(Bytes::new())),
            CommandResponse::Raw { content_type, body } => body_response(StatusCode::OK, &content_type, body),
        }
    }
}

fn body_response(status: StatusCode, content_type: &str, body: Bytes) -> HttpResponse {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

fn plain(status: StatusCode, text: &str) -> HttpResponse {
    body_response(status, "text/plain; charset=utf-8", Bytes::copy_from_slice(text.as_bytes()))
}

/// The root element of a command's response (the same as its request's).
pub fn response_root(command: Command) -> Option<Tag> {
    let (page, tag) = command.request_root()?;
    Tag::by_name(page, tag)
}

/// `<Root><Status>code</Status></Root>`, where the Status tag is the one of the root's page.
fn status_document(command: Command, code: u16) -> Option<Element> {
    let root = response_root(command)?;
    let page = root.page_def()?;
    let status = Tag::by_name(page.name, "Status")?;
    Some(Element::new(root).with_text(status, code.to_string()))
}

/// The command's own status for a malformed request, when it has one.
fn protocol_error_status(command: Command) -> Option<u16> {
    Some(match command {
        Command::Sync => SyncStatus::ProtocolError.code(),
        Command::FolderSync => FolderSyncStatus::MalformedRequest.code(),
        Command::FolderCreate => FolderCreateStatus::MalformedRequest.code(),
        Command::FolderUpdate => FolderUpdateStatus::MalformedRequest.code(),
        Command::FolderDelete => FolderDeleteStatus::MalformedRequest.code(),
        Command::Ping => PingStatus::SyntaxError.code(),
        Command::Provision => ProvisionStatus::ProtocolError.code(),
        Command::ItemOperations => ItemOperationsStatus::ProtocolError.code(),
        Command::Settings => SettingsStatus::ProtocolError.code(),
        Command::ResolveRecipients => ResolveRecipientsStatus::ProtocolError.code(),
        Command::Find => FindStatus::InvalidRequest.code(),
        Command::MeetingResponse => MeetingResponseStatus::InvalidMeetingRequest.code(),
        Command::MoveItems => MoveItemsStatus::InvalidSourceId.code(),
        _ => return None,
    })
}

/// The command's own status for a server-side failure, when it has one.
fn server_error_status(command: Command) -> Option<u16> {
    Some(match command {
        Command::Sync => SyncStatus::ServerError.code(),
        Command::FolderSync => FolderSyncStatus::ServerError.code(),
        Command::FolderCreate => FolderCreateStatus::ServerError.code(),
        Command::FolderUpdate => FolderUpdateStatus::ServerError.code(),
        Command::FolderDelete => FolderDeleteStatus::ServerError.code(),
        Command::Ping => PingStatus::ServerError.code(),
        Command::Provision => ProvisionStatus::ServerError.code(),
        Command::ItemOperations => ItemOperationsStatus::ServerError.code(),
        Command::Settings => SettingsStatus::ServerUnavailable.code(),
        Command::Search => SearchStatus::ServerError.code(),
        Command::ResolveRecipients => ResolveRecipientsStatus::ServerError.code(),
        Command::MeetingResponse => MeetingResponseStatus::ServerError.code(),
        Command::MoveItems => MoveItemsStatus::MoveFailure.code(),
        _ => return None,
    })
}

/// HTTP status used for a common status by protocol versions before 14.0.
fn legacy_http_status(status: CommonStatus) -> StatusCode {
    use CommonStatus::*;
    match status {
        UserDisabledForSync
        | UserOnNewMailboxCannotSync
        | UserOnLegacyMailboxCannotSync
        | DeviceIsBlockedForThisUser
        | AccessDenied
        | AccountDisabled => StatusCode::FORBIDDEN,
        ServerErrorRetryLater | MailboxServerOffline => StatusCode::SERVICE_UNAVAILABLE,
        ServerError | SyncStateCorrupt | SyncStateNotFound => StatusCode::INTERNAL_SERVER_ERROR,
        MailboxQuotaExceeded => StatusCode::INSUFFICIENT_STORAGE,
        CommandNotSupported => StatusCode::NOT_IMPLEMENTED,
        RemoteWipeRequested | DeviceNotProvisioned | PolicyRefresh | InvalidPolicyKey => {
            StatusCode::from_u16(449).unwrap_or(StatusCode::FORBIDDEN)
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

/// Turns an error into the response the device gets for `command` in `version`.
pub fn into_response(err: &EasError, command: Command, version: ProtocolVersion) -> HttpResponse {
    let status_body = |code: u16| match status_document(command, code) {
        Some(doc) => CommandResponse::Wbxml(doc).into_http(),
        None => plain(StatusCode::BAD_REQUEST, "bad request\n"),
    };
    let common = |status: CommonStatus| {
        if version.has_common_statuses() && response_root(command).is_some() {
            status_body(status.code())
        } else {
            let mut r = plain(legacy_http_status(status), status.meaning());
            if legacy_http_status(status) == StatusCode::SERVICE_UNAVAILABLE {
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            }
            r
        }
    };
    match err {
        EasError::BadRequest(m) => plain(StatusCode::BAD_REQUEST, &format!("{m}\n")),
        EasError::NotImplemented => plain(StatusCode::NOT_IMPLEMENTED, "command not implemented\n"),
        EasError::Status(code) => status_body(*code),
        EasError::Common(s) => common(*s),
        EasError::UserDisabled => common(CommonStatus::UserDisabledForSync),
        EasError::DeviceBlocked => common(CommonStatus::DeviceIsBlockedForThisUser),
        EasError::Provision(need) => common(match need {
            ProvisionNeeded::NotProvisioned => CommonStatus::DeviceNotProvisioned,
            ProvisionNeeded::PolicyRefresh => CommonStatus::PolicyRefresh,
            ProvisionNeeded::InvalidPolicyKey => CommonStatus::InvalidPolicyKey,
            ProvisionNeeded::RemoteWipe => CommonStatus::RemoteWipeRequested,
        }),
        EasError::Protocol(_) => match protocol_error_status(command) {
            Some(code) => status_body(code),
            None if version.has_common_statuses() => common(CommonStatus::InvalidXml),
            None => plain(StatusCode::BAD_REQUEST, "malformed request\n"),
        },
        EasError::Unavailable(_) => {
            if version.has_common_statuses() {
                match server_error_status(command) {
                    Some(code) => status_body(code),
                    None => common(CommonStatus::ServerErrorRetryLater),
                }
            } else {
                let mut r = plain(StatusCode::SERVICE_UNAVAILABLE, "temporarily unavailable, retry later\n");
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
                r
            }
        }
        EasError::Server(_) => match server_error_status(command) {
            Some(code) => status_body(code),
            None if version.has_common_statuses() => common(CommonStatus::ServerErrorRetryLater),
            None => plain(StatusCode::INTERNAL_SERVER_ERROR, "server error\n"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wbxml::tag;

    fn status_of(r: HttpResponse) -> (StatusCode, Option<String>) {
        let status = r.status();
        let body = futures_body(r);
        let text = (!body.is_empty())
            .then(|| wbxml::decode(&body).ok())
            .flatten()
            .and_then(|root| root.elements().find(|e| e.tag.name() == Some("Status")).and_then(|e| e.text_content()));
        (status, text)
    }

    fn futures_body(r: HttpResponse) -> Bytes {
        use http_body_util::BodyExt;
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async move { r.into_body().collect().await.unwrap().to_bytes() })
    }

    #[test]
    fn provisioning_is_449_before_14_and_a_status_after() {
        let e = EasError::Provision(ProvisionNeeded::NotProvisioned);
        assert_eq!(status_of(into_response(&e, Command::FolderSync, ProtocolVersion::V12_1)).0.as_u16(), 449);
        assert_eq!(status_of(into_response(&e, Command::FolderSync, ProtocolVersion::V14_1)), (StatusCode::OK, Some("142".into())));
        let e = EasError::Provision(ProvisionNeeded::InvalidPolicyKey);
        assert_eq!(status_of(into_response(&e, Command::Sync, ProtocolVersion::V16_1)).1.as_deref(), Some("144"));
    }

    #[test]
    fn disabled_users_get_403_or_126() {
        let e = EasError::UserDisabled;
        assert_eq!(status_of(into_response(&e, Command::Ping, ProtocolVersion::V12_1)).0, StatusCode::FORBIDDEN);
        assert_eq!(status_of(into_response(&e, Command::Ping, ProtocolVersion::V14_0)).1.as_deref(), Some("126"));
    }

    #[test]
    fn protocol_errors_use_the_command_status() {
        let e = EasError::Protocol("x".into());
        assert_eq!(status_of(into_response(&e, Command::Sync, ProtocolVersion::V14_1)).1.as_deref(), Some("4"));
        assert_eq!(status_of(into_response(&e, Command::FolderSync, ProtocolVersion::V12_1)).1.as_deref(), Some("10"));
        assert_eq!(status_of(into_response(&e, Command::GetItemEstimate, ProtocolVersion::V14_1)).1.as_deref(), Some("103"));
        assert_eq!(status_of(into_response(&e, Command::GetItemEstimate, ProtocolVersion::V12_1)).0, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_status_tag_is_taken_from_the_root_page() {
        let doc = status_document(Command::Ping, 8).unwrap();
        assert_eq!(doc.tag, tag::ping::PING);
        assert_eq!(doc.child_text(tag::ping::STATUS).as_deref(), Some("8"));
    }
}
