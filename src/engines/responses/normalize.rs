//! Reading a Responses-format answer (pure) and shaping the cloro result of a chat engine.
//!
//! Where each provider puts things (reference `engines.md`, checked against the providers'
//! documentation; the fixtures in `fixtures/` carry their sources):
//! * answer text: `output[type=message].content[type=output_text].text` (several parts are
//!   joined with a blank line);
//! * inline citations: that part's `annotations[type=url_citation]{url, title?, start_index?,
//!   end_index?}` — indexes count **characters** of the part's text (xAI may omit them and the
//!   title);
//! * consulted sources: OpenAI/Azure `output[type=web_search_call].action.sources[]{url}`,
//!   Perplexity `output[type=search_results].results[]{url, title, snippet, …}`;
//! * search queries: `web_search_call.action.queries[]` (older: `action.query`), xAI's
//!   `web_search_call.arguments` (a JSON string `{"query": …}`), Perplexity's
//!   `search_results.queries[]`;
//! * `model`, `status` (`failed`/`cancelled` arrive with HTTP 200), `error`, `usage`.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::super::lenient::{self, Arr, Message, Obj, Str, U64};
use super::super::upstream::{self, Reply};
use super::super::{EngineError, Usage};
use super::Chat;
use crate::domain::request::ChatEngine;
use crate::pages::PageLinks;

/// A citation of the answer: `span` is a byte range of [`Normalized::text`] (always on char
/// boundaries) when the provider gave valid indexes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Citation {
    pub(crate) url: String,
    pub(crate) title: Option<String>,
    pub(crate) span: Option<(usize, usize)>,
}

/// A page the search consulted (cited or not).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Consulted {
    pub(crate) url: String,
    pub(crate) title: Option<String>,
    pub(crate) snippet: Option<String>,
}

/// What the answer says, provider-neutral.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Normalized {
    pub(crate) text: String,
    pub(crate) citations: Vec<Citation>,
    pub(crate) consulted: Vec<Consulted>,
    pub(crate) queries: Vec<String>,
    pub(crate) model: Option<String>,
    pub(crate) usage: Option<Usage>,
}

/// A run the provider reports as not completed (HTTP 200 with `status: failed|cancelled`…),
/// and what it was billed if the body says (`usage`).
#[derive(Debug)]
pub(crate) struct RunFailed {
    pub(crate) message: String,
    pub(crate) usage: Option<Usage>,
}

// ------------------------------------------------------------------------------------------
// The answer, typed (read with `Value`'s meaning: a field of another JSON type is absent)

/// The fields of a Responses-format answer this adapter reads, borrowed from the body.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Answer<'a> {
    #[serde(borrow)]
    status: Str<'a>,
    #[serde(borrow)]
    error: Message<'a>,
    #[serde(borrow)]
    model: Str<'a>,
    #[serde(borrow)]
    output: Arr<Obj<Item<'a>>>,
    usage: Obj<UsageObj>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UsageObj {
    input_tokens: U64,
    output_tokens: U64,
}

/// One `output` item: a `message`, a `web_search_call` or Perplexity's `search_results`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Item<'a> {
    #[serde(borrow, rename = "type")]
    kind: Str<'a>,
    #[serde(borrow)]
    content: Arr<Obj<Part<'a>>>,
    #[serde(borrow)]
    action: Obj<Action<'a>>,
    #[serde(borrow)]
    arguments: Str<'a>,
    #[serde(borrow)]
    results: Arr<Obj<Found<'a>>>,
    #[serde(borrow)]
    queries: Arr<Str<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Action<'a> {
    #[serde(borrow, rename = "type")]
    kind: Str<'a>,
    #[serde(borrow)]
    sources: Arr<Obj<Found<'a>>>,
    #[serde(borrow)]
    queries: Arr<Str<'a>>,
    #[serde(borrow)]
    query: Str<'a>,
}

/// A consulted page: `action.sources[]` (OpenAI, Azure), `results[]` (Perplexity).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Found<'a> {
    #[serde(borrow)]
    url: Str<'a>,
    #[serde(borrow)]
    title: Str<'a>,
    #[serde(borrow)]
    snippet: Str<'a>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Part<'a> {
    #[serde(borrow, rename = "type")]
    kind: Str<'a>,
    #[serde(borrow)]
    text: Str<'a>,
    #[serde(borrow)]
    annotations: Arr<Obj<Annotation<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Annotation<'a> {
    #[serde(borrow, rename = "type")]
    kind: Str<'a>,
    /// OpenAI puts the fields on the annotation; some clients nest them in `url_citation`.
    #[serde(borrow)]
    url_citation: Obj<Cited<'a>>,
    #[serde(borrow)]
    url: Str<'a>,
    #[serde(borrow)]
    title: Str<'a>,
    start_index: U64,
    end_index: U64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Cited<'a> {
    #[serde(borrow)]
    url: Str<'a>,
    #[serde(borrow)]
    title: Str<'a>,
    start_index: U64,
    end_index: U64,
}

