//! UDP services (`protocol = "udp"`): one app per public port, as for raw TCP.
//!
//! Each client address is a *flow*. Its first datagram routes it like a TCP connection
//! (nearest region, least loaded, cordoned and failing machines skipped; a stopped or
//! suspended machine is woken); then its datagrams go to that machine's internal port from a
//! socket connected there, and what the machine sends back goes to the client from the public
//! port. The app sees the datagrams come from the host's address on its network (the bridge),
//! not from the client: UDP has no PROXY header. Apps written for the reference bind
//! `fly-global-services:<port>`; a machine's `/etc/hosts` names its 6PN address so.
//!
//! A flow takes no slot of its machine's concurrency: source addresses cost nothing to
//! forge, and a flood of them must not take the capacity of the app's TCP and HTTP clients.
//! It marks the machine active whenever a datagram moves, so autostop stops the machine an
//! autostop interval after the last one. A flow ends when it has been silent both ways for
//! the flow idle timeout ([`crate::ProxyConfig::udp_idle_timeout`]), when its machine goes
//! away, when the machine refused [`MAX_REFUSALS`] datagrams in a row (its app is gone: the
//! client's next datagram is routed again), or when its port closes.
//!
//! A woken machine's app may not have bound its port yet, and UDP has no handshake to wait
//! for. A flow that waited for a wake keeps the datagrams it sends (at most
//! [`UNCONFIRMED_MAX`]) until they are delivered: until the machine answers, or until
//! [`SETTLE`] passes after a send with no refusal (ICMP port unreachable, back within a
//! millisecond on the host). Each refusal sends them all again after a wait, at most
//! [`RESENDS`] times. The machine's kernel rate-limits refusals (six at once, then one per
//! half second by default): the waits are spaced so that each resend can still be refused; a
//! refusal it does not send counts as a delivery. A datagram may arrive twice when the app
//! binds while a resend is under way (UDP allows duplicates); one that was delivered is not
//! sent again after it settled.
//!
//! Bounded: flows per port ([`crate::ProxyConfig::udp_max_flows`]), datagrams waiting per
//! flow ([`FLOW_QUEUE`]) and their bytes per port ([`PORT_QUEUE_BYTES`]); one receive buffer
//! per port and per thread, none per flow. Every datagram dropped is counted by reason
//! (`hangar_proxy_udp_dropped_total`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Proxy;
use crate::balance::{Load, Pick, Prefs};
use crate::tcp::sleep_until;

/// Datagrams that may wait for one flow.
pub const FLOW_QUEUE: usize = 64;
/// Bytes of datagrams that may wait for the flows of one port.
pub const PORT_QUEUE_BYTES: usize = 16 << 20;
/// Datagrams a woken flow keeps for resending.
pub const UNCONFIRMED_MAX: usize = 8;
/// How often a woken flow's refused datagrams are sent again, at most.
pub const RESENDS: u32 = 16;
/// A send not refused within this is taken as delivered.
pub const SETTLE: Duration = Duration::from_millis(20);
/// Refusals in a row (not resending) that end a flow.
pub const MAX_REFUSALS: u32 = 3;
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

thread_local! {
    /// Where a flow reads its machine's answer: one buffer per thread, not one per flow.
    static ANSWER: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_DATAGRAM]);
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

/// Opens and closes UDP listeners to match the ports the apps' UDP services declare. A port
/// that can not be bound is said once, and tried again on every pass.
pub fn sync(
    proxy: &Arc<Proxy>,
    listeners: &mut HashMap<u16, Listener>,
    failed: &mut HashMap<u16, String>,
) {
    let wanted = proxy.catalog.snapshot().udp_ports();
    listeners.retain(|port, l| wanted.contains(port) && !l.is_finished());
    failed.retain(|port, _| wanted.contains(port));
    for port in wanted {
        if listeners.contains_key(&port) {
            continue;
        }
        let listen_port = proxy.config.port_map.get(&port).copied().unwrap_or(port);
        let addr = SocketAddr::new(proxy.config.bind, listen_port);
        match listen(proxy, port, addr) {
            Ok(l) => {
                failed.remove(&port);
                listeners.insert(port, l);
            }
            Err(e) => {
                let e = e.to_string();
                if failed.get(&port) != Some(&e) {
                    eprintln!("hangar-proxy: can not listen on udp {addr} for port {port}: {e}");
                    failed.insert(port, e);
                }
            }
        }
    }
    proxy.set_udp_listening(listeners.iter().map(|(p, l)| (*p, l.local)).collect());
}

