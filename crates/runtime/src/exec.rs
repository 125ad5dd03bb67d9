//! Running a command inside a running machine (`POST …/exec`), and listing a machine's
//! processes (`GET …/ps`).
//!
//! The exec helper: `hangar-init --hangar-exec LC_ROOT ID RESULT_FILE TIMEOUT_MS -- ARGV…`
//! joins the container with libcontainer's tenant builder (the container's namespaces, cgroup,
//! capabilities, seccomp profile, no-new-privileges, environment and working directory, as
//! `runc exec` does), waits for the command with a deadline (SIGKILL when it passes), writes
//! the command's exit to `RESULT_FILE` and exits. Like create it runs in a fresh
//! single-threaded process because libcontainer forks (see [`crate::create`]). The command
//! inherits the helper's stdin, stdout and stderr, which the driver connects to pipes. A
//! missing result file means the helper itself failed (its stderr says why).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::syscall::syscall::SyscallType;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};

use crate::create::error_chain;
use crate::init::ExitRecord;

/// First argument selecting the exec helper in `hangar-init`.
pub const EXEC_ARG: &str = "--hangar-exec";

/// Exit code of the helper when it could not run the command at all.
pub const HELPER_FAILED: i32 = 125;

/// The helper's command line (after the program).
pub(crate) fn helper_args(
    libcontainer_root: &Path,
    id: &str,
    result_file: &Path,
    timeout: Duration,
    argv: &[String],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        EXEC_ARG.into(),
        libcontainer_root.into(),
        id.into(),
        result_file.into(),
        timeout.as_millis().to_string().into(),
        "--".into(),
    ];
    args.extend(argv.iter().map(OsString::from));
    args
}

/// Runs the helper with the arguments after [`EXEC_ARG`]; returns the helper's exit code
/// (the command's outcome is in the result file).
pub fn run(args: &[OsString]) -> i32 {
    let (Some([root, id, result, timeout]), Some(argv)) = (
        args.get(..4)
            .and_then(|a| <&[OsString; 4]>::try_from(a).ok()),
        args.get(5..)
            .filter(|_| args.get(4).is_some_and(|s| s == "--")),
    ) else {
        eprintln!("hangar-init {EXEC_ARG}: expected LC_ROOT ID RESULT_FILE TIMEOUT_MS -- ARGV…");
        return 2;
    };
    let (Some(id), Some(timeout)) = (
        id.to_str(),
        timeout.to_str().and_then(|t| t.parse::<u64>().ok()),
    ) else {
        eprintln!("hangar-init {EXEC_ARG}: bad id or timeout");
        return 2;
    };
    let Some(argv) = argv
        .iter()
        .map(|a| a.to_str().map(str::to_owned))
        .collect::<Option<Vec<String>>>()
        .filter(|a| !a.is_empty())
    else {
        eprintln!("hangar-init {EXEC_ARG}: the command is empty or not UTF-8");
        return 2;
    };
    // A program that is not there fails at once (127, as a shell says it), instead of
    // leaving libcontainer's tenant waiting until the deadline.
    if let Some(pid) = container_pid(Path::new(root), id)
        && !program_exists(pid, &argv[0])
    {
        eprintln!("exec: {}: not found", argv[0]);
        let record = ExitRecord {
            code: 127,
            signal: None,
        };
        if let Err(e) = record.write_to(Path::new(result)) {
            eprintln!("hangar-init {EXEC_ARG}: writing the result: {e}");
            return HELPER_FAILED;
        }
        return 0;
    }
    let built = ContainerBuilder::new(id.to_owned(), SyscallType::default())
        .with_root_path(PathBuf::from(root))
        .and_then(|b| b.validate_id())
        .and_then(|b| {
            b.as_tenant()
                .with_detach(false)
                .with_container_args(argv)
                .build()
        });
    let pid = match built {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hangar-init {EXEC_ARG}: {}", error_chain(&e));
            return HELPER_FAILED;
        }
    };
    let deadline = Instant::now() + Duration::from_millis(timeout);
    let mut killed = false;
    let record = loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => break ExitRecord { code, signal: None },
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                break ExitRecord {
                    code: 128 + sig as i32,
                    signal: Some(sig as i32),
                };
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("hangar-init {EXEC_ARG}: waiting for the command: {e}");
                return HELPER_FAILED;
            }
        }
        if !killed && Instant::now() >= deadline {
            let _ = kill(pid, Signal::SIGKILL);
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    if let Err(e) = record.write_to(Path::new(result)) {
        eprintln!("hangar-init {EXEC_ARG}: writing the result: {e}");
        return HELPER_FAILED;
    }
    if killed { 124 } else { 0 }
}

