//! `GET /openapi.json` (OpenAPI 3.1) and `GET /docs` (an API reference page rendering it).
//!
//! The document is generated from the route table (`super::routes`): each handler carries its
//! operation (`#[utoipa::path]`), and the answers are the [`crate::wire`] types the handlers
//! serialize, so the paths and the response schemas cannot drift from what is served. Only the
//! request body is a documentation type ([`TaskRequest`]): its validation is hand-written with
//! exact messages (`domain::request`). Drift is still watched three ways: the snapshot test of
//! the whole document, a test that every documented operation is routed and that the rate
//! limit's buckets are the documented `/v1` paths, and the schema-driven fuzzer of CI
//! (`.ci/schemathesis.sh`), which checks every live response against this document.
//!
//! What every operation shares is added after generation, from the same tables the server
//! uses: the error codes of [`ERROR_CODES`], the edge's errors (408, 500, and for `/v1/*` 401,
//! 429, 503; the keyless result pages, `super::is_keyless`, get no security, no 401 and no
//! `X-RateLimit-*`) and the headers (`X-Request-ID`, `X-Latency-Ms` everywhere, `X-RateLimit-*` on
//! authenticated responses).

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use utoipa::{OpenApi, ToSchema};

use super::error::ERROR_CODES;
use crate::domain::task::TaskStatus;
use crate::domain::types::TaskType;
use crate::wire::ErrorEnvelope;

/// The request body of `POST /v1/async/task` and each item of a batch, for the document only:
/// the handlers take the body as JSON and `domain::request::parse_task_request` validates it by
/// hand, field by field, with upstream's exact messages (a derived `Deserialize` could not
/// produce them), so this type is never built. Its description in the document is the
/// `description` attribute below.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(description = "`BatchTaskRequest`: one async task (also each item of a batch).")]
pub(crate) struct TaskRequest {
    /// The engine (see `TaskType`).
    #[schema(value_type = String)]
    task_type: String,
    /// The engine's payload (reference §5: `prompt` or `query`, `country`/`gl`, `include`, …);
    /// validated per `taskType`, unknown keys refused.
    #[schema(value_type = Object)]
    payload: Value,
    /// 10 runs first, 1 last; FIFO within a priority. Default 1.
    #[schema(minimum = 1, maximum = 10, nullable = false)]
    priority: Option<u8>,
    /// At most one task per key while its record exists.
    #[schema(min_length = 1, max_length = 256, nullable = false)]
    idempotency_key: Option<String>,
    #[schema(nullable = false)]
    webhook: Option<WebhookRequest>,
}

// The `webhook` of a [`TaskRequest`], for the document only and never built, like it. (A `//`
// comment: a doc comment would become the schema's description.)
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebhookRequest {
    /// Absolute http(s) URL, at most 2,048 characters.
    #[schema(max_length = 2048)]
    url: String,
}

/// The body of a sync monitor call, for the document only (like [`TaskRequest`]): the
/// engine's payload (reference §5.1–§5.8), validated by hand by the same rules as an async
/// task's `payload` of that type, so this type is never built.
#[derive(Serialize, ToSchema)]
#[schema(
    description = "The engine's payload (reference §5): the fields of an async task's `payload` of the endpoint's task type, validated by the same rules; unknown fields are rejected."
)]
pub(crate) struct MonitorRequest {}

// The document's head: its info and the schemas to list even if no operation named them. The
// operations come from the route table (`super::routes`). (A `//` comment: utoipa may read doc
// comments into the document.)
#[derive(OpenApi)]
#[openapi(
    info(
        title = "cloro",
        description = "A self-hostable, wire-compatible cloro API: a durable, fair, priority-ordered multi-tenant task queue. Every `/v1` operation but the result pages (`/v1/pages/…`, whose link is the capability) takes `Authorization: Bearer sk_live_…`; rate limit 1,000 requests/s per key per endpoint unless the organization sets its own."
    ),
    components(schemas(ErrorEnvelope, TaskRequest))
)]
pub(crate) struct ApiDoc;

