//! Helpers shared by the request parser's test files.

pub(super) use super::super::types::{FieldError, TaskType};
pub(super) use super::{TaskRequest, parse_task_request, validate_payload};
pub(super) use serde_json::{Value, json};

use super::super::fuzz_checks::stored_round_trip;

/// `validate_payload` with the payload in its stored form (as the tests compare JSON).
pub(super) fn validate(
    task_type: TaskType,
    payload: &Value,
    prefix: &str,
) -> Result<(Value, u32), Vec<FieldError>> {
    let (typed, credits) = validate_payload(task_type, payload, prefix)?;
    let stored = typed.into_stored();
    stored_round_trip(task_type, &stored);
    Ok((stored, credits))
}

pub(super) fn parse(v: Value) -> Result<TaskRequest, Vec<FieldError>> {
    parse_task_request(&v)
}

pub(super) fn ok(v: Value) -> TaskRequest {
    match parse(v.clone()) {
        Ok(r) => {
            // Every accepted payload reads back from its stored form as the same typed payload.
            stored_round_trip(r.task_type, &r.payload);
            r
        }
        Err(e) => panic!("expected {v} to be valid, got {e:?}"),
    }
}

pub(super) fn errs(v: Value) -> Vec<FieldError> {
    match parse(v.clone()) {
        Ok(r) => panic!("expected {v} to be invalid, got {r:?}"),
        Err(e) => e,
    }
}

pub(super) fn task(task_type: &str, payload: Value) -> Value {
    json!({ "taskType": task_type, "payload": payload })
}

pub(super) fn price(task_type: &str, payload: Value) -> u32 {
    ok(task(task_type, payload)).credits_to_charge
}

/// The only error of an invalid request, as `(field, message)`.
pub(super) fn single(v: Value) -> (String, String) {
    let e = errs(v);
    assert_eq!(e.len(), 1, "expected exactly one error, got {e:?}");
    (e[0].field.clone(), e[0].message.clone())
}

pub(super) fn has(e: &[FieldError], field: &str, message: &str) -> bool {
    e.iter().any(|x| x.field == field && x.message == message)
}

pub(super) fn fields(e: &[FieldError]) -> Vec<&str> {
    e.iter().map(|x| x.field.as_str()).collect()
}

pub(super) const UNKNOWN: &str = "We currently do not support this country code. If you'd like us to add support, please reach out to our support team and we will implement it.";
pub(super) const BLOCKED: &str =
    "This model is not available in this country. Please select a different country.";
pub(super) const UNDEFINED_STRING: &str = "Invalid input: expected string, received undefined";
