//! The SerpApi adapter, offline: the request builder and the normalisers on fixtures written
//! from SerpApi's documented responses (each fixture names its sources in `_source`), the
//! results' shapes against the simulated engine's for the same task type and flags, and the
//! HTTP exchange against a local fake upstream (axum on 127.0.0.1:0) serving answers, failures
//! and the key-leak cases.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap as AxHeaders, StatusCode as AxStatus, Uri};
use axum::response::{IntoResponse, Response};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use uuid::Uuid;

use super::normalize::{self, Flags};
use super::request;
use super::*;
use crate::domain::request::validate_payload;
use crate::domain::types::TaskType;
use crate::engines::simulated::{LatencyRange, SimulatedEngine};
use crate::engines::upstream::Reply;

const KEY: &str = "sk-serp-SECRET-0123456789abcdef";

const PAGE1: &str = include_str!("fixtures/google_page1.json");
const PAGE2: &str = include_str!("fixtures/google_page2.json");
const AIO: &str = include_str!("fixtures/google_ai_overview.json");
const NEWS: &str = include_str!("fixtures/news.json");
const AIMODE: &str = include_str!("fixtures/aimode.json");
const AIMODE_NO_CITES: &str = include_str!("fixtures/aimode_no_citations.json");
const NO_RESULTS: &str = include_str!("fixtures/no_results.json");
const SEARCH_ERROR: &str = include_str!("fixtures/search_error.json");

fn j(s: &str) -> Value {
    serde_json::from_str(s).expect("fixture is JSON")
}

/// A request payload as an engine receives it: validated, stored, read back typed.
fn payload(t: TaskType, raw: Value) -> Payload {
    let (typed, _) =
        validate_payload(t, &raw, "payload").unwrap_or_else(|e| panic!("{raw} rejected: {e:?}"));
    Payload::from_stored(t, &typed.into_stored()).expect("reads back")
}

fn params_map(p: &request::Params) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
    p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

// ---------------------------------------------------------------------------------------------
// The request builder

#[test]
fn google_structured_request_passes_geo_device_and_pages() {
    let p = payload(
        TaskType::Google,
        json!({"query": "best espresso", "gl": "FR", "hl": "fr", "location": "Paris,Ile-de-France,France",
               "device": "android", "pages": 3}),
    );
    let calls = request::calls(&p);
    assert_eq!(calls.len(), 3);
    let first = params_map(&calls[0]);
    assert_eq!(get(&first, "engine"), Some("google"));
    assert_eq!(get(&first, "q"), Some("best espresso"));
    assert_eq!(get(&first, "gl"), Some("fr"));
    assert_eq!(get(&first, "hl"), Some("fr"));
    assert_eq!(get(&first, "location"), Some("Paris,Ile-de-France,France"));
    assert_eq!(get(&first, "uule"), None);
    assert_eq!(get(&first, "device"), Some("mobile"));
    assert_eq!(get(&first, "start"), None);
    assert_eq!(
        get(&first, "google_domain"),
        None,
        "google.com, SerpApi's default"
    );
    assert_eq!(get(&first, "no_cache"), Some("true"));
    assert_eq!(
        get(&first, "api_key"),
        None,
        "the key is added at send time only"
    );
    assert_eq!(get(&params_map(&calls[1]), "start"), Some("10"));
    assert_eq!(get(&params_map(&calls[2]), "start"), Some("20"));
}

#[test]
fn google_url_form_maps_its_parameters() {
    let p = payload(
        TaskType::Google,
        json!({"url": "https://www.google.co.uk/search?q=caf%C3%A9+cr%C3%A8me&gl=gb&hl=en&start=20&num=20&tbs=qdr:w&safe=active&uule=w+CAIQICIFUGFyaXM"}),
    );
    let calls = request::calls(&p);
    assert_eq!(calls.len(), 2, "num=20 is two pages");
    let first = params_map(&calls[0]);
    assert_eq!(get(&first, "q"), Some("café crème"));
    assert_eq!(get(&first, "gl"), Some("gb"));
    assert_eq!(get(&first, "hl"), Some("en"));
    assert_eq!(get(&first, "start"), Some("20"));
    assert_eq!(get(&first, "tbs"), Some("qdr:w"));
    assert_eq!(get(&first, "safe"), Some("active"));
    assert_eq!(get(&first, "google_domain"), Some("google.co.uk"));
    assert_eq!(get(&first, "uule"), Some("w+CAIQICIFUGFyaXM"));
    assert_eq!(get(&first, "device"), Some("desktop"));
    assert_eq!(get(&params_map(&calls[1]), "start"), Some("30"));
}

