//! An app's whole stream on this host (`MachineHost::app_logs`): the output of its machines
//! here (`app` lines, from the files hangar-init writes) and its platform lines (`runner`,
//! `proxy`, from [`crate::PlatformLogs`]), merged by time with `hangar_domain::applog`.
//!
//! A read takes, per source, what it needs from the newest record back (the newest lines, or
//! every line since a poller's cursor), bounded by [`MAX_SCAN`] records per source. A follower
//! starts each source where its read ended (nothing lost, nothing twice), picks up machines
//! of the app that appear later, holds one of [`MAX_APP_FOLLOWERS`] slots, and ends with the
//! app, or when the agent stops.

use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_domain::applog::{merge, page};
use hangar_domain::{
    AppLogFollow, AppLogLine, AppLogQuery, AppLogs, HostError, Level, LogSource, Provider,
};
use hangar_runtime::Driver;
use hangar_runtime::init::logger::{self, LogStream};
use hangar_store::{MachineRecord, Store};

use crate::Agent;
use crate::logs::{FileTail, FollowSlot, MAX_TAIL, log_path, open_end, read_back};
use crate::platform_log;

/// App streams followed at once, per host.
pub const MAX_APP_FOLLOWERS: usize = 64;
/// Records read back per source for one read, at most.
pub const MAX_SCAN: usize = MAX_TAIL;
/// How often a follower looks for new lines.
const POLL: Duration = Duration::from_millis(100);
/// How often, at most, a follower looks for new machines of the app (when the store moved).
const REFRESH: Duration = Duration::from_millis(300);

/// Where lines come from.
#[derive(Debug, Clone)]
enum Source {
    /// A machine's output.
    Machine { id: String, region: String },
    /// The app's platform lines.
    Platform,
}

impl Source {
    fn decode(&self, record: &[u8]) -> Option<AppLogLine> {
        match self {
            Source::Machine { id, region } => Some(app_line(record, id, region)),
            Source::Platform => platform_log::decode(record),
        }
    }
}

/// A source and its log file.
type SourceFile = (Source, PathBuf);

/// A machine's output record as a line of its app's stream.
fn app_line(record: &[u8], id: &str, region: &str) -> AppLogLine {
    let r = logger::parse_record(record);
    let (stream, level) = match r.stream {
        LogStream::Stdout => (LogSource::Stdout, Level::Info),
        LogStream::Stderr => (LogSource::Stderr, Level::Error),
    };
    let mut l = AppLogLine::new(
        hangar_domain::time::parse_rfc3339_ns(r.timestamp).unwrap_or(0),
        Provider::App,
        id,
        region,
        level,
        String::from_utf8_lossy(r.text),
    );
    l.stream = Some(stream);
    l
}

fn wanted(q: &AppLogQuery, m: &MachineRecord) -> bool {
    q.instance.as_deref().is_none_or(|i| i == m.id)
        && q.region.as_deref().is_none_or(|r| r == m.region)
}

fn failed(e: impl std::fmt::Display) -> HostError {
    HostError::Failed(e.to_string())
}

/// One source's read: its lines (filtered), and where its current file ended.
fn read_source(
    source: &Source,
    path: &std::path::Path,
    q: &AppLogQuery,
    limit: usize,
) -> (Vec<AppLogLine>, Option<(File, u64)>) {
    let mut current = open_end(path);
    let records = match q.after {
        // Every line since the cursor's time (equal times included: the page skips them).
        Some(c) => read_back(path, current.as_mut(), MAX_SCAN, |r| {
            source.decode(r).is_some_and(|l| l.time_ns < c.time_ns)
        }),
        // The newest `limit` lines that pass the filters.
        None => {
            let mut matched = 0usize;
            read_back(path, current.as_mut(), MAX_SCAN, |r| {
                if matched >= limit {
                    return true;
                }
                if source.decode(r).is_some_and(|l| q.matches(&l)) {
                    matched += 1;
                }
                false
            })
        }
    };
    let lines = records
        .iter()
        .filter_map(|r| source.decode(r))
        .filter(|l| q.matches(l))
        .collect();
    (lines, current)
}

