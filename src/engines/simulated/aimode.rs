//! The simulated Google AI Mode (reference §5.6): text, sources, ads, and with `expandProducts` the product clusters it bills one credit each for.

use serde_json::{Value, json};

use super::context::*;
use crate::domain::request::MAX_PRODUCT_CLUSTERS;
use crate::engines::ResultText;

pub(super) fn aimode(ctx: &mut Ctx, extra_credits: &mut u32) -> ResultText {
    let a = ctx.answer();
    let sources = ctx.sources(&a.brands);
    let text = ctx.text(&a, sources.len());
    let mut m = Obj::new();
    m.put_str("text", &text);
    m.put_objects("sources", &basic_sources(&sources));
    m.put_objects("citationPills", &pills(&sources, 1));
    text_md_html(ctx, &mut m, &a, &sources);
    for key in ["places", "shoppingCards"] {
        m.put(key, EMPTY);
    }
    let n_ads = ctx.rng.below(3);
    let (currency, _) = ctx.currency();
    let ads: Vec<Value> = (0..n_ads)
        .map(|i| {
            let (value, raw) = ctx.price();
            json!({
                "title": format!("{} {}", a.brands[i], ctx.topic),
                "url": format!("https://shop.example.com/{}/{}-{}", ctx.gl, ctx.slug, i + 1),
                "position": i + 1,
                // Reference §5.6: a price object, and `reviews` as a string.
                "price": {"value": value, "currency": currency, "raw": raw},
                "store": "Example Shop",
                "rating": ctx.rng.rating(35, 50),
                "reviews": (5 + ctx.rng.below(900)).to_string(),
                "imageUrl": format!("https://shop.example.com/img/{}-{}.jpg", ctx.slug, i + 1)
            })
        })
        .collect();
    m.put("ads", &json!({"title": "Sponsored", "ads": ads}));
    for key in ["inlineProducts", "videos", "map"] {
        m.put(key, EMPTY);
    }
    if ctx.inc.expand_products {
        let n = ctx.rng.range(1, MAX_PRODUCT_CLUSTERS as usize);
        let products: Vec<Value> = (0..n)
            .map(|i| product_result(ctx, a.brands[i % 3], i, currency))
            .collect();
        m.put("productResults", &products);
        *extra_credits = n as u32;
    }
    m.finish()
}

fn product_result(ctx: &mut Ctx, brand: &str, i: usize, currency: &str) -> Value {
    let (value, raw) = ctx.price();
    let id = format!("{:012x}", ctx.rng.next() & 0xffff_ffff_ffff);
    json!({
        "title": format!("{brand} {} #{}", ctx.topic, i + 1),
        "stores": [{
            "name": "Example Shop",
            "link": format!("https://shop.example.com/{}/p/{id}", ctx.gl),
            "price": {"value": value, "currency": currency, "raw": raw},
            "installments": "",
            "description": "Simulated store offer",
            "buyingOptions": [],
            "logo": "https://shop.example.com/logo.png",
            "shipping": "Free shipping",
            "condition": "New",
            "rating": ctx.rng.rating(35, 50),
            "reviews": 5 + ctx.rng.below(900)
        }],
        "aboutTheProduct": {
            "description": format!("Simulated product related to {}.", ctx.topic),
            "features": [format!("Made by {brand}")]
        },
        "specifications": {"General": {"Brand": brand}},
        "images": [{"mainUrl": format!("https://shop.example.com/img/{id}.jpg"),
                    "thumbnailUrl": format!("https://shop.example.com/img/{id}-t.jpg"),
                    "title": brand}],
        "rating": ctx.rng.rating(35, 50),
        "reviews": 5 + ctx.rng.below(900),
        "variants": [],
        "userReviews": [],
        "relatedProducts": []
    })
}
