//! The simulated Google News (reference §5.8): ten news results per page and the optional HTML pages.

use serde_json::json;

use super::context::*;
use crate::engines::ResultText;

pub(super) fn google_news(ctx: &mut Ctx) -> ResultText {
    let a = ctx.answer();
    let mut m = Obj::new();
    let mut news = Vec::with_capacity(10 * ctx.pages);
    let host0 = ctx.rng.below(HOSTS.len());
    for page in 1..=ctx.pages {
        for i in 0..10 {
            let pos = (page - 1) * 10 + i + 1;
            let (host, site) = HOSTS[(host0 + pos) % HOSTS.len()];
            let brand = a.brands[pos % 3];
            let quality = ctx.rng.pick(&QUALITIES);
            news.push(json!({
                "position": pos,
                "title": format!("{brand} and {}: what changed", ctx.topic),
                "link": format!("https://{host}/{}/news/{}-{pos}", ctx.gl, ctx.slug),
                "snippet": format!("Simulated coverage of {brand}, focusing on {quality}."),
                "source": site,
                "date": ctx.date_human(),
                "page": page
            }));
        }
    }
    m.put("newsResults", &news);
    if ctx.inc.html {
        m.put("html", &ctx.html_pages());
    }
    m.finish()
}
