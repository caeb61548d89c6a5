//! Offline tests of the Gemini adapter: the normaliser on each fixture, citation offsets on
//! multi-byte text, the error kinds, and the whole call against a local fake upstream.
//!
//! Fixtures (`fixtures/*.json`) are written from the documented formats; their sources are in
//! `fixtures/README.md` (ai.google.dev/gemini-api/docs/google-search,
//! ai.google.dev/api/generate-content, ai.google.dev/gemini-api/docs/troubleshooting).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes as AxBytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap as AxHeaders, StatusCode as AxStatus};
use axum::response::{IntoResponse, Response};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use uuid::Uuid;

use super::normalize::{self, Options};
use super::request;
use super::{GeminiConfig, GeminiEngine};
use crate::domain::request::Payload;
use crate::domain::types::TaskType;
use crate::engines::{Engine, EngineError, EngineTask, Usage, simulated, upstream};
use crate::pages::PageLinks;

const GROUNDED: &str = include_str!("fixtures/grounded.json");
const NO_CITATIONS: &str = include_str!("fixtures/no_citations.json");
const EMPTY: &str = include_str!("fixtures/empty.json");
const BLOCKED_PROMPT: &str = include_str!("fixtures/blocked_prompt.json");
const SAFETY_CANDIDATE: &str = include_str!("fixtures/safety_candidate.json");
const MULTIBYTE: &str = include_str!("fixtures/multibyte.json");
const ERROR_429: &str = include_str!("fixtures/error_429.json");
const ERROR_KEY_INVALID: &str = include_str!("fixtures/error_key_invalid.json");
const ERROR_400: &str = include_str!("fixtures/error_400.json");
const ERROR_403: &str = include_str!("fixtures/error_403.json");
const ERROR_500: &str = include_str!("fixtures/error_500.json");
const ERROR_503: &str = include_str!("fixtures/error_503.json");

const KEY: &str = "AIzaTest-SECRET-key-0123456789";
const REDIRECT: &str = "https://vertexaisearch.cloud.google.com/grounding-api-redirect/";

fn all() -> Options {
    Options {
        markdown: true,
        html: false,
        raw_response: true,
        search_queries: true,
    }
}

fn norm(body: &str, opts: Options) -> Result<Value, EngineError> {
    normalize::normalize(body.as_bytes(), opts, &PageLinks::fixed(), KEY).map(|(v, _)| v)
}

// ------------------------------------------------------------------------------------------
// Request

#[test]
fn the_request_body_and_url_are_the_documented_ones() {
    assert_eq!(
        request::body("Who won the euro 2024?"),
        json!({"contents": [{"role": "user", "parts": [{"text": "Who won the euro 2024?"}]}],
               "tools": [{"google_search": {}}]})
    );
    assert_eq!(
        request::url(
            "https://generativelanguage.googleapis.com/",
            "gemini-2.5-flash"
        ),
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:generateContent"
    );
}

// ------------------------------------------------------------------------------------------
// Normaliser, field by field

#[test]
fn a_grounded_answer_maps_field_by_field() {
    let r = norm(GROUNDED, all()).expect("normalised");
    let raw: Value = serde_json::from_str(GROUNDED).expect("fixture");
    let text = "Spain won Euro 2024, defeating England 2-1 in the final. This victory marks \
                Spain's record fourth European Championship title.";
    assert_eq!(r["text"], text);
    let alj = format!("{REDIRECT}AUZIYQE-aljazeera");
    let uefa = format!("{REDIRECT}AUZIYQG-uefa");
    // Chunk 2 repeats chunk 0's uri: one source, positions by first appearance.
    assert_eq!(
        r["sources"],
        json!([
            {"position": 1, "url": alj, "label": "aljazeera.com", "description": ""},
            {"position": 2, "url": uefa, "label": "uefa.com", "description": ""}
        ])
    );
    assert_eq!(
        r["citationPills"],
        json!([
            {"label": "aljazeera.com", "citationPillId": 1, "url": alj, "domain": "aljazeera.com",
             "position": 1},
            {"label": "uefa.com", "citationPillId": 2, "url": uefa, "domain": "uefa.com",
             "position": 2}
        ])
    );
    assert_eq!(
        r["markdown"],
        format!(
            "Spain won Euro 2024, defeating England 2-1 in the final. [1]({alj}) This victory \
             marks Spain's record fourth European Championship title. [1]({alj}) [2]({uefa})"
        )
    );
    assert_eq!(
        r["searchQueries"],
        json!(["UEFA Euro 2024 winner", "who won euro 2024"])
    );
    assert_eq!(r["model"], "gemini-2.5-flash");
    assert_eq!(r["rawResponse"], json!([raw]));
    let keys: Vec<&str> = r
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "text",
            "sources",
            "citationPills",
            "markdown",
            "searchQueries",
            "model",
            "rawResponse"
        ]
    );
}

