//! Google Search (GOOGLE, reference §5.7) in its two forms: a `query` with explicit geo,
//! location, device and pages, or a caller's Google search `url` whose parameters the payload
//! takes over (`query`, `gl`/`country`, `hl`, `uule`, `pages`, as the public API's transform
//! does); its validation, its typed form and the `include.aioverview` options.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::super::countries::{self, CountryModel};
use super::super::google_url::{GoogleSearchUrl, parse_google_search_url};
use super::payload::{Device, Payload, put_opt_bool, put_opt_str, put_str};
use super::pricing;
use super::validator::{
    MSG_BLOCKED_COUNTRY, MSG_PROVIDE_GL, MSG_QUERY_EMPTY, MSG_QUERY_LONG, Validator, trim_text,
};

const GOOGLE_FIELDS: &[&str] = &[
    "query", "url", "country", "gl", "hl", "location", "uule", "device", "pages", "include",
];
const GOOGLE_INCLUDE: &[&str] = &["html", "aioverview", "paaAioverview", "googleGoto"];
/// The devices of Google Search and Google News.
pub(super) const GOOGLE_DEVICES: &[&str] = &["desktop", "mobile", "ios", "android"];

const MSG_QUERY_OR_URL: &str = "Provide either query or url";
const MSG_PROVIDE_GL_OR_URL_GL: &str = "Provide gl, or include gl= in the url so it can be derived";

/// A validated Google Search payload (stored as `{query, url?, gl, country, hl?, location?,
/// uule?, device, pages, include?}`). In url form `query`, the country, `hl`, `uule` and
/// `pages` are the URL's (explicit values may only repeat them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct GooglePayload {
    /// Trimmed, 1–10,000 characters (the URL's `q` in url form).
    pub(crate) query: String,
    /// The caller's Google search URL (trimmed), in url form only; see
    /// [`GooglePayload::url_params`] for the parameters the stored fields do not carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) url: Option<String>,
    /// The resolved country, lowercase.
    pub(crate) gl: String,
    /// The same country, uppercase.
    pub(crate) country: String,
    /// Trimmed and lower-cased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hl: Option<String>,
    /// A canonical location name; never together with `uule`, never in url form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) location: Option<String>,
    /// An encoded location token; never together with `location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) uule: Option<String>,
    pub(crate) device: Device,
    /// 1..=10 (default 1; in url form `ceil(num / 10)`).
    pub(crate) pages: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) include: Option<GoogleInclude>,
}

/// Google Search's `include` options as sent (`googleGoto` is accepted and dropped).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GoogleInclude {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) html: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) aioverview: Option<Aioverview>,
    /// AI overviews inside "People also ask".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) paa_aioverview: Option<bool>,
}

/// `include.aioverview`: a flag, or an options object (which enables it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Aioverview {
    Flag(bool),
    Options(AioverviewOptions),
}

/// The options object of `include.aioverview`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct AioverviewOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) markdown: Option<bool>,
}

impl Aioverview {
    /// Enabled: `true` or an options object.
    pub(crate) fn enabled(&self) -> bool {
        matches!(self, Aioverview::Flag(true) | Aioverview::Options(_))
    }

    /// `aioverview.markdown` was sent as `true`.
    pub(crate) fn markdown(&self) -> bool {
        matches!(
            self,
            Aioverview::Options(AioverviewOptions {
                markdown: Some(true)
            })
        )
    }
}

impl GoogleInclude {
    /// The AI overview is asked for (`true` or an options object).
    pub(crate) fn aioverview_enabled(&self) -> bool {
        self.aioverview.as_ref().is_some_and(Aioverview::enabled)
    }
}

impl GooglePayload {
    /// The parameters of the url form (`start`, `tbs`, `safe` besides the stored ones),
    /// parsed again from the stored `url` with the validator's parser; `None` in query form.
    #[expect(
        dead_code,
        reason = "for the real Google adapters, the next issue (see domain::google_url)"
    )]
    pub(crate) fn url_params(&self) -> Option<GoogleSearchUrl> {
        self.url
            .as_deref()
            .and_then(|u| parse_google_search_url(u).ok())
    }

    pub(super) fn into_map(self) -> Map<String, Value> {
        let mut out = Map::new();
        put_str(&mut out, "query", self.query);
        put_opt_str(&mut out, "url", self.url);
        put_str(&mut out, "gl", self.gl);
        put_str(&mut out, "country", self.country);
        put_opt_str(&mut out, "hl", self.hl);
        put_opt_str(&mut out, "location", self.location);
        put_opt_str(&mut out, "uule", self.uule);
        put_str(&mut out, "device", self.device.as_str().to_string());
        out.insert("pages".into(), Value::from(self.pages));
        if let Some(include) = self.include {
            let mut inc = Map::new();
            put_opt_bool(&mut inc, "html", include.html);
            match include.aioverview {
                None => {}
                Some(Aioverview::Flag(b)) => {
                    inc.insert("aioverview".into(), Value::Bool(b));
                }
                Some(Aioverview::Options(o)) => {
                    let mut aio = Map::new();
                    put_opt_bool(&mut aio, "markdown", o.markdown);
                    inc.insert("aioverview".into(), Value::Object(aio));
                }
            }
            put_opt_bool(&mut inc, "paaAioverview", include.paa_aioverview);
            out.insert("include".into(), Value::Object(inc));
        }
        out
    }
}

