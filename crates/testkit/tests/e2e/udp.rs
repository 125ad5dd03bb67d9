//! UDP services through the edge proxy: flows to real machines and back, the flow limit,
//! autostart (with the datagrams the machine refused before its app bound sent again) and
//! autostop once the flows are idle.
//!
//! The machines' UDP servers are sockets the test binds inside each machine's network
//! namespace (busybox has no UDP server): the proxy's path to them is the real one, over the
//! machine's bridge to its 6PN address.

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hangar_proxy::{Proxy, ProxyConfig};
use hangar_testkit::{TEST_IMAGE, TestCluster};
use serde_json::{Value, json};

use super::proxy::{listening, machine};
use super::{app, state, until_state};

/// A machine config with one UDP service: public `port` to internal port 5353.
fn udp_machine(port: u16, extra: Value) -> Value {
    let mut svc = json!({
        "protocol": "udp",
        "internal_port": 5353,
        "ports": [{"port": port}],
    });
    if let (Some(s), Some(e)) = (svc.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({
        "image": TEST_IMAGE,
        "init": {"cmd": ["sleep", "3600"]},
        "services": [svc],
    })
}

/// An echo server on `[::]:5353` in machine `id`'s network namespace, answering `echo:` and
/// the datagram, until dropped; it keeps what it received.
struct Echo {
    stop: Arc<AtomicBool>,
    received: Arc<Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start(id: &str) -> Self {
        let path = format!("/run/netns/hgr-{id}");
        let socket = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("netns");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 5353)).expect("bind")
        })
        .join()
        .expect("thread");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&stop);
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !done.load(Ordering::Acquire) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    log.lock()
                        .expect("log")
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    let mut answer = b"echo:".to_vec();
                    answer.extend_from_slice(&buf[..n]);
                    let _ = socket.send_to(&answer, from);
                }
            }
        });
        Self {
            stop,
            received,
            thread: Some(thread),
        }
    }

    /// How many times it received `msg`.
    fn count(&self, msg: &str) -> usize {
        self.received
            .lock()
            .expect("log")
            .iter()
            .filter(|m| *m == msg)
            .count()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A client socket on loopback.
fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    s
}

/// Sends `msg` to `to` and returns the first answer within `within`, or `None`.
fn ask(s: &UdpSocket, to: SocketAddr, msg: &str, within: Duration) -> Option<String> {
    s.send_to(msg.as_bytes(), to).expect("send");
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    None
}

async fn udp_listening(proxy: &Arc<Proxy>, port: u16) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(a) = proxy.udp_listening().get(&port) {
            return *a;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy never bound udp port {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of the metric line starting with `prefix` (name and labels), if any.
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_flows_reach_their_machine_within_the_flow_limit() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "px-udp").await;
    let id = machine(&c, "px-udp", udp_machine(15353, json!({}))).await;
    // A TCP service on another port: the UDP port must not become a TCP listener.
    app(&c, "px-udp-web").await;
    machine(
        &c,
        "px-udp-web",
        json!({
            "image": TEST_IMAGE,
            "init": {"cmd": ["httpd", "-f", "-p", "8080"]},
            "services": [{"protocol": "tcp", "internal_port": 8080, "ports": [{"port": 15354}]}],
        }),
    )
    .await;
    let _echo = Echo::start(&id);
    let proxy = cluster.start_proxy(ProxyConfig {
        port_map: HashMap::from([(15353, 0), (15354, 0)]),
        autostop_interval: Duration::from_secs(3600),
        udp_max_flows: 2,
        ..ProxyConfig::default()
    });
    let to = udp_listening(&proxy, 15353).await;
    listening(&proxy, 15354).await;
    assert!(
        !proxy.listening().contains_key(&15353),
        "a UDP service's port was opened for TCP: {:?}",
        proxy.listening()
    );
    assert!(!proxy.udp_listening().contains_key(&15354));

    let (a, b, third) = (client(), client(), client());
    let long = Duration::from_secs(10);
    assert_eq!(ask(&a, to, "a1", long).as_deref(), Some("echo:a1"));
    assert_eq!(ask(&b, to, "b1", long).as_deref(), Some("echo:b1"));
    assert_eq!(ask(&a, to, "a2", long).as_deref(), Some("echo:a2"));
    // Flows take none of the machine's concurrency (forged addresses would take it from the
    // app's TCP and HTTP clients).
    assert_eq!(proxy.loads.get(&id).in_flight(), 0);
    // A third client is over the limit of two flows: dropped, and counted.
    assert_eq!(ask(&third, to, "c1", Duration::from_millis(500)), None);
    let text = proxy.render_metrics();
    assert_eq!(
        metric(&text, "hangar_proxy_udp_flows{app=\"px-udp\""),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "hangar_proxy_udp_datagrams_total{app=\"px-udp\",region=\"local\",direction=\"in\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "hangar_proxy_udp_datagrams_total{app=\"px-udp\",region=\"local\",direction=\"out\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert!(
        text.contains("hangar_proxy_udp_dropped_total{region=\"local\",port=\"15353\",reason=\"too_many_flows\"} 1"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_wakes_a_stopped_machine_and_idle_flows_let_it_stop() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "px-udpw").await;
    let id = machine(
        &c,
        "px-udpw",
        udp_machine(
            15355,
            json!({"autostart": true, "autostop": "stop", "min_machines_running": 0}),
        ),
    )
    .await;
    let proxy = cluster.start_proxy(ProxyConfig {
        port_map: HashMap::from([(15355, 0)]),
        autostop_interval: Duration::from_secs(1),
        udp_idle_timeout: Duration::from_secs(1),
        ..ProxyConfig::default()
    });
    let to = udp_listening(&proxy, 15355).await;
    // Idle from the start: autostop stops it, and the proxy sees it go away (a flow must
    // not take that for its own machine going away once it woke it again).
    until_state(
        &c,
        "px-udpw",
        &id,
        "stopped",
        Duration::from_secs(20),
        Duration::from_millis(50),
    )
    .await;

    // The first datagram wakes the machine; its server binds only a second after the
    // machine is started, so the proxy's first sends are refused and must be sent again,
    // past the six refusals the machine's kernel sends at once.
    let s = client();
    s.send_to(b"wake", to).expect("send");
    until_state(
        &c,
        "px-udpw",
        &id,
        "started",
        Duration::from_secs(30),
        Duration::from_millis(5),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let echo = Echo::start(&id);
    let mut buf = [0u8; 64];
    let got = {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                break Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
            if Instant::now() > deadline {
                break None;
            }
        }
    };
    assert_eq!(got.as_deref(), Some("echo:wake"));
    // Resent while refused, delivered once.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(echo.count("wake"), 1);
    let text = proxy.render_metrics();
    assert!(
        text.contains("hangar_proxy_cold_start_seconds_count{app=\"px-udpw\""),
        "{text}"
    );

    // A client that keeps sending keeps the machine up past the autostop interval and the
    // flow idle timeout.
    for i in 0..12 {
        let msg = format!("keep{i}");
        assert_eq!(
            ask(&s, to, &msg, Duration::from_secs(5)),
            Some(format!("echo:{msg}"))
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(state(&c, "px-udpw", &id).await, "started");

    // Silent flows end after a second, and the idle machine is stopped about a second later.
    until_state(
        &c,
        "px-udpw",
        &id,
        "stopped",
        Duration::from_secs(20),
        Duration::from_millis(50),
    )
    .await;
    assert_eq!(
        metric(
            &proxy.render_metrics(),
            "hangar_proxy_udp_flows{app=\"px-udpw\""
        ),
        Some(0.0)
    );
    drop(echo);
}
