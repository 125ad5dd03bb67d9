//! Autostart: wake a stopped or suspended machine for a waiting request, once, however many
//! requests wait for it. The request is held until the machine's start is recorded and its
//! service port accepts a connection (a UDP flow: until it is `started` in the catalog),
//! bounded by the wake timeout.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use hangar_domain::{Resumer, State};
use hangar_store::Store;
use tokio::sync::watch;

use crate::catalog::CatalogHandle;
use crate::control::{self, Outcome};

/// Why a wake failed (`PM0x`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WakeError {
    /// The start could not be recorded (`PM07`).
    Refused(String),
    /// The machine is in a state it can not be started from (`PM08`).
    NotStartable(State),
    /// Not up in time (`PM03`).
    Timeout,
}

impl WakeError {
    /// The reference's error code.
    pub fn code(&self) -> &'static str {
        match self {
            WakeError::Refused(_) => "PM07",
            WakeError::NotStartable(_) => "PM08",
            WakeError::Timeout => "PM03",
        }
    }
}

type WakeResult = Option<Result<(), WakeError>>;

/// Wakes in progress, by machine id. An entry lives exactly as long as its wake task: the
/// task that inserted it removes it once its result is sent (waiters keep their receivers),
/// so a later wake starts afresh even when every waiter gave up before the result came.
#[derive(Debug, Default)]
pub struct Wakes {
    inflight: Arc<Mutex<HashMap<String, watch::Receiver<WakeResult>>>>,
    /// Told when a suspended machine's start is recorded ([`hangar_domain::Resumer`]).
    resumer: Option<Arc<dyn Resumer>>,
}

impl Wakes {
    /// Wakes that tell `resumer` of each suspended machine's recorded start.
    pub fn new(resumer: Option<Arc<dyn Resumer>>) -> Self {
        Self {
            inflight: Arc::default(),
            resumer,
        }
    }

    /// Machines being woken now.
    pub fn in_progress(&self) -> usize {
        self.inflight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Starts machine `id` (if no one is already) and waits until it serves `port` or
    /// `timeout` passes. Returns how long the caller waited. With `keep`, the connection
    /// that found the port accepting goes to that pool (this worker's shard) for the request
    /// that waited: the machine's app, just woken, then accepts one connection, not two.
    pub async fn wake(
        &self,
        store: &Arc<dyn Store>,
        catalog: &Arc<CatalogHandle>,
        id: &str,
        target: (Ipv6Addr, u16),
        timeout: Duration,
        keep: Option<&Arc<crate::pool::Pool>>,
    ) -> Result<Duration, WakeError> {
        self.wake_for(store, catalog, id, Some(target), timeout, keep)
            .await
    }

    /// Starts machine `id` (if no one is already) for a UDP flow and waits until it is
    /// started (a suspended one: until its start is recorded, since its sockets hold what
    /// arrives while it thaws), or `timeout` passes. A UDP port can not be probed without
    /// sending the app a datagram: [`crate::udp`] resends what the machine refused instead.
    pub async fn wake_udp(
        &self,
        store: &Arc<dyn Store>,
        catalog: &Arc<CatalogHandle>,
        id: &str,
        timeout: Duration,
    ) -> Result<Duration, WakeError> {
        self.wake_for(store, catalog, id, None, timeout, None).await
    }

    async fn wake_for(
        &self,
        store: &Arc<dyn Store>,
        catalog: &Arc<CatalogHandle>,
        id: &str,
        target: Option<(Ipv6Addr, u16)>,
        timeout: Duration,
        keep: Option<&Arc<crate::pool::Pool>>,
    ) -> Result<Duration, WakeError> {
        let started = Instant::now();
        // A wake for UDP (no port to probe) is not one a TCP caller may join: it would be
        // told the machine is up before its app listens. Both start the machine (the second
        // finds it starting); each waits its own way.
        let key = match target {
            Some(_) => id.to_string(),
            None => format!("{id} udp"),
        };
        let mut rx = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    map.insert(key.clone(), rx.clone());
                    let store = store.clone();
                    let catalog = catalog.clone();
                    let id = id.to_string();
                    let keep = keep.cloned();
                    let inflight = Arc::clone(&self.inflight);
                    let resumer = self.resumer.clone();
                    let key = key.clone();
                    tokio::spawn(async move {
                        let r = tokio::time::timeout(
                            timeout,
                            bring_up(store.as_ref(), &catalog, &id, target, resumer),
                        )
                        .await
                        .unwrap_or(Err(WakeError::Timeout));
                        let r = r.map(|probe| {
                            if let (Some(pool), Some(probe), Some((addr, port))) =
                                (keep, probe, target)
                            {
                                let _ = probe.set_nodelay(true);
                                let target = SocketAddr::V6(SocketAddrV6::new(addr, port, 0, 0));
                                pool.local()
                                    .put_conn(target, crate::upstream::Conn::new(probe));
                            }
                        });
                        tx.send_replace(Some(r));
                        inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&key);
                    });
                    rx
                }
            }
        };
        let r = tokio::time::timeout(timeout, async {
            loop {
                if let Some(r) = rx.borrow().clone() {
                    return r;
                }
                if rx.changed().await.is_err() {
                    return Err(WakeError::Timeout);
                }
            }
        })
        .await
        .unwrap_or(Err(WakeError::Timeout));
        r.map(|()| started.elapsed())
    }
}

