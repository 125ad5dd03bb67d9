//! The plug-in point between the agent and whatever runs machines: [`Driver`].
//!
//! Operations are synchronous and short (a create is one clone plus the namespace setup, a few
//! ms; a delete waits at most a few seconds for a killed container to go) except waiting for an
//! exit, which is async. Async callers run the synchronous ones on a blocking thread.

use std::fmt;
use std::future::Future;
use std::time::Duration;

pub use crate::cgroup::Stats;
use crate::error::{Error, Result};
pub use crate::exec::ProcessInfo;
use crate::spec::{ContainerId, ContainerSpec};

/// A signal number, as sent to the container's init (which forwards it to the app).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(pub i32);

impl Signal {
    /// SIGHUP
    pub const HUP: Signal = Signal(1);
    /// SIGINT
    pub const INT: Signal = Signal(2);
    /// SIGQUIT
    pub const QUIT: Signal = Signal(3);
    /// SIGKILL
    pub const KILL: Signal = Signal(9);
    /// SIGUSR1
    pub const USR1: Signal = Signal(10);
    /// SIGUSR2
    pub const USR2: Signal = Signal(12);
    /// SIGTERM
    pub const TERM: Signal = Signal(15);

    /// `SIGTERM`, `TERM` or a number, as written in configs and API calls.
    pub fn parse(s: &str) -> Option<Signal> {
        if let Ok(n) = s.parse::<i32>() {
            return (1..=64).contains(&n).then_some(Signal(n));
        }
        let name = s.trim_start_matches("SIG");
        let n = match name.to_ascii_uppercase().as_str() {
            "HUP" => 1,
            "INT" => 2,
            "QUIT" => 3,
            "ABRT" => 6,
            "KILL" => 9,
            "USR1" => 10,
            "USR2" => 12,
            "ALRM" => 14,
            "TERM" => 15,
            "CONT" => 18,
            "STOP" => 19,
            "WINCH" => 28,
            _ => return None,
        };
        Some(Signal(n))
    }
}

/// What a started container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// Host pid of the container's init (hangar-init, PID 1 inside).
    pub pid: i32,
    /// Its start time in clock ticks after boot (with `pid`, identifies the process).
    pub start_time: u64,
}

/// Where a container is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContainerState {
    /// Namespaces and cgroup ready, the app not started yet.
    Created,
    /// The app runs.
    Running,
    /// The cgroup is frozen (suspended).
    Frozen,
    /// The container's processes are gone (or it was never completely made).
    Stopped,
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Frozen => "frozen",
            ContainerState::Stopped => "stopped",
        })
    }
}

/// How a container's app ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code (128 + signal when a signal killed it).
    pub code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// The cgroup recorded an OOM kill.
    pub oom_killed: bool,
}

/// A command to run inside a running container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCommand {
    /// Program and arguments (looked up on the container's `PATH`).
    pub argv: Vec<String>,
    /// Bytes fed to its stdin (then closed); `/dev/null` when `None`.
    pub stdin: Option<Vec<u8>>,
    /// Killed with SIGKILL when it runs longer.
    pub timeout: Duration,
    /// Bytes kept of each of stdout and stderr; the rest is read and dropped.
    pub max_output: usize,
}

/// What an [`ExecCommand`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit code (128 + signal when a signal killed it).
    pub code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// It ran past its timeout and was killed.
    pub timed_out: bool,
    /// Its stdout (at most `max_output` bytes).
    pub stdout: Vec<u8>,
    /// Its stderr (at most `max_output` bytes).
    pub stderr: Vec<u8>,
    /// Output beyond `max_output` was dropped.
    pub truncated: bool,
}

/// A container found on the host.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerInfo {
    /// Its id.
    pub id: ContainerId,
    /// Its state now.
    pub state: ContainerState,
    /// Its init's host pid, while it has one.
    pub pid: Option<i32>,
    /// The spec it was created with; `None` if it was left half-made (delete it).
    pub spec: Option<ContainerSpec>,
}