#[test]
fn news_and_aimode_requests() {
    let p = payload(
        TaskType::GoogleNews,
        json!({"query": "espresso", "gl": "us", "hl": "en", "pages": 2}),
    );
    let calls = request::calls(&p);
    assert_eq!(calls.len(), 2);
    let first = params_map(&calls[0]);
    assert_eq!(get(&first, "engine"), Some("google"));
    assert_eq!(get(&first, "tbm"), Some("nws"));
    assert_eq!(get(&params_map(&calls[1]), "start"), Some("10"));

    let p = payload(
        TaskType::Aimode,
        json!({"prompt": "meilleure machine", "country": "FR", "uule": "w+CAIQICIFUGFyaXM", "device": "mobile"}),
    );
    let calls = request::calls(&p);
    assert_eq!(calls.len(), 1);
    let a = params_map(&calls[0]);
    assert_eq!(get(&a, "engine"), Some("google_ai_mode"));
    assert_eq!(get(&a, "q"), Some("meilleure machine"));
    assert_eq!(get(&a, "gl"), Some("fr"));
    assert_eq!(get(&a, "uule"), Some("w+CAIQICIFUGFyaXM"));
    assert_eq!(get(&a, "location"), None);
    assert_eq!(get(&a, "device"), Some("mobile"));
    assert_eq!(get(&a, "no_cache"), Some("true"));

    let f = params_map(&request::ai_overview("TOKEN"));
    assert_eq!(get(&f, "engine"), Some("google_ai_overview"));
    assert_eq!(get(&f, "page_token"), Some("TOKEN"));
}

// ---------------------------------------------------------------------------------------------
// The normalisers

#[test]
fn google_pages_merge_with_continuous_positions() {
    let pages = [j(PAGE1), j(PAGE2)];
    let m = Value::Object(normalize::google(&pages, None, Flags::default()));
    let o = m["organicResults"].as_array().expect("organic");
    assert_eq!(o.len(), 3);
    assert_eq!(o[0]["position"], 1);
    assert_eq!(o[0]["page"], 1);
    assert_eq!(
        o[0]["title"],
        "Les meilleures machines à expresso de 2026 – Café Crème"
    );
    assert_eq!(
        o[0]["link"],
        "https://www.cafe-creme.example/meilleures-machines"
    );
    assert_eq!(
        o[0]["displayedLink"],
        "https://www.cafe-creme.example › meilleures-machines"
    );
    assert_eq!(
        o[0]["snippet"],
        "Nous avons testé 30 machines à expresso ☕ : voici nos préférées."
    );
    assert_eq!(o[0]["date"], "12 nov. 2026");
    assert!(
        o[0]["redirectLink"]
            .as_str()
            .is_some_and(|r| r.starts_with("https://www.google.com/url?"))
    );
    assert_eq!(
        o[0]["sitelinks"],
        json!({"inline": [
            {"title": "Machines manuelles", "link": "https://www.cafe-creme.example/manuelles"},
            {"title": "Broyeurs", "link": "https://www.cafe-creme.example/broyeurs"}]})
    );
    assert_eq!(o[1]["position"], 2);
    assert!(o[1].get("date").is_none() && o[1].get("sitelinks").is_none());
    assert!(o[1].get("redirectLink").is_none());
    assert_eq!(o[2]["position"], 3, "page 2 continues the numbering");
    assert_eq!(o[2]["page"], 2);
    assert_eq!(o[2]["title"], "エスプレッソマシンの選び方");
    assert_eq!(
        o[2]["sitelinks"]["inline"][0],
        json!({"title": "ランキング", "link": "https://jp.example.com/ranking"})
    );

    let paa = m["peopleAlsoAsk"].as_array().expect("paa");
    assert_eq!(paa.len(), 2);
    assert_eq!(
        paa[0],
        json!({"question": "Quelle est la meilleure machine à expresso ?", "type": "LINK",
               "snippet": "La plupart des testeurs recommandent une machine avec broyeur intégré.",
               "title": "Meilleure machine à expresso : le guide",
               "link": "https://guide.example.net/machine"})
    );
    assert_eq!(
        paa[1],
        json!({"question": "Combien coûte une bonne machine ?", "type": "UNKNOWN",
               "snippet": "Comptez entre 300 € et 800 € pour une bonne machine."})
    );
    assert_eq!(
        m["relatedSearches"],
        json!([{"query": "machine expresso broyeur", "link": "https://www.google.com/search?q=machine+expresso+broyeur"},
               {"query": "machine expresso pas cher", "link": "https://www.google.com/search?q=machine+expresso+pas+cher"}])
    );
    assert_eq!(
        m["ads"],
        json!([{"position": 1, "blockPosition": "top", "type": "RESULT",
                "title": "Machines à expresso – jusqu'à -30 %",
                "url": "https://www.boutique.example.com/expresso", "page": 1,
                "displayedUrl": "https://www.boutique.example.com › expresso",
                "domain": "boutique.example.com", "description": "Livraison gratuite dès 50 €.",
                "sitelinks": [{"url": "https://www.boutique.example.com/promos",
                               "title": "Promotions", "description": ""}]}])
    );
    assert!(m.get("aioverview").is_none(), "not requested");
    assert!(m.get("html").is_none());
}