/// A woken machine's port is probed every millisecond from when its start is recorded;
/// every [`PROBE_FINE`] for [`PROBE_FINE_FOR`] once it is reported started (its app is about
/// to listen: at most twenty-five refused connections); every millisecond again until
/// [`PROBE_STEADY_FOR`] after that; then after a delay doubled after each refusal up to
/// [`PROBE_MAX`]. A refused connection costs the host microseconds; a probe that sleeps past
/// the app's listen costs the waiting request the rest of the sleep.
const PROBE_FINE: Duration = Duration::from_micros(200);
const PROBE_FINE_FOR: Duration = Duration::from_millis(5);
const PROBE_STEADY_FOR: Duration = Duration::from_millis(50);
const PROBE_MAX: Duration = Duration::from_millis(50);

/// A connection to a suspended machine issued before its start is recorded.
type EarlyConnect =
    std::pin::Pin<Box<dyn Future<Output = std::io::Result<tokio::net::TcpStream>> + Send>>;

/// Starts the machine and waits for it: with a `probe` address, until that port accepts (the
/// connection that found it is returned); without, until it is started.
async fn bring_up(
    store: &dyn Store,
    catalog: &CatalogHandle,
    id: &str,
    probe: Option<(Ipv6Addr, u16)>,
    resumer: Option<Arc<dyn Resumer>>,
) -> Result<Option<tokio::net::TcpStream>, WakeError> {
    let mut rx = catalog.subscribe();
    // A suspended machine's sockets exist while it is frozen: the kernel accepts connections
    // for it, and its app answers them once thawed. So the request need not wait for the
    // agent to report `started` through the store (two commits and a catalog update); it
    // goes out as soon as the start is recorded and the port accepts.
    let suspended = catalog
        .snapshot()
        .machines
        .get(id)
        .is_some_and(|m| m.state == State::Suspended);
    let target = probe.map(|(addr, port)| SocketAddr::V6(SocketAddrV6::new(addr, port, 0, 0)));
    // For the same reason its connection is opened first: the connect is issued now (one
    // poll) and the handshake completes while the start is recorded.
    let mut early: Option<EarlyConnect> = None;
    if suspended && let Some(target) = target {
        let mut connecting = Box::pin(tokio::net::TcpStream::connect(target));
        early = Some(
            match std::future::poll_fn(|cx| Poll::Ready(connecting.as_mut().poll(cx))).await {
                Poll::Ready(r) => Box::pin(std::future::ready(r)),
                Poll::Pending => connecting,
            },
        );
    }
    // A machine still stopping (autostop, the API) is started once it is down; the caller's
    // timeout bounds the wait.
    loop {
        match control::start(store, id) {
            Ok(Outcome::Done) => {
                // Thawed now, not once the agent has read the record; on a blocking thread,
                // while the request goes out here (the frozen app's socket takes it).
                if suspended && let Some(r) = resumer {
                    let id = id.to_string();
                    drop(tokio::task::spawn_blocking(move || r.resume_now(&id)));
                }
                break;
            }
            Ok(Outcome::Already) => break,
            Ok(Outcome::Refused(State::Stopping | State::Suspending)) => {
                // Not a resume after all (the catalog was behind): the early connection
                // reached an instance on its way down, not the one that will start.
                early = None;
                if tokio::time::timeout(Duration::from_millis(200), rx.changed())
                    .await
                    .is_ok_and(|r| r.is_err())
                {
                    return Err(WakeError::Timeout);
                }
            }
            Ok(Outcome::Refused(state)) => {
                return Err(WakeError::NotStartable(state));
            }
            Err(e) => return Err(WakeError::Refused(e.to_string())),
        }
    }
    let Some(target) = target else {
        // A UDP wake: the machine started in the catalog (a suspended one's sockets already
        // hold what arrives).
        if !suspended {
            wait_started(catalog, &mut rx, id).await?;
        }
        return Ok(None);
    };
    if let Some(connecting) = early
        && let Ok(probe) = connecting.await
    {
        return Ok(Some(probe));
    }
    // Its port accepting (the app may take a moment to listen), probed from now on, not
    // once the agent has reported `started` through the store: a start is recorded only
    // once the previous instance is down, so whatever accepts at the machine's address is
    // the one just started. Meanwhile the catalog says whether the start failed, and when
    // it started (the probe is then finer: the app is about to listen).
    let started = tokio::sync::Notify::new();
    let failed = async {
        match wait_started(catalog, &mut rx, id).await {
            Ok(()) => {
                started.notify_one();
                std::future::pending().await
            }
            Err(e) => e,
        }
    };
    tokio::select! {
        probe = accepting(target, &started) => Ok(Some(probe)),
        e = failed => Err(e),
    }
}

