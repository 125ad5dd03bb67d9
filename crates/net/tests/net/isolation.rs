//! The isolation rules with real packets. The test runs in a network namespace of its own (a
//! thread that unshared it: `ip` and `nft` started from that thread act there), so it can turn
//! IPv6 forwarding on, as a router host would, without touching the machine's own settings,
//! and show that the rules, not the host's defaults, keep networks apart. The namespace and
//! everything in it (bridges, veths, tables) go when the thread ends; the machines' named
//! namespaces are removed by the guard.

use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
use std::process::Command;

use hangar_net::isolation::Isolation;
use hangar_net::{MachineNet, Network};

use super::{Cleanup, addr, busybox, in_ns, random_u32};

/// One echo, answered within 3 s (the first ones wait for neighbour discovery); the paths
/// expected to fail were warmed up by the same ping before the rules.
fn ping(from: &MachineNet, to: &str, source: Option<&str>) -> bool {
    ping_within(from, to, source, "3")
}

/// [`ping`] waiting 1 s: for paths expected to be closed (their neighbours are known by
/// then, so an open one would answer in a millisecond).
fn blocked(from: &MachineNet, to: &str, source: Option<&str>) -> bool {
    !ping_within(from, to, source, "1")
}

fn ping_within(from: &MachineNet, to: &str, source: Option<&str>, wait: &str) -> bool {
    let mut args = vec!["timeout", "10", busybox(), "ping", "-c", "1", "-W", wait];
    // IPv6 from the machine's own address unless told otherwise (it may hold a spoofed one).
    let own = from.addr.to_string();
    match source {
        Some(s) => args.extend(["-I", s]),
        None if to.contains(':') => args.extend(["-I", own.as_str()]),
        None => {}
    }
    args.push(to);
    in_ns(&from.netns, &args).status.success()
}

/// Whether a TCP connection opens (the listeners close every connection they accept, so a
/// connected `nc` ends at once; one that can not connect gives up after 2 s).
fn connects(from: &MachineNet, to: &str, port: u16) -> bool {
    let port = port.to_string();
    let out = in_ns(
        &from.netns,
        &["timeout", "10", busybox(), "nc", "-w", "2", to, &port],
    );
    out.status.success()
}

/// A TCP listener that closes what it accepts, for as long as the test runs.
fn listen(addr: impl std::net::ToSocketAddrs) -> u16 {
    let l = TcpListener::bind(addr).expect("listener");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    port
}

