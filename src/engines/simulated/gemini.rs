//! The simulated Gemini (reference §5.2): text, sources, citation pills.

use super::context::*;
use crate::engines::ResultText;

pub(super) fn gemini(ctx: &mut Ctx) -> ResultText {
    let a = ctx.answer();
    let sources = ctx.sources(&a.brands);
    let text = ctx.text(&a, sources.len());
    let mut m = Obj::new();
    m.put_str("text", &text);
    m.put_objects("sources", &basic_sources(&sources));
    m.put_objects("citationPills", &pills(&sources, 1));
    text_md_html(ctx, &mut m, &a, &sources);
    raw_if_asked(ctx, &mut m, &text);
    m.finish()
}
