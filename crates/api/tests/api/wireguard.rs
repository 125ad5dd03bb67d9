//! WireGuard peers: created with a public key only, an address of the org's (or a custom)
//! network, the gateway's details in the answer; names and keys checked; scoped to the org.

use std::net::Ipv6Addr;

use hangar_api::{ApiConfig, WireguardGateway};
use hangar_domain::sixpn;
use hangar_store::Store;
use serde_json::json;

use super::client::Client;
use super::{ACME, OTHER, server_with};

const KEY1: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
const KEY2: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
const SERVER: &str = "jz0bpN1cEVhTj5eUf0CIGzhE2MJ9Q5yd7yHEKZgKpWw=";

fn gateway() -> ApiConfig {
    ApiConfig {
        host_id: 7,
        regions: vec!["local".into(), "ams".into()],
        wireguard: Some(WireguardGateway {
            endpoint: "gw.example:51820".into(),
            public_key: SERVER.into(),
        }),
        ..ApiConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_get_an_address_of_their_network_and_the_gateway() {
    let s = server_with("wg-peers", gateway()).await;
    let c = Client::new(s.addr, Some(ACME));
    let r = c
        .post(
            "/v1/orgs/acme/wireguard",
            &json!({"name": "laptop", "public_key": KEY1}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let p = r.json();
    let net = s
        .store
        .list_networks()
        .expect("networks")
        .into_iter()
        .find(|n| n.org_slug == "acme")
        .expect("acme's network")
        .id;
    let ip: Ipv6Addr = p["peer_ip"].as_str().expect("ip").parse().expect("v6");
    assert!(sixpn::is_peer(ip), "{ip}");
    assert_eq!(sixpn::parse(ip), Some((net, sixpn::PEER_HOST)));
    assert_eq!(p["prefix_len"], 120);
    assert_eq!(p["endpoint"], "gw.example:51820");
    assert_eq!(p["server_public_key"], SERVER);
    assert_eq!(p["dns"], sixpn::service_addr(net, 7).to_string());
    assert_eq!(
        p["allowed_ips"],
        json!([format!("{}/48", sixpn::network_prefix(net))])
    );
    assert_eq!(p["region"], "local");
    assert_eq!(p["network"], "default");
    // Listed and shown to its org only.
    let list = c.get("/v1/orgs/acme/wireguard").await.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(c.get("/v1/orgs/acme/wireguard/laptop").await.json(), p);
    let other = Client::new(s.addr, Some(OTHER));
    assert_eq!(other.get("/v1/orgs/acme/wireguard").await.status, 404);
    assert_eq!(
        other.delete("/v1/orgs/acme/wireguard/laptop").await.status,
        404
    );
    assert_eq!(
        other.get("/v1/orgs/other/wireguard").await.json(),
        json!([])
    );
    // Taken names and keys.
    for (body, status) in [
        (json!({"name": "laptop", "public_key": KEY2}), 422),
        (json!({"name": "desk", "public_key": KEY1}), 422),
        (json!({"name": "Desk", "public_key": KEY2}), 400),
        (json!({"name": "abcdefghijklmnop", "public_key": KEY2}), 400),
        (json!({"name": "desk", "public_key": "not-a-key"}), 400),
        (json!({"name": "desk", "public_key": "AAAA"}), 400),
        (
            json!({"name": "desk", "public_key": KEY2, "region": "mars"}),
            400,
        ),
        (
            json!({"name": "desk", "public_key": KEY2, "network": "nope"}),
            404,
        ),
        (json!({"name": "desk"}), 400),
    ] {
        let r = c.post("/v1/orgs/acme/wireguard", &body).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
    }
    // A custom network's peer is in that network.
    let r = c
        .post(
            "/v1/apps",
            &json!({"app_name": "blue-app", "org_slug": "acme", "network": "blue"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let blue = s
        .store
        .list_networks()
        .expect("networks")
        .into_iter()
        .find(|n| n.name == "blue")
        .expect("blue")
        .id;
    let r = c
        .post(
            "/v1/orgs/acme/wireguard",
            &json!({"name": "desk", "public_key": KEY2, "network": "blue", "region": "ams"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let ip: Ipv6Addr = r.json()["peer_ip"]
        .as_str()
        .expect("ip")
        .parse()
        .expect("v6");
    assert_eq!(sixpn::parse(ip).map(|p| p.0), Some(blue));
    // Removed: gone.
    assert_eq!(c.delete("/v1/orgs/acme/wireguard/laptop").await.status, 204);
    assert_eq!(c.get("/v1/orgs/acme/wireguard/laptop").await.status, 404);
    assert_eq!(c.delete("/v1/orgs/acme/wireguard/laptop").await.status, 404);
    assert!(
        s.store
            .get_wireguard_peer("acme", "laptop")
            .expect("get")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_gateway_creating_a_peer_is_not_implemented() {
    let s = server_with("wg-off", ApiConfig::default()).await;
    let c = Client::new(s.addr, Some(ACME));
    let r = c
        .post(
            "/v1/orgs/acme/wireguard",
            &json!({"name": "laptop", "public_key": KEY1}),
        )
        .await;
    assert_eq!(r.status, 501, "{}", r.text);
    assert_eq!(c.get("/v1/orgs/acme/wireguard").await.json(), json!([]));
}
