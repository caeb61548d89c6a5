//! The command line (SPEC §6). Every serve option is also read from the environment
//! (`CLORO_*`, and `DATABASE_URL`), and from `--config FILE` (TOML: `name = value` lines using
//! the long option names; command-line flags win over the file, the file over the environment,
//! for `false` too: see [`expand_config_file`]).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::engines::LatencyRange;

/// The default embedded database.
pub(crate) const DEFAULT_DB: &str = "./cloro-data/cloro.db";

/// The commands the library serves. The binary adds `bench` (`src/bench/`, which is not part
/// of the library) and the top-level `--help`/`--version` (`src/main.rs`).
#[derive(Debug, Subcommand)]
pub enum Command {
    // Boxed: the other commands' arguments are small.
    /// Run the API and the workers.
    Serve(Box<ServeArgs>),
    /// Manage organizations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// The node's and each organization's queue numbers, read from the database.
    Status(StatusArgs),
    /// Read tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Show and check the engines file (SPEC §5): which engine runs each task type.
    #[command(subcommand)]
    Engines(EnginesCommand),
    /// Stream a JSONL file of tasks to a server through the batch endpoint (resumable: re-run
    /// the same file after an interruption; what was accepted is not submitted twice).
    Submit(SubmitArgs),
}

/// `cloro submit` (`src/submit.rs`). Exit code 0: every line accepted (or accepted before);
/// 1: some lines failed (listed in the failures file), or the run could not go on.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    /// The JSONL file: one task per line, as the items of `POST /v1/async/task/batch`
    /// (`taskType`, `payload`, optional `priority`, `idempotencyKey`, `webhook`). Blank lines
    /// are skipped.
    #[arg(long)]
    pub file: PathBuf,
    /// The server's base URL (e.g. `http://127.0.0.1:8080`).
    #[arg(long, env = "CLORO_URL")]
    pub url: String,
    /// The API key (`sk_live_...`).
    #[arg(long, env = "CLORO_API_KEY", hide_env_values = true)]
    pub key: String,
    /// Tasks per request.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=500))]
    pub batch_size: u32,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub concurrency: u32,
    /// Where the failed lines go, one JSON object each (`line`, `error`, `input`); default
    /// `<file>.failures.jsonl`.
    #[arg(long)]
    pub failures: Option<PathBuf>,
    /// The start of the idempotency key derived for a line without its own
    /// (`<prefix>-<hash of the line's content>-<line number>`); change it to submit the same
    /// file again as new tasks.
    #[arg(long, default_value = "submit", value_parser = parse_key_prefix)]
    pub key_prefix: String,
    /// Attempts of a request answered 5xx or lost (transport error) before its lines count as
    /// failed. 429s are retried without limit (after `Retry-After`).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub attempts: u32,
    /// Print the summary as one JSON object (`submitted`, `already`, `failed`,
    /// `failuresFile`); no progress bar.
    #[arg(long)]
    pub json: bool,
}

fn parse_key_prefix(s: &str) -> Result<String, String> {
    if s.is_empty() || s.chars().count() > 100 || s.contains('\0') {
        return Err("the prefix must be 1 to 100 characters, without NUL".into());
    }
    Ok(s.to_owned())
}

/// `cloro engines list|check` (exit code 0: all fine; 1: a check failed; 2: a bad file).
#[derive(Debug, Subcommand)]
pub enum EnginesCommand {
    /// One row per task type: its engine, kind, model, base URL, limits and health (as the
    /// servers on the database last recorded it).
    List(EnginesListArgs),
    /// One cheap real call per configured engine, all at once; exit code 0 only if all pass.
    Check(EnginesArgs),
}

#[derive(Debug, Clone, Args)]
pub struct EnginesArgs {
    /// The engines file (TOML); without one every task type runs on the simulator.
    #[arg(long, env = "CLORO_ENGINES")]
    pub engines: Option<PathBuf>,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct EnginesListArgs {
    #[command(flatten)]
    pub engines: EnginesArgs,
    /// Where the servers record engine health (`--database`/`DATABASE_URL`, else the default
    /// embedded database if that file exists); it is only read, never created or migrated.
    #[command(flatten)]
    pub db: DbArgs,
}

/// `cloro status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Only this organization (its public id).
    #[arg(long)]
    pub org: Option<String>,
    #[command(flatten)]
    pub out: OutArgs,
    #[command(flatten)]
    pub db: DbArgs,
}

