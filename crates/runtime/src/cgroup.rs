//! cgroup access for one container's cgroup, on cgroup v1 (legacy and hybrid hosts, where
//! libcontainer uses the v1 controllers) and pure v2: stats, OOM kills, the freezer, the pids
//! in it, and removal.
//!
//! Paths are relative to each hierarchy's mount (e.g. `hangar/c1`); mounts are found in
//! `/proc/self/mountinfo`, so combined (`cpu,cpuacct`) and separate v1 mounts both work.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, ErrorKind};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::error::{Error, IoContext, Result};

/// Which cgroup interface containers are placed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Legacy or hybrid hosts: per-controller v1 hierarchies.
    V1,
    /// Pure v2 (`/sys/fs/cgroup` is cgroup2).
    V2,
}

/// Resource usage of one container, read from its cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Total CPU time consumed, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// CPU time in user mode, in nanoseconds (0 where the host does not say).
    pub cpu_user_ns: u64,
    /// CPU time in kernel mode, in nanoseconds (0 where the host does not say).
    pub cpu_system_ns: u64,
    /// Memory in use, page cache included, in bytes.
    pub memory_bytes: u64,
    /// The memory limit in bytes, `None` when unlimited.
    pub memory_limit: Option<u64>,
    /// OOM kills in this cgroup since it was made.
    pub oom_kills: u64,
    /// Tasks (processes and threads) in the cgroup.
    pub pids: u64,
    /// Breakdown of the memory in use (`memory.stat`), zeros where the host does not say.
    pub memory_stat: MemoryStat,
}

/// The parts of a cgroup's `memory.stat` that machine metrics show, in bytes. On v1 the
/// hierarchical `total_*` figures are used (they include child cgroups, as the usage does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStat {
    /// Page cache (v1 `cache`, v2 `file`).
    pub cache: u64,
    /// Anonymous memory (v1 `rss`, v2 `anon`).
    pub anon: u64,
    /// Recently used, not reclaimed first (`active_anon` + `active_file`).
    pub active: u64,
    /// Reclaim candidates (`inactive_anon` + `inactive_file`).
    pub inactive: u64,
    /// Page cache that can be dropped (`inactive_file`).
    pub inactive_file: u64,
    /// Waiting to be written back (v1 `dirty`, v2 `file_dirty`).
    pub dirty: u64,
    /// Being written back (v1 `writeback`, v2 `file_writeback`).
    pub writeback: u64,
    /// tmpfs and shared memory (`shmem`).
    pub shmem: u64,
    /// Kernel slab (v2 `slab`; 0 on v1).
    pub slab: u64,
    /// Swapped out (v1 `swap` with swap accounting, v2 `memory.swap.current`).
    pub swap: u64,
}

impl MemoryStat {
    /// From the text of `memory.stat` (v1 or v2).
    pub fn parse(text: &str) -> Self {
        let k = keyed(text);
        // v1 has `total_x` (hierarchical) beside `x`; v2 only `x` (already hierarchical).
        let get = |name: &str| {
            k.get(format!("total_{name}").as_str())
                .or_else(|| k.get(name))
                .copied()
                .unwrap_or(0)
        };
        let v2 = k.contains_key("anon") || k.contains_key("file");
        Self {
            cache: if v2 { get("file") } else { get("cache") },
            anon: if v2 { get("anon") } else { get("rss") },
            active: get("active_anon").saturating_add(get("active_file")),
            inactive: get("inactive_anon").saturating_add(get("inactive_file")),
            inactive_file: get("inactive_file"),
            dirty: if v2 { get("file_dirty") } else { get("dirty") },
            writeback: if v2 {
                get("file_writeback")
            } else {
                get("writeback")
            },
            shmem: get("shmem"),
            slab: get("slab"),
            swap: if v2 { 0 } else { get("swap") },
        }
    }
}

/// The host's cgroup mounts.
#[derive(Debug, Clone)]
pub struct Cgroups {
    version: CgroupVersion,
    /// v1 controller (or `name=…`) → mount point.
    v1: BTreeMap<String, PathBuf>,
    /// The cgroup2 mount, if any (`/sys/fs/cgroup` or hybrid's `/sys/fs/cgroup/unified`).
    v2: Option<PathBuf>,
}

/// A v1 "limit" of this size or more means no limit.
const V1_UNLIMITED: u64 = 1 << 62;
/// How long freezing or removing may take before giving up.
const SETTLE: Duration = Duration::from_secs(5);

