//! The app-wide log stream (§6.2): machines' output and the platform's `runner` and `proxy`
//! lines in one stream, merged by time; filters; the reference's polling endpoint and its
//! `next_token`; following, with machines that start later.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use hangar_client::LogFilter;
use hangar_proxy::ProxyConfig;
use hangar_testkit::{Client, TEST_IMAGE, TestCluster};
use serde_json::{Value, json};

use super::app;
use super::proxy::{get, listening};
use super::wait;

async fn eventually<T, F: AsyncFnMut() -> Option<T>>(what: &str, mut f: F) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A machine in `region` running `script`, not waited for.
async fn create(c: &Client, app: &str, region: &str, config: Value) -> String {
    let r = c
        .post(
            &format!("/v1/apps/{app}/machines"),
            &json!({"region": region, "config": config}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()["id"].as_str().expect("id").to_string()
}

fn sh(script: &str) -> Value {
    json!({"image": TEST_IMAGE, "init": {"cmd": ["sh", "-c", script]}})
}

/// Prints three lines and one to stderr, then a burst of 25 lines whenever /tmp/burst appears.
fn chatty(name: &str) -> Value {
    sh(&format!(
        "for i in 1 2 3; do echo {name}-$i; done; echo {name}-err >&2; \
         while true; do if [ -e /tmp/burst ]; then rm /tmp/burst; \
         for i in $(seq 1 25); do echo {name}-burst-$i; done; fi; sleep 0.1; done"
    ))
}

/// `GET /v1/apps/{app}/logs?tail=1000{extra}`.
async fn stream(c: &Client, app: &str, extra: &str) -> Vec<Value> {
    let r = c
        .get(&format!("/v1/apps/{app}/logs?tail=1000{extra}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json().as_array().cloned().expect("an array")
}

fn messages(entries: &[Value]) -> Vec<&str> {
    entries
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default())
        .collect()
}

fn provider(e: &Value) -> &str {
    e["meta"]["event"]["provider"].as_str().unwrap_or_default()
}

fn position(entries: &[Value], instance: &str, message: &str) -> usize {
    entries
        .iter()
        .position(|e| e["instance"] == instance && e["message"] == message)
        .unwrap_or_else(|| panic!("no {message:?} of {instance} in {:#?}", messages(entries)))
}

fn sorted_by_time(entries: &[Value]) {
    let times: Vec<&str> = entries
        .iter()
        .map(|e| e["timestamp"].as_str().expect("timestamp"))
        .collect();
    // RFC 3339 in UTC with nanoseconds: text order is time order.
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "not in time order: {times:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apps_stream_holds_every_machine_and_the_runner_in_time_order() {
    let cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "logs-merge").await;
    let one = create(&c, "logs-merge", "ams", chatty("one")).await;
    let two = create(&c, "logs-merge", "fra", chatty("two")).await;
    wait(&c, "logs-merge", &one, "started", "").await;
    wait(&c, "logs-merge", &two, "started", "").await;
    // The runner's "started in" line is written once the start is recorded, which can come
    // after the machine's first output: wait for both machines' too.
    let all = eventually("both machines' output and start lines", async || {
        let all = stream(&c, "logs-merge", "").await;
        let m = messages(&all);
        let started = m
            .iter()
            .filter(|l| l.starts_with("machine started in"))
            .count();
        (m.contains(&"one-3") && m.contains(&"two-3") && m.contains(&"two-err") && started >= 2)
            .then_some(all)
    })
    .await;
    sorted_by_time(&all);
    let line = &all[position(&all, &two, "two-err")];
    assert_eq!(provider(line), "app");
    assert_eq!(line["level"], "error");
    assert_eq!(line["region"], "fra");
    assert_eq!(line["meta"]["stream"], "stderr");
    assert_eq!(line["meta"]["instance"], two.as_str());
    // The runner's account of each machine, before the machine's own output.
    for (id, first) in [(&one, "one-1"), (&two, "two-1")] {
        let created = position(&all, id, "Machine created");
        let starting = position(&all, id, "Starting machine");
        let output = position(&all, id, first);
        assert!(created < starting && starting < output, "{all:#?}");
        assert_eq!(provider(&all[starting]), "runner");
        assert!(
            all.iter().any(|e| e["instance"] == id.as_str()
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("machine started in"))),
            "{:#?}",
            messages(&all)
        );
    }

    // Filters: one machine, one region.
    let only_one = stream(&c, "logs-merge", &format!("&instance={one}")).await;
    assert!(only_one.iter().all(|e| e["instance"] == one.as_str()));
    assert!(messages(&only_one).contains(&"one-3"));
    let fra = stream(&c, "logs-merge", "&region=fra").await;
    assert!(fra.iter().all(|e| e["region"] == "fra"));
    assert!(messages(&fra).contains(&"two-3") && !messages(&fra).contains(&"one-3"));
    for bad in [
        "&instance=nope",
        "&region=NOT%20ONE",
        "&tail=x",
        "&follow=maybe",
    ] {
        let r = c.get(&format!("/v1/apps/logs-merge/logs?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
    }
    let r = c.get("/v1/apps/logs-nope/logs").await;
    assert_eq!(r.status, 404, "{}", r.text);

    // The reference's polling endpoint: every line once, page after page.
    let poll = async |token: &str, extra: &str| -> (Vec<Value>, String) {
        let r = c
            .get(&format!(
                "/api/v1/apps/logs-merge/logs?next_token={token}{extra}"
            ))
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let v = r.json();
        let items = v["data"].as_array().cloned().expect("data");
        for i in &items {
            assert_eq!(i["type"], "log");
        }
        (
            items,
            v["meta"]["next_token"].as_str().expect("token").into(),
        )
    };
    // The first poll gives the newest lines (the last second is left for later).
    let (first, token) = eventually("a first page", async || {
        let (items, token) = poll("", "").await;
        items
            .iter()
            .any(|i| i["attributes"]["message"] == "two-3")
            .then_some((items, token))
    })
    .await;
    assert!(!token.is_empty());
    let ids: Vec<&str> = first.iter().filter_map(|i| i["id"].as_str()).collect();
    assert_eq!(ids.len(), ids.iter().collect::<HashSet<_>>().len());
    let r = c
        .post(
            &format!("/v1/apps/logs-merge/machines/{two}/exec"),
            &json!({"command": ["touch", "/tmp/burst"]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut token = token;
    let mut seen: Vec<String> = Vec::new();
    let mut ids: HashSet<String> = first
        .iter()
        .filter_map(|i| i["id"].as_str().map(str::to_string))
        .collect();
    eventually("every burst line through pages of 7", async || {
        let (items, next) = poll(&token, "&limit=7").await;
        assert!(items.len() <= 7);
        if items.is_empty() {
            assert_eq!(next, token, "an empty page keeps the token");
        }
        for i in &items {
            let id = i["id"].as_str().expect("id").to_string();
            assert!(ids.insert(id), "a line came twice: {i}");
            let m = i["attributes"]["message"].as_str().unwrap_or_default();
            if m.starts_with("two-burst-") {
                seen.push(m.to_string());
            }
        }
        token = next;
        (seen.len() >= 25).then_some(())
    })
    .await;
    let want: Vec<String> = (1..=25).map(|i| format!("two-burst-{i}")).collect();
    assert_eq!(seen, want);
    let bad = c
        .get("/api/v1/apps/logs-merge/logs?next_token=garbage")
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.text.contains("next_token"), "{}", bad.text);

    // Stopping, and machines that exit on their own.
    let r = c
        .post(
            &format!("/v1/apps/logs-merge/machines/{one}/stop"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, "logs-merge", &one, "stopped", "").await;
    let mut crashy = sh("echo boom; exit 1");
    crashy["restart"] = json!({"policy": "on-failure", "max_retries": 1});
    let crash = create(&c, "logs-merge", "ams", crashy).await;
    let mut once = sh("echo once; exit 1");
    once["restart"] = json!({"policy": "no"});
    let no = create(&c, "logs-merge", "ams", once).await;
    let all = eventually("the lifecycle lines", async || {
        let all = stream(&c, "logs-merge", "").await;
        let m = messages(&all);
        [
            "Machine stopped",
            "machine reached its max restart count of 1, not restarting",
            "machine restart policy set to 'no', not restarting",
        ]
        .iter()
        .all(|w| m.contains(w))
        .then_some(all)
    })
    .await;
    sorted_by_time(&all);
    let stopping = position(&all, &one, "Stopping machine");
    assert!(stopping < position(&all, &one, "Machine stopped"));
    let restarted = position(
        &all,
        &crash,
        "machine exited with exit code 1, restarting (restart policy on-failure, attempt 1/1)",
    );
    assert!(
        restarted
            < position(
                &all,
                &crash,
                "machine reached its max restart count of 1, not restarting"
            )
    );
    position(&all, &no, "machine exited with exit code 1");
    // A destroyed machine's lifecycle stays in the stream.
    let r = c
        .delete(&format!("/v1/apps/logs-merge/machines/{no}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, "logs-merge", &no, "destroyed", "").await;
    let all = eventually("the destroy line", async || {
        let all = stream(&c, "logs-merge", "").await;
        messages(&all).contains(&"Machine destroyed").then_some(all)
    })
    .await;
    position(
        &all,
        &no,
        "machine restart policy set to 'no', not restarting",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_errors_reach_the_apps_stream_with_their_code() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    let proxy = cluster.start_proxy(ProxyConfig {
        port_map: HashMap::from([(80, 0)]),
        autostop_interval: Duration::from_secs(3600),
        ..ProxyConfig::default()
    });
    // A machine that declares the service but listens on nothing: connections are refused.
    app(&c, "logs-refused").await;
    let mut deaf = sh("while true; do sleep 1; done");
    deaf["services"] = json!([{
        "protocol": "tcp",
        "internal_port": 8080,
        "ports": [{"port": 80, "handlers": ["http"]}],
    }]);
    let m = create(&c, "logs-refused", "ams", deaf).await;
    wait(&c, "logs-refused", &m, "started", "").await;
    // And an app with no machine at all.
    app(&c, "logs-empty").await;
    let addr = listening(&proxy, 80).await;
    // Once the proxy's catalog has it started (before, a request would wake it and wait for
    // its port, which never accepts, until the wake timeout: 503 PM03).
    eventually("the proxy to see the machine started", async || {
        (proxy.catalog.snapshot().machines.get(&m).map(|e| e.state)
            == Some(hangar_domain::State::Started))
        .then_some(())
    })
    .await;
    let r = get(addr, "logs-refused.localhost", "/some/path?q=1", &[]).await;
    assert_eq!(r.status, 502, "{}", r.body);
    let rid = r.header("fly-request-id").expect("request id");
    // (The catalog learns of the app within moments; until then it is not found, PR02.)
    let empty_rid = eventually("the app without machines", async || {
        let r = get(addr, "logs-empty.localhost", "/", &[]).await;
        (r.status == 503).then(|| {
            assert_eq!(r.header("fly-error-code").as_deref(), Some("PR01"));
            r.header("fly-request-id").expect("request id")
        })
    })
    .await;

    let all = eventually("the refused connections", async || {
        let all = stream(&c, "logs-refused", "").await;
        all.iter()
            .any(|e| e["meta"]["error"]["proxy_code"] == "PC07")
            .then_some(all)
    })
    .await;
    sorted_by_time(&all);
    let refused: Vec<&Value> = all
        .iter()
        .filter(|e| e["meta"]["error"]["proxy_code"] == "PC01")
        .collect();
    assert!(!refused.is_empty(), "{all:#?}");
    for e in &refused {
        assert_eq!(provider(e), "proxy");
        assert_eq!(e["instance"], m.as_str());
        assert_eq!(e["region"], "ams");
        assert_eq!(e["level"], "error");
        assert_eq!(e["meta"]["http"]["request"]["id"], rid.as_str());
        assert_eq!(e["meta"]["http"]["request"]["method"], "GET");
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("[PC01] "))
        );
    }
    let last = all
        .iter()
        .find(|e| e["meta"]["error"]["proxy_code"] == "PC07")
        .expect("PC07");
    assert_eq!(last["meta"]["http"]["response"]["status_code"], 502);
    assert_eq!(last["meta"]["url"]["full"], "/some/path?q=1");
    assert_eq!(last["meta"]["http"]["request"]["id"], rid.as_str());

    let e = eventually("the request without a machine", async || {
        let all = stream(&c, "logs-empty", "").await;
        all.into_iter()
            .find(|e| e["meta"]["error"]["proxy_code"] == "PR01")
    })
    .await;
    assert_eq!(provider(&e), "proxy");
    assert_eq!(e["instance"], "");
    assert_eq!(e["region"], "local", "the proxy's region when no machine");
    assert_eq!(e["meta"]["http"]["response"]["status_code"], 503);
    assert_eq!(e["meta"]["http"]["request"]["id"], empty_rid.as_str());
    // The proxy's lines are counted where it wrote them.
    let p = cluster.platform_logs();
    p.flush();
    assert!(p.written(hangar_domain::Provider::Proxy) >= 3);
    assert_eq!(p.dropped(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_sees_machines_started_after_it_began_and_ends_with_the_agent() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "logs-follow").await;
    let first = create(&c, "logs-follow", "ams", chatty("early")).await;
    wait(&c, "logs-follow", &first, "started", "").await;
    let client = hangar_client::Client::new(
        &format!("http://{}", cluster.api),
        hangar_testkit::ADMIN_TOKEN,
    )
    .expect("client");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let follower = tokio::spawn(async move {
        client
            .follow_app_logs("logs-follow", &LogFilter::default(), 1000, |e| {
                tx.send(e).is_ok()
            })
            .await
    });
    let mut got: Vec<hangar_api_types::LogEntry> = Vec::new();
    let mut until = async |what: &str, f: &dyn Fn(&hangar_api_types::LogEntry) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if got.iter().any(f) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(e)) => got.push(e),
                Ok(None) => panic!("the stream ended before {what}: {got:#?}"),
                Err(_) => panic!("timed out waiting for {what}: {got:#?}"),
            }
        }
    };
    until("the backlog", &|e| e.message == "early-3").await;
    // The follow holds one of the host's app follower slots.
    let agent = cluster.agent().expect("agent");
    assert_eq!(agent.app_log_followers(), 1);
    let metrics = agent.render_metrics().await;
    assert!(
        metrics.contains("hangar_logs_followers{kind=\"app\","),
        "{metrics}"
    );
    // A machine created after the follow began: its lifecycle and its output arrive.
    let late = create(&c, "logs-follow", "fra", chatty("late")).await;
    until("the late machine's output", &|e| {
        e.instance == late && e.message == "late-3"
    })
    .await;
    until("the late machine's start", &|e| {
        e.instance == late && e.message == "Starting machine" && e.meta.event.provider == "runner"
    })
    .await;
    let mine: Vec<&str> = got
        .iter()
        .filter(|e| e.instance == late)
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(
        mine.iter().filter(|m| **m == "late-1").count(),
        1,
        "each line once: {mine:?}"
    );
    // The host going away ends the stream (no follower is left behind).
    drop(agent);
    cluster.kill_agent().await;
    let ended = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .expect("the stream ends when the agent stops")
        .expect("join");
    assert!(ended.is_ok(), "{ended:?}");
    // Lines written before the restart are still there after it (kept on disk).
    cluster.start_agent().expect("agent again");
    let all = stream(&c, "logs-follow", "").await;
    position(&all, &late, "Starting machine");
}
