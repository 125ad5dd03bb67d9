//! Deleting an app takes its running machines down at once (not at the next daemon start).

use std::time::{Duration, Instant};

use hangar_runtime::{ContainerId, Driver as _};
use hangar_testkit::{TEST_IMAGE, TestCluster};
use serde_json::json;

use super::wait;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_app_tears_its_machines_down() {
    let cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    let r = c
        .post(
            "/v1/apps",
            &json!({"app_name": "gone-app", "org_slug": "personal"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = c
            .post(
                "/v1/apps/gone-app/machines",
                &json!({"config": {"image": TEST_IMAGE, "init": {"cmd": ["sleep", "100000"]}}}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let id = r.json()["id"].as_str().expect("id").to_string();
        wait(&c, "gone-app", &id, "started", "").await;
        ids.push(id);
    }
    let r = c.delete("/v1/apps/gone-app").await;
    assert_eq!(r.status, 202, "{}", r.text);
    let deadline = Instant::now() + Duration::from_secs(20);
    for id in &ids {
        let cid = ContainerId::parse(id).expect("id");
        while cluster.driver.state(&cid).is_ok()
            || cluster.machine_dir(id).exists()
            || std::path::Path::new(&format!("/run/netns/hgr-{id}")).exists()
        {
            assert!(
                Instant::now() < deadline,
                "machine {id} of a deleted app is still on the host"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The bridge of the org's network on this host, once one of its machines is there.
fn org_bridge(cluster: &TestCluster, c_org_network: u32) -> hangar_net::Network {
    hangar_net::Network::new(c_org_network, cluster.host_id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_networks_bridge_goes_with_its_last_machine_and_comes_back_with_the_next() {
    let cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    let create = |app: &'static str| {
        let c = c.clone();
        async move {
            let r = c
                .post(
                    &format!("/v1/apps/{app}/machines"),
                    &json!({"config": {"image": TEST_IMAGE,
                        "init": {"cmd": ["nc", "-ll", "-p", "7000", "-e", "echo", "hi"]}}}),
                )
                .await;
            assert_eq!(r.status, 200, "{}", r.text);
            let id = r.json()["id"].as_str().expect("id").to_string();
            wait(&c, app, &id, "started", "").await;
            (id, r.json()["private_ip"].as_str().expect("ip").to_string())
        }
    };
    for app in ["br-a", "br-b"] {
        super::app(&c, app).await;
    }
    let (a, ip) = create("br-a").await;
    let (b, _) = create("br-b").await;
    let addr: std::net::Ipv6Addr = ip.parse().expect("6pn");
    let (network_id, _) = hangar_domain::sixpn::parse(addr).expect("6pn");
    let bridge = org_bridge(&cluster, network_id);
    assert!(bridge.exists(), "{} while machines use it", bridge.bridge);
    let gone = |what: &'static str| {
        let bridge = bridge.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while bridge.exists() {
                assert!(
                    Instant::now() < deadline,
                    "{} stayed after {what}",
                    bridge.bridge
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // One of two machines destroyed: the other still needs it.
    let r = c
        .delete(&format!("/v1/apps/br-a/machines/{a}?force=true"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, "br-a", &a, "destroyed", "").await;
    assert!(bridge.exists(), "removed while br-b's machine uses it");
    // The last one goes with its app: so does the bridge.
    let r = c.delete("/v1/apps/br-b").await;
    assert_eq!(r.status, 202, "{}", r.text);
    gone("the network's last machine").await;
    let _ = b;
    // The next machine of the network makes it again and is reachable on it.
    let (_, ip) = create("br-a").await;
    assert!(bridge.exists());
    let target = std::net::SocketAddr::new(ip.parse().expect("6pn"), 7000);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut s = loop {
        match tokio::net::TcpStream::connect(target).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "{target}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out)
        .await
        .expect("read");
    assert_eq!(out, "hi\n");
}
