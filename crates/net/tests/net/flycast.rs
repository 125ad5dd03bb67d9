//! Flycast with real packets: an address on its network's bridge, reached by that network's
//! machines on the app's ports only, by no other network (and no other port, not even the
//! host's own services listening on `::`), and gone when released. Like the isolation test,
//! it runs in a network namespace of its own with IPv6 forwarding on, so the rules, not the
//! host's defaults, are what keeps the other network out.

use std::net::{Ipv6Addr, TcpListener};
use std::process::Command;

use hangar_net::flycast::FlycastRule;
use hangar_net::isolation::Isolation;
use hangar_net::{MachineNet, Network};

use super::{Cleanup, addr, busybox, in_ns, random_u32};

/// Whether a TCP connection from `from` opens (a blocked one gives up after 2 s).
fn connects(from: &MachineNet, to: Ipv6Addr, port: u16) -> bool {
    let (to, port) = (to.to_string(), port.to_string());
    in_ns(
        &from.netns,
        &["timeout", "10", busybox(), "nc", "-w", "2", &to, &port],
    )
    .status
    .success()
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

/// Flycast address `n` of `net` (the layout of `hangar_domain::sixpn::flycast_addr`).
fn flycast(net: &Network, n: u16) -> Ipv6Addr {
    let id = net.network_id;
    Ipv6Addr::new(0xfdaa, (id >> 16) as u16, id as u16, 0, 0, 0, n, 0x11)
}

fn in_own_netns(test: impl FnOnce() + Send + 'static) {
    let t = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip");
        assert!(up.success());
        std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1").expect("forwarding");
        test();
    });
    if let Err(e) = t.join() {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn a_flycast_address_is_reached_by_its_network_only_on_its_ports() {
    in_own_netns(|| {
        let host = 0x0a7b_0197;
        let red = Network::new(random_u32(), host);
        let blue = Network::new(random_u32() ^ 0xaa, host);
        let id = |n: u32| format!("{:014x}", (u64::from(random_u32()) << 8) | u64::from(n));
        let a = MachineNet::new(&id(1), addr(&red, 1));
        let b = MachineNet::new(&id(2), addr(&blue, 2));
        let _red = Cleanup(vec![a.clone()], red.clone());
        let _blue = Cleanup(vec![b.clone()], blue.clone());
        a.ensure(&red).expect("a");
        b.ensure(&blue).expect("b");
        // An address of the red network, and one of blue's that red must not reach either.
        let f = flycast(&red, 7);
        let g = flycast(&blue, 9);
        red.sync_flycast(&[f]).expect("address");
        red.sync_flycast(&[f]).expect("again: idempotent");
        blue.sync_flycast(&[g]).expect("blue's");
        assert_eq!(red.flycast_addrs().expect("list"), vec![f]);
        // The proxy's listeners on the app's port, and a host service on every address.
        let app_port = listen((f, 0));
        let blue_port = listen((g, 0));
        let host_port = listen("[::]:0");

        // Without rules the address is simply the host's: everyone gets in.
        assert!(connects(&a, f, app_port), "no rules: red → flycast");
        assert!(connects(&b, f, app_port), "no rules: blue → red's flycast");

        let iso = Isolation::new(&format!("hgt_fc{:x}", random_u32() & 0xffff)).expect("iso");
        let _tables = Tables(iso.clone());
        iso.rebuild(&[red.clone(), blue.clone()], &[a.clone(), b.clone()])
            .expect("rules");
        let rules = [
            FlycastRule {
                bridge: red.bridge.clone(),
                addr: f,
                port: app_port,
            },
            FlycastRule {
                bridge: blue.bridge.clone(),
                addr: g,
                port: blue_port,
            },
        ];
        iso.set_flycast(&rules).expect("flycast rules");
        iso.set_flycast(&rules).expect("again: idempotent");
        assert!(connects(&a, f, app_port), "red → its flycast");
        assert!(connects(&b, g, blue_port), "blue → its flycast");
        assert!(!connects(&b, f, app_port), "blue → red's flycast");
        assert!(!connects(&a, g, blue_port), "red → blue's flycast");
        assert!(
            !connects(&a, f, host_port),
            "red → the host's other port there"
        );

        // A rebuild (agent start) empties the set until the agent fills it again.
        iso.rebuild(&[red.clone(), blue.clone()], &[a.clone(), b.clone()])
            .expect("rebuild");
        assert!(
            !connects(&a, f, app_port),
            "after a rebuild, before set_flycast"
        );
        iso.set_flycast(&rules[..1]).expect("red's only");
        assert!(connects(&a, f, app_port), "red → its flycast again");

        // Released: the rule and the address go.
        iso.set_flycast(&[]).expect("no rules");
        assert!(!connects(&a, f, app_port), "released: no rule");
        red.sync_flycast(&[]).expect("no addresses");
        assert!(red.flycast_addrs().expect("list").is_empty());
        assert_eq!(blue.flycast_addrs().expect("blue's"), vec![g]);
        let out = Command::new("ip")
            .args(["-6", "-o", "address", "show", "dev", &red.bridge])
            .output()
            .expect("ip");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&red.service_addr().to_string()), "{text}");
        assert!(!text.contains(&f.to_string()), "{text}");
    });
}

/// Removes the isolation tables when the test ends, however it ends.
struct Tables(Isolation);

impl Drop for Tables {
    fn drop(&mut self) {
        let _ = self.0.remove();
    }
}
