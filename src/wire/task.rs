//! A task on the wire: its public record, its credits, the answers to a submission (one task or
//! a batch) and the task-status answer, which is also the body of its webhook.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

use super::ErrorBody;
use crate::store::TaskRecord;
use crate::time_fmt::format_ms;

/// A task's public record (plus `startedAt`, `completedAt`, `attempts`).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Task {
    #[schema(value_type = String, format = "uuid")]
    pub(crate) id: Uuid,
    #[schema(value_type = String)]
    pub(crate) task_type: &'static str,
    #[schema(value_type = String)]
    pub(crate) status: &'static str,
    #[schema(minimum = 1, maximum = 10)]
    pub(crate) priority: u8,
    #[schema(format = DateTime)]
    pub(crate) created_at: String,
    /// First pickup to final outcome; null until terminal.
    #[schema(required)]
    pub(crate) latency_ms: Option<i64>,
    #[schema(required)]
    pub(crate) idempotency_key: Option<String>,
    #[schema(format = DateTime, required)]
    pub(crate) started_at: Option<String>,
    #[schema(format = DateTime, required)]
    pub(crate) completed_at: Option<String>,
    pub(crate) attempts: u32,
    /// What the upstream reported it used, summed over the task's attempts (tokens,
    /// searches); absent when no attempt reported any (the simulator never does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) usage: Option<TaskUsage>,
}

/// A task's upstream usage. Each field is present only where the upstream reports it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TaskUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0)]
    pub(crate) input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0)]
    pub(crate) output_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, minimum = 0)]
    pub(crate) searches: Option<u64>,
}

impl From<crate::store::Usage> for TaskUsage {
    fn from(u: crate::store::Usage) -> TaskUsage {
        TaskUsage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            searches: u.searches,
        }
    }
}

impl Task {
    pub(crate) fn new(t: &TaskRecord) -> Task {
        Task {
            id: t.id,
            task_type: t.task_type.as_str(),
            status: t.status.as_str(),
            priority: t.priority,
            created_at: format_ms(t.created_ms),
            latency_ms: t.latency_ms(),
            idempotency_key: t.idempotency_key.clone(),
            started_at: t.started_ms.map(format_ms),
            completed_at: t
                .finished_ms
                .filter(|_| t.status.is_terminal())
                .map(format_ms),
            attempts: t.attempts,
            usage: t.usage.map(TaskUsage::from),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TaskCredits {
    pub(crate) credits_to_charge: i64,
    /// Null until the task is terminal.
    #[schema(required)]
    pub(crate) credits_charged: Option<i64>,
}

impl TaskCredits {
    pub(crate) fn new(t: &TaskRecord) -> TaskCredits {
        TaskCredits {
            credits_to_charge: t.credits_to_charge,
            credits_charged: if t.status.is_terminal() {
                t.credits_charged.or(Some(0))
            } else {
                None
            },
        }
    }
}

// `POST /v1/async/task`: the queued task. (No doc comments on the schema types beyond those the
// document shows: utoipa turns them into descriptions.)
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreateTaskResponse {
    // Always `true` (the document says so with a `const`).
    pub(crate) success: bool,
    pub(crate) task: Task,
    pub(crate) credits: TaskCredits,
}

impl CreateTaskResponse {
    pub(crate) fn new(t: &TaskRecord) -> CreateTaskResponse {
        CreateTaskResponse {
            success: true,
            task: Task::new(t),
            credits: TaskCredits::new(t),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BatchSummary {
    pub(crate) total: u32,
    pub(crate) succeeded: u32,
    pub(crate) failed: u32,
}

/// One item's outcome: `task` and `credits` when it was queued, `error` when it was not.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BatchItem {
    pub(crate) success: bool,
    pub(crate) index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) task: Option<Task>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) credits: Option<TaskCredits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) error: Option<ErrorBody>,
}

impl BatchItem {
    pub(crate) fn queued(index: u32, t: &TaskRecord) -> BatchItem {
        BatchItem {
            success: true,
            index,
            task: Some(Task::new(t)),
            credits: Some(TaskCredits::new(t)),
            error: None,
        }
    }

    pub(crate) fn refused(index: u32, error: ErrorBody) -> BatchItem {
        BatchItem {
            success: false,
            index,
            task: None,
            credits: None,
            error: Some(error),
        }
    }
}

// `POST /v1/async/task/batch`: one result per item, in input order.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BatchResponse {
    // Always `true`: each item carries its own outcome.
    pub(crate) success: bool,
    pub(crate) summary: BatchSummary,
    // `null` only for an item the store did not answer (the store answers every item).
    #[schema(value_type = Vec<BatchItem>)]
    pub(crate) results: Vec<Option<BatchItem>>,
}

impl BatchResponse {
    /// The answer over `results`, counting the successes.
    pub(crate) fn new(results: Vec<Option<BatchItem>>) -> BatchResponse {
        let total = results.len() as u32;
        let succeeded = results.iter().flatten().filter(|r| r.success).count() as u32;
        BatchResponse {
            success: true,
            summary: BatchSummary {
                total,
                succeeded,
                failed: total - succeeded,
            },
            results,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WebhookStatus {
    pub(crate) url: String,
    pub(crate) delivered: bool,
    #[schema(format = DateTime, required)]
    pub(crate) delivered_at: Option<String>,
}

/// `webhook` when the task has one and is terminal; `response` (the engine result, or
/// `{"error": …}`) once terminal.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GetTaskResponse {
    pub(crate) task: Task,
    pub(crate) credits: TaskCredits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub(crate) webhook: Option<WebhookStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, nullable = false)]
    pub(crate) response: Option<Value>,
}

impl GetTaskResponse {
    /// `GET /v1/async/task/{taskId}`. Takes the record to move its result out (it is written
    /// as stored, never re-parsed or copied).
    pub(crate) fn new(t: TaskRecord) -> GetTaskResponse {
        GetTaskResponse::build(t, true)
    }

    /// A webhook delivery's body: the status answer without the `webhook` block.
    pub(crate) fn webhook_body(t: TaskRecord) -> GetTaskResponse {
        GetTaskResponse::build(t, false)
    }

    fn build(mut t: TaskRecord, with_webhook: bool) -> GetTaskResponse {
        let terminal = t.status.is_terminal();
        let webhook = match t.webhook_url.take() {
            Some(url) if terminal && with_webhook => Some(WebhookStatus {
                url,
                delivered: t.webhook_delivered_ms.is_some(),
                delivered_at: t.webhook_delivered_ms.map(format_ms),
            }),
            _ => None,
        };
        GetTaskResponse {
            task: Task::new(&t),
            credits: TaskCredits::new(&t),
            webhook,
            response: if terminal { t.response.take() } else { None },
        }
    }
}
