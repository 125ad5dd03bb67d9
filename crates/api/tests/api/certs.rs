//! `/v1/apps/{app}/certificates` (§2.10): hostnames per app, the reference's JSON shapes,
//! imports checked and sealed, ACME requests recorded for the proxy, org scoping.

use std::sync::Arc;

use hangar_api::ApiConfig;
use hangar_store::{CertificateRecord, Sealer, Store};
use serde_json::{Value, json};

use super::{ACME, OTHER, assert_error, create_app, server_sealed};
use crate::client::Client;

fn self_signed(names: &[&str], expired: bool) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    if expired {
        params.not_before = rcgen::date_time_ymd(2001, 1, 1);
        params.not_after = rcgen::date_time_ymd(2002, 1, 1);
    } else {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    }
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "Test Issuer");
    params.distinguished_name = dn;
    let cert = params.self_signed(&key).expect("cert");
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_acme_dns_zone_wildcards_are_taken_and_get_their_cname_target() {
    let s = server_sealed(
        "certs-dns01",
        ApiConfig {
            domain: "hangar.test".into(),
            acme_enabled: true,
            acme_dns_zone: Some("acme.hangar.test".into()),
            ..ApiConfig::default()
        },
        None,
        None,
    )
    .await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "site").await;
    let target = hangar_domain::tls::acme_dns_target("example.com", "site", "acme.hangar.test");
    for host in ["*.example.com", "example.com"] {
        let r = c
            .post(
                "/v1/apps/site/certificates/acme",
                &json!({"hostname": host}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        let need = &r.json()["dns_requirements"]["acme_challenge"];
        // A name and its wildcard share the record, so they share the target.
        assert_eq!(need["name"], "_acme-challenge.example.com");
        assert_eq!(need["target"], target.as_str());
    }
    // A failed wildcard order says which record to set.
    let mut rec = s
        .store
        .get_certificate("*.example.com")
        .expect("get")
        .expect("exists");
    let rev = rec.revision;
    rec.acme_error = Some("urn:ietf:params:acme:error:unauthorized no TXT record".into());
    rec.acme_attempts = 1;
    s.store.update_certificate(&rec, rev).expect("update");
    let d = c
        .get("/v1/apps/site/certificates/*.example.com")
        .await
        .json();
    let remediation = d["validation_errors"][0]["remediation"]
        .as_str()
        .unwrap_or("");
    assert!(
        remediation.contains(&format!("CNAME _acme-challenge.example.com {target}")),
        "{d}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_requests_are_recorded_with_the_reference_shapes_and_scoped() {
    let s = server_sealed(
        "certs-acme",
        ApiConfig {
            domain: "hangar.test".into(),
            ..ApiConfig::default()
        },
        None,
        None,
    )
    .await;
    let c = Client::new(s.addr, Some(ACME));
    let other = Client::new(s.addr, Some(OTHER));
    create_app(&c, "site").await;
    create_app(&c, "site2").await;
    let before = s.store.revision();
    let r = c
        .post(
            "/v1/apps/site/certificates/acme",
            &json!({"hostname": "WWW.Example.COM."}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let d = r.json();
    assert_eq!(d["hostname"], "www.example.com");
    assert_eq!(d["acme_requested"], true);
    assert_eq!(d["configured"], false);
    assert_eq!(d["status"], "pending_validation");
    assert_eq!(d["certificates"][0]["source"], "fly");
    assert_eq!(d["certificates"][0]["status"], "pending");
    assert_eq!(d["dns_requirements"]["cname"], "site.hangar.test");
    assert_eq!(
        d["dns_requirements"]["acme_challenge"]["name"],
        "_acme-challenge.www.example.com"
    );
    // No ACME DNS zone on this host: no DNS-01 target.
    assert_eq!(d["dns_requirements"]["acme_challenge"]["target"], "");
    assert_eq!(d["validation"]["http_configured"], false);
    // This API has no ACME issuer behind it: the detail says so and how to fix it.
    assert_eq!(d["validation_errors"][0]["code"], "acme_disabled", "{d}");
    // The write is a `certificate` change the proxy follows.
    let changes = s.store.changes_since(before, 10).expect("changes");
    assert!(
        changes
            .iter()
            .any(|ch| ch.kind == "certificate" && ch.key == "www.example.com"),
        "{changes:?}"
    );
    // Idempotent for the same app; taken for another; invisible to other orgs.
    let r = c
        .post(
            "/v1/apps/site/certificates/acme",
            &json!({"hostname": "www.example.com"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = c
        .post(
            "/v1/apps/site2/certificates/acme",
            &json!({"hostname": "www.example.com"}),
        )
        .await;
    assert_error(&r, 422);
    assert_eq!(r.json()["status"], "name_taken");
    assert_error(
        &other
            .get("/v1/apps/site/certificates/www.example.com")
            .await,
        404,
    );
    assert_error(
        &c.get("/v1/apps/site2/certificates/www.example.com").await,
        404,
    );
    // Names that can not get an ACME certificate here.
    for bad in [
        "localhost",
        "not a host",
        "1.2.3.4",
        "*.example.com",
        "x.hangar.test",
        "",
    ] {
        let r = c
            .post("/v1/apps/site/certificates/acme", &json!({"hostname": bad}))
            .await;
        assert_error(&r, 400);
    }
    // List: filter, cursor, limit.
    for h in ["a.example.org", "b.example.org", "c.example.org"] {
        let r = c
            .post("/v1/apps/site/certificates/acme", &json!({"hostname": h}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let l = c.get("/v1/apps/site/certificates").await.json();
    assert_eq!(l["total_count"], 4);
    let first = &l["certificates"][0];
    for k in [
        "acme_dns_configured",
        "acme_alpn_configured",
        "acme_http_configured",
        "ownership_txt_configured",
        "has_custom_certificate",
        "has_fly_certificate",
    ] {
        assert_eq!(first[k], false, "{k}: {first}");
    }
    assert!(
        first["created_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let l = c
        .get("/v1/apps/site/certificates?filter=example.org&limit=2")
        .await
        .json();
    assert_eq!(l["total_count"], 3);
    let names: Vec<&str> = l["certificates"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["hostname"].as_str())
        .collect();
    assert_eq!(names, ["a.example.org", "b.example.org"]);
    let l = c
        .get("/v1/apps/site/certificates?filter=example.org&cursor=b.example.org")
        .await
        .json();
    assert_eq!(l["certificates"][0]["hostname"], "c.example.org");
    assert_eq!(other.get("/v1/apps/site/certificates").await.status, 404);
    // A failed issuance: check makes it retry now; the error is shown until then.
    let rec = s
        .store
        .get_certificate("a.example.org")
        .expect("get")
        .expect("exists");
    let mut failed = rec.clone();
    failed.acme_status = "failed".into();
    failed.acme_attempts = 8;
    failed.acme_next_attempt_at = i64::MAX / 2;
    failed.acme_error = Some("urn:ietf:params:acme:error:connection refused".into());
    failed.acme_error_at = Some(1_700_000_000_000);
    s.store
        .update_certificate(&failed, rec.revision)
        .expect("update");
    let d = c
        .get("/v1/apps/site/certificates/a.example.org")
        .await
        .json();
    assert_eq!(d["status"], "failed");
    assert!(d["rate_limited_until"].is_string(), "{d}");
    let e = d["validation_errors"]
        .as_array()
        .expect("errors")
        .iter()
        .find(|e| e["code"] == "urn:ietf:params:acme:error:connection")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(e["timestamp"], "2023-11-14T22:13:20Z", "{d}");
    let d = c
        .post("/v1/apps/site/certificates/a.example.org/check", &json!({}))
        .await;
    assert_eq!(d.status, 200, "{}", d.text);
    assert_eq!(d.json()["status"], "pending_validation");
    let rec = s
        .store
        .get_certificate("a.example.org")
        .expect("get")
        .expect("exists");
    assert_eq!((rec.acme_attempts, rec.acme_next_attempt_at), (0, 0));
    // Stop ACME, then remove the hostname.
    let r = c
        .delete("/v1/apps/site/certificates/a.example.org/acme")
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let d = c
        .get("/v1/apps/site/certificates/a.example.org")
        .await
        .json();
    assert_eq!(d["status"], "not_configured");
    assert_eq!(d["certificates"], json!([]));
    let r = c.delete("/v1/apps/site/certificates/a.example.org").await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_error(
        &c.get("/v1/apps/site/certificates/a.example.org").await,
        404,
    );
    // Deleting the app frees its hostnames.
    assert_eq!(c.delete("/v1/apps/site").await.status, 202);
    let r = c
        .post(
            "/v1/apps/site2/certificates/acme",
            &json!({"hostname": "www.example.com"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_certificates_are_checked_and_their_keys_sealed() {
    let dir = std::env::temp_dir().join(format!("hangar-api-certkey-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sealer = Arc::new(Sealer::load_or_create(&dir.join("seal.key")).expect("sealer"));
    let s = server_sealed(
        "certs-import",
        ApiConfig::default(),
        None,
        Some(sealer.clone()),
    )
    .await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "shop").await;
    let (cert, key) = self_signed(&["shop.example.com"], false);
    let (other_cert, other_key) = self_signed(&["other.example.com"], false);
    let (old_cert, old_key) = self_signed(&["shop.example.com"], true);
    let import = |fullchain: &str, private_key: &str| json!({"hostname": "shop.example.com", "fullchain": fullchain, "private_key": private_key});
    for (body, why) in [
        (import(&cert, &other_key), "key of another certificate"),
        (
            import(&other_cert, &other_key),
            "certificate of another name",
        ),
        (import(&old_cert, &old_key), "expired"),
        (import("junk", &key), "not PEM"),
        (import(&cert, "junk"), "key not PEM"),
        (import("", &key), "empty chain"),
    ] {
        let r = c.post("/v1/apps/shop/certificates/custom", &body).await;
        assert_eq!(r.status, 400, "{why}: {}", r.text);
    }
    let r = c
        .post("/v1/apps/shop/certificates/custom", &import(&cert, &key))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let d = r.json();
    assert_eq!(d["status"], "active");
    assert_eq!(d["configured"], true);
    assert_eq!(d["acme_requested"], false);
    let c0 = &d["certificates"][0];
    assert_eq!(c0["source"], "custom");
    assert_eq!(c0["status"], "active");
    assert_eq!(c0["issuer"], "Test Issuer");
    assert_eq!(c0["issued"][0]["type"], "ecdsa");
    assert_eq!(c0["expires_at"], "2090-01-01T00:00:00Z");
    // The key is stored sealed, bound to its hostname.
    let rec = s
        .store
        .get_certificate("shop.example.com")
        .expect("get")
        .expect("exists");
    let stored = rec.custom.expect("custom");
    assert!(
        !String::from_utf8_lossy(&stored.key_sealed).contains("PRIVATE KEY"),
        "the key is not stored in the clear"
    );
    let opened = sealer
        .open(
            &CertificateRecord::key_context("shop.example.com", "custom"),
            &stored.key_sealed,
        )
        .expect("opens");
    assert_eq!(String::from_utf8_lossy(&opened).trim(), key.trim());
    // Summary flags; removing the custom certificate leaves the hostname.
    let l = c.get("/v1/apps/shop/certificates").await.json();
    assert_eq!(l["certificates"][0]["has_custom_certificate"], true);
    let r = c
        .delete("/v1/apps/shop/certificates/shop.example.com/custom")
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let d = c
        .get("/v1/apps/shop/certificates/shop.example.com")
        .await
        .json();
    assert_eq!(d["status"], "not_configured");
    // Wildcards may be imported (they match one label).
    let (wc, wk) = self_signed(&["*.example.net"], false);
    let r = c
        .post(
            "/v1/apps/shop/certificates/custom",
            &json!({"hostname": "*.example.net", "fullchain": wc, "private_key": wk}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Without a sealer, nothing is imported.
    let bare = server_sealed("certs-bare", ApiConfig::default(), None, None).await;
    let bc = Client::new(bare.addr, Some(ACME));
    create_app(&bc, "shop").await;
    let r = bc
        .post("/v1/apps/shop/certificates/custom", &import(&cert, &key))
        .await;
    assert_error(&r, 501);
    let _ = std::fs::remove_dir_all(&dir);
}
