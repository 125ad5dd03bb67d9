//! `hangar-net`: the host side of machine networking.
//!
//! Owns, per private network, a bridge holding the host's address on that network, and per
//! machine a named network namespace (`/run/netns/hgr-<machine id>`) joined to the bridge by
//! a veth pair, with loopback up, the machine's 6PN address on `eth0` and a default route via
//! the bridge. Everything is created idempotently and removed idempotently, so a daemon that
//! crashed half-way can simply run the same step again, and [`list_machine_namespaces`] lets
//! it find what to clean up.
//!
//! Addressing (PLATFORM.md §4.1): a machine's address is
//! `fdaa:<network:32>:<host:32>:<machine:32>:2`; every machine of one network on this host is
//! inside `fdaa:<network>:<host>::/80`, which is on-link on the bridge, so machines of a
//! network reach each other directly and the host reaches them at the bridge address `…::1`.
//!
//! The host also holds a per-network *service address* `fdaa:<network>:<host>::3` on the
//! bridge ([`Network::service_addr`]): the platform's DNS (`…::3` of PLATFORM.md §4.2) and the
//! Machines API relay (`_api.internal:4280`) answer there, and nothing else of the host is
//! reachable from machines (see [`isolation`]).
//!
//! Each machine's `eth0` gets a MAC address derived from its id ([`MachineNet::mac`]), set
//! again on every [`MachineNet::ensure`], so the host can pin it in its rules.
//!
//! The kernel is driven through iproute2 (`ip`, in every Debian install), one batch per
//! operation, and nftables (`nft -f -`, one atomic transaction per operation):
//! - [`egress`]: outbound IPv4 (a `/32` per machine, masquerade);
//! - [`isolation`]: networks apart, the host closed but for its service address, no spoofing.
//! - [`flycast`]: Flycast addresses on their network's bridge, open to that network's
//!   machines on the app's service ports.
//!
//! Must not: know about machines' lifecycle, the store or HTTP.

pub mod egress;
pub mod flycast;
pub mod isolation;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use thiserror::Error;

/// A networking step failed.
#[derive(Debug, Error)]
pub enum NetError {
    /// `ip` could not be run.
    #[error("can not run ip (install iproute2): {0}")]
    Spawn(std::io::Error),
    /// `ip` refused a command.
    #[error("ip {args}: {stderr}")]
    Ip {
        /// The command.
        args: String,
        /// What it said.
        stderr: String,
    },
    /// A name that would not be safe to use.
    #[error("invalid network object name '{0}'")]
    BadName(String),
}

/// Result of networking steps.
pub type Result<T> = std::result::Result<T, NetError>;

const NETNS_PREFIX: &str = "hgr-";

