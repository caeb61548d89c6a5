//! Google Search: `include.aioverview` and the url form.

use super::test_support::*;
use crate::domain::google_url::{GoogleSearchUrl, is_google_search_host, parse_google_search_url};

// ---- Google aioverview -------------------------------------------------------------------

#[test]
fn google_aioverview_accepts_a_boolean_or_a_markdown_object() {
    let r = ok(task(
        "GOOGLE",
        json!({"query": "a", "gl": "us", "include": {"aioverview": {"markdown": true}}}),
    ));
    assert_eq!(
        r.payload["include"]["aioverview"],
        json!({"markdown": true})
    );
    let e = errs(task(
        "GOOGLE",
        json!({"query": "a", "gl": "us", "include": {"aioverview": {"markdown": "x", "text": true}}}),
    ));
    assert!(has(
        &e,
        "payload.include.aioverview.text",
        "Unrecognized key \"text\""
    ));
    assert!(has(
        &e,
        "payload.include.aioverview.markdown",
        "Invalid input: expected boolean, received string"
    ));
    assert_eq!(e.len(), 2);
    assert_eq!(
        single(task(
            "GOOGLE",
            json!({"query": "a", "gl": "us", "include": {"aioverview": "yes"}})
        )),
        (
            "payload.include.aioverview".into(),
            "Invalid input: expected boolean or object, received string".into()
        )
    );
}

#[test]
fn google_aioverview_checks_the_aioverview_country_list() {
    assert!(parse(task("GOOGLE", json!({"query": "a", "gl": "is"}))).is_ok());
    assert!(parse(task(
        "GOOGLE",
        json!({"query": "a", "gl": "is", "include": {"aioverview": false, "paaAioverview": true}})
    ))
    .is_ok());
    assert_eq!(
        single(task(
            "GOOGLE",
            json!({"query": "a", "gl": "is", "include": {"aioverview": true}})
        )),
        ("payload.gl".into(), BLOCKED.into())
    );
    assert_eq!(
        single(task(
            "GOOGLE",
            json!({"query": "a", "country": "RE", "include": {"aioverview": {}}})
        )),
        ("payload.country".into(), BLOCKED.into())
    );
    assert_eq!(
        single(task(
            "GOOGLE",
            json!({"url": "https://www.google.com/search?q=x&gl=lk", "include": {"aioverview": true}})
        )),
        ("payload.gl".into(), BLOCKED.into())
    );
}

// ---- Google url mode ---------------------------------------------------------------------

#[test]
fn google_needs_query_or_url() {
    assert_eq!(
        single(task("GOOGLE", json!({"gl": "us"}))),
        ("payload.query".into(), "Provide either query or url".into())
    );
}

#[test]
fn a_google_url_is_decomposed_into_the_structured_fields() {
    let r = ok(task(
        "GOOGLE",
        json!({"url": " https://www.google.co.uk/search?q=best+shoes&gl=gb&hl=EN&num=30&start=10 "}),
    ));
    assert_eq!(
        r.payload,
        json!({
            "query": "best shoes",
            "url": "https://www.google.co.uk/search?q=best+shoes&gl=gb&hl=EN&num=30&start=10",
            "gl": "gb", "country": "GB", "hl": "en",
            "device": "desktop", "pages": 3
        })
    );
    assert_eq!(r.credits_to_charge, 7);
}

#[test]
fn url_num_is_converted_to_pages() {
    for (num, pages) in [
        ("", 1),
        ("&num=10", 1),
        ("&num=11", 2),
        ("&num=0", 1),
        ("&num=-5", 1),
        ("&num=abc", 1),
        ("&num=25xyz", 3),
        ("&num=100", 10),
        ("&num=99999999999999999999999", 10),
    ] {
        let url = format!("https://google.com/search?q=a&gl=us{num}");
        let r = ok(task("GOOGLE", json!({ "url": url })));
        assert_eq!(r.payload["pages"], pages, "{num}");
    }
}

#[test]
fn an_invalid_google_url_is_rejected_with_the_matching_message() {
    for (url, message) in [
        ("not a url", "url must be a valid absolute http(s) URL"),
        ("", "url must be a valid absolute http(s) URL"),
        (
            "ftp://google.com/search?q=a",
            "url must be a valid absolute http(s) URL",
        ),
        (
            "https://news.google.com/search?q=a",
            "url must be a Google web search host, e.g. www.google.com or google.co.uk",
        ),
        (
            "https://www.bing.com/search?q=a",
            "url must be a Google web search host, e.g. www.google.com or google.co.uk",
        ),
        (
            "https://google.example/search?q=a",
            "url must be a Google web search host, e.g. www.google.com or google.co.uk",
        ),
        (
            "https://www.google.com/webhp?q=a",
            "url path must be /search",
        ),
        (
            "https://www.google.com/search/?q=a",
            "url path must be /search",
        ),
        (
            "https://www.google.com/search?q=a&tbm=nws",
            "url must not set tbm; use the vertical-specific endpoint instead (POST /v1/monitor/google/news for tbm=nws)",
        ),
        (
            "https://www.google.com/search?gl=us",
            "url must include a non-empty q parameter",
        ),
        (
            "https://www.google.com/search?q=+++&gl=us",
            "url must include a non-empty q parameter",
        ),
    ] {
        assert_eq!(
            single(task("GOOGLE", json!({ "url": url, "gl": "us" }))),
            ("payload.url".into(), message.into()),
            "{url}"
        );
    }
}

