//! Restart policies, OOM, stop signals and timeouts, suspend/resume, re-adoption.

use std::time::{Duration, Instant};

use hangar_testkit::{Client, TEST_IMAGE, TestCluster};
use serde_json::{Value, json};

use super::{app, http_get, http_get_ready, wait};

async fn machine(c: &Client, app: &str, config: Value) -> (String, String) {
    let r = c
        .post(
            &format!("/v1/apps/{app}/machines"),
            &json!({ "config": config }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m = r.json();
    (
        m["id"].as_str().expect("id").to_string(),
        m["private_ip"].as_str().expect("ip").to_string(),
    )
}

fn sh(script: &str) -> Value {
    json!({"cmd": ["sh", "-c", script]})
}

async fn events(c: &Client, app: &str, id: &str) -> Vec<Value> {
    c.get(&format!("/v1/apps/{app}/machines/{id}/events"))
        .await
        .json()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_loop_stops_after_max_retries() {
    let cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "crashy").await;
    let (id, _) = machine(
        &c,
        "crashy",
        json!({
            "image": TEST_IMAGE, "init": sh("echo run; exit 3"),
            "restart": {"policy": "on-failure", "max_retries": 2},
        }),
    )
    .await;
    eventually("the crash loop to end stopped", async || {
        let m = c
            .get(&format!("/v1/apps/crashy/machines/{id}"))
            .await
            .json();
        m["state"] == "stopped"
    })
    .await;
    let log = cluster.machine_log(&id);
    assert_eq!(
        log.matches("run").count(),
        3,
        "first run + 2 restarts: {log}"
    );
    let ev = events(&c, "crashy", &id).await;
    let exits: Vec<&Value> = ev
        .iter()
        .filter(|e| e["type"] == "exit" && e["request"]["exit_event"]["exit_code"] == 3)
        .collect();
    assert_eq!(exits.len(), 3, "{ev:?}");
    assert_eq!(exits[0]["request"]["exit_event"]["restarting"], false);
    assert_eq!(exits[1]["request"]["exit_event"]["restarting"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_restarts_even_clean_exits() {
    let cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "looper").await;
    let (id, _) = machine(
        &c,
        "looper",
        json!({
            "image": TEST_IMAGE, "init": sh("echo run; sleep 0.2; exit 0"),
            "restart": {"policy": "always"},
        }),
    )
    .await;
    eventually("three runs", async || {
        cluster.machine_log(&id).matches("run").count() >= 3
    })
    .await;
    let r = c
        .delete(&format!("/v1/apps/looper/machines/{id}?force=true"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, "looper", &id, "destroyed", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_is_reported() {
    let cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "hungry").await;
    // Doubles a shell string until the 32 MB limit kills it.
    let (id, _) = machine(
        &c,
        "hungry",
        json!({
            "image": TEST_IMAGE, "init": sh("x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"),
            "guest": {"cpus": 1, "memory_mb": 32},
            "restart": {"policy": "no"},
        }),
    )
    .await;
    eventually("the OOM kill", async || {
        events(&c, "hungry", &id)
            .await
            .iter()
            .any(|e| e["type"] == "exit" && e["request"]["exit_event"]["oom_killed"] == true)
    })
    .await;
    wait(&c, "hungry", &id, "stopped", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_signal_and_kill_timeout_are_honoured() {
    let cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "stubborn").await;
    // Traps SIGTERM and keeps going: only SIGKILL after the timeout ends it.
    let (id, _) = machine(&c, "stubborn", json!({
        "image": TEST_IMAGE, "init": sh("trap 'echo got-TERM' TERM; echo up; while true; do sleep 0.1; done"),
        "stop_config": {"signal": "SIGTERM", "timeout": "1s"},
    }))
    .await;
    wait(&c, "stubborn", &id, "started", "").await;
    eventually("the app to be up", async || {
        cluster.machine_log(&id).contains("up")
    })
    .await;
    let t0 = Instant::now();
    assert_eq!(
        c.post(&format!("/v1/apps/stubborn/machines/{id}/stop"), &json!({}))
            .await
            .status,
        200
    );
    wait(&c, "stubborn", &id, "stopped", "").await;
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "stopped before the timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(
        cluster.machine_log(&id).contains("got-TERM"),
        "{}",
        cluster.machine_log(&id)
    );
    let ev = events(&c, "stubborn", &id).await;
    let exit = ev.iter().find(|e| e["type"] == "exit").expect("exit event");
    assert_eq!(exit["request"]["exit_event"]["signal"], 9, "{exit}");
    assert_eq!(exit["request"]["exit_event"]["requested_stop"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_freezes_and_start_resumes_in_place() {
    let cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "sleepy").await;
    let (id, ip) = machine(
        &c,
        "sleepy",
        json!({"image": TEST_IMAGE, "init": sh("httpd -f -p 8080 -h /www")}),
    )
    .await;
    wait(&c, "sleepy", &id, "started", "").await;
    http_get_ready(&ip, 8080).await;
    assert_eq!(
        c.post(
            &format!("/v1/apps/sleepy/machines/{id}/suspend"),
            &json!({})
        )
        .await
        .status,
        200
    );
    wait(&c, "sleepy", &id, "suspended", "").await;
    assert!(
        http_get(&ip, 8080).await.is_err(),
        "a frozen machine does not answer"
    );
    let r = c
        .post(&format!("/v1/apps/sleepy/machines/{id}/start"), &json!({}))
        .await;
    assert_eq!(r.json()["previous_state"], "suspended");
    wait(&c, "sleepy", &id, "started", "").await;
    let page = http_get(&ip, 8080).await.expect("resumed in place");
    assert!(page.contains("200 OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_readopts_running_machines() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "durable").await;
    let (id, ip) = machine(
        &c,
        "durable",
        json!({
            "image": TEST_IMAGE, "init": sh("echo boot; httpd -f -p 8080 -h /www"),
            "restart": {"policy": "always"},
        }),
    )
    .await;
    wait(&c, "durable", &id, "started", "").await;
    http_get_ready(&ip, 8080).await;
    // The agent dies; the machine keeps serving.
    cluster.kill_agent().await;
    http_get(&ip, 8080)
        .await
        .expect("still serving without an agent");
    cluster.start_agent().expect("agent");
    tokio::time::sleep(Duration::from_millis(300)).await;
    http_get(&ip, 8080)
        .await
        .expect("still serving after re-adoption");
    assert_eq!(
        cluster.machine_log(&id).matches("boot").count(),
        1,
        "not restarted by the new agent"
    );
    // While no agent watches, the machine dies: the next agent applies its restart policy.
    cluster.kill_agent().await;
    let info = hangar_runtime::Driver::list(cluster.driver.as_ref()).expect("list");
    let pid = info
        .iter()
        .find(|i| i.id.as_str() == id)
        .and_then(|i| i.pid)
        .expect("pid");
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    eventually("the container to be gone", async || {
        http_get(&ip, 8080).await.is_err()
    })
    .await;
    cluster.start_agent().expect("agent");
    eventually("the restart", async || {
        cluster.machine_log(&id).matches("boot").count() == 2
    })
    .await;
    http_get_ready(&ip, 8080).await;
    // And the new agent still controls it.
    assert_eq!(
        c.post(&format!("/v1/apps/durable/machines/{id}/stop"), &json!({}))
            .await
            .status,
        200
    );
    wait(&c, "durable", &id, "stopped", "").await;
}
