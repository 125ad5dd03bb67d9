//! The platform's lines of apps' streams (`runner` from the agent, `proxy` from the edge
//! proxy): the host's [`hangar_domain::PlatformLog`].
//!
//! Kept per app in a rotated file, `DATA/logs/<app>/platform.log` (and `platform.log.1`), one
//! JSON object per line, so they survive a hangard restart and are read like machine logs
//! (tails, backward scans, followers across rotation). A file is rotated when it would pass
//! its limit, so an app keeps at most twice that. Writers never block: [`PlatformLogs::emit`]
//! puts the line on a bounded queue ([`QUEUE`] lines) that one thread drains; a full queue
//! drops the line. Written and dropped lines, and the queue, are in the agent's metrics.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;

use hangar_api_types::MachineRestart;
use hangar_domain::restart::DEFAULT_MAX_RETRIES;
use hangar_domain::{AppLogLine, AppName, HttpInfo, Level, PlatformLog, Provider, RestartDecision};
use hangar_metrics::Families;
use hangar_runtime::{Driver, ExitStatus};
use hangar_store::MachineRecord;
use serde_json::{Value, json};

use crate::Agent;

/// Lines waiting to be written, at most.
pub const QUEUE: usize = 4096;
/// Bytes of one app's current platform file before it is rotated (the app keeps two).
pub const DEFAULT_FILE_LIMIT: u64 = 1 << 20;
/// Longest message kept (longer ones are cut).
const MAX_MESSAGE: usize = 4096;
/// Lines written per file open.
const BATCH: usize = 512;

/// The file of an app's platform lines under the logs directory.
pub(crate) fn platform_path(dir: &Path, app: &str) -> PathBuf {
    dir.join(app).join("platform.log")
}

enum Msg {
    Line(String, AppLogLine),
    Flush(mpsc::Sender<()>),
}

#[derive(Debug, Default)]
struct Stats {
    written: [AtomicU64; 3],
    dropped_full: AtomicU64,
    dropped_invalid: AtomicU64,
    failed: AtomicU64,
    queued: AtomicUsize,
}

/// The host's platform lines: a bounded queue in front of per-app rotated files.
#[derive(Debug)]
pub struct PlatformLogs {
    dir: PathBuf,
    tx: mpsc::SyncSender<Msg>,
    stats: Arc<Stats>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

fn provider_index(p: Provider) -> usize {
    match p {
        Provider::App => 0,
        Provider::Runner => 1,
        Provider::Proxy => 2,
    }
}

impl PlatformLogs {
    /// Keeps platform lines under `dir` (`DATA/logs`), each app's current file up to
    /// `file_limit` bytes. Starts the writer thread, which ends when this is dropped.
    pub fn open(dir: PathBuf, file_limit: u64) -> std::io::Result<Arc<Self>> {
        std::fs::create_dir_all(&dir)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let stats = Arc::new(Stats::default());
        let writer = Writer {
            dir: dir.clone(),
            limit: file_limit.max(1024),
            stats: stats.clone(),
        };
        std::thread::Builder::new()
            .name("hangar-platform-log".into())
            .spawn(move || writer.run(&rx))?;
        Ok(Arc::new(Self { dir, tx, stats }))
    }

    /// Where the app's lines are kept.
    pub(crate) fn path(&self, app: &str) -> PathBuf {
        platform_path(&self.dir, app)
    }

    /// Waits until every line emitted before the call is written (tests; shutdown).
    pub fn flush(&self) {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Lines written, by provider.
    pub fn written(&self, provider: Provider) -> u64 {
        self.stats.written[provider_index(provider)].load(Ordering::Relaxed)
    }

    /// Lines dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.stats.dropped_full.load(Ordering::Relaxed)
    }

    /// Removes an app's lines (the app was deleted).
    pub fn remove_app(&self, app: &str) {
        if AppName::parse(app).is_ok() {
            let _ = std::fs::remove_dir_all(self.dir.join(app));
        }
    }