#[test]
fn google_hosts_follow_the_host_pattern() {
    for host in [
        "google.com",
        "www.google.com",
        "google.co.uk",
        "www.google.com.br",
        "google.de",
    ] {
        assert!(is_google_search_host(host), "{host}");
    }
    for host in [
        "news.google.com",
        "google",
        "google.",
        "google.c",
        "google.info",
        "wwwgoogle.com",
        "google.com.",
        "googlex.com",
    ] {
        assert!(!is_google_search_host(host), "{host}");
    }
}

#[test]
fn url_owned_fields_conflict_unless_identical() {
    let url = "https://www.google.com/search?q=shoes&gl=us&num=20&uule=w+CAIQ";
    let e = errs(task(
        "GOOGLE",
        json!({"url": url, "query": "boots", "location": "Paris", "pages": 3, "uule": "other"}),
    ));
    for f in ["query", "location", "pages", "uule"] {
        assert!(
            has(
                &e,
                &format!("payload.{f}"),
                &format!("Cannot set both url and {f}; the URL owns this value")
            ),
            "{f}: {e:?}"
        );
    }
    let r = ok(task(
        "GOOGLE",
        json!({"url": url, "query": " shoes ", "pages": 2, "uule": "w+CAIQ"}),
    ));
    assert_eq!(r.payload["uule"], "w+CAIQ");
    assert_eq!(r.credits_to_charge, 5);
}

#[test]
fn url_fields_conflict_when_the_url_itself_is_invalid() {
    let e = errs(task(
        "GOOGLE",
        json!({"url": "https://bing.com/search?q=a", "query": "a", "gl": "us"}),
    ));
    assert!(has(
        &e,
        "payload.query",
        "Cannot set both url and query; the URL owns this value"
    ));
    assert!(has(
        &e,
        "payload.url",
        "url must be a Google web search host, e.g. www.google.com or google.co.uk"
    ));
}

#[test]
fn a_url_without_gl_needs_an_explicit_gl() {
    assert_eq!(
        single(task(
            "GOOGLE",
            json!({"url": "https://www.google.com/search?q=a"})
        )),
        (
            "payload.gl".into(),
            "Provide gl, or include gl= in the url so it can be derived".into()
        )
    );
    let r = ok(task(
        "GOOGLE",
        json!({"url": "https://www.google.com/search?q=a", "gl": "FR"}),
    ));
    assert_eq!(r.payload["gl"], "fr");
    assert_eq!(r.payload["country"], "FR");
}

#[test]
fn an_unsupported_gl_in_the_url_is_rejected() {
    assert_eq!(
        single(task("GOOGLE", json!({"url": "https://www.google.com/search?q=a&gl=zz"}))),
        (
            "payload.gl".into(),
            "Derived country \"ZZ\" from the url's gl is not supported; pass a supported gl explicitly".into()
        )
    );
}

#[test]
fn an_explicit_gl_or_country_must_agree_with_the_url() {
    let url = "https://www.google.com/search?q=a&gl=de&hl=de";
    assert_eq!(
        single(task("GOOGLE", json!({"url": url, "gl": "fr"}))),
        (
            "payload.gl".into(),
            "Cannot set both url and gl; the URL owns this value".into()
        )
    );
    assert_eq!(
        single(task("GOOGLE", json!({"url": url, "country": "FR"}))),
        (
            "payload.country".into(),
            "Cannot set both url and country; the URL owns this value".into()
        )
    );
    assert_eq!(
        single(task("GOOGLE", json!({"url": url, "hl": "en"}))),
        (
            "payload.hl".into(),
            "Cannot set both url and hl; the URL owns this value".into()
        )
    );
    assert!(parse(task("GOOGLE", json!({"url": url, "gl": "DE", "hl": "DE"}))).is_ok());
}

#[test]
fn a_url_uule_keeps_its_plus_signs() {
    let r = ok(task(
        "GOOGLE",
        json!({"url": "https://www.google.com/search?q=a+b&gl=us&uule=w+CAIQICIN%3D%3D"}),
    ));
    assert_eq!(r.payload["query"], "a b");
    assert_eq!(r.payload["uule"], "w+CAIQICIN==");
}

#[test]
fn parse_google_search_url_exposes_start_tbs_and_safe() {
    let p = parse_google_search_url(
        "https://www.google.com/search?q=a&start=20&tbs=qdr:d&safe=active&foo=bar",
    );
    assert_eq!(
        p,
        Ok(GoogleSearchUrl {
            query: "a".into(),
            country: None,
            language: None,
            uule: None,
            start_offset: 20,
            pages: 1,
            tbs: Some("qdr:d".into()),
            safe: Some("active".into()),
        })
    );
}

#[test]
fn a_non_string_url_is_a_type_error() {
    assert_eq!(
        single(task("GOOGLE", json!({"url": 5, "gl": "us"}))),
        (
            "payload.url".into(),
            "Invalid input: expected string, received number".into()
        )
    );
}
