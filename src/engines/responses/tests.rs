//! Offline tests of the Responses-format adapter: the request builder and the normaliser on
//! fixtures written from the providers' documented formats (each fixture names its sources in
//! its `_source` field), the result shapes against the simulator's, citation offsets on
//! multi-byte text, and the HTTP exchange against a local fake upstream (axum on 127.0.0.1:0).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::normalize::{self, Citation, Normalized, Shape};
use super::{Chat, Provider, ResponsesConfig, ResponsesEngine, request};
use crate::domain::request::Payload;
use crate::domain::types::TaskType;
use crate::engines::Usage;
use crate::engines::simulated::simulate_value;
use crate::engines::{Engine, EngineError, EngineTask};
use crate::pages::PageLinks;

const KEY: &str = "sk-test-SECRET-0123456789";

const OPENAI_ANSWER: &str = include_str!("fixtures/openai_answer.json");
const OPENAI_NO_CITATIONS: &str = include_str!("fixtures/openai_no_citations.json");
const XAI_ANSWER: &str = include_str!("fixtures/xai_answer.json");
const XAI_EMPTY: &str = include_str!("fixtures/xai_empty.json");
const PERPLEXITY_ANSWER: &str = include_str!("fixtures/perplexity_answer.json");
const PERPLEXITY_FAILED: &str = include_str!("fixtures/perplexity_failed.json");
const AZURE_ANSWER: &str = include_str!("fixtures/azure_answer.json");

fn fixture(text: &str) -> Value {
    serde_json::from_str(text).expect("a fixture is JSON")
}

fn payload(task_type: TaskType, stored: Value) -> Payload {
    Payload::from_stored(task_type, &stored).expect("a stored payload reads back")
}

/// A chat payload with every include flag of the engine that changes a result.
fn full_payload(task_type: TaskType) -> Payload {
    let include = if task_type == TaskType::Chatgpt {
        json!({"markdown": true, "html": true, "rawResponse": true, "searchQueries": true,
               "shopping": true, "ads": true})
    } else {
        json!({"markdown": true, "html": true, "rawResponse": true})
    };
    payload(
        task_type,
        json!({"prompt": "meilleures machines à café", "country": "FR", "include": include}),
    )
}

fn shaped(shape: Shape, task_type: TaskType, fixture_text: &str) -> (Normalized, Value) {
    let json = fixture(fixture_text);
    let n = normalize::parse(&json).expect("a completed run");
    let p = full_payload(task_type);
    let (_, chat) = Chat::of(&p).expect("a chat payload");
    let result = normalize::shape(shape, &n, &chat, &PageLinks::fixed(), Some(json), KEY);
    (n, result)
}

// ------------------------------------------------------------------------------------------
// Shape check: the same keys and JSON types as the simulator's result for the same payload.

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Keys the simulator may have that a real result may leave out (optional in reference §5).
const OPTIONAL: &[&str] = &["datePublished"];

fn assert_same_shape(real: &Value, sim: &Value, path: &str, extra: &[&str]) {
    match (real, sim) {
        // `model` is string|null in the published shapes.
        (Value::Null, Value::String(_)) | (Value::String(_), Value::Null)
            if path.ends_with(".model") => {}
        (Value::Object(r), Value::Object(s)) => {
            for k in r.keys() {
                assert!(
                    s.contains_key(k) || extra.contains(&k.as_str()),
                    "{path}.{k}: not in the simulated shape"
                );
            }
            for (k, sv) in s {
                if k == "simulated" {
                    continue;
                }
                match r.get(k) {
                    Some(rv) if k == "rawResponse" => {
                        assert!(rv.is_array(), "{path}.rawResponse must be an array")
                    }
                    Some(rv) => assert_same_shape(rv, sv, &format!("{path}.{k}"), extra),
                    None => assert!(
                        OPTIONAL.contains(&k.as_str()),
                        "{path}.{k}: missing from the real result"
                    ),
                }
            }
        }
        (Value::Array(r), Value::Array(s)) => {
            if let Some(first) = s.first() {
                for (i, rv) in r.iter().enumerate() {
                    assert_same_shape(rv, first, &format!("{path}[{i}]"), extra);
                }
            }
        }
        _ => assert_eq!(kind(real), kind(sim), "{path}: type differs"),
    }
}

fn assert_shape_like_simulator(result: &Value, task_type: TaskType, extra: &[&str]) {
    assert_shape_like_simulator_for(result, &full_payload(task_type), extra);
}

/// The simulator's result for the same payload has the same keys and types.
fn assert_shape_like_simulator_for(result: &Value, payload: &Payload, extra: &[&str]) {
    let sim = simulate_value(payload, &PageLinks::fixed()).result;
    assert_same_shape(result, &sim, "result", extra);
    assert!(
        result.get("simulated").is_none(),
        "a real result is not simulated"
    );
    // And the published shape itself (reference §5), types included; COPILOT's `model` is the
    // one key the adapter adds (it names what actually answered).
    let problems: Vec<String> = crate::engines::shape::check(payload.task_type(), result)
        .into_iter()
        .filter(|p| !(extra.contains(&"model") && p == "model: not in the published shape"))
        .collect();
    assert_eq!(problems, Vec::<String>::new(), "{:?}", payload.task_type());
}

// ------------------------------------------------------------------------------------------
// Normaliser: OpenAI (CHATGPT)

