//! Engines execute tasks. The queue calls them through the [`Engine`] trait with an
//! [`EngineTask`] that carries the task's typed payload ([`Payload`], read back from the stored
//! JSON once per attempt by the queue), so an engine never parses JSON.
//!
//! Module map:
//! - this file: the contract ([`Engine`], [`EngineTask`], [`EngineOutput`] with its upstream
//!   [`Usage`], [`EngineError`]: retryable vs fatal);
//! - [`simulated`]: the default engine (no keys needed), deterministic results in the real
//!   shapes, one file per engine under `simulated/`;
//! - the real adapters, one folder each: [`responses`] (`openai-responses`: CHATGPT, GROK,
//!   PERPLEXITY, COPILOT), [`gemini`] (GEMINI), [`serpapi`] (GOOGLE, GOOGLE_NEWS, AIMODE), and
//!   what they share ([`upstream`]: the HTTP client, the body cap, error classification;
//!   [`lenient`]: reading their JSON answers typed, borrowing from the body; [`cpu`]: parsing
//!   them off the async runtime);
//! - [`file`]: the engines file (SPEC §5) that builds them, and `cloro engines list|check`.
//!
//! Which engine runs a task, and within which limits and health, is the dispatcher's
//! ([`crate::queue::engines`]).

/// A JSON object with room for exactly its fields, in order: `obj!{"k": v, ...}` is
/// `json!({"k": v, ...})` without the growth (`json!` inserts into an empty map, so the
/// `IndexMap` under it reallocates and rehashes every few fields, which was about a third of
/// the simulator's CPU, and an adapter's sources are dozens of such objects). Each value goes through `json!` as before, so the bytes are the same.
macro_rules! obj {
    ($($k:literal : $v:expr),* $(,)?) => {{
        let mut m = serde_json::Map::with_capacity(0 $(+ { let _ = $k; 1 })*);
        $( m.insert(($k).to_owned(), serde_json::json!($v)); )*
        serde_json::Value::Object(m)
    }};
}

pub(crate) mod cpu;
pub(crate) mod gemini;
pub(crate) mod lenient;
pub(crate) mod responses;
pub(crate) mod serpapi;
pub(crate) mod upstream;

pub mod file;
#[cfg(test)]
pub(crate) mod shape;
pub(crate) mod simulated;

pub use simulated::{LatencyRange, SimulatedEngine};

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use crate::domain::request::Payload;
use crate::domain::types::TaskType;
pub use crate::domain::usage::Usage;

/// What an engine is asked to do.
#[derive(Debug, Clone)]
pub struct EngineTask<'a> {
    pub id: Uuid,
    /// Always `payload.task_type()`.
    pub task_type: TaskType,
    /// The validated payload, typed by engine family.
    pub(crate) payload: &'a Payload,
    /// 1 for the first attempt.
    pub(crate) attempt: u32,
    /// The URLs of this attempt's result pages (`include.html`), served by cloro itself
    /// ([`crate::pages`]).
    pub(crate) pages: &'a crate::pages::PageLinks,
}

/// A successful result: the object served as `response`, extra credits (AI Mode products),
/// and what the upstream reports it used for the call(s) (`None`: nothing reported, as on
/// the simulator).
#[derive(Debug, Clone)]
pub struct EngineOutput {
    pub(crate) result: ResultText,
    pub(crate) extra_credits: i64,
    pub(crate) usage: Option<Usage>,
}

/// An engine's `result` object as its JSON text, written once where the result is made (the
/// simulator writes it directly; an adapter serializes its tree off the runtime), then shared
/// by the store's write, the sync answer and the pages check without a tree to walk or drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultText {
    text: std::sync::Arc<str>,
    /// Whether the object has an `html` field (links to result pages cloro serves).
    has_html: bool,
}

impl ResultText {
    /// The text of `result` (a JSON object).
    pub(crate) fn of(result: &Value) -> ResultText {
        ResultText {
            text: crate::store::json_text(result).into(),
            has_html: result.get("html").is_some(),
        }
    }

    /// `text` must be a serialized JSON object; `has_html` whether it has an `html` field.
    pub(crate) fn from_text(text: String, has_html: bool) -> ResultText {
        ResultText {
            text: text.into(),
            has_html,
        }
    }

    pub(crate) fn text(&self) -> &std::sync::Arc<str> {
        &self.text
    }

    /// Whether the result links to result pages (`html`).
    pub(crate) fn has_html(&self) -> bool {
        self.has_html
    }

    /// The result as a tree (tests, and the rare sync answer kept as a task).
    pub(crate) fn to_value(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

/// A failed attempt. Retryable failures are retried with backoff; fatal ones fail the task.
///
/// `RateLimited` and `Unauthorized` come from real upstreams ([`upstream`]): the engine, not the
/// task, is the problem. Until the scheduler pauses engines (issue 10), the queue treats them
/// as retryable; no configuration routes a task to a real adapter yet.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("retryable engine failure: {0}")]
    Retryable(String),
    #[error("fatal engine failure: {code}: {message}")]
    Fatal { code: String, message: String },
    /// The upstream said 429: wait `retry_after` (when it announced one) before calling it again.
    #[error("upstream rate limit: {message}")]
    RateLimited {
        retry_after: Option<std::time::Duration>,
        message: String,
    },
    /// The upstream refused the key (wrong key, no access, quota or plan exhausted).
    #[error("upstream refused the key: {message}")]
    Unauthorized { message: String },
    /// A failed attempt the upstream billed anyway (a Responses run that ended `failed` with a
    /// `usage`, returned with HTTP 200): `error` decides what happens to the task, `usage` is
    /// added to the task's sum. The queue takes it apart ([`EngineError::billed`]) before it
    /// looks at the error.
    #[error("{error}")]
    Billed {
        error: Box<EngineError>,
        usage: Usage,
    },
}

impl EngineError {
    /// `error`, carrying `usage` when the upstream reported one.
    pub(crate) fn with_usage(error: EngineError, usage: Option<Usage>) -> EngineError {
        match usage {
            Some(usage) => EngineError::Billed {
                error: Box::new(error),
                usage,
            },
            None => error,
        }
    }

