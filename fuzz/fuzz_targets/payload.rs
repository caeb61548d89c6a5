//! `cargo +nightly fuzz run payload` (see the README): the check is `cloro::domain::fuzz_checks::payload`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloro::domain::fuzz_checks::payload(data));
