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

/// Calls the command's handler. Each handler's future is boxed: otherwise every request,
/// a waiting Ping included, would carry a state machine as large as the largest command's.
pub(crate) async fn run_command(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    use std::future::Future;
    use std::pin::Pin;
    type Handler<'a> = Pin<Box<dyn Future<Output = Result<CommandResponse, EasError>> + Send + 'a>>;
    let handler: Handler<'_> = match ctx.line.command {
        Command::Provision => Box::pin(provision::handle(ctx, request)),
        Command::FolderSync => Box::pin(folder_sync::handle(ctx, request)),
        Command::Sync => Box::pin(sync::handle(ctx, request)),
        Command::GetItemEstimate => Box::pin(get_item_estimate::handle(ctx, request)),
        Command::ItemOperations => Box::pin(item_operations::handle(ctx, request)),
        Command::GetAttachment => Box::pin(item_operations::get_attachment(ctx, request)),
        Command::Settings => Box::pin(settings::handle(ctx, request)),
        Command::Ping => Box::pin(ping::handle(ctx, request)),
        Command::SendMail => Box::pin(send_mail::send_mail(ctx, request)),
        Command::SmartReply => Box::pin(send_mail::smart_reply(ctx, request)),
        Command::SmartForward => Box::pin(send_mail::smart_forward(ctx, request)),
        Command::MoveItems => Box::pin(move_items::handle(ctx, request)),
        Command::FolderCreate => Box::pin(folder_ops::create(ctx, request)),
        Command::FolderUpdate => Box::pin(folder_ops::update(ctx, request)),
        Command::FolderDelete => Box::pin(folder_ops::delete(ctx, request)),
        Command::Search => Box::pin(search::handle(ctx, request)),
        Command::Find => Box::pin(find::handle(ctx, request)),
        Command::ResolveRecipients => Box::pin(resolve_recipients::handle(ctx, request)),
        _ => return Err(EasError::NotImplemented),
    };
    handler.await
}