impl Cgroups {
    /// Reads the host's cgroup mounts.
    pub fn detect() -> Result<Self> {
        let setup = libcgroups::common::get_cgroup_setup()
            .map_err(|e| Error::Host(format!("cannot detect cgroups: {e}")))?;
        let version = match setup {
            libcgroups::common::CgroupSetup::Unified => CgroupVersion::V2,
            _ => CgroupVersion::V1,
        };
        let info = fs::read_to_string("/proc/self/mountinfo")
            .ctx(|| "reading /proc/self/mountinfo".into())?;
        let (v1, v2) = parse_mountinfo(&info);
        let me = Self { version, v1, v2 };
        match version {
            CgroupVersion::V2 if me.v2.is_none() => Err(Error::Host("no cgroup2 mount".into())),
            CgroupVersion::V1
                if !["memory", "cpu", "freezer", "pids"]
                    .iter()
                    .all(|c| me.v1.contains_key(*c)) =>
            {
                Err(Error::Host(
                    "cgroup v1 needs the memory, cpu, freezer and pids controllers mounted".into(),
                ))
            }
            _ => Ok(me),
        }
    }

    /// The interface in use.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The directory of `rel` for `controller` (v1), or the unified directory (v2).
    pub fn dir(&self, controller: &str, rel: &Path) -> Option<PathBuf> {
        match self.version {
            CgroupVersion::V2 => self.v2.as_ref().map(|m| m.join(rel)),
            CgroupVersion::V1 => self.v1.get(controller).map(|m| m.join(rel)),
        }
    }

    fn file(&self, controller: &str, rel: &Path, name: &str) -> Result<PathBuf> {
        self.dir(controller, rel)
            .map(|d| d.join(name))
            .ok_or_else(|| Error::Host(format!("cgroup controller {controller} is not mounted")))
    }

    fn read(&self, controller: &str, rel: &Path, name: &str) -> Result<String> {
        let p = self.file(controller, rel, name)?;
        fs::read_to_string(&p).ctx(|| format!("reading {}", p.display()))
    }

    fn write(&self, controller: &str, rel: &Path, name: &str, value: &str) -> Result<()> {
        let p = self.file(controller, rel, name)?;
        fs::write(&p, value).ctx(|| format!("writing {}", p.display()))
    }

    /// Whether the container's cgroup exists.
    pub fn exists(&self, rel: &Path) -> bool {
        self.dir("memory", rel).is_some_and(|d| d.is_dir())
    }

    /// CPU, memory, OOM and task counts.
    pub fn stats(&self, rel: &Path) -> Result<Stats> {
        let mut s = Stats {
            oom_kills: self.oom_kills(rel)?,
            ..Stats::default()
        };
        match self.version {
            CgroupVersion::V2 => {
                let cpu_stat = self.read("", rel, "cpu.stat")?;
                let cpu = keyed(&cpu_stat);
                s.cpu_usage_ns = cpu.get("usage_usec").copied().unwrap_or(0) * 1000;
                s.cpu_user_ns = cpu.get("user_usec").copied().unwrap_or(0) * 1000;
                s.cpu_system_ns = cpu.get("system_usec").copied().unwrap_or(0) * 1000;
                s.memory_bytes = number(&self.read("", rel, "memory.current")?);
                let max = self.read("", rel, "memory.max")?;
                s.memory_limit = (max.trim() != "max").then(|| number(&max));
                s.pids = number(&self.read("", rel, "pids.current")?);
                if let Ok(text) = self.read("", rel, "memory.stat") {
                    s.memory_stat = MemoryStat::parse(&text);
                }
                if let Ok(swap) = self.read("", rel, "memory.swap.current") {
                    s.memory_stat.swap = number(&swap);
                }
            }
            CgroupVersion::V1 => {
                let acct = if self.v1.contains_key("cpuacct") {
                    "cpuacct"
                } else {
                    "cpu"
                };
                s.cpu_usage_ns = number(&self.read(acct, rel, "cpuacct.usage")?);
                // usage_user/usage_sys are in ns; older kernels only have cpuacct.stat (ticks).
                if let Ok(u) = self.read(acct, rel, "cpuacct.usage_user") {
                    s.cpu_user_ns = number(&u);
                    s.cpu_system_ns = self
                        .read(acct, rel, "cpuacct.usage_sys")
                        .map(|v| number(&v))
                        .unwrap_or(0);
                }
                s.memory_bytes = number(&self.read("memory", rel, "memory.usage_in_bytes")?);
                let limit = number(&self.read("memory", rel, "memory.limit_in_bytes")?);
                s.memory_limit = (limit < V1_UNLIMITED).then_some(limit);
                s.pids = number(&self.read("pids", rel, "pids.current")?);
                if let Ok(text) = self.read("memory", rel, "memory.stat") {
                    s.memory_stat = MemoryStat::parse(&text);
                }
            }
        }
        Ok(s)
    }

