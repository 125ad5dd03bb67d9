//! 6PN addressing (PLATFORM.md §4.1): `fdaa` | network id (32) | host id (32) | machine (32) | 16 free.

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
        assert_eq!(parse("fd00::1".parse().expect("addr")), None);
    }
}
