//! Private networks with real packets: two orgs and a custom network, machines in each. What
//! may pass (own network over TCP, UDP and ICMPv6; the host's DNS and Machines API relay)
//! passes, what may not (other networks, the host's other ports, spoofed sources) does not;
//! the rules survive an agent restart and go with their machines. `.internal` DNS answered to
//! real clients inside machines (busybox `nslookup` in the container, Debian's `dig` in the
//! machine's network namespace), each network seeing only its own names.

use std::net::{Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hangar_domain::sixpn;
use hangar_store::Store as _;
use hangar_testkit::{ADMIN_TOKEN, Client, TEST_IMAGE, TestCluster};
use serde_json::{Value, json};

use super::wait;

/// A machine made for these tests.
#[derive(Debug, Clone)]
struct M {
    app: String,
    id: String,
    ip: Ipv6Addr,
}

impl M {
    fn netns(&self) -> String {
        format!("hgr-{}", self.id)
    }

    /// Its network's service address (DNS, the Machines API relay).
    fn service(&self) -> Ipv6Addr {
        let (net, host) = sixpn::parse(self.ip).expect("6PN");
        sixpn::service_addr(net, host)
    }

    fn gateway(&self) -> Ipv6Addr {
        let mut s = self.service().segments();
        s[7] = 1;
        Ipv6Addr::from(s)
    }
}

async fn app(c: &Client, name: &str, org: &str, network: Option<&str>) {
    let mut body = json!({"app_name": name, "org_slug": org});
    if let Some(n) = network {
        body["network"] = json!(n);
    }
    let r = c.post("/v1/apps", &body).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// A machine serving HTTP on 8080 (busybox httpd), with `extra` merged into its config.
async fn machine(c: &Client, app: &str, region: &str, extra: Value) -> M {
    let mut config = json!({
        "image": TEST_IMAGE,
        "init": {"cmd": ["sh", "-c", "httpd -p 8080 -h /www; while true; do sleep 1; done"]},
    });
    if let (Some(cfg), Some(more)) = (config.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            cfg.insert(k.clone(), v.clone());
        }
    }
    let r = c
        .post(
            &format!("/v1/apps/{app}/machines"),
            &json!({"config": config, "region": region}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m: Value = r.json();
    let id = m["id"].as_str().expect("id").to_string();
    wait(c, app, &id, "started", "").await;
    M {
        app: app.to_string(),
        id,
        ip: m["private_ip"].as_str().expect("ip").parse().expect("6PN"),
    }
}

/// Runs a shell script in the machine (its namespaces, through the API): (exit code, stdout).
async fn exec(c: &Client, m: &M, script: &str) -> (i64, String) {
    let r = c
        .post(
            &format!("/v1/apps/{}/machines/{}/exec", m.app, m.id),
            &json!({"command": ["sh", "-c", script], "timeout": 30}),
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

/// TCP from `m` to `addr:port` (`nc`, 2 s to connect).
async fn tcp(c: &Client, m: &M, addr: impl std::fmt::Display, port: u16) -> bool {
    let (_, out) = exec(
        c,
        m,
        &format!("timeout 10 nc -w 2 {addr} {port} </dev/null >/dev/null 2>&1; echo rc=$?"),
    )
    .await;
    out.contains("rc=0")
}

/// One ICMPv6 echo from `m` (from its own address unless `source`).
async fn ping(c: &Client, m: &M, addr: Ipv6Addr, source: Option<Ipv6Addr>) -> bool {
    let from = source.unwrap_or(m.ip);
    let (code, _) = exec(
        c,
        m,
        &format!("timeout 10 ping6 -c 1 -W 2 -I {from} {addr} >/dev/null 2>&1"),
    )
    .await;
    code == 0
}

/// A UDP socket in `m`'s network namespace (made by a thread that joined it).
fn udp_in(m: &M, bind: SocketAddr) -> UdpSocket {
    let path = format!("/run/netns/{}", m.netns());
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("netns");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        UdpSocket::bind(bind).expect("bind")
    })
    .join()
    .expect("thread")
}

/// A datagram from `from` to `to`'s UDP echo server on port 9000, echoed back within 2 s.
fn udp(from: &M, to: &M) -> bool {
    let server = udp_in(to, SocketAddr::from((to.ip, 9000)));
    server
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        if let Ok((n, src)) = server.recv_from(&mut buf) {
            let _ = server.send_to(&buf[..n], src);
        }
    });
    let client = udp_in(from, SocketAddr::from((from.ip, 0)));
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let _ = client.send_to(b"hello", SocketAddr::from((to.ip, 9000)));
    let mut buf = [0u8; 64];
    let ok = matches!(client.recv_from(&mut buf), Ok((5, _)));
    let _ = echo.join();
    ok
}

fn run(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("20")
        .args(args)
        .output()
        .expect("run")
}

fn nft_list(cluster: &TestCluster, family: &str) -> String {
    String::from_utf8_lossy(&run(&["nft", "list", "table", family, cluster.nft_table()]).stdout)
        .into_owned()
}

fn chain_of(m: &M) -> String {
    format!("m_hgv{}", &m.id[..11])
}

/// A TCP listener on every host address that closes what it accepts.
fn host_listener() -> u16 {
    let l = TcpListener::bind("[::]:0").expect("listener");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_networks_are_kept_apart_by_the_kernel() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    cluster
        .store
        .create_org("rival", "Rival", 0)
        .expect("second org");
    let _dns = cluster.start_dns(Vec::new()).await.expect("dns");
    let c = cluster.client();
    app(&c, "iso-a", "personal", None).await;
    app(&c, "iso-b", "personal", None).await;
    app(&c, "iso-blue", "personal", Some("blue")).await;
    app(&c, "iso-rival", "rival", None).await;
    let a = machine(&c, "iso-a", "local", json!({})).await;
    let b = machine(&c, "iso-b", "local", json!({})).await;
    let blue = machine(&c, "iso-blue", "local", json!({})).await;
    let rival = machine(&c, "iso-rival", "local", json!({})).await;
    // Three networks: the org's, its custom one, the other org's.
    let nets: std::collections::BTreeSet<u32> = [&a, &b, &blue, &rival]
        .iter()
        .map(|m| sixpn::parse(m.ip).expect("6PN").0)
        .collect();
    assert_eq!(nets.len(), 3, "{a:?} {b:?} {blue:?} {rival:?}");
    assert_eq!(a.service(), b.service());

    // Own network: TCP, UDP, ICMPv6, both ways.
    assert!(tcp(&c, &a, b.ip, 8080).await, "a → b tcp");
    assert!(tcp(&c, &b, a.ip, 8080).await, "b → a tcp");
    assert!(ping(&c, &a, b.ip, None).await, "a → b icmpv6");
    assert!(udp(&a, &b), "a → b udp");
    // The host, where it is meant to be reached: DNS (UDP) and the Machines API relay, by name.
    let (code, out) = exec(&c, &a, "nslookup -type=aaaa iso-b.internal").await;
    assert!(code == 0 && out.contains(&b.ip.to_string()), "{out}");
    let (_, out) = exec(
        &c,
        &a,
        &format!(
            "wget -q -O- --header 'Authorization: Bearer {ADMIN_TOKEN}' http://_api.internal:4280/v1/apps 2>&1"
        ),
    )
    .await;
    assert!(
        out.contains("iso-rival"),
        "the API through _api.internal: {out}"
    );
    // And the host reaches machines (the proxy's path).
    assert!(
        super::try_http_get_ready(&blue.ip.to_string(), 8080)
            .await
            .is_ok()
    );

    // Another network: the org's custom network, another org; neither way, no protocol; nor
    // the host's other ports at any of its addresses. (All at once: each waits out a timeout.)
    let port = host_listener();
    let mut checks = Vec::new();
    for other in [&blue, &rival] {
        let (c, a, o) = (c.clone(), a.clone(), other.clone());
        checks.push(tokio::spawn(async move {
            let udp_blocked = {
                let (a, o) = (a.clone(), o.clone());
                tokio::task::spawn_blocking(move || !udp(&a, &o))
            };
            let (t1, t2, p, d) = tokio::join!(
                tcp(&c, &a, o.ip, 8080),
                tcp(&c, &o, a.ip, 8080),
                ping(&c, &a, o.ip, None),
                tcp(&c, &a, o.service(), 53),
            );
            let u = udp_blocked.await.expect("udp");
            assert!(!t1, "a → {} tcp", o.app);
            assert!(!t2, "{} → a tcp", o.app);
            assert!(!p, "a → {} icmpv6", o.app);
            assert!(u, "a → {} udp", o.app);
            assert!(!d, "a → {}'s DNS", o.app);
        }));
    }
    let (gw, svc, v4) = tokio::join!(
        tcp(&c, &a, a.gateway(), port),
        tcp(&c, &a, a.service(), port),
        tcp(&c, &a, "169.254.0.1", port),
    );
    assert!(
        !gw && !svc && !v4,
        "host ports: gateway {gw}, ::3 {svc}, IPv4 {v4}"
    );
    for t in checks {
        t.await.expect("checks");
    }
    // A spoofed source (another address of its own network, added with NET_ADMIN; deprecated,
    // so only used when asked for).
    let spoofed = {
        let mut s = a.ip.segments();
        s[6] ^= 0x5a5a;
        Ipv6Addr::from(s)
    };
    let out = run(&[
        "ip",
        "-n",
        &a.netns(),
        "address",
        "add",
        &format!("{spoofed}/128"),
        "dev",
        "eth0",
        "nodad",
        "preferred_lft",
        "0",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(!ping(&c, &a, b.ip, Some(spoofed)).await, "spoofed source");
    assert!(
        ping(&c, &a, b.ip, None).await,
        "its own source still passes"
    );

    // An agent restart rebuilds the rules: what was lost comes back, what was stale goes.
    for m in [&a, &b, &blue, &rival] {
        assert!(nft_list(&cluster, "bridge").contains(&chain_of(m)), "{m:?}");
    }
    cluster.kill_agent().await;
    let t = cluster.nft_table().to_string();
    let out = run(&["nft", "delete", "table", "bridge", &t]);
    assert!(out.status.success(), "{out:?}");
    let out = run(&["nft", "add", "chain", "inet", &t, "m_stale"]);
    assert!(out.status.success(), "{out:?}");
    cluster.start_agent().expect("agent");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let bridge = nft_list(&cluster, "bridge");
        if [&a, &b, &blue, &rival]
            .iter()
            .all(|m| bridge.contains(&chain_of(m)))
        {
            break;
        }
        assert!(Instant::now() < deadline, "rules not rebuilt: {bridge}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!nft_list(&cluster, "inet").contains("m_stale"));
    assert!(tcp(&c, &a, b.ip, 8080).await, "a → b after restart");
    assert!(!ping(&c, &a, blue.ip, None).await, "a → blue after restart");
    assert!(
        !ping(&c, &a, b.ip, Some(spoofed)).await,
        "spoofing after restart"
    );

    // Destroyed: its rules go with it.
    let r = c
        .delete(&format!(
            "/v1/apps/{}/machines/{}?force=true",
            blue.app, blue.id
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, &blue.app, &blue.id, "destroyed", "").await;
    let bridge = nft_list(&cluster, "bridge");
    assert!(!bridge.contains(&chain_of(&blue)), "{bridge}");
    assert!(bridge.contains(&chain_of(&a)), "{bridge}");
    let table = cluster.nft_table().to_string();
    drop(cluster);
    // The cluster leaves no table behind.
    for family in ["inet", "bridge", "ip"] {
        let out = run(&["nft", "list", "table", family, &table]);
        assert!(!out.status.success(), "{family} {table} left behind");
    }
}

/// `dig` in `m`'s network namespace, at its network's DNS: (status, answer records' data).
fn dig(m: &M, name: &str, t: &str) -> (String, Vec<String>) {
    assert!(
        std::path::Path::new("/usr/bin/dig").exists(),
        "this test needs dig: apt-get install bind9-dnsutils"
    );
    let server = format!("@{}", m.service());
    let out = run(&[
        "ip",
        "netns",
        "exec",
        &m.netns(),
        "dig",
        &server,
        "-t",
        t,
        name,
        "+noall",
        "+comments",
        "+answer",
        "+tries=1",
        "+time=3",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("none")
        .to_string();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // name TTL IN TYPE data…
            (f.len() >= 5 && f[1] == "5").then(|| f[4..].join(" "))
        })
        .collect();
    (status, answers)
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A fake resolver on loopback answering `A 192.0.2.7` to everything (forwarding tests never
/// reach the host's real resolvers).
async fn fake_upstream() -> SocketAddr {
    use hangar_dns::hickory_proto::op::Message;
    use hangar_dns::hickory_proto::rr::rdata::A;
    use hangar_dns::hickory_proto::rr::{RData, Record};
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = s.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, src)) = s.recv_from(&mut buf).await {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::response(q.metadata.id, q.metadata.op_code);
            r.add_queries(q.queries.iter().cloned());
            if let Some(name) = q.queries.first().map(|q| q.name().clone()) {
                r.add_answer(Record::from_rdata(name, 5, RData::A(A::new(192, 0, 2, 7))));
            }
            if let Ok(b) = r.to_vec() {
                let _ = s.send_to(&b, src).await;
            }
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_dns_answers_each_network_its_own_names() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    cluster
        .store
        .create_org("rival", "Rival", 0)
        .expect("second org");
    let upstream = fake_upstream().await;
    let dns = cluster.start_dns(vec![upstream]).await.expect("dns");
    let c = cluster.client();
    app(&c, "dns-web", "personal", None).await;
    app(&c, "dns-empty", "personal", None).await;
    app(&c, "dns-blue", "personal", Some("blue")).await;
    app(&c, "dns-rival", "rival", None).await;
    let w1 = machine(
        &c,
        "dns-web",
        "local",
        json!({"metadata": {"fly_process_group": "app", "role": "primary"}}),
    )
    .await;
    let w2 = machine(
        &c,
        "dns-web",
        "ams",
        json!({"metadata": {"fly_process_group": "worker"}}),
    )
    .await;
    let hidden = machine(
        &c,
        "dns-web",
        "local",
        json!({"dns": {"skip_registration": true}}),
    )
    .await;
    let blue = machine(&c, "dns-blue", "local", json!({})).await;
    let _rival = machine(&c, "dns-rival", "local", json!({})).await;
    let (w1s, w2s) = (w1.ip.to_string(), w2.ip.to_string());

    // The machine's resolv.conf names its network's DNS; busybox resolves through it.
    let (_, conf) = exec(&c, &w1, "cat /etc/resolv.conf").await;
    assert_eq!(conf, format!("nameserver {}\n", w1.service()));
    let (code, out) = exec(&c, &w1, "nslookup -type=aaaa dns-web.internal").await;
    assert!(
        code == 0 && out.contains(&w1s) && out.contains(&w2s),
        "{out}"
    );
    let (code, out) = exec(&c, &w1, "nslookup -type=txt vms.dns-web.internal").await;
    assert!(code == 0 && out.contains(&w1.id), "{out}");

    // Every name, asked with dig from w1's network namespace.
    let both = sorted(vec![w1s.clone(), w2s.clone()]);
    for name in ["dns-web.internal", "global.dns-web.internal"] {
        let (status, got) = dig(&w1, name, "AAAA");
        assert_eq!(
            (status.as_str(), sorted(got)),
            ("NOERROR", both.clone()),
            "{name}"
        );
    }
    let aaaa = |name: &str| dig(&w1, name, "AAAA");
    assert_eq!(
        aaaa("ams.dns-web.internal"),
        ("NOERROR".into(), vec![w2s.clone()])
    );
    assert_eq!(
        aaaa("local.dns-web.internal"),
        ("NOERROR".into(), vec![w1s.clone()])
    );
    assert_eq!(
        aaaa("top1.nearest.of.dns-web.internal"),
        ("NOERROR".into(), vec![w1s.clone()])
    );
    assert_eq!(
        aaaa(&format!("{}.vm.dns-web.internal", w2.id)),
        ("NOERROR".into(), vec![w2s.clone()])
    );
    assert_eq!(
        aaaa("worker.process.dns-web.internal"),
        ("NOERROR".into(), vec![w2s.clone()])
    );
    assert_eq!(
        aaaa("app.process.dns-web.internal"),
        ("NOERROR".into(), vec![w1s.clone()])
    );
    assert_eq!(
        aaaa("primary.role.kv._metadata.dns-web.internal"),
        ("NOERROR".into(), vec![w1s.clone()])
    );
    assert_eq!(
        aaaa("_api.internal"),
        ("NOERROR".into(), vec![w1.service().to_string()])
    );
    let txt = |name: &str| dig(&w1, name, "TXT");
    let (status, vms) = txt("vms.dns-web.internal");
    assert_eq!(status, "NOERROR");
    let mut want = [format!("{} local", w1.id), format!("{} ams", w2.id)];
    want.sort();
    assert_eq!(vms, vec![format!("\"{}\"", want.join(","))]);
    assert_eq!(
        txt("regions.dns-web.internal").1,
        vec!["\"ams,local\"".to_string()]
    );
    assert_eq!(
        txt("all.regions.dns-web.internal").1,
        vec!["\"ams,local\"".to_string()]
    );
    assert_eq!(
        txt("_apps.internal").1,
        vec!["\"dns-empty,dns-web\"".to_string()]
    );
    let (_, inst) = txt("_instances.internal");
    assert!(
        inst.len() == 1
            && inst[0].contains(&format!(
                "instance={},app=dns-web,ip={w1s},region=local",
                w1.id
            )),
        "{inst:?}"
    );
    assert_eq!(txt("_peer.internal"), ("NOERROR".into(), vec![]));
    // NODATA and NXDOMAIN.
    assert_eq!(aaaa("dns-empty.internal"), ("NOERROR".into(), vec![]));
    assert_eq!(
        dig(&w1, "dns-web.internal", "A"),
        ("NOERROR".into(), vec![])
    );
    assert_eq!(aaaa("nope.internal").0, "NXDOMAIN");
    assert_eq!(
        aaaa(&format!("{}.vm.dns-web.internal", hidden.id)).0,
        "NXDOMAIN",
        "skip_registration"
    );
    assert_eq!(
        aaaa("dns-web.flycast").0,
        "NXDOMAIN",
        "no Flycast address yet"
    );
    // Allocated: answered in the app's network within milliseconds, nowhere else.
    let r = c
        .post(
            "/v1/apps/dns-web/ip_assignments",
            &json!({"type": "private_v6"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let flycast = r.json()["ip"].as_str().expect("ip").to_string();
    let op = dns.operator_addr().expect("operator listener");
    let t0 = Instant::now();
    while operator_aaaa(op, "dns-web.flycast")
        .await
        .is_none_or(|a| a.is_empty())
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "never answered");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        aaaa("dns-web.flycast"),
        ("NOERROR".into(), vec![flycast.clone()])
    );
    assert_eq!(dig(&blue, "dns-web.flycast", "AAAA").0, "NXDOMAIN");
    assert_eq!(aaaa("dns-empty.flycast").0, "NXDOMAIN");
    // Other networks' names do not exist here, and this network's not there.
    assert_eq!(aaaa("dns-rival.internal").0, "NXDOMAIN");
    assert_eq!(aaaa("dns-blue.internal").0, "NXDOMAIN");
    assert_eq!(
        dig(&blue, "dns-blue.internal", "AAAA"),
        ("NOERROR".into(), vec![blue.ip.to_string()])
    );
    assert_eq!(dig(&blue, "dns-web.internal", "AAAA").0, "NXDOMAIN");
    assert_eq!(
        dig(&blue, "_apps.internal", "TXT").1,
        vec!["\"dns-blue\"".to_string()]
    );
    // Asking another network's DNS: not reachable at all.
    let out = run(&[
        "ip",
        "netns",
        "exec",
        &w1.netns(),
        "dig",
        &format!("@{}", blue.service()),
        "dns-blue.internal",
        "AAAA",
        "+tries=1",
        "+time=1",
    ]);
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("status:"),
        "{out:?}"
    );
    // Other names go to the upstream.
    assert_eq!(
        dig(&w1, "example.com", "A"),
        ("NOERROR".into(), vec!["192.0.2.7".to_string()])
    );

    // A stopped machine is out of the answers within 100 ms of the store saying so.
    let op = dns.operator_addr().expect("operator listener");
    let r = c
        .post(
            &format!("/v1/apps/dns-web/machines/{}/stop", w2.id),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (mut not_started, mut gone) = (None, None);
    let t0 = Instant::now();
    while gone.is_none() || not_started.is_none() {
        assert!(t0.elapsed() < Duration::from_secs(30), "never dropped");
        let state = cluster
            .store
            .find_machine(&w2.id)
            .expect("store")
            .expect("machine")
            .state;
        if not_started.is_none() && state != hangar_domain::State::Started {
            not_started = Some(Instant::now());
        }
        if gone.is_none()
            && operator_aaaa(op, "dns-web.internal")
                .await
                .is_some_and(|a| !a.contains(&w2.ip))
        {
            gone = Some(Instant::now());
        }
    }
    let (not_started, gone) = (not_started.expect("stopped"), gone.expect("gone"));
    assert!(
        gone <= not_started + Duration::from_millis(100),
        "answered {:?} after the stop",
        gone.saturating_duration_since(not_started)
    );
    wait(&c, "dns-web", &w2.id, "stopped", "").await;
    assert_eq!(
        aaaa("dns-web.internal"),
        ("NOERROR".into(), vec![w1s.clone()])
    );
    assert_eq!(
        aaaa(&format!("{}.vm.dns-web.internal", w2.id)),
        ("NOERROR".into(), vec![])
    );
    assert_eq!(txt("all.vms.dns-web.internal").1.len(), 1);
    assert!(txt("all.vms.dns-web.internal").1[0].contains(&w2.id));
    assert!(!txt("vms.dns-web.internal").1[0].contains(&w2.id));
}

/// AAAA of `name` from the operators' listener (a UDP query from the host); `None` without
/// an answer.
async fn operator_aaaa(server: SocketAddr, name: &str) -> Option<Vec<Ipv6Addr>> {
    use hangar_dns::hickory_proto::op::{Message, Query};
    use hangar_dns::hickory_proto::rr::{Name, RData, RecordType};
    let mut q = Message::query();
    q.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::AAAA,
    ));
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    s.send_to(&q.to_vec().expect("encode"), server)
        .await
        .expect("send");
    let mut buf = vec![0u8; 4096];
    let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), s.recv(&mut buf)).await else {
        return None;
    };
    let m = Message::from_vec(&buf[..n]).ok()?;
    Some(
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::AAAA(a) => Some(a.0),
                _ => None,
            })
            .collect(),
    )
}
