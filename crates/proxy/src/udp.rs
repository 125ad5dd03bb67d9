//! UDP services (`protocol = "udp"`, no handlers): one app per public port, as for raw TCP.
//!
//! Each client address is a *flow*. Its first datagram routes it like a TCP connection
//! (balancing, limits, the per-app queue; a stopped or suspended machine is woken); then its
//! datagrams go to that machine's internal port from a socket connected there, and what the
//! machine sends back goes to the client from the public port. The app sees the datagrams
//! come from the host's address on its network (the bridge), not from the client: UDP has
//! no PROXY header. Apps written for the reference bind `fly-global-services:<port>`; a
//! machine's `/etc/hosts` names its 6PN address so.
//!
//! A flow is a connection to its machine: it holds a slot of the machine's concurrency
//! while it lives and marks the machine active whenever a datagram moves, so autostop
//! leaves the machine alone until the flow has been silent (both ways) for the flow idle
//! timeout ([`crate::ProxyConfig::udp_idle_timeout`]) and then for the autostop interval.
//! A flow ends at that timeout, when its machine goes away, or when its port closes.
//!
//! A woken machine's app may not have bound its port yet, and UDP has no handshake to wait
//! for: the datagrams a woken flow sent are kept (at most [`FLOW_QUEUE`]) until the machine
//! answers, and sent again, backing off, each time the machine's kernel refuses them (ICMP
//! port unreachable), at most [`RESENDS`] times. Only a refusal causes a resend, so an app
//! that never answers gets each datagram once. The machine's kernel rate-limits those
//! refusals (six at once, then one per half second by default): the resends are spaced so
//! that each can be refused, over about six seconds; a refusal the kernel does not send
//! ends the resending, and the client's own retry is then what gets through.
//!
//! Bounded: flows per port ([`crate::ProxyConfig::udp_max_flows`]; the datagrams of new
//! clients past it are dropped) and datagrams waiting per flow ([`FLOW_QUEUE`], while it is
//! routed or its machine woken, or when the machine is slower than its client); every drop
//! is counted by reason (`hangar_proxy_udp_dropped_total`).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::Proxy;
use crate::balance::{Pick, Prefs, Slot};

/// Datagrams that may wait for one flow.
pub const FLOW_QUEUE: usize = 64;
/// How often a woken flow's refused datagrams are sent again, at most.
pub const RESENDS: u32 = 16;
/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// How long resend `n` (from 0) waits: 1, 2, 4, 8 and 16 ms (with the first send, the six
/// refusals the kernel sends at once: most apps bind within milliseconds of their start),
/// then 550 ms each (the kernel sends one refusal per half second after that, less for wider
/// routes), so every resend still refused is refused aloud.
fn resend_wait(n: u32) -> Duration {
    if n < 5 {
        Duration::from_millis(1 << n)
    } else {
        Duration::from_millis(550)
    }
}

/// One public UDP port being served. Dropping it closes the port and ends its flows.
#[derive(Debug)]
pub struct Listener {
    /// Where it is bound.
    pub local: SocketAddr,
    task: JoinHandle<()>,
}

impl Listener {
    /// Whether its task ended (it never does on its own).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` for public UDP port `port` and serves it on the caller's runtime.
pub fn listen(proxy: &Arc<Proxy>, port: u16, addr: SocketAddr) -> io::Result<Listener> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    let socket = Arc::new(UdpSocket::from_std(socket)?);
    let local = socket.local_addr()?;
    let task = tokio::spawn(receive(Arc::clone(proxy), port, socket));
    Ok(Listener { local, task })
}

/// Opens and closes UDP listeners to match the ports the apps' UDP services declare.
pub fn sync(proxy: &Arc<Proxy>, listeners: &mut HashMap<u16, Listener>) {
    let wanted = proxy.catalog.snapshot().udp_ports();
    listeners.retain(|port, l| wanted.contains(port) && !l.is_finished());
    for port in wanted {
        if listeners.contains_key(&port) {
            continue;
        }
        let listen_port = proxy.config.port_map.get(&port).copied().unwrap_or(port);
        let addr = SocketAddr::new(proxy.config.bind, listen_port);
        match listen(proxy, port, addr) {
            Ok(l) => {
                listeners.insert(port, l);
            }
            Err(e) => eprintln!("hangar-proxy: can not listen on udp {addr} for port {port}: {e}"),
        }
    }
    proxy.set_udp_listening(listeners.iter().map(|(p, l)| (*p, l.local)).collect());
}

