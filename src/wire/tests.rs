//! The bytes of the answers built from a task record: the task-status answer and the webhook
//! body (the HTTP tests in `tests/api/bodies.rs` pin the others end to end).
use serde_json::json;
use uuid::Uuid;

use super::GetTaskResponse;
use crate::domain::task::TaskStatus;
use crate::domain::types::TaskType;
use crate::store::TaskRecord;

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
        usage: None,
    }
}

/// The bytes of the task-status answer and of the webhook body (which omits `webhook`).
#[test]
fn the_status_body_and_the_webhook_body_byte_for_byte() {
    let t = record(TaskStatus::Completed);
    let task = r#"{"task":{"id":"01900000-0000-7000-8000-000000000001","taskType":"GOOGLE_NEWS","status":"COMPLETED","priority":10,"createdAt":"2026-04-09T15:00:00.000Z","latencyMs":1458,"idempotencyKey":"k\"1","startedAt":"2026-04-09T15:00:00.042Z","completedAt":"2026-04-09T15:00:01.500Z","attempts":2},"credits":{"creditsToCharge":3,"creditsCharged":3}"#;
    let response = r#""response":{"z":1,"a":[1.5,null,"é"],"m":{"y":true}}}"#;
    let webhook = r#""webhook":{"url":"https://example.com/hook?a=1&b=2","delivered":true,"deliveredAt":"2026-04-09T15:00:02.007Z"}"#;
    let client = serde_json::to_string(&GetTaskResponse::new(t.clone())).expect("render");
    assert_eq!(client, format!("{task},{webhook},{response}"));
    let hook = serde_json::to_vec(&GetTaskResponse::webhook_body(t)).expect("render");
    assert_eq!(
        String::from_utf8(hook).expect("utf-8"),
        format!("{task},{response}")
    );

    let mut undelivered = record(TaskStatus::Failed);
    undelivered.webhook_delivered_ms = None;
    undelivered.credits_charged = None;
    let text = serde_json::to_string(&GetTaskResponse::new(undelivered)).expect("render");
    assert!(
        text.contains(r#""credits":{"creditsToCharge":3,"creditsCharged":0},"webhook":{"url":"https://example.com/hook?a=1&b=2","delivered":false,"deliveredAt":null},"response":"#),
        "{text}"
    );

    // Not terminal: no latency, no completion time, no charge, no webhook, no response.
    let running = record(TaskStatus::Processing);
    assert_eq!(
        serde_json::to_string(&GetTaskResponse::new(running)).expect("render"),
        r#"{"task":{"id":"01900000-0000-7000-8000-000000000001","taskType":"GOOGLE_NEWS","status":"PROCESSING","priority":10,"createdAt":"2026-04-09T15:00:00.000Z","latencyMs":null,"idempotencyKey":"k\"1","startedAt":"2026-04-09T15:00:00.042Z","completedAt":null,"attempts":2},"credits":{"creditsToCharge":3,"creditsCharged":null}}"#
    );
}

/// `usage` appears in the task object (and so in the webhook body) only when present.
#[test]
fn usage_is_an_additive_field_of_the_task() {
    let mut t = record(TaskStatus::Completed);
    t.usage = Some(crate::store::Usage {
        input_tokens: Some(8120),
        output_tokens: None,
        searches: Some(1),
    });
    let hook = serde_json::to_string(&GetTaskResponse::webhook_body(t)).expect("render");
    assert!(
        hook.contains(r#""attempts":2,"usage":{"inputTokens":8120,"searches":1}},"credits""#),
        "{hook}"
    );
    let none = serde_json::to_string(&GetTaskResponse::new(record(TaskStatus::Completed)))
        .expect("render");
    assert!(!none.contains("usage"), "{none}");
}
