//! WireGuard peers with real packets (PLATFORM.md §4.5). Each peer is a network namespace of
//! the test's own, joined to the host by a veth pair, brought up by Debian's `wg-quick` with
//! `hangar-wg` as its userspace WireGuard, from the config the client library makes (what
//! `hangar wireguard create` writes). Through the tunnel a peer resolves `<app>.internal` at
//! its DNS address and connects to its org's machine; another org's peer gets NXDOMAIN and no
//! connection; nothing else of the host answers; a spoofed source is dropped; a removed peer
//! is cut off.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hangar_api_types::WireguardPeer;
use hangar_store::Store as _;
use hangar_testkit::{ADMIN_TOKEN, ClusterOptions, TEST_IMAGE, TestCluster};
use serde_json::{Value, json};

use super::wait;

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{:05x}{:x}",
        std::process::id() & 0xfffff,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// `hangar-wg`, built for this test run's profile (or `HANGAR_WG_BINARY`).
fn hangar_wg() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("HANGAR_WG_BINARY") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("test binary");
        // target/<profile>/deps/e2e-… → target/<profile>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("profile dir")
            .to_path_buf();
        let target = profile_dir.parent().expect("target dir");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .and_then(Path::parent)
            .expect("workspace");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace)
            .env("CARGO_TARGET_DIR", target)
            .args([
                "build",
                "--quiet",
                "-p",
                "hangar-wireguard",
                "--bin",
                "hangar-wg",
            ]);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("cargo build hangar-wg");
        assert!(
            out.status.success(),
            "building hangar-wg: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir.join("hangar-wg")
    })
    .clone()
}

/// A peer's place: a namespace joined to the host by a veth pair with a ULA /64 of its own;
/// everything goes on drop (`wg-quick down`, the namespace, the veth).
struct Lab {
    ns: String,
    veth: String,
    host_ip: Ipv6Addr,
    dir: PathBuf,
    up: Option<String>,
}

