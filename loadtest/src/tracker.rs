//! Matching what devices saw with what was injected.
//!
//! For every injected message the coordinator knows the user, when the request was sent and
//! when the store acknowledged it. A device reports each injected message it received in a
//! Sync (`t_seen`) and, when that Sync followed a Ping answered with Status 2, when that Ping
//! response arrived (`t_push`). Per message and device:
//!
//! - delivery latency = `t_seen` − origin;
//! - push latency = `t_push` − origin, when the push came after the message was sent (a
//!   message that arrives while the device is already syncing for an earlier one rides along
//!   without a push of its own: counted in `seen_without_push`).
//!
//! The origin is the store's acknowledgement by default (`--origin ack`), or the moment the
//! injection request was sent (`--origin send`). A device can be told before the injector
//! hears the acknowledgement (the server wakes Pings as it commits); such a latency is
//! recorded as 0 and counted in `before_origin`.

use std::collections::{BTreeMap, HashMap, HashSet};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::stats::{new_hist, record};

/// Where latencies are measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The store acknowledged the message (the admin API or LMTP answered, APPEND's OK).
    Ack,
    /// The injection request was sent.
    Send,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Ack => "ack",
            Origin::Send => "send",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Obs {
    device: u16,
    t_seen: u64,
    t_push: Option<u64>,
}

#[derive(Debug, Clone)]
struct MsgRec {
    user: u32,
    send: u64,
    ack: Option<u64>,
    failed: bool,
    /// Devices of the user that were ready when the message was injected.
    expected: HashSet<u16>,
    /// First observation per device.
    seen: Vec<Obs>,
    /// Observations already in the histograms.
    recorded: usize,
}

/// Message and device-delivery counts at the end of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub injected: u64,
    pub acked: u64,
    pub inject_errors: u64,
    /// Sent but neither acknowledged nor failed when the run ended.
    pub unacked: u64,
    /// Seen by at least one device of the user within the miss timeout.
    pub seen: u64,
    /// Seen by no device of the user within the miss timeout ("pushes missed").
    pub missed: u64,
    /// Of the missed: seen, but later than the miss timeout.
    pub seen_late: u64,
    /// (message, device) pairs where the device was ready at injection.
    pub device_expected: u64,
    pub device_seen: u64,
    pub device_missed: u64,
}

pub struct Tracker {
    origin: Origin,
    miss_timeout_ns: u64,
    msgs: HashMap<u64, MsgRec>,
    ready: HashMap<u32, HashSet<u16>>,
    /// Users with at least one ready device, in the order they became ready.
    eligible: Vec<u32>,
    pub failed_devices: u64,
    /// From the origin.
    pub push: Histogram<u64>,
    pub delivery: Histogram<u64>,
    /// The same pairs measured from the moment the injection request was sent.
    pub push_from_send: Histogram<u64>,
    pub delivery_from_send: Histogram<u64>,
    /// Injection request sent → acknowledged.
    pub inject: Histogram<u64>,
    pub before_origin: u64,
    pub seen_without_push: u64,
    /// Reports of messages this run did not inject (should stay 0).
    pub unknown_seen: u64,
    pub duplicate_seen: u64,
    pub inject_errors_by_kind: BTreeMap<String, u64>,
    /// When the last message was acknowledged or failed (ns).
    pub last_settled: u64,
}

fn us(ns: u64) -> u64 {
    ns / 1000
}

impl Tracker {
    pub fn new(origin: Origin, miss_timeout_ns: u64) -> Tracker {
        Tracker {
            origin,
            miss_timeout_ns,
            msgs: HashMap::new(),
            ready: HashMap::new(),
            eligible: Vec::new(),
            failed_devices: 0,
            push: new_hist(),
            delivery: new_hist(),
            push_from_send: new_hist(),
            delivery_from_send: new_hist(),
            inject: new_hist(),
            before_origin: 0,
            seen_without_push: 0,
            unknown_seen: 0,
            duplicate_seen: 0,
            inject_errors_by_kind: BTreeMap::new(),
            last_settled: 0,
        }
    }

    pub fn origin(&self) -> Origin {
        self.origin
    }

    pub fn device_ready(&mut self, user: u32, device: u16) {
        let set = self.ready.entry(user).or_default();
        if set.is_empty() {
            self.eligible.push(user);
        }
        set.insert(device);
    }

    pub fn devices_ready(&self) -> usize {
        self.ready.values().map(HashSet::len).sum()
    }

