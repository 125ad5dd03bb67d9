//! The proxy's in-memory view of apps and machines, fed by the store's change log.
//!
//! Routing reads an immutable snapshot ([`Catalog`], behind an `Arc`) without locks held
//! across awaits; the updater swaps in a new snapshot for every batch of changes, so a change
//! reaches routing within milliseconds of its commit. When the store fails the proxy keeps
//! the last snapshot and keeps serving; it catches up from its revision when the store is
//! back (or reloads everything when the change log was compacted past it).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hangar_api_types::{Autostop, MachinePort, MachineService, StopConfig};
use hangar_domain::State;
use hangar_store::{CertificateRecord, MachineRecord, Store, StoreError};
use tokio::sync::watch;

/// A machine as routing sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct MachineEntry {
    /// Machine id.
    pub id: String,
    /// App name.
    pub app: String,
    /// Region.
    pub region: String,
    /// Lifecycle state.
    pub state: State,
    /// 6PN address (where its services listen).
    pub addr: Ipv6Addr,
    /// Cordoned machines get no traffic.
    pub cordoned: bool,
    /// Its TCP services (everything but `protocol = "udp"`): what every TCP listener,
    /// balancing on a TCP port, health checks and Flycast read.
    pub services: Vec<MachineService>,
    /// Its UDP services ([`crate::udp`]).
    pub udp_services: Vec<MachineService>,
    /// Every service, TCP and UDP, in the config's order: health checks (named by their
    /// position) and autostop read them.
    pub config_services: Vec<MachineService>,
    /// `PRIMARY_REGION` from its env (for `min_machines_running`).
    pub primary_region: Option<String>,
    /// Its stop signal and timeout (autostop uses them).
    pub stop_config: Option<StopConfig>,
    /// Whether autostop may suspend it rather than stop it
    /// ([`hangar_api_types::MachineConfig::suspendable`]).
    pub suspendable: bool,
    /// Top-level health checks.
    pub checks: std::collections::BTreeMap<String, hangar_api_types::MachineCheck>,
    /// Store revision of the record.
    pub revision: u64,
}

impl MachineEntry {
    fn from_record(m: &MachineRecord) -> Option<Self> {
        let (udp_services, services) = m
            .config
            .services
            .iter()
            .cloned()
            .partition(|s| s.protocol.eq_ignore_ascii_case("udp"));
        Some(Self {
            id: m.id.clone(),
            app: m.app.clone(),
            region: m.region.clone(),
            state: m.state,
            addr: m.private_ip.parse().ok()?,
            cordoned: m.cordoned,
            services,
            udp_services,
            config_services: m.config.services.clone(),
            primary_region: m.config.env.get("PRIMARY_REGION").cloned(),
            stop_config: m.config.stop_config.clone(),
            suspendable: m.config.suspendable(),
            checks: m.config.checks.clone(),
            revision: m.revision,
        })
    }

    /// The TCP service answering public port `port`, if any.
    pub fn service_for(&self, port: u16) -> Option<&MachineService> {
        self.services.iter().find(|s| serves(s, port))
    }

    /// Every service, TCP and UDP, in the config's order.
    pub fn all_services(&self) -> impl Iterator<Item = &MachineService> {
        self.config_services.iter()
    }
}

/// Whether `s` declares public port `port` (single port or range).
pub fn serves(s: &MachineService, port: u16) -> bool {
    port_entry(s, port).is_some()
}

/// The entry of `s.ports` that declares public port `port` (single port or range): its
/// handlers and options are that port's.
pub fn port_entry(s: &MachineService, port: u16) -> Option<&MachinePort> {
    let p = i64::from(port);
    s.ports.iter().find(|mp| {
        mp.port == Some(p)
            || matches!((mp.start_port, mp.end_port), (Some(a), Some(b)) if a <= p && p <= b)
    })
}