#[test]
fn include_flags_decide_markdown_queries_and_raw() {
    let r = norm(GROUNDED, Options::default()).expect("normalised");
    let obj = r.as_object().expect("object");
    for k in ["markdown", "searchQueries", "rawResponse", "html"] {
        assert!(!obj.contains_key(k), "{k} present without its flag");
    }
    for k in ["text", "sources", "citationPills", "model"] {
        assert!(obj.contains_key(k), "{k} missing");
    }
}

#[test]
fn an_answer_without_citations_has_empty_sources_and_pills() {
    let r = norm(NO_CITATIONS, all()).expect("normalised");
    assert_eq!(r["text"], "The capital of France is Paris.");
    assert_eq!(r["sources"], json!([]));
    assert_eq!(r["citationPills"], json!([]));
    assert_eq!(r["markdown"], "The capital of France is Paris.");
    assert_eq!(r["searchQueries"], json!([]));
}

#[test]
fn an_empty_output_is_a_valid_empty_answer() {
    let r = norm(EMPTY, all()).expect("normalised");
    assert_eq!(r["text"], "");
    assert_eq!(r["sources"], json!([]));
    assert_eq!(r["markdown"], "");
}

#[test]
fn blocked_prompts_and_safety_stops_are_fatal_with_the_reason() {
    for (body, reason) in [
        (BLOCKED_PROMPT, "blockReason SAFETY"),
        (SAFETY_CANDIDATE, "finishReason SAFETY"),
    ] {
        match norm(body, all()) {
            Err(EngineError::Fatal { code, message }) => {
                assert_eq!(code, "UPSTREAM_BLOCKED");
                assert!(message.contains(reason), "{message}");
            }
            other => panic!("expected a fatal error, got {other:?}"),
        }
    }
}

#[test]
fn no_candidate_and_malformed_json_are_retryable() {
    assert!(matches!(norm("{}", all()), Err(EngineError::Retryable(_))));
    assert!(matches!(
        norm("{\"candidates\": [", all()),
        Err(EngineError::Retryable(_))
    ));
    assert!(matches!(
        norm("{\"candidates\": 3}", all()),
        Err(EngineError::Retryable(_))
    ));
}

// ------------------------------------------------------------------------------------------
// Citation offsets on multi-byte text

#[test]
fn byte_offsets_on_multibyte_text_across_parts() {
    let r = norm(MULTIBYTE, all()).expect("normalised");
    let cafe = format!("{REDIRECT}AUZ-cafe");
    let tokyo = format!("{REDIRECT}AUZ-tokyo");
    let notitle = format!("{REDIRECT}AUZ-notitle");
    assert_eq!(
        r["text"],
        "Café crème: très bon ☕. 東京の人気カフェは猿田彦珈琲です🎉。 Ñandú coffee is rated 4.5⭐ by locals."
    );
    assert_eq!(
        r["markdown"],
        format!(
            "Café crème: très bon ☕. [1]({cafe}) 東京の人気カフェは猿田彦珈琲です🎉。 [2]({tokyo}) \
             Ñandú coffee is rated 4.5⭐ by locals. [3]({notitle}) [2]({tokyo})"
        )
    );
    // A title-less chunk is labelled with its uri's host.
    assert_eq!(r["sources"][2]["label"], "vertexaisearch.cloud.google.com");
    assert_eq!(r["citationPills"][0]["domain"], "café.example");
    assert_eq!(
        r["citationPills"]
            .as_array()
            .map(|p| p.iter().map(|p| p["position"].clone()).collect::<Vec<_>>()),
        Some(vec![json!(1), json!(2), json!(3)])
    );
}

