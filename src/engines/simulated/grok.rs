//! The simulated Grok (reference §5.3): text, rich sources, search queries, model.

use serde_json::{Value, json};

use super::context::*;
use crate::engines::ResultText;

pub(super) fn grok(ctx: &mut Ctx) -> ResultText {
    let a = ctx.answer();
    let sources = ctx.sources(&a.brands);
    let text = ctx.text(&a, sources.len());
    let mut m = Obj::new();
    m.put_str("text", &text);
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
    m.put("sources", &src);
    m.put("searchQueries", &ctx.queries(2));
    m.put("model", "simulated");
    text_md_html(ctx, &mut m, &a, &sources);
    raw_if_asked(ctx, &mut m, &text);
    m.finish()
}