/// What the call used, as the provider reports it: tokens from `usage.input_tokens` and
/// `usage.output_tokens`; searches counted from `output` (none reported when there is no
/// `output`):
/// * `web_search_call` items whose `action.type` is `search` (OpenAI, Azure: a web search tool
///   call is billed per call, and its `open_page` / `find_in_page` actions read pages of a
///   search already made, so they are not counted), or that carry no action (xAI: one item
///   per search it ran, its `arguments` the query; its `usage.num_server_side_tools_used`
///   agrees);
/// * `search_results` items (Perplexity: one per `web_search` invocation, billed per
///   invocation).
///
/// `None` when the answer has no `usage` and ran no search.
fn usage_of(a: &Answer<'_>) -> Option<Usage> {
    let u = a.usage.get();
    let searches = a.output.0.as_ref().map(|items| {
        items
            .iter()
            .filter_map(Obj::get)
            .filter(|item| match item.kind.get() {
                Some("web_search_call") => item
                    .action
                    .get()
                    .and_then(|a| a.kind.get())
                    .is_none_or(|t| t == "search"),
                Some("search_results") => true,
                _ => false,
            })
            .count() as u64
    });
    if u.is_none() && searches.is_none_or(|n| n == 0) {
        return None;
    }
    Usage {
        input_tokens: u.and_then(|u| u.input_tokens.0),
        output_tokens: u.and_then(|u| u.output_tokens.0),
        searches,
    }
    .nonempty()
}

/// [`usage_of`] an answer already parsed into a `Value`.
#[cfg(test)]
pub(crate) fn usage(json: &Value) -> Option<Usage> {
    Obj::<Answer<'_>>::deserialize(json)
        .ok()
        .and_then(|a| a.0)
        .and_then(|a| usage_of(&a))
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn nonblank(s: Option<&str>) -> Option<String> {
    s.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Byte offset of every char boundary of `s`, plus `s.len()` (index = char index).
fn char_boundaries(s: &str) -> Vec<usize> {
    let mut v: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
    v.push(s.len());
    v
}

/// The byte range of the character range `start..end` of a text whose boundaries are
/// `bounds`; `None` when the indexes are missing, inverted or out of range.
fn char_span(bounds: &[usize], start: Option<u64>, end: Option<u64>) -> Option<(usize, usize)> {
    let (s, e) = (usize::try_from(start?).ok()?, usize::try_from(end?).ok()?);
    if s > e {
        return None;
    }
    Some((*bounds.get(s)?, *bounds.get(e)?))
}

fn push_query(queries: &mut Vec<String>, q: Option<&str>) {
    if let Some(q) = nonblank(q)
        && !queries.contains(&q)
    {
        queries.push(q);
    }
}

/// The JSON object of a 2xx body, or the retryable error saying why it is not one.
pub(crate) fn json_object(body: &[u8]) -> Result<Value, EngineError> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| EngineError::Retryable(format!("the upstream's answer is not JSON: {e}")))?;
    if !json.is_object() {
        return Err(EngineError::Retryable(
            "the upstream's answer is not a JSON object".into(),
        ));
    }
    Ok(json)
}

/// What a 2xx body says: the answer read (or the run's failure), and the body as a `Value`
/// when `keep_json` (for `rawResponse`) or when it could only be read through one. The body is
/// read typed, in one pass, when it is a JSON object a `Value` parse accepts; any other body
/// goes through [`json_object`] (and its error messages).
pub(crate) fn read(
    body: &[u8],
    keep_json: bool,
) -> Result<(Result<Normalized, RunFailed>, Option<Value>), EngineError> {
    if !keep_json && lenient::valid(body) {
        let typed: Result<Obj<Answer<'_>>, _> = serde_json::from_slice(body);
        if let Ok(Obj(Some(answer))) = typed {
            return Ok((normalized(&answer), None));
        }
    }
    let json = json_object(body)?;
    let n = parse(&json);
    Ok((n, Some(json)))
}

