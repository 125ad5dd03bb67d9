//! `…/{id}/exec`, `…/{id}/ps` and `…/{id}/logs`: calls answered by the host that runs the
//! machine (through [`hangar_domain::MachineHost`]), not by the store.

use std::time::Duration;

use axum::Json;
use axum::body::Body as HttpBody;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hangar_api_types::{ExecRequest, ExecResponse, LogEntry, LogEvent, LogMeta, ProcessStat};
use hangar_domain::{ExecCommand, HostError, LogLine, LogSource, MachineHost};
use hangar_store::MachineRecord;

use super::machines::{first, flag, load, query_pairs};
use crate::auth::Caller;
use crate::json::Body;
use crate::{ApiError, ApiState};

/// Exec timeout when the request gives none, and the longest allowed.
const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_EXEC_TIMEOUT: Duration = Duration::from_secs(300);
/// Lines of a log tail when the request gives no `tail`.
const DEFAULT_TAIL: usize = 100;

impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        match e {
            HostError::NotRunning(m) => ApiError::precondition(m),
            HostError::Invalid(m) => ApiError::bad_request(m),
            HostError::Timeout(m) => ApiError::timeout(m),
            HostError::Busy(m) => ApiError::busy(m),
            HostError::Failed(m) => ApiError::internal(m),
        }
    }
}

fn host(s: &ApiState) -> Result<&dyn MachineHost, ApiError> {
    s.host
        .as_deref()
        .ok_or_else(|| ApiError::not_implemented("this call on a server without a host agent"))
}

pub(crate) async fn exec(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, id)): Path<(String, String)>,
    Body(req): Body<ExecRequest>,
) -> Result<Json<ExecResponse>, ApiError> {
    let (_, m) = load(&s, &c, &app, &id)?;
    let argv = if !req.command.is_empty() {
        req.command
    } else if let Some(cmd) = req.cmd.as_deref().filter(|c| !c.trim().is_empty()) {
        shell_words::split(cmd).map_err(|e| ApiError::bad_request(format!("cmd: {e}")))?
    } else {
        return Err(ApiError::bad_request(
            "exec needs `command` (an array) or `cmd` (a string)",
        ));
    };
    if argv[0].is_empty() || argv.iter().any(|a| a.contains('\0')) {
        return Err(ApiError::bad_request(
            "command: the program is empty or an argument contains NUL",
        ));
    }
    let timeout = match req.timeout {
        None | Some(0) => DEFAULT_EXEC_TIMEOUT,
        Some(t) if t < 0 => return Err(ApiError::bad_request("timeout must be positive")),
        Some(t) => Duration::from_secs(t.unsigned_abs()).min(MAX_EXEC_TIMEOUT),
    };
    let out = host(&s)?
        .exec(
            &m.id,
            ExecCommand {
                argv,
                stdin: req.stdin.map(String::into_bytes),
                timeout,
            },
        )
        .await?;
    if out.timed_out {
        return Err(ApiError::timeout(format!(
            "the command did not finish within {}s and was killed",
            timeout.as_secs()
        )));
    }
    Ok(Json(ExecResponse {
        exit_code: i64::from(out.code),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }))
}

pub(crate) async fn ps(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Vec<ProcessStat>>, ApiError> {
    let (_, m) = load(&s, &c, &app, &id)?;
    let q = query_pairs(raw.as_deref());
    let desc = match first(&q, "order").unwrap_or("asc") {
        "" | "asc" => false,
        "desc" => true,
        other => {
            return Err(ApiError::bad_request(format!(
                "order: {other:?} is not asc or desc"
            )));
        }
    };
    let sort_by = first(&q, "sort_by").unwrap_or("pid").to_string();
    let mut procs = host(&s)?.processes(&m.id).await?;
    match sort_by.as_str() {
        "" | "pid" => procs.sort_by_key(|p| p.pid),
        "cpu" => procs.sort_by_key(|p| p.cpu),
        "rss" | "mem" => procs.sort_by_key(|p| p.rss),
        "stime" => procs.sort_by_key(|p| p.stime),
        "rtime" => procs.sort_by_key(|p| p.rtime),
        "command" => procs.sort_by(|a, b| a.command.cmp(&b.command)),
        other => {
            return Err(ApiError::bad_request(format!(
                "sort_by: {other:?} is not one of pid, cpu, rss, stime, rtime, command"
            )));
        }
    }
    if desc {
        procs.reverse();
    }
    Ok(Json(procs))
}

fn entry(m: &MachineRecord, l: LogLine) -> LogEntry {
    let (level, stream) = match l.source {
        LogSource::Stdout => ("info", "stdout"),
        LogSource::Stderr => ("error", "stderr"),
    };
    LogEntry {
        timestamp: l.timestamp,
        message: l.message,
        level: level.into(),
        instance: m.id.clone(),
        region: m.region.clone(),
        meta: LogMeta {
            instance: m.id.clone(),
            region: m.region.clone(),
            event: LogEvent {
                provider: "app".into(),
            },
            stream: Some(stream.into()),
            ..LogMeta::default()
        },
    }
}

/// `GET …/{id}/logs?tail=N&follow=true`: the machine's last `tail` lines (default 100, at
/// most 10,000) as a JSON array; with `follow`, newline-delimited JSON entries that keep
/// coming as the machine writes, until the machine is destroyed or the client goes away.
pub(crate) async fn logs(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (_, m) = load(&s, &c, &app, &id)?;
    let q = query_pairs(raw.as_deref());
    let tail = match first(&q, "tail") {
        None | Some("") => DEFAULT_TAIL,
        Some(t) => t
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request(format!("tail: {t:?} is not a count")))?,
    };
    let follow = flag(&q, "follow")?;
    let logs = host(&s)?.logs(&m.id, tail, follow).await?;
    let Some(follower) = logs.follow else {
        let entries: Vec<LogEntry> = logs.lines.into_iter().map(|l| entry(&m, l)).collect();
        return Ok(Json(entries).into_response());
    };
    let first_lines: std::collections::VecDeque<LogLine> = logs.lines.into();
    let stream = futures_util::stream::unfold(
        (first_lines, follower, m),
        |(mut backlog, mut follower, m)| async move {
            let line = match backlog.pop_front() {
                Some(l) => l,
                None => follower.next().await?,
            };
            let mut bytes = serde_json::to_vec(&entry(&m, line)).unwrap_or_default();
            bytes.push(b'\n');
            Some((
                Ok::<_, std::convert::Infallible>(bytes),
                (backlog, follower, m),
            ))
        },
    );
    let mut resp = HttpBody::from_stream(stream).into_response();
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(resp)
}
