//! What a host does for its machines besides carrying out desired state: run a command in
//! one (`exec`), list its processes (`ps`), read its output (`logs`) and its app's whole
//! stream (`app_logs`), and take an image uploaded through the API into its image store.
//!
//! The API serves these calls and the agent on the machine's host answers them; they meet here
//! so that neither depends on the other (and so that a multi-host API can forward the calls
//! to a remote agent later). Pure: only the contract, no IO.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use hangar_api_types::ProcessStat;

/// A boxed future of a host operation.
pub type HostFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, HostError>> + Send + 'a>>;

/// Why a host operation failed. The API maps each to a status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The machine is not in a state that allows it (not running) → 412.
    #[error("{0}")]
    NotRunning(String),
    /// The request can not be carried out as given → 400.
    #[error("{0}")]
    Invalid(String),
    /// It took longer than allowed → 408.
    #[error("{0}")]
    Timeout(String),
    /// A bounded resource (concurrent execs, log followers) is exhausted → 429.
    #[error("{0}")]
    Busy(String),
    /// The host failed → 500.
    #[error("{0}")]
    Failed(String),
}

/// A command to run inside a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Bytes for its stdin.
    pub stdin: Option<Vec<u8>>,
    /// Killed after this long.
    pub timeout: Duration,
}

/// What an [`ExecCommand`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    /// Exit code (128 + signal when killed).
    pub code: i32,
    /// Captured stdout (bounded).
    pub stdout: Vec<u8>,
    /// Captured stderr (bounded).
    pub stderr: Vec<u8>,
    /// Killed at the timeout.
    pub timed_out: bool,
    /// Output past the bound was dropped.
    pub truncated: bool,
}

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// The app's stdout.
    Stdout,
    /// The app's stderr.
    Stderr,
}

/// One line of a machine's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// RFC 3339 time it was written.
    pub timestamp: String,
    /// Its stream.
    pub source: LogSource,
    /// The text, without the newline (invalid UTF-8 replaced).
    pub message: String,
}

/// New lines of a followed log, as they are written.
pub trait LogFollow: Send {
    /// The next line; `None` when the log ends (the machine was destroyed, the host stops).
    fn next(&mut self) -> Pin<Box<dyn Future<Output = Option<LogLine>> + Send + '_>>;
}

/// A machine's log: the last lines, and a follower of what comes next when asked for.
pub struct Logs {
    /// The last lines, oldest first.
    pub lines: Vec<LogLine>,
    /// What is written after them, when following.
    pub follow: Option<Box<dyn LogFollow>>,
}

impl std::fmt::Debug for Logs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logs")
            .field("lines", &self.lines.len())
            .field("follow", &self.follow.is_some())
            .finish()
    }
}

/// An image archive taken into a host's image store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// The reference it is stored under (what machine configs name).
    pub reference: String,
    /// Digest of its manifest.
    pub digest: String,
    /// Bytes of its layers (compressed, as stored).
    pub size: u64,
}

/// Carries out a recorded resume at once (the edge proxy does, for a request held on a
/// suspended machine), rather than when the host's agent reads the record.
pub trait Resumer: Send + Sync + std::fmt::Debug + 'static {
    /// Machine `machine_id` was suspended and its start was just recorded (the store says
    /// `starting`): thaw it now, unless an operation of the host holds the machine. Best
    /// effort, cheap (a store read and a cgroup write) and never waits for a lock; the agent
    /// then finds it running and reports `started` as usual.
    fn resume_now(&self, machine_id: &str);
}

/// The host side of exec, ps, logs and image uploads.
pub trait MachineHost: Send + Sync + 'static {
    /// Runs a command in a running machine.
    fn exec<'a>(&'a self, machine_id: &'a str, cmd: ExecCommand) -> HostFuture<'a, ExecResult>;

    /// The processes of a running machine.
    fn processes<'a>(&'a self, machine_id: &'a str) -> HostFuture<'a, Vec<ProcessStat>>;

    /// The last `tail` lines of a machine's output, and with `follow` the lines after them.
    fn logs<'a>(&'a self, machine_id: &'a str, tail: usize, follow: bool) -> HostFuture<'a, Logs>;

    /// An app's stream across its machines on this host, with the platform's lines (see
    /// [`crate::applog`]). Hosts that keep no app stream answer [`HostError::Failed`].
    fn app_logs<'a>(
        &'a self,
        app: &'a str,
        query: crate::applog::AppLogQuery,
    ) -> HostFuture<'a, crate::applog::AppLogs> {
        let _ = (app, query);
        Box::pin(async {
            Err(HostError::Failed(
                "this host keeps no app log stream".into(),
            ))
        })
    }

    /// Reads a `docker save` or OCI-layout tar archive (plain or gzipped) holding one image
    /// and stores it under `reference`. Reading happens on a blocking thread.
    fn import_image<'a>(
        &'a self,
        reference: &'a str,
        archive: Box<dyn std::io::Read + Send>,
    ) -> HostFuture<'a, ImportedImage>;
}