/// Every documented `(method, path)`, for the drift test.
pub fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            if let Some(item) = item.as_object() {
                for method in item.keys() {
                    out.push((method.to_uppercase(), path.clone()));
                }
            }
        }
    }
    out
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorEnvelope" } } }
    })
}

fn header(schema: Value, description: &str) -> Value {
    json!({ "schema": schema, "description": description })
}

/// The document: utoipa's output plus what every operation shares.
pub(crate) fn document() -> Value {
    let mut doc =
        serde_json::to_value(super::routes().into_openapi()).unwrap_or_else(|_| json!({}));
    let codes: Vec<Value> = ERROR_CODES.iter().map(|(c, _, _)| json!(c)).collect();
    let task_types: Vec<Value> = TaskType::ALL.iter().map(|t| json!(t.as_str())).collect();
    let statuses: Vec<Value> = [
        TaskStatus::Queued,
        TaskStatus::Processing,
        TaskStatus::Completed,
        TaskStatus::Failed,
    ]
    .iter()
    .map(|s| json!(s.as_str()))
    .collect();
    let schemas = &mut doc["components"]["schemas"];
    schemas["ErrorBody"]["properties"]["code"]["enum"] = Value::Array(codes);
    schemas["ErrorBody"]["properties"]["details"]["type"] = json!(["object", "array"]);
    schemas["ErrorEnvelope"]["properties"]["success"]["const"] = json!(false);
    for s in [
        "CreateTaskResponse",
        "BatchResponse",
        "ClearQueueResponse",
        "MonitorResponse",
    ] {
        schemas[s]["properties"]["success"]["const"] = json!(true);
    }
    schemas["TaskRequest"]["properties"]["taskType"]["enum"] = Value::Array(task_types.clone());
    schemas["Task"]["properties"]["taskType"]["enum"] = Value::Array(task_types);
    schemas["Task"]["properties"]["status"]["enum"] = Value::Array(statuses);
    doc["components"]["securitySchemes"] = json!({
        "bearerAuth": { "type": "http", "scheme": "bearer", "description": "sk_live_ followed by 32 lowercase hex characters" }
    });

    let every = [
        (
            "X-Request-ID",
            header(
                json!({ "type": "string", "format": "uuid" }),
                "The request's id: the client's own if it sent a UUID, else a new one",
            ),
        ),
        (
            "X-Latency-Ms",
            header(
                json!({ "type": "integer", "minimum": 0 }),
                "Milliseconds from arrival to the start of the response",
            ),
        ),
    ];
    let limited = [
        (
            "X-RateLimit-Limit",
            header(
                json!({ "type": "integer", "minimum": 1 }),
                "Requests allowed per second for this key and endpoint",
            ),
        ),
        (
            "X-RateLimit-Remaining",
            header(
                json!({ "type": "integer", "minimum": 0 }),
                "Requests left in this second",
            ),
        ),
    ];
    let concurrency = [
        (
            "X-Concurrency-Limit",
            header(
                json!({ "type": "integer", "minimum": 0 }),
                "The organization's concurrency limit",
            ),
        ),
        (
            "X-Concurrency-Current",
            header(
                json!({ "type": "integer", "minimum": 0 }),
                "Slots in use when the request arrived (sync calls and PROCESSING tasks), this request included",
            ),
        ),
        (
            "X-Concurrency-Remaining",
            header(
                json!({ "type": "integer", "minimum": 0 }),
                "Slots left: limit minus current, at least 0",
            ),
        ),
    ];
    let credits = [
        (
            "X-Credits-Charged",
            header(
                json!({ "type": "integer", "minimum": 0 }),
                "Credits this call cost (the sync surcharge included)",
            ),
        ),
        (
            "X-Credits-Remaining",
            header(json!({ "type": "integer" }), "The balance after the charge"),
        ),
    ];
    let Some(paths) = doc["paths"].as_object_mut() else {
        return doc;
    };
    for (path, item) in paths.iter_mut() {
        let sync = super::monitor::is_sync_call(path);
        let keyless = super::is_keyless(path);
        let v1 = path.starts_with("/v1/") && !keyless;
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for op in item.values_mut() {
            if v1 {
                op["security"] = json!([{ "bearerAuth": [] }]);
            }
            let responses = &mut op["responses"];
            let mut shared: Vec<(&str, &str)> = vec![
                (
                    "408",
                    "REQUEST_TIMEOUT: the request took longer than the server's bound",
                ),
                ("500", "INTERNAL_SERVER_ERROR"),
            ];
            if v1 {
                shared.push((
                    "401",
                    "MISSING_API_KEY, INVALID_API_KEY_FORMAT or INVALID_OR_EXPIRED_API_KEY",
                ));
                shared.push((
                    "429",
                    "RATE_LIMIT_EXCEEDED, or QUEUE_LIMIT_EXCEEDED on submissions",
                ));
            }
            if v1 || keyless || path == "/readyz" {
                shared.push(("503", "SERVICE_UNAVAILABLE: the store cannot answer; retry after `Retry-After` seconds"));
            }
            for (status, description) in shared {
                if responses.get(status).is_none() {
                    responses[status] = error_response(description);
                }
            }
            let Some(responses) = responses.as_object_mut() else {
                continue;
            };
            for (status, response) in responses.iter_mut() {
                // The operation's own headers (the result pages' security headers) stay.
                let mut headers: Map<String, Value> =
                    response["headers"].as_object().cloned().unwrap_or_default();
                for (name, h) in &every {
                    headers.insert((*name).to_owned(), h.clone());
                }
                if v1 && status != "401" {
                    for (name, h) in &limited {
                        headers.insert((*name).to_owned(), h.clone());
                    }
                }
                // Past validation, a sync call's answers say how its slots stand.
                if sync && !matches!(status.as_str(), "400" | "401" | "408" | "413") {
                    for (name, h) in &concurrency {
                        headers.insert((*name).to_owned(), h.clone());
                    }
                }
                if sync && status == "200" {
                    for (name, h) in &credits {
                        headers.insert((*name).to_owned(), h.clone());
                    }
                }
                if status == "503" || (keyless && status == "429") {
                    headers.insert(
                        "Retry-After".into(),
                        header(
                            json!({ "type": "integer", "minimum": 0 }),
                            "Seconds to wait",
                        ),
                    );
                }
                response["headers"] = Value::Object(headers);
            }
        }
    }
    doc
}

