//! `hangar wireguard` against a real host with its gateway: a peer created (its wg-quick
//! config written, private, with every §4.5 line), listed, refused when the file exists or
//! the name is bad, removed.

use std::net::SocketAddr;

use hangar_testkit::{ClusterOptions, TestCluster};

use super::live::Hangar;
use super::stderr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wireguard_create_list_remove() {
    let cluster = TestCluster::start_with(ClusterOptions {
        wireguard: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..ClusterOptions::default()
    })
    .await
    .expect("cluster");
    let gw = cluster.wireguard.clone().expect("gateway");
    let h = Hangar::new(cluster.api, "wireguard");
    let file = h.dir().join("laptop.conf");
    let file_s = file.display().to_string();
    let out = h
        .run(&[
            "wireguard",
            "create",
            "personal",
            "local",
            "laptop",
            &file_s,
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let config = std::fs::read_to_string(&file).expect("config");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    let peers = h.json(&["wireguard", "list", "-j"]).await;
    let p = &peers[0];
    assert_eq!(p["name"], "laptop");
    for line in [
        "[Interface]".to_string(),
        format!("Address = {}/120", p["peer_ip"].as_str().expect("ip")),
        format!("DNS = {}", p["dns"].as_str().expect("dns")),
        "[Peer]".to_string(),
        format!("PublicKey = {}", gw.public_key().to_base64()),
        format!(
            "AllowedIPs = {}",
            p["allowed_ips"][0].as_str().expect("ips")
        ),
        format!("Endpoint = {}", gw.listen_addr()),
        "PersistentKeepalive = 15".to_string(),
    ] {
        assert!(config.lines().any(|l| l == line), "{line}\n{config}");
    }
    assert!(config.contains("PrivateKey = "));
    // The server never saw the private key.
    let private = config
        .lines()
        .find_map(|l| l.strip_prefix("PrivateKey = "))
        .expect("private key");
    assert!(!peers.to_string().contains(private));
    let table = h.ok(&["wireguard", "list"]).await;
    assert!(
        table.contains("laptop") && table.contains("PEER IP"),
        "{table}"
    );

    // The file exists: refused before asking the API; a bad name: the API's 400.
    let again = h
        .run(&["wireguard", "create", "personal", "local", "desk", &file_s])
        .await;
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    let bad = h
        .run(&["wireguard", "create", "personal", "local", "Bad_Name", "-"])
        .await;
    assert_eq!(bad.status.code(), Some(3), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("peer name"), "{}", stderr(&bad));
    let none = h.run(&["wireguard", "create"]).await;
    assert_eq!(none.status.code(), Some(2), "{}", stderr(&none));

    let out = h.ok(&["wireguard", "remove", "personal", "laptop"]).await;
    assert!(out.contains("Removed"), "{out}");
    assert_eq!(
        h.json(&["wireguard", "list", "-j"]).await,
        serde_json::json!([])
    );
}
