//! `hangar-testkit`: the real system, in-process, for end-to-end tests.
//!
//! [`TestCluster::start`] opens a SQLite store in a temp dir, imports the offline busybox test
//! image, starts the real container driver (its own cgroup parent), the agent and the API on
//! `127.0.0.1:0`. Dropping the cluster stops the services and removes every container,
//! namespace, mount (volumes' loop devices too) and file it made, so tests leave nothing
//! behind even when they fail.

pub mod http;
pub mod load;
pub mod pebble;
pub mod postgres;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hangar_agent::{Agent, AgentConfig};
use hangar_api::{ApiConfig, ApiState, hash_token};
use hangar_domain::{HostFuture, MachineHost};
use hangar_image::testing::{TempDir, busybox_image, write_oci_archive};
use hangar_image::{ImageStore, ImportOptions, Puller, PullerConfig};
use hangar_runtime::{ContainerId, Driver, LinuxDriver, LinuxDriverConfig};
use hangar_store::{Sealer, SqliteStore, Store, TokenScope};

pub use http::{Client, Resp};

/// The image reference the test image is stored under.
pub const TEST_IMAGE: &str = "hangar-test/busybox:latest";
/// The admin token of every test cluster.
pub const ADMIN_TOKEN: &str = "test-admin-token";
/// The ACME DNS zone (DNS-01) of every test cluster's API; a proxy answering it is started
/// with the same zone (`hangar_proxy::acme::AcmeDns`).
pub const ACME_DNS_ZONE: &str = "acme.hangar.test";

/// A running in-process Hangar host.
pub struct TestCluster {
    /// API address.
    pub api: SocketAddr,
    /// The store.
    pub store: Arc<SqliteStore>,
    /// The driver.
    pub driver: Arc<LinuxDriver>,
    /// The data dir.
    pub dir: TempDir,
    /// Seals certificate keys (`DATA/tls/seal.key`), shared by the API and the proxies.
    pub sealer: Arc<Sealer>,
    host_id: u32,
    cgroup_parent: String,
    images: ImageStore,
    insecure_registries: Vec<String>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    agent_stop: Option<tokio::sync::watch::Sender<bool>>,
    agent_task: Option<tokio::task::JoinHandle<()>>,
    host: Arc<CurrentAgent>,
    proxy_stops: Vec<tokio::sync::watch::Sender<bool>>,
    egress: (hangar_net::egress::Egress, std::fs::File),
    /// The WireGuard gateway, when started with [`ClusterOptions::wireguard`].
    pub wireguard: Option<Arc<hangar_wireguard::Gateway>>,
    platform_logs: Arc<hangar_agent::PlatformLogs>,
}

/// Test clusters run in parallel processes: each takes one `/24` of 172.20.0.0/14 for its
/// machines' IPv4 (and its own nftables table), held by an exclusive lock on a file under
/// /run that the kernel releases if the process dies.
fn egress_slice() -> Result<(hangar_net::egress::Egress, std::fs::File), String> {
    let dir = Path::new("/run/hangar-test-pools");
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for n in 0u32..1024 {
        let path = dir.join(format!("{n}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if file.try_lock().is_ok() {
            let net = (172u32 << 24) | (20 << 16) | (n << 8);
            let pool = format!("{}/24", std::net::Ipv4Addr::from(net));
            let egress = hangar_net::egress::Egress::new(&pool, &format!("hangar_test_{n}"))
                .map_err(|e| e.to_string())?;
            return Ok((egress, file));
        }
    }
    Err("no free test IPv4 pool (1024 clusters at once?)".into())
}

/// The API's way to the agent of the moment (tests stop and start agents under one API).
#[derive(Default, Debug)]
struct CurrentAgent(std::sync::Mutex<Option<Arc<Agent<LinuxDriver>>>>);

impl CurrentAgent {
    fn get(&self) -> Result<Arc<Agent<LinuxDriver>>, hangar_domain::HostError> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| hangar_domain::HostError::Busy("the agent is not running".into()))
    }

    fn set(&self, agent: Option<Arc<Agent<LinuxDriver>>>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = agent;
    }
}

