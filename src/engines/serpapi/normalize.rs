//! From SerpApi's JSON to cloro's result shapes (reference `cloro-api.md` §5.6–§5.8), as pure
//! functions, plus the reading of a reply into an answer or an [`EngineError`].
//!
//! SerpApi's fields (serpapi.com: search-api "organic results", "related questions", "related
//! searches", "AI Overview", google-ai-overview-api, google-ai-mode-api, news results,
//! api-status-and-error-codes, search-errors) are read from `serde_json::Value` tolerantly: a
//! missing array is an empty one, an unknown block type is rendered from its `snippet` when it
//! has one and skipped otherwise. cloro fields SerpApi has no equivalent for in this mapping
//! stay empty (AI Mode's `ads`, `places`, `shoppingCards`, `inlineProducts`, `videos`, `map`) or absent
//! (`productResults`, `peopleAreSaying`, `localResults`, `knowledgeGraph`). `html` (one link
//! per page fetched) is added by the engine (`SerpApiEngine::run`): the pages cloro renders
//! and serves itself (`crate::pages`), never SerpApi's own `raw_html_file`.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::super::EngineError;
use super::super::upstream::{self, Reply};

/// SerpApi's wording for a search Google answered with nothing: a valid empty result.
const NO_RESULTS: &str = "hasn't returned any results";
/// SerpApi's 429 for an exhausted plan ("Your account has run out of searches."), as opposed
/// to the hourly throughput limit: only a new plan or month fixes it.
const OUT_OF_SEARCHES: &str = "run out of searches";

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The reply as an answer, or the error it means. `secret` never survives in a message.
pub(crate) fn read_reply(reply: Reply, secret: &str) -> Result<Value, EngineError> {
    let parsed: Option<Value> = serde_json::from_slice(&reply.body).ok();
    let error_text = parsed
        .as_ref()
        .and_then(|v| s(v, "error"))
        .map(str::to_owned);
    if !reply.status.is_success() {
        let message = error_text.unwrap_or_else(|| format!("HTTP {}", reply.status));
        if reply.status.as_u16() == 429 && message.to_lowercase().contains(OUT_OF_SEARCHES) {
            return Err(EngineError::Unauthorized {
                message: upstream::redact(&message, secret),
            });
        }
        return Err(upstream::classify(
            reply.status,
            &reply.headers,
            message,
            secret,
        ));
    }
    let Some(v) = parsed.filter(Value::is_object) else {
        return Err(EngineError::Retryable(
            "the upstream's answer is not a JSON object".into(),
        ));
    };
    let status = v
        .get("search_metadata")
        .and_then(|m| s(m, "status"))
        .unwrap_or("Success");
    if let Some(err) = error_text {
        if err.contains(NO_RESULTS) && status != "Error" {
            return Ok(v);
        }
        return Err(EngineError::Retryable(upstream::redact(
            &format!("the search failed upstream: {err}"),
            secret,
        )));
    }
    match status {
        "Error" => Err(EngineError::Retryable(
            "the search failed upstream (search_metadata.status = Error)".into(),
        )),
        "Processing" | "Queued" => Err(EngineError::Retryable(format!(
            "the search is not finished upstream (search_metadata.status = {status})"
        ))),
        _ => Ok(v),
    }
}

/// The host of `url` without `www.` (a citation pill's `domain`).
fn domain(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| h.trim_start_matches("www.").to_owned())
        })
        .unwrap_or_default()
}

/// Text blocks rendered with their references as cloro sources.
#[derive(Debug, Default)]
pub(crate) struct Rendered {
    pub(crate) text: String,
    pub(crate) markdown: String,
    /// cloro `sources[]`: every reference with a link, deduplicated by URL, in SerpApi's order.
    pub(crate) sources: Vec<Value>,
    /// Source positions (1-based) in the order the text first cites them.
    pub(crate) cited: Vec<usize>,
}

