//! The simulated engines' result shapes, include flags, determinism and helpers.

use serde_json::{Value, json};

use super::context::{collapse, slugify, url_encode};
use super::*;
use crate::domain::request::validate_payload;
use crate::domain::types::TaskType;
use crate::pages::PageLinks;

/// A request payload as the engine receives it: validated, stored, and read back typed.
pub(super) fn simulate_request(t: TaskType, raw: &Value) -> SimValue {
    let (typed, _) =
        validate_payload(t, raw, "payload").unwrap_or_else(|e| panic!("{raw} rejected: {e:?}"));
    let stored = typed.into_stored();
    let typed = Payload::from_stored(t, &stored).expect("a stored payload reads back");
    simulate_value(&typed, &PageLinks::fixed())
}

fn chat_payload(prompt: &str) -> Value {
    json!({"prompt": prompt, "country": "US"})
}

fn payload_for(t: TaskType, text: &str) -> Value {
    match t {
        TaskType::Google | TaskType::GoogleNews => json!({"query": text, "gl": "us"}),
        TaskType::Aimode => json!({"prompt": text, "country": "US"}),
        _ => chat_payload(text),
    }
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

fn assert_no_null(v: &Value, path: &str) {
    match v {
        Value::Null => panic!("null at {path}"),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| assert_no_null(x, &format!("{path}[{i}]"))),
        Value::Object(o) => o
            .iter()
            .for_each(|(k, x)| assert_no_null(x, &format!("{path}.{k}"))),
        _ => {}
    }
}

#[test]
fn deterministic_and_prompt_dependent() {
    for t in TaskType::ALL {
        let p = payload_for(t, "best running shoes for flat feet");
        let a = simulate_request(t, &p);
        let b = simulate_request(t, &p.clone());
        assert_eq!(bytes(&a.result), bytes(&b.result), "{t:?}");
        assert_eq!(a.extra_credits, b.extra_credits);
        let c = simulate_request(t, &payload_for(t, "cheapest electric cars in 2026"));
        assert_ne!(bytes(&a.result), bytes(&c.result), "{t:?}");
    }
    let a = simulate_request(TaskType::Chatgpt, &chat_payload("alpha question"));
    let b = simulate_request(TaskType::Chatgpt, &chat_payload("beta question"));
    assert_ne!(a.result["text"], b.result["text"]);
    assert!(
        a.result["text"]
            .as_str()
            .unwrap()
            .contains("alpha question")
    );
}

#[test]
fn every_result_is_marked_simulated_and_has_no_nulls() {
    for t in TaskType::ALL {
        let out = simulate_request(t, &payload_for(t, "how to learn rust"));
        assert_eq!(out.result["simulated"], Value::Bool(true), "{t:?}");
        assert_no_null(&out.result, t.as_str());
        if let Some(text) = out.result.get("text") {
            assert!(text.as_str().unwrap().starts_with("[simulated] "), "{t:?}");
        }
    }
    for t in [TaskType::Chatgpt, TaskType::Grok] {
        let out = simulate_request(t, &chat_payload("x"));
        assert_eq!(out.result["model"], "simulated");
    }
}

fn assert_keys(t: TaskType, required: &[&str]) -> Value {
    let out = simulate_request(t, &payload_for(t, "best coffee grinder"));
    for k in required {
        assert!(out.result.get(*k).is_some(), "{t:?} missing {k}");
    }
    out.result
}

fn assert_sources(r: &Value, fields: &[&str]) {
    let s = r["sources"].as_array().unwrap();
    assert!((3..=5).contains(&s.len()), "{} sources", s.len());
    for (i, src) in s.iter().enumerate() {
        assert_eq!(src["position"], json!(i + 1));
        for f in fields {
            assert!(src.get(*f).is_some(), "source missing {f}");
        }
    }
}

#[test]
fn chatgpt_shape() {
    let r = assert_keys(
        TaskType::Chatgpt,
        &[
            "text",
            "sources",
            "model",
            "entities",
            "map",
            "citationPills",
        ],
    );
    assert_sources(&r, &["url", "label", "description", "footnote"]);
    let pills = r["citationPills"].as_array().unwrap();
    assert_eq!(pills[0]["citationPillId"], 0);
    assert_eq!(pills[0]["position"], 1);
    assert_eq!(pills[0]["type"], "searchResult");
    for k in [
        "html",
        "markdown",
        "rawResponse",
        "searchQueries",
        "mapSearchQueries",
        "shoppingCards",
        "inlineProducts",
        "ads",
    ] {
        assert!(r.get(k).is_none(), "{k} present without include");
    }
    let p = json!({"prompt": "q", "country": "US", "disableWebSearch": true});
    let r = simulate_request(TaskType::Chatgpt, &p).result;
    assert_eq!(r["sources"], json!([]));
    assert_eq!(r["citationPills"], json!([]));
    assert!(r["text"].as_str().unwrap().starts_with("[simulated] "));
}

