//! The `cloro` binary: parses the command line, sets up logging, runs a command. `serve` runs
//! until SIGINT or SIGTERM (exit code 0) or until one of the server's components dies (logged,
//! then a graceful shutdown and a non-zero exit code; see [`cloro::app`]).
//!
//! Everything but the benchmark lives in the library (`src/lib.rs`). `cloro bench`
//! (`src/bench/`) is compiled into this binary only: it is a tool, not part of the service, so
//! the library (and every test binary linked against it) does not carry it.

mod bench;

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use cloro::app::{self, ServeOptions};
use cloro::config::{self, Command, ServeArgs};
use cloro::engines::SimulatedEngine;
use cloro::queue::QueueConfig;
use cloro::store::postgres::PgConfig;

/// mimalloc instead of the system allocator: the request path allocates a lot (JSON values,
/// bodies of up to 500 tasks), and glibc's malloc spent a fifth of the runtime's CPU on it,
/// much of that consolidating fragmented free lists (`docs/PERFORMANCE.md`). Built with
/// `no_thp` (Cargo.toml): mimalloc does not ask for transparent huge pages, whose 2 MiB pages,
/// partly used, held 50–80 MB more resident memory at 5,000 upstream calls in flight
/// (docs/PERFORMANCE.md, "Resident memory without huge pages", for what it costs and saves).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The command line (SPEC §6): the library's commands ([`Command`]) plus `bench`.
#[derive(Debug, Parser)]
#[command(
    name = "cloro",
    version,
    about = "A durable, fair, priority-ordered task queue speaking the cloro API"
)]
#[command(args_override_self = true)]
struct Cli {
    /// Log lines as text (default) or JSON, one object per line (with the request's id and,
    /// for task events, the task's id and organization). The level is `CLORO_LOG`.
    #[arg(long, global = true, value_enum, env = "CLORO_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: TopCommand,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum TopCommand {
    #[command(flatten)]
    Core(Command),
    /// Measure enqueue, drain, latency, status cost and memory through the HTTP API.
    Bench(bench::BenchArgs),
    /// Print a completion script for SHELL on stdout (e.g. `cloro completions bash >
    /// /etc/bash_completion.d/cloro`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

fn main() -> anyhow::Result<()> {
    let args =
        config::expand_config_file(std::env::args().collect()).map_err(anyhow::Error::msg)?;
    let cli = Cli::parse_from(args);
    let filter = EnvFilter::try_from_env("CLORO_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tokio_postgres=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The event's fields at the top level, the request's span (its id, method, path)
        // under `span`.
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
    match cli.command {
        TopCommand::Core(Command::Serve(args)) => serve(*args),
        TopCommand::Core(Command::Org(cmd)) => cloro::cli::org(cmd),
        TopCommand::Core(Command::Key(cmd)) => cloro::cli::key(cmd),
        TopCommand::Core(Command::Status(args)) => cloro::cli_admin::status(args),
        TopCommand::Core(Command::Task(cmd)) => cloro::cli_admin::task(cmd),
        TopCommand::Core(Command::Engines(cmd)) => {
            std::process::exit(cloro::engines::file::cli::run(&cmd))
        }
        TopCommand::Core(Command::Submit(args)) => std::process::exit(cloro::submit::run(args)?),
        TopCommand::Bench(args) => bench::run(args),
        TopCommand::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "cloro", &mut std::io::stdout());
            Ok(())
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let database =
        config::parse_database(args.db.database.as_deref()).map_err(anyhow::Error::msg)?;
    let opts = ServeOptions {
        listen: args.listen,
        database,
        cluster: PgConfig {
            lease_ms: args.lease_ms as i64,
            heartbeat_ms: args.heartbeat_ms,
            poll_ms: args.poll_ms,
            pool_size: args.db_pool as usize,
            lock_timeout_ms: args.db_lock_timeout_ms,
            db_timeout_ms: args.db_timeout_ms,
        },
        queue: QueueConfig {
            workers: args.workers as usize,
            retry_base_ms: args.retry_base_ms,
            retention_ms: (args.retention_secs as i64).saturating_mul(1000),
            ..QueueConfig::default()
        },
        engine: std::sync::Arc::new(SimulatedEngine {
            latency: args.sim_latency_ms,
            failure_rate: args.sim_failure_rate,
        }),
        engines: std::sync::Arc::new(match &args.engines {
            Some(path) => cloro::queue::EngineRoutes::load(path, &|name| std::env::var(name).ok())
                .map_err(anyhow::Error::msg)?,
            None => cloro::queue::EngineRoutes::default(),
        }),
        max_body_bytes: args.max_body_bytes,
        default_plan: args.default_plan,
        edge: cloro::api::edge::EdgeConfig {
            rate_limit: args.rate_limit,
            request_timeout: Duration::from_millis(args.request_timeout_ms),
            header_timeout: Duration::from_millis(args.header_timeout_ms),
            max_connections: args.max_connections as usize,
            max_connections_per_address: args.max_connections_per_address.map_or_else(
                || cloro::api::edge::default_connections_per_address(args.max_connections as usize),
                |n| n as usize,
            ),
            max_body_bytes_in_flight: args.max_body_bytes_in_flight,
            ..Default::default()
        },
        webhooks: cloro::webhooks::WebhookConfig {
            retry_base_ms: args.webhook_retry_base_ms,
            timeout: Duration::from_millis(args.webhook_timeout_ms),
            allow_private: args.allow_private_webhooks,
            ..Default::default()
        },
        pages: cloro::pages::PagesConfig {
            public_url: args.public_url,
            rate_limit: args.page_rate_limit,
            ..Default::default()
        },
        goto: Default::default(),
        operator: cloro::api::admin::OperatorConfig {
            admin_token: std::env::var(&args.admin_token_env)
                .ok()
                .and_then(|t| cloro::api::admin::AdminToken::new(&t)),
            metrics_listen: args.metrics_listen,
            metrics_org_labels: args.metrics_org_labels,
        },
        clock: cloro::clock::Clock::system(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let server = app::start(opts).await?;
        if let Some(created) = &server.created_default {
            println!(
                "{}",
                serde_json::json!({
                    "message": "Created organization 'default'. Its API key is shown only this once.",
                    "orgId": created.org.public_id,
                    "keyId": created.key_id,
                    "apiKey": created.api_key.expose(),
                })
            );
        }
        println!("cloro listening on http://{}", server.addr);
        // A signal, or a component that died (already logged; the server is stopping).
        let failure = tokio::select! {
            _ = shutdown_signal() => None,
            failure = server.failed() => Some(failure),
        };
        tracing::info!("Shutting down");
        server.shutdown();
        server.stopped(Duration::from_secs(30)).await;
        match failure {
            None => anyhow::Ok(()),
            Some(failure) => Err(anyhow::anyhow!("{failure}")),
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