#[test]
fn paa_ai_overviews_with_the_flag() {
    let flags = Flags {
        paa_aioverview: true,
        ..Flags::default()
    };
    let m = normalize::google(&[j(PAGE1)], None, flags);
    assert_eq!(
        m["peopleAlsoAsk"][1],
        json!({"question": "Combien coûte une bonne machine ?", "type": "AIOVERVIEW",
               "snippet": "Comptez entre 300 € et 800 € pour une bonne machine.",
               "markdown": "Comptez entre 300 € et 800 € pour une bonne machine. [1](https://prix.example.com/machines)",
               "sources": [{"position": 1, "url": "https://prix.example.com/machines",
                            "label": "Prix des machines", "description": "Les prix observés en 2026."}]})
    );
}

#[test]
fn google_ai_overview_from_the_follow_up_and_inline() {
    let flags = Flags {
        aioverview: true,
        aioverview_markdown: true,
        ..Flags::default()
    };
    let first = j(PAGE1);
    assert_eq!(
        normalize::ai_overview_token(&first),
        Some(
            "KIVu-nictZPdjpNAFMfjq5BeR0u1dTclMYYZqpRtK9DSAtnkZGAGOnygwMxu-ccdtrG7Nm6iRmL3zhN1n5jM3fKfn_nPOfNt2_f"
        )
    );
    // Only a token and no follow-up: no overview (never an empty invented one).
    let m = normalize::google(std::slice::from_ref(&first), None, flags);
    assert!(m.get("aioverview").is_none());

    let m = normalize::google(std::slice::from_ref(&first), Some(&j(AIO)), flags);
    let aio = &m["aioverview"];
    assert_eq!(
        aio["text"],
        "Une bonne machine à expresso ☕ allie pression stable et broyeur précis.\nCritères clés\nPression : 9 bars suffisent.\nBroyeur : à meules coniques."
    );
    assert_eq!(
        aio["markdown"],
        "Une bonne machine à expresso ☕ allie pression stable et broyeur précis. [1](https://www.cafe-creme.example/guide) [2](https://science.example.org/pression)\n\n### Critères clés\n\n- **Pression :** 9 bars suffisent. [2](https://science.example.org/pression)\n- **Broyeur :** à meules coniques. [3](https://broyeur.example.net/coniques)"
    );
    assert_eq!(
        aio["sources"],
        json!([
            {"position": 1, "url": "https://www.cafe-creme.example/guide", "label": "Guide des machines", "description": "Notre guide complet."},
            {"position": 2, "url": "https://science.example.org/pression", "label": "Pression et extraction", "description": "Pourquoi 9 bars."},
            {"position": 3, "url": "https://broyeur.example.net/coniques", "label": "Broyeurs coniques", "description": ""}
        ])
    );
    assert_eq!(aio["videos"], json!([]));
    assert_eq!(aio["ads"], json!([]));

    // The overview inlined in the first page, no markdown asked.
    let mut inline = first.clone();
    inline["ai_overview"] = j(AIO)["ai_overview"].clone();
    assert_eq!(normalize::ai_overview_token(&inline), None);
    let m = normalize::google(
        &[inline],
        None,
        Flags {
            aioverview: true,
            ..Flags::default()
        },
    );
    assert_eq!(m["aioverview"]["sources"].as_array().map(Vec::len), Some(3));
    assert!(m["aioverview"].get("markdown").is_none());
}

#[test]
fn aimode_text_sources_pills_and_markdown_on_multibyte_text() {
    let m = Value::Object(normalize::aimode(
        &j(AIMODE),
        Flags {
            markdown: true,
            ..Flags::default()
        },
    ));
    assert_eq!(
        m["text"],
        "Le café « crème » est très apprécié en France ☕.\nLes marques citées\nBrévillé 🚀: rapide et fiable.\n咖啡机: populaire en Asie.\nMarque | Prix\nBrévillé | 499 €"
    );
    assert_eq!(
        m["markdown"],
        "Le café « crème » est très apprécié en France ☕. [1](https://cafe.example.fr/france) [2](https://www.reviews.example.org/breville)\n\n### Les marques citées\n\n- **Brévillé 🚀:** rapide et fiable. [2](https://www.reviews.example.org/breville)\n- **咖啡机:** populaire en Asie. [3](https://asia.example.com/coffee) [1](https://cafe.example.fr/france)\n\n| Marque | Prix |\n| --- | --- |\n| Brévillé | 499 € |"
    );
    // The citations sit right after the sentence they cite, whatever its width in bytes.
    let md = m["markdown"].as_str().unwrap_or("");
    let cite = md.find(" [1](").unwrap_or(0);
    assert_eq!(
        &md[..cite],
        "Le café « crème » est très apprécié en France ☕."
    );
    assert_eq!(
        md[..cite].chars().count(),
        48,
        "character count of the cited sentence"
    );
    assert_eq!(
        m["sources"],
        json!([
            {"position": 1, "url": "https://cafe.example.fr/france", "label": "Le café en France", "description": "Histoire du café crème."},
            {"position": 2, "url": "https://www.reviews.example.org/breville", "label": "Brévillé review", "description": "Fast and reliable."},
            {"position": 3, "url": "https://asia.example.com/coffee", "label": "Asia Coffee", "description": ""},
            {"position": 4, "url": "https://uncited.example.net/page", "label": "Uncited page", "description": "Not cited in the text."}
        ])
    );
    assert_eq!(
        m["citationPills"],
        json!([
            {"label": "Le café en France", "citationPillId": 1, "url": "https://cafe.example.fr/france", "domain": "cafe.example.fr", "position": 1},
            {"label": "Brévillé review", "citationPillId": 2, "url": "https://www.reviews.example.org/breville", "domain": "reviews.example.org", "position": 2},
            {"label": "Asia Coffee", "citationPillId": 3, "url": "https://asia.example.com/coffee", "domain": "asia.example.com", "position": 3}
        ])
    );
    for key in ["places", "shoppingCards", "inlineProducts", "videos", "map"] {
        assert_eq!(m[key], json!([]), "{key}");
    }
    assert_eq!(m["ads"], json!({"title": "", "ads": []}));
    assert!(m.get("productResults").is_none());

    let plain = normalize::aimode(&j(AIMODE), Flags::default());
    assert!(plain.get("markdown").is_none());
}

