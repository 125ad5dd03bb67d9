//! The API error body (§2.1).

use serde::{Deserialize, Serialize};

/// `{"error": "<text>", "status": "<code>", "details": …}`, sent with 4xx/5xx responses.
///
/// Also usable as a Rust error: it displays as its `error` text.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, thiserror::Error)]
#[error("{error}")]
pub struct ErrorBody {
    /// Human-readable message.
    #[serde(default)]
    pub error: String,
    /// Machine-readable code: `unknown`, `insufficient_capacity`, `name_taken`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Extra structured details (deprecated upstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ErrorBody {
    /// `status` for an unclassified error.
    pub const STATUS_UNKNOWN: &'static str = "unknown";
    /// `status` when no host can take the Machine.
    pub const STATUS_INSUFFICIENT_CAPACITY: &'static str = "insufficient_capacity";
    /// `status` when an app name is already used (HTTP 422).
    pub const STATUS_NAME_TAKEN: &'static str = "name_taken";

    /// An error with only a message.
    pub fn new(error: impl Into<String>) -> Self {
        ErrorBody {
            error: error.into(),
            status: None,
            details: None,
        }
    }

    /// An error with a message and a status code.
    pub fn with_status(error: impl Into<String>, status: impl Into<String>) -> Self {
        ErrorBody {
            error: error.into(),
            status: Some(status.into()),
            details: None,
        }
    }

    /// This error with `details` attached.
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}
