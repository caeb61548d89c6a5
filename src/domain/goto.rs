//! Google redirect links (`POST /v1/monitor/google/goto`, reference §1.4): which links the
//! endpoint accepts, and the destinations that can be read from a link without asking Google.
//!
//! Google wraps result links in redirects on its own host. The forms seen in the wild (and in
//! the `redirectLink` fields the SerpApi adapter passes through) carry the destination in the
//! link's own query:
//! - `https://www.google.com/url?sa=t&source=web&rct=j&url=<destination>&ved=…` (today's SERP);
//! - `https://www.google.com/url?q=<destination>&sa=U&ved=…&usg=…` (the no-JavaScript SERP and
//!   older links; some of those also carry an empty `q=` next to `url=`).
//!
//! Reading that parameter is exact, free and needs no network, so it is tried first
//! ([`resolve_locally`]); only a link that carries no usable destination is fetched from Google
//! (`api::goto`). A carried value counts only if it is itself an absolute `http`/`https` URL
//! with a host, so a link can never make the endpoint answer `javascript:`, `data:` or a
//! relative path. Everything here is pure and total: any string in, an answer out, never a
//! panic (a property test below feeds it arbitrary strings).

use serde_json::Value;
use url::Url;

use super::request::{expected_message, unknown_key_errors};
use super::types::FieldError;

/// Longest accepted link, in characters. Real redirect links are a few hundred characters;
/// the bound keeps one request's parsing and the request line sent to Google small.
pub(crate) const MAX_GOTO_URL_CHARS: usize = 8_192;

/// How many redirect links nested inside one another (`/url?q=https://www.google.com/url?q=…`)
/// are unwrapped locally before giving up on the local reading.
const MAX_NESTED: usize = 4;

/// Why a `url` was refused (a 400 `VALIDATION_ERROR` on field `url`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GotoRejection {
    /// Empty.
    Empty,
    /// Longer than [`MAX_GOTO_URL_CHARS`].
    TooLong,
    /// Not an absolute `http`/`https` URL.
    Malformed,
    /// Not `google.com` / `www.google.com` (or with a port or credentials).
    Host,
    /// Not `/goto` or `/url`.
    Path,
}

impl GotoRejection {
    /// The field message of the 400 (part of the wire format).
    pub(crate) fn message(self) -> &'static str {
        match self {
            GotoRejection::Empty => "url cannot be empty",
            GotoRejection::TooLong => "url is too long (max 8,192 characters)",
            GotoRejection::Malformed => super::google_url::MSG_BAD_HTTP_URL,
            GotoRejection::Host => {
                "url must be a Google redirect link on google.com or www.google.com (no port, no credentials)"
            }
            GotoRejection::Path => "url path must be /goto or /url",
        }
    }
}

/// Parses a goto request body `{"url": "..."}`: every invalid field listed, in the wording of
/// the other validators (zod's `Invalid input: expected …`, `Unrecognized key "…"`).
pub(crate) fn parse_goto_request(body: &Value) -> Result<Url, Vec<FieldError>> {
    let Some(obj) = body.as_object() else {
        return Err(vec![FieldError::new(
            "",
            expected_message("object", Some(body)),
        )]);
    };
    let mut errors = Vec::new();
    unknown_key_errors(&mut errors, obj, &["url"], "");
    let link = match obj.get("url") {
        Some(Value::String(raw)) => match parse_goto_link(raw) {
            Ok(link) => Some(link),
            Err(why) => {
                errors.push(FieldError::new("url", why.message()));
                None
            }
        },
        other => {
            errors.push(FieldError::new("url", expected_message("string", other)));
            None
        }
    };
    match link {
        Some(link) if errors.is_empty() => Ok(link),
        _ => Err(errors),
    }
}

/// Parses the `url` of a goto request: an absolute `http(s)` URL on `google.com` or
/// `www.google.com` (default port, no credentials) whose path is `/goto` or `/url`.
pub(crate) fn parse_goto_link(raw: &str) -> Result<Url, GotoRejection> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(GotoRejection::Empty);
    }
    if raw.chars().count() > MAX_GOTO_URL_CHARS {
        return Err(GotoRejection::TooLong);
    }
    let url = absolute_http(raw).ok_or(GotoRejection::Malformed)?;
    if !is_google_host(&url) || url.port().is_some() || has_credentials(&url) {
        return Err(GotoRejection::Host);
    }
    if !is_redirect_path(&url) {
        return Err(GotoRejection::Path);
    }
    Ok(url)
}

