//! `GET /metrics` (Prometheus text format 0.0.4) on `--metrics-listen`: the agent's
//! `fly_instance_*` metrics of this host's machines, the apps' scraped metrics, the edge
//! proxy's `fly_edge_*`/`fly_app_*`, the DNS server's `hangar_dns_*`, the WireGuard
//! gateway's `hangar_wireguard_*`, the agent's
//! and scraper's health, the state store's WAL checkpoints (`hangar_store_wal_*`), and
//! hangard's own process figures.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hangar_agent::Agent;
use hangar_metrics::{Families, Registry};
use hangar_runtime::LinuxDriver;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Expositions rendered at once; further requests wait for a turn, at most [`RENDER_WAIT`].
const MAX_RENDERS: usize = 2;
const RENDER_WAIT: Duration = Duration::from_secs(10);
/// How long requests under way get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

struct Server {
    agent: Arc<Agent<LinuxDriver>>,
    store: Arc<hangar_store::SqliteStore>,
    proxy: Option<Arc<hangar_proxy::Proxy>>,
    dns: Option<Arc<hangar_dns::Dns>>,
    wireguard: Option<Arc<hangar_wireguard::Gateway>>,
    renders: Semaphore,
    registry: Registry,
}

impl Server {
    fn request(&self, code: &str) {
        self.registry
            .counter(
                "hangar_metrics_requests_total",
                "Requests of /metrics, by status code (503: too many at once).",
                &[("code", code)],
            )
            .inc();
    }
}

/// Binds the metrics address. Metrics are not worth failing the host for: on failure this
/// says so and returns `None` (the daemon runs without `/metrics`).
pub(crate) async fn bind(addr: SocketAddr) -> Option<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(l) => {
            if let Ok(a) = l.local_addr() {
                eprintln!("hangard: metrics at http://{a}/metrics");
            }
            Some(l)
        }
        Err(e) => {
            eprintln!("hangard: warning: no /metrics: can not bind {addr}: {e}");
            None
        }
    }
}

