//! `POST /v1/monitor/google/goto` (reference §1.4): one Google redirect link in, its
//! destination out, as `200 {"url": "…"}` (no `success` wrapper).
//!
//! How a link is resolved, cheapest first:
//! 1. **Locally.** Most links carry their destination in their own query (`url=` or `q=`,
//!    see [`crate::domain::goto`]); reading it needs no network and is exact.
//! 2. **One request to Google.** Otherwise the link is fetched (`GET`, no redirect followed
//!    automatically) and the destination is the `Location` of Google's 3xx answer, resolved
//!    against the link. When that `Location` is itself a Google redirect link, it is read
//!    locally, or fetched in turn: following no more than the one redirect, so a chain of
//!    Google hops cannot hold a request. Google gets [`GotoConfig::timeout`] (10 s) for the
//!    whole resolution.
//!
//! Any failure of step 2 (a network error, the time limit, an answer that is not a redirect,
//! no usable `Location`, Google's rate-limit page, a refused address) is a
//! `502 EXTERNAL_SERVICE_ERROR` with `details.service = "google"`; the cause is logged, not
//! sent. The request goes through the webhooks' address guard
//! ([`crate::webhooks::ssrf`]): Google's name must resolve to a public address, unless
//! `--allow-private-webhooks` lifts the guard (tests, private networks).
//!
//! The endpoint is free: no credits, no concurrency slot, no `X-Concurrency-*` headers. It is
//! rate-limited like every `/v1` route (its bucket comes from the route table).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header::LOCATION;
use serde_json::json;
use url::Url;

use super::SharedState;
use super::error::ApiError;
use super::extract::{Auth, JsonBody};
use crate::domain::goto::{
    Resolution, absolute_http, is_google_interstitial, is_goto_link, parse_goto_request,
    resolve_locally,
};
use crate::webhooks::ssrf;
use crate::wire::{ErrorEnvelope, GotoRequest, GotoResponse};

/// Settings of the goto resolver (`ServeOptions::goto`).
#[derive(Debug, Clone)]
pub struct GotoConfig {
    /// How long Google gets for a whole resolution (reference §4: 10 s).
    pub timeout: Duration,
    /// Tests only, never set from the command line: send the requests meant for Google to this
    /// origin (`http://localhost:PORT`) instead of the link's, keeping the link's path and
    /// query, so tests can play Google on loopback. `Location`s are still resolved against
    /// the link itself.
    pub origin_override: Option<String>,
}

impl Default for GotoConfig {
    fn default() -> Self {
        GotoConfig {
            timeout: Duration::from_secs(10),
            origin_override: None,
        }
    }
}

/// Resolves links that need Google (step 2 of the module docs).
pub(crate) struct GotoResolver {
    timeout: Duration,
    origin: Option<Url>,
    allow_private: bool,
    /// Built on first use, so that building the server's state cannot fail on it.
    client: tokio::sync::OnceCell<reqwest::Client>,
}

/// Why a resolution failed (logged; the client gets the 502 envelope).
type Failure = String;

impl GotoResolver {
    /// A resolver for `cfg`; `allow_private` is `--allow-private-webhooks`. Fails only on an
    /// override origin that is not an absolute http(s) URL.
    pub(crate) fn new(cfg: &GotoConfig, allow_private: bool) -> Result<GotoResolver, String> {
        let origin = match &cfg.origin_override {
            None => None,
            Some(o) => {
                Some(absolute_http(o).ok_or_else(|| format!("bad goto origin override {o:?}"))?)
            }
        };
        Ok(GotoResolver {
            timeout: cfg.timeout,
            origin,
            allow_private,
            client: tokio::sync::OnceCell::new(),
        })
    }

