//! Google AI Mode (AIMODE, reference §5.6): a prompt with the Google family's geo fields
//! (`gl`/`country`, `hl`, `location` or `uule`), a device and its include flags; its
//! validation and its typed form.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::super::countries::CountryModel;
use super::payload::{Device, Payload, put_opt_bool, put_opt_str, put_str};
use super::pricing;
use super::validator::{MSG_PROVIDE_GL, Validator};

const AIMODE_FIELDS: &[&str] = &[
    "prompt", "country", "gl", "hl", "location", "uule", "device", "include",
];
const AIMODE_INCLUDE: &[&str] = &["html", "markdown", "expandProducts", "googleGoto"];
const AIMODE_DEVICES: &[&str] = &["desktop", "mobile"];

/// A validated AI Mode payload (stored as `{prompt, gl, country, hl?, location?, uule?,
/// device, include?}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct AiModePayload {
    /// Trimmed, 1–10,000 characters.
    pub(crate) prompt: String,
    /// The resolved country, lowercase (`gl` or the deprecated `country` as sent).
    pub(crate) gl: String,
    /// The same country, uppercase.
    pub(crate) country: String,
    /// Trimmed and lower-cased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hl: Option<String>,
    /// A canonical location name; never together with `uule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) location: Option<String>,
    /// An encoded location token; never together with `location`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) uule: Option<String>,
    /// `desktop` (default) or `mobile`.
    pub(crate) device: Device,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) include: Option<AiModeInclude>,
}

/// AI Mode's `include` flags as sent (`googleGoto` is accepted and dropped).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AiModeInclude {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) html: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) markdown: Option<bool>,
    /// Expand product clusters (billed per cluster returned, after the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) expand_products: Option<bool>,
}

impl AiModePayload {
    pub(super) fn into_map(self) -> Map<String, Value> {
        let mut out = Map::new();
        put_str(&mut out, "prompt", self.prompt);
        put_str(&mut out, "gl", self.gl);
        put_str(&mut out, "country", self.country);
        put_opt_str(&mut out, "hl", self.hl);
        put_opt_str(&mut out, "location", self.location);
        put_opt_str(&mut out, "uule", self.uule);
        put_str(&mut out, "device", self.device.as_str().to_string());
        if let Some(include) = self.include {
            let mut inc = Map::new();
            put_opt_bool(&mut inc, "html", include.html);
            put_opt_bool(&mut inc, "markdown", include.markdown);
            put_opt_bool(&mut inc, "expandProducts", include.expand_products);
            out.insert("include".into(), Value::Object(inc));
        }
        out
    }
}

impl Validator<'_> {
    pub(super) fn aimode(&mut self, obj: &Map<String, Value>) -> Option<(Payload, u32)> {
        self.unknown(obj, AIMODE_FIELDS);
        let prompt = self.prompt(obj);
        let geo = self.geo_fields(obj, CountryModel::Aimode);
        if geo.gl.is_none() && geo.country.is_none() && geo.gl_ok && geo.country_ok {
            self.err("gl", MSG_PROVIDE_GL);
        }
        let (location, uule, loc_ok) = self.location_uule(obj);
        let device = self.device(obj, AIMODE_DEVICES);
        let include = self.include(obj, AIMODE_INCLUDE);
        let (prompt, device, include) = match (prompt, device, include) {
            (Some(p), Some(d), Ok(i)) if loc_ok && geo.gl_ok && geo.country_ok => (p, d, i),
            _ => return None,
        };
        let resolved = geo.explicit()?;
        let payload = AiModePayload {
            prompt,
            gl: resolved.to_lowercase(),
            country: resolved.to_uppercase(),
            hl: geo.hl,
            location,
            uule,
            device,
            include: include.map(|f| AiModeInclude {
                html: f.get("html"),
                markdown: f.get("markdown"),
                expand_products: f.get("expandProducts"),
            }),
        };
        Some((Payload::AiMode(payload), pricing::AIMODE))
    }
}
