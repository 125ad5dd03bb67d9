//! The binary against a real host (a `TestCluster`: store, API, agent and real containers in
//! the test process): the tables and `--json` of every listing against goldens, `launch`,
//! `certs`, and the errors users see for a missing or wrong token.
//!
//! Outputs carry ids, addresses and times that change from run to run: [`Scrub`] learns them
//! from the `--json` listings and replaces them, in tables too, with placeholders of the same
//! length (so columns stay aligned), and zeroes every RFC 3339 time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use hangar_testkit::{ADMIN_TOKEN, TEST_IMAGE, TestCluster};
use serde_json::Value;

use super::{TempDir, golden, stderr, stdout};

/// Runs the `hangar` binary against one API, as a user would: no terminal on stdin, no token
/// but the one given, no host admin token file to fall back on.
pub(crate) struct Hangar {
    api: String,
    token: Option<String>,
    home: TempDir,
}

impl Hangar {
    pub(crate) fn new(api: SocketAddr, tag: &str) -> Self {
        Self {
            api: format!("http://{api}"),
            token: Some(ADMIN_TOKEN.into()),
            home: TempDir::new(&format!("home-{tag}")),
        }
    }

    pub(crate) fn without_token(mut self) -> Self {
        self.token = None;
        self
    }

    pub(crate) fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.into());
        self
    }

    /// A directory of this runner's own (removed with it).
    pub(crate) fn dir(&self) -> &Path {
        &self.home.0
    }

    pub(crate) async fn run(&self, args: &[&str]) -> Output {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_hangar"));
        c.args(args)
            .env("HANGAR_API_URL", &self.api)
            .env("HANGAR_DATA_DIR", self.home.0.join("no-hangard"))
            .env_remove("HANGAR_API_TOKEN")
            .env_remove("FLY_API_TOKEN")
            .env_remove("HANGAR_DOMAIN")
            .current_dir(&self.home.0)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Some(t) = &self.token {
            c.env("HANGAR_API_TOKEN", t);
        }
        c.output().await.expect("run hangar")
    }

    /// Runs and expects exit code 0; stdout.
    pub(crate) async fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args).await;
        assert_eq!(
            o.status.code(),
            Some(0),
            "hangar {args:?}\nstdout: {}\nstderr: {}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// Runs a `--json` listing; the parsed value.
    pub(crate) async fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("hangar {args:?}: {e}: {out}"))
    }
}

/// Keys whose values change from run to run.
const VOLATILE: &[&str] = &[
    "id",
    "instance_id",
    "private_ip",
    "created_at",
    "updated_at",
    "timestamp",
    "nonce",
    "image_ref",
    "digest",
    "expires_at",
    "attached_machine_id",
    "attached_alloc_id",
    "app_value",
    "host_dedication_id",
    "version",
];

/// Replaces what changes between runs with placeholders of the same length.
#[derive(Default)]
pub(crate) struct Scrub {
    map: BTreeMap<String, String>,
    n: usize,
}

impl Scrub {
    fn placeholder(&mut self, key: &str, value: &str) -> String {
        if let Some(p) = self.map.get(value) {
            return p.clone();
        }
        self.n += 1;
        let p = format!("<{key}{}>", self.n);
        self.map.insert(value.to_string(), p.clone());
        p
    }

