//! A machine from a real registry: Debian's docker-registry on 127.0.0.1, the offline test
//! image pushed with skopeo, pulled by the agent on create.

use hangar_image::testing::{Registry, TempDir, busybox_image, write_oci_layout};
use hangar_testkit::TestCluster;
use serde_json::json;

use super::{http_get_ready, wait};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_runs_an_image_pulled_from_a_registry() {
    let registry =
        Registry::start().expect("docker-registry (apt-get install docker-registry skopeo)");
    let layout = TempDir::new("hangar-e2e-layout").expect("temp dir");
    let image = busybox_image().expect("busybox image (apt-get install busybox-static)");
    let digest = write_oci_layout(&image, layout.path(), "v1").expect("layout");
    registry
        .push_oci_layout(layout.path(), "v1", "hangar/web", "v1")
        .expect("push");

    let cluster = TestCluster::start_with_registries(vec![registry.host()])
        .await
        .expect("cluster");
    let c = cluster.client();
    assert_eq!(
        c.post(
            "/v1/apps",
            &json!({"app_name": "pulled", "org_slug": "personal"})
        )
        .await
        .status,
        201
    );
    let image_ref = format!("{}/hangar/web:v1", registry.host());
    let r = c
        .post(
            "/v1/apps/pulled/machines",
            &json!({"config": {"image": image_ref}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m = r.json();
    let id = m["id"].as_str().expect("id").to_string();
    let ip = m["private_ip"].as_str().expect("ip").to_string();
    wait(&c, "pulled", &id, "started", "").await;
    // The image's own CMD (httpd on 8080) runs.
    let page = http_get_ready(&ip, 8080).await;
    assert!(page.contains("200 OK"), "{page}");
    let got = c
        .get(&format!("/v1/apps/pulled/machines/{id}"))
        .await
        .json();
    assert_eq!(got["image_ref"]["registry"], registry.host());
    assert_eq!(got["image_ref"]["repository"], "hangar/web");
    assert_eq!(got["image_ref"]["tag"], "v1");
    assert_eq!(got["image_ref"]["digest"], digest.to_string());
    // An image that does not exist fails the launch with a clear event, not a hang.
    let r = c
        .post(
            "/v1/apps/pulled/machines",
            &json!({"config": {"image": format!("{}/hangar/missing:v1", registry.host())}}),
        )
        .await;
    let bad = r.json()["id"].as_str().expect("id").to_string();
    let mut failed = false;
    for _ in 0..100 {
        let ev = c
            .get(&format!("/v1/apps/pulled/machines/{bad}/events"))
            .await
            .json();
        if ev
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["status"] == "failed"))
        {
            failed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(failed, "a missing image fails the launch");
}
