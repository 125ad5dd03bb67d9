//! Flycast with real packets (PLATFORM.md §4.3): app B serves HTTP on port 80 (`force_https`
//! declared, which Flycast ignores) and raw TCP on 5000, its only machine stopped. Once a
//! Flycast address is allocated, a machine of app A in the same org reaches it by address and
//! by `fly-b.flycast`: B starts on the first request and answers 200 with the machine's 6PN
//! address as `Fly-Client-IP`. A machine of another org and one of a custom network of the
//! same org can not connect, until an address is allocated for their network (then they can,
//! and A can not reach that one). The rules come back after the host side restarts with its
//! tables and addresses lost; after a release nobody connects and the name is NXDOMAIN.

use std::collections::HashMap;
use std::net::Ipv6Addr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_domain::sixpn;
use hangar_proxy::{Proxy, ProxyConfig};
use hangar_store::Store as _;
use hangar_testkit::{Client, TEST_IMAGE, TestCluster};
use serde_json::{Value, json};

use super::proxy::web;
use super::{state, wait};

#[derive(Debug, Clone)]
struct M {
    app: String,
    id: String,
    ip: Ipv6Addr,
}

async fn app(c: &Client, name: &str, org: &str, network: Option<&str>) {
    let mut body = json!({"app_name": name, "org_slug": org});
    if let Some(n) = network {
        body["network"] = json!(n);
    }
    let r = c.post("/v1/apps", &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

async fn machine(c: &Client, app: &str, config: Value) -> M {
    let r = c
        .post(
            &format!("/v1/apps/{app}/machines"),
            &json!({"config": config}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m: Value = r.json();
    let id = m["id"].as_str().expect("id").to_string();
    wait(c, app, &id, "started", "").await;
    M {
        app: app.into(),
        id,
        ip: m["private_ip"].as_str().expect("ip").parse().expect("6PN"),
    }
}

/// A client machine: a shell with busybox's wget, nc and nslookup.
async fn client_machine(c: &Client, app: &str) -> M {
    machine(
        c,
        app,
        json!({
            "image": TEST_IMAGE,
            "init": {"cmd": ["sh", "-c", "while true; do sleep 1; done"]},
        }),
    )
    .await
}

async fn exec(c: &Client, m: &M, script: &str) -> (i64, String) {
    let r = c
        .post(
            &format!("/v1/apps/{}/machines/{}/exec", m.app, m.id),
            &json!({"command": ["sh", "-c", script], "timeout": 60}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v: Value = r.json();
    (
        v["exit_code"].as_i64().unwrap_or(-1),
        format!(
            "{}{}",
            v["stdout"].as_str().unwrap_or_default(),
            v["stderr"].as_str().unwrap_or_default()
        ),
    )
}

/// `GET path` on `host` (an address in brackets or a name) port 80 from `m`: (exit, output).
async fn wget(c: &Client, m: &M, host: &str, path: &str) -> (i64, String) {
    exec(
        c,
        m,
        // Not busybox wget's -T: it crashes with it on IPv6 (and without a port on a literal).
        &format!("timeout 40 wget -q -O - http://{host}:80{path} 2>&1"),
    )
    .await
}

/// Whether a TCP connection from `m` to `addr:port` opens (2 s to connect).
async fn connects(c: &Client, m: &M, addr: Ipv6Addr, port: u16) -> bool {
    let (_, out) = exec(
        c,
        m,
        &format!("timeout 10 nc -w 2 {addr} {port} </dev/null >/dev/null 2>&1; echo rc=$?"),
    )
    .await;
    out.contains("rc=0")
}

async fn allocate(c: &Client, app: &str, body: Value) -> Ipv6Addr {
    let r = c
        .post(&format!("/v1/apps/{app}/ip_assignments"), &body)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["ip"].as_str().expect("ip").parse().expect("IPv6")
}

fn run(args: &[&str]) -> String {
    let out = Command::new("timeout")
        .arg("20")
        .args(args)
        .output()
        .expect("run");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (bounded) until the host serves `addr` on `ports` for `network`'s machines: the
/// proxy listens, the address is on the network's bridge, the rules are in place.
async fn served(cluster: &TestCluster, proxy: &Arc<Proxy>, addr: Ipv6Addr, ports: &[u16]) {
    let net = sixpn::flycast_network(addr).expect("a Flycast address");
    let bridge = hangar_net::Network::new(net, cluster.host_id()).bridge;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listening = proxy.flycast_listening();
        let proxy_ok = ports
            .iter()
            .all(|p| listening.iter().any(|a| *a.ip() == addr && a.port() == *p));
        let on_bridge =
            run(&["ip", "-6", "address", "show", "dev", &bridge]).contains(&addr.to_string());
        let set = run(&["nft", "list", "set", "inet", cluster.nft_table(), "flycast"]);
        let rules = ports
            .iter()
            .all(|p| set.contains(&format!("{addr} . tcp . {p}")));
        if proxy_ok && on_bridge && rules {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{addr} not served: proxy {proxy_ok} ({listening:?}), bridge {on_bridge}, rules {rules}: {set}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until the host no longer serves `addr` at all.
async fn gone(cluster: &TestCluster, proxy: &Arc<Proxy>, addr: Ipv6Addr) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listening = proxy.flycast_listening().iter().any(|a| *a.ip() == addr);
        let set = run(&["nft", "list", "set", "inet", cluster.nft_table(), "flycast"]);
        let addrs = run(&["ip", "-6", "-o", "address", "show"]);
        let a = addr.to_string();
        if !listening && !set.contains(&a) && !addrs.contains(&a) {
            return;
        }
        assert!(Instant::now() < deadline, "{addr} still served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flycast_reaches_a_stopped_app_from_its_network_only() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    cluster
        .store
        .create_org("rival", "Rival", 0)
        .expect("second org");
    let _dns = cluster.start_dns(Vec::new()).await.expect("dns");
    let proxy = cluster.start_proxy(ProxyConfig {
        // Public listeners on free ports: parallel tests share the host's port 80.
        port_map: HashMap::from([(80, 0), (5000, 0)]),
        autostop_interval: Duration::from_secs(3600),
        ..ProxyConfig::default()
    });
    let c = cluster.client();
    app(&c, "fly-a", "personal", None).await;
    app(&c, "fly-b", "personal", None).await;
    app(&c, "fly-blue", "personal", Some("blue")).await;
    app(&c, "fly-rival", "rival", None).await;
    let b = machine(
        &c,
        "fly-b",
        web(json!({
            "protocol": "tcp",
            "internal_port": 8080,
            "autostart": true,
            "ports": [
                {"port": 80, "handlers": ["http"], "force_https": true},
                {"port": 5000}
            ],
        })),
    )
    .await;
    let a = client_machine(&c, "fly-a").await;
    let blue = client_machine(&c, "fly-blue").await;
    let rival = client_machine(&c, "fly-rival").await;
    let r = c
        .post(
            &format!("/v1/apps/fly-b/machines/{}/stop", b.id),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, "fly-b", &b.id, "stopped", "").await;

    // Before any allocation: no name.
    let (_, out) = exec(&c, &a, "nslookup -type=aaaa fly-b.flycast 2>&1").await;
    assert!(out.contains("NXDOMAIN"), "{out}");

    let f = allocate(&c, "fly-b", json!({"type": "private_v6"})).await;
    assert_eq!(
        sixpn::flycast_network(f),
        sixpn::parse(a.ip).map(|(n, _)| n),
        "allocated in the org's network"
    );
    served(&cluster, &proxy, f, &[80, 5000]).await;

    // The first request wakes B; the http handler, without force_https, with the machine as
    // the client.
    let (code, out) = wget(&c, &a, &format!("[{f}]"), "/cgi-bin/info").await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("machine={}", b.id)), "{out}");
    assert!(
        out.contains(&format!("HTTP_FLY_CLIENT_IP={}", a.ip)),
        "{out}"
    );
    assert!(out.contains("HTTP_X_FORWARDED_PROTO=http"), "{out}");
    assert_eq!(state(&c, "fly-b", &b.id).await, "started");
    // By name, through the network's DNS.
    let (code, out) = exec(&c, &a, "nslookup -type=aaaa fly-b.flycast").await;
    assert!(code == 0 && out.contains(&f.to_string()), "{out}");
    let (code, out) = wget(&c, &a, "fly-b.flycast", "/").await;
    assert!(code == 0 && out.contains("hello"), "{out}");
    // Raw TCP on the other port: the bytes go to the machine as they are.
    let (_, out) = exec(
        &c,
        &a,
        &format!("printf 'GET /cgi-bin/info HTTP/1.0\\r\\n\\r\\n' | timeout 20 nc -w 10 {f} 5000"),
    )
    .await;
    assert!(
        out.contains("200 OK") && out.contains(&format!("machine={}", b.id)),
        "{out}"
    );
    assert!(
        !out.contains("HTTP_FLY_CLIENT_IP"),
        "raw TCP adds nothing: {out}"
    );

    // Another org, a custom network: not reachable, not named; nor another port there.
    let (from_rival, from_blue, other_port) = tokio::join!(
        connects(&c, &rival, f, 80),
        connects(&c, &blue, f, 80),
        connects(&c, &a, f, 8080),
    );
    assert!(!from_rival, "another org reached the Flycast address");
    assert!(!from_blue, "a custom network reached the Flycast address");
    assert!(!other_port, "a port that is no service's");
    for m in [&rival, &blue] {
        let (_, out) = exec(&c, m, "nslookup -type=aaaa fly-b.flycast 2>&1").await;
        assert!(out.contains("NXDOMAIN"), "{}: {out}", m.app);
    }

    // Allocated for the custom network: blue gets in there (by name too), A does not.
    let g = allocate(
        &c,
        "fly-b",
        json!({"type": "private_v6", "network": "blue"}),
    )
    .await;
    assert_eq!(
        sixpn::flycast_network(g),
        sixpn::parse(blue.ip).map(|(n, _)| n)
    );
    served(&cluster, &proxy, g, &[80, 5000]).await;
    let (code, out) = wget(&c, &blue, "fly-b.flycast", "/cgi-bin/info").await;
    assert!(
        code == 0 && out.contains(&format!("HTTP_FLY_CLIENT_IP={}", blue.ip)),
        "{out}"
    );
    // And for the other org (a caller who sees both).
    let h = allocate(
        &c,
        "fly-b",
        json!({"type": "private_v6", "org_slug": "rival"}),
    )
    .await;
    served(&cluster, &proxy, h, &[80]).await;
    let (code, out) = wget(&c, &rival, &format!("[{h}]"), "/").await;
    assert!(code == 0 && out.contains("hello"), "{out}");
    let (a_to_g, rival_to_g, blue_to_h) = tokio::join!(
        connects(&c, &a, g, 80),
        connects(&c, &rival, g, 80),
        connects(&c, &blue, h, 80),
    );
    assert!(
        !a_to_g && !rival_to_g && !blue_to_h,
        "{a_to_g} {rival_to_g} {blue_to_h}"
    );

    // The host side restarts having lost its tables and the address: both come back.
    cluster.kill_agent().await;
    let t = cluster.nft_table().to_string();
    let _ = run(&["nft", "delete", "table", "inet", &t]);
    let (net, _) = sixpn::parse(a.ip).expect("6PN");
    let bridge = hangar_net::Network::new(net, cluster.host_id()).bridge;
    let _ = run(&["ip", "address", "del", &format!("{f}/128"), "dev", &bridge]);
    cluster.start_agent().expect("agent");
    served(&cluster, &proxy, f, &[80, 5000]).await;
    let (code, out) = wget(&c, &a, &format!("[{f}]"), "/").await;
    assert!(code == 0 && out.contains("hello"), "after a restart: {out}");
    assert!(!connects(&c, &rival, f, 80).await, "rival after a restart");

    // Released: gone from the proxy, the bridge and the rules; no answer, no name.
    let r = c
        .delete(&format!("/v1/apps/fly-b/ip_assignments/{f}"))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    gone(&cluster, &proxy, f).await;
    assert!(!connects(&c, &a, f, 80).await, "released");
    let (_, out) = exec(&c, &a, "nslookup -type=aaaa fly-b.flycast 2>&1").await;
    assert!(
        out.contains("NXDOMAIN") && !out.contains(&f.to_string()),
        "{out}"
    );
    // The others are untouched.
    let (code, _) = wget(&c, &blue, &format!("[{g}]"), "/").await;
    assert_eq!(code, 0, "blue's address still served");
}
