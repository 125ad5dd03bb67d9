//! Volumes on a real host: a loop-mounted ext4 disk per volume, bind-mounted into its
//! machine. Data survives stop/start, updates and deploys; snapshots restore and forks copy
//! it; extending grows the filesystem; deleting leaves no mount, loop device or file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hangar_client::Client as ApiClient;
use hangar_client::deploy::{self, DeployError, DeployOptions, Strategy};
use hangar_testkit::{ADMIN_TOKEN, Client, TEST_IMAGE, TestCluster};
use serde_json::{Value, json};

use super::wait;

/// Polls a volume until `done` holds for it (or it is gone, `None`), bounded.
async fn volume_until(c: &Client, app: &str, id: &str, done: impl Fn(Option<&Value>) -> bool) {
    let mut last = String::new();
    for _ in 0..600 {
        let r = c.get(&format!("/v1/apps/{app}/volumes/{id}")).await;
        let v = (r.status == 200).then(|| r.json());
        if done(v.as_ref()) {
            return;
        }
        last = r.text;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("volume {id} never got there: {last}");
}

async fn created_volume(c: &Client, app: &str, body: Value) -> String {
    let r = c.post(&format!("/v1/apps/{app}/volumes"), &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.json()["id"].as_str().expect("id").to_string();
    volume_until(c, app, &id, |v| v.is_some_and(|v| v["state"] == "created")).await;
    id
}

async fn machine_with(c: &Client, app: &str, volume: &str) -> String {
    let body = json!({"config": {
        "image": TEST_IMAGE,
        "init": {"cmd": ["sh", "-c", "trap 'exit 0' INT TERM; while true; do sleep 0.2; done"]},
        "mounts": [{"volume": volume, "path": "/data"}],
    }});
    let r = c.post(&format!("/v1/apps/{app}/machines"), &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.json()["id"].as_str().expect("id").to_string();
    wait(c, app, &id, "started", "").await;
    id
}

async fn sh(c: &Client, app: &str, id: &str, script: &str) -> String {
    let r = c
        .post(
            &format!("/v1/apps/{app}/machines/{id}/exec"),
            &json!({"command": ["sh", "-c", script]}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let out = r.json();
    assert_eq!(out["exit_code"], 0, "{script}: {out}");
    out["stdout"].as_str().unwrap_or_default().to_string()
}

/// Size of /data in KiB as `df` inside the machine sees it.
async fn df_kib(c: &Client, app: &str, id: &str) -> u64 {
    let out = sh(c, app, id, "df -k /data | tail -n 1").await;
    out.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("df: {out}"))
}

async fn destroy_machine(c: &Client, app: &str, id: &str) {
    let r = c
        .delete(&format!("/v1/apps/{app}/machines/{id}?force=true"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(c, app, id, "destroyed", "").await;
}

async fn delete_volume(c: &Client, app: &str, id: &str) {
    volume_until(c, app, id, |v| {
        v.is_some_and(|v| v.get("attached_machine_id").is_none())
    })
    .await;
    let r = c.delete(&format!("/v1/apps/{app}/volumes/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    volume_until(c, app, id, |v| v.is_none()).await;
}

/// Mounts and loop devices of this cluster's volumes still on the host.
fn left_on_host(volumes: &Path) -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(volumes.to_string_lossy().as_ref()))
        .map(|l| format!("mount: {l}"))
        .collect();
    if let Ok(rd) = std::fs::read_dir("/sys/block") {
        for e in rd.flatten() {
            if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file"))
                && b.starts_with(volumes.to_string_lossy().as_ref())
            {
                left.push(format!("loop device {:?}: {}", e.file_name(), b.trim()));
            }
        }
    }
    left
}

fn volume_dirs(volumes: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(volumes)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_keep_data_copy_it_grow_and_leave_nothing_behind() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    let app = "e2e-vol";
    let volumes = cluster.path().join("volumes");
    super::app(&c, app).await;
    let vol = created_volume(&c, app, json!({"name": "data", "size_gb": 1})).await;

    // A machine writes into it.
    let m1 = machine_with(&c, app, &vol).await;
    sh(&c, app, &m1, "echo persisted > /data/hello && sync").await;
    assert!(
        !left_on_host(&volumes).is_empty(),
        "the volume is loop-mounted on the host"
    );
    let path = format!("/v1/apps/{app}/machines/{m1}");

    // Stop and start: the data is there.
    let r = c.post(&format!("{path}/stop"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, app, &m1, "stopped", "").await;
    let r = c.post(&format!("{path}/start"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, app, &m1, "started", "").await;
    assert_eq!(sh(&c, app, &m1, "cat /data/hello").await, "persisted\n");

    // An update (the mounts repeated without the id): the data is there.
    let body = json!({"config": {
        "image": TEST_IMAGE,
        "init": {"cmd": ["sh", "-c", "trap 'exit 0' INT TERM; while true; do sleep 0.2; done"]},
        "env": {"V": "2"},
        "mounts": [{"path": "/data", "name": "data"}],
    }});
    let r = c.post(&path, &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let instance = r.json()["instance_id"].as_str().expect("v").to_string();
    wait(&c, app, &m1, "started", &format!("&instance_id={instance}")).await;
    assert_eq!(sh(&c, app, &m1, "cat /data/hello").await, "persisted\n");

    // hangard restarts and finds the volume's host mount gone (as after a crash that lost
    // it): the machine keeps its data, and its next boot mounts the volume again.
    cluster.kill_agent().await;
    let mnt = volumes.join(&vol).join("mnt");
    let st = std::process::Command::new("umount")
        .arg("-l")
        .arg(&mnt)
        .status()
        .expect("umount");
    assert!(st.success());
    cluster.start_agent().expect("agent");
    assert_eq!(sh(&c, app, &m1, "cat /data/hello").await, "persisted\n");
    let r = c.post(&format!("{path}/restart"), &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, app, &m1, "started", "").await;
    assert_eq!(sh(&c, app, &m1, "cat /data/hello").await, "persisted\n");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    assert!(
        mounted.contains(mnt.to_string_lossy().as_ref()),
        "mounted again on the host"
    );

    // Size-limited: about 1 GB, writing past it fails.
    let before = df_kib(&c, app, &m1).await;
    assert!((900_000..1_100_000).contains(&before), "{before} KiB");
    let r = c
        .post(
            &format!("{path}/exec"),
            &json!({"command": ["sh", "-c", "dd if=/dev/zero of=/data/big bs=1M count=1200 2>&1; rm -f /data/big"]}),
        )
        .await;
    assert!(
        r.json()["stdout"]
            .as_str()
            .is_some_and(|o| o.contains("No space left")),
        "{}",
        r.text
    );

    // Deleting an attached volume is refused.
    let r = c.delete(&format!("/v1/apps/{app}/volumes/{vol}")).await;
    assert_eq!(r.status, 412, "{}", r.text);

    // Extend: the filesystem grows (online, or at the restart the API asks for).
    let r = c
        .put(
            &format!("/v1/apps/{app}/volumes/{vol}/extend"),
            &json!({"size_gb": 2}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["volume"]["size_gb"], 2);
    eprintln!("extend: needs_restart={}", r.json()["needs_restart"]);
    if r.json()["needs_restart"] == true {
        volume_until(&c, app, &vol, |v| {
            v.is_some_and(|v| v["state"] == "created")
        })
        .await;
        let r = c.post(&format!("{path}/restart"), &json!({})).await;
        assert_eq!(r.status, 200, "{}", r.text);
        wait(&c, app, &m1, "started", "").await;
    }
    let mut grown = 0;
    for _ in 0..100 {
        grown = df_kib(&c, app, &m1).await;
        if grown > before + 500_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(grown > before + 500_000, "df {before} KiB → {grown} KiB");
    assert_eq!(sh(&c, app, &m1, "cat /data/hello").await, "persisted\n");

    // Snapshot, then restore it and fork the volume: both copies have the data.
    let snaps = format!("/v1/apps/{app}/volumes/{vol}/snapshots");
    let r = c.post(&snaps, &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let sid = r.json()["id"].as_str().expect("id").to_string();
    let mut snap = Value::Null;
    for _ in 0..600 {
        snap = c.get(&snaps).await.json()[0].clone();
        if snap["status"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(snap["id"], sid.as_str());
    assert_eq!(snap["status"], "created", "{snap}");
    assert!(snap["size"].as_i64().is_some_and(|s| s > 0), "{snap}");
    assert!(
        snap["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:")),
        "{snap}"
    );
    let restored = created_volume(&c, app, json!({"name": "restored", "snapshot_id": sid})).await;
    let forked = created_volume(&c, app, json!({"source_volume_id": vol, "size_gb": 3})).await;
    // The original keeps changing; the copies do not follow.
    sh(&c, app, &m1, "echo changed > /data/hello").await;
    let m2 = machine_with(&c, app, &restored).await;
    assert_eq!(sh(&c, app, &m2, "cat /data/hello").await, "persisted\n");
    assert!(
        df_kib(&c, app, &m2).await > before + 500_000,
        "restored at 2 GB"
    );
    let m3 = machine_with(&c, app, &forked).await;
    assert_eq!(sh(&c, app, &m3, "cat /data/hello").await, "persisted\n");
    assert!(df_kib(&c, app, &m3).await > 2_500_000, "forked at 3 GB");

    // Destroyed machines free their volumes; deleted volumes leave nothing on the host.
    for m in [&m1, &m2, &m3] {
        destroy_machine(&c, app, m).await;
    }
    for v in [&vol, &restored, &forked] {
        delete_volume(&c, app, v).await;
    }
    assert_eq!(left_on_host(&volumes), Vec::<String>::new());
    assert_eq!(volume_dirs(&volumes), Vec::<PathBuf>::new());
}

const FLY_TOML: &str = r#"
app = "vdep"
primary_region = "local"

[processes]
web = "sh -c 'echo boot-$GREETING >> /data/boots; trap \"exit 0\" TERM INT; while true; do sleep 0.2; done'"

[[mounts]]
source = "data"
destination = "/data"
initial_size = "1gb"
"#;

fn options(strategy: Strategy, greeting: &str) -> DeployOptions {
    DeployOptions {
        app: "vdep".into(),
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
async fn deploys_with_mounts_keep_each_machines_volume() {
    let cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    let volumes = cluster.path().join("volumes");
    let client = ApiClient::new(&format!("http://{}", cluster.api), ADMIN_TOKEN).expect("client");
    let config = hangar_manifest::parse(FLY_TOML, hangar_manifest::Format::Toml, "fly.toml")
        .expect("fly.toml")
        .config;

    // First deploy: a volume made for the machine, and mounted.
    let report = run(&client, &config, &options(Strategy::Rolling, "v1"))
        .await
        .expect("first deploy");
    assert_eq!(report.created.len(), 1, "{report:?}");
    let id = report.created[0].clone();
    let vols = client.volumes("vdep").await.expect("volumes");
    assert_eq!(vols.len(), 1, "{vols:?}");
    assert_eq!(vols[0].name, "data");
    assert_eq!(vols[0].attached_machine_id.as_deref(), Some(id.as_str()));
    assert_eq!(sh(&c, "vdep", &id, "cat /data/boots").await, "boot-v1\n");

    // Later deploys keep the machine and its volume, so its data.
    let report = run(&client, &config, &options(Strategy::Rolling, "v2"))
        .await
        .expect("second deploy");
    assert_eq!(report.updated, vec![id.clone()], "{report:?}");
    let report = run(&client, &config, &options(Strategy::Immediate, "v3"))
        .await
        .expect("third deploy");
    assert_eq!(report.updated, vec![id.clone()], "{report:?}");
    let m = client.machine("vdep", &id).await.expect("machine");
    client
        .wait(
            "vdep",
            &id,
            "started",
            Some(&m.instance_id),
            Duration::from_secs(30),
        )
        .await
        .expect("started");
    let mut boots = String::new();
    for _ in 0..50 {
        boots = sh(&c, "vdep", &id, "cat /data/boots").await;
        if boots.contains("boot-v3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(boots, "boot-v1\nboot-v2\nboot-v3\n");
    let vols = client.volumes("vdep").await.expect("volumes");
    assert_eq!(vols.len(), 1, "no second volume: {vols:?}");

    // Strategies that need a second machine on the same data are refused.
    let err = run(&client, &config, &options(Strategy::Canary, "v4"))
        .await
        .expect_err("canary with mounts");
    assert!(matches!(err, DeployError::Config(_)), "{err}");

    // The app goes, and its volume with it: nothing stays on the host.
    let r = c.delete("/v1/apps/vdep").await;
    assert_eq!(r.status, 202, "{}", r.text);
    for _ in 0..200 {
        if volume_dirs(&volumes).is_empty() && left_on_host(&volumes).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(left_on_host(&volumes), Vec::<String>::new());
    assert_eq!(volume_dirs(&volumes), Vec::<PathBuf>::new());
}
