//! `hangar-dns`: the private DNS of Hangar networks, a role of `hangard` (PLATFORM.md §4.2).
//!
//! Owns the answers to `.internal` (and `.flycast`) names, from an in-memory [`view`] of
//! networks, apps and machines fed by the store's change log, and the forwarding of every
//! other name to the host's resolvers ([`forward`]). [`answer`] is the query path, pure and
//! fuzzed: which names exist, NXDOMAIN vs NODATA, TTLs, truncation, FORMERR.
//!
//! Where it listens:
//! - on each network that has a machine on this host (or a WireGuard peer: this host is its
//!   gateway), at the host's service address
//!   `fdaa:<network>:<host>::3` (`hangar_domain::sixpn::service_addr`; the net crate puts it
//!   on the network's bridge), UDP and TCP port 53: machines' `/etc/resolv.conf` names it.
//!   Sockets are bound with `IPV6_FREEBIND`, so they can exist before the address does, and
//!   they close when the network's last machine here goes. The asking network is the one
//!   in the source address (the host's isolation rules make spoofing it impossible); a query
//!   from another network's address is REFUSED;
//! - on an operators' address (`--dns-listen`, default `127.0.0.1:53`), where a query from
//!   a non-6PN source sees every network;
//! - on the same service addresses, TCP port 4280: a relay to the Machines API, so
//!   `_api.internal:4280` works from machines while the API itself listens on loopback.
//!
//! The UDP path answers local names inline (no task per query); forwards run as tasks, at
//! most [`DnsConfig::max_forwards`] at once (more get SERVFAIL); TCP connections and relayed
//! connections are bounded too, and idle TCP connections are closed.
//!
//! Must not: write to the store, run machines, or depend on another service crate.

pub mod answer;
pub mod forward;
pub mod metrics;
mod server;
pub mod view;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_store::Store;
use tokio::sync::Semaphore;

pub use answer::{Asker, Settings};
pub use hickory_proto;
pub use view::{View, ViewHandle};

/// Settings of the DNS server.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// This host's 32-bit id (its service addresses, and which networks are served here).
    pub host_id: u32,
    /// This host's region (the nearest region for askers that are not machines).
    pub region: String,
    /// Distances between regions for `top<N>.nearest.of.<app>.internal` (symmetric).
    pub distances: HashMap<(String, String), u32>,
    /// The operators' listener (UDP and TCP); `None`: none.
    pub operator_listen: Option<SocketAddr>,
    /// Port of the per-network listeners (53: what resolv.conf implies).
    pub port: u16,
    /// Resolvers for other names (default: the host's `/etc/resolv.conf`).
    pub upstreams: Vec<SocketAddr>,
    /// How long one upstream gets to answer.
    pub forward_timeout: Duration,
    /// Forwarded queries in flight at once; more get SERVFAIL at once.
    pub max_forwards: usize,
    /// TCP connections open at once; more are closed at once.
    pub max_tcp_connections: usize,
    /// A TCP connection with no complete query for this long is closed.
    pub tcp_idle_timeout: Duration,
    /// Where the Machines API listens; `None`: no relay for `_api.internal`.
    pub api_upstream: Option<SocketAddr>,
    /// Port of the Machines API relay on the service addresses.
    pub api_port: u16,
    /// Relayed API connections open at once.
    pub max_relay_connections: usize,
    /// TTL of every answer (and of negative answers).
    pub ttl: u32,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            host_id: 1,
            region: "local".into(),
            distances: HashMap::new(),
            operator_listen: Some(SocketAddr::from(([127, 0, 0, 1], 53))),
            port: 53,
            upstreams: host_resolvers(),
            forward_timeout: Duration::from_secs(2),
            max_forwards: 256,
            max_tcp_connections: 128,
            tcp_idle_timeout: Duration::from_secs(10),
            api_upstream: None,
            api_port: 4280,
            max_relay_connections: 256,
            ttl: 5,
        }
    }
}

/// The resolvers of the host's `/etc/resolv.conf`.
pub fn host_resolvers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|t| forward::parse_resolv_conf(&t))
        .unwrap_or_default()
}

/// The DNS server.
pub struct Dns {
    /// Settings.
    pub config: DnsConfig,
    store: Arc<dyn Store>,
    /// The view it answers from.
    pub view: Arc<ViewHandle>,
    settings: Settings,
    forwarder: forward::Forwarder,
    forwards: Arc<Semaphore>,
    tcp_connections: Arc<Semaphore>,
    relays: Arc<Semaphore>,
    /// Its metrics.
    pub metrics: metrics::DnsMetrics,
    operator_addr: Mutex<Option<SocketAddr>>,
    serving: Mutex<BTreeMap<u32, server::Listeners>>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Dns {
    /// A server over `store` (started by [`run`]).
    pub fn new(store: Arc<dyn Store>, config: DnsConfig) -> Arc<Self> {
        let settings = Settings {
            host_id: config.host_id,
            region: config.region.clone(),
            distances: config.distances.clone(),
            ttl: config.ttl,
        };
        // Never forward to ourselves (a host whose resolv.conf names the operators' listener).
        let upstreams = config
            .upstreams
            .iter()
            .copied()
            .filter(|u| Some(*u) != config.operator_listen)
            .collect();
        Arc::new(Self {
            store,
            view: ViewHandle::new(config.host_id),
            settings,
            forwarder: forward::Forwarder {
                upstreams,
                timeout: config.forward_timeout,
            },
            forwards: Arc::new(Semaphore::new(config.max_forwards.max(1))),
            tcp_connections: Arc::new(Semaphore::new(config.max_tcp_connections.max(1))),
            relays: Arc::new(Semaphore::new(config.max_relay_connections.max(1))),
            metrics: metrics::DnsMetrics::default(),
            operator_addr: Mutex::new(None),
            serving: Mutex::new(BTreeMap::new()),
            config,
        })
    }

    /// The operators' listener's address once bound (its port when configured as 0).
    pub fn operator_addr(&self) -> Option<SocketAddr> {
        *self.operator_addr.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The networks whose service address it listens on now.
    pub fn networks(&self) -> Vec<u32> {
        self.serving
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, l)| l.bound)
            .map(|(n, _)| *n)
            .collect()
    }

    /// Adds the server's metrics to an exposition.
    pub fn collect_metrics(&self, out: &mut hangar_metrics::Families) {
        self.metrics.collect(out);
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the server until `shutdown` resolves: loads the view, follows the store, listens on
/// the operators' address and on the service address of every network with a machine here.
pub async fn run(
    dns: Arc<Dns>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::run(dns, shutdown).await
}
