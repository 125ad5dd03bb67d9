//! hangar-init: PID 1 inside every machine (the binary `hangar-init` only calls [`main`]).
//!
//! It runs the app in its own process group, forwards SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2,
//! SIGTERM and SIGWINCH to that group, reaps every child (orphans are reparented to it), pumps the
//! app's stdout and stderr into size-bounded rotated log files of timestamped records
//! ([`logger`]), and when the app exits writes
//! `{"code":N,"signal":S}` to the exit file and exits with the same code (128 + signal for a
//! signal). The kernel then kills whatever is left in the pid namespace.
//!
//! Command line (built by the driver, see [`InitArgs::to_args`]):
//! `hangar-init [--exit-file P] [--stdout P] [--stderr P] [--log-limit N] [--uid N] [--gid N] -- ARGV…`
//!
//! It runs as root so that it can write the logs and the exit file; it drops to `--uid`/`--gid`
//! (and no supplementary groups) for the app only. The forwarded signals get a recording
//! handler before the app is spawned (so that the kernel delivers them to a pid namespace's
//! init at all), and are blocked and read from a signalfd once it runs (blocking them earlier
//! would hand the app a blocked mask); signals that came in between are replayed. The daemon is
//! not involved at any point.

pub mod logger;

use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};

use logger::{LineFramer, LogStream, RotatingFile};

/// Where hangar-init is mounted inside a container.
pub const INIT_PATH: &str = "/.hangar/init";
/// Where the container's run directory (exit file) is mounted inside a container.
pub const RUN_DIR: &str = "/.hangar/run";
/// Name of the exit file in the run directory.
pub const EXIT_FILE: &str = "exit.json";
/// Exit code when hangar-init itself cannot work (bad arguments, no signalfd).
pub const INIT_FAILURE: i32 = 125;

/// The signals forwarded to the app's process group.
pub const FORWARDED: [Signal; 7] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGTERM,
    Signal::SIGWINCH,
];

/// How the app ended, as recorded in the exit file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitRecord {
    /// Exit code; 128 + signal when killed by a signal.
    pub code: i32,
    /// The signal that killed the app, if one did.
    pub signal: Option<i32>,
}

impl ExitRecord {
    /// The exit file's JSON: `{"code":N,"signal":S}` (`S` is `null` for a normal exit).
    pub fn to_json(&self) -> String {
        match self.signal {
            Some(s) => format!("{{\"code\":{},\"signal\":{s}}}\n", self.code),
            None => format!("{{\"code\":{},\"signal\":null}}\n", self.code),
        }
    }

    /// Reads what [`ExitRecord::to_json`] wrote (whitespace tolerated).
    pub fn parse(s: &str) -> Option<Self> {
        let field = |name: &str| -> Option<Option<i32>> {
            let key = format!("\"{name}\"");
            let rest = s[s.find(&key)? + key.len()..]
                .trim_start()
                .strip_prefix(':')?;
            let rest = rest.trim_start();
            if rest.starts_with("null") {
                return Some(None);
            }
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '-'))
                .unwrap_or(rest.len());
            rest[..end].parse().ok().map(Some)
        };
        Some(Self {
            code: field("code")??,
            signal: field("signal")?,
        })
    }

    /// Writes the record to `path` atomically (temporary file, then rename).
    pub fn write_to(&self, path: &Path) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = File::create(&tmp)?;
        f.write_all(self.to_json().as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    }

    fn from_wait(status: WaitStatus) -> Option<Self> {
        match status {
            WaitStatus::Exited(_, code) => Some(Self { code, signal: None }),
            WaitStatus::Signaled(_, sig, _) => Some(Self {
                code: 128 + sig as i32,
                signal: Some(sig as i32),
            }),
            _ => None,
        }
    }
}

