//! The app-wide log stream (PLATFORM.md §6.2): every line an app's user reads, whoever wrote
//! it. `app` lines are the machines' own output; `runner` lines are the platform's account of
//! a machine's life ("Starting machine", "machine exited with exit code 1, restarting…");
//! `proxy` lines are the edge proxy's §3.3 errors (`[PC01] …`) with the request they hit.
//!
//! The contract, so that the proxy and the agent can write platform lines without knowing
//! each other ([`PlatformLog`]), and so that the API can read an app's stream from the host
//! ([`AppLogQuery`] → [`AppLogs`], served by `MachineHost::app_logs`). The merge of several
//! sources into one stream, and the polling cursor ([`LogCursor`], the reference's
//! `next_token`), are pure and live here too.
//!
//! Pure: no IO, no clock. Times are Unix nanoseconds given by the caller.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::host::LogSource;

/// Who wrote a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Provider {
    /// The machine's own output (stdout, stderr).
    App,
    /// The platform, about a machine's lifecycle.
    Runner,
    /// The edge proxy, about a request it could not serve.
    Proxy,
}

impl Provider {
    /// The wire name (`meta.event.provider`).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::App => "app",
            Provider::Runner => "runner",
            Provider::Proxy => "proxy",
        }
    }

    /// Reads a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "app" => Some(Provider::App),
            "runner" => Some(Provider::Runner),
            "proxy" => Some(Provider::Proxy),
            _ => None,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A line's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Detail.
    Debug,
    /// Normal output (stdout, lifecycle).
    Info,
    /// Something to look at.
    Warn,
    /// Errors (stderr, proxy errors, failed launches).
    Error,
}

impl Level {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }

    /// Reads a wire name (`warning` too).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "debug" => Some(Level::Debug),
            "info" => Some(Level::Info),
            "warn" | "warning" => Some(Level::Warn),
            "error" => Some(Level::Error),
            _ => None,
        }
    }
}

/// The request a proxy line is about (`meta.http`, `meta.url`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpInfo {
    /// The proxy's request id (`fly-request-id`).
    pub request_id: String,
    /// Request method.
    pub method: String,
    /// Status returned to the client, when the proxy answered.
    pub status: Option<u16>,
    /// The request's URL as received (path and query, or absolute).
    pub url: String,
}

/// One line of an app's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppLogLine {
    /// When it was written, Unix nanoseconds.
    pub time_ns: i64,
    /// Who wrote it.
    pub provider: Provider,
    /// The machine it is about; empty when none (a proxy error before a machine was chosen).
    pub instance: String,
    /// Region of the machine (or of the proxy, for lines without a machine).
    pub region: String,
    /// Level.
    pub level: Level,
    /// The text, one line.
    pub message: String,
    /// For `app` lines: the stream it came from.
    pub stream: Option<LogSource>,
    /// For `proxy` lines: the §3.3 error code (`PC01`, `PR01`, …).
    pub error_code: Option<String>,
    /// For `proxy` lines: the request.
    pub http: Option<HttpInfo>,
}

impl AppLogLine {
    /// A platform line about a machine (or about none, with `instance` empty).
    pub fn new(
        time_ns: i64,
        provider: Provider,
        instance: &str,
        region: &str,
        level: Level,
        message: impl Into<String>,
    ) -> Self {
        Self {
            time_ns,
            provider,
            instance: instance.to_string(),
            region: region.to_string(),
            level,
            message: message.into(),
            stream: None,
            error_code: None,
            http: None,
        }
    }

    /// Its time as RFC 3339 with nanoseconds (`2026-01-02T03:04:05.123456789Z`).
    pub fn timestamp(&self) -> String {
        crate::time::rfc3339_ns(self.time_ns)
    }

    /// The order of the merged stream: time, then (for equal times) machine and provider, so
    /// that every read puts lines of equal time in the same order.
    fn order_key(&self) -> (i64, &str, Provider) {
        (self.time_ns, self.instance.as_str(), self.provider)
    }
}

/// Where platform lines go. The proxy and the agent write through it; the host's
/// implementation keeps them, bounded, per app.
pub trait PlatformLog: Send + Sync + fmt::Debug + 'static {
    /// Records a line of `app`'s stream. Never blocks: when the buffer is full the line is
    /// dropped (and counted by the implementation).
    fn emit(&self, app: &str, line: AppLogLine);
}

/// Where a poller stopped: after the lines of time `time_ns`, of which the first `skip` (in
/// the stream's order) were delivered. Opaque to clients (`next_token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCursor {
    /// Time of the last line delivered, Unix nanoseconds.
    pub time_ns: i64,
    /// Lines of exactly that time already delivered.
    pub skip: u32,
}

/// A `next_token` that this API did not give out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("next_token: {0:?} is not a token this API gave out")]
pub struct BadCursor(pub String);

impl LogCursor {
    /// The token clients pass back.
    pub fn token(&self) -> String {
        format!("{}.{}", self.time_ns, self.skip)
    }

