//! `hangar logs` against a real host: the app's stream in the reference's line format
//! (`<time> <provider>[<machine>] <region> [<level>] <message>`), JSON lines, filters.

use std::time::{Duration, Instant};

use hangar_testkit::{TEST_IMAGE, TestCluster};
use serde_json::{Value, json};

use super::live::Hangar;
use super::{stderr, stdout};

/// `2026-01-02T03:04:05.678 ` then the rest of a line: the reference's millisecond time.
fn split_time(line: &str) -> (&str, &str) {
    let (t, rest) = line.split_once(' ').expect("a time, then the line");
    let b = t.as_bytes();
    assert!(
        t.len() == 23
            && b[4] == b'-'
            && b[10] == b'T'
            && b[19] == b'.'
            && t.bytes()
                .enumerate()
                .all(|(i, c)| matches!(i, 4 | 7 | 10 | 13 | 16 | 19) || c.is_ascii_digit()),
        "not a millisecond time: {line:?}"
    );
    (t, rest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_prints_the_apps_stream_in_the_reference_format() {
    let cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    let r = c
        .post(
            "/v1/apps",
            &json!({"app_name": "cli-logs", "org_slug": "personal"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = c
        .post(
            "/v1/apps/cli-logs/machines",
            &json!({"region": "ams", "config": {
                "image": TEST_IMAGE,
                "init": {"cmd": ["sh", "-c", "echo hello-cli; echo oops >&2; sleep 3600"]},
            }}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.json()["id"].as_str().expect("id").to_string();
    let h = Hangar::new(cluster.api, "logs");
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let out = h.ok(&["logs", "-a", "cli-logs", "--no-tail"]).await;
        if out.contains("oops") {
            break out;
        }
        assert!(Instant::now() < deadline, "no output came: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let lines: Vec<&str> = out.lines().collect();
    let mut times = Vec::new();
    let mut rest = Vec::new();
    for l in &lines {
        let (t, r) = split_time(l);
        times.push(t);
        rest.push(r);
    }
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "in time order: {out}"
    );
    for want in [
        format!("runner[{id}] ams [info] Machine created"),
        format!("runner[{id}] ams [info] Starting machine"),
        format!("app[{id}] ams [info] hello-cli"),
        format!("app[{id}] ams [error] oops"),
    ] {
        assert!(rest.contains(&want.as_str()), "no {want:?} in\n{out}");
    }
    // JSON lines: the API's entries.
    let json = h
        .ok(&["logs", "-a", "cli-logs", "--no-tail", "--json"])
        .await;
    let entries: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(entries.iter().any(|e| e["message"] == "hello-cli"
        && e["meta"]["event"]["provider"] == "app"
        && e["instance"] == id.as_str()));
    // Filters.
    let fra = h
        .ok(&["logs", "-a", "cli-logs", "--no-tail", "-r", "fra"])
        .await;
    assert_eq!(fra, "", "nothing runs in fra");
    let mine = h
        .ok(&["logs", "-a", "cli-logs", "--no-tail", "-m", &id])
        .await;
    assert!(mine.contains("hello-cli"), "{mine}");
    let bad = h
        .run(&["logs", "-a", "cli-logs", "--no-tail", "-m", "nope"])
        .await;
    assert_ne!(bad.status.code(), Some(0));
    assert!(stderr(&bad).contains("instance"), "{}", stderr(&bad));
    assert!(stdout(&bad).is_empty());
}
