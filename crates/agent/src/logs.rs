//! Reading machine logs: the files hangar-init writes (`logs/machine.log` and its rotated
//! `machine.log.1`, one timestamped record per line, see `hangar_runtime::init::logger`),
//! as a tail and as a live follow that survives rotation.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hangar_domain::{LogFollow, LogLine, LogSource};
use hangar_runtime::init::logger::{self, LogStream};

/// Most lines a tail returns.
pub const MAX_TAIL: usize = 10_000;
/// How often a follower looks for new output.
const POLL: Duration = Duration::from_millis(100);
/// Bytes read per step when reading a file backwards or forwards.
const CHUNK: usize = 64 * 1024;

/// The log file of a machine directory.
pub(crate) fn log_path(machine_dir: &Path) -> PathBuf {
    machine_dir.join("logs").join("machine.log")
}

fn to_line(record: &[u8]) -> LogLine {
    let r = logger::parse_record(record);
    LogLine {
        timestamp: r.timestamp.to_string(),
        source: match r.stream {
            LogStream::Stdout => LogSource::Stdout,
            LogStream::Stderr => LogSource::Stderr,
        },
        message: String::from_utf8_lossy(r.text).into_owned(),
    }
}

/// The last `n` lines of `file` before offset `end`, oldest first.
fn last_lines(file: &mut File, end: u64, n: usize) -> std::io::Result<Vec<Vec<u8>>> {
    if n == 0 || end == 0 {
        return Ok(Vec::new());
    }
    // Read backwards until more than `n` newlines are in hand (or the file starts).
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut pos = end;
    let mut newlines = 0usize;
    while pos > 0 && newlines <= n {
        let step = (pos as usize).min(CHUNK);
        pos -= step as u64;
        let mut chunk = vec![0u8; step];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut chunk)?;
        newlines += chunk.iter().filter(|&&b| b == b'\n').count();
        chunks.push(chunk);
    }
    chunks.reverse();
    let buf = chunks.concat();
    let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
    let mut lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    if pos > 0 {
        // The first piece starts mid-line.
        lines.remove(0);
    }
    let skip = lines.len().saturating_sub(n);
    Ok(lines[skip..].iter().map(|l| l.to_vec()).collect())
}

/// The last `n` lines of a machine's log and where the current file ended when read (the
/// follower starts there: nothing lost, nothing twice).
pub(crate) fn tail(machine_dir: &Path, n: usize) -> (Vec<LogLine>, Option<(File, u64)>) {
    let (records, current) = tail_records(&log_path(machine_dir), n);
    (records.iter().map(|l| to_line(l)).collect(), current)
}

/// The last `n` records (lines) of a rotated log file (`path` and `path.1`), oldest first,
/// and where the current file ended when read.
pub(crate) fn tail_records(path: &Path, n: usize) -> (Vec<Vec<u8>>, Option<(File, u64)>) {
    let n = n.min(MAX_TAIL);
    let mut out: Vec<Vec<u8>> = Vec::new();
    let current = File::open(path).ok().and_then(|mut f| {
        let len = f.metadata().ok()?.len();
        let end = complete_end(&mut f, len);
        if n > 0 {
            out = last_lines(&mut f, end, n).unwrap_or_default();
        }
        Some((f, end))
    });
    if out.len() < n {
        let old = logger::rotated_path(path);
        if let Ok(mut f) = File::open(&old)
            && let Ok(meta) = f.metadata()
        {
            let mut older = last_lines(&mut f, meta.len(), n - out.len()).unwrap_or_default();
            older.append(&mut out);
            out = older;
        }
    }
    (out, current)
}

/// The current file of a log and the offset just after its last whole record.
pub(crate) fn open_end(path: &Path) -> Option<(File, u64)> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let end = complete_end(&mut f, len);
    Some((f, end))
}