/// The host pid of a container's init, from libcontainer's state.
fn container_pid(root: &Path, id: &str) -> Option<i32> {
    libcontainer::container::Container::load(root.join(id))
        .ok()?
        .pid()
        .map(|p| p.as_raw())
}

/// The default `PATH` when a machine's init has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether `prog` names an executable file in the container whose init is `pid`: an absolute
/// path, or a bare name looked up in the init's `PATH`. Resolved inside the container's root
/// (`openat2` with `RESOLVE_IN_ROOT`, so its symlinks mean what they mean in there). Other
/// forms (relative paths) and anything that cannot be looked at count as present: the
/// tenant's own exec then decides.
fn program_exists(pid: i32, prog: &str) -> bool {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let Ok(root) = rustix::fs::open(
        format!("/proc/{pid}/root"),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return true;
    };
    let candidates: Vec<String> = if prog.starts_with('/') {
        vec![prog.to_string()]
    } else if prog.contains('/') {
        return true;
    } else {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let path = environ
            .split(|&b| b == 0)
            .find_map(|kv| kv.strip_prefix(b"PATH="))
            .map_or_else(
                || DEFAULT_PATH.to_string(),
                |p| String::from_utf8_lossy(p).into(),
            );
        path.split(':')
            .filter(|d| !d.is_empty())
            .map(|d| format!("{}/{prog}", d.trim_end_matches('/')))
            .collect()
    };
    candidates.iter().any(|c| {
        rustix::fs::openat2(
            &root,
            c.as_str(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT,
        )
        .and_then(|fd| rustix::fs::fstat(&fd))
        .is_ok_and(|st| {
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile
                && st.st_mode & 0o111 != 0
        })
    })
}

/// One process of a machine, as `GET …/ps` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Host pid.
    pub pid: i32,
    /// Start time, milliseconds since the Unix epoch.
    pub start_ms: u64,
    /// Time since it started, milliseconds.
    pub run_ms: u64,
    /// Command line (arguments joined by spaces; the name in brackets for kernel-less argv).
    pub command: String,
    /// Working directory as the machine sees it.
    pub directory: String,
    /// CPU time used (user + system), milliseconds.
    pub cpu_ms: u64,
    /// Resident memory, bytes.
    pub rss: u64,
    /// Sockets it listens on: `(proto, address)`, e.g. `("tcp", "[::]:8080")`.
    pub listen: Vec<(String, String)>,
}

fn ticks_per_sec() -> u64 {
    // The kernel's USER_HZ is 100 on every architecture Linux supports today.
    100
}

fn page_size() -> u64 {
    4096
}

