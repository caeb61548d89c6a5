//! `POST /v1/async/task`, `POST /v1/async/task/batch`, `GET /v1/async/task/{taskId}`.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::{ApiError, field_errors};
use super::extract::{Auth, JsonBody};
use super::openapi;
use super::{AppState, SharedState};
use crate::domain::request::{TaskRequest, parse_task_request};
use crate::domain::types::FieldError;
use crate::store::{ItemError, NewTask, SubmitError};
use crate::wire::{BatchItem, BatchResponse, CreateTaskResponse, ErrorEnvelope, GetTaskResponse};

/// Most tasks in one batch.
pub(crate) const MAX_BATCH: usize = 500;

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

#[utoipa::path(post, path = "/v1/async/task", tag = "async", operation_id = "createAsyncTask",
    summary = "Queue one task",
    request_body(content = openapi::TaskRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "Queued", body = CreateTaskResponse),
        (status = 400, description = "Invalid body; `details` lists every invalid field", body = ErrorEnvelope),
        (status = 403, description = "INSUFFICIENT_CREDITS", body = ErrorEnvelope),
        (status = 409, description = "RESOURCE_ALREADY_EXISTS (idempotency key in use)", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorEnvelope),
    ))]
pub(crate) async fn create(
    State(s): State<SharedState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody,
) -> Result<Json<CreateTaskResponse>, ApiError> {
    let req = parse_task_request(&body).map_err(|e| ApiError::validation(&e))?;
    if let Some(e) = refused_webhook(&s, &req) {
        return Err(ApiError::validation(&e));
    }
    let result = s.store.submit(caller.org, vec![new_task(req)]).await?;
    let mut items = result.map_err(|SubmitError::QueueLimit(l)| queue_limit(l))?;
    match items.pop() {
        Some(Ok(t)) => {
            tracing::debug!(task_id = %t.id, org = caller.org, "Task {}", t.status.as_str());
            Ok(Json(CreateTaskResponse::new(&t)))
        }
        Some(Err(e)) => Err(item_error(&e)),
        None => Err(ApiError::new("INTERNAL_SERVER_ERROR")),
    }
}

#[utoipa::path(post, path = "/v1/async/task/batch", tag = "async", operation_id = "createBatchAsyncTasks",
    summary = "Queue 1 to 500 tasks; each item is answered on its own",
    request_body(content = Vec<openapi::TaskRequest>, content_type = "application/json"),
    responses(
        (status = 200, description = "Per-item results in input order", body = BatchResponse),
        (status = 400, description = "Not a JSON array of 1 to 500 objects", body = ErrorEnvelope),
        (status = 413, description = "PAYLOAD_TOO_LARGE", body = ErrorEnvelope),
    ))]
pub(crate) async fn create_batch(
    State(s): State<SharedState>,
    Auth(caller): Auth,
    JsonBody(body): JsonBody,
) -> Result<Json<BatchResponse>, ApiError> {
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
    let mut results: Vec<Option<BatchItem>> = std::iter::repeat_with(|| None).take(total).collect();
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
                results[i] = Some(BatchItem::refused(i as u32, e.body()));
            }
        }
    }
    if !valid.is_empty() {
        let outcome = s.store.submit(caller.org, valid).await?;
        let done = outcome.map_err(|SubmitError::QueueLimit(l)| queue_limit(l))?;
        for (r, i) in done.into_iter().zip(valid_index) {
            results[i] = Some(match r {
                Ok(t) => {
                    tracing::debug!(task_id = %t.id, org = caller.org, "Task {}", t.status.as_str());
                    BatchItem::queued(i as u32, &t)
                }
                Err(e) => BatchItem::refused(i as u32, item_error(&e).body()),
            });
        }
    }
    Ok(Json(BatchResponse::new(results)))
}

#[utoipa::path(get, path = "/v1/async/task/{taskId}", tag = "async", operation_id = "getTaskStatus",
    summary = "A task's state, credits and, once terminal, its response",
    params(("taskId" = String, Path, description = "The task id (a UUID)")),
    responses(
        (status = 200, description = "The task", body = GetTaskResponse),
        (status = 404, description = "RESOURCE_NOT_FOUND (unknown, not a UUID, or another organization's)", body = ErrorEnvelope),
    ))]
pub(crate) async fn get(
    State(s): State<SharedState>,
    Auth(caller): Auth,
    Path(task_id): Path<String>,
) -> Result<Json<GetTaskResponse>, ApiError> {
    let not_found = || ApiError::not_found(&task_id, "Task not found");
    let id = Uuid::parse_str(&task_id).map_err(|_| not_found())?;
    let t = s
        .store
        .get_task(caller.org, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(GetTaskResponse::new(t)))
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
