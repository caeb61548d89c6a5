//! The deterministic `simulated` engine (SPEC §5): results with the same shape as the real
//! engines' `result` objects (reference `cloro-api.md` §5.1–§5.8), derived only from the task
//! payload.
//!
//! Everything is derived from a hand-written 64-bit FNV-1a hash of the prompt/query and the
//! other payload fields, expanded with a local splitmix64 stream: no clocks, no randomness, no
//! global state, so the same payload always gives byte-identical JSON. Every result says it is
//! simulated: a top-level `"simulated": true`, `"model": "simulated"` where the shape has a
//! model field, and a text starting with `[simulated] `. Generated links only use the reserved
//! `example.com` / `example.org` / `example.net` domains (plus Google search links and the
//! `cdn.cloro.dev` result-page URLs).

use serde_json::{Map, Value, json};

use crate::domain::types::TaskType;

/// A simulated result: the object served as the task's `result`, and extra credits to bill
/// (AI Mode `expandProducts`: one per product cluster returned).
#[derive(Debug, Clone, PartialEq)]
pub struct SimOutput {
    pub result: Value,
    pub extra_credits: u32,
}

/// A deterministic result with the same shape as the real engine's `result` object for
/// `task_type`, derived only from the (already validated and normalised) payload. Every result
/// says it is simulated. Never panics: missing or odd fields fall back to defaults.
pub fn simulate(task_type: TaskType, payload: &Value) -> SimOutput {
    let mut ctx = Ctx::new(task_type, payload);
    let mut extra_credits = 0;
    let result = match task_type {
        TaskType::Chatgpt => chatgpt(&mut ctx),
        TaskType::Gemini => gemini(&mut ctx),
        TaskType::Grok => grok(&mut ctx),
        TaskType::Copilot => copilot(&mut ctx),
        TaskType::Perplexity => perplexity(&mut ctx),
        TaskType::Aimode => aimode(&mut ctx, &mut extra_credits),
        TaskType::Google => google(&mut ctx),
        TaskType::GoogleNews => google_news(&mut ctx),
    };
    SimOutput {
        result: Value::Object(result),
        extra_credits,
    }
}

/// Deterministic pseudo-random decision in [0,1) for failure injection: the same
/// `(seed_text, attempt)` always gives the same value.
pub fn unit_interval(seed_text: &str, attempt: u32) -> f64 {
    let h = fnv1a(FNV_OFFSET, seed_text.as_bytes());
    let h = fnv1a(h, &attempt.to_le_bytes());
    to_unit(mix(h))
}

// ------------------------------------------------------------------------------------------
// Hashing and the deterministic stream

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// splitmix64 finaliser: spreads FNV's weak high bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Top 53 bits as a float in [0,1).
fn to_unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A local splitmix64 stream seeded from the payload hash.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    /// Uniform-ish in `0..n` (0 when n is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    /// Uniform-ish in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
    fn pick(&mut self, xs: &[&'static str]) -> &'static str {
        let i = self.below(xs.len());
        xs.get(i).copied().unwrap_or("")
    }
    /// A rating like 4.3 (one decimal, in `lo/10 ..= hi/10`).
    fn rating(&mut self, lo: usize, hi: usize) -> f64 {
        self.range(lo, hi) as f64 / 10.0
    }
}

// ------------------------------------------------------------------------------------------
// Vocabulary (fictional brands, reserved example domains)

const BRANDS: [&str; 12] = [
    "Acme",
    "Northwind",
    "Contoso",
    "Fabrikam",
    "Globex",
    "Initech",
    "Tailspin",
    "Litware",
    "Lumen",
    "Zephyr",
    "Orbitly",
    "Brightleaf",
];
const QUALITIES: [&str; 8] = [
    "value for money",
    "reliability",
    "ease of use",
    "customer support",
    "build quality",
    "its feature set",
    "performance",
    "long-term durability",
];
const HOSTS: [(&str, &str); 10] = [
    ("www.example.com", "Example"),
    ("example.org", "Example.org"),
    ("example.net", "Example.net"),
    ("reviews.example.com", "Example Reviews"),
    ("news.example.org", "Example News"),
    ("guide.example.net", "Example Guide"),
    ("blog.example.com", "Example Blog"),
    ("wiki.example.org", "Example Wiki"),
    ("forum.example.net", "Example Forum"),
    ("shop.example.com", "Example Shop"),
];
const INTROS: [&str; 4] = [
    "Here is an overview for",
    "Short answer for",
    "A quick summary on",
    "What the sources say about",
];
const SUFFIXES: [&str; 6] = [
    "alternatives",
    "pros and cons",
    "prices",
    "reviews",
    "for beginners",
    "comparison",
];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

// ------------------------------------------------------------------------------------------
// Payload access

fn get_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// `include.<key>` is truthy: boolean `true` or an object (Google `aioverview: {markdown}`).
fn include(payload: &Value, key: &str) -> bool {
    matches!(
        payload.get("include").and_then(|i| i.get(key)),
        Some(Value::Bool(true)) | Some(Value::Object(_))
    )
}

/// Keep ASCII letters, digits and `-`, at most `max` of them (safe inside URLs).
fn clean_code(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(max)
        .collect()
}

/// Whitespace collapsed, control characters dropped, at most `max` chars: cut at a word
/// boundary where possible, then `…`.
fn collapse(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 4 + 4));
    let mut n = 0;
    for word in text.split_whitespace() {
        let len = word.chars().filter(|c| !c.is_control()).count();
        if len == 0 {
            continue;
        }
        let sep = usize::from(n > 0);
        if n + sep + len > max {
            if n == 0 {
                // A single over-long word: cut it.
                out.extend(word.chars().filter(|c| !c.is_control()).take(max));
            }
            out.push('…');
            return out;
        }
        if sep == 1 {
            out.push(' ');
        }
        out.extend(word.chars().filter(|c| !c.is_control()));
        n += sep + len;
    }
    out
}

