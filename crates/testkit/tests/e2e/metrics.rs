//! `/metrics` of a host: `fly_instance_*` of its machines from cgroups and /proc, and the
//! apps' own metrics scraped from `config.metrics`, relabelled; hostile scrape targets stay
//! bounded in size and time, and the scraper stops at once on shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_agent::{Agent, ScraperConfig};
use hangar_runtime::LinuxDriver;
use hangar_testkit::{Client, TEST_IMAGE, TestCluster};
use serde_json::{Value, json};

use super::{app, try_http_get_ready, wait};

/// What the app serves: a counter with labels the platform overwrites, a line that does not
/// parse, a family only the platform may serve, and a NaN.
const EXPOSITION: &str = r#"'# HELP app_requests_total Requests served.' '# TYPE app_requests_total counter' 'app_requests_total{path="/",instance="spoofed",app="other"} 42' 'this line is not metrics' 'fly_instance_up{instance="fake"} 1' 'app_temperature_celsius NaN'"#;

/// Creates a machine running `script`; returns (id, private ip, region).
async fn machine(c: &Client, app: &str, script: &str, metrics: Value) -> (String, String, String) {
    let config = json!({
        "image": TEST_IMAGE,
        "init": {"cmd": ["sh", "-c", script]},
        "guest": {"cpus": 1, "memory_mb": 128},
        "metrics": metrics,
    });
    let r = c
        .post(
            &format!("/v1/apps/{app}/machines"),
            &json!({ "config": config }),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m = r.json();
    let s = |k: &str| m[k].as_str().expect(k).to_string();
    (s("id"), s("private_ip"), s("region"))
}

/// The value of the first sample `name{…}` whose labels include every pair of `want`.
fn sample(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, labels) = series.split_once('{').unwrap_or((series, ""));
        let labels = format!(",{labels}");
        let all = want
            .iter()
            .all(|(k, v)| labels.contains(&format!(",{k}=\"{v}\"")));
        (n == name && all).then(|| value.parse::<f64>().ok())?
    })
}