static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| serde_json::to_string_pretty(&document()).unwrap_or_else(|_| "{}".to_owned()));

pub(crate) async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
        .into_response()
}

/// The vendored file's name, with its version (one place for the page, the route and the file).
macro_rules! redoc_file {
    () => {
        "redoc-2.5.4.standalone.js"
    };
}

/// The vendored API reference renderer (Redoc, pinned; `assets/redoc/README.md` says where
/// it comes from and how to check it): served by the binary so `/docs` works offline.
const REDOC_JS: &[u8] = include_bytes!(concat!("../../assets/redoc/", redoc_file!()));

/// Where [`REDOC_JS`] is served. The version is in the path, so it can be cached for good.
pub(crate) const REDOC_PATH: &str = concat!("/docs/", redoc_file!());

/// The reference page: Redoc reads `/openapi.json` and renders it. No inline script (Redoc
/// starts itself on the `<redoc>` element), nothing from another origin.
const DOCS_PAGE: &str = concat!(
    r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cloro API reference</title>
</head>
<body>
<redoc spec-url="/openapi.json"></redoc>
<script src="/docs/"#,
    redoc_file!(),
    r#""></script>
</body>
</html>
"#
);

/// The page may load only from this server: its script and the document. Redoc styles itself
/// with `<style>` elements (hence `'unsafe-inline'` for styles only), draws icons as `data:`
/// images and runs its search in a `blob:` worker it builds from its own code.
pub(crate) const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
    worker-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /docs`.
pub(crate) async fn docs() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, DOCS_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        DOCS_PAGE,
    )
        .into_response()
}

/// `GET /docs/redoc-<version>.standalone.js`.
pub(crate) async fn redoc_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        REDOC_JS,
    )
        .into_response()
}
