//! What devices report to the coordinator: in one process through a channel, from a worker
//! process as one JSON object per line on its stdout. Time stamps are [`crate::clock::mono_ns`].

use serde::{Deserialize, Serialize};

use crate::stats::WireStats;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The device finished its setup (Provision, FolderSync, initial Sync) and starts pinging.
    Ready { user: u32, device: u16, t: u64 },
    /// The device gave up during setup.
    Failed { user: u32, device: u16, error: String },
    /// The device received injected message `msg` in a Sync response at `t_seen`; `t_push` is
    /// when the Ping response (Status 2) that led to that Sync arrived, if one did.
    Seen { user: u32, device: u16, msg: u64, t_seen: u64, t_push: Option<u64> },
    /// The process's counters and histograms so far (cumulative).
    Stats { stats: WireStats },
    /// The process has stopped its devices; its last `Stats` came before this.
    Done,
}

impl Event {
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("events serialise")
    }

    pub fn from_line(line: &str) -> Result<Event, String> {
        serde_json::from_str(line).map_err(|e| format!("bad event line from worker: {e}: {}", line.chars().take(120).collect::<String>()))
    }
}

/// Commands the coordinator writes to a worker's stdin after its spec line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Control {
    Stop,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_as_lines() {
        let events = [
            Event::Ready { user: 3, device: 1, t: 42 },
            Event::Failed { user: 3, device: 1, error: "http-401:Provision".into() },
            Event::Seen { user: 1, device: 0, msg: 9, t_seen: 100, t_push: Some(90) },
            Event::Seen { user: 1, device: 0, msg: 9, t_seen: 100, t_push: None },
            Event::Stats { stats: WireStats::default() },
            Event::Done,
        ];
        for e in events {
            let line = e.to_line();
            assert!(!line.contains('\n'));
            assert_eq!(Event::from_line(&line).unwrap(), e);
        }
        assert_eq!(Event::from_line(r#"{"type":"ready","user":1,"device":2,"t":3}"#).unwrap(), Event::Ready { user: 1, device: 2, t: 3 });
        assert!(Event::from_line("garbage").is_err());
        assert_eq!(serde_json::to_string(&Control::Stop).unwrap(), r#"{"cmd":"stop"}"#);
    }
}
