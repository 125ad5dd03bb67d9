//! cgroup limits and the figures read back from cgroups.

use hangar_runtime::Driver;
use hangar_runtime::cgroup::CgroupVersion;

use crate::{host, rt, run, wait_log};

#[test]
fn an_allocation_beyond_the_memory_limit_is_oom_killed_and_reported() {
    let h = host();
    let mut spec = h.spec(
        "oom",
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
    );
    spec.resources.memory_mb = Some(16);
    run(&h, &spec);
    let status = rt().block_on(h.driver.wait_exit(&spec.id)).expect("wait");
    assert!(status.oom_killed, "{status:?}, log: {}", h.log(&spec));
    assert_eq!((status.code, status.signal), (137, Some(9)));
}

#[test]
fn a_small_allocation_under_the_limit_is_fine() {
    let h = host();
    let mut spec = h.spec(
        "nooom",
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=4M", "count=1"],
    );
    spec.resources.memory_mb = Some(64);
    run(&h, &spec);
    let status = rt().block_on(h.driver.wait_exit(&spec.id)).expect("wait");
    assert_eq!(
        (status.code, status.oom_killed),
        (0, false),
        "{}",
        h.log(&spec)
    );
}

#[test]
fn cpu_memory_and_pids_limits_reach_the_cgroup() {
    let h = host();
    let mut spec = h.spec("limits", &["sh", "-c", "echo up; sleep 1000"]);
    spec.resources.cpus = Some(0.5);
    spec.resources.memory_mb = Some(128);
    spec.resources.pids_limit = Some(64);
    run(&h, &spec);
    wait_log(&h, &spec, "up");
    let rel = h.driver.cgroup_path(&spec.id);
    let cg = h.driver.cgroups();
    assert_eq!(cg.cpu_quota(&rel).expect("quota"), (Some(50_000), 100_000));
    let stats = h.driver.stats(&spec.id).expect("stats");
    assert_eq!(stats.memory_limit, Some(128 << 20));
    assert!(stats.memory_bytes > 0, "{stats:?}");
    assert!(stats.cpu_usage_ns > 0, "{stats:?}");
    assert_eq!(stats.oom_kills, 0);
    // init and sleep (the shell execs its last command).
    assert_eq!(stats.pids, 2);
    let pids_max = match cg.version() {
        CgroupVersion::V1 => cg.dir("pids", &rel).expect("pids dir").join("pids.max"),
        CgroupVersion::V2 => cg.dir("", &rel).expect("dir").join("pids.max"),
    };
    assert_eq!(
        std::fs::read_to_string(pids_max).expect("pids.max").trim(),
        "64"
    );
}

#[test]
fn the_pids_limit_stops_fork_bombs() {
    let h = host();
    let mut spec = h.spec(
        "pids",
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 30 ]; do sleep 100 & i=$((i+1)); done; wait",
        ],
    );
    spec.resources.pids_limit = Some(10);
    run(&h, &spec);
    wait_log(&h, &spec, "fork");
    assert!(h.driver.stats(&spec.id).expect("stats").pids <= 10);
}
