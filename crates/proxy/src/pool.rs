//! Connections to machines: HTTP/1.1 over TCP to `[6PN]:internal_port`, kept for reuse.
//! A connection is checked out only when idle (`is_ready`), so one is never shared by two
//! requests; the number kept idle per backend is bounded. Idle HTTP/1.1 connections are kept
//! per [worker](crate::workers): a connection's task runs on the worker that opened it, so a
//! request reuses only connections of its own thread.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::http::Body;
use crate::upstream::Conn;

/// Idle connections kept per backend.
const MAX_IDLE: usize = 64;

/// Why a connection could not be had (`PC0x`).
#[derive(Debug)]
pub enum ConnectError {
    /// Nothing listens there (`PC01`).
    Refused,
    /// No answer in time (`PC05`).
    Timeout,
    /// Anything else (`PC06`).
    Io(std::io::Error),
}

impl ConnectError {
    /// The reference's error code.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectError::Refused => "PC01",
            ConnectError::Timeout => "PC05",
            ConnectError::Io(_) => "PC06",
        }
    }
}

/// Idle connections of one worker.
#[derive(Debug, Default)]
struct Shard {
    /// hyper's (upgrades go through it).
    hyper: HashMap<SocketAddr, Vec<SendRequest<Body>>>,
    /// [`crate::upstream`]'s.
    conns: HashMap<SocketAddr, Vec<Conn>>,
}

/// One worker's idle connections, on cache lines of their own (the workers' shards sit side
/// by side, and each is written per request).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Idle(Mutex<Shard>);

impl Idle {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shard> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives back an [`crate::upstream`] connection whose response is complete.
    pub fn put_conn(&self, addr: SocketAddr, mut conn: Conn) {
        conn.idle_since = std::time::Instant::now();
        let mut idle = self.lock();
        let list = idle.conns.entry(addr).or_default();
        if list.len() < MAX_IDLE {
            list.push(conn);
        }
    }
}

/// An idle connection older than this is closed rather than reused: machines' servers close
/// idle keep-alive connections after a few seconds (Node's default is 5 s), and a request
/// written just as that happens would fail.
pub const MAX_IDLE_TIME: Duration = Duration::from_secs(3);

/// The pool.
#[derive(Debug)]
pub struct Pool {
    /// Shard 0 for threads that are not workers, then one per worker.
    idle: Vec<Arc<Idle>>,
    /// HTTP/2 (h2c) connections, one per backend, shared by every request to it.
    h2: Mutex<HashMap<SocketAddr, hyper::client::conn::http2::SendRequest<Body>>>,
}

/// A connection to send one request on.
#[derive(Debug)]
pub enum Sender {
    /// HTTP/1.1 (checked out; give it back with [`Pool::put`]).
    H1(SendRequest<Body>),
    /// h2c (shared).
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

impl Sender {
    /// Sends a request.
    pub async fn send(
        &mut self,
        req: hyper::Request<Body>,
    ) -> hyper::Result<hyper::Response<hyper::body::Incoming>> {
        match self {
            Sender::H1(s) => s.send_request(req).await,
            Sender::H2(s) => s.send_request(req).await,
        }
    }

    /// Whether it speaks HTTP/2.
    pub fn is_h2(&self) -> bool {
        matches!(self, Sender::H2(_))
    }
}

impl Default for Pool {
    fn default() -> Self {
        Self::new(0)
    }
}

impl Pool {
    /// A pool for `workers` worker threads.
    pub fn new(workers: usize) -> Self {
        Self {
            idle: (0..=workers).map(|_| Arc::default()).collect(),
            h2: Mutex::default(),
        }
    }

    fn shard(&self) -> &Arc<Idle> {
        let i = crate::workers::current().map_or(0, |w| w + 1);
        self.idle.get(i).unwrap_or(&self.idle[0])
    }

    /// This thread's shard, for a response body to give its connection back to (a reference
    /// count only this worker writes, unlike the pool's).
    pub fn local(&self) -> Arc<Idle> {
        Arc::clone(self.shard())
    }

    /// An idle connection to `addr`, or a new one.
    pub async fn get(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<SendRequest<Body>, ConnectError> {
        {
            let mut idle = self.shard().lock();
            if let Some(list) = idle.hyper.get_mut(&addr) {
                list.retain(|s| !s.is_closed());
                if let Some(i) = list.iter().position(|s| s.is_ready()) {
                    return Ok(list.swap_remove(i));
                }
            }
        }
        let stream = connect(addr, connect_timeout).await?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Io(std::io::Error::other(e)))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// A connection for one request: h2c (shared) when `h2`, else HTTP/1.1.
    pub async fn sender(
        &self,
        addr: SocketAddr,
        h2: bool,
        connect_timeout: Duration,
    ) -> Result<Sender, ConnectError> {
        if !h2 {
            return self.get(addr, connect_timeout).await.map(Sender::H1);
        }
        {
            let mut map = self.h2.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = map.get(&addr) {
                if !s.is_closed() {
                    return Ok(Sender::H2(s.clone()));
                }
                map.remove(&addr);
            }
        }
        let stream = connect(addr, connect_timeout).await?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ConnectError::Io(std::io::Error::other(e)))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        self.h2
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(addr, sender.clone());
        Ok(Sender::H2(sender))
    }

    /// Gives a connection back after its request was sent (it becomes ready again when the
    /// response is complete).
    pub fn put(&self, addr: SocketAddr, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.shard().lock();
        let list = idle.hyper.entry(addr).or_default();
        list.retain(|s| !s.is_closed());
        if list.len() < MAX_IDLE {
            list.push(sender);
        }
    }

    /// An idle [`crate::upstream`] connection to `addr` of this worker, if one is fresh.
    pub fn take_conn(&self, addr: SocketAddr) -> Option<Conn> {
        let mut idle = self.shard().lock();
        let list = idle.conns.get_mut(&addr)?;
        // Most recently used first; older ones than MAX_IDLE_TIME are closed, and so is one
        // the machine closed or sent something on while it was idle.
        while let Some(mut c) = list.pop() {
            if c.idle_since.elapsed() >= MAX_IDLE_TIME {
                list.clear();
            } else if c.idle_intact() {
                return Some(c);
            }
        }
        None
    }

    /// Closes idle connections past [`MAX_IDLE_TIME`] and those of machines no longer
    /// `live`, on every worker (the proxy does it every second), so that connections to
    /// machines that went away do not hold sockets.
    pub fn prune(&self, live: impl Fn(&SocketAddr) -> bool) {
        for shard in &self.idle {
            let mut s = shard.lock();
            s.conns.retain(|a, list| {
                list.retain(|c| c.idle_since.elapsed() < MAX_IDLE_TIME);
                live(a) && !list.is_empty()
            });
            s.hyper.retain(|a, list| {
                list.retain(|c| !c.is_closed());
                live(a) && !list.is_empty()
            });
        }
    }

    /// Idle connections kept, all workers and machines together.
    pub fn idle_count(&self) -> usize {
        self.idle
            .iter()
            .map(|s| {
                let s = s.lock();
                s.hyper.values().map(Vec::len).sum::<usize>()
                    + s.conns.values().map(Vec::len).sum::<usize>()
            })
            .sum()
    }
}

pub(crate) async fn connect(
    addr: SocketAddr,
    connect_timeout: Duration,
) -> Result<tokio::net::TcpStream, ConnectError> {
    let stream =
        match tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr)).await {
            Err(_) => return Err(ConnectError::Timeout),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(ConnectError::Refused);
            }
            Ok(Err(e)) => return Err(ConnectError::Io(e)),
            Ok(Ok(s)) => s,
        };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
