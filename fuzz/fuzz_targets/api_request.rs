//! Any bytes as an HTTP request to the Machines API, in process: the router over an in-memory
//! store with an org, tokens, an app and a machine. No panic; every 4xx/5xx is a §2.1 JSON
//! error body (or, for a held lease, its envelope); never a 500; every 2xx body is JSON. The
//! body bytes also go straight into the typed request decoding (`hangar_api::decode_body`):
//! it answers a value or a 400/413, and a decoded value survives a JSON round trip unchanged.
//!
//! Input layout: byte 0 picks the method; byte 1 the token (bits 0-1: org, admin, none, bogus),
//! whether `content-type: application/json` is sent (bit 2) and a route (bits 3-7: 0 = the
//! input's own path, else one of `ROUTES`, the input then being its query string); then the
//! path (or query) up to the first newline, with `{app}` and `{id}` standing for the seeded
//! app and machine; the rest is the body.
#![no_main]

use std::cell::RefCell;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, header};
use hangar_api::{ApiConfig, ApiState, decode_body, hash_token};
use hangar_api_types::{
    CreateAppRequest, CreateMachineRequest, ExecRequest, LeaseRequest, MetadataValue,
    SignalRequest, StopRequest,
};
use hangar_store::{SqliteStore, Store, TokenScope};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::ServiceExt as _;

const ADMIN: &str = "fuzz-admin";
const ORG: &str = "fuzz-org";
const LIMIT: usize = 16 * 1024;
/// The store is rebuilt after this many requests so that it does not grow without bound.
const REQUESTS_PER_STORE: u32 = 5_000;

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE",
];
const ROUTES: [&str; 24] = [
    "/v1/apps",
    "/v1/apps/{app}",
    "/v1/apps/{app}/machines",
    "/v1/apps/{app}/machines/{id}",
    "/v1/apps/{app}/machines/{id}/start",
    "/v1/apps/{app}/machines/{id}/stop",
    "/v1/apps/{app}/machines/{id}/suspend",
    "/v1/apps/{app}/machines/{id}/restart",
    "/v1/apps/{app}/machines/{id}/signal",
    "/v1/apps/{app}/machines/{id}/cordon",
    "/v1/apps/{app}/machines/{id}/uncordon",
    "/v1/apps/{app}/machines/{id}/wait",
    "/v1/apps/{app}/machines/{id}/events",
    "/v1/apps/{app}/machines/{id}/versions",
    "/v1/apps/{app}/machines/{id}/metadata",
    "/v1/apps/{app}/machines/{id}/metadata/k",
    "/v1/apps/{app}/machines/{id}/lease",
    "/v1/apps/{app}/machines/{id}/ps",
    "/v1/apps/{app}/machines/{id}/exec",
    "/v1/platform/regions",
    "/v1/orgs",
    "/v1/tokens",
    "/v1/apps/../apps/{app}",
    "/",
];

struct World {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    machine: String,
    requests: u32,
}

impl World {
    fn new() -> Self {
        // Paused time: `wait` (up to 60 s) and every timer complete at once.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        let store = Arc::new(SqliteStore::in_memory().expect("store"));
        store.create_org("acme", "Acme", 1).expect("org");
        store
            .create_token(&hash_token(ADMIN), &TokenScope::Admin, "admin", 1)
            .expect("token");
        store
            .create_token(&hash_token(ORG), &TokenScope::Org("acme".into()), "t", 1)
            .expect("token");
        let config = ApiConfig {
            regions: vec!["local".into(), "ams".into()],
            max_body_bytes: LIMIT,
            ..ApiConfig::default()
        };
        let router = hangar_api::router(ApiState::new(store, config));
        let mut world = Self {
            rt,
            router,
            machine: String::new(),
            requests: 0,
        };
        let (status, _) = world.call(
            "POST",
            "/v1/apps",
            Some(ORG),
            br#"{"app_name":"web","org_slug":"acme"}"#,
        );
        assert_eq!(status, 201);
        let (status, body) = world.call(
            "POST",
            "/v1/apps/web/machines",
            Some(ORG),
            br#"{"skip_launch":true,"config":{"image":"img:1","metadata":{"a":"b"}}}"#,
        );
        assert_eq!(status, 200);
        let m: serde_json::Value = serde_json::from_slice(&body).expect("machine");
        world.machine = m["id"].as_str().expect("id").to_string();
        world
    }

    fn call(
        &mut self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: &[u8],
    ) -> (u16, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_vec()))
            .expect("request");
        self.send(req).1
    }

    /// Sends a request; returns (content type, (status, body)).
    fn send(&mut self, req: Request<Body>) -> (Option<String>, (u16, Vec<u8>)) {
        self.requests += 1;
        let router = self.router.clone();
        self.rt.block_on(async move {
            let resp = router.oneshot(req).await.expect("infallible");
            let status = resp.status().as_u16();
            let ct = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .expect("body");
            (ct, (status, body.to_vec()))
        })
    }
}