/// The first connection `target` accepts, probed at the pace above (`started` is told when
/// the machine is reported started).
async fn accepting(target: SocketAddr, started: &tokio::sync::Notify) -> tokio::net::TcpStream {
    let mut since = Instant::now();
    let mut delay = Duration::from_millis(1);
    let started = started.notified();
    tokio::pin!(started);
    let mut seen = false;
    loop {
        if let Ok(probe) = tokio::net::TcpStream::connect(target).await {
            return probe;
        }
        let elapsed = since.elapsed();
        let fine = seen && elapsed < PROBE_FINE_FOR;
        let steady = elapsed < PROBE_STEADY_FOR;
        let pause = async {
            if fine {
                // Finer than tokio's timer, which rounds up to the next millisecond: an app
                // that listens within a few milliseconds (as small ones do) is found about
                // 0.1 ms after, not up to a millisecond later.
                let _ = tokio::task::spawn_blocking(|| std::thread::sleep(PROBE_FINE)).await;
            } else {
                tokio::time::sleep(delay).await;
            }
        };
        tokio::select! {
            () = &mut started, if !seen => {
                seen = true;
                since = Instant::now();
                delay = Duration::from_millis(1);
            }
            () = pause => {
                if !steady {
                    delay = (delay * 2).min(PROBE_MAX);
                }
            }
        }
    }
}

