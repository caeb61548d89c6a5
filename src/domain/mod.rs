//! Domain types shared by every layer: task types and states, ids, API keys, plans, and the
//! request parser/validators ("parse, don't validate": what gets past them is well-formed).
//!
//! Module map:
//! - [`types`]: the task types and a field-level validation error;
//! - [`task`]: task ids and states; [`apikey`]: API keys; [`plan`]: plans;
//! - [`countries`]: the country and US-state lists, and which engine is blocked where;
//! - [`request`]: one task request (the envelope) and one payload per engine family, validated
//!   into a typed [`request::Payload`] (what the engines consume; stored as its normalised
//!   JSON), plus pricing;
//! - [`google_url`]: the one Google search-URL parser and percent-decoder (Google's `url` form);
//! - [`goto`]: Google redirect links (`/url`, `/goto`) and the destinations they carry;
//! - [`fuzz_checks`]: the properties behind the `fuzz/` targets (also run on their corpus as
//!   tests); `hostile_tests`: property tests over arbitrary JSON;
//! - [`usage`]: what an upstream used for an attempt (tokens, searches), summed per task.

pub mod apikey;
pub mod countries;
pub mod fuzz_checks;
pub(crate) mod google_url;
pub(crate) mod goto;
pub(crate) mod plan;
pub(crate) mod request;
pub mod task;
pub mod types;
pub mod usage;

#[cfg(test)]
mod hostile_tests;
