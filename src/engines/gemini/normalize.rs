//! The `generateContent` answer → the cloro GEMINI result (reference §5.2), and Gemini's error
//! bodies → [`EngineError`] kinds. Pure functions, unit-tested on fixtures.
//!
//! Field mapping (docs/ENGINES.md will carry the table):
//! * `text` ← `candidates[0].content.parts[].text`, concatenated (parts marked `thought: true`
//!   are left out);
//! * `sources[]` ← `candidates[0].groundingMetadata.groundingChunks[].web{uri,title}`: one per
//!   distinct `uri`, `position` 1-based by first appearance, `label` = `title` (the uri's host
//!   when absent), `description` = "" (Gemini gives no snippet). The `uri`s are kept as Gemini
//!   returns them (`vertexaisearch.cloud.google.com/grounding-api-redirect/…` links): they are
//!   not resolved in this increment;
//! * `citationPills[]` ← `groundingSupports[]`: one pill per distinct cited source, in the order
//!   of the first span citing it; `citationPillId` 1-based, `position` = the source's position,
//!   `domain` = `web.domain` when present (Vertex AI sends it), else the `title` when it is a
//!   bare host name (what the Gemini API puts there), else the uri's host; no `description`;
//! * `markdown` (include.markdown) ← the text with ` [n](uri)` inserted after each supported
//!   segment. `segment.startIndex`/`endIndex` are **UTF-8 byte** offsets from the start of part
//!   `partIndex`; Rust strings are UTF-8, so they index the text directly once the part's own
//!   start is added. An offset outside the text or inside a character (a provider counting in
//!   characters) falls back to finding `segment.text`; a span found neither way is dropped;
//! * `html` (include.html) ← the link of the page cloro renders from this answer and serves
//!   itself (`crate::pages`);
//! * `searchQueries` ← `groundingMetadata.webSearchQueries[]` (only when include.searchQueries,
//!   which the GEMINI request schema does not accept today: ready for when it does);
//! * `model` ← `modelVersion` (null when absent);
//! * `rawResponse` (include.rawResponse) ← `[<the upstream's JSON answer>]`: an array, the type
//!   the shape gives `rawResponse`, holding the one answer.
//!
//! Blocked answers: a `promptFeedback.blockReason` with no candidate, or a candidate without
//! text that stopped for a reason other than `STOP`/`MAX_TOKENS` (`SAFETY`, `RECITATION`,
//! `PROHIBITED_CONTENT`…) is a fatal `UPSTREAM_BLOCKED` error carrying the reason: asking again
//! gives the same refusal, and an empty "answer" would read as if Gemini had said nothing. A
//! candidate that stopped normally with no text is a valid empty answer. No candidate at all
//! (and no block reason) is retryable.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::super::lenient::{self, Obj, U64};
use super::super::upstream;
use super::super::{EngineError, Usage};
use crate::pages::PageLinks;

/// The include flags that shape a GEMINI result.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Options {
    pub(crate) markdown: bool,
    /// `include.html`: link the result page cloro renders from the answer.
    pub(crate) html: bool,
    pub(crate) raw_response: bool,
    pub(crate) search_queries: bool,
}

/// The answer's fields this adapter reads, borrowed from the body. The struct names and field
/// types are those of the reader that went through a `Value` (their error messages name them);
/// [`Txt`] borrows a string where `String` copied it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Response<'a> {
    #[serde(borrow)]
    candidates: Vec<Candidate<'a>>,
    #[serde(borrow)]
    prompt_feedback: Option<PromptFeedback<'a>>,
    #[serde(borrow)]
    model_version: Option<Txt<'a>>,
    /// Read as `Value::get`/`as_u64` read it: any other JSON type is absent.
    usage_metadata: Obj<UsageMetadata>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct UsageMetadata {
    prompt_token_count: U64,
    tool_use_prompt_token_count: U64,
    candidates_token_count: U64,
    thoughts_token_count: U64,
}

/// A JSON string, borrowed from the body when it has no escapes (`String`'s error messages).
#[derive(Debug, Default)]
struct Txt<'a>(Cow<'a, str>);

