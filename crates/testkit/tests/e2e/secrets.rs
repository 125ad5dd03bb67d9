//! App secrets: sealed at rest, never shown unless asked, injected into machines as env,
//! taken by a restart, scoped to the org.

use hangar_testkit::{Client, TEST_IMAGE, TestCluster};
use serde_json::json;

use super::wait;

async fn exec_echo(c: &Client, id: &str) -> String {
    let r = c
        .post(
            &format!("/v1/apps/sec-app/machines/{id}/exec"),
            &json!({"command": ["sh", "-c", "echo \"$DB_PASSWORD|$PLAIN\""]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["stdout"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_reach_machines_and_stay_secret() {
    let cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    let r = c
        .post(
            "/v1/apps",
            &json!({"app_name": "sec-app", "org_slug": "personal"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = c
        .post(
            "/v1/apps/sec-app/secrets",
            &json!({"values": {"DB_PASSWORD": "hunter2", "PLAIN": "over-env"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["version"], 1);
    assert!(!r.text.contains("hunter2"), "{}", r.text);
    // Listed without values; with show_secrets, with them.
    let r = c.get("/v1/apps/sec-app/secrets").await;
    assert!(
        !r.text.contains("hunter2") && r.text.contains("DB_PASSWORD"),
        "{}",
        r.text
    );
    let r = c.get("/v1/apps/sec-app/secrets?show_secrets=true").await;
    assert!(r.text.contains("hunter2"), "{}", r.text);
    // Sealed at rest: the value is not in the database file.
    let db = std::fs::read(cluster.path().join("state.db")).unwrap_or_default();
    let wal = std::fs::read(cluster.path().join("state.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(7).any(|w| w == b"hunter2"),
            "plaintext secret on disk"
        );
    }
    // A machine gets them as env (over the config's env).
    let r = c
        .post(
            "/v1/apps/sec-app/machines",
            &json!({"config": {"image": TEST_IMAGE, "env": {"PLAIN": "from-config"},
                "init": {"cmd": ["sleep", "100000"]}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.json()["id"].as_str().expect("id").to_string();
    wait(&c, "sec-app", &id, "started", "").await;
    assert_eq!(exec_echo(&c, &id).await, "hunter2|over-env\n");
    // A new value is taken at the next restart.
    let r = c
        .post(
            "/v1/apps/sec-app/secrets/DB_PASSWORD",
            &json!({"value": "correct-horse"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["version"], 2);
    let r = c.delete("/v1/apps/sec-app/secrets/PLAIN").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = c
        .post(
            &format!("/v1/apps/sec-app/machines/{id}/restart"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, "sec-app", &id, "started", "").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = exec_echo(&c, &id).await;
        if out == "correct-horse|from-config\n" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after restart: {out:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Bad names, missing ones, and other orgs.
    let r = c
        .post(
            "/v1/apps/sec-app/secrets",
            &json!({"values": {"1BAD": "x"}}),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(c.delete("/v1/apps/sec-app/secrets/NOPE").await.status, 404);
    let r = c.post("/v1/orgs", &json!({"slug": "sec-other"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = c
        .post("/v1/tokens", &json!({"org_slug": "sec-other"}))
        .await;
    let token = r.json()["token"].as_str().expect("token").to_string();
    let other = Client::new(cluster.api, Some(&token));
    assert_eq!(other.get("/v1/apps/sec-app/secrets").await.status, 404);
    let r = c
        .delete(&format!("/v1/apps/sec-app/machines/{id}?force=true"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}