/// `cloro task …`.
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// One task as `GET /v1/async/task/{taskId}` shows it (`--json`: the same body).
    Get {
        task_id: String,
        /// The organization that owns it (its public id).
        #[arg(long)]
        org: String,
        #[command(flatten)]
        out: OutArgs,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// How the read-only administrative commands print (human tables by default).
#[derive(Debug, Clone, Args)]
pub struct OutArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// `sqlite://PATH`, `sqlite:///abs/path.db`, a plain file path, or `postgres://...`.
    #[arg(long, env = "DATABASE_URL")]
    pub database: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "CLORO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub db: DbArgs,
    /// The engines file (TOML, SPEC §5): which engine runs each task type; task types it does
    /// not list, and all of them without a file, run on the simulator.
    #[arg(long, env = "CLORO_ENGINES")]
    pub engines: Option<PathBuf>,
    /// A TOML file of `name = value` lines with the options below (e.g. `workers = 64`).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Simulated engine latency in ms: `N` or `MIN..MAX`.
    #[arg(long, env = "CLORO_SIM_LATENCY_MS", default_value = "0")]
    pub sim_latency_ms: LatencyRange,
    /// Share of simulated attempts that fail (retryable), 0 to 1.
    #[arg(long, env = "CLORO_SIM_FAILURE_RATE", default_value_t = 0.0, value_parser = parse_rate)]
    pub sim_failure_rate: f64,
    /// Tasks this node runs at once, over all organizations. A worker is a place for a task
    /// waiting on its engine (no thread): the default 20000 keeps 20,000 calls of a slow engine
    /// in flight, and drains 0 ms tasks about twice as fast as 256 did (docs/PERFORMANCE.md,
    /// "Many in flight"); lower it only to cap this node's share of the load.
    #[arg(long, env = "CLORO_WORKERS", default_value_t = crate::queue::DEFAULT_WORKERS, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub workers: u32,
    /// Mean backoff before the second attempt; doubles for each further attempt. Each delay is
    /// drawn from 0.5 to 1.5 times its mean, so tasks that failed together are spread out.
    #[arg(long, env = "CLORO_RETRY_BASE_MS", default_value_t = 1_000)]
    pub retry_base_ms: u64,
    /// Delay before a webhook's second delivery attempt; doubles for each further attempt
    /// (5 attempts: about 2, 4, 8 and 16 minutes apart by default).
    #[arg(long, env = "CLORO_WEBHOOK_RETRY_BASE_MS", default_value_t = 120_000)]
    pub webhook_retry_base_ms: u64,
    /// Time limit of one webhook delivery attempt (tests).
    #[arg(long, env = "CLORO_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000, hide = true, value_parser = clap::value_parser!(u64).range(10..))]
    pub webhook_timeout_ms: u64,
    /// Let webhooks reach loopback and private addresses (refused by default; the bare flag
    /// means `=true`).
    // An optional value, not a bare switch: a `--config` file's `false` is passed on as
    // `--allow-private-webhooks=false`, and only a flag overrides the environment.
    #[arg(long, env = "CLORO_ALLOW_PRIVATE_WEBHOOKS", value_name = "BOOL",
          action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value_t = false)]
    pub allow_private_webhooks: bool,
    /// How long finished tasks are kept, in seconds.
    #[arg(long, env = "CLORO_RETENTION_SECS", default_value_t = 86_400)]
    pub retention_secs: u64,
    /// Largest request body in bytes.
    #[arg(long, env = "CLORO_MAX_BODY_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Cluster mode: how long a node's running tasks stay its own without a heartbeat; after
    /// that another node takes them over.
    #[arg(long, env = "CLORO_LEASE_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub lease_ms: u64,
    /// Cluster mode: how often a node renews its lease and looks for dead nodes.
    #[arg(long, env = "CLORO_HEARTBEAT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub heartbeat_ms: u64,
    /// Cluster mode: fallback polling interval when no notification arrives.
    #[arg(long, env = "CLORO_POLL_MS", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_ms: u64,
    /// Cluster mode: database connections of this node.
    #[arg(long, env = "CLORO_DB_POOL", default_value_t = 16, value_parser = clap::value_parser!(u64).range(2..=1000))]
    pub db_pool: u64,
    /// Cluster mode: longest wait for a database lock (an organization's row someone holds);
    /// past it the call is answered 503 `SERVICE_UNAVAILABLE` with `Retry-After`.
    #[arg(long, env = "CLORO_DB_LOCK_TIMEOUT_MS", default_value_t = 3_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub db_lock_timeout_ms: u64,
    /// Cluster mode: longest time one database statement may run or one store operation may
    /// wait for the database (a dead connection); past it the call fails as unavailable.
    #[arg(long, env = "CLORO_DB_TIMEOUT_MS", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub db_timeout_ms: u64,
    /// Requests per second per API key per endpoint, for organizations without their own
    /// (`org create --rate-limit`).
    #[arg(long, env = "CLORO_RATE_LIMIT", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: u32,
    /// Longest time a request may take before it is answered 408 `REQUEST_TIMEOUT`.
    #[arg(long, env = "CLORO_REQUEST_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// Longest time a client may take to send a request's headers; then it is disconnected.
    #[arg(long, env = "CLORO_HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,
    /// Connections served at once; more wait to be accepted.
    #[arg(long, env = "CLORO_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Connections one client address (IPv6: its /64) may hold at once; a further one from it
    /// is closed at once. Default: an eighth of `--max-connections`, at least 64.
    #[arg(long, env = "CLORO_MAX_CONNECTIONS_PER_ADDRESS", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections_per_address: Option<u64>,
    /// Request-body bytes being read at once over the node; a body that does not fit is
    /// answered 503 `SERVICE_UNAVAILABLE` with `Retry-After` (256 MiB).
    #[arg(long, env = "CLORO_MAX_BODY_BYTES_IN_FLIGHT", default_value_t = 256 * 1024 * 1024, value_parser = at_least_one_byte)]
    pub max_body_bytes_in_flight: usize,
    /// The base of the links cloro puts in results (the `include.html` pages it serves):
    /// an http(s) URL without a query or fragment, as clients reach this server (e.g. behind
    /// a proxy). Default: `http://{listen}`.
    #[arg(long, env = "CLORO_PUBLIC_URL")]
    pub public_url: Option<crate::pages::PublicUrl>,
    /// The environment variable holding the admin token, which `/metrics` requires as
    /// `Authorization: Bearer` (the token itself never goes on the command line). Unset or
    /// empty: `/metrics` is not served on the API's address.
    #[arg(long, value_name = "NAME", default_value = "CLORO_ADMIN_TOKEN")]
    pub admin_token_env: String,
    /// Also serve `/metrics`, without the token, on this address (an internal network's).
    #[arg(long, env = "CLORO_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Label queue metrics with each organization (`=false`: summed over organizations, for
    /// deployments with very many).
    #[arg(long, env = "CLORO_METRICS_ORG_LABELS", value_name = "BOOL",
          action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value_t = true)]
    pub metrics_org_labels: bool,
    /// Result pages (`include.html`, no key needed) served per second over all clients; more
    /// are answered 429.
    #[arg(long, env = "CLORO_PAGE_RATE_LIMIT", default_value_t = crate::pages::DEFAULT_PAGE_RATE_LIMIT, value_parser = clap::value_parser!(u32).range(1..))]
    pub page_rate_limit: u32,
    /// Plan of the `default` organization made on an empty database.
    #[arg(long, env = "CLORO_DEFAULT_PLAN", default_value = "free")]
    pub default_plan: String,
}

