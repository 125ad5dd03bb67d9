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
