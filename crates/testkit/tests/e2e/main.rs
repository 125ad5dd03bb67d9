//! End to end, as root, with real containers: the Machines API drives machines built from an
//! OCI image made offline.

mod apps;
mod deploy;
mod egress;
mod flycast;
mod host;
mod logs;
mod metrics;
mod network;
mod pg_tls;
mod proxy;
mod registry;
mod secrets;
mod supervision;
mod tls;
mod udp;
mod volumes;
mod wireguard;

use std::time::Duration;

use hangar_runtime::Driver as _;
use hangar_testkit::{Client, TEST_IMAGE, TestCluster};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Creates app `name` in the personal org.
pub(crate) async fn app(c: &Client, name: &str) {
    let r = c
        .post(
            "/v1/apps",
            &json!({"app_name": name, "org_slug": "personal"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

pub(crate) async fn wait(c: &Client, app: &str, id: &str, state: &str, extra: &str) {
    let r = c
        .get(&format!(
            "/v1/apps/{app}/machines/{id}/wait?state={state}&timeout=30{extra}"
        ))
        .await;
    assert_eq!(r.status, 200, "waiting for {state}: {}", r.text);
}

/// Machine `id`'s state as the API shows it now.
pub(crate) async fn state(c: &Client, app: &str, id: &str) -> String {
    c.get(&format!("/v1/apps/{app}/machines/{id}")).await.json()["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Polls (every `every`) until machine `id` is in `want`, failing after `within`.
pub(crate) async fn until_state(
    c: &Client,
    app: &str,
    id: &str,
    want: &str,
    within: Duration,
    every: Duration,
) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let now = state(c, app, id).await;
        if now == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "machine {id} is {now}, not {want}, after {within:?}"
        );
        tokio::time::sleep(every).await;
    }
}

pub(crate) async fn http_get(addr: &str, port: u16) -> Result<String, String> {
    let target = format!("[{addr}]:{port}");
    let mut s = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&target),
    )
    .await
    .map_err(|_| format!("connect {target}: timeout"))?
    .map_err(|e| format!("connect {target}: {e}"))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: m\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "read timeout".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Retries a GET until the app listens (its own start time), bounded.
pub(crate) async fn http_get_ready(addr: &str, port: u16) -> String {
    match try_http_get_ready(addr, port).await {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

pub(crate) async fn try_http_get_ready(addr: &str, port: u16) -> Result<String, String> {
    let mut last = String::new();
    for _ in 0..100 {
        match http_get(addr, port).await {
            Ok(body) => return Ok(body),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("machine never answered on {addr}:{port}: {last}"))
}

/// Like [`http_get_ready`], with the machine's log and events in the failure message.
async fn serving(cluster: &TestCluster, c: &Client, app: &str, id: &str, ip: &str) -> String {
    match try_http_get_ready(ip, 8080).await {
        Ok(b) => b,
        Err(e) => {
            let events = c
                .get(&format!("/v1/apps/{app}/machines/{id}/events"))
                .await
                .text;
            panic!("{e}\nlog: {}\nevents: {events}", cluster.machine_log(id))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_lives_its_whole_life() {
    let cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    let r = c
        .post(
            "/v1/apps",
            &json!({"app_name": "e2e-web", "org_slug": "personal"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    // httpd daemonises; the shell stays in the foreground, traps SIGINT, reports it and exits.
    let script = "echo booted; trap 'echo got-SIGINT; exit 0' INT; httpd -p 8080 -h /www; while true; do sleep 0.1; done";
    let body = json!({"config": {
        "image": TEST_IMAGE,
        "init": {"cmd": ["sh", "-c", script]},
        "env": {"GREETING": "hi"},
        "guest": {"cpus": 1, "memory_mb": 128},
    }});
    let r = c.post("/v1/apps/e2e-web/machines", &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m: Value = r.json();
    let id = m["id"].as_str().expect("id").to_string();
    let ip = m["private_ip"].as_str().expect("ip").to_string();
    wait(&c, "e2e-web", &id, "started", "").await;
    let page = serving(&cluster, &c, "e2e-web", &id, &ip).await;
    assert!(
        cluster.machine_log(&id).contains("booted"),
        "log: {:?}",
        cluster.machine_log(&id)
    );
    assert!(page.contains("200 OK"), "{page}");
    let got = c
        .get(&format!("/v1/apps/e2e-web/machines/{id}"))
        .await
        .json();
    assert_eq!(got["state"], "started");
    assert!(
        got["image_ref"]["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{got}"
    );

    if std::env::var_os("E2E_DEBUG").is_some() {
        for ci in cluster.driver.list().expect("list") {
            let pid = ci.pid.unwrap_or(0);
            let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let sig: Vec<&str> = st
                .lines()
                .filter(|l| l.starts_with("Sig") || l.starts_with("Name") || l.starts_with("NSpid"))
                .collect();
            eprintln!("init {pid}: {sig:?}");
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            for c in children.split_whitespace() {
                let st = std::fs::read_to_string(format!("/proc/{c}/status")).unwrap_or_default();
                let sig: Vec<&str> = st
                    .lines()
                    .filter(|l| l.starts_with("Sig") || l.starts_with("Name"))
                    .collect();
                eprintln!("child {c}: {sig:?}");
            }
        }
    }
    // Stop: the app sees SIGINT (the default kill signal).
    let r = c
        .post(&format!("/v1/apps/e2e-web/machines/{id}/stop"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, "e2e-web", &id, "stopped", "").await;
    let events = c
        .get(&format!("/v1/apps/e2e-web/machines/{id}/events"))
        .await
        .text;
    assert!(
        cluster.machine_log(&id).contains("got-SIGINT"),
        "log: {}\nevents: {events}",
        cluster.machine_log(&id)
    );
    assert!(
        http_get(&ip, 8080).await.is_err(),
        "a stopped machine does not answer"
    );

    // Start again.
    let r = c
        .post(&format!("/v1/apps/e2e-web/machines/{id}/start"), &json!({}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["previous_state"], "stopped");
    wait(&c, "e2e-web", &id, "started", "").await;
    serving(&cluster, &c, "e2e-web", &id, &ip).await;

    // Update: a new version with a new instance id, running the new config.
    let before = got["instance_id"].as_str().expect("instance").to_string();
    let mut body2 = body.clone();
    body2["config"]["env"]["GREETING"] = json!("hello again");
    let r = c
        .post(&format!("/v1/apps/e2e-web/machines/{id}"), &body2)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let after = r.json()["instance_id"]
        .as_str()
        .expect("instance")
        .to_string();
    assert_ne!(before, after);
    wait(
        &c,
        "e2e-web",
        &id,
        "started",
        &format!("&instance_id={after}"),
    )
    .await;
    serving(&cluster, &c, "e2e-web", &id, &ip).await;

    // Destroy (forced, it runs): nothing of it stays on the host.
    let r = c
        .delete(&format!("/v1/apps/e2e-web/machines/{id}?force=true"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, "e2e-web", &id, "destroyed", "").await;
    assert!(!cluster.machine_dir(&id).exists(), "machine dir removed");
    assert!(
        !std::path::Path::new(&format!("/run/netns/hgr-{id}")).exists(),
        "netns removed"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(!mounts.contains(&id), "no mount of the machine left");
    assert!(
        cluster.driver.list().expect("list").is_empty(),
        "no container left"
    );
}
