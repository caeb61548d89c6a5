//! The simulated Gemini (reference §5.2): text, sources, citation pills.

use serde_json::{Map, Value};

use super::context::*;

pub(super) fn gemini(ctx: &mut Ctx) -> Map<String, Value> {
    let a = ctx.answer();
    let sources = ctx.sources(&a.brands);
    let text = ctx.text(&a, sources.len());
    let mut m = Map::with_capacity(16);
    m.insert("text".into(), Value::String(text));
    m.insert("sources".into(), basic_sources(&sources));
    m.insert("citationPills".into(), pills(&sources, 1));
    text_md_html(ctx, &mut m, &a, &sources);
    raw_if_asked(ctx, &mut m);
    finish(m)
}
