//! A userspace WireGuard interface: boringtun's noise protocol (`Tunn`: handshakes, sessions,
//! timers, cookies) between a Linux TUN interface and one UDP socket, on tokio.
//!
//! Three tasks: UDP → decrypt → TUN, TUN → encrypt → UDP, and the timers (every 250 ms:
//! handshake retries, rekeys, keepalives; every second: the handshake rate limiter). They
//! share one table of peers behind a mutex held for one packet at a time and never across an
//! await. There is no queue of our own: a packet is handled as it is read, so the kernel's
//! socket and TUN buffers are the bounds, and whatever cannot be handled at once (no peer for
//! a destination, a source a peer may not use, a full socket buffer, a bad packet) is dropped
//! and counted by reason ([`DeviceMetrics`]). `Tunn` keeps at most a few packets per peer
//! while a handshake is under way.
//!
//! Cryptokey routing: a packet from the TUN goes to the peer whose allowed IPs hold its
//! destination; a decrypted packet is written to the TUN only when its source is in its
//! peer's allowed IPs.
//!
//! The interface exists while the device does: [`Device::shutdown`] stops the tasks and
//! closes the TUN, which removes the interface.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use boringtun::device::allowed_ips::AllowedIps;
use boringtun::device::tun::TunSocket;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use tokio::io::unix::AsyncFd;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::key::Key;
use crate::{Error, Result};

/// Largest datagram or TUN packet handled.
const MAX_PACKET: usize = 65_535;
/// Room for WireGuard's header and tag around a packet.
const OVERHEAD: usize = 64;
/// Handshakes per second before cookies are demanded (boringtun's default).
const HANDSHAKE_RATE_LIMIT: u64 = 100;
/// How often peers' timers run.
const TIMER_TICK: Duration = Duration::from_millis(250);

/// What a device is made with.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Interface name (at most 15 characters; letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// UDP address to listen on (`[::]:0`: every address, any port, IPv4 too).
    pub listen: SocketAddr,
    /// The interface's private key (`None`: set later, e.g. over the UAPI; until then every
    /// packet is dropped).
    pub private_key: Option<Key>,
    /// `SO_MARK` of the UDP socket.
    pub fwmark: Option<u32>,
}

/// A peer's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// Its public key.
    pub public_key: Key,
    /// Optional pre-shared key.
    pub preshared_key: Option<Key>,
    /// Where to send until it roams (`None`: it must reach us first).
    pub endpoint: Option<SocketAddr>,
    /// Addresses it may use as sources and that are routed to it.
    pub allowed_ips: Vec<(IpAddr, u8)>,
    /// Seconds between keepalives (`None`/0: off).
    pub keepalive: Option<u16>,
}

/// A peer as it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its settings (the endpoint is the latest one seen).
    pub config: PeerConfig,
    /// When the last handshake completed.
    pub last_handshake: Option<SystemTime>,
    /// Bytes of packets received from it (decrypted).
    pub rx_bytes: u64,
    /// Bytes of packets sent to it (before encryption).
    pub tx_bytes: u64,
}

/// Why packets were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The device has no private key yet.
    NoKey,
    /// A datagram that is no valid WireGuard message (or failed authentication).
    Invalid,
    /// A datagram for no known peer.
    UnknownPeer,
    /// A packet from the TUN whose destination is no peer's.
    NoRoute,
    /// A decrypted packet whose source its peer may not use.
    Spoofed,
    /// A packet for a peer whose endpoint is unknown.
    NoEndpoint,
    /// The UDP socket or the TUN could not take it right now.
    Busy,
}

impl DropReason {
    /// Every reason, in metric order.
    pub const ALL: [DropReason; 7] = [
        DropReason::NoKey,
        DropReason::Invalid,
        DropReason::UnknownPeer,
        DropReason::NoRoute,
        DropReason::Spoofed,
        DropReason::NoEndpoint,
        DropReason::Busy,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::NoKey => "no_key",
            DropReason::Invalid => "invalid",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::NoRoute => "no_route",
            DropReason::Spoofed => "spoofed",
            DropReason::NoEndpoint => "no_endpoint",
            DropReason::Busy => "busy",
        }
    }
}

