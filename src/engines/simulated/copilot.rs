//! The simulated Copilot (reference §5.4): text, sources, citation pills, one search query.

use serde_json::{Map, Value};

use super::context::*;

pub(super) fn copilot(ctx: &mut Ctx) -> Map<String, Value> {
    let a = ctx.answer();
    let sources = ctx.sources(&a.brands);
    let text = ctx.text(&a, sources.len());
    let mut m = Map::with_capacity(16);
    m.insert("text".into(), Value::String(text));
    m.insert("sources".into(), basic_sources(&sources));
    m.insert("citationPills".into(), pills(&sources, 1));
    let q = ctx.queries(1);
    m.insert("searchQueries".into(), Value::Array(q));
    text_md_html(ctx, &mut m, &a, &sources);
    raw_if_asked(ctx, &mut m);
    finish(m)
}
