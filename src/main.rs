//! The `pushsync` command: the server, and the tools administrators run against it.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use http::Method;
use serde_json::{Value, json};

use pushsync::admin::client::{AdminClient, encode};
use pushsync::app::App;
use pushsync::config::Config;

#[derive(Parser)]
#[command(name = "pushsync", version, about = "Exchange ActiveSync push gateway")]
struct Cli {
    /// Data directory: store, device state, certificate, runtime files.
    #[arg(long, global = true, default_value = "./pushsync-data", env = "PUSHSYNC_DATA_DIR")]
    data_dir: PathBuf,
    /// Admin API URL (default: found through the data directory).
    #[arg(long, global = true)]
    admin_url: Option<String>,
    /// Admin API token (default: read from the data directory).
    #[arg(long, global = true, env = "PUSHSYNC_ADMIN_TOKEN")]
    admin_token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ServeArgs),
    /// Read or write WBXML (device traffic) as XML.
    #[command(subcommand)]
    Wbxml(WbxmlCommand),
    /// Manage accounts of the embedded store.
    #[command(subcommand)]
    User(UserCommand),
    /// Deliver a message to a user through the running server.
    Deliver {
        /// Recipient (login, address or alias; `user+folder@domain` files into a folder).
        user: String,
        /// RFC 5322 message file (stdin when absent).
        file: Option<PathBuf>,
    },
    /// Back up the data directory (consistent while the server runs).
    Backup {
        /// New directory to write the backup into.
        #[arg(long)]
        to: PathBuf,
    },
    /// Mobile Sync entitlement (the paid add-on).
    #[command(subcommand)]
    Sync(SyncCommand),
    /// Device partnerships: list, remove, wipe, allow, block, quarantine.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Device policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Access rules for new devices.
    #[command(subcommand)]
    Rule(RuleCommand),
    /// Usage report for billing.
    Usage {
        /// Month, `YYYY-MM` (default: this month).
        #[arg(long)]
        month: Option<String>,
        #[arg(long, default_value = "csv", value_parser = ["csv", "json"])]
        format: String,
    },
    /// The audit log of administrative actions.
    Audit {
        /// Only entries at or after this time (seconds since the epoch).
        #[arg(long)]
        since: Option<i64>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file; flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// ActiveSync listener (default 0.0.0.0:8443).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Admin API listener (default 127.0.0.1:8444).
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// `embedded` or `imap://host:port` / `imaps://host:port`.
    #[arg(long)]
    store: Option<String>,
    /// Serve plain HTTP (behind a TLS-terminating proxy).
    #[arg(long)]
    plain_http: bool,
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// LMTP delivery listener (embedded store), e.g. 127.0.0.1:2424.
    #[arg(long)]
    lmtp_listen: Option<SocketAddr>,
    /// Create a demo account (if there are no users yet) with a few messages.
    #[arg(long)]
    demo: bool,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

#[derive(Subcommand)]
enum WbxmlCommand {
    /// WBXML → XML.
    Decode { file: Option<PathBuf> },
    /// XML → WBXML (written to stdout).
    Encode { file: Option<PathBuf> },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user (Mobile Sync enabled unless --no-sync).
    Add {
        name: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
        /// Read the password from stdin (otherwise one is generated and printed).
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        no_sync: bool,
    },
    List,
    /// Set a user's password.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    Remove {
        name: String,
    },
    /// Set a storage quota: bytes, or with K/M/G suffix, or `none`.
    Quota {
        name: String,
        size: String,
    },
    /// Add an address the user receives mail at and may log in with.
    Alias {
        name: String,
        address: String,
    },
    /// Restore deleted messages still in retention.
    Restore {
        name: String,
        /// Only those deleted since this date (YYYY-MM-DD or seconds since the epoch).
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Subcommand)]
enum SyncCommand {
    Enable { user: String },
    Disable { user: String },
    List,
}

