//! The simulated Google Search (reference §5.7): ten organic results per page, "People also ask", related searches, ads, and the optional AI overview and HTML pages.

use serde_json::{Map, Value, json};

use super::context::*;
use crate::engines::ResultText;

pub(super) fn google(ctx: &mut Ctx) -> ResultText {
    let a = ctx.answer();
    let mut m = Obj::new();
    let mut organic = Vec::with_capacity(10 * ctx.pages);
    let host0 = ctx.rng.below(HOSTS.len());
    for page in 1..=ctx.pages {
        for i in 0..10 {
            let pos = (page - 1) * 10 + i + 1;
            let (host, site) = HOSTS[(host0 + pos) % HOSTS.len()];
            let path = format!("{}/{}-{pos}", ctx.gl, ctx.slug);
            let link = format!("https://{host}/{path}");
            let form = ctx.rng.below(3);
            let quality = ctx.rng.pick(&QUALITIES);
            let brand = a.brands[pos % 3];
            let mut o = Map::with_capacity(8);
            o.insert("position".into(), json!(pos));
            o.insert(
                "title".into(),
                Value::String(titled(form, &ctx.topic, site)),
            );
            o.insert(
                "displayedLink".into(),
                Value::String(format!("{host} › {}", ctx.gl)),
            );
            o.insert(
                "snippet".into(),
                Value::String(format!("{brand} and more, compared on {quality}.")),
            );
            o.insert("date".into(), Value::String(ctx.date_human()));
            o.insert("page".into(), json!(page));
            if i == 0 {
                o.insert(
                    "sitelinks".into(),
                    json!({"inline": [
                        {"title": "Overview", "link": format!("{link}#overview")},
                        {"title": "Prices", "link": format!("{link}#prices")}
                    ]}),
                );
            }
            o.insert("link".into(), Value::String(link));
            organic.push(Value::Object(o));
        }
    }
    m.put("organicResults", &organic);

    let paa_aio = ctx.inc.paa_aioverview;
    let questions = [
        format!("What do experts say about \"{}\"?", ctx.topic),
        format!(
            "Which {} option is best for {}?",
            a.brands[0], a.qualities[0]
        ),
        format!("Is {} better than {}?", a.brands[1], a.brands[2]),
    ];
    let mut paa = Vec::with_capacity(3);
    for (i, q) in questions.into_iter().enumerate() {
        let (host, site) = HOSTS[(host0 + 3 * i + 1) % HOSTS.len()];
        let link = format!("https://{host}/{}/{}-faq-{}", ctx.gl, ctx.slug, i + 1);
        let snippet = format!("{} is often preferred for {}.", a.brands[i], a.qualities[i]);
        let v = if paa_aio {
            json!({"question": q, "type": "AIOVERVIEW", "snippet": snippet,
                   "markdown": format!("**{}** is often preferred for {}.", a.brands[i], a.qualities[i]),
                   "sources": [{"position": 1, "url": link, "label": site,
                                "description": snippet}]})
        } else {
            json!({"question": q, "type": "LINK", "snippet": snippet,
                   "title": format!("{q} - {site}"), "link": link})
        };
        paa.push(v);
    }
    m.put("peopleAlsoAsk", &paa);

    let related: Vec<Value> = ctx
        .queries(4)
        .into_iter()
        .skip(1)
        .map(|q| {
            let link = ctx.google_link(&q);
            json!({"query": q, "link": link})
        })
        .collect();
    m.put("relatedSearches", &related);

    let n_ads = ctx.rng.below(3);
    let ads: Vec<Value> = (0..n_ads)
        .map(|i| {
            json!({
                "position": i + 1,
                "blockPosition": "top",
                "type": "RESULT",
                "title": format!("{} - {}", a.brands[i], ctx.topic),
                "url": format!("https://shop.example.com/{}/{}?ad={}", ctx.gl, ctx.slug, i + 1),
                "page": 1,
                "displayedUrl": "https://shop.example.com",
                "domain": "shop.example.com",
                "description": format!("Simulated ad: {} for {}.", a.brands[i], a.qualities[i]),
                "sitelinks": []
            })
        })
        .collect();
    m.put("ads", &ads);

    if ctx.inc.aioverview {
        let sources = ctx.sources_n(3, &a.brands);
        let text = ctx.text(&a, sources.len());
        let mut o = Map::with_capacity(8);
        o.insert("text".into(), Value::String(text));
        if ctx.inc.aioverview_markdown {
            o.insert("markdown".into(), Value::String(ctx.markdown(&a, &sources)));
        }
        o.insert("sources".into(), json!(basic_sources(&sources)));
        o.insert("videos".into(), Value::Array(Vec::new()));
        o.insert("ads".into(), Value::Array(Vec::new()));
        m.put("aioverview", &o);
    }
    if ctx.inc.html {
        m.put("html", &ctx.html_pages());
    }
    m.finish()
}