/// hangar-init's arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitArgs {
    /// Where to record the app's exit.
    pub exit_file: Option<PathBuf>,
    /// Log file for the app's stdout (inherited stdout when `None`).
    pub stdout: Option<PathBuf>,
    /// Log file for the app's stderr; equal to `stdout` for one interleaved stream.
    pub stderr: Option<PathBuf>,
    /// Rotation size of the log files.
    pub log_limit: u64,
    /// User to run the app as.
    pub uid: Option<u32>,
    /// Group to run the app as.
    pub gid: Option<u32>,
    /// The app's argv.
    pub argv: Vec<OsString>,
}

impl InitArgs {
    /// Default rotation size when `--log-limit` is not given.
    pub const DEFAULT_LOG_LIMIT: u64 = 8 << 20;

    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, String> {
        let mut out = Self {
            log_limit: Self::DEFAULT_LOG_LIMIT,
            ..Self::default()
        };
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            if a == "--" {
                out.argv = it.collect();
                break;
            }
            let mut value = || {
                it.next()
                    .ok_or_else(|| format!("{} needs a value", a.display()))
            };
            let number = |v: OsString| -> Result<u64, String> {
                v.to_str()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("{} is not a number", v.display()))
            };
            match a.to_str() {
                Some("--exit-file") => out.exit_file = Some(value()?.into()),
                Some("--stdout") => out.stdout = Some(value()?.into()),
                Some("--stderr") => out.stderr = Some(value()?.into()),
                Some("--log-limit") => out.log_limit = number(value()?)?,
                Some("--uid") => out.uid = Some(to_u32(number(value()?)?)?),
                Some("--gid") => out.gid = Some(to_u32(number(value()?)?)?),
                _ => return Err(format!("unknown argument {}", a.display())),
            }
        }
        if out.argv.is_empty() {
            return Err("no command after --".into());
        }
        Ok(out)
    }

    /// The command line [`InitArgs::parse`] reads back.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut v: Vec<OsString> = Vec::new();
        let mut flag = |name: &str, value: &OsStr| {
            v.push(name.into());
            v.push(value.to_owned());
        };
        if let Some(p) = &self.exit_file {
            flag("--exit-file", p.as_os_str());
        }
        if let Some(p) = &self.stdout {
            flag("--stdout", p.as_os_str());
        }
        if let Some(p) = &self.stderr {
            flag("--stderr", p.as_os_str());
        }
        flag("--log-limit", OsStr::new(&self.log_limit.to_string()));
        if let Some(u) = self.uid {
            flag("--uid", OsStr::new(&u.to_string()));
        }
        if let Some(g) = self.gid {
            flag("--gid", OsStr::new(&g.to_string()));
        }
        v.push("--".into());
        v.extend(self.argv.iter().cloned());
        v
    }
}

fn to_u32(n: u64) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| format!("{n} is out of range"))
}

/// The binary's `main`: parses `std::env::args_os`, supervises, and exits.
pub fn main() -> ! {
    let code = match InitArgs::parse(std::env::args_os().skip(1)) {
        Ok(args) => run(&args),
        Err(e) => {
            eprintln!("hangar-init: {e}");
            INIT_FAILURE
        }
    };
    std::process::exit(code)
}

/// Supervises the app described by `args` until it exits; returns the code to exit with.
pub fn run(args: &InitArgs) -> i32 {
    let record = match supervise(args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hangar-init: {e}");
            ExitRecord {
                code: INIT_FAILURE,
                signal: None,
            }
        }
    };
    if let Some(path) = &args.exit_file
        && let Err(e) = record.write_to(path)
    {
        eprintln!("hangar-init: cannot write {}: {e}", path.display());
    }
    record.code
}

/// One pipe from the app to a log sink.
struct Stream {
    reader: File,
    sink: usize,
    framer: LineFramer,
}

/// How long an unfinished line may wait for its newline before it is written as a partial
/// record (so a prompt or a progress bar shows up in the logs).
const PARTIAL_FLUSH_MS: u16 = 200;

