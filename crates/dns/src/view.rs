//! The DNS server's in-memory view of networks, apps and machines, fed by the store's change
//! log (the same approach as the proxy's catalog).
//!
//! Queries read an immutable snapshot ([`View`], behind an `Arc`); the follower applies each
//! batch of changes to a copy and swaps it in, so a change is answered within milliseconds of
//! its commit. When the store fails, the last view keeps answering (principle 1 of the
//! design: the data plane never waits for the control plane) and the follower catches up
//! when the store is back, or reloads everything when the change log was compacted past it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv6Addr;
use std::sync::{Arc, RwLock};

use hangar_domain::{State, sixpn};
use hangar_store::{
    AppRecord, IpAssignmentRecord, MachineRecord, NetworkRecord, Store, StoreError,
};
use tokio::sync::watch;

/// A live machine as DNS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineEntry {
    /// Machine id.
    pub id: String,
    /// App name.
    pub app: String,
    /// Region.
    pub region: String,
    /// 6PN address.
    pub addr: Ipv6Addr,
    /// In state `started` (only those are in AAAA answers and the short TXT lists).
    pub started: bool,
    /// Process group (metadata `fly_process_group`, `app` without it).
    pub group: String,
    /// Its metadata (`<value>.<key>.kv._metadata.<app>.internal`).
    pub metadata: BTreeMap<String, String>,
    /// False with `dns.skip_registration`: in no answer.
    pub registered: bool,
}

impl MachineEntry {
    /// The entry of a machine record (`None` for a destroyed one or without a 6PN address).
    pub fn from_record(m: &MachineRecord) -> Option<Self> {
        if m.state == State::Destroyed {
            return None;
        }
        Some(Self {
            id: m.id.clone(),
            app: m.app.clone(),
            region: m.region.clone(),
            addr: m.private_ip.parse().ok()?,
            started: m.state == State::Started,
            group: m
                .config
                .metadata
                .get("fly_process_group")
                .cloned()
                .unwrap_or_else(|| "app".into()),
            metadata: m.config.metadata.clone(),
            registered: !m
                .config
                .dns
                .as_ref()
                .and_then(|d| d.skip_registration)
                .unwrap_or(false),
        })
    }
}

/// An app as DNS sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEntry {
    /// Name (global).
    pub name: String,
    /// Its network's id.
    pub network: u32,
    /// Its registered machines, by id.
    pub machines: Vec<Arc<MachineEntry>>,
    /// Its Flycast address for its own network, once one is allocated.
    pub flycast: Option<Ipv6Addr>,
}

/// A WireGuard peer as DNS sees it (`<peer>._peer.internal`, PLATFORM.md §4.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    /// Its org.
    pub org: String,
    /// Its name (unique in the org).
    pub name: String,
    /// Its network's id.
    pub network: u32,
    /// Its 6PN address.
    pub addr: Ipv6Addr,
}

impl PeerEntry {
    /// The entry of a peer record (`None` with an unreadable address).
    pub fn from_record(p: &hangar_store::WireguardPeerRecord) -> Option<Self> {
        Some(Self {
            org: p.org_slug.clone(),
            name: p.name.clone(),
            network: p.network_id,
            addr: p.peer_ip.parse().ok()?,
        })
    }
}

/// One consistent view.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// WireGuard peers by (org, name).
    peer_records: HashMap<(String, String), PeerEntry>,
    /// WireGuard peers of each network, by name.
    peers: HashMap<u32, Vec<PeerEntry>>,
    /// Store revision it reflects.
    pub revision: u64,
    /// This host's id (which networks have machines here).
    host_id: u32,
    machines: HashMap<String, Arc<MachineEntry>>,
    app_records: HashMap<String, AppRecord>,
    network_ids: HashMap<(String, String), u32>,
    /// Apps by name.
    apps: HashMap<String, Arc<AppEntry>>,
    /// App names of each network, sorted.
    networks: HashMap<u32, Vec<String>>,
    /// Every live machine by address (registered or not): who is asking.
    by_addr: HashMap<Ipv6Addr, Arc<MachineEntry>>,
    /// Networks with a live machine on this host: where the server listens.
    hosted: BTreeSet<u32>,
    /// Flycast addresses by app: (address, the network it is allocated for).
    flycast_records: HashMap<String, Vec<(Ipv6Addr, u32)>>,
    /// Flycast addresses by (network allowed in, app).
    flycast: HashMap<(u32, String), Vec<Ipv6Addr>>,
}

