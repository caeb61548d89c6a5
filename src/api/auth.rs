//! The authentication and rate-limit middleware of `/v1/*`, between the edge and the routes.
//!
//! Every `/v1` request needs a valid key, matched route or not (an unknown `/v1/...` path
//! without a key is a 401, as upstream). The key's organization is put in the request for
//! [`Auth`](super::extract::Auth); then the request is counted against its rate-limit bucket:
//! the route template when it is one of [`rate_limit_buckets`](super::rate_limit_buckets)
//! (derived from the route table), `*` otherwise. `X-RateLimit-*` go on every authenticated
//! answer, the 429 included. The result pages ([`is_keyless`](super::is_keyless)) take no key:
//! their URL is the capability, and they are bounded on their own (`api::pages`).
//!
//! Before its store lookup, an unknown key meets the bounds of [`crate::auth`] (a negative
//! cache, and a budget of failed lookups per client address, read from the connection's
//! [`ConnectInfo`] that the listener attaches); a 429 from that budget carries `Retry-After`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::SharedState;
use super::error::ApiError;

pub(crate) async fn authenticate(
    State(state): State<SharedState>,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    if (path == "/v1" || path.starts_with("/v1/")) && !super::is_keyless(path) {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        match state.auth.authenticate(&*state.store, header, peer).await {
            Ok(caller) => {
                let route = req
                    .extensions()
                    .get::<MatchedPath>()
                    .and_then(|m| {
                        super::rate_limit_buckets()
                            .iter()
                            .find(|r| r.as_str() == m.as_str())
                    })
                    .map_or("*", String::as_str);
                let d = state
                    .limiter
                    .check(&caller.key_id, route, caller.rate_limit);
                let mut resp = if d.allowed {
                    req.extensions_mut().insert(caller);
                    next.run(req).await
                } else {
                    tracing::info!(route, limit = d.limit, "Rate limited");
                    ApiError::new("RATE_LIMIT_EXCEEDED").into_response()
                };
                let h = resp.headers_mut();
                h.insert("x-ratelimit-limit", HeaderValue::from(d.limit));
                h.insert("x-ratelimit-remaining", HeaderValue::from(d.remaining));
                return resp;
            }
            Err(e) => return e.into_response(),
        }
    }
    next.run(req).await
}
