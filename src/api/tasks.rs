//! `POST /v1/async/task`, `POST /v1/async/task/batch`, `GET /v1/async/task/{taskId}`.

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::{ApiError, field_errors};
use super::{AppState, Auth, JsonBody, SharedState, ok};
use crate::domain::request::{TaskRequest, parse_task_request};
use crate::domain::types::FieldError;
use crate::store::{ItemError, NewTask, SubmitError, TaskRecord};
use crate::time_fmt::format_ms;

/// Most tasks in one batch.
pub const MAX_BATCH: usize = 500;

fn new_task(r: TaskRequest) -> NewTask {
    NewTask {
        task_type: r.task_type,
        payload: r.payload,
        priority: r.priority,
        idempotency_key: r.idempotency_key,
        webhook_url: r.webhook_url,
        credits_to_charge: i64::from(r.credits_to_charge),
    }
}

/// The task summary (public fields plus `startedAt`, `completedAt`, `attempts`).
pub fn summary(t: &TaskRecord) -> Value {
    json!({
        "id": t.id.to_string(),
        "taskType": t.task_type.as_str(),
        "status": t.status.as_str(),
        "priority": t.priority,
        "createdAt": format_ms(t.created_ms),
        "latencyMs": t.latency_ms(),
        "idempotencyKey": t.idempotency_key,
        "startedAt": t.started_ms.map(format_ms),
        "completedAt": t.finished_ms.filter(|_| t.status.is_terminal()).map(format_ms),
        "attempts": t.attempts,
    })
}

pub fn credits(t: &TaskRecord) -> Value {
    json!({
        "creditsToCharge": t.credits_to_charge,
        "creditsCharged": if t.status.is_terminal() { t.credits_charged.or(Some(0)) } else { None },
    })
}

fn item_error(e: &ItemError) -> ApiError {
    match e {
        ItemError::DuplicateKey(k) => ApiError::new("RESOURCE_ALREADY_EXISTS")
            .details(json!({ "field": "idempotencyKey", "value": k })),
        ItemError::InsufficientCredits => ApiError::new("INSUFFICIENT_CREDITS"),
    }
}

fn queue_limit(limit: i64) -> ApiError {
    ApiError::new("QUEUE_LIMIT_EXCEEDED")
        .message(format!(
            "Queue limit exceeded. Maximum {limit} queued tasks allowed per organization"
        ))
        .details(json!({ "limit": limit }))
}

pub async fn create(
    State(s): State<SharedState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let req = parse_task_request(&body).map_err(|e| ApiError::validation(&e))?;
    if let Some(e) = refused_webhook(&s, &req) {
        return Err(ApiError::validation(&e));
    }
    let result = s.store.submit(caller.org, vec![new_task(req)]).await?;
    let mut items = result.map_err(|SubmitError::QueueLimit(l)| queue_limit(l))?;
    match items.pop() {
        Some(Ok(t)) => Ok(ok(
            json!({ "success": true, "task": summary(&t), "credits": credits(&t) }),
        )),
        Some(Err(e)) => Err(item_error(&e)),
        None => Err(ApiError::new("INTERNAL_SERVER_ERROR")),
    }
}

pub async fn create_batch(
    State(s): State<SharedState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let bad = |msg: &str| {
        ApiError::new("VALIDATION_ERROR").details(json!([{ "field": "body", "message": msg }]))
    };
    let Value::Array(items) = body else {
        return Err(bad("Request body must be a JSON array of 1 to 500 tasks"));
    };
    if items.is_empty() {
        return Err(bad("Batch must contain at least 1 task"));
    }
    if items.len() > MAX_BATCH {
        return Err(bad(&format!(
            "Batch must contain at most {MAX_BATCH} tasks (got {})",
            items.len()
        )));
    }
    if let Some(i) = items.iter().position(|v| !v.is_object()) {
        return Err(ApiError::new("VALIDATION_ERROR")
            .details(json!([{ "field": format!("[{i}]"), "message": "Each batch item must be a JSON object" }])));
    }
    let total = items.len();
    let mut results: Vec<Option<Value>> = vec![None; total];
    let mut valid = Vec::with_capacity(total);
    let mut valid_index = Vec::with_capacity(total);
    for (i, v) in items.iter().enumerate() {
        let parsed = parse_task_request(v).and_then(|r| refused_webhook(&s, &r).map_or(Ok(r), Err));
        match parsed {
            Ok(r) => {
                valid.push(new_task(r));
                valid_index.push(i);
            }
            Err(errors) => {
                let e = ApiError::new("VALIDATION_ERROR")
                    .message(format!("Invalid task at index {i}"))
                    .details(json!({ "errors": field_errors(&errors) }));
                results[i] = Some(json!({ "success": false, "index": i, "error": e.body() }));
            }
        }
    }
    if !valid.is_empty() {
        let outcome = s.store.submit(caller.org, valid).await?;
        let done = outcome.map_err(|SubmitError::QueueLimit(l)| queue_limit(l))?;
        for (r, i) in done.into_iter().zip(valid_index) {
            results[i] = Some(match r {
                Ok(t) => {
                    json!({ "success": true, "index": i, "task": summary(&t), "credits": credits(&t) })
                }
                Err(e) => json!({ "success": false, "index": i, "error": item_error(&e).body() }),
            });
        }
    }
    let results: Vec<Value> = results
        .into_iter()
        .map(|r| r.unwrap_or(Value::Null))
        .collect();
    let succeeded = results.iter().filter(|r| r["success"] == true).count();
    Ok(ok(json!({
        "success": true,
        "summary": { "total": total, "succeeded": succeeded, "failed": total - succeeded },
        "results": results,
    })))
}