    /// The error without its billing, and the usage billed (summed if nested).
    /// The error a [`EngineError::Billed`] wraps (however deep), or this one.
    pub(crate) fn billed_ref(&self) -> &EngineError {
        match self {
            EngineError::Billed { error, .. } => error.billed_ref(),
            other => other,
        }
    }

    pub(crate) fn billed(self) -> (EngineError, Option<Usage>) {
        match self {
            EngineError::Billed { error, usage } => {
                let (error, inner) = error.billed();
                (error, Some(inner.map_or(usage, |u| u.plus(usage))))
            }
            other => (other, None),
        }
    }
}

#[async_trait]
pub trait Engine: Send + Sync + 'static {
    async fn execute(&self, task: EngineTask<'_>) -> Result<EngineOutput, EngineError>;

    /// One cheap real call proving that the upstream answers and accepts the key (`cloro
    /// engines check`): the provider's free model or account endpoint where it documents one.
    /// `Ok` carries a short human note (never a key); the default, for engines with no
    /// upstream (the simulator), calls nothing.
    async fn check(&self) -> Result<String, EngineError> {
        Ok("nothing to check".into())
    }
}

/// Runs one attempt of a stored task: reads its stored payload back as the typed payload, then
/// calls `engine`. A stored payload that cannot be read (it cannot happen for rows this code
/// wrote) is a fatal failure of the task, never a panic or a retry.
pub(crate) async fn execute_stored(
    engine: &dyn Engine,
    id: Uuid,
    task_type: TaskType,
    stored: &str,
    attempt: u32,
    pages: &crate::pages::PageLinks,
) -> Result<EngineOutput, EngineError> {
    let payload = Payload::from_stored_text(task_type, stored).map_err(|e| {
        tracing::error!(task_id = %id, error = %e, "Cannot read a stored payload");
        EngineError::Fatal {
            code: "INTERNAL_SERVER_ERROR".into(),
            message: e.to_string(),
        }
    })?;
    engine
        .execute(EngineTask {
            id,
            task_type,
            payload: &payload,
            attempt,
            pages,
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::PageLinks;

    #[test]
    fn latency_parses_fixed_and_ranges() {
        assert_eq!(
            "5".parse(),
            Ok(LatencyRange {
                min_ms: 5,
                max_ms: 5
            })
        );
        assert_eq!(
            "1..20".parse(),
            Ok(LatencyRange {
                min_ms: 1,
                max_ms: 20
            })
        );
        assert!("20..1".parse::<LatencyRange>().is_err());
        assert!("x".parse::<LatencyRange>().is_err());
    }

    /// An engine that must not be reached.
    struct Unreachable;

    #[async_trait]
    impl Engine for Unreachable {
        async fn execute(&self, _: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
            panic!("the engine was called");
        }
    }

    #[tokio::test]
    async fn an_unreadable_stored_payload_fails_the_task_with_a_clear_message() {
        let stored = serde_json::json!({"query": "a", "gl": "us"}).to_string();
        let err = execute_stored(
            &Unreachable,
            Uuid::nil(),
            TaskType::Chatgpt,
            &stored,
            1,
            &PageLinks::fixed(),
        )
        .await
        .err();
        let Some(EngineError::Fatal { code, message }) = err else {
            panic!("expected a fatal error, got {err:?}");
        };
        assert_eq!(code, "INTERNAL_SERVER_ERROR");
        assert!(
            message
                .starts_with("the stored CHATGPT payload cannot be read: missing field `prompt`"),
            "{message}"
        );
    }

    /// Text that is not one JSON object (a corrupted row) fails the task the same way.
    #[tokio::test]
    async fn a_stored_payload_that_is_not_json_fails_the_task() {
        for stored in [
            "",
            "{\"prompt\": \"a\"",
            "{\"prompt\": \"a\", \"country\": \"US\"} x",
        ] {
            let err = execute_stored(
                &Unreachable,
                Uuid::nil(),
                TaskType::Chatgpt,
                stored,
                1,
                &PageLinks::fixed(),
            )
            .await
            .err();
            let Some(EngineError::Fatal { code, message }) = err else {
                panic!("{stored:?}: expected a fatal error, got {err:?}");
            };
            assert_eq!(code, "INTERNAL_SERVER_ERROR");
            assert!(
                message.starts_with("the stored CHATGPT payload cannot be read: "),
                "{message}"
            );
        }
    }

    #[tokio::test]
    async fn a_stored_payload_reaches_the_engine_typed() {
        let engine = SimulatedEngine {
            latency: LatencyRange {
                min_ms: 0,
                max_ms: 0,
            },
            failure_rate: 0.0,
        };
        let stored = serde_json::json!({"query": "a", "gl": "us", "country": "US",
                                        "device": "desktop", "pages": 2})
        .to_string();
        let out = execute_stored(
            &engine,
            Uuid::nil(),
            TaskType::GoogleNews,
            &stored,
            1,
            &PageLinks::fixed(),
        )
        .await
        .expect("simulated");
        assert_eq!(
            out.result.to_value()["newsResults"]
                .as_array()
                .map(Vec::len),
            Some(20)
        );
    }
}
