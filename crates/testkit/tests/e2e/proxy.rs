//! The edge proxy in front of real machines: routing and headers, spreading load, the hard
//! limit's queue and 503, autostart and autostop, fly-replay, raw TCP, upgrades.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_proxy::{Proxy, ProxyConfig};
use hangar_testkit::{Client, TEST_IMAGE, TestCluster};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{app, state, wait};

/// An "upgrade" server for `nc -e sh -c`: reads the request head, answers 101, then echoes.
const UPGRADE: &str = "while read -r l; do [ \"$l\" = \"$(printf '\\r')\" ] && break; done; printf 'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n\\r\\n'; exec cat";
const INFO: &str = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"machine=$(hostname)\"\nenv | grep ^HTTP_ | sort\n";
const SLOW: &str = "#!/bin/sh\nsleep ${QUERY_STRING:-1}\necho 'Content-Type: text/plain'\necho\necho \"slow machine=$(hostname)\"\n";
const HEALTH: &str = "#!/bin/sh\nif [ -e /tmp/healthy ]; then echo 'Status: 200 OK'; else echo 'Status: 503 Unavailable'; fi\necho 'Content-Type: text/plain'\necho\necho checked\n";
const REPLAY: &str = "#!/bin/sh\nif [ -n \"$HTTP_FLY_REPLAY_FAILED\" ]; then\n  echo 'Content-Type: text/plain'; echo; echo \"fell back machine=$(hostname) failed=$HTTP_FLY_REPLAY_FAILED\"\nelif [ -n \"$HTTP_FLY_REPLAY_SRC\" ]; then\n  echo 'Content-Type: text/plain'; echo; echo \"replayed machine=$(hostname) src=$HTTP_FLY_REPLAY_SRC\"\nelse\n  echo \"fly-replay: $QUERY_STRING\"; echo 'Content-Type: text/plain'; echo; echo replaying\nfi\n";

pub(crate) fn b64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A machine config serving busybox httpd with the CGI scripts on internal port 8080.
pub(crate) fn web(service: Value) -> Value {
    json!({
        "image": TEST_IMAGE,
        "init": {"cmd": ["httpd", "-f", "-p", "8080", "-h", "/www"]},
        "files": [
            {"guest_path": "/www/index.html", "raw_value": b64(b"hello\n")},
            {"guest_path": "/www/cgi-bin/info", "raw_value": b64(INFO.as_bytes()), "mode": 0o755},
            {"guest_path": "/www/cgi-bin/slow", "raw_value": b64(SLOW.as_bytes()), "mode": 0o755},
            {"guest_path": "/www/cgi-bin/replay", "raw_value": b64(REPLAY.as_bytes()), "mode": 0o755},
            {"guest_path": "/www/cgi-bin/health", "raw_value": b64(HEALTH.as_bytes()), "mode": 0o755},
        ],
        "services": [service],
    })
}

fn http_service(extra: Value) -> Value {
    let mut s = json!({
        "protocol": "tcp",
        "internal_port": 8080,
        "ports": [{"port": 80, "handlers": ["http"]}],
    });
    if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    s
}