    /// Users that can receive a message (at least one device ready).
    pub fn eligible_users(&self) -> &[u32] {
        &self.eligible
    }

    pub fn injected(&mut self, seq: u64, user: u32, send: u64) {
        let expected = self.ready.get(&user).cloned().unwrap_or_default();
        self.msgs.insert(seq, MsgRec { user, send, ack: None, failed: false, expected, seen: Vec::new(), recorded: 0 });
    }

    pub fn acked(&mut self, seq: u64, ack: u64) {
        let Some(rec) = self.msgs.get_mut(&seq) else { return };
        rec.ack = Some(ack);
        record(&mut self.inject, us(ack.saturating_sub(rec.send)));
        self.last_settled = self.last_settled.max(ack);
        self.flush(seq);
    }

    pub fn inject_failed(&mut self, seq: u64, kind: &str, at: u64) {
        if let Some(rec) = self.msgs.get_mut(&seq) {
            rec.failed = true;
        }
        self.last_settled = self.last_settled.max(at);
        *self.inject_errors_by_kind.entry(kind.to_string()).or_default() += 1;
    }

    pub fn seen(&mut self, user: u32, device: u16, msg: u64, t_seen: u64, t_push: Option<u64>) {
        let Some(rec) = self.msgs.get_mut(&msg) else {
            self.unknown_seen += 1;
            return;
        };
        if rec.user != user {
            self.unknown_seen += 1;
            return;
        }
        if rec.seen.iter().any(|o| o.device == device) {
            self.duplicate_seen += 1;
            return;
        }
        rec.seen.push(Obs { device, t_seen, t_push });
        self.flush(msg);
    }

    /// Puts the observations of `seq` into the histograms once its origin is known.
    fn flush(&mut self, seq: u64) {
        let Some(rec) = self.msgs.get_mut(&seq) else { return };
        let origin = match self.origin {
            Origin::Ack => match rec.ack {
                Some(a) => a,
                None => return,
            },
            Origin::Send => rec.send,
        };
        for o in &rec.seen[rec.recorded..] {
            if o.t_seen < origin {
                self.before_origin += 1;
            }
            record(&mut self.delivery, us(o.t_seen.saturating_sub(origin)));
            record(&mut self.delivery_from_send, us(o.t_seen.saturating_sub(rec.send)));
            match o.t_push {
                Some(p) if p >= rec.send => {
                    if p < origin {
                        self.before_origin += 1;
                    }
                    record(&mut self.push, us(p.saturating_sub(origin)));
                    record(&mut self.push_from_send, us(p - rec.send));
                }
                _ => self.seen_without_push += 1,
            }
        }
        rec.recorded = rec.seen.len();
    }

    /// True when every message was acknowledged (or failed) and seen by every device that
    /// was ready when it was injected: nothing more to wait for.
    pub fn settled(&self) -> bool {
        self.msgs.values().all(|r| r.failed || (r.ack.is_some() && r.expected.iter().all(|d| r.seen.iter().any(|o| o.device == *d))))
    }

    /// Messages seen by at least one device so far (for progress).
    pub fn seen_count(&self) -> usize {
        self.msgs.values().filter(|r| !r.seen.is_empty()).count()
    }

    pub fn injected_count(&self) -> usize {
        self.msgs.len()
    }

    pub fn acked_count(&self) -> usize {
        self.msgs.values().filter(|r| r.ack.is_some()).count()
    }