    /// The default resolver (real Google, 10 s).
    pub(crate) fn google(allow_private: bool) -> GotoResolver {
        GotoResolver {
            timeout: GotoConfig::default().timeout,
            origin: None,
            allow_private,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// The destination of an accepted link.
    pub(crate) async fn resolve(&self, link: &Url) -> Result<Url, Failure> {
        let first = match resolve_locally(link) {
            Resolution::Destination(d) => return Ok(d),
            Resolution::Fetch(l) => l,
        };
        tokio::time::timeout(self.timeout, self.fetch_destination(&first))
            .await
            .map_err(|_| format!("Google did not answer within {:?}", self.timeout))?
    }

    /// Step 2: at most two requests, the second only for a Google redirect link.
    async fn fetch_destination(&self, link: &Url) -> Result<Url, Failure> {
        let client = self.client().await?;
        let next = self.location(client, link).await?;
        if !is_goto_link(&next) {
            return final_destination(next);
        }
        let second = match resolve_locally(&next) {
            Resolution::Destination(d) => return Ok(d),
            Resolution::Fetch(l) => l,
        };
        let last = self.location(client, &second).await?;
        if is_goto_link(&last) {
            return match resolve_locally(&last) {
                Resolution::Destination(d) => Ok(d),
                Resolution::Fetch(l) => Err(format!("Google redirected once more, to {l}")),
            };
        }
        final_destination(last)
    }

    async fn client(&self) -> Result<&reqwest::Client, Failure> {
        let allow_private = self.allow_private;
        let timeout = self.timeout;
        self.client
            .get_or_try_init(|| async move {
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .no_proxy()
                    .timeout(timeout)
                    .connect_timeout(timeout.min(Duration::from_secs(5)))
                    .dns_resolver(Arc::new(ssrf::FilteringResolver { allow_private }))
                    .user_agent(concat!("cloro-goto/", env!("CARGO_PKG_VERSION")))
                    .build()
            })
            .await
            .map_err(|e| format!("building the HTTP client: {}", chain(&e)))
    }

    /// One `GET` of `link`: the `Location` of a 3xx answer, resolved against the link.
    async fn location(&self, client: &reqwest::Client, link: &Url) -> Result<Url, Failure> {
        let target = match &self.origin {
            None => link.clone(),
            Some(origin) => {
                let mut t = origin.clone();
                t.set_path(link.path());
                t.set_query(link.query());
                t
            }
        };
        if !self.allow_private && ssrf::is_refused_address_literal(&target) {
            return Err(format!("{target} is a refused (private) address"));
        }
        let resp = client
            .get(target.clone())
            .send()
            .await
            .map_err(|e| format!("GET {target}: {}", chain(&e)))?;
        let status = resp.status();
        if !status.is_redirection() {
            return Err(format!("Google answered {status} without a redirect"));
        }
        let location = resp
            .headers()
            .get(LOCATION)
            .ok_or_else(|| format!("Google answered {status} without a Location"))?;
        let location = std::str::from_utf8(location.as_bytes())
            .map_err(|_| "Google's Location is not UTF-8".to_owned())?;
        link.join(location.trim())
            .map_err(|e| format!("Google's Location {location:?} is not a URL: {e}"))
    }
}

/// A `Location` that ends the resolution: an absolute http(s) URL, and not Google's
/// rate-limit page (a redirect there means Google refused to answer).
fn final_destination(url: Url) -> Result<Url, Failure> {
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!("Google redirected to a non-http(s) URL: {url}"));
    }
    if is_google_interstitial(&url) {
        return Err("Google answered with its rate-limit page".to_owned());
    }
    Ok(url)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// The 502 of a failed resolution (reference §1.2).
fn google_failed() -> ApiError {
    ApiError::new("EXTERNAL_SERVICE_ERROR")
        .message("goto resolve request failed")
        .details(json!({ "service": "google" }))
}

/// Resolves one Google redirect link. Free, and takes no concurrency slot.
#[utoipa::path(post, path = "/v1/monitor/google/goto", tag = "monitor", operation_id = "resolveGoogleGoto",
    summary = "Resolve one Google redirect link to its destination",
    description = "Takes a Google redirect link (`https://www.google.com/url?…` or `/goto?…`, the `redirectLink` of Google, Google News and AI Mode results) and answers its destination. A destination carried in the link itself (`url=` or `q=`) is read without contacting Google; otherwise Google is asked once (10 s limit), following no more than the one redirect. Free: no credits, no concurrency slot.",
    request_body(content = GotoRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The destination (no `success` wrapper)", body = GotoResponse),
        (status = 400, description = "VALIDATION_ERROR: `url` missing, not a string, not a Google `/url` or `/goto` link on google.com or www.google.com, or an unknown field; `details` lists every invalid field", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorEnvelope),
        (status = 502, description = "EXTERNAL_SERVICE_ERROR (`details.service` = `google`): Google failed, timed out or did not redirect", body = ErrorEnvelope),
    ))]
