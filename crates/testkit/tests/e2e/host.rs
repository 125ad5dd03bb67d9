//! exec, ps and logs through the API, against real machines.

use std::time::{Duration, Instant};

use hangar_testkit::{ADMIN_TOKEN, Client, TEST_IMAGE, TestCluster};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::wait;

async fn setup(cluster: &TestCluster, app: &str, script: &str) -> (Client, String) {
    let c = cluster.client();
    super::app(&c, app).await;
    let r = c
        .post(
            &format!("/v1/apps/{app}/machines"),
            &json!({"config": {
                "image": TEST_IMAGE,
                "init": {"cmd": ["sh", "-c", script]},
                "env": {"GREETING": "hi-from-env"},
            }}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.json()["id"].as_str().expect("id").to_string();
    wait(&c, app, &id, "started", "").await;
    (c, id)
}

async fn logs(c: &Client, app: &str, id: &str, query: &str) -> Vec<Value> {
    let r = c
        .get(&format!("/v1/apps/{app}/machines/{id}/logs{query}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.content_type.as_deref(), Some("application/json"));
    r.json().as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_served_as_a_tail_and_a_live_stream() {
    let cluster = TestCluster::start().await.expect("cluster");
    let app = "logs-app";
    let (c, id) = setup(
        &cluster,
        app,
        "echo $$ > /tmp/app.pid; i=0; while [ $i -lt 150 ]; do echo out-$i; i=$((i+1)); done; \
         echo oops >&2; trap 'exit 0' TERM INT; while true; do sleep 1; done",
    )
    .await;
    // The tail: default 100 lines, the newest last, with stream, level, instance, region.
    let deadline = Instant::now() + Duration::from_secs(20);
    let entries = loop {
        let e = logs(&c, app, &id, "").await;
        if e.last().and_then(|e| e["message"].as_str()) == Some("oops") {
            break e;
        }
        assert!(Instant::now() < deadline, "no logs: {e:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(entries.len(), 100);
    assert_eq!(entries[0]["message"], "out-51");
    let last = &entries[99];
    assert_eq!(last["level"], "error");
    assert_eq!(last["meta"]["stream"], "stderr");
    assert_eq!(last["instance"], id.as_str());
    assert_eq!(last["region"], "local");
    assert_eq!(last["meta"]["event"]["provider"], "app");
    assert!(
        last["timestamp"]
            .as_str()
            .is_some_and(|t| t.starts_with("20") && t.ends_with('Z')),
        "{last}"
    );
    assert_eq!(logs(&c, app, &id, "?tail=3").await.len(), 3);
    assert_eq!(logs(&c, app, &id, "?tail=0").await.len(), 0);
    let r = c
        .get(&format!("/v1/apps/{app}/machines/{id}/logs?tail=x"))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);

    // Follow: the tail, then what the machine writes next (here: exec writing to the app's
    // stdout), until the machine is destroyed.
    let mut s = tokio::net::TcpStream::connect(cluster.api)
        .await
        .expect("connect");
    s.write_all(
        format!(
            "GET /v1/apps/{app}/machines/{id}/logs?tail=1&follow=true HTTP/1.1\r\nhost: t\r\n\
             authorization: Bearer {ADMIN_TOKEN}\r\nconnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut seen = Vec::new();
    read_until(&mut s, &mut seen, "oops").await;
    let head = String::from_utf8_lossy(&seen).to_string();
    assert!(head.contains("application/x-ndjson"), "{head}");
    let r = c
        .post(
            &format!("/v1/apps/{app}/machines/{id}/exec"),
            &json!({"command": ["sh", "-c", "echo live-line > /proc/$(cat /tmp/app.pid)/fd/1"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    read_until(&mut s, &mut seen, "live-line").await;
    let r = c
        .delete(&format!("/v1/apps/{app}/machines/{id}?force=true"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // The stream ends with the machine.
    let ended = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut seen)).await;
    assert!(ended.is_ok(), "the follow stream did not end");
}

async fn read_until(s: &mut tokio::net::TcpStream, seen: &mut Vec<u8>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(seen).contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{needle} not streamed: {}", String::from_utf8_lossy(seen)))
            .expect("read");
        assert!(n > 0, "stream closed before {needle}");
        seen.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_ps_reach_into_a_running_machine() {
    let cluster = TestCluster::start().await.expect("cluster");
    let app = "exec-app";
    let (c, id) = setup(
        &cluster,
        app,
        "trap 'exit 0' TERM INT; nc -l -p 7070 & while true; do sleep 1; done",
    )
    .await;
    let path = format!("/v1/apps/{app}/machines/{id}");

    let r = c
        .post(
            &format!("{path}/exec"),
            &json!({"command": ["sh", "-c", "echo $GREETING; hostname; echo e >&2; exit 3"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let out = r.json();
    assert_eq!(out["exit_code"], 3);
    assert_eq!(out["stdout"], format!("hi-from-env\n{id}\n"));
    assert_eq!(out["stderr"], "e\n");
    // The legacy single-string form, and stdin.
    let r = c
        .post(
            &format!("{path}/exec"),
            &json!({"cmd": "sh -c 'cat; echo \" done\"'", "stdin": "fed"}),
        )
        .await;
    assert_eq!(r.json()["stdout"], "fed done\n", "{}", r.text);
    // Timeouts answer 408; bad requests 400.
    let r = c
        .post(
            &format!("{path}/exec"),
            &json!({"command": ["sleep", "30"], "timeout": 1}),
        )
        .await;
    assert_eq!(r.status, 408, "{}", r.text);
    for bad in [
        json!({}),
        json!({"command": [""]}),
        json!({"cmd": "'unclosed"}),
        json!({"command": ["ls"], "timeout": -1}),
    ] {
        let r = c.post(&format!("{path}/exec"), &bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert!(r.json()["error"].is_string());
    }

    // ps: init, the shell, nc with its listening socket; sorted as asked.
    let deadline = Instant::now() + Duration::from_secs(20);
    let procs = loop {
        let r = c.get(&format!("{path}/ps?sort_by=pid&order=desc")).await;
        assert_eq!(r.status, 200, "{}", r.text);
        let procs = r.json().as_array().cloned().unwrap_or_default();
        if procs.iter().any(|p| {
            p["listen_sockets"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        }) {
            break procs;
        }
        assert!(Instant::now() < deadline, "nc never listened: {procs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let pids: Vec<i64> = procs.iter().filter_map(|p| p["pid"].as_i64()).collect();
    assert!(pids.windows(2).all(|w| w[0] > w[1]), "{pids:?}");
    let nc = procs
        .iter()
        .find(|p| p["command"].as_str().is_some_and(|c| c.starts_with("nc ")))
        .expect("nc");
    assert_eq!(nc["listen_sockets"][0]["proto"], "tcp");
    assert!(
        nc["listen_sockets"][0]["address"]
            .as_str()
            .is_some_and(|a| a.ends_with(":7070"))
    );
    assert!(procs.iter().any(|p| {
        p["command"]
            .as_str()
            .is_some_and(|c| c.starts_with("/.hangar/init"))
    }));
    for key in ["stime", "rtime", "cpu", "rss", "directory"] {
        assert!(!nc[key].is_null(), "{key} missing: {nc}");
    }
    let r = c.get(&format!("{path}/ps?sort_by=bogus")).await;
    assert_eq!(r.status, 400);

    // A stopped machine: exec and ps are 412.
    let r = c.post(&format!("{path}/stop"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, app, &id, "stopped", "").await;
    let r = c
        .post(&format!("{path}/exec"), &json!({"command": ["true"]}))
        .await;
    assert_eq!(r.status, 412, "{}", r.text);
    let r = c.get(&format!("{path}/ps")).await;
    assert_eq!(r.status, 412, "{}", r.text);
    // Logs of a stopped machine are still there.
    assert_eq!(logs(&c, app, &id, "").await.len(), 0);

    // Another org sees nothing.
    let r = c.post("/v1/orgs", &json!({"slug": "other-org"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = c
        .post("/v1/tokens", &json!({"org_slug": "other-org"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let token = r.json()["token"].as_str().expect("token").to_string();
    let other = Client::new(cluster.api, Some(&token));
    for p in ["logs", "ps"] {
        assert_eq!(other.get(&format!("{path}/{p}")).await.status, 404);
    }
    let r = other
        .post(&format!("{path}/exec"), &json!({"command": ["true"]}))
        .await;
    assert_eq!(r.status, 404);
    let r = c.delete(&format!("{path}?force=true")).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uploaded_image_archive_runs_as_a_machine() {
    use hangar_image::testing::{busybox_image, write_docker_save};
    let cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    let app = "upload-app";
    super::app(&c, app).await;
    let image = busybox_image().expect("image");
    let archive = cluster.path().join("upload.tar");
    write_docker_save(&[(&image, &["uploaded/busybox:v1"])], &archive).expect("archive");
    let bytes = std::fs::read(&archive).expect("read");
    let r = c
        .post_raw(&format!("/v1/apps/{app}/images?tag=v1"), &bytes)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let out = r.json();
    assert_eq!(out["ref"], format!("registry.hangar.internal/{app}:v1"));
    assert!(
        out["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
    );
    // The client library streams the same archive, reporting its progress up to the whole.
    let client = hangar_client::Client::new(
        &format!("http://{}", cluster.api),
        hangar_testkit::ADMIN_TOKEN,
    )
    .expect("client");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let via_client = client
        .upload_image_with_progress(app, "v2", &archive, move |sent, total| {
            s.lock().expect("lock").push((sent, total));
        })
        .await
        .expect("upload through the client");
    assert_eq!(via_client, format!("registry.hangar.internal/{app}:v2"));
    let seen = seen.lock().expect("lock").clone();
    let total = bytes.len() as u64;
    assert!(!seen.is_empty());
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "{seen:?}");
    assert_eq!(seen.last(), Some(&(total, total)));
    // The uploaded image runs.
    let r = c
        .post(
            &format!("/v1/apps/{app}/machines"),
            &json!({"config": {
                "image": out["ref"],
                "init": {"cmd": ["sh", "-c", "echo from-upload; trap 'exit 0' TERM INT; while true; do sleep 1; done"]},
            }}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m = r.json();
    let id = m["id"].as_str().expect("id").to_string();
    wait(&c, app, &id, "started", "").await;
    let m = c.get(&format!("/v1/apps/{app}/machines/{id}")).await.json();
    assert!(
        m["image_ref"]["digest"].as_str() == out["digest"].as_str(),
        "{m}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !logs(&c, app, &id, "")
        .await
        .iter()
        .any(|e| e["message"] == "from-upload")
    {
        assert!(
            Instant::now() < deadline,
            "no output from the uploaded image"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Junk and bad tags are 400s; the server stays up.
    let r = c
        .post_raw(
            &format!("/v1/apps/{app}/images?tag=v2"),
            b"not a tar archive at all",
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = c
        .post_raw(&format!("/v1/apps/{app}/images?tag=../x"), &bytes)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = c.post_raw("/v1/apps/no-such-app/images", &bytes).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = c
        .delete(&format!("/v1/apps/{app}/machines/{id}?force=true"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}