thread_local! {
    static WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
}

/// Percent-encodes what may not appear in a URI; `%` stays, so broken escapes get through.
fn uri_text(raw: &[u8], query: bool) -> String {
    let mut out = String::new();
    for &b in raw {
        let keep = b.is_ascii_alphanumeric()
            || b"-._~!$&'()*+,;=:@%/".contains(&b)
            || (query && b == b'?');
        if keep {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn check_error_body(status: u16, ct: Option<&str>, body: &[u8], what: &str) {
    assert!(
        ct.is_some_and(|c| c.starts_with("application/json")),
        "{what}: {status} with content type {ct:?}: {}",
        String::from_utf8_lossy(body)
    );
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{what}: {status} body is not JSON ({e}): {body:?}"));
    let error_ok = v
        .get("error")
        .and_then(|e| e.as_str())
        .is_some_and(|e| !e.is_empty());
    let lease_ok = status == 409
        && v.get("status").and_then(|s| s.as_str()) == Some("error")
        && v.get("message").is_some_and(|m| m.is_string());
    assert!(
        error_ok || lease_ok,
        "{what}: {status} without an error message: {v}"
    );
}

/// Decodes `body` as `T` the way the extractor does: a value (which round-trips) or 400/413.
fn decode<T>(body: &[u8])
where
    T: DeserializeOwned + Serialize + Default + PartialEq + std::fmt::Debug,
{
    match decode_body::<T>(body, LIMIT) {
        Ok(v) => {
            let text = serde_json::to_vec(&v).expect("serialises");
            let again: T = decode_body(&text, usize::MAX).unwrap_or_else(|e| {
                panic!(
                    "re-decoding {} failed: {e:?}",
                    String::from_utf8_lossy(&text)
                )
            });
            assert_eq!(
                v,
                again,
                "round trip through {}",
                String::from_utf8_lossy(&text)
            );
        }
        Err(e) => {
            use axum::response::IntoResponse as _;
            let status = e.into_response().status().as_u16();
            assert!(
                status == 400 || status == 413,
                "decode_body answered {status}"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let method = METHODS[usize::from(data[0]) % METHODS.len()];
    let flags = data[1];
    let rest = &data[2..];
    let (line, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };

    decode::<CreateMachineRequest>(body);
    decode::<CreateAppRequest>(body);
    decode::<StopRequest>(body);
    decode::<SignalRequest>(body);
    decode::<LeaseRequest>(body);
    decode::<MetadataValue>(body);
    decode::<ExecRequest>(body);

    WORLD.with(|w| {
        let mut w = w.borrow_mut();
        if w.as_ref().is_none_or(|w| w.requests >= REQUESTS_PER_STORE) {
            *w = Some(World::new());
        }
        let world = w.as_mut().expect("world");
        let route = usize::from(flags >> 3) % (ROUTES.len() + 1);
        let target = if route == 0 {
            let t = uri_text(line, true);
            if t.starts_with('/') {
                t
            } else {
                format!("/{t}")
            }
        } else if line.is_empty() {
            ROUTES[route - 1].to_string()
        } else {
            format!("{}?{}", ROUTES[route - 1], uri_text(line, true))
        };
        let target = target.replace("%7Bapp%7D", "web").replace("{app}", "web");
        let target = target
            .replace("%7Bid%7D", &world.machine)
            .replace("{id}", &world.machine);
        let mut req = Request::builder().method(method).uri(target.as_str());
        match flags & 3 {
            0 => req = req.header(header::AUTHORIZATION, format!("Bearer {ORG}")),
            1 => req = req.header(header::AUTHORIZATION, format!("Bearer {ADMIN}")),
            2 => {}
            _ => req = req.header(header::AUTHORIZATION, "Bearer nope"),
        }
        if flags & 4 != 0 {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let Ok(req) = req.body(Body::from(body.to_vec())) else {
            return; // not a URI hyper would have let through
        };
        let what = format!("{method} {target}");
        let (ct, (status, resp)) = world.send(req);
        assert_ne!(
            status,
            500,
            "{what}: internal error: {}",
            String::from_utf8_lossy(&resp)
        );
        if method == "HEAD" {
            // A HEAD answer has no body to check.
        } else if status >= 400 {
            check_error_body(status, ct.as_deref(), &resp, &what);
        } else if !resp.is_empty() {
            assert!(
                serde_json::from_slice::<serde_json::Value>(&resp).is_ok(),
                "{what}: {status} body is not JSON: {}",
                String::from_utf8_lossy(&resp)
            );
        }
        // The server still answers; once the input deleted the seeded app, start afresh.
        let (status, _) = world.call("GET", "/v1/apps/web", Some(ADMIN), b"");
        assert!(
            status == 200 || status == 404,
            "GET /v1/apps/web after {what}: {status}"
        );
        if status == 404 {
            world.requests = REQUESTS_PER_STORE;
        }
    });
});