/// Counters of a device.
#[derive(Debug, Default)]
pub struct DeviceMetrics {
    /// Completed handshakes.
    pub handshakes: AtomicU64,
    /// Decrypted bytes written to the TUN.
    pub rx_bytes: AtomicU64,
    /// Bytes read from the TUN and sent encrypted.
    pub tx_bytes: AtomicU64,
    drops: [AtomicU64; 7],
}

impl DeviceMetrics {
    fn drop(&self, why: DropReason) {
        self.drops[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Packets dropped for `why`.
    pub fn drops(&self, why: DropReason) -> u64 {
        self.drops[why as usize].load(Ordering::Relaxed)
    }
}

struct Keys {
    secret: StaticSecret,
    public: PublicKey,
}

struct Peer {
    tunn: Tunn,
    index: u32,
    config: PeerConfig,
    rx_bytes: u64,
    tx_bytes: u64,
}

impl Peer {
    fn allows(&self, addr: IpAddr) -> bool {
        self.config
            .allowed_ips
            .iter()
            .any(|(net, len)| contains(*net, *len, addr))
    }
}

fn contains(net: IpAddr, len: u8, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

struct State {
    keys: Option<Keys>,
    rate_limiter: Arc<RateLimiter>,
    peers: HashMap<Key, Peer>,
    by_index: HashMap<u32, Key>,
    by_ip: AllowedIps<Key>,
    next_index: u32,
    fwmark: Option<u32>,
}

impl State {
    fn rebuild_routes(&mut self) {
        self.by_ip.clear();
        for (k, p) in &self.peers {
            for (ip, len) in &p.config.allowed_ips {
                self.by_ip.insert(*ip, u32::from(*len), *k);
            }
        }
    }

    fn new_index(&mut self) -> u32 {
        loop {
            self.next_index = (self.next_index + 1) & 0x00ff_ffff;
            if self.next_index != 0 && !self.by_index.contains_key(&self.next_index) {
                return self.next_index;
            }
        }
    }

    fn tunn(&self, keys: &Keys, c: &PeerConfig, index: u32) -> Tunn {
        Tunn::new(
            keys.secret.clone(),
            PublicKey::from(c.public_key.0),
            c.preshared_key.map(|k| k.0),
            c.keepalive.filter(|k| *k > 0),
            index,
            Some(self.rate_limiter.clone()),
        )
    }
}

struct Inner {
    name: String,
    state: Mutex<State>,
    udp: RwLock<Arc<UdpSocket>>,
    /// The socket is IPv6 (IPv4 peers are sent to as mapped addresses); the family never
    /// changes on a rebind.
    v6: bool,
    rebound: watch::Sender<u64>,
    failed: watch::Sender<Option<String>>,
    metrics: DeviceMetrics,
}

/// A running userspace WireGuard interface.
pub struct Device {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

/// A valid interface name (what Linux and `wg-quick` accept).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn bind_udp(addr: SocketAddr, fwmark: Option<u32>) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let io = |e| Error::Bind(addr, e);
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP)).map_err(io)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // `[::]` also takes IPv4 (peers may reach us over either).
        s.set_only_v6(false).map_err(io)?;
    }
    if let Some(m) = fwmark.filter(|m| *m != 0) {
        s.set_mark(m).map_err(io)?;
    }
    s.set_nonblocking(true).map_err(io)?;
    s.bind(&addr.into()).map_err(io)?;
    UdpSocket::from_std(s.into()).map_err(io)
}