impl std::ops::Deref for Txt<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Txt<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Txt<'a>, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Txt<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Txt<'a>, E> {
                Ok(Txt(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Txt<'a>, E> {
                Ok(Txt(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Txt<'a>, E> {
                Ok(Txt(Cow::Owned(s)))
            }
        }
        d.deserialize_string(V(std::marker::PhantomData))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PromptFeedback<'a> {
    #[serde(borrow)]
    block_reason: Option<Txt<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(borrow)]
    content: Option<Content<'a>>,
    #[serde(borrow)]
    finish_reason: Option<Txt<'a>>,
    #[serde(borrow)]
    grounding_metadata: Option<GroundingMetadata<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Content<'a> {
    #[serde(borrow)]
    parts: Vec<Part<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Part<'a> {
    #[serde(borrow)]
    text: Option<Txt<'a>>,
    thought: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct GroundingMetadata<'a> {
    #[serde(borrow)]
    grounding_chunks: Vec<Chunk<'a>>,
    #[serde(borrow)]
    grounding_supports: Vec<Support<'a>>,
    /// `None` when absent (no searches reported); `null` is refused, as a `Vec` refuses it.
    #[serde(borrow, deserialize_with = "present")]
    web_search_queries: Option<Vec<Txt<'a>>>,
}

/// A field that, when present, must be a `T` (`null` included in what it refuses).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Chunk<'a> {
    #[serde(borrow)]
    web: Option<Web<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Web<'a> {
    #[serde(borrow)]
    uri: Option<Txt<'a>>,
    #[serde(borrow)]
    title: Option<Txt<'a>>,
    /// Vertex AI only; the Gemini API does not document it.
    #[serde(borrow)]
    domain: Option<Txt<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Support<'a> {
    #[serde(borrow)]
    segment: Option<Segment<'a>>,
    grounding_chunk_indices: Vec<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Segment<'a> {
    part_index: Option<usize>,
    start_index: Option<usize>,
    end_index: Option<usize>,
    #[serde(borrow)]
    text: Option<Txt<'a>>,
}

struct Source {
    url: String,
    label: String,
    domain: String,
}

/// A supported segment of the text: byte range `start..end` of the concatenated text, and the
/// 1-based positions of the sources it cites.
#[derive(Debug, PartialEq)]
struct Span {
    start: usize,
    end: usize,
    sources: Vec<usize>,
}

fn retryable_shape(e: impl std::fmt::Display) -> EngineError {
    EngineError::Retryable(format!(
        "the upstream's answer is not the expected JSON: {e}"
    ))
}

