//! The devices of one process: started at the ramp rate, reporting through one channel, all
//! stopped together. The coordinator runs a fleet in-process for small runs; a worker
//! process runs one and forwards its events.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::device::{Device, DeviceOpts};
use crate::events::Event;
use crate::stats::Stats;
use crate::transport::{Channel, SharedConn, Target, TargetSpec};
use crate::users::UserCred;

/// How long stopped devices get to close before their tasks are aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetSpec {
    pub target: TargetSpec,
    pub users: Vec<UserCred>,
    pub devices_per_user: u16,
    /// Devices started per second by this process.
    pub ramp_rate: f64,
    pub device: DeviceOpts,
    /// How often the process reports its counters and histograms.
    pub stats_interval_ms: u64,
}

impl FleetSpec {
    pub fn devices(&self) -> usize {
        self.users.len() * self.devices_per_user as usize
    }
}

/// The order devices start in: the first phone of every user, then the second, ... so that
/// the phones of one user do not all arrive in the same instant (each would then verify the
/// password before any of them is cached). Yields (user position, device number).
pub fn ramp_order(users: usize, devices_per_user: u16) -> impl Iterator<Item = (usize, u16)> {
    (0..devices_per_user).flat_map(move |d| (0..users).map(move |u| (u, d)))
}

/// Runs the fleet until `stop`; the last events sent are a final `Stats` and `Done`.
pub async fn run(spec: FleetSpec, events: UnboundedSender<Event>, stop: CancellationToken) -> anyhow::Result<()> {
    let target = Target::resolve(&spec.target).await?;
    let stats = Arc::new(Stats::default());
    let opts = Arc::new(spec.device.clone());
    let per_conn = if spec.target.http2 { spec.target.devices_per_conn.max(1) } else { 1 };
    let shared: Vec<Arc<SharedConn>> =
        if per_conn > 1 { (0..spec.devices().div_ceil(per_conn)).map(|_| SharedConn::new(target.clone())).collect() } else { Vec::new() };

    let reporter = {
        let (stats, events, stop) = (stats.clone(), events.clone(), stop.clone());
        let every = Duration::from_millis(spec.stats_interval_ms.max(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => { let _ = events.send(Event::Stats { stats: stats.snapshot().to_wire() }); }
                    _ = stop.cancelled() => break,
                }
            }
        })
    };

    let mut devices = JoinSet::new();
    let start = tokio::time::Instant::now();
    let rate = if spec.ramp_rate > 0.0 { spec.ramp_rate } else { f64::INFINITY };
    for (i, (u, d)) in ramp_order(spec.users.len(), spec.devices_per_user).enumerate() {
        let user = &spec.users[u];
        let at = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = stop.cancelled() => break,
        }
        let channel = if shared.is_empty() { Channel::own(target.clone()) } else { Channel::shared(shared[i / per_conn].clone()) };
        let device = Device::new(user, d, Device::push_device_id(user.index, d), channel, opts.clone(), stats.clone());
        stats.device_started();
        devices.spawn(device.run(events.clone(), stop.clone()));
    }
    stop.cancelled().await;
    let _ = tokio::time::timeout(STOP_GRACE, async { while devices.join_next().await.is_some() {} }).await;
    devices.abort_all();
    let _ = reporter.await;
    let _ = events.send(Event::Stats { stats: stats.snapshot().to_wire() });
    let _ = events.send(Event::Done);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ramp_starts_one_phone_per_user_first() {
        let order: Vec<_> = ramp_order(3, 2).collect();
        assert_eq!(order, vec![(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]);
        assert_eq!(ramp_order(1000, 10).count(), 10_000);
    }
}