#[test]
fn byte_ranges_convert_to_character_ranges() {
    let text = "é☕東🎉x";
    // é = 2 bytes, ☕ = 3, 東 = 3, 🎉 = 4.
    assert_eq!(normalize::char_range(text, 0, 2), (0, 1));
    assert_eq!(normalize::char_range(text, 2, 5), (1, 2));
    assert_eq!(normalize::char_range(text, 5, 12), (2, 4));
    assert_eq!(normalize::char_range(text, 12, 13), (4, 5));
}

#[test]
fn character_counted_offsets_fall_back_to_the_segment_text() {
    // The same answer with offsets counted in characters (a wrong provider): they land inside a
    // character or on the wrong words, so the segment's text is searched instead.
    let mut v: Value = serde_json::from_str(MULTIBYTE).expect("fixture");
    let text1 = v["candidates"][0]["content"]["parts"][1]["text"]
        .as_str()
        .expect("text")
        .to_owned();
    for s in v["candidates"][0]["groundingMetadata"]["groundingSupports"]
        .as_array_mut()
        .expect("supports")
    {
        let seg = &mut s["segment"];
        let piece = seg["text"].as_str().expect("text").to_owned();
        if seg["partIndex"] == 1 {
            let b = text1.find(&piece).expect("piece");
            let c = text1[..b].chars().count();
            seg["startIndex"] = json!(c);
            seg["endIndex"] = json!(c + piece.chars().count());
        } else {
            seg["endIndex"] = json!(piece.chars().count());
        }
    }
    let wrong = serde_json::to_string(&v).expect("json");
    let expected = norm(MULTIBYTE, all()).expect("normalised");
    let got = norm(&wrong, all()).expect("normalised");
    assert_eq!(got["markdown"], expected["markdown"]);
    assert_eq!(got["citationPills"], expected["citationPills"]);
}

#[test]
fn spans_that_cannot_be_placed_are_dropped() {
    let mut v: Value = serde_json::from_str(GROUNDED).expect("fixture");
    let sup = &mut v["candidates"][0]["groundingMetadata"]["groundingSupports"];
    sup[0]["segment"] = json!({"startIndex": 500, "endIndex": 900});
    sup[1]["groundingChunkIndices"] = json!([7, -1]);
    let r = norm(&v.to_string(), all()).expect("normalised");
    assert_eq!(r["citationPills"], json!([]));
    assert_eq!(r["markdown"], r["text"]);
    assert_eq!(r["sources"].as_array().map(Vec::len), Some(2));
}

// ------------------------------------------------------------------------------------------
// The shape: the same keys and types as the simulated GEMINI result

fn payload(include: Value) -> Payload {
    Payload::from_stored(
        TaskType::Gemini,
        &json!({"prompt": "Who won the euro 2024?", "country": "US", "include": include}),
    )
    .expect("payload")
}

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

