//! Test support (cargo feature `testing`): a [`FakeDriver`] for the layers above, and what the
//! real-driver tests and benchmarks need: a busybox rootfs, the static hangar-init, and a
//! [`TestHost`] that cleans up after itself.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};

use tokio::sync::watch;

use crate::driver::{
    ContainerInfo, ContainerState, Driver, ExecCommand, ExecOutput, ExitStatus, ProcessInfo,
    Signal, Started,
};
use crate::error::{Error, IoContext, Result};
use crate::spec::{ContainerId, ContainerSpec};
use crate::{LinuxDriver, LinuxDriverConfig, Stats};

// ---------------------------------------------------------------------------------------------
// The fake driver

#[derive(Debug)]
struct FakeContainer {
    spec: ContainerSpec,
    state: ContainerState,
    pid: Option<i32>,
    signals: Vec<Signal>,
    exit: watch::Sender<Option<ExitStatus>>,
}

/// An in-memory [`Driver`]: containers move through the same states as real ones; the test
/// decides when they exit ([`FakeDriver::exit`]). Terminating signals (INT, TERM, QUIT, HUP,
/// KILL) end a container with `128 + signal` unless [`FakeDriver::ignore_signals`] was called.
#[derive(Debug, Default)]
pub struct FakeDriver {
    inner: Mutex<FakeInner>,
}

#[derive(Debug, Default)]
struct FakeInner {
    containers: BTreeMap<ContainerId, FakeContainer>,
    next_pid: i32,
    fail_next_create: Option<String>,
    ignoring: Vec<ContainerId>,
}

impl FakeDriver {
    /// An empty fake host.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, FakeInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends a running (or frozen) container with `status`.
    pub fn exit(&self, id: &ContainerId, status: ExitStatus) -> Result<()> {
        let mut inner = self.lock();
        let c = inner
            .containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        finish(c, status);
        Ok(())
    }

    /// Makes the next `create` fail with a runtime error.
    pub fn fail_next_create(&self, message: &str) {
        self.lock().fail_next_create = Some(message.to_owned());
    }

    /// Makes a container ignore every signal but SIGKILL.
    pub fn ignore_signals(&self, id: &ContainerId) {
        self.lock().ignoring.push(id.clone());
    }

    /// Signals a container received, in order.
    pub fn signals(&self, id: &ContainerId) -> Vec<Signal> {
        self.lock()
            .containers
            .get(id)
            .map(|c| c.signals.clone())
            .unwrap_or_default()
    }

    fn with<T>(
        &self,
        id: &ContainerId,
        f: impl FnOnce(&mut FakeContainer, &mut Vec<ContainerId>) -> Result<T>,
    ) -> Result<T> {
        let mut inner = self.lock();
        let FakeInner {
            containers,
            ignoring,
            ..
        } = &mut *inner;
        let c = containers
            .get_mut(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        f(c, ignoring)
    }
}

fn finish(c: &mut FakeContainer, status: ExitStatus) {
    if c.state != ContainerState::Stopped {
        c.state = ContainerState::Stopped;
        c.pid = None;
        c.exit.send_replace(Some(status));
    }
}

fn wrong(id: &ContainerId, state: ContainerState, op: &'static str) -> Error {
    Error::WrongState {
        id: id.to_string(),
        state: state.to_string(),
        op,
    }
}

impl Driver for FakeDriver {
    fn create(&self, spec: &ContainerSpec) -> Result<()> {
        spec.validate()?;
        let mut inner = self.lock();
        if let Some(msg) = inner.fail_next_create.take() {
            return Err(Error::Runtime(msg));
        }
        if inner.containers.contains_key(&spec.id) {
            return Err(Error::AlreadyExists(spec.id.to_string()));
        }
        inner.next_pid += 1;
        let pid = 10_000 + inner.next_pid;
        inner.containers.insert(
            spec.id.clone(),
            FakeContainer {
                spec: spec.clone(),
                state: ContainerState::Created,
                pid: Some(pid),
                signals: Vec::new(),
                exit: watch::channel(None).0,
            },
        );
        Ok(())
    }

    fn start(&self, id: &ContainerId) -> Result<Started> {
        self.with(id, |c, _| match (c.state, c.pid) {
            (ContainerState::Created, Some(pid)) => {
                c.state = ContainerState::Running;
                Ok(Started { pid, start_time: 1 })
            }
            (s, _) => Err(wrong(id, s, "start")),
        })
    }

