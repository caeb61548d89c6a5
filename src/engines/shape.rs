//! The published result shapes of reference §5 (`cloro-api.md` §5.1–5.8), as a checker: every
//! engine, simulated or real, must return exactly these fields with these JSON types. A test
//! runs each engine's results through [`check`]; a violation names its path (`sources[2].url:
//! expected a string, got null`).
//!
//! What is checked: the fields every result of a task type carries (and their types), the
//! optional ones when present (an optional field must be absent, never `null`, unless the shape
//! says `string|null`), and the item shapes that clients index into: sources, citation pills,
//! organic and news results, people-also-ask, related searches, the AI Overview, AI Mode's ads
//! object with its price objects and string `reviews`. Deep vendor blocks (knowledge graph,
//! shopping cards of ChatGPT and Copilot, maps) are checked as objects or arrays only.

use serde_json::Value;

use crate::domain::types::TaskType;

/// A JSON type, or a shape.
#[derive(Clone, Copy)]
enum Ty {
    Str,
    Num,
    /// A whole number (position, index).
    Int,
    Bool,
    /// A string or null (`model`).
    StrOrNull,
    Obj(&'static [Field]),
    Arr(&'static Ty),
    /// Any object (its contents are a vendor's and not checked here).
    AnyObj,
    /// Any value (opaque, e.g. `rawResponse`).
    Any,
}

/// Whether a field must be present.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
}

use Need::{Optional as O, Required as R};
use Ty::{Any, AnyObj, Arr, Bool, Int, Num, Obj, Str, StrOrNull};

type Field = (&'static str, Need, Ty);

const PRICE: Ty = Obj(&[("value", O, Num), ("currency", O, Str), ("raw", R, Str)]);

const SOURCE: Ty = Obj(&[
    ("position", R, Int),
    ("url", R, Str),
    ("label", R, Str),
    ("description", O, Str),
    ("footnote", O, Bool),
    ("datePublished", O, Str),
    ("redirectLink", O, Str),
]);

const PILL: Ty = Obj(&[
    ("url", R, Str),
    ("label", R, Str),
    ("description", O, Str),
    ("domain", R, Str),
    ("datePublished", O, Str),
    ("citationPillId", R, Int),
    ("type", O, Str),
    ("position", O, Int),
    ("redirectLink", O, Str),
]);

/// What every chat engine answers besides its sources (whose item shape differs for Grok):
/// the text and the include-driven extras. Each chat shape below is this plus its own fields.
const CHAT_BASE: &[Field] = &[
    ("text", R, Str),
    ("markdown", O, Str),
    ("html", O, Str),
    ("rawResponse", O, Any),
];

const CHATGPT: &[Field] = &[
    ("sources", R, Arr(&SOURCE)),
    ("searchQueries", O, Arr(&Str)),
    ("mapSearchQueries", O, Arr(&Str)),
    ("model", R, StrOrNull),
    ("shoppingCards", O, Arr(&AnyObj)),
    ("inlineProducts", O, Arr(&AnyObj)),
    (
        "entities",
        R,
        Arr(&Obj(&[("type", R, Str), ("name", R, Str)])),
    ),
    ("map", R, Arr(&AnyObj)),
    ("citationPills", R, Arr(&PILL)),
    ("ads", O, Arr(&AnyObj)),
];

const GEMINI: &[Field] = &[
    ("sources", R, Arr(&SOURCE)),
    ("citationPills", O, Arr(&PILL)),
    ("places", O, Arr(&AnyObj)),
    ("shoppingCards", O, Arr(&AnyObj)),
    ("searchQueries", O, Arr(&Str)),
    ("model", O, StrOrNull),
];

/// Grok's sources carry the page's metadata too (reference §5.3).
const GROK_SOURCE: Ty = Obj(&[
    ("position", R, Int),
    ("url", R, Str),
    ("label", R, Str),
    ("description", O, Str),
    ("preview", O, Str),
    ("searchEngineText", O, Str),
    ("siteName", O, Str),
    ("metadataTitle", O, Str),
    ("creator", O, Str),
    ("image", O, Str),
    ("favicon", O, Str),
]);

const GROK: &[Field] = &[
    ("sources", R, Arr(&GROK_SOURCE)),
    ("searchQueries", R, Arr(&Str)),
    ("model", R, StrOrNull),
];

const COPILOT: &[Field] = &[
    ("sources", R, Arr(&SOURCE)),
    ("citationPills", O, Arr(&PILL)),
    ("shoppingCards", O, Arr(&AnyObj)),
    ("map", O, Arr(&AnyObj)),
    ("searchQueries", R, Arr(&Str)),
    ("model", O, StrOrNull),
];

const PERPLEXITY: &[Field] = &[
    ("sources", R, Arr(&SOURCE)),
    ("citationPills", O, Arr(&PILL)),
    ("related_queries", R, Arr(&Str)),
    ("videos", R, Arr(&AnyObj)),
    ("images", R, Arr(&AnyObj)),
    ("hotels", R, Arr(&AnyObj)),
    ("places", R, Arr(&AnyObj)),
    ("shopping_cards", R, Arr(&AnyObj)),
    ("search_model_queries", R, Arr(&Str)),
    ("model", O, StrOrNull),
];

const AIMODE_AD: Ty = Obj(&[
    ("title", R, Str),
    ("url", R, Str),
    ("position", R, Int),
    ("price", O, PRICE),
    ("store", O, Str),
    ("rating", O, Num),
    ("reviews", O, Str),
    ("imageUrl", O, Str),
    ("redirectLink", O, Str),
]);

/// Shared Google sub-shape `ProductResult` (reference §5, after §5.8).
const PRODUCT_RESULT: Ty = Obj(&[
    ("title", R, Str),
    ("stores", R, Arr(&AnyObj)),
    ("aboutTheProduct", O, AnyObj),
    ("specifications", O, AnyObj),
    ("images", O, Arr(&AnyObj)),
    ("rating", O, Num),
    ("reviews", O, Num),
    ("variants", O, Arr(&Any)),
    ("userReviews", O, Arr(&Any)),
    ("relatedProducts", O, Arr(&Any)),
]);

const AIMODE: &[Field] = &[
    ("text", R, Str),
    ("sources", R, Arr(&SOURCE)),
    ("citationPills", O, Arr(&PILL)),
    ("markdown", O, Str),
    ("html", O, Str),
    ("places", R, Arr(&AnyObj)),
    (
        "shoppingCards",
        R,
        Arr(&Obj(&[
            ("title", R, Str),
            ("price", O, PRICE),
            ("store", O, Str),
            ("rating", O, Num),
            ("reviews", O, Str),
            ("position", R, Int),
        ])),
    ),
    (
        "ads",
        R,
        Obj(&[("title", R, Str), ("ads", R, Arr(&AIMODE_AD))]),
    ),
    ("inlineProducts", R, Arr(&AnyObj)),
    (
        "videos",
        R,
        Arr(&Obj(&[("title", R, Str), ("link", R, Str)])),
    ),
    ("map", R, Arr(&AnyObj)),
    ("productResults", O, Arr(&PRODUCT_RESULT)),
    ("model", O, StrOrNull),
];

const ORGANIC: Ty = Obj(&[
    ("position", R, Int),
    ("title", R, Str),
    ("link", R, Str),
    ("displayedLink", O, Str),
    ("snippet", O, Str),
    ("date", O, Str),
    ("page", R, Int),
    ("sitelinks", O, AnyObj),
    ("redirectLink", O, Str),
]);

const PAA: Ty = Obj(&[
    ("question", R, Str),
    ("type", R, Str),
    ("snippet", O, Str),
    ("title", O, Str),
    ("link", O, Str),
    ("markdown", O, Str),
    ("sources", O, Arr(&SOURCE)),
    ("redirectLink", O, Str),
]);

const AIOVERVIEW: Ty = Obj(&[
    ("sources", R, Arr(&SOURCE)),
    ("citationPills", O, Arr(&PILL)),
    ("relatedLinks", O, Arr(&AnyObj)),
    ("text", R, Str),
    ("markdown", O, Str),
    ("videos", O, Arr(&AnyObj)),
    ("places", O, Arr(&AnyObj)),
    ("map", O, Arr(&AnyObj)),
    ("ads", O, Arr(&AnyObj)),
]);

const GOOGLE: &[Field] = &[
    ("organicResults", R, Arr(&ORGANIC)),
    ("peopleAlsoAsk", R, Arr(&PAA)),
    ("peopleAreSaying", O, Arr(&AnyObj)),
    ("localResults", O, Arr(&AnyObj)),
    ("localResultsMoreLink", O, Str),
    (
        "relatedSearches",
        R,
        Arr(&Obj(&[("query", R, Str), ("link", O, Str)])),
    ),
    ("ads", R, Arr(&AnyObj)),
    ("aioverview", O, AIOVERVIEW),
    ("shoppingCards", O, Arr(&AnyObj)),
    ("knowledgeGraph", O, AnyObj),
    ("productResults", O, Arr(&AnyObj)),
    ("html", O, Arr(&Str)),
];

const NEWS: &[Field] = &[
    (
        "newsResults",
        R,
        Arr(&Obj(&[
            ("position", R, Int),
            ("title", R, Str),
            ("link", R, Str),
            ("snippet", O, Str),
            ("source", O, Str),
            ("date", O, Str),
            ("page", R, Int),
            ("thumbnail", O, Str),
            ("redirectLink", O, Str),
        ])),
    ),
    ("html", O, Arr(&Str)),
];

/// The top-level field by which every simulated result says it is one (SPEC §5).
const SIMULATED_MARKER: &str = "simulated";

/// The fields of a task type's result, in groups.
fn shape(t: TaskType) -> &'static [&'static [Field]] {
    match t {
        TaskType::Chatgpt => &[CHAT_BASE, CHATGPT],
        TaskType::Gemini => &[CHAT_BASE, GEMINI],
        TaskType::Grok => &[CHAT_BASE, GROK],
        TaskType::Copilot => &[CHAT_BASE, COPILOT],
        TaskType::Perplexity => &[CHAT_BASE, PERPLEXITY],
        TaskType::Aimode => &[AIMODE],
        TaskType::Google => &[GOOGLE],
        TaskType::GoogleNews => &[NEWS],
    }
}

/// Every way `result` departs from the published shape of `t` (empty: it conforms). Fields the
/// shape does not list are violations too: an engine adds nothing a client does not expect.
pub(crate) fn check(t: TaskType, result: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check_obj(shape(t), result, "", &mut out);
    out
}

fn check_obj(groups: &[&[Field]], v: &Value, path: &str, out: &mut Vec<String>) {
    let Some(map) = v.as_object() else {
        out.push(format!(
            "{}: expected an object, got {}",
            show(path),
            kind(v)
        ));
        return;
    };
    let fields = || groups.iter().flat_map(|g| g.iter());
    for (name, need, ty) in fields() {
        let p = if path.is_empty() {
            (*name).to_owned()
        } else {
            format!("{path}.{name}")
        };
        match map.get(*name) {
            None if *need == Need::Required => out.push(format!("{p}: missing")),
            None => {}
            Some(Value::Null) if !matches!(ty, StrOrNull | Any) => {
                out.push(format!(
                    "{p}: null (an absent optional field is omitted, never null)"
                ));
            }
            Some(value) => check_ty(*ty, value, &p, out),
        }
    }
    for key in map.keys() {
        // The simulator's marker (SPEC §5: every simulated result says so), additive.
        if path.is_empty() && key == SIMULATED_MARKER && map[key].is_boolean() {
            continue;
        }
        if !fields().any(|(name, _, _)| name == key) {
            out.push(format!("{}: not in the published shape", join(path, key)));
        }
    }
}

fn check_ty(ty: Ty, v: &Value, path: &str, out: &mut Vec<String>) {
    let ok = match ty {
        Str => v.is_string(),
        Num => v.is_number(),
        Int => v.is_u64() || v.is_i64(),
        Bool => v.is_boolean(),
        StrOrNull => v.is_string() || v.is_null(),
        AnyObj => v.is_object(),
        Any => true,
        Obj(fields) => {
            check_obj(&[fields], v, path, out);
            true
        }
        Arr(item) => match v.as_array() {
            Some(items) => {
                for (i, x) in items.iter().enumerate() {
                    check_ty(*item, x, &format!("{path}[{i}]"), out);
                }
                true
            }
            None => false,
        },
    };
    if !ok {
        out.push(format!("{path}: expected {}, got {}", name(ty), kind(v)));
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn show(path: &str) -> &str {
    if path.is_empty() { "result" } else { path }
}

fn name(ty: Ty) -> &'static str {
    match ty {
        Str => "a string",
        Num => "a number",
        Int => "a whole number",
        Bool => "a boolean",
        StrOrNull => "a string or null",
        Obj(_) | AnyObj => "an object",
        Arr(_) => "an array",
        Any => "anything",
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_conforming_result_passes_and_each_departure_is_named() {
        let ok = json!({"newsResults": [{"position": 1, "title": "t", "link": "https://a.example",
                         "page": 1}]});
        assert_eq!(check(TaskType::GoogleNews, &ok), Vec::<String>::new());
        let bad = json!({"newsResults": [{"position": "1", "title": "t", "page": 1,
                          "thumbnail": null}], "extra": 1});
        assert_eq!(
            check(TaskType::GoogleNews, &bad),
            vec![
                "newsResults[0].position: expected a whole number, got a string".to_owned(),
                "newsResults[0].link: missing".to_owned(),
                "newsResults[0].thumbnail: null (an absent optional field is omitted, never null)"
                    .to_owned(),
                "extra: not in the published shape".to_owned(),
            ]
        );
    }

    #[test]
    fn ai_mode_ads_need_price_objects_and_string_reviews() {
        let result = |price: Value, reviews: Value| {
            json!({"text": "", "sources": [], "places": [], "shoppingCards": [],
                   "ads": {"title": "Sponsored", "ads": [{"title": "a", "url": "https://a.example",
                   "position": 1, "price": price, "reviews": reviews}]},
                   "inlineProducts": [], "videos": [], "map": []})
        };
        assert!(
            check(
                TaskType::Aimode,
                &result(json!({"raw": "$5", "value": 5.0}), json!("12"))
            )
            .is_empty()
        );
        assert_eq!(
            check(TaskType::Aimode, &result(json!("$5"), json!(12))),
            vec![
                "ads.ads[0].price: expected an object, got a string".to_owned(),
                "ads.ads[0].reviews: expected a string, got a number".to_owned(),
            ]
        );
    }
}
