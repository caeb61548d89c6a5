//! Result pages that cloro serves itself (`include.html`, issue 10): the links a result carries
//! and how a request for one is recognised.
//!
//! A result asked with `include.html` carries links of the form
//! `{public_url}/v1/pages/{org}/{task_id}/{token}/page-{n}.html` (chat types: one string;
//! GOOGLE and GOOGLE_NEWS: an array, one per page). `token` is 128 random bits (32 lowercase
//! hex digits) drawn by the dispatcher for each attempt ([`PageLinks::new`]); it is not stored
//! anywhere but in the result itself. Serving a page (`api::pages`) loads the task's STORED
//! result and accepts the request only when its path is one of the result's own links (the
//! token compared in constant time): the link is a capability, like a presigned URL, it
//! expires with the task's retention, and nothing is stored for it.
//!
//! `org` is the organization's internal key (an integer): it only routes the lookup to the
//! right organization (`Store::get_task(org, id)`); the token is what grants access.
//!
//! [`PublicUrl`] is the base of every link (`serve --public-url`, default `http://{listen}`),
//! checked at start-up. [`render`] turns a stored result into a self-contained HTML document.

pub(crate) mod render;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde_json::Value;
use uuid::Uuid;

use crate::domain::apikey::constant_time_eq;
use crate::store::OrgKey;

/// The path prefix of every page link (after the public URL's own path).
pub(crate) const PAGES_PREFIX: &str = "/v1/pages/";

/// Most pages one result links to (Google's `pages` is 1–10).
pub(crate) const MAX_PAGE: usize = 10;

/// The base of the links cloro puts in results: an absolute `http` or `https` URL without a
/// query, a fragment or credentials, kept without a trailing slash.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicUrl(String);

impl PublicUrl {
    /// Checks `s` (`serve --public-url`).
    pub fn parse(s: &str) -> Result<PublicUrl, String> {
        let s = s.trim();
        let url = url::Url::parse(s).map_err(|e| format!("invalid public URL {s:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "invalid public URL {s:?}: the scheme must be http or https"
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!("invalid public URL {s:?}: it has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() || s.contains(['?', '#']) {
            return Err(format!(
                "invalid public URL {s:?}: it must not have a query or a fragment"
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "invalid public URL {s:?}: it must not carry credentials"
            ));
        }
        let text = url.as_str().trim_end_matches('/').to_owned();
        Ok(PublicUrl(text))
    }

    /// `http://{addr}`: the default, the address the server listens on.
    pub fn for_listen(addr: SocketAddr) -> PublicUrl {
        PublicUrl(format!("http://{addr}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host (and port) of the base, as in a URL's authority.
    pub fn host(&self) -> Option<String> {
        let url = url::Url::parse(&self.0).ok()?;
        let host = url.host_str()?.to_owned();
        Some(match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        })
    }
}

impl Default for PublicUrl {
    /// The default listen address's URL (`serve` replaces it with the real one).
    fn default() -> Self {
        PublicUrl("http://127.0.0.1:8080".to_owned())
    }
}

impl FromStr for PublicUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PublicUrl::parse(s)
    }
}

impl fmt::Debug for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How result pages are linked and served (`serve` flags).
#[derive(Debug, Clone)]
pub struct PagesConfig {
    /// `--public-url`; `None`: `http://{the bound listen address}`.
    pub public_url: Option<PublicUrl>,
    /// `--page-rate-limit`: page requests per second served, over all clients (pages need no
    /// key, so there is no per-key bucket); more are answered 429.
    pub rate_limit: u32,
    /// Page requests answered at once; more are answered 503 at once rather than queued.
    pub max_in_flight: usize,
}

impl Default for PagesConfig {
    fn default() -> Self {
        PagesConfig {
            public_url: None,
            rate_limit: DEFAULT_PAGE_RATE_LIMIT,
            max_in_flight: 32,
        }
    }
}

/// The default of `--page-rate-limit`.
pub const DEFAULT_PAGE_RATE_LIMIT: u32 = 200;

/// The page links of one attempt of one task: an engine asks it for the URL of page `n`.
#[derive(Clone, PartialEq, Eq)]
pub struct PageLinks {
    /// `{public_url}/v1/pages/{org}/{task_id}/{token}`.
    prefix: String,
}

impl PageLinks {
    /// The links of a new attempt, with a fresh random token.
    pub(crate) fn new(base: &PublicUrl, org: OrgKey, task: Uuid) -> PageLinks {
        PageLinks::with_token(base, org, task, &new_token())
    }

    /// The links with a given token (tests, golden results).
    pub(crate) fn with_token(base: &PublicUrl, org: OrgKey, task: Uuid, token: &str) -> PageLinks {
        PageLinks {
            prefix: format!("{}{PAGES_PREFIX}{org}/{task}/{token}", base.as_str()),
        }
    }

    /// Fixed links for tests of engines: `http://127.0.0.1:8080/v1/pages/1/<nil>/000…0`.
    #[cfg(test)]
    pub(crate) fn fixed() -> PageLinks {
        PageLinks::with_token(&PublicUrl::default(), 1, Uuid::nil(), &"0".repeat(32))
    }

    /// The URL of page `page` (1-based).
    pub fn url(&self, page: usize) -> String {
        format!("{}/page-{page}.html", self.prefix)
    }

    /// The Google-family `html` value: one URL per page, `1..=pages`.
    pub(crate) fn urls(&self, pages: usize) -> Value {
        Value::Array(
            (1..=pages.clamp(1, MAX_PAGE))
                .map(|p| Value::String(self.url(p)))
                .collect(),
        )
    }
}

impl fmt::Debug for PageLinks {
    /// Without the token: it is a capability.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.prefix.rsplit_once('/').map_or("", |(head, _)| head);
        write!(f, "PageLinks({shown}/…)")
    }
}

/// `path` as it may be logged: a page path with its token replaced by `…` (the token is a
/// capability; logs must not grant access to the pages).
pub(crate) fn loggable_path(path: &str) -> std::borrow::Cow<'_, str> {
    let Some(tail) = path.strip_prefix(PAGES_PREFIX) else {
        return path.into();
    };
    let parts: Vec<&str> = tail.splitn(4, '/').collect();
    match parts.as_slice() {
        [org, task, _token, rest] => format!("{PAGES_PREFIX}{org}/{task}/…/{rest}").into(),
        [org, task, _token] => format!("{PAGES_PREFIX}{org}/{task}/…").into(),
        _ => path.into(),
    }
}

