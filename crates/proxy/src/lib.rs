//! `hangar-proxy`: the edge proxy, a role of `hangard` (PLATFORM.md §3).
//!
//! Owns the data path from clients to machines: listeners on the public ports the apps'
//! services declare, TLS termination ([`tls`]: the app's automatic certificate from the host
//! CA, custom hostnames' certificates from the store, SNI, ALPN) with certificates for custom
//! hostnames issued and renewed over ACME ([`acme`]; DNS-01 answered by [`acme_dns`]), the
//! `http` handler (HTTP/1.1 and h2 from clients, HTTP/1.1 to machines), raw TCP passthrough
//! (plain, or the plaintext of a `tls`-only port or, after PostgreSQL's negotiation, of a
//! `pg_tls` one: [`pg_tls`]), routing by `Host` to `<app>.<domain>` or a custom hostname, balancing by
//! load against the services' soft and hard limits nearest region first, a bounded per-app
//! wait queue at the hard limit, autostart (a request wakes a stopped or suspended machine and
//! is held until its port accepts), autostop (idle machines stopped or suspended within the
//! interval), and `fly-replay`, and the services' health checks (run from here; a failing
//! service gets no traffic). It routes from an in-memory [`catalog`] fed by the store's change
//! log and keeps serving from its last view if the store is unavailable.
//!
//! Its only writes are autostart and autostop transitions ([`control`]), recorded like the
//! API's: through the machine state machine, as pending operations the agent carries out.
//!
//! Must not: run containers, serve the Machines API, or depend on another service crate.
//!
//! Services with the `proxy_proto` handler get the PROXY protocol header (v1, or v2 per
//! `proxy_proto_options`) before the client's bytes ([`proxy_proto`]).
//!
//! A port whose `http_options.h2_backend` is set reaches its machines over h2c (one
//! multiplexed connection per machine).
//!
//! Machines reach apps' Flycast addresses (§4.3) through the same paths: private listeners on
//! each address and service port, routing by destination address ([`flycast`]).
//!
//! UDP services are relayed per client flow to one machine each ([`udp`]).
//!
//! Not yet: OCSP stapling, UDP on Flycast addresses.

pub mod acme;
pub mod acme_dns;
pub mod autostop;
pub mod balance;
pub mod catalog;
pub mod control;
pub mod flycast;
pub mod h1;
pub mod health;
pub mod http;
pub mod metrics;
pub mod pg_tls;
pub mod pool;
pub mod proxy_proto;
pub mod replay;
pub mod replay_cache;
pub mod tcp;
pub mod tls;
pub mod udp;
pub mod upstream;
pub mod wake;
pub mod workers;
pub mod ws;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_store::Store;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::balance::{Loads, Regions};
use crate::catalog::{CatalogHandle, PortKind};
use crate::metrics::ProxyMetrics;
use crate::pool::Pool;
use crate::wake::Wakes;