#[test]
fn chatgpt_include_flags() {
    let p = json!({"prompt": "best laptop", "country": "US", "include": {
        "html": true, "markdown": true, "rawResponse": true, "searchQueries": true,
        "ads": true, "shopping": true}});
    let r = simulate_request(TaskType::Chatgpt, &p).result;
    for k in [
        "html",
        "markdown",
        "rawResponse",
        "searchQueries",
        "mapSearchQueries",
        "shoppingCards",
        "inlineProducts",
        "ads",
    ] {
        assert!(r.get(k).is_some(), "{k} missing with include");
    }
    assert_eq!(r["html"], json!(PageLinks::fixed().url(1)));
    assert!(r["ads"].is_array());
    let prod = &r["shoppingCards"][0]["products"][0];
    assert_eq!(prod["position"], 1);
    assert!(prod["offers"][0].get("price_details").is_some());
    let p2 = json!({"prompt": "best laptop", "country": "US", "include": {
        "html": false, "markdown": false}});
    let r2 = simulate_request(TaskType::Chatgpt, &p2).result;
    assert!(r2.get("html").is_none() && r2.get("markdown").is_none());
}

#[test]
fn chatgpt_plain_result_is_compact() {
    let out = simulate_request(
        TaskType::Chatgpt,
        &chat_payload("What are the best project management tools for small teams?"),
    );
    let n = bytes(&out.result).len();
    assert!(n < 4096, "plain ChatGPT result is {n} bytes");
    // A 10,000-char prompt must not blow the size up.
    let long = "word ".repeat(2000);
    let n = bytes(&simulate_request(TaskType::Chatgpt, &chat_payload(&long)).result).len();
    assert!(n < 4096, "long-prompt ChatGPT result is {n} bytes");
}

#[test]
fn gemini_grok_copilot_perplexity_shapes() {
    let r = assert_keys(TaskType::Gemini, &["text", "sources", "citationPills"]);
    assert_sources(&r, &["url", "label", "description"]);
    assert_eq!(r["citationPills"][0]["citationPillId"], 1);
    assert!(r.get("model").is_none());

    let r = assert_keys(
        TaskType::Grok,
        &["text", "sources", "searchQueries", "model"],
    );
    assert_sources(
        &r,
        &[
            "url",
            "label",
            "description",
            "preview",
            "searchEngineText",
            "siteName",
            "metadataTitle",
            "creator",
            "image",
            "favicon",
        ],
    );

    let r = assert_keys(TaskType::Copilot, &["text", "sources", "searchQueries"]);
    assert_sources(&r, &["url", "label", "description"]);
    assert_eq!(r["citationPills"][0]["citationPillId"], 1);

    let r = assert_keys(
        TaskType::Perplexity,
        &[
            "text",
            "sources",
            "related_queries",
            "videos",
            "images",
            "hotels",
            "places",
            "shopping_cards",
            "search_model_queries",
        ],
    );
    assert_sources(&r, &["url", "label", "description"]);
    assert_eq!(r["citationPills"][0]["citationPillId"], 1);
}

#[test]
fn chat_engines_honour_include_flags() {
    for t in [
        TaskType::Gemini,
        TaskType::Grok,
        TaskType::Copilot,
        TaskType::Perplexity,
        TaskType::Aimode,
    ] {
        // AI Mode has no `rawResponse` flag (the validator refuses it).
        let on = if t == TaskType::Aimode {
            json!({"prompt": "q", "country": "US",
                   "include": {"html": true, "markdown": true}})
        } else {
            json!({"prompt": "q", "country": "US",
                   "include": {"html": true, "markdown": true, "rawResponse": true}})
        };
        let off = json!({"prompt": "q", "country": "US",
                         "include": {"html": false, "markdown": false}});
        let r_on = simulate_request(t, &on).result;
        let r_off = simulate_request(t, &off).result;
        assert!(
            r_on["html"].as_str().unwrap().ends_with("/page-1.html"),
            "{t:?}"
        );
        assert!(r_on["markdown"].is_string(), "{t:?}");
        assert!(r_off.get("html").is_none(), "{t:?}");
        assert!(r_off.get("markdown").is_none(), "{t:?}");
        assert!(r_off.get("rawResponse").is_none(), "{t:?}");
        if t != TaskType::Aimode {
            assert!(r_on["rawResponse"].is_array(), "{t:?}");
        }
    }
}