/// Reads the provider's answer. An empty or absent `output` is a valid empty answer (xAI).
pub(crate) fn parse(json: &Value) -> Result<Normalized, RunFailed> {
    // Every field takes any JSON value and a `Value` has no duplicate keys, so this cannot
    // fail; a non-object answer reads as an empty one, as `Value::get` finds nothing in it.
    let answer = Obj::<Answer<'_>>::deserialize(json)
        .ok()
        .and_then(|a| a.0)
        .unwrap_or_default();
    normalized(&answer)
}

fn normalized(json: &Answer<'_>) -> Result<Normalized, RunFailed> {
    if let Some(status) = json.status.get() {
        match status {
            "completed" | "incomplete" => {}
            other => {
                let why = json.error.0.as_deref().unwrap_or("no reason given");
                return Err(RunFailed {
                    message: format!("the upstream's run ended with status {other:?}: {why}"),
                    usage: usage_of(json),
                });
            }
        }
    }
    let mut out = Normalized {
        model: nonblank(json.model.get()),
        usage: usage_of(json),
        ..Normalized::default()
    };
    for item in json.output.items().iter().filter_map(Obj::get) {
        match item.kind.get() {
            Some("message") => {
                for part in item.content.items().iter().filter_map(Obj::get) {
                    if part.kind.get() == Some("output_text") {
                        add_text_part(&mut out, part);
                    }
                }
            }
            Some("web_search_call") => {
                if let Some(action) = item.action.get() {
                    for s in action.sources.items().iter().filter_map(Obj::get) {
                        if let Some(url) = nonblank(s.url.get()) {
                            out.consulted.push(Consulted {
                                url,
                                title: nonblank(s.title.get()),
                                snippet: None,
                            });
                        }
                    }
                    for q in action.queries.items() {
                        push_query(&mut out.queries, q.get());
                    }
                    push_query(&mut out.queries, action.query.get());
                }
                // xAI: `arguments` is a JSON string such as `{"query": "…"}`.
                if let Some(args) = item.arguments.get()
                    && let Ok(args) = serde_json::from_str::<Value>(args)
                {
                    push_query(&mut out.queries, str_of(&args, "query"));
                    let empty = Vec::new();
                    for q in args
                        .get("queries")
                        .and_then(Value::as_array)
                        .unwrap_or(&empty)
                    {
                        push_query(&mut out.queries, q.as_str());
                    }
                }
            }
            Some("search_results") => {
                for r in item.results.items().iter().filter_map(Obj::get) {
                    if let Some(url) = nonblank(r.url.get()) {
                        out.consulted.push(Consulted {
                            url,
                            title: nonblank(r.title.get()),
                            snippet: nonblank(r.snippet.get()),
                        });
                    }
                }
                for q in item.queries.items() {
                    push_query(&mut out.queries, q.get());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn add_text_part(out: &mut Normalized, part: &Part<'_>) {
    let text = part.text.get().unwrap_or("");
    if !out.text.is_empty() && !text.is_empty() {
        out.text.push_str("\n\n");
    }
    let base = out.text.len();
    let bounds = char_boundaries(text);
    out.text.push_str(text);
    for a in part.annotations.items().iter().filter_map(Obj::get) {
        if a.kind.get() != Some("url_citation") {
            continue;
        }
        let (url, title, start, end) = match a.url_citation.get() {
            Some(c) => (&c.url, &c.title, c.start_index, c.end_index),
            None => (&a.url, &a.title, a.start_index, a.end_index),
        };
        let Some(url) = nonblank(url.get()) else {
            continue;
        };
        let span = char_span(&bounds, start.0, end.0).map(|(s, e)| (base + s, base + e));
        out.citations.push(Citation {
            url,
            title: nonblank(title.get()),
            span,
        });
    }
}

// ------------------------------------------------------------------------------------------
// Sources and citations in cloro terms

/// One cloro source: position is its index + 1.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Source {
    pub(crate) url: String,
    pub(crate) title: Option<String>,
    pub(crate) snippet: Option<String>,
    /// Cited inline in the text.
    pub(crate) cited: bool,
}

/// OpenAI appends `utm_source=openai` (earlier `utm_source=chatgpt.com`) to the URLs it
/// cites; the consulted list may not have it. Two URLs that differ only by it are the same
/// source.
pub(crate) fn same_url_key(url: &str) -> Cow<'_, str> {
    let url = url.trim();
    let Some((base, query)) = url.split_once('?') else {
        return Cow::Borrowed(url);
    };
    if !query.contains("utm_source=") {
        return Cow::Borrowed(url);
    }
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !matches!(*p, "utm_source=openai" | "utm_source=chatgpt.com" | ""))
        .collect();
    let mut out = base.to_owned();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    Cow::Owned(out)
}

/// Sources by first appearance: cited URLs in the order of their spans in the text
/// (citations without a span after them, in the provider's order), then the other consulted
/// pages. Each URL once; a title or snippet missing on one mention is taken from another.
pub(crate) fn sources(n: &Normalized) -> Vec<Source> {
    let mut cits: Vec<&Citation> = n.citations.iter().collect();
    cits.sort_by_key(|c| c.span.map_or(usize::MAX, |(s, _)| s));
    let mentions = cits
        .into_iter()
        .map(|c| (c.url.as_str(), c.title.as_ref(), None, true))
        .chain(
            n.consulted
                .iter()
                .map(|c| (c.url.as_str(), c.title.as_ref(), c.snippet.as_ref(), false)),
        );
    let mut out: Vec<Source> = Vec::with_capacity(n.citations.len() + n.consulted.len());
    let mut keys: HashMap<Cow<'_, str>, usize> = HashMap::with_capacity(out.capacity());
    for (url, title, snippet, cited) in mentions {
        let key = same_url_key(url);
        if let Some(&i) = keys.get(&key) {
            let s = &mut out[i];
            if s.title.is_none() {
                s.title = title.cloned();
            }
            if s.snippet.is_none() {
                s.snippet = snippet.cloned();
            }
        } else {
            keys.insert(key, out.len());
            out.push(Source {
                url: url.to_owned(),
                title: title.cloned(),
                snippet: snippet.cloned(),
                cited,
            });
        }
    }
    out
}

/// The host of an absolute URL, lowercased (`""` when it has none): what follows `scheme://`
/// up to the path, query or fragment, without user info or port.
pub(crate) fn domain(url: &str) -> String {
    let Some((_, rest)) = url.trim().split_once("://") else {
        return String::new();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') {
        // An IPv6 literal keeps its brackets, loses its port.
        host.split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()])
    } else {
        host.split(':').next().unwrap_or("")
    };
    host.to_ascii_lowercase()
}