#[derive(Subcommand)]
enum DeviceCommand {
    List {
        #[arg(long)]
        user: Option<String>,
    },
    /// Remove the partnership (the device starts over).
    Remove {
        user: String,
        device: String,
    },
    /// Remote-wipe the device (or, with --account-only, only this account: 16.1 devices).
    Wipe {
        user: String,
        device: String,
        #[arg(long)]
        account_only: bool,
    },
    Allow {
        user: String,
        device: String,
    },
    Block {
        user: String,
        device: String,
    },
    Quarantine {
        user: String,
        device: String,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    List,
    /// Create or replace a policy from a JSON file (stdin when absent).
    Set {
        name: String,
        file: Option<PathBuf>,
    },
    Delete {
        name: String,
    },
    /// Make a policy the default.
    Default {
        name: String,
    },
    /// Assign a policy to a user (no name: back to the default).
    Assign {
        user: String,
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum RuleCommand {
    List,
    /// Add a rule: one of --device-type, --model, --user; the access new devices get.
    Add {
        #[arg(long, conflicts_with_all = ["model", "user"])]
        device_type: Option<String>,
        #[arg(long, conflicts_with = "user")]
        model: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long, value_parser = ["allowed", "blocked", "quarantined"])]
        access: String,
    },
    Remove {
        id: i64,
    },
}

fn read_input(file: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    match file {
        Some(f) => std::fs::read(f).with_context(|| format!("cannot read {}", f.display())),
        None => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("cannot read stdin")?;
            Ok(buf)
        }
    }
}

fn read_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if from_stdin {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s).context("cannot read the password from stdin")?;
        let p = s.trim_end_matches(['\r', '\n']).to_string();
        if p.is_empty() {
            bail!("empty password");
        }
        Ok((p, false))
    } else {
        Ok((generate_password(), true))
    }
}

fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..16).map(|_| ALPHABET[rand::random::<u8>() as usize % ALPHABET.len()] as char).collect()
}

fn parse_size(s: &str) -> anyhow::Result<Option<u64>> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("none") || s.eq_ignore_ascii_case("unlimited") {
        return Ok(None);
    }
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (
            &s[..i],
            match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("unknown size suffix {c:?} (use K, M, G, T)"),
            },
        ),
        _ => (s, 1),
    };
    let n: u64 = num.trim().parse().with_context(|| format!("{s:?} is not a size"))?;
    Ok(Some(n.checked_mul(mult).context("size too large")?))
}

fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").with_context(|| format!("{s:?} is not YYYY-MM-DD"))?;
    Ok(d.and_hms_opt(0, 0, 0).context("bad date")?.and_utc().timestamp())
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Blocking threads run database work and password hashing; capping them bounds memory
    // under a login storm (hashing is further limited to one per core).
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().max_blocking_threads(64).build().context("cannot start the runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = || AdminClient::discover(&cli.data_dir, cli.admin_url.as_deref(), cli.admin_token.as_deref());
    match cli.command {
        Command::Serve(args) => serve(cli.data_dir, args).await,
        Command::Wbxml(WbxmlCommand::Decode { file }) => {
            let bytes = read_input(file.as_deref())?;
            let root = pushsync::wbxml::decode(&bytes).context("not valid ActiveSync WBXML")?;
            print!("{}", pushsync::wbxml::to_xml(&root));
            Ok(())
        }
        Command::Wbxml(WbxmlCommand::Encode { file }) => {
            let bytes = read_input(file.as_deref())?;
            let text = String::from_utf8(bytes).context("the XML is not UTF-8")?;
            let root = pushsync::wbxml::from_xml(&text).context("not valid ActiveSync XML")?;
            std::io::stdout().write_all(&pushsync::wbxml::encode(&root))?;
            Ok(())
        }
        Command::User(cmd) => user(client()?, cmd).await,
        Command::Deliver { user, file } => {
            let raw = read_input(file.as_deref())?;
            let c = client()?;
            let body = c.call(Method::POST, &format!("/v1/deliver?to={}", encode(&user)), Some((raw.into(), "message/rfc822"))).await?;
            let v: Value = serde_json::from_slice(&body)?;
            println!(
                "delivered to {} (folder {}, uid {})",
                v["login"].as_str().unwrap_or("?"),
                v["folder"].as_str().unwrap_or("?"),
                v["uid"]
            );
            Ok(())
        }
        Command::Backup { to } => {
            let report = match client() {
                Ok(c) => c.json(Method::POST, "/v1/backup", Some(json!({ "to": to.canonicalize().unwrap_or(to.clone()) }))).await?,
                // No server running: back the files up directly.
                Err(_) => serde_json::to_value(pushsync::backup::backup_data_dir(&cli.data_dir, &to)?)?,
            };
            print_json(&report);
            Ok(())
        }
        Command::Sync(cmd) => {
            let c = client()?;
            let v = match cmd {
                SyncCommand::Enable { user } => {
                    c.json(Method::PUT, &format!("/v1/sync/{}", encode(&user)), Some(json!({ "enabled": true }))).await?
                }
                SyncCommand::Disable { user } => {
                    c.json(Method::PUT, &format!("/v1/sync/{}", encode(&user)), Some(json!({ "enabled": false }))).await?
                }
                SyncCommand::List => c.json(Method::GET, "/v1/sync", None).await?,
            };
            print_json(&v);
            Ok(())
        }
        Command::Device(cmd) => device(client()?, cmd).await,
        Command::Policy(cmd) => policy(client()?, cmd).await,
        Command::Rule(cmd) => {
            let c = client()?;
            let v = match cmd {
                RuleCommand::List => c.json(Method::GET, "/v1/rules", None).await?,
                RuleCommand::Add { device_type, model, user, access } => {
                    let (kind, pattern) = match (device_type, model, user) {
                        (Some(t), _, _) => ("device_type", t),
                        (_, Some(m), _) => ("model", m),
                        (_, _, Some(u)) => ("user", u),
                        _ => bail!("give one of --device-type, --model or --user"),
                    };
                    c.json(Method::POST, "/v1/rules", Some(json!({ "kind": kind, "pattern": pattern, "access": access }))).await?
                }
                RuleCommand::Remove { id } => c.json(Method::DELETE, &format!("/v1/rules/{id}"), None).await?,
            };
            print_json(&v);
            Ok(())
        }
        Command::Usage { month, format } => {
            let month = month.unwrap_or_else(|| chrono::Utc::now().format("%Y-%m").to_string());
            let body = client()?.call(Method::GET, &format!("/v1/usage?month={}&format={}", encode(&month), encode(&format)), None).await?;
            std::io::stdout().write_all(&body)?;
            if format == "json" {
                println!();
            }
            Ok(())
        }
        Command::Audit { since } => {
            let v = client()?.json(Method::GET, &format!("/v1/audit?since={}", since.unwrap_or(0)), None).await?;
            print_json(&v);
            Ok(())
        }
    }
}

async fn user(c: AdminClient, cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add { name, email, display_name, password_stdin, no_sync } => {
            let (password, generated) = read_password(password_stdin)?;
            let v = c
                .json(
                    Method::POST,
                    "/v1/users",
                    Some(json!({ "login": name, "email": email, "display_name": display_name, "password": password, "sync": !no_sync })),
                )
                .await?;
            println!("created {} <{}>", v["user"]["login"].as_str().unwrap_or("?"), v["user"]["email"].as_str().unwrap_or("?"));
            if generated {
                println!("password: {password}");
            }
            println!(
                "Mobile Sync: {}",
                if v["sync_enabled"].as_bool() == Some(true) { "enabled" } else { "not enabled (pushsync sync enable USER)" }
            );
        }
        UserCommand::List => print_json(&c.json(Method::GET, "/v1/users", None).await?),
        UserCommand::Passwd { name, password_stdin } => {
            let (password, generated) = read_password(password_stdin)?;
            c.json(Method::PUT, &format!("/v1/users/{}/password", encode(&name)), Some(json!({ "password": password }))).await?;
            println!("password of {name} changed");
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::Remove { name } => print_json(&c.json(Method::DELETE, &format!("/v1/users/{}", encode(&name)), None).await?),
        UserCommand::Quota { name, size } => {
            let bytes = parse_size(&size)?;
            print_json(&c.json(Method::PUT, &format!("/v1/users/{}/quota", encode(&name)), Some(json!({ "bytes": bytes }))).await?);
        }
        UserCommand::Alias { name, address } => {
            print_json(&c.json(Method::POST, &format!("/v1/users/{}/aliases", encode(&name)), Some(json!({ "address": address }))).await?);
        }
        UserCommand::Restore { name, since } => {
            let since = since.map(|s| parse_since(&s)).transpose()?;
            print_json(&c.json(Method::POST, &format!("/v1/users/{}/restore", encode(&name)), Some(json!({ "since": since }))).await?);
        }
    }
    Ok(())
}