struct Renderer<'a> {
    /// SerpApi reference `index` → cloro source position.
    position_of: HashMap<i64, usize>,
    urls: Vec<&'a str>,
    text: Vec<String>,
    markdown: Vec<String>,
    cited: Vec<usize>,
}

impl Renderer<'_> {
    /// ` [n](url)` for each reference the block cites, in its order.
    fn cites(&mut self, block: &Value) -> String {
        let mut out = String::new();
        for i in arr(block, "reference_indexes")
            .iter()
            .filter_map(Value::as_i64)
        {
            if let Some(&pos) = self.position_of.get(&i) {
                if !self.cited.contains(&pos) {
                    self.cited.push(pos);
                }
                out.push_str(&format!(" [{pos}]({})", self.urls[pos - 1]));
            }
        }
        out
    }

    fn block(&mut self, block: &Value, depth: usize) {
        let kind = s(block, "type").unwrap_or("paragraph");
        let snippet = s(block, "snippet");
        match kind {
            "heading" => {
                if let Some(t) = snippet {
                    self.text.push(t.to_owned());
                    self.markdown.push(format!("### {t}"));
                }
            }
            "list" => {
                if let Some(t) = snippet {
                    let c = self.cites(block);
                    self.text.push(t.to_owned());
                    self.markdown.push(format!("{t}{c}"));
                }
                let mut md = Vec::new();
                for item in arr(block, "list") {
                    let line = [s(item, "title"), s(item, "snippet")]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>();
                    if !line.is_empty() {
                        let c = self.cites(item);
                        self.text.push(line.join(" "));
                        let md_line = match (s(item, "title"), s(item, "snippet")) {
                            (Some(t), Some(sn)) => format!("**{t}** {sn}"),
                            _ => line.join(" "),
                        };
                        md.push(format!("{}- {md_line}{c}", "  ".repeat(depth)));
                    }
                    // Nested lists (SerpApi nests `list` inside list items).
                    if !arr(item, "list").is_empty() && depth < 4 {
                        let before = self.markdown.len();
                        self.block(&json!({"type": "list", "list": item["list"]}), depth + 1);
                        md.extend(self.markdown.drain(before..));
                    }
                }
                if !md.is_empty() {
                    self.markdown.push(md.join("\n"));
                }
            }
            "table" => {
                let rows: Vec<Vec<String>> = arr(block, "table")
                    .iter()
                    .map(|r| {
                        r.as_array()
                            .map(|cells| {
                                cells
                                    .iter()
                                    .map(|c| c.as_str().unwrap_or("").trim().to_owned())
                                    .collect()
                            })
                            .unwrap_or_default()
                    })
                    .filter(|r: &Vec<String>| !r.is_empty())
                    .collect();
                if let Some(head) = rows.first() {
                    let mut md = vec![
                        format!("| {} |", head.join(" | ")),
                        format!("|{}", " --- |".repeat(head.len())),
                    ];
                    for r in &rows[1..] {
                        md.push(format!("| {} |", r.join(" | ")));
                    }
                    self.text.extend(rows.iter().map(|r| r.join(" | ")));
                    self.markdown.push(md.join("\n"));
                }
            }
            _ => {
                if let Some(t) = snippet {
                    let c = self.cites(block);
                    self.text.push(t.to_owned());
                    self.markdown.push(format!("{t}{c}"));
                }
                // An expandable block carries its own text blocks.
                if depth < 4 {
                    for inner in arr(block, "text_blocks") {
                        self.block(inner, depth + 1);
                    }
                }
            }
        }
    }
}