/// `label`: the title, else the domain.
fn label(s: &Source) -> String {
    s.title.clone().unwrap_or_else(|| domain(&s.url))
}

/// The answer with its citations as markdown links: ` [n](url)` after each cited span (unless
/// the span is already a link to that URL, as OpenAI writes them), and the citations without a
/// span in a closing `Sources:` line.
pub(crate) fn markdown(n: &Normalized, sources: &[Source]) -> String {
    let positions: HashMap<Cow<'_, str>, usize> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| (same_url_key(&s.url), i + 1))
        .collect();
    let mut inserts: Vec<(usize, String)> = Vec::new();
    let mut footer: Vec<String> = Vec::new();
    for c in &n.citations {
        let Some(&pos) = positions.get(&same_url_key(&c.url)) else {
            continue;
        };
        let link = format!("[{pos}]({})", c.url);
        match c.span {
            Some((s, e)) => {
                let covered = &n.text[s..e];
                if covered.contains(&format!("]({}", c.url))
                    || covered.contains(&format!("]({}", same_url_key(&c.url)))
                {
                    continue;
                }
                inserts.push((e, format!(" {link}")));
            }
            None => {
                if !footer.contains(&link) {
                    footer.push(link);
                }
            }
        }
    }
    inserts.sort_by_key(|(at, _)| *at);
    inserts.dedup();
    let mut md = String::with_capacity(n.text.len() + inserts.len() * 40 + 64);
    let mut from = 0;
    for (at, link) in &inserts {
        md.push_str(&n.text[from..*at]);
        md.push_str(link);
        from = *at;
    }
    md.push_str(&n.text[from..]);
    if !footer.is_empty() {
        if !md.is_empty() {
            md.push_str("\n\n");
        }
        md.push_str("Sources: ");
        md.push_str(&footer.join(" "));
    }
    md
}

// ------------------------------------------------------------------------------------------
// The cloro result shapes (reference §5.1, §5.3, §5.4, §5.5)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Chatgpt,
    Grok,
    Copilot,
    Perplexity,
}

