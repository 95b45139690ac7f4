//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::clock::parse_duration;
use crate::inject::InjectKind;
use crate::tracker::Origin;

const EXAMPLES: &str = "\
Examples (a server started with `pushsync serve --plain-http --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir /tmp/ps`):

  # 100 users with 2 phones each, 200 messages at 20/s, report and plot
  pushsync-loadtest --data-dir /tmp/ps --users 100 --devices-per-user 2 \\
      --messages 200 --rate 20 --report push.json --plot push.svg

  # the same, with the server's memory and CPU sampled
  pushsync-loadtest --data-dir /tmp/ps --users 100 --server-pid auto

  # initial sync of a 10,000-message Inbox by 4 phones at once, windows of 512
  pushsync-loadtest sync-bench --data-dir /tmp/ps --seed 10000 --devices 4 --window 512

  # no-change Syncs by 8 phones over HTTPS keep-alive (a server started without --plain-http)
  pushsync-loadtest sync-rps --data-dir /tmp/ps --insecure --devices 8 --duration 20s --server-pid auto

  # the embedded store alone: 100,000 appends, then delta listings on that folder
  pushsync-loadtest store-bench --messages 100000

Latencies are measured from the store's acknowledgement of each message (--origin ack) unless
--origin send is given; the report says which.";

#[derive(Parser, Debug)]
#[command(
    name = "pushsync-loadtest",
    version,
    about = "Push-latency benchmark for pushsync: simulated phones wait in Ping while messages are injected",
    args_conflicts_with_subcommands = true,
    after_help = EXAMPLES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Initial sync of a large Inbox by several devices at once: items/s, per-window latency.
    SyncBench(Box<SyncBenchArgs>),
    /// No-change Syncs back to back by K fully synced devices: requests/s and server CPU per request.
    SyncRps(Box<SyncRpsArgs>),
    /// The embedded store on its own (no server): appends/s and delta listings on a large folder.
    StoreBench(Box<StoreBenchArgs>),
    /// Print the JSON Schema of a report.
    Schema {
        #[arg(value_enum, default_value = "run")]
        which: SchemaKind,
    },
    /// Internal: run the devices the coordinator hands over on stdin.
    #[command(hide = true)]
    Worker,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaKind {
    Run,
    SyncBench,
}