#[test]
fn aimode_shape_and_expand_products() {
    let r = assert_keys(
        TaskType::Aimode,
        &[
            "text",
            "sources",
            "places",
            "shoppingCards",
            "ads",
            "inlineProducts",
            "videos",
            "map",
        ],
    );
    assert!(r["ads"].is_object());
    assert!(r["ads"]["ads"].is_array());
    assert!(r.get("productResults").is_none());
    assert_eq!(
        simulate_request(TaskType::Aimode, &payload_for(TaskType::Aimode, "x")).extra_credits,
        0
    );
    for i in 0..40 {
        let p = json!({"prompt": format!("gift ideas {i}"), "gl": "de",
                       "include": {"expandProducts": true}});
        let out = simulate_request(TaskType::Aimode, &p);
        let n = out.result["productResults"].as_array().unwrap().len();
        assert!((1..=6).contains(&n));
        assert_eq!(out.extra_credits as usize, n);
        let price = &out.result["productResults"][0]["stores"][0]["price"];
        assert_eq!(price["currency"], "EUR");
    }
}

#[test]
fn google_pages_and_flags() {
    for pages in [1usize, 3, 10] {
        let p = json!({"query": "rust web frameworks", "gl": "gb", "pages": pages});
        let r = simulate_request(TaskType::Google, &p).result;
        let org = r["organicResults"].as_array().unwrap();
        assert_eq!(org.len(), 10 * pages);
        assert_eq!(org.last().unwrap()["page"], json!(pages));
        assert_eq!(org.last().unwrap()["position"], json!(10 * pages));
        assert!(org[0]["link"].as_str().unwrap().contains("/gb/"));
        for k in ["peopleAlsoAsk", "relatedSearches", "ads"] {
            assert!(r[k].is_array(), "{k}");
        }
        assert!(r.get("aioverview").is_none());
        assert!(r.get("html").is_none());
    }
    let p = json!({"query": "q", "country": "FR", "pages": 2,
                   "include": {"html": true, "aioverview": {"markdown": true}}});
    let r = simulate_request(TaskType::Google, &p).result;
    let html = r["html"].as_array().unwrap();
    assert_eq!(html.len(), 2);
    assert!(html[1].as_str().unwrap().ends_with("/page-2.html"));
    assert!(r["aioverview"]["text"].is_string());
    assert!(r["aioverview"]["markdown"].is_string());
    assert!(
        r["organicResults"][0]["link"]
            .as_str()
            .unwrap()
            .contains("/fr/")
    );
    let p = json!({"query": "q", "gl": "us", "include": {"aioverview": true}});
    let r = simulate_request(TaskType::Google, &p).result;
    assert!(r["aioverview"]["sources"].is_array());
    assert!(r["aioverview"].get("markdown").is_none());
    let p = json!({"query": "q", "gl": "us", "include": {"aioverview": false}});
    assert!(
        simulate_request(TaskType::Google, &p)
            .result
            .get("aioverview")
            .is_none()
    );
}

#[test]
fn google_url_payload() {
    let p = json!({"url": "https://www.google.de/search?q=beste+kaffeem%C3%BChle&gl=de&num=30"});
    let r = simulate_request(TaskType::Google, &p).result;
    assert_eq!(r["organicResults"].as_array().unwrap().len(), 30);
    let rel = r["relatedSearches"][0]["query"].as_str().unwrap();
    assert!(rel.starts_with("beste kaffeemühle"));
    assert!(
        r["organicResults"][0]["link"]
            .as_str()
            .unwrap()
            .contains("/de/")
    );
}

#[test]
fn google_news_pages() {
    let p = json!({"query": "election results", "gl": "us", "pages": 2});
    let r = simulate_request(TaskType::GoogleNews, &p).result;
    let news = r["newsResults"].as_array().unwrap();
    assert_eq!(news.len(), 20);
    for k in [
        "position", "title", "link", "snippet", "source", "date", "page",
    ] {
        assert!(news[0].get(k).is_some(), "{k}");
    }
    assert!(r.get("html").is_none());
    let p = json!({"query": "x", "gl": "us", "include": {"html": true}});
    let r = simulate_request(TaskType::GoogleNews, &p).result;
    assert_eq!(r["html"].as_array().unwrap().len(), 1);
}

