//! The HTTP API: the route table, read top to bottom; the handlers sit in one file per resource.
//!
//! Each route is declared once, in [`routes`]: the handler carries its OpenAPI operation
//! (`#[utoipa::path]`, method and path included), and utoipa-axum's `routes!` registers it in
//! the axum router and in the document together. The rate limit's buckets
//! ([`rate_limit_buckets`]) and `/openapi.json` ([`openapi`]) are derived from the same table,
//! so none of the three can list a route the others lack.
//!
//! Middleware, outermost first (see `docs/ARCHITECTURE.md`): the edge ([`edge`]: request id,
//! `X-Latency-Ms`, request timeout, panics → 500) → authentication for `/v1/*` and the rate
//! limit per key and route template ([`auth`], [`ratelimit`]; `X-RateLimit-*` on every
//! authenticated response; not for the keyless result pages, [`is_keyless`], bounded on
//! their own in [`pages`]) → the handler. Unknown routes, and known routes with another
//! method, are 404 `RESOURCE_NOT_FOUND` with `details.id` = the path.
//!
//! Answers are [`crate::wire`] types; errors are [`error::ApiError`], the only way to the cloro
//! error envelope. The extractors ([`extract`]) reject in that envelope too.

pub mod admin;
pub(crate) mod auth;
pub(crate) mod credits;
pub mod dashboard;
pub mod edge;
pub(crate) mod error;
pub(crate) mod extract;
pub mod goto;
pub(crate) mod health;
pub(crate) mod listener;
pub(crate) mod monitor;
pub mod openapi;
pub(crate) mod pages;
pub(crate) mod queue;
pub(crate) mod ratelimit;
pub(crate) mod reference;
pub(crate) mod tasks;

use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::middleware;
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::error::ApiError;
use crate::auth::Authenticator;
use crate::store::Store;

/// Shared state of every handler.
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) auth: Authenticator,
    /// Largest accepted request body (a 500-task batch of long prompts fits).
    pub(crate) max_body_bytes: usize,
    /// Bounds of the HTTP edge.
    pub(crate) edge: edge::EdgeConfig,
    pub(crate) limiter: ratelimit::RateLimiter,
    /// The node's budget of request-body bytes being read (`edge.max_body_bytes_in_flight`
    /// permits, one a byte), taken by [`extract::JsonBody`] while it reads and parses a body.
    pub(crate) body_budget: tokio::sync::Semaphore,
    /// `--allow-private-webhooks`: literal private webhook URLs are accepted at submission.
    pub(crate) allow_private_webhooks: bool,
    /// The configured engines and their health (`/readyz`).
    pub(crate) engines: Arc<crate::queue::EngineRoutes>,
    /// The result pages' bounds and expiry ([`pages`]).
    pub(crate) pages: pages::PageServing,
    /// Runs the sync calls of [`monitor`] (`None`: not served, in tests of other parts).
    pub(crate) sync: Option<Arc<crate::queue::sync::SyncRunner>>,
    /// Resolves Google redirect links that carry no destination ([`goto`]).
    pub(crate) goto: goto::GotoResolver,
    /// This node's metrics (`GET /metrics`; the edge counts every request).
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// The operator's token ([`admin`]); `None`: operator endpoints are not served.
    pub(crate) admin: Option<admin::AdminToken>,
}