impl<D: Driver> Agent<D> {
    /// Log followers of apps open now.
    pub fn app_log_followers(&self) -> usize {
        self.app_followers
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn platform_path(&self, app: &str) -> Option<PathBuf> {
        self.config.platform_logs.as_ref().map(|p| p.path(app))
    }

    /// The sources of an app's stream on this host, and the machines among them.
    fn app_sources(
        &self,
        app: &str,
        q: &AppLogQuery,
    ) -> Result<(Vec<SourceFile>, HashSet<String>), HostError> {
        let machines = self.store.list_machines(app, false).map_err(failed)?;
        let mut sources = Vec::new();
        let mut known = HashSet::new();
        for m in machines.iter().filter(|m| wanted(q, m)) {
            let dir = self.machine_dir(&m.id);
            if dir.exists() {
                known.insert(m.id.clone());
                sources.push((
                    Source::Machine {
                        id: m.id.clone(),
                        region: m.region.clone(),
                    },
                    log_path(&dir),
                ));
            }
        }
        if let Some(p) = self.platform_path(app) {
            sources.push((Source::Platform, p));
        }
        Ok((sources, known))
    }

    /// `MachineHost::app_logs`.
    pub(crate) async fn read_app_logs(
        &self,
        app: &str,
        q: AppLogQuery,
    ) -> Result<AppLogs, HostError> {
        if self.store.get_app(app).map_err(failed)?.is_none() {
            return Err(HostError::NotRunning("app not found".into()));
        }
        let limit = q.limit.min(MAX_TAIL);
        let slot = if q.follow {
            Some(
                FollowSlot::take(&self.app_followers, MAX_APP_FOLLOWERS).ok_or_else(|| {
                    HostError::Busy(format!(
                        "{MAX_APP_FOLLOWERS} app log streams are already followed on this host; retry later"
                    ))
                })?,
            )
        } else {
            None
        };
        let (sources, known) = self.app_sources(app, &q)?;
        let query = q.clone();
        let (per_source, tails) = tokio::task::spawn_blocking(move || {
            let mut lines = Vec::with_capacity(sources.len());
            let mut tails = Vec::with_capacity(sources.len());
            for (source, path) in sources {
                let (l, current) = read_source(&source, &path, &query, limit);
                lines.push(l);
                tails.push((source, FileTail::new(path, current)));
            }
            (lines, tails)
        })
        .await
        .map_err(failed)?;
        let (lines, next) = page(merge(per_source), q.after, limit);
        let follow = slot.map(|slot| {
            Box::new(AppFollower {
                app: app.to_string(),
                query: q,
                store: self.store.clone(),
                machines_dir: self.config.machines_dir.clone(),
                sources: tails,
                known,
                revision: self.store.revision(),
                refreshed: Instant::now(),
                ready: VecDeque::new(),
                stop: self.stop.subscribe(),
                _slot: slot,
            }) as Box<dyn AppLogFollow>
        });
        Ok(AppLogs {
            lines,
            next,
            follow,
        })
    }
}

/// Follows every source of an app's stream on this host.
struct AppFollower {
    app: String,
    query: AppLogQuery,
    store: Arc<dyn Store>,
    machines_dir: PathBuf,
    sources: Vec<(Source, FileTail)>,
    known: HashSet<String>,
    revision: u64,
    refreshed: Instant,
    ready: VecDeque<AppLogLine>,
    stop: tokio::sync::watch::Receiver<bool>,
    _slot: FollowSlot,
}

impl AppFollower {
    /// Adds machines of the app that appeared (once their directory exists); false when
    /// the app is gone.
    fn refresh(&mut self) -> bool {
        let rev = self.store.revision();
        if rev == self.revision || self.refreshed.elapsed() < REFRESH {
            return true;
        }
        self.revision = rev;
        self.refreshed = Instant::now();
        if let Ok(None) = self.store.get_app(&self.app) {
            return false;
        }
        let Ok(machines) = self.store.list_machines(&self.app, false) else {
            return true;
        };
        for m in machines {
            if self.known.contains(&m.id) || !wanted(&self.query, &m) {
                continue;
            }
            let dir = self.machines_dir.join(&m.id);
            if !dir.exists() {
                continue;
            }
            self.known.insert(m.id.clone());
            self.sources.push((
                Source::Machine {
                    id: m.id,
                    region: m.region,
                },
                FileTail::new(log_path(&dir), None),
            ));
        }
        true
    }

    /// Reads every source once; what came is merged into `ready`. False when the stream
    /// is over.
    fn poll(&mut self) -> bool {
        if !self.refresh() {
            return false;
        }
        let q = &self.query;
        let mut batch = Vec::with_capacity(self.sources.len());
        self.sources.retain_mut(|(source, tail)| {
            let alive = tail.poll();
            let mut lines = Vec::new();
            while let Some(r) = tail.pop() {
                if let Some(l) = source.decode(&r).filter(|l| q.matches(l)) {
                    lines.push(l);
                }
            }
            batch.push(lines);
            // A machine whose directory went away is done (and never added again).
            alive
        });
        self.ready.extend(merge(batch));
        true
    }
}

impl AppLogFollow for AppFollower {
    fn next(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<AppLogLine>> + Send + '_>> {
        Box::pin(async move {
            loop {
                if let Some(l) = self.ready.pop_front() {
                    return Some(l);
                }
                if *self.stop.borrow() || !self.poll() {
                    return None;
                }
                if let Some(l) = self.ready.pop_front() {
                    return Some(l);
                }
                tokio::select! {
                    () = tokio::time::sleep(POLL) => {}
                    _ = self.stop.changed() => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_records_become_app_lines() {
        let l = app_line(
            b"2026-01-02T03:04:05.000000006Z stderr F boom",
            "0123456789abcd",
            "ams",
        );
        assert_eq!(l.message, "boom");
        assert_eq!((l.level, l.stream), (Level::Error, Some(LogSource::Stderr)));
        assert_eq!(l.timestamp(), "2026-01-02T03:04:05.000000006Z");
        assert_eq!(
            (l.instance.as_str(), l.region.as_str()),
            ("0123456789abcd", "ams")
        );
        // A record without a timestamp (an older init) sorts first rather than vanishing.
        assert_eq!(app_line(b"plain", "m", "r").time_ns, 0);
    }
}