/// Settings of the proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Region this proxy serves.
    pub region: String,
    /// Address the public listeners bind.
    pub bind: IpAddr,
    /// Listen port for a service port (e.g. 80 → 8080; 0 = any free port); ports not in the
    /// map listen on themselves.
    pub port_map: HashMap<u16, u16>,
    /// Apps answer at `<app>.<domain>`.
    pub domain: String,
    /// Distances between regions (`(a, b)` → any unit; symmetric).
    pub distances: HashMap<(String, String), u32>,
    /// How long a machine must be idle before autostop stops it.
    pub autostop_interval: Duration,
    /// How long a request waits for a woken machine.
    pub wake_timeout: Duration,
    /// How long a request waits for a slot when every machine is at its hard limit.
    pub queue_timeout: Duration,
    /// Requests one app may have waiting (for slots or wakes) before more get 503.
    pub max_queue_per_app: usize,
    /// Request bodies up to this size are buffered (retryable, replayable).
    pub replay_body_limit: usize,
    /// Connecting to a machine.
    pub connect_timeout: Duration,
    /// A client must send its request headers within this.
    pub headers_read_timeout: Duration,
    /// How long a machine may stay silent while a request waits on it (for its answer's
    /// head, then between reads of its body); a port's `http_options.idle_timeout` (seconds)
    /// replaces it for that port. Past it: 504 (`PC05`) before the head, the answer cut off
    /// after it.
    pub upstream_idle_timeout: Duration,
    /// Largest request head (larger gets 431).
    pub max_header_bytes: usize,
    /// Client connections open at once; more are closed at once.
    pub max_connections: usize,
    /// TLS termination, certificates and ACME.
    pub tls: tls::TlsConfig,
    /// Listen on the apps' Flycast addresses (their `http` and raw TCP ports, [`flycast`]).
    pub flycast: bool,
    /// Where its errors go as `proxy` lines of the app's log stream (§6.2); `None`: stderr.
    pub platform_log: Option<Arc<dyn hangar_domain::PlatformLog>>,
    /// The host's agent, told at once when a request's resume of a suspended machine is
    /// recorded (it thaws the machine then, not after reading the record); `None`: the
    /// agent finds the record as for any other start.
    pub resumer: Option<Arc<dyn hangar_domain::Resumer>>,
    /// Public connections from these networks (the operator's load balancers) must begin with
    /// a PROXY protocol header (v1 or v2), whose source is then the client.
    pub proxy_protocol_from: Vec<proxy_proto::Cidr>,
    /// Threads serving the public ports, each with its own runtime, sharing each port's socket
    /// ([`workers`]); 0: the caller's runtime. Default: one per core.
    pub workers: usize,
    /// A UDP flow silent both ways this long ends (and its machine may be stopped an
    /// autostop interval later) ([`udp`]).
    pub udp_idle_timeout: Duration,
    /// UDP flows (client addresses) one public port relays at once; datagrams of new
    /// clients past it are dropped.
    pub udp_max_flows: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            region: "local".into(),
            bind: IpAddr::from([127, 0, 0, 1]),
            port_map: HashMap::new(),
            domain: "localhost".into(),
            distances: HashMap::new(),
            autostop_interval: Duration::from_secs(30),
            wake_timeout: Duration::from_secs(20),
            queue_timeout: Duration::from_secs(5),
            max_queue_per_app: 256,
            replay_body_limit: 1 << 20,
            connect_timeout: Duration::from_secs(2),
            headers_read_timeout: Duration::from_secs(10),
            upstream_idle_timeout: Duration::from_secs(600),
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
            tls: tls::TlsConfig::default(),
            flycast: true,
            platform_log: None,
            resumer: None,
            proxy_protocol_from: Vec::new(),
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            udp_idle_timeout: Duration::from_secs(30),
            udp_max_flows: 4096,
        }
    }
}

/// The proxy.
pub struct Proxy {
    /// Settings.
    pub config: ProxyConfig,
    pub(crate) store: Arc<dyn Store>,
    /// The catalog it routes from.
    pub catalog: Arc<CatalogHandle>,
    /// Load per machine.
    pub loads: Loads,
    pub(crate) regions: Regions,
    pub(crate) wakes: Wakes,
    /// Cached `fly-replay` decisions.
    pub replay_cache: replay_cache::ReplayCache,
    pub(crate) pool: Arc<Pool>,
    /// Health check results.
    pub health: Arc<health::Health>,
    /// Its metrics.
    pub metrics: ProxyMetrics,
    listening: Mutex<HashMap<u16, SocketAddr>>,
    udp_listening: Mutex<HashMap<u16, SocketAddr>>,
    /// Public ports whose apps declare `headers_read_timeout`, and the time their clients
    /// get for a head (kept by [`run`] from the catalog; the others get the config's).
    head_timeouts: std::sync::RwLock<HashMap<u16, Duration>>,
    flycast_listening: Mutex<Vec<std::net::SocketAddrV6>>,
    connections: Arc<AtomicUsize>,
    /// The running workers' connection counts (while [`run`] runs).
    balance: Mutex<Option<Arc<workers::Balance>>>,
    pub(crate) tls: tls::TlsState,
    /// ACME challenge responses out now.
    pub challenges: Arc<acme::Challenges>,
    /// PostgreSQL cancel keys of open `pg_tls` connections → their machine.
    pub(crate) pg_keys: pg_tls::CancelKeys,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("config", &self.config)
            .finish()
    }
}

