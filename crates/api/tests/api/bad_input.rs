//! Hostile input at the API edge (issue 3): malformed JSON, wrong types, oversized bodies,
//! names with `../` or control characters, invalid image references, a 10 MB env map, hostile
//! paths and queries. Each gets a 4xx with the §2.1 JSON error body, and the server keeps
//! answering.

use std::net::SocketAddr;

use hangar_api::ApiConfig;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{ACME, ADMIN, assert_error, create_app, create_machine, server_with};
use crate::client::{Client, Resp};

/// Sends `request` as it is (for what the client can not express: chunked bodies, broken
/// escapes, odd methods) and returns the response and its head.
async fn raw(addr: SocketAddr, request: &[u8]) -> (Resp, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server may answer before reading everything; a failed write is not an error.
    let _ = s.write_all(request).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let content_type = head.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.trim().to_string())
    });
    (
        Resp {
            status,
            content_type,
            text: body.to_string(),
        },
        head.to_string(),
    )
}

/// `METHOD target` with the acme token and `body`.
async fn send(addr: SocketAddr, method: &str, target: &[u8], body: &[u8]) -> Resp {
    let mut req = Vec::new();
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(target);
    req.extend_from_slice(
        format!(
            " HTTP/1.1\r\nhost: test\r\nconnection: close\r\nauthorization: Bearer {ACME}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    req.extend_from_slice(body);
    raw(addr, &req).await.0
}

async fn still_serving(c: &Client) {
    let r = c.get("/v1/apps/web").await;
    assert_eq!(r.status, 200, "the server stopped answering: {}", r.text);
}

fn small() -> ApiConfig {
    ApiConfig {
        max_body_bytes: 64 * 1024,
        ..ApiConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_and_wrong_types_are_400() {
    let s = server_with("bad-json", small()).await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "web").await;
    let id = create_machine(&c, "web", &json!({"config": {"image": "img:1"}})).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let machines = "/v1/apps/web/machines";
    let machine = format!("{machines}/{id}");
    let deep = "[".repeat(10_000);
    let malformed: [&[u8]; 11] = [
        b"{not json",
        b"{\"config\":",
        b"{\"config\":{\"image\":\"i\"}} trailing",
        b"{\"config\":{\"image\":\"i\"}}{}",
        b"\xff\xfe{}",
        b"{\"config\":{\"image\":\"\xff\"}}",
        b"{\"config\":{\"image\":\"i\\ud800\"}}",
        b"\"just a string\"",
        b"42",
        b"true",
        deep.as_bytes(),
    ];
    for body in malformed {
        assert_error(&c.post_raw(machines, body).await, 400);
        assert_error(&c.post_raw(&machine, body).await, 400);
        assert_error(&c.post_raw("/v1/apps", body).await, 400);
    }
    // serde would read an array as a struct's fields in order; Go (and Hangar) refuse it.
    assert_error(
        &c.post_raw(&format!("{machine}/stop"), b"[null, null]")
            .await,
        400,
    );
    assert_error(
        &c.post_raw(&format!("{machine}/stop"), b"[\"SIGTERM\", \"5s\"]")
            .await,
        400,
    );
    assert_error(&c.post(machines, &json!({"config": ["img:1"]})).await, 400);
    assert_error(
        &c.post(
            machines,
            &json!({"config": {"image": "img:1", "stop_config": ["SIGTERM", "5s"]}}),
        )
        .await,
        400,
    );
    let wrong_types = [
        json!({"config": {"image": 42}}),
        json!({"config": {"image": ["img:1"]}}),
        json!({"config": "img:1"}),
        json!({"config": {"image": "img:1", "env": ["A=1"]}}),
        json!({"config": {"image": "img:1", "env": {"A": 1}}}),
        json!({"config": {"image": "img:1", "guest": {"cpus": "two"}}}),
        json!({"config": {"image": "img:1", "guest": {"cpus": 1.5}}}),
        json!({"config": {"image": "img:1", "guest": {"memory_mb": 1e300}}}),
        json!({"config": {"image": "img:1", "metadata": {"k": {"nested": true}}}}),
        json!({"config": {"image": "img:1", "stop_config": {"timeout": {"time.Duration": 5}}}}),
        json!({"config": {"image": "img:1", "stop_config": {"timeout": "five seconds"}}}),
        json!({"config": {"image": "img:1", "services": {"internal_port": 80}}}),
        json!({"config": {"image": "img:1"}, "lease_ttl": "30"}),
        json!({"config": {"image": "img:1"}, "skip_launch": "yes"}),
        json!({"config": {"image": "img:1"}, "name": 7}),
    ];
    for body in &wrong_types {
        assert_error(&c.post(machines, body).await, 400);
        assert_error(&c.post(&machine, body).await, 400);
    }
    for (path, body) in [
        (format!("{machine}/stop"), json!({"signal": 15})),
        (format!("{machine}/stop"), json!({"timeout": true})),
        (format!("{machine}/signal"), json!({"signal": ["SIGHUP"]})),
        (format!("{machine}/lease"), json!({"ttl": "10"})),
        (format!("{machine}/metadata/k"), json!({"value": 1})),
        ("/v1/apps".to_string(), json!({"app_name": ["x"]})),
        (
            "/v1/apps".to_string(),
            json!({"app_name": "x", "network": 5}),
        ),
    ] {
        assert_error(&c.post(&path, &body).await, 400);
    }
    still_serving(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_413_even_chunked_and_a_10mb_env_map_too() {
    // The daemon's default limit (1 MiB).
    let s = server_with("bad-size", ApiConfig::default()).await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "web").await;
    let env: serde_json::Map<String, Value> = (0..160_000)
        .map(|i| (format!("VAR_{i:06}"), json!("x".repeat(48))))
        .collect();
    let body = json!({"config": {"image": "img:1", "env": env}}).to_string();
    assert!(body.len() > 10_000_000, "{} bytes", body.len());
    assert_error(
        &c.post_raw("/v1/apps/web/machines", body.as_bytes()).await,
        413,
    );
    still_serving(&c).await;
    // Without a content-length: the limit applies to what arrives.
    let mut req = format!(
        "POST /v1/apps/web/machines HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\
         authorization: Bearer {ACME}\r\ncontent-type: application/json\r\n\
         transfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..24 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (r, _) = raw(s.addr, &req).await;
    assert_error(&r, 413);
    // Just under the limit is read (and then judged on its content).
    let mut under = vec![b' '; 1024 * 1024 - 64];
    under.extend_from_slice(br#"{"config":{}}"#);
    assert_error(&c.post_raw("/v1/apps/web/machines", &under).await, 400);
    still_serving(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_dots_slashes_and_control_characters_are_refused() {
    let s = server_with("bad-names", small()).await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "web").await;
    let id = create_machine(&c, "web", &json!({"config": {"image": "img:1"}})).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let hostile = [
        "../x",
        "..",
        ".",
        "a/../b",
        "a/b",
        "a\\b",
        "a\u{0}b",
        "a\nb",
        "a\rb",
        "a\u{1b}[31mred",
        "a\u{7f}",
        "a\u{202e}b",
        " a",
        "a ",
        "",
    ];
    for name in hostile {
        assert_error(
            &c.post("/v1/apps", &json!({"app_name": name, "org_slug": "acme"}))
                .await,
            400,
        );
        if !name.is_empty() {
            // An empty machine name means "generate one".
            assert_error(
                &c.post(
                    "/v1/apps/web/machines",
                    &json!({"name": name, "config": {"image": "img:1"}}),
                )
                .await,
                400,
            );
        }
        assert_error(
            &Client::new(s.addr, Some(ADMIN))
                .post("/v1/orgs", &json!({"slug": name}))
                .await,
            400,
        );
    }
    let machines = "/v1/apps/web/machines";
    for (what, config) in [
        (
            "env name with =",
            json!({"image": "img:1", "env": {"A=B": "1"}}),
        ),
        (
            "env name with NUL",
            json!({"image": "img:1", "env": {"A\u{0}": "1"}}),
        ),
        (
            "empty env name",
            json!({"image": "img:1", "env": {"": "1"}}),
        ),
        (
            "env value with NUL",
            json!({"image": "img:1", "env": {"A": "x\u{0}y"}}),
        ),
        (
            "argv with NUL",
            json!({"image": "img:1", "init": {"cmd": ["sh", "-c\u{0}"]}}),
        ),
        (
            "file outside the root",
            json!({"image": "img:1", "files": [{"guest_path": "/etc/../../x", "raw_value": "aGk="}]}),
        ),
        (
            "relative file",
            json!({"image": "img:1", "files": [{"guest_path": "etc/passwd", "raw_value": "aGk="}]}),
        ),
        (
            "file with NUL",
            json!({"image": "img:1", "files": [{"guest_path": "/a\u{0}b", "raw_value": "aGk="}]}),
        ),
        (
            "file not base64",
            json!({"image": "img:1", "files": [{"guest_path": "/a", "raw_value": "<not base64>"}]}),
        ),
        ("network", json!({"image": "img:1"})),
    ] {
        if what == "network" {
            for net in ["../x", "a b", "a\u{0}", "-x"] {
                assert_error(
                    &c.post(
                        "/v1/apps",
                        &json!({"app_name": "netty", "org_slug": "acme", "network": net}),
                    )
                    .await,
                    400,
                );
            }
            continue;
        }
        let r = c.post(machines, &json!({ "config": config })).await;
        assert_error(&r, 400);
        let r = c
            .post(&format!("{machines}/{id}"), &json!({ "config": config }))
            .await;
        assert_error(&r, 400);
    }
    // Metadata keys come from the path.
    for key in [
        "..%2F..%2Fx",
        "a%00b",
        "%0A",
        "a%20b",
        "%E2%80%AE",
        &"k".repeat(300),
    ] {
        let r = send(
            s.addr,
            "POST",
            format!("/v1/apps/web/machines/{id}/metadata/{key}").as_bytes(),
            br#"{"value":"v"}"#,
        )
        .await;
        assert_error(&r, 400);
    }
    still_serving(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_image_references_are_400_valid_ones_pass() {
    let s = server_with("bad-image", small()).await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "web").await;
    let long = format!("{}:1", "a".repeat(300));
    for image in [
        "UPPER",
        "Registry.example.com:x/a",
        "a b",
        " img:1",
        "img:1 ",
        "img:1\n",
        "../../x",
        "x/../y",
        "a:",
        "a:-tag",
        "a@sha256:zz",
        "a@md5:0123456789abcdef0123456789abcdef",
        "-x",
        "a//b",
        "a/",
        "a___b",
        "img\u{0}",
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        long.as_str(),
        "ímg",
    ] {
        let r = c
            .post(
                "/v1/apps/web/machines",
                &json!({"config": {"image": image}}),
            )
            .await;
        assert_error(&r, 400);
        assert!(r.text.contains("image"), "{}", r.text);
    }
    for image in [
        "img:1",
        "nginx",
        "library/nginx:1.25-alpine",
        "registry.fly.io/my-app:deployment-01HZ",
        "127.0.0.1:5000/hangar/missing:v1",
        "ghcr.io/o/r@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        create_machine(
            &c,
            "web",
            &json!({"config": {"image": image}, "skip_launch": true}),
        )
        .await;
    }
    still_serving(&c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_queries_and_methods_get_json_errors() {
    let s = server_with("bad-paths", small()).await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "web").await;
    let id = create_machine(&c, "web", &json!({"config": {"image": "img:1"}})).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let m = format!("/v1/apps/web/machines/{id}");
    // Path segments that are not UTF-8, or climb, or are not ids.
    for (target, status) in [
        ("/v1/apps/%FF".to_string(), 400),
        ("/v1/apps/web/machines/%C0%AF".to_string(), 400),
        ("/v1/apps/..%2F..%2Fetc%2Fpasswd".to_string(), 404),
        ("/v1/apps/web/machines/..%2F..%2Fx".to_string(), 404),
        ("/v1/apps/web/machines/%00".to_string(), 404),
        (format!("/v1/apps/web/machines/{}", "f".repeat(4000)), 404),
        ("/v1/apps/web/../../../etc/passwd".to_string(), 404),
        ("/v1/nothing/here".to_string(), 404),
    ] {
        let r = send(s.addr, "GET", target.as_bytes(), b"").await;
        assert_error(&r, status);
    }
    // Queries: booleans, numbers, states and durations that are not; repeated keys; broken
    // escapes.
    for target in [
        "/v1/apps/web/machines?include_deleted=maybe".to_string(),
        "/v1/apps/web/machines?include_deleted=%FF".to_string(),
        "/v1/apps/web/machines?include_deleted=".to_string(),
        "/v1/apps?org_slug=a&org_slug=b".to_string(),
        format!("{m}/wait?timeout=-1"),
        format!("{m}/wait?timeout=9999999999999999999999"),
        format!("{m}/wait?state=bogus"),
        format!("{m}/wait?state=%00"),
        format!("{m}/lease?ttl=abc"),
        format!("{m}/lease?ttl=-5"),
    ] {
        let method = if target.contains("/lease") {
            "POST"
        } else {
            "GET"
        };
        let r = send(s.addr, method, target.as_bytes(), b"").await;
        assert_error(&r, 400);
    }
    for target in [
        format!("{m}?force=2"),
        format!("{m}?force=true&force=nope"),
        format!("{m}?kill=%ZZ"),
    ] {
        assert_error(&send(s.addr, "DELETE", target.as_bytes(), b"").await, 400);
    }
    for target in [
        format!("{m}/restart?timeout=zz"),
        format!("{m}/restart?force_stop=sure"),
        format!("{m}/restart?signal=SIGBOGUS"),
    ] {
        assert_error(&send(s.addr, "POST", target.as_bytes(), b"").await, 400);
    }
    // A thousand parameters, and odd escapes, are read without trouble.
    let many: String = (0..1000).map(|i| format!("metadata.k{i}=%zz&")).collect();
    let r = send(
        s.addr,
        "GET",
        format!("/v1/apps/web/machines?{many}").as_bytes(),
        b"",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A method a route does not have: 405 with the methods it has, as JSON.
    for method in ["PATCH", "TRACE", "OPTIONS"] {
        let (r, head) = raw(
            s.addr,
            format!(
                "{method} /v1/apps HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\
                 authorization: Bearer {ACME}\r\ncontent-length: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .await;
        assert_error(&r, 405);
        assert!(
            head.to_ascii_lowercase().contains("allow: get,head,post"),
            "{head}"
        );
    }
    // Without a token, hostile input is refused before it is read.
    let anon = Client::new(s.addr, None);
    assert_error(
        &anon.post_raw("/v1/apps/web/machines", b"{not json").await,
        401,
    );
    assert_error(
        &anon
            .with_header("authorization", &format!("Bearer {}", "x".repeat(10_000)))
            .get("/v1/apps")
            .await,
        401,
    );
    still_serving(&c).await;
}
