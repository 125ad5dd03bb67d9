//! The host's WireGuard gateway: one interface (`hgrwg…`), the peers of the store on it.
//!
//! A peer (PLATFORM.md §4.5) is a public key and a `/120` of its network
//! (`hangar_domain::sixpn::peer_addr`). For each peer the gateway
//! - adds it to the interface, its `/120` as its allowed IPs (cryptokey routing: nothing
//!   else is accepted from it, nothing else is sent to it);
//! - routes the `/120` to the interface (`ip -6 route replace … dev hgrwg…`);
//! - makes sure its network's bridge exists on this host (with the service address `…::3`,
//!   where the `.internal` DNS and the API relay answer) and that the kernel forwards IPv6
//!   between the interface and the bridge;
//! - lets it through the host's isolation ([`PeerIsolation`]): its own network's machines
//!   and service address, from its own range, nothing else.
//!
//! It follows the store's change log (`wireguard` changes) like every view, so a peer created
//! or removed through the API is on or off the interface within milliseconds; a pass that
//! fails keeps what it had and is tried again. Every [`REPAIR`] the bridges and forwarding
//! of peers' networks are checked again (an agent may have removed a bridge).
//!
//! Forwarding: on kernels with `net.ipv6.conf.<if>.force_forwarding` (6.17+) only the
//! interface and the peers' bridges forward; elsewhere `net.ipv6.conf.all.forwarding` is
//! turned on, after every interface that accepts router advertisements only while not
//! forwarding (`accept_ra=1`) is told to keep accepting them (`accept_ra=2`), so the host's
//! own IPv6 configuration does not change. The isolation tables keep networks apart either
//! way.
//!
//! Kernel WireGuard is used when `ip link add … type wireguard` works and `wg` is installed
//! (configured with `wg set`); otherwise the userspace [`Device`]. On shutdown the interface
//! goes (and with it its routes) and so does its isolation table.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hangar_domain::sixpn;
use hangar_metrics::Families;
use hangar_net::Network;
use hangar_net::isolation::{PeerIsolation, PeerPath};
use hangar_store::{Store, StoreError};
use tokio::sync::watch;

use crate::device::{Device, DeviceConfig, DropReason, PeerConfig};
use crate::key::Key;
use crate::uapi::UapiSocket;
use crate::{Error, Result};

/// How often the bridges and forwarding of peers' networks are checked again.
pub const REPAIR: Duration = Duration::from_secs(30);
/// Most change-log entries read per pass.
const BATCH: usize = 1000;
/// A peer whose last handshake is older than this counts as inactive.
const ACTIVE: Duration = Duration::from_secs(180);

/// Which WireGuard to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The kernel's when it has the module and `wg` is installed, else userspace.
    Auto,
    /// Always the userspace device.
    Userspace,
}

/// Settings of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Interface name: `hgrwg…` (`hangar_net::isolation::WIREGUARD_PREFIX`), at most 15.
    pub iface: String,
    /// UDP address peers reach (port 0: any; kernel WireGuard listens on every address).
    pub listen: SocketAddr,
    /// The private key file (base64; made on first start, mode 0600).
    pub key_file: PathBuf,
    /// This host's id (its bridges and service addresses).
    pub host_id: u32,
    /// The host's isolation tables (`--nft-table`); `None`: no rules (tests of the device).
    pub nft_table: Option<String>,
    /// Interface MTU.
    pub mtu: u16,
    /// Serve the UAPI socket (`wg show <iface>` works on the host).
    pub uapi: bool,
    /// Kernel or userspace.
    pub backend: Backend,
}

impl GatewayConfig {
    /// Defaults for interface `iface` with its key in `key_file`.
    pub fn new(iface: &str, listen: SocketAddr, key_file: PathBuf, host_id: u32) -> Self {
        Self {
            iface: iface.to_string(),
            listen,
            key_file,
            host_id,
            nft_table: None,
            mtu: 1420,
            uapi: true,
            backend: Backend::Auto,
        }
    }
}

