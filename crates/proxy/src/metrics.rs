//! The proxy's metrics (§6.1 `fly_edge_*`, `fly_app_*`) plus Hangar's own: cold starts,
//! queue depth, autostops, error codes. Handles are cached per label set so the hot path
//! is a hash lookup and an atomic add.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hangar_metrics::{Counter, Families, Gauge, Histogram, Registry};

const LATENCY: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Count and latency of one app's responses with one status.
/// Response times per app and status; `fly_edge_http_responses_count` is its count.
type ResponseMetrics = Arc<Histogram>;

/// Every metric of the proxy.
#[derive(Debug)]
pub struct ProxyMetrics {
    /// Tells this instance's handles apart in the per-thread cache.
    id: u64,
    region: String,
    registry: Registry,
    /// By app, then status (looked up without allocating).
    responses: Mutex<HashMap<String, HashMap<u16, ResponseMetrics>>>,
    waiting: Mutex<HashMap<String, (usize, Arc<Gauge>)>>,
}

/// A request counted as waiting (for a slot or a wake) until dropped.
#[derive(Debug)]
pub struct Waiting<'a> {
    metrics: &'a ProxyMetrics,
    app: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut w = self
            .metrics
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((n, g)) = w.get_mut(&self.app) {
            *n = n.saturating_sub(1);
            g.set(*n as f64);
        }
    }
}

