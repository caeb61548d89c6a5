//! `GET /v1/countries[?model=]` and `GET /v1/states?country=`.

use axum::extract::RawQuery;
use axum::response::Response;
use serde_json::{Value, json};

use super::error::ApiError;
use super::{Auth, ok};
use crate::domain::countries::{CountryModel, US_STATES, countries_for};
use crate::domain::types::FieldError;

const MODELS: &str = "aimode, aioverview, chatgpt, copilot, gemini, google, grok, perplexity";

fn param(query: &Option<String>, name: &str) -> Option<String> {
    let q = query.as_deref()?;
    url::form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

pub async fn countries(Auth(_): Auth, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let model = match param(&query, "model") {
        None => None,
        Some(m) => Some(CountryModel::parse(&m).ok_or_else(|| {
            ApiError::validation(&[FieldError::new(
                "model",
                format!("Invalid model {m:?}; expected one of: {MODELS}"),
            )])
        })?),
    };
    Ok(ok(Value::from(countries_for(model))))
}

pub async fn states(Auth(_): Auth, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
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
    let list: Vec<Value> = if country == "US" {
        US_STATES
            .iter()
            .map(|(code, name)| json!({ "code": code, "name": name }))
            .collect()
    } else {
        Vec::new()
    };
    Ok(ok(Value::Array(list)))
}
