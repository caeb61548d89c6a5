//! The simulated Perplexity (reference §5.5): text, sources, related and search-model queries, empty media lists.

use super::context::*;
use crate::engines::ResultText;

pub(super) fn perplexity(ctx: &mut Ctx) -> ResultText {
    let a = ctx.answer();
    let sources = ctx.sources(&a.brands);
    let text = ctx.text(&a, sources.len());
    let mut m = Obj::new();
    m.put_str("text", &text);
    m.put_objects("sources", &basic_sources(&sources));
    m.put_objects("citationPills", &pills(&sources, 1));
    let related = ctx.queries(4);
    m.put("related_queries", &related[1..]);
    for key in ["videos", "images", "hotels", "places", "shopping_cards"] {
        m.put(key, EMPTY);
    }
    m.put("search_model_queries", &ctx.queries(2));
    text_md_html(ctx, &mut m, &a, &sources);
    raw_if_asked(ctx, &mut m, &text);
    m.finish()
}
