//! The agent's side of exec, ps, logs and image uploads ([`hangar_domain::MachineHost`]): bounded, and
//! only for machines this host runs.

use hangar_api_types::{ListenSocket, ProcessStat};
use hangar_domain::{
    ExecCommand, ExecResult, HostError, HostFuture, ImportedImage, Logs, MachineHost, State,
};
use hangar_runtime::{ContainerId, Driver};

use crate::Agent;
use crate::logs::{FollowSlot, Follower, tail};

/// Commands running at once through exec, per host.
pub const MAX_EXECS: usize = 16;
/// Log followers open at once, per host.
pub const MAX_FOLLOWERS: usize = 256;
/// Bytes of stdout and of stderr an exec returns.
pub const EXEC_OUTPUT_LIMIT: usize = 1 << 20;

fn runtime_error(e: hangar_runtime::Error) -> HostError {
    use hangar_runtime::Error as E;
    match e {
        E::WrongState { .. } | E::NotFound(_) => {
            HostError::NotRunning(format!("machine is not running: {e}"))
        }
        E::InvalidSpec(m) => HostError::Invalid(m),
        E::Timeout(m) => HostError::Timeout(m),
        other => HostError::Failed(other.to_string()),
    }
}

/// Archive problems are the uploader's (400); the host's disk failing is ours (500).
fn import_error(e: hangar_image::Error) -> HostError {
    match e {
        hangar_image::Error::Io { ref source, .. }
            if !matches!(
                source.kind(),
                std::io::ErrorKind::InvalidData
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::InvalidInput
            ) =>
        {
            HostError::Failed(e.to_string())
        }
        other => HostError::Invalid(format!("the archive can not be imported: {other}")),
    }
}

impl<D: Driver> Agent<D> {
    /// The machine, if it is started on this host.
    fn running(&self, id: &str) -> Result<ContainerId, HostError> {
        let m = self
            .store
            .find_machine(id)
            .map_err(|e| HostError::Failed(e.to_string()))?
            .ok_or_else(|| HostError::NotRunning("machine not found".into()))?;
        if m.state != State::Started {
            return Err(HostError::NotRunning(format!(
                "machine is {}, not started",
                m.state.as_str()
            )));
        }
        ContainerId::parse(id).map_err(|e| HostError::Invalid(e.to_string()))
    }

    /// Log followers open now.
    pub fn log_followers(&self) -> usize {
        self.followers.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Exec commands running now.
    pub fn execs_running(&self) -> usize {
        MAX_EXECS - self.execs.available_permits()
    }
}

impl<D: Driver> MachineHost for Agent<D> {
    fn exec<'a>(&'a self, machine_id: &'a str, cmd: ExecCommand) -> HostFuture<'a, ExecResult> {
        Box::pin(async move {
            let cid = self.running(machine_id)?;
            if cmd.argv.first().is_none_or(|a| a.is_empty()) {
                return Err(HostError::Invalid("exec needs a command".into()));
            }
            let _permit = self.execs.clone().try_acquire_owned().map_err(|_| {
                HostError::Busy(format!(
                    "{MAX_EXECS} commands are already running on this host; retry later"
                ))
            })?;
            let out = self
                .driver
                .exec(
                    &cid,
                    hangar_runtime::ExecCommand {
                        argv: cmd.argv,
                        stdin: cmd.stdin,
                        timeout: cmd.timeout,
                        max_output: EXEC_OUTPUT_LIMIT,
                    },
                )
                .await
                .map_err(runtime_error)?;
            Ok(ExecResult {
                code: out.code,
                stdout: out.stdout,
                stderr: out.stderr,
                timed_out: out.timed_out,
                truncated: out.truncated,
            })
        })
    }

    fn processes<'a>(&'a self, machine_id: &'a str) -> HostFuture<'a, Vec<ProcessStat>> {
        Box::pin(async move {
            let cid = self.running(machine_id)?;
            let driver = self.driver.clone();
            let procs = tokio::task::spawn_blocking(move || driver.processes(&cid))
                .await
                .map_err(|e| HostError::Failed(e.to_string()))?
                .map_err(runtime_error)?;
            Ok(procs
                .into_iter()
                .map(|p| ProcessStat {
                    pid: i64::from(p.pid),
                    stime: p.start_ms,
                    rtime: p.run_ms,
                    command: p.command,
                    directory: p.directory,
                    cpu: p.cpu_ms,
                    rss: p.rss,
                    listen_sockets: p
                        .listen
                        .into_iter()
                        .map(|(proto, address)| ListenSocket { proto, address })
                        .collect(),
                })
                .collect())
        })
    }

    fn import_image<'a>(
        &'a self,
        reference: &'a str,
        archive: Box<dyn std::io::Read + Send>,
    ) -> HostFuture<'a, ImportedImage> {
        Box::pin(async move {
            let tag = hangar_image::Reference::parse(reference)
                .map_err(|e| HostError::Invalid(format!("image reference: {e}")))?;
            let images = self.images.clone();
            let options = hangar_image::ImportOptions {
                tag: Some(tag.clone()),
                ..hangar_image::ImportOptions::default()
            };
            let imported =
                tokio::task::spawn_blocking(move || images.import_reader(archive, &options))
                    .await
                    .map_err(|e| HostError::Failed(e.to_string()))?
                    .map_err(import_error)?;
            let [one] = imported.as_slice() else {
                return Err(HostError::Invalid(format!(
                    "the archive holds {} images; upload one at a time",
                    imported.len()
                )));
            };
            Ok(ImportedImage {
                reference: tag.to_string(),
                digest: one.image.digest.to_string(),
                size: one.image.layers.iter().map(|l| l.size).sum(),
            })
        })
    }

    fn app_logs<'a>(
        &'a self,
        app: &'a str,
        query: hangar_domain::AppLogQuery,
    ) -> HostFuture<'a, hangar_domain::AppLogs> {
        Box::pin(self.read_app_logs(app, query))
    }

    fn logs<'a>(&'a self, machine_id: &'a str, n: usize, follow: bool) -> HostFuture<'a, Logs> {
        Box::pin(async move {
            if self
                .store
                .find_machine(machine_id)
                .map_err(|e| HostError::Failed(e.to_string()))?
                .is_none()
            {
                return Err(HostError::NotRunning("machine not found".into()));
            }
            let slot = if follow {
                Some(
                    FollowSlot::take(&self.followers, MAX_FOLLOWERS).ok_or_else(|| {
                        HostError::Busy(format!(
                            "{MAX_FOLLOWERS} logs are already followed on this host; retry later"
                        ))
                    })?,
                )
            } else {
                None
            };
            let dir = self.machine_dir(machine_id);
            let read_dir = dir.clone();
            let (lines, start) = tokio::task::spawn_blocking(move || tail(&read_dir, n))
                .await
                .map_err(|e| HostError::Failed(e.to_string()))?;
            let follow = slot.map(|slot| {
                Box::new(Follower::new(&dir, start, self.stop.subscribe(), slot))
                    as Box<dyn hangar_domain::LogFollow>
            });
            Ok(Logs { lines, follow })
        })
    }
}