/// What a port's receive loop and its flows share.
struct Port {
    port: u16,
    /// Bytes of datagrams waiting in the flows' queues.
    queued: AtomicUsize,
    /// When a flow of this port last wrote a routing failure to the app's log (ms since
    /// the Unix epoch): at most one a second, whatever a flood of new clients does.
    logged_ms: AtomicU64,
}

impl Port {
    /// Takes a datagram out of a flow's queue.
    fn took(&self, d: &Bytes) {
        self.queued.fetch_sub(d.len(), Ordering::AcqRel);
    }

    /// Whether a routing failure may be logged now.
    fn may_log(&self) -> bool {
        let now = crate::balance::now_ms();
        let last = self.logged_ms.load(Ordering::Acquire);
        now.saturating_sub(last) >= 1000
            && self
                .logged_ms
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }
}

/// Reads the public socket and hands each datagram to its client's flow.
async fn receive(proxy: Arc<Proxy>, port: u16, socket: Arc<UdpSocket>) {
    // Dropped with this task: every flow of the port sees it and ends.
    let (_stop, stop) = watch::channel(());
    let shared = Arc::new(Port {
        port,
        queued: AtomicUsize::new(0),
        logged_ms: AtomicU64::new(0),
    });
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
        if shared.queued.load(Ordering::Acquire) + n > PORT_QUEUE_BYTES {
            proxy.metrics.udp_dropped(port, "port_queue_full");
            continue;
        }
        let mut data = Bytes::copy_from_slice(&buf[..n]);
        if let Some(tx) = flows.get(&client) {
            // Counted before it is queued: the flow may take it out at once.
            shared.queued.fetch_add(n, Ordering::AcqRel);
            match tx.try_send(data) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    shared.queued.fetch_sub(n, Ordering::AcqRel);
                    proxy.metrics.udp_dropped(port, "flow_queue_full");
                    continue;
                }
                // That flow ended: this datagram starts the next one.
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    shared.queued.fetch_sub(n, Ordering::AcqRel);
                    data = d;
                    flows.remove(&client);
                }
            }
        }
        // Ended flows are forgotten once a second, or when the table is full (then at most
        // every 100 ms: a flood of new addresses must not make each datagram a full scan).
        let since = swept.elapsed();
        if since >= Duration::from_secs(1)
            || (flows.len() >= max_flows && since >= Duration::from_millis(100))
        {
            flows.retain(|_, tx| !tx.is_closed());
            swept = Instant::now();
        }
        if flows.len() >= max_flows {
            proxy.metrics.udp_dropped(port, "too_many_flows");
            continue;
        }
        let (tx, rx) = mpsc::channel(FLOW_QUEUE);
        shared.queued.fetch_add(n, Ordering::AcqRel);
        let _ = tx.try_send(data);
        flows.insert(client, tx);
        tokio::spawn(flow(
            Arc::clone(&proxy),
            Arc::clone(&shared),
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
    machine: String,
    load: Arc<Load>,
    upstream: UdpSocket,
    /// Its machine was woken for it.
    woke: bool,
}

/// Chooses the flow's machine (waking one if need be) and connects a socket to it; `Err`
/// names the reason its datagrams are dropped.
async fn route(proxy: &Arc<Proxy>, port: &Port) -> Result<Routed, &'static str> {
    let cfg = &proxy.config;
    let mut prefs = Prefs::default();
    let mut queued = None::<Instant>;
    let mut woke = false;
    for _attempt in 0..64 {
        let Some(app) = proxy.catalog.view().udp_app(port.port) else {
            return Err("no_app");
        };
        let machine = match crate::balance::pick(
            &app,
            port.port,
            &prefs,
            &proxy.loads,
            &proxy.regions,
            &|m, p| proxy.healthy(m, p),
        ) {
            Pick::Route(m) => Arc::clone(m),
            Pick::Wake(m) => {
                let Some(_w) = proxy.metrics.wait_slot(&app.name, cfg.max_queue_per_app) else {
                    return Err("queue_full");
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
                        proxy.log_error(&app.name, Some(&m.id), e.code(), &format!("{e:?}"), None);
                        prefs.exclude.push(m.id.clone());
                        continue;
                    }
                }
            }
            // Every machine is at its hard limit with TCP and HTTP work.
            Pick::Full => {
                let since = *queued.get_or_insert_with(Instant::now);
                if since.elapsed() > cfg.queue_timeout {
                    return Err("no_capacity");
                }
                let Some(_w) = proxy.metrics.wait_slot(&app.name, cfg.max_queue_per_app) else {
                    return Err("queue_full");
                };
                let _ =
                    tokio::time::timeout(Duration::from_millis(100), proxy.loads.any_freed()).await;
                continue;
            }
            Pick::None => {
                if port.may_log() {
                    proxy.log_error(&app.name, None, "PR01", "no machine for a UDP flow", None);
                }
                return Err("no_machine");
            }
        };
        let Some(internal) = machine
            .service_for(port.port)
            .and_then(|s| u16::try_from(s.internal_port).ok())
        else {
            return Err("no_machine");
        };
        let target = SocketAddr::new(machine.addr.into(), internal);
        match connect(target).await {
            Ok(upstream) => {
                return Ok(Routed {
                    app: app.name,
                    machine: machine.id.clone(),
                    load: proxy.loads.get(&machine.id),
                    upstream,
                    woke,
                });
            }
            Err(e) => {
                if port.may_log() {
                    proxy.log_error(&app.name, Some(&machine.id), "PC06", &e.to_string(), None);
                }
                prefs.exclude.push(machine.id.clone());
            }
        }
    }
    Err("no_machine")
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

