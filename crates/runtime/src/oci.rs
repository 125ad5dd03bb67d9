//! ContainerSpec → OCI runtime spec (`config.json`), with Hangar's isolation defaults.
//!
//! Namespaces: mount, pid, uts, ipc, cgroup, and network (new, or joined by path). No user
//! namespace: machines are root inside, as on the reference platform's VMs. Capabilities:
//! Docker's default set without MKNOD, plus NET_ADMIN (so iptables, `ip`, Tailscale and TUN
//! devices work inside the machine's own network namespace). MKNOD is dropped because on pure
//! cgroup v2 hosts the device controller is not enforced (libcgroups' `cgroupsv2_devices` needs
//! libbpf): without MKNOD the only device nodes are the ones made here. Masked and read-only
//! paths are Docker's; `/sys` is read-only; `/dev/net/tun` exists.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::init::{INIT_PATH, InitArgs, RUN_DIR};
use crate::spec::ContainerSpec;

/// CFS period used for CPU quotas, in microseconds.
pub(crate) const CPU_PERIOD_US: u64 = 100_000;

/// Host-side facts the OCI spec needs besides the ContainerSpec.
#[derive(Debug)]
pub(crate) struct BundleContext<'a> {
    /// The static hangar-init on the host.
    pub init_binary: &'a Path,
    /// The container's run directory on the host (mounted at `/.hangar/run`).
    pub run_dir: &'a Path,
    /// cgroup path relative to each hierarchy, e.g. `/hangar/c1`.
    pub cgroups_path: &'a Path,
    /// Whether the host accounts swap (then swap is capped at the memory limit).
    pub swap_accounting: bool,
}

const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
    "CAP_NET_RAW",
    "CAP_NET_ADMIN",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Mount point of the n-th log directory inside the container.
fn log_mount(n: usize) -> PathBuf {
    PathBuf::from(format!("/.hangar/log/{n}"))
}

/// The in-container paths of the two log files plus the host directories to mount for them.
fn log_paths(spec: &ContainerSpec) -> (PathBuf, PathBuf, Vec<PathBuf>) {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut inside = |host: &Path| -> PathBuf {
        let dir = host
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| "/".into());
        let n = dirs.iter().position(|d| *d == dir).unwrap_or_else(|| {
            dirs.push(dir);
            dirs.len() - 1
        });
        log_mount(n).join(host.file_name().unwrap_or_default())
    };
    let out = inside(&spec.stdout_log);
    let err = inside(&spec.stderr_log);
    (out, err, dirs)
}

/// Host directories that must exist for the log files.
pub(crate) fn log_dirs(spec: &ContainerSpec) -> Vec<PathBuf> {
    log_paths(spec).2
}

/// The full OCI runtime spec.
pub(crate) fn config(spec: &ContainerSpec, ctx: &BundleContext<'_>) -> Value {
    let (out_log, err_log, log_dirs) = log_paths(spec);
    let init_args = InitArgs {
        exit_file: Some(Path::new(RUN_DIR).join(crate::init::EXIT_FILE)),
        stdout: Some(out_log),
        stderr: Some(err_log),
        log_limit: spec.log_limit_bytes,
        uid: (spec.uid != 0 || spec.gid != 0).then_some(spec.uid),
        gid: (spec.uid != 0 || spec.gid != 0).then_some(spec.gid),
        argv: spec.args.iter().map(Into::into).collect(),
    };
    let mut args: Vec<String> = vec![INIT_PATH.to_owned()];
    args.extend(
        init_args
            .to_args()
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned()),
    );
    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();

    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
        json!({"destination": INIT_PATH, "type": "bind", "source": ctx.init_binary,
               "options": ["bind", "ro", "nosuid", "nodev"]}),
        json!({"destination": RUN_DIR, "type": "bind", "source": ctx.run_dir,
               "options": ["bind", "rw", "nosuid", "nodev", "noexec"]}),
    ];
    for (n, dir) in log_dirs.iter().enumerate() {
        mounts.push(
            json!({"destination": log_mount(n), "type": "bind", "source": dir,
                           "options": ["bind", "rw", "nosuid", "nodev", "noexec"]}),
        );
    }
    for m in &spec.mounts {
        mounts.push(json!({"destination": m.destination, "type": "bind", "source": m.source,
                           "options": ["rbind", if m.read_only { "ro" } else { "rw" }, "nosuid", "nodev"]}));
    }

    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    namespaces.push(match &spec.netns {
        Some(path) => json!({"type": "network", "path": path}),
        None => json!({"type": "network"}),
    });

    let mut resources = json!({
        "devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 10, "minor": 200, "access": "rwm"}
        ]
    });
    if let Some(mb) = spec.resources.memory_mb {
        let bytes = mb.saturating_mul(1 << 20);
        resources["memory"] = if ctx.swap_accounting {
            json!({"limit": bytes, "swap": bytes})
        } else {
            json!({"limit": bytes})
        };
    }
    if let Some(cpus) = spec.resources.cpus {
        resources["cpu"] = json!({"quota": cpu_quota_us(cpus), "period": CPU_PERIOD_US});
    }
    if let Some(pids) = spec.resources.pids_limit {
        resources["pids"] = json!({"limit": pids});
    }

    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": env,
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": CAPABILITIES,
                "effective": CAPABILITIES,
                "permitted": CAPABILITIES
            },
            "noNewPrivileges": true
        },
        "root": {"path": spec.rootfs, "readonly": false},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": ctx.cgroups_path,
            "namespaces": namespaces,
            "resources": resources,
            "devices": [
                {"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200,
                 "fileMode": 0o666, "uid": 0, "gid": 0}
            ],
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": crate::seccomp::default_profile()
        }
    })
}

