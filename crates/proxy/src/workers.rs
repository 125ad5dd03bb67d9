//! The proxy's workers: a thread per core, each with its own current-thread tokio runtime,
//! all accepting from one listening socket per public port (each worker's reactor watches
//! the socket). A client connection, the requests on it and the upstream connections they
//! use then stay on one thread ([`crate::pool`] keeps a shard per worker), with no work
//! stealing and no wake-ups across threads (PERFORMANCE.md: "keep connections on one
//! thread").
//!
//! Who accepts is a race, and the worker that wins a burst of connections takes all of it:
//! wrk's 50 connections all landed on one of two workers in about one run in three, which
//! then did all the work while the other idled (a third less throughput). So connections are
//! balanced: a worker that accepts a connection while it serves more than one connection
//! above the least loaded worker hands it to that worker ([`Balance`]). A hand-off costs a
//! deregistration and a registration; the hand-off queue of each worker is bounded
//! ([`MAX_MOVING`]); both show in the metrics.
//!
//! With no worker threads configured, listeners run on the caller's runtime instead.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Period of each worker's idle timer (see [`Workers::start`]).
const TICK: std::time::Duration = std::time::Duration::from_millis(500);

/// How many connections may be on their way to one worker at once. Past it, a connection is
/// served where it was accepted: the hand-off queue is bounded.
pub const MAX_MOVING: usize = 64;

/// What a listener does with each connection, on the worker that serves it: the stream, the
/// peer, and the slot that counts it on that worker (dropped when the connection ends).
pub type OnConn = Arc<dyn Fn(tokio::net::TcpStream, SocketAddr, Slot) + Send + Sync>;

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker the calling thread is, if it is one.
pub fn current() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// The running workers.
#[derive(Debug)]
pub struct Workers {
    balance: Arc<Balance>,
    stops: Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Workers {
    /// Starts `n` worker threads; with `n == 0`, the caller's runtime is the one worker.
    /// Must be called inside a tokio runtime.
    pub fn start(n: usize) -> std::io::Result<Self> {
        if n == 0 {
            return Ok(Self {
                balance: Balance::new(vec![Handle::current()]),
                stops: Mutex::new(Vec::new()),
                threads: Mutex::new(Vec::new()),
            });
        }
        let mut handles = Vec::with_capacity(n);
        let mut stops = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let (handle_tx, handle_rx) = std::sync::mpsc::sync_channel(1);
            let thread = std::thread::Builder::new()
                .name(format!("hangar-proxy-{i}"))
                .spawn(move || {
                    INDEX.with(|c| c.set(Some(i)));
                    // Histograms this worker observes get a block of their own (block 0 is
                    // every other thread's).
                    hangar_metrics::set_thread_shard(i + 1);
                    // Sockets and timers only: with the process and signal drivers too
                    // (enabled by other crates' features), every park also looked for
                    // orphaned children and signals.
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_io()
                        .enable_time()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = handle_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = handle_tx.send(Ok(rt.handle().clone()));
                    // A timer always due within TICK: without one, the header-read timer
                    // hyper arms after each response finds the timer wheel empty, and tokio
                    // then wakes its own parked driver through the eventfd (a `write` per
                    // request on a quiet connection).
                    rt.spawn(async {
                        let mut tick = tokio::time::interval(TICK);
                        loop {
                            tick.tick().await;
                        }
                    });
                    // Runs every task spawned on it until told to stop; dropping the runtime
                    // then drops what is left (the caller waited for connections already).
                    let _ = rt.block_on(stop_rx);
                })?;
            let handle = handle_rx
                .recv()
                .map_err(|_| std::io::Error::other("a proxy worker exited at start"))??;
            handles.push(handle);
            stops.push(stop_tx);
            threads.push(thread);
        }
        Ok(Self {
            balance: Balance::new(handles),
            stops: Mutex::new(stops),
            threads: Mutex::new(threads),
        })
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.balance.handles.len()
    }

    /// Whether there are none (never: the caller's runtime is one).
    pub fn is_empty(&self) -> bool {
        self.balance.handles.is_empty()
    }

    /// The connection counts of the workers (for metrics).
    pub fn balance(&self) -> Arc<Balance> {
        Arc::clone(&self.balance)
    }