/// Lowercase ASCII slug of the first words (whole words, at most 32 chars; a first word longer
/// than that is cut); `topic` when nothing is left.
fn slugify(text: &str) -> String {
    const MAX: usize = 32;
    let mut out = String::with_capacity(MAX);
    for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let sep = usize::from(!out.is_empty());
        if out.len() + sep + word.len() > MAX {
            if out.is_empty() {
                out.extend(word.chars().take(MAX).map(|c| c.to_ascii_lowercase()));
            }
            break;
        }
        if sep == 1 {
            out.push('-');
        }
        out.extend(word.chars().map(|c| c.to_ascii_lowercase()));
    }
    if out.is_empty() {
        out.push_str("topic");
    }
    out
}

/// Query-string encoding: unreserved kept, space as `+`, everything else `%XX` per byte.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 15)]));
            }
        }
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (
                b.get(i + 1).copied().and_then(hex_val),
                b.get(i + 2).copied().and_then(hex_val),
            ) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            },
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The honoured parameters of a Google search `url` payload.
#[derive(Default)]
struct UrlParams {
    q: Option<String>,
    gl: Option<String>,
    hl: Option<String>,
    num: Option<u64>,
}

fn parse_google_url(url: &str) -> UrlParams {
    let mut p = UrlParams::default();
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    let query = query.split('#').next().unwrap_or("");
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = url_decode(v);
        if v.trim().is_empty() {
            continue;
        }
        match k {
            "q" => p.q = Some(v),
            "gl" => p.gl = Some(v),
            "hl" => p.hl = Some(v),
            "num" => p.num = v.trim().parse().ok(),
            _ => {}
        }
    }
    p
}

// ------------------------------------------------------------------------------------------
// Per-task context

struct Ctx<'a> {
    payload: &'a Value,
    /// Prompt mention for answer texts (≤ 120 chars).
    short: String,
    /// Topic for titles, labels and queries (≤ 40 chars).
    topic: String,
    slug: String,
    /// Uppercase country code.
    country: String,
    /// Lowercase country code used in generated links.
    gl: String,
    hl: String,
    pages: usize,
    seed: u64,
    rng: Rng,
}