    pub fn outcome(&self) -> Outcome {
        let mut o = Outcome { injected: self.msgs.len() as u64, ..Outcome::default() };
        for r in self.msgs.values() {
            if r.failed {
                o.inject_errors += 1;
                continue;
            }
            let Some(ack) = r.ack else {
                o.unacked += 1;
                continue;
            };
            o.acked += 1;
            let deadline = ack.saturating_add(self.miss_timeout_ns);
            let in_time = |ob: &&Obs| ob.t_seen <= deadline;
            if r.seen.iter().any(|ob| in_time(&ob)) {
                o.seen += 1;
            } else {
                o.missed += 1;
                if !r.seen.is_empty() {
                    o.seen_late += 1;
                }
            }
            o.device_expected += r.expected.len() as u64;
            let seen_in_time = r.expected.iter().filter(|d| r.seen.iter().any(|ob| ob.device == **d && in_time(&ob))).count() as u64;
            o.device_seen += seen_in_time;
            o.device_missed += r.expected.len() as u64 - seen_in_time;
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn latencies_are_measured_from_the_acknowledgement() {
        let mut t = Tracker::new(Origin::Ack, 10_000 * MS);
        t.device_ready(0, 0);
        t.device_ready(0, 1);
        assert_eq!(t.eligible_users(), &[0]);
        t.injected(1, 0, 100 * MS);
        // Device 0 is woken before the injector hears the ack; its report waits for the ack.
        t.seen(0, 0, 1, 108 * MS, Some(104 * MS));
        assert_eq!(t.push.len(), 0);
        t.acked(1, 105 * MS);
        assert_eq!(t.inject.value_at_quantile(1.0) / 1000, 5);
        assert_eq!((t.push.len(), t.delivery.len()), (1, 1));
        assert_eq!(t.push.max(), 1, "a push before the ack counts as 0 (clamped to 1 µs)");
        assert_eq!(t.before_origin, 1);
        assert!(!t.settled(), "device 1 has not seen it yet");
        t.seen(0, 1, 1, 115 * MS, Some(110 * MS));
        assert!(t.settled());
        assert_eq!(t.push.max() / 1000, 5);
        assert_eq!(t.delivery.max() / 1000, 10);
        // From the send: 4 and 10 ms (push), 8 and 15 ms (delivery).
        assert_eq!((t.push_from_send.min() / 1000, t.push_from_send.max() / 1000), (4, 10));
        assert_eq!((t.delivery_from_send.min() / 1000, t.delivery_from_send.max() / 1000), (8, 15));
        let o = t.outcome();
        assert_eq!((o.injected, o.acked, o.seen, o.missed, o.device_expected, o.device_seen), (1, 1, 1, 0, 2, 2));
    }

    #[test]
    fn send_origin_and_rides_along() {
        let mut t = Tracker::new(Origin::Send, 10_000 * MS);
        t.device_ready(3, 0);
        t.injected(1, 3, 100 * MS);
        t.injected(2, 3, 103 * MS);
        // One push at 102 ms, the Sync brings both: message 2 was sent after that push.
        t.seen(3, 0, 1, 104 * MS, Some(102 * MS));
        t.seen(3, 0, 2, 104 * MS, Some(102 * MS));
        assert_eq!(t.push.len(), 1);
        assert_eq!(t.delivery.len(), 2);
        assert_eq!(t.seen_without_push, 1);
        assert_eq!(t.push.max() / 1000, 2);
        // Duplicates and strangers are counted, not measured.
        t.seen(3, 0, 2, 200 * MS, None);
        t.seen(3, 0, 99, 200 * MS, None);
        t.seen(4, 0, 1, 200 * MS, None);
        assert_eq!((t.duplicate_seen, t.unknown_seen), (1, 2));
        assert_eq!(t.delivery.len(), 2);
    }

    #[test]
    fn misses_late_arrivals_and_failures() {
        let mut t = Tracker::new(Origin::Ack, 1_000 * MS);
        t.device_ready(0, 0);
        t.device_ready(1, 0);
        t.device_ready(1, 1);
        t.injected(1, 0, 0);
        t.acked(1, MS);
        t.injected(2, 1, 0);
        t.acked(2, MS);
        t.seen(1, 0, 2, 5_000 * MS, Some(4_999 * MS)); // late
        t.injected(3, 1, 0);
        t.acked(3, MS);
        t.seen(1, 1, 3, 10 * MS, Some(9 * MS)); // in time, by one of two devices
        t.injected(4, 0, 0);
        t.inject_failed(4, "http-500", MS);
        t.injected(5, 0, 0); // never acknowledged
        let o = t.outcome();
        assert_eq!(o.injected, 5);
        assert_eq!((o.acked, o.inject_errors, o.unacked), (3, 1, 1));
        assert_eq!((o.seen, o.missed, o.seen_late), (1, 2, 1));
        assert_eq!((o.device_expected, o.device_seen, o.device_missed), (5, 1, 4));
        assert_eq!(t.inject_errors_by_kind["http-500"], 1);
        assert!(!t.settled());
    }

    #[test]
    fn users_without_ready_devices_expect_nothing() {
        let mut t = Tracker::new(Origin::Ack, MS);
        t.injected(1, 7, 0);
        t.acked(1, 1);
        assert!(t.settled());
        let o = t.outcome();
        assert_eq!((o.missed, o.device_expected), (1, 0));
    }
}