impl Shape {
    pub(crate) fn of(engine: ChatEngine) -> Option<Shape> {
        match engine {
            ChatEngine::Chatgpt => Some(Shape::Chatgpt),
            ChatEngine::Grok => Some(Shape::Grok),
            ChatEngine::Copilot => Some(Shape::Copilot),
            ChatEngine::Perplexity => Some(Shape::Perplexity),
            ChatEngine::Gemini => None,
        }
    }
}

/// The cited sources as citation pills, one per cited URL in order of first citation.
fn pills(sources: &[Source], first_id: usize, chatgpt: bool) -> Value {
    Value::Array(
        sources
            .iter()
            .enumerate()
            .filter(|(_, s)| s.cited)
            .enumerate()
            .map(|(k, (i, s))| {
                let mut p = Map::with_capacity(6);
                p.insert("url".into(), json!(s.url));
                p.insert("label".into(), json!(label(s)));
                p.insert("domain".into(), json!(domain(&s.url)));
                p.insert("citationPillId".into(), json!(k + first_id));
                if chatgpt {
                    p.insert("type".into(), json!("searchResult"));
                }
                p.insert("position".into(), json!(i + 1));
                Value::Object(p)
            })
            .collect(),
    )
}

/// `rawResponse`: the provider's own JSON answer (one element, so the field keeps the array
/// type of the published shape), with the key removed should it appear anywhere in it.
fn raw(json: Value, secret: &str) -> Value {
    if !secret.is_empty() && mentions(&json, secret) {
        let text = json.to_string();
        {
            let clean = upstream::redact(&text, secret);
            // Should the redaction break the JSON (a key with a quote in it), keep the text.
            return Value::Array(vec![
                serde_json::from_str::<Value>(&clean).unwrap_or(Value::String(clean)),
            ]);
        }
    }
    Value::Array(vec![json])
}

/// Whether any key or string of `v` contains `secret` (without serialising it).
fn mentions(v: &Value, secret: &str) -> bool {
    match v {
        Value::String(s) => s.contains(secret),
        Value::Array(a) => a.iter().any(|x| mentions(x, secret)),
        Value::Object(o) => o
            .iter()
            .any(|(k, x)| k.contains(secret) || mentions(x, secret)),
        _ => false,
    }
}

/// The cloro result of `shape` for a parsed answer; `json` is the answer as a `Value`, kept
/// as `rawResponse` when the payload asks for it (and [`read`] was told to keep it).
pub(crate) fn shape(
    shape: Shape,
    n: &Normalized,
    payload: &Chat<'_>,
    pages: &PageLinks,
    json: Option<Value>,
    secret: &str,
) -> Value {
    let srcs = sources(n);
    let model = n.model.clone().map_or(Value::Null, Value::String);
    let queries = Value::Array(n.queries.iter().map(|q| json!(q)).collect());
    let mut m = Map::with_capacity(16);
    m.insert("text".into(), json!(n.text));
    match shape {
        Shape::Chatgpt => {
            let list = srcs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    obj! {"position": i + 1, "url": s.url, "label": label(s),
                    "description": s.snippet.clone().unwrap_or_default(),
                    "footnote": s.cited}
                })
                .collect();
            m.insert("sources".into(), Value::Array(list));
            m.insert("model".into(), model);
            m.insert("entities".into(), json!([]));
            m.insert("map".into(), json!([]));
            m.insert("citationPills".into(), pills(&srcs, 0, true));
        }
        Shape::Grok => {
            let list = srcs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let snippet = s.snippet.clone().unwrap_or_default();
                    obj! {"position": i + 1, "url": s.url, "label": label(s),
                    "description": snippet, "preview": "", "searchEngineText": "",
                    "siteName": "", "metadataTitle": s.title.clone().unwrap_or_default(),
                    "creator": "", "image": "", "favicon": ""}
                })
                .collect();
            m.insert("sources".into(), Value::Array(list));
            m.insert("searchQueries".into(), queries.clone());
            m.insert("model".into(), model);
        }
        Shape::Copilot | Shape::Perplexity => {
            let list = srcs
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    obj! {"position": i + 1, "url": s.url, "label": label(s),
                    "description": s.snippet.clone().unwrap_or_default()}
                })
                .collect();
            m.insert("sources".into(), Value::Array(list));
            m.insert("citationPills".into(), pills(&srcs, 1, false));
            if shape == Shape::Copilot {
                m.insert("searchQueries".into(), queries.clone());
                // Not in the published Copilot shape: which model really answered (Copilot has
                // no answer API; this is the Azure deployment's model).
                m.insert("model".into(), model);
            } else {
                m.insert("related_queries".into(), json!([]));
                for key in ["videos", "images", "hotels", "places", "shopping_cards"] {
                    m.insert(key.into(), json!([]));
                }
                m.insert("search_model_queries".into(), queries.clone());
            }
        }
    }
    if payload.markdown {
        m.insert("markdown".into(), json!(markdown(n, &srcs)));
    }
    if payload.html {
        m.insert("html".into(), json!(pages.url(1)));
    }
    if payload.raw_response
        && let Some(json) = json
    {
        m.insert("rawResponse".into(), raw(json, secret));
    }
    if shape == Shape::Chatgpt {
        if payload.search_queries {
            m.insert("searchQueries".into(), queries);
            m.insert("mapSearchQueries".into(), json!([]));
        }
        // The Responses API has no shopping cards or ads: asked for, they are empty.
        if payload.shopping {
            m.insert("shoppingCards".into(), json!([]));
            m.insert("inlineProducts".into(), json!([]));
        }
        if payload.ads {
            m.insert("ads".into(), json!([]));
        }
    }
    Value::Object(m)
}