    /// Reads a token from [`LogCursor::token`].
    pub fn parse(token: &str) -> Result<Self, BadCursor> {
        let bad = || BadCursor(token.chars().take(64).collect());
        let (t, s) = token.split_once('.').ok_or_else(bad)?;
        let digits = |x: &str, neg_ok: bool| {
            let x = if neg_ok {
                x.strip_prefix('-').unwrap_or(x)
            } else {
                x
            };
            !x.is_empty() && x.len() <= 20 && x.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(t, true) || !digits(s, false) {
            return Err(bad());
        }
        Ok(Self {
            time_ns: t.parse().map_err(|_| bad())?,
            skip: s.parse().map_err(|_| bad())?,
        })
    }
}

/// What part of an app's stream to read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AppLogQuery {
    /// Only lines about this machine.
    pub instance: Option<String>,
    /// Only lines of this region.
    pub region: Option<String>,
    /// Lines after this position, oldest first; `None`: the newest lines.
    pub after: Option<LogCursor>,
    /// Only lines older than this (Unix nanoseconds). A poller leaves out the last moment so
    /// that a line still on its way from one source is not passed by its cursor because a
    /// newer line of another source was already there.
    pub before_ns: Option<i64>,
    /// At most this many lines.
    pub limit: usize,
    /// Keep following: lines written later come through [`AppLogs::follow`].
    pub follow: bool,
}

impl AppLogQuery {
    /// Whether a line passes the filters.
    pub fn matches(&self, l: &AppLogLine) -> bool {
        self.instance.as_deref().is_none_or(|i| i == l.instance)
            && self.region.as_deref().is_none_or(|r| r == l.region)
            && self.before_ns.is_none_or(|b| l.time_ns < b)
    }
}

/// New lines of a followed app stream, as they are written.
pub trait AppLogFollow: Send {
    /// The next line; `None` when the stream ends (the app was deleted, the host stops).
    fn next(&mut self) -> Pin<Box<dyn Future<Output = Option<AppLogLine>> + Send + '_>>;
}

/// A read of an app's stream.
pub struct AppLogs {
    /// The lines, oldest first.
    pub lines: Vec<AppLogLine>,
    /// Where the next poll continues (`None` when nothing was delivered yet).
    pub next: Option<LogCursor>,
    /// What is written after them, when following.
    pub follow: Option<Box<dyn AppLogFollow>>,
}

impl fmt::Debug for AppLogs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppLogs")
            .field("lines", &self.lines.len())
            .field("next", &self.next)
            .field("follow", &self.follow.is_some())
            .finish()
    }
}

/// Merges the lines of several sources (each in the order it was written) into one stream
/// ordered by [time, machine, provider]; lines of one source that compare equal keep their
/// order. The result does not depend on the order of the sources.
pub fn merge(sources: Vec<Vec<AppLogLine>>) -> Vec<AppLogLine> {
    let mut all: Vec<AppLogLine> = sources.into_iter().flatten().collect();
    // Stable: equal keys come from one source (a source holds one machine's `app` lines, or
    // the platform's `runner`/`proxy` lines), whose order is kept.
    all.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    all
}

