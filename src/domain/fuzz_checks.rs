//! The checks behind the cargo-fuzz targets in `fuzz/` (one function per target, so the seed
//! corpus also runs as a plain test under `cargo test`, on stable, without cargo-fuzz).
//!
//! Each takes raw bytes from the fuzzer and panics only when a property is broken: the parsers
//! never panic, refusals always name a field and a message, and an accepted request's
//! normalised payload validates again to itself at the same price.

use serde_json::Value;

use super::request::{parse_google_search_url, parse_task_request, validate_payload};
use super::types::TaskType;

/// `fuzz_targets/task_request.rs`: a request body, as `POST /v1/async/task` parses it.
pub fn task_request(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    match parse_task_request(&v) {
        Ok(req) => {
            assert!((1..=10).contains(&req.priority));
            let again = validate_payload(req.task_type, &req.payload, "payload");
            assert_eq!(again, Ok((req.payload.clone(), req.credits_to_charge)));
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
        Ok((normalised, price)) => {
            assert!(price > 0);
            let again = validate_payload(task_type, &normalised, "payload");
            assert_eq!(again, Ok((normalised, price)));
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            assert!(errors.iter().all(|e| e.field.starts_with("payload")));
        }
    }
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