#[test]
fn aimode_without_citations_and_empty() {
    let m = normalize::aimode(&j(AIMODE_NO_CITES), Flags::default());
    assert_eq!(m["text"], "Hello! How can I help you today?");
    assert_eq!(m["sources"], json!([]));
    assert_eq!(m["citationPills"], json!([]));
    let m = normalize::aimode(
        &json!({"search_metadata": {"status": "Success"}}),
        Flags::default(),
    );
    assert_eq!(m["text"], "");
    assert_eq!(m["sources"], json!([]));
}

#[test]
fn news_results_map_field_by_field() {
    let m = Value::Object(normalize::news(&[j(NEWS), j(NEWS)]));
    let n = m["newsResults"].as_array().expect("news");
    assert_eq!(n.len(), 4);
    assert_eq!(
        n[0],
        json!({"position": 1, "title": "Espresso prices climb as bean costs soar",
               "link": "https://news.example.com/espresso-prices",
               "snippet": "Café owners say prices will rise again in 2027.",
               "source": "Example News", "date": "2 hours ago", "page": 1,
               "thumbnail": "https://serpapi.com/searches/2b3c/images/1.jpeg"})
    );
    assert!(n[1].get("thumbnail").is_none());
    assert_eq!(n[2]["position"], 3);
    assert_eq!(n[2]["page"], 2);
    // engine=google_news gives the source as an object.
    let m = normalize::news(&[json!({"news_results": [
        {"position": 1, "title": "t", "link": "https://a.example.com/", "source": {"name": "A", "icon": "https://a.example.com/i.png"}}]})]);
    assert_eq!(m["newsResults"][0]["source"], "A");
}

// ---------------------------------------------------------------------------------------------
// Shapes: the same keys and types as the simulated engine's result

/// Keys a real result may lack (optional in reference §5, or not served yet) or carry beyond
/// the simulator's (optional keys it does not generate).
const OPTIONAL: &[&str] = &[
    "simulated",
    "html",
    "date",
    "sitelinks",
    "redirectLink",
    "thumbnail",
    "productResults",
];

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

fn same_shape(real: &Value, sim: &Value, path: &str) {
    assert_eq!(kind(real), kind(sim), "{path}: {real} vs {sim}");
    match (real, sim) {
        (Value::Object(r), Value::Object(s)) => {
            for (k, v) in r {
                match s.get(k) {
                    Some(sv) => same_shape(v, sv, &format!("{path}.{k}")),
                    None => assert!(OPTIONAL.contains(&k.as_str()), "{path}.{k} unexpected"),
                }
            }
            for k in s.keys() {
                assert!(
                    r.contains_key(k) || OPTIONAL.contains(&k.as_str()),
                    "{path}.{k} missing"
                );
            }
        }
        (Value::Array(r), Value::Array(s)) => {
            if let Some(first) = s.first() {
                for (i, x) in r.iter().enumerate() {
                    same_shape(x, first, &format!("{path}[{i}]"));
                }
            }
        }
        _ => {}
    }
}

async fn simulated(p: &Payload) -> Value {
    let engine = SimulatedEngine {
        latency: LatencyRange {
            min_ms: 0,
            max_ms: 0,
        },
        failure_rate: 0.0,
    };
    engine
        .execute(EngineTask {
            id: Uuid::nil(),
            task_type: p.task_type(),
            payload: p,
            attempt: 1,
            pages: &PageLinks::fixed(),
        })
        .await
        .expect("simulated")
        .result
        .to_value()
}