/// The cloro GEMINI result of a 2xx `body`, and its [`usage`]. `secret` (the API key) is
/// removed from the raw answer before it is kept.
pub(crate) fn normalize(
    body: &[u8],
    opts: Options,
    pages: &PageLinks,
    secret: &str,
) -> Result<(Value, Option<Usage>), EngineError> {
    let src: Cow<'_, [u8]> =
        if !secret.is_empty() && body.windows(secret.len()).any(|w| w == secret.as_bytes()) {
            let text = upstream::redact(&String::from_utf8_lossy(body), secret);
            Cow::Owned(text.into_bytes())
        } else {
            Cow::Borrowed(body)
        };
    // Typed in one pass when a `Value` parse would accept the body and the typed read succeeds
    // on it; otherwise (and for `rawResponse`, which needs the `Value`) through a `Value`, whose
    // error messages the typed read does not reproduce.
    let fast = if !opts.raw_response && lenient::valid(&src) {
        serde_json::from_slice::<Response<'_>>(&src).ok()
    } else {
        None
    };
    let raw: Option<Value>;
    let resp = match fast {
        Some(resp) => {
            raw = None;
            resp
        }
        None => {
            let value: Value = serde_json::from_slice(&src).map_err(retryable_shape)?;
            raw = Some(value);
            match &raw {
                Some(v) => Response::deserialize(v).map_err(retryable_shape)?,
                None => Response::default(),
            }
        }
    };
    let Some(cand) = resp.candidates.first() else {
        return Err(match resp.prompt_feedback.and_then(|f| f.block_reason) {
            Some(reason) => EngineError::Fatal {
                code: "UPSTREAM_BLOCKED".into(),
                message: format!("Gemini blocked the prompt (blockReason {})", &*reason),
            },
            None => EngineError::Retryable("Gemini returned no candidate".into()),
        });
    };

    // The text, and where each part starts in it.
    let mut text = String::new();
    let mut part_starts = Vec::new();
    for part in cand.content.iter().flat_map(|c| &c.parts) {
        part_starts.push(text.len());
        if part.thought != Some(true)
            && let Some(t) = &part.text
        {
            text.push_str(t);
        }
    }
    if text.is_empty()
        && let Some(reason) = cand.finish_reason.as_deref()
        && !matches!(reason, "STOP" | "MAX_TOKENS" | "FINISH_REASON_UNSPECIFIED")
    {
        return Err(EngineError::Fatal {
            code: "UPSTREAM_BLOCKED".into(),
            message: format!("Gemini returned no answer (finishReason {reason})"),
        });
    }

    let empty = GroundingMetadata::default();
    let gm = cand.grounding_metadata.as_ref().unwrap_or(&empty);
    let (sources, chunk_pos) = sources(&gm.grounding_chunks);
    let spans = spans(&text, &part_starts, &gm.grounding_supports, &chunk_pos);

    let mut m = Map::new();
    m.insert(
        "sources".into(),
        Value::Array(
            sources
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    obj! {"position": i + 1, "url": s.url, "label": s.label, "description": ""}
                })
                .collect(),
        ),
    );
    m.insert("citationPills".into(), pills(&spans, &sources));
    if opts.markdown {
        m.insert(
            "markdown".into(),
            Value::String(markdown(&text, &spans, &sources)),
        );
    }
    if opts.html {
        m.insert("html".into(), Value::String(pages.url(1)));
    }
    if opts.search_queries {
        m.insert(
            "searchQueries".into(),
            Value::Array(
                gm.web_search_queries
                    .iter()
                    .flatten()
                    .map(|q| Value::String(q.to_string()))
                    .collect(),
            ),
        );
    }
    m.insert(
        "model".into(),
        resp.model_version
            .as_ref()
            .map_or(Value::Null, |v| Value::String(v.to_string())),
    );
    let mut out = Map::new();
    out.insert("text".into(), Value::String(text));
    out.extend(m);
    let usage = usage_of(&resp);
    if opts.raw_response
        && let Some(raw) = raw
    {
        out.insert("rawResponse".into(), Value::Array(vec![raw]));
    }
    Ok((Value::Object(out), usage))
}

fn host(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
}

/// Distinct sources by first appearance of their uri, and each chunk's source position.
fn sources(chunks: &[Chunk]) -> (Vec<Source>, Vec<Option<usize>>) {
    let mut out: Vec<Source> = Vec::new();
    let mut by_url: HashMap<&str, usize> = HashMap::new();
    let mut chunk_pos = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        let Some(web) = &chunk.web else {
            chunk_pos.push(None);
            continue;
        };
        let Some(uri) = web.uri.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
            chunk_pos.push(None);
            continue;
        };
        if let Some(&p) = by_url.get(uri) {
            chunk_pos.push(Some(p));
            continue;
        }
        let title = web
            .title
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let uri_host = host(uri).unwrap_or_default();
        let label = title.map_or_else(|| uri_host.clone(), str::to_owned);
        let domain = web
            .domain
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .or_else(|| {
                title
                    .filter(|t| t.contains('.') && !t.contains(char::is_whitespace))
                    .map(str::to_owned)
            })
            .unwrap_or(uri_host);
        out.push(Source {
            url: uri.to_owned(),
            label,
            domain,
        });
        by_url.insert(uri, out.len());
        chunk_pos.push(Some(out.len()));
    }
    (out, chunk_pos)
}

