//! The real driver: youki's libcontainer in-process, hangar-init as PID 1, cgroups read and
//! frozen directly. All state is on disk ([`crate::layout`]), so a new instance over the same
//! state directory re-adopts what an old one (or a killed daemon) left running.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use libcontainer::container::Container;
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions, WaitIdStatus};
use tokio::io::unix::AsyncFd;

use crate::cgroup::{CgroupVersion, Cgroups, Stats};
use crate::create;
use crate::driver::{
    ContainerInfo, ContainerState, Driver, ExecCommand, ExecOutput, ExitStatus, ProcessInfo,
    Signal, Started,
};
use crate::error::{Error, IoContext, Result};
use crate::exec;
use crate::init::ExitRecord;
use crate::layout::{Layout, ProcessRecord, proc_stat, read_json, write_atomic};
use crate::oci::{self, BundleContext};
use crate::spec::{ContainerId, ContainerSpec};

/// How [`LinuxDriver`] is set up.
#[derive(Debug, Clone)]
pub struct LinuxDriverConfig {
    /// Where container state lives (e.g. `/var/lib/hangar/runtime`). Keep it across daemon
    /// restarts: it is how running containers are found again.
    pub state_dir: PathBuf,
    /// The static `hangar-init` binary on the host (see the crate docs for how to build it).
    pub init_binary: PathBuf,
    /// cgroup parent of every container, relative to the hierarchy roots (e.g. `hangar`).
    pub cgroup_parent: String,
}

/// The container driver for Linux hosts (cgroup v1, hybrid and v2).
#[derive(Debug)]
pub struct LinuxDriver {
    layout: Layout,
    init_binary: PathBuf,
    cgroup_parent: PathBuf,
    cgroups: Cgroups,
    swap_accounting: bool,
    ops: Ops,
    /// Whether this driver has pinned the v1 freezer on ([`Cgroups::pin_freezer`]).
    freezer_pinned: std::sync::atomic::AtomicBool,
}

/// The empty, always frozen cgroup under the parent that keeps the v1 freezer on; its name
/// can never be a container's (those start with a letter or digit).
const FREEZER_PIN: &str = "_freezer-pin";

/// Creates and starts under way, and whether new ones are still taken
/// ([`LinuxDriver::close`]).
#[derive(Debug, Default)]
struct Ops {
    state: std::sync::Mutex<OpsState>,
    idle: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct OpsState {
    closed: bool,
    under_way: usize,
}

/// One create or start under way (see [`Ops`]).
struct Op<'a>(&'a Ops);

impl Ops {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpsState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn begin(&self, what: &str, id: &ContainerId) -> Result<Op<'_>> {
        let mut s = self.lock();
        if s.closed {
            return Err(Error::Host(format!(
                "the container driver is closed: cannot {what} {id}"
            )));
        }
        s.under_way += 1;
        Ok(Op(self))
    }

    fn close(&self, wait: Duration) -> bool {
        let mut s = self.lock();
        s.closed = true;
        let (s, _) = self
            .idle
            .wait_timeout_while(s, wait, |s| s.under_way > 0)
            .unwrap_or_else(|p| p.into_inner());
        s.under_way == 0
    }
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.under_way -= 1;
        if s.under_way == 0 {
            self.0.idle.notify_all();
        }
    }
}

/// libcontainer binds and connects its notify socket by a relative path after a `chdir`,
/// and the working directory belongs to the whole process: two of its operations at once in
/// one process (a daemon creating machines concurrently) race on it ("failed to bind notify
/// socket", "failed to get cwd"). Every call into libcontainer holds this lock.
static LIBCONTAINER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn libcontainer_lock() -> std::sync::MutexGuard<'static, ()> {
    LIBCONTAINER.lock().unwrap_or_else(|p| p.into_inner())
}

/// How long delete waits for a killed container to go.
const KILL_WAIT: Duration = Duration::from_secs(10);

