//! The simulated Copilot (reference §5.4): text, sources, citation pills, one search query.

use super::context::*;
use crate::engines::ResultText;

pub(super) fn copilot(ctx: &mut Ctx) -> ResultText {
    let a = ctx.answer();
    let sources = ctx.sources(&a.brands);
    let text = ctx.text(&a, sources.len());
    let mut m = Obj::new();
    m.put_str("text", &text);
    m.put_objects("sources", &basic_sources(&sources));
    m.put_objects("citationPills", &pills(&sources, 1));
    m.put("searchQueries", &ctx.queries(1));
    text_md_html(ctx, &mut m, &a, &sources);
    raw_if_asked(ctx, &mut m, &text);
    m.finish()
}
