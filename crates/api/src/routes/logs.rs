//! An app's whole log stream (PLATFORM.md §6.2), across its machines on this host, with the
//! platform's `runner` and `proxy` lines, merged by time. Read through the host
//! ([`hangar_domain::MachineHost::app_logs`]); filters `instance` (a machine id) and `region`.
//!
//! - `GET /api/v1/apps/{app}/logs?next_token=&instance=&region=`: the reference's polling
//!   endpoint, in its wire format (`{data: [{id, type, attributes}], meta: {next_token}}`).
//!   Without a token, the newest lines; with one, the lines after it, oldest first; the last
//!   second is left for the next poll (lines on their way from one source are never passed
//!   over). Hangar adds `limit` (lines per page, 1–1000, default 100).
//! - `GET /v1/apps/{app}/logs?tail=N&follow=true`: the newest `tail` lines (default 100) as a
//!   JSON array of entries; with `follow`, NDJSON entries that keep coming, from machines that
//!   start later too, until the client goes away, the app is deleted or the host stops.

use std::collections::VecDeque;

use axum::Json;
use axum::Router;
use axum::body::Body as HttpBody;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hangar_api_types::{
    AppLogsItem, AppLogsPage, AppLogsPageMeta, LogEntry, LogError, LogEvent, LogHttp,
    LogHttpRequest, LogHttpResponse, LogMeta, LogUrl,
};
use hangar_domain::{AppLogLine, AppLogQuery, LogCursor, LogSource, MachineHost, MachineId};

use super::apps::visible_app;
use super::machines::{first, flag, query_pairs};
use crate::auth::Caller;
use crate::{ApiError, ApiState};

/// Lines of a page or tail when the request gives no count.
const DEFAULT_LINES: usize = 100;
/// Most lines of one poll.
const MAX_PAGE: usize = 1000;
/// Most lines of a tail.
const MAX_TAIL: usize = 10_000;
/// A poll leaves out lines of the last second: by then every source has written what it
/// stamped before (a later poll delivers them, in order, none passed by the cursor).
const POLL_SETTLE_NS: i64 = 1_000_000_000;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The routes of this file.
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/v1/apps/{app}/logs", get(poll))
        .route("/v1/apps/{app}/logs", get(stream))
}

fn host(s: &ApiState) -> Result<&dyn MachineHost, ApiError> {
    s.host
        .as_deref()
        .ok_or_else(|| ApiError::not_implemented("logs on a server without a host agent"))
}

/// `instance` and `region`; empty values mean no filter (the reference's clients send them
/// empty).
fn filters(q: &[(String, String)]) -> Result<AppLogQuery, ApiError> {
    let instance = match first(q, "instance") {
        None | Some("") => None,
        Some(i) => Some(
            MachineId::parse(i)
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "instance: {:?} is not a machine id (14 hex digits)",
                        i.chars().take(64).collect::<String>()
                    ))
                })?
                .to_string(),
        ),
    };
    let region = match first(q, "region") {
        None | Some("") => None,
        Some(r)
            if r.len() <= 32
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            Some(r.to_string())
        }
        Some(r) => {
            return Err(ApiError::bad_request(format!(
                "region: {:?} is not a region code (lowercase letters, digits, '-')",
                r.chars().take(64).collect::<String>()
            )));
        }
    };
    Ok(AppLogQuery {
        instance,
        region,
        ..AppLogQuery::default()
    })
}

fn count(q: &[(String, String)], key: &str, max: usize) -> Result<usize, ApiError> {
    match first(q, key) {
        None | Some("") => Ok(DEFAULT_LINES),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if key == "limit" && !(1..=max).contains(&n) => Err(ApiError::bad_request(
                format!("{key}: {n} is not between 1 and {max}"),
            )),
            Ok(n) => Ok(n.min(max)),
            Err(_) => Err(ApiError::bad_request(format!(
                "{key}: {:?} is not a count",
                v.chars().take(64).collect::<String>()
            ))),
        },
    }
}

/// A line of the stream as the reference's log entry.
fn entry(l: AppLogLine) -> LogEntry {
    let timestamp = l.timestamp();
    let http = l.http.as_ref().map(|h| LogHttp {
        request: LogHttpRequest {
            id: h.request_id.clone(),
            method: h.method.clone(),
            version: String::new(),
        },
        response: h.status.map(|status_code| LogHttpResponse { status_code }),
    });
    let url = l
        .http
        .as_ref()
        .filter(|h| !h.url.is_empty())
        .map(|h| LogUrl {
            full: h.url.clone(),
        });
    let error = l.error_code.map(|c| LogError {
        code: None,
        message: l.message.clone(),
        proxy_code: Some(c),
    });
    LogEntry {
        timestamp,
        level: l.level.as_str().into(),
        meta: LogMeta {
            instance: l.instance.clone(),
            region: l.region.clone(),
            event: LogEvent {
                provider: l.provider.as_str().into(),
            },
            stream: l.stream.map(|s| {
                match s {
                    LogSource::Stdout => "stdout",
                    LogSource::Stderr => "stderr",
                }
                .into()
            }),
            http,
            error,
            url,
        },
        instance: l.instance,
        region: l.region,
        message: l.message,
    }
}