    fn signal(&self, id: &ContainerId, signal: Signal) -> Result<()> {
        self.with(id, |c, ignoring| {
            if c.state == ContainerState::Stopped {
                return Err(wrong(id, c.state, "signal"));
            }
            c.signals.push(signal);
            let terminating = [Signal::HUP, Signal::INT, Signal::QUIT, Signal::TERM];
            let ignored = ignoring.contains(id);
            if signal == Signal::KILL || (terminating.contains(&signal) && !ignored) {
                finish(
                    c,
                    ExitStatus {
                        code: 128 + signal.0,
                        signal: Some(signal.0),
                        oom_killed: false,
                    },
                );
            }
            Ok(())
        })
    }

    fn freeze(&self, id: &ContainerId) -> Result<()> {
        self.with(id, |c, _| match c.state {
            ContainerState::Running | ContainerState::Frozen => {
                c.state = ContainerState::Frozen;
                Ok(())
            }
            s => Err(wrong(id, s, "freeze")),
        })
    }

    fn thaw(&self, id: &ContainerId) -> Result<()> {
        self.with(id, |c, _| match c.state {
            ContainerState::Running | ContainerState::Frozen => {
                c.state = ContainerState::Running;
                Ok(())
            }
            s => Err(wrong(id, s, "thaw")),
        })
    }

    fn state(&self, id: &ContainerId) -> Result<ContainerState> {
        self.with(id, |c, _| Ok(c.state))
    }

    async fn wait_exit(&self, id: &ContainerId) -> Result<ExitStatus> {
        let mut rx = self.with(id, |c, _| Ok(c.exit.subscribe()))?;
        let status = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::NotFound(id.to_string()))?;
        status.ok_or_else(|| Error::NotFound(id.to_string()))
    }

    fn stats(&self, id: &ContainerId) -> Result<Stats> {
        self.with(id, |c, _| {
            Ok(Stats {
                memory_limit: c.spec.resources.memory_mb.map(|m| m << 20),
                ..Stats::default()
            })
        })
    }

    /// Pretends to run the command: its stdout is the arguments joined by spaces.
    async fn exec(&self, id: &ContainerId, cmd: ExecCommand) -> Result<ExecOutput> {
        self.with(id, |c, _| match c.state {
            ContainerState::Running => Ok(ExecOutput {
                code: 0,
                signal: None,
                timed_out: false,
                stdout: format!("{}\n", cmd.argv.join(" ")).into_bytes(),
                stderr: Vec::new(),
                truncated: false,
            }),
            s => Err(wrong(id, s, "exec")),
        })
    }

    /// One process: the container's app.
    fn processes(&self, id: &ContainerId) -> Result<Vec<ProcessInfo>> {
        self.with(id, |c, _| match (c.state, c.pid) {
            (ContainerState::Running | ContainerState::Frozen, Some(pid)) => {
                Ok(vec![ProcessInfo {
                    pid,
                    start_ms: 0,
                    run_ms: 0,
                    command: c.spec.args.join(" "),
                    directory: c.spec.cwd.display().to_string(),
                    cpu_ms: 0,
                    rss: 0,
                    listen: Vec::new(),
                }])
            }
            (s, _) => Err(wrong(id, s, "list processes of")),
        })
    }

    fn delete(&self, id: &ContainerId) -> Result<()> {
        let mut inner = self.lock();
        if let Some(mut c) = inner.containers.remove(id) {
            finish(
                &mut c,
                ExitStatus {
                    code: 137,
                    signal: Some(9),
                    oom_killed: false,
                },
            );
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<ContainerInfo>> {
        Ok(self
            .lock()
            .containers
            .iter()
            .map(|(id, c)| ContainerInfo {
                id: id.clone(),
                state: c.state,
                pid: c.pid,
                spec: Some(c.spec.clone()),
            })
            .collect())
    }
}

// ---------------------------------------------------------------------------------------------
// Real-host support

/// Makes a root filesystem at `dir` from Debian's `busybox-static`: `bin/busybox`, a symlink
/// per applet, and the usual empty directories.
pub fn busybox_rootfs(dir: &Path) -> Result<()> {
    let busybox = Path::new("/bin/busybox");
    let version = Command::new(busybox).arg("--list").output();
    let applets = match version {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => {
            return Err(Error::Host(
                "/bin/busybox is missing: install Debian's `busybox-static` package \
                 (apt-get install -y busybox-static)"
                    .into(),
            ));
        }
    };
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
    ] {
        fs::create_dir_all(dir.join(d)).ctx(|| format!("creating {d}"))?;
    }
    fs::copy(busybox, dir.join("bin/busybox")).ctx(|| "copying busybox".into())?;
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        let link = dir.join("bin").join(applet);
        match symlink("busybox", &link) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(Error::io(format!("linking {applet}"), e));
            }
            _ => {}
        }
    }
    fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .ctx(|| "writing /etc/passwd".into())?;
    fs::write(dir.join("etc/group"), "root:x:0:\n").ctx(|| "writing /etc/group".into())?;
    Ok(())
}

