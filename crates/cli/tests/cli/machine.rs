//! `machine run|update|clone` and `scale vm|memory` through the `hangar` binary against a real
//! host (a `TestCluster`): the configs the flags make, as the machines then carry them; the
//! diff `update` shows and its refusal off a terminal without `--yes`; a clone's overrides and
//! its new volume; every machine of a group getting the new guest, started ones started again
//! and stopped ones left stopped. Bad flags exit 2 before the API is asked anything.

use std::process::Command;

use hangar_testkit::{TEST_IMAGE, TestCluster};
use serde_json::{Value, json};

use super::live::{Hangar, until, write};
use super::{stderr, stdout};

/// The binary with a token and an API address nothing listens on: what fails here fails
/// before the API is asked.
fn offline(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hangar"))
        .args(args)
        .env("HANGAR_API_URL", "http://127.0.0.1:9")
        .env("HANGAR_API_TOKEN", "unused")
        .env_remove("FLY_API_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run hangar")
}

#[test]
fn bad_machine_flags_exit_2_with_what_is_wrong() {
    for (args, says) in [
        (
            vec!["machine", "run", TEST_IMAGE, "-a", "x", "-p", "80:abc"],
            "invalid --port '80:abc': machine port 'abc' is not a port number (1-65535); use port[:machinePort][/protocol[:handler...]]",
        ),
        (
            vec!["machine", "run", TEST_IMAGE, "-a", "x", "-p", "80/tcp:htp"],
            "unknown handler 'htp'; use tls, http, proxy_proto, pg_tls, edge_http",
        ),
        (
            vec!["machine", "run", TEST_IMAGE, "-a", "x", "-p", "80/sctp"],
            "protocol 'sctp' is neither tcp nor udp",
        ),
        (
            vec!["machine", "run", TEST_IMAGE, "-a", "x", "-e", "NOVALUE"],
            "invalid --env 'NOVALUE': use NAME=VALUE",
        ),
        (
            vec!["machine", "run", TEST_IMAGE, "-a", "x", "-v", "data"],
            "use <volume_id_or_name>:/path/inside/machine",
        ),
        (
            vec![
                "machine",
                "run",
                TEST_IMAGE,
                "-a",
                "x",
                "--restart",
                "sometimes",
            ],
            "invalid --restart 'sometimes': use no, always or on-failure",
        ),
        (
            vec!["machine", "run", TEST_IMAGE, "-a", "x", "--vm-size", "huge"],
            "unknown VM size 'huge'; use one of: shared-cpu-1x",
        ),
        (
            vec![
                "machine",
                "run",
                TEST_IMAGE,
                "-a",
                "x",
                "--machine-config",
                "{oops",
            ],
            "invalid --machine-config JSON",
        ),
        (
            vec!["machine", "run", TEST_IMAGE, "-a", "x", "--autostop=maybe"],
            "'maybe' is not off, stop or suspend",
        ),
        (vec!["machine", "run", "-a", "x"], "<IMAGE>"),
        (
            vec!["machine", "update", "m1", "-a", "x", "-p", "0"],
            "port '0' is not a port number",
        ),
        (
            vec!["machine", "clone", "m1", "-a", "x", "--vm-cpus", "0"],
            "--vm-cpus must be at least 1",
        ),
        (
            vec![
                "machine",
                "clone",
                "m1",
                "-a",
                "x",
                "--attach-volume",
                "vol_1:data",
            ],
            "invalid --attach-volume 'vol_1:data'",
        ),
        (vec!["scale", "vm", "-a", "x"], "which size?"),
        (
            vec!["scale", "vm", "shared-cpu-3x", "-a", "x"],
            "unknown VM size",
        ),
        (
            vec!["scale", "memory", "lots", "-a", "x"],
            "invalid size 'lots'",
        ),
        (
            vec!["scale", "memory", "0", "-a", "x"],
            "must be above zero",
        ),
    ] {
        let o = offline(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
        assert!(
            !stderr(&o).contains("can not reach"),
            "{args:?} asked the API: {}",
            stderr(&o)
        );
    }
}

fn machine<'a>(ms: &'a Value, id: &str) -> &'a Value {
    ms.as_array()
        .and_then(|a| a.iter().find(|m| m["id"] == id))
        .unwrap_or_else(|| panic!("machine {id} in {ms:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_update_and_clone_make_the_machines_their_flags_say() {
    let cluster = TestCluster::start().await.expect("cluster");
    let h = Hangar::new(cluster.api, "mrun");
    h.ok(&["apps", "create", "mrun", "-o", "personal"]).await;
    h.ok(&[
        "volumes", "create", "data", "-s", "1", "-r", "local", "-a", "mrun",
    ])
    .await;

    // run: ports, env, metadata, a volume by name; waits until started and prints JSON.
    let m = h
        .json(&[
            "machine",
            "run",
            TEST_IMAGE,
            "-a",
            "mrun",
            "-n",
            "first",
            "-p",
            "80:8080/tcp:http",
            "-p",
            "443:8080/tcp:tls:http",
            "-e",
            "GREETING=hi",
            "-m",
            "team=core",
            "-v",
            "data:/data",
            "--autostop",
            "--json",
            "sleep",
            "100000",
        ])
        .await;
    let id = m["id"].as_str().expect("id").to_string();
    assert_eq!(m["state"], "started", "{m:#}");
    assert_eq!(m["name"], "first");
    assert!(
        m["private_ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("fdaa:")),
        "{m:#}"
    );
    let c = &m["config"];
    assert_eq!(c["image"], TEST_IMAGE);
    assert_eq!(c["init"]["cmd"], json!(["sleep", "100000"]));
    assert_eq!(c["env"]["GREETING"], "hi");
    assert_eq!(c["metadata"]["team"], "core");
    assert_eq!(c["guest"]["memory_mb"], 256);
    assert_eq!(c["mounts"][0]["path"], "/data");
    assert_eq!(c["mounts"][0]["name"], "data");
    assert_eq!(
        c["services"],
        json!([{
            "protocol": "tcp",
            "internal_port": 8080,
            "autostop": true,
            "ports": [
                {"port": 80, "handlers": ["http"]},
                {"port": 443, "handlers": ["tls", "http"]},
            ],
        }])
    );

    // run --detach: the id, the 6PN address and the state, without waiting.
    let o = h
        .run(&[
            "machine", "run", TEST_IMAGE, "-a", "mrun", "--detach", "sleep", "100000",
        ])
        .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("has been launched in app mrun"), "{out}");
    assert!(out.contains(" Private IP: fdaa:"), "{out}");
    assert!(out.contains(" State: "), "{out}");
    assert!(!stderr(&o).contains("Waiting"), "{}", stderr(&o));

    // run --rm: auto-destroy with restart no; the machine goes once its command exits.
    let rm = h
        .json(&[
            "machine", "run", TEST_IMAGE, "-a", "mrun", "--rm", "--detach", "--json", "true",
        ])
        .await;
    assert_eq!(rm["config"]["auto_destroy"], true, "{rm:#}");
    assert_eq!(rm["config"]["restart"]["policy"], "no", "{rm:#}");
    let rm_id = rm["id"].as_str().expect("id").to_string();
    until(&h, &["machine", "list", "-a", "mrun", "--json"], |ms| {
        ms.as_array().is_some_and(|a| {
            a.iter()
                .all(|m| m["id"] != rm_id.as_str() || m["state"] == "destroyed")
        })
    })
    .await;

    // update off a terminal without --yes: the diff, then a refusal; nothing changes.
    let o = h
        .run(&["machine", "update", &id, "-a", "mrun", "-e", "GREETING=bye"])
        .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("pass --yes"), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("~ env.GREETING: \"hi\" -> \"bye\""),
        "{}",
        stdout(&o)
    );
    let now = h.json(&["machine", "status", &id, "-a", "mrun"]).await;
    assert_eq!(now["config"]["env"]["GREETING"], "hi");
    assert_eq!(now["instance_id"], m["instance_id"]);

    // update --yes: applied, a new version, started again, the volume kept.
    let out = h
        .ok(&[
            "machine",
            "update",
            &id,
            "-a",
            "mrun",
            "-e",
            "GREETING=bye",
            "-p",
            "443:8080/tcp:-",
            "--yes",
        ])
        .await;
    assert!(
        out.contains(&format!("Machine {id} has been updated")),
        "{out}"
    );
    assert!(out.contains(" State: started"), "{out}");
    assert!(out.contains("- services[0]"), "{out}");
    let now = h.json(&["machine", "status", &id, "-a", "mrun"]).await;
    assert_eq!(now["config"]["env"]["GREETING"], "bye");
    assert_eq!(now["config"]["metadata"]["team"], "core");
    assert!(
        now["config"]["services"].is_null(),
        "'-' removes the service: {now:#}"
    );
    assert_eq!(
        now["config"]["mounts"][0]["volume"],
        c["mounts"][0]["volume"]
    );
    assert_ne!(now["instance_id"], m["instance_id"]);
    assert_eq!(now["state"], "started");
    // The same again: nothing to apply.
    let out = h
        .ok(&[
            "machine",
            "update",
            &id,
            "-a",
            "mrun",
            "-e",
            "GREETING=bye",
            "--yes",
        ])
        .await;
    assert!(out.contains("No changes to apply"), "{out}");

    // clone: the source's config with the overrides, in another region, with a new empty
    // volume of the same name there.
    let out = h
        .ok(&[
            "machine",
            "clone",
            &id,
            "-a",
            "mrun",
            "--region",
            "ams",
            "--name",
            "cloned",
            "--override-cmd",
            "sleep 99999",
            "--vm-memory",
            "512",
        ])
        .await;
    assert!(out.contains("Created volume"), "{out}");
    assert!(out.contains(" State: started"), "{out}");
    let ms = h.json(&["machine", "list", "-a", "mrun", "--json"]).await;
    let clone = ms
        .as_array()
        .and_then(|a| a.iter().find(|m| m["name"] == "cloned"))
        .unwrap_or_else(|| panic!("the clone in {ms:#}"));
    assert_eq!(clone["region"], "ams");
    assert_eq!(clone["state"], "started");
    let cc = &clone["config"];
    assert_eq!(cc["init"]["cmd"], json!(["sleep", "99999"]));
    assert_eq!(cc["env"]["GREETING"], "bye");
    assert_eq!(cc["metadata"]["team"], "core");
    assert_eq!(cc["guest"]["memory_mb"], 512);
    assert_eq!(cc["mounts"][0]["path"], "/data");
    assert_ne!(cc["mounts"][0]["volume"], c["mounts"][0]["volume"]);
    let vols = h.json(&["volumes", "list", "-a", "mrun", "--json"]).await;
    let mut attached: Vec<(String, String)> = vols
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| {
            (
                v["region"].as_str().unwrap_or_default().to_string(),
                v["attached_machine_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    attached.sort();
    assert_eq!(
        attached,
        vec![
            (
                "ams".to_string(),
                clone["id"].as_str().unwrap_or_default().to_string()
            ),
            ("local".to_string(), id.clone()),
        ],
        "{vols:#}"
    );
    // The source is untouched.
    assert_eq!(machine(&ms, &id)["config"]["guest"]["memory_mb"], 256);

    // Several machines and no id: the command asks which.
    let o = h
        .run(&["machine", "update", "-a", "mrun", "-e", "A=1"])
        .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("which machine?"), "{}", stderr(&o));
    // A missing app is named.
    let o = h.run(&["machine", "run", TEST_IMAGE, "-a", "nope"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("app nope does not exist: create it with `hangar apps create nope`"),
        "{}",
        stderr(&o)
    );
}

const SCALE_TOML: &str = r#"
app = "vm"
primary_region = "local"

[build]
  image = "hangar-test/busybox:latest"

[processes]
  app = "sleep 100000"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_vm_and_memory_change_every_machine_of_the_group() {
    let cluster = TestCluster::start().await.expect("cluster");
    let h = Hangar::new(cluster.api, "scalevm");
    let dir = h.dir().join("vm");
    write(&dir, "fly.toml", SCALE_TOML);
    let cfg = dir.display().to_string();
    h.ok(&["deploy", "-c", &cfg]).await;
    h.ok(&["scale", "count", "3", "-c", &cfg]).await;
    let ms = until(&h, &["machine", "list", "-a", "vm", "--json"], |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().all(|m| m["state"] == "started"))
    })
    .await;
    // One stopped: it gets the new guest and stays stopped.
    let stopped = ms[0]["id"].as_str().expect("id").to_string();
    h.ok(&["machine", "stop", &stopped, "-a", "vm"]).await;
    until(&h, &["machine", "list", "-a", "vm", "--json"], |v| {
        machine(v, &stopped)["state"] == "stopped"
    })
    .await;

    let o = h.run(&["scale", "vm", "shared-cpu-2x", "-a", "vm"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "Scaled VM Type for 'app' to 'shared-cpu-2x'\n      CPU Cores: 2\n         Memory: 512 MB\n"
    );
    let err = stderr(&o);
    assert_eq!(err.matches("Updating machine").count(), 3, "{err}");
    assert!(err.contains("(3/3)"), "{err}");
    assert!(err.contains("left stopped"), "{err}");
    let ms = h.json(&["machine", "list", "-a", "vm", "--json"]).await;
    for m in ms.as_array().expect("machines") {
        let g = &m["config"]["guest"];
        assert_eq!(
            (&g["cpus"], &g["memory_mb"]),
            (&json!(2), &json!(512)),
            "{m:#}"
        );
        assert_eq!(g["cpu_kind"], "shared");
        let want = if m["id"] == stopped.as_str() {
            "stopped"
        } else {
            "started"
        };
        assert_eq!(m["state"], want, "{m:#}");
    }

    let out = h.ok(&["scale", "memory", "1gb", "-a", "vm"]).await;
    assert!(out.contains("Memory: 1 GB"), "{out}");
    let ms = h.json(&["machine", "list", "-a", "vm", "--json"]).await;
    for m in ms.as_array().expect("machines") {
        let g = &m["config"]["guest"];
        assert_eq!(
            (&g["cpus"], &g["memory_mb"]),
            (&json!(2), &json!(1024)),
            "{m:#}"
        );
    }
    // The same size again: nothing to do, said so.
    let o = h.run(&["scale", "memory", "1024", "-a", "vm"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).matches("has that VM already").count(),
        3,
        "{}",
        stderr(&o)
    );

    // A group with no machines: a clear error, nothing changed.
    let o = h
        .run(&["scale", "vm", "performance-1x", "-g", "worker", "-a", "vm"])
        .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no machines in process group 'worker'"),
        "{}",
        stderr(&o)
    );
}