/// Renders `text_blocks` (paragraph, heading, list, table, expandable…) with `references`
/// (`{title, link, snippet, source, index}`) into text, markdown (citations as `[n](url)`
/// links after the sentence that cites them) and cloro sources.
pub(crate) fn render(blocks: &[Value], references: &[Value]) -> Rendered {
    let mut sources = Vec::new();
    let mut urls: Vec<&str> = Vec::new();
    let mut position_of = HashMap::new();
    for (i, r) in references.iter().enumerate() {
        let Some(link) = s(r, "link") else { continue };
        let index = r.get("index").and_then(Value::as_i64).unwrap_or(i as i64);
        let pos = match urls.iter().position(|u| *u == link) {
            Some(p) => p + 1,
            None => {
                urls.push(link);
                let label = s(r, "title")
                    .or_else(|| s(r, "source"))
                    .map_or_else(|| domain(link), str::to_owned);
                sources.push(json!({
                    "position": urls.len(),
                    "url": link,
                    "label": label,
                    "description": s(r, "snippet").unwrap_or(""),
                }));
                urls.len()
            }
        };
        position_of.insert(index, pos);
    }
    let mut r = Renderer {
        position_of,
        urls,
        text: Vec::new(),
        markdown: Vec::new(),
        cited: Vec::new(),
    };
    for b in blocks {
        r.block(b, 0);
    }
    Rendered {
        text: r.text.join("\n"),
        markdown: r.markdown.join("\n\n"),
        sources,
        cited: r.cited,
    }
}

/// Citation pills (§5.6): one per cited source, in the order the text first cites them.
fn pills(rendered: &Rendered) -> Value {
    Value::Array(
        rendered
            .cited
            .iter()
            .enumerate()
            .filter_map(|(i, &pos)| {
                let src = rendered.sources.get(pos - 1)?;
                let url = src["url"].as_str().unwrap_or("");
                Some(json!({
                    "label": src["label"],
                    "citationPillId": i + 1,
                    "url": url,
                    "domain": domain(url),
                    "position": pos,
                }))
            })
            .collect(),
    )
}

/// What the include flags change in a result.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Flags {
    pub(crate) markdown: bool,
    pub(crate) aioverview: bool,
    pub(crate) aioverview_markdown: bool,
    pub(crate) paa_aioverview: bool,
}

/// Google AI Mode (§5.6) from one `engine=google_ai_mode` answer.
pub(crate) fn aimode(v: &Value, flags: Flags) -> Map<String, Value> {
    let rendered = render(arr(v, "text_blocks"), arr(v, "references"));
    let mut m = Map::new();
    m.insert("text".into(), Value::String(rendered.text.clone()));
    m.insert("citationPills".into(), pills(&rendered));
    if flags.markdown {
        m.insert("markdown".into(), Value::String(rendered.markdown.clone()));
    }
    m.insert("sources".into(), Value::Array(rendered.sources));
    for key in ["places", "shoppingCards"] {
        m.insert(key.into(), Value::Array(Vec::new()));
    }
    m.insert("ads".into(), json!({"title": "", "ads": []}));
    for key in ["inlineProducts", "videos", "map"] {
        m.insert(key.into(), Value::Array(Vec::new()));
    }
    m
}

/// cloro's `sitelinks{inline[{title,link}]}` from SerpApi's `sitelinks.inline[]` and
/// `sitelinks.expanded[]`.
fn sitelinks(o: &Value) -> Option<Value> {
    let sl = o.get("sitelinks")?;
    let inline: Vec<Value> = arr(sl, "inline")
        .iter()
        .chain(arr(sl, "expanded"))
        .filter_map(|l| {
            let link = s(l, "link")?;
            Some(json!({"title": s(l, "title").unwrap_or(""), "link": link}))
        })
        .collect();
    (!inline.is_empty()).then(|| json!({ "inline": inline }))
}

