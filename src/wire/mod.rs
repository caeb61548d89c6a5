//! The JSON shapes cloro speaks, over HTTP and in webhook bodies: one `Serialize` + `ToSchema`
//! type per answer, so that what a handler writes, what a webhook receiver gets and what
//! `/openapi.json` promises are the same Rust type and cannot drift apart.
//!
//! Why a module of its own (and not in `api`): the webhook sender posts the task-status answer
//! ([`GetTaskResponse`] without its `webhook` block), and `webhooks` must not depend on `api`
//! (the HTTP layer sits on top of the queue, which drives the sender). Both depend on `wire`
//! instead; `wire` depends only on the data it renders (`store::TaskRecord`, `domain`) and on
//! [`crate::time_fmt`], never on axum.
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
mod health;
mod queue;
mod reference;
mod task;

pub use account::CreditsResponse;
pub use error::{ErrorBody, ErrorEnvelope};
pub use health::Health;
pub use queue::{ClearQueueResponse, Concurrency, PriorityCount, StatusResponse};
pub use reference::UsState;
pub use task::{
    BatchItem, BatchResponse, BatchSummary, CreateTaskResponse, GetTaskResponse, Task, TaskCredits,
    WebhookStatus,
};

#[cfg(test)]
mod tests;