/// A peer as applied on the interface.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    key: Key,
    range: Ipv6Addr,
    network_id: u32,
}

enum Link {
    User {
        device: Arc<Device>,
        /// The UAPI server: its stop signal and task.
        uapi: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
    },
    Kernel,
}

/// The gateway.
pub struct Gateway {
    config: GatewayConfig,
    public_key: Key,
    listen: SocketAddr,
    link: Mutex<Link>,
    isolation: Option<PeerIsolation>,
    applied: Mutex<HashMap<(String, String), Applied>>,
    /// The store revision applied (`None`: nothing yet).
    revision: Mutex<Option<u64>>,
    per_interface_forwarding: bool,
    sync_errors: AtomicU64,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("iface", &self.config.iface)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    use std::io::Write as _;
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Command(format!("can not run {cmd}: {e}")))?;
    if let (Some(text), Some(mut w)) = (stdin, child.stdin.take()) {
        let _ = w.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Command(format!("{cmd}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn sysctl_path(iface: &str, key: &str) -> PathBuf {
    Path::new("/proc/sys/net/ipv6/conf").join(iface).join(key)
}

fn write_sysctl(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(|e| Error::io(path, e))
}

/// IPv6 forwarding: per interface when the kernel can, else globally (keeping router
/// advertisements accepted where they were).
fn enable_forwarding(iface: &str, per_interface: bool) -> Result<()> {
    if per_interface {
        return write_sysctl(&sysctl_path(iface, "force_forwarding"), "1");
    }
    let all = sysctl_path("all", "forwarding");
    if std::fs::read_to_string(&all).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    if let Ok(dir) = std::fs::read_dir("/proc/sys/net/ipv6/conf") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "all" {
                continue;
            }
            let ra = sysctl_path(&name, "accept_ra");
            if std::fs::read_to_string(&ra).is_ok_and(|v| v.trim() == "1") {
                let _ = write_sysctl(&ra, "2");
            }
        }
    }
    eprintln!(
        "hangar-wireguard: turning on net.ipv6.conf.all.forwarding (this kernel has no \
         per-interface force_forwarding); router advertisements stay accepted"
    );
    write_sysctl(&all, "1")
}

fn kernel_wireguard(iface: &str) -> bool {
    let wg_ok = Command::new("wg")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !wg_ok {
        return false;
    }
    run("ip", &["link", "add", iface, "type", "wireguard"], None).is_ok()
}

impl Gateway {
    /// Makes the interface (down peers: none yet), its isolation table, and turns forwarding
    /// on. Must run inside a tokio runtime, as root.
    pub fn start(config: GatewayConfig) -> Result<Arc<Self>> {
        if !config
            .iface
            .starts_with(hangar_net::isolation::WIREGUARD_PREFIX)
            || !crate::device::valid_name(&config.iface)
        {
            return Err(Error::BadName(config.iface.clone()));
        }
        let private = Key::load_or_create(&config.key_file)?;
        let isolation = match &config.nft_table {
            Some(t) => Some(PeerIsolation::new(t, &config.iface)?),
            None => None,
        };
        // A kernel interface of a previous run (a crash) goes first; a userspace one went
        // with its process (and one in use makes the TUN fail: a clear error).
        if run("ip", &["-d", "link", "show", "dev", &config.iface], None)
            .is_ok_and(|o| o.contains("wireguard"))
        {
            let _ = run("ip", &["link", "del", &config.iface], None);
        }
        let (link, listen) = if config.backend == Backend::Auto && kernel_wireguard(&config.iface) {
            let port = config.listen.port().to_string();
            let key_file = config.key_file.display().to_string();
            let mut args = vec!["set", &config.iface, "private-key", &key_file];
            if config.listen.port() != 0 {
                args.extend(["listen-port", &port]);
            }
            run("wg", &args, None)?;
            let port = run("wg", &["show", &config.iface, "listen-port"], None)?
                .trim()
                .parse::<u16>()
                .map_err(|_| Error::Command("wg show listen-port: not a port".into()))?;
            (Link::Kernel, SocketAddr::new(config.listen.ip(), port))
        } else {
            let device = Device::start(DeviceConfig {
                name: config.iface.clone(),
                listen: config.listen,
                private_key: Some(private),
                fwmark: None,
            })?;
            let listen = device.listen_addr();
            let uapi = if config.uapi {
                let socket = UapiSocket::bind(&config.iface)?;
                let (tx, mut rx) = watch::channel(false);
                let task = tokio::spawn(socket.serve(device.clone(), async move {
                    let _ = rx.wait_for(|s| *s).await;
                }));
                Some((tx, task))
            } else {
                None
            };
            (Link::User { device, uapi }, listen)
        };
        let mtu = config.mtu.to_string();
        run(
            "ip",
            &["link", "set", "dev", &config.iface, "mtu", &mtu, "up"],
            None,
        )?;
        let _ = write_sysctl(&sysctl_path(&config.iface, "disable_ipv6"), "0");
        let per_interface = sysctl_path(&config.iface, "force_forwarding").exists();
        enable_forwarding(&config.iface, per_interface)?;
        if let Some(iso) = &isolation {
            iso.rebuild(&[])?;
        }
        Ok(Arc::new(Self {
            public_key: private.public(),
            listen,
            link: Mutex::new(link),
            isolation,
            applied: Mutex::new(HashMap::new()),
            revision: Mutex::new(None),
            per_interface_forwarding: per_interface,
            sync_errors: AtomicU64::new(0),
            config,
        }))
    }