impl hangar_domain::Resumer for CurrentAgent {
    fn resume_now(&self, machine_id: &str) {
        if let Ok(agent) = self.get() {
            agent.resume_now(machine_id);
        }
    }
}

impl MachineHost for CurrentAgent {
    fn exec<'a>(
        &'a self,
        machine_id: &'a str,
        cmd: hangar_domain::ExecCommand,
    ) -> HostFuture<'a, hangar_domain::ExecResult> {
        Box::pin(async move { self.get()?.exec(machine_id, cmd).await })
    }

    fn processes<'a>(
        &'a self,
        machine_id: &'a str,
    ) -> HostFuture<'a, Vec<hangar_api_types::ProcessStat>> {
        Box::pin(async move { self.get()?.processes(machine_id).await })
    }

    fn logs<'a>(
        &'a self,
        machine_id: &'a str,
        tail: usize,
        follow: bool,
    ) -> HostFuture<'a, hangar_domain::Logs> {
        Box::pin(async move { self.get()?.logs(machine_id, tail, follow).await })
    }

    fn import_image<'a>(
        &'a self,
        reference: &'a str,
        archive: Box<dyn std::io::Read + Send>,
    ) -> HostFuture<'a, hangar_domain::ImportedImage> {
        Box::pin(async move { self.get()?.import_image(reference, archive).await })
    }

    fn app_logs<'a>(
        &'a self,
        app: &'a str,
        query: hangar_domain::AppLogQuery,
    ) -> HostFuture<'a, hangar_domain::AppLogs> {
        Box::pin(async move { self.get()?.app_logs(app, query).await })
    }
}

/// Options of [`TestCluster::start_with`].
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Registries (`host:port`) pulled from over plain http.
    pub insecure_registries: Vec<String>,
    /// Start the WireGuard gateway (userspace) listening on this UDP address; its endpoint in
    /// peers' configs is the bound address.
    pub wireguard: Option<SocketAddr>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field("api", &self.api)
            .finish()
    }
}

fn unique_n() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static N: AtomicU16 = AtomicU16::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn unique() -> String {
    format!("{}-{}", std::process::id(), unique_n())
}

