//! Health checks run from the host (PLATFORM.md §1.9, §1.11): every started machine's service
//! checks (`servicecheck-NN-<type>-<internal port>`) and top-level checks, tcp or http, on
//! their interval with a timeout, after a grace period. A service whose check is critical
//! gets no traffic on that machine; results show on the machine object (written to the store
//! when they change) and are forgotten when the machine stops.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hangar_api_types::MachineCheck;
use hangar_domain::State;
use hangar_store::{CheckRecord, Store};
use http_body_util::{BodyExt, Empty};

use crate::catalog::{Catalog, MachineEntry};

/// Longest check output kept.
const MAX_OUTPUT: usize = 512;
/// Least time between two writes of a check whose status stays the same.
const OUTPUT_REFRESH: Duration = Duration::from_secs(2);

/// What an http check sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProbe {
    /// Method.
    pub method: String,
    /// Path (and query).
    pub path: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
}

/// Latest result of each check of each machine: machine → check → (passing, service port).
type Results = HashMap<String, HashMap<String, (bool, Option<i64>)>>;
/// Running checkers per machine, with the checks they run.
type Checkers = HashMap<String, (Vec<CheckSpec>, Vec<tokio::task::AbortHandle>)>;

/// One check of one machine, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// Name as shown on the machine.
    pub name: String,
    /// The service (by internal port) it gates; `None` for top-level checks.
    pub service_port: Option<i64>,
    /// Port probed.
    pub port: u16,
    /// The request of an http check; `None` for tcp.
    pub http: Option<HttpProbe>,
    /// Between checks.
    pub interval: Duration,
    /// Per check.
    pub timeout: Duration,
    /// Before the first.
    pub grace: Duration,
}

fn dur(d: Option<hangar_api_types::Duration>, default: Duration, min: Duration) -> Duration {
    d.and_then(|d| d.to_std())
        .unwrap_or(default)
        .clamp(min, Duration::from_secs(3600))
}

fn spec(
    name: String,
    c: &MachineCheck,
    service_port: Option<i64>,
    fallback_port: i64,
) -> Option<CheckSpec> {
    let port = u16::try_from(c.port.unwrap_or(fallback_port))
        .ok()
        .filter(|p| *p > 0)?;
    let kind = c.r#type.as_deref().unwrap_or("tcp");
    let http = (kind == "http").then(|| {
        let path = c
            .path
            .clone()
            .filter(|p| p.starts_with('/'))
            .unwrap_or_else(|| "/".into());
        let method = c
            .method
            .clone()
            .filter(|m| !m.is_empty() && m.bytes().all(|b| b.is_ascii_alphabetic()))
            .unwrap_or_else(|| "GET".into())
            .to_ascii_uppercase();
        let headers = c
            .headers
            .iter()
            .flat_map(|h| h.values.iter().map(|v| (h.name.clone(), v.clone())))
            .collect();
        HttpProbe {
            method,
            path,
            headers,
        }
    });
    Some(CheckSpec {
        name,
        service_port,
        port,
        http,
        interval: dur(
            c.interval,
            Duration::from_secs(15),
            Duration::from_millis(100),
        ),
        timeout: dur(c.timeout, Duration::from_secs(2), Duration::from_millis(10)),
        grace: dur(c.grace_period, Duration::from_secs(1), Duration::ZERO),
    })
}

/// Every check of a machine.
pub fn specs(m: &MachineEntry) -> Vec<CheckSpec> {
    let mut out = Vec::new();
    let mut n = 0;
    // Every service's, UDP ones too (their checks are TCP or HTTP to the internal port), in
    // the config's order: the names count them.
    for s in m.all_services() {
        for c in &s.checks {
            let kind = c.r#type.as_deref().unwrap_or("tcp");
            let name = format!("servicecheck-{n:02}-{kind}-{}", s.internal_port);
            n += 1;
            out.extend(spec(name, c, Some(s.internal_port), s.internal_port));
        }
    }
    for (name, c) in &m.checks {
        out.extend(spec(name.clone(), c, None, 0));
    }
    out
}

/// Check results and the tasks that produce them.
#[derive(Debug, Default)]
pub struct Health {
    /// machine → check name → (passing, service port).
    status: RwLock<Results>,
    /// Whether any check in `status` is failing: while none is, routing asks nothing else
    /// (no lock shared by every worker on every request).
    any_failing: std::sync::atomic::AtomicBool,
    tasks: Mutex<Checkers>,
}

impl Health {
    /// Keeps `any_failing` true of `status` (called with its write lock held).
    fn note_failing(&self, status: &Results) {
        let failing = status.values().any(|c| c.values().any(|(ok, _)| !ok));
        self.any_failing
            .store(failing, std::sync::atomic::Ordering::Release);
    }

