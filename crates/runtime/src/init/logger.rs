//! Machine logs on disk: size-bounded, rotated files of timestamped lines.
//!
//! Rotation: when a write would take a file past the limit, `FILE` becomes `FILE.1`
//! (replacing the previous one) and a new `FILE` is started. At most two files of `limit`
//! bytes exist per log.
//!
//! Format: one record per line, the CRI logging format that Kubernetes' kubelet also writes,
//! `<RFC 3339 UTC timestamp, ns> <stdout|stderr> <F|P> <text>\n`. `F` ends a line of the app's
//! output; `P` is a piece of a longer line (cut at [`MAX_LINE`] bytes) or text the app left
//! without a newline for a while ([`LineFramer::flush_partial`]). The text is the app's bytes
//! as written (not re-encoded); the newline is the record's. [`parse_record`] reads a record
//! back.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The rotated sibling of a log file: `FILE.1`.
pub fn rotated_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// An append-only log file that rotates at a size limit.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    limit: u64,
    file: File,
    written: u64,
}

impl RotatingFile {
    /// Opens (appending to) `path`.
    pub fn open(path: &Path, limit: u64) -> io::Result<Self> {
        let file = open_append(path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            path: path.to_owned(),
            limit: limit.max(1),
            file,
            written,
        })
    }

    /// Writes all of `buf`, rotating whenever the next piece would not fit. A piece larger
    /// than a whole file is cut after its last newline that fits (or at the limit), so no file
    /// ever exceeds the limit.
    pub fn write(&mut self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let room =
                usize::try_from(self.limit.saturating_sub(self.written)).unwrap_or(usize::MAX);
            if buf.len() <= room {
                self.file.write_all(buf)?;
                self.written += buf.len() as u64;
                return Ok(());
            }
            if self.written > 0 {
                self.rotate()?;
                continue;
            }
            let cut = buf[..room]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(room, |i| i + 1);
            self.file.write_all(&buf[..cut])?;
            self.written += cut as u64;
            buf = &buf[cut..];
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        fs::rename(&self.path, rotated_path(&self.path))?;
        self.file = open_append(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Longest piece of one output line kept in a single record.
pub const MAX_LINE: usize = 16 * 1024;

/// Which of the app's streams a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// Cuts one stream's bytes into timestamped records.
#[derive(Debug)]
pub struct LineFramer {
    stream: LogStream,
    pending: Vec<u8>,
}

impl LineFramer {
    /// A framer for `stream`.
    pub fn new(stream: LogStream) -> Self {
        Self {
            stream,
            pending: Vec::new(),
        }
    }

    /// True when bytes of an unfinished line wait for their newline.
    pub fn has_partial(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Appends the records completed by `bytes` (stamped `now`) to `out`.
    pub fn push(&mut self, bytes: &[u8], now: std::time::SystemTime, out: &mut Vec<u8>) {
        let stamp = rfc3339_nanos(now);
        let mut rest = bytes;
        while !rest.is_empty() {
            let room = MAX_LINE - self.pending.len();
            match rest.iter().take(room).position(|&b| b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&rest[..i]);
                    self.emit(&stamp, b'F', out);
                    rest = &rest[i + 1..];
                }
                None if rest.len() >= room => {
                    self.pending.extend_from_slice(&rest[..room]);
                    self.emit(&stamp, b'P', out);
                    rest = &rest[room..];
                }
                None => {
                    self.pending.extend_from_slice(rest);
                    rest = &[];
                }
            }
        }
    }

    /// Writes what waits for a newline as a partial record (the app went quiet mid-line).
    pub fn flush_partial(&mut self, now: std::time::SystemTime, out: &mut Vec<u8>) {
        if self.has_partial() {
            self.emit(&rfc3339_nanos(now), b'P', out);
        }
    }

    /// Writes what is left as a final record (the stream ended).
    pub fn finish(&mut self, now: std::time::SystemTime, out: &mut Vec<u8>) {
        if self.has_partial() {
            self.emit(&rfc3339_nanos(now), b'F', out);
        }
    }

    fn emit(&mut self, stamp: &str, tag: u8, out: &mut Vec<u8>) {
        out.extend_from_slice(stamp.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.stream.as_str().as_bytes());
        out.push(b' ');
        out.push(tag);
        out.push(b' ');
        out.append(&mut self.pending);
        out.push(b'\n');
    }
}

/// One record read back from a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord<'a> {
    /// RFC 3339 timestamp as written.
    pub timestamp: &'a str,
    /// The stream.
    pub stream: LogStream,
    /// False for a piece of a longer line (`P`).
    pub full: bool,
    /// The text (without the record's newline).
    pub text: &'a [u8],
}

