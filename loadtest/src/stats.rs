//! Counters and latency histograms of one process, their wire form (a worker streams them as
//! JSON lines) and merging (the coordinator adds up every worker's).
//!
//! Latencies are recorded in microseconds in HdrHistograms (1 µs to 1 h, 3 significant
//! digits); on the wire a histogram is its standard V2 serialisation in base64, so merging is
//! exact: adding histograms is adding counts per bucket, never averaging percentiles.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

/// Highest latency a histogram holds, in µs (one hour); larger values are clamped.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A new latency histogram (µs).
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Records `us`, clamped into the histogram's range.
pub fn record(h: &mut Histogram<u64>, us: u64) {
    h.saturating_record(us.clamp(1, MAX_LATENCY_US));
}

pub fn encode_hist(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    V2Serializer::new().serialize(h, &mut buf).expect("serialising into memory");
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub fn decode_hist(s: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| format!("histogram is not base64: {e}"))?;
    let h: Histogram<u64> =
        Deserializer::new().deserialize(&mut bytes.as_slice()).map_err(|e| format!("histogram does not decode: {e:?}"))?;
    // Merged histograms must share bounds; copy into a standard one.
    let mut out = new_hist();
    out.add(&h).map_err(|e| format!("histogram out of range: {e:?}"))?;
    Ok(out)
}

/// Adds `from` into `into`, key by key.
pub fn merge_hists(into: &mut BTreeMap<String, Histogram<u64>>, from: &BTreeMap<String, Histogram<u64>>) {
    for (k, h) in from {
        // Same bounds everywhere (new_hist), so add cannot fail; saturate all the same.
        let _ = into.entry(k.clone()).or_insert_with(new_hist).add(h);
    }
}

/// Plain counters of one process (or, merged, of a whole run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Requests sent, by command (`OPTIONS`, `Provision`, `FolderSync`, `Sync`, `Ping`, ...).
    pub requests: BTreeMap<String, u64>,
    /// Errors by kind (`connect`, `timeout:Sync`, `http-503:Ping`, `status-8:Ping`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Ping responses by Status.
    pub ping_status: BTreeMap<String, u64>,
    pub devices_started: u64,
    /// Devices that completed setup at least once.
    pub devices_ready: u64,
    /// Devices that gave up during setup.
    pub devices_failed: u64,
    /// Pings in flight right now (a gauge; merged by adding).
    pub waiting: i64,
    /// TCP (or TLS) connections opened.
    pub connects: u64,
}