async fn stopped(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl TestCluster {
    /// Boots a host with one org (`personal`), the admin token [`ADMIN_TOKEN`], and the test
    /// image imported. Must run inside a multi-threaded tokio runtime, as root.
    pub async fn start() -> Result<Self, String> {
        Self::start_with_registries(Vec::new()).await
    }

    /// [`TestCluster::start`], pulling from these plain-http registries (`host:port`).
    pub async fn start_with_registries(insecure_registries: Vec<String>) -> Result<Self, String> {
        Self::start_with(ClusterOptions {
            insecure_registries,
            ..ClusterOptions::default()
        })
        .await
    }

    /// [`TestCluster::start`] with options.
    pub async fn start_with(options: ClusterOptions) -> Result<Self, String> {
        let ClusterOptions {
            insecure_registries,
            wireguard,
        } = options;
        let dir = TempDir::new("hangar-e2e").map_err(|e| e.to_string())?;
        let store = Arc::new(SqliteStore::open(&dir.join("state.db")).map_err(|e| e.to_string())?);
        store
            .create_org("personal", "Personal", 0)
            .map_err(|e| e.to_string())?;
        store
            .create_token(&hash_token(ADMIN_TOKEN), &TokenScope::Admin, "admin", 0)
            .map_err(|e| e.to_string())?;
        let images = ImageStore::open(dir.join("images")).map_err(|e| e.to_string())?;
        let image = busybox_image().map_err(|e| e.to_string())?;
        let archive = dir.join("busybox.tar");
        write_oci_archive(&image, &archive, "latest").map_err(|e| e.to_string())?;
        let tag = hangar_image::Reference::parse(TEST_IMAGE).map_err(|e| e.to_string())?;
        images
            .import(
                &archive,
                &ImportOptions {
                    tag: Some(tag),
                    ..ImportOptions::default()
                },
            )
            .map_err(|e| e.to_string())?;
        let init = hangar_runtime::testing::static_init().map_err(|e| e.to_string())?;
        let cgroup_parent = format!("hangar-test-{}", unique());
        let driver = Arc::new(
            LinuxDriver::new(LinuxDriverConfig {
                state_dir: dir.join("runtime"),
                init_binary: init,
                cgroup_parent: cgroup_parent.clone(),
            })
            .map_err(|e| e.to_string())?,
        );
        let dyn_store: Arc<dyn Store> = store.clone();
        // A host id of its own per cluster keeps bridges and addresses of parallel tests apart.
        // Never 0: that host field is Flycast's and WireGuard peers'.
        let host_id =
            (u32::from_le_bytes(*b"hgrt") ^ std::process::id() ^ (u32::from(unique_n()) << 20))
                .max(1);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let api = listener.local_addr().map_err(|e| e.to_string())?;
        let egress = egress_slice()?;
        // The WireGuard gateway: an interface of this cluster's own (named after its host
        // id), its rules in the cluster's isolation tables.
        let gateway = match wireguard {
            Some(listen) => {
                let mix = u64::from(host_id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let mut config = hangar_wireguard::GatewayConfig::new(
                    &format!("hgrwg{:08x}", (mix >> 32) as u32),
                    listen,
                    dir.join("wireguard/private.key"),
                    host_id,
                );
                config.nft_table = Some(egress.0.table().to_string());
                config.backend = hangar_wireguard::gateway::Backend::Userspace;
                Some(hangar_wireguard::Gateway::start(config).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let (tx, rx) = tokio::sync::watch::channel(false);
        let host = Arc::new(CurrentAgent::default());
        let sealer =
            Arc::new(Sealer::load_or_create(&dir.join("tls/seal.key")).map_err(|e| e.to_string())?);
        let state = ApiState::new(
            dyn_store,
            ApiConfig {
                host_id,
                // Three regions on one host, for placement and region routing tests.
                regions: vec!["local".into(), "ams".into(), "fra".into()],
                // Proxies started by tests may run ACME (against pebble).
                acme_enabled: true,
                acme_dns_zone: Some(ACME_DNS_ZONE.into()),
                wireguard: gateway.as_ref().map(|g| hangar_api::WireguardGateway {
                    endpoint: g.listen_addr().to_string(),
                    public_key: g.public_key().to_base64(),
                }),
                ..ApiConfig::default()
            },
        )
        .with_host(host.clone())
        .with_sealer(sealer.clone());
        let t1 = tokio::spawn(async move {
            let _ = hangar_api::run(listener, state, stopped(rx)).await;
        });
        let platform_logs = hangar_agent::PlatformLogs::open(
            dir.join("logs"),
            hangar_agent::PLATFORM_LOG_FILE_LIMIT,
        )
        .map_err(|e| e.to_string())?;
        let mut cluster = Self {
            api,
            store,
            driver,
            dir,
            sealer,
            host_id,
            cgroup_parent,
            images,
            insecure_registries,
            stop: Some(tx),
            tasks: vec![t1],
            agent_stop: None,
            agent_task: None,
            host,
            proxy_stops: Vec::new(),
            egress,
            wireguard: gateway.clone(),
            platform_logs,
        };
        cluster.start_agent()?;
        if let Some(g) = gateway {
            let (tx, rx) = tokio::sync::watch::channel(false);
            let store: Arc<dyn Store> = cluster.store.clone();
            cluster.tasks.push(tokio::spawn(g.run(store, stopped(rx))));
            cluster.proxy_stops.push(tx);
        }
        Ok(cluster)
    }

    /// Starts the agent (again): like a daemon restart for the host side; running machines
    /// are re-adopted.
    pub fn start_agent(&mut self) -> Result<(), String> {
        let puller = Puller::new(
            self.images.clone(),
            PullerConfig {
                insecure_registries: self.insecure_registries.clone(),
                ..PullerConfig::default()
            },
        )
        .map_err(|e| e.to_string())?;
        let dyn_store: Arc<dyn Store> = self.store.clone();
        let agent = Agent::new(
            dyn_store,
            self.driver.clone(),
            self.images.clone(),
            puller,
            AgentConfig {
                machines_dir: self.dir.join("machines"),
                volumes_dir: self.dir.join("volumes"),
                host_id: self.host_id,
                log_limit_bytes: 1 << 20,
                egress: Some(self.egress.0.clone()),
                // The isolation tables are named like the cluster's egress table.
                isolation: hangar_net::isolation::Isolation::new(self.egress.0.table()).ok(),
                sealer: Some(self.sealer.clone()),
                platform_logs: Some(self.platform_logs.clone()),
            },
        );
        self.host.set(Some(agent.clone()));
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.agent_task = Some(tokio::spawn(async move {
            if let Err(e) = hangar_agent::run(agent, stopped(rx)).await {
                eprintln!("agent stopped: {e}");
            }
        }));
        self.agent_stop = Some(tx);
        Ok(())
    }

    /// Stops the agent abruptly (its tasks are aborted mid-step), leaving machines running.
    pub async fn kill_agent(&mut self) {
        self.host.set(None);
        if let Some(t) = self.agent_task.take() {
            t.abort();
            let _ = t.await;
        }
        self.agent_stop = None;
    }

    /// Starts an edge proxy over this cluster's store (stopped with the cluster). Unless the
    /// config says otherwise, it opens certificate keys with the cluster's sealer, keeps its
    /// host CA in `DATA/tls` and tells the running agent of resumes (`resumer`).
    pub fn start_proxy(
        &mut self,
        mut config: hangar_proxy::ProxyConfig,
    ) -> Arc<hangar_proxy::Proxy> {
        if config.tls.sealer.is_none() {
            config.tls.sealer = Some(self.sealer.clone());
        }
        if config.tls.ca_dir.is_none() {
            config.tls.ca_dir = Some(self.dir.join("tls"));
        }
        if config.platform_log.is_none() {
            config.platform_log = Some(self.platform_logs.clone());
        }
        if config.resumer.is_none() {
            config.resumer = Some(self.host.clone());
        }
        let proxy = hangar_proxy::Proxy::new(self.store.clone(), config);
        let p = proxy.clone();
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.tasks.push(tokio::spawn(async move {
            let _ = hangar_proxy::run(p, stopped(rx)).await;
        }));
        self.proxy_stops.push(tx);
        proxy
    }

    /// Starts the private DNS over this cluster's store (stopped with the cluster): the
    /// operators' listener on `127.0.0.1:0` (its address: [`hangar_dns::Dns::operator_addr`]),
    /// the cluster's networks at their `…::3`, the relay to this cluster's API, forwarding to
    /// `upstreams` (loopback fakes in tests, never the host's resolvers).
    pub async fn start_dns(
        &mut self,
        upstreams: Vec<SocketAddr>,
    ) -> Result<Arc<hangar_dns::Dns>, String> {
        let dns = hangar_dns::Dns::new(
            self.store.clone(),
            hangar_dns::DnsConfig {
                host_id: self.host_id,
                operator_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                upstreams,
                api_upstream: Some(self.api),
                ..hangar_dns::DnsConfig::default()
            },
        );
        let d = dns.clone();
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.tasks.push(tokio::spawn(async move {
            let _ = hangar_dns::run(d, stopped(rx)).await;
        }));
        self.proxy_stops.push(tx);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while dns.operator_addr().is_none() {
            if std::time::Instant::now() > deadline {
                return Err("the DNS server did not start".into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok(dns)
    }

    /// This cluster's host id (6PN addresses, service addresses).
    pub fn host_id(&self) -> u32 {
        self.host_id
    }

    /// The name of this cluster's nftables tables (`ip`: IPv4 NAT; `inet`, `bridge`:
    /// isolation).
    pub fn nft_table(&self) -> &str {
        self.egress.0.table()
    }

    /// An admin API client.
    pub fn client(&self) -> Client {
        Client::new(self.api, Some(ADMIN_TOKEN))
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A machine's directory.
    pub fn machine_dir(&self, id: &str) -> PathBuf {
        self.dir.join("machines").join(id)
    }

    /// What a machine wrote to stdout/stderr.
    pub fn machine_log(&self, id: &str) -> String {
        std::fs::read_to_string(self.machine_dir(id).join("logs/machine.log")).unwrap_or_default()
    }

    /// Where the cluster keeps apps' platform lines (shared by its agents and proxies).
    pub fn platform_logs(&self) -> Arc<hangar_agent::PlatformLogs> {
        self.platform_logs.clone()
    }

    /// The running agent (`None` after [`TestCluster::kill_agent`]): for its `/metrics`
    /// exposition (`render_metrics`) or to run its scraper of app metrics at a test's pace.
    pub fn agent(&self) -> Option<Arc<Agent<LinuxDriver>>> {
        self.host.get().ok()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
        for t in &self.tasks {
            t.abort();
        }
        if let Some(t) = self.agent_task.take() {
            t.abort();
            // On a multi-threaded runtime the agent's workers run on while this thread
            // cleans up: a machine's network being made (synchronous `ip` runs, which an
            // abort does not stop) would be left behind, made after the cleanup looked. So
            // the agent ends, then its last step. (On a current-thread runtime nothing runs
            // while this thread is here, and nothing could end.)
            let multi = tokio::runtime::Handle::try_current()
                .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
            if multi {
                let agent = self
                    .host
                    .0
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                while !(t.is_finished() && agent.as_ref().is_none_or(|a| a.is_idle()))
                    && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
        // A create the agent had under way (on a blocking thread, which an abort does not
        // stop) finishes before anything is looked at, and none starts after: a container
        // made after the cleanup below would be left behind.
        if !self.driver.close(std::time::Duration::from_secs(60)) {
            eprintln!("TestCluster cleanup: a container create is still under way after 60 s");
        }
        // Remove everything the machines left, whatever state the test ended in.
        let machines: Vec<_> = self
            .store
            .list_apps(None)
            .unwrap_or_default()
            .iter()
            .flat_map(|a| self.store.list_machines(&a.name, true).unwrap_or_default())
            .collect();
        {
            for m in machines {
                if let Ok(id) = ContainerId::parse(&m.id) {
                    let _ = self.driver.delete(&id);
                }
                let _ = hangar_image::remove_rootfs(&self.machine_dir(&m.id));
                if let Ok(addr) = m.private_ip.parse() {
                    let v4 = std::fs::read_to_string(self.machine_dir(&m.id).join("ipv4"))
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                    let _ = hangar_net::MachineNet::new(&m.id, addr)
                        .with_ipv4(v4)
                        .remove();
                }
            }
        }
        if let Ok(list) = self.driver.list() {
            for c in list {
                let _ = self.driver.delete(&c.id);
            }
        }
        // Volume mounts and loop devices (their machines are gone by now).
        hangar_agent::release_volumes(&self.dir.join("volumes"));
        let _ = self.driver.cgroups().remove(Path::new(&self.cgroup_parent));
        if let Ok(networks) = self.store.list_networks() {
            for n in networks {
                let _ = hangar_net::Network::new(n.id, self.host_id).remove();
            }
        }
        let _ = self.egress.0.remove();
        if let Ok(iso) = hangar_net::isolation::Isolation::new(self.egress.0.table()) {
            let _ = iso.remove();
        }
    }
}
