//! What every real adapter shares when it calls its provider over HTTP: a client with no
//! redirects and no proxies from the environment, a time limit, response bodies read up to a
//! bound, and one classification of HTTP failures into [`EngineError`] kinds.
//!
//! The classification (each adapter may refine it with what its provider's error body says,
//! e.g. OpenAI's `insufficient_quota` or SerpApi's "run out of searches"):
//! * 429 → [`EngineError::RateLimited`], with the wait the provider announced (`Retry-After` in
//!   seconds or as an HTTP date, else the `x-ratelimit-reset-*` headers), so the engine can
//!   pause instead of spending the task's attempts;
//! * 401, 403 → [`EngineError::Unauthorized`]: the key is wrong or has no access; the engine
//!   must stop calling, not fail its queue;
//! * 408, 5xx, a timeout, a connection failure, a body that is not the JSON the adapter
//!   expects → [`EngineError::Retryable`];
//! * any other 4xx → [`EngineError::Fatal`] with `BAD_REQUEST`-like meaning: the request itself
//!   is wrong and retrying cannot help; the provider's message is kept.
//!
//! Secrets: the API key goes only into the request (a header, or SerpApi's query parameter).
//! Transport errors are rendered without their URL ([`reqwest::Error::without_url`]), and
//! [`redact`] removes the key from any text that leaves an adapter, so it cannot reach a log,
//! a task's `response.error` or `rawResponse`.

use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::EngineError;

/// Largest upstream response body read (larger answers fail the attempt, retryably).
pub(crate) const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// An HTTP client for one engine: `timeout` for the whole exchange, no redirects, no proxies
/// from the environment.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// A response read whole (up to [`MAX_BODY_BYTES`]).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Sends `request` and reads the answer up to `max_body` bytes. Transport failures and an
/// oversized body are retryable; `secret` is removed from every message.
pub(crate) async fn send(
    request: reqwest::RequestBuilder,
    max_body: usize,
    secret: &str,
) -> Result<Reply, EngineError> {
    let mut resp = request.send().await.map_err(|e| {
        let what = if e.is_timeout() {
            "the upstream did not answer in time"
        } else {
            "cannot reach the upstream"
        };
        EngineError::Retryable(redact(&format!("{what}: {}", e.without_url()), secret))
    })?;
    let status = resp.status();
    let headers = resp.headers().clone();
    if resp
        .content_length()
        .is_some_and(|n| n > max_body as u64)
    {
        return Err(EngineError::Retryable(format!(
            "the upstream's answer is larger than {max_body} bytes"
        )));
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > max_body {
                    return Err(EngineError::Retryable(format!(
                        "the upstream's answer is larger than {max_body} bytes"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                return Err(EngineError::Retryable(redact(
                    &format!("reading the upstream's answer: {}", e.without_url()),
                    secret,
                )));
            }
        }
    }
    Ok(Reply {
        status,
        headers,
        body: Bytes::from(body),
    })
}

/// The error kind of a non-2xx answer, with `message` (the provider's own words, when the
/// adapter could read them) kept.
pub(crate) fn classify(
    status: StatusCode,
    headers: &HeaderMap,
    message: String,
    secret: &str,
) -> EngineError {
    let message = redact(&message, secret);
    match status.as_u16() {
        429 => EngineError::RateLimited {
            retry_after: retry_after(headers),
            message,
        },
        401 | 403 => EngineError::Unauthorized { message },
        408 | 500..=599 => EngineError::Retryable(format!("upstream answered {status}: {message}")),
        _ => EngineError::Fatal {
            code: "UPSTREAM_REJECTED_REQUEST".into(),
            message,
        },
    }
}

/// How long the provider asked us to wait: `Retry-After` (seconds, or an HTTP date), else the
/// earliest `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` / `x-ratelimit-reset`
/// (OpenAI's durations such as `1s`, `6m0s`, `20ms`, or plain seconds).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(v) = header("retry-after") {
        let v = v.trim();
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(secs) = v.parse::<f64>()
            && secs.is_finite()
            && secs >= 0.0
        {
            return Some(Duration::from_secs_f64(secs));
        }
        if let Ok(at) = time::OffsetDateTime::parse(
            v,
            &time::format_description::well_known::Rfc2822,
        ) {
            let wait = at - time::OffsetDateTime::now_utc();
            return Some(Duration::try_from(wait).unwrap_or(Duration::ZERO));
        }
    }
    [
        "x-ratelimit-reset-requests",
        "x-ratelimit-reset-tokens",
        "x-ratelimit-reset",
    ]
    .into_iter()
    .filter_map(|name| header(name).and_then(parse_go_duration))
    .min()
}

/// `1s`, `6m0s`, `1h2m3.5s`, `20ms`, or plain seconds (`12`, `0.5`).
fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let value: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return None;
        };
        total += value * unit;
        rest = &rest[len..];
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total))
}

/// `text` with every occurrence of `secret` replaced (a no-op for an empty secret).
pub(crate) fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_owned()
    } else {
        text.replace(secret, "[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    #[test]
    fn retry_after_reads_seconds_then_the_reset_headers() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "7")])),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            retry_after(&headers(&[
                ("x-ratelimit-reset-requests", "6m0s"),
                ("x-ratelimit-reset-tokens", "1.5s")
            ])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset-requests", "20ms")])),
            Some(Duration::from_millis(20))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn statuses_map_onto_the_error_kinds() {
        let h = headers(&[("retry-after", "3")]);
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h, "slow down".into(), "k"),
            EngineError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(3)
        ));
        assert!(matches!(
            classify(StatusCode::UNAUTHORIZED, &h, "bad key".into(), "k"),
            EngineError::Unauthorized { .. }
        ));
        assert!(matches!(
            classify(StatusCode::BAD_GATEWAY, &h, "oops".into(), "k"),
            EngineError::Retryable(_)
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &h, "unknown field".into(), "k"),
            EngineError::Fatal { .. }
        ));
    }

    #[test]
    fn the_key_never_survives_in_a_message() {
        let e = classify(
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            "Incorrect API key provided: sk-secret123".into(),
            "sk-secret123",
        );
        assert!(!format!("{e:?}").contains("sk-secret123"), "{e:?}");
    }
}
