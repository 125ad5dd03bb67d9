//! Isolation of private networks, enforced by the kernel (nftables).
//!
//! What a machine may do, and what it may not:
//! - reach the machines of its own network over IPv6 (same bridge: plain L2 switching; where
//!   `br_netfilter` makes bridged packets pass the `inet` hooks too, as Docker hosts do, the
//!   `within` set lets a bridge's own traffic through);
//! - reach nothing of another network: no packet is forwarded from a Hangar bridge to any
//!   Hangar bridge, IPv4 or IPv6, of this host or of another Hangar host on this machine;
//! - reach the host only at its network's service address `fdaa:<net>:<host>::3`
//!   ([`crate::Network::service_addr`]) on [`SERVICE_PORTS`] (DNS on 53, the Machines API
//!   relay on 4280) and with ICMPv6 neighbour discovery (and echo to the service address);
//!   replies to connections the host opened (the proxy, health checks, scrapes) pass;
//! - reach the outside world over IPv4 (NATed by [`crate::egress`]); nothing from outside
//!   enters a network unless it answers a connection a machine opened;
//! - not spoof: every frame from a machine's port must carry its MAC
//!   ([`crate::MachineNet::mac`]), its 6PN address or a link-local (or `::` for duplicate
//!   address detection) as IPv6 source, its own IPv4 address as IPv4 and ARP sender; its
//!   neighbour advertisements may only claim its own addresses, and it may not send router
//!   advertisements or redirects. A machine with `NET_ADMIN` can change its addresses inside
//!   its namespace, but what it sends then is dropped at the bridge port.
//!
//! Two tables per host, both named like the egress table (one name per Hangar host, so
//! parallel hosts, e.g. test clusters, never touch each other's rules), in two families:
//! - `inet <table>`, for routed traffic: sets `bridges` (this host's bridges), `within`
//!   (`bridge . bridge`), `services` (`bridge . service address . protocol . port`),
//!   `service_addrs` and `flycast` (`bridge . Flycast address . tcp . port`, [`crate::flycast`]);
//!   base chains `input` and `forward` (with `out_of_network` and
//!   `into_network`) whose rules only ever match packets from or to this host's bridges, so a
//!   host's rules never decide for another host's machines;
//! - `bridge <table>`, for L2 anti-spoofing: a verdict map `ports` from each machine's host
//!   veth to its own chain `m_<veth>` (the literal MAC and addresses), jumped to from the
//!   `prerouting` base chain.
//!
//! [`Isolation::rebuild`] replaces both tables with exactly the given networks and machines
//! in one transaction (at agent start: whatever was stale is gone, there is no moment without
//! rules); [`Isolation::add`] adds a machine (and its network) and [`Isolation::remove_machine`]
//! removes one, each atomic and idempotent, so a crash between steps is repaired by doing the
//! step again. [`Isolation::remove`] deletes both tables. An add runs no `nft` when this
//! process already put exactly those rules in and removed none of them since (a machine
//! started again on its network).
//!
//! WireGuard peers (PLATFORM.md §4.5) come in through the host's WireGuard interface (named
//! [`WIREGUARD_PREFIX`]`…`): the `inet` table lets that interface's traffic into and out of
//! networks, and the interface's own table ([`PeerIsolation`]) decides: a peer reaches its
//! own network's machines and service address, from its own range, and nothing else.
//!
//! Drops in a machine's chain are counted (`nft list table bridge <table>` shows who tried
//! what). The host does not forward IPv6 (Hangar never turns `net.ipv6.conf.all.forwarding`
//! on); if something else does, the `forward` rules still keep networks apart (the net tests
//! check exactly that, in a namespace with forwarding on). IPv4 between machines, even of one
//! network, is no path at all (they meet over 6PN; the egress table drops bridge to bridge).

use std::net::Ipv6Addr;

use crate::egress::nft;
use crate::{MachineNet, NetError, Network, Result};

