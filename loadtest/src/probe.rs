//! The server's footprint from `/proc/PID`: resident memory (`status`: VmRSS, VmHWM,
//! Threads), CPU time (`stat`: utime + stime) and open files (`fd/`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    /// Seconds since the run started.
    pub t: f64,
    pub rss_bytes: u64,
    /// Peak RSS so far (VmHWM).
    pub hwm_bytes: u64,
    /// User + system CPU time of the whole process, seconds.
    pub cpu_secs: f64,
    pub threads: u64,
}

/// Parses the `kB` value of a `/proc/PID/status` field, in bytes.
pub fn status_field(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        let mut parts = rest.split_whitespace();
        let n: u64 = parts.next()?.parse().ok()?;
        Some(match parts.next() {
            Some("kB") => n * 1024,
            _ => n,
        })
    })
}

/// utime + stime in clock ticks, from `/proc/PID/stat` (fields 14 and 15; the command name
/// in parentheses may contain spaces, so fields are counted after the last `)`).
pub fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

pub struct Probe {
    pid: u32,
    dir: PathBuf,
    started: Instant,
    ticks: f64,
}

impl Probe {
    pub fn new(pid: u32, started: Instant) -> anyhow::Result<Probe> {
        let p = Probe { pid, dir: PathBuf::from(format!("/proc/{pid}")), started, ticks: clock_ticks() };
        p.sample().map_err(|e| anyhow::anyhow!("cannot read /proc/{pid} (is --server-pid right?): {e}"))?;
        Ok(p)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn sample(&self) -> std::io::Result<ProcSample> {
        let status = std::fs::read_to_string(self.dir.join("status"))?;
        let stat = std::fs::read_to_string(self.dir.join("stat"))?;
        let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("no {what} in /proc/{}", self.pid));
        Ok(ProcSample {
            t: self.started.elapsed().as_secs_f64(),
            rss_bytes: status_field(&status, "VmRSS").ok_or_else(|| bad("VmRSS"))?,
            hwm_bytes: status_field(&status, "VmHWM").unwrap_or(0),
            cpu_secs: stat_cpu_ticks(&stat).ok_or_else(|| bad("CPU times"))? as f64 / self.ticks,
            threads: status_field(&status, "Threads").unwrap_or(0),
        })
    }

    /// Open file descriptors (a slow read with many connections: call it rarely).
    pub fn open_files(&self) -> Option<u64> {
        std::fs::read_dir(self.dir.join("fd")).ok().map(|d| d.count() as u64)
    }
}

/// Samples every `every` into a shared series until `stop`.
pub fn spawn_sampler(probe: Arc<Probe>, every: Duration, stop: CancellationToken) -> Arc<Mutex<Vec<ProcSample>>> {
    let series = Arc::new(Mutex::new(Vec::new()));
    let out = series.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.cancelled() => break,
            }
            match probe.sample() {
                Ok(s) => series.lock().unwrap_or_else(|p| p.into_inner()).push(s),
                Err(_) => break, // the server exited
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let status = "Name:\tpushsync\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t5\n";
        assert_eq!(status_field(status, "VmRSS"), Some(100 * 1024 * 1024));
        assert_eq!(status_field(status, "VmHWM"), Some(200 * 1024 * 1024));
        assert_eq!(status_field(status, "Threads"), Some(5));
        assert_eq!(status_field(status, "VmSwap"), None);
        let stat = "1234 (tokio (worker) 1) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 5 0 100 1000 200 18446744073709551615";
        assert_eq!(stat_cpu_ticks(stat), Some(300));
    }

    #[test]
    fn this_process_can_be_probed() {
        let p = Probe::new(std::process::id(), Instant::now()).unwrap();
        let s = p.sample().unwrap();
        assert!(s.rss_bytes > 0 && s.threads >= 1);
        assert!(p.open_files().unwrap() >= 3);
    }
}
