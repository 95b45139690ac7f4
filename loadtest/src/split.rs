//! How many client processes a run needs. Each simulated HTTP/1.1 device holds a socket, and
//! a process may open at most `RLIMIT_NOFILE` files (a hard limit of 20,000 on the benchmark
//! machine); past the per-process budget the devices are spread over worker processes, whole
//! users at a time (so every device of a user lives in one process).

use std::ops::Range;

/// Files a process keeps for itself beyond device connections (stdio, runtime, admin and
/// injection connections, /proc reads).
pub const RESERVED_FILES: u64 = 256;

/// Users `users[range]` go to one process; `connections` is what that process will open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub users: Range<usize>,
    pub devices: usize,
    pub connections: usize,
}

/// Connections `devices` devices open: one each over HTTP/1.1, one per `per_conn` over HTTP/2.
pub fn connections_for(devices: usize, per_conn: usize) -> usize {
    devices.div_ceil(per_conn.max(1))
}

/// Spreads `users` users with `devices_per_user` devices each over as few processes as the
/// per-process connection budget allows, as evenly as possible.
pub fn plan(users: usize, devices_per_user: usize, budget: usize, per_conn: usize) -> Result<Vec<Share>, String> {
    if users == 0 || devices_per_user == 0 {
        return Err("nothing to run: no users or no devices".into());
    }
    if budget == 0 {
        return Err("the connection budget per process is zero".into());
    }
    // Most users one process can hold.
    let mut per_process = budget / devices_per_user * per_conn.max(1);
    while per_process > 0 && connections_for(per_process * devices_per_user, per_conn) > budget {
        per_process -= 1;
    }
    while connections_for((per_process + 1) * devices_per_user, per_conn) <= budget && per_process < users {
        per_process += 1;
    }
    if per_process == 0 {
        return Err(format!(
            "one user's {devices_per_user} devices need {} connections, more than the {budget} one process may open",
            connections_for(devices_per_user, per_conn)
        ));
    }
    let processes = users.div_ceil(per_process);
    let (base, extra) = (users / processes, users % processes);
    let mut out = Vec::with_capacity(processes);
    let mut start = 0;
    for i in 0..processes {
        let n = base + usize::from(i < extra);
        let devices = n * devices_per_user;
        out.push(Share { users: start..start + n, devices, connections: connections_for(devices, per_conn) });
        start += n;
    }
    Ok(out)
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns (soft, hard) after.
pub fn raise_nofile_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `lim` is a valid rlimit to write into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: raising the soft limit up to the hard one is always permitted.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        lim = raised;
    }
    // rlim_t is u64 on Linux.
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// The connection budget of one process: what was asked for, within the open-file limit.
pub fn budget(asked: usize, nofile_soft: u64) -> usize {
    let allowed = nofile_soft.saturating_sub(RESERVED_FILES) as usize;
    asked.min(allowed).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users_of(p: &[Share]) -> Vec<usize> {
        p.iter().map(|s| s.users.len()).collect()
    }

    #[test]
    fn small_runs_stay_in_one_process() {
        let p = plan(1000, 10, 15_000, 1).unwrap();
        assert_eq!(p, vec![Share { users: 0..1000, devices: 10_000, connections: 10_000 }]);
        assert_eq!(plan(2, 2, 15_000, 1).unwrap().len(), 1);
    }

    #[test]
    fn large_runs_split_evenly_by_whole_users() {
        // 40,000 phones of 40,000 users at 15,000 per process: 3 processes.
        let p = plan(40_000, 1, 15_000, 1).unwrap();
        assert_eq!(users_of(&p), vec![13_334, 13_333, 13_333]);
        assert_eq!(p.iter().map(|s| s.devices).sum::<usize>(), 40_000);
        assert!(p.iter().all(|s| s.connections <= 15_000));
        assert_eq!(p[0].users, 0..13_334);
        assert_eq!(p[1].users.start, 13_334);
        assert_eq!(p[2].users.end, 40_000);

        // 3 devices per user, budget 10: 3 users (9 devices) per process at most.
        let p = plan(7, 3, 10, 1).unwrap();
        assert_eq!(users_of(&p), vec![3, 2, 2]);
        assert!(p.iter().all(|s| s.connections <= 10));

        // Exactly at the budget: no extra process.
        assert_eq!(plan(15_000, 1, 15_000, 1).unwrap().len(), 1);
        assert_eq!(plan(15_001, 1, 15_000, 1).unwrap().len(), 2);
        // The e2e test's forced split: 2 users x 2 devices, 2 connections per process.
        assert_eq!(users_of(&plan(2, 2, 2, 1).unwrap()), vec![1, 1]);
    }

    #[test]
    fn http2_counts_shared_connections() {
        assert_eq!(connections_for(250, 100), 3);
        assert_eq!(connections_for(250, 1), 250);
        // 100 devices per connection: 40,000 devices need 400 connections: one process.
        assert_eq!(plan(40_000, 1, 15_000, 100).unwrap().len(), 1);
        let p = plan(10, 10, 1, 25).unwrap();
        assert!(p.iter().all(|s| s.connections <= 1));
        assert_eq!(users_of(&p).iter().sum::<usize>(), 10);
    }

    #[test]
    fn impossible_plans_are_refused() {
        assert!(plan(1, 20, 10, 1).is_err());
        assert!(plan(0, 1, 10, 1).is_err());
        assert!(plan(1, 1, 0, 1).is_err());
    }

    #[test]
    fn the_budget_respects_the_file_limit() {
        assert_eq!(budget(15_000, 20_000), 15_000);
        assert_eq!(budget(19_900, 20_000), 20_000 - RESERVED_FILES as usize);
        assert_eq!(budget(100, 1024), 100);
        let (soft, hard) = raise_nofile_limit().unwrap();
        assert_eq!(soft, hard);
    }
}