    /// Removes the lines of apps not in `live`.
    pub fn collect_garbage(&self, live: &HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !live.contains(&name) && AppName::parse(&name).is_ok() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }

    /// The queue's and the files' figures.
    pub(crate) fn collect_metrics(&self, out: &mut Families, host: &str) {
        for p in [Provider::Runner, Provider::Proxy] {
            out.counter(
                "hangar_logs_platform_lines_total",
                "Platform lines (runner, proxy) written to apps' log streams.",
                &[("provider", p.as_str()), ("host", host)],
                self.written(p) as f64,
            );
        }
        for (reason, n) in [
            ("queue_full", &self.stats.dropped_full),
            ("invalid_app", &self.stats.dropped_invalid),
            ("write_failed", &self.stats.failed),
        ] {
            out.counter(
                "hangar_logs_platform_dropped_total",
                "Platform lines not written: the queue was full, the app name was not one, or the file could not be written.",
                &[("reason", reason), ("host", host)],
                n.load(Ordering::Relaxed) as f64,
            );
        }
        out.gauge(
            "hangar_logs_platform_queue",
            "Platform lines waiting to be written.",
            &[("host", host)],
            self.stats.queued.load(Ordering::Relaxed) as f64,
        );
        out.gauge(
            "hangar_logs_platform_queue_capacity",
            "Platform lines that can wait to be written; more are dropped.",
            &[("host", host)],
            QUEUE as f64,
        );
    }
}

impl PlatformLog for PlatformLogs {
    fn emit(&self, app: &str, mut line: AppLogLine) {
        if AppName::parse(app).is_err() {
            self.stats.dropped_invalid.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if line.message.len() > MAX_MESSAGE {
            let mut cut = MAX_MESSAGE;
            while !line.message.is_char_boundary(cut) {
                cut -= 1;
            }
            line.message.truncate(cut);
        }
        // One line each: a message with newlines would read back as several.
        if line.message.contains(['\n', '\r']) {
            line.message = line.message.replace(['\n', '\r'], " ");
        }
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(Msg::Line(app.to_string(), line)).is_err() {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            self.stats.dropped_full.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Writer {
    dir: PathBuf,
    limit: u64,
    stats: Arc<Stats>,
}

impl Writer {
    fn run(self, rx: &mpsc::Receiver<Msg>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            // Lines grouped per app in order, written with one open per app; a flush waits
            // for what came before it.
            let mut pending: Vec<(String, Vec<u8>, [u64; 3])> = Vec::new();
            for m in batch {
                match m {
                    Msg::Line(app, line) => {
                        self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                        let i = match pending.iter().position(|(a, _, _)| *a == app) {
                            Some(i) => i,
                            None => {
                                pending.push((app, Vec::new(), [0; 3]));
                                pending.len() - 1
                            }
                        };
                        let (_, buf, counts) = &mut pending[i];
                        buf.extend_from_slice(encode(&line).as_bytes());
                        buf.push(b'\n');
                        counts[provider_index(line.provider)] += 1;
                    }
                    Msg::Flush(done) => {
                        self.write_all(&mut pending);
                        let _ = done.send(());
                    }
                }
            }
            self.write_all(&mut pending);
        }
    }

    fn write_all(&self, pending: &mut Vec<(String, Vec<u8>, [u64; 3])>) {
        for (app, buf, counts) in pending.drain(..) {
            let lines: u64 = counts.iter().sum();
            match self.append(&app, &buf) {
                Ok(()) => {
                    for (i, n) in counts.iter().enumerate() {
                        self.stats.written[i].fetch_add(*n, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    self.stats.failed.fetch_add(lines, Ordering::Relaxed);
                    eprintln!("hangar-agent: platform log of app {app}: {e}");
                }
            }
        }
    }

    /// Appends whole lines, rotating whenever the next line would take the file past the
    /// limit (a single line longer than the limit gets a file of its own).
    fn append(&self, app: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = platform_path(&self.dir, app);
        // Only the app's directory is made: if the logs directory itself is gone (the data
        // directory was removed) nothing is recreated.
        if let Some(d) = path.parent()
            && let Err(e) = std::fs::create_dir(d)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(e);
        }
        let mut len = std::fs::metadata(&path).map_or(0, |m| m.len());
        let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut rest = bytes;
        while !rest.is_empty() {
            // As many whole lines as fit (at least one when the file is empty).
            let mut take = 0usize;
            for line in rest.split_inclusive(|&b| b == b'\n') {
                let fits = len + (take + line.len()) as u64 <= self.limit;
                if !fits && (take > 0 || len > 0) {
                    break;
                }
                take += line.len();
            }
            if take == 0 {
                f.flush()?;
                std::fs::rename(&path, hangar_runtime::init::logger::rotated_path(&path))?;
                f = OpenOptions::new().create(true).append(true).open(&path)?;
                len = 0;
                continue;
            }
            f.write_all(&rest[..take])?;
            len += take as u64;
            rest = &rest[take..];
        }
        Ok(())
    }
}

/// One line as kept on disk.
fn encode(l: &AppLogLine) -> String {
    let mut v = json!({
        "t": l.time_ns,
        "p": l.provider.as_str(),
        "i": l.instance,
        "r": l.region,
        "l": l.level.as_str(),
        "m": l.message,
    });
    if let Some(code) = &l.error_code {
        v["e"] = json!(code);
    }
    if let Some(h) = &l.http {
        v["h"] = json!({"id": h.request_id, "method": h.method, "status": h.status, "url": h.url});
    }
    v.to_string()
}

/// A line read back from disk; `None` for anything else.
pub(crate) fn decode(record: &[u8]) -> Option<AppLogLine> {
    let v: Value = serde_json::from_slice(record).ok()?;
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let mut line = AppLogLine::new(
        v.get("t")?.as_i64()?,
        Provider::parse(v.get("p")?.as_str()?)?,
        &s("i"),
        &s("r"),
        v.get("l")
            .and_then(Value::as_str)
            .and_then(Level::parse)
            .unwrap_or(Level::Info),
        s("m"),
    );
    line.error_code = v.get("e").and_then(Value::as_str).map(str::to_string);
    line.http = v.get("h").map(|h| {
        let hs = |k: &str| {
            h.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        HttpInfo {
            request_id: hs("id"),
            method: hs("method"),
            status: h
                .get("status")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok()),
            url: hs("url"),
        }
    });
    Some(line)
}

/// The `runner` line of a start that took `ms` milliseconds.
pub(crate) fn started_in(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("machine started in {ms}ms")
    } else {
        format!("machine started in {}.{:03}s", ms / 1000, ms % 1000)
    }
}

/// The `runner` lines of an exit the machine's app made on its own, after the restart policy
/// decided (`attempt`: the restart count with this one).
pub(crate) fn exit_lines(
    exit: &ExitStatus,
    restart: &MachineRestart,
    decision: RestartDecision,
    attempt: i64,
    success: bool,
) -> Vec<String> {
    let how = match (exit.signal, exit.oom_killed) {
        (_, true) => format!("exit code {} (out of memory)", exit.code),
        (Some(sig), false) => format!("signal {sig} (exit code {})", exit.code),
        (None, false) => format!("exit code {}", exit.code),
    };
    let policy = restart
        .policy
        .as_ref()
        .map_or_else(|| "on-failure".to_string(), ToString::to_string);
    let max = restart
        .max_retries
        .unwrap_or(i64::from(DEFAULT_MAX_RETRIES))
        .max(0);
    match decision {
        RestartDecision::Restart if policy == "always" && restart.max_retries.is_none() => {
            vec![format!(
                "machine exited with {how}, restarting (restart policy {policy}, attempt {attempt})"
            )]
        }
        RestartDecision::Restart => vec![format!(
            "machine exited with {how}, restarting (restart policy {policy}, attempt {attempt}/{max})"
        )],
        RestartDecision::Destroy => vec![format!(
            "machine exited with {how}, destroying it (auto_destroy is set)"
        )],
        RestartDecision::Stop => {
            let wanted = policy == "always" || (policy != "no" && !success);
            vec![
                format!("machine exited with {how}"),
                if wanted {
                    format!("machine reached its max restart count of {max}, not restarting")
                } else {
                    format!("machine restart policy set to '{policy}', not restarting")
                },
            ]
        }
    }
}

/// Unix nanoseconds now.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl<D: Driver> Agent<D> {
    /// Removes the platform lines of apps the store no longer has.
    pub(crate) fn collect_platform_logs(&self) {
        if let Some(p) = &self.config.platform_logs
            && let Ok(apps) = self.store.list_apps(None)
        {
            p.collect_garbage(&apps.into_iter().map(|a| a.name).collect());
        }
    }

    /// Writes a `runner` line about a machine into its app's stream.
    pub(crate) fn runner_line(&self, m: &MachineRecord, level: Level, message: impl Into<String>) {
        if let Some(p) = &self.config.platform_logs {
            p.emit(
                &m.app,
                AppLogLine::new(now_ns(), Provider::Runner, &m.id, &m.region, level, message),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_api_types::RestartPolicy;

    /// A temp directory removed when dropped, even when the test fails.
    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir() -> Dir {
        use std::sync::atomic::AtomicU32;
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "hangar-platform-log-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        Dir(d)
    }

    fn line(t: i64, msg: &str) -> AppLogLine {
        AppLogLine::new(
            t,
            Provider::Runner,
            "0123456789abcd",
            "ams",
            Level::Info,
            msg,
        )
    }

    #[test]
    fn lines_round_trip_through_the_file_and_rotate_at_the_limit() {
        let dir = dir();
        let d = dir.0.clone();
        let logs = PlatformLogs::open(d.clone(), 16 * 1024).expect("open");
        let mut proxy = AppLogLine::new(
            7,
            Provider::Proxy,
            "",
            "fra",
            Level::Error,
            "[PC01] refused\nsecond line",
        );
        proxy.error_code = Some("PC01".into());
        proxy.http = Some(HttpInfo {
            request_id: "abc-fra".into(),
            method: "GET".into(),
            status: Some(502),
            url: "/x?y=1".into(),
        });
        logs.emit("web", proxy.clone());
        logs.emit("web", line(8, &"x".repeat(MAX_MESSAGE * 2)));
        logs.emit("../evil", line(9, "nope"));
        logs.flush();
        let text = std::fs::read_to_string(logs.path("web")).expect("read");
        let back: Vec<AppLogLine> = text.lines().filter_map(|l| decode(l.as_bytes())).collect();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].message, "[PC01] refused second line");
        assert_eq!(back[0].http, proxy.http);
        assert_eq!(back[0].error_code.as_deref(), Some("PC01"));
        assert_eq!(
            (back[0].provider, back[0].level),
            (Provider::Proxy, Level::Error)
        );
        assert_eq!(back[1].message.len(), MAX_MESSAGE);
        assert_eq!(logs.written(Provider::Proxy), 1);
        assert_eq!(logs.stats.dropped_invalid.load(Ordering::Relaxed), 1);
        assert!(!d.join("..").join("evil").exists());
        // Past the limit the file is rotated: at most two files' worth is kept.
        for i in 0..400 {
            logs.emit("web", line(100 + i, &format!("line {i}")));
        }
        logs.flush();
        let cur = std::fs::metadata(logs.path("web")).expect("cur").len();
        let old = hangar_runtime::init::logger::rotated_path(&logs.path("web"));
        assert!(cur <= 16 * 1024 && old.exists(), "{cur}");
        let tail = std::fs::read_to_string(logs.path("web")).expect("read");
        let last = tail.lines().last().and_then(|l| decode(l.as_bytes()));
        assert_eq!(
            last.map(|l| (l.time_ns, l.message)),
            Some((499, "line 399".into()))
        );
        // Garbage collection keeps live apps only.
        logs.emit("gone", line(1, "x"));
        logs.flush();
        logs.collect_garbage(&["web".to_string()].into_iter().collect());
        assert!(logs.path("web").exists() && !d.join("gone").exists());
        logs.remove_app("web");
        assert!(!d.join("web").exists());
        drop(logs);
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let dir = dir();
        let logs = PlatformLogs::open(dir.0.clone(), DEFAULT_FILE_LIMIT).expect("open");
        let n = QUEUE * 4;
        for i in 0..n {
            logs.emit("busy", line(i as i64, "x"));
        }
        logs.flush();
        let written = logs.written(Provider::Runner);
        assert_eq!(written + logs.dropped(), n as u64);
        assert_eq!(logs.stats.queued.load(Ordering::Relaxed), 0);
        let kept = std::fs::read_to_string(logs.path("busy"))
            .expect("read")
            .lines()
            .count();
        assert_eq!(kept as u64, written);
        let mut f = Families::new();
        logs.collect_metrics(&mut f, "0001");
        let text = f.render();
        assert!(
            text.contains(&format!(
                "hangar_logs_platform_dropped_total{{reason=\"queue_full\",host=\"0001\"}} {}",
                logs.dropped()
            )),
            "{text}"
        );
        drop(logs);
    }

    #[test]
    fn lifecycle_messages() {
        assert_eq!(started_in(3), "machine started in 3ms");
        assert_eq!(started_in(1234), "machine started in 1.234s");
        assert_eq!(started_in(-5), "machine started in 0ms");
        let crash = ExitStatus {
            code: 1,
            signal: None,
            oom_killed: false,
        };
        let on_failure = MachineRestart::default();
        assert_eq!(
            exit_lines(&crash, &on_failure, RestartDecision::Restart, 2, false),
            [
                "machine exited with exit code 1, restarting (restart policy on-failure, attempt 2/10)"
            ]
        );
        let no = MachineRestart {
            policy: Some(RestartPolicy::No),
            max_retries: None,
        };
        assert_eq!(
            exit_lines(&crash, &no, RestartDecision::Stop, 0, false),
            [
                "machine exited with exit code 1",
                "machine restart policy set to 'no', not restarting"
            ]
        );
        assert_eq!(
            exit_lines(&crash, &on_failure, RestartDecision::Stop, 10, false)[1],
            "machine reached its max restart count of 10, not restarting"
        );
        let clean = ExitStatus { code: 0, ..crash };
        assert_eq!(
            exit_lines(&clean, &on_failure, RestartDecision::Stop, 0, true)[1],
            "machine restart policy set to 'on-failure', not restarting"
        );
        let always = MachineRestart {
            policy: Some(RestartPolicy::Always),
            max_retries: None,
        };
        let killed = ExitStatus {
            code: 137,
            signal: Some(9),
            oom_killed: false,
        };
        assert_eq!(
            exit_lines(&killed, &always, RestartDecision::Restart, 4, false),
            [
                "machine exited with signal 9 (exit code 137), restarting (restart policy always, attempt 4)"
            ]
        );
        let oom = ExitStatus {
            oom_killed: true,
            ..killed
        };
        assert_eq!(
            exit_lines(&oom, &always, RestartDecision::Destroy, 0, false),
            [
                "machine exited with exit code 137 (out of memory), destroying it (auto_destroy is set)"
            ]
        );
    }

    #[test]
    fn decode_refuses_what_is_not_a_line() {
        for bad in [
            &b""[..],
            b"{}",
            b"not json",
            b"{\"t\":1,\"p\":\"martian\"}",
            b"{\"t\":\"1\",\"p\":\"runner\"}",
        ] {
            assert_eq!(decode(bad), None);
        }
        let l = decode(b"{\"t\":1,\"p\":\"runner\"}").expect("minimal");
        assert_eq!((l.level, l.message.as_str()), (Level::Info, ""));
    }
}