/// The Flycast records of assignments, by app.
fn flycast_records(
    assignments: impl IntoIterator<Item = IpAssignmentRecord>,
) -> HashMap<String, Vec<(Ipv6Addr, u32)>> {
    let mut out: HashMap<String, Vec<(Ipv6Addr, u32)>> = HashMap::new();
    for a in assignments {
        if !a.is_flycast() {
            continue;
        }
        if let (Ok(addr), Some(net)) = (a.ip.parse(), a.network_id) {
            out.entry(a.app).or_default().push((addr, net));
        }
    }
    out
}

impl View {
    /// A view of these records (`host_id`: this host, whose networks get listeners).
    pub fn build(
        host_id: u32,
        networks: Vec<NetworkRecord>,
        apps: Vec<AppRecord>,
        machines: &[MachineRecord],
    ) -> Self {
        let mut v = View {
            host_id,
            network_ids: networks
                .into_iter()
                .map(|n| ((n.org_slug, n.name), n.id))
                .collect(),
            app_records: apps.into_iter().map(|a| (a.name.clone(), a)).collect(),
            machines: machines
                .iter()
                .filter_map(MachineEntry::from_record)
                .map(|m| (m.id.clone(), Arc::new(m)))
                .collect(),
            ..View::default()
        };
        v.derive();
        v
    }

    /// The same view with these IP assignments (their Flycast addresses answer
    /// `<app>.flycast` in the network each is allocated for).
    pub fn with_flycast(mut self, assignments: Vec<IpAssignmentRecord>) -> Self {
        self.flycast_records = flycast_records(assignments);
        self.derive();
        self
    }

    /// Recomputes the indexes from the records (after every batch of changes).
    fn derive(&mut self) {
        let mut by_app: HashMap<&str, Vec<Arc<MachineEntry>>> = HashMap::new();
        self.by_addr.clear();
        self.hosted.clear();
        for m in self.machines.values() {
            self.by_addr.insert(m.addr, m.clone());
            if let Some((net, host)) = sixpn::parse(m.addr)
                && host == self.host_id
            {
                self.hosted.insert(net);
            }
            if m.registered {
                by_app.entry(m.app.as_str()).or_default().push(m.clone());
            }
        }
        let mut apps = HashMap::with_capacity(self.app_records.len());
        let mut networks: HashMap<u32, Vec<String>> = HashMap::new();
        for a in self.app_records.values() {
            let mut machines = by_app.remove(a.name.as_str()).unwrap_or_default();
            machines.sort_by(|x, y| x.id.cmp(&y.id));
            // The network's id from the store; an app older than network records (or whose
            // network record has not arrived yet) is placed by its machines' addresses.
            let network = self
                .network_ids
                .get(&(a.org_slug.clone(), a.network.clone()))
                .copied()
                .or_else(|| {
                    machines
                        .first()
                        .and_then(|m| sixpn::parse(m.addr))
                        .map(|n| n.0)
                });
            let Some(network) = network else { continue };
            networks.entry(network).or_default().push(a.name.clone());
            let flycast = self
                .flycast_records
                .get(&a.name)
                .and_then(|r| r.iter().find(|(_, n)| *n == network))
                .map(|(addr, _)| *addr);
            apps.insert(
                a.name.clone(),
                Arc::new(AppEntry {
                    name: a.name.clone(),
                    network,
                    machines,
                    flycast,
                }),
            );
        }
        for names in networks.values_mut() {
            names.sort();
        }
        let mut flycast: HashMap<(u32, String), Vec<Ipv6Addr>> = HashMap::new();
        for (app, records) in &self.flycast_records {
            if !apps.contains_key(app) {
                continue;
            }
            for (addr, net) in records {
                flycast.entry((*net, app.clone())).or_default().push(*addr);
            }
        }
        for v in flycast.values_mut() {
            v.sort();
        }
        self.apps = apps;
        self.networks = networks;
        self.derive_peers();
        self.flycast = flycast;
    }