/// The address to send to from an IPv6 (`v6`) or IPv4 socket (an IPv4 peer through a
/// dual-stack socket: mapped).
fn target(v6: bool, to: SocketAddr) -> SocketAddr {
    match (v6, to) {
        (true, SocketAddr::V4(v4)) => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        _ => to,
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

impl Device {
    /// Creates the TUN interface (down, without addresses: the caller sets it up) and the
    /// socket, and starts the device. Must run inside a tokio runtime.
    pub fn start(config: DeviceConfig) -> Result<Arc<Self>> {
        if !valid_name(&config.name) {
            return Err(Error::BadName(config.name));
        }
        let tun = TunSocket::new(&config.name)
            .and_then(TunSocket::set_non_blocking)
            .map_err(|e| Error::Tun(config.name.clone(), e.to_string()))?;
        // `AsyncFd::new` is deprecated for owners that could close the descriptor while it
        // is registered; `TunSocket` closes it only when dropped, after `AsyncFd`'s drop has
        // deregistered it, and this crate forbids the `unsafe` of `AsyncFd::register`.
        #[allow(deprecated)]
        let tun = AsyncFd::new(tun).map_err(|e| Error::Tun(config.name.clone(), e.to_string()))?;
        let tun = Arc::new(tun);
        let udp = Arc::new(bind_udp(config.listen, config.fwmark)?);
        let keys = config.private_key.map(|k| {
            let secret = StaticSecret::from(k.0);
            let public = PublicKey::from(&secret);
            Keys { secret, public }
        });
        let rate_limiter = Arc::new(RateLimiter::new(
            &keys
                .as_ref()
                .map_or(PublicKey::from([0u8; 32]), |k| k.public),
            HANDSHAKE_RATE_LIMIT,
        ));
        let mut seed = [0u8; 4];
        let _ = getrandom::fill(&mut seed);
        let inner = Arc::new(Inner {
            name: config.name.clone(),
            state: Mutex::new(State {
                keys,
                rate_limiter,
                peers: HashMap::new(),
                by_index: HashMap::new(),
                by_ip: AllowedIps::new(),
                next_index: u32::from_le_bytes(seed) & 0x00ff_ffff,
                fwmark: config.fwmark,
            }),
            udp: RwLock::new(udp),
            v6: config.listen.is_ipv6(),
            rebound: watch::channel(0).0,
            failed: watch::channel(None).0,
            metrics: DeviceMetrics::default(),
        });
        let tasks = vec![
            tokio::spawn(udp_loop(inner.clone(), tun.clone())),
            tokio::spawn(tun_loop(inner.clone(), tun)),
            tokio::spawn(timer_loop(inner.clone())),
        ];
        Ok(Arc::new(Self {
            inner,
            tasks: Mutex::new(tasks),
        }))
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Where the UDP socket listens.
    pub fn listen_addr(&self) -> SocketAddr {
        let udp = self.inner.udp();
        udp.local_addr()
            .unwrap_or_else(|_| SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
    }

    /// The public key (`None` without a private key).
    pub fn public_key(&self) -> Option<Key> {
        self.inner
            .lock()
            .keys
            .as_ref()
            .map(|k| Key(k.public.to_bytes()))
    }

    /// The private key (for the UAPI's `get`, which reports it to root).
    pub fn private_key(&self) -> Option<Key> {
        self.inner
            .lock()
            .keys
            .as_ref()
            .map(|k| Key(k.secret.to_bytes()))
    }

    /// The socket's mark.
    pub fn fwmark(&self) -> Option<u32> {
        self.inner.lock().fwmark
    }

    /// Sets (or with `None` clears) the private key; sessions start again.
    pub fn set_private_key(&self, key: Option<Key>) {
        let mut st = self.inner.lock();
        let keys = key.filter(|k| !k.is_zero()).map(|k| {
            let secret = StaticSecret::from(k.0);
            let public = PublicKey::from(&secret);
            Keys { secret, public }
        });
        if keys.as_ref().map(|k| k.public) == st.keys.as_ref().map(|k| k.public) {
            return;
        }
        let public = keys
            .as_ref()
            .map_or(PublicKey::from([0u8; 32]), |k| k.public);
        st.rate_limiter = Arc::new(RateLimiter::new(&public, HANDSHAKE_RATE_LIMIT));
        st.keys = keys;
        let rl = st.rate_limiter.clone();
        if let Some(k) = &st.keys {
            let (secret, public) = (k.secret.clone(), k.public);
            for p in st.peers.values_mut() {
                p.tunn
                    .set_static_private(secret.clone(), public, Some(rl.clone()));
            }
        }
    }

    /// Moves the socket to another port of the same address (0: any).
    pub fn set_listen_port(&self, port: u16) -> Result<()> {
        let current = self.listen_addr();
        if port != 0 && current.port() == port {
            return Ok(());
        }
        let fwmark = self.fwmark();
        let sock = Arc::new(bind_udp(SocketAddr::new(current.ip(), port), fwmark)?);
        *self.inner.udp.write().unwrap_or_else(|p| p.into_inner()) = sock;
        self.inner.rebound.send_modify(|g| *g += 1);
        Ok(())
    }

    /// Sets the socket's mark (0: none).
    pub fn set_fwmark(&self, mark: u32) -> Result<()> {
        let udp = self.inner.udp();
        socket2::SockRef::from(udp.as_ref())
            .set_mark(mark)
            .map_err(|e| Error::Bind(self.listen_addr(), e))?;
        self.inner.lock().fwmark = (mark != 0).then_some(mark);
        Ok(())
    }

    /// Adds a peer or replaces its settings (a change of key material or keepalive starts
    /// its session again; an endpoint or allowed IPs change keeps it).
    pub fn set_peer(&self, config: PeerConfig) -> Result<()> {
        let mut st = self.inner.lock();
        let Some(keys) = st.keys.as_ref().map(|k| Keys {
            secret: k.secret.clone(),
            public: k.public,
        }) else {
            return Err(Error::NoPrivateKey);
        };
        let existing = st.peers.get(&config.public_key).map(|p| {
            (
                p.index,
                p.config.endpoint,
                p.config.preshared_key,
                p.config.keepalive,
            )
        });
        match existing {
            Some((_, _, psk, keepalive))
                if psk == config.preshared_key && keepalive == config.keepalive =>
            {
                if let Some(p) = st.peers.get_mut(&config.public_key) {
                    if config.endpoint.is_some() {
                        p.config.endpoint = config.endpoint;
                    }
                    p.config.allowed_ips = config.allowed_ips;
                }
            }
            _ => {
                let index = match existing {
                    Some((index, ..)) => index,
                    None => st.new_index(),
                };
                let endpoint = config.endpoint.or(existing.and_then(|e| e.1));
                let tunn = st.tunn(&keys, &config, index);
                st.by_index.insert(index, config.public_key);
                st.peers.insert(
                    config.public_key,
                    Peer {
                        tunn,
                        index,
                        config: PeerConfig { endpoint, ..config },
                        rx_bytes: 0,
                        tx_bytes: 0,
                    },
                );
            }
        }
        st.rebuild_routes();
        Ok(())
    }

    /// Removes a peer; false if there was none.
    pub fn remove_peer(&self, key: &Key) -> bool {
        let mut st = self.inner.lock();
        let Some(p) = st.peers.remove(key) else {
            return false;
        };
        st.by_index.remove(&p.index);
        st.rebuild_routes();
        true
    }

    /// Removes every peer.
    pub fn clear_peers(&self) {
        let mut st = self.inner.lock();
        st.peers.clear();
        st.by_index.clear();
        st.by_ip.clear();
    }

    /// Every peer, by public key.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let st = self.inner.lock();
        let now = SystemTime::now();
        let mut out: Vec<PeerStatus> = st
            .peers
            .values()
            .map(|p| PeerStatus {
                config: p.config.clone(),
                last_handshake: p.tunn.stats().0.and_then(|ago| now.checked_sub(ago)),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
            })
            .collect();
        out.sort_by_key(|p| p.config.public_key);
        out
    }

    /// The device's counters.
    pub fn metrics(&self) -> &DeviceMetrics {
        &self.inner.metrics
    }

    /// Resolves when the device failed (its TUN went away or broke), with the reason.
    pub async fn failed(&self) -> String {
        let mut rx = self.inner.failed.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or_default(),
            Err(_) => "the device stopped".into(),
        }
    }

    /// Stops the tasks and closes the TUN (the interface goes away). Idempotent.
    pub async fn shutdown(&self) {
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            t.abort();
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn udp(&self) -> Arc<UdpSocket> {
        self.udp.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn send(&self, sock: &UdpSocket, packet: &[u8], to: SocketAddr) {
        if sock.try_send_to(packet, target(self.v6, to)).is_err() {
            self.metrics.drop(DropReason::Busy);
        }
    }

    fn to_tun(&self, tun: &TunSocket, packet: &[u8]) -> bool {
        let written = match packet.first().map(|b| b >> 4) {
            Some(4) => tun.write4(packet),
            _ => tun.write6(packet),
        };
        if written == 0 {
            self.metrics.drop(DropReason::Busy);
            return false;
        }
        self.metrics
            .rx_bytes
            .fetch_add(packet.len() as u64, Ordering::Relaxed);
        true
    }

    /// A datagram from the network.
    fn datagram(
        &self,
        sock: &UdpSocket,
        tun: &TunSocket,
        data: &[u8],
        from: SocketAddr,
        out: &mut [u8],
    ) {
        let mut st = self.lock();
        let Some((secret, public)) = st.keys.as_ref().map(|k| (k.secret.clone(), k.public)) else {
            self.metrics.drop(DropReason::NoKey);
            return;
        };
        let rate_limiter = st.rate_limiter.clone();
        let (peer, init, response) = match rate_limiter.verify_packet(Some(from.ip()), data, out) {
            Ok(Packet::HandshakeInit(p)) => (
                parse_handshake_anon(&secret, &public, &p)
                    .ok()
                    .map(|h| Key(h.peer_static_public)),
                true,
                false,
            ),
            Ok(Packet::HandshakeResponse(p)) => (
                st.by_index.get(&(p.receiver_idx >> 8)).copied(),
                false,
                true,
            ),
            Ok(Packet::PacketCookieReply(p)) => (
                st.by_index.get(&(p.receiver_idx >> 8)).copied(),
                false,
                false,
            ),
            Ok(Packet::PacketData(p)) => (
                st.by_index.get(&(p.receiver_idx >> 8)).copied(),
                false,
                false,
            ),
            Err(TunnResult::WriteToNetwork(cookie)) => {
                self.send(sock, cookie, from);
                return;
            }
            Err(_) => {
                self.metrics.drop(DropReason::Invalid);
                return;
            }
        };
        let Some(p) = peer.and_then(|k| st.peers.get_mut(&k)) else {
            self.metrics.drop(DropReason::UnknownPeer);
            return;
        };
        match p.tunn.decapsulate(Some(from.ip()), data, out) {
            TunnResult::Done => {
                if response {
                    self.metrics.handshakes.fetch_add(1, Ordering::Relaxed);
                }
            }
            TunnResult::Err(WireGuardError::DuplicateCounter) => return,
            TunnResult::Err(_) => {
                self.metrics.drop(DropReason::Invalid);
                return;
            }
            TunnResult::WriteToNetwork(packet) => {
                if init || response {
                    self.metrics.handshakes.fetch_add(1, Ordering::Relaxed);
                }
                self.send(sock, packet, from);
                // Packets queued while the handshake ran go out now.
                while let TunnResult::WriteToNetwork(packet) = p.tunn.decapsulate(None, &[], out) {
                    self.send(sock, packet, from);
                }
            }
            TunnResult::WriteToTunnelV4(packet, src) => {
                if p.allows(IpAddr::V4(src)) {
                    if self.to_tun(tun, packet) {
                        p.rx_bytes += packet.len() as u64;
                    }
                } else {
                    self.metrics.drop(DropReason::Spoofed);
                }
            }
            TunnResult::WriteToTunnelV6(packet, src) => {
                if p.allows(IpAddr::V6(src)) {
                    if self.to_tun(tun, packet) {
                        p.rx_bytes += packet.len() as u64;
                    }
                } else {
                    self.metrics.drop(DropReason::Spoofed);
                }
            }
        }
        // Authenticated: the peer is where this came from (roaming).
        p.config.endpoint = Some(from);
    }

    /// A packet from the TUN.
    fn outgoing(&self, packet: &[u8], out: &mut [u8]) {
        let Some(dst) = Tunn::dst_address(packet) else {
            self.metrics.drop(DropReason::Invalid);
            return;
        };
        let mut st = self.lock();
        if st.keys.is_none() {
            self.metrics.drop(DropReason::NoKey);
            return;
        }
        let Some(key) = st.by_ip.find(dst).copied() else {
            self.metrics.drop(DropReason::NoRoute);
            return;
        };
        let Some(p) = st.peers.get_mut(&key) else {
            self.metrics.drop(DropReason::NoRoute);
            return;
        };
        let Some(endpoint) = p.config.endpoint else {
            self.metrics.drop(DropReason::NoEndpoint);
            return;
        };
        match p.tunn.encapsulate(packet, out) {
            TunnResult::WriteToNetwork(datagram) => {
                let sock = self.udp();
                self.send(&sock, datagram, endpoint);
                p.tx_bytes += packet.len() as u64;
                self.metrics
                    .tx_bytes
                    .fetch_add(packet.len() as u64, Ordering::Relaxed);
            }
            TunnResult::Err(_) => self.metrics.drop(DropReason::Invalid),
            // Queued until the handshake completes.
            _ => {}
        }
    }

    fn timers(&self, out: &mut [u8], reset_rate_limiter: bool) {
        let mut st = self.lock();
        if reset_rate_limiter {
            st.rate_limiter.reset_count();
        }
        let sock = self.udp();
        for p in st.peers.values_mut() {
            if let TunnResult::WriteToNetwork(packet) = p.tunn.update_timers(out)
                && let Some(endpoint) = p.config.endpoint
            {
                self.send(&sock, packet, endpoint);
            }
        }
    }
}

async fn udp_loop(inner: Arc<Inner>, tun: Arc<AsyncFd<TunSocket>>) {
    let mut buf = vec![0u8; MAX_PACKET];
    let mut out = vec![0u8; MAX_PACKET + OVERHEAD];
    let mut rebound = inner.rebound.subscribe();
    loop {
        let sock = inner.udp();
        let got = tokio::select! {
            r = sock.recv_from(&mut buf) => r,
            r = rebound.changed() => {
                if r.is_err() {
                    return;
                }
                continue;
            }
        };
        match got {
            Ok((n, from)) => {
                inner.datagram(&sock, tun.get_ref(), &buf[..n], canonical(from), &mut out)
            }
            // ICMP errors of earlier sends surface here; a pause keeps a broken socket from
            // spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

async fn tun_loop(inner: Arc<Inner>, tun: Arc<AsyncFd<TunSocket>>) {
    let mut buf = vec![0u8; MAX_PACKET];
    let mut out = vec![0u8; MAX_PACKET + OVERHEAD];
    loop {
        let mut guard = match tun.readable().await {
            Ok(g) => g,
            Err(e) => {
                inner.failed.send_replace(Some(format!("tun: {e}")));
                return;
            }
        };
        let read = guard.try_io(|t| match t.get_ref().read(&mut buf) {
            Ok(p) => Ok(p.len()),
            Err(boringtun::device::Error::IfaceRead(e)) => Err(e),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        });
        match read {
            Ok(Ok(n)) => inner.outgoing(&buf[..n], &mut out),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => {
                inner.failed.send_replace(Some(format!("tun: {e}")));
                return;
            }
            Err(_would_block) => {}
        }
    }
}

async fn timer_loop(inner: Arc<Inner>) {
    let mut out = vec![0u8; MAX_PACKET + OVERHEAD];
    let mut tick = tokio::time::interval(TIMER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        n += 1;
        inner.timers(&mut out, n.is_multiple_of(4));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_prefixes() {
        assert!(valid_name("hgrwg0"));
        assert!(valid_name("wg-laptop.1"));
        for bad in ["", "0abc", "a b", "a/b", "abcdefghijklmnop"] {
            assert!(!valid_name(bad), "{bad}");
        }
        let net: IpAddr = "fdaa:0:1::".parse().expect("ip");
        assert!(contains(net, 48, "fdaa:0:1:2::5".parse().expect("ip")));
        assert!(!contains(net, 48, "fdaa:0:2::5".parse().expect("ip")));
        assert!(contains(net, 0, "::1".parse().expect("ip")));
        assert!(!contains(net, 48, "10.0.0.1".parse().expect("ip")));
        let v4: IpAddr = "10.1.0.0".parse().expect("ip");
        assert!(contains(v4, 16, "10.1.2.3".parse().expect("ip")));
        assert!(!contains(v4, 16, "10.2.0.1".parse().expect("ip")));
    }
}
