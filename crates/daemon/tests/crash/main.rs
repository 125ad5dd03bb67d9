//! hangard as a real process, SIGKILLed while 50 machines are being created concurrently,
//! then restarted over the same data dir: no machine is lost, duplicated or left half-made,
//! and once they are destroyed nothing of them remains on the host. Also the flags of the
//! ACME DNS zone, from the command line to a real DNS answer and the API's CNAME target.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hangar_image::testing::{TempDir, busybox_image, write_oci_archive};
use hangar_image::{ImageStore, ImportOptions, Reference};
use hangar_runtime::{Driver, LinuxDriver, LinuxDriverConfig};
use hangar_testkit::Client;
use serde_json::{Value, json};

const IMAGE: &str = "hangar-test/busybox:latest";

struct Daemon {
    child: Option<Child>,
    api: std::net::SocketAddr,
    metrics: std::net::SocketAddr,
}

impl Daemon {
    fn start(data: &Path, init: &Path, cgroup: &str, host_id: u32) -> Daemon {
        Self::start_with(data, init, cgroup, host_id, &[])
    }

    fn start_with(data: &Path, init: &Path, cgroup: &str, host_id: u32, extra: &[&str]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hangard"))
            .args([
                "--data-dir",
                &data.display().to_string(),
                "--api-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--init-binary",
                &init.display().to_string(),
                "--cgroup-parent",
                cgroup,
            ])
            .args(["--host-id", &host_id.to_string()])
            // IPv6 only: parallel tests must not share the host's IPv4 pool and NAT table;
            // isolation tables of this test's own name; no operators' DNS listener.
            .args(["--ipv4-pool", "none"])
            .args(["--nft-table", &nft_table(host_id)])
            .args(["--dns-listen", "none"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            // No WireGuard gateway: its interface and UDP port are one per host.
            .arg("--no-wireguard")
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn hangard");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("api=http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(("api", addr));
                }
                if let Some(rest) = line.split("metrics at http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or("").to_string();
                    let _ = tx.send(("metrics", addr));
                }
                eprintln!("[hangard] {line}");
            }
        });
        let (mut api, mut metrics) = (None, None);
        while api.is_none() || metrics.is_none() {
            let (what, addr) = rx
                .recv_timeout(Duration::from_secs(30))
                .expect("hangard prints its API and metrics addresses");
            let addr = Some(addr.parse().expect("addr"));
            if what == "api" {
                api = addr;
            } else {
                metrics = addr;
            }
        }
        Daemon {
            child: Some(child),
            api: api.expect("api"),
            metrics: metrics.expect("metrics"),
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The nftables tables of the test's hangard.
fn nft_table(host_id: u32) -> String {
    format!("hgcrash_{host_id}")
}

/// Removes whatever the test's machines left, even after a failure.
struct HostCleanup {
    data: PathBuf,
    init: PathBuf,
    cgroup: String,
    host_id: u32,
}

impl Drop for HostCleanup {
    fn drop(&mut self) {
        if let Ok(driver) = LinuxDriver::new(LinuxDriverConfig {
            state_dir: self.data.join("runtime"),
            init_binary: self.init.clone(),
            cgroup_parent: self.cgroup.clone(),
        }) {
            for c in driver.list().unwrap_or_default() {
                let _ = driver.delete(&c.id);
            }
            let _ = driver.cgroups().remove(Path::new(&self.cgroup));
        }
        if let Ok(dir) = std::fs::read_dir(self.data.join("machines")) {
            for e in dir.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                let _ = hangar_image::remove_rootfs(&e.path());
                let _ = hangar_net::MachineNet::new(&id, std::net::Ipv6Addr::UNSPECIFIED).remove();
            }
        }
        for net in 1..4 {
            let _ = hangar_net::Network::new(net, self.host_id).remove();
        }
        if let Ok(iso) = hangar_net::isolation::Isolation::new(&nft_table(self.host_id)) {
            let _ = iso.remove();
        }
    }
}

/// The admin token hangard wrote in `data`.
fn admin_token(data: &Path) -> String {
    std::fs::read_to_string(data.join("admin.token"))
        .expect("admin token")
        .trim()
        .to_string()
}

