//! The simulated ChatGPT (reference §5.1): text, sources with footnotes and dates, entities, citation pills, and the `include` extras (raw response, search queries, shopping cards, ads).

use serde_json::{Value, json};

use super::context::*;
use crate::engines::ResultText;

/// A ChatGPT source (reference §5.1): the basic source, a footnote flag, and a date on every
/// other one.
struct Source<'a> {
    basic: BasicSource<'a>,
    footnote: bool,
    date_published: Option<String>,
}

impl JsonObject for Source<'_> {
    fn members(&self, m: &mut Members<'_>) {
        self.basic.members(m);
        m.bool("footnote", self.footnote);
        if let Some(date) = &self.date_published {
            m.str("datePublished", date);
        }
    }
}

struct Entity<'a> {
    kind: &'static str,
    name: &'a str,
}

impl JsonObject for Entity<'_> {
    fn members(&self, m: &mut Members<'_>) {
        m.str("type", self.kind).str("name", self.name);
    }
}

/// ChatGPT's citation pill, ids from 0.
struct Pill<'a> {
    url: &'a str,
    label: &'a str,
    domain: &'a str,
    citation_pill_id: usize,
    kind: &'static str,
    position: usize,
}

impl JsonObject for Pill<'_> {
    fn members(&self, m: &mut Members<'_>) {
        m.str("url", self.url)
            .str("label", self.label)
            .str("domain", self.domain)
            .num("citationPillId", self.citation_pill_id)
            .str("type", self.kind)
            .num("position", self.position);
    }
}

pub(super) fn chatgpt(ctx: &mut Ctx) -> ResultText {
    let a = ctx.answer();
    let no_web = ctx.no_web;
    let sources = if no_web {
        Vec::new()
    } else {
        ctx.sources(&a.brands)
    };
    let text = ctx.text(&a, sources.len());
    let mut m = Obj::new();
    m.put_str("text", &text);
    let src: Vec<Source> = basic_sources(&sources)
        .into_iter()
        .enumerate()
        .map(|(i, basic)| Source {
            basic,
            footnote: i == 0,
            date_published: (i % 2 == 0).then(|| ctx.date_iso()),
        })
        .collect();
    m.put_objects("sources", &src);
    m.put("model", "simulated");
    let entities: Vec<Entity> = a
        .brands
        .iter()
        .map(|b| Entity {
            kind: "brand",
            name: b,
        })
        .collect();
    m.put_objects("entities", &entities);
    m.put("map", EMPTY);
    let pills: Vec<Pill> = sources
        .iter()
        .take(3)
        .enumerate()
        .map(|(i, s)| Pill {
            url: &s.url,
            label: &s.label,
            domain: s.host,
            citation_pill_id: i,
            kind: "searchResult",
            position: i + 1,
        })
        .collect();
    m.put_objects("citationPills", &pills);
    text_md_html(ctx, &mut m, &a, &sources);
    if ctx.inc.raw_response {
        m.put("rawResponse", &ctx.raw_response(&text));
    }
    if ctx.inc.search_queries {
        let q = if no_web { Vec::new() } else { ctx.queries(2) };
        m.put("searchQueries", &q);
        m.put("mapSearchQueries", EMPTY);
    }
    if ctx.inc.shopping {
        let products: Vec<Value> = (0..2).map(|i| chatgpt_product(ctx, &a, i)).collect();
        let inline = products
            .first()
            .map(|p| json!([{"product": p, "render_as": "inline"}]))
            .unwrap_or_else(|| json!([]));
        m.put(
            "shoppingCards",
            &json!([{"tags": ["Simulated"], "products": products}]),
        );
        m.put("inlineProducts", &inline);
    }
    if ctx.inc.ads {
        let brand = a.brands[0];
        m.put(
            "ads",
            &json!([{
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
    m.finish()
}

fn chatgpt_product(ctx: &mut Ctx, a: &Answer, i: usize) -> Value {
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
