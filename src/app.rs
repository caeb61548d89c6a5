//! Wiring and lifecycle: the store, the dispatcher, the purger, the webhook sender and the HTTP
//! server run as sibling tasks under one cancellation token. Shutdown stops accepting
//! connections, lets in-flight requests and running tasks finish (their outcomes are recorded),
//! then closes the store.
//!
//! The components are supervised ([`supervisor`]): one that ends while no shutdown was asked
//! for (it returned or panicked) is logged as an error naming it and how it ended ("Component
//! failed: the dispatcher panicked: …; shutting the server down"), and the whole server shuts
//! down. [`Server::failed`] resolves with that [`ComponentFailure`]; `cloro serve` waits for it
//! beside the shutdown signals and then exits non-zero.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod supervisor;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use supervisor::Supervisor;
pub use supervisor::{ComponentFailure, Ended};

use crate::api::{self, AppState};
use crate::clock::Clock;
use crate::engines::Engine;
use crate::queue::{self, EngineRoutes, QueueConfig};
use crate::store::admin;
use crate::store::postgres::{PgConfig, PgStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{CreatedOrg, Database, OrgSpec, Store};

/// Everything `serve` needs.
#[derive(Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub database: Database,
    /// Lease, heartbeat and polling of cluster mode (PostgreSQL only).
    pub cluster: PgConfig,
    pub queue: QueueConfig,
    /// The engine that runs the task types `engines` does not route (the simulated one unless a
    /// caller brings its own).
    pub engine: Arc<dyn Engine>,
    /// The engines file's engines and which task types they serve (`--engines`); by default
    /// none, so every task type runs on `engine`.
    pub engines: Arc<EngineRoutes>,
    pub max_body_bytes: usize,
    pub default_plan: String,
    /// Rate limit, timeouts and connection bounds of the HTTP edge.
    pub edge: api::edge::EdgeConfig,
    /// The webhook sender (retry base, time limit, private destinations).
    pub webhooks: crate::webhooks::WebhookConfig,
    /// The result pages of `include.html`: their public URL and bounds.
    pub pages: crate::pages::PagesConfig,
    /// `POST /v1/monitor/google/goto`: Google's time limit (and, for tests, a stand-in for
    /// Google). Its address guard is `webhooks.allow_private`.
    pub goto: api::goto::GotoConfig,
    /// The operator surfaces: the admin token, `/metrics` and its own listener.
    pub operator: api::admin::OperatorConfig,
    /// The server's one wall clock: [`start`] gives it to the store, the dispatcher, the purger
    /// and the webhook sender (the `clock` fields of [`QueueConfig`] and
    /// [`WebhookConfig`](crate::webhooks::WebhookConfig) are for tests that drive those alone).
    pub clock: Clock,
}

/// Opens the configured store; on an empty database, first creates the `default` organization.
async fn open_store(opts: &ServeOptions) -> anyhow::Result<(Arc<dyn Store>, Option<CreatedOrg>)> {
    let what = match &opts.database {
        Database::Sqlite(p) => p.display().to_string(),
        Database::Postgres(_) => "the PostgreSQL database".to_owned(),
    };
    let admin = admin::open(&opts.database)
        .await
        .with_context(|| format!("opening {what}"))?;
    let created = if admin.count_orgs().await? == 0 {
        let spec = OrgSpec {
            name: "default".into(),
            plan: opts.default_plan.clone(),
            concurrency: None,
            credits: None,
            queue_limit: None,
            rate_limit: None,
        };
        Some(admin.create_org(&spec).await?)
    } else {
        None
    };
    drop(admin);
    let store: Arc<dyn Store> = match &opts.database {
        Database::Sqlite(path) => {
            let (path, clock) = (path.clone(), opts.clock.clone());
            let store =
                tokio::task::spawn_blocking(move || SqliteStore::open_with_clock(&path, clock))
                    .await??;
            Arc::new(store)
        }
        Database::Postgres(url) => {
            Arc::new(PgStore::open_with_clock(url, opts.cluster.clone(), opts.clock.clone()).await?)
        }
    };
    Ok((store, created))
}