    /// Learns the volatile values of a JSON output (and the short forms tables show).
    pub(crate) fn learn(&mut self, v: &Value) {
        match v {
            Value::Object(o) => {
                // Machines' generated names.
                if o.contains_key("instance_id")
                    && let Some(n) = o.get("name").and_then(Value::as_str)
                {
                    self.placeholder("name", n);
                }
                for (k, x) in o {
                    if VOLATILE.contains(&k.as_str()) {
                        if let Some(s) = x.as_str().filter(|s| s.len() >= 4 && !is_time(s)) {
                            self.placeholder(k, s);
                            if k == "instance_id" && s.len() > 6 {
                                // `status` shows the last six characters.
                                let tail: String = s[s.len() - 6..].to_string();
                                self.placeholder("v", &tail);
                            }
                        }
                    } else {
                        self.learn(x);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| self.learn(x)),
            _ => {}
        }
    }

    /// A JSON output with volatile values replaced.
    pub(crate) fn json(&mut self, v: &Value) -> String {
        fn walk(s: &mut Scrub, v: &Value) -> Value {
            match v {
                Value::Object(o) => Value::Object(
                    o.iter()
                        .map(|(k, x)| {
                            let x = if VOLATILE.contains(&k.as_str()) {
                                match x {
                                    Value::String(t) if is_time(t) => Value::String(zero_times(t)),
                                    Value::String(t) if t.len() >= 4 => {
                                        Value::String(s.placeholder(k, t))
                                    }
                                    Value::Number(_) => Value::String(format!("<{k}>")),
                                    other => walk(s, other),
                                }
                            } else {
                                walk(s, x)
                            };
                            (k.clone(), x)
                        })
                        .collect(),
                ),
                Value::Array(a) => Value::Array(a.iter().map(|x| walk(s, x)).collect()),
                Value::String(t) => Value::String(s.text(t)),
                other => other.clone(),
            }
        }
        self.learn(v);
        let out = walk(self, v);
        serde_json::to_string_pretty(&out).expect("json") + "\n"
    }

    /// A text output with every learned value replaced, times zeroed, and runs of spaces
    /// (column padding, which follows the lengths of what was replaced) made two spaces.
    /// Tables are checked for alignment before that (see [`aligned`]).
    pub(crate) fn text(&self, s: &str) -> String {
        let mut pairs: Vec<(&String, &String)> = self.map.iter().collect();
        pairs.sort_by_key(|(k, _)| std::cmp::Reverse(k.len()));
        let mut out = s.to_string();
        for (k, v) in pairs {
            out = out.replace(k.as_str(), v);
        }
        let mut lines = String::new();
        for line in zero_times(&out).lines() {
            let mut l = String::new();
            for (i, part) in line.split("  ").enumerate() {
                if i == 0 {
                    l.push_str(part);
                } else if !part.is_empty() {
                    l.push_str("  ");
                    l.push_str(part.trim_start());
                }
            }
            lines.push_str(&l);
            lines.push('\n');
        }
        lines
    }
}

/// `table` when its columns line up: every row has two spaces before each column the header
/// starts (where the row is that long).
pub(crate) fn aligned(table: String) -> String {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let starts: Vec<usize> = header
        .char_indices()
        .filter(|(i, c)| *i >= 2 && *c != ' ' && header[..*i].ends_with("  "))
        .map(|(i, _)| i)
        .collect();
    for row in lines {
        for &p in &starts {
            if row.len() > p {
                assert_eq!(
                    row.get(p - 2..p),
                    Some("  "),
                    "column at {p} not aligned:\n{table}"
                );
            }
        }
    }
    table
}

fn is_time(s: &str) -> bool {
    zero_times(s) != s
}

/// `2025-01-02T03:04:05.123Z` → `0000-00-00T00:00:00.000Z` (any RFC 3339 time in the text).
fn zero_times(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = b.to_vec();
    let shape = b"dddd-dd-ddTdd:dd:dd";
    let mut i = 0;
    while i + shape.len() <= b.len() {
        let hit = shape.iter().enumerate().all(|(j, c)| match c {
            b'd' => b[i + j].is_ascii_digit(),
            c => b[i + j] == *c,
        });
        if hit {
            let mut end = i + shape.len();
            if end < b.len() && b[end] == b'.' {
                end += 1;
                while end < b.len() && b[end].is_ascii_digit() {
                    end += 1;
                }
            }
            for x in &mut out[i..end] {
                if x.is_ascii_digit() {
                    *x = b'0';
                }
            }
            i = end;
        } else {
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// Polls a `--json` listing until `done` holds (bounded: what the host does takes its time).
pub(crate) async fn until(h: &Hangar, args: &[&str], done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        last = h.json(args).await;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("hangar {args:?} never got there: {last:#}");
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent).expect("dir");
    }
    std::fs::write(&p, text).expect("write");
    p
}

const GOLD_TOML: &str = r#"
app = "gold"
primary_region = "local"

[build]
  image = "hangar-test/busybox:latest"

[env]
  GREETING = "hello"

[processes]
  app = "sleep 100000"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_match_their_goldens_as_tables_and_json() {
    let cluster = TestCluster::start().await.expect("cluster");
    let h = Hangar::new(cluster.api, "golden");
    let mut scrub = Scrub::default();
    let check = |name: &str, out: String| golden(name, &out);

    // An app with one machine (no services: one machine, no checks).
    let app_dir = h.dir().join("gold");
    write(&app_dir, "fly.toml", GOLD_TOML);
    let cfg = app_dir.display().to_string();
    h.ok(&["deploy", "-c", &cfg]).await;
    until(&h, &["machine", "list", "-a", "gold", "--json"], |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["state"] == "started")
    })
    .await;

    let apps = h.json(&["apps", "list", "--json"]).await;
    check("list-apps.json", scrub.json(&apps));
    check(
        "list-apps.txt",
        scrub.text(&aligned(h.ok(&["apps", "list"]).await)),
    );

    let ms = h.json(&["machine", "list", "-a", "gold", "--json"]).await;
    check("list-machines.json", scrub.json(&ms));
    check(
        "list-machines.txt",
        scrub.text(&aligned(h.ok(&["machine", "list", "-a", "gold"]).await)),
    );

    let st = h.json(&["status", "-c", &cfg, "--json"]).await;
    check("status.json", scrub.json(&st));
    let status = h.ok(&["status", "-c", &cfg]).await;
    aligned(
        status
            .split_once("\n\n")
            .expect("app, then machines")
            .1
            .to_string(),
    );
    check("status.txt", scrub.text(&status));

    let out = h
        .ok(&["secrets", "set", "API_KEY=s3cr3t", "-a", "gold", "--stage"])
        .await;
    check("secrets-set.txt", scrub.text(&out));
    let sec = h.json(&["secrets", "list", "-a", "gold", "--json"]).await;
    assert!(!sec.to_string().contains("s3cr3t"), "values never listed");
    check("list-secrets.json", scrub.json(&sec));
    check(
        "list-secrets.txt",
        scrub.text(&aligned(h.ok(&["secrets", "list", "-a", "gold"]).await)),
    );

    h.ok(&[
        "volumes", "create", "data", "-s", "1", "-r", "local", "-a", "gold",
    ])
    .await;
    let vols = until(&h, &["volumes", "list", "-a", "gold", "--json"], |v| {
        v.as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["state"] == "created")
    })
    .await;
    check("list-volumes.json", scrub.json(&vols));
    check(
        "list-volumes.txt",
        scrub.text(&aligned(h.ok(&["volumes", "list", "-a", "gold"]).await)),
    );

