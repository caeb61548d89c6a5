//! What the simulated engines share: the per-task context (text, geo, pages and include
//! options read from the typed payload, and the seed every value derives from), the
//! deterministic stream, the fictional vocabulary, and the text, source and citation builders.
//!
//! Everything is derived from a hand-written 64-bit FNV-1a hash of the prompt/query and the
//! other payload fields, expanded with a local splitmix64 stream: no clocks, no randomness, no
//! global state.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::{Value, json};

use crate::domain::google_url::last_query_value;
use crate::domain::request::{Aioverview, Payload};
use crate::pages::PageLinks;

// ------------------------------------------------------------------------------------------
// Hashing and the deterministic stream

pub(super) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub(super) const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

pub(super) fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// splitmix64 finaliser: spreads FNV's weak high bits.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Top 53 bits as a float in [0,1).
pub(super) fn to_unit(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A local splitmix64 stream seeded from the payload hash.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    /// Uniform-ish in `0..n` (0 when n is 0).
    pub(super) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    /// Uniform-ish in `lo..=hi`.
    pub(super) fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
    pub(super) fn pick(&mut self, xs: &[&'static str]) -> &'static str {
        let i = self.below(xs.len());
        xs.get(i).copied().unwrap_or("")
    }
    /// A rating like 4.3 (one decimal, in `lo/10 ..= hi/10`).
    pub(super) fn rating(&mut self, lo: usize, hi: usize) -> f64 {
        self.range(lo, hi) as f64 / 10.0
    }
}

// ------------------------------------------------------------------------------------------
// Vocabulary (fictional brands, reserved example domains)

pub(super) const BRANDS: [&str; 12] = [
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
pub(super) const QUALITIES: [&str; 8] = [
    "value for money",
    "reliability",
    "ease of use",
    "customer support",
    "build quality",
    "its feature set",
    "performance",
    "long-term durability",
];
pub(super) const HOSTS: [(&str, &str); 10] = [
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
pub(super) const INTROS: [&str; 4] = [
    "Here is an overview for",
    "Short answer for",
    "A quick summary on",
    "What the sources say about",
];
pub(super) const SUFFIXES: [&str; 6] = [
    "alternatives",
    "pros and cons",
    "prices",
    "reviews",
    "for beginners",
    "comparison",
];
pub(super) const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

// ------------------------------------------------------------------------------------------
// Text helpers

/// Keep ASCII letters, digits and `-`, at most `max` of them (safe inside URLs).
pub(super) fn clean_code(s: &str, max: usize) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(max)
        .collect()
}

/// Whitespace collapsed, control characters dropped, at most `max` chars: cut at a word
/// boundary where possible, then `…`.
pub(super) fn collapse(text: &str, max: usize) -> String {
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
pub(super) fn slugify(text: &str) -> String {
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
pub(super) fn url_encode(s: &str) -> String {
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
// ------------------------------------------------------------------------------------------
// Per-task context

/// The payload fields the simulation reads, taken from the typed payload of any family (each
/// string trimmed; blank counts as absent).
struct Fields<'a> {
    text: Option<&'a str>,
    country: Option<&'a str>,
    gl: Option<&'a str>,
    hl: Option<Cow<'a, str>>,
    state: Option<&'a str>,
    device: Option<&'a str>,
    location: Option<&'a str>,
    uule: Option<&'a str>,
    pages: Option<u32>,
}

/// `s` trimmed, `None` when blank.
fn present(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

impl<'a> Fields<'a> {
    pub(super) fn of(payload: &'a Payload) -> Fields<'a> {
        let f = match payload {
            Payload::Chat(_, p) => Fields {
                text: Some(&p.prompt),
                country: Some(&p.country),
                gl: None,
                hl: None,
                state: p.state.as_deref(),
                device: None,
                location: None,
                uule: None,
                pages: None,
            },
            Payload::AiMode(p) => Fields {
                text: Some(&p.prompt),
                country: Some(&p.country),
                gl: Some(&p.gl),
                hl: p.hl.as_deref().map(Cow::Borrowed),
                state: None,
                device: Some(p.device.as_str()),
                location: p.location.as_deref(),
                uule: p.uule.as_deref(),
                pages: None,
            },
            Payload::Google(p) => Fields {
                text: Some(&p.query),
                country: Some(&p.country),
                gl: Some(&p.gl),
                hl: present(p.hl.as_deref()).map(Cow::Borrowed).or_else(|| {
                    p.url
                        .as_deref()
                        .and_then(|u| last_query_value(u, "hl"))
                        .map(Cow::Owned)
                }),
                state: None,
                device: Some(p.device.as_str()),
                location: p.location.as_deref(),
                uule: p.uule.as_deref(),
                pages: Some(p.pages),
            },
            Payload::News(p) => Fields {
                text: Some(&p.query),
                country: Some(&p.country),
                gl: Some(&p.gl),
                hl: p.hl.as_deref().map(Cow::Borrowed),
                state: None,
                device: Some(p.device.as_str()),
                location: None,
                uule: None,
                pages: Some(p.pages),
            },
        };
        Fields {
            text: present(f.text),
            country: present(f.country),
            gl: present(f.gl),
            hl: f.hl.filter(|h| !h.trim().is_empty()),
            state: present(f.state),
            device: present(f.device),
            location: present(f.location),
            uule: present(f.uule),
            pages: f.pages,
        }
    }
}

/// The `include` options of the payload that change a result (`false` when not sent).
#[derive(Default)]
pub(super) struct Inc {
    pub(super) html: bool,
    pub(super) markdown: bool,
    pub(super) raw_response: bool,
    pub(super) search_queries: bool,
    pub(super) ads: bool,
    pub(super) shopping: bool,
    pub(super) expand_products: bool,
    /// Google: `aioverview` is `true` or an options object.
    pub(super) aioverview: bool,
    /// Google: `aioverview.markdown` is `true`.
    pub(super) aioverview_markdown: bool,
    pub(super) paa_aioverview: bool,
}

impl Inc {
    pub(super) fn of(payload: &Payload) -> Inc {
        let on = |f: Option<bool>| f == Some(true);
        match payload {
            Payload::Chat(_, p) => p.include.as_ref().map_or_else(Inc::default, |i| Inc {
                html: on(i.html),
                markdown: on(i.markdown),
                raw_response: on(i.raw_response),
                search_queries: on(i.search_queries),
                ads: on(i.ads),
                shopping: on(i.shopping),
                ..Inc::default()
            }),
            Payload::AiMode(p) => p.include.as_ref().map_or_else(Inc::default, |i| Inc {
                html: on(i.html),
                markdown: on(i.markdown),
                expand_products: on(i.expand_products),
                ..Inc::default()
            }),
            Payload::Google(p) => p.include.as_ref().map_or_else(Inc::default, |i| Inc {
                html: on(i.html),
                aioverview: i.aioverview_enabled(),
                aioverview_markdown: i.aioverview.as_ref().is_some_and(Aioverview::markdown),
                paa_aioverview: on(i.paa_aioverview),
                ..Inc::default()
            }),
            Payload::News(p) => p.include.as_ref().map_or_else(Inc::default, |i| Inc {
                html: on(i.html),
                ..Inc::default()
            }),
        }
    }
}

pub(super) struct Ctx {
    /// The include options that shape the result.
    pub(super) inc: Inc,
    /// The URLs of this attempt's result pages (`include.html`), served by cloro itself.
    pub(super) links: PageLinks,
    /// ChatGPT's `disableWebSearch: true`.
    pub(super) no_web: bool,
    /// Prompt mention for answer texts (≤ 120 chars).
    pub(super) short: String,
    /// Topic for titles, labels and queries (≤ 40 chars).
    pub(super) topic: String,
    pub(super) slug: String,
    /// Uppercase country code.
    pub(super) country: String,
    /// Lowercase country code used in generated links.
    pub(super) gl: String,
    pub(super) hl: String,
    pub(super) pages: usize,
    pub(super) seed: u64,
    pub(super) rng: Rng,
}

impl Ctx {
    /// The context of one task: its text, geo and options, and the seed every generated value
    /// derives from (a hash of the task type and the payload fields).
    pub(super) fn new(payload: &Payload, links: &PageLinks) -> Ctx {
        let f = Fields::of(payload);
        let text: &str = f.text.unwrap_or("");
        let country_raw = f.country.or(f.gl).unwrap_or("US");
        let mut country = clean_code(country_raw, 8).to_ascii_uppercase();
        if country.is_empty() {
            country.push_str("US");
        }
        let gl =
            f.gl.map(|g| clean_code(g, 8).to_ascii_lowercase())
                .filter(|g| !g.is_empty())
                .unwrap_or_else(|| country.to_ascii_lowercase());
        let mut hl =
            f.hl.map(|h| clean_code(&h, 12).to_ascii_lowercase())
                .unwrap_or_default();
        if hl.is_empty() {
            hl.push_str("en");
        }
        let pages = f.pages.map_or(1, |p| p.clamp(1, 10) as usize);

        let mut h = fnv1a(FNV_OFFSET, payload.task_type().as_str().as_bytes());
        for part in [
            text,
            country.as_str(),
            gl.as_str(),
            hl.as_str(),
            f.state.unwrap_or(""),
            f.device.unwrap_or(""),
            f.location.unwrap_or(""),
            f.uule.unwrap_or(""),
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
            inc: Inc::of(payload),
            links: links.clone(),
            no_web: matches!(payload, Payload::Chat(_, p) if p.disable_web_search == Some(true)),
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

    /// UUID-shaped hex derived from the seed (stable per payload).
    pub(super) fn uuid_like(&self, salt: u64) -> String {
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

    /// The chat types' `html`: the URL of the result page cloro serves for this attempt.
    pub(super) fn html_url(&self, page: usize) -> String {
        self.links.url(page)
    }

    /// Google-family `html`: one URL per page.
    pub(super) fn html_pages(&self) -> Value {
        self.links.urls(self.pages)
    }

    pub(super) fn google_link(&self, q: &str) -> String {
        format!(
            "https://www.google.com/search?q={}&gl={}&hl={}",
            url_encode(q),
            self.gl,
            self.hl
        )
    }

    /// Three distinct brands and qualities for the answer.
    pub(super) fn answer(&mut self) -> Answer {
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

    pub(super) fn date_iso(&mut self) -> String {
        format!(
            "2026-{:02}-{:02}T00:00:00.000Z",
            1 + self.rng.below(9),
            1 + self.rng.below(28)
        )
    }

    pub(super) fn date_human(&mut self) -> String {
        format!(
            "{} {}, {}",
            self.rng.pick(&MONTHS),
            1 + self.rng.below(28),
            2024 + self.rng.below(3)
        )
    }

    /// 3–5 chat sources on distinct hosts.
    pub(super) fn sources(&mut self, brands: &[&'static str; 3]) -> Vec<Src> {
        let n = self.rng.range(3, 5);
        self.sources_n(n, brands)
    }

    pub(super) fn sources_n(&mut self, n: usize, brands: &[&'static str; 3]) -> Vec<Src> {
        let start = self.rng.below(HOSTS.len());
        (0..n)
            .map(|i| {
                let (host, site) = HOSTS[(start + i) % HOSTS.len()];
                let brand = brands[i % 3];
                let form = self.rng.below(3);
                let quality = self.rng.pick(&QUALITIES);
                let mut url = joined(&["https://", host, "/", &self.gl, "/", &self.slug, "-"]);
                push_hex(&mut url, self.rng.next() & 0xfffff);
                Src {
                    host,
                    site,
                    brand,
                    url,
                    label: titled(form, &self.topic, site),
                    description: joined(&[
                        brand,
                        " compared on ",
                        quality,
                        ", with notes and examples.",
                    ]),
                }
            })
            .collect()
    }

    pub(super) fn text(&self, a: &Answer, n_sources: usize) -> String {
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

    pub(super) fn markdown(&self, a: &Answer, sources: &[Src]) -> String {
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
    pub(super) fn raw_response(&self, text: &str) -> Value {
        json!([
            {"type": "conversation_start", "conversation_id": self.uuid_like(0x636f6e76)},
            {"type": "message_start",
             "message": {"id": self.uuid_like(0x6d736720), "role": "assistant", "model": "simulated"}},
            {"type": "delta", "delta": {"content": [{"type": "text", "text_delta": text}]}},
            {"type": "message_end", "reason": "stop"}
        ])
    }

    /// Search-style queries: the topic, then the topic with suffixes (`n` in all).
    pub(super) fn queries(&mut self, n: usize) -> Vec<String> {
        let start = self.rng.below(SUFFIXES.len());
        let topic = self.topic.trim_end_matches('…');
        let mut out = Vec::with_capacity(n);
        if n > 0 {
            out.push(topic.to_owned());
        }
        for i in 1..n {
            out.push(format!(
                "{topic} {}",
                SUFFIXES[(start + i) % SUFFIXES.len()]
            ));
        }
        out
    }

    /// Local currency for prices (a few markets; USD otherwise).
    pub(super) fn currency(&self) -> (&'static str, &'static str) {
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
    pub(super) fn price(&mut self) -> (f64, String) {
        let cents = 999 + self.rng.below(30_000);
        let value = cents as f64 / 100.0;
        let (_, sym) = self.currency();
        (value, format!("{sym}{value:.2}"))
    }
}

pub(super) struct Answer {
    pub(super) intro: &'static str,
    pub(super) brands: [&'static str; 3],
    pub(super) qualities: [&'static str; 3],
}

pub(super) struct Src {
    pub(super) host: &'static str,
    pub(super) site: &'static str,
    pub(super) brand: &'static str,
    pub(super) url: String,
    pub(super) label: String,
    pub(super) description: String,
}

/// `parts` one after the other, in one allocation of the right size (what `format!` of plain
/// strings gives, without its formatting machinery: this runs several times per simulated
/// answer). Measured against the standard library's `concat`, which should do the same: the
/// embedded drain was 3-4% slower with `concat` (7 of 8 alternating pairs, docs/PERFORMANCE.md).
pub(super) fn joined(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        out.push_str(p);
    }
    out
}

/// Appends `n` in lowercase hexadecimal without leading zeros (`format!("{n:x}")`).
pub(super) fn push_hex(out: &mut String, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = DIGITS[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(char::from(b));
    }
}

/// A page title for `topic` on `site`, in one of three forms.
pub(super) fn titled(form: usize, topic: &str, site: &str) -> String {
    match form {
        0 => joined(&[topic, " | ", site]),
        1 => joined(&[site, ": ", topic]),
        _ => joined(&[topic, ", explained - ", site]),
    }
}

/// A chat source: `position`, `url`, `label`, `description` (reference §5).
#[derive(Serialize)]
pub(super) struct BasicSource<'a> {
    pub(super) position: usize,
    pub(super) url: &'a str,
    pub(super) label: &'a str,
    pub(super) description: &'a str,
}

impl JsonObject for BasicSource<'_> {
    fn members(&self, m: &mut Members<'_>) {
        m.num("position", self.position)
            .str("url", self.url)
            .str("label", self.label)
            .str("description", self.description);
    }
}

pub(super) fn basic_sources(sources: &[Src]) -> Vec<BasicSource<'_>> {
    sources
        .iter()
        .enumerate()
        .map(|(i, s)| BasicSource {
            position: i + 1,
            url: &s.url,
            label: &s.label,
            description: &s.description,
        })
        .collect()
}

/// A citation pill of the shared shape (ChatGPT has its own).
pub(super) struct Pill<'a> {
    label: &'a str,
    citation_pill_id: usize,
    url: &'a str,
    domain: &'a str,
    position: usize,
}

impl JsonObject for Pill<'_> {
    fn members(&self, m: &mut Members<'_>) {
        m.str("label", self.label)
            .num("citationPillId", self.citation_pill_id)
            .str("url", self.url)
            .str("domain", self.domain)
            .num("position", self.position);
    }
}

/// Citation pills for the first (at most 3) sources; `first_id` is 1 (ChatGPT has its own).
pub(super) fn pills(sources: &[Src], first_id: usize) -> Vec<Pill<'_>> {
    sources
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, s)| Pill {
            label: &s.label,
            citation_pill_id: i + first_id,
            url: &s.url,
            domain: s.host,
            position: i + 1,
        })
        .collect()
}

/// An empty JSON array.
pub(super) const EMPTY: &[(); 0] = &[];

/// `"key":` for one of the engines' own key literals (plain ASCII, never escaped).
fn push_key(buf: &mut Vec<u8>, key: &'static str) {
    debug_assert!(
        key.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'),
        "{key}"
    );
    buf.push(b'"');
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(b"\":");
}

/// `s` as a JSON string, byte for byte what serde_json writes (which escapes `"`, `\` and the
/// control characters below U+0020, nothing else), but in one branch-free scan and one copy when
/// nothing needs escaping, as almost every simulated string: serde_json looks each byte up in its
/// escape table, which was the simulator's largest cost (docs/PERFORMANCE.md).
pub(super) fn push_str(buf: &mut Vec<u8>, s: &str) {
    let plain = s.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        buf.reserve(s.len() + 2);
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, s);
    }
}

/// An object the simulator writes as JSON text itself ([`Obj::put_objects`]): the shapes every
/// chat result has several of (sources, citation pills, entities).
pub(super) trait JsonObject {
    /// Its members, in order.
    fn members(&self, m: &mut Members<'_>);
}

/// The members of an object being written ([`JsonObject`]).
pub(super) struct Members<'b> {
    buf: &'b mut Vec<u8>,
    first: bool,
}

impl Members<'_> {
    fn key(&mut self, key: &'static str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        push_key(self.buf, key);
    }

    pub(super) fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        self.key(key);
        push_str(self.buf, value);
        self
    }

    pub(super) fn num(&mut self, key: &'static str, value: usize) -> &mut Self {
        self.key(key);
        // Writing a number into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *self.buf, &value);
        self
    }

    pub(super) fn bool(&mut self, key: &'static str, value: bool) -> &mut Self {
        self.key(key);
        self.buf
            .extend_from_slice(if value { b"true" } else { b"false" });
        self
    }
}

/// A result object written straight to its JSON text, fields in the order they are put (as
/// the `preserve_order` map it replaced kept them), so no tree of `Value`s is built, walked
/// to serialize and dropped for every result. Keys are the engines' own literals (plain
/// ASCII, never escaped); a key is put at most once.
pub(super) struct Obj {
    buf: Vec<u8>,
    has_html: bool,
}

impl Obj {
    pub(super) fn new() -> Obj {
        let mut buf = Vec::with_capacity(4096);
        buf.push(b'{');
        Obj {
            buf,
            has_html: false,
        }
    }

    /// Appends `"key":` (after a comma unless it is the first field).
    fn key(&mut self, key: &'static str) {
        if self.buf.len() > 1 {
            self.buf.push(b',');
        }
        push_key(&mut self.buf, key);
        self.has_html |= key == "html";
    }

    /// Appends `"key":value`.
    pub(super) fn put<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) {
        let mark = self.buf.len();
        let html = self.has_html;
        self.key(key);
        // Writing into a Vec fails only for a map with non-string keys, which no simulated
        // value has; the field is then left out rather than written half.
        if serde_json::to_writer(&mut self.buf, value).is_err() {
            self.buf.truncate(mark);
            self.has_html = html;
        }
    }

    /// Appends `"key":"value"` ([`push_str`]).
    pub(super) fn put_str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        push_str(&mut self.buf, value);
    }

    /// Appends `"key":[{…},…]`, each object written by its [`JsonObject`] impl.
    pub(super) fn put_objects<T: JsonObject>(&mut self, key: &'static str, items: &[T]) {
        self.key(key);
        self.buf.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.buf.push(b'{');
            item.members(&mut Members {
                buf: &mut self.buf,
                first: true,
            });
            self.buf.push(b'}');
        }
        self.buf.push(b']');
    }

    /// Appends `"simulated":true` (every simulated result says so) and closes the object.
    pub(super) fn finish(mut self) -> crate::engines::ResultText {
        self.put("simulated", &true);
        self.buf.push(b'}');
        // serde_json writes UTF-8 only.
        let text = String::from_utf8(self.buf)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        crate::engines::ResultText::from_text(text, self.has_html)
    }
}

/// The fields common to every chat-style engine: text, markdown?, html?, in that order after
/// the engine-specific leading fields.
pub(super) fn text_md_html(ctx: &Ctx, m: &mut Obj, a: &Answer, sources: &[Src]) {
    if ctx.inc.markdown {
        m.put("markdown", &ctx.markdown(a, sources));
    }
    if ctx.inc.html {
        m.put("html", &ctx.html_url(1));
    }
}

/// `rawResponse` when asked: the stream events of `text`.
pub(super) fn raw_if_asked(ctx: &Ctx, m: &mut Obj, text: &str) {
    if ctx.inc.raw_response {
        m.put("rawResponse", &ctx.raw_response(text));
    }
}
