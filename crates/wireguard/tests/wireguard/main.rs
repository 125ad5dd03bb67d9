//! The userspace device with real packets: two devices whose TUN interfaces are moved into
//! network namespaces of the test's own (their UDP sockets stay on the host's loopback), a
//! ping and a TCP stream through the tunnel, cryptokey routing, removal; the UAPI driven by
//! Debian's `wg`. Root only.

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;

use hangar_wireguard::uapi::UapiSocket;
use hangar_wireguard::{Device, DeviceConfig, Key, PeerConfig};

fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{:05x}{n:x}", std::process::id() & 0xfffff)
}

fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("run")
}

fn ok(args: &[&str]) -> String {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace removed on drop.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        let name = unique("hgrwgtn");
        ok(&["ip", "netns", "add", &name]);
        ok(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Self(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.0]);
    }
}

fn device(key: Key) -> Arc<Device> {
    Device::start(DeviceConfig {
        name: unique("hgrwgt"),
        listen: "127.0.0.1:0".parse().expect("addr"),
        private_key: Some(key),
        fwmark: None,
    })
    .expect("device")
}

/// Moves a device's interface into `ns` with `addr/64`.
fn place(d: &Device, ns: &Netns, addr: &str) {
    ok(&["ip", "link", "set", d.name(), "netns", &ns.0]);
    ok(&[
        "ip",
        "-n",
        &ns.0,
        "addr",
        "add",
        &format!("{addr}/64"),
        "dev",
        d.name(),
        "nodad",
    ]);
    ok(&[
        "ip",
        "-n",
        &ns.0,
        "link",
        "set",
        d.name(),
        "mtu",
        "1420",
        "up",
    ]);
}

fn peer(key: Key, endpoint: Option<SocketAddr>, allowed: &str) -> PeerConfig {
    let (ip, len) = allowed.split_once('/').expect("prefix");
    PeerConfig {
        public_key: key,
        preshared_key: None,
        endpoint,
        allowed_ips: vec![(ip.parse::<IpAddr>().expect("ip"), len.parse().expect("len"))],
        keepalive: None,
    }
}

