//! `/v1/apps/{app}/ip_assignments` (§2.10, §4.3): Flycast addresses per network (the app's
//! own, a custom one, another org's), one per app and network, released by any spelling of
//! the address; public addresses recorded from the host's configured ones, refused with how
//! to configure them otherwise; bad input 400/422, other orgs 404.

use hangar_api::ApiConfig;
use hangar_domain::sixpn;
use hangar_store::Store as _;
use serde_json::{Value, json};

use super::{ACME, ADMIN, OTHER, Server, assert_error, create_app, server, server_with};
use crate::client::Client;

fn network_id(s: &Server, org: &str, name: &str) -> u32 {
    s.store
        .list_networks()
        .expect("networks")
        .into_iter()
        .find(|n| n.org_slug == org && n.name == name)
        .expect("network")
        .id
}

fn flycast_of(v: &Value) -> u32 {
    let ip: std::net::Ipv6Addr = v["ip"].as_str().expect("ip").parse().expect("IPv6");
    sixpn::flycast_network(ip).expect("a Flycast address")
}

async fn allocate(c: &Client, app: &str, body: Value) -> crate::client::Resp {
    c.post(&format!("/v1/apps/{app}/ip_assignments"), &body)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flycast_addresses_per_network_scoped_and_released() {
    let s = server("ips-flycast").await;
    let c = Client::new(s.addr, Some(ACME));
    let admin = Client::new(s.addr, Some(ADMIN));
    let other = Client::new(s.addr, Some(OTHER));
    create_app(&c, "web").await;
    let r = c
        .post(
            "/v1/apps",
            &json!({"app_name": "blue", "org_slug": "acme", "network": "blue"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = other
        .post(
            "/v1/apps",
            &json!({"app_name": "theirs", "org_slug": "other"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let r = c.get("/v1/apps/web/ip_assignments").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json(), json!({"ips": []}));

    // The app's own network, announced in the change log.
    let before = s.store.revision();
    let r = allocate(&c, "web", json!({"type": "private_v6"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let own = r.json();
    assert_eq!(flycast_of(&own), network_id(&s, "acme", "default"), "{own}");
    assert_eq!(
        own["network"],
        json!({"name": "default", "org_slug": "acme"})
    );
    assert_eq!(own["region"], "global");
    assert_eq!(own["shared"], false);
    assert!(own["created_at"].as_str().is_some_and(|t| t.ends_with('Z')));
    let changes = s.store.changes_since(before, 10).expect("changes");
    assert!(
        changes
            .iter()
            .any(|ch| ch.kind == "ip_assignment" && ch.key == "web"),
        "{changes:?}"
    );
    // One per network.
    let r = allocate(&c, "web", json!({"type": "private_v6"})).await;
    assert_error(&r, 422);
    assert!(r.text.contains("release"), "{}", r.text);
    // A custom network of the org, named; a network that does not exist.
    let r = allocate(
        &c,
        "web",
        json!({"type": "private_v6", "network": "blue", "region": "ams", "service_name": "api"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let blue = r.json();
    assert_eq!(flycast_of(&blue), network_id(&s, "acme", "blue"));
    assert_eq!(blue["region"], "ams");
    assert_eq!(blue["service_name"], "api");
    let r = allocate(&c, "web", json!({"type": "private_v6", "network": "nope"})).await;
    assert_error(&r, 422);
    assert!(r.text.contains("no network 'nope'"), "{}", r.text);
    // Another org: only for a caller who sees it.
    let r = allocate(
        &c,
        "web",
        json!({"type": "private_v6", "org_slug": "other"}),
    )
    .await;
    assert_error(&r, 404);
    let r = allocate(
        &admin,
        "web",
        json!({"type": "private_v6", "org_slug": "other"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let cross = r.json();
    assert_eq!(flycast_of(&cross), network_id(&s, "other", "default"));
    assert_eq!(
        cross["network"],
        json!({"name": "default", "org_slug": "other"})
    );
    // Three addresses, all different.
    let list = c.get("/v1/apps/web/ip_assignments").await.json();
    let ips: Vec<&str> = list["ips"]
        .as_array()
        .expect("ips")
        .iter()
        .filter_map(|i| i["ip"].as_str())
        .collect();
    assert_eq!(ips.len(), 3, "{list}");
    assert!(ips[0] != ips[1] && ips[1] != ips[2] && ips[0] != ips[2]);

    // Bad input.
    for (body, status) in [
        (json!({}), 400),
        (json!({"type": "private_v4"}), 400),
        (json!({"type": "private_v6", "region": "mars"}), 400),
        (json!({"type": "private_v6", "network": "a b"}), 400),
        (json!({"type": "private_v6", "service_name": "x;y"}), 400),
        (json!({"type": "v4"}), 422),
        (json!({"type": "egress_v4"}), 422),
        (json!({"type": 7}), 400),
    ] {
        let r = allocate(&c, "web", body.clone()).await;
        assert_error(&r, status);
        assert!(!r.text.contains("panick"), "{body}: {}", r.text);
    }
    // Public addresses without any configured: how to configure them.
    for t in ["v6", "shared_v4"] {
        let r = allocate(&c, "web", json!({"type": t})).await;
        assert_error(&r, 422);
        assert!(r.text.contains("--public-ip"), "{}", r.text);
    }
    // Another org sees none of it; an unknown app is 404.
    assert_error(&other.get("/v1/apps/web/ip_assignments").await, 404);
    assert_error(
        &allocate(&other, "web", json!({"type": "private_v6"})).await,
        404,
    );
    let own_ip = own["ip"].as_str().expect("ip");
    assert_error(
        &other
            .delete(&format!("/v1/apps/web/ip_assignments/{own_ip}"))
            .await,
        404,
    );
    assert_error(&c.get("/v1/apps/nope/ip_assignments").await, 404);

    // Release: any spelling of the address; not an address, or not the app's.
    assert_error(&c.delete("/v1/apps/web/ip_assignments/nope").await, 400);
    assert_error(&c.delete("/v1/apps/web/ip_assignments/fdaa::11").await, 404);
    let long: std::net::Ipv6Addr = own_ip.parse().expect("ip");
    let spelled = long
        .segments()
        .iter()
        .map(|x| format!("{x:04X}"))
        .collect::<Vec<_>>()
        .join(":");
    let r = c
        .delete(&format!("/v1/apps/web/ip_assignments/{spelled}"))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_error(
        &c.delete(&format!("/v1/apps/web/ip_assignments/{own_ip}"))
            .await,
        404,
    );
    let list = c.get("/v1/apps/web/ip_assignments").await.json();
    assert_eq!(list["ips"].as_array().map(Vec::len), Some(2), "{list}");
    // Released, the network may have one again (another address).
    let r = allocate(&c, "web", json!({"type": "private_v6"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_ne!(r.json()["ip"], own["ip"]);
    // Deleting the app takes its addresses.
    assert_eq!(c.delete("/v1/apps/web").await.status, 202);
    assert!(s.store.list_ip_assignments(None).expect("list").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_addresses_are_the_hosts_own_and_shared() {
    let s = server_with(
        "ips-public",
        ApiConfig {
            public_ips: vec!["203.0.113.9".parse().expect("v4")],
            ..ApiConfig::default()
        },
    )
    .await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "site").await;
    create_app(&c, "site2").await;
    let r = allocate(&c, "site", json!({"type": "shared_v4"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v4 = r.json();
    assert_eq!(v4["ip"], "203.0.113.9");
    assert_eq!(v4["shared"], true);
    assert!(v4.get("network").is_none(), "{v4}");
    // Idempotent per app; shared between apps.
    let again = allocate(&c, "site", json!({"type": "shared_v4"})).await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.json()["ip"], "203.0.113.9");
    let r = allocate(&c, "site2", json!({"type": "shared_v4"})).await;
    assert_eq!(r.json()["ip"], "203.0.113.9");
    assert_eq!(
        c.get("/v1/apps/site/ip_assignments").await.json()["ips"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // No IPv6 configured here; a dedicated IPv4 never.
    let r = allocate(&c, "site", json!({"type": "v6"})).await;
    assert_error(&r, 422);
    assert!(r.text.contains("no public IPv6"), "{}", r.text);
    let r = allocate(&c, "site", json!({"type": "v4"})).await;
    assert_error(&r, 422);
    assert!(r.text.contains("shared_v4"), "{}", r.text);
    let r = c.delete("/v1/apps/site/ip_assignments/203.0.113.9").await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        c.get("/v1/apps/site2/ip_assignments").await.json()["ips"]
            .as_array()
            .map(Vec::len),
        Some(1),
        "another app's record stays"
    );
}
