//! `min_secrets_version` (§2.10): machine create and update are refused (412) while the app's
//! secrets are older than the version asked for, and accepted once they are not.

use std::sync::Arc;

use hangar_api::ApiConfig;
use hangar_store::Sealer;
use serde_json::json;

use hangar_domain::Action;

use super::{ACME, TempDir, advance, assert_error, create_app, server_sealed};
use crate::client::Client;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_wait_for_the_secrets_version_they_ask_for() {
    let dir = std::env::temp_dir().join(format!("hangar-api-secver-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _cleanup = TempDir(dir.clone());
    let sealer = Arc::new(Sealer::load_or_create(&dir.join("seal.key")).expect("sealer"));
    let s = server_sealed("secver", ApiConfig::default(), None, Some(sealer)).await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "sv").await;
    let body = |min: u64| json!({"config": {"image": "img:1"}, "skip_launch": true, "min_secrets_version": min});
    // No secrets yet (version 0): asking for 1 is refused, with what to do.
    let r = c.post("/v1/apps/sv/machines", &body(1)).await;
    assert_error(&r, 412);
    assert!(r.text.contains("min_secrets_version 1"), "{}", r.text);
    assert!(r.text.contains("version 0"), "{}", r.text);
    // 0 means "any".
    let r = c.post("/v1/apps/sv/machines", &body(0)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = c
        .post("/v1/apps/sv/secrets", &json!({"values": {"TOKEN": "a"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["version"], 1);
    let r = c.post("/v1/apps/sv/machines", &body(1)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.json()["id"].as_str().expect("id").to_string();
    assert_error(&c.post("/v1/apps/sv/machines", &body(2)).await, 412);
    // Updates too; a refused update changes nothing.
    advance(
        &s.store,
        "sv",
        &id,
        &[Action::Created { skip_launch: true }],
    );
    let path = format!("/v1/apps/sv/machines/{id}");
    let before = c.get(&path).await.json()["instance_id"].clone();
    assert_error(&c.post(&path, &body(2)).await, 412);
    assert_eq!(c.get(&path).await.json()["instance_id"], before);
    let r = c.post(&path, &body(1)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_ne!(r.json()["instance_id"], before);
}