impl<'a> Ctx<'a> {
    fn new(task_type: TaskType, payload: &'a Value) -> Ctx<'a> {
        let url = get_str(payload, "url")
            .map(parse_google_url)
            .unwrap_or_default();
        let text: &str = get_str(payload, "prompt")
            .or_else(|| get_str(payload, "query"))
            .or(url.q.as_deref().map(str::trim))
            .unwrap_or("");
        let country_raw = get_str(payload, "country")
            .or_else(|| get_str(payload, "gl"))
            .or(url.gl.as_deref())
            .unwrap_or("US");
        let mut country = clean_code(country_raw, 8).to_ascii_uppercase();
        if country.is_empty() {
            country.push_str("US");
        }
        let gl = get_str(payload, "gl")
            .map(|g| clean_code(g, 8).to_ascii_lowercase())
            .filter(|g| !g.is_empty())
            .unwrap_or_else(|| country.to_ascii_lowercase());
        let mut hl = get_str(payload, "hl")
            .or(url.hl.as_deref())
            .map(|h| clean_code(h, 12).to_ascii_lowercase())
            .unwrap_or_default();
        if hl.is_empty() {
            hl.push_str("en");
        }
        let pages = match payload.get("pages").and_then(Value::as_f64) {
            Some(p) if p.is_finite() => p.clamp(1.0, 10.0) as usize,
            _ => url.num.map_or(1, |n| n.div_ceil(10).clamp(1, 10) as usize),
        };

        let mut h = fnv1a(FNV_OFFSET, task_type.as_str().as_bytes());
        for part in [
            text,
            country.as_str(),
            gl.as_str(),
            hl.as_str(),
            get_str(payload, "state").unwrap_or(""),
            get_str(payload, "device").unwrap_or(""),
            get_str(payload, "location").unwrap_or(""),
            get_str(payload, "uule").unwrap_or(""),
        ] {
            h = fnv1a(h, &[0xff]);
            h = fnv1a(h, part.as_bytes());
        }
        h = fnv1a(h, &(pages as u64).to_le_bytes());
        let seed = mix(h);

        let mut short = collapse(text, 120);
        if short.is_empty() {
            short.push_str("your question");
        }
        let mut topic = collapse(text, 40);
        if topic.is_empty() {
            topic.push_str("this topic");
        }
        Ctx {
            payload,
            short,
            topic,
            slug: slugify(text),
            country,
            gl,
            hl,
            pages,
            seed,
            rng: Rng(seed),
        }
    }

    fn inc(&self, key: &str) -> bool {
        include(self.payload, key)
    }

    /// UUID-shaped hex derived from the seed (stable per payload).
    fn uuid_like(&self, salt: u64) -> String {
        let a = mix(self.seed ^ salt);
        let b = mix(a ^ 0x5bd1_e995);
        format!(
            "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            8 + ((b >> 62) & 3),
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }

    fn html_url(&self, page: usize) -> String {
        format!(
            "https://cdn.cloro.dev/results/{}/page-{page}.html",
            self.uuid_like(0x68746d6c)
        )
    }

    /// Google-family `html`: one URL per page.
    fn html_pages(&self) -> Value {
        Value::Array(
            (1..=self.pages)
                .map(|p| Value::String(self.html_url(p)))
                .collect(),
        )
    }

    fn google_link(&self, q: &str) -> String {
        format!(
            "https://www.google.com/search?q={}&gl={}&hl={}",
            url_encode(q),
            self.gl,
            self.hl
        )
    }

    /// Three distinct brands and qualities for the answer.
    fn answer(&mut self) -> Answer {
        let b0 = self.rng.below(BRANDS.len());
        let step = [1, 5, 7, 11][self.rng.below(4)];
        let q0 = self.rng.below(QUALITIES.len());
        let brand = |i: usize| BRANDS[(b0 + i * step) % BRANDS.len()];
        let quality = |i: usize| QUALITIES[(q0 + i * 3) % QUALITIES.len()];
        Answer {
            intro: self.rng.pick(&INTROS),
            brands: [brand(0), brand(1), brand(2)],
            qualities: [quality(0), quality(1), quality(2)],
        }
    }

    fn date_iso(&mut self) -> String {
        format!(
            "2026-{:02}-{:02}T00:00:00.000Z",
            1 + self.rng.below(9),
            1 + self.rng.below(28)
        )
    }

    fn date_human(&mut self) -> String {
        format!(
            "{} {}, {}",
            self.rng.pick(&MONTHS),
            1 + self.rng.below(28),
            2024 + self.rng.below(3)
        )
    }

    /// 3–5 chat sources on distinct hosts.
    fn sources(&mut self, brands: &[&'static str; 3]) -> Vec<Src> {
        let n = self.rng.range(3, 5);
        self.sources_n(n, brands)
    }

    fn sources_n(&mut self, n: usize, brands: &[&'static str; 3]) -> Vec<Src> {
        let start = self.rng.below(HOSTS.len());
        (0..n)
            .map(|i| {
                let (host, site) = HOSTS[(start + i) % HOSTS.len()];
                let brand = brands[i % 3];
                let form = self.rng.below(3);
                let quality = self.rng.pick(&QUALITIES);
                Src {
                    host,
                    site,
                    brand,
                    url: format!(
                        "https://{host}/{}/{}-{:x}",
                        self.gl,
                        self.slug,
                        self.rng.next() & 0xfffff
                    ),
                    label: titled(form, &self.topic, site),
                    description: format!("{brand} compared on {quality}, with notes and examples."),
                }
            })
            .collect()
    }

    fn text(&self, a: &Answer, n_sources: usize) -> String {
        let [b0, b1, b2] = a.brands;
        let [q0, q1, q2] = a.qualities;
        let across = match n_sources {
            0 => "in general knowledge".to_owned(),
            n => format!("across {n} sources"),
        };
        format!(
            "[simulated] {} \"{}\": {b0}, {b1} and {b2} come up most often {across}. {b0} is usually recommended for {q0}, {b1} stands out for {q1}, and {b2} \
             is a common pick for {q2}. Compare recent reviews and local prices ({}) before \
             deciding. This answer was generated by cloro's simulated engine.",
            a.intro, self.short, self.country
        )
    }

    fn markdown(&self, a: &Answer, sources: &[Src]) -> String {
        let [b0, b1, b2] = a.brands;
        let [q0, q1, q2] = a.qualities;
        let mut md = format!(
            "[simulated] {} **\"{}\"**\n\n- **{b0}**: recommended for {q0}\n- **{b1}**: stands \
             out for {q1}\n- **{b2}**: a common pick for {q2}\n",
            a.intro, self.short
        );
        if !sources.is_empty() {
            md.push_str("\nSources:");
            for (i, s) in sources.iter().enumerate() {
                md.push_str(&format!(" [{}]({})", i + 1, s.url));
            }
            md.push('\n');
        }
        md
    }

    /// Generic stream events for `rawResponse` (opaque for most engines).
    fn raw_response(&self, text: &str) -> Value {
        json!([
            {"type": "conversation_start", "conversation_id": self.uuid_like(0x636f6e76)},
            {"type": "message_start",
             "message": {"id": self.uuid_like(0x6d736720), "role": "assistant", "model": "simulated"}},
            {"type": "delta", "delta": {"content": [{"type": "text", "text_delta": text}]}},
            {"type": "message_end", "reason": "stop"}
        ])
    }

    /// Search-style queries: the topic, then the topic with suffixes (`n` in all).
    fn queries(&mut self, n: usize) -> Vec<Value> {
        let start = self.rng.below(SUFFIXES.len());
        let topic = self.topic.trim_end_matches('…');
        let mut out = Vec::with_capacity(n);
        if n > 0 {
            out.push(Value::String(topic.to_owned()));
        }
        for i in 1..n {
            out.push(Value::String(format!(
                "{topic} {}",
                SUFFIXES[(start + i) % SUFFIXES.len()]
            )));
        }
        out
    }

    /// Local currency for prices (a few markets; USD otherwise).
    fn currency(&self) -> (&'static str, &'static str) {
        match self.country.as_str() {
            "GB" => ("GBP", "£"),
            "DE" | "FR" | "ES" | "IT" | "NL" | "BE" | "AT" | "IE" | "PT" | "FI" | "GR" => {
                ("EUR", "€")
            }
            "JP" => ("JPY", "¥"),
            "IN" => ("INR", "₹"),
            "CA" => ("CAD", "CA$"),
            "AU" => ("AUD", "A$"),
            "BR" => ("BRL", "R$"),
            _ => ("USD", "$"),
        }
    }

    /// `(value, raw)` of a price like 49.99.
    fn price(&mut self) -> (f64, String) {
        let cents = 999 + self.rng.below(30_000);
        let value = cents as f64 / 100.0;
        let (_, sym) = self.currency();
        (value, format!("{sym}{value:.2}"))
    }
}

struct Answer {
    intro: &'static str,
    brands: [&'static str; 3],
    qualities: [&'static str; 3],
}

struct Src {
    host: &'static str,
    site: &'static str,
    brand: &'static str,
    url: String,
    label: String,
    description: String,
}

/// A page title for `topic` on `site`, in one of three forms.
fn titled(form: usize, topic: &str, site: &str) -> String {
    match form {
        0 => format!("{topic} | {site}"),
        1 => format!("{site}: {topic}"),
        _ => format!("{topic}, explained - {site}"),
    }
}

fn basic_sources(sources: &[Src]) -> Value {
    Value::Array(
        sources
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({"position": i + 1, "url": s.url, "label": s.label,
                       "description": s.description})
            })
            .collect(),
    )
}

/// Citation pills for the first (at most 3) sources; `first_id` is 1 (ChatGPT has its own).
fn pills(sources: &[Src], first_id: usize) -> Value {
    Value::Array(
        sources
            .iter()
            .take(3)
            .enumerate()
            .map(|(i, s)| {
                json!({"label": s.label, "citationPillId": i + first_id, "url": s.url,
                       "domain": s.host, "position": i + 1})
            })
            .collect(),
    )
}

fn finish(mut m: Map<String, Value>) -> Map<String, Value> {
    m.insert("simulated".into(), Value::Bool(true));
    m
}

/// The fields common to every chat-style engine: text, markdown?, html?, in that order after
/// the engine-specific leading fields.
fn text_md_html(ctx: &Ctx<'_>, m: &mut Map<String, Value>, a: &Answer, sources: &[Src]) {
    if ctx.inc("markdown") {
        m.insert("markdown".into(), Value::String(ctx.markdown(a, sources)));
    }
    if ctx.inc("html") {
        m.insert("html".into(), Value::String(ctx.html_url(1)));
    }
}

// ------------------------------------------------------------------------------------------
// Chat engines

fn chatgpt(ctx: &mut Ctx<'_>) -> Map<String, Value> {
    let a = ctx.answer();
    let no_web = ctx.payload.get("disableWebSearch") == Some(&Value::Bool(true));
    let sources = if no_web {
        Vec::new()
    } else {
        ctx.sources(&a.brands)
    };
    let text = ctx.text(&a, sources.len());
    let mut m = Map::new();
    m.insert("text".into(), Value::String(text));
    let mut src_json = Vec::with_capacity(sources.len());
    for (i, s) in sources.iter().enumerate() {
        let mut o = Map::new();
        o.insert("position".into(), json!(i + 1));
        o.insert("url".into(), json!(s.url));
        o.insert("label".into(), json!(s.label));
        o.insert("description".into(), json!(s.description));
        o.insert("footnote".into(), Value::Bool(i == 0));
        if i % 2 == 0 {
            o.insert("datePublished".into(), Value::String(ctx.date_iso()));
        }
        src_json.push(Value::Object(o));
    }
    m.insert("sources".into(), Value::Array(src_json));
    m.insert("model".into(), Value::String("simulated".into()));
    m.insert(
        "entities".into(),
        Value::Array(
            a.brands
                .iter()
                .map(|b| json!({"type": "brand", "name": b}))
                .collect(),
        ),
    );
    m.insert("map".into(), Value::Array(Vec::new()));
    m.insert(
        "citationPills".into(),
        Value::Array(
            sources
                .iter()
                .take(3)
                .enumerate()
                .map(|(i, s)| {
                    json!({"url": s.url, "label": s.label, "domain": s.host,
                           "citationPillId": i, "type": "searchResult", "position": i + 1})
                })
                .collect(),
        ),
    );
    text_md_html(ctx, &mut m, &a, &sources);
    if ctx.inc("rawResponse") {
        let raw = ctx.raw_response(m.get("text").and_then(Value::as_str).unwrap_or(""));
        m.insert("rawResponse".into(), raw);
    }
    if ctx.inc("searchQueries") {
        let q = if no_web { Vec::new() } else { ctx.queries(2) };
        m.insert("searchQueries".into(), Value::Array(q));
        m.insert("mapSearchQueries".into(), Value::Array(Vec::new()));
    }
    if ctx.inc("shopping") {
        let products: Vec<Value> = (0..2).map(|i| chatgpt_product(ctx, &a, i)).collect();
        let inline = products
            .first()
            .map(|p| json!([{"product": p, "render_as": "inline"}]))
            .unwrap_or_else(|| json!([]));
        m.insert(
            "shoppingCards".into(),
            json!([{"tags": ["Simulated"], "products": products}]),
        );
        m.insert("inlineProducts".into(), inline);
    }
    if ctx.inc("ads") {
        let brand = a.brands[0];
        m.insert(
            "ads".into(),
            json!([{
                "brand": {"name": brand, "url": "https://shop.example.com/"},
                "cards": [{"title": format!("{brand}: {}", ctx.topic),
                           "body": format!("Simulated ad about {}.", ctx.topic),
                           "url": format!("https://shop.example.com/{}/{}", ctx.gl, ctx.slug)}],
                "visibility": "allowed",
                "adsResponseIndex": 0,
                "rendered": true
            }]),
        );
    }
    finish(m)
}

fn chatgpt_product(ctx: &mut Ctx<'_>, a: &Answer, i: usize) -> Value {
    let brand = a.brands[i % 3];
    let (_, raw) = ctx.price();
    let url = format!(
        "https://shop.example.com/{}/p/{}-{}",
        ctx.gl,
        ctx.slug,
        i + 1
    );
    let id = format!("{:016x}", ctx.rng.next());
    let title = format!("{brand} {}", ctx.topic);
    json!({
        "title": title,
        "position": i + 1,
        "url": url,
        "price": raw,
        "featured_tag": if i == 0 { "Top pick" } else { "Popular" },
        "merchant": "Example Shop",
        "image_urls": [format!("https://shop.example.com/img/{id}.jpg")],
        "rating": ctx.rng.rating(35, 50),
        "num_reviews": 10 + ctx.rng.below(2000),
        "id": id,
        "offers": [{
            "merchant_name": "Example Shop",
            "marketplace_seller": false,
            "seller_name": "Example Shop",
            "brand": brand,
            "product_name": title,
            "url": url,
            "price": raw,
            "details": "Simulated offer",
            "available": true,
            "checkoutable": false,
            "price_details": {"base": raw, "total": raw},
            "tag": {"text": "Simulated"}
        }],
        "rating_grouped_citation": {
            "title": format!("{brand} reviews"),
            "url": format!("https://reviews.example.com/{}/{}", ctx.gl, ctx.slug),
            "supporting_websites": [{"title": "Example Reviews",
                                     "url": "https://reviews.example.com/"}]
        }
    })
}

fn gemini(ctx: &mut Ctx<'_>) -> Map<String, Value> {
    let a = ctx.answer();
    let sources = ctx.sources(&a.brands);
    let text = ctx.text(&a, sources.len());
    let mut m = Map::new();
    m.insert("text".into(), Value::String(text));
    m.insert("sources".into(), basic_sources(&sources));
    m.insert("citationPills".into(), pills(&sources, 1));
    text_md_html(ctx, &mut m, &a, &sources);
    raw_if_asked(ctx, &mut m);
    finish(m)
}

fn grok(ctx: &mut Ctx<'_>) -> Map<String, Value> {
    let a = ctx.answer();
    let sources = ctx.sources(&a.brands);
    let text = ctx.text(&a, sources.len());
    let mut m = Map::new();
    m.insert("text".into(), Value::String(text));
    let src: Vec<Value> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            json!({
                "position": i + 1,
                "url": s.url,
                "label": s.label,
                "description": s.description,
                "preview": s.description,
                "searchEngineText": format!("{}: {}", s.brand, ctx.topic),
                "siteName": s.site,
                "metadataTitle": s.label,
                "creator": s.site,
                "image": format!("https://{}/img/{}.jpg", s.host, ctx.slug),
                "favicon": format!("https://{}/favicon.ico", s.host)
            })
        })
        .collect();
    m.insert("sources".into(), Value::Array(src));
    let q = ctx.queries(2);
    m.insert("searchQueries".into(), Value::Array(q));
    m.insert("model".into(), Value::String("simulated".into()));
    text_md_html(ctx, &mut m, &a, &sources);
    raw_if_asked(ctx, &mut m);
    finish(m)
}

fn copilot(ctx: &mut Ctx<'_>) -> Map<String, Value> {
    let a = ctx.answer();
    let sources = ctx.sources(&a.brands);
    let text = ctx.text(&a, sources.len());
    let mut m = Map::new();
    m.insert("text".into(), Value::String(text));
    m.insert("sources".into(), basic_sources(&sources));
    m.insert("citationPills".into(), pills(&sources, 1));
    let q = ctx.queries(1);
    m.insert("searchQueries".into(), Value::Array(q));
    text_md_html(ctx, &mut m, &a, &sources);
    raw_if_asked(ctx, &mut m);
    finish(m)
}

fn perplexity(ctx: &mut Ctx<'_>) -> Map<String, Value> {
    let a = ctx.answer();
    let sources = ctx.sources(&a.brands);
    let text = ctx.text(&a, sources.len());
    let mut m = Map::new();
    m.insert("text".into(), Value::String(text));
    m.insert("sources".into(), basic_sources(&sources));
    m.insert("citationPills".into(), pills(&sources, 1));
    let related = ctx.queries(4);
    m.insert(
        "related_queries".into(),
        Value::Array(related.into_iter().skip(1).collect()),
    );
    for key in ["videos", "images", "hotels", "places", "shopping_cards"] {
        m.insert(key.into(), Value::Array(Vec::new()));
    }
    let smq = ctx.queries(2);
    m.insert("search_model_queries".into(), Value::Array(smq));
    text_md_html(ctx, &mut m, &a, &sources);
    raw_if_asked(ctx, &mut m);
    finish(m)
}

fn raw_if_asked(ctx: &Ctx<'_>, m: &mut Map<String, Value>) {
    if ctx.inc("rawResponse") {
        let raw = ctx.raw_response(m.get("text").and_then(Value::as_str).unwrap_or(""));
        m.insert("rawResponse".into(), raw);
    }
}

// ------------------------------------------------------------------------------------------
// Google family

fn aimode(ctx: &mut Ctx<'_>, extra_credits: &mut u32) -> Map<String, Value> {
    let a = ctx.answer();
    let sources = ctx.sources(&a.brands);
    let text = ctx.text(&a, sources.len());
    let mut m = Map::new();
    m.insert("text".into(), Value::String(text));
    m.insert("sources".into(), basic_sources(&sources));
    m.insert("citationPills".into(), pills(&sources, 1));
    text_md_html(ctx, &mut m, &a, &sources);
    for key in ["places", "shoppingCards"] {
        m.insert(key.into(), Value::Array(Vec::new()));
    }
    let n_ads = ctx.rng.below(3);
    let (currency, _) = ctx.currency();
    let ads: Vec<Value> = (0..n_ads)
        .map(|i| {
            let (_, raw) = ctx.price();
            json!({
                "title": format!("{} {}", a.brands[i], ctx.topic),
                "url": format!("https://shop.example.com/{}/{}-{}", ctx.gl, ctx.slug, i + 1),
                "position": i + 1,
                "price": raw,
                "store": "Example Shop",
                "rating": ctx.rng.rating(35, 50),
                "reviews": 5 + ctx.rng.below(900),
                "imageUrl": format!("https://shop.example.com/img/{}-{}.jpg", ctx.slug, i + 1)
            })
        })
        .collect();
    m.insert("ads".into(), json!({"title": "Sponsored", "ads": ads}));
    for key in ["inlineProducts", "videos", "map"] {
        m.insert(key.into(), Value::Array(Vec::new()));
    }
    if ctx.inc("expandProducts") {
        let n = ctx.rng.range(1, 6);
        let products: Vec<Value> = (0..n)
            .map(|i| product_result(ctx, a.brands[i % 3], i, currency))
            .collect();
        m.insert("productResults".into(), Value::Array(products));
        *extra_credits = n as u32;
    }
    finish(m)
}

fn product_result(ctx: &mut Ctx<'_>, brand: &str, i: usize, currency: &str) -> Value {
    let (value, raw) = ctx.price();
    let id = format!("{:012x}", ctx.rng.next() & 0xffff_ffff_ffff);
    json!({
        "title": format!("{brand} {} #{}", ctx.topic, i + 1),
        "stores": [{
            "name": "Example Shop",
            "link": format!("https://shop.example.com/{}/p/{id}", ctx.gl),
            "price": {"value": value, "currency": currency, "raw": raw},
            "installments": "",
            "description": "Simulated store offer",
            "buyingOptions": [],
            "logo": "https://shop.example.com/logo.png",
            "shipping": "Free shipping",
            "condition": "New",
            "rating": ctx.rng.rating(35, 50),
            "reviews": 5 + ctx.rng.below(900)
        }],
        "aboutTheProduct": {
            "description": format!("Simulated product related to {}.", ctx.topic),
            "features": [format!("Made by {brand}")]
        },
        "specifications": {"General": {"Brand": brand}},
        "images": [{"mainUrl": format!("https://shop.example.com/img/{id}.jpg"),
                    "thumbnailUrl": format!("https://shop.example.com/img/{id}-t.jpg"),
                    "title": brand}],
        "rating": ctx.rng.rating(35, 50),
        "reviews": 5 + ctx.rng.below(900),
        "variants": [],
        "userReviews": [],
        "relatedProducts": []
    })
}

fn google(ctx: &mut Ctx<'_>) -> Map<String, Value> {
    let a = ctx.answer();
    let mut m = Map::new();
    let mut organic = Vec::with_capacity(10 * ctx.pages);
    let host0 = ctx.rng.below(HOSTS.len());
    for page in 1..=ctx.pages {
        for i in 0..10 {
            let pos = (page - 1) * 10 + i + 1;
            let (host, site) = HOSTS[(host0 + pos) % HOSTS.len()];
            let path = format!("{}/{}-{pos}", ctx.gl, ctx.slug);
            let link = format!("https://{host}/{path}");
            let form = ctx.rng.below(3);
            let quality = ctx.rng.pick(&QUALITIES);
            let brand = a.brands[pos % 3];
            let mut o = Map::new();
            o.insert("position".into(), json!(pos));
            o.insert(
                "title".into(),
                Value::String(titled(form, &ctx.topic, site)),
            );
            o.insert(
                "displayedLink".into(),
                Value::String(format!("{host} › {}", ctx.gl)),
            );
            o.insert(
                "snippet".into(),
                Value::String(format!("{brand} and more, compared on {quality}.")),
            );
            o.insert("date".into(), Value::String(ctx.date_human()));
            o.insert("page".into(), json!(page));
            if i == 0 {
                o.insert(
                    "sitelinks".into(),
                    json!({"inline": [
                        {"title": "Overview", "link": format!("{link}#overview")},
                        {"title": "Prices", "link": format!("{link}#prices")}
                    ]}),
                );
            }
            o.insert("link".into(), Value::String(link));
            organic.push(Value::Object(o));
        }
    }
    m.insert("organicResults".into(), Value::Array(organic));

    let paa_aio = ctx.inc("paaAioverview");
    let questions = [
        format!("What do experts say about \"{}\"?", ctx.topic),
        format!(
            "Which {} option is best for {}?",
            a.brands[0], a.qualities[0]
        ),
        format!("Is {} better than {}?", a.brands[1], a.brands[2]),
    ];
    let mut paa = Vec::with_capacity(3);
    for (i, q) in questions.into_iter().enumerate() {
        let (host, site) = HOSTS[(host0 + 3 * i + 1) % HOSTS.len()];
        let link = format!("https://{host}/{}/{}-faq-{}", ctx.gl, ctx.slug, i + 1);
        let snippet = format!("{} is often preferred for {}.", a.brands[i], a.qualities[i]);
        let v = if paa_aio {
            json!({"question": q, "type": "AIOVERVIEW", "snippet": snippet,
                   "markdown": format!("**{}** is often preferred for {}.", a.brands[i], a.qualities[i]),
                   "sources": [{"position": 1, "url": link, "label": site,
                                "description": snippet}]})
        } else {
            json!({"question": q, "type": "LINK", "snippet": snippet,
                   "title": format!("{q} - {site}"), "link": link})
        };
        paa.push(v);
    }
    m.insert("peopleAlsoAsk".into(), Value::Array(paa));

    let related: Vec<Value> = ctx
        .queries(4)
        .into_iter()
        .skip(1)
        .map(|q| {
            let q = q.as_str().unwrap_or("").to_owned();
            let link = ctx.google_link(&q);
            json!({"query": q, "link": link})
        })
        .collect();
    m.insert("relatedSearches".into(), Value::Array(related));

    let n_ads = ctx.rng.below(3);
    let ads: Vec<Value> = (0..n_ads)
        .map(|i| {
            json!({
                "position": i + 1,
                "blockPosition": "top",
                "type": "RESULT",
                "title": format!("{} - {}", a.brands[i], ctx.topic),
                "url": format!("https://shop.example.com/{}/{}?ad={}", ctx.gl, ctx.slug, i + 1),
                "page": 1,
                "displayedUrl": "https://shop.example.com",
                "domain": "shop.example.com",
                "description": format!("Simulated ad: {} for {}.", a.brands[i], a.qualities[i]),
                "sitelinks": []
            })
        })
        .collect();
    m.insert("ads".into(), Value::Array(ads));

    if ctx.inc("aioverview") {
        let sources = ctx.sources_n(3, &a.brands);
        let text = ctx.text(&a, sources.len());
        let mut o = Map::new();
        o.insert("text".into(), Value::String(text));
        if ctx
            .payload
            .get("include")
            .and_then(|i| i.get("aioverview"))
            .and_then(|x| x.get("markdown"))
            == Some(&Value::Bool(true))
        {
            o.insert("markdown".into(), Value::String(ctx.markdown(&a, &sources)));
        }
        o.insert("sources".into(), basic_sources(&sources));
        o.insert("videos".into(), Value::Array(Vec::new()));
        o.insert("ads".into(), Value::Array(Vec::new()));
        m.insert("aioverview".into(), Value::Object(o));
    }
    if ctx.inc("html") {
        m.insert("html".into(), ctx.html_pages());
    }
    finish(m)
}

fn google_news(ctx: &mut Ctx<'_>) -> Map<String, Value> {
    let a = ctx.answer();
    let mut m = Map::new();
    let mut news = Vec::with_capacity(10 * ctx.pages);
    let host0 = ctx.rng.below(HOSTS.len());
    for page in 1..=ctx.pages {
        for i in 0..10 {
            let pos = (page - 1) * 10 + i + 1;
            let (host, site) = HOSTS[(host0 + pos) % HOSTS.len()];
            let brand = a.brands[pos % 3];
            let quality = ctx.rng.pick(&QUALITIES);
            news.push(json!({
                "position": pos,
                "title": format!("{brand} and {}: what changed", ctx.topic),
                "link": format!("https://{host}/{}/news/{}-{pos}", ctx.gl, ctx.slug),
                "snippet": format!("Simulated coverage of {brand}, focusing on {quality}."),
                "source": site,
                "date": ctx.date_human(),
                "page": page
            }));
        }
    }
    m.insert("newsResults".into(), Value::Array(news));
    if ctx.inc("html") {
        m.insert("html".into(), ctx.html_pages());
    }
    finish(m)
}

// ------------------------------------------------------------------------------------------

#[cfg(test)]
#[path = "simulated/golden_tests.rs"]
mod golden_tests;

#[cfg(test)]
mod tests {
    use super::*;

    /// A request payload as the engine receives it: validated and normalised first.
    pub(super) fn simulate_request(t: TaskType, raw: &Value) -> SimOutput {
        let (normal, _) = crate::domain::request::validate_payload(t, raw, "payload")
            .unwrap_or_else(|e| panic!("{raw} rejected: {e:?}"));
        simulate(t, &normal)
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
            let a = simulate(t, &p);
            let b = simulate(t, &p.clone());
            assert_eq!(bytes(&a.result), bytes(&b.result), "{t:?}");
            assert_eq!(a.extra_credits, b.extra_credits);
            let c = simulate(t, &payload_for(t, "cheapest electric cars in 2026"));
            assert_ne!(bytes(&a.result), bytes(&c.result), "{t:?}");
        }
        let a = simulate(TaskType::Chatgpt, &chat_payload("alpha question"));
        let b = simulate(TaskType::Chatgpt, &chat_payload("beta question"));
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
            let out = simulate(t, &payload_for(t, "how to learn rust"));
            assert_eq!(out.result["simulated"], Value::Bool(true), "{t:?}");
            assert_no_null(&out.result, t.as_str());
            if let Some(text) = out.result.get("text") {
                assert!(text.as_str().unwrap().starts_with("[simulated] "), "{t:?}");
            }
        }
        for t in [TaskType::Chatgpt, TaskType::Grok] {
            let out = simulate(t, &chat_payload("x"));
            assert_eq!(out.result["model"], "simulated");
        }
    }

