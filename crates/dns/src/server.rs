//! Sockets: the operators' listener, one set of listeners per served network (DNS over UDP
//! and TCP, the Machines API relay), the loops that read queries and write answers.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hangar_domain::sixpn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::answer::{self, Asker, Outcome};
use crate::metrics::{rcode_label, type_label};
use crate::{Dns, lock};

/// Largest query read over UDP (EDNS clients may send up to this; longer ones are cut and
/// then fail to parse: FORMERR).
const UDP_BUFFER: usize = 4096;
/// Kernel receive buffer of each UDP socket.
const UDP_RECV_BUFFER: usize = 4 << 20;
/// How often listeners that could not be bound are tried again.
const RETRY: Duration = Duration::from_secs(5);
/// How long the relay waits to connect to the Machines API.
const RELAY_CONNECT: Duration = Duration::from_secs(5);

/// The listeners of one network (dropped: they stop, and their sockets are closed when the
/// drop returns).
#[derive(Debug, Default)]
pub(crate) struct Listeners {
    tasks: Vec<AbortHandle>,
    udp: Vec<UdpThread>,
    /// DNS listens (UDP and TCP).
    pub(crate) bound: bool,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for u in &self.udp {
            u.stop.store(true, Ordering::Release);
            // Wakes a blocked receive at once.
            let _ = socket2::SockRef::from(&*u.sock).shutdown(std::net::Shutdown::Read);
        }
        for u in self.udp.drain(..) {
            let _ = u.thread.join();
        }
    }
}

/// A UDP socket served by a thread of its own.
#[derive(Debug)]
struct UdpThread {
    sock: Arc<std::net::UdpSocket>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

fn socket(
    addr: SocketAddr,
    ty: socket2::Type,
    freebind: bool,
    reuse_port: bool,
) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket};
    let (domain, proto) = match (addr, ty) {
        (SocketAddr::V4(_), socket2::Type::DGRAM) => (Domain::IPV4, Protocol::UDP),
        (SocketAddr::V4(_), _) => (Domain::IPV4, Protocol::TCP),
        (SocketAddr::V6(_), socket2::Type::DGRAM) => (Domain::IPV6, Protocol::UDP),
        (SocketAddr::V6(_), _) => (Domain::IPV6, Protocol::TCP),
    };
    let s = Socket::new(domain, ty, Some(proto))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
        if freebind {
            s.set_freebind_v6(true)?;
        }
    }
    if ty == socket2::Type::STREAM {
        s.set_reuse_address(true)?;
    } else {
        // Bursts wait in the kernel rather than being dropped (best effort: capped by
        // net.core.rmem_max).
        let _ = s.set_recv_buffer_size(UDP_RECV_BUFFER);
    }
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s)
}

fn bind_udp(addr: SocketAddr, freebind: bool) -> std::io::Result<std::net::UdpSocket> {
    let s = socket(addr, socket2::Type::DGRAM, freebind, false)?;
    s.set_nonblocking(false)?;
    Ok(s.into())
}

/// `n` UDP sockets on one address (`SO_REUSEPORT`: the kernel spreads queries over them, so
/// that one loop per core answers).
fn bind_udp_group(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let first = socket(addr, socket2::Type::DGRAM, false, true)?;
    first.set_nonblocking(false)?;
    let bound = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an IP socket"))?;
    let mut all = vec![std::net::UdpSocket::from(first)];
    for _ in 1..n.max(1) {
        let s = socket(bound, socket2::Type::DGRAM, false, true)?;
        s.set_nonblocking(false)?;
        all.push(s.into());
    }
    Ok(all)
}

