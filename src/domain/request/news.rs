//! Google News (GOOGLE_NEWS, reference §5.8): a query with the Google family's geo fields, a
//! device, a page depth and `include.html`; its validation and its typed form.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::super::countries::CountryModel;
use super::google::GOOGLE_DEVICES;
use super::payload::{Device, Payload, put_opt_bool, put_opt_str, put_str};
use super::pricing;
use super::validator::{MSG_PROVIDE_GL, MSG_QUERY_EMPTY, MSG_QUERY_LONG, Validator};

const NEWS_FIELDS: &[&str] = &["query", "country", "gl", "hl", "device", "pages", "include"];
const NEWS_INCLUDE: &[&str] = &["html"];

/// A validated Google News payload (stored as `{query, gl, country, hl?, device, pages,
/// include?}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NewsPayload {
    /// Trimmed, 1–10,000 characters.
    pub(crate) query: String,
    /// The resolved country, lowercase.
    pub(crate) gl: String,
    /// The same country, uppercase.
    pub(crate) country: String,
    /// Trimmed and lower-cased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hl: Option<String>,
    pub(crate) device: Device,
    /// 1..=10 (default 1).
    pub(crate) pages: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) include: Option<NewsInclude>,
}

/// Google News' `include` flags as sent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct NewsInclude {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) html: Option<bool>,
}

impl NewsPayload {
    pub(super) fn into_map(self) -> Map<String, Value> {
        let mut out = Map::new();
        put_str(&mut out, "query", self.query);
        put_str(&mut out, "gl", self.gl);
        put_str(&mut out, "country", self.country);
        put_opt_str(&mut out, "hl", self.hl);
        put_str(&mut out, "device", self.device.as_str().to_string());
        out.insert("pages".into(), Value::from(self.pages));
        if let Some(include) = self.include {
            let mut inc = Map::new();
            put_opt_bool(&mut inc, "html", include.html);
            out.insert("include".into(), Value::Object(inc));
        }
        out
    }
}

impl Validator<'_> {
    pub(super) fn google_news(&mut self, obj: &Map<String, Value>) -> Option<(Payload, u32)> {
        self.unknown(obj, NEWS_FIELDS);
        let query = self.text(obj, "query", MSG_QUERY_EMPTY, MSG_QUERY_LONG);
        let geo = self.geo_fields(obj, CountryModel::Google);
        if geo.gl.is_none() && geo.country.is_none() && geo.gl_ok && geo.country_ok {
            self.err("gl", MSG_PROVIDE_GL);
        }
        let device = self.device(obj, GOOGLE_DEVICES);
        let pages = self.pages(obj);
        let include = self.include(obj, NEWS_INCLUDE);
        let (query, device, pages, include) = match (query, device, pages, include) {
            (Some(q), Some(d), Ok(p), Ok(i)) if geo.gl_ok && geo.country_ok => (q, d, p, i),
            _ => return None,
        };
        let resolved = geo.explicit()?;
        let pages = pages.unwrap_or(1);
        let payload = NewsPayload {
            query,
            gl: resolved.to_lowercase(),
            country: resolved.to_uppercase(),
            hl: geo.hl,
            device,
            pages: u32::try_from(pages).unwrap_or(1),
            include: include.map(|f| NewsInclude {
                html: f.get("html"),
            }),
        };
        Some((Payload::News(payload), pricing::pages(pages)))
    }
}
