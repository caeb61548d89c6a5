//! Domain types shared by every layer: task types and states, ids, API keys, plans, and the
//! request parser/validators ("parse, don't validate": what gets past them is well-formed).

pub mod apikey;
pub mod countries;
pub mod fuzz_checks;
pub mod google_url;
pub mod plan;
pub mod request;
pub mod task;
pub mod types;

#[cfg(test)]
mod hostile_tests;