impl LinuxDriver {
    /// Checks the host and prepares the state directory.
    pub fn new(config: LinuxDriverConfig) -> Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::Host("the container driver must run as root".into()));
        }
        let init = &config.init_binary;
        if !init.is_absolute() || !init.is_file() {
            return Err(Error::Host(format!(
                "hangar-init not found at {} (build it static, see hangar-runtime's docs)",
                init.display()
            )));
        }
        let parent = config.cgroup_parent.trim_matches('/');
        if parent.is_empty() || parent.split('/').any(|c| ContainerId::parse(c).is_err()) {
            return Err(Error::InvalidSpec(format!(
                "cgroup parent {:?} is not a relative cgroup path",
                config.cgroup_parent
            )));
        }
        // Container inits are orphaned by the create helper: reparent them to us, so that we
        // reap them (and get their wait status) while we live.
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| Error::Host(format!("PR_SET_CHILD_SUBREAPER: {e}")))?;
        let cgroups = Cgroups::detect()?;
        let swap_accounting = host_has_swap()
            && match cgroups.version() {
                CgroupVersion::V2 => true,
                CgroupVersion::V1 => cgroups
                    .dir("memory", Path::new(""))
                    .is_some_and(|d| d.join("memory.memsw.limit_in_bytes").exists()),
            };
        let layout = Layout::new(&config.state_dir);
        for d in [layout.containers(), layout.libcontainer_root()] {
            fs::create_dir_all(&d).ctx(|| format!("creating {}", d.display()))?;
        }
        Ok(Self {
            layout,
            init_binary: config.init_binary.clone(),
            cgroup_parent: PathBuf::from(parent),
            cgroups,
            swap_accounting,
            ops: Ops::default(),
            freezer_pinned: Default::default(),
        })
    }

    /// Refuses every create and start from now on, and waits up to `wait` for those under
    /// way to finish; `true` when none is left. For whoever removes everything a driver made
    /// (a test harness at its end): a create that finished after the cleanup looked would
    /// leave a container behind. Deletes, signals and reads still work.
    pub fn close(&self, wait: Duration) -> bool {
        self.ops.close(wait)
    }

    /// The state directory layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The host's cgroups as this driver sees them.
    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }

    /// The container's cgroup, relative to the hierarchy roots.
    pub fn cgroup_path(&self, id: &ContainerId) -> PathBuf {
        self.cgroup_parent.join(id.as_str())
    }

    fn exists(&self, id: &ContainerId) -> Result<()> {
        if self.layout.container(id).is_dir() {
            Ok(())
        } else {
            Err(Error::NotFound(id.to_string()))
        }
    }

    /// Whether the container's init has ended (its exit recorded, or no longer alive).
    fn ended(&self, id: &ContainerId) -> Result<bool> {
        Ok(self.layout.final_status(id).exists() || self.live_process(id)?.is_none())
    }

    /// The container's init, if it is still alive (not a zombie, same start time).
    fn live_process(&self, id: &ContainerId) -> Result<Option<ProcessRecord>> {
        let rec: Option<ProcessRecord> =
            read_json(&self.layout.process(id)).ctx(|| format!("reading process of {id}"))?;
        Ok(rec.filter(|r| matches!(proc_stat(r.pid), Some((t, false)) if t == r.start_time)))
    }

    /// A pidfd for the container's init, if it is the recorded process (zombies included: a
    /// pidfd of a zombie is readable at once, and lets the parent reap it).
    fn pidfd(&self, id: &ContainerId) -> Result<Option<OwnedFd>> {
        let rec: Option<ProcessRecord> =
            read_json(&self.layout.process(id)).ctx(|| format!("reading process of {id}"))?;
        let Some(rec) = rec else { return Ok(None) };
        let Some(pid) = Pid::from_raw(rec.pid) else {
            return Ok(None);
        };
        let fd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::SRCH) => return Ok(None),
            Err(e) => return Err(Error::io(format!("pidfd_open {}", rec.pid), e.into())),
        };
        // The pidfd pins the process: checking after opening excludes pid reuse.
        Ok(match proc_stat(rec.pid) {
            Some((t, _)) if t == rec.start_time => Some(fd),
            _ => None,
        })
    }

    fn wrong_state(&self, id: &ContainerId, state: ContainerState, op: &'static str) -> Error {
        Error::WrongState {
            id: id.to_string(),
            state: state.to_string(),
            op,
        }
    }

    /// The exit status once the init is gone: from the exit file, else from the wait status
    /// this instance reaped, else "killed by SIGKILL". Persisted so it stays the same.
    fn final_status(&self, id: &ContainerId, waited: Option<WaitIdStatus>) -> Result<ExitStatus> {
        let final_path = self.layout.final_status(id);
        if let Some(s) =
            read_json::<FinalStatus>(&final_path).ctx(|| "reading final status".into())?
        {
            return Ok(s.into());
        }
        let record = fs::read_to_string(self.layout.exit_file(id))
            .ok()
            .and_then(|s| ExitRecord::parse(&s));
        let (code, signal) = match (record, waited) {
            (Some(r), _) => (r.code, r.signal),
            (None, Some(w)) => match (w.exit_status(), w.terminating_signal()) {
                (Some(c), _) => (c, None),
                (None, Some(s)) => (128 + s, Some(s)),
                (None, None) => (128 + 9, Some(9)),
            },
            (None, None) => (128 + 9, Some(9)),
        };
        let rel = self.cgroup_path(id);
        let oom_killed = self.cgroups.exists(&rel) && self.cgroups.oom_kills(&rel).unwrap_or(0) > 0;
        let status = ExitStatus {
            code,
            signal,
            oom_killed,
        };
        let bytes = serde_json::to_vec(&FinalStatus::from(status)).unwrap_or_default();
        write_atomic(&final_path, &bytes).ctx(|| format!("recording exit of {id}"))?;
        Ok(status)
    }

    fn create_inner(&self, spec: &ContainerSpec) -> Result<()> {
        let id = &spec.id;
        let l = &self.layout;
        let spec_json = serde_json::to_vec_pretty(spec)
            .map_err(|e| Error::InvalidSpec(format!("cannot serialise spec: {e}")))?;
        write_atomic(&l.spec(id), &spec_json).ctx(|| format!("writing spec of {id}"))?;
        for d in [l.bundle(id), l.run_dir(id)] {
            fs::create_dir_all(&d).ctx(|| format!("creating {}", d.display()))?;
        }
        for d in oci::log_dirs(spec) {
            fs::create_dir_all(&d).ctx(|| format!("creating log directory {}", d.display()))?;
        }
        let cgroups_path = Path::new("/").join(self.cgroup_path(id));
        let run_dir = l.run_dir(id);
        let ctx = BundleContext {
            init_binary: &self.init_binary,
            run_dir: &run_dir,
            cgroups_path: &cgroups_path,
            swap_accounting: self.swap_accounting,
        };
        let config = serde_json::to_vec_pretty(&oci::config(spec, &ctx))
            .map_err(|e| Error::InvalidSpec(format!("cannot serialise OCI spec: {e}")))?;
        write_atomic(&l.bundle(id).join("config.json"), &config)
            .ctx(|| format!("writing config.json of {id}"))?;

        // libcontainer's create runs in the helper (see `crate::create` for why).
        let stdin = File::open("/dev/null").ctx(|| "opening /dev/null".into())?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(l.init_log(id))
            .ctx(|| format!("opening init log of {id}"))?;
        let log2 = log.try_clone().ctx(|| "duplicating init log".into())?;
        let pid_file = l.container(id).join("init.pid");
        let status = Command::new(&self.init_binary)
            .args(create::helper_args(
                l.libcontainer_root(),
                l.bundle(id),
                id.as_str(),
                pid_file.clone(),
            ))
            .stdin(stdin)
            .stdout(log)
            .stderr(log2)
            .status()
            .ctx(|| format!("running {}", self.init_binary.display()))?;
        if !status.success() {
            let log = fs::read_to_string(l.init_log(id)).unwrap_or_default();
            let tail: String = log
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            return Err(Error::Runtime(format!(
                "create of {id} failed ({status}): {tail}"
            )));
        }
        let pid: i32 = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| Error::Runtime(format!("container {id} has no init pid")))?;
        let start_time = proc_stat(pid)
            .map(|s| s.0)
            .ok_or_else(|| Error::Runtime(format!("init of {id} died during create")))?;
        let rec = serde_json::to_vec(&ProcessRecord { pid, start_time }).unwrap_or_default();
        write_atomic(&l.process(id), &rec).ctx(|| format!("recording process of {id}"))?;
        Ok(())
    }

    async fn exec_inner(&self, id: &ContainerId, cmd: ExecCommand) -> Result<ExecOutput> {
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::AsyncWriteExt;
        static N: AtomicU64 = AtomicU64::new(0);
        let result = self.layout.container(id).join(format!(
            "exec-{}-{}.json",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _cleanup = RemoveOnDrop(result.clone());
        let mut child = tokio::process::Command::new(&self.init_binary)
            .args(exec::helper_args(
                &self.layout.libcontainer_root(),
                id.as_str(),
                &result,
                cmd.timeout,
                &cmd.argv,
            ))
            .stdin(if cmd.stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .ctx(|| format!("running {}", self.init_binary.display()))?;
        if let (Some(mut pipe), Some(input)) = (child.stdin.take(), cmd.stdin) {
            tokio::spawn(async move {
                let _ = pipe.write_all(&input).await;
            });
        }
        let (out, out_task) = capture(child.stdout.take(), cmd.max_output);
        let (err, err_task) = capture(child.stderr.take(), cmd.max_output);
        // The helper enforces the timeout itself; this bound only covers a stuck helper.
        let waited =
            tokio::time::timeout(cmd.timeout + Duration::from_secs(10), child.wait()).await;
        let status = match waited {
            Ok(s) => s.ctx(|| "waiting for the exec helper".into())?,
            Err(_) => {
                let _ = child.kill().await;
                return Err(Error::Timeout(format!("exec in {id} did not finish")));
            }
        };
        // Background processes the command left may hold the pipes open: take what came
        // shortly after the exit and stop reading.
        for t in [out_task, err_task] {
            let abort = t.abort_handle();
            if tokio::time::timeout(Duration::from_millis(200), t)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        let take = |b: Captured| std::mem::take(&mut *b.lock().unwrap_or_else(|p| p.into_inner()));
        let (stdout, t1) = take(out);
        let (stderr, t2) = take(err);
        let record = fs::read_to_string(&result)
            .ok()
            .and_then(|s| ExitRecord::parse(&s));
        let Some(record) = record else {
            let msg = String::from_utf8_lossy(&stderr);
            return Err(Error::Runtime(format!(
                "exec in {id} failed ({status}): {}",
                msg.trim()
            )));
        };
        Ok(ExecOutput {
            code: record.code,
            signal: record.signal,
            timed_out: status.code() == Some(124),
            stdout,
            stderr,
            truncated: t1 || t2,
        })
    }

    /// Kills the container's processes and waits (bounded) until its init is gone; reaps it
    /// if it is our child.
    fn kill_and_wait(&self, id: &ContainerId) -> Result<()> {
        let rel = self.cgroup_path(id);
        if let Some(fd) = self.pidfd(id)? {
            let _ = rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL);
            if self.cgroups.exists(&rel) {
                self.cgroups.kill_all(&rel)?;
            }
            let deadline = Instant::now() + KILL_WAIT;
            loop {
                let mut fds = [rustix::event::PollFd::new(
                    &fd,
                    rustix::event::PollFlags::IN,
                )];
                let ready =
                    rustix::event::poll(&mut fds, Some(&timespec(Duration::from_millis(100))))
                        .unwrap_or(0);
                if ready > 0 {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(Error::Timeout(format!("container {id} did not die")));
                }
                // Frozen processes cannot die on v1: make sure the cgroup is thawed.
                if self.cgroups.exists(&rel) {
                    self.cgroups.kill_all(&rel)?;
                }
            }
            let _ = rustix::process::waitid(
                WaitId::PidFd(fd.as_fd()),
                WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
            );
        } else if self.cgroups.exists(&rel) {
            self.cgroups.kill_all(&rel)?;
        }
        Ok(())
    }
}

impl Driver for LinuxDriver {
    fn create(&self, spec: &ContainerSpec) -> Result<()> {
        spec.validate()?;
        let _op = self.ops.begin("create", &spec.id)?;
        if !spec.rootfs.is_dir() {
            return Err(Error::InvalidSpec(format!(
                "rootfs {} is not a directory",
                spec.rootfs.display()
            )));
        }
        for m in &spec.mounts {
            if !m.source.exists() {
                return Err(Error::InvalidSpec(format!(
                    "mount source {} does not exist",
                    m.source.display()
                )));
            }
        }
        if let Some(ns) = &spec.netns
            && !ns.exists()
        {
            return Err(Error::InvalidSpec(format!(
                "netns {} does not exist",
                ns.display()
            )));
        }
        let dir = self.layout.container(&spec.id);
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(Error::AlreadyExists(spec.id.to_string()));
            }
            Err(e) => return Err(Error::io(format!("creating {}", dir.display()), e)),
        }
        let t = Instant::now();
        let result = self.create_inner(spec);
        if let Err(e) = &result {
            tracing::warn!(id = %spec.id, error = %e, "create failed; cleaning up");
            if let Err(e2) = self.delete(&spec.id) {
                tracing::warn!(id = %spec.id, error = %e2, "cleanup after failed create failed");
            }
        } else {
            tracing::debug!(id = %spec.id, elapsed_us = t.elapsed().as_micros() as u64, "created");
        }
        result
    }

    fn start(&self, id: &ContainerId) -> Result<Started> {
        let _op = self.ops.begin("start", id)?;
        match self.state(id)? {
            ContainerState::Created => {}
            other => return Err(self.wrong_state(id, other, "start")),
        }
        {
            let _guard = libcontainer_lock();
            let mut container =
                Container::load(self.layout.libcontainer_dir(id)).map_err(runtime_error)?;
            container.start().map_err(runtime_error)?;
        }
        write_atomic(&self.layout.started(id), b"").ctx(|| format!("marking {id} started"))?;
        let rec: Option<ProcessRecord> =
            read_json(&self.layout.process(id)).ctx(|| format!("reading process of {id}"))?;
        let rec = rec.ok_or_else(|| Error::Runtime(format!("{id} has no process record")))?;
        Ok(Started {
            pid: rec.pid,
            start_time: rec.start_time,
        })
    }

    fn signal(&self, id: &ContainerId, signal: Signal) -> Result<()> {
        self.exists(id)?;
        let state = self.state(id)?;
        if state == ContainerState::Stopped {
            return Err(self.wrong_state(id, state, "signal"));
        }
        let sig = rustix::process::Signal::from_named_raw(signal.0)
            .ok_or_else(|| Error::InvalidSpec(format!("signal {} is not supported", signal.0)))?;
        let Some(fd) = self.pidfd(id)? else {
            return Err(self.wrong_state(id, ContainerState::Stopped, "signal"));
        };
        // The kernel drops a signal sent to a pid namespace's init that has no handler for
        // it. Right after start, hangar-init may not have installed its handlers yet: wait
        // (bounded) until it catches the signal, so a stop sent at once is not lost. It
        // installs them first thing, within milliseconds; but the exec of its 46 MB binary
        // took over half a second on a loaded CI host (the bound was 500 ms, and an early
        // SIGINT was lost), so the bound is generous: only an init that never installs them
        // waits it out.
        if signal != Signal::KILL
            && state == ContainerState::Running
            && let Some(pid) = self.live_process(id)?.map(|r| r.pid)
        {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !catches(pid, signal.0) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        rustix::process::pidfd_send_signal(&fd, sig)
            .map_err(|e| Error::io(format!("signalling {id}"), e.into()))?;
        if signal == Signal::KILL && state == ContainerState::Frozen {
            self.cgroups.set_frozen(&self.cgroup_path(id), false)?;
        }
        Ok(())
    }

    fn freeze(&self, id: &ContainerId) -> Result<()> {
        match self.state(id)? {
            ContainerState::Running => {
                use std::sync::atomic::Ordering;
                if !self.freezer_pinned.load(Ordering::Relaxed) {
                    // Only a cost when it fails (each resume then pays the kernel's switch).
                    match self
                        .cgroups
                        .pin_freezer(&self.cgroup_parent.join(FREEZER_PIN))
                    {
                        Ok(()) => self.freezer_pinned.store(true, Ordering::Relaxed),
                        Err(e) => eprintln!("hangar-runtime: keeping the freezer on: {e}"),
                    }
                }
                self.cgroups.set_frozen(&self.cgroup_path(id), true)
            }
            ContainerState::Frozen => Ok(()),
            other => Err(self.wrong_state(id, other, "freeze")),
        }
    }

    fn thaw_if_frozen(&self, id: &ContainerId) -> Result<bool> {
        // A resume waits on this: the cgroup alone says whether to thaw, without reading the
        // whole state (the process record, /proc) first. Thawing the cgroup of a container
        // whose init has died is harmless: its processes are gone or on their way out.
        self.exists(id)?;
        let rel = self.cgroup_path(id);
        if self.cgroups.exists(&rel) && self.cgroups.is_frozen(&rel)? {
            self.cgroups.set_frozen(&rel, false)?;
            // Thawed: whether its init still lives is read now, off the resume's path (a
            // fatal signal kills frozen tasks on v2). A dead one is for the caller to start.
            return Ok(!self.ended(id)?);
        }
        Ok(false)
    }

    fn thaw(&self, id: &ContainerId) -> Result<()> {
        match self.state(id)? {
            ContainerState::Frozen => self.cgroups.set_frozen(&self.cgroup_path(id), false),
            ContainerState::Running => Ok(()),
            other => Err(self.wrong_state(id, other, "thaw")),
        }
    }

    fn state(&self, id: &ContainerId) -> Result<ContainerState> {
        self.exists(id)?;
        if self.ended(id)? {
            return Ok(ContainerState::Stopped);
        }
        if !self.layout.started(id).exists() {
            return Ok(ContainerState::Created);
        }
        let rel = self.cgroup_path(id);
        if self.cgroups.exists(&rel) && self.cgroups.is_frozen(&rel).unwrap_or(false) {
            return Ok(ContainerState::Frozen);
        }
        Ok(ContainerState::Running)
    }

    async fn wait_exit(&self, id: &ContainerId) -> Result<ExitStatus> {
        self.exists(id)?;
        if let Some(s) = read_json::<FinalStatus>(&self.layout.final_status(id))
            .ctx(|| "reading final status".into())?
        {
            return Ok(s.into());
        }
        let waited = match self.pidfd(id)? {
            Some(fd) => {
                // Sound despite the deprecation: the OwnedFd is owned by the AsyncFd for as
                // long as it is registered (the deprecated constructors only lack that proof
                // for arbitrary `AsRawFd` types).
                #[allow(deprecated)]
                let afd = AsyncFd::with_interest(fd, tokio::io::Interest::READABLE)
                    .ctx(|| format!("watching {id}"))?;
                let _guard = afd.readable().await.ctx(|| format!("watching {id}"))?;
                // Reaps it if we are its parent; ECHILD (re-adopted) leaves the exit file.
                rustix::process::waitid(
                    WaitId::PidFd(afd.get_ref().as_fd()),
                    WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
                )
                .ok()
                .flatten()
            }
            None => None,
        };
        self.final_status(id, waited)
    }

    fn stats(&self, id: &ContainerId) -> Result<Stats> {
        self.exists(id)?;
        let rel = self.cgroup_path(id);
        if !self.cgroups.exists(&rel) {
            return Err(self.wrong_state(id, ContainerState::Stopped, "read stats"));
        }
        self.cgroups.stats(&rel)
    }

    fn delete(&self, id: &ContainerId) -> Result<()> {
        self.kill_and_wait(id)?;
        let lc_dir = self.layout.libcontainer_dir(id);
        if lc_dir.exists() {
            let _guard = libcontainer_lock();
            match Container::load(lc_dir.clone()) {
                Ok(mut c) => {
                    if let Err(e) = c.delete(true) {
                        tracing::debug!(%id, error = %e, "libcontainer delete failed; cleaning by hand");
                    }
                }
                Err(e) => tracing::debug!(%id, error = %e, "libcontainer state unreadable"),
            }
            remove_dir_all(&lc_dir)?;
        }
        self.cgroups.remove(&self.cgroup_path(id))?;
        remove_dir_all(&self.layout.container(id))?;
        Ok(())
    }

    async fn exec(&self, id: &ContainerId, cmd: ExecCommand) -> Result<ExecOutput> {
        if cmd.argv.is_empty() || cmd.argv[0].is_empty() {
            return Err(Error::InvalidSpec("exec needs a command".into()));
        }
        match self.state(id)? {
            ContainerState::Running => {}
            s => return Err(self.wrong_state(id, s, "exec in")),
        }
        self.exec_inner(id, cmd).await
    }

    fn processes(&self, id: &ContainerId) -> Result<Vec<ProcessInfo>> {
        self.exists(id)?;
        let rel = self.cgroup_path(id);
        let init = self.live_process(id)?;
        if init.is_none() || !self.cgroups.exists(&rel) {
            return Err(self.wrong_state(id, ContainerState::Stopped, "list processes of"));
        }
        let mut pids = self.cgroups.pids(&rel)?;
        pids.sort_unstable();
        Ok(exec::describe(&pids, init.map(|r| r.pid)))
    }

    fn list(&self) -> Result<Vec<ContainerInfo>> {
        let mut ids = Vec::new();
        for dir in [self.layout.containers(), self.layout.libcontainer_root()] {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
            };
            for entry in entries {
                let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
                if let Some(id) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| ContainerId::parse(s).ok())
                {
                    ids.push(id);
                }
            }
        }
        ids.sort();
        ids.dedup();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let known = self.layout.container(&id).is_dir();
            let spec: Option<ContainerSpec> = if known {
                read_json(&self.layout.spec(&id)).ctx(|| format!("reading spec of {id}"))?
            } else {
                None
            };
            let state = if known {
                self.state(&id)?
            } else {
                ContainerState::Stopped
            };
            let pid = if known {
                self.live_process(&id)?.map(|r| r.pid)
            } else {
                None
            };
            out.push(ContainerInfo {
                id,
                state,
                pid,
                spec,
            });
        }
        Ok(out)
    }
}

