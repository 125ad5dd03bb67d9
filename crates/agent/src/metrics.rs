//! Metrics of the machines on this host (PLATFORM.md §6.1), for the daemon's `/metrics`:
//!
//! - `fly_instance_*` for every machine not destroyed: `fly_instance_up`, the last exit
//!   (`fly_instance_exit_code`, `fly_instance_exit_oom`, from the store's exit events, so they
//!   survive agent restarts), and for machines with a container (started or suspended) CPU
//!   and memory from the cgroup and network counters of `eth0` read in the machine's network
//!   namespace (`/proc/<init pid>/net/dev`). Every sample has `app`, `region`, `instance` (the
//!   machine id) and `host` (this host's id in hex). All are gauges, as on Fly.io.
//! - the agent's health (`hangar_agent_*`) and the scraper's (`hangar_scrape_*`).
//! - the app's own metrics: [`run_scraper`] fetches `http://[<6PN address>]:<port><path>` of
//!   every started machine whose config has `metrics` (fly.toml `[metrics]`) every 15 s,
//!   bounded in time (5 s), size (16 MiB) and samples (10 000 per machine), and keeps the
//!   latest samples per machine, relabelled with `app`, `region` and `instance` (the platform's
//!   labels overwrite the app's). A failed scrape drops the machine's samples (they would be
//!   stale), as does a machine stopping or being destroyed. Families named `fly_*` or
//!   `hangar_*` are the platform's: an app can not serve them (they are dropped and counted).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::Ipv6Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hangar_domain::State;
use hangar_metrics::{
    Counter, DURATION_BUCKETS, Families, Family, Gauge, Histogram, ParseLimits, Registry,
};
use hangar_runtime::{ContainerId, Driver, Stats};
use hangar_store::MachineRecord;

use crate::{Agent, lock};

/// How the scraper of app metrics works.
#[derive(Debug, Clone)]
pub struct ScraperConfig {
    /// Time between two scrapes of a machine (15 s on Fly.io).
    pub interval: Duration,
    /// Longest a scrape may take, connect to last byte.
    pub timeout: Duration,
    /// Largest response read (16 MiB on Fly.io); larger ones fail the scrape.
    pub max_body_bytes: usize,
    /// Samples kept per machine; further ones are dropped and counted.
    pub max_samples_per_machine: usize,
    /// Machines scraped at once.
    pub concurrency: usize,
}

impl Default for ScraperConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(5),
            max_body_bytes: 16 << 20,
            max_samples_per_machine: 10_000,
            concurrency: 4,
        }
    }
}

/// Family-name prefixes only the platform serves.
const RESERVED_PREFIXES: [&str; 2] = ["fly_", "hangar_"];

/// The latest scrape of one machine.
#[derive(Debug)]
struct Scraped {
    app: String,
    region: String,
    /// Families with the platform's labels; empty after a failure.
    families: Vec<Family>,
    samples: usize,
    ok: bool,
    seconds: f64,
}

/// The agent's metric state: counters of its own work and the latest scraped samples.
#[derive(Debug)]
pub(crate) struct AgentMetrics {
    registry: Registry,
    /// Machine id → its latest scrape (only machines that are scrape targets).
    scraped: Mutex<BTreeMap<String, Scraped>>,
    scrape_seconds: Arc<Histogram>,
    in_flight: Arc<Gauge>,
    targets: Arc<Gauge>,
    rounds: Arc<Counter>,
    malformed: Arc<Counter>,
    dropped_limit: Arc<Counter>,
    dropped_reserved: Arc<Counter>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        let registry = Registry::new();
        let scrape_seconds = registry.histogram(
            "hangar_scrape_duration_seconds",
            "Time taken by scrapes of app metrics.",
            &[],
            &DURATION_BUCKETS,
        );
        let in_flight = registry.gauge(
            "hangar_scrape_in_flight",
            "Scrapes of app metrics under way.",
            &[],
        );
        let targets = registry.gauge(
            "hangar_scrape_targets",
            "Started machines whose config asks for their metrics to be scraped.",
            &[],
        );
        let rounds = registry.counter(
            "hangar_scrape_rounds_total",
            "Rounds of scrapes of every target.",
            &[],
        );
        let malformed = registry.counter(
            "hangar_scrape_malformed_lines_total",
            "Lines of scraped app metrics that did not parse (skipped).",
            &[],
        );
        let dropped = |reason| {
            registry.counter(
                "hangar_scrape_dropped_samples_total",
                "Scraped samples not kept: over the per-machine limit, or in a family only the platform may serve.",
                &[("reason", reason)],
            )
        };
        let dropped_limit = dropped("limit");
        let dropped_reserved = dropped("reserved");
        Self {
            scrape_seconds,
            in_flight,
            targets,
            rounds,
            malformed,
            dropped_limit,
            dropped_reserved,
            scraped: Mutex::new(BTreeMap::new()),
            registry,
        }
    }
}

