//! Deploys through the `hangar` binary against a real host (TestCluster and its edge proxy):
//! the first deploy from a fly.toml, the URL answering through the proxy, a rolling deploy with
//! an env change while 100 requests a second flow (none may fail), `scale count` across
//! regions, and `scale count` for a group with `[mounts]` (new machines get new volumes;
//! removed machines leave theirs). The strategies themselves, rollbacks and release commands
//! are covered through the client library in `crates/testkit/tests/e2e/deploy.rs`; this is
//! about the binary: its flags, output and exit codes.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use hangar_testkit::TestCluster;
use hangar_testkit::load::{Load, LoadReport};
use serde_json::Value;

use super::live::{Hangar, until, write};
use super::{stderr, stdout};

const FLY_TOML: &str = r#"
app = "web"
primary_region = "local"

[build]
  image = "hangar-test/busybox:latest"

[env]
  GREETING = "v1"

[processes]
  web = "sh -c 'mkdir -p /w && echo $GREETING > /w/index.html && trap \"exit 0\" TERM INT && httpd -f -p 8080 -h /w & wait'"

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

/// Where the proxy listens for a service port (it opens listeners as apps appear).
pub(crate) async fn listener(proxy: &hangar_proxy::Proxy, port: u16) -> SocketAddr {
    for _ in 0..500 {
        if let Some(a) = proxy.listening().get(&port) {
            return *a;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the proxy never listened for port {port}");
}

pub(crate) use hangar_testkit::load::get;

/// Live machines per region.
fn by_region(ms: &Value) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in ms.as_array().into_iter().flatten() {
        if !matches!(m["state"].as_str(), Some("destroyed" | "destroying")) {
            *out.entry(m["region"].as_str().unwrap_or_default().to_string())
                .or_insert(0) += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_deploys_rolls_without_dropping_requests_and_scales_across_regions() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let proxy = cluster.start_proxy(hangar_proxy::ProxyConfig {
        port_map: HashMap::from([(80, 0), (443, 0)]),
        ..hangar_proxy::ProxyConfig::default()
    });
    let h = Hangar::new(cluster.api, "deploy");
    let dir = h.dir().join("web");
    write(&dir, "fly.toml", FLY_TOML);
    let cfg = dir.display().to_string();

    // First deploy: the app is created, two machines (HA) become healthy, the URL is printed.
    let o = h.run(&["deploy", "-c", &cfg]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "Visit your newly deployed app at http://web.localhost/\n"
    );
    let err = stderr(&o);
    assert!(err.contains("creating app web"), "{err}");
    assert!(err.contains("creating 2 machines in group 'web'"), "{err}");
    let addr = listener(&proxy, 80).await;
    assert_eq!(
        get(addr, "web.localhost").await.expect("get"),
        (200, "v1\n".to_string())
    );

    // A rolling deploy with an env change while requests flow: none fails.
    let load = Load::start(addr, "web.localhost");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let o = h
        .run(&[
            "deploy",
            "-c",
            &cfg,
            "--strategy",
            "rolling",
            "--env",
            "GREETING=v2",
        ])
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let LoadReport {
        sent,
        failures,
        bodies,
    } = load.finish().await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("updating 2 machines in group 'web' (rolling)"),
        "{err}"
    );
    assert!(
        failures.is_empty(),
        "{}/{sent} failed during the rolling deploy: {failures:?}; {bodies:?}\n{err}",
        failures.len()
    );
    assert!(sent > 50, "{sent}");
    assert!(bodies.contains_key("v2"), "{bodies:?}");
    assert_eq!(
        get(addr, "web.localhost").await.expect("get"),
        (200, "v2\n".to_string())
    );
    let ms = h.json(&["machine", "list", "-a", "web", "--json"]).await;
    for m in ms.as_array().expect("machines") {
        assert_eq!(m["config"]["env"]["GREETING"], "v2", "{m:#}");
    }

    // scale count 3 --region local,ams: three in each.
    let o = h
        .run(&["scale", "count", "3", "--region", "local,ams", "-a", "web"])
        .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).matches("Created machine").count(),
        4,
        "{}",
        stdout(&o)
    );
    let ms = h.json(&["machine", "list", "-a", "web", "--json"]).await;
    assert_eq!(
        by_region(&ms),
        BTreeMap::from([("ams".into(), 3), ("local".into(), 3)])
    );
    let shown = h.json(&["scale", "show", "-a", "web", "--json"]).await;
    assert_eq!(
        shown,
        serde_json::json!([
            {"process": "web", "region": "ams", "count": 3},
            {"process": "web", "region": "local", "count": 3},
        ])
    );
    // Scaling down destroys machines: off a terminal it needs --yes.
    let o = h
        .run(&["scale", "count", "1", "--region", "ams", "-a", "web"])
        .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("pass --yes"), "{}", stderr(&o));
    // Bad input: a clear error and exit code 2, nothing changed.
    let o = h.run(&["scale", "count", "three", "-a", "web"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("'three' is not a count"),
        "{}",
        stderr(&o)
    );
    let o = h
        .run(&["deploy", "-c", &cfg, "--strategy", "sideways"])
        .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("unknown strategy 'sideways'"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        by_region(&h.json(&["machine", "list", "-a", "web", "--json"]).await),
        BTreeMap::from([("ams".into(), 3), ("local".into(), 3)])
    );
}

const MOUNTS_TOML: &str = r#"
app = "vols"
primary_region = "local"

[build]
  image = "hangar-test/busybox:latest"

[processes]
  app = "sleep 100000"