/// Records of a rotated log read from the newest back: the current file up to its given end
/// (from [`open_end`]), then `path.1`, until `stop` says so for one (that one excluded) or
/// `max` are in hand; oldest first.
pub(crate) fn read_back(
    path: &Path,
    current: Option<&mut (File, u64)>,
    max: usize,
    mut stop: impl FnMut(&[u8]) -> bool,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut done = false;
    if let Some((f, end)) = current {
        done = scan_back(f, *end, max, &mut stop, &mut out).unwrap_or(true);
    }
    if !done
        && let Ok(mut f) = File::open(logger::rotated_path(path))
        && let Ok(len) = f.metadata().map(|m| m.len())
    {
        let _ = scan_back(&mut f, len, max, &mut stop, &mut out);
    }
    out.reverse();
    out
}

/// Lines of `file` before `end`, newest first, into `out` until `stop` or `max`; true when
/// it stopped before the file's start.
fn scan_back(
    file: &mut File,
    end: u64,
    max: usize,
    stop: &mut impl FnMut(&[u8]) -> bool,
    out: &mut Vec<Vec<u8>>,
) -> std::io::Result<bool> {
    let mut pos = end;
    let mut carry: Vec<u8> = Vec::new();
    let mut emit = |line: Vec<u8>, out: &mut Vec<Vec<u8>>| -> bool {
        if line.is_empty() {
            return false;
        }
        if out.len() >= max || stop(&line) {
            return true;
        }
        out.push(line);
        out.len() >= max
    };
    while pos > 0 {
        let step = (pos as usize).min(CHUNK);
        pos -= step as u64;
        let mut buf = vec![0u8; step];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut buf)?;
        buf.extend_from_slice(&carry);
        while let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            let line = buf.split_off(i + 1);
            buf.truncate(i);
            if emit(line, out) {
                return Ok(true);
            }
        }
        carry = buf;
    }
    Ok(emit(carry, out))
}

/// Offset just after the last newline before `len`.
fn complete_end(f: &mut File, len: u64) -> u64 {
    let mut pos = len;
    let mut buf = vec![0u8; CHUNK];
    while pos > 0 {
        let step = (pos as usize).min(CHUNK);
        pos -= step as u64;
        if f.seek(SeekFrom::Start(pos)).is_err() || f.read_exact(&mut buf[..step]).is_err() {
            return 0;
        }
        if let Some(i) = buf[..step].iter().rposition(|&b| b == b'\n') {
            return pos + i as u64 + 1;
        }
    }
    0
}

/// Reads what is appended to a log file from an offset, across rotations (the file renamed
/// to `<name>.1` and a new one started), one record (line) at a time. The log is gone for
/// good when the directory above the log's directory is removed (a machine's directory for
/// `<machine>/logs/machine.log`).
pub(crate) struct FileTail {
    path: PathBuf,
    file: Option<File>,
    pos: u64,
    partial: Vec<u8>,
    ready: VecDeque<Vec<u8>>,
}

impl FileTail {
    /// Follows `path` from `start` (a file and offset from a tail), or from the start of
    /// whatever file appears there.
    pub(crate) fn new(path: PathBuf, start: Option<(File, u64)>) -> Self {
        let (file, pos) = match start {
            Some((f, p)) => (Some(f), p),
            None => (None, 0),
        };
        Self {
            path,
            file,
            pos,
            partial: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    /// The next whole record read so far.
    pub(crate) fn pop(&mut self) -> Option<Vec<u8>> {
        self.ready.pop_front()
    }

    fn owner_exists(&self) -> bool {
        self.path
            .parent()
            .and_then(Path::parent)
            .is_some_and(Path::exists)
    }

    /// Reads what was appended; moves to the new file after a rotation. Returns false when
    /// the log is gone for good.
    pub(crate) fn poll(&mut self) -> bool {
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => {
                    self.file = Some(f);
                    self.pos = 0;
                }
                Err(_) => return self.owner_exists(),
            }
        }
        self.drain();
        // Rotated: the path now names a different file. What the old one got before the
        // rename was drained above; continue with the new one from its start.
        let rotated = match (
            std::fs::metadata(&self.path),
            self.file.as_ref().and_then(|f| f.metadata().ok()),
        ) {
            (Ok(now), Some(ours)) => now.ino() != ours.ino() || now.dev() != ours.dev(),
            (Err(_), _) => return self.owner_exists(),
            _ => false,
        };
        if rotated {
            self.drain();
            self.file = None;
            self.pos = 0;
            self.partial.clear();
            return self.poll();
        }
        true
    }