/// Every key of `sim` (but `simulated`, and `html`, checked on its own) is in
/// `real` with the same type, recursively into the first element of arrays of objects; `real`
/// adds only `model`.
fn same_shape(path: &str, sim: &Value, real: &Value) {
    match (sim, real) {
        (Value::Object(s), Value::Object(r)) => {
            for (k, sv) in s {
                if path.is_empty() && (k == "simulated" || k == "html") {
                    continue;
                }
                let rv = r
                    .get(k)
                    .unwrap_or_else(|| panic!("{path}.{k} missing in the real result"));
                if k == "rawResponse" {
                    assert_eq!(kind(sv), kind(rv), "{path}.{k}");
                    continue;
                }
                same_shape(&format!("{path}.{k}"), sv, rv);
            }
            for k in r.keys() {
                assert!(
                    s.contains_key(k) || (path.is_empty() && k == "model"),
                    "{path}.{k} is not in the simulated shape"
                );
            }
        }
        (Value::Array(s), Value::Array(r)) => {
            if let (Some(s0), Some(r0)) = (s.first(), r.first()) {
                same_shape(&format!("{path}[0]"), s0, r0);
            }
        }
        _ => assert_eq!(kind(sim), kind(real), "{path}"),
    }
}

#[test]
fn results_have_the_simulated_shape() {
    for include in [
        json!({}),
        json!({"markdown": true}),
        json!({"markdown": true, "rawResponse": true}),
        json!({"markdown": true, "html": true}),
    ] {
        let p = payload(include.clone());
        let sim = simulated::simulate_value(&p, &PageLinks::fixed()).result;
        let on = |k: &str| include.get(k) == Some(&json!(true));
        let opts = Options {
            markdown: on("markdown"),
            html: on("html"),
            raw_response: on("rawResponse"),
            search_queries: false,
        };
        for body in [GROUNDED, MULTIBYTE, NO_CITATIONS, EMPTY] {
            let real = norm(body, opts).expect("normalised");
            same_shape("", &sim, &real);
            let page = on("html").then(|| json!(PageLinks::fixed().url(1)));
            assert_eq!(real.get("html"), page.as_ref(), "{include}");
            // And the published shape itself (reference §5.2), types included.
            assert_eq!(
                crate::engines::shape::check(TaskType::Gemini, &real),
                Vec::<String>::new(),
                "{include}"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// Errors

fn err(status: u16, body: &str, headers: &[(&'static str, &str)]) -> EngineError {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, HeaderValue::from_str(v).expect("header"));
    }
    normalize::error(
        StatusCode::from_u16(status).expect("status"),
        &h,
        body.as_bytes(),
        KEY,
    )
}

#[test]
fn gemini_errors_map_onto_the_kinds() {
    match err(429, ERROR_429, &[("retry-after", "60")]) {
        EngineError::RateLimited {
            retry_after,
            message,
        } => {
            // RetryInfo.retryDelay wins over Retry-After.
            assert_eq!(retry_after, Some(Duration::from_secs(13)));
            assert!(message.starts_with("RESOURCE_EXHAUSTED: "), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        err(429, r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}"#, &[("retry-after", "7")]),
        EngineError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(7)
    ));
    assert!(matches!(
        err(429, "{}", &[]),
        EngineError::RateLimited {
            retry_after: None,
            ..
        }
    ));
    // The invalid key comes back as 400 INVALID_ARGUMENT: the ErrorInfo reason decides.
    let body = ERROR_KEY_INVALID.replace("KEY_PLACEHOLDER", KEY);
    match err(400, &body, &[]) {
        EngineError::Unauthorized { message } => {
            assert_eq!(
                message,
                "INVALID_ARGUMENT: API key not valid. Please pass a valid API key."
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        err(403, ERROR_403, &[]),
        EngineError::Unauthorized { .. }
    ));
    assert!(matches!(
        err(
            400,
            r#"{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}"#,
            &[]
        ),
        EngineError::Unauthorized { .. }
    ));
    match err(400, ERROR_400, &[]) {
        EngineError::Fatal { code, message } => {
            assert_eq!(code, "UPSTREAM_REJECTED_REQUEST");
            assert!(
                message.starts_with("INVALID_ARGUMENT: Invalid JSON payload"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        err(500, ERROR_500, &[]),
        EngineError::Retryable(_)
    ));
    assert!(matches!(
        err(503, ERROR_503, &[]),
        EngineError::Retryable(_)
    ));
    assert!(matches!(
        err(502, "<html>bad gateway</html>", &[]),
        EngineError::Retryable(_)
    ));
}

#[test]
fn proto_durations_parse() {
    assert_eq!(
        normalize::parse_proto_duration("13s"),
        Some(Duration::from_secs(13))
    );
    assert_eq!(
        normalize::parse_proto_duration("0.5s"),
        Some(Duration::from_millis(500))
    );
    assert_eq!(normalize::parse_proto_duration("13"), None);
    assert_eq!(normalize::parse_proto_duration("-1s"), None);
}

#[test]
fn usage_is_read_from_usage_metadata() {
    let usage = |body: &str| {
        normalize::normalize(body.as_bytes(), all(), &PageLinks::fixed(), KEY)
            .expect("normalised")
            .1
    };
    // grounded.json: promptTokenCount 8 + toolUsePromptTokenCount 120; candidatesTokenCount 31;
    // two webSearchQueries.
    assert_eq!(
        usage(GROUNDED),
        Some(Usage {
            input_tokens: Some(128),
            output_tokens: Some(31),
            searches: Some(2),
        })
    );
    // no_citations.json: 7 + 7, no grounding metadata (no search reported).
    assert_eq!(
        usage(NO_CITATIONS),
        Some(Usage {
            input_tokens: Some(7),
            output_tokens: Some(7),
            searches: None,
        })
    );
    // Thinking tokens are billed as output.
    let raw = json!({"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4,
                                       "thoughtsTokenCount": 5}});
    assert_eq!(
        normalize::usage(&raw),
        Some(Usage {
            input_tokens: Some(3),
            output_tokens: Some(9),
            searches: None,
        })
    );
    // blocked_prompt.json has no candidate: its prompt tokens are not recorded (a blocked
    // prompt fails the task at once; only answers carry usage).
    let raw: Value = serde_json::from_str(BLOCKED_PROMPT).expect("fixture");
    assert_eq!(
        normalize::usage(&raw),
        Some(Usage {
            input_tokens: Some(9),
            output_tokens: None,
            searches: None,
        })
    );
    assert_eq!(normalize::usage(&json!({})), None);
}

// ------------------------------------------------------------------------------------------
// Configuration

fn config(base: &str) -> GeminiConfig {
    GeminiConfig {
        base_url: base.to_owned(),
        api_key: KEY.to_owned(),
        model: "gemini-2.5-flash".to_owned(),
        timeout: Duration::from_millis(200),
        max_body: 64 * 1024,
    }
}

#[test]
fn the_configuration_is_checked() {
    assert!(GeminiEngine::new(config("https://generativelanguage.googleapis.com")).is_ok());
    let mut c = config("https://generativelanguage.googleapis.com");
    c.model = "models/gemini-2.5-pro".into();
    let e = GeminiEngine::new(c).expect("models/ prefix accepted");
    assert_eq!(
        e.url,
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:generateContent"
    );
    for bad in [
        GeminiConfig {
            base_url: "ftp://x".into(),
            ..config("")
        },
        GeminiConfig {
            api_key: " ".into(),
            ..config("http://127.0.0.1:1")
        },
        GeminiConfig {
            model: "gemini/../x".into(),
            ..config("http://127.0.0.1:1")
        },
        GeminiConfig {
            timeout: Duration::ZERO,
            ..config("http://127.0.0.1:1")
        },
    ] {
        assert!(GeminiEngine::new(bad).is_err());
    }
    assert!(!format!("{:?}", config("http://x")).contains(KEY));
}

// ------------------------------------------------------------------------------------------
// Against a local fake upstream

#[derive(Clone, Debug)]
struct Seen {
    path: String,
    key: Option<String>,
    content_type: Option<String>,
    query: Option<String>,
    body: Value,
}

#[derive(Clone)]
struct Fake {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn handler(State(f): State<Fake>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    f.seen.lock().expect("lock").push(Seen {
        path: parts.uri.path().to_owned(),
        key: header("x-goog-api-key"),
        content_type: header("content-type"),
        query: parts.uri.query().map(str::to_owned),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    });
    if !f.delay.is_zero() {
        tokio::time::sleep(f.delay).await;
    }
    let mut h = AxHeaders::new();
    h.insert("content-type", "application/json".parse().expect("ct"));
    for (k, v) in &f.headers {
        h.insert(*k, v.parse().expect("header"));
    }
    (
        AxStatus::from_u16(f.status).expect("status"),
        h,
        AxBytes::from(f.body.clone()),
    )
        .into_response()
}

/// Serves `body` with `status` to every request; returns the engine aimed at it and what the
/// fake received.
async fn fake(
    status: u16,
    body: &str,
    headers: &[(&'static str, &str)],
    delay: Duration,
) -> (GeminiEngine, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let state = Fake {
        status,
        headers: headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        body: body.to_owned(),
        delay,
        seen: seen.clone(),
    };
    let app = axum::Router::new().fallback(handler).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let engine = GeminiEngine::new(config(&format!("http://{addr}/"))).expect("engine");
    (engine, seen)
}

async fn run(engine: &GeminiEngine, include: Value) -> Result<Value, EngineError> {
    let p = payload(include);
    engine
        .execute(EngineTask {
            id: Uuid::nil(),
            task_type: TaskType::Gemini,
            payload: &p,
            attempt: 1,
            pages: &PageLinks::fixed(),
        })
        .await
        .map(|o| {
            assert_eq!(o.extra_credits, 0);
            o.result.to_value()
        })
}

fn assert_no_key<T: std::fmt::Debug>(what: &T) {
    assert!(
        !format!("{what:?}").contains(KEY),
        "the key leaked: {what:?}"
    );
}

#[tokio::test]
async fn a_grounded_answer_over_http_and_the_request_sent() {
    let (engine, seen) = fake(200, GROUNDED, &[], Duration::ZERO).await;
    let r = run(&engine, json!({"markdown": true, "rawResponse": true}))
        .await
        .expect("answer");
    assert_eq!(
        r,
        norm(
            GROUNDED,
            Options {
                search_queries: false,
                ..all()
            }
        )
        .expect("n")
    );
    assert_no_key(&r);
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.path, "/v1beta/models/gemini-2.5-flash:generateContent");
    assert_eq!(s.key.as_deref(), Some(KEY));
    assert_eq!(s.query, None, "the key must not travel in the URL");
    assert_eq!(s.content_type.as_deref(), Some("application/json"));
    assert_eq!(s.body, request::body("Who won the euro 2024?"));
}

#[tokio::test]
async fn the_other_answers_over_http() {
    let (engine, _) = fake(200, NO_CITATIONS, &[], Duration::ZERO).await;
    let r = run(&engine, json!({})).await.expect("answer");
    assert_eq!(r["sources"], json!([]));
    let (engine, _) = fake(200, EMPTY, &[], Duration::ZERO).await;
    assert_eq!(run(&engine, json!({})).await.expect("answer")["text"], "");
    let (engine, _) = fake(200, BLOCKED_PROMPT, &[], Duration::ZERO).await;
    assert!(matches!(
        run(&engine, json!({})).await,
        Err(EngineError::Fatal { code, .. }) if code == "UPSTREAM_BLOCKED"
    ));
    let (engine, _) = fake(200, "{\"candidates\": [{\"content\"", &[], Duration::ZERO).await;
    assert!(matches!(
        run(&engine, json!({})).await,
        Err(EngineError::Retryable(_))
    ));
}

#[tokio::test]
async fn failures_over_http_have_their_kinds_and_never_the_key() {
    let key_body = ERROR_KEY_INVALID.replace("KEY_PLACEHOLDER", KEY);
    type Case<'a> = (u16, String, Vec<(&'static str, &'a str)>);
    let cases: Vec<Case> = vec![
        (429, r#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#.into(), vec![("retry-after", "7")]),
        (429, ERROR_429.into(), vec![]),
        (500, ERROR_500.into(), vec![]),
        (503, ERROR_503.into(), vec![]),
        (400, key_body, vec![]),
        (403, ERROR_403.into(), vec![]),
        (400, ERROR_400.into(), vec![]),
    ];
    let mut got = Vec::new();
    for (status, body, headers) in &cases {
        let (engine, _) = fake(*status, body, headers, Duration::ZERO).await;
        let e = run(&engine, json!({})).await.expect_err("an error");
        assert_no_key(&e);
        assert_no_key(&e.to_string());
        got.push(e);
    }
    assert!(
        matches!(&got[0], EngineError::RateLimited { retry_after: Some(d), .. } if *d == Duration::from_secs(7))
    );
    assert!(
        matches!(&got[1], EngineError::RateLimited { retry_after: Some(d), .. } if *d == Duration::from_secs(13))
    );
    assert!(matches!(&got[2], EngineError::Retryable(_)));
    assert!(matches!(&got[3], EngineError::Retryable(_)));
    assert!(matches!(&got[4], EngineError::Unauthorized { .. }));
    assert!(matches!(&got[5], EngineError::Unauthorized { .. }));
    assert!(matches!(&got[6], EngineError::Fatal { .. }));
}

#[tokio::test]
async fn a_slow_upstream_times_out_retryably() {
    // The engine's timeout is 200 ms; the fake holds its answer for 5 s.
    let (engine, _) = fake(200, GROUNDED, &[], Duration::from_secs(5)).await;
    match run(&engine, json!({})).await {
        Err(EngineError::Retryable(m)) => assert!(m.contains("in time"), "{m}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn a_body_over_the_cap_is_retryable() {
    let big = format!(
        "{{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"{}\"}}]}}}}]}}",
        "x".repeat(100 * 1024)
    );
    let (engine, _) = fake(200, &big, &[], Duration::ZERO).await;
    match run(&engine, json!({})).await {
        Err(EngineError::Retryable(m)) => assert!(m.contains("larger than"), "{m}"),
        other => panic!("expected an oversized body, got {other:?}"),
    }
}

#[tokio::test]
async fn a_key_echoed_by_the_upstream_is_redacted_from_the_result() {
    let echoed = GROUNDED.replace("mHbnaJ7kJb-v1MkPq5ipyAo", KEY);
    assert!(echoed.contains(KEY));
    let (engine, _) = fake(200, &echoed, &[], Duration::ZERO).await;
    let r = run(&engine, json!({"rawResponse": true, "markdown": true}))
        .await
        .expect("answer");
    assert_no_key(&r);
    assert_eq!(r["rawResponse"][0]["responseId"], "[redacted]");
}

#[tokio::test]
async fn an_unreachable_upstream_is_retryable() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let engine = GeminiEngine::new(config(&format!("http://{addr}"))).expect("engine");
    let e = run(&engine, json!({})).await.expect_err("an error");
    assert!(matches!(e, EngineError::Retryable(_)), "{e:?}");
    assert_no_key(&e);
}

#[tokio::test]
async fn other_task_types_are_refused() {
    let engine = GeminiEngine::new(config("http://127.0.0.1:1")).expect("engine");
    let p = Payload::from_stored(TaskType::Chatgpt, &json!({"prompt": "x", "country": "US"}))
        .expect("payload");
    let e = engine
        .execute(EngineTask {
            id: Uuid::nil(),
            task_type: TaskType::Chatgpt,
            payload: &p,
            attempt: 1,
            pages: &PageLinks::fixed(),
        })
        .await
        .expect_err("refused");
    assert!(matches!(e, EngineError::Fatal { .. }), "{e:?}");
}

#[test]
fn upstream_cap_default_is_the_shared_one() {
    assert_eq!(upstream::MAX_BODY_BYTES, 32 * 1024 * 1024);
}
