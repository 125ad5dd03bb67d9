//! `hangar-agent`: the host side of the machine lifecycle.
//!
//! Owns what runs on this host. It watches the store's change log; for every machine whose
//! state is transient with a pending operation (written by the API), it carries the operation
//! out with the runtime driver, the image store and host networking, and reports each step
//! back through the machine state machine (`hangar_domain::State::apply`). It supervises
//! running machines (exit → restart policy), and at start it re-adopts running containers,
//! redoes interrupted operations (every step is idempotent) and removes whatever on the host
//! belongs to no live machine. Each machine's network isolation rules (`hangar_net::isolation`)
//! are added with its network and removed with it, and rebuilt from the live machines at
//! start; its `/etc/resolv.conf` names the platform DNS at its network's `…::3`. Flycast
//! addresses allocated for its networks sit on their bridges, open to those networks'
//! machines on the apps' Flycast ports (`flycast`). It keeps the
//! host's volumes (`volumes`): sparse ext4 images,
//! loop-mounted while a machine uses them, grown, forked, snapshotted and removed as the
//! store asks.
//!
//! Must not: serve HTTP, or own facts the store owns (desired config); it only writes
//! observed state, events, resolved image refs, volume states and snapshot results.

mod app_logs;
mod flycast;
mod host;
mod ipv4;
mod logs;
mod metrics;
mod platform_log;
mod prepare;
mod reconcile;
mod volumes;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use hangar_domain::RestartTracker;
use hangar_image::{ImageStore, Puller};
use hangar_runtime::{Driver, ExitStatus};
use hangar_store::{Store, StoreError};
use tokio::sync::mpsc;

pub use app_logs::{MAX_APP_FOLLOWERS, MAX_SCAN};
pub use host::{EXEC_OUTPUT_LIMIT, MAX_EXECS, MAX_FOLLOWERS};
pub use metrics::{ScraperConfig, run_scraper};
pub use platform_log::{
    DEFAULT_FILE_LIMIT as PLATFORM_LOG_FILE_LIMIT, PlatformLogs, QUEUE as PLATFORM_LOG_QUEUE,
};
pub use reconcile::AgentError;
pub use volumes::release_volumes;

/// Settings of the agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Where machine directories live (`DATA/machines`).
    pub machines_dir: PathBuf,
    /// Where volume disks live (`DATA/volumes`).
    pub volumes_dir: PathBuf,
    /// This host's 32-bit id (6PN addresses).
    pub host_id: u32,
    /// Bytes of stdout/stderr kept per machine (rotated).
    pub log_limit_bytes: u64,
    /// Outbound IPv4 for machines (an address pool NATed by the host); `None`: IPv6 only.
    pub egress: Option<hangar_net::egress::Egress>,
    /// The nftables tables that keep networks apart and machines honest (see
    /// `hangar_net::isolation`): rebuilt from the live machines at start, a machine's rules
    /// added when its network is made and removed with it. `None`: no isolation (tests of
    /// the agent's logic only).
    pub isolation: Option<hangar_net::isolation::Isolation>,
    /// Opens app secrets (sealed by the API with the same host key); `None`: no secrets.
    pub sealer: Option<Arc<hangar_store::Sealer>>,
    /// Where apps' platform lines are kept (the agent writes `runner` lines there, the proxy
    /// `proxy` lines; app streams read them); `None`: app streams hold machines' output only.
    pub platform_logs: Option<Arc<PlatformLogs>>,
}

