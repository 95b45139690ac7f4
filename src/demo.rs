//! The quick-start demo account: created on an empty store by `serve --demo`, enabled for
//! Mobile Sync, holding a few welcome messages, its password printed once.

use crate::app::App;
use crate::store::StoreError;
use crate::store::embedded::{EmbeddedStore, NewUser};

pub const DEMO_LOGIN: &str = "demo";
pub const DEMO_EMAIL: &str = "demo@pushsync.test";

fn welcome(n: usize, subject: &str, body: &str) -> Vec<u8> {
    let date = chrono::Utc::now().to_rfc2822();
    format!(
        "From: pushsync <postmaster@pushsync.test>\r\nTo: Demo <{DEMO_EMAIL}>\r\nSubject: {subject}\r\nDate: {date}\r\nMessage-ID: <welcome-{n}@pushsync.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    )
    .into_bytes()
}

/// Creates the demo account unless the store already has users.
pub async fn create_demo_account(app: &App, store: &EmbeddedStore) -> Result<(), StoreError> {
    if !store.list_users().await?.is_empty() {
        tracing::info!("--demo: the store already has users; no demo account created");
        return Ok(());
    }
    let password: String = (0..12).map(|_| (b'a' + rand::random::<u8>() % 26) as char).collect();
    store
        .add_user(NewUser {
            login: DEMO_LOGIN.into(),
            email: Some(DEMO_EMAIL.into()),
            display_name: Some("Demo User".into()),
            password: password.clone(),
        })
        .await?;
    app.admin.set_sync_access(DEMO_LOGIN, true, "demo").await.map_err(|e| StoreError::Internal(e.to_string()))?;
    let messages = [
        ("Welcome to pushsync", "Your phone receives new mail the moment it arrives.\r\n\r\nDeliver more with: pushsync deliver demo FILE"),
        ("How push works", "Your phone waits in a Ping; when a message is committed, pushsync answers it at once."),
        ("Administrators", "List devices with: pushsync device list\r\nWipe a lost one with: pushsync device wipe USER DEVICE"),
    ];
    for (i, (subject, body)) in messages.iter().enumerate() {
        store.deliver(DEMO_EMAIL, &welcome(i, subject, body)).await?;
    }
    eprintln!("demo account created (Mobile Sync enabled): user {DEMO_LOGIN} / {DEMO_EMAIL}, password {password}");
    Ok(())
}
