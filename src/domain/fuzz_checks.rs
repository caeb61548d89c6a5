//! The checks behind the cargo-fuzz targets in `fuzz/` (one function per target, so the seed
//! corpus also runs as a plain test under `cargo test`, on stable, without cargo-fuzz).
//!
//! Each takes raw bytes from the fuzzer and panics only when a property is broken: the parsers
//! never panic, refusals always name a field and a message, and an accepted request's
//! normalised payload validates again to itself at the same price and reads back from its stored
//! form as the same typed payload.

use serde_json::Value;

use super::google_url::parse_google_search_url;
use super::request::{Payload, parse_task_request, validate_payload};
use super::types::TaskType;

/// `fuzz_targets/task_request.rs`: a request body, as `POST /v1/async/task` parses it.
pub fn task_request(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    match parse_task_request(&v) {
        Ok(req) => {
            assert!((1..=10).contains(&req.priority));
            let again = validate_payload(req.task_type, &req.payload, "payload")
                .map(|(p, c)| (p.into_stored(), c));
            assert_eq!(again, Ok((req.payload.clone(), req.credits_to_charge)));
            stored_round_trip(req.task_type, &req.payload);
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            assert!(errors.iter().all(|e| !e.message.is_empty()));
        }
    }
}

/// `fuzz_targets/payload.rs`: the first byte picks the engine, the rest is its payload.
pub fn payload(data: &[u8]) {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let task_type = TaskType::ALL[usize::from(*first) % TaskType::ALL.len()];
    let Ok(v) = serde_json::from_slice::<Value>(rest) else {
        return;
    };
    match validate_payload(task_type, &v, "payload") {
        Ok((typed, price)) => {
            assert!(price > 0);
            assert_eq!(typed.task_type(), task_type);
            let normalised = typed.into_stored();
            let again = validate_payload(task_type, &normalised, "payload")
                .map(|(p, c)| (p.into_stored(), c));
            assert_eq!(again, Ok((normalised.clone(), price)));
            stored_round_trip(task_type, &normalised);
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            assert!(errors.iter().all(|e| e.field.starts_with("payload")));
        }
    }
}

/// An accepted payload's stored JSON reads back as the same typed payload, which serialises
/// (serde) to the same JSON and bytes as [`Payload::into_stored`] built.
pub(crate) fn stored_round_trip(task_type: TaskType, stored: &Value) {
    let typed = match Payload::from_stored(task_type, stored) {
        Ok(p) => p,
        Err(e) => panic!("{stored} does not read back: {e}"),
    };
    assert_eq!(typed.task_type(), task_type);
    // What a claim hands the runner: the stored text, read typed with no tree in between.
    match Payload::from_stored_text(task_type, &crate::store::json_text(stored)) {
        Ok(p) => assert_eq!(p, typed, "{stored}: the text reads back otherwise"),
        Err(e) => panic!("{stored} does not read back from its text: {e}"),
    }
    let serialised = serde_json::to_string(&typed).expect("a payload serialises");
    assert_eq!(serialised, stored.to_string());
    assert_eq!(typed.into_stored(), *stored);
}

/// `fuzz_targets/google_url.rs`: a Google search URL as `payload.url` gives it.
pub fn google_url(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = parse_google_search_url(s);
    }
}

#[cfg(test)]
mod tests {
    /// Runs every file of `fuzz/corpus/<target>/` through its check.
    fn corpus(target: &str, check: fn(&[u8])) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("corpus directory") {
            let path = entry.expect("entry").path();
            check(&std::fs::read(&path).expect("corpus file"));
            n += 1;
        }
        assert!(n > 0, "empty corpus {}", dir.display());
    }

    #[test]
    fn the_task_request_corpus_passes() {
        corpus("task_request", super::task_request);
    }

    #[test]
    fn the_payload_corpus_passes() {
        corpus("payload", super::payload);
    }

    #[test]
    fn the_google_url_corpus_passes() {
        corpus("google_url", super::google_url);
    }
}
