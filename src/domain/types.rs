//! Small shared domain types: the task types and a field-level validation error.

use serde::{Deserialize, Serialize};

/// The eight task types of the public API (`taskType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskType {
    Aimode,
    Google,
    GoogleNews,
    Gemini,
    Chatgpt,
    Copilot,
    Perplexity,
    Grok,
}

impl TaskType {
    pub(crate) const ALL: [TaskType; 8] = [
        TaskType::Aimode,
        TaskType::Google,
        TaskType::GoogleNews,
        TaskType::Gemini,
        TaskType::Chatgpt,
        TaskType::Copilot,
        TaskType::Perplexity,
        TaskType::Grok,
    ];

    /// Wire name, e.g. `GOOGLE_NEWS`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TaskType::Aimode => "AIMODE",
            TaskType::Google => "GOOGLE",
            TaskType::GoogleNews => "GOOGLE_NEWS",
            TaskType::Gemini => "GEMINI",
            TaskType::Chatgpt => "CHATGPT",
            TaskType::Copilot => "COPILOT",
            TaskType::Perplexity => "PERPLEXITY",
            TaskType::Grok => "GROK",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<TaskType> {
        TaskType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Compact code stored in the database.
    pub(crate) fn code(self) -> i64 {
        match self {
            TaskType::Aimode => 0,
            TaskType::Google => 1,
            TaskType::GoogleNews => 2,
            TaskType::Gemini => 3,
            TaskType::Chatgpt => 4,
            TaskType::Copilot => 5,
            TaskType::Perplexity => 6,
            TaskType::Grok => 7,
        }
    }

    pub(crate) fn from_code(c: i64) -> Option<TaskType> {
        TaskType::ALL.into_iter().find(|t| t.code() == c)
    }
}

/// One invalid field of a request: `field` is a dotted path (`payload.country`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FieldError {
    pub(crate) field: String,
    pub(crate) message: String,
}

impl FieldError {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}
