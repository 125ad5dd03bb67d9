//! Raw TCP services (no handler): one app per public port; each connection goes to a
//! machine chosen like an HTTP request (waking one if needed) and the bytes are spliced.
//! An open connection is load on its machine and keeps it from being stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Proxy;
use crate::balance::{Load, Pick, Prefs};

/// How long a raw connection outlives its machine's going away ([`Load::go_away`]): a stop
/// ends it sooner (the machine's processes close it within their kill timeout); a suspended
/// machine never would, so the proxy closes it then.
pub const AWAY_GRACE: Duration = Duration::from_secs(30);

/// Copies both ways until both sides are done, marking the machine active as bytes move;
/// at most [`AWAY_GRACE`] after the machine goes away.
pub async fn splice<A, B>(a: &mut A, b: &mut B, load: &Load) -> std::io::Result<()>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut away = load.away();
    let mut cut_off: Option<tokio::time::Instant> = load
        .is_going_away()
        .then(|| tokio::time::Instant::now() + AWAY_GRACE);
    // Activity is marked at least every few seconds while the connection is open.
    let copy = tokio::io::copy_bidirectional(a, b);
    tokio::pin!(copy);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            r = &mut copy => {
                load.touch();
                return r.map(|_| ());
            }
            r = away.changed(), if cut_off.is_none() => {
                if r.is_ok() && load.is_going_away() {
                    cut_off = Some(tokio::time::Instant::now() + AWAY_GRACE);
                }
            }
            () = sleep_until(cut_off), if cut_off.is_some() => {
                load.touch();
                return Ok(());
            }
            _ = tick.tick() => load.touch(),
        }
    }
}

/// Sleeps until `at` (never, for `None`).
pub(crate) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Serves one raw TCP connection to public `port`: to `app` (the SNI's, on a `tls`-only
/// port) or the port's one raw app. `postgres`: the machine speaks PostgreSQL (a `pg_tls`
/// port), whose cancel key is noted for the cancels that come without TLS
/// ([`crate::pg_tls`]).
pub async fn serve<S>(
    proxy: Arc<Proxy>,
    mut client: S,
    port: u16,
    app: Option<String>,
    addrs: Option<(SocketAddr, SocketAddr)>,
    postgres: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cfg = &proxy.config;
    let mut prefs = Prefs::default();
    let mut queued = None::<std::time::Instant>;
    for _attempt in 0..64 {
        let snap = proxy.catalog.view();
        let app = match &app {
            Some(name) => snap.apps.get(name).cloned(),
            None => snap.raw_app(port).cloned(),
        };
        let Some(app) = app else {
            return;
        };
        let machine =
            match crate::balance::pick(&app, port, &prefs, &proxy.loads, &proxy.regions, &|m, p| {
                proxy.healthy(m, p)
            }) {
                Pick::Route(m) => m,
                Pick::Wake(m) => {
                    let internal = m
                        .service_for(port)
                        .and_then(|s| u16::try_from(s.internal_port).ok())
                        .unwrap_or(0);
                    let Some(_w) = proxy.metrics.wait_slot(&app.name, cfg.max_queue_per_app) else {
                        return;
                    };
                    let _waking = proxy.loads.get(&m.id).wait_for_wake();
                    match proxy
                        .wakes
                        .wake(
                            &proxy.store,
                            &proxy.catalog,
                            &m.id,
                            (m.addr, internal),
                            cfg.wake_timeout,
                            None,
                        )
                        .await
                    {
                        Ok(d) => {
                            proxy.metrics.cold_start(&app.name, d);
                            continue;
                        }
                        Err(e) => {
                            proxy.log_error(
                                &app.name,
                                Some(&m.id),
                                e.code(),
                                &format!("{e:?}"),
                                None,
                            );
                            prefs.exclude.push(m.id.clone());
                            continue;
                        }
                    }
                }
                Pick::Full => {
                    let since = *queued.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > cfg.queue_timeout {
                        return;
                    }
                    let Some(_w) = proxy.metrics.wait_slot(&app.name, cfg.max_queue_per_app) else {
                        return;
                    };
                    let _ =
                        tokio::time::timeout(Duration::from_millis(100), proxy.loads.any_freed())
                            .await;
                    continue;
                }
                Pick::None => {
                    proxy.log_error(
                        &app.name,
                        None,
                        "PR01",
                        "no machine for a TCP connection",
                        None,
                    );
                    return;
                }
            };
        let Some(internal) = machine
            .service_for(port)
            .and_then(|s| u16::try_from(s.internal_port).ok())
        else {
            return;
        };
        // The pick read the load; the slot is taken within the hard limit in one step
        // (another worker may have taken the last one since): else pick again.
        let (_, hard) = crate::balance::limits(machine, port);
        let Some(slot) = proxy.loads.try_acquire(&machine.id, hard) else {
            tokio::task::yield_now().await;
            continue;
        };
        let target = SocketAddr::new(machine.addr.into(), internal);
        let backend =
            match tokio::time::timeout(cfg.connect_timeout, TcpStream::connect(target)).await {
                Ok(Ok(s)) => s,
                _ => {
                    proxy.log_error(&app.name, Some(&machine.id), "PC01", "connect failed", None);
                    prefs.exclude.push(machine.id.clone());
                    continue;
                }
            };
        let _ = backend.set_nodelay(true);
        let mut backend = backend;
        // `proxy_proto`: the client's address goes first.
        // Only the entry of the port the client came to counts: another port of the same
        // service may speak a protocol that a PROXY line would break.
        let proto = machine
            .service_for(port)
            .and_then(|s| crate::catalog::port_entry(s, port))
            .filter(|p| p.handlers.iter().any(|h| h == "proxy_proto"))
            .map(|p| {
                crate::proxy_proto::Version::parse(
                    p.proxy_proto_options
                        .as_ref()
                        .and_then(|o| o.version.as_deref()),
                )
            });
        if let (Some(v), Some((src, dst))) = (proto, addrs) {
            let h = crate::proxy_proto::header(v, src, dst);
            if backend.write_all(&h).await.is_err() {
                continue;
            }
        }
        let load = slot.load().clone();
        if postgres {
            let to = crate::pg_tls::CancelTarget {
                addr: target,
                proxy_proto: proto,
            };
            let mut backend = crate::pg_tls::KeyWatch::new(backend, Arc::clone(&proxy), to);
            let _ = splice(&mut client, &mut backend, &load).await;
        } else {
            let _ = splice(&mut client, &mut backend, &load).await;
        }
        let _ = client.shutdown().await;
        drop(slot);
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(start_paused = true)]
    async fn a_connection_to_a_machine_that_went_away_ends_after_the_grace() {
        let (mut a, mut client) = tokio::io::duplex(1024);
        let (mut b, _frozen_machine) = tokio::io::duplex(1024);
        let loads = crate::balance::Loads::default();
        let load = loads.get("m");
        let l = Arc::clone(&load);
        let started = tokio::time::Instant::now();
        let task = tokio::spawn(async move { splice(&mut a, &mut b, &l).await });
        // Bytes flow; the machine is frozen (its side stays open and silent).
        client.write_all(b"hello").await.expect("write");
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(!task.is_finished(), "ended while the machine was there");
        load.go_away();
        let gone = tokio::time::Instant::now();
        tokio::time::timeout(AWAY_GRACE * 2, task)
            .await
            .expect("the splice outlived its machine")
            .expect("join")
            .expect("splice");
        assert!(gone.elapsed() >= AWAY_GRACE);
        assert!(started.elapsed() >= Duration::from_secs(120));
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("read");
    }
}