/// Google Search (§5.7) from the answers of pages 1..n (`start` = 0, 10, …) and, when the
/// first page only had an AI Overview `page_token`, the `google_ai_overview` follow-up.
pub(crate) fn google(
    pages: &[Value],
    ai_overview: Option<&Value>,
    flags: Flags,
) -> Map<String, Value> {
    let mut m = Map::new();
    let mut organic = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        for o in arr(page, "organic_results") {
            let Some(link) = s(o, "link") else { continue };
            let mut r = Map::new();
            r.insert("position".into(), json!(organic.len() + 1));
            r.insert("title".into(), json!(s(o, "title").unwrap_or("")));
            r.insert("link".into(), json!(link));
            r.insert(
                "displayedLink".into(),
                json!(s(o, "displayed_link").unwrap_or("")),
            );
            r.insert("snippet".into(), json!(s(o, "snippet").unwrap_or("")));
            if let Some(d) = s(o, "date") {
                r.insert("date".into(), json!(d));
            }
            r.insert("page".into(), json!(i + 1));
            if let Some(sl) = sitelinks(o) {
                r.insert("sitelinks".into(), sl);
            }
            if let Some(rl) = s(o, "redirect_link") {
                r.insert("redirectLink".into(), json!(rl));
            }
            organic.push(Value::Object(r));
        }
    }
    m.insert("organicResults".into(), Value::Array(organic));

    let first = pages.first().unwrap_or(&Value::Null);
    let paa: Vec<Value> = arr(first, "related_questions")
        .iter()
        .filter_map(|q| {
            let question = s(q, "question")?;
            let blocks = arr(q, "text_blocks");
            if let Some(link) = s(q, "link") {
                let mut o = json!({"question": question, "type": "LINK",
                                   "snippet": s(q, "snippet").unwrap_or(""),
                                   "title": s(q, "title").unwrap_or(""), "link": link});
                if let Some(rl) = s(q, "redirect_link") {
                    o["redirectLink"] = json!(rl);
                }
                Some(o)
            } else if !blocks.is_empty() {
                let r = render(blocks, arr(q, "references"));
                if flags.paa_aioverview {
                    Some(json!({"question": question, "type": "AIOVERVIEW",
                                "snippet": r.text, "markdown": r.markdown,
                                "sources": r.sources}))
                } else {
                    Some(json!({"question": question, "type": "UNKNOWN", "snippet": r.text}))
                }
            } else {
                Some(json!({"question": question, "type": "UNKNOWN",
                            "snippet": s(q, "snippet").unwrap_or("")}))
            }
        })
        .collect();
    m.insert("peopleAlsoAsk".into(), Value::Array(paa));

    let related: Vec<Value> = arr(first, "related_searches")
        .iter()
        .filter_map(|r| {
            let q = s(r, "query")?;
            Some(json!({"query": q, "link": s(r, "link").unwrap_or("")}))
        })
        .collect();
    m.insert("relatedSearches".into(), Value::Array(related));
    m.insert("ads".into(), Value::Array(ads(pages)));

    if flags.aioverview {
        // The follow-up answers `{ai_overview: {text_blocks, references}}`; accept the blocks
        // at the top level too.
        let aio = ai_overview
            .map(|f| f.get("ai_overview").unwrap_or(f))
            .or_else(|| first.get("ai_overview"));
        if let Some(aio) = aio.filter(|a| !arr(a, "text_blocks").is_empty()) {
            let r = render(arr(aio, "text_blocks"), arr(aio, "references"));
            let mut o = Map::new();
            o.insert("text".into(), Value::String(r.text));
            if flags.aioverview_markdown {
                o.insert("markdown".into(), Value::String(r.markdown));
            }
            o.insert("sources".into(), Value::Array(r.sources));
            o.insert("videos".into(), Value::Array(Vec::new()));
            o.insert("ads".into(), Value::Array(Vec::new()));
            m.insert("aioverview".into(), Value::Object(o));
        }
    }
    m
}

