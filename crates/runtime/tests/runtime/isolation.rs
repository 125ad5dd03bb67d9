//! What a machine can and cannot do: its own network (TUN, netlink) but nothing of the host's.

use std::fs;

use hangar_runtime::Driver;

use crate::{host, rt, run};

#[test]
fn net_admin_and_tun_work_in_the_own_netns_but_host_is_invisible() {
    let h = host();
    let script = "\
ip link set lo up && echo LO_UP
tunctl -t tap0 >/dev/null && echo TUN_OK
ip link set tap0 up && echo TAP_UP
ip addr add 192.0.2.1/24 dev tap0 && echo ADDR_OK
ip link add v0 type veth peer name v1 && echo VETH_OK
echo LINKS; ip -o link | cut -d: -f2; echo END_LINKS
echo PROCS; ps -o pid,comm | tail -n +2; echo END_PROCS
mount -t tmpfs none /mnt 2>/dev/null || echo MOUNT_DENIED
unshare -n true 2>/dev/null || echo UNSHARE_DENIED
echo x > /proc/sys/net/ipv4/ip_forward 2>/dev/null || echo PROC_SYS_RO
ls /proc/kcore 2>/dev/null; [ -s /proc/kcore ] || echo KCORE_MASKED
echo done";
    let spec = h.spec("net", &["sh", "-c", script]);
    run(&h, &spec);
    let status = rt().block_on(h.driver.wait_exit(&spec.id)).expect("wait");
    let log = h.log(&spec);
    assert_eq!(status.code, 0, "{log}");
    for want in [
        "LO_UP",
        "TUN_OK",
        "TAP_UP",
        "ADDR_OK",
        "VETH_OK",
        "MOUNT_DENIED",
        "UNSHARE_DENIED",
        "PROC_SYS_RO",
        "KCORE_MASKED",
        "done",
    ] {
        assert!(log.contains(want), "{want} missing from:\n{log}");
    }
    // Only its own interfaces.
    let links = section(&log, "LINKS", "END_LINKS");
    let names: Vec<&str> = links
        .iter()
        .map(|l| l.trim().split('@').next().unwrap_or(""))
        .collect();
    assert_eq!(names.len(), 4, "{links:?}");
    for want in ["lo", "tap0", "v0"] {
        assert!(names.contains(&want), "{want} missing: {links:?}");
    }
    for host_if in fs::read_dir("/sys/class/net").expect("host links") {
        let name = host_if
            .expect("entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name != "lo" {
            assert!(
                !names.contains(&name.as_str()),
                "host interface {name} visible"
            );
        }
    }
    // Only its own processes: init, sh, and ps itself (plus the pipe's tail).
    let procs = section(&log, "PROCS", "END_PROCS");
    assert!(procs.len() <= 4, "{procs:?}");
    assert!(
        procs.iter().any(|p| p.trim().starts_with("1 ")),
        "{procs:?}"
    );
    assert!(
        procs.iter().all(|p| p
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n < 50)),
        "{procs:?}"
    );
}

#[test]
fn dev_net_tun_exists_and_sys_is_read_only() {
    let h = host();
    let spec = h.spec(
        "dev",
        &["sh", "-c", "ls -l /dev/net/tun; touch /sys/x 2>/dev/null || echo SYS_RO; cat /proc/self/cgroup; cat /proc/1/cmdline | tr '\\0' ' '; echo"],
    );
    run(&h, &spec);
    rt().block_on(h.driver.wait_exit(&spec.id)).expect("wait");
    let log = h.log(&spec);
    assert!(log.contains("10, 200"), "{log}");
    assert!(log.contains("SYS_RO"), "{log}");
    assert!(log.contains("/.hangar/init"), "{log}");
}

fn section(log: &str, start: &str, end: &str) -> Vec<String> {
    log.lines()
        .skip_while(|l| *l != start)
        .skip(1)
        .take_while(|l| *l != end)
        .map(str::to_owned)
        .collect()
}