impl Counters {
    pub fn merge(&mut self, o: &Counters) {
        for (k, v) in &o.requests {
            *self.requests.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.ping_status {
            *self.ping_status.entry(k.clone()).or_default() += v;
        }
        self.devices_started += o.devices_started;
        self.devices_ready += o.devices_ready;
        self.devices_failed += o.devices_failed;
        self.waiting += o.waiting;
        self.connects += o.connects;
    }

    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Counters and histograms as a worker sends them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WireStats {
    pub counters: Counters,
    /// Histogram name → base64 V2 serialisation.
    pub hists: BTreeMap<String, String>,
}

/// Counters and decoded histograms.
#[derive(Debug, Clone, Default)]
pub struct StatsData {
    pub counters: Counters,
    pub hists: BTreeMap<String, Histogram<u64>>,
}

impl StatsData {
    pub fn from_wire(w: &WireStats) -> Result<StatsData, String> {
        let mut hists = BTreeMap::new();
        for (k, v) in &w.hists {
            hists.insert(k.clone(), decode_hist(v)?);
        }
        Ok(StatsData { counters: w.counters.clone(), hists })
    }

    pub fn to_wire(&self) -> WireStats {
        WireStats { counters: self.counters.clone(), hists: self.hists.iter().map(|(k, h)| (k.clone(), encode_hist(h))).collect() }
    }

    pub fn merge(&mut self, o: &StatsData) {
        self.counters.merge(&o.counters);
        merge_hists(&mut self.hists, &o.hists);
    }
}

/// The live statistics of one process, shared by its device tasks.
#[derive(Default)]
pub struct Stats {
    inner: Mutex<StatsData>,
    waiting: AtomicI64,
}

impl Stats {
    fn with<R>(&self, f: impl FnOnce(&mut StatsData) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A request was sent and answered (or failed) after `us`; `hist` names its latency
    /// histogram (`None` for requests whose duration is not a latency, like a Ping).
    pub fn request(&self, cmd: &str, hist: Option<&str>, us: u64) {
        self.with(|s| {
            *s.counters.requests.entry(cmd.to_string()).or_default() += 1;
            if let Some(h) = hist {
                record(s.hists.entry(h.to_string()).or_insert_with(new_hist), us);
            }
        });
    }

    pub fn latency(&self, hist: &str, us: u64) {
        self.with(|s| record(s.hists.entry(hist.to_string()).or_insert_with(new_hist), us));
    }

    pub fn error(&self, kind: &str) {
        self.with(|s| *s.counters.errors.entry(kind.to_string()).or_default() += 1);
    }

    pub fn ping_status(&self, status: &str) {
        self.with(|s| *s.counters.ping_status.entry(status.to_string()).or_default() += 1);
    }

    pub fn device_started(&self) {
        self.with(|s| s.counters.devices_started += 1);
    }

    pub fn device_ready(&self) {
        self.with(|s| s.counters.devices_ready += 1);
    }

    pub fn device_failed(&self) {
        self.with(|s| s.counters.devices_failed += 1);
    }

    pub fn connected(&self) {
        self.with(|s| s.counters.connects += 1);
    }

    pub fn waiting_add(&self, d: i64) {
        self.waiting.fetch_add(d, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsData {
        let mut s = self.with(|s| s.clone());
        s.counters.waiting = self.waiting.load(Ordering::Relaxed);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_merge_exactly_through_the_wire_form() {
        let (mut a, mut b, mut both) = (new_hist(), new_hist(), new_hist());
        for v in 1..=1000u64 {
            record(&mut a, v * 10);
            record(&mut both, v * 10);
        }
        for v in 1..=100u64 {
            record(&mut b, v * 1000);
            record(&mut both, v * 1000);
        }
        let sa = StatsData { counters: Counters::default(), hists: [("push".to_string(), a)].into() };
        let sb = StatsData { counters: Counters::default(), hists: [("push".to_string(), b)].into() };
        let wire =
            |s: &StatsData| StatsData::from_wire(&serde_json::from_str(&serde_json::to_string(&s.to_wire()).unwrap()).unwrap()).unwrap();
        let mut merged = wire(&sa);
        merged.merge(&wire(&sb));
        let m = &merged.hists["push"];
        assert_eq!(m.len(), 1100);
        for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(m.value_at_quantile(q), both.value_at_quantile(q), "quantile {q}");
        }
        assert_eq!(m.max(), both.max());
        assert_eq!(m.min(), 10);
    }

    #[test]
    fn merging_adds_counters_and_keeps_disjoint_histograms() {
        let mut a = StatsData::default();
        a.counters.requests.insert("Ping".into(), 3);
        a.counters.errors.insert("timeout:Ping".into(), 1);
        a.counters.devices_ready = 2;
        a.counters.waiting = 2;
        let mut h = new_hist();
        record(&mut h, 5);
        a.hists.insert("Sync".into(), h);
        let mut b = StatsData::default();
        b.counters.requests.insert("Ping".into(), 4);
        b.counters.requests.insert("Sync".into(), 1);
        b.counters.devices_ready = 3;
        b.counters.waiting = 1;
        let mut h = new_hist();
        record(&mut h, 7);
        b.hists.insert("FolderSync".into(), h);
        a.merge(&b);
        assert_eq!(a.counters.requests["Ping"], 7);
        assert_eq!(a.counters.requests["Sync"], 1);
        assert_eq!(a.counters.total_requests(), 8);
        assert_eq!(a.counters.total_errors(), 1);
        assert_eq!((a.counters.devices_ready, a.counters.waiting), (5, 3));
        assert_eq!(a.hists.len(), 2);
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut h = new_hist();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert!(h.max() >= MAX_LATENCY_US);
        assert!(decode_hist("not base64!").is_err());
    }

    #[test]
    fn live_stats_snapshot() {
        let s = Stats::default();
        s.request("Sync", Some("Sync"), 1500);
        s.request("Ping", None, 0);
        s.error("connect");
        s.waiting_add(2);
        s.waiting_add(-1);
        let snap = s.snapshot();
        assert_eq!(snap.counters.requests.len(), 2);
        assert_eq!(snap.counters.waiting, 1);
        assert_eq!(snap.hists["Sync"].len(), 1);
        assert!(!snap.hists.contains_key("Ping"));
    }
}
