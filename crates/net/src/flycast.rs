//! Flycast on a host (PLATFORM.md §4.3): an app's private address, answered by the proxy,
//! reachable from the machines of one network.
//!
//! The host accepts packets for a Flycast address because the address sits on the bridge of
//! the network it was allocated for ([`Network::sync_flycast`], `/128`, `nodad`): machines
//! send to it through their default route (the bridge's gateway), since it is outside their
//! on-link `/80` (its host field is 0, no host's id). The proxy binds its listeners there.
//!
//! Local addresses are the host's, whatever interface holds them, so the isolation tables
//! decide who may talk to them: [`Isolation::set_flycast`] fills the `flycast` set of the
//! `inet` table (`bridge . address . tcp . port`), and the `input` chain accepts exactly
//! those; every other packet from a bridge to the address (another network, another org,
//! another port, the host's own services listening on `::`) meets the chain's `drop`.

use std::net::Ipv6Addr;

use crate::egress::nft;
use crate::isolation::Isolation;
use crate::{Network, Result, ip, ip_batch, safe};

/// One port of a Flycast address open to one network's machines.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlycastRule {
    /// The bridge of the network allowed in.
    pub bridge: String,
    /// The Flycast address.
    pub addr: Ipv6Addr,
    /// A TCP port of the app's services.
    pub port: u16,
}

impl Isolation {
    /// The script that makes the `flycast` set exactly `rules`.
    pub fn flycast_script(&self, rules: &[FlycastRule]) -> String {
        let t = self.table();
        let mut s = format!("flush set inet {t} flycast\n");
        for r in rules {
            s.push_str(&format!(
                "add element inet {t} flycast {{ \"{}\" . {} . tcp . {} }}\n",
                r.bridge, r.addr, r.port
            ));
        }
        s
    }

    /// Replaces the Flycast rules with `rules`, atomically. The tables must exist
    /// ([`Isolation::rebuild`] at start makes them, with an empty set).
    pub fn set_flycast(&self, rules: &[FlycastRule]) -> Result<()> {
        for r in rules {
            safe(&r.bridge)?;
        }
        nft(&self.flycast_script(rules))
    }
}

impl Network {
    /// Whether `addr` is a Flycast address of this network: `fdaa:<network>:0:0:<n>:11`
    /// (`hangar_domain::sixpn::flycast_addr`; host field 0, which no host has, so never one of
    /// this host's `/80`: machines, gateway, service address).
    fn holds_as_flycast(&self, addr: Ipv6Addr) -> bool {
        let (a, g) = (addr.segments(), self.gateway().segments());
        a[..3] == g[..3] && a[3..5] == [0, 0] && a[7] == 0x11
    }

    /// The Flycast addresses on the bridge now (none when it does not exist).
    pub fn flycast_addrs(&self) -> Result<Vec<Ipv6Addr>> {
        safe(&self.bridge)?;
        if !crate::link_exists(&self.bridge, None) {
            return Ok(Vec::new());
        }
        let out = ip(&["-6", "-o", "address", "show", "dev", &self.bridge])?;
        let mut found: Vec<Ipv6Addr> = out
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                words.find(|w| *w == "inet6")?;
                words.next()?.split('/').next()?.parse().ok()
            })
            .filter(|a| self.holds_as_flycast(*a))
            .collect();
        found.sort();
        Ok(found)
    }

    /// Makes the bridge hold exactly the Flycast addresses `want` (of this network; others
    /// are refused): missing ones added, others removed. Creates the bridge when addresses
    /// are wanted ([`Network::ensure`]); nothing to do without a bridge when none are.
    pub fn sync_flycast(&self, want: &[Ipv6Addr]) -> Result<()> {
        if let Some(bad) = want.iter().find(|a| !self.holds_as_flycast(**a)) {
            return Err(crate::NetError::BadName(format!(
                "{bad} is not a Flycast address of network {}",
                self.network_id
            )));
        }
        if !want.is_empty() {
            self.ensure()?;
        }
        let have = self.flycast_addrs()?;
        let mut lines = Vec::new();
        for a in &have {
            if !want.contains(a) {
                lines.push(format!("address del {a}/128 dev {}", self.bridge));
            }
        }
        for a in want {
            if !have.contains(a) {
                lines.push(format!("address replace {a}/128 dev {} nodad", self.bridge));
            }
        }
        if lines.is_empty() {
            return Ok(());
        }
        ip_batch(None, &lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flycast_addresses_are_told_from_the_hosts() {
        let n = Network::new(0x0002_045b, 7);
        assert!(n.holds_as_flycast("fdaa:2:45b::1:0:11".parse().expect("addr")));
        assert!(!n.holds_as_flycast(n.gateway()));
        assert!(!n.holds_as_flycast(n.service_addr()));
        assert!(!n.holds_as_flycast("fdaa:2:45b:0:7:1:2:2".parse().expect("machine")));
        assert!(!n.holds_as_flycast("fdaa:2:45c::1:0:11".parse().expect("other net")));
        assert!(!n.holds_as_flycast("fe80::1".parse().expect("link-local")));
        assert!(
            n.sync_flycast(&["fdaa:9::11".parse().expect("addr")])
                .is_err()
        );
        let iso = Isolation::new("hangar_t").expect("name");
        let s = iso.flycast_script(&[FlycastRule {
            bridge: n.bridge.clone(),
            addr: "fdaa:2:45b::1:0:11".parse().expect("addr"),
            port: 80,
        }]);
        assert_eq!(
            s,
            format!(
                "flush set inet hangar_t flycast\n\
                 add element inet hangar_t flycast {{ \"{}\" . fdaa:2:45b::1:0:11 . tcp . 80 }}\n",
                n.bridge
            )
        );
    }
}