/// Waits until the catalog shows machine `id` started.
async fn wait_started(
    catalog: &CatalogHandle,
    rx: &mut watch::Receiver<u64>,
    id: &str,
) -> Result<(), WakeError> {
    loop {
        let snap = catalog.snapshot();
        match snap.machines.get(id).map(|m| m.state) {
            Some(State::Started) => return Ok(()),
            Some(
                State::Starting
                | State::Created
                | State::Stopped
                | State::Suspended
                | State::Stopping
                | State::Suspending,
            ) => {}
            Some(other) => {
                return Err(WakeError::NotStartable(other));
            }
            None => return Err(WakeError::Refused("machine is gone".into())),
        }
        if rx.changed().await.is_err() {
            return Err(WakeError::Timeout);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hangar_api_types::MachineConfig;
    use hangar_store::{AppRecord, MachineRecord, SqliteStore};

    fn store_with_suspended(id: &str) -> Arc<dyn Store> {
        store_with_machine(id, State::Suspended)
    }

    /// An in-memory store with org `o`, app `a` and machine `id` of app `a` in `state`.
    pub(crate) fn store_with_machine(id: &str, state: State) -> Arc<dyn Store> {
        let store = SqliteStore::in_memory().expect("store");
        store.create_org("o", "O", 1).expect("org");
        store
            .create_app(&AppRecord {
                id: "id-a".into(),
                name: "a".into(),
                org_slug: "o".into(),
                network: "default".into(),
                created_at: 1,
            })
            .expect("app");
        store
            .insert_machine(&MachineRecord {
                id: id.into(),
                app: "a".into(),
                name: id.into(),
                region: "local".into(),
                state,
                instance_id: "01HZZZZZZZZZZZZZZZZZZZZZZZ".into(),
                config: MachineConfig::default(),
                image_ref: None,
                private_ip: "::1".into(),
                host: "h".into(),
                cordoned: false,
                pending: None,
                restart_count: 0,
                created_at: 1,
                updated_at: 1,
                revision: 0,
            })
            .expect("machine");
        Arc::new(store)
    }

    /// Counts the connections a listener accepts.
    async fn counting_listener() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("[::1]:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = Arc::clone(&n);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                held.push(s);
            }
        });
        (port, n)
    }

    /// Waits (at most 2 s) until `accepted` counts `n` connections.
    async fn until_accepted(accepted: &std::sync::atomic::AtomicUsize, n: usize, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while accepted.load(std::sync::atomic::Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn the_connection_that_found_the_port_serves_the_request() {
        for keep in [true, false] {
            let id = if keep {
                "0123456789abc0"
            } else {
                "0123456789abc1"
            };
            let store = store_with_suspended(id);
            let catalog = CatalogHandle::new();
            catalog.load(store.as_ref()).expect("load");
            let (port, accepted) = counting_listener().await;
            let pool = Arc::new(crate::pool::Pool::new(1));
            let wakes = Wakes::default();
            wakes
                .wake(
                    &store,
                    &catalog,
                    id,
                    (Ipv6Addr::LOCALHOST, port),
                    Duration::from_secs(5),
                    keep.then_some(&pool),
                )
                .await
                .expect("woken");
            // The start is recorded, with its event, in one go.
            let m = store.find_machine(id).expect("read").expect("machine");
            assert_eq!(m.state, State::Starting);
            assert_eq!(store.events(id, 10).expect("events").len(), 1);
            let target = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, port, 0, 0));
            let pooled = pool.take_conn(target);
            assert_eq!(pooled.is_some(), keep);
            until_accepted(&accepted, 1, "the probe never connected").await;
            assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
        }
    }

    /// Records each `resume_now` with the machine's state in the store at that moment.
    struct Recorder {
        store: Arc<dyn Store>,
        calls: Mutex<Vec<(String, Option<State>)>>,
    }

    impl std::fmt::Debug for Recorder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Recorder")
        }
    }

    impl Resumer for Recorder {
        fn resume_now(&self, machine_id: &str) {
            let state = self
                .store
                .find_machine(machine_id)
                .ok()
                .flatten()
                .map(|m| m.state);
            self.calls
                .lock()
                .expect("lock")
                .push((machine_id.to_string(), state));
        }
    }

    #[tokio::test]
    async fn the_host_is_told_of_a_suspended_machines_recorded_start_only() {
        for (id, state, told) in [
            ("0123456789abd0", State::Suspended, true),
            ("0123456789abd1", State::Stopped, false),
        ] {
            let store = store_with_machine(id, state);
            let catalog = CatalogHandle::new();
            catalog.load(store.as_ref()).expect("load");
            let recorder = Arc::new(Recorder {
                store: store.clone(),
                calls: Mutex::new(Vec::new()),
            });
            let wakes = Wakes::new(Some(recorder.clone()));
            // A UDP wake: done once the start is recorded (suspended) or started (stopped,
            // which nothing reports here: it times out).
            let r = wakes
                .wake_udp(&store, &catalog, id, Duration::from_millis(300))
                .await;
            assert_eq!(r.is_ok(), told, "{state:?}: {r:?}");
            // The call runs on a blocking thread, beside the wake's end.
            let deadline = Instant::now() + Duration::from_secs(2);
            while told
                && recorder.calls.lock().expect("lock").is_empty()
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let calls = recorder.calls.lock().expect("lock").clone();
            if told {
                // Once, after the start was recorded.
                assert_eq!(calls, [(id.to_string(), Some(State::Starting))]);
            } else {
                assert!(calls.is_empty(), "{calls:?}");
            }
        }
    }

    #[tokio::test]
    async fn a_tcp_wake_does_not_join_a_udp_one() {
        // A UDP wake is done once the machine is started; a TCP one waits for its port. Had
        // the TCP caller joined the UDP wake, it would be told the machine is up while
        // nothing listens on its port.
        let id = "0123456789abc7";
        let store = store_with_machine(id, State::Stopped);
        let catalog = CatalogHandle::new();
        catalog.load(store.as_ref()).expect("load");
        let closed = std::net::TcpListener::bind("[::1]:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let wakes = Arc::new(Wakes::default());
        let udp = {
            let (w, s, c) = (Arc::clone(&wakes), Arc::clone(&store), Arc::clone(&catalog));
            tokio::spawn(async move { w.wake_udp(&s, &c, id, Duration::from_secs(5)).await })
        };
        let tcp = {
            let (w, s, c) = (Arc::clone(&wakes), Arc::clone(&store), Arc::clone(&catalog));
            tokio::spawn(async move {
                w.wake(
                    &s,
                    &c,
                    id,
                    (Ipv6Addr::LOCALHOST, closed),
                    Duration::from_millis(1500),
                    None,
                )
                .await
            })
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while wakes.in_progress() < 2 {
            assert!(Instant::now() < deadline, "two wakes never ran");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Started, as the agent would record it.
        let mut m = store.find_machine(id).expect("read").expect("machine");
        m.state = State::Started;
        store.update_machine(&m, m.revision).expect("started");
        catalog.load(store.as_ref()).expect("load");
        assert!(udp.await.expect("task").is_ok());
        assert_eq!(tcp.await.expect("task"), Err(WakeError::Timeout));
    }

    #[tokio::test]
    async fn a_connection_opened_before_a_stop_is_not_taken_for_the_new_start() {
        // The catalog says suspended, the store says stopping: the early connection reached
        // the instance going down, so the wake probes again once the start is recorded.
        let id = "0123456789abc4";
        let store = store_with_suspended(id);
        let catalog = CatalogHandle::new();
        catalog.load(store.as_ref()).expect("load");
        let mut m = store.find_machine(id).expect("read").expect("machine");
        m.state = State::Stopping;
        let m = store.update_machine(&m, m.revision).expect("stopping");
        let (port, accepted) = counting_listener().await;
        let s = Arc::clone(&store);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut m = m;
            m.state = State::Stopped;
            s.update_machine(&m, m.revision).expect("stopped");
        });
        let pool = Arc::new(crate::pool::Pool::new(1));
        Wakes::default()
            .wake(
                &store,
                &catalog,
                id,
                (Ipv6Addr::LOCALHOST, port),
                Duration::from_secs(5),
                Some(&pool),
            )
            .await
            .expect("woken");
        let m = store.find_machine(id).expect("read").expect("machine");
        assert_eq!(m.state, State::Starting);
        until_accepted(
            &accepted,
            2,
            "the early connection was taken for the new start",
        )
        .await;
    }

    #[tokio::test]
    async fn a_machine_in_a_state_that_can_not_start_is_pm08() {
        let id = "0123456789abc3";
        let store = store_with_machine(id, State::Destroying);
        let catalog = CatalogHandle::new();
        catalog.load(store.as_ref()).expect("load");
        let e = Wakes::default()
            .wake(
                &store,
                &catalog,
                id,
                (Ipv6Addr::LOCALHOST, 9),
                Duration::from_secs(5),
                None,
            )
            .await
            .expect_err("not startable");
        assert_eq!(e, WakeError::NotStartable(State::Destroying));
        assert_eq!(e.code(), "PM08");
    }

    #[tokio::test]
    async fn a_wake_every_waiter_gave_up_on_does_not_answer_the_next_one() {
        let id = "0123456789abc2";
        let store = store_with_suspended(id);
        let catalog = CatalogHandle::new();
        catalog.load(store.as_ref()).expect("load");
        // Nothing listens here: the wake probes until its own 300 ms run out.
        let closed = std::net::TcpListener::bind("[::1]:0").expect("bind");
        let dead = closed.local_addr().expect("addr").port();
        drop(closed);
        let wakes = Wakes::default();
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            wakes.wake(
                &store,
                &catalog,
                id,
                (Ipv6Addr::LOCALHOST, dead),
                Duration::from_millis(300),
                None,
            ),
        )
        .await;
        assert!(gave_up.is_err(), "the waiter was dropped while waiting");
        assert_eq!(wakes.in_progress(), 1);
        // The task ends with its timeout and retires its entry itself.
        let deadline = Instant::now() + Duration::from_secs(5);
        while wakes.in_progress() > 0 {
            assert!(
                Instant::now() < deadline,
                "the finished wake is still listed"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A later request wakes afresh (the machine now listens) instead of being handed
        // the old timeout.
        let (port, accepted) = counting_listener().await;
        wakes
            .wake(
                &store,
                &catalog,
                id,
                (Ipv6Addr::LOCALHOST, port),
                Duration::from_secs(5),
                None,
            )
            .await
            .expect("a fresh wake");
        until_accepted(&accepted, 1, "the fresh wake never probed").await;
    }
}