impl AgentMetrics {
    fn result(&self, result: &str) {
        self.registry
            .counter(
                "hangar_scrapes_total",
                "Scrapes of app metrics, by result (ok, timeout, connect, http, status, too_large, config, parse).",
                &[("result", result)],
            )
            .inc();
    }

    fn error(&self, source: &str) {
        self.registry
            .counter(
                "hangar_agent_metrics_errors_total",
                "Failures while collecting machine metrics, by source (store, driver).",
                &[("source", source)],
            )
            .inc();
    }
}

const UP_HELP: &str = "1 when the machine is started, 0 otherwise.";

impl<D: Driver> Agent<D> {
    /// Every metric family this host shows on `/metrics`: `fly_instance_*` of its machines,
    /// the agent's and the scraper's health, and the apps' scraped samples.
    pub async fn metrics(self: &Arc<Self>) -> Families {
        let agent = Arc::clone(self);
        // Store queries and cgroup/proc reads are blocking file IO.
        match tokio::task::spawn_blocking(move || agent.collect_metrics()).await {
            Ok(families) => families,
            Err(_) => {
                self.metrics.error("collector");
                let mut f = Families::new();
                self.metrics.registry.collect(&mut f);
                f
            }
        }
    }

    /// [`Agent::metrics`] as a text exposition (format 0.0.4).
    pub async fn render_metrics(self: &Arc<Self>) -> String {
        self.metrics().await.render()
    }

    fn collect_metrics(&self) -> Families {
        let mut out = Families::new();
        let host = format!("{:04x}", self.config.host_id);
        let machines = self.store.all_live_machines().unwrap_or_else(|_| {
            self.metrics.error("store");
            Vec::new()
        });
        let needs_pids = machines
            .iter()
            .any(|m| matches!(m.state, State::Started | State::Suspended));
        let pids: BTreeMap<String, i32> = if needs_pids {
            match self.driver.list() {
                Ok(list) => list
                    .into_iter()
                    .filter_map(|c| Some((c.id.to_string(), c.pid?)))
                    .collect(),
                Err(_) => {
                    self.metrics.error("driver");
                    BTreeMap::new()
                }
            }
        } else {
            BTreeMap::new()
        };
        for m in &machines {
            let labels = [
                ("app", m.app.as_str()),
                ("region", m.region.as_str()),
                ("instance", m.id.as_str()),
                ("host", host.as_str()),
            ];
            let up = if m.state == State::Started { 1.0 } else { 0.0 };
            out.gauge("fly_instance_up", UP_HELP, &labels, up);
            if let Some((code, oom)) = self.last_exit(&m.id) {
                out.gauge(
                    "fly_instance_exit_code",
                    "Exit code of the machine's last exit (128 + signal when killed).",
                    &labels,
                    code as f64,
                );
                out.gauge(
                    "fly_instance_exit_oom",
                    "1 when the machine's last exit was an out-of-memory kill.",
                    &labels,
                    if oom { 1.0 } else { 0.0 },
                );
            }
            if !matches!(m.state, State::Started | State::Suspended) {
                continue;
            }
            if let Ok(cid) = ContainerId::parse(&m.id) {
                // A container that just went away has no cgroup: nothing to show.
                if let Ok(stats) = self.driver.stats(&cid) {
                    cpu_and_memory(&mut out, &labels, &stats);
                }
            }
            if let Some(text) = pids
                .get(&m.id)
                .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/net/dev")).ok())
            {
                net(&mut out, &labels, &text);
            }
        }
        self.health(&mut out, &machines, &host);
        self.metrics.registry.collect(&mut out);
        self.scraped_into(&mut out, &machines, &host);
        out
    }

