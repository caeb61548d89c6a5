//! The runtime pieces the dispatcher ([`crate::queue`]) and the webhook sender
//! ([`crate::webhooks`]) share, so that neither imports the other.
//!
//! * [`claim_loop`]: the one loop both run: "claim up to N, run each on its own Tokio task, back
//!   off on store errors, sleep until woken, due or cancelled". Each caller only says what is
//!   specific to it (what it claims, how it runs an item, when the next item is due, how it
//!   paces itself).
//! * [`Gate`]: pauses and resumes the dispatcher and counts the attempts it finished (the
//!   sender reads that count to let the task queue have the CPU first).
//! * [`backoff`]: the delay schedules: the durable retry of a task or a delivery (`base·2^(n-1)`)
//!   and the doubling waits after a store error.
//!
//! Durations are slept on `tokio::time` (tests pause it); wall-clock times (due times) are read
//! from a [`crate::clock::Clock`] handed in.

pub(crate) mod backoff;
pub(crate) mod claim_loop;
mod gate;

pub(crate) use gate::Gate;

/// The message a caught panic carried (`panic!("…")` gives a `&str` or a `String`), for the
/// log line that reports it.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}
