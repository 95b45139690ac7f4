//! The administrator's side: Mobile Sync entitlement, device management (list, remove,
//! wipe, allow/block/quarantine), device policies, usage for billing, the audit log, and
//! the JSON API and CLI client that expose them.
//!
//! Owns administrative decisions and their persistence ([`store`]); the request path only
//! reads them (entitlement, the device's access state, the user's policy). It must not
//! speak ActiveSync: wipes and policy changes take effect through the device record that
//! [`crate::eas`] consults.

pub mod access;
pub mod api;
pub mod client;
pub mod policy;
pub mod store;
pub mod usage;

use crate::app::App;
use crate::metrics::StateLabels;
use crate::state::AccessState;

/// Refreshes the gauges administrators watch: entitled users and devices by access state.
pub async fn usage_metrics(app: &App) {
    if let Ok(list) = app.admin.list_sync_access().await {
        app.metrics.entitled_users.set(list.iter().filter(|u| u.enabled).count() as i64);
    }
    if let Ok(devices) = app.state.list_devices(None).await {
        for state in [AccessState::Allowed, AccessState::Blocked, AccessState::Quarantined] {
            let n = devices.iter().filter(|d| d.access == state).count();
            app.metrics.devices.get_or_create(&StateLabels { state: state.as_str() }).set(n as i64);
        }
    }
}
