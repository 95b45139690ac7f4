//! Usage counting for billing: Sync requests and pushes per user and day, and the devices
//! active that day. Counted in memory on the request path and written every minute (and at
//! shutdown), so counting never costs a disk write per request.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use super::store::{AdminStore, UsageDelta};
use crate::state::StateResult;

#[derive(Default)]
struct Counts {
    syncs: u64,
    pushes: u64,
    devices: BTreeSet<String>,
}

#[derive(Default)]
pub struct UsageRecorder {
    pending: Mutex<HashMap<(String, String), Counts>>,
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

impl UsageRecorder {
    fn with(&self, login: &str, f: impl FnOnce(&mut Counts)) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        f(p.entry((today(), login.to_string())).or_default());
    }

    pub fn record_sync(&self, login: &str, device_id: &str) {
        self.with(login, |c| {
            c.syncs += 1;
            if !c.devices.contains(device_id) {
                c.devices.insert(device_id.to_string());
            }
        });
    }

    pub fn record_push(&self, login: &str) {
        self.with(login, |c| c.pushes += 1);
    }

    /// Writes what was counted since the last flush.
    pub async fn flush(&self, store: &dyn AdminStore) -> StateResult<()> {
        let drained: Vec<UsageDelta> = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.drain()
                .map(|((day, login), c)| UsageDelta {
                    day,
                    login,
                    syncs: c.syncs,
                    pushes: c.pushes,
                    device_ids: c.devices.into_iter().collect(),
                })
                .collect()
        };
        if drained.is_empty() {
            return Ok(());
        }
        store.add_usage(&drained).await
    }
}