/// Serves `/metrics` until `shutdown` resolves, then gives requests under way [`DRAIN`].
pub(crate) async fn serve(
    listener: TcpListener,
    agent: Arc<Agent<LinuxDriver>>,
    store: Arc<hangar_store::SqliteStore>,
    proxy: Option<Arc<hangar_proxy::Proxy>>,
    dns: Option<Arc<hangar_dns::Dns>>,
    wireguard: Option<Arc<hangar_wireguard::Gateway>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let server = Arc::new(Server {
        agent,
        store,
        proxy,
        dns,
        wireguard,
        renders: Semaphore::new(MAX_RENDERS),
        registry: Registry::new(),
    });
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .with_state(server);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let serving = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = tx.send(());
    });
    tokio::select! {
        r = serving => r,
        () = async {
            if rx.await.is_ok() {
                tokio::time::sleep(DRAIN).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => Ok(()),
    }
}

async fn metrics(State(s): State<Arc<Server>>) -> Response {
    let Ok(Ok(_turn)) = tokio::time::timeout(RENDER_WAIT, s.renders.acquire()).await else {
        s.request("503");
        return (StatusCode::SERVICE_UNAVAILABLE, "busy, try again\n").into_response();
    };
    let mut families = s.agent.metrics().await;
    if let Some(p) = &s.proxy {
        p.collect_metrics(&mut families);
    }
    if let Some(d) = &s.dns {
        d.collect_metrics(&mut families);
    }
    if let Some(w) = &s.wireguard {
        w.collect_metrics(&mut families);
    }
    if let Some(w) = s.store.wal_stats() {
        wal(w, &mut families);
    }
    process(&mut families);
    s.request("200");
    s.registry.collect(&mut families);
    (
        [(header::CONTENT_TYPE, hangar_metrics::CONTENT_TYPE)],
        families.render(),
    )
        .into_response()
}

/// The state store's WAL checkpoints (off the write path, `hangar_store::WalStats`).
fn wal(w: &hangar_store::WalStats, out: &mut Families) {
    use std::sync::atomic::Ordering::Relaxed;
    out.counter(
        "hangar_store_wal_checkpoints_total",
        "WAL checkpoints run by the store's checkpoint thread.",
        &[],
        w.checkpoints.load(Relaxed) as f64,
    );
    out.counter(
        "hangar_store_wal_checkpoint_failures_total",
        "WAL checkpoints that failed (tried again a second later).",
        &[],
        w.failures.load(Relaxed) as f64,
    );
    out.counter(
        "hangar_store_wal_restarts_total",
        "Times the checkpoint thread started the WAL over itself after a complete checkpoint, \
         so that the next write (often one a request waits on) only appends.",
        &[],
        w.restarts.load(Relaxed) as f64,
    );
    out.counter(
        "hangar_store_wal_checkpoint_busy_total",
        "WAL checkpoints skipped because the database was busy (tried again a second later).",
        &[],
        w.busy.load(Relaxed) as f64,
    );
    out.gauge(
        "hangar_store_wal_pages",
        "Pages in the WAL at the last checkpoint.",
        &[],
        w.wal_pages.load(Relaxed) as f64,
    );
    out.gauge(
        "hangar_store_wal_pending_pages",
        "WAL pages the last checkpoint could not copy yet (readers held them).",
        &[],
        w.pending_pages.load(Relaxed) as f64,
    );
    out.gauge(
        "hangar_store_wal_backstop_pages",
        "WAL pages past which a commit checkpoints itself (the WAL's bound).",
        &[],
        hangar_store::BACKSTOP_PAGES as f64,
    );
}

/// hangard's own process: memory, threads, file descriptors, CPU time, start time.
fn process(out: &mut Families) {
    out.gauge(
        "hangar_build_info",
        "1, with the version of hangard.",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let figures = [
            (
                "hangar_process_resident_memory_bytes",
                "Resident memory of hangard (VmRSS), bytes.",
                status_field(&status, "VmRSS").map(|kb| kb * 1024),
            ),
            (
                "hangar_process_virtual_memory_bytes",
                "Virtual memory of hangard (VmSize), bytes.",
                status_field(&status, "VmSize").map(|kb| kb * 1024),
            ),
            (
                "hangar_process_threads",
                "Threads of hangard.",
                status_field(&status, "Threads"),
            ),
        ];
        for (name, help, v) in figures {
            if let Some(v) = v {
                out.gauge(name, help, &[], v as f64);
            }
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        out.gauge(
            "hangar_process_open_fds",
            "Open file descriptors of hangard.",
            &[],
            fds.count() as f64,
        );
    }
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    if let Some((cpu_ticks, start_ticks)) = stat_times(&stat) {
        // USER_HZ is 100 on every architecture Linux supports.
        out.counter(
            "hangar_process_cpu_seconds_total",
            "CPU time used by hangard (user + system), seconds.",
            &[],
            cpu_ticks as f64 / 100.0,
        );
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| boot_time(&s));
        if let Some(boot) = boot {
            out.gauge(
                "hangar_process_start_time_seconds",
                "When hangard started, seconds since the Unix epoch.",
                &[],
                boot as f64 + start_ticks as f64 / 100.0,
            );
        }
    }
}

/// A number from a `/proc/<pid>/status` line (`VmRSS:  1234 kB` → 1234).
fn status_field(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// `(utime + stime, starttime)` in clock ticks from `/proc/<pid>/stat`.
fn stat_times(stat: &str) -> Option<(u64, u64)> {
    // The command may contain anything; fields resume after the last ')' (field 3 on).
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i - 3)?.parse::<u64>().ok();
    Some((n(14)?.saturating_add(n(15)?), n(22)?))
}

/// The boot time (`btime`) from `/proc/stat`, seconds since the epoch.
fn boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_parsing() {
        let status = "Name:\thangard\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\nThreads:\t7\n";
        assert_eq!(status_field(status, "VmRSS"), Some(2048));
        assert_eq!(status_field(status, "VmSize"), Some(123_456));
        assert_eq!(status_field(status, "Threads"), Some(7));
        assert_eq!(status_field(status, "Vm"), None);
        let stat =
            "42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 9000 1000 200";
        assert_eq!(stat_times(stat), Some((300, 9000)));
        assert_eq!(stat_times("garbage"), None);
        assert_eq!(
            boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        let mut f = Families::new();
        process(&mut f);
        let rss = f
            .get("hangar_process_resident_memory_bytes")
            .expect("rss")
            .samples[0]
            .value;
        assert!(rss > 0.0);
        assert!(f.get("hangar_process_start_time_seconds").is_some());
    }
}