/// The longest head timeout a port may ask for: a longer `headers_read_timeout` would let a
/// slow client hold a connection (and its memory) for hours.
pub const MAX_HEADERS_READ_TIMEOUT: Duration = Duration::from_secs(3600);

/// The public ports `mp` declares: its `port`, or its `start_port..=end_port` range (ranges
/// wider than 1024 ports, or outside `u16`, declare nothing).
fn port_range(mp: &MachinePort) -> impl Iterator<Item = u16> {
    let range = match (mp.port, mp.start_port, mp.end_port) {
        (Some(p), _, _) => Some(p..=p),
        (None, Some(a), Some(b)) if b >= a && b - a < 1024 => Some(a..=b),
        _ => None,
    };
    range
        .into_iter()
        .flatten()
        .filter_map(|p| u16::try_from(p).ok())
}

/// Autostop setting of a service (absent = off).
pub fn autostop(s: &MachineService) -> Autostop {
    s.autostop.unwrap_or(Autostop::Off)
}

/// How a public port is handled, across every app that declares it (where apps disagree,
/// the first kind here wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PortKind {
    /// `tls` and `http`: TLS terminated, then the `http` handler (routed by `Host`).
    TlsHttp,
    /// `http`: routed by `Host`.
    Http,
    /// `tls` alone: TLS terminated, the plaintext passed to the app of the SNI as raw TCP.
    Tls,
    /// `pg_tls`: PostgreSQL's TLS negotiation, then as `Tls` ([`crate::pg_tls`]).
    PgTls,
    /// No handler: raw TCP, one app per port.
    Raw,
}

/// An app.
#[derive(Debug, Clone, PartialEq)]
pub struct AppEntry {
    /// Name.
    pub name: String,
    /// Org slug.
    pub org: String,
    /// Network name.
    pub network: String,
    /// Its live machines.
    pub machines: Vec<Arc<MachineEntry>>,
}

/// One consistent view.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Store revision it reflects.
    pub revision: u64,
    /// Apps by name.
    pub apps: HashMap<String, Arc<AppEntry>>,
    /// Machines by id.
    pub machines: HashMap<String, Arc<MachineEntry>>,
    /// Custom hostnames (the certificates store) by hostname (`*.` for wildcards).
    pub hostnames: HashMap<String, Arc<CertificateRecord>>,
    /// Flycast addresses: the app answering each and the network allowed in (§4.3).
    pub flycast: HashMap<Ipv6Addr, FlycastEntry>,
}

/// A Flycast address of an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlycastEntry {
    /// The app.
    pub app: String,
    /// The 6PN network whose machines reach it.
    pub network: u32,
}

fn flycast_entries(
    store: &dyn Store,
    app: Option<&str>,
) -> Result<Vec<(Ipv6Addr, FlycastEntry)>, StoreError> {
    Ok(store
        .list_ip_assignments(app)?
        .into_iter()
        .filter(|a| a.is_flycast())
        .filter_map(|a| {
            Some((
                a.ip.parse().ok()?,
                FlycastEntry {
                    app: a.app,
                    network: a.network_id?,
                },
            ))
        })
        .collect())
}

impl Catalog {
    /// Public ports in use and how they are handled. A port declared `http` by one app and
    /// raw by another is served as http (the raw app loses; logged by the caller).
    pub fn ports(&self) -> BTreeMap<u16, PortKind> {
        let mut out: BTreeMap<u16, PortKind> = BTreeMap::new();
        for m in self.machines.values() {
            for s in &m.services {
                for mp in &s.ports {
                    let tls = mp.handlers.iter().any(|h| h == "tls");
                    let kind = if mp.handlers.iter().any(|h| h == "http") {
                        if tls {
                            PortKind::TlsHttp
                        } else {
                            PortKind::Http
                        }
                    } else if mp.handlers.iter().any(|h| h == "pg_tls") {
                        PortKind::PgTls
                    } else if tls {
                        PortKind::Tls
                    } else {
                        PortKind::Raw
                    };
                    for p in port_range(mp) {
                        let e = out.entry(p).or_insert(kind);
                        *e = (*e).min(kind);
                    }
                }
            }
        }
        out
    }

