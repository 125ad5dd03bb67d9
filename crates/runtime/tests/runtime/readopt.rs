//! Machines outlive the daemon: a "daemon" process creates and starts containers and is
//! SIGKILLed; a new driver over the same state directory finds them, stops the running one and
//! reads the exit of the one that ended while no daemon was there.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hangar_runtime::{
    ContainerSpec, ContainerState, Driver, LinuxDriver, LinuxDriverConfig, Signal,
};

use crate::{host, rt, wait_log, wait_until};

const HELPER_ENV: &str = "HANGAR_RT_DAEMON_HELPER";

/// Not a test on its own: the "daemon" process of [`containers_survive_a_killed_daemon`]. It
/// does nothing unless started by that test with `HANGAR_RT_DAEMON_HELPER` set.
#[test]
fn daemon_helper_process() {
    let Some(path) = std::env::var_os(HELPER_ENV) else {
        return;
    };
    let job: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("job")).expect("job json");
    let config = LinuxDriverConfig {
        state_dir: PathBuf::from(job["state_dir"].as_str().expect("state_dir")),
        init_binary: PathBuf::from(job["init_binary"].as_str().expect("init")),
        cgroup_parent: job["cgroup_parent"].as_str().expect("parent").to_owned(),
    };
    let driver = LinuxDriver::new(config).expect("driver");
    for spec in job["specs"].as_array().expect("specs") {
        let spec: ContainerSpec = serde_json::from_value(spec.clone()).expect("spec");
        driver.create(&spec).expect("create");
        driver.start(&spec.id).expect("start");
    }
    // Die the hard way, leaving the containers to fend for themselves.
    nix::sys::signal::kill(nix::unistd::Pid::this(), nix::sys::signal::Signal::SIGKILL)
        .expect("kill self");
}

#[test]
fn containers_survive_a_killed_daemon() {
    let h = host();
    let long = h.spec(
        "readopt",
        &[
            "sh",
            "-c",
            "trap 'echo bye; exit 7' TERM; echo up; sleep 1000 & wait",
        ],
    );
    let short = h.spec(
        "readopt-short",
        &["sh", "-c", "echo short; usleep 300000; exit 4"],
    );
    let job = serde_json::json!({
        "state_dir": h.config().state_dir,
        "init_binary": h.config().init_binary,
        "cgroup_parent": h.config().cgroup_parent,
        "specs": [long, short],
    });
    let job_file = h.dir().join("job.json");
    std::fs::write(&job_file, job.to_string()).expect("job");
    let daemon = Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "readopt::daemon_helper_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, &job_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("helper");
    let daemon_pid = daemon.id();
    let out = daemon.wait_with_output().expect("helper");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(9),
        "helper: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    // A new "daemon": nothing but the state directory.
    let driver = LinuxDriver::new(h.config().clone()).expect("driver");
    wait_log(&h, &long, "up");
    wait_until(10, "the short one to end", || {
        driver.state(&short.id).ok() == Some(ContainerState::Stopped)
    });
    let list = driver.list().expect("list");
    assert_eq!(list.len(), 2, "{list:?}");
    let found = list.iter().find(|c| c.id == long.id).expect("long listed");
    assert_eq!(found.state, ContainerState::Running);
    assert_eq!(found.spec.as_ref(), Some(&long));
    let pid = found.pid.expect("pid");
    // The killed daemon's orphan, adopted by the nearest subreaper (this process: its own
    // LinuxDriver made it one; on a host without one, the host's init).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let ppid: u32 = stat
        .rsplit_once(") ")
        .expect("stat")
        .1
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("ppid");
    assert_ne!(ppid, daemon_pid);

    let rt = rt();
    let short_status = rt
        .block_on(driver.wait_exit(&short.id))
        .expect("short exit");
    assert_eq!((short_status.code, short_status.signal), (4, None));
    let status = rt
        .block_on(driver.stop(&long.id, Signal::TERM, Duration::from_secs(5)))
        .expect("stop");
    assert_eq!(
        (status.code, status.signal, status.oom_killed),
        (7, None, false)
    );
    assert!(h.log(&long).contains("bye"));
    driver.delete(&long.id).expect("delete");
    driver.delete(&short.id).expect("delete");
    assert!(driver.list().expect("list").is_empty());
}
