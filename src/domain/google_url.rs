//! The one Google web-search URL parser and the one percent-decoder (Google Search's `url`
//! mode, reference §5.7).
//!
//! The validator uses [`parse_google_search_url`] to accept or refuse `payload.url` and to
//! derive `query`, `gl`/`country`, `hl`, `uule` and `pages` from it; engines that need the
//! parameters the stored payload does not carry (`start`, `tbs`, `safe`) parse the stored `url`
//! again with the same function (see `GooglePayload::url_params`). The simulated engine reads
//! the derived fields of the typed payload; it has no URL decoder of its own any more (its one
//! historical rule that differs, for `hl`, is `last_query_value`, documented there).
//!
//! Query parameters follow the URL standard's form decoding (`+` is a space), except `uule`,
//! whose token contains literal `+` signs: it is read from the raw query with
//! `percent_decode` (JavaScript's `decodeURIComponent`).

/// Google / Google News page depth (also the cap of a URL's `num`).
pub(crate) const MAX_PAGES: i64 = 10;

/// The message of a URL that is not an absolute `http`/`https` URL (also used for
/// `webhook.url`).
pub(crate) const MSG_BAD_HTTP_URL: &str = "url must be a valid absolute http(s) URL";

/// Why a Google search URL was refused (reference §5.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GoogleUrlRejection {
    Malformed,
    Host,
    Path,
    Vertical,
    MissingQuery,
}

impl GoogleUrlRejection {
    pub(crate) fn message(self) -> &'static str {
        match self {
            GoogleUrlRejection::Malformed => MSG_BAD_HTTP_URL,
            GoogleUrlRejection::Host => {
                "url must be a Google web search host, e.g. www.google.com or google.co.uk"
            }
            GoogleUrlRejection::Path => "url path must be /search",
            GoogleUrlRejection::Vertical => {
                "url must not set tbm; use the vertical-specific endpoint instead (POST /v1/monitor/google/news for tbm=nws)"
            }
            GoogleUrlRejection::MissingQuery => "url must include a non-empty q parameter",
        }
    }
}

/// The parts of a Google web-search URL the scraper honours (`q, gl, hl, uule, num, start, tbs,
/// safe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GoogleSearchUrl {
    /// `q`, trimmed, never empty.
    pub(crate) query: String,
    /// `gl`, uppercased; `None` when absent or blank.
    pub(crate) country: Option<String>,
    /// `hl`, lower-cased; `None` when absent or blank.
    pub(crate) language: Option<String>,
    /// `uule`, percent-decoded without turning `+` into a space.
    pub(crate) uule: Option<String>,
    /// `start` (default 0; junk or negative values fall back to 0).
    pub(crate) start_offset: u64,
    /// `ceil(num / 10)` capped to 1..=10 (default `num` 10 → 1 page).
    pub(crate) pages: u32,
    pub(crate) tbs: Option<String>,
    pub(crate) safe: Option<String>,
}

/// Parses a caller-supplied Google web-search URL (Google `url` mode, reference §5.7).
pub(crate) fn parse_google_search_url(raw: &str) -> Result<GoogleSearchUrl, GoogleUrlRejection> {
    let url = url::Url::parse(raw).map_err(|_| GoogleUrlRejection::Malformed)?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(GoogleUrlRejection::Malformed);
    }
    if !is_google_search_host(url.host_str().unwrap_or("")) {
        return Err(GoogleUrlRejection::Host);
    }
    if url.path() != "/search" {
        return Err(GoogleUrlRejection::Path);
    }
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let first = |key: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let trimmed = |key: &str| {
        first(key)
            .map(trim_text)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    if pairs.iter().any(|(k, _)| k == "tbm") {
        return Err(GoogleUrlRejection::Vertical);
    }
    let query = trimmed("q").ok_or(GoogleUrlRejection::MissingQuery)?;
    let num = first("num").and_then(parse_non_negative_int).unwrap_or(10);
    let pages = if num < 1 {
        1
    } else {
        num.div_ceil(10).min(MAX_PAGES as u64) as u32
    };
    Ok(GoogleSearchUrl {
        query,
        country: trimmed("gl").map(|s| s.to_uppercase()),
        language: trimmed("hl").map(|s| s.to_lowercase()),
        uule: url.query().and_then(|q| raw_query_param(q, "uule")),
        start_offset: first("start").and_then(parse_non_negative_int).unwrap_or(0),
        pages,
        tbs: trimmed("tbs"),
        safe: trimmed("safe"),
    })
}

