//! `GET /v1/countries[?model=]` and `GET /v1/states?country=`.

use axum::Json;
use axum::extract::RawQuery;

use super::error::ApiError;
use super::extract::Auth;
use crate::domain::countries::{CountryModel, US_STATES, countries_for};
use crate::domain::types::FieldError;
use crate::wire::{ErrorEnvelope, UsState};

const MODELS: &str = "aimode, aioverview, chatgpt, copilot, gemini, google, grok, perplexity";

fn param(query: &Option<String>, name: &str) -> Option<String> {
    let q = query.as_deref()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[utoipa::path(get, path = "/v1/countries", tag = "reference", operation_id = "getCountries",
    summary = "Supported ISO 3166-1 country codes, for every engine or one",
    params(("model" = Option<String>, Query, description = "aimode, aioverview, chatgpt, copilot, gemini, google, grok or perplexity")),
    responses(
        (status = 200, description = "Country codes", body = Vec<String>),
        (status = 400, description = "Unknown model", body = ErrorEnvelope),
    ))]
pub(crate) async fn countries(
    Auth(_): Auth,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<&'static str>>, ApiError> {
    let model = match param(&query, "model") {
        None => None,
        Some(m) => Some(CountryModel::parse(&m).ok_or_else(|| {
            ApiError::validation(&[FieldError::new(
                "model",
                format!("Invalid model {m:?}; expected one of: {MODELS}"),
            )])
        })?),
    };
    Ok(Json(countries_for(model)))
}

#[utoipa::path(get, path = "/v1/states", tag = "reference", operation_id = "getStates",
    summary = "US states for state targeting (empty for other countries)",
    params(("country" = String, Query, description = "2-letter uppercase country code, e.g. US")),
    responses(
        (status = 200, description = "States", body = Vec<UsState>),
        (status = 400, description = "Missing or invalid country", body = ErrorEnvelope),
    ))]
pub(crate) async fn states(
    Auth(_): Auth,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<UsState>>, ApiError> {
    let country = param(&query, "country").ok_or_else(|| {
        ApiError::validation(&[FieldError::new(
            "country",
            "Invalid input: expected string, received undefined",
        )])
    })?;
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(ApiError::validation(&[FieldError::new(
            "country",
            "country must be a 2-letter uppercase ISO 3166-1 code, e.g. US",
        )]));
    }
    let list = if country == "US" {
        US_STATES
            .iter()
            .map(|&(code, name)| UsState { code, name })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Json(list))
}