    /// The Flycast addresses of app `name` that network `network` reaches (every network's
    /// when `None`: the operators' view).
    pub fn flycast(&self, name: &str, network: Option<u32>) -> Vec<Ipv6Addr> {
        match network {
            Some(n) => self
                .flycast
                .get(&(n, name.to_string()))
                .cloned()
                .unwrap_or_default(),
            None => {
                let mut all: Vec<Ipv6Addr> = self
                    .flycast
                    .iter()
                    .filter(|((_, a), _)| a == name)
                    .flat_map(|(_, v)| v.iter().copied())
                    .collect();
                all.sort();
                all
            }
        }
    }

    /// An app of network `network` (any network when `None`).
    pub fn app(&self, name: &str, network: Option<u32>) -> Option<&Arc<AppEntry>> {
        self.apps
            .get(name)
            .filter(|a| network.is_none_or(|n| a.network == n))
    }

    /// The apps of network `network` (every app when `None`), by name.
    pub fn apps(&self, network: Option<u32>) -> Vec<&Arc<AppEntry>> {
        match network {
            Some(n) => self
                .networks
                .get(&n)
                .map(|names| names.iter().filter_map(|a| self.apps.get(a)).collect())
                .unwrap_or_default(),
            None => {
                let mut all: Vec<&Arc<AppEntry>> = self.apps.values().collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                all
            }
        }
    }

    /// The live machine at `addr` (the asker of a query).
    pub fn machine_at(&self, addr: Ipv6Addr) -> Option<&Arc<MachineEntry>> {
        self.by_addr.get(&addr)
    }

    /// Networks with a live machine on this host.
    pub fn hosted_networks(&self) -> &BTreeSet<u32> {
        &self.hosted
    }

    /// The same view with these WireGuard peers (their networks are served here too: this
    /// host is their gateway).
    pub fn with_peers(mut self, peers: &[hangar_store::WireguardPeerRecord]) -> Self {
        self.peer_records = peers
            .iter()
            .filter_map(PeerEntry::from_record)
            .map(|e| ((e.org.clone(), e.name.clone()), e))
            .collect();
        self.derive();
        self
    }

    fn derive_peers(&mut self) {
        let mut peers: HashMap<u32, Vec<PeerEntry>> = HashMap::new();
        for p in self.peer_records.values() {
            peers.entry(p.network).or_default().push(p.clone());
            self.hosted.insert(p.network);
        }
        for v in peers.values_mut() {
            v.sort_by(|a, b| a.name.cmp(&b.name));
        }
        self.peers = peers;
    }

    /// The WireGuard peers of network `network` (every network's when `None`), by name.
    pub fn peers(&self, network: Option<u32>) -> Vec<&PeerEntry> {
        match network {
            Some(n) => self
                .peers
                .get(&n)
                .map(|v| v.iter().collect())
                .unwrap_or_default(),
            None => {
                let mut all: Vec<&PeerEntry> = self.peers.values().flatten().collect();
                all.sort_by(|a, b| a.name.cmp(&b.name));
                all
            }
        }
    }