/// Reads the public socket and hands each datagram to its client's flow.
async fn receive(proxy: Arc<Proxy>, port: u16, socket: Arc<UdpSocket>) {
    // Dropped with this task: every flow of the port sees it and ends.
    let (_stop, stop) = watch::channel(());
    let max_flows = proxy.config.udp_max_flows;
    let mut flows: HashMap<SocketAddr, mpsc::Sender<Bytes>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut swept = Instant::now();
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // Out of memory and the like: back off, never spin.
                eprintln!("hangar-proxy: udp port {port}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let mut data = Bytes::copy_from_slice(&buf[..n]);
        if let Some(tx) = flows.get(&client) {
            match tx.try_send(data) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    proxy.metrics.udp_dropped(port, "flow_queue_full");
                    continue;
                }
                // That flow ended: this datagram starts the next one.
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    data = d;
                    flows.remove(&client);
                }
            }
        }
        if flows.len() >= max_flows || swept.elapsed() >= Duration::from_secs(1) {
            flows.retain(|_, tx| !tx.is_closed());
            swept = Instant::now();
        }
        if flows.len() >= max_flows {
            proxy.metrics.udp_dropped(port, "too_many_flows");
            continue;
        }
        let (tx, rx) = mpsc::channel(FLOW_QUEUE);
        let _ = tx.try_send(data);
        flows.insert(client, tx);
        tokio::spawn(flow(
            Arc::clone(&proxy),
            port,
            Arc::clone(&socket),
            client,
            rx,
            stop.clone(),
        ));
    }
}

/// Where a flow goes.
struct Routed {
    app: String,
    slot: Slot,
    upstream: UdpSocket,
    /// Its machine was woken for it.
    woke: bool,
}

