//! Log entries as the reference's logs API returns them (PLATFORM.md §6.2).

use serde::{Deserialize, Serialize};

/// One log line of a machine: `{timestamp, message, level, instance, region, meta}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogEntry {
    /// RFC 3339 time the line was written.
    #[serde(default)]
    pub timestamp: String,
    /// The line, without its newline.
    #[serde(default)]
    pub message: String,
    /// `info` (stdout, platform lines) or `error` (stderr).
    #[serde(default)]
    pub level: String,
    /// Machine id.
    #[serde(default)]
    pub instance: String,
    /// Region of the machine.
    #[serde(default)]
    pub region: String,
    /// Where it came from.
    #[serde(default)]
    pub meta: LogMeta,
}

/// `meta` of a [`LogEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogMeta {
    /// Machine id.
    #[serde(default)]
    pub instance: String,
    /// Region.
    #[serde(default)]
    pub region: String,
    /// `{provider}`: `app` for the machine's output, `runner` for the platform's lines.
    #[serde(default)]
    pub event: LogEvent,
    /// `stdout` or `stderr` for app output (Hangar addition; absent elsewhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

/// `meta.event` of a [`LogEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogEvent {
    /// `app`, `runner`, `proxy`.
    #[serde(default)]
    pub provider: String,
}