/// The request a logged error hit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestLog<'a> {
    /// `fly-request-id`.
    pub id: &'a str,
    /// Method.
    pub method: &'a str,
    /// The request target as received.
    pub url: &'a str,
    /// Status answered, when the error ended the request.
    pub status: Option<u16>,
}

/// What a §3.3 error code means, in the words of the app's log stream.
pub(crate) fn describe(code: &str) -> &'static str {
    match code {
        "PC01" => {
            "machine refused connection: is the app listening on the service's internal port, on 0.0.0.0 or [::] (not only 127.0.0.1)?"
        }
        "PC02" => "machine refused connection",
        "PC03" => "connection to the machine was reset",
        "PC04" => "connection to the machine was aborted",
        "PC05" => "timed out connecting to the machine",
        "PC06" => "could not connect to the machine",
        "PC07" => "could not reach a machine after retries",
        "PR01" => "no machine of the app can take the request (none started and healthy)",
        "PR02" => "app or machine not found",
        "PR03" | "PR04" => "no machine with capacity after retries",
        "PM03" => "the machine did not start in time",
        "PM07" => "could not start the machine",
        "PM08" => "the machine can not be started from its state",
        "PU02" => "incomplete HTTP request",
        "PA01" => "the request body is too large to retry or replay",
        "PA02" => "too many fly-replays",
        "PA03" => "invalid fly-replay from the machine",
        "PA04" => "the fly-replay target app does not exist",
        "PA05" => "the fly-replay target app is not allowed",
        c if c.starts_with("PT") => "TLS handshake failed",
        _ => "proxy error",
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A client connection counted against the limit until dropped.
struct ConnGuard(Arc<AtomicUsize>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Proxy {
    /// A proxy over `store`.
    pub fn new(store: Arc<dyn Store>, config: ProxyConfig) -> Arc<Self> {
        let regions = Regions {
            local: config.region.clone(),
            distances: config.distances.clone(),
        };
        let metrics = ProxyMetrics::new(&config.region);
        let tls = tls::TlsState::new(&config.tls).unwrap_or_else(|e| {
            eprintln!("hangar-proxy: {e}; using a host CA in memory");
            let fallback = tls::TlsConfig {
                ca_dir: None,
                ..config.tls.clone()
            };
            // A CA in memory needs nothing but randomness.
            tls::TlsState::new(&fallback).expect("a host CA in memory")
        });
        let pool = Arc::new(Pool::new(config.workers));
        let wakes = Wakes::new(config.resumer.clone());
        Arc::new(Self {
            config,
            store,
            catalog: CatalogHandle::new(),
            loads: Loads::default(),
            regions,
            wakes,
            replay_cache: replay_cache::ReplayCache::default(),
            pool,
            health: Arc::default(),
            metrics,
            listening: Mutex::new(HashMap::new()),
            udp_listening: Mutex::new(HashMap::new()),
            head_timeouts: std::sync::RwLock::new(HashMap::new()),
            flycast_listening: Mutex::new(Vec::new()),
            connections: Arc::new(AtomicUsize::new(0)),
            balance: Mutex::new(None),
            tls,
            challenges: Arc::default(),
            pg_keys: pg_tls::CancelKeys::default(),
        })
    }

    /// The host CA's certificate (PEM): clients trusting it verify the automatic
    /// certificates of `<app>.<domain>`.
    pub fn ca_certificate_pem(&self) -> String {
        self.tls.ca.pem().to_string()
    }

    /// Where each public service port is listening now.
    pub fn listening(&self) -> HashMap<u16, SocketAddr> {
        self.listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where each public UDP service port is bound now ([`udp`]).
    pub fn udp_listening(&self) -> HashMap<u16, SocketAddr> {
        self.udp_listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_udp_listening(&self, now: HashMap<u16, SocketAddr>) {
        *self.udp_listening.lock().unwrap_or_else(|p| p.into_inner()) = now;
    }

    /// The Flycast addresses and ports listened on now, sorted.
    pub fn flycast_listening(&self) -> Vec<std::net::SocketAddrV6> {
        self.flycast_listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_flycast_listening(&self, now: Vec<std::net::SocketAddrV6>) {
        *self
            .flycast_listening
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = now;
    }

    /// How long a client of `port` has for each request head: the longest
    /// `http_options.headers_read_timeout` declared on the port ([`catalog::Catalog::
    /// headers_read_timeouts`]; only `app`'s on its Flycast address), else the config's
    /// `headers_read_timeout`.
    pub fn head_timeout(&self, port: u16, app: Option<&str>) -> Duration {
        let declared = match app {
            None => self
                .head_timeouts
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&port)
                .copied(),
            Some(app) => self.catalog.snapshot().headers_read_timeout(app, port),
        };
        declared.unwrap_or(self.config.headers_read_timeout)
    }

    /// Replaces the head timeouts when they changed (compared under the read lock, which
    /// every connection takes, so an unchanged catalog never blocks them).
    fn set_head_timeouts(&self, now: HashMap<u16, Duration>) {
        let unchanged = *self.head_timeouts.read().unwrap_or_else(|p| p.into_inner()) == now;
        if !unchanged {
            *self
                .head_timeouts
                .write()
                .unwrap_or_else(|p| p.into_inner()) = now;
        }
    }

    /// Client connections open now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Acquire)
    }

    /// Whether a machine's service on a public port passes its health checks.
    pub fn healthy(&self, m: &catalog::MachineEntry, port: u16) -> bool {
        m.service_for(port)
            .is_none_or(|s| self.health.service_healthy(&m.id, s.internal_port))
    }

    /// Records a proxy error (the reference's code) for an app: counted, and written to the
    /// app's log stream as a `proxy` line `[<code>] <what it means> (<detail>)` with the
    /// machine (its region) when one was chosen and the request when there is one.
    pub(crate) fn log_error(
        &self,
        app: &str,
        machine: Option<&str>,
        code: &str,
        detail: &str,
        request: Option<&RequestLog<'_>>,
    ) {
        self.metrics.error(app, code);
        let Some(sink) = &self.config.platform_log else {
            eprintln!(
                "hangar-proxy: app={app} machine={} code={code}: {detail}",
                machine.unwrap_or("-")
            );
            return;
        };
        if app.is_empty() {
            return;
        }
        let region = machine
            .and_then(|id| {
                self.catalog
                    .snapshot()
                    .machines
                    .get(id)
                    .map(|m| m.region.clone())
            })
            .unwrap_or_else(|| self.config.region.clone());
        let message = if detail.is_empty() {
            format!("[{code}] {}", describe(code))
        } else {
            format!("[{code}] {} ({detail})", describe(code))
        };
        let mut line = hangar_domain::AppLogLine::new(
            now_ns(),
            hangar_domain::Provider::Proxy,
            machine.unwrap_or_default(),
            &region,
            hangar_domain::Level::Error,
            message,
        );
        line.error_code = Some(code.to_string());
        line.http = request.map(|r| hangar_domain::HttpInfo {
            request_id: r.id.to_string(),
            method: r.method.to_string(),
            status: r.status,
            url: r.url.to_string(),
        });
        sink.emit(app, line);
    }

    /// Every metric as Prometheus text.
    pub fn render_metrics(&self) -> String {
        let mut f = hangar_metrics::Families::new();
        self.collect_metrics(&mut f);
        f.render()
    }

    /// Adds every metric to `f`, including per-machine concurrency (`fly_app_concurrency`).
    pub fn collect_metrics(&self, f: &mut hangar_metrics::Families) {
        self.metrics.render_into(f);
        let snap = self.catalog.snapshot();
        let mut machines: Vec<_> = snap.machines.values().collect();
        machines.sort_by(|a, b| a.id.cmp(&b.id));
        for m in machines {
            f.gauge(
                "fly_app_concurrency",
                "Requests or connections in flight from the proxy to a machine",
                &[
                    ("app", m.app.as_str()),
                    ("region", m.region.as_str()),
                    ("instance", m.id.as_str()),
                ],
                self.loads.get(&m.id).in_flight() as f64,
            );
        }
        let mut hosts: Vec<_> = snap.hostnames.values().collect();
        hosts.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        for h in hosts {
            for (source, c) in [("custom", &h.custom), ("acme", &h.acme)] {
                if let Some(c) = c {
                    f.gauge(
                        "hangar_certificate_expiry_timestamp_seconds",
                        "When a custom hostname's certificate expires (Unix seconds)",
                        &[
                            ("app", h.app.as_str()),
                            ("hostname", h.hostname.as_str()),
                            ("source", source),
                        ],
                        (c.not_after / 1000) as f64,
                    );
                }
            }
            if h.acme_requested {
                f.gauge(
                    "hangar_acme_consecutive_failures",
                    "Failed ACME orders in a row for a hostname (0 once one succeeds)",
                    &[("app", h.app.as_str()), ("hostname", h.hostname.as_str())],
                    f64::from(h.acme_attempts),
                );
            }
        }
        let region = self.config.region.as_str();
        f.gauge(
            "hangar_proxy_replay_cache_entries",
            "fly-replay decisions cached",
            &[("region", region)],
            self.replay_cache.len() as f64,
        );
        let (hits, misses, bypasses, refused) = self.replay_cache.counts();
        for (result, n) in [("hit", hits), ("miss", misses), ("bypass", bypasses)] {
            f.counter(
                "hangar_proxy_replay_cache_lookups_total",
                "fly-replay cache lookups by result",
                &[("region", region), ("result", result)],
                n as f64,
            );
        }
        f.counter(
            "hangar_proxy_replay_cache_refused_total",
            "fly-replay decisions not cached because the cache was full of live ones",
            &[("region", region)],
            refused as f64,
        );
        f.gauge(
            "hangar_proxy_connections",
            "Client connections open",
            &[("region", self.config.region.as_str())],
            self.connections() as f64,
        );
        f.gauge(
            "hangar_proxy_flycast_listeners",
            "Flycast (address, port) pairs listened on",
            &[("region", self.config.region.as_str())],
            self.flycast_listening().len() as f64,
        );
        f.gauge(
            "hangar_proxy_upstream_idle_connections",
            "Keep-alive connections to machines waiting in the pool (all workers)",
            &[("region", self.config.region.as_str())],
            self.pool.idle_count() as f64,
        );
        f.gauge(
            "hangar_proxy_wakes_in_progress",
            "Machines being started for waiting requests",
            &[("region", self.config.region.as_str())],
            self.wakes.in_progress() as f64,
        );
        let balance = self
            .balance
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(b) = balance {
            let region = self.config.region.as_str();
            for (i, (conns, moving)) in b.connections().into_iter().zip(b.moving()).enumerate() {
                let worker = i.to_string();
                let labels = [("region", region), ("worker", worker.as_str())];
                f.gauge(
                    "hangar_proxy_worker_connections",
                    "Client connections each proxy worker serves",
                    &labels,
                    conns as f64,
                );
                f.gauge(
                    "hangar_proxy_worker_handoff_queue",
                    "Connections on their way to a less loaded worker (bounded per worker)",
                    &labels,
                    moving as f64,
                );
            }
            f.counter(
                "hangar_proxy_connections_moved_total",
                "Connections handed from the worker that accepted them to a less loaded one",
                &[("region", region)],
                b.moved() as f64,
            );
        }
    }

    fn accept(
        self: &Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        port: u16,
        kind: PortKind,
        slot: workers::Slot,
    ) {
        let n = self.connections.fetch_add(1, Ordering::AcqRel);
        let guard = (ConnGuard(self.connections.clone()), slot);
        if n >= self.config.max_connections {
            self.metrics.tcp(false);
            drop(stream);
            return;
        }
        self.metrics.tcp(true);
        let _ = stream.set_nodelay(true);
        let proxy = Arc::clone(self);
        tokio::spawn(async move {
            let _guard = guard;
            let mut stream = stream;
            let mut peer = peer;
            let mut local = stream.local_addr().ok();
            let mut prefix = Vec::new();
            if proxy
                .config
                .proxy_protocol_from
                .iter()
                .any(|c| c.contains(peer.ip()))
            {
                let read = tokio::time::timeout(
                    proxy.config.headers_read_timeout,
                    proxy_proto::read_header(&mut stream),
                )
                .await;
                match read {
                    Ok(Ok((parsed, rest))) => {
                        if let proxy_proto::Parsed::Proxied { src, dst } = parsed {
                            peer = src;
                            local = Some(dst);
                        }
                        prefix = rest;
                    }
                    // No app yet: counted and told to the operator, the connection closed.
                    Ok(Err(e)) => {
                        proxy.metrics.error("", "PP01");
                        eprintln!("hangar-proxy: PROXY header from {peer}: {e}");
                        return;
                    }
                    Err(_) => {
                        proxy.metrics.error("", "PP01");
                        eprintln!("hangar-proxy: PROXY header from {peer}: none in time");
                        return;
                    }
                }
            }
            let stream = proxy_proto::Prefixed::new(prefix, stream);
            match kind {
                PortKind::Http => {
                    let conn = http::Conn::new(peer, port, false, None, &proxy.config.region);
                    h1::serve(proxy, stream, conn).await;
                }
                PortKind::TlsHttp | PortKind::Tls => {
                    let then = if kind == PortKind::TlsHttp {
                        tls::Then::Http
                    } else {
                        tls::Then::Tcp
                    };
                    let deadline = tokio::time::Instant::now() + proxy.config.tls.handshake_timeout;
                    tls::serve(proxy, stream, peer, local, port, then, deadline).await
                }
                PortKind::PgTls => pg_tls::serve(proxy, stream, peer, local, port).await,
                PortKind::Raw => {
                    let addrs = local.map(|local| (peer, local));
                    tcp::serve(proxy, stream, port, None, addrs, false).await
                }
            }
        });
    }
}

/// Serves the `http` handler on a client connection described by `conn`.
pub(crate) async fn serve_http_conn<S>(proxy: Arc<Proxy>, stream: S, conn: http::Conn)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let head_timeout = proxy.head_timeout(conn.port, conn.app.as_deref());
    // One reference count per connection, written by this connection's worker only: per
    // request, nothing the workers share is written to hand the proxy to the request.
    let ctx = Arc::new(ConnCtx {
        proxy: Arc::clone(&proxy),
        conn,
        resets: ResetWatch::default(),
    });
    let c = Arc::clone(&ctx);
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let req = req.map(http::incoming_body);
        let ctx = Arc::clone(&c);
        ctx.resets.started.fetch_add(1, Ordering::AcqRel);
        async move {
            let fut = http::handle(&ctx.proxy, &ctx.conn, req);
            // Dropped before it finished: the client cancelled (an h2 RST_STREAM).
            let mut cancelled = Cancelled(Some(&ctx.resets));
            let out = fut.await;
            cancelled.0 = None;
            out
        }
    });
    let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(proxy.config.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_pending_accept_reset_streams(64);
    let conn = b.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = ctx.resets.flood.notified() => {}
    }
    // Rapid reset (CVE-2023-44487): GOAWAY, let what runs finish, refuse new streams.
    proxy.metrics.rate_limited("h2_reset_flood");
    conn.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn).await;
}