[[mounts]]
  source = "store"
  destination = "/data"
  initial_size = "2gb"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_count_gives_new_machines_volumes_of_their_own_and_keeps_removed_ones() {
    let cluster = TestCluster::start().await.expect("cluster");
    let h = Hangar::new(cluster.api, "scalevol");
    let dir = h.dir().join("vols");
    write(&dir, "fly.toml", MOUNTS_TOML);
    let cfg = dir.display().to_string();
    h.ok(&["deploy", "-c", &cfg]).await;
    let vols = h.json(&["volumes", "list", "-c", &cfg, "--json"]).await;
    assert_eq!(vols.as_array().map(Vec::len), Some(1), "{vols:#}");

    // Two more in ams, one more in local: each with a volume of its own, named as the
    // mount's source, in its region, sized as fly.toml says.
    let out = h
        .ok(&["scale", "count", "2", "--region", "local,ams", "-c", &cfg])
        .await;
    assert_eq!(out.matches("Created volume").count(), 3, "{out}");
    assert_eq!(out.matches("Created machine").count(), 3, "{out}");
    let ms = until(&h, &["machine", "list", "-c", &cfg, "--json"], |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 4 && a.iter().all(|m| m["state"] == "started"))
    })
    .await;
    let vols = h.json(&["volumes", "list", "-c", &cfg, "--json"]).await;
    let vols = vols.as_array().expect("volumes");
    assert_eq!(vols.len(), 4, "{vols:#?}");
    let mut seen = std::collections::HashSet::new();
    for m in ms.as_array().expect("machines") {
        let mount = &m["config"]["mounts"][0];
        let vol = mount["volume"].as_str().expect("a volume");
        assert!(
            seen.insert(vol.to_string()),
            "one volume per machine: {ms:#}"
        );
        let v = vols.iter().find(|v| v["id"] == vol).expect("listed");
        assert_eq!(v["name"], "store");
        assert_eq!(v["region"], m["region"]);
        assert_eq!(v["attached_machine_id"], m["id"]);
        assert_eq!(mount["path"], "/data");
        if v["id"] != vols[0]["id"] {
            assert_eq!(v["size_gb"], 2, "{v:#}");
        }
    }

    // Down to one in ams: the machine goes, its volume stays (and the output says so).
    let out = h
        .ok(&[
            "scale", "count", "1", "--region", "ams", "-c", &cfg, "--yes",
        ])
        .await;
    assert_eq!(out.matches("Destroyed machine").count(), 1, "{out}");
    assert!(out.contains("Kept volume vol_"), "{out}");
    let kept = out
        .split("Kept volume ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .expect("volume id")
        .to_string();
    let v = until(&h, &["volumes", "show", &kept, "-c", &cfg, "--json"], |v| {
        v["attached_machine_id"].as_str().is_none_or(str::is_empty)
    })
    .await;
    assert_eq!(v["region"], "ams");

    // Up again in ams: the unattached volume is taken before a new one is made...
    let out = h
        .ok(&["scale", "count", "2", "--region", "ams", "-c", &cfg])
        .await;
    assert!(
        out.contains(&format!("Using unattached volume {kept}")),
        "{out}"
    );
    assert!(!out.contains("Created volume"), "{out}");
    // ...unless --with-new-volumes.
    let out = h
        .ok(&[
            "scale", "count", "1", "--region", "ams", "-c", &cfg, "--yes",
        ])
        .await;
    assert!(out.contains("Kept volume"), "{out}");
    let out = h
        .ok(&[
            "scale",
            "count",
            "2",
            "--region",
            "ams",
            "-c",
            &cfg,
            "--with-new-volumes",
        ])
        .await;
    assert_eq!(out.matches("Created volume").count(), 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_set_rolls_machines_onto_the_new_version_and_stage_does_not() {
    let cluster = TestCluster::start().await.expect("cluster");
    let h = Hangar::new(cluster.api, "secroll");
    let dir = h.dir().join("sec");
    write(
        &dir,
        "fly.toml",
        "app = \"sec\"\n[build]\n  image = \"hangar-test/busybox:latest\"\n[processes]\n  app = \"sleep 100000\"\n",
    );
    let cfg = dir.display().to_string();
    h.ok(&["deploy", "-c", &cfg]).await;
    let machine = |v: &Value| {
        (
            v[0]["id"].as_str().unwrap_or_default().to_string(),
            v[0]["instance_id"].as_str().unwrap_or_default().to_string(),
        )
    };
    let (id, before) = machine(&h.json(&["machine", "list", "-a", "sec", "--json"]).await);

    let o = h.run(&["secrets", "set", "TOKEN=abc", "-a", "sec"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "Secrets are at version 1\n");
    assert!(
        stderr(&o).contains("1 machine(s) run with secrets version 1"),
        "{}",
        stderr(&o)
    );
    let ms = h.json(&["machine", "list", "-a", "sec", "--json"]).await;
    let (same, after) = machine(&ms);
    assert_eq!(same, id);
    assert_ne!(after, before, "updated to a new version");
    assert_eq!(ms[0]["state"], "started");
    let env = h.ok(&["machine", "exec", &id, "-a", "sec", "env"]).await;
    assert!(env.contains("TOKEN=abc"), "{env}");

    // --stage records only: the machine keeps its version and its value.
    let out = h
        .ok(&["secrets", "set", "TOKEN=def", "-a", "sec", "--stage"])
        .await;
    assert_eq!(out, "Secrets are at version 2\n");
    let (_, staged) = machine(&h.json(&["machine", "list", "-a", "sec", "--json"]).await);
    assert_eq!(staged, after);
    let env = h.ok(&["machine", "exec", &id, "-a", "sec", "env"]).await;
    assert!(env.contains("TOKEN=abc"), "{env}");
}