/// What a woken flow sent that is not known to be delivered yet.
struct Unconfirmed {
    sent: Vec<Bytes>,
    resends: u32,
    /// When the next resend goes, after a refusal.
    resend_at: Option<Instant>,
    /// When what was sent last counts as delivered, if no refusal comes first.
    settle_at: Option<Instant>,
}

/// Serves one client's flow, then drops what is left in its queue (counted).
async fn flow(
    proxy: Arc<Proxy>,
    port: Arc<Port>,
    public: Arc<UdpSocket>,
    client: SocketAddr,
    mut rx: mpsc::Receiver<Bytes>,
    stop: watch::Receiver<()>,
) {
    let why = relay(&proxy, &port, &public, client, &mut rx, stop).await;
    rx.close();
    while let Ok(d) = rx.try_recv() {
        port.took(&d);
        proxy.metrics.udp_dropped(port.port, why);
    }
}

/// Relays until the flow ends; returns the reason for what is still queued then.
async fn relay(
    proxy: &Arc<Proxy>,
    port: &Port,
    public: &UdpSocket,
    client: SocketAddr,
    rx: &mut mpsc::Receiver<Bytes>,
    mut stop: watch::Receiver<()>,
) -> &'static str {
    let routed = tokio::select! {
        r = route(proxy, port) => r,
        _ = stop.changed() => Err("flow_ended"),
    };
    let Routed {
        app,
        machine,
        load,
        upstream,
        woke,
    } = match routed {
        Ok(r) => r,
        Err(why) => return why,
    };
    let mut away = load.away();
    // A machine that left `started` since it was picked (before `away` was watched) would
    // hold the flow while its client keeps sending. One this flow woke is on its way up,
    // whatever the catalog says yet (a suspended one is still `suspended` there).
    let started = proxy
        .catalog
        .snapshot()
        .machines
        .get(&machine)
        .is_some_and(|m| m.state == hangar_domain::State::Started);
    if !(woke || started) {
        return "flow_ended";
    }
    let metrics = proxy.metrics.udp_flow(&app);
    let idle = proxy.config.udp_idle_timeout;
    let deadline = tokio::time::sleep(idle);
    tokio::pin!(deadline);
    let mut unconfirmed = woke.then(|| Unconfirmed {
        sent: Vec::new(),
        resends: 0,
        resend_at: None,
        settle_at: None,
    });
    // Refusals in a row with nothing to resend.
    let mut refusals = 0;
    loop {
        let resend_at = unconfirmed.as_ref().and_then(|u| u.resend_at);
        let settle_at = unconfirmed.as_ref().and_then(|u| u.settle_at);
        let refused = tokio::select! {
            d = rx.recv() => {
                let Some(d) = d else { return "flow_ended" };
                port.took(&d);
                load.touch();
                deadline.as_mut().reset(Instant::now() + idle);
                metrics.datagram_in(d.len());
                if let Some(u) = &mut unconfirmed {
                    if u.sent.len() < UNCONFIRMED_MAX {
                        u.sent.push(d.clone());
                    }
                    if u.resend_at.is_none() {
                        u.settle_at = Some(Instant::now() + SETTLE);
                    }
                }
                match upstream.send(&d).await {
                    Ok(_) => false,
                    // An earlier datagram was refused, and this one was not sent: resent
                    // with the others, or now.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        if unconfirmed.is_none() {
                            let _ = upstream.send(&d).await;
                        }
                        true
                    }
                    Err(_) => {
                        proxy.metrics.udp_dropped(port.port, "send_error");
                        return "send_error";
                    }
                }
            }
            // A refusal shows as an error, not as something to read.
            r = upstream.ready(Interest::READABLE | Interest::ERROR) => {
                if r.is_err() {
                    return "send_error";
                }
                match answer(&upstream, public, client) {
                    Ok(Some((n, passed))) => {
                        unconfirmed = None;
                        refusals = 0;
                        load.touch();
                        deadline.as_mut().reset(Instant::now() + idle);
                        if passed {
                            metrics.datagram_out(n);
                        } else {
                            proxy.metrics.udp_dropped(port.port, "client_send_full");
                        }
                        false
                    }
                    Ok(None) => false,
                    // Nothing is bound to the machine's port (yet, for a machine just woken).
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => true,
                    Err(_) => {
                        proxy.metrics.udp_dropped(port.port, "send_error");
                        return "send_error";
                    }
                }
            }
            () = sleep_until(resend_at) => {
                if let Some(u) = &mut unconfirmed {
                    u.resend_at = None;
                    u.resends += 1;
                    for d in &u.sent {
                        if upstream.send(d).await.is_err() {
                            // Refused again while sending: the next refusal sends it all.
                            break;
                        }
                    }
                    u.settle_at = Some(Instant::now() + SETTLE);
                    // Resending is not being idle.
                    deadline.as_mut().reset(Instant::now() + idle);
                }
                false
            }
            () = sleep_until(settle_at) => {
                // Not refused: delivered.
                unconfirmed = None;
                false
            }
            () = &mut deadline => return "flow_ended",
            r = away.changed() => {
                if r.is_err() || load.is_going_away() {
                    return "flow_ended";
                }
                false
            }
            _ = stop.changed() => return "flow_ended",
        };
        if !refused {
            continue;
        }
        match &mut unconfirmed {
            Some(u) if u.resends < RESENDS => {
                u.settle_at = None;
                if u.resend_at.is_none() {
                    u.resend_at = Some(Instant::now() + resend_wait(u.resends));
                }
            }
            _ => {
                unconfirmed = None;
                proxy.metrics.udp_dropped(port.port, "refused");
                refusals += 1;
                if refusals >= MAX_REFUSALS {
                    return "flow_ended";
                }
            }
        }
    }
}

