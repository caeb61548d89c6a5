//! The SerpApi query strings, as pure functions of the typed payload (no HTTP, no key): one
//! list of `(name, value)` pairs per upstream call. The caller appends `api_key` last, so
//! nothing built here ever holds the secret.
//!
//! Parameters (serpapi.com/search-api with `tbm=nws` for news, /google-ai-mode-api,
//! /google-ai-overview-api): `engine`, `q`, `gl`, `hl`, `location` XOR `uule`, `device`
//! (`desktop` | `tablet` | `mobile`: cloro's `mobile`, `ios` and `android` all become `mobile`),
//! `start` (result offset, omitted when 0), `google_domain`, `tbs`, `safe` (the last three from
//! Google's url form only), and `no_cache=true` (SerpApi serves a cached search for an
//! identical query for 1 h otherwise).

use crate::domain::google_url::parse_google_search_url;
use crate::domain::request::Payload;

/// One upstream call's query parameters (without `api_key`).
pub(crate) type Params = Vec<(&'static str, String)>;

/// SerpApi's device names: it knows `desktop`, `tablet` and `mobile`.
pub(crate) fn device(cloro: &str) -> &'static str {
    if cloro == "desktop" {
        "desktop"
    } else {
        "mobile"
    }
}

fn push_opt(p: &mut Params, name: &'static str, v: Option<&str>) {
    if let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) {
        p.push((name, v.to_owned()));
    }
}

/// Location: `location` (a Google geotarget name) or `uule`, never both (the validator already
/// refuses both; SerpApi does too).
fn push_location(p: &mut Params, location: Option<&str>, uule: Option<&str>) {
    if location.is_some_and(|l| !l.trim().is_empty()) {
        push_opt(p, "location", location);
    } else {
        push_opt(p, "uule", uule);
    }
}

/// The calls a task needs, in order: one per page for Google and News, one for AI Mode. The
/// AI Overview follow-up ([`ai_overview`]) is decided from the first page's answer.
pub(crate) fn calls(payload: &Payload) -> Vec<Params> {
    match payload {
        Payload::Google(g) => {
            // Google's url form: the stored payload carries the derived q/gl/hl/uule/pages; the
            // URL alone knows `start`, `tbs` and `safe`.
            let url = g
                .url
                .as_deref()
                .and_then(|u| parse_google_search_url(u).ok());
            let first_start = url.as_ref().map_or(0, |u| u.start_offset);
            // The url's Google host (e.g. `www.google.co.uk`) is SerpApi's `google_domain`.
            let domain = g
                .url
                .as_deref()
                .and_then(|u| url::Url::parse(u).ok())
                .and_then(|u| {
                    u.host_str()
                        .map(|h| h.trim_start_matches("www.").to_owned())
                });
            let pages = g.pages.max(1);
            (1..=pages)
                .map(|page| {
                    let mut p: Params = vec![("engine", "google".into()), ("q", g.query.clone())];
                    p.push(("gl", g.gl.clone()));
                    push_opt(&mut p, "hl", g.hl.as_deref());
                    push_location(&mut p, g.location.as_deref(), g.uule.as_deref());
                    p.push(("device", device(g.device.as_str()).into()));
                    let start = first_start + 10 * u64::from(page - 1);
                    if start > 0 {
                        p.push(("start", start.to_string()));
                    }
                    push_opt(&mut p, "google_domain", domain.as_deref());
                    if let Some(u) = &url {
                        push_opt(&mut p, "tbs", u.tbs.as_deref());
                        push_opt(&mut p, "safe", u.safe.as_deref());
                    }
                    p.push(("no_cache", "true".into()));
                    p
                })
                .collect()
        }
        Payload::News(n) => (1..=n.pages.max(1))
            .map(|page| {
                let mut p: Params = vec![
                    ("engine", "google".into()),
                    ("tbm", "nws".into()),
                    ("q", n.query.clone()),
                    ("gl", n.gl.clone()),
                ];
                push_opt(&mut p, "hl", n.hl.as_deref());
                p.push(("device", device(n.device.as_str()).into()));
                if page > 1 {
                    p.push(("start", (10 * (page - 1)).to_string()));
                }
                p.push(("no_cache", "true".into()));
                p
            })
            .collect(),
        Payload::AiMode(a) => {
            let mut p: Params = vec![
                ("engine", "google_ai_mode".into()),
                ("q", a.prompt.clone()),
                ("gl", a.gl.clone()),
            ];
            push_opt(&mut p, "hl", a.hl.as_deref());
            push_location(&mut p, a.location.as_deref(), a.uule.as_deref());
            p.push(("device", device(a.device.as_str()).into()));
            p.push(("no_cache", "true".into()));
            vec![p]
        }
        Payload::Chat(..) => Vec::new(),
    }
}

/// The AI Overview follow-up: `engine=google_ai_overview&page_token=…` (the token expires
/// within about 4 minutes of the first search, so it is fetched at once).
pub(crate) fn ai_overview(page_token: &str) -> Params {
    vec![
        ("engine", "google_ai_overview".into()),
        ("page_token", page_token.to_owned()),
        ("no_cache", "true".into()),
    ]
}