    /// The code and OOM flag of the machine's last exit, from its newest exit event.
    fn last_exit(&self, id: &str) -> Option<(i64, bool)> {
        let events = self.store.events(id, 64).ok()?;
        events.iter().filter(|e| e.kind == "exit").find_map(|e| {
            let x = e.request.as_ref()?.get("exit_event")?;
            Some((
                x.get("exit_code")?.as_i64()?,
                x.get("oom_killed")
                    .and_then(serde_json::Value::as_bool)
                    .unwrap_or(false),
            ))
        })
    }

    fn health(&self, out: &mut Families, machines: &[MachineRecord], host: &str) {
        for s in State::ALL {
            let n = machines.iter().filter(|m| m.state == s).count();
            out.gauge(
                "hangar_agent_machines",
                "Machines of this host not destroyed, by state.",
                &[("state", s.as_str()), ("host", host)],
                n as f64,
            );
        }
        let gauges = [
            (
                "hangar_agent_workers",
                "Per-machine reconcile workers.",
                lock(&self.workers).len(),
            ),
            (
                "hangar_agent_watchers",
                "Machines watched for their exit.",
                lock(&self.watching).len(),
            ),
            (
                "hangar_agent_pending_exits",
                "Exits seen and not yet handed to the restart policy.",
                lock(&self.exits).len(),
            ),
            (
                "hangar_agent_tasks",
                "Agent tasks running (workers, watchers).",
                lock(&self.tasks)
                    .iter()
                    .filter(|t| !t.is_finished())
                    .count(),
            ),
        ];
        for (name, help, n) in gauges {
            out.gauge(name, help, &[("host", host)], n as f64);
        }
        for (kind, n, max) in [
            ("machine", self.log_followers(), crate::MAX_FOLLOWERS),
            ("app", self.app_log_followers(), crate::MAX_APP_FOLLOWERS),
        ] {
            out.gauge(
                "hangar_logs_followers",
                "Log streams followed now: one machine's, or an app's (all its machines).",
                &[("kind", kind), ("host", host)],
                n as f64,
            );
            out.gauge(
                "hangar_logs_followers_max",
                "Log streams that can be followed at once; more get 429.",
                &[("kind", kind), ("host", host)],
                max as f64,
            );
        }
        if let Some(p) = &self.config.platform_logs {
            p.collect_metrics(out, host);
        }
    }

    /// The scraped samples of machines still started (a machine that stopped or was
    /// destroyed since its last scrape shows nothing), and each target's scrape health.
    fn scraped_into(&self, out: &mut Families, machines: &[MachineRecord], host: &str) {
        let started: HashSet<&str> = machines
            .iter()
            .filter(|m| m.state == State::Started)
            .map(|m| m.id.as_str())
            .collect();
        let scraped = lock(&self.metrics.scraped);
        let mut conflicting = 0;
        for (id, s) in scraped
            .iter()
            .filter(|(id, _)| started.contains(id.as_str()))
        {
            let labels = [
                ("app", s.app.as_str()),
                ("region", s.region.as_str()),
                ("instance", id.as_str()),
                ("host", host),
            ];
            out.gauge(
                "hangar_scrape_up",
                "1 when the last scrape of the machine's metrics succeeded.",
                &labels,
                if s.ok { 1.0 } else { 0.0 },
            );
            out.gauge(
                "hangar_scrape_samples",
                "Samples kept from the machine's last scrape.",
                &labels,
                s.samples as f64,
            );
            out.gauge(
                "hangar_scrape_last_duration_seconds",
                "Time the machine's last scrape took.",
                &labels,
                s.seconds,
            );
        }
        for s in scraped
            .iter()
            .filter(|(id, _)| started.contains(id.as_str()))
            .map(|(_, s)| s)
        {
            for f in &s.families {
                conflicting += out.merge(f.clone());
            }
        }
        out.gauge(
            "hangar_scrape_conflicting_samples",
            "Scraped samples left out of this exposition: their family has another type elsewhere.",
            &[("host", host)],
            conflicting as f64,
        );
    }
}