fn bind_tcp(addr: SocketAddr, freebind: bool) -> std::io::Result<TcpListener> {
    let s = socket(addr, socket2::Type::STREAM, freebind, false)?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

fn v6(ip: IpAddr) -> Option<Ipv6Addr> {
    match ip {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    }
}

impl Dns {
    /// Who asks from `src` on a listener of `network` (`None`: the operators' listener);
    /// `None` when that source may not ask there.
    fn asker(&self, src: SocketAddr, network: Option<u32>) -> Option<Asker> {
        let parsed = v6(src.ip()).and_then(|a| sixpn::parse(a).map(|(n, _)| (n, a)));
        match (parsed, network) {
            (Some((n, a)), Some(l)) if n == l => Some(Asker::Network(n, a)),
            (_, Some(_)) => None,
            (Some((n, a)), None) => Some(Asker::Network(n, a)),
            (None, None) => Some(Asker::Operator),
        }
    }

    /// What to do with `query` from `src`: an answer (or none) from the view, or a forward.
    fn local(&self, query: &[u8], src: SocketAddr, network: Option<u32>, tcp: bool) -> Step {
        let Some(asker) = self.asker(src, network) else {
            self.metrics.query("none", "REFUSED");
            return Step::Reply(answer::reply_code(
                query,
                hickory_proto::op::ResponseCode::Refused,
            ));
        };
        let view = self.view.snapshot();
        match answer::handle(&view, &self.settings, asker, query, tcp) {
            Outcome::Answer(a) => {
                self.metrics
                    .query(type_label(a.qtype), rcode_label(a.rcode));
                Step::Reply(Some(a.bytes))
            }
            Outcome::Drop => Step::Reply(None),
            Outcome::Forward(qtype) => Step::Forward(type_label(Some(qtype))),
        }
    }

    /// SERVFAIL for a forward that could not start (too many in flight).
    fn busy(&self, query: &[u8], qtype: &'static str) -> Option<Vec<u8>> {
        self.metrics.forward("busy");
        self.metrics.query(qtype, "SERVFAIL");
        answer::servfail(query)
    }

    /// The upstreams' answer (SERVFAIL when none answers); the caller holds a permit.
    async fn forward(&self, query: &[u8], qtype: &'static str, tcp: bool) -> Option<Vec<u8>> {
        match self.forwarder.forward(query, tcp).await {
            Some(bytes) => {
                self.metrics.forward("answered");
                let rcode = hickory_proto::op::ResponseCode::from_low(bytes[3] & 0x0f);
                self.metrics.query(qtype, rcode_label(rcode));
                Some(bytes)
            }
            None => {
                self.metrics.forward("failed");
                self.metrics.query(qtype, "SERVFAIL");
                answer::servfail(query)
            }
        }
    }
}

/// The next step for a query.
enum Step {
    Reply(Option<Vec<u8>>),
    Forward(&'static str),
}

/// Serves UDP queries on `sock` from a thread of its own, with blocking reads and writes:
/// Hangar's names are answered from memory, and a thread per socket does that without the
/// async runtime's cross-thread wake-ups (which cost more than the answers). Forwards, which
/// wait on the network, run as tasks on `rt` (at most `max_forwards` at once).
fn spawn_udp(
    dns: Arc<Dns>,
    sock: std::net::UdpSocket,
    network: Option<u32>,
    rt: tokio::runtime::Handle,
) -> std::io::Result<UdpThread> {
    let sock = Arc::new(sock);
    let stop = Arc::new(AtomicBool::new(false));
    let (s, st) = (sock.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("hangar-dns-udp".into())
        .spawn(move || serve_udp(&dns, &s, network, &rt, &st))?;
    Ok(UdpThread { sock, stop, thread })
}

fn serve_udp(
    dns: &Arc<Dns>,
    sock: &Arc<std::net::UdpSocket>,
    network: Option<u32>,
    rt: &tokio::runtime::Handle,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; UDP_BUFFER];
    while !stop.load(Ordering::Acquire) {
        let (n, src) = match sock.recv_from(&mut buf) {
            // Shut down for reading (the listener is dropped).
            Ok((0, _)) if stop.load(Ordering::Acquire) => return,
            Ok(x) => x,
            // ICMP errors of earlier sends surface here: keep serving.
            Err(_) => continue,
        };
        let query = &buf[..n];
        let reply = match dns.local(query, src, network, false) {
            Step::Reply(r) => r,
            Step::Forward(qtype) => match dns.forwards.clone().try_acquire_owned() {
                Ok(permit) => {
                    let dns = dns.clone();
                    let sock = sock.clone();
                    let query = query.to_vec();
                    rt.spawn(async move {
                        let _permit = permit;
                        if let Some(bytes) = dns.forward(&query, qtype, false).await {
                            // The socket blocks: written off the runtime's threads.
                            let _ = tokio::task::spawn_blocking(move || sock.send_to(&bytes, src))
                                .await;
                        }
                    });
                    None
                }
                Err(_) => dns.busy(query, qtype),
            },
        };
        if let Some(bytes) = reply {
            let _ = sock.send_to(&bytes, src);
        }
    }
}

async fn serve_tcp(dns: Arc<Dns>, listener: TcpListener, network: Option<u32>) {
    loop {
        let Ok((stream, src)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = dns.tcp_connections.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let dns = dns.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp_connection(&dns, stream, src, network).await;
        });
    }
}

async fn tcp_connection(
    dns: &Arc<Dns>,
    mut stream: TcpStream,
    src: SocketAddr,
    network: Option<u32>,
) -> std::io::Result<()> {
    let idle = dns.config.tcp_idle_timeout;
    loop {
        let read = async {
            let n = stream.read_u16().await?;
            let mut q = vec![0u8; usize::from(n)];
            stream.read_exact(&mut q).await?;
            Ok::<_, std::io::Error>(q)
        };
        let Ok(query) = tokio::time::timeout(idle, read).await else {
            return Ok(());
        };
        let query = query?;
        let reply = match dns.local(&query, src, network, true) {
            Step::Reply(r) => r,
            Step::Forward(qtype) => match dns.forwards.clone().try_acquire_owned() {
                Ok(_permit) => dns.forward(&query, qtype, true).await,
                Err(_) => dns.busy(&query, qtype),
            },
        };
        let Some(bytes) = reply else {
            return Ok(());
        };
        let Ok(len) = u16::try_from(bytes.len()) else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(bytes.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&bytes);
        stream.write_all(&out).await?;
    }
}

async fn serve_relay(dns: Arc<Dns>, listener: TcpListener, upstream: SocketAddr) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = dns.relays.clone().try_acquire_owned() else {
            dns.metrics.relay("busy");
            continue;
        };
        let dns = dns.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(RELAY_CONNECT, TcpStream::connect(upstream)).await {
                Ok(Ok(mut outbound)) => {
                    dns.metrics.relay("relayed");
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                _ => dns.metrics.relay("failed"),
            }
        });
    }
}

