//! Outbound IPv4 for machines: each machine gets one address from a host pool (a `/32` on
//! its `eth0`, default route via the link-local gateway [`GATEWAY_V4`] that every bridge
//! holds), the host routes that `/32` to the machine's bridge, forwards, and masquerades the
//! pool's traffic leaving through any interface that is not a Hangar bridge.
//!
//! One nftables table per pool (`ip <table>`), replaced atomically by [`Egress::ensure`] and
//! deleted by [`Egress::remove`]:
//! - `postrouting` (nat): `ip saddr <pool> oifname != "hgrb*" masquerade`;
//! - `forward` (filter): packets from a bridge to another bridge are dropped (machines meet
//!   over 6PN, never over these addresses), and so are packets to link-local addresses
//!   (cloud metadata services such as 169.254.169.254 are not the machines' business).
//!
//! IPv4 forwarding (`net.ipv4.ip_forward`) is switched on. A host firewall whose own forward
//! chain drops by default (e.g. one set up by Docker) also has to accept the pool's traffic;
//! nftables can not override another table's verdict.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::{NetError, Result};

/// The machines' IPv4 gateway: on every bridge, as a `/32`.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);

/// An IPv4 pool and the nftables table that NATs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Egress {
    network: Ipv4Addr,
    prefix: u8,
    table: String,
}

impl Egress {
    /// `pool` like `172.19.0.0/16` (prefix 8 to 30), `table` a name of letters, digits, `_`.
    pub fn new(pool: &str, table: &str) -> Result<Self> {
        let bad = || NetError::BadName(pool.to_string());
        let (addr, prefix) = pool.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        if table.is_empty()
            || table.len() > 32
            || !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(NetError::BadName(table.to_string()));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Self {
            network: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
            table: table.to_string(),
        })
    }

    /// The pool in CIDR form.
    pub fn pool(&self) -> String {
        format!("{}/{}", self.network, self.prefix)
    }

    /// The nftables table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Whether `a` is an address machines may be given (in the pool, not its first or last).
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let base = u32::from(self.network);
        let size = 1u64 << (32 - self.prefix);
        let a = u32::from(a);
        a > base && u64::from(a - base) < size - 1
    }

    /// Usable addresses, lowest first.
    pub fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let base = u32::from(self.network);
        let size = 1u32 << (32 - self.prefix);
        (1..size - 1).map(move |i| Ipv4Addr::from(base + i))
    }

    /// Switches on forwarding and (re)installs the table. Idempotent and atomic.
    pub fn ensure(&self) -> Result<()> {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| NetError::Ip {
            args: "sysctl net.ipv4.ip_forward=1".into(),
            stderr: e.to_string(),
        })?;
        let t = &self.table;
        let pool = self.pool();
        nft(&format!(
            "table ip {t} {{}}\n\
             delete table ip {t}\n\
             table ip {t} {{\n\
               chain postrouting {{\n\
                 type nat hook postrouting priority srcnat; policy accept;\n\
                 ip saddr {pool} oifname != \"hgrb*\" masquerade\n\
               }}\n\
               chain forward {{\n\
                 type filter hook forward priority filter; policy accept;\n\
                 iifname \"hgrb*\" ip daddr 169.254.0.0/16 drop\n\
                 iifname \"hgrb*\" oifname \"hgrb*\" drop\n\
               }}\n\
             }}\n"
        ))
    }

    /// Deletes the table (forwarding stays as it is: other software may rely on it).
    pub fn remove(&self) -> Result<()> {
        let t = &self.table;
        nft(&format!("table ip {t} {{}}\ndelete table ip {t}\n"))
    }
}

/// Runs an nftables script (`nft -f -`), atomically.
pub(crate) fn nft(script: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError::Ip {
            args: "nft -f - (install nftables)".into(),
            stderr: e.to_string(),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(NetError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NetError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Ip {
            args: format!("nft -f - <<< {script}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools() {
        let e = Egress::new("172.19.3.4/16", "hangar").expect("pool");
        assert_eq!(e.pool(), "172.19.0.0/16");
        assert!(e.contains("172.19.0.1".parse().expect("ip")));
        assert!(!e.contains("172.19.0.0".parse().expect("ip")));
        assert!(!e.contains("172.19.255.255".parse().expect("ip")));
        assert!(!e.contains("172.20.0.1".parse().expect("ip")));
        assert_eq!(e.addresses().count(), 65534);
        let small = Egress::new("10.0.0.0/30", "t").expect("pool");
        let all: Vec<Ipv4Addr> = small.addresses().collect();
        assert_eq!(
            all,
            [
                "10.0.0.1".parse::<Ipv4Addr>().expect("ip"),
                "10.0.0.2".parse().expect("ip")
            ]
        );
        for bad in [
            "",
            "10.0.0.0",
            "10.0.0.0/31",
            "10.0.0.0/7",
            "x/16",
            "10.0.0.0/abc",
        ] {
            assert!(Egress::new(bad, "t").is_err(), "{bad}");
        }
        for bad in ["", "a b", "a;b", "t\"", &"t".repeat(33)] {
            assert!(Egress::new("10.0.0.0/8", bad).is_err(), "{bad}");
        }
    }
}