/// The persisted form of an [`ExitStatus`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct FinalStatus {
    code: i32,
    signal: Option<i32>,
    oom_killed: bool,
}

impl From<ExitStatus> for FinalStatus {
    fn from(s: ExitStatus) -> Self {
        Self {
            code: s.code,
            signal: s.signal,
            oom_killed: s.oom_killed,
        }
    }
}

impl From<FinalStatus> for ExitStatus {
    fn from(s: FinalStatus) -> Self {
        Self {
            code: s.code,
            signal: s.signal,
            oom_killed: s.oom_killed,
        }
    }
}

fn runtime_error(e: libcontainer::error::LibcontainerError) -> Error {
    Error::Runtime(create::error_chain(&e))
}

/// Removes `dir` and everything in it. A file created in it while it is removed (the exit
/// watcher records `final.json` as the init that `delete` killed exits) makes the last
/// `rmdir` fail with "directory not empty": the removal then starts over, at most
/// [`REMOVE_ATTEMPTS`] times, since such a writer writes once and stops.
fn remove_dir_all(dir: &Path) -> Result<()> {
    let mut attempt = 1;
    loop {
        match fs::remove_dir_all(dir) {
            Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty && attempt < REMOVE_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) if e.kind() != ErrorKind::NotFound => {
                return Err(Error::io(format!("removing {}", dir.display()), e));
            }
            _ => return Ok(()),
        }
    }
}