fn with<'a>(
    labels: &[(&'a str, &'a str)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    labels.iter().chain(extra).copied().collect()
}

fn cpu_and_memory(out: &mut Families, labels: &[(&str, &str)], s: &Stats) {
    // Hosts that do not split user/system time: all of it counts as user time.
    let (user, system) = if s.cpu_user_ns == 0 && s.cpu_system_ns == 0 {
        (s.cpu_usage_ns, 0)
    } else {
        (s.cpu_user_ns, s.cpu_system_ns)
    };
    for (mode, ns) in [("user", user), ("system", system)] {
        out.gauge(
            "fly_instance_cpu",
            "CPU time used by the machine, in centiseconds (cgroup totals: cpu_id 0 is all CPUs).",
            &with(labels, &[("cpu_id", "0"), ("mode", mode)]),
            (ns / 10_000_000) as f64,
        );
    }
    let total = s.memory_limit.unwrap_or_else(host_memory);
    let used = s.memory_bytes.min(total);
    let free = total - used;
    let ms = &s.memory_stat;
    let memory = [
        (
            "mem_total",
            "Memory the machine may use (its limit), bytes.",
            total,
        ),
        ("mem_free", "Memory limit minus memory in use, bytes.", free),
        (
            "mem_available",
            "Memory the machine can still get (free plus reclaimable page cache), bytes.",
            free.saturating_add(ms.inactive_file).min(total),
        ),
        ("cached", "Page cache, bytes.", ms.cache),
        ("active", "Recently used memory, bytes.", ms.active),
        ("inactive", "Memory not recently used, bytes.", ms.inactive),
        (
            "dirty",
            "Memory waiting to be written back, bytes.",
            ms.dirty,
        ),
        (
            "writeback",
            "Memory being written back, bytes.",
            ms.writeback,
        ),
        ("shmem", "Shared memory and tmpfs, bytes.", ms.shmem),
        (
            "slab",
            "Kernel slab memory, bytes (0 where the cgroup does not say).",
            ms.slab,
        ),
    ];
    for (name, help, v) in memory {
        out.gauge(
            &format!("fly_instance_memory_{name}"),
            help,
            labels,
            v as f64,
        );
    }
}

/// The host's memory (for machines without a memory limit).
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb.saturating_mul(1024))
        })
        .unwrap_or(0)
}

const NET_RECV: [&str; 8] = [
    "bytes",
    "packets",
    "errs",
    "drop",
    "fifo",
    "frame",
    "compressed",
    "multicast",
];
const NET_SENT: [&str; 8] = [
    "bytes",
    "packets",
    "errs",
    "drop",
    "fifo",
    "colls",
    "carrier",
    "compressed",
];

/// The 16 counters of `dev` in the text of a `/proc/<pid>/net/dev`.
fn net_dev(text: &str, dev: &str) -> Option<[u64; 16]> {
    let line = text.lines().find_map(|l| {
        let (name, rest) = l.split_once(':')?;
        (name.trim() == dev).then_some(rest)
    })?;
    let mut out = [0u64; 16];
    let mut fields = line.split_whitespace();
    for v in &mut out {
        *v = fields.next()?.parse().ok()?;
    }
    Some(out)
}