/// Parses one record line (without its newline). Lines that are not records (e.g. written by
/// an older init) come back as a `stdout` full line with an empty timestamp.
pub fn parse_record(line: &[u8]) -> LogRecord<'_> {
    let raw = LogRecord {
        timestamp: "",
        stream: LogStream::Stdout,
        full: true,
        text: line,
    };
    let mut parts = line.splitn(4, |&b| b == b' ');
    let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
        return raw;
    };
    let text = parts.next().unwrap_or(&[]);
    let Ok(timestamp) = std::str::from_utf8(ts) else {
        return raw;
    };
    if timestamp.len() < 20
        || !timestamp.ends_with('Z')
        || !timestamp.as_bytes()[0].is_ascii_digit()
    {
        return raw;
    }
    let stream = match stream {
        b"stdout" => LogStream::Stdout,
        b"stderr" => LogStream::Stderr,
        _ => return raw,
    };
    let full = match tag {
        b"F" => true,
        b"P" => false,
        _ => return raw,
    };
    LogRecord {
        timestamp,
        stream,
        full,
        text,
    }
}

/// `2006-01-02T15:04:05.000000000Z` for a system time (UTC; times before 1970 print as 1970).
pub fn rfc3339_nanos(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_nanos(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123);
        assert_eq!(rfc3339_nanos(t), "2023-11-14T22:13:20.000000123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_nanos(leap), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn framing_and_parsing() {
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut f = LineFramer::new(LogStream::Stderr);
        let mut out = Vec::new();
        f.push(b"one\ntw", t, &mut out);
        assert!(f.has_partial());
        f.push(b"o\n\nthree", t, &mut out);
        f.finish(t, &mut out);
        let text = String::from_utf8(out.clone()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "2023-11-14T22:13:20.000000000Z stderr F one",
                "2023-11-14T22:13:20.000000000Z stderr F two",
                "2023-11-14T22:13:20.000000000Z stderr F ",
                "2023-11-14T22:13:20.000000000Z stderr F three",
            ]
        );
        let r = parse_record(lines[1].as_bytes());
        assert_eq!(r.text, b"two");
        assert_eq!(r.stream, LogStream::Stderr);
        assert!(r.full);
        assert_eq!(parse_record(lines[2].as_bytes()).text, b"");
        // Not a record: the whole line is the text.
        assert_eq!(parse_record(b"hello world").text, b"hello world");
        assert_eq!(parse_record(b"").text, b"");
    }

    #[test]
    fn long_lines_are_cut_into_partial_records() {
        let t = UNIX_EPOCH;
        let mut f = LineFramer::new(LogStream::Stdout);
        let mut out = Vec::new();
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        f.push(&long, t, &mut out);
        f.push(b"\n", t, &mut out);
        let recs: Vec<LogRecord<'_>> = out
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(parse_record)
            .collect();
        assert_eq!(recs.len(), 3);
        assert!(!recs[0].full && !recs[1].full && recs[2].full);
        assert_eq!(recs.iter().map(|r| r.text.len()).sum::<usize>(), long.len());
        let mut quiet = LineFramer::new(LogStream::Stdout);
        let mut out = Vec::new();
        quiet.push(b"prompt> ", t, &mut out);
        assert!(out.is_empty());
        quiet.flush_partial(t, &mut out);
        assert!(out.ends_with(b" stdout P prompt> \n"));
        assert!(!quiet.has_partial());
    }

    #[test]
    fn rotates_at_limit_and_keeps_two_files() {
        let dir = std::env::temp_dir().join(format!("hangar-logger-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("out.log");
        let mut f = RotatingFile::open(&path, 10).expect("open");
        f.write(b"12345").expect("w");
        f.write(b"67890").expect("w");
        f.write(b"abc").expect("w");
        f.write(b"defghijklmnop").expect("w");
        f.write(b"q").expect("w");
        assert_eq!(fs::read(&path).expect("read"), b"nopq");
        assert_eq!(fs::read(rotated_path(&path)).expect("read"), b"defghijklm");
        // Reopening appends and counts what is there.
        let mut f = RotatingFile::open(&path, 3).expect("open");
        f.write(b"rs").expect("w");
        f.write(b"t").expect("w");
        assert_eq!(fs::read(&path).expect("read"), b"rst");
        assert_eq!(fs::read(rotated_path(&path)).expect("read"), b"nopq");
        // Lines are kept whole where they fit.
        let mut f = RotatingFile::open(&path, 8).expect("open");
        f.write(b"ab\ncd\nefghij\n").expect("w");
        assert_eq!(fs::read(&path).expect("read"), b"efghij\n");
        assert_eq!(fs::read(rotated_path(&path)).expect("read"), b"ab\ncd\n");
        fs::remove_dir_all(&dir).expect("cleanup");
    }
}
