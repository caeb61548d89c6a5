//! cloro: a self-hostable server, wire-compatible with the public cloro API, whose heart is a
//! durable, multi-tenant, priority-ordered task queue.
//!
//! Module map (dependencies point one way: `api → queue → store`; everything uses `domain`):
//!
//! * [`domain`]: task types and states, ids, API keys, plans, request parsing and validation.
//! * [`store`]: the durable store contract ([`store::Store`]) and the embedded SQLite store with
//!   its in-memory ready index.
//! * [`queue`]: the dispatcher that claims tasks, runs them on engines, retries and purges.
//! * [`engines`]: the [`engines::Engine`] trait and the deterministic simulated engine.
//! * [`pages`]: the result pages of `include.html`, served by cloro itself (links, matching,
//!   rendering; the route is `api::pages`).
//! * [`webhooks`]: the sender of signed, retried completion notifications (the store keeps
//!   their outbox).
//! * [`worker`]: what the dispatcher and the sender share: the claim loop, the pause gate,
//!   the backoff schedules.
//! * [`api`]: the HTTP routes, extractors and the error envelope; [`auth`]: API keys.
//! * [`wire`]: the JSON shapes cloro speaks (HTTP answers, webhook bodies, the OpenAPI schemas).
//! * [`app`]: wiring and lifecycle (start, graceful shutdown); [`config`]: the command line;
//!   [`cli`]: the administrative commands; [`submit`]: `cloro submit`, a bulk loader over
//!   HTTP; [`clock`]: the injected wall clock; `testing` (the `testing` feature, on for this
//!   package's own tests): throw-away databases for tests.
//!   The benchmark, `cloro bench`, is part of the binary (`src/bench/`), not of the library.
//!
//! Items are `pub(crate)` unless the binary, the integration tests (`tests/`) or the fuzz targets
//! (`fuzz/`) use them; the docs of what stays `pub` may link to crate-private items.

#![allow(rustdoc::private_intra_doc_links)]

pub mod api;
pub mod app;
pub(crate) mod auth;
pub mod cli;
pub mod cli_admin;
pub mod clock;
pub mod config;
pub mod domain;
pub mod engines;
pub mod metrics;
pub mod pages;
pub mod queue;
pub mod store;
pub mod submit;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod time_fmt;
pub mod webhooks;
pub(crate) mod wire;
pub mod worker;