/// The ports machines may reach on their network's service address: DNS (UDP and TCP) and
/// the Machines API relay (`_api.internal:4280`).
pub const SERVICE_PORTS: &[(&str, u16)] = &[("udp", 53), ("tcp", 53), ("tcp", 4280)];

/// The isolation tables of one Hangar host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    table: String,
}

fn hex(a: Ipv6Addr) -> String {
    format!("0x{:032x}", u128::from(a))
}

/// What this process put in a host's isolation tables (the script lines of each network, by
/// bridge, and of each machine, by host veth), so that a machine started again on the same
/// network does not run `nft` to write the same rules again: an `nft` run costs about 9 ms of
/// CPU, and reads the whole table first, so more with every machine of the host. Forgotten
/// before anything of this process removes those rules, and filled in after an `nft` run put
/// them in. Keyed by network namespace and table name (tests run hosts in namespaces of
/// their own, with the same names). A host restarted starts empty and rebuilds the tables.
#[derive(Default)]
struct Applied {
    networks: std::collections::HashMap<String, String>,
    machines: std::collections::HashMap<String, String>,
}

type AppliedKey = ((u64, u64), String);

static APPLIED: std::sync::Mutex<Option<std::collections::HashMap<AppliedKey, Applied>>> =
    std::sync::Mutex::new(None);

fn applied<T>(f: impl FnOnce(&mut std::collections::HashMap<AppliedKey, Applied>) -> T) -> T {
    let mut g = APPLIED.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(Default::default))
}

/// Changes what is remembered of these tables (before removing rules).
fn forget(key: Option<AppliedKey>, f: impl FnOnce(&mut Applied)) {
    if let Some(key) = key {
        applied(|a| {
            if let Some(a) = a.get_mut(&key) {
                f(a);
            }
        });
    }
}