    let added = h
        .ok(&["certs", "add", "www.example.com", "-a", "gold"])
        .await;
    check("certs-add.txt", scrub.text(&added));
    let certs = h.json(&["certs", "list", "-a", "gold", "--json"]).await;
    check("list-certs.json", scrub.json(&certs));
    check(
        "list-certs.txt",
        scrub.text(&aligned(h.ok(&["certs", "list", "-a", "gold"]).await)),
    );
    let show = h
        .json(&["certs", "show", "www.example.com", "-a", "gold", "--json"])
        .await;
    check("certs-show.json", scrub.json(&show));
    check(
        "certs-show.txt",
        scrub.text(
            &h.ok(&["certs", "show", "www.example.com", "-a", "gold"])
                .await,
        ),
    );
    let checked = h
        .ok(&["certs", "check", "www.example.com", "-a", "gold"])
        .await;
    assert!(checked.contains("www.example.com"), "{checked}");
    // A wildcard: the DNS-01 record to set (the test cluster serves an ACME DNS zone).
    let wildcard = h.ok(&["certs", "add", "*.example.com", "-a", "gold"]).await;
    check("certs-add-wildcard.txt", scrub.text(&wildcard));
    h.ok(&["certs", "remove", "*.example.com", "-a", "gold", "--yes"])
        .await;

    let regions = h.json(&["platform", "regions", "--json"]).await;
    check("list-regions.json", scrub.json(&regions));
    check(
        "list-regions.txt",
        scrub.text(&aligned(h.ok(&["platform", "regions"]).await)),
    );