/// What `ResponsesEngine::execute` makes of a 2xx body: the cloro result of `shape` and the
/// usage, or the error (a run that did not complete is retryable, carrying what it was billed).
pub(crate) fn answer(
    body: &[u8],
    shape_of: Shape,
    payload: &Chat<'_>,
    pages: &PageLinks,
    secret: &str,
) -> Result<(Value, Option<Usage>), EngineError> {
    let (parsed, json) = read(body, payload.raw_response)?;
    // A failed run is retried; what it was billed (its `usage`, when the body has one) still
    // counts.
    let parsed = parsed.map_err(|e| {
        EngineError::with_usage(
            EngineError::Retryable(upstream::redact(&e.message, secret)),
            e.usage,
        )
    })?;
    let usage = parsed.usage;
    Ok((
        shape(shape_of, &parsed, payload, pages, json, secret),
        usage,
    ))
}

// ------------------------------------------------------------------------------------------
// Errors

/// The error kind of a non-2xx answer, refined with the provider's error body:
/// `{"error": {"message", "type", "code"}}` (OpenAI, Azure, Perplexity), `{"error": "…",
/// "code": "…"}` (xAI). OpenAI's 429 `insufficient_quota` is a refused key (billing), not a
/// rate limit; xAI's 400 for a wrong key and any 404 (no such model, deployment or endpoint)
/// are refused keys too.
pub(crate) fn classify_error(reply: &Reply, secret: &str) -> EngineError {
    let body: Option<Value> = serde_json::from_slice(&reply.body).ok();
    let err = body.as_ref().and_then(|b| b.get("error"));
    let message = err
        .and_then(|e| str_of(e, "message").or_else(|| e.as_str()))
        .or_else(|| body.as_ref().and_then(|b| str_of(b, "message")))
        .or_else(|| body.as_ref().and_then(|b| str_of(b, "detail")))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&reply.body);
            let text: String = text.chars().take(300).collect();
            if text.trim().is_empty() {
                format!("HTTP {}", reply.status)
            } else {
                text
            }
        });
    let code = err
        .and_then(|e| str_of(e, "code").or_else(|| str_of(e, "type")))
        .or_else(|| body.as_ref().and_then(|b| str_of(b, "code")));
    let message = match code {
        Some(code) if !message.contains(code) => format!("{code}: {message}"),
        _ => message,
    };
    let quota = err.is_some_and(|e| {
        str_of(e, "code") == Some("insufficient_quota")
            || str_of(e, "type") == Some("insufficient_quota")
    });
    let lower = message.to_ascii_lowercase();
    // xAI answers a wrong key with 400 "Incorrect API key provided"; a missing model or Azure
    // deployment, or a base URL without the Responses endpoint, is 404. Each is the engine's
    // configuration, not the task: the engine must stop, not fail its queue.
    let refused = match reply.status.as_u16() {
        429 => quota,
        400 => {
            lower.contains("api key") && (lower.contains("incorrect") || lower.contains("invalid"))
        }
        404 => true,
        _ => false,
    };
    if refused {
        return EngineError::Unauthorized {
            message: upstream::redact(&message, secret),
        };
    }
    upstream::classify(reply.status, &reply.headers, message, secret)
}