fn supervise(args: &InitArgs) -> io::Result<ExitRecord> {
    // As PID 1 of its namespace, the kernel drops any signal whose handler is SIG_DFL, even a
    // blocked one, so a stop signal from the host would never arrive. A real handler (it only
    // records that the signal came) keeps them. The signals are blocked and read from a
    // signalfd only after the app is spawned: a blocked mask is inherited across exec, and an
    // app that starts with its stop signal blocked never sees it (a shell cannot even trap it).
    let mut early: Vec<(Signal, std::sync::Arc<std::sync::atomic::AtomicBool>)> = Vec::new();
    for s in FORWARDED {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook::flag::register(s as i32, flag.clone())?;
        early.push((s, flag));
    }

    // Log sinks: one per distinct path.
    let mut sinks: Vec<(PathBuf, RotatingFile)> = Vec::new();
    let mut sink_for = |p: &Path| -> io::Result<usize> {
        if let Some(i) = sinks.iter().position(|(q, _)| q == p) {
            return Ok(i);
        }
        sinks.push((p.to_owned(), RotatingFile::open(p, args.log_limit)?));
        Ok(sinks.len() - 1)
    };
    let out_sink = args.stdout.as_deref().map(&mut sink_for).transpose()?;
    let err_sink = args.stderr.as_deref().map(&mut sink_for).transpose()?;

    let mut cmd = Command::new(&args.argv[0]);
    cmd.args(&args.argv[1..])
        .process_group(0)
        .stdin(Stdio::null());
    if let Some(g) = args.gid {
        cmd.gid(g);
    }
    if let Some(u) = args.uid {
        cmd.uid(u);
    }
    // One pipe per stream, even when both go to one file, so that every record says which
    // stream it came from.
    let mut streams: Vec<Stream> = Vec::new();
    for (sink, stream) in [(out_sink, LogStream::Stdout), (err_sink, LogStream::Stderr)] {
        let Some(sink) = sink else { continue };
        let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        streams.push(Stream {
            reader: File::from(r),
            sink,
            framer: LineFramer::new(stream),
        });
        match stream {
            LogStream::Stdout => cmd.stdout(Stdio::from(w)),
            LogStream::Stderr => cmd.stderr(Stdio::from(w)),
        };
    }

    let child = cmd.spawn();
    drop(cmd); // closes our copies of the pipes' write ends
    let app = match child {
        Ok(c) => Pid::from_raw(c.id() as i32),
        Err(e) => {
            let code = if e.kind() == ErrorKind::PermissionDenied {
                126
            } else {
                127
            };
            let msg = format!(
                "hangar-init: cannot run {}: {e}\n",
                args.argv[0].to_string_lossy()
            );
            match err_sink {
                Some(i) => {
                    let mut framed = Vec::new();
                    let mut f = LineFramer::new(LogStream::Stderr);
                    f.push(msg.as_bytes(), std::time::SystemTime::now(), &mut framed);
                    let _ = sinks[i].1.write(&framed);
                }
                None => eprint!("{msg}"),
            }
            return Ok(ExitRecord { code, signal: None });
        }
    };

    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    mask.thread_block().map_err(io::Error::from)?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(io::Error::from)?;
    let mut status: Option<ExitRecord> = None;
    // Signals that came before the signalfd existed, and an app that already exited.
    for (sig, flag) in &early {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            forward(app, *sig);
        }
    }
    reap(app, &mut status);
    let mut buf = vec![0u8; 64 * 1024];
    while status.is_none() {
        let mut fds = Vec::with_capacity(1 + streams.len());
        fds.push(PollFd::new(sfd.as_fd(), PollFlags::POLLIN));
        for s in &streams {
            fds.push(PollFd::new(s.reader.as_fd(), PollFlags::POLLIN));
        }
        let timeout = if streams.iter().any(|s| s.framer.has_partial()) {
            PollTimeout::from(PARTIAL_FLUSH_MS)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(0) => {
                drop(fds);
                for s in &mut streams {
                    let mut out = Vec::new();
                    s.framer
                        .flush_partial(std::time::SystemTime::now(), &mut out);
                    write_sink(&mut sinks, s.sink, &out);
                }
                continue;
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] {
            while let Some(info) = sfd.read_signal().map_err(io::Error::from)? {
                let sig = info.ssi_signo as i32;
                if sig == Signal::SIGCHLD as i32 {
                    reap(app, &mut status);
                } else if let Ok(sig) = Signal::try_from(sig) {
                    forward(app, sig);
                }
            }
        }
        let mut closed = Vec::new();
        for (i, s) in streams.iter_mut().enumerate() {
            if ready[i + 1] && !pump_once(s, &mut sinks, &mut buf) {
                closed.push(i);
            }
        }
        for i in closed.into_iter().rev() {
            let mut s = streams.remove(i);
            finish_stream(&mut s, &mut sinks);
        }
    }
    // The app is gone; take what it (and anything still holding the pipes) already wrote.
    for s in &mut streams {
        if fcntl(s.reader.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_ok() {
            while pump_once(s, &mut sinks, &mut buf) {}
        }
        finish_stream(s, &mut sinks);
    }
    Ok(status.unwrap_or(ExitRecord {
        code: INIT_FAILURE,
        signal: None,
    }))
}

/// Reads one chunk into the stream's sink; false on end of file, error or nothing to read.
fn pump_once(s: &mut Stream, sinks: &mut [(PathBuf, RotatingFile)], buf: &mut [u8]) -> bool {
    match s.reader.read(buf) {
        Ok(0) => false,
        Ok(n) => {
            let mut out = Vec::with_capacity(n + 64);
            s.framer
                .push(&buf[..n], std::time::SystemTime::now(), &mut out);
            write_sink(sinks, s.sink, &out);
            true
        }
        Err(e) if e.kind() == ErrorKind::Interrupted => true,
        Err(_) => false,
    }
}

/// Writes the stream's unfinished line as its last record.
fn finish_stream(s: &mut Stream, sinks: &mut [(PathBuf, RotatingFile)]) {
    let mut out = Vec::new();
    s.framer.finish(std::time::SystemTime::now(), &mut out);
    write_sink(sinks, s.sink, &out);
}

fn write_sink(sinks: &mut [(PathBuf, RotatingFile)], sink: usize, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if let Err(e) = sinks[sink].1.write(bytes) {
        eprintln!("hangar-init: log write failed: {e}");
    }
}

/// Reaps every exited child; notes the app's status.
fn reap(app: Pid, status: &mut Option<ExitRecord>) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(ws) => {
                if ws.pid() == Some(app)
                    && let Some(r) = ExitRecord::from_wait(ws)
                {
                    *status = Some(r);
                }
            }
            Err(Errno::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// Sends `sig` to the app's process group, or to the app alone if the group is gone.
fn forward(app: Pid, sig: Signal) {
    if kill(Pid::from_raw(-app.as_raw()), sig).is_err() {
        let _ = kill(app, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_record_round_trip() {
        for r in [
            ExitRecord {
                code: 0,
                signal: None,
            },
            ExitRecord {
                code: 137,
                signal: Some(9),
            },
            ExitRecord {
                code: -1,
                signal: None,
            },
        ] {
            assert_eq!(ExitRecord::parse(&r.to_json()), Some(r));
        }
        assert_eq!(
            ExitRecord::parse(r#"{ "code" : 3 , "signal" : null }"#),
            Some(ExitRecord {
                code: 3,
                signal: None
            })
        );
        assert_eq!(ExitRecord::parse(r#"{"signal":null}"#), None);
        assert_eq!(ExitRecord::parse("garbage"), None);
    }

    #[test]
    fn args_round_trip() {
        let a = InitArgs {
            exit_file: Some("/.hangar/run/exit.json".into()),
            stdout: Some("/l/o".into()),
            stderr: Some("/l/o".into()),
            log_limit: 4096,
            uid: Some(1000),
            gid: Some(1000),
            argv: vec!["sh".into(), "-c".into(), "--".into()],
        };
        assert_eq!(InitArgs::parse(a.to_args()), Ok(a));
        assert!(InitArgs::parse(vec!["--".into()]).is_err());
        assert!(InitArgs::parse(vec!["--bogus".into()]).is_err());
        assert!(InitArgs::parse(vec!["--uid".into()]).is_err());
    }
}