/// Where the server is and how to talk to it.
#[derive(Args, Clone, Debug)]
pub struct ServerArgs {
    /// ActiveSync base URL, e.g. http://127.0.0.1:8443 (default: from --data-dir).
    #[arg(long)]
    pub url: Option<String>,
    /// Data directory of the running server: its addresses (server.json) and admin token.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Admin API URL (default: from --data-dir).
    #[arg(long)]
    pub admin_url: Option<String>,
    /// Admin API token (default: from --data-dir).
    #[arg(long, env = "PUSHSYNC_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Accept any TLS certificate (the self-signed one of a test server).
    #[arg(long)]
    pub insecure: bool,
    /// PEM certificate to trust for HTTPS.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// HTTP/2: several devices share one connection (h2c on plain HTTP, ALPN on TLS).
    #[arg(long)]
    pub http2: bool,
    /// With --http2, devices per connection.
    #[arg(long, default_value_t = 100)]
    pub devices_per_conn: usize,
    /// Password of the test users (generated users are created with it).
    #[arg(long, default_value = "loadtest-secret-1")]
    pub password: String,
    /// MS-ASProtocolVersion the devices speak.
    #[arg(long, default_value = "16.1")]
    pub protocol_version: String,
    /// Time limit of a request other than Ping (a Ping gets its heartbeat plus 120 s).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Sample the server's RSS and CPU time (/proc) during the run: its PID, or `auto` for
    /// the PID in --data-dir's server.json.
    #[arg(long)]
    pub server_pid: Option<String>,
    /// Write the JSON report here (schema: `pushsync-loadtest schema`).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// BodyPreference Type of the Syncs (1 plain text, 2 HTML, 4 MIME).
    #[arg(long, default_value_t = 1)]
    pub body_type: u8,
    /// BodyPreference TruncationSize of the Syncs.
    #[arg(long, default_value_t = 5120)]
    pub truncation: u32,
    /// Domain of the test users' addresses.
    #[arg(long, default_value = "loadtest.test")]
    pub mail_domain: String,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

/// The push benchmark.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// Number of test users (default 10; with --users-file, at most this many of the file).
    #[arg(long)]
    pub users: Option<usize>,
    /// Devices per user.
    #[arg(long, default_value_t = 1)]
    pub devices_per_user: u16,
    /// Users of an external store: `login:password` per line (no accounts are created).
    #[arg(long)]
    pub users_file: Option<PathBuf>,
    /// Prefix of the generated user names (`lt-user-00001`, ...).
    #[arg(long, default_value = "lt-user-")]
    pub user_prefix: String,
    /// Do not create or check users: they exist already with --password.
    #[arg(long)]
    pub no_create: bool,
    /// Users created at once (each costs the server an argon2 hash).
    #[arg(long, default_value_t = 2)]
    pub create_concurrency: usize,
    /// Ping HeartbeatInterval (the server's bounds apply: a Status 5 answer is followed).
    #[arg(long, default_value = "900s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// Devices started per second.
    #[arg(long, default_value_t = 100.0)]
    pub ramp_rate: f64,
    /// Longest wait for every device to be ready.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub ramp_timeout: Duration,
    /// Setup attempts in a row before a device gives up.
    #[arg(long, default_value_t = 5)]
    pub max_setup_attempts: u32,
    /// Connections one client process may hold; more devices are spread over worker processes.
    #[arg(long, default_value_t = 15_000)]
    pub max_conns_per_worker: usize,
    /// Wait after the ramp before measuring the server's waiting footprint.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Messages injected per second (into random users with a ready device).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Stop injecting after this many messages.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Longest injection phase (the run also ends after --messages).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// A message no device of its user saw this long after its acknowledgement is missed.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub miss_timeout: Duration,
    /// How messages are injected.
    #[arg(long, value_enum, default_value = "admin")]
    pub inject: InjectKind,
    /// LMTP address for --inject lmtp (default: the server's LMTP listener from --data-dir).
    #[arg(long)]
    pub lmtp: Option<SocketAddr>,
    /// IMAP address for --inject imap.
    #[arg(long)]
    pub imap: Option<SocketAddr>,
    /// Injection requests in flight at most.
    #[arg(long, default_value_t = 32)]
    pub inject_concurrency: usize,
    /// What latencies are measured from: the store's acknowledgement, or the injection request.
    #[arg(long, value_enum, default_value = "ack")]
    pub origin: Origin,
    /// WindowSize of the devices' Syncs.
    #[arg(long, default_value_t = 100)]
    pub window: usize,
    /// Write the latency CDF here (SVG).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

#[derive(Args, Clone, Debug)]
pub struct SyncBenchArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The user whose Inbox is synced (created if missing).
    #[arg(long, default_value = "lt-sync-00001")]
    pub user: String,
    /// Devices syncing at once.
    #[arg(long, default_value_t = 4)]
    pub devices: usize,
    /// WindowSize.
    #[arg(long, default_value_t = 512)]
    pub window: usize,
    /// Make sure the Inbox holds at least this many messages first (delivered via the admin API).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Deliveries in flight while seeding.
    #[arg(long, default_value_t = 8)]
    pub seed_concurrency: usize,
    /// Longest the whole benchmark may take.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Clone, Debug)]
pub struct SyncRpsArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    /// The user whose devices poll (created if missing).
    #[arg(long, default_value = "lt-rps-00001")]
    pub user: String,
    /// Devices polling at once, each on its own keep-alive connection.
    #[arg(long, default_value_t = 8)]
    pub devices: usize,
    /// Polling before the measurement starts.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// How long the measurement lasts.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,
}

#[derive(Args, Clone, Debug)]
pub struct StoreBenchArgs {
    /// An empty directory for the store (default: a scratch directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Messages appended to the folder.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Size of each message.
    #[arg(long, default_value_t = 2048)]
    pub message_bytes: u64,
    /// Appends in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Deliveries (one at a time) into the full folder after the fill.
    #[arg(long, default_value_t = 1000)]
    pub deliveries: u64,
    /// Rows per listing window (a Sync WindowSize).
    #[arg(long, default_value_t = 512)]
    pub window: usize,
    /// Runs of each listing.
    #[arg(long, default_value_t = 50)]
    pub repeat: usize,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["pushsync-loadtest", "--users", "5", "--devices-per-user", "2", "--heartbeat", "15m", "--messages", "10"])
                .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.run.users, Some(5));
        assert_eq!(cli.run.heartbeat, Duration::from_secs(900));
        assert_eq!(cli.run.max_conns_per_worker, 15_000);
        let cli = Cli::try_parse_from(["pushsync-loadtest", "sync-bench", "--seed", "100", "--devices", "2"]).unwrap();
        match cli.command {
            Some(Command::SyncBench(a)) => assert_eq!((a.seed, a.devices, a.window), (Some(100), 2, 512)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(Cli::try_parse_from(["pushsync-loadtest", "worker"]).unwrap().command, Some(Command::Worker)));
        match Cli::try_parse_from(["pushsync-loadtest", "sync-rps", "--devices", "3", "--duration", "5s"]).unwrap().command {
            Some(Command::SyncRps(a)) => assert_eq!((a.devices, a.duration, a.warmup), (3, Duration::from_secs(5), Duration::from_secs(3))),
            other => panic!("{other:?}"),
        }
        match Cli::try_parse_from(["pushsync-loadtest", "store-bench", "--messages", "1000"]).unwrap().command {
            Some(Command::StoreBench(a)) => assert_eq!((a.messages, a.window, a.dir), (1000, 512, None)),
            other => panic!("{other:?}"),
        }
    }
}
