//! The real driver on the real host: namespaces, cgroups, seccomp, hangar-init. Needs root,
//! cgroups (v1 or v2) and Debian's `busybox-static`. Every test has its own [`TestHost`]
//! (temporary state, rootfs and cgroup parent) that removes everything when dropped.

mod exec;
mod fake;
mod isolation;
mod lifecycle;
mod limits;
mod readopt;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use hangar_runtime::testing::TestHost;
use hangar_runtime::{ContainerSpec, Driver, Started};

/// A test host, or a panic that says what is missing.
pub fn host() -> TestHost {
    match TestHost::new() {
        Ok(h) => h,
        Err(e) => panic!("cannot set up a test host: {e}"),
    }
}

/// Polls `f` every 10 ms until it is true; panics with `what` after `secs`.
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Creates and starts `spec`.
pub fn run(host: &TestHost, spec: &ContainerSpec) -> Started {
    host.driver.create(spec).expect("create");
    host.driver.start(&spec.id).expect("start")
}

/// Waits until the app's log contains `needle`.
pub fn wait_log(host: &TestHost, spec: &ContainerSpec, needle: &str) {
    wait_until(10, &format!("{needle:?} in the log"), || {
        host.log(spec).contains(needle)
    });
}

/// A current-thread tokio runtime with IO and time (what `wait_exit` needs).
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Lines of /proc/self/mountinfo that mention `path`.
pub fn mounts_under(path: &Path) -> Vec<String> {
    let p = path.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&p))
        .map(str::to_owned)
        .collect()
}
