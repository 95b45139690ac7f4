//! Settings (MS-ASCMD 2.2.1.18): DeviceInformation, UserInformation, Oof, DevicePassword,
//! RightsManagementInformation.

use super::ProtocolVersion;
use super::dispatch::{Ctx, Request};
use super::email::{eas_date, parse_eas_date};
use super::error::{CommandResponse, EasError};
use super::status::{SettingsOofStatus, SettingsStatus};
use crate::oof::{OofMessage, OofSettings, OofState};
use crate::state::DeviceInfo;
use crate::wbxml::{Element, tag};

/// Reads a DeviceInformation/Set element.
pub fn parse_device_information(set: &Element) -> DeviceInfo {
    let t = |tg| set.child_text(tg).map(|s| s.trim().chars().take(1024).collect::<String>()).filter(|s| !s.is_empty());
    DeviceInfo {
        model: t(tag::settings::MODEL),
        imei: t(tag::settings::IMEI),
        friendly_name: t(tag::settings::FRIENDLY_NAME),
        os: t(tag::settings::OS),
        os_language: t(tag::settings::OS_LANGUAGE),
        phone_number: t(tag::settings::PHONE_NUMBER),
        mobile_operator: t(tag::settings::MOBILE_OPERATOR),
        user_agent: t(tag::settings::USER_AGENT),
        enable_outbound_sms: t(tag::settings::ENABLE_OUTBOUND_SMS).map(|v| v == "1"),
    }
}

/// Overwrites the fields the device sent, keeping the others.
pub fn merge_device_information(into: &mut DeviceInfo, new: DeviceInfo) {
    macro_rules! take {
        ($($f:ident),*) => { $( if new.$f.is_some() { into.$f = new.$f; } )* };
    }
    take!(model, imei, friendly_name, os, os_language, phone_number, mobile_operator, user_agent, enable_outbound_sms);
}

fn status_el(t: crate::wbxml::Tag, code: u16) -> Element {
    Element::new(t).with_text(tag::settings::STATUS, code.to_string())
}

pub async fn handle(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    let doc = request.document.ok_or_else(|| EasError::Protocol("Settings needs a body".into()))?;
    let mut response = Element::new(tag::settings::SETTINGS).with_text(tag::settings::STATUS, SettingsStatus::Success.code().to_string());
    let mut device_changed = false;

    for part in doc.elements() {
        match part.tag {
            t if t == tag::settings::DEVICE_INFORMATION => match part.child(tag::settings::SET) {
                Some(set) => {
                    merge_device_information(&mut ctx.device.info, parse_device_information(set));
                    device_changed = true;
                    response.push(status_el(t, 1));
                }
                None => response.push(status_el(t, SettingsStatus::ProtocolError.code())),
            },
            t if t == tag::settings::USER_INFORMATION => {
                let mut out = status_el(t, 1);
                if part.child(tag::settings::GET).is_some() {
                    out.push(user_information(ctx));
                }
                response.push(out);
            }
            t if t == tag::settings::OOF => response.push(oof(ctx, part).await?),
            t if t == tag::settings::DEVICE_PASSWORD => {
                // Acknowledged but not kept: pushsync offers no recovery-password lookup, and a
                // password it cannot show anyone is better not stored.
                let ok = part.child(tag::settings::SET).and_then(|s| s.child_text(tag::settings::PASSWORD)).is_some();
                response.push(status_el(t, if ok { 1 } else { SettingsStatus::ProtocolError.code() }));
            }
            t if t == tag::settings::RIGHTS_MANAGEMENT_INFORMATION => {
                // No rights-management templates: an empty list.
                response.push(status_el(t, 1).with(Element::new(tag::settings::GET)));
            }
            other => return Err(EasError::Protocol(format!("unexpected Settings element {other}"))),
        }
    }
    if device_changed {
        crate::admin::access::reconsider(ctx.app, &mut ctx.device).await?;
        ctx.app.state.save_device(&ctx.device).await?;
    }
    Ok(CommandResponse::Wbxml(response))
}

fn user_information(ctx: &Ctx<'_>) -> Element {
    let account = &ctx.account;
    let mut addresses = account.addresses.clone();
    if addresses.is_empty() {
        addresses.push(account.email.clone());
    }
    let mut get = Element::new(tag::settings::GET);
    if ctx.version() >= ProtocolVersion::V14_1 {
        let mut emails = Element::new(tag::settings::EMAIL_ADDRESSES).with_text(tag::settings::PRIMARY_SMTP_ADDRESS, account.email.clone());
        for a in &addresses {
            emails.push_text_child(tag::settings::SMTP_ADDRESS, a.clone());
        }
        let mut acct = Element::new(tag::settings::ACCOUNT);
        if let Some(name) = &account.display_name {
            acct.push_text_child(tag::settings::USER_DISPLAY_NAME, name.clone());
        }
        acct.push(emails);
        get.push(Element::new(tag::settings::ACCOUNTS).with(acct));
    } else {
        let mut emails = Element::new(tag::settings::EMAIL_ADDRESSES);
        for a in &addresses {
            emails.push_text_child(tag::settings::SMTP_ADDRESS, a.clone());
        }
        get.push(emails);
    }
    get
}