    fn assert_keys(t: TaskType, required: &[&str]) -> Value {
        let out = simulate(t, &payload_for(t, "best coffee grinder"));
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
        let r = simulate(TaskType::Chatgpt, &p).result;
        assert_eq!(r["sources"], json!([]));
        assert_eq!(r["citationPills"], json!([]));
        assert!(r["text"].as_str().unwrap().starts_with("[simulated] "));
    }

    #[test]
    fn chatgpt_include_flags() {
        let p = json!({"prompt": "best laptop", "country": "US", "include": {
            "html": true, "markdown": true, "rawResponse": true, "searchQueries": true,
            "ads": true, "shopping": true}});
        let r = simulate(TaskType::Chatgpt, &p).result;
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
        let html = r["html"].as_str().unwrap();
        assert!(html.starts_with("https://cdn.cloro.dev/results/"));
        assert!(html.ends_with("/page-1.html"));
        assert!(r["ads"].is_array());
        let prod = &r["shoppingCards"][0]["products"][0];
        assert_eq!(prod["position"], 1);
        assert!(prod["offers"][0].get("price_details").is_some());
        let p2 = json!({"prompt": "best laptop", "country": "US", "include": {
            "html": false, "markdown": false}});
        let r2 = simulate(TaskType::Chatgpt, &p2).result;
        assert!(r2.get("html").is_none() && r2.get("markdown").is_none());
    }

