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
//! * [`webhooks`]: the sender of signed, retried completion notifications (the store keeps
//!   their outbox).
//! * [`worker`]: what the dispatcher and the sender share: the claim loop, the pause gate,
//!   the backoff schedules; [`clock`]: the injected wall clock.
//! * [`api`]: the HTTP routes, extractors and the error envelope; [`auth`]: API keys.
//! * [`app`]: wiring and lifecycle (start, graceful shutdown); [`config`]: the command line;
//!   [`cli`]: the administrative commands; [`bench`]: the benchmark; [`testing`]: throw-away
//!   databases for tests and the benchmark.

pub mod api;
pub mod app;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod engines;
pub mod queue;
pub mod store;
pub mod testing;
pub mod time_fmt;
pub mod webhooks;
pub mod worker;
