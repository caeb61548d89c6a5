//! The simulated Grok (reference §5.3): text, rich sources, search queries, model.

use serde_json::{Map, Value, json};

use super::context::*;

pub(super) fn grok(ctx: &mut Ctx) -> Map<String, Value> {
    let a = ctx.answer();
    let sources = ctx.sources(&a.brands);
    let text = ctx.text(&a, sources.len());
    let mut m = Map::with_capacity(16);
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