    #[test]
    fn chatgpt_plain_result_is_compact() {
        let out = simulate(
            TaskType::Chatgpt,
            &chat_payload("What are the best project management tools for small teams?"),
        );
        let n = bytes(&out.result).len();
        assert!(n < 4096, "plain ChatGPT result is {n} bytes");
        // A 10,000-char prompt must not blow the size up.
        let long = "word ".repeat(2000);
        let n = bytes(&simulate(TaskType::Chatgpt, &chat_payload(&long)).result).len();
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
            let on = json!({"prompt": "q", "country": "US",
                            "include": {"html": true, "markdown": true, "rawResponse": true}});
            let off = json!({"prompt": "q", "country": "US",
                             "include": {"html": false, "markdown": false}});
            let r_on = simulate(t, &on).result;
            let r_off = simulate(t, &off).result;
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
            simulate(TaskType::Aimode, &payload_for(TaskType::Aimode, "x")).extra_credits,
            0
        );
        for i in 0..40 {
            let p = json!({"prompt": format!("gift ideas {i}"), "gl": "de",
                           "include": {"expandProducts": true}});
            let out = simulate(TaskType::Aimode, &p);
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
            let r = simulate(TaskType::Google, &p).result;
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
        let r = simulate(TaskType::Google, &p).result;
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
        let r = simulate(TaskType::Google, &p).result;
        assert!(r["aioverview"]["sources"].is_array());
        assert!(r["aioverview"].get("markdown").is_none());
        let p = json!({"query": "q", "gl": "us", "include": {"aioverview": false}});
        assert!(
            simulate(TaskType::Google, &p)
                .result
                .get("aioverview")
                .is_none()
        );
    }

