//! pushsync-loadtest: simulated phones that speak ActiveSync to a pushsync server, and the
//! push-latency benchmark built on them.
//!
//! Map of the components (a measurement flows top to bottom):
//!
//! - [`cli`]: the command line (`pushsync-loadtest`, `sync-bench`, the hidden `worker`).
//! - [`users`]: test accounts, created through the admin API or read from a users file.
//! - [`split`]: how many client processes a run needs (open-file budget), and `RLIMIT_NOFILE`.
//! - [`fleet`]: starts devices at the ramp rate in one process; [`worker`] runs a fleet in a
//!   child process and streams its [`events`] back as JSON lines.
//! - [`device`]: one simulated phone (OPTIONS, Provision, FolderSync, Sync, Ping loop) over
//!   [`transport`] (HTTP/1.1 one connection per device, or shared HTTP/2, plain or TLS),
//!   building and reading requests with [`proto`] on top of `pushsync::wbxml`.
//! - [`inject`]: puts messages into the store (admin API, LMTP, IMAP APPEND).
//! - [`tracker`]: matches what devices saw with what was injected: push and delivery latency,
//!   misses.
//! - [`stats`]: counters and HdrHistograms, their wire form and merging.
//! - [`probe`]: the server's RSS and CPU time from `/proc`.
//! - [`run`]: the push benchmark, start to report; [`sync_bench`]: initial sync of a large folder;
//!   [`sync_rps`]: the cost of a no-change Sync; [`store_bench`]: the embedded store alone.
//! - [`report`], [`plot`]: the JSON report (schema in `report.schema.json`), the summary table,
//!   the latency CDF as SVG.
//!
//! Time stamps that cross process boundaries are `CLOCK_MONOTONIC` nanoseconds ([`clock`]),
//! which every process on the machine shares.

pub mod admin;
pub mod cli;
pub mod clock;
pub mod device;
pub mod events;
pub mod fleet;
pub mod inject;
pub mod plot;
pub mod probe;
pub mod progress;
pub mod proto;
pub mod report;
pub mod run;
pub mod split;
pub mod stats;
pub mod store_bench;
pub mod sync_bench;
pub mod sync_rps;
pub mod tracker;
pub mod transport;
pub mod users;
pub mod worker;