/// Odd JSON never reaches an engine: the validator refuses it, and a stored value that is not a
/// payload of the task type does not read back (the queue then fails the task). Whatever does
/// get through simulates without a panic or a null.
#[test]
fn odd_payloads_never_panic() {
    let odd = [
        json!(null),
        json!({}),
        json!([]),
        json!("string"),
        json!({"prompt": 5, "country": null, "include": "yes", "pages": -3}),
        json!({"query": "", "gl": "<>\"", "pages": 1e300, "include": {"html": "true"}}),
        json!({"url": "not a url %zz%", "pages": "2"}),
        json!({"prompt": "\u{0}\n\t  \u{202e}émoji 🎉 ".repeat(50)}),
        json!({"prompt": "\u{0}\n\t  \u{202e}émoji 🎉 ".repeat(50), "country": "US"}),
    ];
    let check = |t: TaskType, typed: &Payload| {
        let out = simulate_value(typed, &PageLinks::fixed());
        assert_eq!(out.result["simulated"], true);
        assert_no_null(&out.result, t.as_str());
    };
    for p in &odd {
        for t in TaskType::ALL {
            if let Ok((typed, _)) = validate_payload(t, p, "payload") {
                check(t, &typed);
            }
            if let Ok(typed) = Payload::from_stored(t, p) {
                check(t, &typed);
            }
        }
    }
    // NUL is refused by validation (issue 12 item 4), so requests carry other control
    // characters; a NUL can still come from a stored payload, checked above.
    for t in TaskType::ALL {
        let out = simulate_request(
            t,
            &payload_for(t, &"\u{1}\n\t  \u{202e}émoji 🎉 ".repeat(50)),
        );
        assert_eq!(out.result["simulated"], true);
        assert_no_null(&out.result, t.as_str());
    }
    // The deepest page count the validator lets through.
    let r = simulate_request(
        TaskType::Google,
        &json!({"query": "x", "gl": "us", "pages": 10}),
    )
    .result;
    assert_eq!(r["organicResults"].as_array().unwrap().len(), 100);
}

#[test]
fn unit_interval_range_and_determinism() {
    let mut sum = 0.0;
    for i in 0..2000u32 {
        let seed = format!("task-{i}");
        let x = unit_interval(&seed, i % 5);
        assert!((0.0..1.0).contains(&x));
        assert_eq!(x.to_bits(), unit_interval(&seed, i % 5).to_bits());
        sum += x;
    }
    let mean = sum / 2000.0;
    assert!((0.4..0.6).contains(&mean), "mean {mean}");
    assert_ne!(unit_interval("a", 1), unit_interval("a", 2));
    assert_ne!(unit_interval("a", 1), unit_interval("b", 1));
    assert!((0.0..1.0).contains(&unit_interval("", u32::MAX)));
}

#[test]
fn helpers() {
    assert_eq!(collapse("  a\n b  ", 10), "a b");
    assert_eq!(collapse("abcdef", 3), "abc…");
    assert_eq!(slugify("Hello, World!"), "hello-world");
    assert_eq!(slugify("¿¿"), "topic");
    assert_eq!(url_encode("a b&é"), "a+b%26%C3%A9");
    let r = simulate_request(TaskType::Google, &json!({"query": "x", "gl": "us"})).result;
    assert!(keys(&r).contains(&"simulated"));
}

/// Every `http(s)://` URL inside `v` (in any string: links, texts, markdown, raw responses).
fn urls_in(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(i) = rest.find("http") {
                rest = &rest[i..];
                let end = rest
                    .find(|c: char| c.is_whitespace() || matches!(c, ')' | ']' | '"' | '<' | '>'))
                    .unwrap_or(rest.len());
                let candidate = &rest[..end];
                if candidate.starts_with("http://") || candidate.starts_with("https://") {
                    out.push(candidate.to_owned());
                }
                rest = &rest[4..];
            }
        }
        Value::Array(a) => a.iter().for_each(|x| urls_in(x, out)),
        Value::Object(o) => o.values().for_each(|x| urls_in(x, out)),
        _ => {}
    }
}