    /// The interface's name.
    pub fn iface(&self) -> &str {
        &self.config.iface
    }

    /// The gateway's public key (what peers' configs name).
    pub fn public_key(&self) -> Key {
        self.public_key
    }

    /// Where it listens (the bound port when configured as 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// Whether it runs on kernel WireGuard.
    pub fn is_kernel(&self) -> bool {
        matches!(*lock(&self.link), Link::Kernel)
    }

    /// The userspace device (`None` with kernel WireGuard).
    pub fn device(&self) -> Option<Arc<Device>> {
        match &*lock(&self.link) {
            Link::User { device, .. } => Some(device.clone()),
            Link::Kernel => None,
        }
    }

    /// Public keys of the peers on the interface now, with their ranges.
    pub fn peers(&self) -> Vec<(Key, Ipv6Addr)> {
        let mut v: Vec<_> = lock(&self.applied)
            .values()
            .map(|a| (a.key, a.range))
            .collect();
        v.sort();
        v
    }

    /// Follows the store until `shutdown` resolves, then removes the interface and its rules.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let this = self.clone();
        let follow = hangar_store::follow(
            store,
            "hangar-wireguard: gateway",
            move |s| this.catch_up(s),
            stopped(stop_rx.clone()),
        );
        let repair = async {
            let mut tick = tokio::time::interval(REPAIR);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let stop = stopped(stop_rx.clone());
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    () = &mut stop => return,
                    _ = tick.tick() => self.repair(),
                }
            }
        };
        let stop = async {
            shutdown.await;
            let _ = stop_tx.send(true);
        };
        tokio::join!(follow, repair, stop);
        self.close().await;
    }

    /// Removes the interface (and so its routes) and its isolation table. Idempotent.
    pub async fn close(&self) {
        let link = std::mem::replace(&mut *lock(&self.link), Link::Kernel);
        match link {
            Link::User { device, uapi } => {
                if let Some((stop, task)) = uapi {
                    let _ = stop.send(true);
                    let _ = task.await;
                }
                device.shutdown().await;
            }
            Link::Kernel => {}
        }
        let _ = run("ip", &["link", "del", &self.config.iface], None);
        if let Some(iso) = &self.isolation {
            let _ = iso.remove();
        }
        lock(&self.applied).clear();
    }

    fn catch_up(&self, store: &dyn Store) -> std::result::Result<bool, StoreError> {
        let base = *lock(&self.revision);
        let (last, relevant) = match base {
            None => (store.revision(), true),
            Some(base) => match store.changes_since(base, BATCH) {
                Ok(c) => match c.last() {
                    None => return Ok(false),
                    Some(l) => (l.revision, c.iter().any(|c| c.kind == "wireguard")),
                },
                Err(StoreError::Compacted { .. }) => (store.revision(), true),
                Err(e) => return Err(e),
            },
        };
        if relevant && let Err(e) = self.sync(store) {
            self.sync_errors.fetch_add(1, Ordering::Relaxed);
            return Err(match e {
                SyncError::Store(e) => e,
                SyncError::Host(e) => StoreError::Corrupt {
                    what: "wireguard peer set-up",
                    message: e.to_string(),
                },
            });
        }
        *lock(&self.revision) = Some(last);
        Ok(true)
    }

    /// Makes the interface hold exactly the store's peers.
    fn sync(&self, store: &dyn Store) -> std::result::Result<(), SyncError> {
        let mut wanted = HashMap::new();
        for p in store.list_wireguard_peers(None).map_err(SyncError::Store)? {
            let key = match Key::from_base64(&p.public_key) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!(
                        "hangar-wireguard: peer {}/{} skipped: {e}",
                        p.org_slug, p.name
                    );
                    continue;
                }
            };
            let addr = match p.peer_ip.parse::<Ipv6Addr>() {
                Ok(a) if sixpn::is_peer(a) => a,
                _ => {
                    eprintln!(
                        "hangar-wireguard: peer {}/{} skipped: bad address {}",
                        p.org_slug, p.name, p.peer_ip
                    );
                    continue;
                }
            };
            wanted.insert(
                (p.org_slug, p.name),
                Applied {
                    key,
                    range: sixpn::peer_range(addr),
                    network_id: p.network_id,
                },
            );
        }
        let current = lock(&self.applied).clone();
        for (id, a) in &current {
            if wanted.get(id) != Some(a) {
                self.remove(a).map_err(SyncError::Host)?;
                lock(&self.applied).remove(id);
            }
        }
        for (id, a) in wanted {
            if current.get(&id) != Some(&a) {
                self.add(&a).map_err(SyncError::Host)?;
                lock(&self.applied).insert(id, a);
            }
        }
        Ok(())
    }

    fn path(&self, a: &Applied) -> PeerPath {
        PeerPath {
            range: a.range,
            prefix_len: sixpn::PEER_PREFIX_LEN,
            network: Network::new(a.network_id, self.config.host_id),
        }
    }

    fn prepare_network(&self, network: &Network) -> Result<()> {
        network.ensure()?;
        if self.per_interface_forwarding {
            enable_forwarding(&network.bridge, true)?;
        }
        Ok(())
    }

    fn add(&self, a: &Applied) -> Result<()> {
        let path = self.path(a);
        self.prepare_network(&path.network)?;
        if let Some(iso) = &self.isolation {
            iso.add_peer(&path)?;
        }
        let range = format!("{}/{}", a.range, sixpn::PEER_PREFIX_LEN);
        match &*lock(&self.link) {
            Link::User { device, .. } => device.set_peer(PeerConfig {
                public_key: a.key,
                preshared_key: None,
                endpoint: None,
                allowed_ips: vec![(IpAddr::V6(a.range), sixpn::PEER_PREFIX_LEN)],
                keepalive: None,
            })?,
            Link::Kernel => {
                run(
                    "wg",
                    &[
                        "set",
                        &self.config.iface,
                        "peer",
                        &a.key.to_base64(),
                        "allowed-ips",
                        &range,
                    ],
                    None,
                )?;
            }
        }
        run(
            "ip",
            &["-6", "route", "replace", &range, "dev", &self.config.iface],
            None,
        )?;
        Ok(())
    }

    fn remove(&self, a: &Applied) -> Result<()> {
        match &*lock(&self.link) {
            Link::User { device, .. } => {
                device.remove_peer(&a.key);
            }
            Link::Kernel => {
                run(
                    "wg",
                    &[
                        "set",
                        &self.config.iface,
                        "peer",
                        &a.key.to_base64(),
                        "remove",
                    ],
                    None,
                )?;
            }
        }
        let range = format!("{}/{}", a.range, sixpn::PEER_PREFIX_LEN);
        let _ = run(
            "ip",
            &["-6", "route", "del", &range, "dev", &self.config.iface],
            None,
        );
        if let Some(iso) = &self.isolation {
            iso.remove_peer(&self.path(a))?;
        }
        Ok(())
    }

    /// Checks the bridges and forwarding of peers' networks again.
    fn repair(&self) {
        let networks: BTreeSet<u32> = lock(&self.applied).values().map(|a| a.network_id).collect();
        for n in networks {
            let network = Network::new(n, self.config.host_id);
            if let Err(e) = self.prepare_network(&network) {
                self.sync_errors.fetch_add(1, Ordering::Relaxed);
                eprintln!("hangar-wireguard: network {n}: {e}");
            }
        }
    }

    /// Adds the gateway's metrics to an exposition.
    pub fn collect_metrics(&self, out: &mut Families) {
        let (peers, active, handshakes, rx, tx, drops) = match &*lock(&self.link) {
            Link::User { device, .. } => {
                let now = SystemTime::now();
                let peers = device.peers();
                let active = peers
                    .iter()
                    .filter(|p| {
                        p.last_handshake
                            .and_then(|t| now.duration_since(t).ok())
                            .is_some_and(|d| d < ACTIVE)
                    })
                    .count();
                let m = device.metrics();
                (
                    peers.len(),
                    active,
                    m.handshakes.load(Ordering::Relaxed),
                    m.rx_bytes.load(Ordering::Relaxed),
                    m.tx_bytes.load(Ordering::Relaxed),
                    DropReason::ALL
                        .iter()
                        .map(|r| (r.label(), m.drops(*r)))
                        .collect::<Vec<_>>(),
                )
            }
            Link::Kernel => (lock(&self.applied).len(), 0, 0, 0, 0, Vec::new()),
        };
        out.gauge(
            "hangar_wireguard_peers",
            "WireGuard peers on this host's gateway interface.",
            &[],
            peers as f64,
        );
        out.gauge(
            "hangar_wireguard_peers_active",
            "Peers whose last handshake is less than 3 minutes old.",
            &[],
            active as f64,
        );
        out.counter(
            "hangar_wireguard_handshakes_total",
            "Completed WireGuard handshakes.",
            &[],
            handshakes as f64,
        );
        out.counter(
            "hangar_wireguard_received_bytes_total",
            "Bytes of packets received from peers (decrypted).",
            &[],
            rx as f64,
        );
        out.counter(
            "hangar_wireguard_sent_bytes_total",
            "Bytes of packets sent to peers (before encryption).",
            &[],
            tx as f64,
        );
        for (reason, n) in drops {
            out.counter(
                "hangar_wireguard_dropped_packets_total",
                "Packets dropped by the gateway, by reason.",
                &[("reason", reason)],
                n as f64,
            );
        }
        out.counter(
            "hangar_wireguard_sync_errors_total",
            "Failed passes applying the store's peers (retried).",
            &[],
            self.sync_errors.load(Ordering::Relaxed) as f64,
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // Without `close` (a panic, an aborted task): the device's tasks stop and its TUN
        // closes with them; kernel interfaces and the rules go here.
        match &*lock(&self.link) {
            Link::Kernel => {
                let _ = run("ip", &["link", "del", &self.config.iface], None);
            }
            // The UAPI task holds the device: it goes (and removes its socket) when aborted.
            Link::User { uapi, .. } => {
                if let Some((_, task)) = uapi {
                    task.abort();
                }
            }
        }
        if let Some(iso) = &self.isolation {
            let _ = iso.remove();
        }
    }
}

#[derive(Debug)]
enum SyncError {
    Store(StoreError),
    Host(Error),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
