//! Provision (MS-ASPROV): the two-step policy handshake, device information, remote wipe.
//!
//! Step one hands out the policy document with a temporary key; step two, the device's
//! acknowledgement of that key, earns the final key every later request carries. When an
//! administrator asked for a wipe, any Provision is answered with RemoteWipe (or, 16.1,
//! AccountOnlyRemoteWipe) and the device's acknowledgement is recorded.

use super::dispatch::{Ctx, Request};
use super::error::{CommandResponse, EasError};
use super::status::{ProvisionPolicyStatus, ProvisionStatus};
use super::{ProtocolVersion, settings};
use crate::state::WipeState;
use crate::wbxml::{Element, tag};

/// The only policy type of protocol 12.0 and later.
const POLICY_TYPE: &str = "MS-EAS-Provisioning-WBXML";

fn new_key() -> u32 {
    // Never 0 (means "none") and never the 1 some clients use as a placeholder.
    loop {
        let k: u32 = rand::random();
        if k > 1 {
            return k;
        }
    }
}

fn status(code: u16) -> String {
    code.to_string()
}

pub async fn handle(ctx: &mut Ctx<'_>, request: Request) -> Result<CommandResponse, EasError> {
    let doc = request.document.ok_or_else(|| EasError::Protocol("Provision needs a body".into()))?;
    let now = chrono::Utc::now().timestamp();
    let mut response = Element::new(tag::provision::PROVISION);

    // Device information (14.1+) rides along with the first step.
    let mut device_info_status = None;
    if let Some(info) = doc.child(tag::settings::DEVICE_INFORMATION) {
        match info.child(tag::settings::SET).map(settings::parse_device_information) {
            Some(parsed) => {
                settings::merge_device_information(&mut ctx.device.info, parsed);
                // Rules by model can apply now that the model is known.
                crate::admin::access::reconsider(ctx.app, &mut ctx.device).await?;
                ctx.app.state.save_device(&ctx.device).await?;
                device_info_status = Some(1u16);
            }
            None => device_info_status = Some(2),
        }
    }

    // A wipe acknowledgement.
    let wipe_ack = doc.child(tag::provision::REMOTE_WIPE).or_else(|| doc.child(tag::provision::ACCOUNT_ONLY_REMOTE_WIPE));
    if let Some(ack) = wipe_ack
        && matches!(ctx.device.wipe, WipeState::Requested | WipeState::AccountOnlyRequested)
    {
        let ok = ack.child_text(tag::provision::STATUS).is_some_and(|s| s.trim() == "1");
        if ok {
            ctx.device.wipe = WipeState::Acknowledged;
            ctx.device.wipe_acknowledged_at = Some(now);
            ctx.device.access = crate::state::AccessState::Blocked;
            ctx.device.access_reason = Some("wiped".into());
            ctx.app.state.save_device(&ctx.device).await?;
            ctx.app
                .admin
                .audit(
                    &format!("device:{}", ctx.device.device_id),
                    "device.wipe.acknowledged",
                    &format!("{}/{}", ctx.login(), ctx.device.device_id),
                    "",
                )
                .await?;
            tracing::info!("device acknowledged the remote wipe");
        }
        response.push_text_child(tag::provision::STATUS, status(ProvisionStatus::Success.code()));
        // Answer in the form the device acknowledged, whatever was requested of it.
        response.push(Element::new(ack.tag));
        return Ok(CommandResponse::Wbxml(response));
    }

    // A pending wipe answers every other Provision.
    if matches!(ctx.device.wipe, WipeState::Requested | WipeState::AccountOnlyRequested) {
        ctx.app.state.save_device(&ctx.device).await?;
        response.push_text_child(tag::provision::STATUS, status(ProvisionStatus::Success.code()));
        if ctx.device.wipe == WipeState::AccountOnlyRequested && ctx.version() < ProtocolVersion::V16_1 {
            // The admin asked to remove only the account, which this version cannot express;
            // a full wipe would erase more than was asked. The device stays shut out instead.
            return Err(EasError::DeviceBlocked);
        }
        let account_only = ctx.device.wipe == WipeState::AccountOnlyRequested;
        response.push(Element::new(if account_only { tag::provision::ACCOUNT_ONLY_REMOTE_WIPE } else { tag::provision::REMOTE_WIPE }));
        return Ok(CommandResponse::Wbxml(response));
    }

    let policy_el = doc
        .child(tag::provision::POLICIES)
        .and_then(|p| p.child(tag::provision::POLICY))
        .ok_or_else(|| EasError::Protocol("Provision without Policies/Policy".into()))?;
    let policy_type = policy_el.child_text(tag::provision::POLICY_TYPE).unwrap_or_default();

    response.push_text_child(tag::provision::STATUS, status(ProvisionStatus::Success.code()));
    if let Some(code) = device_info_status {
        response.push(Element::new(tag::settings::DEVICE_INFORMATION).with_text(tag::settings::STATUS, code.to_string()));
    }
    let mut policy_out = Element::new(tag::provision::POLICY).with_text(tag::provision::POLICY_TYPE, policy_type.clone());

    if policy_type.trim() != POLICY_TYPE {
        policy_out.push_text_child(tag::provision::STATUS, status(ProvisionPolicyStatus::UnknownPolicyType.code()));
        response.push(Element::new(tag::provision::POLICIES).with(policy_out));
        return Ok(CommandResponse::Wbxml(response));
    }

    let assigned = ctx.app.admin.policy_for(ctx.login()).await?;
    match policy_el.child_text(tag::provision::POLICY_KEY) {
        None => {
            // Step one: the policy with a temporary key.
            let temporary = new_key();
            ctx.device.pending_policy_key = temporary;
            ctx.app.state.save_device(&ctx.device).await?;
            policy_out.push_text_child(tag::provision::STATUS, status(ProvisionPolicyStatus::Success.code()));
            policy_out.push_text_child(tag::provision::POLICY_KEY, temporary.to_string());
            policy_out.push(Element::new(tag::provision::DATA).with(assigned.settings.provision_doc()));
        }
        Some(key) => {
            // Step two: the acknowledgement of the temporary key earns the final one.
            let acked: Option<u32> = key.trim().parse().ok();
            if acked.is_none() || acked != Some(ctx.device.pending_policy_key) || ctx.device.pending_policy_key == 0 {
                policy_out.push_text_child(tag::provision::STATUS, status(ProvisionPolicyStatus::WrongPolicyKey.code()));
                response.push(Element::new(tag::provision::POLICIES).with(policy_out));
                return Ok(CommandResponse::Wbxml(response));
            }
            // 1: applied; 2: partially; 3: not applied; 4: externally managed.
            let device_status = policy_el.child_text(tag::provision::STATUS).unwrap_or_default();
            let compliant = device_status.trim() == "1" || !assigned.settings.is_restrictive();
            let final_key = new_key();
            ctx.device.policy_key = final_key;
            ctx.device.pending_policy_key = 0;
            ctx.device.policy_name = Some(assigned.name.clone());
            ctx.device.policy_compliant = Some(compliant);
            ctx.app.state.save_device(&ctx.device).await?;
            tracing::info!(policy = %assigned.name, compliant, "device provisioned");
            policy_out.push_text_child(tag::provision::STATUS, status(ProvisionPolicyStatus::Success.code()));
            policy_out.push_text_child(tag::provision::POLICY_KEY, final_key.to_string());
        }
    }
    response.push(Element::new(tag::provision::POLICIES).with(policy_out));
    Ok(CommandResponse::Wbxml(response))
}