/// 128 random bits as 32 lowercase hex digits (the thread RNG is a CSPRNG seeded by the OS).
fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A page request, read from the path after [`PAGES_PREFIX`]:
/// `{org}/{task_id}/{token}/page-{n}.html`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageRef<'a> {
    pub(crate) org: OrgKey,
    pub(crate) task: Uuid,
    pub(crate) token: &'a str,
    pub(crate) page: usize,
}

impl<'a> PageRef<'a> {
    /// The parts of a page path, checked for shape only (no store access): a positive integer
    /// org, a UUID, 32 lowercase hex digits, `page-N.html` with N in 1..=10 (no leading zero).
    pub(crate) fn from_parts(org: &str, task: &str, token: &'a str, page: &str) -> Option<Self> {
        let org = (!org.is_empty() && org.len() <= 19 && org.bytes().all(|b| b.is_ascii_digit()))
            .then(|| org.parse::<OrgKey>().ok())
            .flatten()
            .filter(|o| *o > 0)?;
        let task = (task.len() == 36)
            .then(|| Uuid::parse_str(task).ok())
            .flatten()?;
        let token_ok = token.len() == 32
            && token
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !token_ok {
            return None;
        }
        let n = page.strip_prefix("page-")?.strip_suffix(".html")?;
        if n.is_empty()
            || n.len() > 2
            || n.starts_with('0')
            || !n.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let page = n
            .parse::<usize>()
            .ok()
            .filter(|p| (1..=MAX_PAGE).contains(p))?;
        Some(PageRef {
            org,
            task,
            token,
            page,
        })
    }

    /// A page link's path tail (after the last [`PAGES_PREFIX`] of `url`).
    fn of_link(url: &'a str) -> Option<Self> {
        let (_, tail) = url.rsplit_once(PAGES_PREFIX)?;
        let mut parts = tail.split('/');
        let (org, task, token, page) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        PageRef::from_parts(org, task, token, page)
    }

