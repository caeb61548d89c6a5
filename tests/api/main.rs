//! Black-box HTTP tests: one binary, one module per feature.

mod helpers;

mod addon_credits;
mod auth;
mod batch;
mod bodies;
mod dashboard;
mod db_faults;
mod disk;
mod edge;
mod engines;
mod goto;
mod metrics;
mod monitor;
mod nul;
mod openapi;
mod pages;
mod panics;
mod reference;
mod sync;
mod tasks;
mod webhooks;
