//! The outermost middleware, the one every response passes through (errors included):
//!
//! * `X-Request-ID`: the client's own if it is a valid UUID, else a new UUID v4; a tracing span
//!   carries it, so every log line of the request has it (the `Authorization` header is never
//!   recorded, nor a result page's token: `pages::loggable_path`).
//! * `X-Latency-Ms`: whole milliseconds from arrival to the start of the response.
//! * The request time bound: past `request_timeout` the handler is dropped and the client gets
//!   408 `REQUEST_TIMEOUT`.
//! * A panic in a handler becomes a 500 `INTERNAL_SERVER_ERROR` envelope, not a dropped
//!   connection.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use tracing::Instrument;
use uuid::Uuid;

use super::SharedState;
use super::error::ApiError;

/// Bounds of the HTTP edge (`serve` flags).
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Requests per second per API key per endpoint, unless the organization sets its own.
    pub rate_limit: u32,
    /// Longest a request may take before it is answered 408.
    pub request_timeout: Duration,
    /// Longest a client may take to send the request head.
    pub header_timeout: Duration,
    /// Largest request head (request line and headers), bytes.
    pub max_header_bytes: usize,
    /// Connections served at once; more wait in the kernel's accept queue.
    pub max_connections: usize,
    /// Connections one client address (an IPv6 address by its /64) may hold at once; a further
    /// one from it is closed at once, so one client cannot take every slot of
    /// `max_connections`. `serve` derives it from `max_connections` unless given.
    pub max_connections_per_address: usize,
    /// Request-body bytes being read at once over the whole node: a body that does not fit is
    /// answered 503 `SERVICE_UNAVAILABLE` with `Retry-After` instead of waiting. It bounds the
    /// raw bytes being read, not the parsed JSON that a handler then holds.
    pub max_body_bytes_in_flight: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        EdgeConfig {
            rate_limit: super::ratelimit::DEFAULT_RATE_LIMIT,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 32 * 1024,
            max_connections: 4096,
            max_connections_per_address: default_connections_per_address(4096),
            max_body_bytes_in_flight: 256 * 1024 * 1024,
        }
    }
}

/// The per-address share of `max_connections` when none is given: an eighth, but at least 64
/// (clients behind one NAT, and the tests and benchmarks that all connect from loopback).
pub fn default_connections_per_address(max_connections: usize) -> usize {
    (max_connections / 8).max(64)
}

/// The request id a client asked for, when it is a UUID.
pub(crate) fn client_request_id(value: Option<&HeaderValue>) -> Option<Uuid> {
    value
        .and_then(|v| v.to_str().ok())
        .and_then(|s| Uuid::parse_str(s.trim()).ok())
}

pub(crate) async fn edge(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let request_id =
        client_request_id(req.headers().get("x-request-id")).unwrap_or_else(Uuid::new_v4);
    // The route's template (a bounded label), and the method, for the metrics.
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        path = %crate::pages::loggable_path(req.uri().path())
    );
    // A sync call bounds itself (its 5-minute budget, then one last attempt): the edge's own
    // bound would cut it short.
    let timeout = match &state.sync {
        Some(runner) if super::monitor::is_sync_call(req.uri().path()) => {
            runner.longest().max(state.edge.request_timeout)
        }
        _ => state.edge.request_timeout,
    };
    let run = AssertUnwindSafe(next.run(req)).catch_unwind();
    let mut resp = match tokio::time::timeout(timeout, run)
        .instrument(span.clone())
        .await
    {
        Ok(Ok(resp)) => resp,
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            span.in_scope(|| tracing::error!(panic = %what, "Handler panicked"));
            ApiError::new("INTERNAL_SERVER_ERROR").into_response()
        }
        Err(_) => {
            span.in_scope(|| {
                tracing::warn!(timeout_ms = timeout.as_millis() as u64, "Request timed out")
            });
            ApiError::new("REQUEST_TIMEOUT").into_response()
        }
    };
    let took = start.elapsed();
    state.metrics.http(
        route.as_deref().unwrap_or("other"),
        method.as_str(),
        resp.status().as_u16(),
        took,
    );
    let latency_ms = took.as_millis() as u64;
    span.in_scope(|| {
        tracing::debug!(
            status = resp.status().as_u16(),
            latency_ms,
            "Request answered"
        )
    });
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id.hyphenated().to_string()) {
        h.insert("x-request-id", v);
    }
    h.insert("x-latency-ms", HeaderValue::from(latency_ms));
    resp
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;
    use crate::api::AppState;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn a_panicking_handler_is_a_500_envelope_with_the_edge_headers() {
        let db = crate::testing::TestDb::sqlite().expect("test database");
        let crate::store::Database::Sqlite(path) = &db.database else {
            unreachable!()
        };
        let store = Arc::new(SqliteStore::open(path).expect("store"));
        let state = Arc::new(AppState::new(
            store.clone(),
            1024,
            EdgeConfig::default(),
            false,
        ));
        let app: Router = Router::new()
            .route(
                "/boom",
                get(|| async {
                    if true {
                        panic!("boom");
                    }
                    "unreachable"
                }),
            )
            .layer(axum::middleware::from_fn_with_state(state.clone(), edge))
            .with_state(state);
        let resp = app
            .oneshot(
                axum::http::Request::get("/boom")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("answered");
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(resp.headers().get("x-request-id").is_some());
        assert!(resp.headers().get("x-latency-ms").is_some());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["error"]["code"], "INTERNAL_SERVER_ERROR");
        crate::store::Store::close(&*store);
    }

    #[test]
    fn only_uuids_are_taken_from_the_client() {
        let id = "6f1c1e3a-7a3e-4b8e-9f3a-0d2c7b1e9a10";
        assert_eq!(
            client_request_id(Some(&HeaderValue::from_static(id))).map(|u| u.to_string()),
            Some(id.to_owned())
        );
        assert!(client_request_id(Some(&HeaderValue::from_static("abc"))).is_none());
        assert!(client_request_id(None).is_none());
    }
}
