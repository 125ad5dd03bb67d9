//! The proxy's workers: a thread per core, each with its own current-thread tokio runtime,
//! all accepting from one listening socket per public port (each worker's reactor watches
//! the socket; the worker that gets to `accept` first takes the connection, so a busy worker
//! takes fewer, as nginx's workers do). A client connection, the requests on it and the
//! upstream connections they use then stay on one thread ([`crate::pool`] keeps a shard per
//! worker), with no work stealing and no wake-ups across threads (PERFORMANCE.md: "keep
//! connections on one thread").
//!
//! With no worker threads configured, listeners run on the caller's runtime instead.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Period of each worker's idle timer (see [`Workers::start`]).
const TICK: std::time::Duration = std::time::Duration::from_millis(500);

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
    handles: Vec<Handle>,
    stops: Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Workers {
    /// Starts `n` worker threads; with `n == 0`, the caller's runtime is the one worker.
    /// Must be called inside a tokio runtime.
    pub fn start(n: usize) -> std::io::Result<Self> {
        if n == 0 {
            return Ok(Self {
                handles: vec![Handle::current()],
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
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
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
            handles,
            stops: Mutex::new(stops),
            threads: Mutex::new(threads),
        })
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether there are none (never: the caller's runtime is one).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Binds a listening socket on `addr` and runs `serve` on it in every worker (each with
    /// its own handle on the socket) until the returned handles are aborted.
    pub fn listen<F, Fut>(&self, addr: SocketAddr, serve: F) -> std::io::Result<Listening>
    where
        F: Fn(tokio::net::TcpListener) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let first = bind(addr)?;
        let local = first.local_addr()?;
        let mut sockets = Vec::with_capacity(self.handles.len());
        for _ in 1..self.handles.len() {
            sockets.push(first.try_clone()?);
        }
        sockets.push(first);
        let mut tasks = Vec::with_capacity(sockets.len());
        for (socket, handle) in sockets.into_iter().zip(&self.handles) {
            // Registered with the worker's own reactor, inside it.
            let _entered = handle.enter();
            let listener = tokio::net::TcpListener::from_std(socket)?;
            tasks.push(handle.spawn(serve(listener)));
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

    #[tokio::test]
    async fn a_port_taken_by_another_listener_is_an_error() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let workers = Workers::start(2).expect("workers");
        let err = workers
            .listen(other.local_addr().expect("addr"), |_l| async {})
            .expect_err("port in use");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        workers.stop().await;
    }

    #[tokio::test]
    async fn workers_accept_on_their_own_threads_and_stop() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let workers = Workers::start(2).expect("workers");
        let seen = Arc::new(Mutex::new(std::collections::HashSet::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (s, a) = (Arc::clone(&seen), Arc::clone(&accepted));
        let listening = workers
            .listen("127.0.0.1:0".parse().expect("addr"), move |l| {
                let (s, a) = (Arc::clone(&s), Arc::clone(&a));
                async move {
                    while let Ok((_c, _)) = l.accept().await {
                        s.lock().expect("lock").insert(current());
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
            .expect("listen");
        for _ in 0..64 {
            let _c = tokio::net::TcpStream::connect(listening.local)
                .await
                .expect("connect");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while accepted.load(Ordering::SeqCst) < 64 {
            assert!(std::time::Instant::now() < deadline, "not all accepted");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let seen = seen.lock().expect("lock").clone();
        assert!(seen.iter().all(Option::is_some), "accepted off a worker");
        // Every accept loop runs on a worker (which takes a connection is up to who is free).
        assert!(!seen.is_empty(), "{seen:?}");
        listening.abort();
        workers.stop().await;
        assert!(
            tokio::net::TcpStream::connect(listening.local)
                .await
                .is_err(),
            "still listening after stop"
        );
    }
}