/// Streams a client connection opened and cancelled: a connection that mostly cancels what
/// it asks for is flooding the proxy with work (h2 rapid reset) and is closed.
#[derive(Default)]
struct ResetWatch {
    started: AtomicUsize,
    cancelled: AtomicUsize,
    flood: tokio::sync::Notify,
}

/// More cancelled streams than this, and at least half of all, close the connection.
const MAX_CANCELLED_STREAMS: usize = 100;

/// What the requests of one client connection share.
struct ConnCtx {
    proxy: Arc<Proxy>,
    conn: http::Conn,
    resets: ResetWatch,
}

struct Cancelled<'a>(Option<&'a ResetWatch>);

impl Drop for Cancelled<'_> {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            let cancelled = w.cancelled.fetch_add(1, Ordering::AcqRel) + 1;
            if cancelled > MAX_CANCELLED_STREAMS
                && cancelled * 2 >= w.started.load(Ordering::Acquire)
            {
                w.flood.notify_one();
            }
        }
    }
}

/// Runs the proxy until `shutdown` resolves: follows the catalog, opens and closes listeners
/// as services appear and go, stops idle machines. In-flight connections get a bounded
/// grace period at shutdown.
pub async fn run(
    proxy: Arc<Proxy>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    if let Err(e) = proxy.catalog.load(proxy.store.as_ref()) {
        eprintln!("hangar-proxy: initial catalog load failed (retrying): {e}");
    }
    let catalog =
        tokio::spawn(Arc::clone(&proxy.catalog).run(proxy.store.clone(), stopped(stop_rx.clone())));
    let acme = proxy
        .config
        .tls
        .acme
        .clone()
        .map(|cfg| tokio::spawn(acme::run(Arc::clone(&proxy), cfg, stopped(stop_rx.clone()))));
    let workers = workers::Workers::start(proxy.config.workers)?;
    *proxy.balance.lock().unwrap_or_else(|p| p.into_inner()) = Some(workers.balance());
    let mut listeners: HashMap<u16, (Arc<KindCell>, workers::Listening)> = HashMap::new();
    let mut flycast_listeners = flycast::Listeners::default();
    let mut udp_listeners: HashMap<u16, udp::Listener> = HashMap::new();
    let mut udp_failed: HashMap<u16, String> = HashMap::new();
    let mut changes = proxy.catalog.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    let mut started = std::collections::HashSet::new();
    loop {
        sync_listeners(&proxy, &workers, &mut listeners);
        udp::sync(&proxy, &mut udp_listeners, &mut udp_failed);
        flycast::sync(&proxy, &mut flycast_listeners);
        going_away(&proxy, &mut started);
        proxy.health.sync(&proxy.catalog.snapshot(), &proxy.store);
        tokio::select! {
            () = &mut shutdown => break,
            r = changes.changed() => if r.is_err() { break },
            _ = tick.tick() => {
                for (m, suspend) in autostop::pass(&proxy) {
                    tokio::spawn(autostop::stop_one(Arc::clone(&proxy), m, suspend));
                }
                let snap = proxy.catalog.snapshot();
                proxy.loads.retain(|id| snap.machines.contains_key(id));
                let addrs: std::collections::HashSet<IpAddr> =
                    snap.machines.values().map(|m| IpAddr::from(m.addr)).collect();
                proxy.pool.prune(|a| addrs.contains(&a.ip()));
            }
        }
    }
    let _ = stop_tx.send(true);
    proxy.loads.all_go_away();
    proxy.health.stop();
    for (_, (_, h)) in listeners.drain() {
        h.abort();
    }
    flycast_listeners.close_all(&proxy);
    // Closing a UDP port ends its flows.
    udp_listeners.clear();
    proxy.set_udp_listening(HashMap::new());
    proxy
        .listening
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();
    let _ = catalog.await;
    if let Some(a) = acme {
        let _ = a.await;
    }
    // In-flight connections get a moment to finish.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while proxy.connections() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    workers.stop().await;
    *proxy.balance.lock().unwrap_or_else(|p| p.into_inner()) = None;
    Ok(())
}

