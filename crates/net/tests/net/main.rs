//! Real namespaces, veths and a bridge (root). Each test uses its own random network id so
//! tests can run in parallel, and removes everything it made even when it fails.

use std::net::Ipv6Addr;
use std::process::Command;

use hangar_net::{MachineNet, Network, list_machine_namespaces};

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let f = std::fs::read("/proc/sys/kernel/random/uuid").unwrap_or_default();
    for (i, x) in f.iter().enumerate() {
        b[i % 4] ^= *x;
    }
    u32::from_le_bytes(b) | 0x1000_0000
}

struct Cleanup(Vec<MachineNet>, Network);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for m in &self.0 {
            let _ = m.remove();
        }
        let _ = self.1.remove();
    }
}

fn addr(net: &Network, n: u32) -> Ipv6Addr {
    let h = net.host_id;
    let id = net.network_id;
    Ipv6Addr::new(
        0xfdaa,
        (id >> 16) as u16,
        id as u16,
        (h >> 16) as u16,
        h as u16,
        (n >> 16) as u16,
        n as u16,
        2,
    )
}

fn in_ns(ns: &str, cmd: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(cmd)
        .output()
        .expect("ip netns exec")
}

/// Asserts that the host reaches `addr` with one ping.
fn host_pings(addr: Ipv6Addr, what: &str) {
    let out = Command::new(busybox())
        .args(["ping", "-6", "-c", "1", "-W", "2", &addr.to_string()])
        .output()
        .expect("ping");
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn busybox() -> &'static str {
    assert!(
        std::path::Path::new("/bin/busybox").exists(),
        "this test needs /bin/busybox: apt-get install busybox-static"
    );
    "/bin/busybox"
}

#[test]
fn machines_on_one_network_reach_each_other_and_the_host() {
    let net = Network::new(random_u32(), 0x0a7b_0196);
    let a = MachineNet::new(&format!("{:014x}", u64::from(random_u32())), addr(&net, 1));
    let b = MachineNet::new(
        &format!("{:014x}", u64::from(random_u32()) << 8),
        addr(&net, 2),
    );
    let _guard = Cleanup(vec![a.clone(), b.clone()], net.clone());
    a.ensure(&net).expect("machine a");
    b.ensure(&net).expect("machine b");
    // Idempotent: a second ensure (e.g. after a daemon crash) changes nothing.
    a.ensure(&net).expect("again");
    assert!(
        list_machine_namespaces()
            .iter()
            .any(|id| a.netns.ends_with(id.as_str()))
    );
    let bb = busybox();
    let out = in_ns(
        &a.netns,
        &[bb, "ping", "-6", "-c", "1", "-W", "2", &b.addr.to_string()],
    );
    assert!(
        out.status.success(),
        "a → b: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = in_ns(
        &b.netns,
        &[
            bb,
            "ping",
            "-6",
            "-c",
            "1",
            "-W",
            "2",
            &net.gateway().to_string(),
        ],
    );
    assert!(
        out.status.success(),
        "b → host: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    host_pings(a.addr, "host → a");
    // The namespace has only lo and eth0: nothing of the host.
    let links = in_ns(&a.netns, &["ip", "-o", "link"]);
    let names: Vec<String> = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter_map(|l| {
            l.split(':')
                .nth(1)
                .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
        })
        .collect();
    assert_eq!(names, vec!["lo".to_string(), "eth0".to_string()]);
    a.remove().expect("remove");
    a.remove().expect("remove twice");
    assert!(!a.netns_path().exists());
    assert!(
        !Command::new("ip")
            .args(["link", "show", "dev", &a.host_veth])
            .output()
            .expect("ip")
            .status
            .success()
    );
}

#[test]
fn a_half_made_machine_is_repaired() {
    let net = Network::new(random_u32(), 3);
    let m = MachineNet::new(
        &format!("{:014x}", u64::from(random_u32()) << 4),
        addr(&net, 9),
    );
    let _guard = Cleanup(vec![m.clone()], net.clone());
    net.ensure().expect("bridge");
    // Simulate a crash after the namespace was made but before the veth.
    let out = Command::new("ip")
        .args(["netns", "add", &m.netns])
        .output()
        .expect("ip");
    assert!(out.status.success());
    m.ensure(&net).expect("repair");
    host_pings(m.addr, "the repaired machine");
}

#[test]
fn a_machine_whose_eth0_is_gone_gets_its_link_again() {
    let net = Network::new(random_u32(), 4);
    let m = MachineNet::new(
        &format!("{:014x}", u64::from(random_u32()) << 4),
        addr(&net, 10),
    );
    let _guard = Cleanup(vec![m.clone()], net.clone());
    m.ensure(&net).expect("machine");
    // The machine (NET_ADMIN) renames its interface: the host end is still there.
    let out = in_ns(&m.netns, &["ip", "link", "set", "eth0", "down"]);
    assert!(out.status.success(), "{out:?}");
    let out = in_ns(&m.netns, &["ip", "link", "set", "eth0", "name", "other0"]);
    assert!(out.status.success(), "{out:?}");
    m.ensure(&net).expect("repair");
    host_pings(m.addr, "the repaired machine");
}

mod flycast;
mod isolation;