async fn device(c: AdminClient, cmd: DeviceCommand) -> anyhow::Result<()> {
    let path = |u: &str, d: &str| format!("/v1/devices/{}/{}", encode(u), encode(d));
    let v = match cmd {
        DeviceCommand::List { user } => {
            let q = user.map(|u| format!("?user={}", encode(&u))).unwrap_or_default();
            c.json(Method::GET, &format!("/v1/devices{q}"), None).await?
        }
        DeviceCommand::Remove { user, device } => c.json(Method::DELETE, &path(&user, &device), None).await?,
        DeviceCommand::Wipe { user, device, account_only } => {
            c.json(Method::POST, &format!("{}/wipe", path(&user, &device)), Some(json!({ "account_only": account_only }))).await?
        }
        DeviceCommand::Allow { user, device } => {
            c.json(Method::PUT, &format!("{}/access", path(&user, &device)), Some(json!({ "state": "allowed" }))).await?
        }
        DeviceCommand::Block { user, device } => {
            c.json(Method::PUT, &format!("{}/access", path(&user, &device)), Some(json!({ "state": "blocked" }))).await?
        }
        DeviceCommand::Quarantine { user, device } => {
            c.json(Method::PUT, &format!("{}/access", path(&user, &device)), Some(json!({ "state": "quarantined" }))).await?
        }
    };
    print_json(&v);
    Ok(())
}

async fn policy(c: AdminClient, cmd: PolicyCommand) -> anyhow::Result<()> {
    let v = match cmd {
        PolicyCommand::List => c.json(Method::GET, "/v1/policies", None).await?,
        PolicyCommand::Set { name, file } => {
            let raw = read_input(file.as_deref())?;
            let settings: Value = serde_json::from_slice(&raw).context("the policy must be a JSON object")?;
            c.json(Method::PUT, &format!("/v1/policies/{}", encode(&name)), Some(settings)).await?
        }
        PolicyCommand::Delete { name } => c.json(Method::DELETE, &format!("/v1/policies/{}", encode(&name)), None).await?,
        PolicyCommand::Default { name } => c.json(Method::POST, &format!("/v1/policies/{}/default", encode(&name)), None).await?,
        PolicyCommand::Assign { user, name } => {
            c.json(Method::PUT, &format!("/v1/users/{}/policy", encode(&user)), Some(json!({ "policy": name }))).await?
        }
    };
    print_json(&v);
    Ok(())
}

async fn serve(data_dir: PathBuf, args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_json);
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    // Flags override the file; --data-dir always applies.
    config.data_dir = data_dir;
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(l) = args.admin_listen {
        config.admin_listen = l;
    }
    if let Some(s) = args.store {
        config.store = s;
    }
    if args.plain_http {
        config.plain_http = true;
    }
    if let (Some(c), Some(k)) = (args.tls_cert, args.tls_key) {
        config.tls_cert = Some(c);
        config.tls_key = Some(k);
    }
    if let Some(l) = args.lmtp_listen {
        config.lmtp_listen = Some(l);
    }
    let app = App::open(config).await?;
    if let Some(store) = &app.embedded {
        if args.demo {
            pushsync::demo::create_demo_account(&app, store).await?;
        } else if store.list_users().await?.is_empty() {
            tracing::warn!("no users yet: add one with `pushsync user add NAME --email ADDRESS` (same --data-dir), or restart with --demo");
        }
    }
    let server = pushsync::server::start(app).await?;
    let scheme = if server.info.tls { "https" } else { "http" };
    eprintln!(
        "pushsync serving ActiveSync on {scheme}://{}/Microsoft-Server-ActiveSync (admin API on http://{})",
        server.info.listen, server.info.admin_listen
    );
    server.run_until(shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
