//! Log entries as the reference's logs API returns them (PLATFORM.md §6.2): one entry shape
//! for a machine's output, an app's stream (NDJSON or arrays), and the polling endpoint
//! `GET /api/v1/apps/{app}/logs` (`{data: [{id, type, attributes: entry}], meta: {next_token}}`,
//! as fly-go's `GetAppLogs` reads it).

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
    /// For proxy lines: the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<LogHttp>,
    /// For proxy lines: the error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<LogError>,
    /// For proxy lines: the request's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<LogUrl>,
}

/// `meta.http` of a proxy line.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogHttp {
    /// The request.
    #[serde(default)]
    pub request: LogHttpRequest,
    /// The answer, when the proxy gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<LogHttpResponse>,
}

/// `meta.http.request`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogHttpRequest {
    /// `fly-request-id`.
    #[serde(default)]
    pub id: String,
    /// Method.
    #[serde(default)]
    pub method: String,
    /// HTTP version (empty when not known).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
}

/// `meta.http.response`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogHttpResponse {
    /// Status sent to the client.
    #[serde(default)]
    pub status_code: u16,
}

/// `meta.error` of a proxy line. fly-go reads `code` as an integer, so the proxy's §3.3 code
/// (`PC01`) is in `proxy_code` (Hangar addition) and at the start of the message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogError {
    /// A numeric code (never set by Hangar; kept for what the reference sends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// What went wrong.
    #[serde(default)]
    pub message: String,
    /// The proxy's error code (`PC01`, `PR01`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_code: Option<String>,
}

/// `meta.url` of a proxy line.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogUrl {
    /// The request target as received.
    #[serde(default)]
    pub full: String,
}

/// `GET /api/v1/apps/{app}/logs`: one page of the app's stream.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppLogsPage {
    /// The entries, oldest first.
    #[serde(default, deserialize_with = "crate::serde_util::null_default")]
    pub data: Vec<AppLogsItem>,
    /// Where to continue.
    #[serde(default)]
    pub meta: AppLogsPageMeta,
}

/// One item of [`AppLogsPage::data`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppLogsItem {
    /// Unique per line.
    #[serde(default)]
    pub id: String,
    /// Always `log`.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// The entry.
    #[serde(default)]
    pub attributes: LogEntry,
}

/// `meta` of an [`AppLogsPage`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppLogsPageMeta {
    /// Pass back as `next_token` to get the lines after this page (empty: none yet).
    #[serde(default)]
    pub next_token: String,
}

/// `meta.event` of a [`LogEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogEvent {
    /// `app`, `runner`, `proxy`.
    #[serde(default)]
    pub provider: String,
}
