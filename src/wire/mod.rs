//! The JSON shapes cloro speaks, over HTTP and in webhook bodies: one `Serialize` + `ToSchema`
//! type per answer, so that what a handler writes, what a webhook receiver gets and what
//! `/openapi.json` promises are the same Rust type and cannot drift apart.
//!
//! Why a module of its own (and not in `api`): the webhook sender posts the task-status answer
//! ([`GetTaskResponse`] without its `webhook` block), and `webhooks` must not depend on `api`
//! (dependencies point inward from the HTTP edge; a background component reaching into a
//! handler's module is what this module replaces). Both depend on `wire` instead; `wire`
//! depends only on the records it renders (`store::TaskRecord`, `store::QueueStatus`,
//! `store::Org`, `domain`) and on [`crate::time_fmt`], never on axum or on the store's
//! behaviour.
//!
//! The bytes are part of the contract (`tests/api/bodies.rs` pins them): fields are written in
//! declaration order, an `Option` that the API shows as `null` is a plain field (marked
//! `required` in the document) while one that is absent when empty carries
//! `skip_serializing_if`, and times are RFC 3339 with three fraction digits
//! ([`crate::time_fmt::format_ms`]). Error envelopes ([`ErrorEnvelope`]) are built only by
//! `api::error::ApiError`, which knows the codes and statuses.
//!
//! What the document needs beyond these types (the enums of codes, task types and states, the
//! `const` of `success`) is added after generation by `api::openapi::document`.

mod account;
mod error;
mod goto;
mod health;
mod monitor;
mod queue;
mod reference;
mod task;

pub(crate) use account::CreditsResponse;
pub(crate) use error::{ErrorBody, ErrorEnvelope};
pub(crate) use goto::{GotoRequest, GotoResponse};
pub(crate) use health::{EngineHealth, Health};
pub(crate) use monitor::MonitorResponse;
pub(crate) use queue::{ClearQueueResponse, StatusResponse};
pub(crate) use reference::UsState;
pub(crate) use task::{BatchItem, BatchResponse, CreateTaskResponse, GetTaskResponse};

#[cfg(test)]
mod tests;
