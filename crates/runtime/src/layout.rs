//! The driver's state directory. Everything needed to find, re-adopt and clean up a container
//! after a daemon restart lives here; nothing lives only in the daemon's memory.
//!
//! ```text
//! STATE/
//!   libcontainer/ID/        libcontainer's own state (state.json, config, notify socket)
//!   containers/ID/
//!     spec.json             the ContainerSpec as created (written first: its presence = "exists")
//!     bundle/config.json    the OCI runtime spec handed to libcontainer
//!     run/                  mounted at /.hangar/run; hangar-init writes exit.json there
//!     init.log              hangar-init's own stdout/stderr (not the app's)
//!     process.json          pid + start time of the container's init, once created
//!     started               present once started
//!     final.json            the ExitStatus, once observed (stable across restarts)
//! ```

use std::fs;
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::ContainerId;

/// Paths under a driver state directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The state directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// libcontainer's root directory.
    pub fn libcontainer_root(&self) -> PathBuf {
        self.root.join("libcontainer")
    }
    /// libcontainer's directory for one container.
    pub fn libcontainer_dir(&self, id: &ContainerId) -> PathBuf {
        self.libcontainer_root().join(id.as_str())
    }
    /// Parent of all container directories.
    pub fn containers(&self) -> PathBuf {
        self.root.join("containers")
    }
    /// One container's directory.
    pub fn container(&self, id: &ContainerId) -> PathBuf {
        self.containers().join(id.as_str())
    }
    /// The stored spec.
    pub fn spec(&self, id: &ContainerId) -> PathBuf {
        self.container(id).join("spec.json")
    }
    /// The OCI bundle directory.
    pub fn bundle(&self, id: &ContainerId) -> PathBuf {
        self.container(id).join("bundle")
    }
    /// The directory mounted at `/.hangar/run`.
    pub fn run_dir(&self, id: &ContainerId) -> PathBuf {
        self.container(id).join("run")
    }
    /// The exit file hangar-init writes.
    pub fn exit_file(&self, id: &ContainerId) -> PathBuf {
        self.run_dir(id).join(crate::init::EXIT_FILE)
    }
    /// hangar-init's own output.
    pub fn init_log(&self, id: &ContainerId) -> PathBuf {
        self.container(id).join("init.log")
    }
    /// The init process record.
    pub fn process(&self, id: &ContainerId) -> PathBuf {
        self.container(id).join("process.json")
    }
    /// Marker: the container was started.
    pub fn started(&self, id: &ContainerId) -> PathBuf {
        self.container(id).join("started")
    }
    /// The final exit status.
    pub fn final_status(&self, id: &ContainerId) -> PathBuf {
        self.container(id).join("final.json")
    }
}

/// The container's init process: pid plus start time (clock ticks after boot), which together
/// identify it even after the pid is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Host pid.
    pub pid: i32,
    /// Field 22 of `/proc/PID/stat`.
    pub start_time: u64,
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // A temp name of its own per writer: two writers of the same file (e.g. two waiters
    // recording one exit) must not rename each other's temp file away.
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = PathBuf::from(tmp);
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)
}

/// Reads and parses a JSON file; `Ok(None)` when it does not exist or is torn.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => Ok(serde_json::from_slice(&b).ok()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `(start_time, is_zombie)` of a process, `None` if it does not exist.
pub(crate) fn proc_stat(pid: i32) -> Option<(u64, bool)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain anything; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); start time is field 22.
    let state = fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, matches!(*state, "Z" | "X")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_stat() {
        let me = std::process::id() as i32;
        let (start, zombie) = proc_stat(me).expect("own stat");
        assert!(start > 0);
        assert!(!zombie);
        assert_eq!(proc_stat(me).map(|s| s.0), Some(start));
        assert!(proc_stat(i32::MAX).is_none());
    }
}
