//! Deploys through the proxy under load: first deploy, rolling, canary and bluegreen with
//! zero failed requests; a release that fails its checks is rolled back while the app keeps
//! serving; a failing release command changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use hangar_client::Client as ApiClient;
use hangar_client::deploy::{self, DeployError, DeployOptions, Strategy};
use hangar_proxy::ProxyConfig;
use hangar_testkit::{ADMIN_TOKEN, TEST_IMAGE, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FLY_TOML: &str = r#"
app = "dep"
primary_region = "local"

[processes]
web = "sh -c 'mkdir -p /www && echo $GREETING > /www/index.html && trap \"exit 0\" TERM INT && httpd -f -p 8080 -h /www & wait'"

[http_service]
internal_port = 8080
processes = ["web"]
auto_stop_machines = "off"

[[http_service.checks]]
grace_period = "0s"
interval = "300ms"
timeout = "1s"
method = "GET"
path = "/"
"#;

fn options(strategy: Strategy, greeting: &str) -> DeployOptions {
    DeployOptions {
        app: "dep".into(),
        org: "personal".into(),
        image: TEST_IMAGE.into(),
        strategy,
        max_unavailable: 1.0,
        wait_timeout: Duration::from_secs(30),
        env: BTreeMap::from([("GREETING".to_string(), greeting.to_string())]),
        regions: Vec::new(),
        ha: true,
        start_stopped: false,
        detach: false,
        min_secrets_version: None,
    }
}

async fn get(addr: std::net::SocketAddr) -> Result<(u16, String), String> {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.1\r\nhost: dep.localhost\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// 100 requests per second until stopped; counts failures and the bodies seen.
struct Load {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    bodies: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(addr: std::net::SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicUsize::new(0));
        let sent = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(std::sync::Mutex::new(HashMap::new()));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, f, n, b, e) = (
            stop.clone(),
            failed.clone(),
            sent.clone(),
            bodies.clone(),
            errors.clone(),
        );
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut inflight = tokio::task::JoinSet::new();
            while !s.load(Ordering::Acquire) {
                tick.tick().await;
                n.fetch_add(1, Ordering::Relaxed);
                let (f, b, e) = (f.clone(), b.clone(), e.clone());
                inflight.spawn(async move {
                    match get(addr).await {
                        Ok((200, body)) => {
                            *b.lock()
                                .expect("lock")
                                .entry(body.trim().to_string())
                                .or_insert(0) += 1;
                        }
                        other => {
                            f.fetch_add(1, Ordering::Relaxed);
                            e.lock().expect("lock").push(format!("{other:?}"));
                        }
                    }
                });
                while inflight.try_join_next().is_some() {}
            }
            while inflight.join_next().await.is_some() {}
        });
        Load {
            stop,
            failed,
            sent,
            bodies,
            errors,
            task,
        }
    }

    async fn finish(self) -> (usize, usize, HashMap<String, usize>, Vec<String>) {
        self.stop.store(true, Ordering::Release);
        let _ = self.task.await;
        let bodies = self.bodies.lock().expect("lock").clone();
        let errors = self.errors.lock().expect("lock").clone();
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            bodies,
            errors,
        )
    }
}