/// CFS quota in microseconds for `cpus` CPUs (at least 1 ms, the kernel's minimum).
pub(crate) fn cpu_quota_us(cpus: f64) -> i64 {
    ((cpus * CPU_PERIOD_US as f64).round() as i64).max(1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{BindMount, ContainerId};

    fn spec() -> ContainerSpec {
        let mut s = ContainerSpec::new(
            ContainerId::parse("c1").expect("id"),
            "/rootfs".into(),
            vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            "/logs/c1/out.log".into(),
        );
        s.stderr_log = "/logs/c1-err/err.log".into();
        s.resources.cpus = Some(0.5);
        s.resources.memory_mb = Some(64);
        s.resources.pids_limit = Some(100);
        s.netns = Some("/run/netns/x".into());
        s.mounts.push(BindMount {
            source: "/etc/hosts".into(),
            destination: "/etc/hosts".into(),
            read_only: true,
        });
        s
    }

    #[test]
    fn parses_as_oci_and_carries_the_spec() {
        let ctx = BundleContext {
            init_binary: Path::new("/usr/lib/hangar/hangar-init"),
            run_dir: Path::new("/state/c1/run"),
            cgroups_path: Path::new("/hangar/c1"),
            swap_accounting: false,
        };
        let v = config(&spec(), &ctx);
        let oci: oci_spec::runtime::Spec =
            serde_json::from_value(v.clone()).expect("valid OCI spec");
        let process = oci.process().as_ref().expect("process");
        let args = process.args().as_ref().expect("args");
        assert_eq!(args[0], INIT_PATH);
        let dd = args.iter().position(|a| a == "--").expect("--");
        assert_eq!(&args[dd + 1..], ["/bin/sh", "-c", "echo hi"]);
        assert!(args.contains(&"/.hangar/log/0/out.log".to_owned()));
        assert!(args.contains(&"/.hangar/log/1/err.log".to_owned()));
        assert_eq!(process.no_new_privileges(), Some(true));
        let linux = oci.linux().as_ref().expect("linux");
        let res = linux.resources().as_ref().expect("resources");
        assert_eq!(
            res.memory().as_ref().and_then(|m| m.limit()),
            Some(64 << 20)
        );
        assert_eq!(res.cpu().as_ref().and_then(|c| c.quota()), Some(50_000));
        assert_eq!(res.pids().as_ref().map(|p| p.limit()), Some(100));
        let ns = linux.namespaces().as_ref().expect("namespaces");
        assert_eq!(ns.len(), 6);
        assert!(
            ns.iter()
                .any(|n| n.path().as_deref() == Some(Path::new("/run/netns/x")))
        );
        assert!(linux.seccomp().is_some());
        let caps = process.capabilities().as_ref().expect("caps");
        assert!(
            caps.bounding()
                .as_ref()
                .is_some_and(|b| b.len() == CAPABILITIES.len())
        );
        let mounts = oci.mounts().as_ref().expect("mounts");
        assert!(
            mounts
                .iter()
                .any(|m| m.destination() == Path::new("/etc/hosts"))
        );
    }

    #[test]
    fn cpu_quota() {
        assert_eq!(cpu_quota_us(1.0), 100_000);
        assert_eq!(cpu_quota_us(0.25), 25_000);
        assert_eq!(cpu_quota_us(0.001), 1000);
        assert_eq!(cpu_quota_us(2.5), 250_000);
    }
}