/// True if `url` is a Google redirect link of the accepted form (the check of
/// [`parse_goto_link`] on an already parsed URL, used on `Location` answers).
pub(crate) fn is_goto_link(url: &Url) -> bool {
    matches!(url.scheme(), "http" | "https")
        && is_google_host(url)
        && url.port().is_none()
        && !has_credentials(url)
        && is_redirect_path(url)
}

/// What to do with an accepted link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// The destination, read from the link itself.
    Destination(Url),
    /// No usable destination in the link: ask Google about this link (the innermost redirect
    /// link when several were nested).
    Fetch(Url),
}

/// Reads the destination a redirect link carries in its query (`url=` first, then `q=`: the
/// old form sends an empty `q=` next to the real `url=`), unwrapping nested redirect links up
/// to [`MAX_NESTED`] deep.
pub(crate) fn resolve_locally(link: &Url) -> Resolution {
    let mut current = link.clone();
    for _ in 0..MAX_NESTED {
        match carried_destination(&current) {
            Some(next) if is_goto_link(&next) => current = next,
            Some(dest) => return Resolution::Destination(dest),
            None => return Resolution::Fetch(current),
        }
    }
    Resolution::Fetch(current)
}

/// The first `url` or `q` value of the link's query that is an absolute `http(s)` URL.
fn carried_destination(link: &Url) -> Option<Url> {
    ["url", "q"].iter().find_map(|key| {
        link.query_pairs()
            .filter(|(k, _)| k == key)
            .find_map(|(_, v)| absolute_http(v.trim()))
    })
}

/// `raw` as an absolute `http`/`https` URL with a non-empty host, else `None`.
pub(crate) fn absolute_http(raw: &str) -> Option<Url> {
    let url = Url::parse(raw).ok()?;
    let has_host = url.host_str().is_some_and(|h| !h.is_empty());
    (matches!(url.scheme(), "http" | "https") && has_host).then_some(url)
}

/// True for Google's rate-limit interstitial (`/sorry/…`), which is where Google redirects a
/// client it suspects of scraping: never a destination.
pub(crate) fn is_google_interstitial(url: &Url) -> bool {
    is_google_host(url) && (url.path() == "/sorry" || url.path().starts_with("/sorry/"))
}

fn is_google_host(url: &Url) -> bool {
    matches!(url.host_str(), Some("google.com" | "www.google.com"))
}

fn is_redirect_path(url: &Url) -> bool {
    matches!(url.path(), "/url" | "/goto")
}