async fn run(
    client: &ApiClient,
    config: &hangar_manifest::Config,
    opts: &DeployOptions,
) -> Result<deploy::Report, DeployError> {
    let groups = deploy::group_configs(config, opts, None)?;
    let mut events = Vec::new();
    let out = deploy::deploy(client, config, groups, opts, &mut |e| events.push(e)).await;
    eprintln!("deploy events: {events:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_keep_the_app_serving_and_failures_roll_back() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let proxy = cluster.start_proxy(ProxyConfig {
        port_map: HashMap::from([(80, 0), (443, 0)]),
        ..ProxyConfig::default()
    });
    let client = ApiClient::new(&format!("http://{}", cluster.api), ADMIN_TOKEN).expect("client");
    let manifest = hangar_manifest::parse(FLY_TOML, hangar_manifest::Format::Toml, "fly.toml")
        .expect("fly.toml");
    let config = manifest.config;

    // First deploy: two machines (HA), healthy, and the URL answers.
    let report = run(&client, &config, &options(Strategy::Rolling, "v1"))
        .await
        .expect("first deploy");
    assert_eq!(report.created.len(), 2, "{report:?}");
    let addr = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(a) = proxy.listening().get(&80) {
                break *a;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no listener for port 80"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert_eq!(get(addr).await.expect("get"), (200, "v1\n".to_string()));

    for (strategy, greeting) in [
        (Strategy::Rolling, "v2"),
        (Strategy::Canary, "v3"),
        (Strategy::Bluegreen, "v4"),
    ] {
        let load = Load::start(addr);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = run(&client, &config, &options(strategy, greeting))
            .await
            .unwrap_or_else(|e| panic!("{strategy:?} deploy: {e}"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (sent, failed, bodies, errors) = load.finish().await;
        assert_eq!(
            failed, 0,
            "{strategy:?}: {failed}/{sent} failed: {errors:?}; {bodies:?}; {report:?}"
        );
        assert!(sent > 50, "{sent}");
        assert!(bodies.contains_key(greeting), "{strategy:?}: {bodies:?}");
        assert_eq!(
            get(addr).await.expect("get"),
            (200, format!("{greeting}\n"))
        );
    }

    // A release whose machines never become healthy: rolled back, and no request failed.
    let mut broken = options(Strategy::Rolling, "v5");
    broken.wait_timeout = Duration::from_secs(5);
    let mut bad_config = config.clone();
    bad_config
        .processes
        .insert("web".into(), "sh -c 'echo broken; exit 3'".into());
    let load = Load::start(addr);
    let err = run(&client, &bad_config, &broken)
        .await
        .expect_err("the broken deploy fails");
    let (sent, failed, bodies, errors) = load.finish().await;
    assert!(matches!(err, DeployError::Unhealthy { .. }), "{err}");
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert_eq!(
        failed, 0,
        "{failed}/{sent} failed during the failed deploy: {errors:?}; {bodies:?}"
    );
    assert_eq!(get(addr).await.expect("get"), (200, "v4\n".to_string()));

    // A failing release command changes nothing.
    let before: Vec<String> = client
        .machines("dep")
        .await
        .expect("machines")
        .into_iter()
        .filter(|m| m.state.as_str() == "started")
        .map(|m| format!("{}:{}", m.id, m.instance_id))
        .collect();
    let mut with_release = config.clone();
    with_release.deploy = Some(hangar_manifest::model::Deploy {
        release_command: Some("sh -c 'echo migrating; exit 7'".into()),
        ..Default::default()
    });
    let err = run(&client, &with_release, &options(Strategy::Rolling, "v6"))
        .await
        .expect_err("the release command fails");
    match &err {
        DeployError::ReleaseCommand { code, output } => {
            assert_eq!(*code, 7);
            assert!(output.contains("migrating"), "{output}");
        }
        other => panic!("unexpected {other}"),
    }
    let after: Vec<String> = client
        .machines("dep")
        .await
        .expect("machines")
        .into_iter()
        .filter(|m| m.state.as_str() == "started")
        .map(|m| format!("{}:{}", m.id, m.instance_id))
        .collect();
    assert_eq!(before, after);
    assert_eq!(get(addr).await.expect("get"), (200, "v4\n".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_count_places_machines_per_region_and_scales_down() {
    let cluster = TestCluster::start().await.expect("cluster");
    let client = ApiClient::new(&format!("http://{}", cluster.api), ADMIN_TOKEN).expect("client");
    let manifest = hangar_manifest::parse(FLY_TOML, hangar_manifest::Format::Toml, "fly.toml")
        .expect("fly.toml");
    let mut opts = options(Strategy::Immediate, "s");
    opts.ha = false;
    // No proxy here, so no check results: do not wait for health.
    opts.detach = true;
    run(&client, &manifest.config, &opts).await.expect("deploy");
    let by_region = |ms: &[hangar_api_types::Machine]| {
        let mut out: BTreeMap<String, usize> = BTreeMap::new();
        for m in ms
            .iter()
            .filter(|m| !matches!(m.state.as_str(), "destroyed" | "destroying"))
        {
            *out.entry(m.region.clone()).or_insert(0) += 1;
        }
        out
    };
    // 2 per region in ams and fra.
    let machines = client.machines("dep").await.expect("machines");
    let regions = vec!["ams".to_string(), "fra".to_string()];
    let targets = hangar_client::scale::targets(2, &regions, &[], "local", None);
    let plan = hangar_client::scale::plan(&machines, "web", &targets);
    hangar_client::scale::apply(&client, "dep", "web", &machines, &plan)
        .await
        .expect("scale up");
    let machines = client.machines("dep").await.expect("machines");
    assert_eq!(
        by_region(&machines),
        BTreeMap::from([("ams".into(), 2), ("fra".into(), 2), ("local".into(), 1)])
    );
    // The new machines run the group's config.
    for m in machines.iter().filter(|m| m.region != "local") {
        let env = &m.config.as_ref().expect("config").env;
        assert_eq!(env.get("GREETING").map(String::as_str), Some("s"));
    }
    // Down to 1 in fra.
    let targets = hangar_client::scale::targets(1, &["fra".to_string()], &[], "local", None);
    let plan = hangar_client::scale::plan(&machines, "web", &targets);
    assert_eq!(plan.destroy.len(), 1);
    hangar_client::scale::apply(&client, "dep", "web", &machines, &plan)
        .await
        .expect("scale down");
    let machines = client.machines("dep").await.expect("machines");
    assert_eq!(by_region(&machines).get("fra"), Some(&1));
}
