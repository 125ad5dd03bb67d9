//! Deploys through the proxy under load: first deploy, rolling, canary and bluegreen with
//! zero failed requests; a release that fails its checks is rolled back while the app keeps
//! serving; a failing release command changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hangar_client::Client as ApiClient;
use hangar_client::deploy::{self, DeployError, DeployOptions, Strategy};
use hangar_proxy::ProxyConfig;
use hangar_testkit::load::{Load, LoadReport};
use hangar_testkit::{ADMIN_TOKEN, TEST_IMAGE, TestCluster};

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
    hangar_testkit::load::get(addr, "dep.localhost").await
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
        let load = Load::start(addr, "dep.localhost");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = run(&client, &config, &options(strategy, greeting))
            .await
            .unwrap_or_else(|e| panic!("{strategy:?} deploy: {e}"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let LoadReport {
            sent,
            failures,
            bodies,
        } = load.finish().await;
        assert_eq!(
            failures.len(),
            0,
            "{strategy:?}: {}/{sent} failed: {failures:?}; {bodies:?}; {report:?}",
            failures.len()
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
    let load = Load::start(addr, "dep.localhost");
    let err = run(&client, &bad_config, &broken)
        .await
        .expect_err("the broken deploy fails");
    let LoadReport {
        sent,
        failures,
        bodies,
    } = load.finish().await;
    assert!(matches!(err, DeployError::Unhealthy { .. }), "{err}");
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert_eq!(
        failures.len(),
        0,
        "{}/{sent} failed during the failed deploy: {failures:?}; {bodies:?}",
        failures.len()
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