    /// OOM kills in the cgroup (v2 `memory.events`, v1 `memory.oom_control`).
    pub fn oom_kills(&self, rel: &Path) -> Result<u64> {
        let text = match self.version {
            CgroupVersion::V2 => self.read("", rel, "memory.events")?,
            CgroupVersion::V1 => self.read("memory", rel, "memory.oom_control")?,
        };
        Ok(keyed(&text).get("oom_kill").copied().unwrap_or(0))
    }

    /// The CFS quota and period in microseconds (`None` quota = unlimited).
    pub fn cpu_quota(&self, rel: &Path) -> Result<(Option<u64>, u64)> {
        match self.version {
            CgroupVersion::V2 => {
                let max = self.read("", rel, "cpu.max")?;
                let mut it = max.split_whitespace();
                let quota = it.next().and_then(|q| q.parse().ok());
                let period = it.next().and_then(|p| p.parse().ok()).unwrap_or(100_000);
                Ok((quota, period))
            }
            CgroupVersion::V1 => {
                let quota: i64 = self
                    .read("cpu", rel, "cpu.cfs_quota_us")?
                    .trim()
                    .parse()
                    .unwrap_or(-1);
                let period = number(&self.read("cpu", rel, "cpu.cfs_period_us")?);
                Ok((u64::try_from(quota).ok(), period))
            }
        }
    }

    /// Freezes (`true`) or thaws the cgroup and waits until the kernel says it is done.
    pub fn set_frozen(&self, rel: &Path, frozen: bool) -> Result<()> {
        let deadline = Instant::now() + SETTLE;
        loop {
            match self.version {
                CgroupVersion::V2 => {
                    self.write("", rel, "cgroup.freeze", if frozen { "1" } else { "0" })?
                }
                CgroupVersion::V1 => self.write(
                    "freezer",
                    rel,
                    "freezer.state",
                    if frozen { "FROZEN" } else { "THAWED" },
                )?,
            }
            if self.is_frozen(rel)? == frozen {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout(format!(
                    "cgroup {} did not {}",
                    rel.display(),
                    if frozen { "freeze" } else { "thaw" }
                )));
            }
            sleep(Duration::from_millis(1));
        }
    }

    /// Keeps the kernel's v1 freezer switched on by holding `rel` (an empty cgroup made for
    /// it) frozen. Linux 6.1+ counts frozen v1 cgroups in a static key: freezing the first
    /// one and thawing the last one patch kernel text on every CPU, 0.1–0.3 ms that a resume
    /// would otherwise wait for each time it thaws the only suspended machine. With one
    /// cgroup always frozen, a thaw is a write of a few µs. No-op on v2, whose freezer has
    /// no such key. Idempotent; [`Cgroups::remove`] of a parent takes the pin with it.
    pub fn pin_freezer(&self, rel: &Path) -> Result<()> {
        if self.version != CgroupVersion::V1 {
            return Ok(());
        }
        let dir = self.file("freezer", rel, "")?;
        fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
        if !self.is_frozen(rel)? {
            self.write("freezer", rel, "freezer.state", "FROZEN")?;
        }
        Ok(())
    }

    /// Whether the cgroup is (completely) frozen.
    pub fn is_frozen(&self, rel: &Path) -> Result<bool> {
        Ok(match self.version {
            CgroupVersion::V2 => {
                keyed(&self.read("", rel, "cgroup.events")?).get("frozen") == Some(&1)
            }
            CgroupVersion::V1 => self.read("freezer", rel, "freezer.state")?.trim() == "FROZEN",
        })
    }

    /// The processes in the cgroup.
    pub fn pids(&self, rel: &Path) -> Result<Vec<i32>> {
        let text = match self.read("pids", rel, "cgroup.procs") {
            Err(Error::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
                return Ok(Vec::new());
            }
            other => other?,
        };
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Sends SIGKILL to every process in the cgroup (thawing it so they can die).
    pub fn kill_all(&self, rel: &Path) -> Result<()> {
        for pid in self.pids(rel)? {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if self.is_frozen(rel).unwrap_or(false) {
            self.set_frozen(rel, false)?;
        }
        Ok(())
    }

    /// Removes the cgroup from every hierarchy; missing directories are fine. Waits (bounded)
    /// for dying tasks to leave.
    pub fn remove(&self, rel: &Path) -> Result<()> {
        let mut dirs: Vec<PathBuf> = self.v1.values().map(|m| m.join(rel)).collect();
        dirs.extend(self.v2.iter().map(|m| m.join(rel)));
        dirs.sort();
        dirs.dedup();
        let deadline = Instant::now() + SETTLE;
        for d in dirs {
            loop {
                match rmdir_tree(&d) {
                    Ok(()) => break,
                    Err(e)
                        if e.raw_os_error() == Some(nix::libc::EBUSY)
                            && Instant::now() < deadline =>
                    {
                        sleep(Duration::from_millis(5));
                    }
                    Err(e) => return Err(Error::io(format!("removing cgroup {}", d.display()), e)),
                }
            }
        }
        Ok(())
    }
}

/// Removes a cgroup directory and any child cgroups (cgroup dirs are removed with rmdir,
/// their files go with them).
fn rmdir_tree(dir: &Path) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            rmdir_tree(&entry.path())?;
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// v1 controller → mount point, and the cgroup2 mount, from mountinfo text.
fn parse_mountinfo(text: &str) -> (BTreeMap<String, PathBuf>, Option<PathBuf>) {
    let mut v1 = BTreeMap::new();
    let mut v2 = None;
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mount_point) = left.split_whitespace().nth(4) else {
            continue;
        };
        let mut r = right.split_whitespace();
        let (Some(fstype), _, Some(opts)) = (r.next(), r.next(), r.next()) else {
            continue;
        };
        match fstype {
            // Prefer /sys/fs/cgroup itself (pure v2) over a hybrid side mount.
            "cgroup2" if v2.is_none() || mount_point == "/sys/fs/cgroup" => {
                v2 = Some(PathBuf::from(mount_point));
            }
            "cgroup2" => {}
            "cgroup" => {
                for o in opts.split(',') {
                    if !matches!(o, "rw" | "ro") {
                        v1.entry(o.to_owned())
                            .or_insert_with(|| PathBuf::from(mount_point));
                    }
                }
            }
            _ => {}
        }
    }
    (v1, v2)
}