/// The supported segments, as byte ranges of `text`, sorted by start.
fn spans(
    text: &str,
    part_starts: &[usize],
    supports: &[Support],
    chunk_pos: &[Option<usize>],
) -> Vec<Span> {
    let mut out = Vec::new();
    for s in supports {
        let Some(seg) = &s.segment else { continue };
        let mut sources = Vec::new();
        for &i in &s.grounding_chunk_indices {
            if let Some(Some(p)) = usize::try_from(i).ok().and_then(|i| chunk_pos.get(i))
                && !sources.contains(p)
            {
                sources.push(*p);
            }
        }
        if sources.is_empty() {
            continue;
        }
        let Some((start, end)) = locate(text, part_starts, seg) else {
            continue;
        };
        out.push(Span {
            start,
            end,
            sources,
        });
    }
    out.sort_by_key(|s| (s.start, s.end));
    out
}

/// The byte range of `seg` in `text`: its offsets when they hold (inside the text, on
/// character boundaries, and matching `seg.text` when given), else the first occurrence of
/// `seg.text`.
fn locate(text: &str, part_starts: &[usize], seg: &Segment) -> Option<(usize, usize)> {
    let base = part_starts
        .get(seg.part_index.unwrap_or(0))
        .copied()
        .unwrap_or(0);
    let by_offsets = seg.end_index.and_then(|e| {
        let start = base + seg.start_index.unwrap_or(0);
        let end = base + e;
        let piece = text.get(start..end)?;
        (start < end && seg.text.as_deref().is_none_or(|t| t == piece)).then_some((start, end))
    });
    by_offsets.or_else(|| {
        let t = seg.text.as_deref().filter(|t| !t.is_empty())?;
        text.find(t).map(|i| (i, i + t.len()))
    })
}

fn pills(spans: &[Span], sources: &[Source]) -> Value {
    let mut seen = Vec::new();
    for span in spans {
        for &p in &span.sources {
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
    }
    Value::Array(
        seen.iter()
            .enumerate()
            .filter_map(|(i, &p)| {
                let s = sources.get(p - 1)?;
                Some(
                    obj! {"label": s.label, "citationPillId": i + 1, "url": s.url,
                    "domain": s.domain, "position": p},
                )
            })
            .collect(),
    )
}

/// `url` safe inside a markdown link target.
fn md_url(url: &str) -> String {
    url.replace(' ', "%20")
        .replace('(', "%28")
        .replace(')', "%29")
}

/// The text with ` [n](url)` after each supported segment (a source cited twice at the same
/// place is linked once).
fn markdown(text: &str, spans: &[Span], sources: &[Source]) -> String {
    let mut marks: Vec<(usize, usize)> = Vec::new();
    for span in spans {
        for &p in &span.sources {
            if !marks.contains(&(span.end, p)) {
                marks.push((span.end, p));
            }
        }
    }
    marks.sort_by_key(|&(end, _)| end);
    let mut out = String::with_capacity(text.len() + marks.len() * 64);
    let mut at = 0;
    for (end, p) in marks {
        let Some(s) = sources.get(p - 1) else {
            continue;
        };
        out.push_str(&text[at..end]);
        at = end;
        out.push_str(&format!(" [{p}]({})", md_url(&s.url)));
    }
    out.push_str(&text[at..]);
    out
}

/// The character range (what a JavaScript or Python client counts) of a byte range of `text`.
/// The GEMINI result has no offsets today; the tests check spans with it.
#[cfg(test)]
pub(crate) fn char_range(text: &str, start: usize, end: usize) -> (usize, usize) {
    let s = text[..start].chars().count();
    (s, s + text[start..end].chars().count())
}

/// What the answer cost upstream, from `usageMetadata` (ai.google.dev/api/generate-content
/// `UsageMetadata`): input = `promptTokenCount` + `toolUsePromptTokenCount` (the search results
/// read back), output = `candidatesTokenCount` + `thoughtsTokenCount` (thinking is billed as
/// output), searches = the number of `webSearchQueries` of the first candidate (Gemini 3 bills
/// grounding per search query; Gemini 2.5 per grounded prompt, which the count still shows
/// as non-zero). `None` when Gemini reported none of them.
fn usage_of(resp: &Response<'_>) -> Option<Usage> {
    let u = resp.usage_metadata.get();
    let n = |k: fn(&UsageMetadata) -> U64| u.and_then(|u| k(u).0);
    let sum = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
    };
    let searches = resp
        .candidates
        .first()
        .and_then(|c| c.grounding_metadata.as_ref())
        .and_then(|g| g.web_search_queries.as_ref())
        .map(|q| q.len() as u64);
    Usage {
        input_tokens: sum(
            n(|u| u.prompt_token_count),
            n(|u| u.tool_use_prompt_token_count),
        ),
        output_tokens: sum(
            n(|u| u.candidates_token_count),
            n(|u| u.thoughts_token_count),
        ),
        searches,
    }
    .nonempty()
}