    /// The time each port's clients have for a request head, where a machine serving the
    /// port declares `http_options.headers_read_timeout` (seconds, 0 ignored, at most
    /// [`MAX_HEADERS_READ_TIMEOUT`]): the longest one declared there, since the head is read
    /// before its `Host` picks the app.
    pub fn headers_read_timeouts(&self) -> HashMap<u16, Duration> {
        let mut out: HashMap<u16, Duration> = HashMap::new();
        for (mp, t) in self.declared_head_timeouts(None) {
            for p in port_range(mp) {
                let e = out.entry(p).or_insert(t);
                *e = (*e).max(t);
            }
        }
        out
    }

    /// The head timeout `app`'s machines declare for `port` (the longest; capped): on a
    /// Flycast address the app is known before the head. Asked once per connection, so no
    /// map is built.
    pub fn headers_read_timeout(&self, app: &str, port: u16) -> Option<Duration> {
        self.declared_head_timeouts(Some(app))
            .filter(|(mp, _)| port_range(mp).any(|p| p == port))
            .map(|(_, t)| t)
            .max()
    }

    /// Each port entry (of `app`'s machines, or of all) that declares a head timeout, with
    /// it (capped).
    fn declared_head_timeouts(
        &self,
        app: Option<&str>,
    ) -> impl Iterator<Item = (&MachinePort, Duration)> {
        let machines: Box<dyn Iterator<Item = &Arc<MachineEntry>>> = match app {
            Some(a) => Box::new(self.apps.get(a).into_iter().flat_map(|a| &a.machines)),
            None => Box::new(self.machines.values()),
        };
        machines
            .flat_map(|m| m.services.iter().flat_map(|s| &s.ports))
            .filter_map(|mp| {
                let secs = mp
                    .http_options
                    .as_ref()
                    .and_then(|o| o.headers_read_timeout)
                    .filter(|s| *s > 0)?;
                Some((
                    mp,
                    Duration::from_secs(u64::from(secs)).min(MAX_HEADERS_READ_TIMEOUT),
                ))
            })
    }

    /// What the proxy serves on Flycast: (address, port) → the app and how (the ports the
    /// app's services declare, `hangar_domain::flycast::ports`).
    pub fn flycast_ports(
        &self,
    ) -> BTreeMap<(Ipv6Addr, u16), (String, hangar_domain::flycast::FlycastPort)> {
        let mut out = BTreeMap::new();
        for (addr, e) in &self.flycast {
            let Some(app) = self.apps.get(&e.app) else {
                continue;
            };
            let services = app.machines.iter().flat_map(|m| m.services.iter());
            for (port, kind) in hangar_domain::flycast::ports(services) {
                out.insert((*addr, port), (e.app.clone(), kind));
            }
        }
        out
    }

    /// The custom hostname entry for `host` (lowercase, no port): exact, then the wildcard of
    /// its first label.
    pub fn hostname(&self, host: &str) -> Option<&Arc<CertificateRecord>> {
        self.hostnames
            .get(host)
            .or_else(|| hangar_domain::tls::wildcard_for(host).and_then(|w| self.hostnames.get(&w)))
    }

    /// The app a `Host` header names through a custom hostname.
    pub fn app_for_host(&self, host: &str) -> Option<String> {
        let h = hangar_domain::tls::normalize_host(host)?;
        self.hostname(&h).map(|r| r.app.clone())
    }

    /// The app owning raw TCP port `port` (the first by name if several claim it).
    pub fn raw_app(&self, port: u16) -> Option<&Arc<AppEntry>> {
        let mut apps: Vec<&Arc<AppEntry>> = self
            .apps
            .values()
            .filter(|a| a.machines.iter().any(|m| m.service_for(port).is_some()))
            .collect();
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        apps.first().copied()
    }