impl ProxyMetrics {
    /// Metrics labelled with `region`.
    pub fn new(region: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            region: region.to_string(),
            registry: Registry::new(),
            responses: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a response.
    pub fn http_response(&self, app: &str, status: u16, took: Duration) {
        // Each worker keeps the handles it used: no lock, and no reference count touched by
        // every worker, per response.
        thread_local! {
            static HANDLES: std::cell::RefCell<HashMap<(u64, u16), HashMap<String, ResponseMetrics>>> =
                std::cell::RefCell::new(HashMap::new());
        }
        let cached = HANDLES.with(|h| {
            let h = h.borrow();
            h.get(&(self.id, status))
                .and_then(|m| m.get(app))
                .map(|h| h.observe(took.as_secs_f64()))
        });
        if cached.is_some() {
            return;
        }
        let h = {
            let mut r = self.responses.lock().unwrap_or_else(|p| p.into_inner());
            if !r.contains_key(app) {
                r.insert(app.to_string(), HashMap::new());
            }
            r.get_mut(app)
                .expect("inserted above")
                .entry(status)
                .or_insert_with(|| {
                    let s = status.to_string();
                    let labels = [
                        ("app", app),
                        ("region", self.region.as_str()),
                        ("status", s.as_str()),
                    ];
                    let h = self.registry.histogram(
                        "fly_edge_http_response_time_seconds",
                        "Time from request to response headers",
                        &labels,
                        &LATENCY,
                    );
                    self.registry.counter_of(
                        "fly_edge_http_responses_count",
                        "HTTP responses sent by the proxy",
                        &labels,
                        &h,
                    );
                    h
                })
                .clone()
        };
        h.observe(took.as_secs_f64());
        HANDLES.with(|cache| {
            cache
                .borrow_mut()
                .entry((self.id, status))
                .or_default()
                .insert(app.to_string(), h);
        });
    }

    /// Takes a place in the app's bounded wait queue, or `None` when it is full.
    pub fn wait_slot(&self, app: &str, max: usize) -> Option<Waiting<'_>> {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let (n, g) = w.entry(app.to_string()).or_insert_with(|| {
            (
                0,
                self.registry.gauge(
                    "hangar_proxy_queue_depth",
                    "Requests waiting for a machine slot or a wake",
                    &[("app", app), ("region", self.region.as_str())],
                ),
            )
        });
        if *n >= max {
            self.registry
                .counter(
                    "hangar_proxy_queue_rejected_total",
                    "Requests refused because the app's wait queue was full",
                    &[("app", app), ("region", self.region.as_str())],
                )
                .inc();
            return None;
        }
        *n += 1;
        g.set(*n as f64);
        Some(Waiting {
            metrics: self,
            app: app.to_string(),
        })
    }

    /// Records a wake (cold start) and how long the request waited for it.
    pub fn cold_start(&self, app: &str, took: Duration) {
        self.registry
            .histogram(
                "hangar_proxy_cold_start_seconds",
                "Time a request waited for its machine to start",
                &[("app", app), ("region", self.region.as_str())],
                &LATENCY,
            )
            .observe(took.as_secs_f64());
    }

    /// Counts an autostop.
    pub fn autostop(&self, app: &str, action: &str) {
        self.registry
            .counter(
                "hangar_proxy_autostop_total",
                "Idle machines stopped or suspended by the proxy",
                &[
                    ("app", app),
                    ("region", self.region.as_str()),
                    ("action", action),
                ],
            )
            .inc();
    }

    /// Counts a proxy error by its code.
    pub fn error(&self, app: &str, code: &str) {
        self.registry
            .counter(
                "hangar_proxy_errors_total",
                "Proxy errors by the reference's error code",
                &[
                    ("app", app),
                    ("region", self.region.as_str()),
                    ("code", code),
                ],
            )
            .inc();
    }

    /// Counts an accepted or dropped TCP connection.
    pub fn tcp(&self, accepted: bool) {
        let (name, help) = if accepted {
            ("fly_edge_tcp_connects_count", "TCP connections accepted")
        } else {
            (
                "fly_edge_tcp_connections_drop_count",
                "TCP connections dropped because the proxy was at its connection limit",
            )
        };
        self.registry
            .counter(name, help, &[("region", self.region.as_str())])
            .inc();
    }

    /// The counters of one UDP flow of `app` ([`crate::udp`]): looked up once per flow;
    /// the flow counts in `hangar_proxy_udp_flows` until the handle drops.
    pub fn udp_flow(&self, app: &str) -> UdpFlow {
        let labels = |direction| {
            [
                ("app", app),
                ("region", self.region.as_str()),
                ("direction", direction),
            ]
        };
        let datagrams = |d| {
            self.registry.counter(
                "hangar_proxy_udp_datagrams_total",
                "UDP datagrams relayed, in (client to machine) and out",
                &labels(d),
            )
        };
        let bytes = |d| {
            self.registry.counter(
                "hangar_proxy_udp_bytes_total",
                "UDP payload bytes relayed, in (client to machine) and out",
                &labels(d),
            )
        };
        let flows = self.registry.gauge(
            "hangar_proxy_udp_flows",
            "UDP flows (client addresses) being relayed to a machine",
            &[("app", app), ("region", self.region.as_str())],
        );
        flows.add(1.0);
        UdpFlow {
            datagrams_in: datagrams("in"),
            datagrams_out: datagrams("out"),
            bytes_in: bytes("in"),
            bytes_out: bytes("out"),
            flows,
        }
    }

    /// Counts a UDP datagram dropped on public port `port`, by reason ([`crate::udp`]):
    /// `too_many_flows`, `flow_queue_full`, `port_queue_full` (no room to wait), `no_app`,
    /// `no_machine`, `queue_full`, `no_capacity` (its flow could not be routed),
    /// `refused` (the machine's port was closed), `flow_ended` (still queued when its flow
    /// ended), `send_error`, `client_send_full` (an answer the public socket could not take).
    pub fn udp_dropped(&self, port: u16, reason: &str) {
        self.registry
            .counter(
                "hangar_proxy_udp_dropped_total",
                "UDP datagrams dropped, by public port and reason",
                &[
                    ("region", self.region.as_str()),
                    ("port", port.to_string().as_str()),
                    ("reason", reason),
                ],
            )
            .inc();
    }

    /// Counts a client connection closed for abuse (`type`, e.g. `h2_reset_flood`).
    pub fn rate_limited(&self, kind: &str) {
        self.registry
            .counter(
                "fly_edge_tcp_rate_limited_count",
                "Client connections closed for abuse, by kind",
                &[("region", self.region.as_str()), ("type", kind)],
            )
            .inc();
    }

    /// Counts a client connection the HTTP/1.1 fast path (crate::h1) handed to hyper's server.
    pub fn http1_handoff(&self) {
        self.registry
            .counter(
                "hangar_proxy_http1_handoffs_total",
                "Client HTTP/1.1 connections handed from the fast path to the general server \
                 (a request body, an upgrade, HTTP/1.0, h2 prior knowledge, an unusual head)",
                &[("region", self.region.as_str())],
            )
            .inc();
    }

    /// Records a completed TLS handshake.
    pub fn tls_handshake(&self, version: &str, took: Duration) {
        self.registry
            .histogram(
                "fly_edge_tls_handshake_time_seconds",
                "Time to complete a client TLS handshake",
                &[("region", self.region.as_str()), ("version", version)],
                &LATENCY,
            )
            .observe(took.as_secs_f64());
    }

    /// Counts a failed TLS handshake (`servername`: a known name, or `unknown`).
    pub fn tls_handshake_error(&self, servername: &str) {
        self.registry
            .counter(
                "fly_edge_tls_handshake_errors",
                "Client TLS handshakes that failed (no certificate, bad client, timeout)",
                &[("region", self.region.as_str()), ("servername", servername)],
            )
            .inc();
    }

    /// Counts an ACME order (`kind` `issue` or `renew`).
    pub fn acme_order(&self, kind: &str, ok: bool) {
        self.registry
            .counter(
                "hangar_acme_orders_total",
                "ACME orders for custom hostnames, by kind and result",
                &[
                    ("region", self.region.as_str()),
                    ("kind", kind),
                    ("result", if ok { "ok" } else { "error" }),
                ],
            )
            .inc();
    }

    /// Counts a plaintext PostgreSQL cancel on a `pg_tls` port by outcome: `sent` to the
    /// machine holding its key, `unknown` key (dropped), `failed` to reach the machine,
    /// `incomplete` message.
    pub fn pg_cancel(&self, result: &str) {
        self.registry
            .counter(
                "hangar_proxy_pg_cancels_total",
                "Plaintext PostgreSQL cancel requests on pg_tls ports, by outcome",
                &[("region", self.region.as_str()), ("result", result)],
            )
            .inc();
    }

    /// Counts a query to the ACME DNS zone's server: answered, by response code, or limited.
    pub(crate) fn acme_dns_query(&self, what: crate::acme_dns::Counted) {
        use crate::acme_dns::Counted;
        use hickory_proto::op::ResponseCode;
        let region = self.region.as_str();
        let rcode = |code| match code {
            ResponseCode::NoError => "NOERROR",
            ResponseCode::FormErr => "FORMERR",
            ResponseCode::ServFail => "SERVFAIL",
            ResponseCode::NXDomain => "NXDOMAIN",
            ResponseCode::NotImp => "NOTIMP",
            ResponseCode::Refused => "REFUSED",
            _ => "other",
        };
        let (name, help, label) = match what {
            Counted::Answered(code) => (
                "hangar_acme_dns_queries_total",
                "Queries answered by the ACME DNS zone's server (DNS-01), by response code",
                ("rcode", rcode(code)),
            ),
            Counted::Slipped | Counted::Dropped => (
                "hangar_acme_dns_rate_limited_total",
                "UDP queries to the ACME DNS zone's server over their client prefix's rate: \
                 answered truncated (slipped) or not at all (dropped)",
                (
                    "action",
                    if what == Counted::Slipped {
                        "slipped"
                    } else {
                        "dropped"
                    },
                ),
            ),
        };
        self.registry
            .counter(name, help, &[("region", region), label])
            .inc();
    }

    /// Renders every metric (plus per-machine concurrency, given by the caller).
    pub fn render_into(&self, out: &mut Families) {
        self.registry.collect(out);
    }
}

/// One UDP flow's counters ([`ProxyMetrics::udp_flow`]).
#[derive(Debug)]
pub struct UdpFlow {
    datagrams_in: Arc<Counter>,
    datagrams_out: Arc<Counter>,
    bytes_in: Arc<Counter>,
    bytes_out: Arc<Counter>,
    flows: Arc<Gauge>,
}

impl UdpFlow {
    /// A datagram of `len` bytes went to the machine.
    pub fn datagram_in(&self, len: usize) {
        self.datagrams_in.inc();
        self.bytes_in.add(len as u64);
    }

    /// A datagram of `len` bytes came back from it.
    pub fn datagram_out(&self, len: usize) {
        self.datagrams_out.inc();
        self.bytes_out.add(len as u64);
    }
}

impl Drop for UdpFlow {
    fn drop(&mut self) {
        self.flows.add(-1.0);
    }
}