/// The calling thread's network namespace: device and inode of its `ns/net` (none when that
/// cannot be read: then nothing is remembered and every `add` runs `nft`).
fn netns_id() -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl Isolation {
    /// Tables named `table` (letters, digits, `_`; at most 32) in the `inet` and `bridge`
    /// families.
    pub fn new(table: &str) -> Result<Self> {
        if table.is_empty()
            || table.len() > 32
            || !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(NetError::BadName(table.to_string()));
        }
        Ok(Self {
            table: table.to_string(),
        })
    }

    /// The tables' name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn applied_key(&self) -> Option<AppliedKey> {
        Some((netns_id()?, self.table.clone()))
    }

    /// The script that replaces both tables with these networks and machines.
    pub fn rebuild_script(&self, networks: &[Network], machines: &[MachineNet]) -> String {
        let t = &self.table;
        // Traffic of WireGuard interfaces is judged by their own tables ([`PeerIsolation`]).
        let wg = WIREGUARD_PREFIX;
        let mut s = format!(
            "table inet {t} {{}}\n\
             delete table inet {t}\n\
             table bridge {t} {{}}\n\
             delete table bridge {t}\n\
             table inet {t} {{\n\
               set bridges {{ type ifname; }}\n\
               set services {{ type ifname . ipv6_addr . inet_proto . inet_service; }}\n\
               set service_addrs {{ type ifname . ipv6_addr; }}\n\
               set within {{ type ifname . ifname; }}\n\
               set flycast {{ type ifname . ipv6_addr . inet_proto . inet_service; }}\n\
               chain input {{\n\
                 type filter hook input priority filter; policy accept;\n\
                 iifname != @bridges accept\n\
                 ct state established,related accept\n\
                 iifname . ip6 daddr . meta l4proto . th dport @services accept\n\
                 iifname . ip6 daddr . meta l4proto . th dport @flycast accept\n\
                 icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} accept\n\
                 icmpv6 type echo-request iifname . ip6 daddr @service_addrs accept\n\
                 drop\n\
               }}\n\
               chain forward {{\n\
                 type filter hook forward priority filter; policy accept;\n\
                 iifname @bridges jump out_of_network\n\
                 oifname @bridges jump into_network\n\
               }}\n\
               chain out_of_network {{\n\
                 iifname . oifname @within accept\n\
                 oifname \"{wg}*\" accept\n\
                 oifname \"hgrb*\" drop\n\
                 meta nfproto ipv4 accept\n\
                 drop\n\
               }}\n\
               chain into_network {{\n\
                 ct state established,related accept\n\
                 iifname \"{wg}*\" accept\n\
                 drop\n\
               }}\n\
             }}\n\
             table bridge {t} {{\n\
               map ports {{ type ifname : verdict; }}\n\
               chain prerouting {{\n\
                 type filter hook prerouting priority filter; policy accept;\n\
                 iifname vmap @ports\n\
               }}\n\
             }}\n"
        );
        let mut seen = std::collections::HashSet::new();
        for n in networks {
            if seen.insert(n.bridge.clone()) {
                s.push_str(&self.network_lines(n));
            }
        }
        for m in machines {
            s.push_str(&self.machine_lines(m));
        }
        s
    }

    fn network_lines(&self, n: &Network) -> String {
        let t = &self.table;
        let b = &n.bridge;
        let svc = n.service_addr();
        let mut s = format!(
            "add element inet {t} bridges {{ \"{b}\" }}\n\
             add element inet {t} service_addrs {{ \"{b}\" . {svc} }}\n\
             add element inet {t} within {{ \"{b}\" . \"{b}\" }}\n"
        );
        for (proto, port) in SERVICE_PORTS {
            s.push_str(&format!(
                "add element inet {t} services {{ \"{b}\" . {svc} . {proto} . {port} }}\n"
            ));
        }
        s
    }

    fn chain(m: &MachineNet) -> String {
        format!("m_{}", m.host_veth)
    }

    fn machine_lines(&self, m: &MachineNet) -> String {
        let t = &self.table;
        let c = Self::chain(m);
        let port = &m.host_veth;
        let mac = m.mac();
        let addr = m.addr;
        let mut s = format!(
            "add chain bridge {t} {c}\n\
             flush chain bridge {t} {c}\n\
             add rule bridge {t} {c} ether saddr != {mac} counter drop\n\
             add rule bridge {t} {c} ether type != {{ ip, ip6, arp }} counter drop\n\
             add rule bridge {t} {c} ip6 saddr != {{ {addr}, fe80::/64, :: }} counter drop\n\
             add rule bridge {t} {c} icmpv6 type {{ nd-router-advert, nd-redirect }} counter drop\n\
             add rule bridge {t} {c} icmpv6 type nd-neighbor-advert @th,64,128 != {{ {}, {}-{} }} counter drop\n",
            hex(addr),
            hex(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
            hex(Ipv6Addr::new(
                0xfe80, 0, 0, 0, 0xffff, 0xffff, 0xffff, 0xffff
            )),
        );
        match m.ipv4 {
            Some(v4) => s.push_str(&format!(
                "add rule bridge {t} {c} ip saddr != {v4} counter drop\n\
                 add rule bridge {t} {c} arp saddr ip != {v4} counter drop\n\
                 add rule bridge {t} {c} arp saddr ether != {mac} counter drop\n"
            )),
            None => s.push_str(&format!(
                "add rule bridge {t} {c} ether type {{ ip, arp }} counter drop\n"
            )),
        }
        s.push_str(&format!(
            "add element bridge {t} ports {{ \"{port}\" : jump {c} }}\n"
        ));
        s
    }

    /// Replaces both tables with exactly these networks and machines, atomically.
    pub fn rebuild(&self, networks: &[Network], machines: &[MachineNet]) -> Result<()> {
        for m in machines {
            crate::safe(&m.host_veth)?;
        }
        for n in networks {
            crate::safe(&n.bridge)?;
        }
        let key = self.applied_key();
        forget(key.clone(), |a| *a = Applied::default());
        nft(&self.rebuild_script(networks, machines))?;
        let Some(key) = key else {
            return Ok(());
        };
        let mut now = Applied::default();
        for n in networks {
            now.networks.insert(n.bridge.clone(), self.network_lines(n));
        }
        for m in machines {
            now.machines
                .insert(m.host_veth.clone(), self.machine_lines(m));
        }
        applied(|a| a.insert(key, now));
        Ok(())
    }

    /// Adds the rules of a machine and its network, unless this process already put exactly
    /// these in place and nothing of its own removed them since (then it runs nothing, and
    /// says so with `false`). Idempotent; the tables must exist ([`Isolation::rebuild`] at
    /// start). Operations on one machine must not run concurrently (the agent holds its lock).
    pub fn add(&self, network: &Network, machine: &MachineNet) -> Result<bool> {
        crate::safe(&network.bridge)?;
        crate::safe(&machine.host_veth)?;
        let net = self.network_lines(network);
        let mine = self.machine_lines(machine);
        let key = self.applied_key();
        let done = key.as_ref().is_some_and(|key| {
            applied(|a| {
                a.get(key).is_some_and(|a| {
                    a.networks.get(&network.bridge) == Some(&net)
                        && a.machines.get(&machine.host_veth) == Some(&mine)
                })
            })
        });
        if done {
            return Ok(false);
        }
        nft(&format!("{net}{mine}"))?;
        if let Some(key) = key {
            applied(|a| {
                let a = a.entry(key).or_default();
                a.networks.insert(network.bridge.clone(), net);
                a.machines.insert(machine.host_veth.clone(), mine);
            });
        }
        Ok(true)
    }

    /// Removes a machine's rules (found by its host veth name alone). Idempotent; nothing to
    /// do when the tables are gone.
    pub fn remove_machine(&self, machine: &MachineNet) -> Result<()> {
        crate::safe(&machine.host_veth)?;
        forget(self.applied_key(), |a| {
            a.machines.remove(&machine.host_veth);
        });
        let t = &self.table;
        let c = Self::chain(machine);
        let port = &machine.host_veth;
        let script = format!(
            "add chain bridge {t} {c}\n\
             flush chain bridge {t} {c}\n\
             add element bridge {t} ports {{ \"{port}\" : jump {c} }}\n\
             delete element bridge {t} ports {{ \"{port}\" }}\n\
             delete chain bridge {t} {c}\n"
        );
        match nft(&script) {
            Err(_) if !self.exists() => Ok(()),
            r => r,
        }
    }

    /// Removes a network's rules (its bridge is going away). Idempotent.
    pub fn remove_network(&self, network: &Network) -> Result<()> {
        crate::safe(&network.bridge)?;
        forget(self.applied_key(), |a| {
            a.networks.remove(&network.bridge);
        });
        let add = self.network_lines(network);
        let delete = add.replace("add element", "delete element");
        match nft(&format!("{add}{delete}")) {
            Err(_) if !self.exists() => Ok(()),
            r => r,
        }
    }

    /// Whether the tables exist.
    pub fn exists(&self) -> bool {
        let t = &self.table;
        std::process::Command::new("nft")
            .args(["list", "table", "inet", t])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Deletes both tables.
    pub fn remove(&self) -> Result<()> {
        forget(self.applied_key(), |a| *a = Applied::default());
        let t = &self.table;
        nft(&format!(
            "table inet {t} {{}}\ndelete table inet {t}\ntable bridge {t} {{}}\ndelete table bridge {t}\n"
        ))
    }
}

/// Interfaces named with this prefix are WireGuard gateways' (`hangar-wireguard`): the
/// `inet` table lets their traffic into and out of networks and leaves the verdict to the
/// interface's own table ([`PeerIsolation`]), which exists as long as the interface does.
pub const WIREGUARD_PREFIX: &str = "hgrwg";

/// What a WireGuard peer may reach, enforced on the host's WireGuard interface (PLATFORM.md
/// §4.5): its own network's machines (forwarded to the network's bridge, replies back), and
/// the host's service address on that network on [`SERVICE_PORTS`]; nothing else of the host
/// or of any other network, and only from its own `/120` (WireGuard's cryptokey routing
/// already drops other sources; the rules check again).
///
/// One table per interface, `inet <table>_wg`: sets `paths` (`interface . peer range .
/// bridge`, intervals) and `services` (`interface . peer range . service address . protocol
/// . port`); base chains `input` and `forward` that only ever match this interface. A drop
/// here is final whatever the main table accepts; the main table accepts what passes here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIsolation {
    table: String,
    iface: String,
}

