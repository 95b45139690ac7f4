//! Device access decisions: the default for new devices, rules by device type, model or
//! user, and the administrator's explicit choice, which always wins.

use crate::app::App;
use crate::eas::error::EasError;
use crate::state::{AccessState, Device};

use super::store::{AccessRule, RuleKind};

/// Why a device has its access state (stored in `access_reason`).
pub const REASON_ADMIN: &str = "admin";
pub const REASON_DEFAULT: &str = "default";

/// The access a device gets from the rules: a user rule (exemption) beats a model rule,
/// which beats a device-type rule, which beats the default.
pub fn evaluate(rules: &[AccessRule], default: AccessState, login: &str, device: &Device) -> (AccessState, String) {
    let find = |kind: RuleKind, value: Option<&str>| {
        let value = value?;
        rules.iter().rev().find(|r| r.kind == kind && r.matches(value))
    };
    if let Some(r) = find(RuleKind::User, Some(login)) {
        return (r.access, format!("rule {} (user {})", r.id, r.pattern));
    }
    if let Some(r) = find(RuleKind::Model, device.info.model.as_deref()) {
        return (r.access, format!("rule {} (model {})", r.id, r.pattern));
    }
    if let Some(r) = find(RuleKind::DeviceType, Some(&device.device_type)) {
        return (r.access, format!("rule {} (type {})", r.id, r.pattern));
    }
    (default, REASON_DEFAULT.to_string())
}

fn default_access(app: &App) -> AccessState {
    AccessState::parse(&app.config.access.default_device_access).unwrap_or(AccessState::Allowed)
}

/// Decides the access of a device seen for the first time and records it.
pub async fn decide_new_device(app: &App, device: &mut Device) -> Result<(), EasError> {
    let rules = app.admin.rules().await?;
    let (access, reason) = evaluate(&rules, default_access(app), &device.login, device);
    device.access = access;
    device.access_reason = Some(reason);
    app.state.save_device(device).await?;
    if access != AccessState::Allowed {
        tracing::info!(access = access.as_str(), "new device is not allowed yet");
    }
    Ok(())
}

/// Re-applies the rules once the device reported its model, unless an administrator
/// decided explicitly.
pub async fn reconsider(app: &App, device: &mut Device) -> Result<(), EasError> {
    if device.access_reason.as_deref() == Some(REASON_ADMIN) || device.access_reason.as_deref() == Some("wiped") {
        return Ok(());
    }
    let rules = app.admin.rules().await?;
    let (access, reason) = evaluate(&rules, default_access(app), &device.login, device);
    device.access = access;
    device.access_reason = Some(reason);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{DeviceInfo, WipeState};

    fn device(device_type: &str, model: Option<&str>) -> Device {
        Device {
            pk: 1,
            login: "alice".into(),
            device_id: "D".into(),
            device_type: device_type.into(),
            protocol_version: None,
            info: DeviceInfo { model: model.map(str::to_string), ..Default::default() },
            first_seen: 0,
            last_seen: 0,
            last_sync: None,
            policy_key: 0,
            pending_policy_key: 0,
            policy_name: None,
            policy_compliant: None,
            access: AccessState::Allowed,
            access_reason: None,
            wipe: WipeState::None,
            wipe_requested_at: None,
            wipe_acknowledged_at: None,
            ping: None,
        }
    }

    fn rule(id: i64, kind: RuleKind, pattern: &str, access: AccessState) -> AccessRule {
        AccessRule { id, kind, pattern: pattern.into(), access, created_by: "admin".into(), created_at: 0 }
    }

    #[test]
    fn user_beats_model_beats_type_beats_default() {
        let rules = vec![
            rule(1, RuleKind::DeviceType, "Android*", AccessState::Quarantined),
            rule(2, RuleKind::Model, "Pixel 9", AccessState::Allowed),
            rule(3, RuleKind::User, "ceo", AccessState::Allowed),
        ];
        assert_eq!(evaluate(&rules, AccessState::Allowed, "alice", &device("AndroidPhone", None)).0, AccessState::Quarantined);
        assert_eq!(evaluate(&rules, AccessState::Allowed, "alice", &device("AndroidPhone", Some("Pixel 9"))).0, AccessState::Allowed);
        assert_eq!(evaluate(&rules, AccessState::Blocked, "ceo", &device("Unknown", None)).0, AccessState::Allowed);
        let (a, reason) = evaluate(&rules, AccessState::Blocked, "bob", &device("iPhone", None));
        assert_eq!((a, reason.as_str()), (AccessState::Blocked, REASON_DEFAULT));
    }
}