/// Reads what `/proc` says about the processes `pids` (ones that vanished meanwhile are
/// skipped). `root` is a process whose root directory is the machine's (its init), used to
/// show working directories as the machine sees them.
pub fn describe(pids: &[i32], root_pid: Option<i32>) -> Vec<ProcessInfo> {
    let boot_ms = boot_time_ms();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let root = root_pid.and_then(|p| std::fs::read_link(format!("/proc/{p}/root")).ok());
    let listening = root_pid.map(listening_sockets).unwrap_or_default();
    let mut out = Vec::new();
    for &pid in pids {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let name = stat
            .find('(')
            .map_or("", |o| &stat[o + 1..close.max(o + 1)]);
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // fields[0] is field 3 (state): utime = 14, stime = 15, starttime = 22, rss = 24.
        let num = |field: usize| -> u64 {
            fields
                .get(field - 3)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let tps = ticks_per_sec();
        let start_ms = boot_ms + num(22) * 1000 / tps;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let command = if cmdline.is_empty() {
            format!("[{name}]")
        } else {
            cmdline
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .map(|p| machine_path(&p, root.as_deref()))
            .unwrap_or_default();
        let inodes = socket_inodes(pid);
        let listen = listening
            .iter()
            .filter(|(inode, _, _)| inodes.contains(inode))
            .map(|(_, proto, addr)| (proto.clone(), addr.clone()))
            .collect();
        out.push(ProcessInfo {
            pid,
            start_ms,
            run_ms: now_ms.saturating_sub(start_ms),
            command,
            directory: cwd,
            cpu_ms: (num(14) + num(15)) * 1000 / tps,
            rss: num(24) * page_size(),
            listen,
        });
    }
    out
}

/// A path read from the host's `/proc` shown as the machine sees it.
fn machine_path(p: &Path, root: Option<&Path>) -> String {
    if let Some(root) = root
        && root != Path::new("/")
        && let Ok(rel) = p.strip_prefix(root)
    {
        return format!("/{}", rel.display());
    }
    p.display().to_string()
}

fn boot_time_ms() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .map_or(0, |s| s * 1000)
}

fn socket_inodes(pid: i32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Listening TCP sockets and bound UDP sockets of the network namespace `pid` is in:
/// `(inode, proto, address)`.
fn listening_sockets(pid: i32) -> Vec<(u64, String, String)> {
    let mut out = Vec::new();
    for (file, proto, v6) in [
        ("tcp", "tcp", false),
        ("tcp6", "tcp", true),
        ("udp", "udp", false),
        ("udp6", "udp", true),
    ] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            // TCP_LISTEN = 0A; UDP sockets are "listening" when unconnected (07 = CLOSE).
            let listening = if proto == "tcp" {
                *state == "0A"
            } else {
                *state == "07"
            };
            if !listening {
                continue;
            }
            if let (Some(addr), Ok(inode)) = (proc_net_addr(local, v6), inode.parse()) {
                out.push((inode, proto.to_string(), addr));
            }
        }
    }
    out
}

/// `0100007F:1F90` → `127.0.0.1:8080`; 32 hex digits for IPv6 → `[::1]:8080`.
fn proc_net_addr(s: &str, v6: bool) -> Option<String> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    if v6 {
        if ip.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, word) in bytes.chunks_mut(4).enumerate() {
            let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?;
            word.copy_from_slice(&w.to_ne_bytes());
        }
        Some(format!("[{}]:{port}", std::net::Ipv6Addr::from(bytes)))
    } else {
        let w = u32::from_str_radix(ip, 16).ok()?;
        Some(format!(
            "{}:{port}",
            std::net::Ipv4Addr::from(w.to_ne_bytes())
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses() {
        // Little-endian host (x86_64, aarch64): the kernel prints the raw words.
        if cfg!(target_endian = "little") {
            assert_eq!(
                proc_net_addr("0100007F:1F90", false).as_deref(),
                Some("127.0.0.1:8080")
            );
            assert_eq!(
                proc_net_addr("00000000000000000000000001000000:0050", true).as_deref(),
                Some("[::1]:80")
            );
        }
        assert_eq!(proc_net_addr("garbage", false), None);
        assert_eq!(proc_net_addr("00:zz", false), None);
        assert_eq!(proc_net_addr("00:0050", true), None);
    }

    #[test]
    fn describes_this_process() {
        let me = std::process::id() as i32;
        let info = describe(&[me, -5], Some(me));
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].pid, me);
        assert!(info[0].rss > 0);
        assert!(info[0].start_ms > 1_600_000_000_000);
        assert!(!info[0].command.is_empty());
    }

    #[test]
    fn helper_arguments_are_checked() {
        assert_eq!(run(&[]), 2);
        let bad: Vec<OsString> = ["/r", "id", "/res", "x", "--", "true"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(run(&bad), 2);
        let no_cmd: Vec<OsString> = ["/r", "id", "/res", "100", "--"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(run(&no_cmd), 2);
    }
}
