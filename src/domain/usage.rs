//! What an upstream reports it used for an attempt (issue 10): tokens and searches, the base of
//! the operator's cost accounting. A task keeps the sum over its attempts (see
//! [`crate::store::ClaimedTask::usage`]) and shows it as its additive `usage` object.
//!
//! Every field is optional: an upstream that reports no token counts (SerpApi) leaves them
//! absent rather than zero, and an absent field is omitted from the JSON (stored and served).

use serde::{Deserialize, Serialize};

/// Upstream usage of one attempt, or the sum over a task's attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Tokens the upstream billed as input (prompt, tool results read back, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    /// Tokens the upstream billed as output (answer and reasoning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
    /// Web searches the upstream ran (or, for a SERP API, search requests made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub searches: Option<u64>,
}

impl Usage {
    /// `Some(self)` unless every field is absent.
    pub fn nonempty(self) -> Option<Usage> {
        (self != Usage::default()).then_some(self)
    }

    /// The field-wise sum: a field present on either side is present (absent counts as 0).
    #[must_use]
    pub fn plus(self, other: Usage) -> Usage {
        fn add(a: Option<u64>, b: Option<u64>) -> Option<u64> {
            match (a, b) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0).saturating_add(b.unwrap_or(0))),
            }
        }
        Usage {
            input_tokens: add(self.input_tokens, other.input_tokens),
            output_tokens: add(self.output_tokens, other.output_tokens),
            searches: add(self.searches, other.searches),
        }
    }

    /// The stored form (compact JSON, absent fields omitted).
    pub(crate) fn to_json(self) -> String {
        serde_json::to_string(&self).unwrap_or_else(|_| "{}".into())
    }

    /// Reads the stored form; `None` for NULL, and for text that is not a usage object (the
    /// record is still served, without its usage, rather than failing the read).
    pub(crate) fn from_json(s: Option<&str>) -> Option<Usage> {
        s.and_then(|s| serde_json::from_str::<Usage>(s).ok())
            .and_then(Usage::nonempty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_fields_are_omitted_and_sums_keep_them_absent() {
        let a = Usage {
            input_tokens: Some(10),
            output_tokens: Some(2),
            searches: None,
        };
        assert_eq!(a.to_json(), r#"{"inputTokens":10,"outputTokens":2}"#);
        let b = Usage {
            searches: Some(3),
            input_tokens: Some(5),
            ..Usage::default()
        };
        assert_eq!(
            a.plus(b),
            Usage {
                input_tokens: Some(15),
                output_tokens: Some(2),
                searches: Some(3),
            }
        );
        assert_eq!(Usage::default().plus(Usage::default()), Usage::default());
        assert_eq!(Usage::default().nonempty(), None);
        assert_eq!(Usage::from_json(Some(&a.to_json())), Some(a));
        assert_eq!(Usage::from_json(Some("{}")), None);
        assert_eq!(Usage::from_json(Some("not json")), None);
        assert_eq!(Usage::from_json(None), None);
    }
}
