//! 6PN addressing (PLATFORM.md §4.1): `fdaa` | network id (32) | host id (32) | machine (32) | 16 free.
//!
//! Within a network's `/48`, what ends each address says what it is: a machine `…:2`, a
//! host's gateway `…::1` and service address `…::3` (machine field 0), a Flycast address
//! (PLATFORM.md §4.3) `fdaa:<network>:0:0:<n:32>:11`, a WireGuard peer's /120
//! `fdaa:<network>:0:0:<n:32>:100/120` (PLATFORM.md §4.5). Host id 0 is reserved (no host has
//! it), so no host's on-link `/80` holds a Flycast or peer address.

use std::net::Ipv6Addr;

/// A machine's private address: the last 16 bits are 2, as in the
/// reference's example `fdaa:0:18:a7b:196:e274:9ce1:2`.
pub fn machine_addr(network_id: u32, host_id: u32, machine_num: u32) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfdaa,
        (network_id >> 16) as u16,
        network_id as u16,
        (host_id >> 16) as u16,
        host_id as u16,
        (machine_num >> 16) as u16,
        machine_num as u16,
        2,
    )
}

/// The org network's /48 prefix address (e.g. `fdaa:0:18::`).
pub fn network_prefix(network_id: u32) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfdaa,
        (network_id >> 16) as u16,
        network_id as u16,
        0,
        0,
        0,
        0,
        0,
    )
}

/// The host's service address on a network, `fdaa:<network>:<host>::3`: the `.internal` DNS
/// server and the Machines API relay (`_api.internal`) of that host, for that network's
/// machines (PLATFORM.md §4.2's `fdaa::3`, one per network and host).
pub fn service_addr(network_id: u32, host_id: u32) -> Ipv6Addr {
    let mut s = machine_addr(network_id, host_id, 0).segments();
    s[7] = 3;
    Ipv6Addr::from(s)
}

/// The host field of WireGuard peers' addresses: no host has id 0 (hangard refuses it), so no
/// host's gateway `…::1`, service `…::3` or machine (`…:2`) address is ever in a peer's range,
/// and peers fall outside every machine's on-link `fdaa:<network>:<host>::/80`: machines reach
/// them through their gateway, which routes them to the WireGuard interface.
pub const PEER_HOST: u32 = 0;

/// Prefix length of a peer's range (PLATFORM.md §4.5's `Address = <peer 6PN>/120`).
pub const PEER_PREFIX_LEN: u8 = 120;

/// A WireGuard peer's address: `fdaa:<network>:0:0:<peer:32>:102`, in the /120
/// `fdaa:<network>:0:0:<peer>:100/120` ([`peer_range`]) that is routed to it (the same last
/// group as the reference's peers, e.g. `…:a:102`).
pub fn peer_addr(network_id: u32, peer_num: u32) -> Ipv6Addr {
    let mut s = machine_addr(network_id, PEER_HOST, peer_num).segments();
    s[7] = 0x0102;
    Ipv6Addr::from(s)
}

/// The /120 of a peer's address (its first address), routed to the peer.
pub fn peer_range(addr: Ipv6Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(addr) & !0xff)
}

/// Whether `addr` is a peer's address (in a peer's /120 of some network).
pub fn is_peer(addr: Ipv6Addr) -> bool {
    let s = addr.segments();
    s[0] == 0xfdaa && s[3] == 0 && s[4] == 0 && s[7] & 0xff00 == 0x0100
}

/// The `(network id, host id)` of a 6PN address (`None` outside `fdaa::/16`).
pub fn parse(addr: Ipv6Addr) -> Option<(u32, u32)> {
    let s = addr.segments();
    (s[0] == 0xfdaa).then(|| {
        (
            (u32::from(s[1]) << 16) | u32::from(s[2]),
            (u32::from(s[3]) << 16) | u32::from(s[4]),
        )
    })
}

/// The host id no host may have: the host field of Flycast addresses.
pub const RESERVED_HOST_ID: u32 = 0;

/// The last 16 bits of a Flycast address (as in the reference's `fdaa:2:45b:0:1::11`): never
/// a gateway's (1), a machine's (2) or a service address's (3).
const FLYCAST_TAIL: u16 = 0x11;

/// Flycast address number `n` of network `network_id`: `fdaa:<network>:0:0:<n>:11`.
/// Callers pick `n` (at random, so a released address is not soon handed to another app);
/// it is app-wide, the same on every host.
pub fn flycast_addr(network_id: u32, n: u32) -> Ipv6Addr {
    Ipv6Addr::new(
        0xfdaa,
        (network_id >> 16) as u16,
        network_id as u16,
        0,
        0,
        (n >> 16) as u16,
        n as u16,
        FLYCAST_TAIL,
    )
}

/// The network of a Flycast address (`None` for any other address).
pub fn flycast_network(addr: Ipv6Addr) -> Option<u32> {
    let s = addr.segments();
    (s[0] == 0xfdaa && s[3] == 0 && s[4] == 0 && s[7] == FLYCAST_TAIL)
        .then(|| (u32::from(s[1]) << 16) | u32::from(s[2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_reference_example() {
        let a = machine_addr(0x18, 0x0a7b_0196, 0xe274_9ce1);
        assert_eq!(a.to_string(), "fdaa:0:18:a7b:196:e274:9ce1:2");
        assert_eq!(network_prefix(0x18).to_string(), "fdaa:0:18::");
        assert_eq!(
            service_addr(0x18, 0x0a7b_0196).to_string(),
            "fdaa:0:18:a7b:196::3"
        );
        assert_eq!(parse(a), Some((0x18, 0x0a7b_0196)));
        let p = peer_addr(0x18, 0xe274_9ce1);
        assert_eq!(p.to_string(), "fdaa:0:18::e274:9ce1:102");
        assert_eq!(peer_range(p).to_string(), "fdaa:0:18::e274:9ce1:100");
        assert_eq!(parse(p), Some((0x18, PEER_HOST)));
        assert!(is_peer(p));
        assert!(!is_peer(a));
        assert!(!is_peer(service_addr(0x18, 1)));
        assert!(!is_peer(machine_addr(0x18, 1, 0x100)));
        assert_eq!(parse("fd00::1".parse().expect("addr")), None);
    }

    #[test]
    fn flycast_addresses_are_apart_from_hosts_and_machines() {
        let f = flycast_addr(0x0002_045b, 0x0001_0000);
        assert_eq!(f.to_string(), "fdaa:2:45b::1:0:11");
        assert_eq!(flycast_network(f), Some(0x0002_045b));
        assert_eq!(parse(f), Some((0x0002_045b, RESERVED_HOST_ID)));
        for host in [1, 0x0a7b_0196, u32::MAX] {
            for n in [0, 1, 0x11, u32::MAX] {
                let m = machine_addr(0x18, host, n);
                assert_eq!(flycast_network(m), None, "{m}");
                assert_eq!(flycast_network(service_addr(0x18, host)), None);
            }
        }
        assert_eq!(flycast_network("fd00::11".parse().expect("addr")), None);
    }
}
