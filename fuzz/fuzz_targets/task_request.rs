//! `cargo +nightly fuzz run task_request` (see the README): the check is `cloro::domain::fuzz_checks::task_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloro::domain::fuzz_checks::task_request(data));