/// The form-decoded value of the LAST pair of the raw query whose undecoded name is `key` and
/// whose value is not blank (Rust whitespace), `None` when there is none.
///
/// This is a different rule from [`parse_google_search_url`] (first pair, decoded names, JS
/// trimming) on purpose: it is how the simulated engine has always read `hl` from a url-form
/// payload whose validator found none (e.g. `?hl=&hl=fr`), and its results must stay
/// byte-identical. Decoding is the URL standard's form decoding (`+` is a space, malformed
/// escapes kept, invalid UTF-8 replaced), as the `url` crate does it.
pub(crate) fn last_query_value(raw_url: &str, key: &str) -> Option<String> {
    let query = raw_url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let query = query.split('#').next().unwrap_or("");
    query.split('&').rev().find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k != key {
            return None;
        }
        let encoded = format!("v={v}");
        let decoded = url::form_urlencoded::parse(encoded.as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        (!decoded.trim().is_empty()).then_some(decoded)
    })
}

/// Trims whitespace the way JavaScript's `String.prototype.trim` does (incl. U+FEFF).
pub(crate) fn trim_text(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}')
}

/// `^(www\.)?google(\.[a-z]{2,3})+$`
pub(crate) fn is_google_search_host(host: &str) -> bool {
    let host = host.strip_prefix("www.").unwrap_or(host);
    let Some(rest) = host.strip_prefix("google") else {
        return false;
    };
    let Some(rest) = rest.strip_prefix('.') else {
        return false;
    };
    rest.split('.').all(|label| {
        (2..=3).contains(&label.len()) && label.bytes().all(|b| b.is_ascii_lowercase())
    })
}

/// JavaScript `parseInt(raw, 10)` restricted to non-negative results (`None` when it would be
/// `NaN` or negative). Saturates instead of overflowing.
fn parse_non_negative_int(raw: &str) -> Option<u64> {
    let s = raw.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{FEFF}');
    let (negative, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let digits: &str = &digits[..digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len())];
    if digits.is_empty() {
        return None;
    }
    let value = digits.bytes().fold(0u64, |acc, b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    });
    if negative && value > 0 {
        None
    } else {
        Some(value)
    }
}

/// The first value of `key` in a raw query string, percent-decoded WITHOUT turning `+` into a
/// space (a UULE token contains literal `+`), trimmed; `None` when absent or blank.
fn raw_query_param(query: &str, key: &str) -> Option<String> {
    for pair in query.split('&') {
        let (name, value) = match pair.find('=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, ""),
        };
        if percent_decode(name) != key {
            continue;
        }
        let value = percent_decode(value);
        let value = trim_text(&value);
        return if value.is_empty() {
            None
        } else {
            Some(value.to_string())
        };
    }
    None
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `decodeURIComponent`, falling back to the input when it is malformed.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = match bytes.get(i + 1..i + 3) {
                Some(&[hi, lo]) => hex_value(hi).zip(hex_value(lo)).map(|(h, l)| h * 16 + l),
                _ => None,
            };
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => return s.to_string(),
            }
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_falls_back_to_the_raw_text_when_malformed() {
        assert_eq!(percent_decode("a%2Bb"), "a+b");
        assert_eq!(percent_decode("a+b"), "a+b");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%+1"), "%+1");
        assert_eq!(percent_decode("%E0%A4"), "%E0%A4");
        assert_eq!(percent_decode("%"), "%");
    }

    #[test]
    fn the_last_non_blank_value_is_form_decoded() {
        let url = "https://www.google.com/search?q=a&hl=&hl=f+r%C3%A9%z&h%6C=x&hl=%20#hl=y";
        assert_eq!(last_query_value(url, "hl").as_deref(), Some("f ré%z"));
        assert_eq!(last_query_value(url, "gl"), None);
        assert_eq!(last_query_value("no query", "hl"), None);
    }

    #[test]
    fn parse_int_mimics_javascript_for_non_negative_values() {
        assert_eq!(parse_non_negative_int("20"), Some(20));
        assert_eq!(parse_non_negative_int(" 20px"), Some(20));
        assert_eq!(parse_non_negative_int("+7"), Some(7));
        assert_eq!(parse_non_negative_int("-0"), Some(0));
        assert_eq!(parse_non_negative_int("-3"), None);
        assert_eq!(parse_non_negative_int("x"), None);
        assert_eq!(parse_non_negative_int(""), None);
        assert_eq!(parse_non_negative_int("é"), None);
    }
}
