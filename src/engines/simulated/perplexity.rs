//! The simulated Perplexity (reference §5.5): text, sources, related and search-model queries, empty media lists.

use serde_json::{Map, Value};

use super::context::*;

pub(super) fn perplexity(ctx: &mut Ctx) -> Map<String, Value> {
    let a = ctx.answer();
    let sources = ctx.sources(&a.brands);
    let text = ctx.text(&a, sources.len());
    let mut m = Map::with_capacity(16);
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