    /// Binds a listening socket on `addr` and accepts on it in every worker (each with its
    /// own handle on the socket) until the returned handles are aborted. Each connection
    /// goes to `on_conn` on the worker that serves it.
    pub fn listen(&self, addr: SocketAddr, on_conn: OnConn) -> std::io::Result<Listening> {
        let first = bind(addr)?;
        let local = first.local_addr()?;
        let n = self.balance.handles.len();
        let mut sockets = Vec::with_capacity(n);
        for _ in 1..n {
            sockets.push(first.try_clone()?);
        }
        sockets.push(first);
        let mut tasks = Vec::with_capacity(n);
        for (index, (socket, handle)) in sockets.into_iter().zip(&self.balance.handles).enumerate()
        {
            // Registered with the worker's own reactor, inside it.
            let _entered = handle.enter();
            let listener = tokio::net::TcpListener::from_std(socket)?;
            let balance = Arc::clone(&self.balance);
            let on_conn = Arc::clone(&on_conn);
            tasks.push(handle.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, peer)) => balance.dispatch(index, stream, peer, &on_conn),
                        Err(e) => {
                            // Out of fds and the like: back off, never spin.
                            eprintln!("hangar-proxy: accept on {local}: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                    }
                }
            }));
        }
        Ok(Listening { local, tasks })
    }

    /// Tells every worker thread to stop (without waiting).
    fn signal_stop(&self) {
        for s in self
            .stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = s.send(());
        }
    }

    /// Stops the worker threads (what still runs on them is dropped) and waits for them.
    pub async fn stop(&self) {
        self.signal_stop();
        let threads: Vec<_> = self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        if threads.is_empty() {
            return;
        }
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Not stopped through `stop` (e.g. the proxy's task was aborted): tell the threads,
        // without waiting for them here (this may run inside a runtime).
        self.signal_stop();
    }
}

/// The connections each worker serves, and the hand-offs between them.
#[derive(Debug)]
pub struct Balance {
    handles: Vec<Handle>,
    loads: Vec<WorkerLoad>,
    moved: AtomicU64,
}

/// One worker's counts, on cache lines of their own (each is written by connections opening
/// and closing on any worker).
#[derive(Debug, Default)]
#[repr(align(128))]
struct WorkerLoad {
    conns: AtomicUsize,
    moving: AtomicUsize,
}

impl Balance {
    fn new(handles: Vec<Handle>) -> Arc<Self> {
        let loads = handles.iter().map(|_| WorkerLoad::default()).collect();
        Arc::new(Self {
            handles,
            loads,
            moved: AtomicU64::new(0),
        })
    }

    /// Connections served now, by worker.
    pub fn connections(&self) -> Vec<usize> {
        self.loads
            .iter()
            .map(|l| l.conns.load(Ordering::Relaxed))
            .collect()
    }

    /// Connections on their way to each worker now (each at most [`MAX_MOVING`]).
    pub fn moving(&self) -> Vec<usize> {
        self.loads
            .iter()
            .map(|l| l.moving.load(Ordering::Relaxed).min(MAX_MOVING))
            .collect()
    }

    /// Connections handed from the worker that accepted them to another, ever.
    pub fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    /// The worker a connection accepted on `here` should be served by: `here`, unless it
    /// serves more than one connection above the least loaded worker.
    fn target(&self, here: usize) -> usize {
        let load = |i: usize| self.loads[i].conns.load(Ordering::Relaxed);
        let mut best = here;
        let mut best_load = load(here);
        for i in 0..self.loads.len() {
            let l = load(i);
            if l < best_load {
                (best, best_load) = (i, l);
            }
        }
        if best != here && load(here) > best_load + 1 {
            best
        } else {
            here
        }
    }