    /// Public ports the apps' UDP services declare.
    pub fn udp_ports(&self) -> std::collections::BTreeSet<u16> {
        self.machines
            .values()
            .flat_map(|m| m.udp_services.iter().flat_map(|s| &s.ports))
            .flat_map(port_range)
            .collect()
    }

    /// The app owning UDP port `port` (the first by name if several claim it), seen through
    /// its UDP services: each of its machines that declares the port, with its UDP services
    /// as its `services`, so that balancing, limits and autostart read them unchanged.
    pub fn udp_app(&self, port: u16) -> Option<AppEntry> {
        let udp = |m: &MachineEntry| m.udp_services.iter().any(|s| serves(s, port));
        let app = self
            .apps
            .values()
            .filter(|a| a.machines.iter().any(|m| udp(m)))
            .min_by(|a, b| a.name.cmp(&b.name))?;
        Some(AppEntry {
            name: app.name.clone(),
            org: app.org.clone(),
            network: app.network.clone(),
            machines: app
                .machines
                .iter()
                .filter(|m| udp(m))
                .map(|m| {
                    Arc::new(MachineEntry {
                        services: m.udp_services.clone(),
                        udp_services: Vec::new(),
                        config_services: Vec::new(),
                        ..MachineEntry::clone(m)
                    })
                })
                .collect(),
        })
    }

    fn rebuild_app(&mut self, name: &str, store: &dyn Store) -> Result<(), StoreError> {
        let Some(app) = store.get_app(name)? else {
            self.apps.remove(name);
            return Ok(());
        };
        let mut machines: Vec<Arc<MachineEntry>> = self
            .machines
            .values()
            .filter(|m| m.app == name)
            .cloned()
            .collect();
        machines.sort_by(|a, b| a.id.cmp(&b.id));
        self.apps.insert(
            name.to_string(),
            Arc::new(AppEntry {
                name: app.name,
                org: app.org_slug,
                network: app.network,
                machines,
            }),
        );
        Ok(())
    }

    fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let revision = store.revision();
        let mut c = Catalog {
            revision,
            ..Catalog::default()
        };
        for m in store.all_live_machines()? {
            if let Some(e) = MachineEntry::from_record(&m) {
                c.machines.insert(e.id.clone(), Arc::new(e));
            }
        }
        for a in store.list_apps(None)? {
            c.rebuild_app(&a.name, store)?;
        }
        for h in store.list_certificates(None)? {
            c.hostnames.insert(h.hostname.clone(), Arc::new(h));
        }
        c.flycast = flycast_entries(store, None)?.into_iter().collect();
        Ok(c)
    }
}

/// Most change-log entries read per batch.
const BATCH: usize = 1000;

/// The shared, swappable catalog.
#[derive(Debug)]
pub struct CatalogHandle {
    current: RwLock<Arc<Catalog>>,
    changed: watch::Sender<u64>,
    /// This handle's identity for the per-thread views (unique in the process).
    id: u64,
    /// Bumped by every install (after the new snapshot is in place).
    generation: AtomicU64,
}

/// A snapshot as one thread holds it: the catalog behind a reference count of this thread's
/// own (see [`CatalogHandle::view`]).
pub type View = Arc<Arc<Catalog>>;

thread_local! {
    /// The view this thread last took: (handle id, generation, view).
    static VIEW: std::cell::RefCell<Option<(u64, u64, View)>> = const { std::cell::RefCell::new(None) };
}

impl CatalogHandle {
    /// An empty catalog (filled by [`CatalogHandle::run`]).
    pub fn new() -> Arc<Self> {
        static IDS: AtomicU64 = AtomicU64::new(1);
        Arc::new(Self {
            current: RwLock::new(Arc::new(Catalog::default())),
            changed: watch::channel(0).0,
            id: IDS.fetch_add(1, Ordering::Relaxed),
            generation: AtomicU64::new(0),
        })
    }