    fn load(store: &dyn Store, host_id: u32) -> Result<Self, StoreError> {
        let revision = store.revision();
        let mut v = View::build(
            host_id,
            store.list_networks()?,
            store.list_apps(None)?,
            &store.all_live_machines()?,
        )
        .with_flycast(store.list_ip_assignments(None)?)
        .with_peers(&store.list_wireguard_peers(None)?);
        v.revision = revision;
        Ok(v)
    }
}

/// Most change-log entries read per batch.
const BATCH: usize = 1000;

/// The shared, swappable view.
#[derive(Debug)]
pub struct ViewHandle {
    host_id: u32,
    current: RwLock<Arc<View>>,
    changed: watch::Sender<u64>,
}

impl ViewHandle {
    /// An empty view for host `host_id` (filled by [`ViewHandle::load`] / [`ViewHandle::run`]).
    pub fn new(host_id: u32) -> Arc<Self> {
        Arc::new(Self {
            host_id,
            current: RwLock::new(Arc::new(View {
                host_id,
                ..View::default()
            })),
            changed: watch::channel(0).0,
        })
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<View> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Fires with the revision whenever a new snapshot is in place.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Puts a view in place (tests, fuzzing).
    pub fn install(&self, v: View) {
        let rev = v.revision;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(v);
        self.changed.send_replace(rev);
    }

    /// Loads everything now.
    pub fn load(&self, store: &dyn Store) -> Result<(), StoreError> {
        self.install(View::load(store, self.host_id)?);
        Ok(())
    }

    /// Applies the changes after the snapshot's revision; false when there were none.
    fn catch_up(&self, store: &dyn Store) -> Result<bool, StoreError> {
        let base = self.snapshot();
        let changes = match store.changes_since(base.revision, BATCH) {
            Ok(c) => c,
            Err(StoreError::Compacted { .. }) => {
                self.load(store)?;
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        let Some(last) = changes.last().map(|c| c.revision) else {
            return Ok(false);
        };
        let mut next = (*base).clone();
        next.revision = last;
        let mut networks_changed = false;
        for c in &changes {
            match c.kind.as_str() {
                "machine" => match store.find_machine(&c.key)? {
                    Some(m) => match MachineEntry::from_record(&m) {
                        Some(e) => {
                            next.machines.insert(e.id.clone(), Arc::new(e));
                        }
                        None => {
                            next.machines.remove(&c.key);
                        }
                    },
                    None => {
                        next.machines.remove(&c.key);
                    }
                },
                "app" => match store.get_app(&c.key)? {
                    Some(a) => {
                        next.app_records.insert(a.name.clone(), a);
                    }
                    None => {
                        next.app_records.remove(&c.key);
                        next.machines.retain(|_, m| m.app != c.key);
                        next.flycast_records.remove(&c.key);
                    }
                },
                "ip_assignment" => {
                    next.flycast_records.remove(&c.key);
                    next.flycast_records
                        .extend(flycast_records(store.list_ip_assignments(Some(&c.key))?));
                }
                "wireguard" => {
                    let (org, name) = c.key.split_once('/').unwrap_or((&c.key, ""));
                    match store.get_wireguard_peer(org, name)? {
                        Some(p) => {
                            if let Some(e) = PeerEntry::from_record(&p) {
                                next.peer_records.insert((e.org.clone(), e.name.clone()), e);
                            }
                        }
                        None => {
                            next.peer_records
                                .remove(&(org.to_string(), name.to_string()));
                        }
                    }
                }
                "network" | "org" => networks_changed = true,
                _ => {}
            }
        }
        if networks_changed {
            next.network_ids = store
                .list_networks()?
                .into_iter()
                .map(|n| ((n.org_slug, n.name), n.id))
                .collect();
        }
        next.derive();
        self.install(next);
        Ok(true)
    }

    /// Follows the store until `shutdown` resolves; while the store fails, queries keep using the last view.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        hangar_store::follow(store, "hangar-dns: view", |s| self.catch_up(s), shutdown).await;
    }
}
