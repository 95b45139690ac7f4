//! Sending mail out: through the configured SMTP submission server (lettre: STARTTLS or
//! implicit TLS, authentication), or, on the embedded store without a relay, by local
//! delivery to local recipients only.

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::app::App;
use crate::config::SmtpSettings;
use crate::store::Account;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no recipients")]
    NoRecipients,
    #[error("recipient {0} is not a valid address")]
    BadRecipient(String),
    #[error("no relay is configured for external recipient {0}")]
    ExternalRecipient(String),
    #[error("message of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: u64, limit: u64 },
    #[error("submission failed: {0}")]
    Submission(String),
    #[error("local delivery failed: {0}")]
    Local(#[from] crate::store::StoreError),
}

/// Sends `raw` from `sender` to `recipients` (envelope addresses).
pub async fn send(app: &App, sender: &Account, recipients: &[String], raw: &[u8]) -> Result<(), SendError> {
    if recipients.is_empty() {
        return Err(SendError::NoRecipients);
    }
    let limit = app.config.mail.max_message_bytes;
    if raw.len() as u64 > limit {
        return Err(SendError::TooLarge { size: raw.len() as u64, limit });
    }
    match &app.config.smtp {
        Some(smtp) => relay(smtp, sender, recipients, raw).await,
        None => {
            let store = app.embedded.as_ref().ok_or_else(|| SendError::Submission("no SMTP relay is configured".into()))?;
            // Refuse before delivering anything, so a message never half-arrives.
            for r in recipients {
                if !store.is_local_recipient(r).await? {
                    return Err(SendError::ExternalRecipient(r.clone()));
                }
            }
            for r in recipients {
                crate::delivery::deliver_local(app, store, r, raw).await?;
            }
            Ok(())
        }
    }
}

async fn relay(smtp: &SmtpSettings, sender: &Account, recipients: &[String], raw: &[u8]) -> Result<(), SendError> {
    let from = sender.email.parse().map_err(|_| SendError::Submission(format!("sender {} is not an address", sender.email)))?;
    let to = recipients
        .iter()
        .map(|r| r.parse().map_err(|_| SendError::BadRecipient(r.clone())))
        .collect::<Result<Vec<lettre::Address>, _>>()?;
    let envelope = Envelope::new(Some(from), to).map_err(|e| SendError::Submission(e.to_string()))?;
    let tls_params = || TlsParameters::new(smtp.host.clone()).map_err(|e| SendError::Submission(e.to_string()));
    let tls = match smtp.security.as_str() {
        "tls" => Tls::Wrapper(tls_params()?),
        "none" => Tls::None,
        _ => Tls::Required(tls_params()?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(std::time::Duration::from_secs(60)));
    let credentials = match (&smtp.username, &smtp.password) {
        (Some(u), Some(p)) => Some(Credentials::new(u.clone(), p.clone())),
        _ if smtp.pass_through_credentials => sender.secret.as_ref().map(|p| Credentials::new(sender.login.to_string(), p.to_string())),
        _ => None,
    };
    if let Some(c) = credentials {
        builder = builder.credentials(c);
    }
    builder.build().send_raw(&envelope, raw).await.map_err(|e| SendError::Submission(e.to_string()))?;
    Ok(())
}