    fn drain(&mut self) {
        let Some(f) = self.file.as_mut() else { return };
        if f.seek(SeekFrom::Start(self.pos)).is_err() {
            return;
        }
        let mut buf = vec![0u8; CHUNK];
        // Bounded per poll so one chatty machine can not hold a follower forever.
        for _ in 0..64 {
            let n = match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            self.pos += n as u64;
            let mut rest = &buf[..n];
            while let Some(i) = rest.iter().position(|&b| b == b'\n') {
                self.partial.extend_from_slice(&rest[..i]);
                self.ready.push_back(std::mem::take(&mut self.partial));
                rest = &rest[i + 1..];
            }
            self.partial.extend_from_slice(rest);
            if self.partial.len() > logger::MAX_LINE * 2 {
                // Not records (someone else writes this file): emit as is.
                self.ready.push_back(std::mem::take(&mut self.partial));
            }
        }
    }
}

/// Follows a machine's log file from an offset, across rotations, until the machine's
/// directory goes away or the host stops.
pub(crate) struct Follower {
    tail: FileTail,
    stop: tokio::sync::watch::Receiver<bool>,
    _slot: FollowSlot,
}

/// One of the host's bounded follower slots; given back when the follower is dropped.
pub(crate) struct FollowSlot(Arc<AtomicUsize>);

impl FollowSlot {
    /// Takes a slot if fewer than `max` are taken.
    pub(crate) fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(count.clone()))
    }
}

impl Drop for FollowSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Follower {
    pub(crate) fn new(
        machine_dir: &Path,
        start: Option<(File, u64)>,
        stop: tokio::sync::watch::Receiver<bool>,
        slot: FollowSlot,
    ) -> Self {
        Self {
            tail: FileTail::new(log_path(machine_dir), start),
            stop,
            _slot: slot,
        }
    }
}