/// `key value` lines → map (values that are not numbers are skipped).
fn keyed(text: &str) -> BTreeMap<&str, u64> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?, it.next()?.parse().ok()?))
        })
        .collect()
}

fn number(text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_hybrid_and_unified() {
        let hybrid = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:10 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
";
        let (v1, v2) = parse_mountinfo(hybrid);
        assert_eq!(v2.as_deref(), Some(Path::new("/sys/fs/cgroup/unified")));
        assert_eq!(v1["cpu"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(v1["cpuacct"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(v1["memory"], Path::new("/sys/fs/cgroup/memory"));
        assert!(v1.contains_key("name=systemd"));
        let unified = "25 20 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let (v1, v2) = parse_mountinfo(unified);
        assert!(v1.is_empty());
        assert_eq!(v2.as_deref(), Some(Path::new("/sys/fs/cgroup")));
    }

    #[test]
    fn memory_stat_v1_and_v2() {
        let v1 = "cache 100\nrss 50\nshmem 7\ndirty 3\nwriteback 1\nswap 2\ninactive_anon 4\n\
                  active_anon 5\ninactive_file 6\nactive_file 8\ntotal_cache 1000\ntotal_rss 500\n\
                  total_shmem 70\ntotal_dirty 30\ntotal_writeback 10\ntotal_swap 20\n\
                  total_inactive_anon 40\ntotal_active_anon 50\ntotal_inactive_file 60\n\
                  total_active_file 80\n";
        assert_eq!(
            MemoryStat::parse(v1),
            MemoryStat {
                cache: 1000,
                anon: 500,
                active: 130,
                inactive: 100,
                inactive_file: 60,
                dirty: 30,
                writeback: 10,
                shmem: 70,
                slab: 0,
                swap: 20,
            }
        );
        let v2 = "anon 500\nfile 1000\nshmem 70\nfile_dirty 30\nfile_writeback 10\nslab 9\n\
                  inactive_anon 40\nactive_anon 50\ninactive_file 60\nactive_file 80\n";
        assert_eq!(
            MemoryStat::parse(v2),
            MemoryStat {
                cache: 1000,
                anon: 500,
                active: 130,
                inactive: 100,
                inactive_file: 60,
                dirty: 30,
                writeback: 10,
                shmem: 70,
                slab: 9,
                swap: 0,
            }
        );
        assert_eq!(MemoryStat::parse("garbage\n"), MemoryStat::default());
    }

    #[test]
    fn keyed_files() {
        let k = keyed("low 0\nhigh 0\nmax 3\noom 2\noom_kill 1\noom_group_kill 0\n");
        assert_eq!(k["oom_kill"], 1);
        let k = keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 4\n");
        assert_eq!(k["oom_kill"], 4);
        assert_eq!(keyed("populated 1\nfrozen 1\n").get("frozen"), Some(&1));
    }
}