/// Runs containers on this host. One implementation per isolation technology (containers
/// today; microVMs later); `testing::FakeDriver` (feature `testing`) for tests of the layers above.
pub trait Driver: Send + Sync + 'static {
    /// Prepares everything (state, namespaces, cgroup, mounts) without running the app.
    fn create(&self, spec: &ContainerSpec) -> Result<()>;

    /// Runs the app of a created container.
    fn start(&self, id: &ContainerId) -> Result<Started>;

    /// Sends a signal to the container's init, which forwards it to the app's process group.
    /// SIGKILL kills the whole container (thawing it first if frozen).
    fn signal(&self, id: &ContainerId, signal: Signal) -> Result<()>;

    /// Freezes all the container's processes (suspend).
    fn freeze(&self, id: &ContainerId) -> Result<()>;

    /// Thaws a frozen container (resume).
    fn thaw(&self, id: &ContainerId) -> Result<()>;

    /// Thaws the container if it is frozen; whether it was, and is now running (`false`
    /// also for a frozen container whose init had died: thawed, for the caller to start
    /// anew). For a resume that a request waits on: a driver may answer it more cheaply than
    /// [`Driver::state`] then [`Driver::thaw`].
    fn thaw_if_frozen(&self, id: &ContainerId) -> Result<bool> {
        match self.state(id)? {
            ContainerState::Frozen => self.thaw(id).map(|()| true),
            _ => Ok(false),
        }
    }

    /// The container's state now.
    fn state(&self, id: &ContainerId) -> Result<ContainerState>;

    /// Resolves when the container has stopped, with its exit status. Works for containers
    /// this instance started and for re-adopted ones; can be called again after the exit.
    fn wait_exit(&self, id: &ContainerId) -> impl Future<Output = Result<ExitStatus>> + Send;

    /// CPU, memory and OOM figures from the container's cgroup.
    fn stats(&self, id: &ContainerId) -> Result<Stats>;

    /// Kills the container if needed and removes everything it left: cgroup, state, mounts.
    /// Idempotent; works on half-made containers.
    fn delete(&self, id: &ContainerId) -> Result<()>;

    /// Every container on the host, including half-made ones.
    fn list(&self) -> Result<Vec<ContainerInfo>>;

    /// Runs a command inside a running container: its namespaces, cgroup, capabilities,
    /// seccomp profile, environment and working directory.
    fn exec(
        &self,
        id: &ContainerId,
        cmd: ExecCommand,
    ) -> impl Future<Output = Result<ExecOutput>> + Send;

    /// The processes of a running container.
    fn processes(&self, id: &ContainerId) -> Result<Vec<ProcessInfo>>;

    /// Stops a container: `signal`, then SIGKILL if it has not exited after `timeout`.
    fn stop(
        &self,
        id: &ContainerId,
        signal: Signal,
        timeout: Duration,
    ) -> impl Future<Output = Result<ExitStatus>> + Send {
        async move {
            match self.state(id)? {
                ContainerState::Stopped => return self.wait_exit(id).await,
                ContainerState::Frozen => self.thaw(id)?,
                _ => {}
            }
            match self.signal(id, signal) {
                Ok(()) | Err(Error::WrongState { .. }) => {}
                Err(e) => return Err(e),
            }
            if let Ok(status) = tokio::time::timeout(timeout, self.wait_exit(id)).await {
                return status;
            }
            match self.signal(id, Signal::KILL) {
                Ok(()) | Err(Error::WrongState { .. }) => {}
                Err(e) => return Err(e),
            }
            self.wait_exit(id).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(Signal::parse("SIGINT"), Some(Signal::INT));
        assert_eq!(Signal::parse("term"), Some(Signal::TERM));
        assert_eq!(Signal::parse("9"), Some(Signal::KILL));
        assert_eq!(Signal::parse("0"), None);
        assert_eq!(Signal::parse("SIGBOGUS"), None);
    }
}