fn safe(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 15
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(NetError::BadName(name.to_string()));
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(NetError::Spawn)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NetError::Ip {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Runs `ip -batch -` with one command per line, failing on the first error.
fn ip_batch(netns: Option<&str>, lines: &[String]) -> Result<()> {
    use std::io::Write as _;
    let mut args: Vec<&str> = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["-batch", "-"]);
    let mut child = Command::new("ip")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NetError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(lines.join("\n").as_bytes())
            .map_err(NetError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(NetError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Ip {
            args: format!("{} <<< {}", args.join(" "), lines.join("; ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The index of link `name` in the calling thread's network namespace, if it exists (an
/// ioctl, not a process; and not sysfs, which shows the namespace it was mounted in).
fn link_index(name: &str) -> Option<u32> {
    safe(name).ok()?;
    nix::net::if_::if_nametoindex(name).ok()
}

/// Whether link `name` exists in the calling thread's network namespace.
fn host_link_exists(name: &str) -> bool {
    link_index(name).is_some()
}

/// Bridges this process has set up, by name, with the index they had then: a bridge that is
/// still that one (not removed and made again) needs no `ip` run per machine (each run is a
/// process, 2–4 ms).
static BRIDGES_READY: std::sync::Mutex<Vec<(String, u32)>> = std::sync::Mutex::new(Vec::new());

fn bridge_ready(name: &str) -> bool {
    let Some(index) = link_index(name) else {
        return false;
    };
    BRIDGES_READY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .any(|(n, i)| n == name && *i == index)
}

fn set_bridge_ready(name: &str) {
    let mut ready = BRIDGES_READY.lock().unwrap_or_else(|p| p.into_inner());
    ready.retain(|(n, _)| n != name);
    if let Some(index) = link_index(name) {
        ready.push((name.to_string(), index));
    }
}

fn link_exists(name: &str, netns: Option<&str>) -> bool {
    let mut args = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["link", "show", "dev", name]);
    ip(&args).is_ok()
}

/// A private network on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The 32-bit network id (the org's, or a custom network's).
    pub network_id: u32,
    /// This host's 32-bit id.
    pub host_id: u32,
    /// Bridge device name (at most 15 characters).
    pub bridge: String,
}

impl Network {
    /// The network `network_id` on host `host_id`. The bridge is named `hgrb` + 8 hex digits
    /// of a hash of both ids, so several simulated hosts on one machine (tests) never share one.
    pub fn new(network_id: u32, host_id: u32) -> Self {
        let mix =
            (u64::from(network_id) << 32 | u64::from(host_id)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Self {
            network_id,
            host_id,
            bridge: format!("hgrb{:08x}", (mix >> 32) as u32),
        }
    }

    /// The host's address on this network (on the bridge).
    pub fn gateway(&self) -> Ipv6Addr {
        let n = self.network_id;
        let h = self.host_id;
        Ipv6Addr::new(
            0xfdaa,
            (n >> 16) as u16,
            n as u16,
            (h >> 16) as u16,
            h as u16,
            0,
            0,
            1,
        )
    }

    /// The host's service address on this network, `fdaa:<network>:<host>::3` (on the bridge):
    /// where machines find the DNS server and the Machines API relay. The same layout as
    /// `hangar_domain::sixpn::service_addr`.
    pub fn service_addr(&self) -> Ipv6Addr {
        let mut s = self.gateway().segments();
        s[7] = 3;
        Ipv6Addr::from(s)
    }

    /// Creates the bridge if missing and makes sure it is up with the gateway and service
    /// addresses.
    pub fn ensure(&self) -> Result<()> {
        safe(&self.bridge)?;
        // Set up by this process already, and not made again since (same index): done.
        if bridge_ready(&self.bridge) {
            return Ok(());
        }
        if !host_link_exists(&self.bridge) {
            match ip(&["link", "add", &self.bridge, "type", "bridge"]) {
                Ok(_) => {}
                // Lost a race with another creator: fine.
                Err(_) if host_link_exists(&self.bridge) => {}
                Err(e) => return Err(e),
            }
        }
        // Forwarding between ports of the bridge is L2; the host needs v6 on the bridge.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", self.bridge),
            "0",
        );
        ip_batch(
            None,
            &[
                format!(
                    "address replace {}/80 dev {} nodad",
                    self.gateway(),
                    self.bridge
                ),
                format!(
                    "address replace {}/128 dev {} nodad",
                    self.service_addr(),
                    self.bridge
                ),
                format!(
                    "address replace {}/32 dev {}",
                    egress::GATEWAY_V4,
                    self.bridge
                ),
                format!("link set {} up", self.bridge),
            ],
        )?;
        set_bridge_ready(&self.bridge);
        Ok(())
    }

    /// Whether the bridge exists on this host (read from sysfs, no process).
    pub fn exists(&self) -> bool {
        safe(&self.bridge).is_ok()
            && std::path::Path::new("/sys/class/net")
                .join(&self.bridge)
                .exists()
    }

    /// Removes the bridge (and with it every veth still attached).
    pub fn remove(&self) -> Result<()> {
        safe(&self.bridge)?;
        if host_link_exists(&self.bridge) {
            ip(&["link", "del", &self.bridge])?;
        }
        Ok(())
    }
}

/// A machine's network namespace and its link to the bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineNet {
    /// Namespace name under /run/netns.
    pub netns: String,
    /// Host-side veth name.
    pub host_veth: String,
    /// The machine's address.
    pub addr: Ipv6Addr,
    /// Its outbound IPv4 address (see [`egress`]), if it has one.
    pub ipv4: Option<Ipv4Addr>,
}

impl MachineNet {
    /// Names for machine `machine_id` (14 hex) with address `addr`.
    pub fn new(machine_id: &str, addr: Ipv6Addr) -> Self {
        let short: String = machine_id.chars().take(11).collect();
        Self {
            netns: format!("{NETNS_PREFIX}{machine_id}"),
            host_veth: format!("hgv{short}"),
            addr,
            ipv4: None,
        }
    }

    /// The same with an outbound IPv4 address.
    pub fn with_ipv4(mut self, ipv4: Option<Ipv4Addr>) -> Self {
        self.ipv4 = ipv4;
        self
    }

    /// The MAC address of the machine's `eth0`: locally administered, unicast, derived from
    /// the machine id (FNV-1a), so the host knows it without asking and can pin it.
    pub fn mac(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.netns.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        let b = h.to_be_bytes();
        format!(
            "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4]
        )
    }

    /// Path of the namespace, to join from the runtime.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }

    /// Creates the namespace, the veth pair and addresses; safe to call again.
    pub fn ensure(&self, network: &Network) -> Result<()> {
        safe(&self.host_veth)?;
        if self.netns.len() > 64
            || !self
                .netns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(NetError::BadName(self.netns.clone()));
        }
        network.ensure()?;
        let fresh = !self.netns_path().exists();
        if fresh {
            match ip(&["netns", "add", &self.netns]) {
                Ok(_) => {}
                Err(_) if self.netns_path().exists() => {}
                Err(e) => return Err(e),
            }
        }
        // A veth pair is made in one step with its peer in the namespace, and goes as one:
        // the host end existing means `eth0` is inside (checked from sysfs, no process). If
        // it is not after all (renamed by the machine, which has NET_ADMIN), the pair is made
        // again below.
        let mut paired = host_link_exists(&self.host_veth);
        if paired && fresh {
            // The end of a pair whose namespace is gone (the kernel frees a namespace's
            // links after it is deleted, not at once): not ours to keep.
            let _ = ip(&["link", "del", &self.host_veth]);
            paired = false;
        }
        let mut host = Vec::new();
        if !paired {
            host.push(self.veth_add());
        }
        host.extend(self.host_lines(network));
        ip_batch(None, &host)?;
        let inside = self.inside_lines(network);
        match ip_batch(Some(&self.netns), &inside) {
            Ok(()) => Ok(()),
            Err(_) if paired && !link_exists("eth0", Some(&self.netns)) => {
                // Half-made (a crash) or changed by the machine: start that link again.
                if host_link_exists(&self.host_veth) {
                    let _ = ip(&["link", "del", &self.host_veth]);
                }
                let mut host = vec![self.veth_add()];
                host.extend(self.host_lines(network));
                ip_batch(None, &host)?;
                ip_batch(Some(&self.netns), &inside)
            }
            Err(e) => Err(e),
        }
    }

    /// The `ip` line that makes the veth pair, its peer `eth0` in the namespace.
    fn veth_add(&self) -> String {
        format!(
            "link add {} type veth peer name eth0 address {} netns {}",
            self.host_veth,
            self.mac(),
            self.netns
        )
    }

    /// The host side: the veth on the bridge and up, and the IPv4 address's route.
    fn host_lines(&self, network: &Network) -> Vec<String> {
        let mut lines = vec![format!(
            "link set {} master {} up",
            self.host_veth, network.bridge
        )];
        if let Some(v4) = self.ipv4 {
            lines.push(format!(
                "route replace {v4}/32 dev {} scope link",
                network.bridge
            ));
        }
        lines
    }

    /// Inside the namespace: addresses, routes, links up.
    fn inside_lines(&self, network: &Network) -> Vec<String> {
        let mut inside = vec![
            "link set lo up".to_string(),
            // Again on every ensure: a machine may have changed it (it has NET_ADMIN), and
            // the host's rules only let frames from this address through.
            format!("link set eth0 address {}", self.mac()),
            format!("address replace {}/80 dev eth0 nodad", self.addr),
            "link set eth0 up".to_string(),
            format!("route replace default via {} dev eth0", network.gateway()),
        ];
        if let Some(v4) = self.ipv4 {
            inside.extend([
                format!("address replace {v4}/32 dev eth0"),
                format!("route replace {} dev eth0 scope link", egress::GATEWAY_V4),
                format!("route replace default via {} dev eth0", egress::GATEWAY_V4),
            ]);
        }
        inside
    }

    /// Sets `eth0`'s MAC back to [`MachineNet::mac`] (for machines made before MACs were
    /// derived, or that changed theirs), without touching anything else.
    pub fn pin_mac(&self) -> Result<()> {
        ip_batch(
            Some(&self.netns),
            &[format!("link set eth0 address {}", self.mac())],
        )
    }

    /// Removes the namespace and the veth; safe to call when already gone.
    pub fn remove(&self) -> Result<()> {
        if let Some(v4) = self.ipv4 {
            // The host route lives on the bridge, not the veth: it goes explicitly.
            let _ = ip(&["route", "del", &format!("{v4}/32")]);
        }
        if host_link_exists(&self.host_veth) {
            let _ = ip(&["link", "del", &self.host_veth]);
        }
        if self.netns_path().exists() {
            ip(&["netns", "del", &self.netns])?;
        }
        Ok(())
    }
}

/// Machine ids that have a namespace on this host (for re-adoption and garbage collection).
pub fn list_machine_namespaces() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    let mut ids: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_prefix(NETNS_PREFIX).map(str::to_string))
        .collect();
    ids.sort();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_linux_limits() {
        let m = MachineNet::new("3d8d413b29d089", "fdaa::2".parse().expect("addr"));
        assert!(m.host_veth.len() <= 15);
        assert_eq!(m.netns, "hgr-3d8d413b29d089");
        let n = Network::new(0xffff_ffff, 7);
        assert!(n.bridge.len() <= 15);
        assert_eq!(n.gateway().to_string(), "fdaa:ffff:ffff:0:7::1");
        assert_eq!(n.service_addr().to_string(), "fdaa:ffff:ffff:0:7::3");
        let mac = m.mac();
        assert_eq!(mac.len(), 17);
        assert!(mac.starts_with("02:"), "{mac}");
        assert_eq!(
            mac,
            MachineNet::new("3d8d413b29d089", Ipv6Addr::UNSPECIFIED).mac()
        );
        assert_ne!(
            mac,
            MachineNet::new("3d8d413b29d08a", Ipv6Addr::UNSPECIFIED).mac()
        );
        assert!(safe("a b").is_err());
        assert!(safe("../x").is_err());
    }
}