/// The agent. Generic over the runtime driver so logic can be tested with the fake driver.
pub struct Agent<D: Driver> {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) driver: Arc<D>,
    pub(crate) images: ImageStore,
    pub(crate) puller: Puller,
    pub(crate) config: AgentConfig,
    workers: Mutex<HashMap<String, mpsc::Sender<()>>>,
    /// Held by whoever acts on a machine's host state (its worker, garbage collection), so
    /// that a collection never races a create or start of the same machine.
    machine_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held while a network's bridge is made or used for a new machine, and while it is
    /// removed after its last machine here went, so that removal never takes a new machine's
    /// veth with it.
    network_locks: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
    pub(crate) exits: Mutex<HashMap<String, ExitStatus>>,
    pub(crate) watching: Mutex<HashMap<String, (u64, tokio::task::AbortHandle)>>,
    pub(crate) restarts: Mutex<HashMap<String, RestartTracker>>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
    pub(crate) metrics: metrics::AgentMetrics,
    /// True while the agent is stopped; log followers end when it turns true.
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
    pub(crate) followers: Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) app_followers: Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) ipv4_used: Mutex<Option<std::collections::HashSet<std::net::Ipv4Addr>>>,
    pub(crate) execs: Arc<tokio::sync::Semaphore>,
    pub(crate) volumes: volumes::Volumes,
    /// The Flycast addresses and rules applied on this host (`None`: not yet since start).
    pub(crate) flycast: Mutex<Option<flycast::Applied>>,
}

impl<D: Driver> std::fmt::Debug for Agent<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .finish()
    }
}

/// Most change-log entries read per batch.
const CHANGE_BATCH: usize = 1000;
/// How often every volume is looked at without a change (daily snapshots, retention).
const VOLUME_BEAT: std::time::Duration = std::time::Duration::from_secs(600);

