//! The typed payload: what validation produces, what is stored (as its normalised JSON) and
//! what the engines consume.
//!
//! One variant per engine family ([`ChatPayload`] for the five chat engines, [`AiModePayload`],
//! [`GooglePayload`] with its `url` form, [`NewsPayload`]); the task type is carried by the chat
//! variant and fixed for the others ([`Payload::task_type`]).
//!
//! The stored form is the normalised JSON the validator has always stored: `serde` serialises
//! each payload to exactly those bytes (field order is declaration order, absent options are
//! left out), and [`Payload::from_stored`] reads it back. The submission path uses
//! [`Payload::into_stored`], which builds the same JSON by moving the strings instead of
//! cloning them (a unit test holds the two to the same output for every accepted payload).

use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

use super::super::types::TaskType;
use super::aimode::AiModePayload;
use super::chat::{ChatEngine, ChatPayload};
use super::google::GooglePayload;
use super::news::NewsPayload;

/// One validated payload, by engine family.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Payload {
    /// CHATGPT, GEMINI, GROK, COPILOT, PERPLEXITY.
    Chat(ChatEngine, ChatPayload),
    /// AIMODE.
    AiMode(AiModePayload),
    /// GOOGLE (query or url form).
    Google(GooglePayload),
    /// GOOGLE_NEWS.
    News(NewsPayload),
}

/// Why a stored payload could not be read back as its task type's typed payload.
#[derive(Debug, thiserror::Error)]
#[error("the stored {task_type} payload cannot be read: {source}")]
pub(crate) struct StoredPayloadError {
    pub(crate) task_type: &'static str,
    #[source]
    pub(crate) source: serde_json::Error,
}

impl Payload {
    /// The task type this payload belongs to.
    pub(crate) fn task_type(&self) -> TaskType {
        match self {
            Payload::Chat(engine, _) => engine.task_type(),
            Payload::AiMode(_) => TaskType::Aimode,
            Payload::Google(_) => TaskType::Google,
            Payload::News(_) => TaskType::GoogleNews,
        }
    }

    /// Reads a stored (normalised) payload back. It only fails for JSON this code never
    /// stores (a corrupted row, or a payload of another task type).
    pub(crate) fn from_stored(
        task_type: TaskType,
        stored: &Value,
    ) -> Result<Payload, StoredPayloadError> {
        Payload::read(task_type, stored).map_err(|source| StoredPayloadError {
            task_type: task_type.as_str(),
            source,
        })
    }

    /// [`Payload::from_stored`] from the stored text itself, with no JSON tree in between (what
    /// a claim hands the runner: one parse per attempt instead of two).
    pub(crate) fn from_stored_text(
        task_type: TaskType,
        stored: &str,
    ) -> Result<Payload, StoredPayloadError> {
        let mut de = serde_json::Deserializer::from_str(stored);
        Payload::read(task_type, &mut de)
            .and_then(|p| de.end().map(|()| p))
            .map_err(|source| StoredPayloadError {
                task_type: task_type.as_str(),
                source,
            })
    }

    /// Deserializes the typed payload of `task_type` from `d`.
    fn read<'de, D: serde::Deserializer<'de>>(
        task_type: TaskType,
        d: D,
    ) -> Result<Payload, D::Error> {
        Ok(match ChatEngine::of(task_type) {
            Some(engine) => Payload::Chat(engine, ChatPayload::deserialize(d)?),
            None => match task_type {
                TaskType::Aimode => Payload::AiMode(AiModePayload::deserialize(d)?),
                TaskType::Google => Payload::Google(GooglePayload::deserialize(d)?),
                _ => Payload::News(NewsPayload::deserialize(d)?),
            },
        })
    }

    /// The stored form (the normalised JSON), built by moving the fields: the same value as
    /// `serde_json::to_value(&payload)`, without copying the strings.
    pub(crate) fn into_stored(self) -> Value {
        Value::Object(match self {
            Payload::Chat(_, p) => p.into_map(),
            Payload::AiMode(p) => p.into_map(),
            Payload::Google(p) => p.into_map(),
            Payload::News(p) => p.into_map(),
        })
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Payload::Chat(_, p) => p.serialize(s),
            Payload::AiMode(p) => p.serialize(s),
            Payload::Google(p) => p.serialize(s),
            Payload::News(p) => p.serialize(s),
        }
    }
}

/// The device a Google-family search runs as (AI Mode allows only desktop and mobile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Device {
    #[default]
    Desktop,
    Mobile,
    Ios,
    Android,
}

impl Device {
    /// Wire name, e.g. `desktop`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Device::Desktop => "desktop",
            Device::Mobile => "mobile",
            Device::Ios => "ios",
            Device::Android => "android",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Device> {
        [
            Device::Desktop,
            Device::Mobile,
            Device::Ios,
            Device::Android,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }
}

// ---------------------------------------------------------------------------------------------
// Building the stored map by moving (`into_map` of each family).

pub(super) fn put_str(out: &mut Map<String, Value>, key: &str, value: String) {
    out.insert(key.to_string(), Value::String(value));
}

pub(super) fn put_opt_str(out: &mut Map<String, Value>, key: &str, value: Option<String>) {
    if let Some(v) = value {
        put_str(out, key, v);
    }
}

pub(super) fn put_opt_bool(out: &mut Map<String, Value>, key: &str, value: Option<bool>) {
    if let Some(b) = value {
        out.insert(key.to_string(), Value::Bool(b));
    }
}