fn has_credentials(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn link(s: &str) -> Url {
        parse_goto_link(s).expect("an accepted link")
    }

    fn dest(s: &str) -> Option<String> {
        match resolve_locally(&link(s)) {
            Resolution::Destination(d) => Some(d.to_string()),
            Resolution::Fetch(_) => None,
        }
    }

    #[test]
    fn serp_links_with_url_are_decoded_locally() {
        assert_eq!(
            dest("https://www.google.com/url?sa=t&source=web&rct=j&url=https://www.cafe-creme.example/meilleures-machines&ved=2ahUKE").as_deref(),
            Some("https://www.cafe-creme.example/meilleures-machines")
        );
    }

    #[test]
    fn no_javascript_links_with_q_are_decoded_locally_and_percent_decoded() {
        assert_eq!(
            dest("https://www.google.com/url?q=https%3A%2F%2Fexample.com%2Fa%3Fb%3D1%26c%3D2&sa=U&ved=x&usg=y").as_deref(),
            Some("https://example.com/a?b=1&c=2")
        );
    }

    #[test]
    fn an_empty_q_next_to_url_does_not_hide_the_destination() {
        assert_eq!(
            dest("http://google.com/url?sa=t&rct=j&q=&esrc=s&url=http%3A%2F%2Fexample.org%2F")
                .as_deref(),
            Some("http://example.org/")
        );
    }

    #[test]
    fn goto_links_carrying_url_are_decoded_locally() {
        assert_eq!(
            dest("https://www.google.com/goto?url=https://example.com/x").as_deref(),
            Some("https://example.com/x")
        );
    }

    #[test]
    fn carried_values_that_are_not_absolute_http_urls_are_ignored() {
        for l in [
            "https://www.google.com/url?q=javascript:alert(1)",
            "https://www.google.com/url?q=/search?q=x",
            "https://www.google.com/url?url=data:text/html,hi",
            "https://www.google.com/url?q=related:example.com",
            "https://www.google.com/url?q=https://",
            "https://www.google.com/goto?id=abc",
        ] {
            assert_eq!(dest(l), None, "{l}");
        }
    }

    #[test]
    fn nested_redirect_links_are_unwrapped() {
        let inner = "https://www.google.com/url?q=https://example.com/deep";
        let outer = format!(
            "https://www.google.com/url?url={}",
            url::form_urlencoded::byte_serialize(inner.as_bytes()).collect::<String>()
        );
        assert_eq!(dest(&outer).as_deref(), Some("https://example.com/deep"));
        // A nested link without a destination is the one to fetch.
        let outer = "https://www.google.com/url?q=https%3A%2F%2Fwww.google.com%2Fgoto%3Fid%3D7";
        assert_eq!(
            resolve_locally(&link(outer)),
            Resolution::Fetch(Url::parse("https://www.google.com/goto?id=7").expect("url"))
        );
    }

    #[test]
    fn only_google_hosts_and_redirect_paths_are_accepted() {
        use GotoRejection::*;
        let cases = [
            ("", Empty),
            ("   ", Empty),
            ("not a url", Malformed),
            ("/url?q=https://example.com", Malformed),
            ("ftp://www.google.com/url?q=x", Malformed),
            ("https://evil.example/url?q=https://example.com", Host),
            ("https://google.co.uk/url?q=https://example.com", Host),
            ("https://www.google.com.evil.example/url", Host),
            ("https://maps.google.com/url?q=https://example.com", Host),
            (
                "https://www.google.com:8443/url?q=https://example.com",
                Host,
            ),
            (
                "https://user:pw@www.google.com/url?q=https://example.com",
                Host,
            ),
            ("https://www.google.com/search?q=x", Path),
            ("https://www.google.com/url/?q=x", Path),
            ("https://www.google.com/", Path),
        ];
        for (raw, why) in cases {
            assert_eq!(parse_goto_link(raw), Err(why), "{raw:?}");
        }
        for ok in [
            "https://www.google.com/url?q=https://example.com",
            "http://google.com/goto",
            "HTTPS://WWW.GOOGLE.COM/url",
            "https://www.google.com:443/url",
        ] {
            assert!(parse_goto_link(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn bodies_list_every_invalid_field_in_zods_wording() {
        use serde_json::json;
        let errs = |v: serde_json::Value| -> Vec<(String, String)> {
            parse_goto_request(&v)
                .expect_err("refused")
                .into_iter()
                .map(|e| (e.field, e.message))
                .collect()
        };
        assert_eq!(
            errs(json!({})),
            vec![(
                "url".into(),
                "Invalid input: expected string, received undefined".into()
            )]
        );
        assert_eq!(
            errs(json!({ "url": 5 })),
            vec![(
                "url".into(),
                "Invalid input: expected string, received number".into()
            )]
        );
        assert_eq!(
            errs(json!({ "url": "https://www.google.com/url?q=https://a.example", "x": 1 })),
            vec![("x".into(), "Unrecognized key \"x\"".into())]
        );
        assert_eq!(
            errs(json!([])),
            vec![(
                "".into(),
                "Invalid input: expected object, received array".into()
            )]
        );
        assert!(parse_goto_request(&json!({ "url": "https://www.google.com/goto" })).is_ok());
    }

    #[test]
    fn overlong_links_are_refused_before_parsing() {
        let long = format!(
            "https://www.google.com/url?q={}",
            "a".repeat(MAX_GOTO_URL_CHARS)
        );
        assert_eq!(parse_goto_link(&long), Err(GotoRejection::TooLong));
    }

    #[test]
    fn googles_rate_limit_page_is_recognised() {
        let sorry = Url::parse("https://www.google.com/sorry/index?continue=x").expect("url");
        assert!(is_google_interstitial(&sorry));
        let maps = Url::parse("https://www.google.com/maps/place/x").expect("url");
        assert!(!is_google_interstitial(&maps));
    }

    proptest! {
        #[test]
        fn parsing_and_decoding_never_panic(s in ".{0,300}") {
            if let Ok(l) = parse_goto_link(&s) {
                let _ = resolve_locally(&l);
            }
            let _ = absolute_http(&s);
        }

        #[test]
        fn decoded_destinations_are_absolute_http_urls(
            q in "[ -~]{0,120}",
            key in prop::sample::select(vec!["q", "url", "x"]),
            path in prop::sample::select(vec!["/url", "/goto"]),
        ) {
            let encoded: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
            let raw = format!("https://www.google.com{path}?{key}={encoded}");
            let l = parse_goto_link(&raw).expect("accepted");
            match resolve_locally(&l) {
                Resolution::Destination(d) => {
                    prop_assert!(matches!(d.scheme(), "http" | "https"));
                    prop_assert!(d.host_str().is_some());
                    prop_assert!(!is_goto_link(&d));
                }
                Resolution::Fetch(f) => prop_assert!(is_goto_link(&f)),
            }
        }
    }
}