/// cloro's text ads (`type: RESULT`) from SerpApi's `ads[]` of every page
/// (serpapi.com/google-ads-organic-results: `position`, `block_position` top|bottom|middle|right,
/// `title`, `link`, `displayed_link`, `description`, `sitelinks`). Shopping ads are SerpApi's
/// separate `shopping_results`, not mapped: no `SHOPPING_CARD` entries.
fn ads(pages: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        for a in arr(page, "ads") {
            let Some(link) = s(a, "link") else { continue };
            let block = match s(a, "block_position") {
                Some("right") => "rhs",
                Some(b @ ("top" | "bottom" | "middle")) => b,
                _ => "top",
            };
            // Sitelinks come as a list, or as `{inline, expanded}` like organic results'.
            let sl = a.get("sitelinks");
            let links: Vec<&Value> = match sl {
                Some(Value::Array(l)) => l.iter().collect(),
                Some(o @ Value::Object(_)) => {
                    arr(o, "inline").iter().chain(arr(o, "expanded")).collect()
                }
                _ => Vec::new(),
            };
            let sitelinks: Vec<Value> = links
                .into_iter()
                .filter_map(|l| {
                    Some(json!({"url": s(l, "link")?, "title": s(l, "title").unwrap_or(""),
                                "description": s(l, "snippet").or_else(|| s(l, "description")).unwrap_or("")}))
                })
                .collect();
            out.push(json!({
                "position": a.get("position").and_then(Value::as_u64).unwrap_or(out.len() as u64 + 1),
                "blockPosition": block,
                "type": "RESULT",
                "title": s(a, "title").unwrap_or(""),
                "url": link,
                "page": i + 1,
                "displayedUrl": s(a, "displayed_link").unwrap_or(""),
                "domain": domain(link),
                "description": s(a, "description").unwrap_or(""),
                "sitelinks": sitelinks,
            }));
        }
    }
    out
}

/// The AI Overview `page_token` of a first page whose overview was not inlined.
pub(crate) fn ai_overview_token(first: &Value) -> Option<&str> {
    let aio = first.get("ai_overview")?;
    if !arr(aio, "text_blocks").is_empty() {
        return None;
    }
    s(aio, "page_token")
}

/// Google News (§5.8) from the `tbm=nws` answers of pages 1..n.
pub(crate) fn news(pages: &[Value]) -> Map<String, Value> {
    let mut out = Vec::new();
    for (i, page) in pages.iter().enumerate() {
        for n in arr(page, "news_results") {
            let Some(link) = s(n, "link") else { continue };
            // `tbm=nws` gives the source as a name; `engine=google_news` as `{name, icon}`.
            let source = s(n, "source")
                .or_else(|| n.get("source").and_then(|o| s(o, "name")))
                .unwrap_or("");
            let mut r = Map::new();
            r.insert("position".into(), json!(out.len() + 1));
            r.insert("title".into(), json!(s(n, "title").unwrap_or("")));
            r.insert("link".into(), json!(link));
            r.insert("snippet".into(), json!(s(n, "snippet").unwrap_or("")));
            r.insert("source".into(), json!(source));
            r.insert("date".into(), json!(s(n, "date").unwrap_or("")));
            r.insert("page".into(), json!(i + 1));
            if let Some(t) = s(n, "thumbnail") {
                r.insert("thumbnail".into(), json!(t));
            }
            out.push(Value::Object(r));
        }
    }
    let mut m = Map::new();
    m.insert("newsResults".into(), Value::Array(out));
    m
}

/// `v` with every string scrubbed of `secret` (SerpApi echoes its request in
/// `search_parameters`; nothing of it should reach a result, but a result is checked anyway).
pub(crate) fn scrub(v: &mut Value, secret: &str) {
    if secret.is_empty() {
        return;
    }
    match v {
        Value::String(t) if t.contains(secret) => *t = upstream::redact(t, secret),
        Value::Array(a) => a.iter_mut().for_each(|x| scrub(x, secret)),
        Value::Object(o) => o.values_mut().for_each(|x| scrub(x, secret)),
        _ => {}
    }
}