#[test]
fn openai_answer_reads_text_citations_sources_queries_model_usage() {
    let json = fixture(OPENAI_ANSWER);
    let n = normalize::parse(&json).expect("completed");
    assert!(
        n.text
            .starts_with("Les meilleures machines à café 2026 ☕: Acme Barista")
    );
    assert_eq!(n.model.as_deref(), Some("gpt-5-mini-2025-08-07"));
    // One `search` call and one `open_page` (a page of that search: not a search).
    assert_eq!(
        n.usage,
        Some(Usage {
            input_tokens: Some(8120),
            output_tokens: Some(412),
            searches: Some(1),
        })
    );
    assert_eq!(
        n.queries,
        vec![
            "meilleures machines à café 2026",
            "machine espresso débutant"
        ]
    );
    assert_eq!(n.consulted.len(), 3);
    assert_eq!(n.citations.len(), 3);
    // Character indexes become byte spans that cover exactly the cited text.
    let covered: Vec<&str> = n
        .citations
        .iter()
        .map(|c| {
            let (s, e) = c.span.expect("indexed");
            &n.text[s..e]
        })
        .collect();
    assert_eq!(
        covered,
        vec![
            "([example.com](https://www.example.com/caf%C3%A9-guide?utm_source=openai))",
            "Northwind reste un bon choix pour les débutants 🎉",
            "コーヒーメーカー比較",
        ]
    );
}