impl Lab {
    fn new() -> Self {
        let u = unique();
        let ns = format!("hgrtwg{u}");
        // Not `hgrwg…`: that prefix is the gateway's (the host's rules trust it).
        let veth = format!("hgrtv{u}");
        let mut r = [0u8; 6];
        getrandom_fill(&mut r);
        let seg = |i: usize| u16::from_be_bytes([r[i], r[i + 1]]);
        let host_ip = Ipv6Addr::new(0xfd5e, seg(0), seg(2), seg(4), 0, 0, 0, 1);
        let peer_ip = Ipv6Addr::new(0xfd5e, seg(0), seg(2), seg(4), 0, 0, 0, 2);
        let dir = std::env::temp_dir().join(format!("hangar-wg-e2e-{u}"));
        std::fs::create_dir_all(dir.join("bin")).expect("dir");
        ok(&["ip", "netns", "add", &ns]);
        let lab = Self {
            ns,
            veth,
            host_ip,
            dir,
            up: None,
        };
        ok(&["ip", "-n", &lab.ns, "link", "set", "lo", "up"]);
        ok(&[
            "ip", "link", "add", &lab.veth, "type", "veth", "peer", "name", "eth0", "netns",
            &lab.ns,
        ]);
        ok(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/64"),
            "dev",
            &lab.veth,
            "nodad",
        ]);
        ok(&["ip", "link", "set", &lab.veth, "up"]);
        ok(&[
            "ip",
            "-n",
            &lab.ns,
            "addr",
            "add",
            &format!("{peer_ip}/64"),
            "dev",
            "eth0",
            "nodad",
        ]);
        ok(&["ip", "-n", &lab.ns, "link", "set", "eth0", "up"]);
        // wg-quick hands `DNS =` to resolvconf; this one writes it down for the test.
        let shim = lab.dir.join("bin/resolvconf");
        std::fs::write(
            &shim,
            format!("#!/bin/sh\ncat > {}/resolv.conf\n", lab.dir.display()),
        )
        .expect("shim");
        ok(&["chmod", "+x", &shim.display().to_string()]);
        lab
    }

    /// `wg-quick up` of `config` as interface `name`, in the namespace.
    fn up(&mut self, name: &str, config: &str) {
        let file = self.dir.join(format!("{name}.conf"));
        std::fs::write(&file, config).expect("config");
        let path = format!(
            "{}:{}",
            self.dir.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "wg-quick", "up"])
            .arg(&file)
            .env("PATH", path)
            .env("WG_QUICK_USERSPACE_IMPLEMENTATION", hangar_wg())
            .output()
            .expect("wg-quick");
        assert!(
            out.status.success(),
            "wg-quick up: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.up = Some(file.display().to_string());
    }

    /// What wg-quick told resolvconf.
    fn nameserver(&self) -> String {
        std::fs::read_to_string(self.dir.join("resolv.conf"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("nameserver ").map(|s| s.trim().to_string()))
            .unwrap_or_default()
    }

    /// A TCP connection to `addr:port` from the namespace (3 s to connect), from `source`
    /// (perl's IO::Socket::IP, in every Debian's perl-base: busybox's nc can not pick a
    /// source address).
    fn tcp(&self, addr: Ipv6Addr, port: u16, source: Option<Ipv6Addr>) -> bool {
        const CONNECT: &str = "use IO::Socket::IP; IO::Socket::IP->new(PeerHost => $ARGV[0], \
             PeerPort => $ARGV[1], Timeout => 3, ($ARGV[2] ? (LocalHost => $ARGV[2]) : ())) \
             or exit 1; exit 0";
        Command::new("ip")
            .args(["netns", "exec", &self.ns, "perl", "-e", CONNECT])
            .arg(addr.to_string())
            .arg(port.to_string())
            .arg(source.map(|s| s.to_string()).unwrap_or_default())
            .stdin(std::process::Stdio::null())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    /// `dig` in the namespace at `server`: (status, AAAA answers).
    fn dig(&self, server: &str, name: &str, t: &str) -> (String, Vec<String>) {
        let out = run(&[
            "ip",
            "netns",
            "exec",
            &self.ns,
            "dig",
            &format!("@{server}"),
            "-t",
            t,
            name,
            "+noall",
            "+comments",
            "+answer",
            "+tries=2",
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
                (f.len() >= 5).then(|| f[4..].join(" "))
            })
            .collect();
        (status, answers)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(file) = self.up.take() {
            let _ = Command::new("ip")
                .args(["netns", "exec", &self.ns, "wg-quick", "down", &file])
                .env(
                    "PATH",
                    format!(
                        "{}:{}",
                        self.dir.join("bin").display(),
                        std::env::var("PATH").unwrap_or_default()
                    ),
                )
                .output();
        }
        // Processes left in the namespace (hangar-wg if wg-quick could not stop it).
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").arg(pid).output();
            }
        }
        let _ = run(&["ip", "link", "del", &self.veth]);
        let _ = run(&["ip", "netns", "del", &self.ns]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn getrandom_fill(b: &mut [u8]) {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        ^ u128::from(std::process::id()) << 64;
    let bytes = (t.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)).to_le_bytes();
    for (i, x) in b.iter_mut().enumerate() {
        *x = bytes[i % 16] ^ bytes[(i * 7 + 3) % 16];
    }
}

/// A machine serving HTTP on 8080; its 6PN address.
async fn machine(c: &hangar_testkit::Client, app: &str) -> Ipv6Addr {
    let r = c
        .post(
            &format!("/v1/apps/{app}/machines"),
            &json!({"config": {
                "image": TEST_IMAGE,
                "init": {"cmd": ["sh", "-c", "httpd -p 8080 -h /; while true; do sleep 1; done"]},
            }}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m: Value = r.json();
    let id = m["id"].as_str().expect("id");
    wait(c, app, id, "started", "").await;
    m["private_ip"].as_str().expect("ip").parse().expect("6PN")
}

/// Creates a peer of `org` through the client library; (its record, its wg-quick config).
async fn peer(api: SocketAddr, token: &str, org: &str, name: &str) -> (WireguardPeer, String) {
    let client = hangar_client::Client::new(&format!("http://{api}"), token).expect("client");
    let (p, keys) = client
        .create_wireguard_peer(org, name, None, None)
        .await
        .expect("create peer");
    let config = hangar_client::wireguard::wg_quick_config(&p, &keys.private_key);
    (p, config)
}

/// Polls `f` (every 50 ms, at most 10 s) until it holds.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_reach_their_own_network_only_and_removal_cuts_them_off() {
    for tool in ["/usr/bin/wg-quick", "/usr/bin/wg", "/usr/bin/dig"] {
        assert!(
            Path::new(tool).exists(),
            "this test needs {tool}: apt-get install wireguard-tools bind9-dnsutils"
        );
    }
    let mut ours = Lab::new();
    let mut theirs = Lab::new();
    // The gateway listens on the host's end of our lab's veth; the other lab reaches it
    // through the host too (its veth has a route to ours: both are on the host).
    let mut cluster = TestCluster::start_with(ClusterOptions {
        wireguard: Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)),
        ..ClusterOptions::default()
    })
    .await
    .expect("cluster");
    let gw = cluster.wireguard.clone().expect("gateway");
    let port = gw.listen_addr().port();
    cluster
        .store
        .create_org("rival", "Rival", 0)
        .expect("second org");
    let _dns = cluster.start_dns(Vec::new()).await.expect("dns");
    let c = cluster.client();
    for (app, org) in [("wg-web", "personal"), ("wg-secret", "rival")] {
        let r = c
            .post("/v1/apps", &json!({"app_name": app, "org_slug": org}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let web = machine(&c, "wg-web").await;
    let secret = machine(&c, "wg-secret").await;

    // Each org's peer, its config as `hangar wireguard create` writes it, the endpoint being
    // the host's end of each lab's veth.
    let our_name = format!("hgrtp{}", unique());
    let their_name = format!("hgrtq{}", unique());
    let (our_peer, mut our_config) = peer(cluster.api, ADMIN_TOKEN, "personal", &our_name).await;
    let (their_peer, mut their_config) = peer(cluster.api, ADMIN_TOKEN, "rival", &their_name).await;
    assert!(our_config.contains(&format!("Address = {}/120", our_peer.peer_ip)));
    assert!(our_config.contains(&format!("DNS = {}", our_peer.dns)));
    assert!(our_config.contains("PersistentKeepalive = 15"));
    assert_eq!(our_peer.server_public_key, gw.public_key().to_base64());
    for (config, lab) in [(&mut our_config, &ours), (&mut their_config, &theirs)] {
        *config = config.replace(
            &format!("Endpoint = {}", our_peer.endpoint),
            &format!("Endpoint = [{}]:{port}", lab.host_ip),
        );
    }
    // The gateway has both before they connect (it follows the store).
    let gw2 = gw.clone();
    eventually("the gateway has both peers", move || gw2.peers().len() == 2).await;
    ours.up(&our_name, &our_config);
    theirs.up(&their_name, &their_config);
    assert_eq!(
        ours.nameserver(),
        our_peer.dns,
        "wg-quick set the DNS address"
    );

    // Ours: `.internal` through the tunnel, then a TCP connection to the machine.
    let (status, answers) = ours.dig(&our_peer.dns, "wg-web.internal", "AAAA");
    assert_eq!(status, "NOERROR", "{answers:?}");
    assert_eq!(answers, vec![web.to_string()]);
    assert!(ours.tcp(web, 8080, None), "our peer reaches our machine");
    let (status, peers) = ours.dig(&our_peer.dns, "_peer.internal", "TXT");
    assert_eq!(status, "NOERROR");
    assert!(peers[0].contains(&our_name), "{peers:?}");
    let (_, addr) = ours.dig(&our_peer.dns, &format!("{our_name}._peer.internal"), "AAAA");
    assert_eq!(addr, vec![our_peer.peer_ip.clone()]);

    // Theirs: NXDOMAIN for our app, no way to our machine; its own machine is fine.
    let (status, _) = theirs.dig(&their_peer.dns, "wg-web.internal", "AAAA");
    assert_eq!(status, "NXDOMAIN");
    assert!(
        !theirs.tcp(web, 8080, None),
        "another org's peer reaches our machine"
    );
    assert!(
        theirs.tcp(secret, 8080, None),
        "their peer reaches their machine"
    );
    assert!(
        !ours.tcp(secret, 8080, None),
        "our peer reaches their machine"
    );
    // Not their DNS either (another network's service address).
    let (status, _) = ours.dig(&their_peer.dns, "wg-secret.internal", "AAAA");
    assert_eq!(
        status, "none",
        "our peer got an answer from their network's DNS"
    );

    // The host answers a peer on its service address's DNS and API relay ports only.
    let listener = std::net::TcpListener::bind("[::]:0").expect("bind");
    let host_port = listener.local_addr().expect("addr").port();
    let svc: Ipv6Addr = our_peer.dns.parse().expect("dns addr");
    assert!(
        !ours.tcp(svc, host_port, None),
        "a host port answers a peer"
    );
    drop(listener);

    // A source outside its /120 is dropped at the gateway (cryptokey routing and nftables).
    let spoofed = {
        let mut s = web.segments();
        s[7] = 0x0bad;
        Ipv6Addr::from(s)
    };
    ok(&[
        "ip",
        "-n",
        &ours.ns,
        "addr",
        "add",
        &format!("{spoofed}/128"),
        "dev",
        &our_name,
        "nodad",
    ]);
    assert!(
        !ours.tcp(web, 8080, Some(spoofed)),
        "a spoofed source got through"
    );

    // `wg` sees the gateway too (its UAPI socket), with both peers and their handshakes.
    let dump = ok(&["wg", "show", gw.iface(), "dump"]);
    assert!(dump.contains(&gw.public_key().to_base64()), "{dump}");
    for (key, range) in gw.peers() {
        assert!(dump.contains(&key.to_base64()), "{dump}");
        assert!(dump.contains(&format!("{range}/120")), "{dump}");
    }

    // The gateway counted the handshakes.
    let device = gw.device().expect("userspace device");
    assert!(
        device
            .metrics()
            .handshakes
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );

    // Removed, our peer is cut off.
    let r = c
        .delete(&format!("/v1/orgs/personal/wireguard/{our_name}"))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let gw2 = gw.clone();
    eventually("the gateway dropped the peer", move || {
        gw2.peers().len() == 1
    })
    .await;
    assert!(
        !ours.tcp(web, 8080, None),
        "a removed peer still reaches the machine"
    );
    assert!(theirs.tcp(secret, 8080, None), "the other peer stays");
    drop(ours);
    drop(theirs);
    drop(cluster);
}