/// A peer's range and the network it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPath {
    /// The peer's `/prefix` (WireGuard's allowed source).
    pub range: Ipv6Addr,
    /// Its prefix length.
    pub prefix_len: u8,
    /// Its network on this host.
    pub network: Network,
}

impl PeerIsolation {
    /// The table of WireGuard interface `iface` (which must start with [`WIREGUARD_PREFIX`])
    /// for the host whose isolation tables are named `table`.
    pub fn new(table: &str, iface: &str) -> Result<Self> {
        Isolation::new(table)?;
        crate::safe(iface)?;
        if !iface.starts_with(WIREGUARD_PREFIX) {
            return Err(NetError::BadName(iface.to_string()));
        }
        Ok(Self {
            table: format!("{table}_wg"),
            iface: iface.to_string(),
        })
    }

    /// The table's name (family `inet`).
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The script that replaces the table with one holding exactly these peers.
    pub fn rebuild_script(&self, peers: &[PeerPath]) -> String {
        let t = &self.table;
        let i = &self.iface;
        let mut s = format!(
            "table inet {t} {{}}\n\
             delete table inet {t}\n\
             table inet {t} {{\n\
               set paths {{ type ifname . ipv6_addr . ifname; flags interval; }}\n\
               set services {{ type ifname . ipv6_addr . ipv6_addr . inet_proto . inet_service; flags interval; }}\n\
               chain input {{\n\
                 type filter hook input priority filter; policy accept;\n\
                 iifname != \"{i}\" accept\n\
                 ct state established,related accept\n\
                 iifname . ip6 saddr . ip6 daddr . meta l4proto . th dport @services accept\n\
                 counter drop\n\
               }}\n\
               chain forward {{\n\
                 type filter hook forward priority filter; policy accept;\n\
                 iifname \"{i}\" jump from_peer\n\
                 oifname \"{i}\" jump to_peer\n\
               }}\n\
               chain from_peer {{\n\
                 iifname . ip6 saddr . oifname @paths accept\n\
                 counter drop\n\
               }}\n\
               chain to_peer {{\n\
                 ct state established,related accept\n\
                 oifname . ip6 daddr . iifname @paths accept\n\
                 counter drop\n\
               }}\n\
             }}\n"
        );
        for p in peers {
            s.push_str(&self.peer_lines(p));
        }
        s
    }