#[tokio::test]
async fn results_have_the_simulators_shapes() {
    // Google, AI overview with markdown, PAA as links (the simulator's PAA without the flag).
    let p = payload(
        TaskType::Google,
        json!({"query": "espresso", "gl": "fr", "include": {"aioverview": {"markdown": true}}}),
    );
    let mut page1 = j(PAGE1);
    page1["related_questions"]
        .as_array_mut()
        .expect("paa")
        .truncate(1);
    let real = Value::Object(normalize::google(
        &[page1, j(PAGE2)],
        Some(&j(AIO)),
        Flags {
            aioverview: true,
            aioverview_markdown: true,
            ..Flags::default()
        },
    ));
    same_shape(&real, &simulated(&p).await, "google");
    published(TaskType::Google, &real);

    // PAA as AI overviews.
    let p = payload(
        TaskType::Google,
        json!({"query": "espresso", "gl": "fr", "include": {"paaAioverview": true}}),
    );
    let mut page1 = j(PAGE1);
    page1["related_questions"]
        .as_array_mut()
        .expect("paa")
        .remove(0);
    let real = Value::Object(normalize::google(
        &[page1],
        None,
        Flags {
            paa_aioverview: true,
            ..Flags::default()
        },
    ));
    same_shape(&real, &simulated(&p).await, "google-paa");
    published(TaskType::Google, &real);

    let p = payload(
        TaskType::GoogleNews,
        json!({"query": "espresso", "gl": "us"}),
    );
    let news = Value::Object(normalize::news(&[j(NEWS)]));
    same_shape(&news, &simulated(&p).await, "news");
    published(TaskType::GoogleNews, &news);

    let p = payload(
        TaskType::Aimode,
        json!({"prompt": "café", "country": "FR", "include": {"markdown": true}}),
    );
    let real = Value::Object(normalize::aimode(
        &j(AIMODE),
        Flags {
            markdown: true,
            ..Flags::default()
        },
    ));
    let mut sim = simulated(&p).await;
    // The simulator's ads are an object whose `ads` list may be empty or not; ours is empty.
    sim["ads"]["ads"] = json!([]);
    same_shape(&real, &sim, "aimode");
    published(TaskType::Aimode, &real);
}