fn url_owns(field: &str) -> String {
    format!("Cannot set both url and {field}; the URL owns this value")
}

impl Validator<'_> {
    pub(super) fn google(&mut self, obj: &Map<String, Value>) -> Option<(Payload, u32)> {
        self.unknown(obj, GOOGLE_FIELDS);
        let mut ok = true;

        // Field-level checks.
        let query_present = obj.contains_key("query");
        let query = if query_present {
            let q = self.text(obj, "query", MSG_QUERY_EMPTY, MSG_QUERY_LONG);
            ok &= q.is_some();
            q
        } else {
            None
        };
        let url_present = obj.contains_key("url");
        let url = match self.opt_str(obj, "url") {
            Ok(u) => u.map(|u| trim_text(u).to_string()),
            Err(()) => {
                ok = false;
                None
            }
        };
        let geo = self.geo_fields(obj, CountryModel::Google);
        ok &= geo.gl_ok && geo.country_ok;
        let (location, uule, loc_ok) = self.location_uule(obj);
        ok &= loc_ok;
        let device = self.device(obj, GOOGLE_DEVICES);
        ok &= device.is_some();
        let pages = self.pages(obj);
        ok &= pages.is_ok();
        let include = self.include(obj, GOOGLE_INCLUDE);
        ok &= include.is_ok();

        // Mode-level checks.
        if !query_present && !url_present {
            self.err("query", MSG_QUERY_OR_URL);
            return None;
        }
        let mut derived: Option<GoogleSearchUrl> = None;
        if let Some(raw) = &url {
            let parsed = parse_google_search_url(raw);
            let p = parsed.as_ref().ok();
            // Fields the URL owns: an identical value is the URL's own value round-tripping.
            if query_present && query.is_some() && query.as_deref() != p.map(|p| p.query.as_str()) {
                self.err("query", url_owns("query"));
                ok = false;
            }
            if location.is_some() {
                self.err("location", url_owns("location"));
                ok = false;
            }
            if uule.is_some() && uule.as_deref() != p.and_then(|p| p.uule.as_deref()) {
                self.err("uule", url_owns("uule"));
                ok = false;
            }
            if let Ok(Some(n)) = pages
                && Some(n) != p.map(|p| i64::from(p.pages))
            {
                self.err("pages", url_owns("pages"));
                ok = false;
            }
            match parsed {
                Err(reason) => {
                    self.err("url", reason.message());
                    return None;
                }
                Ok(parsed) => {
                    if let (Some(hl), Some(lang)) = (&geo.hl, &parsed.language)
                        && hl != lang
                    {
                        self.err("hl", url_owns("hl"));
                        ok = false;
                    }
                    if let Some(explicit) = geo.explicit() {
                        if parsed.country.as_ref().is_some_and(|c| *c != explicit) {
                            let field = geo.explicit_field();
                            self.err(field, url_owns(field));
                            ok = false;
                        }
                    } else {
                        match &parsed.country {
                            None => {
                                self.err("gl", MSG_PROVIDE_GL_OR_URL_GL);
                                ok = false;
                            }
                            Some(c) if !countries::is_known_country(c) => {
                                self.err(
                                    "gl",
                                    format!(
                                        "Derived country \"{c}\" from the url's gl is not supported; pass a supported gl explicitly"
                                    ),
                                );
                                ok = false;
                            }
                            Some(_) => {}
                        }
                    }
                    derived = Some(parsed);
                }
            }
        } else if !url_present
            && geo.gl.is_none()
            && geo.country.is_none()
            && geo.gl_ok
            && geo.country_ok
        {
            self.err("gl", MSG_PROVIDE_GL);
            ok = false;
        }
        if !ok {
            return None;
        }
        let (device, include) = (device?, include.ok()?);

        // Resolve geo, pages and the query.
        let resolved = geo
            .explicit()
            .or_else(|| derived.as_ref().and_then(|d| d.country.clone()))?;
        let include = include.map(|f| GoogleInclude {
            html: f.get("html"),
            paa_aioverview: f.get("paaAioverview"),
            aioverview: f.aioverview,
        });
        let aioverview = include
            .as_ref()
            .is_some_and(GoogleInclude::aioverview_enabled);
        let paa = include
            .as_ref()
            .is_some_and(|i| i.paa_aioverview == Some(true));
        if aioverview && CountryModel::Aioverview.is_blocked(&resolved) {
            let field = if geo.explicit().is_some() {
                geo.explicit_field()
            } else {
                "gl"
            };
            self.err(field, MSG_BLOCKED_COUNTRY);
            return None;
        }
        let (query, url, pages) = match &derived {
            Some(d) => (
                d.query.clone(),
                Some(url.unwrap_or_default()),
                i64::from(d.pages),
            ),
            None => (query?, None, pages.ok().flatten().unwrap_or(1)),
        };
        let hl = geo
            .hl
            .or_else(|| derived.as_ref().and_then(|d| d.language.clone()));
        let uule = uule.or_else(|| derived.as_ref().and_then(|d| d.uule.clone()));
        let payload = GooglePayload {
            query,
            url,
            gl: resolved.to_lowercase(),
            country: resolved.to_uppercase(),
            hl,
            location,
            uule,
            device,
            pages: u32::try_from(pages).unwrap_or(1),
            include,
        };
        let credits = pricing::google(pages, aioverview || paa);
        Some((Payload::Google(payload), credits))
    }
}