impl AppState {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        max_body_bytes: usize,
        edge: edge::EdgeConfig,
        allow_private_webhooks: bool,
    ) -> AppState {
        AppState {
            store,
            auth: Authenticator::default(),
            max_body_bytes,
            limiter: ratelimit::RateLimiter::new(edge.rate_limit),
            body_budget: tokio::sync::Semaphore::new(
                edge.max_body_bytes_in_flight
                    .min(tokio::sync::Semaphore::MAX_PERMITS),
            ),
            edge,
            allow_private_webhooks,
            engines: Arc::default(),
            pages: pages::PageServing::default(),
            sync: None,
            goto: goto::GotoResolver::google(allow_private_webhooks),
            metrics: Arc::default(),
            admin: None,
        }
    }

    /// The same state, counting into `metrics` and serving the operator endpoints to `admin`.
    pub(crate) fn with_admin(
        mut self,
        metrics: Arc<crate::metrics::Metrics>,
        admin: Option<admin::AdminToken>,
    ) -> AppState {
        self.metrics = metrics;
        self.admin = admin;
        self
    }

    /// The same state, serving sync calls with `runner`.
    pub(crate) fn with_sync(mut self, runner: Arc<crate::queue::sync::SyncRunner>) -> AppState {
        self.sync = Some(runner);
        self
    }

    /// The same state, resolving goto links with `goto`.
    pub(crate) fn with_goto(mut self, goto: goto::GotoResolver) -> AppState {
        self.goto = goto;
        self
    }

    /// The same state, reporting the health of `engines`.
    pub(crate) fn with_engines(mut self, engines: Arc<crate::queue::EngineRoutes>) -> AppState {
        self.engines = engines;
        self
    }

    /// The result pages' settings (`serve --page-rate-limit`), the retention and the clock
    /// that decide a page's expiry.
    pub(crate) fn with_pages(
        mut self,
        cfg: &crate::pages::PagesConfig,
        retention_ms: i64,
        clock: crate::clock::Clock,
    ) -> AppState {
        self.pages = pages::PageServing::new(cfg, retention_ms, clock);
        self
    }
}

/// Whether `path` is a `/v1` route that takes no API key (the result pages: their URL is the
/// capability). It is outside authentication and the per-key rate-limit buckets.
pub(crate) fn is_keyless(path: &str) -> bool {
    path.starts_with(crate::pages::PAGES_PREFIX)
}

pub(crate) type SharedState = Arc<AppState>;

/// The route table: every documented route, once. A new route is one line here plus its
/// handler, with its `#[utoipa::path]`, in the file of its resource.
pub(crate) fn routes() -> OpenApiRouter<SharedState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        // The asynchronous task queue.
        .routes(routes!(tasks::create))
        .routes(routes!(tasks::create_batch))
        .routes(routes!(tasks::get))
        .routes(routes!(queue::status))
        .routes(routes!(queue::clear))
        // The synchronous monitor endpoints.
        .routes(routes!(monitor::chatgpt))
        .routes(routes!(monitor::gemini))
        .routes(routes!(monitor::grok))
        .routes(routes!(monitor::copilot))
        .routes(routes!(monitor::perplexity))
        .routes(routes!(monitor::aimode))
        .routes(routes!(monitor::google))
        .routes(routes!(monitor::google_news))
        .routes(routes!(goto::resolve))
        // The account and reference lists.
        .routes(routes!(credits::get))
        .routes(routes!(reference::countries))
        .routes(routes!(reference::states))
        // The result pages of `include.html` (no key: the link is the capability).
        .routes(routes!(pages::page))
        // The operator's probes.
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
}

/// The rate limit's buckets: every `/v1` route template of [`routes`] but the keyless ones
/// ([`is_keyless`]; a request on anything else counts against `*`).
pub fn rate_limit_buckets() -> &'static [String] {
    static BUCKETS: LazyLock<Vec<String>> = LazyLock::new(|| {
        routes()
            .into_openapi()
            .paths
            .paths
            .into_keys()
            .filter(|p| p.starts_with("/v1/") && !is_keyless(p))
            .collect()
    });
    &BUCKETS
}

/// The server's router: the route table, the undocumented document routes (`/openapi.json`,
/// `/docs` and its script), the operator's (`/metrics`, `/dashboard`), the fallbacks and the
/// middleware.
pub(crate) fn router(state: SharedState) -> Router {
    let (documented, _) = routes().split_for_parts();
    documented
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(openapi::docs))
        .route(openapi::REDOC_PATH, get(openapi::redoc_js))
        .route("/metrics", get(admin::metrics))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/app.css", get(dashboard::style))
        .route("/dashboard/data", get(dashboard::data))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), edge::edge))
        .with_state(state)
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(uri.path(), "Route not found")
}
