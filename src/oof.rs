//! Out-of-office: the settings a device manages through Settings/Oof, and the rule for
//! when a delivered message earns an automatic reply.

use serde::{Deserialize, Serialize};

use crate::state::{StateResult, StateStore};

/// The user-setting name the settings are stored under.
pub const SETTING: &str = "oof";

/// How long one sender gets only one automatic reply.
pub const REPLY_PERIOD_SECS: i64 = 4 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OofState {
    #[default]
    Disabled,
    /// Until switched off.
    Global,
    /// Between `start` and `end`.
    TimeBased,
}

/// One audience's message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OofMessage {
    pub enabled: bool,
    pub reply: String,
    /// "Text" or "HTML".
    pub body_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OofSettings {
    pub state: OofState,
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Senders in the user's own organisation (same domain).
    pub internal: Option<OofMessage>,
    /// External senders the user knows; treated like unknown ones (no contact list here).
    pub external_known: Option<OofMessage>,
    pub external_unknown: Option<OofMessage>,
    /// Senders already answered, with when (seconds), pruned after the reply period.
    #[serde(default)]
    pub replied: Vec<(String, i64)>,
}

impl OofSettings {
    pub async fn load(state: &dyn StateStore, login: &str) -> StateResult<OofSettings> {
        Ok(match state.user_setting(login, SETTING).await? {
            Some(json) => serde_json::from_str(&json).unwrap_or_default(),
            None => OofSettings::default(),
        })
    }

    pub async fn save(&self, state: &dyn StateStore, login: &str) -> StateResult<()> {
        let json = serde_json::to_string(self).map_err(|e| crate::state::StateError::Corrupt(e.to_string()))?;
        state.set_user_setting(login, SETTING, &json).await
    }

    pub fn active_at(&self, now: i64) -> bool {
        match self.state {
            OofState::Disabled => false,
            OofState::Global => true,
            OofState::TimeBased => self.start.is_none_or(|s| now >= s) && self.end.is_none_or(|e| now < e),
        }
    }

    /// The reply text for `sender` now, if one is due (and records it as sent): once per
    /// sender per period, never to automated mail, never to oneself.
    pub fn reply_for(&mut self, sender: &str, own_addresses: &[String], automated: bool, now: i64) -> Option<OofMessage> {
        if !self.active_at(now) || automated {
            return None;
        }
        let sender = sender.trim().to_ascii_lowercase();
        if sender.is_empty() || own_addresses.iter().any(|a| a.eq_ignore_ascii_case(&sender)) {
            return None;
        }
        self.replied.retain(|(_, at)| now - at < REPLY_PERIOD_SECS);
        if self.replied.iter().any(|(s, _)| *s == sender) {
            return None;
        }
        let own_domain = own_addresses.first().and_then(|a| a.split_once('@')).map(|(_, d)| d.to_ascii_lowercase());
        let internal = own_domain.is_some_and(|d| sender.ends_with(&format!("@{d}")));
        let message = if internal { self.internal.clone() } else { self.external_unknown.clone().or_else(|| self.external_known.clone()) };
        let message = message.filter(|m| m.enabled && !m.reply.trim().is_empty())?;
        self.replied.push((sender, now));
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oof() -> OofSettings {
        OofSettings {
            state: OofState::TimeBased,
            start: Some(100),
            end: Some(1_000_000),
            internal: Some(OofMessage { enabled: true, reply: "away (internal)".into(), body_type: "Text".into() }),
            external_unknown: Some(OofMessage { enabled: true, reply: "away".into(), body_type: "Text".into() }),
            ..Default::default()
        }
    }

    #[test]
    fn replies_once_per_sender_per_period_within_the_window() {
        let me = vec!["alice@example.test".to_string()];
        let mut o = oof();
        assert!(o.reply_for("bob@other.test", &me, false, 50).is_none(), "before the window");
        assert_eq!(o.reply_for("bob@other.test", &me, false, 200).unwrap().reply, "away");
        assert!(o.reply_for("BOB@other.test", &me, false, 300).is_none(), "once per sender");
        assert_eq!(o.reply_for("bob@other.test", &me, false, 200 + REPLY_PERIOD_SECS).unwrap().reply, "away");
        assert_eq!(o.reply_for("carol@example.test", &me, false, 400).unwrap().reply, "away (internal)");
        assert!(o.reply_for("alice@example.test", &me, false, 400).is_none(), "never to oneself");
        assert!(o.reply_for("list@other.test", &me, true, 400).is_none(), "never to automated mail");
        assert!(o.reply_for("dave@other.test", &me, false, 2_000_000).is_none(), "after the window");
    }
}