/// One page of a merged stream: with no cursor the newest `limit` lines, else the oldest
/// `limit` lines after it; and the cursor after the page (the given one when the page is
/// empty). `merged` must hold every line of the cursor's time that the sources have.
pub fn page(
    merged: Vec<AppLogLine>,
    after: Option<LogCursor>,
    limit: usize,
) -> (Vec<AppLogLine>, Option<LogCursor>) {
    // Index of the first line after the cursor.
    let start = match after {
        None => 0,
        Some(c) => {
            let before = merged.partition_point(|l| l.time_ns < c.time_ns);
            let same = merged[before..]
                .iter()
                .take_while(|l| l.time_ns == c.time_ns)
                .count();
            before + same.min(c.skip as usize)
        }
    };
    let (from, to) = match after {
        None => (merged.len().saturating_sub(limit), merged.len()),
        Some(_) => (start, merged.len().min(start.saturating_add(limit))),
    };
    if from >= to {
        return (Vec::new(), after);
    }
    let last = merged[to - 1].time_ns;
    let skip = merged[..to]
        .iter()
        .rev()
        .take_while(|l| l.time_ns == last)
        .count();
    let next = LogCursor {
        time_ns: last,
        skip: u32::try_from(skip).unwrap_or(u32::MAX),
    };
    let mut merged = merged;
    merged.truncate(to);
    let lines = merged.split_off(from);
    (lines, Some(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(t: i64, instance: &str, provider: Provider, msg: &str) -> AppLogLine {
        AppLogLine::new(t, provider, instance, "ams", Level::Info, msg)
    }

    fn msgs(lines: &[AppLogLine]) -> Vec<&str> {
        lines.iter().map(|l| l.message.as_str()).collect()
    }

    #[test]
    fn merges_by_time_whatever_the_order_of_sources() {
        let a = vec![
            l(10, "m1", Provider::App, "a1"),
            l(30, "m1", Provider::App, "a2"),
            l(30, "m1", Provider::App, "a3"),
        ];
        let b = vec![
            l(20, "m2", Provider::App, "b1"),
            l(30, "m2", Provider::App, "b2"),
        ];
        let p = vec![
            l(5, "m1", Provider::Runner, "r1"),
            l(30, "", Provider::Proxy, "p1"),
            l(30, "m1", Provider::Runner, "r2"),
        ];
        let one = merge(vec![a.clone(), b.clone(), p.clone()]);
        let two = merge(vec![p, b, a]);
        assert_eq!(one, two);
        assert_eq!(msgs(&one), ["r1", "a1", "b1", "p1", "a2", "a3", "r2", "b2"]);
    }

    fn stream(n: i64) -> Vec<AppLogLine> {
        // Pairs of lines share a time, so pages cut between equal times.
        merge(vec![
            (0..n)
                .map(|i| l(i / 2, "m1", Provider::App, &format!("x{i}")))
                .collect(),
        ])
    }

    #[test]
    fn pages_from_the_newest_then_forward_without_duplicates_or_gaps() {
        let all = stream(9);
        let (first, c) = page(all.clone(), None, 3);
        assert_eq!(msgs(&first), ["x6", "x7", "x8"]);
        assert_eq!(
            c,
            Some(LogCursor {
                time_ns: 4,
                skip: 1
            })
        );
        // Nothing new: empty page, same cursor.
        let (none, c2) = page(all, c, 3);
        assert!(none.is_empty());
        assert_eq!(c2, c);
        // Every line read exactly once, page after page, whatever the page size.
        for size in 1..6 {
            let all = stream(21);
            let mut seen = Vec::new();
            let mut cursor = Some(LogCursor {
                time_ns: -1,
                skip: 0,
            });
            for _ in 0..100 {
                let (p, next) = page(all.clone(), cursor, size);
                if p.is_empty() {
                    break;
                }
                assert!(p.len() <= size);
                seen.extend(p.into_iter().map(|l| l.message));
                cursor = next;
            }
            let want: Vec<String> = (0..21).map(|i| format!("x{i}")).collect();
            assert_eq!(seen, want, "page size {size}");
        }
    }

    #[test]
    fn a_cursor_inside_equal_times_skips_what_was_delivered() {
        let all = stream(6); // times 0,0,1,1,2,2
        let (p, c) = page(
            all.clone(),
            Some(LogCursor {
                time_ns: 1,
                skip: 1,
            }),
            10,
        );
        assert_eq!(msgs(&p), ["x3", "x4", "x5"]);
        assert_eq!(
            c,
            Some(LogCursor {
                time_ns: 2,
                skip: 2
            })
        );
        // A cursor past the end, or skipping more than there is, gives nothing.
        let (p, _) = page(
            all.clone(),
            Some(LogCursor {
                time_ns: 9,
                skip: 0,
            }),
            10,
        );
        assert!(p.is_empty());
        let (p, _) = page(
            all,
            Some(LogCursor {
                time_ns: 2,
                skip: 7,
            }),
            10,
        );
        assert!(p.is_empty());
        assert!(page(Vec::new(), None, 10).0.is_empty());
        assert!(page(stream(4), None, 0).0.is_empty());
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        for c in [
            LogCursor {
                time_ns: 0,
                skip: 0,
            },
            LogCursor {
                time_ns: 1_700_000_000_123_456_789,
                skip: 3,
            },
            LogCursor {
                time_ns: -5,
                skip: u32::MAX,
            },
        ] {
            assert_eq!(LogCursor::parse(&c.token()), Ok(c));
        }
        for bad in [
            "",
            ".",
            "1",
            "1.",
            ".1",
            "a.1",
            "1.-1",
            "1.1.1",
            "--1.0",
            "1 .0",
            "99999999999999999999999.0",
            "1.99999999999",
        ] {
            assert!(LogCursor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters() {
        let q = AppLogQuery {
            instance: Some("m1".into()),
            ..AppLogQuery::default()
        };
        assert!(q.matches(&l(1, "m1", Provider::App, "")));
        assert!(!q.matches(&l(1, "", Provider::Proxy, "")));
        let q = AppLogQuery {
            region: Some("fra".into()),
            ..AppLogQuery::default()
        };
        assert!(!q.matches(&l(1, "m1", Provider::App, "")));
        assert!(AppLogQuery::default().matches(&l(1, "", Provider::Proxy, "")));
        let q = AppLogQuery {
            before_ns: Some(5),
            ..AppLogQuery::default()
        };
        assert!(q.matches(&l(4, "m1", Provider::App, "")));
        assert!(!q.matches(&l(5, "m1", Provider::App, "")));
        assert_eq!(Provider::parse("runner"), Some(Provider::Runner));
        assert_eq!(Level::parse("warning"), Some(Level::Warn));
        assert_eq!(Provider::parse("nope"), None);
    }
}