/// The static hangar-init, built once per target directory (and once per process).
///
/// `HANGAR_INIT_BINARY` names a prebuilt one. Otherwise it runs the build given in the crate
/// docs (static glibc, static libseccomp) with its own
/// target directory (`<target>/hangar-init-static`, so it never waits for the cargo that runs
/// the tests), under a file lock so parallel test processes build it once.
pub fn static_init() -> Result<PathBuf> {
    static PATH: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    PATH.get_or_init(|| build_static_init().map_err(|e| e.to_string()))
        .clone()
        .map_err(Error::Host)
}

fn build_static_init() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("HANGAR_INIT_BINARY") {
        return Ok(PathBuf::from(p));
    }
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let workspace = manifest_dir
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| Error::Host("cannot find the workspace".into()))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
        .join("hangar-init-static");
    fs::create_dir_all(&target).ctx(|| format!("creating {}", target.display()))?;
    let lock = fs::File::create(target.join(".lock")).ctx(|| "creating build lock".into())?;
    lock.lock().ctx(|| "locking the init build".into())?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("LIBSECCOMP_LINK_TYPE", "static")
        .env("LIBSECCOMP_LIB_PATH", "/usr/lib/x86_64-linux-gnu")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", &target)
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "hangar-runtime",
            "--bin",
            "hangar-init",
            "--target",
            "x86_64-unknown-linux-gnu",
        ])
        .output()
        .ctx(|| "running cargo to build hangar-init".into())?;
    if !out.status.success() {
        return Err(Error::Host(format!(
            "building the static hangar-init failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(target.join("x86_64-unknown-linux-gnu/release/hangar-init"))
}

/// A real driver over a temporary state directory, a busybox rootfs and a cgroup parent of its
/// own. Dropping it deletes every container it made, its cgroup parent and its files, so tests
/// leave nothing behind even when they fail.
#[derive(Debug)]
pub struct TestHost {
    dir: tempfile::TempDir,
    config: LinuxDriverConfig,
    /// The driver under test.
    pub driver: LinuxDriver,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestHost {
    /// A fresh host environment (needs root, cgroups, `busybox-static`).
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("hangar-rt-")
            .tempdir()
            .ctx(|| "creating a temporary directory".into())?;
        busybox_rootfs(&dir.path().join("rootfs"))?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let config = LinuxDriverConfig {
            state_dir: dir.path().join("state"),
            init_binary: static_init()?,
            cgroup_parent: format!("hangar-test-{}-{n}", std::process::id()),
        };
        let driver = LinuxDriver::new(config.clone())?;
        Ok(Self {
            dir,
            config,
            driver,
        })
    }

    /// The temporary directory everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The busybox rootfs.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    /// The driver's configuration (to build a second driver over the same state).
    pub fn config(&self) -> &LinuxDriverConfig {
        &self.config
    }

    /// A spec with a unique id `<name>-<pid>-<n>`, the busybox rootfs and a log file
    /// `logs/<id>/out.log` (stdout and stderr together).
    pub fn spec(&self, name: &str, args: &[&str]) -> ContainerSpec {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("{name}-{}-{n}", std::process::id());
        let id = ContainerId::parse(&id).unwrap_or_else(|_| panic!("bad test id {id}"));
        let log = self
            .dir
            .path()
            .join("logs")
            .join(id.as_str())
            .join("out.log");
        ContainerSpec::new(
            id,
            self.rootfs(),
            args.iter().map(|a| (*a).to_owned()).collect(),
            log,
        )
    }

    /// The app's output so far: the text of its log records, a newline after each full line.
    pub fn log(&self, spec: &ContainerSpec) -> String {
        let raw = fs::read(&spec.stdout_log).unwrap_or_default();
        let mut out = String::new();
        for line in raw.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let r = crate::init::logger::parse_record(line);
            out.push_str(&String::from_utf8_lossy(r.text));
            if r.full {
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Ok(list) = self.driver.list() {
            for c in list {
                if let Err(e) = self.driver.delete(&c.id) {
                    eprintln!("TestHost cleanup: deleting {}: {e}", c.id);
                }
            }
        }
        if let Err(e) = self
            .driver
            .cgroups()
            .remove(Path::new(&self.config.cgroup_parent))
        {
            eprintln!("TestHost cleanup: cgroup parent: {e}");
        }
    }
}