    // Removing asks; off a terminal it says to pass --yes and changes nothing.
    let o = h
        .run(&["certs", "remove", "www.example.com", "-a", "gold"])
        .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("pass --yes"), "{}", stderr(&o));
    h.ok(&["certs", "remove", "www.example.com", "-a", "gold", "--yes"])
        .await;
    let certs = h.json(&["certs", "list", "-a", "gold", "--json"]).await;
    assert_eq!(certs, serde_json::json!([]));
    let o = h
        .run(&["certs", "show", "www.example.com", "-a", "gold"])
        .await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("certificate not found"),
        "{}",
        stderr(&o)
    );
    // A hostname the API refuses: its reason, exit code 3.
    let o = h
        .run(&["certs", "add", "gold.localhost", "-a", "gold"])
        .await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("platform's domain"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_token_and_an_unreachable_api_say_what_to_do() {
    let cluster = TestCluster::start().await.expect("cluster");
    let none = Hangar::new(cluster.api, "notoken").without_token();
    let o = none.run(&["apps", "list"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("no API token"), "{e}");
    assert!(
        e.contains("--access-token") && e.contains("HANGAR_API_TOKEN"),
        "{e}"
    );

    let wrong = Hangar::new(cluster.api, "badtoken").with_token("not-a-token");
    let o = wrong.run(&["apps", "list"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("HTTP 401"), "{e}");
    assert!(e.contains("did not accept the token"), "{e}");

    // Nothing listens on port 1.
    let o = wrong
        .run(&["apps", "list", "--api-url", "http://127.0.0.1:1"])
        .await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("is hangard running?"), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_writes_a_valid_fly_toml_creates_the_app_and_deploys() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let proxy = cluster.start_proxy(hangar_proxy::ProxyConfig {
        port_map: std::collections::HashMap::from([(80, 0), (443, 0)]),
        ..hangar_proxy::ProxyConfig::default()
    });
    let h = Hangar::new(cluster.api, "launch");

    // Off a terminal, without --yes: nothing is asked, nothing is made.
    let img = h.dir().join("img");
    std::fs::create_dir_all(&img).expect("dir");
    let p = img.display().to_string();
    let o = h
        .run(&[
            "launch", "--image", TEST_IMAGE, "--name", "lx", "--path", &p,
        ])
        .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("pass --yes"), "{}", stderr(&o));
    assert!(!img.join("fly.toml").exists());
    assert_eq!(
        h.json(&["apps", "list", "--json"]).await,
        serde_json::json!([])
    );

    // A project with a Dockerfile: its EXPOSE is the internal port; --no-deploy.
    let proj = h.dir().join("My_Shop");
    write(
        &proj,
        "Dockerfile",
        "FROM alpine AS build\nEXPOSE 9999\nFROM busybox\nEXPOSE 3000/tcp\nCMD [\"httpd\"]\n",
    );
    let pp = proj.display().to_string();
    let out = h
        .ok(&[
            "launch",
            "--path",
            &pp,
            "--yes",
            "--no-deploy",
            "-r",
            "ams",
            "--vm-memory",
            "512",
        ])
        .await;
    assert!(out.contains("Wrote"), "{out}");
    let text = std::fs::read_to_string(proj.join("fly.toml")).expect("fly.toml");
    let body = text.split_once("\n#\n\n").expect("header").1;
    golden("launch-dockerfile.toml", body);
    assert!(text.starts_with("# fly.toml app configuration file generated for my-shop on "));
    let v = h.json(&["config", "validate", "-c", &pp, "--json"]).await;
    assert_eq!(v["valid"], true, "{v}");
    let app = h.json(&["apps", "list", "--json"]).await;
    assert_eq!(app[0]["name"], "my-shop", "{app}");
    assert!(
        h.json(&["machine", "list", "-a", "my-shop", "--json"])
            .await
            .as_array()
            .is_some_and(Vec::is_empty),
        "--no-deploy deploys nothing"
    );
    // Again: fly.toml is there now.
    let o = h
        .run(&["launch", "--path", &pp, "--yes", "--no-deploy"])
        .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--copy-config"), "{}", stderr(&o));
    // --copy-config with another name: the file's settings, the new name; a region that
    // does not exist is refused before anything is made.
    let o = h
        .run(&[
            "launch",
            "--path",
            &pp,
            "--yes",
            "--no-deploy",
            "-r",
            "mars",
        ])
        .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    h.ok(&[
        "launch",
        "--path",
        &pp,
        "--yes",
        "--no-deploy",
        "--copy-config",
        "--name",
        "shop-two",
    ])
    .await;
    let copied = std::fs::read_to_string(proj.join("fly.toml")).expect("fly.toml");
    assert!(copied.contains("app = 'shop-two'\n"), "{copied}");
    assert!(copied.contains("internal_port = 3000"), "{copied}");
    // Flags that make an invalid fly.toml are refused before anything is created.
    let bad = h.dir().join("bad");
    std::fs::create_dir_all(&bad).expect("dir");
    let bp = bad.display().to_string();
    let o = h
        .run(&[
            "launch",
            "--image",
            TEST_IMAGE,
            "--name",
            "bad",
            "--path",
            &bp,
            "--yes",
            "--vm-size",
            "giant-9x",
        ])
        .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("giant-9x"), "{}", stderr(&o));
    assert!(!bad.join("fly.toml").exists());

    // An image, deployed: the test image serves HTTP on 8080, the URL answers.
    let out = h
        .ok(&[
            "launch", "--image", TEST_IMAGE, "--name", "lx", "--path", &p, "--yes",
        ])
        .await;
    assert!(
        out.contains("Visit your newly deployed app at http://lx.localhost/"),
        "{out}"
    );
    let ms = h.json(&["machine", "list", "-a", "lx", "--json"]).await;
    let started = ms
        .as_array()
        .expect("machines")
        .iter()
        .filter(|m| m["state"] == "started")
        .count();
    assert_eq!(started, 2, "HA: two machines: {ms:#}");
    // https is forced: port 80 redirects, 443 answers with the app (the host CA's
    // certificate for lx.localhost).
    let http = super::deploy::listener(&proxy, 80).await;
    let (status, _) = super::deploy::get(http, "lx.localhost").await.expect("get");
    assert_eq!(status, 301);
    let https = super::deploy::listener(&proxy, 443).await;
    let reply = hangar_testkit::tls::https_get(https, "lx.localhost", &[], "/")
        .await
        .expect("https");
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "hello from hangar\n"),
        "{}",
        reply.head
    );
}