fn at_least_one_byte(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number between 0 and 1")),
    }
}

/// An organization's limits, as `org create` and `org set` take them (unset: the plan's, or
/// for `set` unchanged).
#[derive(Debug, Clone, Args)]
pub struct OrgLimits {
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: Option<u32>,
    /// The balance now (running tasks' reservations still hold).
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    pub credits: Option<i64>,
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    pub queue_limit: Option<i64>,
    /// Requests per second per API key per endpoint.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: Option<u32>,
}

/// `org create`'s wording of [`OrgLimits`]' help (kept as it was before they were shared):
/// the balance needs no note, and an unset rate limit is the server's.
fn create_limits_help(a: clap::Arg) -> clap::Arg {
    match a.get_id().as_str() {
        "credits" => a.help(None::<&str>),
        "rate_limit" => a.help(
            "Requests per second per API key per endpoint (default: the server's `--rate-limit`)",
        ),
        _ => a,
    }
}

#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an organization and its first API key; prints {"orgId", "apiKey", "keyId"}.
    #[command(mut_args(create_limits_help))]
    Create {
        #[arg(long)]
        name: String,
        /// free, lite, hobby, starter, growth, business, enterprise-2k … enterprise-5k.
        #[arg(long, default_value = "free")]
        plan: String,
        #[command(flatten)]
        limits: OrgLimits,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Create or rotate the organization's webhook signing secret; prints {"orgId", "secret"}.
    /// The old secret stops working at once. `--disable` turns signing off.
    WebhookSecret {
        #[arg(long)]
        org: String,
        /// Remove the secret: deliveries are sent unsigned.
        #[arg(long)]
        disable: bool,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Every organization: id, name, plan, limits, balance.
    List {
        #[command(flatten)]
        out: OutArgs,
        #[command(flatten)]
        db: DbArgs,
    },
    /// One organization's settings and balance.
    Show {
        org_id: String,
        #[command(flatten)]
        out: OutArgs,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Change an organization's settings; a running server applies them at once (SQLite: within
    /// a second). `--plan` brings the plan's credits and concurrency unless given too. A
    /// concurrency below the tasks running never cancels them: it only stops new starts.
    Set {
        org_id: String,
        /// free, lite, hobby, starter, growth, business, enterprise-2k … enterprise-5k.
        #[arg(long)]
        plan: Option<String>,
        #[command(flatten)]
        limits: OrgLimits,
        /// Remove the organization's own rate limit: the server's `--rate-limit` applies again.
        #[arg(long, conflicts_with = "rate_limit")]
        clear_rate_limit: bool,
        #[command(flatten)]
        out: OutArgs,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an API key; prints {"keyId", "orgId", "apiKey"}.
    Create {
        #[arg(long)]
        org: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke an API key; prints {"keyId", "revoked": true}.
    Revoke {
        key_id: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// An organization's API keys: ids, creation and revocation times (never the keys).
    List {
        #[arg(long)]
        org: String,
        #[command(flatten)]
        out: OutArgs,
        #[command(flatten)]
        db: DbArgs,
    },
}

pub(crate) use crate::store::Database;

/// Parses `--database` / `DATABASE_URL` (absent: the embedded default).
pub fn parse_database(url: Option<&str>) -> Result<Database, String> {
    let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
        return Ok(Database::Sqlite(PathBuf::from(DEFAULT_DB)));
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Database::Postgres(url.to_owned()));
    }
    let path = match url.strip_prefix("sqlite://") {
        Some(rest) => rest,
        None if url.contains("://") => {
            return Err(format!(
                "unsupported database URL {url:?}: use sqlite://PATH, a file path or postgres://..."
            ));
        }
        None => url.strip_prefix("sqlite:").unwrap_or(url),
    };
    if path.is_empty() {
        return Err("the database path is empty".into());
    }
    Ok(Database::Sqlite(PathBuf::from(path)))
}

/// Expands `serve --config FILE` into flags placed right after `serve`, before the command
/// line's own: explicit flags win over the file (clap keeps the last of a repeated option), and
/// the file wins over the environment (clap prefers any flag to its environment variable).
///
/// The file is TOML (the engines file's format, and a real parser rather than line splitting):
/// `name = value` with the long option names (`retry_base_ms` or `retry-base-ms`), strings,
/// numbers or booleans, and `#` comments anywhere, also after a value. Every entry becomes an
/// explicit `--name=value`, a `false` too, so the file can turn off what the environment turned
/// on. Each value is checked against its option here, so an unknown name, a bad value or a TOML
/// syntax error is reported as `FILE:LINE: …`.
pub fn expand_config_file(args: Vec<String>) -> Result<Vec<String>, String> {
    let Some(pos) = args
        .iter()
        .position(|a| a == "--config" || a.starts_with("--config="))
    else {
        return Ok(args);
    };
    let file = match args[pos].strip_prefix("--config=") {
        Some(f) => f.to_owned(),
        None => args.get(pos + 1).cloned().ok_or("--config needs a FILE")?,
    };
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read config file {file}: {e}"))?;
    let flags = config_flags(&file, &text)?;
    let Some(serve) = args.iter().position(|a| a == "serve") else {
        return Ok(args);
    };
    let mut out = args[..=serve].to_vec();
    out.extend(flags);
    out.extend(args[serve + 1..].iter().cloned());
    Ok(out)
}

/// The `--name=value` flags of a config file's `text` (see [`expand_config_file`]), in the
/// file's order; the first problem as `FILE:LINE: message`.
fn config_flags(file: &str, text: &str) -> Result<Vec<String>, String> {
    use std::collections::BTreeMap;
    use toml::{Spanned, Value};

    // `FILE:LINE: message` for a byte offset in the text.
    let at = |offset: usize, message: &str| {
        let line = text.as_bytes()[..offset.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        format!("{file}:{line}: {message}")
    };
    let table: BTreeMap<String, Spanned<Value>> = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().replace('\n', "; ");
        match e.span() {
            Some(span) => at(span.start, &message),
            None => format!("{file}: {message}"),
        }
    })?;
    let mut entries: Vec<(String, Spanned<Value>)> = table.into_iter().collect();
    entries.sort_by_key(|(_, v)| v.span().start);
    let serve = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
    let mut flags = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let offset = value.span().start;
        let name = key.replace('_', "-");
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(name.as_str()) && name != "config")
            .ok_or_else(|| {
                at(
                    offset,
                    &format!(
                        "unknown option \"{key}\": expected a long option of `cloro serve` (see `cloro serve --help`)"
                    ),
                )
            })?;
        let value = match value.into_inner() {
            Value::String(s) => s,
            Value::Integer(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Boolean(b) => b.to_string(),
            other => {
                return Err(at(
                    offset,
                    &format!(
                        "\"{key}\" must be a string, a number or a boolean, not {}",
                        other.type_str()
                    ),
                ));
            }
        };
        // Checked on this option alone, without its environment variable: a bad value in the
        // environment is not this line's fault.
        let flag = format!("--{name}={value}");
        clap::Command::new("serve")
            .no_binary_name(true)
            .arg(arg.clone().env(None::<&'static str>))
            .try_get_matches_from([flag.as_str()])
            .map_err(|e| {
                // clap's text is `error: <reason>` plus usage hints; keep the reason.
                let rendered = e.to_string();
                let reason = rendered.lines().next().unwrap_or_default();
                at(offset, reason.strip_prefix("error: ").unwrap_or(reason))
            })?;
        flags.push(flag);
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_are_parsed() {
        assert_eq!(
            parse_database(None),
            Ok(Database::Sqlite(PathBuf::from(DEFAULT_DB)))
        );
        assert_eq!(
            parse_database(Some("sqlite:///abs/x.db")),
            Ok(Database::Sqlite(PathBuf::from("/abs/x.db")))
        );
        assert_eq!(
            parse_database(Some("sqlite://rel/x.db")),
            Ok(Database::Sqlite(PathBuf::from("rel/x.db")))
        );
        assert_eq!(
            parse_database(Some("data.db")),
            Ok(Database::Sqlite(PathBuf::from("data.db")))
        );
        assert!(matches!(
            parse_database(Some("postgres://u@h/db")),
            Ok(Database::Postgres(_))
        ));
        assert!(parse_database(Some("mysql://x")).is_err());
    }

    /// The library's commands under a bare top level (the binary's adds `bench` and the
    /// about text).
    #[derive(Debug, clap::Parser)]
    #[command(name = "cloro", args_override_self = true)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    /// `cloro serve --config FILE ARGS…` expanded, with `text` as the file (`cloro.toml`).
    fn expand_with(text: &str, args: &[&str]) -> Result<Vec<String>, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cloro.toml");
        std::fs::write(&path, text).expect("written");
        let mut all = vec![
            "cloro".to_owned(),
            "serve".to_owned(),
            "--config".to_owned(),
            path.to_string_lossy().into_owned(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        expand_config_file(all)
    }

    fn serve_args(args: Vec<String>) -> ServeArgs {
        use clap::Parser as _;
        match Cli::try_parse_from(&args) {
            Ok(Cli {
                command: Command::Serve(s),
            }) => *s,
            Ok(other) => panic!("not serve: {other:?}"),
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn an_inline_comment_in_the_config_file_ends_the_value() {
        let args = expand_with(
            "workers = 8 # eight\nretry_base_ms = 250  # a quarter second\npublic_url = \"https://c.example/x\" # kept\n",
            &[],
        )
        .expect("expands");
        let s = serve_args(args);
        assert_eq!((s.workers, s.retry_base_ms), (8, 250));
    }

    #[test]
    fn an_unknown_key_in_the_config_file_is_reported_with_its_line() {
        let e = expand_with("# settings\nworkers = 8\nwrokers = 9\n", &[]).expect_err("refused");
        assert!(e.contains("cloro.toml:3:"), "{e}");
        assert!(e.contains("wrokers"), "{e}");
    }

    #[test]
    fn a_false_in_the_config_file_is_passed_on_and_the_command_line_still_wins() {
        let args = expand_with("allow_private_webhooks = false\n", &[]).expect("expands");
        assert!(
            args.iter().any(|a| a == "--allow-private-webhooks=false"),
            "{args:?}"
        );
        assert!(!serve_args(args).allow_private_webhooks);
        let args = expand_with(
            "allow_private_webhooks = false\n",
            &["--allow-private-webhooks"],
        )
        .expect("expands");
        assert!(serve_args(args).allow_private_webhooks);
        let args = expand_with("allow_private_webhooks = true\n", &[]).expect("expands");
        assert!(serve_args(args).allow_private_webhooks);
    }

    /// A config file passes every entry as `--name=value`, so no serve option may be a bare
    /// switch (clap's `SetTrue` refuses a value, and a `false` could not be passed at all).
    #[test]
    fn every_serve_option_takes_a_value() {
        let serve = <ServeArgs as clap::Args>::augment_args(clap::Command::new("serve"));
        for arg in serve.get_arguments() {
            assert!(
                !matches!(
                    arg.get_action(),
                    clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
                ),
                "--{:?} is a bare switch",
                arg.get_long()
            );
        }
    }

    #[test]
    fn bad_values_and_bad_toml_in_the_config_file_name_their_line() {
        let e = expand_with("workers = 8\n\nworkers_x = 1\n", &[]).expect_err("unknown");
        assert!(
            e.contains("cloro.toml:3: unknown option \"workers_x\""),
            "{e}"
        );
        let e = expand_with("\nworkers = 0\n", &[]).expect_err("out of range");
        assert!(
            e.contains("cloro.toml:2: invalid value '0' for '--workers"),
            "{e}"
        );
        let e = expand_with("workers = 8\nlisten = [1]\n", &[]).expect_err("an array");
        assert!(
            e.contains("cloro.toml:2: \"listen\" must be a string"),
            "{e}"
        );
        let e = expand_with("workers = 8\nworkers = 9\n", &[]).expect_err("a duplicate");
        assert!(e.contains("cloro.toml:2:"), "{e}");
        let e = expand_with("workers 8\n", &[]).expect_err("not TOML");
        assert!(e.contains("cloro.toml:1:"), "{e}");
        let e = expand_with("config = \"other.toml\"\n", &[]).expect_err("no nesting");
        assert!(e.contains("unknown option \"config\""), "{e}");
        // Dashes, underscores, strings, floats and booleans all work.
        let s = serve_args(
            expand_with(
                "sim-failure-rate = 0.25\nsim_latency_ms = \"1..5\"\ndefault_plan = \"lite\"\n",
                &["--workers", "3"],
            )
            .expect("expands"),
        );
        assert_eq!(
            (s.sim_failure_rate, s.sim_latency_ms.max_ms, s.workers),
            (0.25, 5, 3)
        );
        assert_eq!(s.default_plan, "lite");
    }

    #[test]
    fn the_cli_parses_the_contract() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from([
            "cloro",
            "serve",
            "--sim-latency-ms",
            "1..5",
            "--sim-failure-rate",
            "0.5",
            "--workers",
            "8",
        ])
        .expect("parses");
        let Command::Serve(s) = cli.command else {
            panic!("serve")
        };
        assert_eq!(s.workers, 8);
        assert_eq!(
            s.sim_latency_ms,
            LatencyRange {
                min_ms: 1,
                max_ms: 5
            }
        );
        assert!(Cli::try_parse_from(["cloro", "serve", "--sim-failure-rate", "2"]).is_err());
        let Command::Serve(s) =
            Cli::try_parse_from(["cloro", "serve", "--public-url", "https://c.example/x/"])
                .expect("parses")
                .command
        else {
            panic!("serve")
        };
        assert_eq!(
            s.public_url.map(|u| u.to_string()),
            Some("https://c.example/x".to_owned())
        );
        for bad in [
            "ftp://c.example",
            "https://c.example/?a",
            "https://c.example/#f",
            "c.example",
        ] {
            assert!(
                Cli::try_parse_from(["cloro", "serve", "--public-url", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(
            Cli::try_parse_from(["cloro", "org", "create", "--name", "a", "--plan", "lite"])
                .is_ok()
        );
        assert!(Cli::try_parse_from(["cloro", "key", "revoke", "key_x"]).is_ok());
    }
}