impl LogFollow for Follower {
    fn next(
        &mut self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<LogLine>> + Send + '_>> {
        Box::pin(async move {
            loop {
                if let Some(l) = self.tail.pop() {
                    return Some(to_line(&l));
                }
                if *self.stop.borrow() || !self.tail.poll() {
                    return None;
                }
                if let Some(l) = self.tail.pop() {
                    return Some(to_line(&l));
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
    use std::io::Write;

    fn dir() -> PathBuf {
        use std::sync::atomic::AtomicU32;
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "hangar-agent-logs-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(d.join("logs")).expect("mkdir");
        d
    }

    fn record(i: usize) -> String {
        format!("2026-01-01T00:00:00.000000000Z stdout F line {i}\n")
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open");
        f.write_all(text.as_bytes()).expect("write");
    }

    #[test]
    fn tails_across_the_rotated_file_and_skips_an_unfinished_record() {
        let d = dir();
        let path = log_path(&d);
        let old: String = (0..5).map(record).collect();
        std::fs::write(logger::rotated_path(&path), old).expect("old");
        let cur: String = (5..8).map(record).collect();
        std::fs::write(&path, format!("{cur}2026-01-01T00:00:00Z stdout F half")).expect("cur");
        let (lines, start) = tail(&d, 5);
        let msgs: Vec<&str> = lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(msgs, ["line 3", "line 4", "line 5", "line 6", "line 7"]);
        assert_eq!(start.map(|s| s.1), Some(cur.len() as u64));
        let (all, _) = tail(&d, 100);
        assert_eq!(all.len(), 8);
        assert_eq!(all[0].timestamp, "2026-01-01T00:00:00.000000000Z");
        assert!(tail(&d, 0).0.is_empty());
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn tails_large_files_exactly() {
        let d = dir();
        let path = log_path(&d);
        // Lines longer than a chunk, and many short ones.
        let long = format!("2026-01-01T00:00:00Z stdout F {}\n", "x".repeat(CHUNK * 2));
        let mut text = String::new();
        for i in 0..3000 {
            text.push_str(&record(i));
            if i % 1000 == 0 {
                text.push_str(&long);
            }
        }
        std::fs::write(&path, &text).expect("write");
        let (lines, _) = tail(&d, 2500);
        assert_eq!(lines.len(), 2500);
        assert_eq!(lines.last().map(|l| l.message.as_str()), Some("line 2999"));
        // 2,500 lines hold two of the long ones.
        assert_eq!(lines[0].message, "line 502");
        let (lines, _) = tail(&d, 5000);
        assert_eq!(lines.len(), 3003);
        assert_eq!(lines[1].message.len(), CHUNK * 2);
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn reads_back_across_rotation_until_told_to_stop() {
        let d = dir();
        let path = log_path(&d);
        let old: String = (0..5).map(record).collect();
        std::fs::write(logger::rotated_path(&path), old).expect("old");
        // Lines longer than a chunk too, and an unfinished last record.
        let long = format!("2026-01-01T00:00:00Z stdout F {}\n", "y".repeat(CHUNK + 7));
        let cur: String = (5..8).map(record).collect();
        std::fs::write(
            &path,
            format!("{long}{cur}2026-01-01T00:00:00Z stdout F half"),
        )
        .expect("cur");
        let msg = |r: &Vec<u8>| String::from_utf8_lossy(logger::parse_record(r).text).into_owned();
        let mut current = open_end(&path);
        let all = read_back(&path, current.as_mut(), 100, |_| false);
        assert_eq!(all.len(), 9);
        assert_eq!(msg(&all[0]), "line 0");
        assert_eq!(msg(&all[5]).len(), CHUNK + 7);
        assert_eq!(msg(&all[8]), "line 7");
        // Stops at the first record it is told to (excluded), or at the bound.
        let mut current = open_end(&path);
        let some = read_back(&path, current.as_mut(), 100, |r| {
            msg(&r.to_vec()) == "line 3"
        });
        let got: Vec<String> = some.iter().map(msg).collect();
        assert_eq!(got[0], "line 4");
        assert_eq!(got.len(), 5);
        let mut current = open_end(&path);
        assert_eq!(read_back(&path, current.as_mut(), 2, |_| false).len(), 2);
        // Without a current file, the rotated one is read.
        assert_eq!(read_back(&path, None, 100, |_| false).len(), 5);
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[test]
    fn missing_logs_are_empty() {
        let d = dir();
        let (lines, start) = tail(&d, 10);
        assert!(lines.is_empty() && start.is_none());
        std::fs::remove_dir_all(&d).expect("cleanup");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn follows_appends_and_rotation_and_ends_with_the_machine() {
        let d = dir();
        let path = log_path(&d);
        append(&path, &record(0));
        let (lines, start) = tail(&d, 10);
        assert_eq!(lines.len(), 1);
        let count = Arc::new(AtomicUsize::new(0));
        let slot = FollowSlot::take(&count, 1).expect("slot");
        assert!(FollowSlot::take(&count, 1).is_none(), "bounded");
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let mut f = Follower::new(&d, start, rx, slot);
        append(&path, &record(1));
        assert_eq!(f.next().await.map(|l| l.message), Some("line 1".into()));
        // Rotation: the rest of the old file, then the new file from its start.
        append(&path, &record(2));
        std::fs::rename(&path, logger::rotated_path(&path)).expect("rotate");
        append(&path, &record(3));
        assert_eq!(f.next().await.map(|l| l.message), Some("line 2".into()));
        assert_eq!(f.next().await.map(|l| l.message), Some("line 3".into()));
        // A record written in two pieces comes out once, whole.
        append(&path, "2026-01-01T00:00:00Z stderr F sp");
        append(&path, "lit\n");
        let l = f.next().await.expect("line");
        assert_eq!((l.message.as_str(), l.source), ("split", LogSource::Stderr));
        std::fs::remove_dir_all(&d).expect("cleanup");
        assert_eq!(f.next().await, None);
        drop(f);
        assert_eq!(count.load(Ordering::Acquire), 0, "slot given back");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_stopping_host_ends_followers() {
        let d = dir();
        let count = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = tokio::sync::watch::channel(false);
        let mut f = Follower::new(&d, None, rx, FollowSlot::take(&count, 4).expect("slot"));
        let next = tokio::spawn(async move { f.next().await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        tx.send(true).expect("send");
        assert_eq!(next.await.expect("join"), None);
        std::fs::remove_dir_all(&d).expect("cleanup");
    }
}