impl<D: Driver> Agent<D> {
    /// An agent over its parts.
    pub fn new(
        store: Arc<dyn Store>,
        driver: Arc<D>,
        images: ImageStore,
        puller: Puller,
        config: AgentConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            driver,
            images,
            puller,
            volumes: volumes::Volumes::new(config.volumes_dir.clone()),
            flycast: Mutex::new(None),
            config,
            workers: Mutex::new(HashMap::new()),
            machine_locks: Mutex::new(HashMap::new()),
            network_locks: Mutex::new(HashMap::new()),
            exits: Mutex::new(HashMap::new()),
            watching: Mutex::new(HashMap::new()),
            restarts: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            metrics: metrics::AgentMetrics::default(),
            stop: tokio::sync::watch::channel(false).0,
            followers: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            app_followers: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            ipv4_used: Mutex::new(None),
            execs: Arc::new(tokio::sync::Semaphore::new(host::MAX_EXECS)),
        })
    }

    /// Asks the machine's worker to look at it again (coalesced: one pending kick at most).
    pub(crate) fn kick(self: &Arc<Self>, id: &str) {
        let mut workers = lock(&self.workers);
        let tx = workers.entry(id.to_string()).or_insert_with(|| {
            let (tx, mut rx) = mpsc::channel::<()>(1);
            let agent = Arc::clone(self);
            let id = id.to_string();
            let task = tokio::spawn(async move {
                while rx.recv().await.is_some() {
                    agent.reconcile(&id).await;
                }
            });
            self.track(task.abort_handle());
            tx
        });
        let _ = tx.try_send(());
    }

    /// Whether no worker holds a machine's or a network's lock now. Once the agent has
    /// stopped (its `run` ended or was dropped, which aborts its workers), `true` means
    /// nothing of it changes the host any more: a worker part-way through a synchronous step
    /// (a machine's network, made by `ip` runs) holds its lock until the step returns and
    /// the abort ends it. For harnesses that clean a host up after an agent.
    pub fn is_idle(&self) -> bool {
        let machines: Vec<_> = lock(&self.machine_locks).values().cloned().collect();
        let networks: Vec<_> = lock(&self.network_locks).values().cloned().collect();
        machines.iter().all(|l| l.try_lock().is_ok())
            && networks.iter().all(|l| l.try_lock().is_ok())
    }

    /// The lock of a machine's host state (see `machine_locks`).
    pub(crate) fn machine_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.machine_locks)
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// The lock of a network's bridge on this host (see `network_locks`).
    pub(crate) fn network_lock(&self, network_id: u32) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.network_locks)
            .entry(network_id)
            .or_default()
            .clone()
    }

    /// Drops a machine's lock once nobody holds or waits for it and it has no worker.
    pub(crate) fn release_machine_lock(&self, id: &str, held: Arc<tokio::sync::Mutex<()>>) {
        drop(held);
        let workers = lock(&self.workers);
        let mut locks = lock(&self.machine_locks);
        if !workers.contains_key(id) && locks.get(id).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(id);
        }
    }

    /// Remembers a spawned task so that stopping the agent stops it too.
    pub(crate) fn track(&self, h: tokio::task::AbortHandle) {
        let mut tasks = lock(&self.tasks);
        if tasks.len() >= 64 {
            tasks.retain(|t| !t.is_finished());
        }
        tasks.push(h);
    }

    /// Forgets a machine's worker (after it is destroyed).
    pub(crate) fn forget(&self, id: &str) {
        lock(&self.workers).remove(id);
        lock(&self.restarts).remove(id);
        if let Some((_, h)) = lock(&self.watching).remove(id) {
            h.abort();
        }
        lock(&self.exits).remove(id);
    }

    fn kick_all(self: &Arc<Self>) -> Result<(), StoreError> {
        for m in self.store.all_live_machines()? {
            self.kick(&m.id);
        }
        Ok(())
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs the agent until `shutdown` resolves. Machines keep running after it returns.
pub async fn run<D: Driver>(
    agent: Arc<Agent<D>>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AgentError> {
    // However `run` ends (returned, errored, or its task aborted), every worker and watcher
    // stops with it. Machines are not touched: they keep running and are re-adopted.
    let _stop_tasks = StopTasks(Arc::clone(&agent));
    agent.stop.send_replace(false);
    let mut rx = agent.store.subscribe();
    let mut last = agent.store.revision();
    if let Some(egress) = &agent.config.egress {
        egress
            .ensure()
            .map_err(|e| AgentError::Host(format!("IPv4 egress: {e}")))?;
    }
    if let Err(e) = agent.collect_garbage().await {
        eprintln!("hangar-agent: garbage collection at start: {e} (tried again later)");
    }
    agent.collect_platform_logs();
    agent.rebuild_isolation()?;
    // The rebuild emptied the Flycast rules: applied again in full.
    agent.reset_flycast();
    agent.sync_flycast_logged();
    agent.kick_all()?;
    agent.kick_volumes()?;
    // Daily snapshots and snapshot retention are looked at on this beat.
    let mut volume_beat =
        tokio::time::interval_at(tokio::time::Instant::now() + VOLUME_BEAT, VOLUME_BEAT);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            _ = volume_beat.tick() => {
                agent.kick_volumes()?;
                if let Err(e) = agent.collect_garbage().await {
                    eprintln!("hangar-agent: garbage collection: {e}");
                }
                continue;
            }
        }
        loop {
            match agent.store.changes_since(last, CHANGE_BATCH) {
                Ok(changes) => {
                    let Some(tail) = changes.last() else { break };
                    last = tail.revision;
                    let mut app_gone = false;
                    // Addresses, services and networks here may have changed.
                    let flycast = changes
                        .iter()
                        .any(|c| matches!(c.kind.as_str(), "machine" | "ip_assignment"));
                    for c in &changes {
                        match c.kind.as_str() {
                            "machine" => agent.kick(&c.key),
                            "volume" => agent.kick_volume(&c.key),
                            // A deleted app takes its machine rows with it: what ran for
                            // them is no longer in the store, so collect it now.
                            "app" => app_gone |= agent.store.get_app(&c.key)?.is_none(),
                            _ => {}
                        }
                    }
                    if app_gone {
                        if let Err(e) = agent.collect_garbage().await {
                            eprintln!("hangar-agent: garbage collection: {e} (tried again later)");
                        }
                        agent.collect_platform_logs();
                    }
                    if flycast {
                        agent.sync_flycast_logged();
                    }
                    if changes.len() < CHANGE_BATCH {
                        break;
                    }
                }
                Err(StoreError::Compacted { .. }) => {
                    last = agent.store.revision();
                    agent.kick_all()?;
                    agent.sync_flycast_logged();
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

struct StopTasks<D: Driver>(Arc<Agent<D>>);

impl<D: Driver> Drop for StopTasks<D> {
    fn drop(&mut self) {
        self.0.stop.send_replace(true);
        lock(&self.0.workers).clear();
        for t in lock(&self.0.tasks).drain(..) {
            t.abort();
        }
        for (_, (_, h)) in lock(&self.0.watching).drain() {
            h.abort();
        }
    }
}