#[test]
fn openai_answer_shapes_the_chatgpt_result() {
    let (n, r) = shaped(Shape::Chatgpt, TaskType::Chatgpt, OPENAI_ANSWER);
    assert_eq!(r["text"], json!(n.text));
    assert_eq!(r["model"], json!("gpt-5-mini-2025-08-07"));
    let sources = r["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 4, "{sources:#?}");
    assert_eq!(
        sources[0],
        json!({"position": 1, "url": "https://www.example.com/caf%C3%A9-guide?utm_source=openai",
               "label": "Guide des machines à café", "description": "", "footnote": true})
    );
    assert_eq!(
        sources[1]["url"],
        json!("https://reviews.example.org/espresso-machines?utm_source=openai")
    );
    assert_eq!(sources[1]["label"], json!("Espresso machines reviewed"));
    assert_eq!(sources[2]["url"], json!("https://example.net/jp/coffee"));
    assert_eq!(sources[2]["label"], json!("コーヒーメーカー比較"));
    assert_eq!(sources[2]["footnote"], json!(true));
    // Consulted but not cited: after the cited ones, labelled by its domain.
    assert_eq!(
        sources[3],
        json!({"position": 4, "url": "https://shop.example.com/machines",
               "label": "shop.example.com", "description": "", "footnote": false})
    );
    let pills = r["citationPills"].as_array().expect("pills");
    assert_eq!(pills.len(), 3);
    assert_eq!(
        pills[1],
        json!({"url": "https://reviews.example.org/espresso-machines?utm_source=openai",
               "label": "Espresso machines reviewed", "domain": "reviews.example.org",
               "citationPillId": 1, "type": "searchResult", "position": 2})
    );
    assert_eq!(
        pills[0]["citationPillId"],
        json!(0),
        "ChatGPT pills are 0-based"
    );
    assert_eq!(
        r["searchQueries"],
        json!([
            "meilleures machines à café 2026",
            "machine espresso débutant"
        ])
    );
    assert_eq!(r["mapSearchQueries"], json!([]));
    assert_eq!(r["entities"], json!([]));
    assert_eq!(r["map"], json!([]));
    assert_eq!(r["shoppingCards"], json!([]));
    assert_eq!(r["inlineProducts"], json!([]));
    assert_eq!(r["ads"], json!([]));
    assert_eq!(r["rawResponse"], json!([fixture(OPENAI_ANSWER)]));
    assert_eq!(r["html"], json!(PageLinks::fixed().url(1)));
    assert_shape_like_simulator(&r, TaskType::Chatgpt, &[]);
}

#[test]
fn markdown_links_each_citation_once_at_the_right_character() {
    let (_, r) = shaped(Shape::Chatgpt, TaskType::Chatgpt, OPENAI_ANSWER);
    let expected = "Les meilleures machines à café 2026 ☕: Acme Barista est la plus recommandée \
        ([example.com](https://www.example.com/caf%C3%A9-guide?utm_source=openai)). Northwind \
        reste un bon choix pour les débutants 🎉 \
        [2](https://reviews.example.org/espresso-machines?utm_source=openai). En japonais: \
        コーヒーメーカー比較 [3](https://example.net/jp/coffee).";
    assert_eq!(r["markdown"], json!(expected));
}

#[test]
fn include_flags_decide_the_optional_fields() {
    let json = fixture(OPENAI_ANSWER);
    let n = normalize::parse(&json).expect("completed");
    let p = payload(TaskType::Chatgpt, json!({"prompt": "x", "country": "US"}));
    let (_, chat) = Chat::of(&p).expect("chat");
    let r = normalize::shape(
        Shape::Chatgpt,
        &n,
        &chat,
        &PageLinks::fixed(),
        Some(json),
        KEY,
    );
    assert_shape_like_simulator_for(&r, &p, &[]);
    for key in [
        "markdown",
        "rawResponse",
        "searchQueries",
        "mapSearchQueries",
        "shoppingCards",
        "inlineProducts",
        "ads",
        "html",
    ] {
        assert!(r.get(key).is_none(), "{key} without its include flag");
    }
}

#[test]
fn openai_without_citations_reads_the_older_single_query() {
    let (n, r) = shaped(Shape::Chatgpt, TaskType::Chatgpt, OPENAI_NO_CITATIONS);
    assert_eq!(
        n.text,
        "Most runners pick a neutral shoe with good cushioning."
    );
    assert_eq!(r["sources"], json!([]));
    assert_eq!(r["citationPills"], json!([]));
    assert_eq!(r["searchQueries"], json!(["best running shoes"]));
    assert_eq!(r["markdown"], json!(n.text));
    assert_shape_like_simulator(&r, TaskType::Chatgpt, &[]);
}

// ------------------------------------------------------------------------------------------
// Normaliser: xAI (GROK)

#[test]
fn xai_answer_without_indexes_or_titles() {
    let (n, r) = shaped(Shape::Grok, TaskType::Grok, XAI_ANSWER);
    assert!(
        n.citations
            .iter()
            .all(|c| c.span.is_none() && c.title.is_none())
    );
    assert_eq!(r["model"], json!("grok-4-fast-reasoning"));
    assert_eq!(
        r["searchQueries"],
        json!(["best budget laptops 2026", "Lumen laptop review"])
    );
    let sources = r["sources"].as_array().expect("sources");
    assert_eq!(sources.len(), 2, "one source per URL: {sources:#?}");
    assert_eq!(
        sources[0],
        json!({"position": 1, "url": "https://news.example.org/laptops-2026",
               "label": "news.example.org", "description": "", "preview": "",
               "searchEngineText": "", "siteName": "", "metadataTitle": "", "creator": "",
               "image": "", "favicon": ""})
    );
    assert_eq!(sources[1]["position"], json!(2));
    assert_eq!(
        sources[1]["url"],
        json!("https://www.example.com/lumen-review")
    );
    // No spans: the citations close the markdown as links.
    assert_eq!(
        r["markdown"],
        json!(format!(
            "{}\n\nSources: [1](https://news.example.org/laptops-2026) \
             [2](https://www.example.com/lumen-review)",
            n.text
        ))
    );
    assert_shape_like_simulator(&r, TaskType::Grok, &[]);
}

#[test]
fn xai_empty_output_is_a_valid_empty_answer() {
    let (n, r) = shaped(Shape::Grok, TaskType::Grok, XAI_EMPTY);
    assert_eq!(n.text, "");
    assert_eq!(r["text"], json!(""));
    assert_eq!(r["sources"], json!([]));
    assert_eq!(r["searchQueries"], json!([]));
    assert_eq!(r["markdown"], json!(""));
    assert_eq!(r["model"], json!("grok-4"));
    assert_shape_like_simulator(&r, TaskType::Grok, &[]);
}

// ------------------------------------------------------------------------------------------
// Normaliser: Perplexity Agent API (PERPLEXITY)

#[test]
fn perplexity_sources_come_from_the_search_results_item() {
    let (n, r) = shaped(Shape::Perplexity, TaskType::Perplexity, PERPLEXITY_ANSWER);
    assert!(n.citations.is_empty());
    assert_eq!(
        r["sources"],
        json!([
            {"position": 1, "url": "https://www.example.com/trail-shoes",
             "label": "Best trail shoes of 2026",
             "description": "Acme Trail 3 tops our list for grip and comfort."},
            {"position": 2, "url": "https://forum.example.net/wide-feet",
             "label": "Trail shoes for wide feet",
             "description": "Contoso Peak has a roomy toe box."}
        ])
    );
    assert_eq!(
        r["search_model_queries"],
        json!(["best trail running shoes 2026", "wide fit trail shoes"])
    );
    assert_eq!(r["citationPills"], json!([]));
    assert_eq!(r["related_queries"], json!([]));
    for key in ["videos", "images", "hotels", "places", "shopping_cards"] {
        assert_eq!(r[key], json!([]), "{key}");
    }
    assert!(
        r.get("model").is_none(),
        "the Perplexity shape has no model"
    );
    assert_shape_like_simulator(&r, TaskType::Perplexity, &[]);
}

#[test]
fn a_failed_or_cancelled_run_is_not_an_answer() {
    let json = fixture(PERPLEXITY_FAILED);
    let Err(normalize::RunFailed { message, usage }) = normalize::parse(&json) else {
        panic!("a failed run must not be an answer");
    };
    assert_eq!(usage, None, "the fixture reports no usage");
    assert!(message.contains("\"failed\""), "{message}");
    assert!(
        message.contains("The model run failed, please retry."),
        "{message}"
    );
    let cancelled = json!({"status": "cancelled", "output": []});
    assert!(normalize::parse(&cancelled).is_err());
    let in_progress = json!({"status": "in_progress", "output": []});
    assert!(normalize::parse(&in_progress).is_err());
}

// ------------------------------------------------------------------------------------------
// Normaliser: Azure OpenAI (COPILOT)

#[test]
fn azure_answer_shapes_the_copilot_result_with_the_real_model() {
    let (_, r) = shaped(Shape::Copilot, TaskType::Copilot, AZURE_ANSWER);
    assert_eq!(r["model"], json!("gpt-4.1-2025-04-14"));
    assert_eq!(
        r["sources"],
        json!([{"position": 1, "url": "https://reviews.example.com/contoso",
                "label": "Contoso support reviews", "description": ""}])
    );
    assert_eq!(
        r["citationPills"],
        json!([{"url": "https://reviews.example.com/contoso",
                "label": "Contoso support reviews", "domain": "reviews.example.com",
                "citationPillId": 1, "position": 1}])
    );
    assert_eq!(
        r["searchQueries"],
        json!(["Contoso customer support rating UK"])
    );
    assert_eq!(
        r["markdown"],
        json!(
            "Contoso's support is rated highly in the UK [1](https://reviews.example.com/contoso) (Which?, 2026)."
        )
    );
    // `model` is the one key beyond the published Copilot shape.
    assert_shape_like_simulator(&r, TaskType::Copilot, &["model"]);
}

// ------------------------------------------------------------------------------------------
// Offsets on multi-byte text

fn answer_with(text: &str, annotations: Value) -> Value {
    json!({"status": "completed", "model": "m", "output": [{"type": "message", "content": [
        {"type": "output_text", "text": text, "annotations": annotations}]}]})
}

#[test]
fn character_indexes_become_byte_spans_on_multibyte_text() {
    // é = 2 bytes, 🎉 = 4 bytes (1 code point), 中文 = 3 bytes each.
    let text = "Café 🎉 中文 end";
    let n = normalize::parse(&answer_with(
        text,
        json!([
            {"type": "url_citation", "url": "https://a.example.com/", "start_index": 0, "end_index": 4},
            {"type": "url_citation", "url": "https://b.example.com/", "start_index": 5, "end_index": 6},
            {"type": "url_citation", "url": "https://c.example.com/", "start_index": 7, "end_index": 9},
            {"type": "url_citation", "url": "https://d.example.com/", "start_index": 10, "end_index": 13}
        ]),
    ))
    .expect("completed");
    let covered: Vec<&str> = n
        .citations
        .iter()
        .map(|c| {
            let (s, e) = c.span.expect("span");
            &text[s..e]
        })
        .collect();
    assert_eq!(covered, vec!["Café", "🎉", "中文", "end"]);
    let srcs = normalize::sources(&n);
    assert_eq!(
        normalize::markdown(&n, &srcs),
        "Café [1](https://a.example.com/) 🎉 [2](https://b.example.com/) 中文 \
         [3](https://c.example.com/) end [4](https://d.example.com/)"
    );
}

#[test]
fn bad_indexes_keep_the_citation_without_a_span() {
    let text = "日本語";
    let n = normalize::parse(&answer_with(
        text,
        json!([
            {"type": "url_citation", "url": "https://a.example.com/", "start_index": 2, "end_index": 9},
            {"type": "url_citation", "url": "https://b.example.com/", "start_index": 2, "end_index": 1},
            {"type": "url_citation", "url": "https://c.example.com/", "start_index": 3, "end_index": 3},
            {"type": "file_citation", "file_id": "f"},
            {"type": "url_citation", "url": ""}
        ]),
    ))
    .expect("completed");
    assert_eq!(
        n.citations,
        vec![
            Citation {
                url: "https://a.example.com/".into(),
                title: None,
                span: None
            },
            Citation {
                url: "https://b.example.com/".into(),
                title: None,
                span: None
            },
            Citation {
                url: "https://c.example.com/".into(),
                title: None,
                span: Some((9, 9))
            },
        ]
    );
    // Sources by first appearance: the spanned citation first, then the others in order.
    let srcs = normalize::sources(&n);
    let urls: Vec<&str> = srcs.iter().map(|s| s.url.as_str()).collect();
    assert_eq!(
        urls,
        vec![
            "https://c.example.com/",
            "https://a.example.com/",
            "https://b.example.com/"
        ]
    );
}

#[test]
fn several_text_parts_join_and_keep_their_offsets() {
    let json = json!({"status": "completed", "output": [
    {"type": "message", "content": [
        {"type": "output_text", "text": "ü first", "annotations": [
            {"type": "url_citation", "url": "https://a.example.com/", "start_index": 2, "end_index": 7}]},
        {"type": "refusal", "refusal": "no"},
        {"type": "output_text", "text": "ß second", "annotations": [
            {"type": "url_citation", "url": "https://b.example.com/", "start_index": 2, "end_index": 8}]}
    ]}]});
    let n = normalize::parse(&json).expect("completed");
    assert_eq!(n.text, "ü first\n\nß second");
    let covered: Vec<&str> = n
        .citations
        .iter()
        .map(|c| {
            let (s, e) = c.span.expect("span");
            &n.text[s..e]
        })
        .collect();
    assert_eq!(covered, vec!["first", "second"]);
}

#[test]
fn domains_are_read_without_a_url_parser() {
    use normalize::domain;
    assert_eq!(domain("https://WWW.Example.com/a?b#c"), "www.example.com");
    assert_eq!(domain("https://user:pw@example.org:8443/x"), "example.org");
    assert_eq!(domain("http://example.net?q=1"), "example.net");
    assert_eq!(domain("https://[2001:db8::1]:443/x"), "[2001:db8::1]");
    assert_eq!(domain("example.com/no-scheme"), "");
}

#[test]
fn tracking_parameters_do_not_split_a_source() {
    use normalize::same_url_key;
    assert_eq!(
        same_url_key("https://a.example.com/x?utm_source=openai"),
        "https://a.example.com/x"
    );
    assert_eq!(
        same_url_key("https://a.example.com/x?id=1&utm_source=chatgpt.com#top"),
        "https://a.example.com/x?id=1#top"
    );
    assert_eq!(
        same_url_key("https://a.example.com/x?utm_source=other"),
        "https://a.example.com/x?utm_source=other"
    );
}

// ------------------------------------------------------------------------------------------
// Request bodies

fn chat_body(provider: Provider, stored: Value, location: bool) -> Value {
    let p = payload(TaskType::Chatgpt, stored);
    let (_, chat) = Chat::of(&p).expect("chat");
    let opts = request::Options {
        provider,
        model: "m-1",
        tool: "web_search",
        user_location: location,
        include_sources: matches!(provider, Provider::OpenAi | Provider::AzureOpenAi),
    };
    request::body(&opts, &chat)
}

#[test]
fn openai_body_asks_for_web_search_near_the_user_and_every_source() {
    let body = chat_body(
        Provider::OpenAi,
        json!({"prompt": "best pizza", "country": "US", "state": "CA"}),
        true,
    );
    assert_eq!(
        body,
        json!({"model": "m-1", "input": "best pizza",
               "tools": [{"type": "web_search", "user_location":
                          {"type": "approximate", "country": "US", "region": "CA"}}],
               "include": ["web_search_call.action.sources"]})
    );
}

#[test]
fn disabled_web_search_sends_no_tool() {
    let body = chat_body(
        Provider::OpenAi,
        json!({"prompt": "hi", "country": "US", "disableWebSearch": true}),
        true,
    );
    assert_eq!(body, json!({"model": "m-1", "input": "hi"}));
}

#[test]
fn xai_and_perplexity_bodies_carry_only_documented_fields() {
    let xai = chat_body(
        Provider::Xai,
        json!({"prompt": "q", "country": "DE"}),
        false,
    );
    assert_eq!(
        xai,
        json!({"model": "m-1", "input": "q", "tools": [{"type": "web_search"}]})
    );
    let pplx = chat_body(
        Provider::Perplexity,
        json!({"prompt": "q", "country": "DE"}),
        true,
    );
    assert_eq!(
        pplx,
        json!({"model": "m-1", "input": "q",
               "tools": [{"type": "web_search", "user_location": {"country": "DE"}}]})
    );
}

// ------------------------------------------------------------------------------------------
// Configuration

#[test]
fn the_constructor_checks_its_configuration() {
    let ok = |base: &str, key: &str, model: &str| {
        ResponsesEngine::new(ResponsesConfig::new(Provider::OpenAi, base, key, model))
    };
    assert!(ok("https://api.openai.com/v1", KEY, "gpt-5-mini").is_ok());
    assert!(ok("https://api.openai.com/v1/", KEY, "gpt-5-mini").is_ok());
    assert!(ok("ftp://api.openai.com/v1", KEY, "m").is_err());
    assert!(ok("not a url", KEY, "m").is_err());
    assert!(ok("https://api.openai.com/v1?x=1", KEY, "m").is_err());
    assert!(ok("https://api.openai.com/v1", " ", "m").is_err());
    assert!(ok("https://api.openai.com/v1", KEY, "").is_err());
    assert!(ok("https://api.openai.com/v1", "bad\nkey", "m").is_err());
    let engine = ok("https://api.openai.com/v1", KEY, "m").expect("valid");
    assert_eq!(engine.url, "https://api.openai.com/v1/responses");
    assert!(!format!("{engine:?}").contains(KEY));
    assert_eq!(Provider::parse("Azure"), Ok(Provider::AzureOpenAi));
    assert_eq!(Provider::parse("xai"), Ok(Provider::Xai));
    assert!(Provider::parse("bard").is_err());
}

// ------------------------------------------------------------------------------------------
// HTTP: a local fake upstream

/// What the fake answers.
#[derive(Clone)]
enum Reply {
    Json {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Holds the answer for this long first (past the engine's timeout).
    Slow(Duration),
    /// A valid-looking answer of this many bytes.
    Big(usize),
}

fn ok(body: &str) -> Reply {
    Reply::Json {
        status: 200,
        headers: Vec::new(),
        body: body.to_owned(),
    }
}

/// What the fake received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Clone)]
struct Fake {
    reply: Reply,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn handle(State(fake): State<Fake>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    fake.seen.lock().expect("lock").push(Seen {
        path: uri.path().to_owned(),
        headers,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    });
    match fake.reply {
        Reply::Json {
            status,
            headers,
            body,
        } => {
            let mut resp = (
                StatusCode::from_u16(status).expect("status"),
                [("content-type", "application/json")],
                body,
            )
                .into_response();
            for (k, v) in headers {
                resp.headers_mut()
                    .insert(k, v.parse().expect("header value"));
            }
            resp
        }
        Reply::Slow(wait) => {
            tokio::time::sleep(wait).await;
            (StatusCode::OK, XAI_EMPTY).into_response()
        }
        Reply::Big(n) => {
            let pad = "x".repeat(n);
            (
                StatusCode::OK,
                format!("{{\"status\":\"completed\",\"pad\":\"{pad}\"}}"),
            )
                .into_response()
        }
    }
}

async fn start(reply: Reply) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new().fallback(handle).with_state(Fake {
        reply,
        seen: seen.clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen)
}

struct Run {
    out: Result<Value, EngineError>,
    /// The answer's usage (`None` for an error).
    usage: Option<Usage>,
    seen: Vec<Seen>,
}

async fn run_with(
    provider: Provider,
    reply: Reply,
    task_type: TaskType,
    stored: Value,
    tweak: impl FnOnce(&mut ResponsesConfig),
) -> Run {
    let (addr, seen) = start(reply).await;
    let base = match provider {
        Provider::AzureOpenAi => format!("http://{addr}/openai/v1"),
        _ => format!("http://{addr}/v1"),
    };
    let mut cfg = ResponsesConfig::new(provider, &base, KEY, "model-x");
    cfg.timeout = Duration::from_secs(5);
    tweak(&mut cfg);
    let engine = ResponsesEngine::new(cfg).expect("engine");
    let p = payload(task_type, stored);
    let out = engine
        .execute(EngineTask {
            id: Uuid::nil(),
            task_type,
            payload: &p,
            attempt: 1,
            pages: &PageLinks::fixed(),
        })
        .await;
    let usage = out.as_ref().ok().and_then(|o| o.usage);
    let out = out.map(|o| {
        assert_eq!(o.extra_credits, 0);
        o.result.to_value()
    });
    let seen = seen.lock().expect("lock").clone();
    Run { out, usage, seen }
}

async fn run(provider: Provider, reply: Reply, task_type: TaskType) -> Run {
    run_with(
        provider,
        reply,
        task_type,
        json!({"prompt": "best coffee machine", "country": "FR",
               "include": {"markdown": true, "rawResponse": true}}),
        |_| {},
    )
    .await
}

/// Neither the error nor the result may carry the key.
fn assert_no_key(run: &Run) {
    let text = match &run.out {
        Ok(v) => v.to_string(),
        Err(e) => format!("{e} {e:?}"),
    };
    assert!(!text.contains(KEY), "the key leaked: {text}");
}

#[tokio::test]
async fn openai_call_sends_the_documented_request_and_maps_the_answer() {
    let r = run_with(
        Provider::OpenAi,
        ok(OPENAI_ANSWER),
        TaskType::Chatgpt,
        json!({"prompt": "best coffee machine", "country": "US", "state": "NY",
               "include": {"searchQueries": true}}),
        |_| {},
    )
    .await;
    let result = r.out.as_ref().expect("an answer");
    assert_eq!(result["model"], json!("gpt-5-mini-2025-08-07"));
    assert_eq!(result["sources"].as_array().map(Vec::len), Some(4));
    assert_eq!(
        result["searchQueries"][0],
        json!("meilleures machines à café 2026")
    );
    assert_eq!(r.seen.len(), 1);
    let seen = &r.seen[0];
    assert_eq!(seen.path, "/v1/responses");
    assert_eq!(
        seen.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(
        seen.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert_eq!(
        seen.body,
        json!({"model": "model-x", "input": "best coffee machine",
               "tools": [{"type": "web_search", "user_location":
                          {"type": "approximate", "country": "US", "region": "NY"}}],
               "include": ["web_search_call.action.sources"]})
    );
    assert_no_key(&r);
}

#[tokio::test]
async fn azure_preview_tool_and_no_sources_when_configured() {
    let r = run_with(
        Provider::AzureOpenAi,
        ok(AZURE_ANSWER),
        TaskType::Copilot,
        json!({"prompt": "q", "country": "GB"}),
        |cfg| {
            cfg.web_search_tool = "web_search_preview".into();
            cfg.include_sources = Some(false);
            cfg.user_location = Some(false);
        },
    )
    .await;
    assert!(r.out.is_ok(), "{:?}", r.out);
    assert_eq!(
        r.seen[0].body,
        json!({"model": "model-x", "input": "q", "tools": [{"type": "web_search_preview"}]})
    );
}

#[tokio::test]
async fn azure_call_uses_the_api_key_header() {
    let r = run(Provider::AzureOpenAi, ok(AZURE_ANSWER), TaskType::Copilot).await;
    let result = r.out.as_ref().expect("an answer");
    assert_eq!(result["model"], json!("gpt-4.1-2025-04-14"));
    let seen = &r.seen[0];
    assert_eq!(seen.path, "/openai/v1/responses");
    assert_eq!(
        seen.headers.get("api-key").and_then(|v| v.to_str().ok()),
        Some(KEY)
    );
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(
        seen.body["include"],
        json!(["web_search_call.action.sources"])
    );
    assert_no_key(&r);
}

#[tokio::test]
async fn xai_call_without_citations_and_with_an_empty_output() {
    let r = run(Provider::Xai, ok(OPENAI_NO_CITATIONS), TaskType::Grok).await;
    let result = r.out.as_ref().expect("an answer");
    assert_eq!(result["sources"], json!([]));
    assert_eq!(result["searchQueries"], json!(["best running shoes"]));
    assert_eq!(
        r.seen[0].body,
        json!({"model": "model-x", "input": "best coffee machine",
               "tools": [{"type": "web_search"}]})
    );
    let r = run(Provider::Xai, ok(XAI_EMPTY), TaskType::Grok).await;
    let result = r.out.as_ref().expect("an empty answer is an answer");
    assert_eq!(result["text"], json!(""));
    assert_eq!(result["rawResponse"], json!([fixture(XAI_EMPTY)]));
}

#[tokio::test]
async fn perplexity_call_and_a_failed_run_returned_with_200() {
    let r = run(
        Provider::Perplexity,
        ok(PERPLEXITY_ANSWER),
        TaskType::Perplexity,
    )
    .await;
    let result = r.out.as_ref().expect("an answer");
    assert_eq!(result["sources"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        r.seen[0].body["tools"],
        json!([{"type": "web_search", "user_location": {"country": "FR"}}])
    );
    let r = run(
        Provider::Perplexity,
        ok(PERPLEXITY_FAILED),
        TaskType::Perplexity,
    )
    .await;
    match &r.out {
        Err(EngineError::Retryable(m)) => assert!(m.contains("failed"), "{m}"),
        other => panic!("expected a retryable failure, got {other:?}"),
    }
}

#[test]
fn usage_per_provider_from_the_fixtures() {
    let usage = |text: &str| normalize::usage(&fixture(text));
    let u = |i: u64, o: u64, s: Option<u64>| {
        Some(Usage {
            input_tokens: Some(i),
            output_tokens: Some(o),
            searches: s,
        })
    };
    assert_eq!(usage(OPENAI_ANSWER), u(8120, 412, Some(1)));
    assert_eq!(usage(OPENAI_NO_CITATIONS), u(50, 12, Some(1)));
    assert_eq!(usage(AZURE_ANSWER), u(900, 40, Some(1)));
    // xAI: two `web_search_call` items without an action (its num_server_side_tools_used: 2).
    assert_eq!(usage(XAI_ANSWER), u(1941, 583, Some(2)));
    // An empty `output`: no search ran.
    assert_eq!(usage(XAI_EMPTY), u(12, 0, Some(0)));
    // No `output` at all: no search count reported.
    assert_eq!(
        normalize::usage(&json!({"usage": {"input_tokens": 3, "output_tokens": 1}})),
        u(3, 1, None)
    );
    // Perplexity: one `search_results` item.
    assert_eq!(usage(PERPLEXITY_ANSWER), u(420, 64, Some(1)));
    assert_eq!(usage(PERPLEXITY_FAILED), None);
    assert_eq!(normalize::usage(&json!({"status": "completed"})), None);
}

#[tokio::test]
async fn an_answer_carries_its_usage_and_a_billed_failed_run_too() {
    let r = run(Provider::OpenAi, ok(OPENAI_ANSWER), TaskType::Chatgpt).await;
    assert_eq!(
        r.usage,
        Some(Usage {
            input_tokens: Some(8120),
            output_tokens: Some(412),
            searches: Some(1),
        })
    );
    // A failed run whose body reports what it used: retried, and its usage still counts.
    let mut failed = fixture(PERPLEXITY_FAILED);
    failed["usage"] = json!({"input_tokens": 30, "output_tokens": 0});
    let r = run(
        Provider::Perplexity,
        ok(&failed.to_string()),
        TaskType::Perplexity,
    )
    .await;
    let Err(e) = r.out else {
        panic!("a failed run is not an answer");
    };
    let (e, usage) = e.billed();
    assert!(
        matches!(e, EngineError::Retryable(ref m) if m.contains("failed")),
        "{e:?}"
    );
    assert_eq!(
        usage,
        Some(Usage {
            input_tokens: Some(30),
            output_tokens: Some(0),
            searches: Some(0),
        })
    );
}

#[tokio::test]
async fn a_429_rate_limit_carries_the_announced_wait() {
    let reply = Reply::Json {
        status: 429,
        headers: vec![("retry-after", "7".into())],
        body: r#"{"error":{"message":"Rate limit reached for gpt-5-mini","type":"requests","code":"rate_limit_exceeded"}}"#.into(),
    };
    let r = run(Provider::OpenAi, reply, TaskType::Chatgpt).await;
    match &r.out {
        Err(EngineError::RateLimited {
            retry_after,
            message,
        }) => {
            assert_eq!(*retry_after, Some(Duration::from_secs(7)));
            assert!(message.contains("rate_limit_exceeded"), "{message}");
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
    let reply = Reply::Json {
        status: 429,
        headers: vec![("x-ratelimit-reset-requests", "1.5s".into())],
        body: r#"{"error":{"message":"slow down","code":"rate_limit_exceeded"}}"#.into(),
    };
    let r = run(Provider::OpenAi, reply, TaskType::Chatgpt).await;
    assert!(matches!(
        r.out,
        Err(EngineError::RateLimited { retry_after: Some(d), .. }) if d == Duration::from_millis(1500)
    ));
}

#[tokio::test]
async fn insufficient_quota_is_a_refused_key_not_a_rate_limit() {
    let reply = Reply::Json {
        status: 429,
        headers: Vec::new(),
        body: r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#.into(),
    };
    let r = run(Provider::OpenAi, reply, TaskType::Chatgpt).await;
    match &r.out {
        Err(EngineError::Unauthorized { message }) => {
            assert!(message.contains("exceeded your current quota"), "{message}")
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

#[tokio::test]
async fn a_500_is_retryable() {
    let reply = Reply::Json {
        status: 500,
        headers: Vec::new(),
        body: r#"{"error":{"message":"The server had an error while processing your request.","type":"server_error"}}"#.into(),
    };
    let r = run(Provider::OpenAi, reply, TaskType::Chatgpt).await;
    match &r.out {
        Err(EngineError::Retryable(m)) => assert!(m.contains("server had an error"), "{m}"),
        other => panic!("expected Retryable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_timeout_is_retryable() {
    let r = run_with(
        Provider::Xai,
        Reply::Slow(Duration::from_secs(3)),
        TaskType::Grok,
        json!({"prompt": "q", "country": "US"}),
        |cfg| cfg.timeout = Duration::from_millis(200),
    )
    .await;
    match &r.out {
        Err(EngineError::Retryable(m)) => assert!(m.contains("in time"), "{m}"),
        other => panic!("expected Retryable, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_json_is_retryable() {
    let r = run(
        Provider::OpenAi,
        ok("{\"output\": [ oops"),
        TaskType::Chatgpt,
    )
    .await;
    assert!(matches!(r.out, Err(EngineError::Retryable(ref m)) if m.contains("not JSON")));
    let r = run(Provider::OpenAi, ok("[1, 2]"), TaskType::Chatgpt).await;
    assert!(matches!(r.out, Err(EngineError::Retryable(_))));
}

#[tokio::test]
async fn an_authentication_error_is_unauthorized_and_never_shows_the_key() {
    let reply = Reply::Json {
        status: 401,
        headers: Vec::new(),
        body: format!(
            r#"{{"error":{{"message":"Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}}}"#
        ),
    };
    let r = run(Provider::OpenAi, reply, TaskType::Chatgpt).await;
    match &r.out {
        Err(EngineError::Unauthorized { message }) => {
            assert!(message.contains("Incorrect API key provided"), "{message}");
            assert!(message.contains("[redacted]"), "{message}");
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_no_key(&r);
    // xAI's error body: `{"code": "…", "error": "…"}`.
    let reply = Reply::Json {
        status: 400,
        headers: Vec::new(),
        body: format!(
            r#"{{"code":"Client specified an invalid argument","error":"Incorrect API key provided: {KEY}"}}"#
        ),
    };
    let r = run(Provider::Xai, reply, TaskType::Grok).await;
    match &r.out {
        Err(EngineError::Unauthorized { message }) => {
            assert!(message.contains("Incorrect API key provided"), "{message}")
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_no_key(&r);
    // A model or Azure deployment that does not exist: the engine's configuration.
    let reply = Reply::Json {
        status: 404,
        headers: Vec::new(),
        body: r#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#.into(),
    };
    let r = run(Provider::AzureOpenAi, reply, TaskType::Copilot).await;
    assert!(
        matches!(r.out, Err(EngineError::Unauthorized { ref message }) if message.contains("DeploymentNotFound")),
        "{:?}",
        r.out
    );
}

#[tokio::test]
async fn a_bad_request_is_fatal_with_the_providers_message() {
    let reply = Reply::Json {
        status: 400,
        headers: Vec::new(),
        body: r#"{"error":{"message":"Unknown field: user_location.type","type":"invalid_request_error","code":"invalid_request"}}"#.into(),
    };
    let r = run(Provider::Perplexity, reply, TaskType::Perplexity).await;
    match &r.out {
        Err(EngineError::Fatal { message, .. }) => {
            assert!(
                message.contains("Unknown field: user_location.type"),
                "{message}"
            )
        }
        other => panic!("expected Fatal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_body_larger_than_the_cap_is_retryable() {
    let r = run_with(
        Provider::OpenAi,
        Reply::Big(4096),
        TaskType::Chatgpt,
        json!({"prompt": "q", "country": "US"}),
        |cfg| cfg.max_body_bytes = 1024,
    )
    .await;
    match &r.out {
        Err(EngineError::Retryable(m)) => assert!(m.contains("larger than 1024"), "{m}"),
        other => panic!("expected Retryable, got {other:?}"),
    }
}

#[tokio::test]
async fn the_key_never_reaches_raw_response() {
    // An upstream that echoes the key somewhere in its answer.
    let mut echoed = fixture(XAI_ANSWER);
    echoed["user"] = json!(format!("caller {KEY}"));
    let r = run(Provider::Xai, ok(&echoed.to_string()), TaskType::Grok).await;
    let result = r.out.as_ref().expect("an answer");
    assert_eq!(result["rawResponse"][0]["user"], json!("caller [redacted]"));
    assert_no_key(&r);
}

#[tokio::test]
async fn task_types_it_does_not_serve_fail_without_a_call() {
    let (addr, seen) = start(ok(OPENAI_ANSWER)).await;
    let engine = ResponsesEngine::new(ResponsesConfig::new(
        Provider::OpenAi,
        &format!("http://{addr}/v1"),
        KEY,
        "m",
    ))
    .expect("engine");
    for (t, stored) in [
        (TaskType::Gemini, json!({"prompt": "q", "country": "US"})),
        (
            TaskType::GoogleNews,
            json!({"query": "a", "gl": "us", "country": "US", "device": "desktop", "pages": 1}),
        ),
    ] {
        let p = payload(t, stored);
        let out = engine
            .execute(EngineTask {
                id: Uuid::nil(),
                task_type: t,
                payload: &p,
                attempt: 1,
                pages: &PageLinks::fixed(),
            })
            .await;
        assert!(
            matches!(out, Err(EngineError::Fatal { ref code, .. }) if code == "ENGINE_NOT_SUPPORTED"),
            "{out:?}"
        );
    }
    assert!(seen.lock().expect("lock").is_empty());
}

// ------------------------------------------------------------------------------------------
// CPU per task (issue 10: parse + normalise a typical answer with 20 sources under 200 µs)

/// A typical OpenAI answer: ~3 KB of text with multi-byte characters, 20 cited sources, 20
/// consulted ones (half of them the cited URLs), 3 queries.
pub(super) fn typical_answer() -> String {
    let mut text = String::new();
    let mut annotations = Vec::new();
    let mut sources = Vec::new();
    for i in 0..20 {
        let sentence =
            format!("Paragraphe {i}: la marque n°{i} est appréciée ☕ pour sa qualité. ");
        let start = text.chars().count();
        text.push_str(&sentence);
        let end = text.chars().count();
        let url = format!("https://site{i}.example.com/article-{i}?utm_source=openai");
        annotations.push(
            json!({"type": "url_citation", "start_index": start, "end_index": end,
                                "url": url, "title": format!("Article {i}")}),
        );
        sources.push(
            json!({"type": "url", "url": format!("https://site{}.example.com/article-{}", i, i)}),
        );
        sources.push(json!({"type": "url", "url": format!("https://other{i}.example.org/")}));
        text.push_str("Plus de détails sur les prix et la durabilité suivent. ");
    }
    json!({"status": "completed", "model": "gpt-5-mini", "output": [
        {"type": "web_search_call", "action": {"type": "search",
            "queries": ["q one", "q two", "q three"], "sources": sources}},
        {"type": "message", "content": [{"type": "output_text", "text": text,
                                         "annotations": annotations}]}],
        "usage": {"input_tokens": 1, "output_tokens": 1}})
    .to_string()
}

#[test]
#[ignore = "a measurement: cargo test --release --lib engines::responses -- --ignored --nocapture"]
fn cpu_per_task_for_a_typical_answer() {
    let body = typical_answer();
    let rounds = 2000;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        let json: Value = serde_json::from_slice(body.as_bytes()).expect("json");
        assert!(json.is_object());
    }
    let json_only = started.elapsed() / rounds;
    for (what, p) in [
        (
            "no include flags",
            payload(TaskType::Chatgpt, json!({"prompt": "q", "country": "US"})),
        ),
        ("every include flag", full_payload(TaskType::Chatgpt)),
    ] {
        let (_, chat) = Chat::of(&p).expect("chat");
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            let (r, _usage) = normalize::answer(
                body.as_bytes(),
                Shape::Chatgpt,
                &chat,
                &PageLinks::fixed(),
                KEY,
            )
            .expect("completed");
            assert_eq!(r["sources"].as_array().map(Vec::len), Some(40));
        }
        let per_task = started.elapsed() / rounds;
        println!(
            "parse + normalise, {} bytes, 20 citations, {what}: {per_task:?} per task \
             (JSON parsing alone: {json_only:?})",
            body.len()
        );
    }
}