    /// The current snapshot for the request path. Each thread keeps the view it took last and
    /// takes a new one only when the catalog changed: per request, the workers read one
    /// counter they share and write nothing they share (no lock, no common reference count).
    pub fn view(&self) -> View {
        let generation = self.generation.load(Ordering::Acquire);
        VIEW.with(|v| {
            let mut v = v.borrow_mut();
            match &*v {
                Some((id, g, view)) if *id == self.id && *g == generation => Arc::clone(view),
                _ => {
                    let view = Arc::new(self.snapshot());
                    *v = Some((self.id, generation, Arc::clone(&view)));
                    view
                }
            }
        })
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Fires with the revision whenever a new snapshot is in place.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn install(&self, c: Catalog) {
        let rev = c.revision;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(c);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.changed.send_replace(rev);
    }

    /// Loads everything now (the proxy calls it before listening).
    pub fn load(&self, store: &dyn Store) -> Result<(), StoreError> {
        self.install(Catalog::load(store)?);
        Ok(())
    }

    /// Applies the changes after the snapshot's revision; returns false when there were none.
    fn catch_up(&self, store: &dyn Store) -> Result<bool, StoreError> {
        let base = self.snapshot();
        let changes = match store.changes_since(base.revision, BATCH) {
            Ok(c) => c,
            Err(StoreError::Compacted { .. }) => {
                self.install(Catalog::load(store)?);
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        let Some(last) = changes.last().map(|c| c.revision) else {
            return Ok(false);
        };
        let mut next = (*base).clone();
        next.revision = last;
        let mut apps: std::collections::BTreeSet<String> = Default::default();
        for c in &changes {
            match c.kind.as_str() {
                "machine" => {
                    if let Some(old) = next.machines.remove(&c.key) {
                        apps.insert(old.app.clone());
                    }
                    if let Some(m) = store.find_machine(&c.key)?
                        && m.state != State::Destroyed
                        && let Some(e) = MachineEntry::from_record(&m)
                    {
                        apps.insert(e.app.clone());
                        next.machines.insert(e.id.clone(), Arc::new(e));
                    }
                }
                "app" => {
                    apps.insert(c.key.clone());
                }
                "ip_assignment" => {
                    next.flycast.retain(|_, e| e.app != c.key);
                    next.flycast.extend(flycast_entries(store, Some(&c.key))?);
                }
                "certificate" => match store.get_certificate(&c.key)? {
                    Some(h) => {
                        next.hostnames.insert(c.key.clone(), Arc::new(h));
                    }
                    None => {
                        next.hostnames.remove(&c.key);
                    }
                },
                _ => {}
            }
        }
        for a in apps {
            next.rebuild_app(&a, store)?;
            if !next.apps.contains_key(&a) {
                // A deleted app's hostnames and Flycast addresses went with it.
                next.hostnames.retain(|_, h| h.app != a);
                next.flycast.retain(|_, e| e.app != a);
            }
        }
        self.install(next);
        Ok(true)
    }

    /// Follows the store until `shutdown` resolves; while the store fails, routing keeps using the last snapshot.
    pub async fn run(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        hangar_store::follow(
            store,
            "hangar-proxy: catalog",
            |s| self.catch_up(s),
            shutdown,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_threads_view_follows_every_install() {
        let h = CatalogHandle::new();
        let other = CatalogHandle::new();
        let first = h.view();
        assert_eq!(first.revision, 0);
        // Unchanged: the same view, not a new one.
        assert!(Arc::ptr_eq(&first, &h.view()));
        h.install(Catalog {
            revision: 7,
            ..Catalog::default()
        });
        assert_eq!(h.view().revision, 7);
        // Another handle on the same thread is not served this one's view.
        other.install(Catalog {
            revision: 3,
            ..Catalog::default()
        });
        assert_eq!(other.view().revision, 3);
        assert_eq!(h.view().revision, 7);
        // Another thread sees the latest too.
        let h2 = Arc::clone(&h);
        let seen = std::thread::spawn(move || h2.view().revision)
            .join()
            .expect("thread");
        assert_eq!(seen, 7);
    }

    #[test]
    fn custom_hostnames_match_exactly_then_by_wildcard() {
        let mut c = Catalog::default();
        for (h, app) in [("www.example.com", "a"), ("*.example.com", "b")] {
            c.hostnames
                .insert(h.into(), Arc::new(CertificateRecord::new(h, app, 0)));
        }
        assert_eq!(c.app_for_host("www.example.com").as_deref(), Some("a"));
        assert_eq!(c.app_for_host("WWW.Example.com:443").as_deref(), Some("a"));
        assert_eq!(c.app_for_host("api.example.com.").as_deref(), Some("b"));
        assert_eq!(c.app_for_host("example.com"), None);
        assert_eq!(c.app_for_host("a.b.example.com"), None);
        assert_eq!(c.app_for_host("[::1]:80"), None);
    }

    #[test]
    fn tls_and_http_ports_are_told_apart() {
        let m = entry(
            "m",
            "a",
            serde_json::json!([
                {"port": 80, "handlers": ["http"]},
                {"port": 443, "handlers": ["tls", "http"]},
                {"port": 5432, "handlers": ["tls"]},
                {"port": 5433, "handlers": ["pg_tls"]},
                {"port": 6000}
            ]),
        );
        let mut c = Catalog::default();
        c.machines.insert("m".into(), m);
        let ports = c.ports();
        assert_eq!(ports.get(&80), Some(&PortKind::Http));
        assert_eq!(ports.get(&443), Some(&PortKind::TlsHttp));
        assert_eq!(ports.get(&5432), Some(&PortKind::Tls));
        assert_eq!(ports.get(&5433), Some(&PortKind::PgTls));
        assert_eq!(ports.get(&6000), Some(&PortKind::Raw));
    }

    #[test]
    fn udp_ports_stand_apart_from_tcp_ones_and_are_seen_through_their_own_services() {
        let udp: MachineService = serde_json::from_value(serde_json::json!({
            "protocol": "udp", "internal_port": 5353, "ports": [{"port": 53}]
        }))
        .expect("service");
        let mut m = MachineEntry::clone(&entry(
            "m",
            "b",
            serde_json::json!([{"port": 80, "handlers": ["http"]}]),
        ));
        m.udp_services = vec![udp.clone()];
        m.config_services.insert(0, udp);
        let m = Arc::new(m);
        // App "a" sorts first and declares 53 too, but for TCP.
        let n = entry("n", "a", serde_json::json!([{"port": 53}]));
        let mut c = Catalog::default();
        for (app, machine) in [("b", &m), ("a", &n)] {
            c.machines.insert(machine.id.clone(), Arc::clone(machine));
            c.apps.insert(
                app.into(),
                Arc::new(AppEntry {
                    name: app.into(),
                    org: "personal".into(),
                    network: "default".into(),
                    machines: vec![Arc::clone(machine)],
                }),
            );
        }
        assert_eq!(c.udp_ports().into_iter().collect::<Vec<_>>(), vec![53]);
        assert_eq!(c.ports().get(&53), Some(&PortKind::Raw));
        assert_eq!(c.raw_app(53).map(|a| a.name.as_str()), Some("a"));
        let view = c.udp_app(53).expect("the udp app");
        assert_eq!(view.name, "b");
        assert_eq!(view.machines.len(), 1);
        assert_eq!(
            view.machines[0].service_for(53).map(|s| s.internal_port),
            Some(5353)
        );
        assert!(c.udp_app(80).is_none());
        // Health checks and autostop read both kinds, in the config's order.
        let order: Vec<&str> = m.all_services().map(|s| s.protocol.as_str()).collect();
        assert_eq!(order, ["udp", "tcp"]);
    }

    #[test]
    fn checks_of_udp_services_run_and_keep_their_names() {
        let svc = |proto: &str, port: i64| -> MachineService {
            serde_json::from_value(serde_json::json!({
                "protocol": proto, "internal_port": port, "ports": [{"port": port}],
                "checks": [{"type": "tcp", "port": port}]
            }))
            .expect("service")
        };
        let mut m = MachineEntry::clone(&entry("m", "a", serde_json::json!([])));
        m.config_services = vec![svc("udp", 53), svc("tcp", 8080)];
        m.services = vec![svc("tcp", 8080)];
        m.udp_services = vec![svc("udp", 53)];
        let names: Vec<String> = crate::health::specs(&m)
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(
            names,
            ["servicecheck-00-tcp-53", "servicecheck-01-tcp-8080"]
        );
    }

    fn entry(id: &str, app: &str, ports: serde_json::Value) -> Arc<MachineEntry> {
        let svc: MachineService = serde_json::from_value(serde_json::json!({
            "protocol": "tcp", "internal_port": 8080, "ports": ports
        }))
        .expect("service");
        Arc::new(MachineEntry {
            id: id.into(),
            app: app.into(),
            region: "local".into(),
            state: State::Started,
            addr: Ipv6Addr::LOCALHOST,
            cordoned: false,
            services: vec![svc.clone()],
            udp_services: Vec::new(),
            config_services: vec![svc],
            primary_region: None,
            stop_config: None,
            suspendable: true,
            checks: BTreeMap::new(),
            revision: 1,
        })
    }

    #[test]
    fn a_port_gets_the_longest_head_timeout_declared_on_it() {
        let hrt = |s: u64| serde_json::json!({"headers_read_timeout": s});
        let a = entry(
            "a1",
            "a",
            serde_json::json!([
                {"port": 80, "handlers": ["http"], "http_options": hrt(5)},
                {"start_port": 9000, "end_port": 9001, "handlers": ["http"], "http_options": hrt(2)},
                {"port": 81, "handlers": ["http"], "http_options": hrt(0)}
            ]),
        );
        let b = entry(
            "b1",
            "b",
            serde_json::json!([
                {"port": 80, "handlers": ["http"], "http_options": hrt(30)},
                {"port": 443, "handlers": ["tls", "http"], "http_options": hrt(4_000_000)},
                {"port": 8080, "handlers": ["http"]}
            ]),
        );
        let mut c = Catalog::default();
        for m in [&a, &b] {
            c.machines.insert(m.id.clone(), Arc::clone(m));
            c.apps.insert(
                m.app.clone(),
                Arc::new(AppEntry {
                    name: m.app.clone(),
                    org: "o".into(),
                    network: "n".into(),
                    machines: vec![Arc::clone(m)],
                }),
            );
        }
        let secs = |s| Duration::from_secs(s);
        let all = c.headers_read_timeouts();
        assert_eq!(all.get(&80), Some(&secs(30)), "the longer of 5 and 30");
        assert_eq!(all.get(&9000), Some(&secs(2)));
        assert_eq!(all.get(&9001), Some(&secs(2)));
        assert_eq!(all.get(&443), Some(&MAX_HEADERS_READ_TIMEOUT), "capped");
        assert_eq!(all.get(&81), None, "0 is not a timeout");
        assert_eq!(all.get(&8080), None, "none declared");
        assert_eq!(
            c.headers_read_timeout("a", 80),
            Some(secs(5)),
            "a Flycast address: its app's own"
        );
        assert_eq!(c.headers_read_timeout("a", 9001), Some(secs(2)));
        assert_eq!(c.headers_read_timeout("a", 443), None);
        assert_eq!(c.headers_read_timeout("a", 81), None);
        assert_eq!(c.headers_read_timeout("nope", 80), None);
    }
}