    /// Whether the machine's service on `internal_port` has no critical check.
    pub fn service_healthy(&self, machine: &str, internal_port: i64) -> bool {
        if !self.any_failing.load(std::sync::atomic::Ordering::Acquire) {
            return true;
        }
        let status = self.status.read().unwrap_or_else(|p| p.into_inner());
        status.get(machine).is_none_or(|checks| {
            checks
                .values()
                .all(|(ok, port)| *ok || *port != Some(internal_port))
        })
    }

    fn record(&self, machine: &str, spec: &CheckSpec, ok: bool) -> bool {
        let mut status = self.status.write().unwrap_or_else(|p| p.into_inner());
        let prev = status
            .entry(machine.to_string())
            .or_default()
            .insert(spec.name.clone(), (ok, spec.service_port));
        self.note_failing(&status);
        prev.map(|p| p.0) != Some(ok)
    }

    /// Starts checkers for started machines, stops them (and forgets results) for the rest.
    pub fn sync(self: &Arc<Self>, catalog: &Catalog, store: &Arc<dyn Store>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let mut gone: Vec<String> = Vec::new();
        tasks.retain(|id, (specs, handles)| {
            let keep = catalog
                .machines
                .get(id)
                .is_some_and(|m| m.state == State::Started && specs == &self::specs(m));
            if !keep {
                for h in handles.iter() {
                    h.abort();
                }
                gone.push(id.clone());
            }
            keep
        });
        for id in gone {
            let mut status = self.status.write().unwrap_or_else(|p| p.into_inner());
            status.remove(&id);
            self.note_failing(&status);
            drop(status);
            if let Err(e) = store.clear_checks(&id) {
                eprintln!("hangar-proxy: clearing checks of {id}: {e}");
            }
        }
        for m in catalog.machines.values() {
            if m.state != State::Started || tasks.contains_key(&m.id) {
                continue;
            }
            let specs = specs(m);
            if specs.is_empty() {
                continue;
            }
            let handles = specs
                .iter()
                .map(|s| {
                    tokio::spawn(run(
                        Arc::clone(self),
                        store.clone(),
                        m.id.clone(),
                        m.addr,
                        s.clone(),
                    ))
                    .abort_handle()
                })
                .collect();
            tasks.insert(m.id.clone(), (specs, handles));
        }
    }

    /// Stops every checker.
    pub fn stop(&self) {
        for (_, (_, hs)) in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            for h in hs {
                h.abort();
            }
        }
    }
}

async fn run(
    health: Arc<Health>,
    store: Arc<dyn Store>,
    id: String,
    addr: Ipv6Addr,
    spec: CheckSpec,
) {
    tokio::time::sleep(spec.grace).await;
    let mut written: Option<(String, std::time::Instant)> = None;
    loop {
        let (ok, mut output) = match tokio::time::timeout(spec.timeout, probe(addr, &spec)).await {
            Ok(r) => r,
            Err(_) => (false, format!("timed out after {:?}", spec.timeout)),
        };
        output.truncate(MAX_OUTPUT);
        let changed = health.record(&id, &spec, ok);
        // Status changes are written at once; a new output with the same status at most
        // every OUTPUT_REFRESH (outputs can change on every check).
        let stale = written
            .as_ref()
            .is_none_or(|(o, at)| *o != output && at.elapsed() >= OUTPUT_REFRESH);
        if changed || stale {
            written = Some((output.clone(), std::time::Instant::now()));
            let rec = CheckRecord {
                name: spec.name.clone(),
                status: if ok { "passing" } else { "critical" }.into(),
                output,
                updated_at: crate::balance::now_ms() as i64,
            };
            if let Err(e) = store.set_check(&id, &rec) {
                eprintln!("hangar-proxy: recording check {} of {id}: {e}", spec.name);
            }
        }
        tokio::time::sleep(spec.interval).await;
    }
}

async fn probe(addr: Ipv6Addr, spec: &CheckSpec) -> (bool, String) {
    let target = SocketAddr::new(addr.into(), spec.port);
    let stream = match tokio::net::TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => return (false, format!("connect to {target}: {e}")),
    };
    let Some(HttpProbe {
        method,
        path,
        headers,
    }) = &spec.http
    else {
        return (true, format!("TCP connect {target}: Success"));
    };
    let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    else {
        return (false, "HTTP handshake failed".into());
    };
    let conn = tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method.as_str())
        .uri(path.as_str())
        .header(hyper::header::HOST, target.to_string())
        .header(hyper::header::USER_AGENT, "Consul Health Check");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let Ok(req) = req.body(Empty::new()) else {
        conn.abort();
        return (false, "invalid check request".into());
    };
    let out = match sender.send_request(req).await {
        Ok(resp) => {
            let status = resp.status();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_OUTPUT)
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            (
                status.is_success(),
                format!(
                    "HTTP {method} http://{target}{path}: {status} Output: {}",
                    body.trim()
                ),
            )
        }
        Err(e) => (false, format!("HTTP {method} http://{target}{path}: {e}")),
    };
    conn.abort();
    out
}