/// `v` conforms to the published shape of `t` (reference §5, `engines::shape`).
fn published(t: TaskType, v: &Value) {
    assert_eq!(
        crate::engines::shape::check(t, v),
        Vec::<String>::new(),
        "{t:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Reading replies

fn reply(status: u16, headers: &[(&'static str, &str)], body: &str) -> Reply {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, v.parse().expect("header"));
    }
    Reply {
        status: StatusCode::from_u16(status).expect("status"),
        headers: h,
        body: bytes::Bytes::from(body.to_owned()),
    }
}

#[test]
fn replies_are_classified() {
    let ok = normalize::read_reply(reply(200, &[], NO_RESULTS), KEY).expect("empty is valid");
    assert_eq!(
        normalize::google(&[ok], None, Flags::default())["organicResults"],
        json!([])
    );
    assert!(matches!(
        normalize::read_reply(reply(200, &[], SEARCH_ERROR), KEY),
        Err(EngineError::Retryable(m)) if m.contains("couldn't get valid results")
    ));
    assert!(matches!(
        normalize::read_reply(
            reply(200, &[], r#"{"search_metadata":{"status":"Error"}}"#),
            KEY
        ),
        Err(EngineError::Retryable(_))
    ));
    assert!(matches!(
        normalize::read_reply(reply(200, &[], "<html>oops"), KEY),
        Err(EngineError::Retryable(_))
    ));
    assert!(matches!(
        normalize::read_reply(reply(429, &[], r#"{"error":"Your account has run out of searches."}"#), KEY),
        Err(EngineError::Unauthorized { message }) if message == "Your account has run out of searches."
    ));
    assert!(matches!(
        normalize::read_reply(reply(429, &[("retry-after", "3")], r#"{"error":"Your searches for the past hour have exceeded your hourly throughput limit."}"#), KEY),
        Err(EngineError::RateLimited { retry_after: Some(d), .. }) if d == Duration::from_secs(3)
    ));
    assert!(matches!(
        normalize::read_reply(reply(400, &[], r#"{"error":"Missing query `q` parameter."}"#), KEY),
        Err(EngineError::Fatal { message, .. }) if message == "Missing query `q` parameter."
    ));
    let e = normalize::read_reply(
        reply(
            401,
            &[],
            &format!(r#"{{"error":"Invalid API key {KEY}."}}"#),
        ),
        KEY,
    )
    .err();
    assert!(matches!(e, Some(EngineError::Unauthorized { .. })), "{e:?}");
    assert!(!format!("{e:?}").contains(KEY), "{e:?}");
}

// ---------------------------------------------------------------------------------------------
// Over HTTP, against a local fake upstream

/// What the fake answers: status, headers, body, and how long it holds the answer.
#[derive(Clone)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    delay: Duration,
}

fn answer(status: u16, body: &str) -> Answer {
    Answer {
        status,
        headers: Vec::new(),
        body: body.to_owned(),
        delay: Duration::ZERO,
    }
}

type Route = Arc<dyn Fn(&[(String, String)]) -> Answer + Send + Sync>;

/// (path, query pairs) of one request the fake received.
type Seen = (String, Vec<(String, String)>);

#[derive(Clone)]
struct Fake {
    route: Route,
    /// (path, query pairs) of every request received.
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn handle(State(fake): State<Fake>, uri: Uri, RawQuery(q): RawQuery) -> Response {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    if let Ok(mut seen) = fake.seen.lock() {
        seen.push((uri.path().to_owned(), pairs.clone()));
    }
    let a = (fake.route)(&pairs);
    if !a.delay.is_zero() {
        tokio::time::sleep(a.delay).await;
    }
    let mut h = AxHeaders::new();
    h.insert("content-type", "application/json".parse().expect("ct"));
    for (k, v) in &a.headers {
        h.insert(*k, v.parse().expect("header"));
    }
    (AxStatus::from_u16(a.status).expect("status"), h, a.body).into_response()
}

/// Starts a fake on 127.0.0.1:0 and an engine pointing at it.
async fn start(
    route: impl Fn(&[(String, String)]) -> Answer + Send + Sync + 'static,
    tune: impl FnOnce(&mut SerpApiConfig),
) -> (SerpApiEngine, Fake) {
    let fake = Fake {
        route: Arc::new(route),
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut cfg = SerpApiConfig::new(format!("http://{addr}/"), KEY);
    cfg.timeout = Duration::from_secs(10);
    tune(&mut cfg);
    (SerpApiEngine::new(cfg).expect("engine"), fake)
}

fn seen(fake: &Fake) -> Vec<Seen> {
    fake.seen.lock().map(|s| s.clone()).unwrap_or_default()
}

async fn run(engine: &SerpApiEngine, p: &Payload) -> Result<EngineOutput, EngineError> {
    engine
        .execute(EngineTask {
            id: Uuid::nil(),
            task_type: p.task_type(),
            payload: p,
            attempt: 1,
            pages: &PageLinks::fixed(),
        })
        .await
}

fn assert_no_key(what: &impl std::fmt::Debug) {
    let s = format!("{what:?}");
    assert!(!s.contains(KEY), "the key leaked: {s}");
}

#[tokio::test]
async fn google_pages_and_the_ai_overview_follow_up_over_http() {
    let (engine, fake) = start(
        |q| match (get(q, "engine"), get(q, "start")) {
            (Some("google"), None) => {
                // The key echoed where SerpApi would not put it: it must not reach the result.
                let mut v = j(PAGE1);
                v["search_parameters"]["api_key"] = json!(KEY);
                v["organic_results"][1]["snippet"] = json!(format!("echo {KEY}"));
                answer(200, &v.to_string())
            }
            (Some("google"), Some("10")) => answer(200, PAGE2),
            (Some("google"), Some(_)) => answer(200, NO_RESULTS),
            (Some("google_ai_overview"), _) => answer(200, AIO),
            _ => answer(400, r#"{"error":"unexpected"}"#),
        },
        |_| {},
    )
    .await;
    let p = payload(
        TaskType::Google,
        json!({"query": "best espresso machine", "gl": "fr", "hl": "fr", "pages": 3,
               "include": {"aioverview": true}}),
    );
    let out = run(&engine, &p).await.expect("google");
    assert_eq!(out.extra_credits, 0);
    // Every search.json call made is a search billed: 3 pages and the AI Overview follow-up.
    assert_eq!(
        out.usage,
        Some(Usage {
            searches: Some(4),
            ..Usage::default()
        })
    );
    let r = &out.result.to_value();
    assert_eq!(r["organicResults"].as_array().map(Vec::len), Some(3));
    assert_eq!(r["organicResults"][2]["position"], 3);
    assert_eq!(r["aioverview"]["sources"].as_array().map(Vec::len), Some(3));
    assert!(r["aioverview"].get("markdown").is_none());
    assert_no_key(r);

    let calls = seen(&fake);
    assert_eq!(
        calls.len(),
        4,
        "3 pages (the third empty) and the follow-up: {calls:?}"
    );
    for (path, q) in &calls {
        assert_eq!(path, "/search.json");
        assert_eq!(get(q, "api_key"), Some(KEY));
        assert_eq!(get(q, "no_cache"), Some("true"));
    }
    let (_, first) = &calls[0];
    assert_eq!(get(first, "engine"), Some("google"));
    assert_eq!(get(first, "q"), Some("best espresso machine"));
    assert_eq!(get(first, "gl"), Some("fr"));
    assert_eq!(get(first, "hl"), Some("fr"));
    assert_eq!(get(first, "device"), Some("desktop"));
    assert_eq!(get(&calls[1].1, "start"), Some("10"));
    assert_eq!(get(&calls[2].1, "start"), Some("20"));
    assert_eq!(get(&calls[3].1, "engine"), Some("google_ai_overview"));
    assert_eq!(
        get(&calls[3].1, "page_token"),
        Some(
            "KIVu-nictZPdjpNAFMfjq5BeR0u1dTclMYYZqpRtK9DSAtnkZGAGOnygwMxu-ccdtrG7Nm6iRmL3zhN1n5jM3fKfn_nPOfNt2_f"
        )
    );
}

#[tokio::test]
async fn searches_answered_before_a_failure_are_still_counted() {
    let (engine, _fake) = start(
        |q| match get(q, "start") {
            None => answer(200, PAGE1),
            Some(_) => answer(500, r#"{"error":"Internal error"}"#),
        },
        |_| {},
    )
    .await;
    let p = payload(
        TaskType::Google,
        json!({"query": "best espresso machine", "gl": "fr", "pages": 2}),
    );
    let e = run(&engine, &p).await.expect_err("page 2 failed");
    let (e, usage) = e.billed();
    assert!(matches!(e, EngineError::Retryable(_)), "{e:?}");
    assert_eq!(
        usage,
        Some(Usage {
            searches: Some(1),
            ..Usage::default()
        }),
        "page 1 was answered (billed); the failed page 2 is not"
    );
}

#[tokio::test]
async fn aimode_and_news_over_http_with_and_without_citations() {
    let (engine, fake) = start(
        |q| match (get(q, "engine"), get(q, "q")) {
            (Some("google_ai_mode"), Some("cited")) => answer(200, AIMODE),
            (Some("google_ai_mode"), Some("uncited")) => answer(200, AIMODE_NO_CITES),
            (Some("google_ai_mode"), _) => {
                answer(200, r#"{"search_metadata":{"status":"Success"}}"#)
            }
            (Some("google"), _) if get(q, "tbm") == Some("nws") => answer(200, NEWS),
            _ => answer(400, r#"{"error":"unexpected"}"#),
        },
        |_| {},
    )
    .await;
    let ai = |prompt: &str| {
        payload(
            TaskType::Aimode,
            json!({"prompt": prompt, "country": "FR", "include": {"markdown": true}}),
        )
    };
    let r = run(&engine, &ai("cited"))
        .await
        .expect("cited")
        .result
        .to_value();
    assert_eq!(r["citationPills"].as_array().map(Vec::len), Some(3));
    assert!(
        r["markdown"]
            .as_str()
            .is_some_and(|m| m.contains("[1](https://cafe.example.fr/france)"))
    );
    let r = run(&engine, &ai("uncited"))
        .await
        .expect("uncited")
        .result
        .to_value();
    assert_eq!(r["sources"], json!([]));
    assert_eq!(r["text"], "Hello! How can I help you today?");
    let r = run(&engine, &ai("empty"))
        .await
        .expect("empty")
        .result
        .to_value();
    assert_eq!(r["text"], "");
    assert_eq!(r["markdown"], "");

    let p = payload(
        TaskType::GoogleNews,
        json!({"query": "espresso", "gl": "us", "device": "ios"}),
    );
    let r = run(&engine, &p).await.expect("news").result.to_value();
    assert_eq!(r["newsResults"].as_array().map(Vec::len), Some(2));
    let calls = seen(&fake);
    let (_, news) = calls.last().expect("news call");
    assert_eq!(get(news, "tbm"), Some("nws"));
    assert_eq!(get(news, "device"), Some("mobile"));
}

/// `include.html`: the links of the pages cloro serves itself, one per page fetched for GOOGLE
/// and GOOGLE_NEWS, one for AIMODE; none without the flag.
#[tokio::test]
async fn include_html_links_cloro_s_own_pages() {
    let (engine, _fake) = start(
        |q| match (get(q, "engine"), get(q, "start")) {
            (Some("google_ai_mode"), _) => answer(200, AIMODE),
            (Some("google"), _) if get(q, "tbm") == Some("nws") => answer(200, NEWS),
            (Some("google"), None) => answer(200, PAGE1),
            (Some("google"), Some("10")) => answer(200, PAGE2),
            (Some("google"), Some(_)) => answer(200, NO_RESULTS),
            _ => answer(400, r#"{"error":"unexpected"}"#),
        },
        |_| {},
    )
    .await;
    let links = PageLinks::fixed();
    let google = |pages: u32, html: bool| {
        payload(
            TaskType::Google,
            json!({"query": "q", "gl": "fr", "pages": pages, "include": {"html": html}}),
        )
    };
    // Page 3 answers with no results, so the 4th is never fetched: three pages, three links.
    let r = run(&engine, &google(4, true))
        .await
        .expect("google")
        .result
        .to_value();
    assert_eq!(r["html"], links.urls(3));
    published(TaskType::Google, &r);
    let r = run(&engine, &google(2, false))
        .await
        .expect("google")
        .result
        .to_value();
    assert!(r.get("html").is_none());

    let news = payload(
        TaskType::GoogleNews,
        json!({"query": "q", "gl": "us", "include": {"html": true}}),
    );
    let r = run(&engine, &news).await.expect("news").result.to_value();
    assert_eq!(r["html"], links.urls(1));
    published(TaskType::GoogleNews, &r);

    let ai = payload(
        TaskType::Aimode,
        json!({"prompt": "p", "country": "FR", "include": {"html": true}}),
    );
    let r = run(&engine, &ai).await.expect("aimode").result.to_value();
    assert_eq!(r["html"], json!(links.url(1)));
    published(TaskType::Aimode, &r);
}

fn ai_payload() -> Payload {
    payload(TaskType::Aimode, json!({"prompt": "p", "country": "US"}))
}

async fn failure(a: Answer, tune: impl FnOnce(&mut SerpApiConfig)) -> EngineError {
    let (engine, _fake) = start(move |_| a.clone(), tune).await;
    let e = run(&engine, &ai_payload()).await.expect_err("an error");
    assert_no_key(&e);
    assert_no_key(&e.to_string());
    e
}

#[tokio::test]
async fn upstream_failures_map_onto_the_error_kinds() {
    // A failed search returned as 200.
    let e = failure(answer(200, SEARCH_ERROR), |_| {}).await;
    assert!(matches!(e, EngineError::Retryable(_)), "{e:?}");

    // 429 with Retry-After: the hourly throughput limit.
    let mut a = answer(
        429,
        r#"{"error":"Your searches for the past hour have exceeded your hourly throughput limit."}"#,
    );
    a.headers.push(("retry-after", "7".into()));
    let e = failure(a, |_| {}).await;
    assert!(
        matches!(e, EngineError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(7)),
        "{e:?}"
    );

    // 429: the plan is exhausted.
    let e = failure(
        answer(429, r#"{"error":"Your account has run out of searches."}"#),
        |_| {},
    )
    .await;
    assert!(matches!(e, EngineError::Unauthorized { .. }), "{e:?}");

    // 500.
    let e = failure(answer(500, r#"{"error":"Something went wrong."}"#), |_| {}).await;
    assert!(matches!(e, EngineError::Retryable(_)), "{e:?}");

    // Malformed JSON.
    let e = failure(answer(200, r#"{"text_blocks": ["#), |_| {}).await;
    assert!(matches!(e, EngineError::Retryable(_)), "{e:?}");

    // Authentication, with the key in the provider's message.
    let e = failure(
        answer(401, &format!(r#"{{"error":"Invalid API key {KEY}. Your API key should be here: https://serpapi.com/manage-api-key"}}"#)),
        |_| {},
    )
    .await;
    assert!(
        matches!(&e, EngineError::Unauthorized { message } if message.contains("Invalid API key [redacted]")),
        "{e:?}"
    );

    // A body larger than the cap.
    let big = format!(r#"{{"text_blocks":[],"pad":"{}"}}"#, "x".repeat(4096));
    let e = failure(answer(200, &big), |c| c.max_body = 1024).await;
    assert!(
        matches!(&e, EngineError::Retryable(m) if m.contains("larger than 1024 bytes")),
        "{e:?}"
    );

    // A timeout: the fake holds its answer past the engine's time limit.
    let mut slow = answer(200, AIMODE);
    slow.delay = Duration::from_secs(5);
    let e = failure(slow, |c| c.timeout = Duration::from_millis(200)).await;
    assert!(
        matches!(&e, EngineError::Retryable(m) if m.contains("did not answer in time")),
        "{e:?}"
    );
}

#[tokio::test]
async fn transport_errors_never_show_the_url_and_its_key() {
    // A port nothing listens on: reqwest's error would carry the URL, api_key included.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let mut cfg = SerpApiConfig::new(format!("http://{addr}"), KEY);
    cfg.timeout = Duration::from_secs(5);
    let engine = SerpApiEngine::new(cfg).expect("engine");
    let e = run(&engine, &ai_payload()).await.expect_err("refused");
    assert!(matches!(e, EngineError::Retryable(_)), "{e:?}");
    assert_no_key(&e);
    assert_no_key(&engine);
}

#[test]
fn configuration_is_checked() {
    assert!(SerpApiEngine::new(SerpApiConfig::new("https://serpapi.com", "")).is_err());
    assert!(SerpApiEngine::new(SerpApiConfig::new("serpapi.com", KEY)).is_err());
    assert!(SerpApiEngine::new(SerpApiConfig::new("ftp://serpapi.com", KEY)).is_err());
    let e = SerpApiEngine::new(SerpApiConfig::new("https://serpapi.com/", KEY)).expect("ok");
    assert_eq!(e.search_url.as_str(), "https://serpapi.com/search.json");
}

#[tokio::test]
async fn chat_task_types_are_refused() {
    let engine = SerpApiEngine::new(SerpApiConfig::new("https://serpapi.com", KEY)).expect("ok");
    let p = payload(TaskType::Chatgpt, json!({"prompt": "p", "country": "US"}));
    assert!(matches!(
        run(&engine, &p).await,
        Err(EngineError::Fatal { .. })
    ));
}