/// One start-up line per task type: which engine serves it.
fn log_routes(routes: &EngineRoutes) {
    for task_type in crate::domain::types::TaskType::ALL {
        match routes.member_of(task_type) {
            Some(m) => tracing::info!(
                task_type = task_type.as_str(),
                engine = %m.name,
                kind = %m.kind,
                model = m.model.as_deref().unwrap_or("-"),
                max_in_flight = m.max_in_flight.map_or("-".to_owned(), |v| v.to_string()),
                requests_per_minute = m.per_minute.map_or("-".to_owned(), |v| v.to_string()),
                "Task type routed"
            ),
            None => tracing::info!(
                task_type = task_type.as_str(),
                engine = "simulated (default)",
                "Task type routed"
            ),
        }
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    pub store: Arc<dyn Store>,
    /// The `default` organization, when this start created it.
    pub created_default: Option<CreatedOrg>,
    /// Pauses and resumes claiming on this node.
    pub gate: Arc<queue::Gate>,
    supervisor: Supervisor,
}

/// Opens the store, creates the `default` organization on an empty database, binds the
/// listener and starts every component.
pub async fn start(opts: ServeOptions) -> anyhow::Result<Server> {
    let goto = api::goto::GotoResolver::new(&opts.goto, opts.webhooks.allow_private)
        .map_err(anyhow::Error::msg)?;
    let (store, created_default) = open_store(&opts).await?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let cancel = CancellationToken::new();
    let supervisor = Supervisor::new(cancel.clone());
    let dyn_store = store.clone();
    let engine = opts.engine.clone();
    log_routes(&opts.engines);

    let public_url = opts.pages.public_url.clone().unwrap_or_else(|| {
        if addr.ip().is_unspecified() {
            tracing::warn!(%addr, "No --public-url: result page links (include.html) will name the unspecified listen address; set --public-url to the address clients use");
        }
        crate::pages::PublicUrl::for_listen(addr)
    });
    let metrics = Arc::new(
        crate::metrics::Metrics::new(opts.operator.metrics_org_labels).with_activity(
            api::dashboard::Activity::new(opts.clock.clone(), opts.queue.workers),
        ),
    );
    let queue_cfg = QueueConfig {
        clock: opts.clock.clone(),
        public_url: public_url.clone(),
        metrics: metrics.clone(),
        ..opts.queue.clone()
    };
    let webhook_cfg = crate::webhooks::WebhookConfig {
        clock: opts.clock.clone(),
        metrics: metrics.clone(),
        ..opts.webhooks.clone()
    };
    if opts.operator.admin_token.is_none() {
        tracing::info!(
            "No admin token (--admin-token-env, default CLORO_ADMIN_TOKEN): /metrics is not served on the API's address"
        );
    }
    if let Some(at) = opts.operator.metrics_listen {
        let metrics_listener = tokio::net::TcpListener::bind(at)
            .await
            .with_context(|| format!("cannot listen on {at} (--metrics-listen)"))?;
        let router = api::admin::metrics_router(dyn_store.clone(), metrics.clone());
        let stop = cancel.clone();
        tracing::info!(addr = %metrics_listener.local_addr()?, "Serving /metrics without a token (--metrics-listen)");
        supervisor.spawn("metrics listener", async move {
            let served = axum::serve(metrics_listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "The metrics listener stopped");
            }
        });
    }
    let gate = Arc::new(queue::Gate::default());
    supervisor.spawn(
        "dispatcher",
        queue::run_dispatcher(
            dyn_store.clone(),
            engine,
            opts.engines.clone(),
            queue_cfg.clone(),
            gate.clone(),
            cancel.clone(),
        ),
    );
    supervisor.spawn(
        "purger",
        queue::run_purger(dyn_store.clone(), queue_cfg.clone(), cancel.clone()),
    );
    supervisor.spawn(
        "webhook sender",
        crate::webhooks::run_sender(dyn_store.clone(), webhook_cfg, gate.clone(), cancel.clone()),
    );

    let sync = Arc::new(queue::sync::SyncRunner {
        store: dyn_store.clone(),
        engine: opts.engine.clone(),
        routes: opts.engines.clone(),
        cfg: queue_cfg.clone(),
    });
    let state = Arc::new(
        AppState::new(
            dyn_store,
            opts.max_body_bytes,
            opts.edge.clone(),
            opts.webhooks.allow_private,
        )
        .with_engines(opts.engines.clone())
        .with_sync(sync)
        .with_pages(&opts.pages, opts.queue.retention_ms, opts.clock.clone())
        .with_goto(goto)
        .with_admin(metrics, opts.operator.admin_token.clone()),
    );
    let app = api::router(state);
    supervisor.spawn(
        "HTTP listener",
        api::listener::serve(listener, app, opts.edge.clone(), cancel.clone()),
    );
    tracing::info!(%addr, %public_url, "cloro is listening");
    Ok(Server {
        addr,
        store,
        created_default,
        gate,
        supervisor,
    })
}

impl Server {
    /// Starts a graceful shutdown.
    pub fn shutdown(&self) {
        self.supervisor.shutdown();
    }

    /// Resolves when a component ended while the server was running (it returned or
    /// panicked); the server is then already shutting down. Never resolves otherwise.
    pub async fn failed(&self) -> ComponentFailure {
        self.supervisor.failed().await
    }

    /// The first component that ended while the server was running, if one did.
    pub fn failure(&self) -> Option<ComponentFailure> {
        self.supervisor.failure()
    }

    /// Waits for every component to stop (after [`shutdown`](Self::shutdown)), then closes the
    /// store. Gives up waiting after `grace`.
    pub async fn stopped(self, grace: Duration) {
        if tokio::time::timeout(grace, self.supervisor.wait())
            .await
            .is_err()
        {
            tracing::warn!("Shutdown grace period ended with work still running");
        }
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        if tokio::time::timeout(grace, self.store.closed())
            .await
            .is_err()
        {
            tracing::warn!("The store's background work did not stop within the grace period");
        }
    }
}

#[cfg(test)]
mod tests;
