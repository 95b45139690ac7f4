//! Local delivery into the embedded store: the `deliver` command and admin API, the LMTP
//! listener, and the out-of-office auto-reply a delivery may trigger.

pub mod lmtp;

use mail_parser::MessageParser;

use crate::app::App;
use crate::oof::OofSettings;
use crate::store::StoreResult;
use crate::store::embedded::{Delivered, EmbeddedStore};

/// Delivers one message to one local address and answers for its owner's out-of-office.
/// Returns once the message is durably committed.
pub async fn deliver_local(app: &App, store: &EmbeddedStore, address: &str, raw: &[u8]) -> StoreResult<Delivered> {
    let delivered = store.deliver(address, raw).await?;
    app.metrics.deliveries.inc();
    if let Err(e) = auto_reply(app, store, &delivered, raw).await {
        tracing::warn!(user = %delivered.login, error = %e, "out-of-office reply failed");
    }
    Ok(delivered)
}

/// Mail that must never get an automatic reply (RFC 3834): auto-submitted, bulk, lists,
/// bounces.
fn is_automated(msg: &mail_parser::Message<'_>) -> bool {
    let header = |n: &str| msg.header_raw(n).map(|v| v.trim().to_ascii_lowercase());
    header("Auto-Submitted").is_some_and(|v| v != "no")
        || header("Precedence").is_some_and(|v| matches!(v.as_str(), "bulk" | "list" | "junk"))
        || msg.header_raw("List-Id").is_some()
        || header("Return-Path").is_some_and(|v| v == "<>")
}

async fn auto_reply(app: &App, store: &EmbeddedStore, delivered: &Delivered, raw: &[u8]) -> Result<(), String> {
    let mut settings = OofSettings::load(app.state.as_ref(), &delivered.login).await.map_err(|e| e.to_string())?;
    let now = chrono::Utc::now().timestamp();
    if !settings.active_at(now) {
        return Ok(());
    }
    let Some(msg) = MessageParser::default().parse(raw) else { return Ok(()) };
    let Some(sender) = msg.from().and_then(|f| f.first()).and_then(|a| a.address()).map(str::to_string) else { return Ok(()) };
    let account = store.find_account(&delivered.login).await.map_err(|e| e.to_string())?.ok_or("account vanished")?;
    let Some(reply) = settings.reply_for(&sender, &account.addresses, is_automated(&msg), now) else { return Ok(()) };
    settings.save(app.state.as_ref(), &delivered.login).await.map_err(|e| e.to_string())?;

    let subject = format!("Automatic reply: {}", msg.subject().unwrap_or(""));
    let mut builder = mail_builder::MessageBuilder::new()
        .from(mail_builder::headers::address::Address::new_address(account.display_name.clone(), account.email.clone()))
        .to(sender.clone())
        .subject(subject)
        .message_id(crate::eas::compose::new_message_id(&account))
        .header("Auto-Submitted", mail_builder::headers::raw::Raw::new("auto-replied"));
    if let Some(id) = msg.message_id() {
        builder = builder.in_reply_to(id.to_string()).references(id.to_string());
    }
    builder = if reply.body_type.eq_ignore_ascii_case("html") { builder.html_body(reply.reply) } else { builder.text_body(reply.reply) };
    let bytes = builder.write_to_vec().map_err(|e| e.to_string())?;
    // Boxed: sending may deliver locally, which may come back here for the other user.
    Box::pin(crate::outbound::send(app, &account, &[sender], &bytes)).await.map_err(|e| e.to_string())
}