/// Renders the agent's metrics until `f` holds (30 s at most); returns that exposition.
async fn metrics_until(
    agent: &Arc<Agent<LinuxDriver>>,
    what: &str,
    f: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = agent.render_metrics().await;
        if f(&text) {
            return text;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; last exposition:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Scraper {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn scraper(agent: &Arc<Agent<LinuxDriver>>, config: ScraperConfig) -> Scraper {
    let (stop, mut rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(hangar_agent::run_scraper(
        agent.clone(),
        config,
        async move {
            let _ = rx.wait_for(|s| *s).await;
        },
    ));
    Scraper { stop, task }
}

impl Scraper {
    /// Stops it; it must end within `within`.
    async fn stop(self, within: Duration) {
        let _ = self.stop.send(true);
        let t = Instant::now();
        tokio::time::timeout(within, self.task)
            .await
            .expect("the scraper stops promptly")
            .expect("the scraper task ends cleanly");
        assert!(t.elapsed() < within);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_are_measured_and_their_metrics_scraped() {
    let cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "metrics-e2e").await;
    let script = format!(
        "mkdir -p /m && printf '%s\\n' {EXPOSITION} > /m/metrics && exec httpd -f -p 9100 -h /m"
    );
    let (id, ip, region) = machine(
        &c,
        "metrics-e2e",
        &script,
        json!({"port": 9100, "path": "/metrics"}),
    )
    .await;
    wait(&c, "metrics-e2e", &id, "started", "").await;
    if let Err(e) = try_http_get_ready(&ip, 9100).await {
        panic!("{e}\nlog: {}", cluster.machine_log(&id));
    }
    let agent = cluster.agent().expect("agent");
    let scraping = scraper(
        &agent,
        ScraperConfig {
            interval: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
            ..ScraperConfig::default()
        },
    );
    let platform = [
        ("app", "metrics-e2e"),
        ("region", region.as_str()),
        ("instance", id.as_str()),
    ];
    let text = metrics_until(&agent, "the scraped sample", |t| {
        sample(t, "app_requests_total", &platform).is_some()
    })
    .await;

    if std::env::var_os("E2E_DEBUG").is_some() {
        eprintln!("{text}");
    }
    // The app's sample, with the platform's labels over the app's own.
    assert_eq!(
        sample(&text, "app_requests_total", &[("path", "/")]),
        Some(42.0)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("app_requests_total{"))
        .expect("line");
    assert_eq!(
        line,
        format!(
            "app_requests_total{{path=\"/\",instance=\"{id}\",app=\"metrics-e2e\",region=\"{region}\"}} 42"
        )
    );
    assert!(text.contains("# TYPE app_requests_total counter"), "{text}");
    assert!(
        sample(&text, "app_temperature_celsius", &platform).is_some_and(f64::is_nan),
        "{text}"
    );
    assert!(
        !text.contains("spoofed") && !text.contains("\"other\""),
        "{text}"
    );
    // An app can not serve the platform's families.
    assert!(!text.contains("instance=\"fake\""), "{text}");
    let counter =
        |t: &str, name: &str, labels: &[(&str, &str)]| sample(t, name, labels).unwrap_or(0.0);
    assert!(
        counter(
            &text,
            "hangar_scrape_dropped_samples_total",
            &[("reason", "reserved")]
        ) >= 1.0
    );
    assert!(counter(&text, "hangar_scrape_malformed_lines_total", &[]) >= 1.0);
    assert!(counter(&text, "hangar_scrapes_total", &[("result", "ok")]) >= 1.0);
    assert_eq!(sample(&text, "hangar_scrape_up", &platform), Some(1.0));
    assert_eq!(sample(&text, "hangar_scrape_samples", &platform), Some(2.0));
    assert_eq!(sample(&text, "hangar_scrape_targets", &[]), Some(1.0));

    // The machine itself, from its cgroup and network namespace.
    assert_eq!(sample(&text, "fly_instance_up", &platform), Some(1.0));
    assert!(
        text.contains("host=\""),
        "every platform sample has a host label"
    );
    let mem = |name: &str| {
        sample(&text, &format!("fly_instance_memory_{name}"), &platform)
            .unwrap_or_else(|| panic!("fly_instance_memory_{name} missing:\n{text}"))
    };
    assert_eq!(mem("mem_total"), (128u64 << 20) as f64);
    assert!(mem("mem_free") > 0.0 && mem("mem_free") < mem("mem_total"));
    assert!(mem("mem_available") >= mem("mem_free"));
    mem("cached");
    mem("shmem");
    let cpu = [("instance", id.as_str()), ("cpu_id", "0")];
    assert!(
        sample(
            &text,
            "fly_instance_cpu",
            &[cpu[0], cpu[1], ("mode", "user")]
        )
        .is_some()
    );
    assert!(
        sample(
            &text,
            "fly_instance_cpu",
            &[cpu[0], cpu[1], ("mode", "system")]
        )
        .is_some()
    );
    let eth0 = [("instance", id.as_str()), ("device", "eth0")];
    // Our own requests went in and the answers came out.
    assert!(
        sample(&text, "fly_instance_net_recv_bytes", &eth0).is_some_and(|b| b > 0.0),
        "{text}"
    );
    assert!(
        sample(&text, "fly_instance_net_sent_packets", &eth0).is_some_and(|p| p > 0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "hangar_agent_machines", &[("state", "started")]),
        Some(1.0)
    );
    assert!(sample(&text, "fly_instance_exit_code", &platform).is_none());

    // Stopped: up 0, the last exit shows, the scraped samples and cgroup figures are gone.
    let r = c
        .post(
            &format!("/v1/apps/metrics-e2e/machines/{id}/stop"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, "metrics-e2e", &id, "stopped", "").await;
    let text = metrics_until(&agent, "the stopped machine", |t| {
        sample(t, "fly_instance_up", &platform) == Some(0.0)
    })
    .await;
    assert!(
        sample(&text, "fly_instance_exit_code", &platform).is_some(),
        "{text}"
    );
    assert_eq!(sample(&text, "fly_instance_exit_oom", &platform), Some(0.0));
    assert!(!text.contains("app_requests_total{"), "{text}");
    assert!(sample(&text, "fly_instance_memory_mem_total", &platform).is_none());
    assert!(sample(&text, "hangar_scrape_up", &platform).is_none());

    scraping.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_scrape_targets_are_bounded() {
    let cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "metrics-hostile").await;
    let cgi = |body: &str| {
        format!(
            "mkdir -p /m/cgi-bin && printf '#!/bin/sh\\n{body}\\n' > /m/cgi-bin/x && \
             busybox chmod 755 /m/cgi-bin/x && exec httpd -f -p 9100 -h /m"
        )
    };
    let path = json!({"port": 9100, "path": "/cgi-bin/x"});
    // An endless body (no Content-Length): cut at the size limit.
    let (endless, _, _) = machine(
        &c,
        "metrics-hostile",
        &cgi("echo Content-Type: text/plain; echo; exec busybox yes \"x 1\""),
        path.clone(),
    )
    .await;
    // No answer at all: cut at the timeout.
    let (silent, _, _) = machine(&c, "metrics-hostile", &cgi("sleep 600"), path).await;
    // Binary garbage: a successful scrape of nothing.
    let (garbage, _, _) = machine(
        &c,
        "metrics-hostile",
        "mkdir -p /m && busybox head -c 100000 /dev/urandom > /m/metrics; exec httpd -f -p 9100 -h /m",
        json!({"port": 9100}),
    )
    .await;
    for id in [&endless, &silent, &garbage] {
        wait(&c, "metrics-hostile", id, "started", "").await;
    }
    let agent = cluster.agent().expect("agent");
    let scraping = scraper(
        &agent,
        ScraperConfig {
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(3),
            ..ScraperConfig::default()
        },
    );
    let up = |t: &str, id: &str| sample(t, "hangar_scrape_up", &[("instance", id)]);
    let text = metrics_until(&agent, "a scrape of every target", |t| {
        sample(t, "hangar_scrapes_total", &[("result", "too_large")]).is_some()
            && sample(t, "hangar_scrapes_total", &[("result", "timeout")]).is_some()
            && up(t, &garbage) == Some(1.0)
    })
    .await;
    assert_eq!(up(&text, &endless), Some(0.0), "{text}");
    assert_eq!(up(&text, &silent), Some(0.0), "{text}");
    // The size limit cut the endless one: nothing of it is kept.
    assert_eq!(
        sample(&text, "hangar_scrape_samples", &[("instance", &endless)]),
        Some(0.0)
    );
    assert!(!text.contains("\nx{"), "{text}");
    scraping.stop(Duration::from_secs(5)).await;

    // A scrape that would wait minutes does not hold up shutdown.
    let patient = scraper(
        &agent,
        ScraperConfig {
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(120),
            ..ScraperConfig::default()
        },
    );
    metrics_until(&agent, "a scrape under way", |t| {
        sample(t, "hangar_scrape_in_flight", &[]).is_some_and(|n| n >= 1.0)
    })
    .await;
    patient.stop(Duration::from_secs(5)).await;
    let text = agent.render_metrics().await;
    assert_eq!(sample(&text, "hangar_scrape_in_flight", &[]), Some(0.0));
    assert!(
        sample(&text, "hangar_scrape_up", &[]).is_none(),
        "samples dropped at stop"
    );
}