/// Binds and starts DNS (and the API relay) on `network`'s service address.
fn listen_network(dns: &Arc<Dns>, network: u32, l: &mut Listeners) {
    let addr = SocketAddr::from((
        sixpn::service_addr(network, dns.config.host_id),
        dns.config.port,
    ));
    if !l.bound {
        match (bind_udp(addr, true), bind_tcp(addr, true)) {
            (Ok(udp), Ok(tcp)) => {
                match spawn_udp(
                    dns.clone(),
                    udp,
                    Some(network),
                    tokio::runtime::Handle::current(),
                ) {
                    Ok(t) => l.udp.push(t),
                    Err(e) => {
                        eprintln!("hangar-dns: no thread for {addr} (trying again): {e}");
                        return;
                    }
                }
                l.tasks
                    .push(tokio::spawn(serve_tcp(dns.clone(), tcp, Some(network))).abort_handle());
                l.bound = true;
            }
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("hangar-dns: can not listen on {addr} (trying again): {e}");
                return;
            }
        }
        if let Some(upstream) = dns.config.api_upstream {
            let relay = SocketAddr::from((addr.ip(), dns.config.api_port));
            match bind_tcp(relay, true) {
                Ok(t) => l
                    .tasks
                    .push(tokio::spawn(serve_relay(dns.clone(), t, upstream)).abort_handle()),
                // The API may listen there itself (e.g. on [::]:4280): nothing to relay then.
                Err(e) => eprintln!("hangar-dns: no Machines API relay on {relay}: {e}"),
            }
        }
    }
}

/// Listens on exactly the networks that have a machine on this host; true when all are bound.
fn reconcile(dns: &Arc<Dns>) -> bool {
    let view = dns.view.snapshot();
    let wanted = view.hosted_networks();
    let mut serving = lock(&dns.serving);
    serving.retain(|n, _| wanted.contains(n));
    let mut all = true;
    for n in wanted {
        let l = serving.entry(*n).or_default();
        listen_network(dns, *n, l);
        all &= l.bound;
    }
    dns.metrics
        .networks
        .set(serving.values().filter(|l| l.bound).count() as f64);
    all
}

/// Closes every network listener when `run` ends, however it ends (returned, or its task
/// aborted).
struct CloseListeners(Arc<Dns>);

impl Drop for CloseListeners {
    fn drop(&mut self) {
        lock(&self.0.serving).clear();
        *lock(&self.0.operator_addr) = None;
        self.0.metrics.networks.set(0.0);
    }
}

pub(crate) async fn run(
    dns: Arc<Dns>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let _close = CloseListeners(dns.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    if let Err(e) = dns.view.load(dns.store.as_ref()) {
        eprintln!("hangar-dns: loading the view (following the store from scratch): {e}");
    }
    let follower = tokio::spawn(dns.view.clone().run(dns.store.clone(), stopped()));
    let mut operator = Listeners::default();
    if let Some(addr) = dns.config.operator_listen {
        let loops = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        match bind_udp_group(addr, loops) {
            Ok(udp) => {
                let bound = udp[0].local_addr()?;
                match bind_tcp(bound, false) {
                    Ok(tcp) => {
                        operator
                            .tasks
                            .push(tokio::spawn(serve_tcp(dns.clone(), tcp, None)).abort_handle());
                    }
                    Err(e) => eprintln!("hangar-dns: warning: no DNS over TCP on {bound}: {e}"),
                }
                for sock in udp {
                    match spawn_udp(dns.clone(), sock, None, tokio::runtime::Handle::current()) {
                        Ok(t) => operator.udp.push(t),
                        Err(e) => eprintln!("hangar-dns: warning: a DNS thread on {bound}: {e}"),
                    }
                }
                *lock(&dns.operator_addr) = Some(bound);
                eprintln!("hangard: dns at {bound} (operators), and on each network's ::3");
            }
            Err(e) => eprintln!("hangar-dns: warning: no operators' DNS listener on {addr}: {e}"),
        }
    }
    let mut changes = dns.view.subscribe();
    tokio::pin!(shutdown);
    loop {
        let complete = reconcile(&dns);
        tokio::select! {
            () = &mut shutdown => break,
            r = changes.changed() => if r.is_err() { break },
            () = tokio::time::sleep(RETRY), if !complete => {}
        }
    }
    let _ = stop_tx.send(true);
    drop(operator);
    let _ = follower.await;
    Ok(())
}
