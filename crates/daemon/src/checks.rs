//! Start-up checks: privileges and the kernel features machines need.

use std::path::Path;

/// Every problem found, each naming what is missing; empty when the host is fit.
pub(crate) fn host() -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid_root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0");
    if !euid_root {
        problems.push("must run as root (machines need namespaces, cgroups and mounts)".into());
    }
    for ns in ["mnt", "pid", "net", "uts", "ipc"] {
        if !Path::new("/proc/self/ns").join(ns).exists() {
            problems.push(format!("kernel lacks {ns} namespaces (/proc/self/ns/{ns})"));
        }
    }
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        || Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists();
    let v1 =
        Path::new("/sys/fs/cgroup/memory").exists() && Path::new("/sys/fs/cgroup/cpu").exists();
    if !v1 && !v2 {
        problems.push("no cgroup hierarchy found (need cgroup v2 at /sys/fs/cgroup, or v1 memory and cpu controllers)".into());
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs.lines().any(|l| l.trim_end().ends_with("overlay")) {
        problems.push("overlayfs is not available (modprobe overlay)".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}