    /// Serves a connection accepted on worker `here`: there, or on a less loaded worker.
    fn dispatch(
        self: &Arc<Self>,
        here: usize,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        on_conn: &OnConn,
    ) {
        let to = self.target(here);
        if to != here {
            let load = &self.loads[to];
            if load.moving.fetch_add(1, Ordering::AcqRel) < MAX_MOVING {
                // Leaves this worker's reactor; registered with the other's, on it.
                match stream.into_std() {
                    Ok(std) => {
                        let slot = self.slot(to);
                        self.moved.fetch_add(1, Ordering::Relaxed);
                        let (balance, on_conn) = (Arc::clone(self), Arc::clone(on_conn));
                        self.handles[to].spawn(async move {
                            balance.loads[to].moving.fetch_sub(1, Ordering::AcqRel);
                            match tokio::net::TcpStream::from_std(std) {
                                Ok(stream) => on_conn(stream, peer, slot),
                                Err(e) => eprintln!("hangar-proxy: connection from {peer}: {e}"),
                            }
                        });
                    }
                    Err(e) => {
                        load.moving.fetch_sub(1, Ordering::AcqRel);
                        eprintln!("hangar-proxy: connection from {peer}: {e}");
                    }
                }
                return;
            }
            // The other worker's hand-off queue is full: served here.
            load.moving.fetch_sub(1, Ordering::AcqRel);
        }
        let slot = self.slot(here);
        on_conn(stream, peer, slot);
    }

    fn slot(self: &Arc<Self>, index: usize) -> Slot {
        self.loads[index].conns.fetch_add(1, Ordering::AcqRel);
        Slot {
            balance: Arc::clone(self),
            index,
        }
    }
}

/// A connection counted on the worker that serves it, until dropped.
#[derive(Debug)]
pub struct Slot {
    balance: Arc<Balance>,
    index: usize,
}