pub(crate) async fn resolve(
    State(s): State<SharedState>,
    Auth(_caller): Auth,
    JsonBody(body): JsonBody,
) -> Result<Json<GotoResponse>, ApiError> {
    let link = parse_goto_request(&body).map_err(|e| ApiError::validation(&e))?;
    match s.goto.resolve(&link).await {
        Ok(dest) => Ok(Json(GotoResponse {
            url: dest.to_string(),
        })),
        Err(cause) => {
            tracing::warn!(error = %cause, "Goto resolution failed");
            Err(google_failed())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake Google on loopback answering every request with `status` and `location`.
    async fn fake_google(status: u16, location: Option<&'static str>) -> String {
        let app = axum::Router::new().fallback(move || async move {
            let mut resp = axum::response::Response::new(axum::body::Body::empty());
            *resp.status_mut() = axum::http::StatusCode::from_u16(status).expect("status");
            if let Some(l) = location {
                resp.headers_mut()
                    .insert(LOCATION, axum::http::HeaderValue::from_static(l));
            }
            resp
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://localhost:{}", addr.port())
    }

    fn resolver(origin: String, allow_private: bool) -> GotoResolver {
        let cfg = GotoConfig {
            timeout: Duration::from_secs(2),
            origin_override: Some(origin),
        };
        GotoResolver::new(&cfg, allow_private).expect("resolver")
    }

    fn link(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    #[tokio::test]
    async fn a_redirect_is_the_destination_and_relative_locations_resolve_against_the_link() {
        let origin = fake_google(302, Some("https://example.com/dest")).await;
        let r = resolver(origin, true);
        let d = r
            .resolve(&link("https://www.google.com/goto?id=1"))
            .await
            .expect("resolved");
        assert_eq!(d.as_str(), "https://example.com/dest");
        // A relative Location naming another redirect link carrying its destination.
        let origin = fake_google(301, Some("/url?q=https://example.org/x")).await;
        let r = resolver(origin, true);
        let d = r
            .resolve(&link("https://www.google.com/goto?id=2"))
            .await
            .expect("resolved");
        assert_eq!(d.as_str(), "https://example.org/x");
    }

    #[tokio::test]
    async fn answers_that_are_not_usable_redirects_fail() {
        for (status, location) in [
            (200, None),
            (302, None),
            (302, Some("javascript:alert(1)")),
            (302, Some("https://www.google.com/sorry/index?continue=x")),
            // Google redirecting to a redirect link without destination, which redirects to
            // itself again: one hop more than allowed.
            (302, Some("https://www.google.com/goto?id=loop")),
        ] {
            let origin = fake_google(status, location).await;
            let r = resolver(origin, true);
            let res = r.resolve(&link("https://www.google.com/goto?id=1")).await;
            assert!(res.is_err(), "{status} {location:?}: {res:?}");
        }
    }

    #[tokio::test]
    async fn loopback_is_refused_without_allow_private() {
        let origin = fake_google(302, Some("https://example.com/dest")).await;
        let r = resolver(origin.clone(), false);
        let err = r
            .resolve(&link("https://www.google.com/goto?id=1"))
            .await
            .expect_err("refused");
        assert!(err.contains("refused"), "{err}");
        let literal = origin.replace("localhost", "127.0.0.1");
        let err = resolver(literal, false)
            .resolve(&link("https://www.google.com/goto?id=1"))
            .await
            .expect_err("refused");
        assert!(err.contains("refused"), "{err}");
    }

    #[tokio::test]
    async fn links_carrying_their_destination_never_reach_the_network() {
        // An origin nothing listens on: only a local reading can succeed.
        let r = resolver("http://localhost:9".into(), false);
        let d = r
            .resolve(&link(
                "https://www.google.com/url?sa=t&url=https%3A%2F%2Fexample.com%2Fa",
            ))
            .await
            .expect("resolved locally");
        assert_eq!(d.as_str(), "https://example.com/a");
    }
}
