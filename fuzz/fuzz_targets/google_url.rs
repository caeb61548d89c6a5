//! `cargo +nightly fuzz run google_url` (see the README): the check is `cloro::domain::fuzz_checks::google_url`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloro::domain::fuzz_checks::google_url(data));