    /// Whether `self` is one of the result's `html` links (a string or an array of strings):
    /// the same organization, task and page, and the same token, compared in constant time.
    /// The public URL the link was made with does not matter (an operator may move it).
    pub(crate) fn is_linked_from(&self, result: &Value) -> bool {
        let links: Vec<&str> = match result.get("html") {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => return false,
        };
        let mut found = false;
        for link in links {
            if let Some(l) = PageRef::of_link(link) {
                let same = l.org == self.org && l.task == self.task && l.page == self.page;
                // Every candidate is compared, so the time does not tell which one matched.
                found |= constant_time_eq(l.token.as_bytes(), self.token.as_bytes()) && same;
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn public_urls_are_checked() {
        assert_eq!(
            PublicUrl::parse("https://cloro.example.com/").map(|u| u.0),
            Ok("https://cloro.example.com".to_owned())
        );
        assert_eq!(
            PublicUrl::parse("http://10.0.0.1:8080/cloro/").map(|u| u.0),
            Ok("http://10.0.0.1:8080/cloro".to_owned())
        );
        for bad in [
            "ftp://x.example",
            "cloro.example.com",
            "https://x.example/?a=1",
            "https://x.example/#top",
            "https://x.example/?",
            "https://user:pw@x.example",
            "javascript:alert(1)",
            "",
        ] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            PublicUrl::parse("https://x.example:8443/a")
                .ok()
                .and_then(|u| u.host()),
            Some("x.example:8443".to_owned())
        );
    }

    #[test]
    fn links_carry_a_fresh_128_bit_token_per_attempt() {
        let base = PublicUrl::parse("https://c.example/base").expect("url");
        let id = Uuid::new_v4();
        let (a, b) = (PageLinks::new(&base, 7, id), PageLinks::new(&base, 7, id));
        assert_ne!(a, b);
        let url = a.url(2);
        let prefix = format!("https://c.example/base/v1/pages/7/{id}/");
        let tail = url.strip_prefix(&prefix).expect("prefix");
        let (token, page) = tail.split_once('/').expect("token");
        assert_eq!(token.len(), 32);
        assert!(
            token
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(page, "page-2.html");
        assert!(!format!("{a:?}").contains(token));
        assert_eq!(a.urls(3).as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn a_request_matches_only_its_own_link() {
        let id = Uuid::new_v4();
        let token = "0123456789abcdef0123456789abcdef";
        let links = PageLinks::with_token(&PublicUrl::default(), 3, id, token);
        let chat = json!({"html": links.url(1)});
        let google = json!({"html": links.urls(2)});
        let id_s = id.to_string();
        let req = |org: &str, page: &str, tok: &'static str| {
            PageRef::from_parts(org, &id_s, tok, page).expect("well-formed")
        };
        assert!(req("3", "page-1.html", token).is_linked_from(&chat));
        assert!(!req("3", "page-2.html", token).is_linked_from(&chat));
        assert!(req("3", "page-2.html", token).is_linked_from(&google));
        assert!(!req("4", "page-1.html", token).is_linked_from(&google));
        let other = "0123456789abcdef0123456789abcdee";
        assert!(!req("3", "page-1.html", other).is_linked_from(&google));
        assert!(!req("3", "page-1.html", token).is_linked_from(&json!({"text": "x"})));
        assert!(!req("3", "page-1.html", token).is_linked_from(&json!({"html": 5})));
    }

    #[test]
    fn logged_paths_never_carry_the_token() {
        let tok = "0123456789abcdef0123456789abcdef";
        let p = format!("/v1/pages/1/{}/{tok}/page-1.html", Uuid::nil());
        assert_eq!(
            loggable_path(&p),
            format!("/v1/pages/1/{}/…/page-1.html", Uuid::nil())
        );
        assert_eq!(
            loggable_path(&format!("/v1/pages/1/x/{tok}")),
            "/v1/pages/1/x/…"
        );
        assert_eq!(loggable_path("/v1/async/task/x"), "/v1/async/task/x");
    }

    #[test]
    fn malformed_page_paths_are_refused_without_a_lookup() {
        let id = Uuid::nil().to_string();
        let tok = "0123456789abcdef0123456789abcdef";
        assert!(PageRef::from_parts("1", &id, tok, "page-10.html").is_some());
        for (org, task, token, page) in [
            ("0", id.as_str(), tok, "page-1.html"),
            ("-1", id.as_str(), tok, "page-1.html"),
            ("99999999999999999999", id.as_str(), tok, "page-1.html"),
            ("1", "not-a-uuid", tok, "page-1.html"),
            (
                "1",
                id.as_str(),
                "0123456789ABCDEF0123456789ABCDEF",
                "page-1.html",
            ),
            ("1", id.as_str(), "00", "page-1.html"),
            ("1", id.as_str(), tok, "page-0.html"),
            ("1", id.as_str(), tok, "page-01.html"),
            ("1", id.as_str(), tok, "page-11.html"),
            ("1", id.as_str(), tok, "page-1.htm"),
            ("1", id.as_str(), tok, "page-+1.html"),
        ] {
            assert!(
                PageRef::from_parts(org, task, token, page).is_none(),
                "{org} {task} {token} {page}"
            );
        }
    }
}
