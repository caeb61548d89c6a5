//! The simulated ChatGPT (reference §5.1): text, sources with footnotes and dates, entities, citation pills, and the `include` extras (raw response, search queries, shopping cards, ads).

use serde_json::{Map, Value, json};

use super::context::*;

pub(super) fn chatgpt(ctx: &mut Ctx) -> Map<String, Value> {
    let a = ctx.answer();
    let no_web = ctx.no_web;
    let sources = if no_web {
        Vec::new()
    } else {
        ctx.sources(&a.brands)
    };
    let text = ctx.text(&a, sources.len());
    let mut m = Map::with_capacity(16);
    m.insert("text".into(), Value::String(text));
    let mut src_json = Vec::with_capacity(sources.len());
    for (i, s) in sources.iter().enumerate() {
        let mut o = Map::with_capacity(6);
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
                .map(|b| obj! {"type": "brand", "name": b})
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
                    obj! {"url": s.url, "label": s.label, "domain": s.host,
                    "citationPillId": i, "type": "searchResult", "position": i + 1}
                })
                .collect(),
        ),
    );
    text_md_html(ctx, &mut m, &a, &sources);
    if ctx.inc.raw_response {
        let raw = ctx.raw_response(m.get("text").and_then(Value::as_str).unwrap_or(""));
        m.insert("rawResponse".into(), raw);
    }
    if ctx.inc.search_queries {
        let q = if no_web { Vec::new() } else { ctx.queries(2) };
        m.insert("searchQueries".into(), Value::Array(q));
        m.insert("mapSearchQueries".into(), Value::Array(Vec::new()));
    }
    if ctx.inc.shopping {
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
    if ctx.inc.ads {
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