pub async fn get(
    State(s): State<SharedState>,
    Auth(caller): Auth,
    Path(task_id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found(&task_id, "Task not found");
    let id = Uuid::parse_str(&task_id).map_err(|_| not_found())?;
    let t = s
        .store
        .get_task(caller.org, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(ok(status_body(&t, true)))
}

/// The task-status response (`GET /v1/async/task/{id}`). A webhook delivery's body is the same
/// without the `webhook` block (`with_webhook: false`).
pub fn status_body(t: &TaskRecord, with_webhook: bool) -> Value {
    let mut body = json!({ "task": summary(t), "credits": credits(t) });
    if t.status.is_terminal() {
        if let (true, Some(url)) = (with_webhook, &t.webhook_url) {
            body["webhook"] = json!({
                "url": url,
                "delivered": t.webhook_delivered_ms.is_some(),
                "deliveredAt": t.webhook_delivered_ms.map(format_ms),
            });
        }
        if let Some(r) = &t.response {
            body["response"] = r.clone();
        }
    }
    body
}

/// A webhook URL naming a refused destination literally (a private address, `localhost`) is a
/// 400 at submission unless private webhooks are allowed; names are checked at delivery.
fn refused_webhook(s: &AppState, r: &TaskRequest) -> Option<Vec<FieldError>> {
    let url = r.webhook_url.as_deref()?;
    (!s.allow_private_webhooks && crate::webhooks::ssrf::is_refused_literal(url)).then(|| {
        vec![FieldError::new(
            "webhook.url",
            "Webhook URL must not point to a loopback, private or link-local address",
        )]
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use uuid::Uuid;

    use super::*;
    use crate::domain::task::TaskStatus;
    use crate::domain::types::TaskType;

    fn record(status: TaskStatus) -> TaskRecord {
        TaskRecord {
            id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
            task_type: TaskType::GoogleNews,
            status,
            priority: 10,
            created_ms: 1_775_746_800_000,
            started_ms: Some(1_775_746_800_042),
            finished_ms: Some(1_775_746_801_500),
            attempts: 2,
            idempotency_key: Some("k\"1".into()),
            webhook_url: Some("https://example.com/hook?a=1&b=2".into()),
            credits_to_charge: 3,
            credits_charged: Some(3),
            response: Some(json!({ "z": 1, "a": [1.5, null, "é"], "m": { "y": true } })),
            webhook_delivered_ms: Some(1_775_746_802_007),
        }
    }

    /// The bytes of the task-status answer and of the webhook body (which omits `webhook`).
    #[test]
    fn the_status_body_and_the_webhook_body_byte_for_byte() {
        let t = record(TaskStatus::Completed);
        let task = r#"{"task":{"id":"01900000-0000-7000-8000-000000000001","taskType":"GOOGLE_NEWS","status":"COMPLETED","priority":10,"createdAt":"2026-04-09T15:00:00.000Z","latencyMs":1458,"idempotencyKey":"k\"1","startedAt":"2026-04-09T15:00:00.042Z","completedAt":"2026-04-09T15:00:01.500Z","attempts":2},"credits":{"creditsToCharge":3,"creditsCharged":3}"#;
        let response = r#""response":{"z":1,"a":[1.5,null,"é"],"m":{"y":true}}}"#;
        let webhook = r#""webhook":{"url":"https://example.com/hook?a=1&b=2","delivered":true,"deliveredAt":"2026-04-09T15:00:02.007Z"}"#;
        let client = serde_json::to_string(&status_body(&t, true)).expect("render");
        assert_eq!(client, format!("{task},{webhook},{response}"));
        let hook = serde_json::to_vec(&status_body(&t, false)).expect("render");
        assert_eq!(
            String::from_utf8(hook).expect("utf-8"),
            format!("{task},{response}")
        );

        let mut undelivered = record(TaskStatus::Failed);
        undelivered.webhook_delivered_ms = None;
        undelivered.credits_charged = None;
        let text = serde_json::to_string(&status_body(&undelivered, true)).expect("render");
        assert!(
            text.contains(r#""credits":{"creditsToCharge":3,"creditsCharged":0},"webhook":{"url":"https://example.com/hook?a=1&b=2","delivered":false,"deliveredAt":null},"response":"#),
            "{text}"
        );

        // Not terminal: no latency, no completion time, no charge, no webhook, no response.
        let running = record(TaskStatus::Processing);
        assert_eq!(
            serde_json::to_string(&status_body(&running, true)).expect("render"),
            r#"{"task":{"id":"01900000-0000-7000-8000-000000000001","taskType":"GOOGLE_NEWS","status":"PROCESSING","priority":10,"createdAt":"2026-04-09T15:00:00.000Z","latencyMs":null,"idempotencyKey":"k\"1","startedAt":"2026-04-09T15:00:00.042Z","completedAt":null,"attempts":2},"credits":{"creditsToCharge":3,"creditsCharged":null}}"#
        );
    }
}
