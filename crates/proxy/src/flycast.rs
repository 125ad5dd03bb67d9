//! Flycast (PLATFORM.md §4.3): the proxy's private listeners. Machines reach an app's Flycast
//! address through the proxy, so balancing, limits, the per-app queue and autostart apply to
//! internal traffic as to public traffic.
//!
//! One listener per (Flycast address, service port) the catalog knows
//! ([`crate::catalog::Catalog::flycast_ports`]), bound with `IP_FREEBIND`: the address is on
//! its network's bridge only on hosts with machines of that network (the agent puts it
//! there, and the isolation rules decide who may connect), and the listener works as soon as
//! it is. The destination address names the app (no `Host` routing); `http` ports get the
//! `http` handler without `force_https` (the §3.5 headers, with the machine's 6PN address as
//! `Fly-Client-IP`), other ports raw TCP (with `proxy_proto` when declared); `tls` ports are
//! not served. Listeners open and close as addresses and services change, and are opened
//! again from the store at start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hangar_domain::flycast::FlycastPort;
use tokio::net::{TcpListener, TcpStream};

use crate::{ConnGuard, Proxy};

/// Most Flycast listeners one proxy opens (service port ranges can be wide); beyond, the
/// rest are skipped and logged.
pub const MAX_LISTENERS: usize = 4096;

type Key = (Ipv6Addr, u16);

/// The open Flycast listeners (owned by the proxy's run loop).
#[derive(Debug, Default)]
pub(crate) struct Listeners {
    open: HashMap<Key, (String, FlycastPort, tokio::task::JoinHandle<()>)>,
    /// Binds that failed (logged once until they work or are no longer wanted).
    failed: HashSet<Key>,
}

impl Listeners {
    /// Stops every listener.
    pub(crate) fn close_all(&mut self, proxy: &Proxy) {
        for (_, (_, _, h)) in self.open.drain() {
            h.abort();
        }
        proxy.set_flycast_listening(Vec::new());
    }
}

fn bind(addr: Ipv6Addr, port: u16) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP))?;
    s.set_only_v6(true)?;
    // The address may not be on this host yet (or ever: no machine of its network here).
    s.set_freebind_v6(true)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from(SocketAddrV6::new(addr, port, 0, 0)).into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

/// Opens and closes listeners to match the catalog.
pub(crate) fn sync(proxy: &Arc<Proxy>, l: &mut Listeners) {
    if !proxy.config.flycast {
        return;
    }
    let mut wanted: BTreeMap<Key, (String, FlycastPort)> = proxy.catalog.snapshot().flycast_ports();
    if wanted.len() > MAX_LISTENERS {
        eprintln!(
            "hangar-proxy: {} Flycast ports wanted, serving the first {MAX_LISTENERS}",
            wanted.len()
        );
        wanted = wanted.into_iter().take(MAX_LISTENERS).collect();
    }
    l.open.retain(|key, (app, kind, h)| {
        let keep = wanted.get(key).is_some_and(|(a, k)| a == app && k == kind) && !h.is_finished();
        if !keep {
            h.abort();
        }
        keep
    });
    l.failed.retain(|k| wanted.contains_key(k));
    for (key, (app, kind)) in wanted {
        if l.open.contains_key(&key) {
            continue;
        }
        let (addr, port) = key;
        let listener = match bind(addr, port) {
            Ok(x) => {
                l.failed.remove(&key);
                x
            }
            Err(e) => {
                if l.failed.insert(key) {
                    eprintln!(
                        "hangar-proxy: can not listen on Flycast [{addr}]:{port} ({app}): {e}"
                    );
                }
                continue;
            }
        };
        let p = Arc::clone(proxy);
        let a = app.clone();
        let h = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => accept(&p, stream, peer, port, kind, &a),
                    Err(e) => {
                        eprintln!("hangar-proxy: accept on Flycast [{addr}]:{port}: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        l.open.insert(key, (app, kind, h));
    }
    let mut listening: Vec<SocketAddrV6> = l
        .open
        .keys()
        .map(|(a, p)| SocketAddrV6::new(*a, *p, 0, 0))
        .collect();
    listening.sort();
    proxy.set_flycast_listening(listening);
}

fn accept(
    proxy: &Arc<Proxy>,
    stream: TcpStream,
    peer: SocketAddr,
    port: u16,
    kind: FlycastPort,
    app: &str,
) {
    let n = proxy.connections.fetch_add(1, Ordering::AcqRel);
    let guard = ConnGuard(proxy.connections.clone());
    if n >= proxy.config.max_connections {
        proxy.metrics.tcp(false);
        drop(stream);
        return;
    }
    proxy.metrics.tcp(true);
    let _ = stream.set_nodelay(true);
    let proxy = Arc::clone(proxy);
    let app = app.to_string();
    tokio::spawn(async move {
        let _guard = guard;
        match kind {
            FlycastPort::Http => {
                let conn =
                    crate::http::Conn::new(peer, port, false, Some(app), &proxy.config.region);
                let stream = crate::proxy_proto::Prefixed::new(Vec::new(), stream);
                crate::h1::serve(proxy, stream, conn).await;
            }
            FlycastPort::Raw => {
                let addrs = stream.local_addr().ok().map(|local| (peer, local));
                crate::tcp::serve(proxy, stream, port, Some(app), addrs, false).await;
            }
        }
    });
}
