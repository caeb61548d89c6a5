//! Black-box HTTP tests: one binary, one module per feature.

mod helpers;

mod auth;
mod batch;
mod monitor;
mod reference;
mod tasks;
mod webhooks;