/// How many times [`remove_dir_all`] starts over when files appear while it removes.
const REMOVE_ATTEMPTS: u32 = 5;

fn timespec(d: Duration) -> rustix::time::Timespec {
    rustix::time::Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// Whether the host has any swap device.
fn host_has_swap() -> bool {
    fs::read_to_string("/proc/swaps").is_ok_and(|s| s.lines().count() > 1)
}

/// Output read so far, and whether some was dropped.
type Captured = std::sync::Arc<std::sync::Mutex<(Vec<u8>, bool)>>;

/// Reads a pipe in a task, keeping at most `max` bytes and draining the rest, so a chatty
/// command never blocks on a full pipe.
fn capture<R>(pipe: Option<R>, max: usize) -> (Captured, tokio::task::JoinHandle<()>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    use tokio::io::AsyncReadExt;
    let buf: Captured = Default::default();
    let b = buf.clone();
    let task = tokio::spawn(async move {
        let Some(mut pipe) = pipe else { return };
        let mut chunk = vec![0u8; 16 * 1024];
        while let Ok(n) = pipe.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            let mut g = b.lock().unwrap_or_else(|p| p.into_inner());
            let room = max.saturating_sub(g.0.len());
            g.0.extend_from_slice(&chunk[..n.min(room)]);
            g.1 |= n > room;
        }
    });
    (buf, task)
}