/// A client of hangard's API with its admin token, and app `app` made.
async fn admin_with_app(data: &Path, api: std::net::SocketAddr, app: &str) -> Client {
    let c = Client::new(api, Some(&admin_token(data)));
    let r = c
        .post(
            "/v1/apps",
            &json!({"app_name": app, "org_slug": "personal"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    c
}

async fn list(c: &Client) -> Vec<Value> {
    c.get("/v1/apps/crash/machines")
        .await
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_daemon_mid_creation_loses_nothing() {
    let dir = TempDir::new("hangar-crash").expect("temp dir");
    let data = dir.join("data");
    let images = ImageStore::open(data.join("images")).expect("image store");
    let archive = dir.join("busybox.tar");
    write_oci_archive(
        &busybox_image().expect("busybox-static"),
        &archive,
        "latest",
    )
    .expect("archive");
    let tag = Reference::parse(IMAGE).expect("ref");
    images
        .import(
            &archive,
            &ImportOptions {
                tag: Some(tag),
                ..ImportOptions::default()
            },
        )
        .expect("import");
    let init = hangar_runtime::testing::static_init().expect("static init");
    let cgroup = format!("hangar-crash-{}", std::process::id());
    let host_id = 0x00c0_0000 ^ std::process::id();
    let _cleanup = HostCleanup {
        data: data.clone(),
        init: init.clone(),
        cgroup: cgroup.clone(),
        host_id,
    };

    let mut daemon = Daemon::start(&data, &init, &cgroup, host_id);
    let c = admin_with_app(&data, daemon.api, "crash").await;

    // 50 creates at once; the daemon dies while they are under way.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"name": format!("m{i}"), "config": {"image": IMAGE, "init": {"cmd": ["sleep", "3600"]}, "guest": {"memory_mb": 64}}});
            let r = c.post("/v1/apps/crash/machines", &body).await;
            (r.status == 200).then(|| r.json()["id"].as_str().unwrap_or_default().to_string())
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while list(&c).await.len() < 15 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.kill();
    let mut acknowledged = Vec::new();
    for t in tasks {
        if let Ok(Some(id)) = t.await {
            acknowledged.push(id);
        }
    }

    // Restart over the same data dir.
    let daemon = Daemon::start(&data, &init, &cgroup, host_id);
    let c = Client::new(daemon.api, Some(&admin_token(&data)));
    let deadline = Instant::now() + Duration::from_secs(120);
    let settled = loop {
        let machines = list(&c).await;
        let done = machines.iter().all(|m| {
            matches!(
                m["state"].as_str(),
                Some("started" | "failed" | "destroyed")
            )
        });
        if done || Instant::now() > deadline {
            break machines;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let states: Vec<(String, String)> = settled
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                m["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        states
            .iter()
            .all(|(_, s)| s == "started" || s == "failed" || s == "destroyed"),
        "every machine ends started or cleanly failed/destroyed: {states:?}"
    );
    // Nothing acknowledged is lost, nothing is duplicated.
    let ids: Vec<&str> = settled.iter().filter_map(|m| m["id"].as_str()).collect();
    for a in &acknowledged {
        assert!(ids.contains(&a.as_str()), "acknowledged machine {a} lost");
    }
    let mut names: Vec<&str> = states.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), states.len(), "no duplicates: {states:?}");
    let started = states.iter().filter(|(_, s)| s == "started").count();
    assert!(
        started >= acknowledged.len().min(15),
        "{started} started of {} acknowledged",
        acknowledged.len()
    );

    // Destroy them all: nothing stays on the host.
    for id in &ids {
        let r = c
            .delete(&format!("/v1/apps/crash/machines/{id}?force=true"))
            .await;
        assert!(r.status == 200 || r.status == 412, "{}", r.text);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !list(&c).await.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(list(&c).await.is_empty(), "all destroyed");
    let leftovers: Vec<String> = std::fs::read_dir(data.join("machines"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "machine dirs left: {leftovers:?}");
    let netns: Vec<String> = hangar_net::list_machine_namespaces()
        .into_iter()
        .filter(|n| ids.contains(&n.as_str()))
        .collect();
    assert!(netns.is_empty(), "namespaces left: {netns:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        !mounts.contains(&data.display().to_string()),
        "mounts left under the data dir"
    );
    // The store's WAL was checkpointed by its own thread all along (not by the commits).
    let text = get_metrics(daemon.metrics);
    let checkpoints = text
        .lines()
        .find_map(|l| l.strip_prefix("hangar_store_wal_checkpoints_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no WAL checkpoint count in:\n{text}"));
    assert!(checkpoints >= 1.0, "{checkpoints} checkpoints");
    assert!(
        text.contains("hangar_store_wal_checkpoint_failures_total 0"),
        "{text}"
    );
}

/// `GET /metrics`, the body.
fn get_metrics(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A DNS query for `name` `qtype` to `server` over UDP; the answer.
async fn dns(
    server: std::net::SocketAddr,
    name: &str,
    qtype: hangar_dns::hickory_proto::rr::RecordType,
) -> hangar_dns::hickory_proto::op::Message {
    use hangar_dns::hickory_proto::op::{Message, Query};
    use hangar_dns::hickory_proto::rr::Name;
    let mut q = Message::query();
    q.metadata.id = 42;
    q.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    sock.send_to(&q.to_vec().expect("encode"), server)
        .await
        .expect("send");
    let mut buf = [0u8; 1500];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf))
        .await
        .expect("an answer in time")
        .expect("recv");
    Message::from_vec(&buf[..n]).expect("decode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acme_dns_flags_serve_the_zone_and_give_users_their_target() {
    use hangar_dns::hickory_proto::rr::{RData, RecordType};
    let dir = TempDir::new("hangar-acme-dns").expect("temp dir");
    let data = dir.join("data");
    let init = hangar_runtime::testing::static_init().expect("static init");
    let cgroup = format!("hangar-acme-dns-{}", std::process::id());
    let host_id = 0x00a0_0000 ^ std::process::id();
    let _cleanup = HostCleanup {
        data: data.clone(),
        init: init.clone(),
        cgroup: cgroup.clone(),
        host_id,
    };
    let zone_addr = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.local_addr().expect("addr")
    };
    let listen = zone_addr.to_string();
    let acme = [
        // No CA is reached in this test: orders fail, which is not what it looks at.
        "--acme-directory",
        "https://127.0.0.1:9/directory",
        "--acme-dns-zone",
        "Acme.Flags.Test.",
    ];

    // The zone without where to serve it: refused at start, with the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_hangard"))
        .args(["--data-dir", &dir.join("refused").display().to_string()])
        .args([
            "--api-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .args([
            "--dns-listen",
            "none",
            "--no-wireguard",
            "--ipv4-pool",
            "none",
        ])
        .args(["--nft-table", &format!("{}r", nft_table(host_id))])
        .args(["--cgroup-parent", &format!("{cgroup}-refused")])
        .args(["--init-binary", &init.display().to_string()])
        .args(acme)
        .stdout(Stdio::null())
        .output()
        .expect("run hangard");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--acme-dns-zone needs --acme-dns-listen"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut extra = acme.to_vec();
    extra.extend(["--acme-dns-listen", &listen]);
    let daemon = Daemon::start_with(&data, &init, &cgroup, host_id, &extra);
    // The zone's own records, once the proxy's ACME manager serves it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let ns = loop {
        let m = tokio::time::timeout(
            Duration::from_millis(500),
            dns(zone_addr, "acme.flags.test.", RecordType::NS),
        )
        .await;
        match m {
            Ok(m) => break m,
            Err(_) => assert!(
                Instant::now() < deadline,
                "the ACME DNS zone never answered"
            ),
        }
    };
    assert!(ns.metadata.authoritative);
    assert!(
        matches!(&ns.answers[0].data, RData::NS(n) if n.0.to_ascii() == "ns.acme.flags.test."),
        "{ns:?}"
    );
    let a = dns(zone_addr, "ns.acme.flags.test.", RecordType::A).await;
    assert!(
        matches!(&a.answers[0].data, RData::A(ip) if ip.0 == std::net::Ipv4Addr::LOCALHOST),
        "{a:?}"
    );

    // The API gives a wildcard's user the CNAME target in that zone.
    let c = admin_with_app(&data, daemon.api, "wild").await;
    let r = c
        .post(
            "/v1/apps/wild/certificates/acme",
            &json!({"hostname": "*.example.com"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.json()["dns_requirements"]["acme_challenge"]["target"],
        hangar_domain::tls::acme_dns_target("example.com", "wild", "acme.flags.test").as_str()
    );
    let metrics = get_metrics(daemon.metrics);
    assert!(
        metrics.contains("hangar_acme_dns_queries_total{region=\"local\",rcode=\"NOERROR\"}"),
        "{metrics}"
    );
}
