//! The ActiveSync protocol: the HTTP request form, status codes, and one module per command
//! that parses its request from the WBXML element tree and builds its response.
//!
//! Commands call the sync engine, the store and the device state through the request
//! context ([`dispatch::Ctx`]); they never touch sockets. Errors become protocol answers in
//! exactly one place, [`error::into_response`].

pub mod compose;
pub mod directory;
pub mod dispatch;
pub mod email;
pub mod error;
pub mod find;
pub mod folder_ops;
pub mod folder_sync;
pub mod folders;
pub mod get_item_estimate;
pub mod item_operations;
pub mod move_items;
pub mod ping;
pub mod provision;
pub mod request;
pub mod resolve_recipients;
pub mod search;
pub mod send_mail;
pub mod settings;
pub mod status;
pub mod sync;
pub mod version;

pub use request::{CommandParams, RequestLine, RequestLineError};
pub use version::ProtocolVersion;

mod generated {
    include!(concat!(env!("OUT_DIR"), "/commands.rs"));
}

pub use generated::{Command, QUERY_PARAMETERS};

use dispatch::{Ctx, Request};
use error::{CommandResponse, EasError};

/// Whether a command has a handler (the rest answer 501 and are not announced).
pub(crate) fn handler_exists(command: Command) -> bool {
    matches!(
        command,
        Command::Provision
            | Command::FolderSync
            | Command::Sync
            | Command::GetItemEstimate
            | Command::ItemOperations
            | Command::GetAttachment
            | Command::Settings
            | Command::Ping
            | Command::SendMail
            | Command::SmartReply
            | Command::SmartForward
            | Command::MoveItems
            | Command::FolderCreate
            | Command::FolderUpdate
            | Command::FolderDelete
            | Command::Search
            | Command::Find
            | Command::ResolveRecipients
    )
}

/// Calls the command's handler.
pub(crate) async fn run_command(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    match ctx.line.command {
        Command::Provision => provision::handle(ctx, request).await,
        Command::FolderSync => folder_sync::handle(ctx, request).await,
        Command::Sync => sync::handle(ctx, request).await,
        Command::GetItemEstimate => get_item_estimate::handle(ctx, request).await,
        Command::ItemOperations => item_operations::handle(ctx, request).await,
        Command::GetAttachment => item_operations::get_attachment(ctx, request).await,
        Command::Settings => settings::handle(ctx, request).await,
        Command::Ping => Box::pin(ping::handle(ctx, request)).await,
        Command::SendMail => send_mail::send_mail(ctx, request).await,
        Command::SmartReply => send_mail::smart_reply(ctx, request).await,
        Command::SmartForward => send_mail::smart_forward(ctx, request).await,
        Command::MoveItems => move_items::handle(ctx, request).await,
        Command::FolderCreate => folder_ops::create(ctx, request).await,
        Command::FolderUpdate => folder_ops::update(ctx, request).await,
        Command::FolderDelete => folder_ops::delete(ctx, request).await,
        Command::Search => search::handle(ctx, request).await,
        Command::Find => find::handle(ctx, request).await,
        Command::ResolveRecipients => resolve_recipients::handle(ctx, request).await,
        _ => Err(EasError::NotImplemented),
    }
}