/// Removes a file when dropped (however the function holding it returns).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Whether process `pid` has a handler for signal `sig` (`SigCgt` in /proc/<pid>/status).
fn catches(pid: i32, sig: i32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true; // gone or unreadable: nothing to wait for
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_none_or(|mask| (1..=64).contains(&sig) && mask & (1u64 << (sig - 1)) != 0)
}

#[cfg(test)]
mod signal_tests {
    #[test]
    fn this_process_catches_what_it_handles() {
        // The test harness installs no SIGUSR2 handler; SIGKILL can never be caught.
        assert!(!super::catches(std::process::id() as i32, 9));
        assert!(
            super::catches(-1, 2),
            "an unreadable process is not waited for"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_written_to_while_it_is_removed_is_still_removed() {
        let dir = std::env::temp_dir().join(format!("hangar-rm-race-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("deep/er")).expect("mkdir");
        for i in 0..200 {
            fs::write(dir.join("deep/er").join(format!("f{i}")), b"x").expect("write");
        }
        // A writer that records one file the way the exit watcher does (a temporary file,
        // renamed) while the removal runs, then stops. Whether it lands mid-removal is up
        // to the scheduler; when it does, the removal must still succeed.
        let d = dir.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_micros(500));
            if fs::write(d.join("final.json.tmp"), b"{}").is_ok() {
                let _ = fs::rename(d.join("final.json.tmp"), d.join("final.json"));
            }
        });
        let removed = remove_dir_all(&dir);
        writer.join().expect("writer");
        removed.expect("removed despite the writer");
        // Creating a file does not create its directory: a write after the removal fails.
        assert!(!dir.exists());
    }

    #[test]
    fn close_waits_for_operations_under_way_and_refuses_new_ones() {
        let ops = Ops::default();
        let id = ContainerId::parse("close-test").expect("id");
        let op = ops.begin("create", &id).expect("open: taken");
        std::thread::scope(|s| {
            let closing = s.spawn(|| ops.close(Duration::from_secs(30)));
            // Closed while the first is under way: the next is refused...
            while !ops.lock().closed {
                std::thread::yield_now();
            }
            let refused = ops.begin("start", &id).err().expect("closed: refused");
            assert!(refused.to_string().contains("closed"), "{refused}");
            assert!(!closing.is_finished());
            // ...and the close ends when the one under way does.
            drop(op);
            assert!(closing.join().expect("closing"), "nothing left under way");
        });
        assert_eq!(ops.lock().under_way, 0);
        // Closed with nothing under way: at once.
        assert!(ops.close(Duration::ZERO));
    }
}
