//! A stored result as a self-contained HTML5 document: no scripts, no external assets (one
//! inline style sheet, allowed by the page's `Content-Security-Policy`), nothing fetched.
//!
//! Results carry upstream text (answers, titles, snippets, URLs), so every string is treated as
//! hostile: it goes through [`escape`] in text and in attributes alike, and a link becomes an
//! `<a href>` only when it is an absolute `http`/`https` URL (anything else, `javascript:`
//! included, is shown as text). Links open with `rel="noopener noreferrer nofollow"`.
//!
//! Chat types (and AI Mode) render the answer text with its sources as links; GOOGLE and
//! GOOGLE_NEWS render the organic or news results of the requested page (page 1 of GOOGLE also
//! its AI Overview, "People also ask" and related searches). Lists are capped
//! ([`MAX_ITEMS`]) so a page never grows with anything but the stored result's own size.

use std::fmt::Write as _;

use serde_json::Value;
use uuid::Uuid;

use crate::domain::types::TaskType;

/// Most items of one list rendered on a page.
pub(crate) const MAX_ITEMS: usize = 500;

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;\
padding:0 1rem;color:#1b1b1b;background:#fff}header{border-bottom:1px solid #ddd;\
margin-bottom:1rem}.meta{color:#666;font-size:.875rem}.answer{white-space:pre-wrap}\
.note{background:#fff6d6;padding:.25rem .5rem;border-radius:4px}ol{padding-left:1.5rem}\
li{margin:.5rem 0}.snippet{color:#444}.url{color:#0b6b2b;font-size:.875rem;\
word-break:break-all}footer{border-top:1px solid #ddd;margin-top:2rem;color:#666;\
font-size:.8rem}";

/// `s` with `& < > " '` replaced by entities, and NUL and other C0 controls but tab, LF and
/// CR dropped: safe in text and in quoted attributes.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// The href of `url` when it is an absolute http(s) URL, escaped for an attribute.
fn safe_href(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url.trim()).ok()?;
    matches!(parsed.scheme(), "http" | "https").then(|| escape(parsed.as_str()))
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .take(MAX_ITEMS)
}

/// `<a href=…>label</a>` for a safe URL, else the label and the URL as text.
fn link(out: &mut String, url: &str, label: &str) {
    let label = if label.trim().is_empty() { url } else { label };
    match safe_href(url) {
        Some(href) => {
            let _ = write!(
                out,
                "<a href=\"{href}\" rel=\"noopener noreferrer nofollow\">{}</a>",
                escape(label)
            );
        }
        None => out.push_str(&escape(label)),
    }
}

/// The page `page` of a task's stored `result`, or `None` when the result has no such page.
pub(crate) fn render(
    task_type: TaskType,
    task: Uuid,
    result: &Value,
    page: usize,
) -> Option<String> {
    let mut body = String::new();
    let heading = match task_type {
        TaskType::Google => {
            google(&mut body, result, page)?;
            format!("Google results, page {page}")
        }
        TaskType::GoogleNews => {
            news(&mut body, result, page)?;
            format!("Google News results, page {page}")
        }
        _ => {
            if page != 1 {
                return None;
            }
            answer(&mut body, result);
            format!("{} answer", task_type.as_str())
        }
    };
    let mut out = String::with_capacity(body.len() + 2048);
    out.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    out.push_str("<meta name=\"referrer\" content=\"no-referrer\">\n");
    out.push_str("<meta name=\"robots\" content=\"noindex, nofollow\">\n");
    let _ = write!(
        out,
        "<title>{}</title>\n<style>{STYLE}</style>\n",
        escape(&heading)
    );
    out.push_str("</head>\n<body>\n<header>\n");
    let _ = writeln!(out, "<h1>{}</h1>", escape(&heading));
    let mut meta = format!("Task {task}");
    if let Some(model) = result.get("model").and_then(Value::as_str)
        && !model.is_empty()
    {
        let _ = write!(meta, " · model {model}");
    }
    let _ = writeln!(out, "<p class=\"meta\">{}</p>", escape(&meta));
    if result.get("simulated") == Some(&Value::Bool(true)) {
        out.push_str(
            "<p class=\"note\">Simulated result: made up by cloro's simulator, not a real answer.</p>\n",
        );
    }
    out.push_str("</header>\n<main>\n");
    out.push_str(&body);
    out.push_str("</main>\n<footer>Rendered by cloro from the stored result; this link expires with the task.</footer>\n</body>\n</html>\n");
    Some(out)
}

/// A chat answer (and AI Mode's): the text, then its sources.
fn answer(out: &mut String, r: &Value) {
    let _ = writeln!(
        out,
        "<div class=\"answer\">{}</div>",
        escape(str_of(r, "text"))
    );
    sources(out, r, "Sources");
}

fn sources(out: &mut String, r: &Value, title: &str) {
    let mut items = list(r, "sources").peekable();
    if items.peek().is_none() {
        return;
    }
    let _ = writeln!(out, "<h2>{}</h2>\n<ol>", escape(title));
    for s in items {
        out.push_str("<li>");
        link(out, str_of(s, "url"), str_of(s, "label"));
        let d = str_of(s, "description");
        if !d.is_empty() {
            let _ = write!(out, "<div class=\"snippet\">{}</div>", escape(d));
        }
        out.push_str("</li>\n");
    }
    out.push_str("</ol>\n");
}

/// One search result: title as a link, the URL, date, source and snippet.
fn result_item(out: &mut String, r: &Value, extra: &str) {
    out.push_str("<li>");
    let url = str_of(r, "link");
    link(out, url, str_of(r, "title"));
    let shown = str_of(r, "displayedLink");
    let _ = write!(
        out,
        "<div class=\"url\">{}</div>",
        escape(if shown.is_empty() { url } else { shown })
    );
    let meta: Vec<&str> = [str_of(r, extra), str_of(r, "date")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    if !meta.is_empty() {
        let _ = write!(
            out,
            "<div class=\"meta\">{}</div>",
            escape(&meta.join(" · "))
        );
    }
    let snippet = str_of(r, "snippet");
    if !snippet.is_empty() {
        let _ = write!(out, "<div class=\"snippet\">{}</div>", escape(snippet));
    }
    out.push_str("</li>\n");
}

/// Whether a result item is on `page` (items without a page number are on page 1).
fn on_page(r: &Value, page: usize) -> bool {
    r.get("page").and_then(Value::as_u64).unwrap_or(1) == page as u64
}

/// The number of pages the result links to (its `html` array), at least 1.
fn linked_pages(r: &Value) -> usize {
    r.get("html")
        .and_then(Value::as_array)
        .map_or(1, Vec::len)
        .max(1)
}

fn google(out: &mut String, r: &Value, page: usize) -> Option<()> {
    if page > linked_pages(r) {
        return None;
    }
    if page == 1
        && let Some(aio) = r.get("aioverview").filter(|a| a.is_object())
    {
        out.push_str("<section>\n<h2>AI Overview</h2>\n");
        let _ = writeln!(
            out,
            "<div class=\"answer\">{}</div>",
            escape(str_of(aio, "text"))
        );
        sources(out, aio, "AI Overview sources");
        out.push_str("</section>\n");
    }
    out.push_str("<h2>Results</h2>\n<ol>\n");
    for o in list(r, "organicResults").filter(|o| on_page(o, page)) {
        result_item(out, o, "");
    }
    out.push_str("</ol>\n");
    if page == 1 {
        let mut paa = list(r, "peopleAlsoAsk").peekable();
        if paa.peek().is_some() {
            out.push_str("<h2>People also ask</h2>\n<ul>\n");
            for q in paa {
                let _ = writeln!(out, "<li>{}</li>", escape(str_of(q, "question")));
            }
            out.push_str("</ul>\n");
        }
        let mut related = list(r, "relatedSearches").peekable();
        if related.peek().is_some() {
            out.push_str("<h2>Related searches</h2>\n<ul>\n");
            for q in related {
                out.push_str("<li>");
                link(out, str_of(q, "link"), str_of(q, "query"));
                out.push_str("</li>\n");
            }
            out.push_str("</ul>\n");
        }
    }
    Some(())
}

fn news(out: &mut String, r: &Value, page: usize) -> Option<()> {
    if page > linked_pages(r) {
        return None;
    }
    out.push_str("<h2>News</h2>\n<ol>\n");
    for n in list(r, "newsResults").filter(|n| on_page(n, page)) {
        result_item(out, n, "source");
    }
    out.push_str("</ol>\n");
    Some(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const HOSTILE: &str = "<script>alert('x')</script>\"><img src=x onerror=alert(1)>&amp;\u{0}";

    fn assert_no_raw_markup(html: &str) {
        for bad in ["<script", "<img", "onerror=alert(1)>", "\u{0}"] {
            assert!(!html.contains(bad), "{bad} came out raw in:\n{html}");
        }
    }

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("é 🦀\n\u{7}"), "é 🦀\n");
    }

    #[test]
    fn hostile_chat_results_never_come_out_raw() {
        let r = json!({
            "text": HOSTILE,
            "model": HOSTILE,
            "sources": [
                {"position": 1, "url": "javascript:alert(1)", "label": HOSTILE, "description": HOSTILE},
                {"position": 2, "url": "https://example.com/?q=\"><script>", "label": "ok", "description": ""},
                {"position": 3, "url": HOSTILE, "label": "", "description": ""},
            ],
        });
        let html = render(TaskType::Chatgpt, Uuid::nil(), &r, 1).expect("page 1");
        assert_no_raw_markup(&html);
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(!html.contains("href=\"javascript:"));
        assert!(html.contains("<a href=\"https://example.com/?q=%22%3E%3Cscript%3E\""));
        assert!(html.starts_with("<!doctype html>"));
        assert!(!html.contains("<script"));
        assert!(render(TaskType::Chatgpt, Uuid::nil(), &r, 2).is_none());
    }

    #[test]
    fn hostile_google_and_news_results_never_come_out_raw() {
        let organic = |page| {
            json!({"position": 1, "title": HOSTILE, "link": "https://example.org/a",
                   "displayedLink": HOSTILE, "snippet": HOSTILE, "date": HOSTILE, "page": page})
        };
        let g = json!({
            "organicResults": [organic(1), organic(2)],
            "peopleAlsoAsk": [{"question": HOSTILE, "type": "UNKNOWN"}],
            "relatedSearches": [{"query": HOSTILE, "link": "data:text/html,<script>"}],
            "aioverview": {"text": HOSTILE, "sources": [{"url": "https://e.example", "label": HOSTILE}]},
            "html": ["a", "b"],
        });
        for page in [1, 2] {
            let html = render(TaskType::Google, Uuid::nil(), &g, page).expect("page");
            assert_no_raw_markup(&html);
            assert_eq!(html.matches("https://example.org/a\"").count(), 1, "{html}");
        }
        assert!(render(TaskType::Google, Uuid::nil(), &g, 3).is_none());
        let n = json!({"newsResults": [{"position": 1, "title": HOSTILE, "link": HOSTILE,
                       "source": HOSTILE, "date": "", "page": 1}], "html": ["a"]});
        let html = render(TaskType::GoogleNews, Uuid::nil(), &n, 1).expect("page");
        assert_no_raw_markup(&html);
        assert!(!html.contains("<a "));
    }
}