/// One echo (busybox's ping6: scripts/test.sh installs busybox-static).
fn ping(ns: &Netns, to: &str) -> bool {
    sh(&[
        "ip", "netns", "exec", &ns.0, "busybox", "ping6", "-c", "1", "-W", "2", to,
    ])
    .status
    .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_carry_packets_between_namespaces() {
    let (ka, kb) = (Key::generate().expect("key"), Key::generate().expect("key"));
    let (a, b) = (device(ka), device(kb));
    let (na, nb) = (Netns::new(), Netns::new());
    place(&a, &na, "fd77:1::1");
    place(&b, &nb, "fd77:1::2");
    a.set_peer(peer(kb.public(), Some(b.listen_addr()), "fd77:1::2/128"))
        .expect("peer b");
    b.set_peer(peer(ka.public(), None, "fd77:1::1/128"))
        .expect("peer a");
    let reached = ping(&na, "fd77:1::2");
    if !reached {
        for (n, d) in [("a", &a), ("b", &b)] {
            let m = d.metrics();
            eprintln!(
                "{n}: hs={} rx={} tx={} drops={:?} peers={:?}",
                m.handshakes.load(std::sync::atomic::Ordering::Relaxed),
                m.rx_bytes.load(std::sync::atomic::Ordering::Relaxed),
                m.tx_bytes.load(std::sync::atomic::Ordering::Relaxed),
                hangar_wireguard::device::DropReason::ALL
                    .iter()
                    .map(|r| (r.label(), m.drops(*r)))
                    .collect::<Vec<_>>(),
                d.peers()
            );
        }
    }
    assert!(reached, "a reaches b through the tunnel");
    assert!(ping(&nb, "fd77:1::1"), "and back, b learnt a's endpoint");
    assert!(
        a.metrics()
            .handshakes
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    let pa = a.peers();
    assert!(pa[0].last_handshake.is_some());
    assert!(pa[0].tx_bytes > 0 && pa[0].rx_bytes > 0, "{pa:?}");

    // Full-size packets, several at once.
    let out = sh(&[
        "ip",
        "netns",
        "exec",
        &na.0,
        "busybox",
        "ping6",
        "-c",
        "20",
        "-i",
        "0.01",
        "-s",
        "1300",
        "-W",
        "2",
        "fd77:1::2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Cryptokey routing: b may not use another source, and a sends nothing outside b's
    // allowed IPs.
    ok(&[
        "ip",
        "-n",
        &nb.0,
        "addr",
        "add",
        "fd77:1::9/64",
        "dev",
        b.name(),
        "nodad",
    ]);
    let spoofed = sh(&[
        "ip",
        "netns",
        "exec",
        &nb.0,
        "busybox",
        "ping6",
        "-c",
        "1",
        "-W",
        "1",
        "-I",
        "fd77:1::9",
        "fd77:1::1",
    ]);
    assert!(!spoofed.status.success(), "a spoofed source gets through");
    assert!(
        a.metrics()
            .drops(hangar_wireguard::device::DropReason::Spoofed)
            >= 1
    );
    assert!(!ping(&na, "fd77:1::9"), "a routes only b's address to b");

    // Removed, b is cut off.
    assert!(a.remove_peer(&kb.public()));
    assert!(!ping(&nb, "fd77:1::1"));
    a.shutdown().await;
    b.shutdown().await;
    // The interfaces went with their devices.
    assert!(
        !sh(&["ip", "-n", &na.0, "link", "show", a.name()])
            .status
            .success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wg_drives_a_device_over_the_uapi() {
    if !sh(&["sh", "-c", "command -v wg"]).status.success() {
        eprintln!("skipped: wg (wireguard-tools) is not installed");
        return;
    }
    let d = Device::start(DeviceConfig {
        name: unique("hgrwgt"),
        listen: "[::]:0".parse().expect("addr"),
        private_key: None,
        fwmark: None,
    })
    .expect("device");
    let socket = UapiSocket::bind(d.name()).expect("uapi");
    let (tx, mut rx) = tokio::sync::watch::channel(false);
    let serve = tokio::spawn(socket.serve(d.clone(), async move {
        let _ = rx.wait_for(|s| *s).await;
    }));
    let key = Key::generate().expect("key");
    let peer_key = Key::generate().expect("key").public();
    let dir = std::env::temp_dir().join(unique("hgrwgt-conf"));
    std::fs::create_dir_all(&dir).expect("dir");
    let conf = dir.join("wg.conf");
    std::fs::write(
        &conf,
        format!(
            "[Interface]\nPrivateKey = {}\nListenPort = 0\n\n[Peer]\nPublicKey = {}\n\
             AllowedIPs = fdaa:0:5::/48\nEndpoint = 127.0.0.1:9\nPersistentKeepalive = 15\n",
            key.to_base64(),
            peer_key.to_base64()
        ),
    )
    .expect("conf");
    let name = d.name().to_string();
    let conf_s = conf.display().to_string();
    let set = tokio::task::spawn_blocking(move || sh(&["wg", "setconf", &name, &conf_s]))
        .await
        .expect("wg");
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert_eq!(d.public_key(), Some(key.public()));
    let name = d.name().to_string();
    let dump = tokio::task::spawn_blocking(move || ok(&["wg", "show", &name, "dump"]))
        .await
        .expect("wg");
    assert!(dump.contains(&peer_key.to_base64()), "{dump}");
    assert!(dump.contains("fdaa:0:5::/48"), "{dump}");
    assert!(dump.contains("127.0.0.1:9"), "{dump}");
    // A bad request changes nothing.
    let name = d.name().to_string();
    let bad = tokio::task::spawn_blocking(move || {
        sh(&[
            "wg",
            "set",
            &name,
            "peer",
            "AAAA",
            "allowed-ips",
            "fdaa::/48",
        ])
    })
    .await
    .expect("wg");
    assert!(!bad.status.success());
    assert_eq!(d.peers().len(), 1);
    let name = d.name().to_string();
    let pk = peer_key.to_base64();
    let rm = tokio::task::spawn_blocking(move || sh(&["wg", "set", &name, "peer", &pk, "remove"]))
        .await
        .expect("wg");
    assert!(rm.status.success());
    assert!(d.peers().is_empty());
    let _ = tx.send(true);
    let _ = serve.await;
    d.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!hangar_wireguard::uapi::socket_path(d.name()).exists());
}
