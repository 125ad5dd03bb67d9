//! The API served on a real socket (127.0.0.1:0) over a real SQLite file.

// The same minimal HTTP client the testkit offers (the API can not depend on the testkit,
// which depends on it).
#[path = "../../../testkit/src/http.rs"]
mod client;

mod bad_input;
mod certs;
mod ips;
mod secrets_version;
mod upload;
mod volumes;
mod wireguard;

use std::sync::Arc;

use client::{Client, Resp};
use hangar_api::{ApiConfig, ApiState, hash_token};
use hangar_domain::{Action, State};
use hangar_store::{SqliteStore, Store, TokenScope};
use serde_json::{Value, json};

struct Server {
    addr: std::net::SocketAddr,
    store: Arc<SqliteStore>,
    _dir: TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const ADMIN: &str = "admin-secret";
const ACME: &str = "acme-secret";
const OTHER: &str = "other-secret";

async fn server_with(tag: &str, config: ApiConfig) -> Server {
    server_full(tag, config, None).await
}

/// A server whose exec/ps/logs/upload calls go to `host`.
pub(crate) async fn server_full(
    tag: &str,
    config: ApiConfig,
    host: Option<Arc<dyn hangar_domain::MachineHost>>,
) -> Server {
    server_sealed(tag, config, host, None).await
}

/// [`server_full`], sealing imported certificate keys with `sealer`.
pub(crate) async fn server_sealed(
    tag: &str,
    config: ApiConfig,
    host: Option<Arc<dyn hangar_domain::MachineHost>>,
    sealer: Option<Arc<hangar_store::Sealer>>,
) -> Server {
    let dir = std::env::temp_dir().join(format!("hangar-api-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = Arc::new(SqliteStore::open(&dir.join("state.db")).expect("store"));
    store.create_org("acme", "Acme", 1).expect("org");
    store.create_org("other", "Other", 1).expect("org");
    store
        .create_token(&hash_token(ADMIN), &TokenScope::Admin, "admin", 1)
        .expect("token");
    store
        .create_token(&hash_token(ACME), &TokenScope::Org("acme".into()), "t", 1)
        .expect("token");
    store
        .create_token(&hash_token(OTHER), &TokenScope::Org("other".into()), "t", 1)
        .expect("token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut state = ApiState::new(store.clone(), config);
    if let Some(host) = host {
        state = state.with_host(host);
    }
    if let Some(sealer) = sealer {
        state = state.with_sealer(sealer);
    }
    tokio::spawn(async move {
        let _ = hangar_api::run(listener, state, async {
            let _ = rx.await;
        })
        .await;
    });
    Server {
        addr,
        store,
        _dir: TempDir(dir),
        stop: Some(tx),
    }
}

async fn server(tag: &str) -> Server {
    server_with(
        tag,
        ApiConfig {
            regions: vec!["local".into(), "ams".into()],
            ..ApiConfig::default()
        },
    )
    .await
}

fn machine_body(image: &str) -> Value {
    json!({"config": {"image": image, "env": {"A": "1"}, "metadata": {"role": "web"}}})
}

async fn create_app(c: &Client, name: &str) {
    let r = c
        .post(
            "/v1/apps",
            &json!({"app_name": name, "org_slug": "personal"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

async fn create_machine(c: &Client, app: &str, body: &Value) -> Value {
    let r = c.post(&format!("/v1/apps/{app}/machines"), body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

fn assert_error(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/json"),
        "{}",
        r.text
    );
    let v = r.json();
    assert!(
        v.get("error")
            .and_then(Value::as_str)
            .is_some_and(|e| !e.is_empty()),
        "error body: {}",
        r.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_scoped_to_their_org() {
    let s = server("auth").await;
    let anon = Client::new(s.addr, None);
    assert_error(&anon.get("/v1/apps").await, 401);
    assert_error(
        &Client::new(s.addr, Some("nope")).get("/v1/apps").await,
        401,
    );
    let acme = Client::new(s.addr, Some(ACME));
    let other = Client::new(s.addr, Some(OTHER));
    create_app(&acme, "acme-web").await;
    let m = create_machine(&acme, "acme-web", &machine_body("img:1")).await;
    let id = m["id"].as_str().expect("id").to_string();
    // The other org sees nothing: not the app, not the machine.
    assert_error(&other.get("/v1/apps/acme-web").await, 404);
    assert_error(
        &other.get(&format!("/v1/apps/acme-web/machines/{id}")).await,
        404,
    );
    assert_error(
        &other
            .post(&format!("/v1/apps/acme-web/machines/{id}/stop"), &json!({}))
            .await,
        404,
    );
    assert_eq!(other.get("/v1/apps").await.json()["total_apps"], 0);
    assert_eq!(
        acme.get("/v1/apps?org_slug=personal").await.json()["total_apps"],
        1
    );
    // FlyV1 scheme works too.
    let r = Client::new(s.addr, None)
        .with_header("authorization", &format!("FlyV1 {ACME}"))
        .get("/v1/apps/acme-web")
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["organization"]["slug"], "acme");
    // Admin creates orgs and tokens; org tokens can not.
    assert_error(&acme.post("/v1/orgs", &json!({"slug": "evil"})).await, 404);
    let admin = Client::new(s.addr, Some(ADMIN));
    assert_eq!(
        admin
            .post("/v1/orgs", &json!({"slug": "newco"}))
            .await
            .status,
        201
    );
    let t = admin
        .post("/v1/tokens", &json!({"org_slug": "newco"}))
        .await;
    assert_eq!(t.status, 201, "{}", t.text);
    let token = t.json()["token"].as_str().expect("token").to_string();
    let newco = Client::new(s.addr, Some(&token));
    assert_eq!(newco.get("/v1/apps").await.json()["total_apps"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_lifecycle_and_name_rules() {
    let s = server("apps").await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "web").await;
    let r = c
        .post("/v1/apps", &json!({"app_name": "web", "org_slug": "acme"}))
        .await;
    assert_error(&r, 422);
    assert_eq!(r.json()["status"], "name_taken");
    for bad in ["../etc", "UPPER", "a\u{1}b", "", "-x"] {
        assert_error(
            &c.post("/v1/apps", &json!({"app_name": bad, "org_slug": "acme"}))
                .await,
            400,
        );
    }
    assert_error(
        &c.post(
            "/v1/apps",
            &json!({"app_name": "x", "org_slug": "acme", "network": "9bad"}),
        )
        .await,
        400,
    );
    let r = c
        .post(
            "/v1/apps",
            &json!({"name": "via-fly-go", "org_slug": "acme", "network": "blue"}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(c.get("/v1/apps/via-fly-go").await.json()["network"], "blue");
    assert_eq!(c.delete("/v1/apps/via-fly-go").await.status, 202);
    assert_error(&c.get("/v1/apps/via-fly-go").await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_create_list_filter_and_update() {
    let s = server("machines").await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "web").await;
    let m = create_machine(&c, "web", &json!({"name": "one", "region": "ams", "config": {"image": "img:1", "metadata": {"role": "web"}}})).await;
    let id = m["id"].as_str().expect("id").to_string();
    assert_eq!(id.len(), 14);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(m["state"], "creating");
    assert_eq!(m["name"], "one");
    assert!(
        m["private_ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("fdaa:"))
    );
    assert_eq!(m["events"][0]["type"], "launch");
    assert!(
        m["events"][0]["timestamp"]
            .as_i64()
            .is_some_and(|t| t > 1_600_000_000_000),
        "ms epoch"
    );
    let dup = c
        .post(
            "/v1/apps/web/machines",
            &json!({"name": "one", "config": {"image": "img:1"}}),
        )
        .await;
    assert_error(&dup, 422);
    create_machine(
        &c,
        "web",
        &json!({"config": {"image": "img:1", "metadata": {"role": "worker"}}}),
    )
    .await;
    assert_eq!(
        c.get("/v1/apps/web/machines")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        c.get("/v1/apps/web/machines?region=ams")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        c.get("/v1/apps/web/machines?metadata.role=worker")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // Pretend the agent created it, then update: new instance id, a new version.
    advance(
        &s.store,
        "web",
        &id,
        &[Action::Created { skip_launch: true }],
    );
    let before = c.get(&format!("/v1/apps/web/machines/{id}")).await.json();
    let r = c
        .post(
            &format!("/v1/apps/web/machines/{id}"),
            &json!({"config": {"image": "img:2"}, "skip_launch": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let after = r.json();
    assert_ne!(after["instance_id"], before["instance_id"]);
    assert_eq!(after["state"], "updating");
    assert_eq!(after["config"]["image"], "img:2");
    // PUT is accepted as update too (clients differ).
    advance(&s.store, "web", &id, &[Action::Updated { launch: false }]);
    let r = c
        .put(
            &format!("/v1/apps/web/machines/{id}"),
            &json!({"config": {"image": "img:3"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let versions = c
        .get(&format!("/v1/apps/web/machines/{id}/versions"))
        .await
        .json();
    assert_eq!(versions.as_array().map(Vec::len), Some(3));
    // Metadata.
    assert_eq!(
        c.post(
            &format!("/v1/apps/web/machines/{id}/metadata/tier"),
            &json!({"value": "gold"})
        )
        .await
        .status,
        204
    );
    assert_eq!(
        c.get(&format!("/v1/apps/web/machines/{id}/metadata"))
            .await
            .json()["tier"],
        "gold"
    );
    assert_eq!(
        c.delete(&format!("/v1/apps/web/machines/{id}/metadata/tier"))
            .await
            .status,
        204
    );
    assert!(
        c.get(&format!("/v1/apps/web/machines/{id}/metadata"))
            .await
            .json()
            .get("tier")
            .is_none()
    );
}

/// Applies agent-side actions directly in the store (the real agent is tested elsewhere).
fn advance(store: &SqliteStore, app: &str, id: &str, actions: &[Action]) {
    for a in actions {
        let m = store.get_machine(app, id).expect("get").expect("exists");
        let mut next = m.clone();
        next.state = m.state.apply(*a).expect("legal");
        next.pending = None;
        store.update_machine(&next, m.revision).expect("update");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_rules_wait_and_destroy() {
    let s = server("wait").await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "web").await;
    let id = create_machine(&c, "web", &machine_body("img:1")).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let base = format!("/v1/apps/web/machines/{id}");
    // Still creating: stop is not legal.
    assert_error(&c.post(&format!("{base}/stop"), &json!({})).await, 412);
    // Wait times out with 408.
    let t0 = std::time::Instant::now();
    assert_error(
        &c.get(&format!("{base}/wait?state=started&timeout=1")).await,
        408,
    );
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    // The agent reports; a waiter sees it.
    let waiter = {
        let c = c.clone();
        let base = base.clone();
        tokio::spawn(async move {
            c.get(&format!("{base}/wait?state=started&timeout=10"))
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    advance(
        &s.store,
        "web",
        &id,
        &[Action::Created { skip_launch: false }, Action::Running],
    );
    let r = waiter.await.expect("join");
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["ok"], true);
    // Stop with a signal and a timeout; the pending op carries them.
    let r = c
        .post(
            &format!("{base}/stop"),
            &json!({"signal": "SIGTERM", "timeout": "3s"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m = s.store.get_machine("web", &id).expect("get").expect("m");
    assert_eq!(m.state, State::Stopping);
    let pending = serde_json::to_value(&m.pending).expect("json");
    assert_eq!(pending["stop"]["signal"], "SIGTERM");
    assert_eq!(pending["stop"]["timeout"], "3s");
    assert_error(
        &c.post(&format!("{base}/stop"), &json!({"signal": "SIGBOGUS"}))
            .await,
        400,
    );
    advance(&s.store, "web", &id, &[Action::Halted]);
    // Destroy without force on a stopped machine; events newest first.
    assert_eq!(c.delete(&base).await.status, 200);
    advance(&s.store, "web", &id, &[Action::Removed]);
    assert_eq!(
        c.get(&format!("{base}/wait?state=destroyed&timeout=2"))
            .await
            .status,
        200
    );
    assert_eq!(
        c.get("/v1/apps/web/machines")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    assert_eq!(
        c.get("/v1/apps/web/machines?include_deleted=true")
            .await
            .json()
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let events = c.get(&format!("{base}/events")).await.json();
    assert_eq!(events[0]["type"], "destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_block_others_and_use_the_reference_bodies() {
    let s = server("lease").await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "web").await;
    let m = create_machine(
        &c,
        "web",
        &json!({"config": {"image": "img:1"}, "lease_ttl": 30}),
    )
    .await;
    let id = m["id"].as_str().expect("id").to_string();
    let nonce = m["nonce"]
        .as_str()
        .expect("nonce on create with lease_ttl")
        .to_string();
    let base = format!("/v1/apps/web/machines/{id}");
    let r = c.post(&format!("{base}/lease"), &json!({"ttl": 10})).await;
    assert_eq!(r.status, 409, "{}", r.text);
    let body = r.json();
    assert_eq!(body["status"], "error");
    assert_eq!(body["code"], "invalid");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("lease currently held by"))
    );
    // A mutating call without the nonce is refused; with it, allowed.
    assert_eq!(
        c.post(&format!("{base}/cordon"), &json!({})).await.status,
        409
    );
    let leased = c.clone().with_header("fly-machine-lease-nonce", &nonce);
    assert_eq!(
        leased
            .post(&format!("{base}/cordon"), &json!({}))
            .await
            .status,
        200
    );
    assert_eq!(c.get(&base).await.json()["cordoned"], true);
    // Refresh with the nonce, read, release.
    let r = leased
        .post(&format!("{base}/lease?ttl=20"), &json!({}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json()["data"]["nonce"], nonce);
    assert_eq!(
        c.get(&format!("{base}/lease")).await.json()["data"]["owner"],
        "acme@hangar"
    );
    assert_error(&c.delete(&format!("{base}/lease")).await, 400);
    assert_eq!(leased.delete(&format!("{base}/lease")).await.status, 200);
    assert_error(&c.get(&format!("{base}/lease")).await, 404);
    let r = c.post(&format!("{base}/lease"), &json!({})).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.json()["status"], "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_and_the_server_stays_up() {
    let s = server_with(
        "bad",
        ApiConfig {
            max_body_bytes: 64 * 1024,
            ..ApiConfig::default()
        },
    )
    .await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "web").await;
    let url = "/v1/apps/web/machines";
    assert_error(&c.post_raw(url, b"{not json").await, 400);
    assert_error(&c.post_raw(url, b"[1,2,3]").await, 400);
    assert_error(&c.post(url, &json!({"config": {"image": 42}})).await, 400);
    assert_error(&c.post(url, &json!({"config": {}})).await, 400);
    assert_error(
        &c.post(url, &json!({"config": {"image": "a b"}})).await,
        400,
    );
    assert_error(
        &c.post(url, &json!({"config": {"image": "../../x"}})).await,
        400,
    );
    assert_error(
        &c.post(url, &json!({"name": "../x", "config": {"image": "i"}}))
            .await,
        400,
    );
    assert_error(
        &c.post(url, &json!({"name": "a\u{7}b", "config": {"image": "i"}}))
            .await,
        400,
    );
    assert_error(
        &c.post(url, &json!({"region": "mars", "config": {"image": "i"}}))
            .await,
        400,
    );
    let huge: serde_json::Map<String, Value> = (0..200_000)
        .map(|i| (format!("K{i}"), json!("v".repeat(40))))
        .collect();
    assert_error(
        &c.post(url, &json!({"config": {"image": "i", "env": huge}}))
            .await,
        413,
    );
    assert_error(&c.get("/v1/apps/web/machines/not-an-id").await, 404);
    assert_error(&c.get("/v1/nothing/here").await, 404);
    let r = c.post_raw("/v1/apps", b"").await;
    assert_error(&r, 400);
    // Still serving.
    assert_eq!(c.get("/v1/apps/web").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_per_token_when_configured() {
    let s = server_with(
        "rate",
        ApiConfig {
            rate_limit: Some((1, 3)),
            ..ApiConfig::default()
        },
    )
    .await;
    let acme = Client::new(s.addr, Some(ACME));
    let other = Client::new(s.addr, Some(OTHER));
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(acme.get("/v1/apps").await.status);
    }
    assert_eq!(&codes[..3], &[200, 200, 200]);
    assert_eq!(codes[4], 429);
    assert_eq!(
        other.get("/v1/apps").await.status,
        200,
        "another token has its own budget"
    );
    let regions = other.get("/v1/platform/regions").await;
    assert_eq!(regions.status, 200);
    assert_eq!(regions.json()["Regions"][0]["code"], "local");
}