impl Slot {
    /// The worker serving the connection.
    pub fn worker(&self) -> usize {
        self.index
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.balance.loads[self.index]
            .conns
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// A port listened on by every worker.
#[derive(Debug)]
pub struct Listening {
    /// The address bound (with the port chosen, for port 0).
    pub local: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Listening {
    /// Whether a worker's accept loop ended.
    pub fn is_finished(&self) -> bool {
        self.tasks.iter().any(JoinHandle::is_finished)
    }

    /// Stops accepting (connections already accepted go on).
    pub fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A listening socket on `addr` (non-blocking, `SO_REUSEADDR` as tokio's own bind).
fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn ignore() -> OnConn {
        Arc::new(|_s, _p, _slot| {})
    }

    #[tokio::test]
    async fn a_port_taken_by_another_listener_is_an_error() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let workers = Workers::start(2).expect("workers");
        let err = workers
            .listen(other.local_addr().expect("addr"), ignore())
            .expect_err("port in use");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        workers.stop().await;
    }

    /// Waits until `f` holds (10 s at most).
    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn connections_are_spread_over_the_workers_and_served_where_counted() {
        // Each connection is held open by the worker serving it, which notes where it runs
        // and which worker its slot counts it on.
        let workers = Workers::start(2).expect("workers");
        let held = Arc::new(Mutex::new(Vec::new()));
        let h = Arc::clone(&held);
        let on_conn: OnConn = Arc::new(move |stream, _peer, slot| {
            h.lock()
                .expect("lock")
                .push((current(), slot.worker(), stream, slot));
        });
        let listening = workers
            .listen("127.0.0.1:0".parse().expect("addr"), on_conn)
            .expect("listen");
        // A burst, as wrk opens its connections: whichever worker wins the accept race, the
        // counts end within a connection or two of each other.
        let mut clients = Vec::new();
        for _ in 0..64 {
            clients.push(
                tokio::net::TcpStream::connect(listening.local)
                    .await
                    .expect("connect"),
            );
        }
        until("64 connections served", || {
            held.lock().expect("lock").len() == 64
        })
        .await;
        {
            let held = held.lock().expect("lock");
            for (ran_on, counted_on, _, _) in held.iter() {
                assert_eq!(
                    *ran_on,
                    Some(*counted_on),
                    "served off the worker counting it"
                );
            }
        }
        let b = workers.balance();
        let counts = b.connections();
        assert_eq!(counts.iter().sum::<usize>(), 64, "{counts:?}");
        assert!(counts[0].abs_diff(counts[1]) <= 4, "unbalanced: {counts:?}");
        assert_eq!(b.moving(), vec![0, 0]);
        // Closed connections are uncounted.
        held.lock().expect("lock").clear();
        assert_eq!(b.connections(), vec![0, 0]);
        drop(clients);
        listening.abort();
        workers.stop().await;
        assert!(
            tokio::net::TcpStream::connect(listening.local)
                .await
                .is_err(),
            "still listening after stop"
        );
    }

    #[tokio::test]
    async fn a_busy_worker_hands_connections_to_the_idle_one() {
        // Worker 0 already serves many connections (slots taken by hand): a connection that
        // worker 0 accepts goes to worker 1, and so does one that worker 1 accepts.
        let workers = Workers::start(2).expect("workers");
        let b = workers.balance();
        let busy: Vec<Slot> = (0..10).map(|_| b.slot(0)).collect();
        let served = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&served);
        let on_conn: OnConn = Arc::new(move |stream, _peer, slot| {
            s.lock().expect("lock").push((current(), stream, slot));
        });
        let listening = workers
            .listen("127.0.0.1:0".parse().expect("addr"), on_conn)
            .expect("listen");
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(
                tokio::net::TcpStream::connect(listening.local)
                    .await
                    .expect("connect"),
            );
        }
        until("4 connections served", || {
            served.lock().expect("lock").len() == 4
        })
        .await;
        assert!(
            served
                .lock()
                .expect("lock")
                .iter()
                .all(|(on, _, _)| *on == Some(1)),
            "a connection stayed on the busy worker"
        );
        assert_eq!(b.connections(), vec![10, 4]);
        drop(busy);
        drop(clients);
        listening.abort();
        workers.stop().await;
    }

    #[tokio::test]
    async fn the_target_is_the_least_loaded_worker_only_past_a_margin() {
        let workers = Workers::start(3).expect("workers");
        let b = workers.balance();
        let take = |i: usize, n: usize| (0..n).map(|_| b.slot(i)).collect::<Vec<_>>();
        assert_eq!(b.target(0), 0, "all idle: stays");
        let s0 = take(0, 1);
        assert_eq!(b.target(0), 0, "one above: stays");
        let s0b = take(0, 1);
        assert_eq!(b.target(0), 1, "two above: the first least loaded");
        let s1 = take(1, 2);
        assert_eq!(b.target(0), 2);
        assert_eq!(b.target(1), 2);
        let s2 = take(2, 1);
        assert_eq!(b.target(2), 2);
        assert_eq!(b.target(0), 0, "one above the least: stays");
        drop((s0, s0b, s1, s2));
        assert_eq!(b.connections(), vec![0, 0, 0]);
        workers.stop().await;
    }

    #[tokio::test]
    async fn a_moved_connection_is_served_by_the_other_worker() {
        // Dispatched on worker 0 while it is two connections above worker 1: the stream
        // moves to worker 1's reactor and still carries its bytes.
        let workers = Workers::start(2).expect("workers");
        let b = workers.balance();
        let busy = vec![b.slot(0), b.slot(0)];
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = std::net::TcpStream::connect(addr).expect("connect");
        let (server, peer) = listener.accept().expect("accept");
        server.set_nonblocking(true).expect("nonblocking");
        std::io::Write::write_all(&mut client, b"ping").expect("write");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let tx = Mutex::new(Some(tx));
        let on_conn: OnConn = Arc::new(move |stream, _peer, slot| {
            let tx = tx.lock().expect("lock").take();
            tokio::spawn(async move {
                let mut stream = stream;
                let mut buf = [0u8; 4];
                let read = tokio::io::AsyncReadExt::read_exact(&mut stream, &mut buf).await;
                let worker = slot.worker();
                // The connection is done: uncounted before the test is told.
                drop(slot);
                if let Some(tx) = tx {
                    let _ = tx.send((current(), worker, read.map(|_| buf)));
                }
            });
        });
        let b0 = Arc::clone(&b);
        b.handles[0].spawn(async move {
            let stream = tokio::net::TcpStream::from_std(server).expect("register");
            b0.dispatch(0, stream, peer, &on_conn);
        });
        let (ran_on, counted_on, read) = rx.await.expect("served");
        assert_eq!((ran_on, counted_on), (Some(1), 1));
        assert_eq!(&read.expect("read"), b"ping");
        assert_eq!(b.moved(), 1);
        assert_eq!(b.moving(), vec![0, 0]);
        assert_eq!(
            b.connections(),
            vec![2, 0],
            "the slot was dropped on worker 1"
        );
        drop(busy);
        workers.stop().await;
    }
}
