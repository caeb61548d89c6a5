//! Engines execute tasks. The queue calls them through the [`Engine`] trait; the `simulated`
//! engine (the default, no keys needed) answers deterministically in the real result shapes.
//! Real adapters implement the same trait later.

pub mod simulated;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use crate::domain::types::TaskType;

/// What an engine is asked to do.
#[derive(Debug, Clone)]
pub struct EngineTask<'a> {
    pub id: Uuid,
    pub task_type: TaskType,
    pub payload: &'a Value,
    pub attempt: u32,
}

/// A successful result: the object served as `response` and extra credits (AI Mode products).
#[derive(Debug, Clone)]
pub struct EngineOutput {
    pub result: Value,
    pub extra_credits: i64,
}

/// A failed attempt. Retryable failures are retried with backoff; fatal ones fail the task.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("retryable engine failure: {0}")]
    Retryable(String),
    #[error("fatal engine failure: {code}: {message}")]
    Fatal { code: String, message: String },
}

#[async_trait]
pub trait Engine: Send + Sync + 'static {
    async fn execute(&self, task: EngineTask<'_>) -> Result<EngineOutput, EngineError>;
}

/// Simulated latency: fixed or uniformly spread over `min..=max` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencyRange {
    pub min_ms: u64,
    pub max_ms: u64,
}

impl std::str::FromStr for LatencyRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |x: &str| {
            x.trim()
                .parse::<u64>()
                .map_err(|_| format!("invalid latency {s:?}: expected N or MIN..MAX"))
        };
        match s.split_once("..") {
            Some((a, b)) => {
                let (min_ms, max_ms) = (parse(a)?, parse(b)?);
                if min_ms > max_ms {
                    return Err(format!("invalid latency {s:?}: MIN is above MAX"));
                }
                Ok(LatencyRange { min_ms, max_ms })
            }
            None => {
                let v = parse(s)?;
                Ok(LatencyRange {
                    min_ms: v,
                    max_ms: v,
                })
            }
        }
    }
}

/// The simulated engine (SPEC §5).
#[derive(Debug, Clone)]
pub struct SimulatedEngine {
    pub latency: LatencyRange,
    pub failure_rate: f64,
}

#[async_trait]
impl Engine for SimulatedEngine {
    async fn execute(&self, task: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
        let seed = task.id.to_string();
        let LatencyRange { min_ms, max_ms } = self.latency;
        let ms = if max_ms > min_ms {
            min_ms
                + (simulated::unit_interval(&seed, u32::MAX - task.attempt)
                    * (max_ms - min_ms + 1) as f64) as u64
        } else {
            min_ms
        };
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if self.failure_rate > 0.0
            && simulated::unit_interval(&seed, task.attempt) < self.failure_rate
        {
            return Err(EngineError::Retryable("simulated upstream failure".into()));
        }
        let out = simulated::simulate(task.task_type, task.payload);
        Ok(EngineOutput {
            result: out.result,
            extra_credits: i64::from(out.extra_credits),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
