//! What the caller asks for: one container, fully resolved (final argv, env, uid/gid).

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A container id: 1–64 characters of `[A-Za-z0-9_.-]`, starting with a letter or digit.
/// It names directories and cgroups, so nothing else is accepted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerId(String);

impl ContainerId {
    /// Longest accepted id.
    pub const MAX_LEN: usize = 64;

    /// Validates `s` as a container id.
    pub fn parse(s: &str) -> Result<Self> {
        let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
        let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if s.is_empty() || s.len() > Self::MAX_LEN || !first_ok || !s.chars().all(ok_char) {
            return Err(Error::InvalidSpec(format!(
                "container id {s:?}: 1-{} chars of [A-Za-z0-9_.-] starting with a letter or digit",
                Self::MAX_LEN
            )));
        }
        Ok(Self(s.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ContainerId {
    type Error = Error;
    fn try_from(s: String) -> Result<Self> {
        Self::parse(&s)
    }
}

impl From<ContainerId> for String {
    fn from(id: ContainerId) -> String {
        id.0
    }
}

/// cgroup limits. `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// CPU quota in CPUs (`1.5` = 150 ms per 100 ms period).
    pub cpus: Option<f64>,
    /// Memory limit in MiB (no swap on top of it where the host accounts swap).
    pub memory_mb: Option<u64>,
    /// Maximum number of tasks (processes and threads).
    pub pids_limit: Option<i64>,
}

/// A host path bind-mounted into the container (files such as `/etc/hosts`, or directories
/// such as volumes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Absolute host path; must exist.
    pub source: PathBuf,
    /// Absolute path inside the container; created if missing.
    pub destination: PathBuf,
    /// Mount read-only.
    pub read_only: bool,
}

/// One container, resolved by the caller: the driver runs exactly this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Unique on the host.
    pub id: ContainerId,
    /// The prepared root filesystem (already mounted by the image code). Absolute.
    pub rootfs: PathBuf,
    /// The final argv of the app (entrypoint + cmd already resolved). Not empty.
    pub args: Vec<String>,
    /// Environment of the app, in order.
    pub env: Vec<(String, String)>,
    /// Working directory inside the container. Absolute.
    pub cwd: PathBuf,
    /// User the app runs as (hangar-init itself runs as root and drops to it).
    pub uid: u32,
    /// Group the app runs as.
    pub gid: u32,
    /// Hostname in the container's UTS namespace.
    pub hostname: String,
    /// cgroup limits.
    pub resources: Resources,
    /// Join this network namespace (e.g. `/run/netns/NAME`), made by the networking code.
    /// `None`: a new, empty network namespace (loopback only, down).
    pub netns: Option<PathBuf>,
    /// Extra bind mounts, applied in order after the standard ones.
    pub mounts: Vec<BindMount>,
    /// Host file receiving the app's stdout (its directory is created and mounted into the
    /// container for hangar-init; rotation keeps `<file>.1`).
    pub stdout_log: PathBuf,
    /// Host file receiving the app's stderr; may equal `stdout_log` (one interleaved stream).
    pub stderr_log: PathBuf,
    /// Size at which a log file is rotated; at most two files of this size per stream are kept.
    pub log_limit_bytes: u64,
}

impl ContainerSpec {
    /// A spec with defaults for everything but the id, rootfs, argv and log file: root user,
    /// cwd `/`, hostname = id, no limits, a new network namespace, 8 MiB logs.
    pub fn new(id: ContainerId, rootfs: PathBuf, args: Vec<String>, log: PathBuf) -> Self {
        Self {
            hostname: id.as_str().chars().take(63).collect(),
            id,
            rootfs,
            args,
            env: vec![(
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            )],
            cwd: PathBuf::from("/"),
            uid: 0,
            gid: 0,
            resources: Resources::default(),
            netns: None,
            mounts: Vec::new(),
            stdout_log: log.clone(),
            stderr_log: log,
            log_limit_bytes: 8 << 20,
        }
    }

    /// Checks everything that can be checked without touching the host.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidSpec(m));
        absolute("rootfs", &self.rootfs)?;
        absolute("cwd", &self.cwd)?;
        absolute("stdout_log", &self.stdout_log)?;
        absolute("stderr_log", &self.stderr_log)?;
        if self.stdout_log.file_name().is_none() || self.stderr_log.file_name().is_none() {
            return bad("log paths must name files".into());
        }
        if self.args.is_empty() || self.args[0].is_empty() {
            return bad("args must not be empty".into());
        }
        if self.args.iter().any(|a| a.contains('\0')) {
            return bad("args must not contain NUL".into());
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return bad(format!("env name {k:?} is not usable"));
            }
        }
        let host_ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.';
        if self.hostname.is_empty()
            || self.hostname.len() > 64
            || !self.hostname.chars().all(host_ok)
        {
            return bad(format!("hostname {:?} is not a host name", self.hostname));
        }
        if let Some(cpus) = self.resources.cpus
            && !(cpus.is_finite() && cpus > 0.0 && cpus <= 1024.0)
        {
            return bad(format!("cpus {cpus} out of range"));
        }
        if self.resources.memory_mb == Some(0) {
            return bad("memory_mb must be > 0".into());
        }
        if self.resources.pids_limit.is_some_and(|p| p <= 0) {
            return bad("pids_limit must be > 0".into());
        }
        if self.log_limit_bytes < 4096 {
            return bad("log_limit_bytes must be at least 4096".into());
        }
        if let Some(ns) = &self.netns {
            absolute("netns", ns)?;
        }
        for m in &self.mounts {
            absolute("mount source", &m.source)?;
            absolute("mount destination", &m.destination)?;
            if m.destination.starts_with("/.hangar") || m.destination == Path::new("/") {
                return bad(format!(
                    "mount destination {} is reserved",
                    m.destination.display()
                ));
            }
        }
        Ok(())
    }
}

fn absolute(what: &str, p: &Path) -> Result<()> {
    let normal = p
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !p.is_absolute() || !normal || p.to_str().is_none_or(|s| s.contains('\0')) {
        return Err(Error::InvalidSpec(format!(
            "{what} {} must be an absolute path without `..`",
            p.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "abc-1.2_3", &"x".repeat(64), "0abc"] {
            assert!(ContainerId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a/b", "a b", "../x", &"x".repeat(65), "é"] {
            assert!(ContainerId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation() {
        let id = ContainerId::parse("c1").expect("id");
        let spec = ContainerSpec::new(id, "/r".into(), vec!["/bin/true".into()], "/l/out".into());
        assert!(spec.validate().is_ok());
        let mut s = spec.clone();
        s.rootfs = "r".into();
        assert!(s.validate().is_err());
        let mut s = spec.clone();
        s.args.clear();
        assert!(s.validate().is_err());
        let mut s = spec.clone();
        s.resources.cpus = Some(f64::NAN);
        assert!(s.validate().is_err());
        let mut s = spec.clone();
        s.mounts.push(BindMount {
            source: "/etc/hosts".into(),
            destination: "/.hangar/init".into(),
            read_only: true,
        });
        assert!(s.validate().is_err());
        let mut s = spec;
        s.cwd = "/a/../b".into();
        assert!(s.validate().is_err());
    }
}