/// SPEC §5: no simulated result, of any task type and with every include flag, links to a
/// host cloro does not serve. Each URL's host is the public URL's (a result page) or a source
/// URL's: the reserved example domains, or Google's own links in Google-family results.
#[test]
fn no_simulated_result_links_to_a_host_cloro_does_not_serve() {
    let public = crate::pages::PublicUrl::parse("https://cloro.test.invalid:8443/base").unwrap();
    let links = PageLinks::new(&public, 42, uuid::Uuid::new_v4());
    let public_host = public.host().unwrap();
    let first_page = links.url(1);
    let page_prefix = first_page.trim_end_matches("page-1.html");
    let mut payloads: Vec<(TaskType, Value)> = super::golden_tests::cases();
    for t in TaskType::ALL {
        let all = match t {
            TaskType::Google => json!({"query": "best shoes", "gl": "us", "pages": 3,
                "include": {"html": true, "aioverview": {"markdown": true}, "paaAioverview": true}}),
            TaskType::GoogleNews => json!({"query": "best shoes", "gl": "us", "pages": 2,
                "include": {"html": true}}),
            TaskType::Aimode => json!({"prompt": "best shoes", "country": "US",
                "include": {"html": true, "markdown": true, "expandProducts": true}}),
            TaskType::Chatgpt => json!({"prompt": "best shoes", "country": "US",
                "include": {"html": true, "markdown": true, "rawResponse": true,
                            "searchQueries": true, "ads": true, "shopping": true}}),
            _ => json!({"prompt": "best shoes", "country": "US",
                "include": {"html": true, "markdown": true, "rawResponse": true}}),
        };
        payloads.push((t, all));
    }
    let mut hosts = std::collections::BTreeSet::new();
    let mut pages_seen = 0;
    for (t, raw) in payloads {
        let (typed, _) = validate_payload(t, &raw, "payload").expect("valid");
        let r = simulate_value(&typed, &links).result;
        let mut urls = Vec::new();
        urls_in(&r, &mut urls);
        for u in urls {
            let parsed = url::Url::parse(&u).unwrap_or_else(|e| panic!("{t:?}: {u}: {e}"));
            let host = parsed.host_str().unwrap_or_default().to_owned();
            let with_port = parsed
                .port()
                .map_or(host.clone(), |p| format!("{host}:{p}"));
            if with_port == public_host {
                assert!(u.starts_with(page_prefix), "{u}");
                pages_seen += 1;
                continue;
            }
            let source = ["example.com", "example.org", "example.net"]
                .iter()
                .any(|d| host == *d || host.ends_with(&format!(".{d}")));
            let google = matches!(
                t,
                TaskType::Google | TaskType::GoogleNews | TaskType::Aimode
            ) && (host == "www.google.com" || host == "google.com");
            assert!(source || google, "{t:?} links to {u}");
            hosts.insert(host);
        }
    }
    assert!(pages_seen >= 10, "{pages_seen}");
    assert!(hosts.contains("www.example.com"), "{hosts:?}");
}

/// The code itself names no result host cloro does not serve (the reference's made-up CDN).
#[test]
fn the_code_names_no_cdn_host_cloro_does_not_serve() {
    fn walk(dir: &std::path::Path, hits: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("readable") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, hits);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                for host in [
                    concat!("cdn.", "cloro.dev"),
                    concat!("storage.", "cloro.dev"),
                ] {
                    if text.contains(host) {
                        hits.push(format!("{}: {host}", path.display()));
                    }
                }
            }
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut hits = Vec::new();
    for dir in ["src", "tests", "docs"] {
        walk(&root.join(dir), &mut hits);
    }
    assert_eq!(hits, Vec::<String>::new());
}

proptest::proptest! {
    /// The simulator's own string writer gives exactly serde_json's text, escapes included.
    #[test]
    fn strings_are_written_as_serde_json_writes_them(s in "(?s).{0,40}|[\\x00-\\x7f]{0,40}|[a-z \"\\\\\\n]{0,20}") {
        let mut buf = Vec::new();
        super::context::push_str(&mut buf, &s);
        proptest::prop_assert_eq!(buf, serde_json::to_vec(&s).expect("a string serializes"));
    }

    /// The simulator's hexadecimal writer gives exactly `format!("{n:x}")`.
    #[test]
    fn hex_is_written_as_format_writes_it(n in proptest::num::u64::ANY, prefix in "[a-z/-]{0,8}") {
        let mut out = prefix.clone();
        super::context::push_hex(&mut out, n);
        proptest::prop_assert_eq!(out, format!("{prefix}{n:x}"));
    }

    /// Joining strings gives exactly their concatenation.
    #[test]
    fn joined_is_the_concatenation(parts in proptest::collection::vec("(?s).{0,12}", 0..6)) {
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        proptest::prop_assert_eq!(super::context::joined(&refs), parts.concat());
    }
}

#[test]
fn plain_and_escaped_strings_are_written_as_serde_json_writes_them() {
    for s in [
        "",
        "plain",
        "quote \"",
        "back\\slash",
        "tab\t",
        "\u{1f}",
        "\u{7f}",
        "é🎉",
        "\u{0}",
    ] {
        let mut buf = b"x".to_vec();
        super::context::push_str(&mut buf, s);
        let mut want = b"x".to_vec();
        want.extend(serde_json::to_vec(s).expect("a string serializes"));
        assert_eq!(buf, want, "{s:?}");
    }
}