fn net(out: &mut Families, labels: &[(&str, &str)], text: &str) {
    let Some(c) = net_dev(text, "eth0") else {
        return;
    };
    let labels = with(labels, &[("device", "eth0")]);
    let names = NET_RECV
        .iter()
        .map(|n| ("recv", *n))
        .chain(NET_SENT.iter().map(|n| ("sent", *n)));
    for ((dir, what), v) in names.zip(c) {
        out.gauge(
            &format!("fly_instance_net_{dir}_{what}"),
            "Network interface counter of the machine, as in /proc/net/dev.",
            &labels,
            v as f64,
        );
    }
}

/// A machine to scrape.
#[derive(Debug, Clone)]
struct Target {
    id: String,
    app: String,
    region: String,
    url: String,
}

impl Target {
    /// The scrape target of a started machine whose config has `metrics`; `Err` when that
    /// config can not be scraped (no port, port out of range, bad address).
    fn of(m: &MachineRecord) -> Option<Result<Self, ()>> {
        let cfg = m.config.metrics.as_ref()?;
        Some(Self::url(m, cfg).map(|url| Self {
            id: m.id.clone(),
            app: m.app.clone(),
            region: m.region.clone(),
            url,
        }))
    }

    fn url(m: &MachineRecord, cfg: &hangar_api_types::MachineMetrics) -> Result<String, ()> {
        let port = cfg
            .port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
            .ok_or(())?;
        let ip: Ipv6Addr = m.private_ip.parse().map_err(|_| ())?;
        let path = cfg.path.as_deref().unwrap_or("/metrics");
        let slash = if path.starts_with('/') { "" } else { "/" };
        // `https`: TLS to the machine's own server on its private address; there is no name to
        // verify the certificate against, so it is not verified (the address is the identity).
        let scheme = if cfg.https == Some(true) {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://[{ip}]:{port}{slash}{path}");
        // Rejects what does not make a URL (and normalises the path's escapes).
        reqwest::Url::parse(&url).map(String::from).map_err(|_| ())
    }
}

/// Why a scrape failed (the `result` label).
type Failure = &'static str;

async fn fetch(client: &reqwest::Client, url: &str, max: usize) -> Result<Vec<u8>, Failure> {
    let mut resp = client
        .get(url)
        .header(
            reqwest::header::ACCEPT,
            "text/plain;version=0.0.4;q=1,*/*;q=0.1",
        )
        .send()
        .await
        .map_err(failure)?;
    if !resp.status().is_success() {
        return Err("status");
    }
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err("too_large");
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(failure)? {
        if body.len() + chunk.len() > max {
            return Err("too_large");
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn failure(e: reqwest::Error) -> Failure {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "http"
    }
}

fn client(config: &ScraperConfig) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        // Machines are reached directly, never through a proxy from the environment, and a
        // redirect can not send the scraper anywhere else.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.timeout)
        .timeout(config.timeout)
        .pool_max_idle_per_host(0)
        .danger_accept_invalid_certs(true)
        .user_agent(concat!("hangar-scraper/", env!("CARGO_PKG_VERSION")))
        .build()
}

impl<D: Driver> Agent<D> {
    /// One round: every target once, `concurrency` at a time.
    async fn scrape_round(self: &Arc<Self>, client: &reqwest::Client, config: &ScraperConfig) {
        let machines = match self.store.all_live_machines() {
            Ok(m) => m,
            Err(_) => {
                self.metrics.error("store");
                return;
            }
        };
        let mut targets = Vec::new();
        for m in machines.iter().filter(|m| m.state == State::Started) {
            match Target::of(m) {
                Some(Ok(t)) => targets.push(t),
                Some(Err(())) => self.metrics.result("config"),
                None => {}
            }
        }
        {
            // Machines that stopped, were destroyed or no longer ask: their samples go.
            let keep: HashSet<&str> = targets.iter().map(|t| t.id.as_str()).collect();
            lock(&self.metrics.scraped).retain(|id, _| keep.contains(id.as_str()));
        }
        self.metrics.targets.set(targets.len() as f64);
        self.metrics.rounds.inc();
        let mut set = tokio::task::JoinSet::new();
        let mut pending = targets.into_iter();
        loop {
            while set.len() < config.concurrency.max(1) {
                let Some(t) = pending.next() else { break };
                let agent = Arc::clone(self);
                let client = client.clone();
                let config = config.clone();
                set.spawn(async move { agent.scrape(&client, &config, t).await });
            }
            self.metrics.in_flight.set(set.len() as f64);
            if set.join_next().await.is_none() {
                break;
            }
        }
        self.metrics.in_flight.set(0.0);
    }

    async fn scrape(self: &Arc<Self>, client: &reqwest::Client, config: &ScraperConfig, t: Target) {
        let start = Instant::now();
        let body =
            tokio::time::timeout(config.timeout, fetch(client, &t.url, config.max_body_bytes))
                .await
                .unwrap_or(Err("timeout"));
        let seconds = start.elapsed().as_secs_f64();
        self.metrics.scrape_seconds.observe(seconds);
        let mut scraped = Scraped {
            app: t.app.clone(),
            region: t.region.clone(),
            families: Vec::new(),
            samples: 0,
            ok: false,
            seconds,
        };
        match body {
            Ok(body) => {
                let limits = ParseLimits {
                    max_samples: config.max_samples_per_machine,
                    max_families: config.max_samples_per_machine,
                    ..ParseLimits::default()
                };
                let labels = (t.app.clone(), t.region.clone(), t.id.clone());
                // Up to 16 MiB of text: parse off the async threads.
                let parsed = tokio::task::spawn_blocking(move || {
                    let text = String::from_utf8_lossy(&body);
                    let mut p = hangar_metrics::parse(&text, &limits);
                    let before = p.samples;
                    p.families
                        .retain(|f| !RESERVED_PREFIXES.iter().any(|r| f.name.starts_with(r)));
                    let kept: usize = p.families.iter().map(|f| f.samples.len()).sum();
                    hangar_metrics::relabel(
                        &mut p.families,
                        &[
                            ("app", &labels.0),
                            ("region", &labels.1),
                            ("instance", &labels.2),
                        ],
                    );
                    (p, before - kept)
                })
                .await;
                match parsed {
                    Ok((p, reserved)) => {
                        self.metrics.malformed.add(p.malformed_lines as u64);
                        self.metrics.dropped_limit.add(p.over_limit as u64);
                        self.metrics.dropped_reserved.add(reserved as u64);
                        scraped.samples = p.samples - reserved;
                        scraped.families = p.families;
                        scraped.ok = true;
                        self.metrics.result("ok");
                    }
                    Err(_) => self.metrics.result("parse"),
                }
            }
            Err(why) => self.metrics.result(why),
        }
        lock(&self.metrics.scraped).insert(t.id, scraped);
    }
}

/// Scrapes the app metrics of this host's machines (see the module docs) until `shutdown`
/// resolves; a round under way then stops at once (its requests are dropped).
pub async fn run_scraper<D: Driver>(
    agent: Arc<Agent<D>>,
    config: ScraperConfig,
    shutdown: impl Future<Output = ()> + Send,
) {
    tokio::pin!(shutdown);
    let client = match client(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hangar-agent: app metrics are not scraped: http client: {e}");
            shutdown.await;
            return;
        }
    };
    let mut tick = tokio::time::interval(config.interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        tokio::select! {
            () = &mut shutdown => break,
            () = agent.scrape_round(&client, &config) => {}
        }
    }
    lock(&agent.metrics.scraped).clear();
    agent.metrics.in_flight.set(0.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_lines() {
        let text = "\
Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  eth0:    9866      73    1    2    0     0          0         5     1532      18    0    3    0     0       0          0
";
        let c = net_dev(text, "eth0").expect("eth0");
        assert_eq!(c[0], 9866);
        assert_eq!(c[1], 73);
        assert_eq!(c[3], 2);
        assert_eq!(c[7], 5);
        assert_eq!(c[8], 1532);
        assert_eq!(c[11], 3);
        assert!(net_dev(text, "eth1").is_none());
        assert!(net_dev("eth0: 1 2 x\n", "eth0").is_none());
        let mut f = Families::new();
        net(&mut f, &[("instance", "m")], text);
        let sent = f.get("fly_instance_net_sent_drop").expect("family");
        assert_eq!(sent.samples[0].value, 3.0);
        assert_eq!(f.len(), 16);
    }

    #[test]
    fn memory_and_cpu_figures() {
        let mut f = Families::new();
        let stats = Stats {
            cpu_usage_ns: 3_000_000_000,
            memory_bytes: 100 << 20,
            memory_limit: Some(256 << 20),
            memory_stat: hangar_runtime::cgroup::MemoryStat {
                inactive_file: 10 << 20,
                cache: 20 << 20,
                ..Default::default()
            },
            ..Stats::default()
        };
        cpu_and_memory(&mut f, &[("instance", "m")], &stats);
        let v = |name: &str| f.get(name).expect(name).samples[0].value;
        assert_eq!(v("fly_instance_memory_mem_total"), (256u64 << 20) as f64);
        assert_eq!(v("fly_instance_memory_mem_free"), (156u64 << 20) as f64);
        assert_eq!(
            v("fly_instance_memory_mem_available"),
            (166u64 << 20) as f64
        );
        assert_eq!(v("fly_instance_memory_cached"), (20u64 << 20) as f64);
        let cpu = f.get("fly_instance_cpu").expect("cpu");
        // No user/system split: all of it is user time, in centiseconds.
        assert_eq!(cpu.samples[0].value, 300.0);
        assert_eq!(cpu.samples[1].value, 0.0);
        assert!(
            cpu.samples[0]
                .labels
                .contains(&("mode".to_string(), "user".to_string()))
        );
    }

    fn machine(metrics: serde_json::Value) -> MachineRecord {
        let config: hangar_api_types::MachineConfig =
            serde_json::from_value(serde_json::json!({ "image": "x", "metrics": metrics }))
                .expect("config");
        MachineRecord {
            id: "0123456789abcd".into(),
            app: "web".into(),
            name: "n".into(),
            region: "ams".into(),
            state: State::Started,
            instance_id: "i".into(),
            config,
            image_ref: None,
            private_ip: "fdaa:0:1:a7b:1:2:3:4".into(),
            host: "h".into(),
            cordoned: false,
            pending: None,
            restart_count: 0,
            created_at: 0,
            updated_at: 0,
            revision: 0,
        }
    }

    #[test]
    fn scrape_targets() {
        let url = |metrics| Target::of(&machine(metrics)).map(|t| t.map(|t| t.url));
        assert_eq!(
            url(serde_json::json!({"port": 9091, "path": "/metrics"})),
            Some(Ok("http://[fdaa:0:1:a7b:1:2:3:4]:9091/metrics".to_string()))
        );
        assert_eq!(
            url(serde_json::json!({"port": 9091})),
            Some(Ok("http://[fdaa:0:1:a7b:1:2:3:4]:9091/metrics".to_string()))
        );
        assert_eq!(
            url(serde_json::json!({"port": 8443, "path": "m x", "https": true})),
            Some(Ok("https://[fdaa:0:1:a7b:1:2:3:4]:8443/m%20x".to_string()))
        );
        // The path can not change the host.
        assert_eq!(
            url(serde_json::json!({"port": 8080, "path": "@evil.example/x"})),
            Some(Ok(
                "http://[fdaa:0:1:a7b:1:2:3:4]:8080/@evil.example/x".to_string()
            ))
        );
        assert_eq!(url(serde_json::json!({"path": "/m"})), Some(Err(())));
        assert_eq!(url(serde_json::json!({"port": 70000})), Some(Err(())));
        assert_eq!(url(serde_json::json!({"port": 0})), Some(Err(())));
        let mut m = machine(serde_json::json!({"port": 1}));
        m.config.metrics = None;
        assert!(Target::of(&m).is_none());
        m.config.metrics = machine(serde_json::json!({"port": 1})).config.metrics;
        m.private_ip = "10.0.0.1".into();
        assert_eq!(Target::of(&m).map(|t| t.map(|_| ())), Some(Err(())));
    }
}