fn oof_message(m: &Element) -> (Option<&'static str>, OofMessage) {
    let audience = if m.child(tag::settings::APPLIES_TO_INTERNAL).is_some() {
        Some("internal")
    } else if m.child(tag::settings::APPLIES_TO_EXTERNAL_KNOWN).is_some() {
        Some("known")
    } else if m.child(tag::settings::APPLIES_TO_EXTERNAL_UNKNOWN).is_some() {
        Some("unknown")
    } else {
        None
    };
    let message = OofMessage {
        enabled: m.child_text(tag::settings::ENABLED).is_some_and(|v| v.trim() == "1"),
        reply: m.child_text(tag::settings::REPLY_MESSAGE).unwrap_or_default().chars().take(64 * 1024).collect(),
        body_type: m.child_text(tag::settings::BODY_TYPE).unwrap_or_else(|| "Text".into()),
    };
    (audience, message)
}

async fn oof(ctx: &Ctx<'_>, part: &Element) -> Result<Element, EasError> {
    let mut settings = OofSettings::load(ctx.app.state.as_ref(), ctx.login()).await?;
    if let Some(set) = part.child(tag::settings::SET) {
        let state = match set.child_text(tag::settings::OOF_STATE).as_deref().map(str::trim) {
            Some("0") => OofState::Disabled,
            Some("1") => OofState::Global,
            Some("2") => OofState::TimeBased,
            None => settings.state,
            Some(_) => return Ok(status_el(tag::settings::OOF, SettingsOofStatus::InvalidArguments.code())),
        };
        let start = set.child_text(tag::settings::START_TIME).map(|s| parse_eas_date(&s));
        let end = set.child_text(tag::settings::END_TIME).map(|s| parse_eas_date(&s));
        if matches!(start, Some(None)) || matches!(end, Some(None)) {
            return Ok(status_el(tag::settings::OOF, SettingsOofStatus::InvalidArguments.code()));
        }
        if state == OofState::TimeBased {
            let (s, e) = (start.flatten().or(settings.start), end.flatten().or(settings.end));
            if s.is_none() || e.is_none() || s >= e {
                return Ok(status_el(tag::settings::OOF, SettingsOofStatus::ConflictingArguments.code()));
            }
        }
        settings.state = state;
        if let Some(s) = start {
            settings.start = s;
        }
        if let Some(e) = end {
            settings.end = e;
        }
        for m in set.children_with(tag::settings::OOF_MESSAGE) {
            match oof_message(m) {
                (Some("internal"), msg) => settings.internal = Some(msg),
                (Some("known"), msg) => settings.external_known = Some(msg),
                (Some("unknown"), msg) => settings.external_unknown = Some(msg),
                _ => return Ok(status_el(tag::settings::OOF, SettingsOofStatus::InvalidArguments.code())),
            }
        }
        settings.save(ctx.app.state.as_ref(), ctx.login()).await?;
        return Ok(status_el(tag::settings::OOF, 1));
    }
    if part.child(tag::settings::GET).is_none() {
        return Ok(status_el(tag::settings::OOF, SettingsOofStatus::ProtocolError.code()));
    }
    let mut get = Element::new(tag::settings::GET).with_text(
        tag::settings::OOF_STATE,
        match settings.state {
            OofState::Disabled => "0",
            OofState::Global => "1",
            OofState::TimeBased => "2",
        },
    );
    if let (Some(s), Some(e)) = (settings.start, settings.end) {
        get.push_text_child(tag::settings::START_TIME, eas_date(s));
        get.push_text_child(tag::settings::END_TIME, eas_date(e));
    }
    for (audience, msg) in [
        (tag::settings::APPLIES_TO_INTERNAL, &settings.internal),
        (tag::settings::APPLIES_TO_EXTERNAL_KNOWN, &settings.external_known),
        (tag::settings::APPLIES_TO_EXTERNAL_UNKNOWN, &settings.external_unknown),
    ] {
        let mut m = Element::new(tag::settings::OOF_MESSAGE).with(Element::new(audience));
        match msg {
            Some(msg) => {
                m.push_text_child(tag::settings::ENABLED, if msg.enabled { "1" } else { "0" });
                m.push_text_child(tag::settings::REPLY_MESSAGE, msg.reply.clone());
                m.push_text_child(tag::settings::BODY_TYPE, msg.body_type.clone());
            }
            None => m.push_text_child(tag::settings::ENABLED, "0"),
        }
        get.push(m);
    }
    Ok(status_el(tag::settings::OOF, 1).with(get))
}