    fn peer_lines(&self, p: &PeerPath) -> String {
        let t = &self.table;
        let i = &self.iface;
        let b = &p.network.bridge;
        let range = format!("{}/{}", p.range, p.prefix_len);
        let svc = p.network.service_addr();
        let mut s = format!("add element inet {t} paths {{ \"{i}\" . {range} . \"{b}\" }}\n");
        for (proto, port) in SERVICE_PORTS {
            s.push_str(&format!(
                "add element inet {t} services {{ \"{i}\" . {range} . {svc} . {proto} . {port} }}\n"
            ));
        }
        s
    }

    /// Replaces the table with exactly these peers, atomically (at the gateway's start).
    pub fn rebuild(&self, peers: &[PeerPath]) -> Result<()> {
        for p in peers {
            crate::safe(&p.network.bridge)?;
        }
        nft(&self.rebuild_script(peers))
    }

    /// Lets a peer in (idempotent; the table must exist).
    pub fn add_peer(&self, p: &PeerPath) -> Result<()> {
        crate::safe(&p.network.bridge)?;
        nft(&self.peer_lines(p))
    }

    /// Shuts a peer out (idempotent).
    pub fn remove_peer(&self, p: &PeerPath) -> Result<()> {
        crate::safe(&p.network.bridge)?;
        let add = self.peer_lines(p);
        let delete = add.replace("add element", "delete element");
        nft(&format!("{add}{delete}"))
    }