/// [`usage_of`] an answer already parsed into a `Value` (`None` when it does not read).
#[cfg(test)]
pub(crate) fn usage(raw: &Value) -> Option<Usage> {
    Response::deserialize(raw).ok().and_then(|r| usage_of(&r))
}

// ------------------------------------------------------------------------------------------
// Errors

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorBody {
    error: Option<ErrorObj>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ErrorObj {
    message: Option<String>,
    status: Option<String>,
    details: Vec<Value>,
}

/// `"13s"`, `"0.5s"` (protobuf Duration in JSON).
pub(crate) fn parse_proto_duration(s: &str) -> Option<Duration> {
    let secs: f64 = s.trim().strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// The error kind of a non-2xx answer from Gemini (`{"error": {code, message, status,
/// details[]}}`, the Google API error format):
/// * 429 `RESOURCE_EXHAUSTED` → RateLimited, waiting `RetryInfo.retryDelay` when a detail gives
///   it, else `Retry-After`;
/// * an `ErrorInfo` detail with reason `API_KEY_INVALID` (Gemini sends it as **400**
///   `INVALID_ARGUMENT`), 401, 403 `PERMISSION_DENIED`, and 400 `FAILED_PRECONDITION` (Gemini's
///   "free tier is not available in your country, enable billing") → Unauthorized;
/// * 500, 503 `UNAVAILABLE`, 504 → Retryable; any other 4xx (`INVALID_ARGUMENT`…) → Fatal.
///
/// The message is `STATUS: message` (never the `DebugInfo` detail, which can quote the key),
/// with the key redacted anyway.
pub(crate) fn error(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    secret: &str,
) -> EngineError {
    let parsed = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.error);
    let Some(e) = parsed else {
        let snippet: String = String::from_utf8_lossy(body).chars().take(300).collect();
        return upstream::classify(status, headers, snippet, secret);
    };
    let message = match (&e.status, &e.message) {
        (Some(s), Some(m)) => format!("{s}: {m}"),
        (Some(s), None) => s.clone(),
        (None, Some(m)) => m.clone(),
        (None, None) => status.to_string(),
    };
    let message = upstream::redact(&message, secret);
    let detail_type = |d: &Value, t: &str| {
        d.get("@type")
            .and_then(Value::as_str)
            .is_some_and(|x| x.ends_with(t))
    };
    let key_invalid = e.details.iter().any(|d| {
        detail_type(d, "google.rpc.ErrorInfo")
            && d.get("reason").and_then(Value::as_str) == Some("API_KEY_INVALID")
    });
    if key_invalid
        || (status == StatusCode::BAD_REQUEST && e.status.as_deref() == Some("FAILED_PRECONDITION"))
    {
        return EngineError::Unauthorized { message };
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        let delay = e
            .details
            .iter()
            .filter(|d| detail_type(d, "google.rpc.RetryInfo"))
            .find_map(|d| d.get("retryDelay").and_then(Value::as_str))
            .and_then(parse_proto_duration);
        return EngineError::RateLimited {
            retry_after: delay.or_else(|| upstream::retry_after(headers)),
            message,
        };
    }
    upstream::classify(status, headers, message, secret)
}