fn run_isolated(test: impl FnOnce() + Send + 'static) {
    let t = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip");
        assert!(up.success());
        for (k, v) in [
            ("/proc/sys/net/ipv6/conf/all/forwarding", "1"),
            ("/proc/sys/net/ipv4/ip_forward", "1"),
        ] {
            std::fs::write(k, v).expect(k);
        }
        test();
    });
    if let Err(e) = t.join() {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn networks_are_apart_the_host_is_closed_and_nobody_spoofs() {
    run_isolated(|| {
        let host = 0x0a7b_0196;
        let red = Network::new(random_u32(), host);
        let blue = Network::new(random_u32() ^ 0x55, host);
        let id = |n: u32| format!("{:014x}", (u64::from(random_u32()) << 8) | u64::from(n));
        let a1 =
            MachineNet::new(&id(1), addr(&red, 1)).with_ipv4(Some(Ipv4Addr::new(10, 200, 0, 1)));
        let a2 =
            MachineNet::new(&id(2), addr(&red, 2)).with_ipv4(Some(Ipv4Addr::new(10, 200, 0, 2)));
        let b =
            MachineNet::new(&id(3), addr(&blue, 3)).with_ipv4(Some(Ipv4Addr::new(10, 200, 0, 3)));
        let _guard = Cleanup(vec![a1.clone(), a2.clone(), b.clone()], red.clone());
        let _blue = Cleanup(vec![], blue.clone());
        for (m, n) in [(&a1, &red), (&a2, &red), (&b, &blue)] {
            m.ensure(n).expect("machine");
        }
        // The host holds ports on every address; machines may use only the service ports of
        // their own network's service address.
        let other_port = listen("[::]:0");
        listen((red.service_addr(), 53));
        listen((blue.service_addr(), 53));
        let _udp = UdpSocket::bind((red.service_addr(), 53)).expect("udp :53");
        let spoofed = {
            let mut s = a1.addr.segments();
            s[6] = 0x99;
            Ipv6Addr::from(s)
        };
        let ip = |ns: &str, args: &[&str]| {
            let out = Command::new("ip")
                .args(["-n", ns])
                .args(args)
                .output()
                .expect("ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let spoof = |on: bool| {
            let prefix = format!("{spoofed}/128");
            let verb = if on { "add" } else { "del" };
            ip(
                &a1.netns,
                &["address", verb, &prefix, "dev", "eth0", "nodad"],
            );
        };
        spoof(true);

        // Without rules, a forwarding host joins everything: the test would prove nothing.
        assert!(ping(&a1, &b.addr.to_string(), None), "no rules: red → blue");
        assert!(
            ping(&a1, &a2.addr.to_string(), Some(&spoofed.to_string())),
            "no rules: spoofing"
        );
        assert!(
            connects(&a1, &red.gateway().to_string(), other_port),
            "no rules: host port"
        );
        assert!(
            connects(&a1, "169.254.0.1", other_port),
            "no rules: host over IPv4"
        );
        spoof(false);

        let iso = Isolation::new("hgt_iso").expect("isolation");
        iso.rebuild(
            &[red.clone(), blue.clone()],
            &[a1.clone(), a2.clone(), b.clone()],
        )
        .expect("rules");
        // Own network: IPv6, IPv4 (same bridge), the service address.
        assert!(ping(&a1, &a2.addr.to_string(), None), "red → red");
        assert!(
            connects(&a1, &red.service_addr().to_string(), 53),
            "red → its DNS"
        );
        assert!(
            ping(&a1, &red.service_addr().to_string(), None),
            "red → its service address"
        );
        // Another network: neither IPv6 nor IPv4, nor its service address.
        assert!(blocked(&a1, &b.addr.to_string(), None), "red → blue");
        assert!(blocked(&b, &a1.addr.to_string(), None), "blue → red");
        assert!(blocked(&a1, "10.200.0.3", None), "red → blue over IPv4");
        assert!(
            !connects(&a1, &blue.service_addr().to_string(), 53),
            "red → blue's DNS"
        );
        // The host's other ports and addresses.
        assert!(
            !connects(&a1, &red.gateway().to_string(), other_port),
            "host port via gateway"
        );
        assert!(
            !connects(&a1, &red.service_addr().to_string(), other_port),
            "host port via ::3"
        );
        assert!(!connects(&a1, "169.254.0.1", other_port), "host over IPv4");
        // Spoofed sources.
        spoof(true);
        assert!(
            blocked(&a1, &a2.addr.to_string(), Some(&spoofed.to_string())),
            "spoofed IPv6 source"
        );
        // IPv4 between machines is never a path (they meet over 6PN), so a spoofed IPv4
        // source shows in the port's drop counters (the packet, or the ARP query before it).
        ip(
            &a1.netns,
            &["address", "add", "10.200.0.9/32", "dev", "eth0"],
        );
        assert!(
            blocked(&a1, "10.200.0.3", Some("10.200.0.9")),
            "spoofed IPv4 source"
        );
        let chain = Command::new("nft")
            .args([
                "list",
                "chain",
                "bridge",
                iso.table(),
                &format!("m_{}", a1.host_veth),
            ])
            .output()
            .expect("nft");
        let chain = String::from_utf8_lossy(&chain.stdout).into_owned();
        let dropped: u64 = chain
            .lines()
            .filter(|l| {
                l.contains("saddr ip != 10.200.0.1") || l.contains("ip saddr != 10.200.0.1")
            })
            .filter_map(|l| {
                l.split("packets ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        assert!(dropped > 0, "{chain}");
        // Another MAC: nothing gets through, until the agent's next ensure sets it back.
        ip(
            &a1.netns,
            &["link", "set", "eth0", "address", "02:00:00:00:00:01"],
        );
        assert!(blocked(&a1, &a2.addr.to_string(), None), "spoofed MAC");
        a1.ensure(&red).expect("ensure again");
        assert!(ping(&a1, &a2.addr.to_string(), None), "MAC restored");
        // The host still reaches machines, and their answers come back.
        let out = Command::new(busybox())
            .args(["ping", "-c", "1", "-W", "1", &b.addr.to_string()])
            .output()
            .expect("ping");
        assert!(out.status.success(), "host → blue");

        // Adding is idempotent, and runs nothing for rules this process put in already (the
        // rebuild did); removing a machine takes its rules; nothing stale remains.
        assert!(!iso.add(&red, &a2).expect("add again"), "a2's rules are in");
        iso.remove_machine(&b).expect("remove b");
        iso.remove_machine(&b).expect("remove b twice");
        assert!(!nft_list(&iso).contains(&b.host_veth));
        assert!(
            iso.add(&blue, &b).expect("b back"),
            "b's rules went: nft again"
        );
        assert!(nft_list(&iso).contains(&b.host_veth));
        assert!(!iso.add(&blue, &b).expect("b twice"));
        // Other rules for the same veth (another IPv4 address) are written.
        let moved = a2.clone().with_ipv4(Some(Ipv4Addr::new(10, 200, 0, 22)));
        assert!(iso.add(&red, &moved).expect("a2 moved"));
        assert!(nft_list(&iso).contains("10.200.0.22"));
        assert!(iso.add(&red, &a2).expect("a2 back"));
        assert!(!nft_list(&iso).contains("10.200.0.22"));
        // A table (and memo) of the same name in another network namespace is another's.
        let elsewhere = std::thread::spawn({
            let (iso, red, a2) = (iso.clone(), red.clone(), a2.clone());
            move || {
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
                iso.rebuild(&[], &[]).expect("tables there");
                iso.add(&red, &a2).expect("add there")
            }
        })
        .join()
        .expect("thread");
        assert!(
            elsewhere,
            "another namespace's table had none of a2's rules"
        );
        iso.remove_machine(&b).expect("remove b again");
        let rules = nft_list(&iso);
        assert!(!rules.contains(&b.host_veth), "{rules}");
        assert!(rules.contains(&a2.host_veth), "{rules}");
        assert!(
            blocked(&b, &a1.addr.to_string(), None),
            "blue still kept out by red's rules"
        );
        iso.rebuild(std::slice::from_ref(&red), std::slice::from_ref(&a1))
            .expect("rebuild");
        let rules = nft_list(&iso);
        assert!(
            !rules.contains(&a2.host_veth) && !rules.contains(&blue.bridge),
            "{rules}"
        );
        iso.remove_network(&red).expect("remove network");
        assert!(!nft_list(&iso).contains(&red.bridge));
        assert!(
            iso.add(&red, &a1).expect("network back"),
            "its elements went: nft again"
        );
        assert!(nft_list(&iso).contains(&red.bridge));
        iso.remove().expect("remove");
        assert!(!iso.exists());
        iso.remove_machine(&a1).expect("no tables: nothing to do");
    });
}

fn nft_list(iso: &Isolation) -> String {
    let mut s = String::new();
    for family in ["inet", "bridge"] {
        let out = Command::new("nft")
            .args(["list", "table", family, iso.table()])
            .output()
            .expect("nft");
        s.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    s
}