    #[test]
    fn google_url_payload() {
        let p =
            json!({"url": "https://www.google.de/search?q=beste+kaffeem%C3%BChle&gl=de&num=30"});
        let r = simulate(TaskType::Google, &p).result;
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
        let r = simulate(TaskType::GoogleNews, &p).result;
        let news = r["newsResults"].as_array().unwrap();
        assert_eq!(news.len(), 20);
        for k in [
            "position", "title", "link", "snippet", "source", "date", "page",
        ] {
            assert!(news[0].get(k).is_some(), "{k}");
        }
        assert!(r.get("html").is_none());
        let p = json!({"query": "x", "gl": "us", "include": {"html": true}});
        let r = simulate(TaskType::GoogleNews, &p).result;
        assert_eq!(r["html"].as_array().unwrap().len(), 1);
    }

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
        ];
        for p in &odd {
            for t in TaskType::ALL {
                let out = simulate(t, p);
                assert_eq!(out.result["simulated"], true);
                assert_no_null(&out.result, t.as_str());
            }
        }
        let r = simulate(TaskType::Google, &json!({"pages": 1e300})).result;
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
        assert_eq!(url_decode("a+b%26%C3%A9%z"), "a b&é%z");
        let r = simulate(TaskType::Google, &json!({"query": "x"})).result;
        assert!(keys(&r).contains(&"simulated"));
    }
}