/// Chooses the flow's machine (waking one if need be) and connects a socket to it.
async fn route(proxy: &Arc<Proxy>, port: u16) -> Option<Routed> {
    let cfg = &proxy.config;
    let mut prefs = Prefs::default();
    let mut queued = None::<Instant>;
    let mut woke = false;
    for _attempt in 0..64 {
        let app = proxy.catalog.view().udp_app(port)?;
        let machine =
            match crate::balance::pick(&app, port, &prefs, &proxy.loads, &proxy.regions, &|m, p| {
                proxy.healthy(m, p)
            }) {
                Pick::Route(m) => Arc::clone(m),
                Pick::Wake(m) => {
                    let Some(_w) = proxy.metrics.wait_slot(&app.name, cfg.max_queue_per_app) else {
                        proxy.metrics.udp_dropped(port, "queue_full");
                        return None;
                    };
                    let _waking = proxy.loads.get(&m.id).wait_for_wake();
                    match proxy
                        .wakes
                        .wake_udp(&proxy.store, &proxy.catalog, &m.id, cfg.wake_timeout)
                        .await
                    {
                        // To the machine just woken (a suspended one is still `suspended` in
                        // the catalog: a new pick would wake it again).
                        Ok(d) => {
                            proxy.metrics.cold_start(&app.name, d);
                            woke = true;
                            Arc::clone(m)
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
                    let since = *queued.get_or_insert_with(Instant::now);
                    if since.elapsed() > cfg.queue_timeout {
                        proxy.metrics.udp_dropped(port, "no_capacity");
                        return None;
                    }
                    let Some(_w) = proxy.metrics.wait_slot(&app.name, cfg.max_queue_per_app) else {
                        proxy.metrics.udp_dropped(port, "queue_full");
                        return None;
                    };
                    let _ =
                        tokio::time::timeout(Duration::from_millis(100), proxy.loads.any_freed())
                            .await;
                    continue;
                }
                Pick::None => {
                    proxy.log_error(&app.name, None, "PR01", "no machine for a UDP flow", None);
                    proxy.metrics.udp_dropped(port, "no_machine");
                    return None;
                }
            };
        let internal = machine
            .service_for(port)
            .and_then(|s| u16::try_from(s.internal_port).ok())?;
        // As for TCP: the slot is taken within the hard limit in one step, else pick again.
        let (_, hard) = crate::balance::limits(&machine, port);
        let Some(slot) = proxy.loads.try_acquire(&machine.id, hard) else {
            tokio::task::yield_now().await;
            continue;
        };
        let target = SocketAddr::new(machine.addr.into(), internal);
        let upstream = match connect(target).await {
            Ok(s) => s,
            Err(e) => {
                proxy.log_error(&app.name, Some(&machine.id), "PC06", &e.to_string(), None);
                prefs.exclude.push(machine.id.clone());
                continue;
            }
        };
        return Some(Routed {
            app: app.name,
            slot,
            upstream,
            woke,
        });
    }
    None
}

/// A socket connected to `target`: it receives only what the machine sends, and the
/// machine's refusals (ICMP port unreachable) come back on it as `ConnectionRefused`.
async fn connect(target: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = UdpSocket::bind(any).await?;
    s.connect(target).await?;
    Ok(s)
}

/// What a woken flow sent before its machine first answered, to send again while the
/// machine refuses it.
struct Unconfirmed {
    sent: Vec<Bytes>,
    resends: u32,
}

impl Unconfirmed {
    /// Sends everything again after the next backoff, if any resend is left; false when
    /// none is.
    async fn resend(&mut self, upstream: &UdpSocket) -> bool {
        if self.resends >= RESENDS {
            return false;
        }
        tokio::time::sleep(resend_wait(self.resends)).await;
        self.resends += 1;
        for d in &self.sent {
            if let Err(e) = upstream.send(d).await
                && e.kind() == io::ErrorKind::ConnectionRefused
            {
                // Refused again while sending: the next round sends everything again.
                break;
            }
        }
        true
    }
}

/// The machine refused a datagram. A woken flow still within its resends sends what it sent
/// again (true: the flow is not idle while it does); otherwise the refused datagram is
/// counted as dropped, and the flow resends nothing any more.
async fn refused(
    unconfirmed: &mut Option<Unconfirmed>,
    upstream: &UdpSocket,
    proxy: &Proxy,
    port: u16,
) -> bool {
    if let Some(u) = unconfirmed
        && u.resend(upstream).await
    {
        return true;
    }
    *unconfirmed = None;
    proxy.metrics.udp_dropped(port, "refused");
    false
}

/// Serves one client's flow until it is idle, its machine goes away or its port closes.
async fn flow(
    proxy: Arc<Proxy>,
    port: u16,
    public: Arc<UdpSocket>,
    client: SocketAddr,
    mut rx: mpsc::Receiver<Bytes>,
    mut stop: watch::Receiver<()>,
) {
    let routed = tokio::select! {
        r = route(&proxy, port) => r,
        _ = stop.changed() => None,
    };
    let Some(Routed {
        app,
        slot,
        upstream,
        woke,
    }) = routed
    else {
        return;
    };
    let metrics = proxy.metrics.udp_flow(&app);
    let load = Arc::clone(slot.load());
    let mut away = load.away();
    let idle = proxy.config.udp_idle_timeout;
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    let mut unconfirmed = woke.then(|| Unconfirmed {
        sent: Vec::new(),
        resends: 0,
    });
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        tokio::select! {
            d = rx.recv() => {
                let Some(d) = d else { break };
                load.touch();
                deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                metrics.datagram_in(d.len());
                if let Some(u) = &mut unconfirmed
                    && u.sent.len() < FLOW_QUEUE
                {
                    u.sent.push(d.clone());
                }
                match upstream.send(&d).await {
                    Ok(_) => {}
                    // An earlier datagram was refused, and this one was not sent.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        if refused(&mut unconfirmed, &upstream, &proxy, port).await {
                            deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                        } else {
                            let _ = upstream.send(&d).await;
                        }
                    }
                    Err(_) => break,
                }
            }
            r = upstream.recv(&mut buf) => match r {
                Ok(n) => {
                    unconfirmed = None;
                    load.touch();
                    deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                    metrics.datagram_out(n);
                    let _ = public.send_to(&buf[..n], client).await;
                }
                // Nothing is bound to the machine's port (yet, for a machine just woken).
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    if refused(&mut unconfirmed, &upstream, &proxy, port).await {
                        deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                    }
                }
                Err(_) => break,
            },
            () = &mut deadline => break,
            r = away.changed() => if r.is_err() || load.is_going_away() { break },
            _ = stop.changed() => break,
        }
    }
    // The slot goes with the flow (and marks the machine active one last time).
    drop(slot);
}
