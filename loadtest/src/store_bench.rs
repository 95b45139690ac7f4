//! `store-bench`: the embedded store on its own, without HTTP. Fills one folder with N
//! messages (appends/s and per-append latency, each append a durable commit), then times
//! the delta listings the sync engine runs against a folder that size: the first window of
//! an initial sync, a window deep in the folder, the window of a FilterType, counts, the
//! small delta after a few flag changes or expunges, and a re-open of the store.
//!
//! It opens its own store in a scratch directory (never a live server's data directory: the
//! store has a single writer).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use pushsync::store::embedded::{EmbeddedSettings, EmbeddedStore, NewUser};
use pushsync::store::{FlagChange, Flags, MailStore, Origin, SpecialUse, Uid, folder_with_role};
use serde::{Deserialize, Serialize};

use crate::cli::StoreBenchArgs;
use crate::progress::Progress;
use crate::report::{LatencySummary, fmt_bytes};
use crate::stats::{new_hist, record};

pub const STORE_BENCH_SCHEMA_ID: &str = "pushsync-loadtest/store-bench/v1";

const USER: &str = "bench@store.test";
/// Internal dates are spread over this many days before now, oldest first (UID order).
const SPREAD_DAYS: i64 = 180;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreBenchReport {
    pub schema: String,
    pub tool_version: String,
    pub started_at: String,
    pub messages: u64,
    pub message_bytes: u64,
    pub concurrency: u64,
    /// Filling the folder: Mailbox::append, each its own durable transaction.
    pub append_secs: f64,
    pub appends_per_sec: f64,
    pub append_latency: LatencySummary,
    /// Delivery (address lookup, +detail, quota, index) into the full folder.
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    pub delivery_latency: LatencySummary,
    /// One entry per listing: what it is and how long it took over `repeat` runs.
    pub listings: Vec<Listing>,
    pub store_file_bytes: u64,
    /// This process's resident memory after the listings (the store, its caches, the tool).
    pub process_rss_bytes: Option<u64>,
    pub reopen_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Listing {
    pub name: String,
    /// Rows the listing returned (each run returns the same).
    pub rows: u64,
    pub latency: LatencySummary,
}

pub async fn run(args: StoreBenchArgs) -> anyhow::Result<StoreBenchReport> {
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (dir, _scratch) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            if std::fs::read_dir(d)?.next().is_some() {
                bail!("{} is not empty: store-bench needs a directory of its own", d.display());
            }
            (d.clone(), None)
        }
        None => {
            let t = tempfile_dir()?;
            (t.0.clone(), Some(t))
        }
    };
    let mut progress = Progress::new(args.quiet);
    let store = EmbeddedStore::open(&dir, EmbeddedSettings::default()).map_err(|e| anyhow::anyhow!("cannot open the store: {e}"))?;
    store
        .add_user(NewUser { login: USER.into(), email: None, display_name: None, password: "store-bench-secret".into() })
        .await
        .map_err(|e| anyhow::anyhow!("cannot add the user: {e}"))?;
    let account = store.find_account(USER).await?.context("the user just added is missing")?;
    let mailbox = store.mailbox(&account, Origin::Server).await?;
    let folders = mailbox.folders().await?;
    let inbox = folder_with_role(&folders, SpecialUse::Inbox).context("no Inbox")?.id.clone();
    let archive = mailbox.create_folder(None, "Archive").await?;

    // Fill.
    let n = args.messages;
    let now = chrono::Utc::now().timestamp();
    let step = (SPREAD_DAYS * 86_400) as f64 / n.max(1) as f64;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    progress.phase("append", Some(n));
    let fill_started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let (mailbox, inbox, next, done) = (mailbox.clone(), inbox.clone(), next.clone(), done.clone());
        let size = args.message_bytes as usize;
        tasks.spawn(async move {
            let mut hist = new_hist();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(hist);
                }
                let raw = crate::proto::message_of_size("store", i + 1, USER, size);
                let date = now - (SPREAD_DAYS * 86_400) + (i as f64 * step) as i64;
                let t = Instant::now();
                mailbox.append(&inbox, &raw, Flags::default(), Some(date)).await.map_err(|e| anyhow::anyhow!("append failed: {e}"))?;
                record(&mut hist, t.elapsed().as_micros() as u64);
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    let mut append_hist = new_hist();
    loop {
        tokio::select! {
            r = tasks.join_next() => match r {
                Some(r) => append_hist.add(&r.context("an append task panicked")??).map_err(|e| anyhow::anyhow!("{e}"))?,
                None => break,
            },
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => progress.update(done.load(Ordering::Relaxed), "appending".into()),
        }
    }
    let append_secs = fill_started.elapsed().as_secs_f64();
    progress.finish();

    // Deliveries into the full store, one at a time (what LMTP does per recipient).
    let mut delivery_hist = new_hist();
    let deliveries = args.deliveries;
    let t_deliver = Instant::now();
    for i in 0..deliveries {
        let raw = crate::proto::message_of_size("deliver", i + 1, USER, args.message_bytes as usize);
        let t = Instant::now();
        store.deliver(USER, &raw).await.map_err(|e| anyhow::anyhow!("delivery failed: {e}"))?;
        record(&mut delivery_hist, t.elapsed().as_micros() as u64);
    }
    let deliver_secs = t_deliver.elapsed().as_secs_f64();

    // Listings against the full folder.
    let status = mailbox.status(&inbox).await?;
    let uidnext: Uid = status.uidnext;
    let top = status.highest_modseq;
    let window = args.window;
    let repeat = args.repeat.max(1);
    let mut listings = Vec::new();
    macro_rules! time {
        ($name:expr, $body:expr) => {{
            let mut h = new_hist();
            let mut rows = 0u64;
            for _ in 0..repeat {
                let t = Instant::now();
                rows = $body as u64;
                record(&mut h, t.elapsed().as_micros() as u64);
            }
            listings.push(Listing { name: $name.to_string(), rows, latency: LatencySummary::of(&h) });
        }};
    }
    time!("status (UIDNEXT, HIGHESTMODSEQ, count)", {
        mailbox.status(&inbox).await?;
        1
    });
    time!(format!("initial sync, first window: {window} newest (messages_below UIDNEXT)"), {
        mailbox.messages_below(&inbox, uidnext, None, window).await?.len()
    });
    time!(format!("initial sync, a window in the middle: {window} below UID {}", uidnext / 2), {
        mailbox.messages_below(&inbox, uidnext / 2, None, window).await?.len()
    });
    let two_weeks = now - 14 * 86_400;
    time!(format!("FilterType 2 weeks, first window: {window} newest received since"), {
        mailbox.messages_below(&inbox, uidnext, Some(two_weeks), window).await?.len()
    });
    time!("count of the whole folder", mailbox.count(&inbox, None, None).await?);
    time!("count within FilterType 2 weeks", mailbox.count(&inbox, None, Some(two_weeks)).await?);
    time!(format!("changes since MODSEQ 0, first {window} (a device that predates everything)"), {
        mailbox.changed_since(&inbox, 0, window).await?.len()
    });
    time!("changes since the current HIGHESTMODSEQ (a no-change Sync)", {
        mailbox.changed_since(&inbox, top, window).await?.len() + mailbox.vanished_since(&inbox, top).await?.map_or(0, |v| v.len())
    });
    // A few flag changes scattered over the folder, then the delta a device asks for.
    let scattered: Vec<Uid> = (1..=10u64).map(|k| ((uidnext as u64 * k / 11).max(1)) as Uid).collect();
    mailbox.set_flags(&inbox, &scattered, &FlagChange { add: Flags::SEEN, ..FlagChange::default() }).await?;
    time!("delta after 10 flag changes (changed_since)", mailbox.changed_since(&inbox, top, window).await?.len());
    let expunged: Vec<Uid> = scattered.iter().map(|u| u + 1).collect();
    mailbox.expunge(&inbox, &expunged).await?;
    time!("delta after 10 expunges (vanished_since)", mailbox.vanished_since(&inbox, top).await?.map_or(0, |v| v.len()));
    let states: Vec<Uid> = (0..window as u32).map(|k| 1 + k * (uidnext / window as u32).max(1)).collect();
    time!(format!("states of {window} scattered UIDs (message_states)"), mailbox.message_states(&inbox, &states).await?.len());
    time!("every UID of the folder (all_uids, for reconciling an old device)", mailbox.all_uids(&inbox).await?.len());
    time!("fetch one message", {
        mailbox.fetch(&inbox, uidnext / 3).await?;
        1
    });
    time!("search: full text, the subject of one message", {
        let q = pushsync::store::SearchQuery {
            folders: vec![inbox.clone()],
            text: Some(format!("store#{}", n / 2)),
            limit: 100,
            ..Default::default()
        };
        mailbox.search(&q).await?.len()
    });
    time!(format!("move {window} messages to another folder and back"), {
        let uids: Vec<Uid> = mailbox.messages_below(&inbox, uidnext, None, window).await?.iter().map(|m| m.uid).collect();
        let moved = mailbox.move_messages(&inbox, &uids, &archive).await?;
        let back: Vec<Uid> = moved.iter().map(|(_, new)| *new).collect();
        mailbox.move_messages(&archive, &back, &inbox).await?.len()
    });

    let process_rss_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map(|kb| kb * 1024);
    drop(mailbox);
    store.close_feeds();
    drop(store);
    let store_file_bytes = ["store.db", "store.db-wal"].iter().filter_map(|f| std::fs::metadata(dir.join(f)).ok()).map(|m| m.len()).sum();
    let t = Instant::now();
    let reopened = EmbeddedStore::open(&dir, EmbeddedSettings::default()).map_err(|e| anyhow::anyhow!("cannot reopen the store: {e}"))?;
    let account = reopened.find_account(USER).await?.context("the user is gone after reopening")?;
    let check = reopened.mailbox(&account, Origin::Server).await?.status(&inbox).await?;
    let reopen_ms = t.elapsed().as_secs_f64() * 1e3;
    let expected = n + deliveries - expunged.len() as u64;
    if u64::from(check.messages) != expected {
        bail!("after reopening the Inbox holds {} messages, expected {expected}", check.messages);
    }

    let report = StoreBenchReport {
        schema: STORE_BENCH_SCHEMA_ID.into(),
        tool_version: env!("CARGO_PKG_VERSION").into(),
        started_at,
        messages: n,
        message_bytes: args.message_bytes,
        concurrency: args.concurrency.max(1) as u64,
        append_secs,
        appends_per_sec: n as f64 / append_secs.max(1e-9),
        append_latency: LatencySummary::of(&append_hist),
        deliveries,
        deliveries_per_sec: deliveries as f64 / deliver_secs.max(1e-9),
        delivery_latency: LatencySummary::of(&delivery_hist),
        listings,
        store_file_bytes,
        process_rss_bytes,
        reopen_ms,
    };
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n").with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(report)
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> anyhow::Result<Scratch> {
    let base = std::env::temp_dir().join(format!("pushsync-store-bench-{}-{}", std::process::id(), chrono::Utc::now().timestamp_millis()));
    std::fs::create_dir_all(&base).with_context(|| format!("cannot create {}", base.display()))?;
    Ok(Scratch(base))
}

/// The summary printed at the end.
pub fn summary(r: &StoreBenchReport) -> String {
    let row = |name: &str, rows: Option<u64>, l: &LatencySummary| {
        format!(
            "  {:<72} {:>7} {:>9.3} {:>9.3} {:>9.3}\n",
            name,
            rows.map(|n| n.to_string()).unwrap_or_default(),
            l.p50_ms,
            l.p99_ms,
            l.max_ms
        )
    };
    let mut out = format!(
        "\npushsync-loadtest store-bench: {} messages of {} into one folder, {} appending at once\n\n  {:<72} {:>7} {:>9} {:>9} {:>9}\n",
        r.messages,
        fmt_bytes(r.message_bytes as f64),
        r.concurrency,
        "",
        "rows",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    out.push_str(&row(&format!("append ({:.0}/s)", r.appends_per_sec), None, &r.append_latency));
    out.push_str(&row(&format!("delivery into the full folder ({:.0}/s)", r.deliveries_per_sec), None, &r.delivery_latency));
    for l in &r.listings {
        out.push_str(&row(&l.name, Some(l.rows), &l.latency));
    }
    out.push_str(&format!(
        "\n  filled in {:.1} s; store file {}; process RSS {}; re-open {:.1} ms\n",
        r.append_secs,
        fmt_bytes(r.store_file_bytes as f64),
        r.process_rss_bytes.map(|b| fmt_bytes(b as f64)).unwrap_or_else(|| "-".into()),
        r.reopen_ms
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_small_bench_lists_what_it_appended() {
        let dir = tempfile::tempdir().unwrap();
        let args = StoreBenchArgs {
            dir: Some(dir.path().join("s")),
            messages: 300,
            message_bytes: 600,
            concurrency: 2,
            deliveries: 5,
            window: 50,
            repeat: 2,
            report: None,
            quiet: true,
        };
        let r = run(args).await.unwrap();
        assert_eq!(r.append_latency.count, 300);
        assert_eq!(r.delivery_latency.count, 5);
        let rows = |prefix: &str| r.listings.iter().find(|l| l.name.starts_with(prefix)).map(|l| l.rows);
        assert_eq!(rows("initial sync, first window"), Some(50));
        assert_eq!(rows("count of the whole folder"), Some(305));
        assert_eq!(rows("changes since the current"), Some(0));
        assert_eq!(rows("delta after 10 flag changes"), Some(10));
        assert_eq!(rows("delta after 10 expunges"), Some(10));
        assert_eq!(rows("search: full text"), Some(1));
        assert!(summary(&r).contains("append ("));
    }
}
