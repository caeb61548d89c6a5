//! Operator endpoints: `GET /metrics` (Prometheus) behind the admin token, and the token.
//!
//! The admin token (`cloro serve --admin-token-env NAME`, default `CLORO_ADMIN_TOKEN`) is sent
//! as `Authorization: Bearer <token>`. Only its SHA-256 digest is kept, compared in constant
//! time; it is never logged. Without one, the operator endpoints are not served (404), which
//! `serve` says at start-up. `--metrics-listen ADDR` serves `/metrics` without the token on a
//! second listener, for an internal network.

use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::SharedState;
use super::error::ApiError;
use crate::domain::apikey::constant_time_eq;
use crate::metrics::Metrics;
use crate::store::Store;

/// The operator's token, as its digest.
#[derive(Clone)]
pub struct AdminToken([u8; 32]);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

impl AdminToken {
    /// The token `secret` (refused when empty or only whitespace: it would guard nothing).
    pub fn new(secret: &str) -> Option<AdminToken> {
        let secret = secret.trim();
        (!secret.is_empty()).then(|| AdminToken(Sha256::digest(secret.as_bytes()).into()))
    }

    /// Whether `headers` carry `Authorization: Bearer <this token>`.
    pub(crate) fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        constant_time_eq(&digest, &self.0)
    }
}

/// The refusal of a request to an operator endpoint that does not carry the admin token: 404
/// when no token is configured (the endpoint is not served), 401 when it is missing or wrong.
pub(crate) fn refusal(state: &SharedState, headers: &HeaderMap) -> Option<Response> {
    match &state.admin {
        None => Some(
            ApiError::not_found(
                "operator endpoint",
                "Not served: no admin token is configured (cloro serve --admin-token-env)",
            )
            .into_response(),
        ),
        Some(token) if token.allows(headers) => None,
        Some(_) => Some(
            ApiError::new("MISSING_API_KEY")
                .message("Missing or invalid admin token")
                .into_response(),
        ),
    }
}

/// `GET /metrics` behind the admin token.
pub(crate) async fn metrics(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    if let Some(refused) = refusal(&state, &headers) {
        return refused;
    }
    exposition(&*state.store, &state.metrics).await
}

/// The exposition: this node's counters and the store's queue.
pub(crate) async fn exposition(store: &dyn Store, metrics: &Metrics) -> Response {
    let overview = match store.overview().await {
        Ok(o) => Some(o),
        Err(error) => {
            tracing::warn!(%error, "Metrics: cannot read the queue from the store");
            metrics.overview_failed();
            None
        }
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(overview.as_ref()),
    )
        .into_response()
}

/// The operator surfaces' settings (`ServeOptions::operator`).
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// The admin token (`--admin-token-env`); `None`: operator endpoints are not served.
    pub admin_token: Option<AdminToken>,
    /// `--metrics-listen`: a second listener serving `/metrics` without the token.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `--metrics-org-labels`: queue numbers per organization (else summed).
    pub metrics_org_labels: bool,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            admin_token: None,
            metrics_listen: None,
            metrics_org_labels: true,
        }
    }
}

/// The router of `--metrics-listen`: `/metrics` only, without the token.
pub(crate) fn metrics_router(
    store: std::sync::Arc<dyn Store>,
    metrics: std::sync::Arc<Metrics>,
) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (store, metrics) = (store.clone(), metrics.clone());
            async move { exposition(&*store, &metrics).await }
        }),
    )
}