/// Reads one answer of the machine, if one is there, into this thread's buffer and sends it
/// to the client: its length and whether it went (an answer the public socket can not take
/// now is dropped, never waited for); `None` when there was nothing to read after all.
fn answer(
    upstream: &UdpSocket,
    public: &UdpSocket,
    client: SocketAddr,
) -> io::Result<Option<(usize, bool)>> {
    ANSWER.with(|b| {
        let mut buf = b.borrow_mut();
        // The read is the socket's own (tokio's `try_recv` looks at the readable readiness
        // alone), tried for each readiness in turn (`try_io` takes one): each is cleared when
        // there is nothing after all, neither a datagram nor an error.
        let mut read = || std::io::Read::read(&mut &*socket2::SockRef::from(upstream), &mut buf);
        let r = match upstream.try_io(Interest::READABLE, &mut read) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                upstream.try_io(Interest::ERROR, &mut read)
            }
            r => r,
        };
        let n = match r {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        };
        match public.try_send_to(&buf[..n], client) {
            Ok(_) => Ok(Some((n, true))),
            // The public socket's buffer is full: as a router would, drop it.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Some((n, false))),
            Err(e) => Err(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn wait_answer(
        up: &UdpSocket,
        public: &UdpSocket,
        client: SocketAddr,
    ) -> io::Result<Option<(usize, bool)>> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                up.ready(Interest::READABLE | Interest::ERROR).await?;
                match answer(up, public, client) {
                    Ok(None) => continue,
                    r => return r,
                }
            }
        })
        .await
        .expect("in time")
    }

    #[tokio::test]
    async fn answers_are_relayed_and_refusals_seen() {
        let machine = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let public = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let up = connect(machine.local_addr().expect("addr"))
            .await
            .expect("connect");
        up.send(b"ping").await.expect("send");
        let mut buf = [0u8; 16];
        let (n, from) = machine.recv_from(&mut buf).await.expect("recv");
        machine.send_to(&buf[..n], from).await.expect("answer");
        let r = wait_answer(&up, &public, client.local_addr().expect("addr")).await;
        assert_eq!(r.expect("answer"), Some((4, true)));
        let (n, _) = client.recv_from(&mut buf).await.expect("relayed");
        assert_eq!(&buf[..n], b"ping");
        // Nothing bound there any more: the refusal comes back as an error.
        drop(machine);
        up.send(b"again").await.expect("send");
        let r = wait_answer(&up, &public, client.local_addr().expect("addr")).await;
        assert_eq!(
            r.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionRefused)
        );
    }
}