/// Machines that left `started` since the last look (or vanished) go away: their websockets
/// are closed with a close frame; machines started again come back.
fn going_away(proxy: &Proxy, started: &mut std::collections::HashSet<String>) {
    let snap = proxy.catalog.snapshot();
    started.retain(|id| {
        let still = snap
            .machines
            .get(id)
            .is_some_and(|m| m.state == hangar_domain::State::Started);
        if !still && let Some(l) = proxy.loads.peek(id) {
            l.go_away();
        }
        still
    });
    for m in snap.machines.values() {
        if m.state == hangar_domain::State::Started
            && started.insert(m.id.clone())
            && let Some(l) = proxy.loads.peek(&m.id)
        {
            l.came_back();
        }
    }
}

fn sync_listeners(
    proxy: &Arc<Proxy>,
    workers: &workers::Workers,
    listeners: &mut HashMap<u16, (Arc<KindCell>, workers::Listening)>,
) {
    let snap = proxy.catalog.snapshot();
    proxy.set_head_timeouts(snap.headers_read_timeouts());
    let wanted = snap.ports();
    listeners.retain(|port, (kind, h)| {
        let keep = wanted.contains_key(port) && !h.is_finished();
        if let Some(k) = wanted.get(port)
            && keep
        {
            // A port whose handlers changed keeps its socket: the next connection is served
            // the new way. (Closing and binding again raced the closing accept tasks for
            // the address: refused connections until a later pass bound it.)
            kind.set(*k);
        }
        if !keep {
            h.abort();
            proxy
                .listening
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(port);
        }
        keep
    });
    for (port, kind) in wanted {
        if listeners.contains_key(&port) {
            continue;
        }
        let listen_port = proxy.config.port_map.get(&port).copied().unwrap_or(port);
        let addr = SocketAddr::new(proxy.config.bind, listen_port);
        let p = Arc::clone(proxy);
        let cell = Arc::new(KindCell::new(kind));
        let current = Arc::clone(&cell);
        let on_conn: workers::OnConn = Arc::new(move |stream, peer, slot| {
            p.accept(stream, peer, port, current.get(), slot);
        });
        let listening = match workers.listen(addr, on_conn) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("hangar-proxy: can not listen on {addr} for port {port}: {e}");
                continue;
            }
        };
        proxy
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port, listening.local);
        listeners.insert(port, (cell, listening));
    }
}

/// A listening port's kind, read by each connection it accepts and changed in place.
#[derive(Debug)]
struct KindCell(std::sync::atomic::AtomicU8);

impl KindCell {
    fn new(kind: PortKind) -> Self {
        let cell = Self(Default::default());
        cell.set(kind);
        cell
    }

    fn set(&self, kind: PortKind) {
        let n = match kind {
            PortKind::TlsHttp => 0,
            PortKind::Http => 1,
            PortKind::Tls => 2,
            PortKind::PgTls => 3,
            PortKind::Raw => 4,
        };
        self.0.store(n, Ordering::Relaxed);
    }

    fn get(&self) -> PortKind {
        match self.0.load(Ordering::Relaxed) {
            0 => PortKind::TlsHttp,
            1 => PortKind::Http,
            2 => PortKind::Tls,
            3 => PortKind::PgTls,
            _ => PortKind::Raw,
        }
    }
}