pub(crate) async fn machine(c: &Client, app: &str, config: Value) -> String {
    let r = c
        .post(
            &format!("/v1/apps/{app}/machines"),
            &json!({"config": config}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.json()["id"].as_str().expect("id").to_string();
    wait(c, app, &id, "started", "").await;
    id
}

fn config() -> ProxyConfig {
    ProxyConfig {
        port_map: HashMap::from([(80, 0), (15000, 0), (15001, 0)]),
        autostop_interval: Duration::from_secs(3600),
        ..ProxyConfig::default()
    }
}

pub(crate) async fn listening(proxy: &Arc<Proxy>, port: u16) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(a) = proxy.listening().get(&port) {
            return *a;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy never listened for port {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

pub(crate) async fn get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .expect("the proxy answered in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        head: head.to_string(),
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Reads a response head byte by byte (nothing past it: the upgraded bytes follow).
async fn switching_protocols(s: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut byte))
            .await
            .expect("101 in time")
            .expect("read");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_routed_by_host_spread_and_carry_the_platform_headers() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "px-web").await;
    let svc = http_service(
        json!({"concurrency": {"type": "requests", "soft_limit": 5, "hard_limit": 10}}),
    );
    let m1 = machine(&c, "px-web", web(svc.clone())).await;
    let m2 = machine(&c, "px-web", web(svc)).await;
    let proxy = cluster.start_proxy(config());
    let addr = listening(&proxy, 80).await;

    let r = get(addr, "px-web.localhost", "/", &[]).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(r.body, "hello\n");
    assert!(
        r.header("server").is_some_and(|s| s.starts_with("Hangar/")),
        "{}",
        r.head
    );
    assert!(
        r.header("fly-request-id")
            .is_some_and(|s| s.ends_with("-local")),
        "{}",
        r.head
    );
    assert!(
        r.header("via").is_some_and(|s| s.contains("hangar")),
        "{}",
        r.head
    );

    let mut seen = std::collections::HashSet::new();
    for _ in 0..8 {
        let r = get(
            addr,
            "px-web.localhost:80",
            "/cgi-bin/info",
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.head);
        for want in [
            "HTTP_FLY_CLIENT_IP=127.0.0.1",
            "HTTP_X_FORWARDED_FOR=203.0.113.9, 127.0.0.1",
            "HTTP_X_FORWARDED_PROTO=http",
            "HTTP_X_FORWARDED_PORT=80",
            "HTTP_FLY_FORWARDED_PORT=80",
            "HTTP_X_FORWARDED_SSL=off",
            "HTTP_FLY_REGION=local",
            "HTTP_VIA=1.1 hangar",
            "HTTP_HOST=px-web.localhost:80",
        ] {
            assert!(r.body.contains(want), "{want} missing:\n{}", r.body);
        }
        seen.insert(
            r.body
                .lines()
                .find_map(|l| l.strip_prefix("machine="))
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(seen.contains(&m1) && seen.contains(&m2), "{seen:?}");
    // Forcing an instance.
    for _ in 0..3 {
        let r = get(
            addr,
            "px-web.localhost",
            "/cgi-bin/info",
            &[("fly-force-instance-id", &m2)],
        )
        .await;
        assert!(r.body.contains(&format!("machine={m2}")), "{}", r.body);
    }
    // Unknown apps and hosts.
    assert_eq!(get(addr, "nope.localhost", "/", &[]).await.status, 404);
    assert_eq!(get(addr, "example.com", "/", &[]).await.status, 404);
    // Metrics count the responses.
    let text = proxy.render_metrics();
    assert!(
        text.contains(
            "fly_edge_http_responses_count{app=\"px-web\",region=\"local\",status=\"200\"}"
        ),
        "{text}"
    );
    assert!(text.contains("fly_app_concurrency{"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hard_limit_queues_then_answers_503_and_nothing_hangs() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "px-busy").await;
    let svc = http_service(
        json!({"concurrency": {"type": "requests", "soft_limit": 1, "hard_limit": 1}}),
    );
    machine(&c, "px-busy", web(svc)).await;
    let proxy = cluster.start_proxy(ProxyConfig {
        queue_timeout: Duration::from_millis(800),
        max_queue_per_app: 3,
        ..config()
    });
    let addr = listening(&proxy, 80).await;
    // One slow request holds the only slot; the rest queue (3) or are refused at once.
    let slow =
        tokio::spawn(async move { get(addr, "px-busy.localhost", "/cgi-bin/slow?3", &[]).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut others = Vec::new();
    for _ in 0..8 {
        others.push(tokio::spawn(async move {
            get(addr, "px-busy.localhost", "/", &[]).await
        }));
    }
    for o in others {
        let r = o.await.expect("join");
        assert_eq!(r.status, 503, "{}", r.head);
        assert_eq!(r.header("retry-after").as_deref(), Some("1"), "{}", r.head);
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "queued requests waited too long"
    );
    let r = slow.await.expect("join");
    assert_eq!(r.status, 200, "{}", r.head);
    // A queued request that gets a slot in time is served.
    let slow =
        tokio::spawn(async move { get(addr, "px-busy.localhost", "/cgi-bin/slow?0", &[]).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let r = get(addr, "px-busy.localhost", "/", &[]).await;
    assert_eq!(r.status, 200, "{}", r.head);
    assert_eq!(slow.await.expect("join").status, 200);
    let text = proxy.render_metrics();
    assert!(
        text.contains("hangar_proxy_queue_rejected_total{app=\"px-busy\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_machines_stop_and_the_next_request_wakes_one() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "px-cold").await;
    app(&c, "px-kept").await;
    let cold = machine(
        &c,
        "px-cold",
        web(http_service(json!({"autostop": "stop", "autostart": true}))),
    )
    .await;
    let kept = machine(
        &c,
        "px-kept",
        web(http_service(
            json!({"autostop": "stop", "min_machines_running": 1}),
        )),
    )
    .await;
    let proxy = cluster.start_proxy(ProxyConfig {
        autostop_interval: Duration::from_secs(2),
        ..config()
    });
    let addr = listening(&proxy, 80).await;
    // Idle for the interval: stopped (within interval ± 1 s, plus the stop itself).
    let t0 = Instant::now();
    wait(&c, "px-cold", &cold, "stopped", "&timeout=20").await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(8),
        "{took:?}"
    );
    // min_machines_running keeps the other app's only machine.
    assert_eq!(state(&c, "px-kept", &kept).await, "started");
    // The first request wakes it and is answered.
    let r = get(addr, "px-cold.localhost", "/cgi-bin/info", &[]).await;
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body);
    assert!(
        r.header("hangar-cold-start")
            .and_then(|v| v.strip_suffix("ms")?.parse::<f64>().ok())
            .is_some_and(|ms| ms > 0.0),
        "{}",
        r.head
    );
    assert!(r.body.contains(&format!("machine={cold}")));
    assert_eq!(state(&c, "px-cold", &cold).await, "started");
    let text = proxy.render_metrics();
    assert!(
        text.contains("hangar_proxy_cold_start_seconds_count{app=\"px-cold\""),
        "{text}"
    );
    assert!(
        text.contains("hangar_proxy_autostop_total{action=\"stop\",app=\"px-cold\"")
            || text.contains("hangar_proxy_autostop_total{app=\"px-cold\""),
        "{text}"
    );
    // A burst at a stopped app: one wake, every request answered.
    wait(&c, "px-cold", &cold, "stopped", "&timeout=20").await;
    let mut burst = Vec::new();
    for _ in 0..10 {
        burst.push(tokio::spawn(async move {
            get(addr, "px-cold.localhost", "/", &[]).await
        }));
    }
    for b in burst {
        let r = b.await.expect("join");
        assert_eq!(r.status, 200, "{}", r.head);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fly_replay_moves_requests_between_machines_and_apps() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "px-a").await;
    app(&c, "px-b").await;
    let a1 = machine(&c, "px-a", web(http_service(json!({})))).await;
    let a2 = machine(&c, "px-a", web(http_service(json!({})))).await;
    let b1 = machine(&c, "px-b", web(http_service(json!({})))).await;
    let proxy = cluster.start_proxy(config());
    let addr = listening(&proxy, 80).await;
    // To another instance.
    let r = get(
        addr,
        "px-a.localhost",
        &format!("/cgi-bin/replay?instance={a2}"),
        &[("fly-force-instance-id", &a1)],
    )
    .await;
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body);
    assert!(
        r.body.starts_with(&format!(
            "replayed machine={a2} src=instance={a1};region=local;t="
        )),
        "{}",
        r.body
    );
    // To another app (same org).
    let r = get(
        addr,
        "px-a.localhost",
        "/cgi-bin/replay?app=px-b;state=s1",
        &[],
    )
    .await;
    assert!(
        r.body.starts_with(&format!("replayed machine={b1} src=")),
        "{}",
        r.body
    );
    assert!(r.body.trim_end().ends_with(";state=s1"), "{}", r.body);
    // elsewhere: never the replaying machine (the replay's routing replaces the client's).
    for _ in 0..4 {
        let r = get(
            addr,
            "px-a.localhost",
            "/cgi-bin/replay?elsewhere=true",
            &[("fly-force-instance-id", &a1)],
        )
        .await;
        assert!(
            r.body.contains(&format!("replayed machine={a2}")),
            "{}",
            r.body
        );
    }
    let r = get(
        addr,
        "px-a.localhost",
        "/cgi-bin/replay?elsewhere=true",
        &[("fly-prefer-instance-id", &a1)],
    )
    .await;
    assert!(
        r.body.contains(&format!("replayed machine={a2}")),
        "{}",
        r.body
    );
    // A target that does not exist, with a fallback to the replaying machine.
    let r = get(
        addr,
        "px-a.localhost",
        "/cgi-bin/replay?instance=00000000000000;fallback=force_self",
        &[("fly-force-instance-id", &a1)],
    )
    .await;
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body);
    let want = format!(
        "fell back machine={a1} failed=instance=00000000000000;replay_source={a1};\
         reason=no_candidate;elapsed_ms="
    );
    assert!(r.body.starts_with(&want), "{}\n{}", r.head, r.body);
    // Invalid replays and unknown apps are 502 with the reference's codes.
    let r = get(addr, "px-a.localhost", "/cgi-bin/replay?bogus", &[]).await;
    assert_eq!(
        (r.status, r.header("fly-error-code").as_deref()),
        (502, Some("PA03")),
        "{}",
        r.head
    );
    let r = get(
        addr,
        "px-a.localhost",
        "/cgi-bin/replay?app=no-such-app",
        &[],
    )
    .await;
    assert_eq!(
        (r.status, r.header("fly-error-code").as_deref()),
        (502, Some("PA04")),
        "{}",
        r.head
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tcp_wakes_a_stopped_machine_and_upgrades_are_spliced() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "px-tcp").await;
    let echo = machine(
        &c,
        "px-tcp",
        json!({
            "image": TEST_IMAGE,
            "init": {"cmd": ["nc", "-ll", "-p", "7000", "-e", "cat"]},
            "services": [{"protocol": "tcp", "internal_port": 7000, "ports": [{"port": 15000}]}],
        }),
    )
    .await;
    let r = c
        .post(&format!("/v1/apps/px-tcp/machines/{echo}/stop"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, "px-tcp", &echo, "stopped", "").await;
    app(&c, "px-ws").await;
    // An "upgrade" server: answers 101 and then echoes.
    machine(
        &c,
        "px-ws",
        json!({
            "image": TEST_IMAGE,
            "init": {"cmd": ["nc", "-ll", "-p", "8080", "-e", "sh", "-c",
                UPGRADE]},
            "services": [http_service(json!({}))],
        }),
    )
    .await;
    let proxy = cluster.start_proxy(config());
    let tcp = listening(&proxy, 15000).await;
    let mut s = tokio::net::TcpStream::connect(tcp).await.expect("connect");
    s.write_all(b"ping over tcp\n").await.expect("write");
    let mut buf = vec![0u8; 14];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(&buf, b"ping over tcp\n");
    assert_eq!(state(&c, "px-tcp", &echo).await, "started");
    drop(s);

    let http = listening(&proxy, 80).await;
    let mut s = tokio::net::TcpStream::connect(http).await.expect("connect");
    s.write_all(b"GET /ws HTTP/1.1\r\nhost: px-ws.localhost\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n")
        .await
        .expect("write");
    let head = switching_protocols(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"frames both ways\n").await.expect("write");
    let mut buf = vec![0u8; 17];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(&buf, b"frames both ways\n");
    // While it is open, the machine has load.
    assert!(proxy.loads.total_in_flight() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_service_checks_take_a_machine_out_of_routing() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "px-health").await;
    let svc = http_service(json!({"checks": [{
        "type": "http", "path": "/cgi-bin/health", "interval": "200ms", "timeout": "1s",
        "grace_period": "0s", "headers": [{"name": "x-check", "values": ["1"]}],
    }]}));
    let id = machine(&c, "px-health", web(svc)).await;
    let proxy = cluster.start_proxy(config());
    let addr = listening(&proxy, 80).await;
    let path = format!("/v1/apps/px-health/machines/{id}");
    // Critical: shown on the machine, and no traffic.
    let check = |status: &'static str, output: &'static str| {
        let c = c.clone();
        let path = path.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let m = c.get(&path).await.json();
                let checks = m["checks"].as_array().cloned().unwrap_or_default();
                if checks.iter().any(|ch| {
                    ch["name"] == "servicecheck-00-http-8080"
                        && ch["status"] == status
                        && ch["output"].as_str().is_some_and(|o| o.contains(output))
                }) {
                    return;
                }
                assert!(Instant::now() < deadline, "check never {status}: {m}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    check("critical", "503").await;
    let r = get(addr, "px-health.localhost", "/", &[]).await;
    assert_eq!(
        (r.status, r.header("fly-error-code").as_deref()),
        (503, Some("PR01")),
        "{}",
        r.head
    );
    // Healthy again: traffic flows.
    let r = c
        .post(
            &format!("{path}/exec"),
            &json!({"command": ["touch", "/tmp/healthy"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    check("passing", "200").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(addr, "px-health.localhost", "/", &[]).await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "never routed again: {}", r.head);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Stopped: the results are forgotten.
    let r = c.post(&format!("{path}/stop"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, "px-health", &id, "stopped", "").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.get(&path).await.json()["checks"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "checks of a stopped machine stayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_restarted_one_by_one_under_load_fail_no_request() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "px-restart").await;
    let svc = http_service(
        json!({"concurrency": {"type": "requests", "soft_limit": 20, "hard_limit": 25}}),
    );
    let m1 = machine(&c, "px-restart", web(svc.clone())).await;
    let m2 = machine(&c, "px-restart", web(svc)).await;
    let proxy = cluster.start_proxy(config());
    let addr = listening(&proxy, 80).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let (stop, failures, sent) = (stop.clone(), failures.clone(), sent.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut set = tokio::task::JoinSet::new();
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                tick.tick().await;
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let failures = failures.clone();
                set.spawn(async move {
                    let r = get(addr, "px-restart.localhost", "/", &[]).await;
                    if r.status != 200 {
                        failures.lock().expect("lock").push(r.head);
                    }
                });
                while set.try_join_next().is_some() {}
            }
            while set.join_next().await.is_some() {}
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in [&m1, &m2] {
        let r = c
            .post(
                &format!("/v1/apps/px-restart/machines/{id}/restart"),
                &json!({}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
        wait(&c, "px-restart", id, "started", "").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    load.await.expect("load");
    let failures = failures.lock().expect("lock").clone();
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    assert!(sent > 50, "{sent}");
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {failures:?}",
        failures.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_at_a_cold_app_is_bounded_and_never_hangs() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "px-burst").await;
    app(&c, "px-steady").await;
    let cold = machine(
        &c,
        "px-burst",
        web(http_service(json!({"autostart": true}))),
    )
    .await;
    machine(&c, "px-steady", web(http_service(json!({})))).await;
    let r = c
        .post(
            &format!("/v1/apps/px-burst/machines/{cold}/stop"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, "px-burst", &cold, "stopped", "").await;
    let proxy = cluster.start_proxy(ProxyConfig {
        max_queue_per_app: 64,
        ..config()
    });
    let addr = listening(&proxy, 80).await;
    // The steady app keeps answering while the burst runs.
    let steady = tokio::spawn(async move {
        let mut bad = 0;
        for _ in 0..100 {
            if get(addr, "px-steady.localhost", "/", &[]).await.status != 200 {
                bad += 1;
            }
        }
        bad
    });
    // 2,000 requests from 200 clients at the cold app: each is served or told to retry.
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..200 {
        set.spawn(async move {
            let mut out = (0usize, 0usize, Vec::new());
            for _ in 0..10 {
                let r = get(addr, "px-burst.localhost", "/", &[]).await;
                match r.status {
                    200 => out.0 += 1,
                    503 if r.header("retry-after").is_some() => out.1 += 1,
                    _ => out
                        .2
                        .push(r.head.lines().take(4).collect::<Vec<_>>().join(" | ")),
                }
            }
            out
        });
    }
    let (mut ok, mut retry, mut other) = (0, 0, Vec::new());
    while let Some(r) = set.join_next().await {
        let (a, b, c) = r.expect("join");
        ok += a;
        retry += b;
        other.extend(c);
    }
    assert!(
        other.is_empty(),
        "ok={ok} retry={retry} other={}: {:?}",
        other.len(),
        &other[..other.len().min(5)]
    );
    assert!(ok > 0, "nothing was served: retry={retry}");
    assert_eq!(
        steady.await.expect("join"),
        0,
        "the steady app failed requests"
    );
    assert_eq!(state(&c, "px-burst", &cold).await, "started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_proto_tells_the_app_who_connected() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "px-pp").await;
    let id = machine(
        &c,
        "px-pp",
        json!({
            "image": TEST_IMAGE,
            "init": {"cmd": ["nc", "-ll", "-p", "7000", "-e", "sh", "-c", "head -n 1 > /tmp/first; echo got-it"]},
            "services": [{"protocol": "tcp", "internal_port": 7000,
                "ports": [{"port": 15002, "handlers": []},
                          {"port": 15001, "handlers": ["proxy_proto"], "proxy_proto_options": {"version": "v1"}}]}],
        }),
    )
    .await;
    let proxy = cluster.start_proxy(config());
    // Sends a line to `port`, reads the app's answer; the first line the app read, and the
    // client's and the proxy's addresses.
    let first_line = |port: u16| {
        let (c, proxy, id) = (c.clone(), &proxy, &id);
        async move {
            let addr = listening(proxy, port).await;
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let mine = s.local_addr().expect("local");
            s.write_all(b"hello\n").await.expect("write");
            let mut buf = Vec::new();
            tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
                .await
                .expect("answer in time")
                .expect("read");
            assert_eq!(String::from_utf8_lossy(&buf), "got-it\n");
            let out = c
                .post(
                    &format!("/v1/apps/px-pp/machines/{id}/exec"),
                    &json!({"command": ["cat", "/tmp/first"]}),
                )
                .await
                .json();
            let line = out["stdout"].as_str().unwrap_or_default().to_string();
            (line, mine, addr)
        }
    };
    // The service's other port has no `proxy_proto`: its clients' bytes come first.
    let (line, _, _) = first_line(15002).await;
    assert_eq!(line, "hello\n");
    let (line, mine, addr) = first_line(15001).await;
    assert_eq!(
        line,
        format!(
            "PROXY TCP4 {} {} {} {}\r\n",
            mine.ip(),
            addr.ip(),
            mine.port(),
            addr.port()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_gets_a_close_frame_when_its_machine_stops() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "px-wsclose").await;
    // A websocket echo whose processes ignore the stop signal, so the machine stays until its
    // kill timeout: the close frame must come from the proxy, not from the connection dying.
    let id = machine(
        &c,
        "px-wsclose",
        json!({
            "image": TEST_IMAGE,
            "init": {"cmd": ["sh", "-c", "trap '' INT TERM; exec nc -ll -p 8080 -e sh -c \"$0\"", UPGRADE]},
            "services": [http_service(json!({}))],
            "stop_config": {"signal": "SIGINT", "timeout": "30s"},
        }),
    )
    .await;
    let proxy = cluster.start_proxy(config());
    let http = listening(&proxy, 80).await;
    let mut s = tokio::net::TcpStream::connect(http).await.expect("connect");
    s.write_all(b"GET /ws HTTP/1.1\r\nhost: px-wsclose.localhost\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\n\r\n")
        .await
        .expect("write");
    let head = switching_protocols(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // A masked text frame "hello" (the echo sends it back as it is).
    let key = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x85];
    frame.extend(key);
    frame.extend(b"hello".iter().zip(key.iter().cycle()).map(|(b, k)| b ^ k));
    s.write_all(&frame).await.expect("write");
    let mut echo = [0u8; 11];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut echo))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(echo[..], frame[..]);

    let r = c
        .post(
            &format!("/v1/apps/px-wsclose/machines/{id}/stop"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut close = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut close))
        .await
        .expect("a close frame before the kill timeout")
        .expect("read");
    assert_eq!(close, hangar_proxy::ws::GOING_AWAY, "1001 going away");
    // The client answers; then the proxy ends the connection.
    s.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe9])
        .await
        .expect("write");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("read");
    assert_eq!(state(&c, "px-wsclose", &id).await, "stopping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_from_a_trusted_balancer_names_the_client() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "px-lb").await;
    machine(&c, "px-lb", web(http_service(json!({})))).await;
    let proxy = cluster.start_proxy(ProxyConfig {
        proxy_protocol_from: vec!["127.0.0.0/8".parse().expect("cidr")],
        ..config()
    });
    let addr = listening(&proxy, 80).await;
    let request =
        b"GET /cgi-bin/info HTTP/1.1\r\nhost: px-lb.localhost\r\nconnection: close\r\n\r\n";
    let send = |head: Vec<u8>| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut bytes = head;
        bytes.extend_from_slice(request);
        s.write_all(&bytes).await.expect("write");
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
            .await
            .expect("answer in time")
            .expect("read");
        String::from_utf8_lossy(&out).into_owned()
    };
    // v1 and v2: the app sees the balancer's client, not the balancer.
    let v1 = send(b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 80\r\n".to_vec()).await;
    assert!(v1.starts_with("HTTP/1.1 200"), "{v1}");
    assert!(v1.contains("HTTP_FLY_CLIENT_IP=203.0.113.7"), "{v1}");
    let v2 = hangar_proxy::proxy_proto::header(
        hangar_proxy::proxy_proto::Version::V2,
        "[2001:db8::9]:40000".parse().expect("src"),
        "[2001:db8::1]:80".parse().expect("dst"),
    );
    let r = send(v2).await;
    assert!(r.contains("HTTP_FLY_CLIENT_IP=2001:db8::9"), "{r}");
    // A trusted source without a header is refused (nothing is guessed).
    let none = send(Vec::new()).await;
    assert!(none.is_empty(), "{none}");
    assert!(
        proxy
            .render_metrics()
            .lines()
            .any(|l| l.contains("PP01") && !l.starts_with('#')),
        "PP01 counted"
    );
    // And the proxy still serves plain clients from elsewhere: a proxy without the setting
    // takes the header for a bad request.
    let plain = cluster.start_proxy(config());
    let plain_addr = listening(&plain, 80).await;
    let mut s = tokio::net::TcpStream::connect(plain_addr)
        .await
        .expect("connect");
    s.write_all(b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 80\r\n")
        .await
        .expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_has_a_suspended_machine_thawed_at_once_even_with_the_agent_down() {
    // The proxy tells the host's agent of a resume as soon as it is recorded, and the agent
    // thaws the machine then. Shown with the agent's loop killed (the proxy holds the agent
    // itself): nothing else would thaw it, yet the request is answered; the restarted agent
    // then reports it started.
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "px-thaw").await;
    let id = machine(
        &c,
        "px-thaw",
        web(http_service(
            json!({"autostop": "suspend", "autostart": true}),
        )),
    )
    .await;
    let agent = cluster.agent().expect("agent");
    let proxy = cluster.start_proxy(ProxyConfig {
        resumer: Some(agent),
        ..config()
    });
    let addr = listening(&proxy, 80).await;
    let r = c
        .post(
            &format!("/v1/apps/px-thaw/machines/{id}/suspend"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, "px-thaw", &id, "suspended", "&timeout=20").await;
    cluster.kill_agent().await;
    let r = get(addr, "px-thaw.localhost", "/cgi-bin/info", &[]).await;
    assert_eq!(r.status, 200, "{}\n{}", r.head, r.body);
    assert!(r.body.contains(&format!("machine={id}")), "{}", r.body);
    assert!(r.header("hangar-cold-start").is_some(), "{}", r.head);
    let m = c
        .get(&format!("/v1/apps/px-thaw/machines/{id}"))
        .await
        .json();
    assert_eq!(m["state"], "starting", "no agent has reported it yet: {m}");
    cluster.start_agent().expect("agent");
    wait(&c, "px-thaw", &id, "started", "&timeout=20").await;
    let r = get(addr, "px-thaw.localhost", "/", &[]).await;
    assert_eq!(r.status, 200, "{}", r.head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_machine_is_resumed_by_a_request() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "px-susp").await;
    let id = machine(
        &c,
        "px-susp",
        web(http_service(
            json!({"autostop": "suspend", "autostart": true}),
        )),
    )
    .await;
    let proxy = cluster.start_proxy(config());
    let addr = listening(&proxy, 80).await;
    // Served, suspended, then each request resumes it (the request goes out as soon as the
    // start is recorded: the frozen app's socket accepts, and it answers once thawed).
    let r = get(addr, "px-susp.localhost", "/", &[]).await;
    assert_eq!(r.status, 200, "{}", r.head);
    let r = c
        .post(
            &format!("/v1/apps/px-susp/machines/{id}/suspend"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, "px-susp", &id, "suspended", "&timeout=20").await;
    for round in 0..3 {
        let r = get(addr, "px-susp.localhost", "/cgi-bin/info", &[]).await;
        assert_eq!(r.status, 200, "round {round}: {}\n{}", r.head, r.body);
        assert!(
            r.header("hangar-cold-start").is_some(),
            "round {round}: {}",
            r.head
        );
        assert!(r.body.contains(&format!("machine={id}")), "{}", r.body);
        wait(&c, "px-susp", &id, "started", "&timeout=20").await;
        let r = c
            .post(
                &format!("/v1/apps/px-susp/machines/{id}/suspend"),
                &json!({}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        wait(&c, "px-susp", &id, "suspended", "&timeout=20").await;
    }
}