/// `GET /api/v1/apps/{app}/logs`: one page of the app's stream, as the reference polls it.
pub(crate) async fn poll(
    State(s): State<ApiState>,
    c: Caller,
    Path(app): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<AppLogsPage>, ApiError> {
    let a = visible_app(&s, &c, &app)?;
    let q = query_pairs(raw.as_deref());
    let mut query = filters(&q)?;
    query.after = match first(&q, "next_token") {
        None | Some("") => None,
        Some(t) => Some(LogCursor::parse(t).map_err(|e| ApiError::bad_request(e.to_string()))?),
    };
    query.limit = count(&q, "limit", MAX_PAGE)?;
    query.before_ns = Some(now_ns().saturating_sub(POLL_SETTLE_NS));
    let after = query.after;
    let logs = host(&s)?.app_logs(&a.name, query).await?;
    // A line's id is the position just after it (what `next_token` would be if the page
    // ended there): unique across pages, since positions only move forward.
    let mut at = after;
    let mut data = Vec::with_capacity(logs.lines.len());
    for l in logs.lines {
        let skip = match at {
            Some(c) if c.time_ns == l.time_ns => c.skip.saturating_add(1),
            _ => 1,
        };
        let here = LogCursor {
            time_ns: l.time_ns,
            skip,
        };
        at = Some(here);
        data.push(AppLogsItem {
            id: here.token(),
            kind: "log".into(),
            attributes: entry(l),
        });
    }
    Ok(Json(AppLogsPage {
        data,
        meta: AppLogsPageMeta {
            next_token: logs.next.map(|c| c.token()).unwrap_or_default(),
        },
    }))
}

/// `GET /v1/apps/{app}/logs?tail=N&follow=true`: the newest lines, and with `follow` the
/// lines after them as newline-delimited JSON.
pub(crate) async fn stream(
    State(s): State<ApiState>,
    c: Caller,
    Path(app): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let a = visible_app(&s, &c, &app)?;
    let q = query_pairs(raw.as_deref());
    let mut query = filters(&q)?;
    query.limit = count(&q, "tail", MAX_TAIL)?;
    query.follow = flag(&q, "follow")?;
    let logs = host(&s)?.app_logs(&a.name, query).await?;
    let Some(follower) = logs.follow else {
        let entries: Vec<LogEntry> = logs.lines.into_iter().map(entry).collect();
        return Ok(Json(entries).into_response());
    };
    let backlog: VecDeque<AppLogLine> = logs.lines.into();
    let body = futures_util::stream::unfold(
        (backlog, follower),
        |(mut backlog, mut follower)| async move {
            let line = match backlog.pop_front() {
                Some(l) => l,
                None => follower.next().await?,
            };
            let mut bytes = serde_json::to_vec(&entry(line)).unwrap_or_default();
            bytes.push(b'\n');
            Some((
                Ok::<_, std::convert::Infallible>(bytes),
                (backlog, follower),
            ))
        },
    );
    let mut resp = HttpBody::from_stream(body).into_response();
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_domain::{HttpInfo, Level, Provider};

    fn pairs(s: &str) -> Vec<(String, String)> {
        query_pairs(Some(s))
    }

    #[test]
    fn query_parameters() {
        let f = filters(&pairs("instance=0123456789abcd&region=ams")).expect("ok");
        assert_eq!(f.instance.as_deref(), Some("0123456789abcd"));
        assert_eq!(f.region.as_deref(), Some("ams"));
        let f = filters(&pairs("instance=&region=")).expect("empty means none");
        assert_eq!((f.instance, f.region), (None, None));
        for bad in [
            "instance=nope",
            "instance=../x",
            "region=AMS",
            "region=a%20b",
        ] {
            assert!(filters(&pairs(bad)).is_err(), "{bad}");
        }
        assert_eq!(
            count(&pairs(""), "limit", MAX_PAGE).ok(),
            Some(DEFAULT_LINES)
        );
        assert_eq!(
            count(&pairs("tail=99999"), "tail", MAX_TAIL).ok(),
            Some(MAX_TAIL)
        );
        for bad in ["limit=0", "limit=1001", "limit=-1", "limit=x"] {
            assert!(count(&pairs(bad), "limit", MAX_PAGE).is_err(), "{bad}");
        }
    }

    #[test]
    fn proxy_lines_carry_the_request_in_the_reference_shape() {
        let mut l = AppLogLine::new(
            1_700_000_000_000_000_001,
            Provider::Proxy,
            "",
            "ams",
            Level::Error,
            "[PR01] no machine",
        );
        l.error_code = Some("PR01".into());
        l.http = Some(HttpInfo {
            request_id: "01abc-ams".into(),
            method: "GET".into(),
            status: Some(503),
            url: "/x".into(),
        });
        let v = serde_json::to_value(entry(l)).expect("json");
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.000000001Z");
        assert_eq!(v["meta"]["event"]["provider"], "proxy");
        assert_eq!(v["meta"]["http"]["request"]["id"], "01abc-ams");
        assert_eq!(v["meta"]["http"]["response"]["status_code"], 503);
        assert_eq!(v["meta"]["error"]["proxy_code"], "PR01");
        // fly-go reads `meta.error.code` as an int: never a string.
        assert!(v["meta"]["error"].get("code").is_none());
        assert_eq!(v["meta"]["url"]["full"], "/x");
        assert_eq!(v["level"], "error");
    }
}