    /// Deletes the table (with its interface gone, nothing matches it any more).
    pub fn remove(&self) -> Result<()> {
        let t = &self.table;
        nft(&format!("table inet {t} {{}}\ndelete table inet {t}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_name_only_this_hosts_objects() {
        let iso = Isolation::new("hangar_t").expect("name");
        let net = Network::new(7, 9);
        let m = MachineNet::new(
            "3d8d413b29d089",
            "fdaa:0:7:0:9:1:2:2".parse().expect("addr"),
        )
        .with_ipv4(Some("172.19.0.5".parse().expect("v4")));
        let s = iso.rebuild_script(std::slice::from_ref(&net), std::slice::from_ref(&m));
        assert!(s.contains(&format!(
            "add element inet hangar_t services {{ \"{}\" . fdaa:0:7:0:9::3 . udp . 53 }}",
            net.bridge
        )));
        assert!(s.contains("ip6 saddr != { fdaa:0:7:0:9:1:2:2, fe80::/64, :: } counter drop"));
        assert!(s.contains("0xfdaa0000000700000009000100020002"));
        assert!(s.contains("ip saddr != 172.19.0.5 counter drop"));
        assert!(s.contains(&format!("ether saddr != {} counter drop", m.mac())));
        assert!(s.contains("ports { \"hgv3d8d413b29d\" : jump m_hgv3d8d413b29d }"));
        // A machine without IPv4 sends none.
        let v6 = MachineNet::new("3d8d413b29d089", m.addr);
        assert!(
            iso.rebuild_script(&[], &[v6])
                .contains("ether type { ip, arp } counter drop")
        );
        for bad in ["", "a b", "a;b", "t\"", &"t".repeat(33)] {
            assert!(Isolation::new(bad).is_err(), "{bad}");
        }
        // WireGuard interfaces are left to their own tables.
        assert!(s.contains("oifname \"hgrwg*\" accept"));
        assert!(s.contains("iifname \"hgrwg*\" accept"));
    }

    #[test]
    fn peer_rules_pin_the_peer_range_to_its_network() {
        let wg = PeerIsolation::new("hangar_t", "hgrwg0").expect("names");
        assert_eq!(wg.table(), "hangar_t_wg");
        let net = Network::new(7, 9);
        let p = PeerPath {
            range: "fdaa:0:7::1:2:100".parse().expect("addr"),
            prefix_len: 120,
            network: net.clone(),
        };
        let s = wg.rebuild_script(std::slice::from_ref(&p));
        assert!(s.contains(&format!(
            "paths {{ \"hgrwg0\" . fdaa:0:7::1:2:100/120 . \"{}\" }}",
            net.bridge
        )));
        assert!(s.contains(
            "services { \"hgrwg0\" . fdaa:0:7::1:2:100/120 . fdaa:0:7:0:9::3 . tcp . 4280 }"
        ));
        assert!(s.contains("iifname != \"hgrwg0\" accept"));
        for (table, iface) in [
            ("hangar_t", "wg0"),
            ("hangar_t", "hgrwg;x"),
            ("a b", "hgrwg0"),
        ] {
            assert!(PeerIsolation::new(table, iface).is_err(), "{table} {iface}");
        }
    }
}
