//! Outbound IPv4: a machine reaches a server outside the host through NAT. The "outside" is a
//! network namespace the test makes, joined to the host by a veth, with no route back to the
//! machines' pool: only masquerading lets the answer come back.

use std::process::{Command, Stdio};
use std::time::Duration;

use hangar_testkit::{TEST_IMAGE, TestCluster};
use serde_json::json;

use super::wait;

/// The outside world: a namespace and a veth, removed on drop.
struct World {
    netns: String,
    host_if: String,
}

impl World {
    fn new() -> World {
        let tag = std::process::id() % 100_000;
        let w = World {
            netns: format!("hgw-{tag}"),
            host_if: format!("hgwh{tag}"),
        };
        w.remove();
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["netns", "add", &w.netns]);
        run(&[
            "link", "add", &w.host_if, "type", "veth", "peer", "name", "w0", "netns", &w.netns,
        ]);
        run(&["addr", "add", "198.18.77.1/30", "dev", &w.host_if]);
        run(&["link", "set", &w.host_if, "up"]);
        run(&["-n", &w.netns, "addr", "add", "198.18.77.2/30", "dev", "w0"]);
        run(&["-n", &w.netns, "link", "set", "w0", "up"]);
        run(&["-n", &w.netns, "link", "set", "lo", "up"]);
        w
    }

    fn remove(&self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.remove();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_reaches_the_outside_over_nated_ipv4() {
    let cluster = TestCluster::start().await.expect("cluster");
    let world = World::new();
    // A one-shot server outside: reports the line it gets (on stderr), answers "pong".
    let server = tokio::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &world.netns,
            "busybox",
            "nc",
            "-l",
            "-p",
            "9999",
            "-e",
        ])
        .args(["sh", "-c", "read line; echo \"got:$line\" >&2; echo pong"])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("server");
    // Listening before anyone connects (port 9999 = 0x270F, state 0A = LISTEN).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let tcp = Command::new("ip")
            .args([
                "netns",
                "exec",
                &world.netns,
                "cat",
                "/proc/net/tcp",
                "/proc/net/tcp6",
            ])
            .output()
            .expect("ip");
        let listening = String::from_utf8_lossy(&tcp.stdout).lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1).is_some_and(|a| a.ends_with(":270F")) && f.get(3) == Some(&"0A")
        });
        if listening {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let c = cluster.client();
    let app = "egress-app";
    super::app(&c, app).await;
    let r = c
        .post(
            &format!("/v1/apps/{app}/machines"),
            &json!({"config": {"image": TEST_IMAGE, "init": {"cmd": ["sleep", "100000"]}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let id = r.json()["id"].as_str().expect("id").to_string();
    wait(&c, app, &id, "started", "").await;
    let exec = |script: &str| {
        let c = c.clone();
        let path = format!("/v1/apps/{app}/machines/{id}/exec");
        let body = json!({"command": ["sh", "-c", script], "timeout": 10});
        async move {
            let r = c.post(&path, &body).await;
            assert_eq!(r.status, 200, "{}", r.text);
            r.json()
        }
    };
    // It has an address from the cluster's pool and a default route.
    let out = exec("ip -4 addr show dev eth0; ip -4 route").await;
    let text = out["stdout"].as_str().unwrap_or_default().to_string();
    assert!(text.contains("inet 172.2"), "{out}");
    assert!(text.contains("default via 169.254.0.1"), "{out}");
    // Out and back.
    let out = exec("echo ping-from-machine | nc -w 5 198.18.77.2 9999").await;
    assert_eq!(out["stdout"], "pong\n", "{out}");
    let got = tokio::time::timeout(Duration::from_secs(10), server.wait_with_output())
        .await
        .expect("server finished")
        .expect("server output");
    assert_eq!(
        String::from_utf8_lossy(&got.stderr),
        "got:ping-from-machine\n",
        "{got:?}"
    );
    // Cloud metadata addresses are not reachable.
    let out = exec("nc -w 2 169.254.169.254 80 </dev/null; echo rc=$?").await;
    assert!(
        out["stdout"].as_str().is_some_and(|s| s.contains("rc=1")),
        "{out}"
    );
    // Destroyed: its host route goes with it.
    let v4 = text
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .expect("v4")
        .to_string();
    let routes = || {
        String::from_utf8_lossy(
            &Command::new("ip")
                .args(["-4", "route"])
                .output()
                .expect("ip")
                .stdout,
        )
        .into_owned()
    };
    assert!(routes().contains(&v4));
    let r = c
        .delete(&format!("/v1/apps/{app}/machines/{id}?force=true"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    wait(&c, app, &id, "destroyed", "").await;
    assert!(!routes().contains(&format!("{v4} ")), "{}", routes());
    drop(world);
}
