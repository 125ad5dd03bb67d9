//! Hostile clients against the real proxy over real sockets: request smuggling, malformed
//! and oversized heads, slowloris, bad Host names, h2 rapid reset. The backend is a real
//! HTTP server on loopback standing in for a machine (its record says it lives at `::1`).
//! After every attack the proxy still serves a normal request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hangar_api_types::{HttpOptions, MachineConfig, MachinePort, MachineService};
use hangar_domain::State;
use hangar_proxy::{Proxy, ProxyConfig};
use hangar_store::{AppRecord, MachineRecord, SqliteStore, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod replay_cache;

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test server's answer.
type Reply =
    hyper::Response<http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>>;

/// Serves `[::1]:0` (h2c when `h2`, else HTTP/1.1), answering each request with `handler`;
/// returns the address.
async fn serve<F, Fut>(h2: bool, handler: F) -> SocketAddr
where
    F: Fn(hyper::Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Reply> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("[::1]:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let answer = handler(req);
                    async move { Ok::<_, std::convert::Infallible>(answer.await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(io, svc)
                    .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    addr
}

/// A body that sends its one chunk, then nothing, and never ends.
struct Stalled(Option<bytes::Bytes>);

impl hyper::body::Body for Stalled {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        match self.0.take() {
            Some(b) => std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(b)))),
            None => std::task::Poll::Pending,
        }
    }
}

/// A backend recording the request lines (and HTTP versions) it saw; h2c only when `h2`.
async fn backend_with(h2: bool) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let addr = serve(h2, move |req: hyper::Request<hyper::body::Incoming>| {
        let s = s.clone();
        async move {
            use http_body_util::BodyExt;
            let line = format!("{} {} {:?}", req.method(), req.uri(), req.version());
            if req.uri().path() == "/as-seen" {
                // What the machine was told: its Host and Upgrade headers.
                let h = |n| {
                    req.headers().get(n).map_or("none".to_string(), |v| {
                        String::from_utf8_lossy(v.as_bytes()).into_owned()
                    })
                };
                let seen = format!("host={};upgrade={}", h("host"), h("upgrade"));
                let body = http_body_util::Full::new(bytes::Bytes::from(seen));
                return hyper::Response::new(body.boxed());
            }
            if req.uri().path() == "/replay-stall" {
                // A JSON replay whose body stops halfway and stays open.
                let mut r = hyper::Response::new(
                    Stalled(Some(bytes::Bytes::from_static(b"{\"app\":"))).boxed(),
                );
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/vnd.fly.replay+json"),
                );
                return r;
            }
            // `/replay?<fly-replay value>`: replays so; the request that falls back (with
            // `fly-replay-failed`) is answered "fell back: <its value>". `/replay-always`
            // replays that one too.
            let path = req.uri().path();
            let replay = (path == "/replay" || path == "/replay-always").then(|| {
                let failed = req
                    .headers()
                    .get("fly-replay-failed")
                    .filter(|_| path == "/replay")
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                (req.uri().query().unwrap_or_default().to_string(), failed)
            });
            let trailers = req.uri().path() == "/trailers";
            let slow = req.uri().path() == "/slow";
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            // A body, when there is one, as " body=<text>".
            s.lock().expect("lock").push(if body.is_empty() {
                line
            } else {
                format!("{line} body={}", String::from_utf8_lossy(&body))
            });
            if let Some((value, failed)) = replay {
                if let Some(f) = failed {
                    let body =
                        http_body_util::Full::new(bytes::Bytes::from(format!("fell back: {f}")));
                    return hyper::Response::new(body.boxed());
                }
                let mut r = hyper::Response::new(http_body_util::Empty::new().boxed());
                r.headers_mut().insert(
                    "fly-replay",
                    hyper::header::HeaderValue::from_str(&value).expect("value"),
                );
                return r;
            }
            if slow {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            let ok = http_body_util::Full::new(bytes::Bytes::from_static(b"ok\n"));
            if !trailers {
                return hyper::Response::new(ok.boxed());
            }
            // A body with a trailer field, declared (`Trailer`), as a checksum after a
            // streamed body would be.
            let mut t = hyper::HeaderMap::new();
            t.insert("x-sum", hyper::header::HeaderValue::from_static("abc123"));
            let body = ok.with_trailers(async move { Some(Ok(t)) });
            let mut r = hyper::Response::new(body.boxed());
            r.headers_mut().insert(
                hyper::header::TRAILER,
                hyper::header::HeaderValue::from_static("x-sum"),
            );
            // Chunked (a length leaves no room for trailers).
            r.headers_mut().insert(
                hyper::header::TRANSFER_ENCODING,
                hyper::header::HeaderValue::from_static("chunked"),
            );
            r
        }
    })
    .await;
    (addr, seen)
}

/// A started machine of `app` whose port 80 (`http`) reaches `backend` (on `::1`).
fn machine(id: &str, app: &str, backend: SocketAddr, http: Option<HttpOptions>) -> MachineRecord {
    MachineRecord {
        id: id.into(),
        app: app.into(),
        name: id.into(),
        region: "local".into(),
        state: State::Started,
        instance_id: "01HZZZZZZZZZZZZZZZZZZZZZZZ".into(),
        config: MachineConfig {
            image: "img:1".into(),
            services: vec![MachineService {
                internal_port: i64::from(backend.port()),
                ports: vec![MachinePort {
                    port: Some(80),
                    handlers: vec!["http".into()],
                    http_options: http,
                    ..MachinePort::default()
                }],
                ..MachineService::default()
            }],
            ..MachineConfig::default()
        },
        image_ref: None,
        private_ip: "::1".into(),
        host: "h".into(),
        cordoned: false,
        pending: None,
        restart_count: 0,
        created_at: 1,
        updated_at: 1,
        revision: 0,
    }
}

/// The proxy's config in these tests: port 80 on an ephemeral port, no autostop.
fn config() -> ProxyConfig {
    ProxyConfig {
        port_map: HashMap::from([(80, 0)]),
        autostop_interval: Duration::from_secs(3600),
        ..ProxyConfig::default()
    }
}

/// Adds app `name` of org `o` on `network`.
fn add_app(store: &SqliteStore, name: &str, network: &str) {
    store
        .create_app(&AppRecord {
            id: format!("id-{name}"),
            name: name.into(),
            org_slug: "o".into(),
            network: network.into(),
            created_at: 1,
        })
        .expect("app");
}

/// Starts the proxy over `store`; returns it and the address of its port 80.
async fn start(store: Arc<SqliteStore>, config: ProxyConfig) -> (Arc<Proxy>, SocketAddr) {
    let proxy = Proxy::new(store, config);
    tokio::spawn(hangar_proxy::run(proxy.clone(), std::future::pending()));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(a) = proxy.listening().get(&80) {
            return (proxy, *a);
        }
        assert!(Instant::now() < deadline, "no listener");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Setup {
    _dir: TempDir,
    proxy: Arc<Proxy>,
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

async fn setup(tag: &str) -> Setup {
    setup_with(tag, false).await
}

async fn setup_with(tag: &str, h2: bool) -> Setup {
    let http = h2.then(|| hangar_api_types::HttpOptions {
        h2_backend: Some(true),
        ..Default::default()
    });
    setup_opts(tag, h2, http).await
}

/// A store in a temp dir of its own (removed on drop) with org `o` and its app `web`.
fn store_with_web(tag: &str) -> (TempDir, Arc<SqliteStore>) {
    let dir =
        std::env::temp_dir().join(format!("hangar-proxy-hostile-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let dir = TempDir(dir);
    let store = Arc::new(SqliteStore::open(&dir.0.join("state.db")).expect("store"));
    store.create_org("o", "O", 1).expect("org");
    add_app(&store, "web", "default");
    (dir, store)
}

/// A setup whose machine's port has these `http_options` (its backend speaks h2c if `h2`).
async fn setup_opts(tag: &str, h2: bool, http: Option<HttpOptions>) -> Setup {
    let (dir, store) = store_with_web(tag);
    let (backend, seen) = backend_with(h2).await;
    store
        .insert_machine(&machine("0123456789abcd", "web", backend, http))
        .expect("machine");
    let (proxy, addr) = start(
        store,
        ProxyConfig {
            headers_read_timeout: Duration::from_secs(1),
            max_header_bytes: 16 * 1024,
            ..config()
        },
    )
    .await;
    Setup {
        _dir: dir,
        proxy,
        addr,
        seen,
    }
}

/// Sends raw bytes, returns what came back before the proxy closed (or 5 s passed).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

async fn still_serves(s: &Setup) {
    let r = raw(
        s.addr,
        b"GET /fine HTTP/1.1\r\nhost: web.localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_and_malformed_heads_are_refused() {
    let s = setup("smuggle").await;
    still_serves(&s).await;
    // CL + TE: never two requests to the backend out of one.
    let r = raw(
        s.addr,
        b"POST /a HTTP/1.1\r\nhost: web.localhost\r\ncontent-length: 6\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: web.localhost\r\n\r\n",
    )
    .await;
    assert!(matches!(status(&r), 200 | 400), "{r}");
    // Duplicate, different Content-Length.
    let r = raw(
        s.addr,
        b"POST /b HTTP/1.1\r\nhost: web.localhost\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nab",
    )
    .await;
    assert_eq!(status(&r), 400, "{r}");
    // obs-fold.
    let r = raw(
        s.addr,
        b"GET /c HTTP/1.1\r\nhost: web.localhost\r\nx-folded: a\r\n  b\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 400, "{r}");
    // Oversized head.
    let mut big = b"GET /d HTTP/1.1\r\nhost: web.localhost\r\n".to_vec();
    for i in 0..400 {
        big.extend_from_slice(format!("x-pad-{i}: {}\r\n", "y".repeat(100)).as_bytes());
    }
    big.extend_from_slice(b"\r\n");
    let r = raw(s.addr, &big).await;
    assert_eq!(status(&r), 431, "{r}");
    // Bad Host names: not routed, never reach the backend.
    for host in [
        "../../etc",
        "web.localhost.evil",
        "",
        "web localhost",
        "[::1]",
    ] {
        let req = format!("GET /e HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
        let r = raw(s.addr, req.as_bytes()).await;
        assert!(matches!(status(&r), 400 | 404), "{host:?}: {r}");
    }
    still_serves(&s).await;
    let seen = s.seen.lock().expect("lock").clone();
    assert!(!seen.iter().any(|l| l.contains("smuggled")), "{seen:?}");
    for path in ["/b", "/c", "/d", "/e"] {
        assert!(
            !seen.iter().any(|l| l.ends_with(path)),
            "{path} reached the backend: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_machine_is_told_what_the_request_was_routed_by() {
    let s = setup("asrouted").await;
    let body = |r: &str| r.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    // Absolute form: routed by the target's host, and that is the Host the machine gets,
    // never the other one the client sent.
    let r = raw(
        s.addr,
        b"GET http://web.localhost/as-seen HTTP/1.1\r\nhost: evil.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(body(&r), "host=web.localhost;upgrade=none", "{r}");
    // An h2c upgrade is served as a plain request: no Upgrade reaches the machine.
    let r = raw(
        s.addr,
        b"GET /as-seen HTTP/1.1\r\nhost: web.localhost\r\nconnection: Upgrade, HTTP2-Settings, close\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAP__\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    assert_eq!(body(&r), "host=web.localhost;upgrade=none", "{r}");
    // An upgrade request with a body: refused, and nothing reaches the machine (its head
    // would announce a body the proxy never sends, and the machine would read the next
    // request on that connection as that body).
    let r = raw(
        s.addr,
        b"GET /upgrade-with-body HTTP/1.1\r\nhost: web.localhost\r\nconnection: Upgrade\r\nupgrade: websocket\r\ncontent-length: 5\r\n\r\nhello",
    )
    .await;
    assert_eq!(status(&r), 400, "{r}");
    assert!(r.contains("PU04"), "{r}");
    still_serves(&s).await;
    let seen = s.seen.lock().expect("lock").clone();
    assert!(
        !seen.iter().any(|l| l.contains("/upgrade-with-body")),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_silent_past_the_ports_idle_timeout_gets_a_504() {
    // The backend's /slow answers after 3 s; the port allows 1 s of silence. Over HTTP/1.1
    // (the proxy's own client) and over h2c (hyper's).
    for h2 in [false, true] {
        let s = setup_opts(
            if h2 { "silent-h2" } else { "silent" },
            h2,
            Some(HttpOptions {
                idle_timeout: Some(1),
                h2_backend: h2.then_some(true),
                ..Default::default()
            }),
        )
        .await;
        silent_machine_gets_a_504(&s).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_replay_whose_body_stalls_is_bounded_by_the_ports_idle_timeout() {
    for h2 in [false, true] {
        let s = setup_opts(
            if h2 {
                "replay-stall-h2"
            } else {
                "replay-stall"
            },
            h2,
            Some(HttpOptions {
                idle_timeout: Some(1),
                h2_backend: h2.then_some(true),
                ..Default::default()
            }),
        )
        .await;
        let t = Instant::now();
        let r = raw(
            s.addr,
            b"GET /replay-stall HTTP/1.1\r\nhost: web.localhost\r\nconnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status(&r), 502, "h2c={h2}: {r}");
        assert!(
            t.elapsed() < Duration::from_millis(2500),
            "{:?}",
            t.elapsed()
        );
        still_serves(&s).await;
    }
}

async fn silent_machine_gets_a_504(s: &Setup) {
    still_serves(s).await;
    let t = std::time::Instant::now();
    let r = raw(
        s.addr,
        b"GET /slow HTTP/1.1\r\nhost: web.localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 504, "{r}");
    assert!(r.contains("PC05"), "{r}");
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "{:?}",
        t.elapsed()
    );
    // Not retried elsewhere or again: the machine saw it once.
    let seen = s.seen.lock().expect("lock").clone();
    assert_eq!(
        seen.iter().filter(|l| l.contains("/slow")).count(),
        1,
        "{seen:?}"
    );
    still_serves(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_are_cut_off() {
    let s = setup("slowloris").await;
    let started = Instant::now();
    let mut c = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    c.write_all(b"GET / HTTP/1.1\r\nhost: web.localhost\r\n")
        .await
        .expect("write");
    // Trickle a header byte every 300 ms; the proxy gives the whole head 1 s.
    let mut closed = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if c.write_all(b"x").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(10), c.read(&mut buf)).await
            && n == 0
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a slow client kept its connection");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        s.proxy.connections(),
        0,
        "the slow connection was not released"
    );
    still_serves(&s).await;
}

/// An h2 (prior knowledge) client to the proxy, its connection driven by a task.
async fn h2_client(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    (client, tokio::spawn(conn))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_closes_the_connection() {
    let s = setup("reset").await;
    let (mut client, conn) = h2_client(s.addr).await;
    // h2 works before the attack.
    let req = http::Request::builder()
        .uri("http://web.localhost/h2")
        .body(())
        .expect("request");
    let (resp, _) = client.send_request(req, true).expect("send");
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(resp.status(), 200);
    let mut sent = 0;
    let mut refused = false;
    for _ in 0..5000 {
        let req = http::Request::builder()
            .uri("http://web.localhost/")
            .body(())
            .expect("request");
        let ready = match tokio::time::timeout(Duration::from_secs(5), client.clone().ready()).await
        {
            Ok(Ok(c)) => c,
            _ => {
                refused = true;
                break;
            }
        };
        client = ready;
        match client.send_request(req, true) {
            // Cancelled at once: a RST_STREAM right after the HEADERS.
            Ok((resp, _)) => {
                sent += 1;
                drop(resp);
            }
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    assert!(
        refused,
        "5000 reset streams were accepted on one connection"
    );
    assert!(
        sent >= 10,
        "refused after {sent} streams: not the reset protection"
    );
    conn.abort();
    still_serves(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_reach_the_machine_with_or_without_a_length() {
    let s = setup("bodies").await;
    // HTTP/1.1 with content-length (buffered, sent in one write) and chunked (streamed).
    let r = raw(
        s.addr,
        b"POST /cl HTTP/1.1\r\nhost: web.localhost\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    let r = raw(
        s.addr,
        b"POST /chunked HTTP/1.1\r\nhost: web.localhost\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    // h2 DATA frames without content-length.
    let (mut client, conn) = h2_client(s.addr).await;
    let req = http::Request::builder()
        .method("POST")
        .uri("http://web.localhost/h2body")
        .body(())
        .expect("request");
    let (resp, mut stream) = client.send_request(req, false).expect("send");
    stream
        .send_data(bytes::Bytes::from_static(b"from h2"), true)
        .expect("data");
    let resp = tokio::time::timeout(Duration::from_secs(5), resp)
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(resp.status(), 200);
    conn.abort();
    let seen = s.seen.lock().expect("lock").clone();
    for want in [
        "POST /cl HTTP/1.1 body=hello",
        "POST /chunked HTTP/1.1 body=abcde",
        "POST /h2body HTTP/1.1 body=from h2",
    ] {
        assert!(seen.iter().any(|l| l == want), "{want:?} not in {seen:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_backend_speaks_h2c_to_the_machine() {
    let s = setup_with("h2c", true).await;
    for i in 0..5 {
        let req =
            format!("GET /h2c/{i} HTTP/1.1\r\nhost: web.localhost\r\nconnection: close\r\n\r\n");
        let r = raw(s.addr, req.as_bytes()).await;
        assert_eq!(status(&r), 200, "{r}");
    }
    let seen = s.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(seen.iter().all(|l| l.ends_with("HTTP/2.0")), "{seen:?}");
    assert!(seen[0].contains("/h2c/0"), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machines_trailers_reach_a_client_that_accepts_them() {
    let s = setup("trailers").await;
    // HTTP/1.1 with `TE: trailers`: the chunked answer ends with the machine's field.
    let r = raw(
        s.addr,
        b"GET /trailers HTTP/1.1\r\nhost: web.localhost\r\nte: trailers\r\n\
          connection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    let (_, after_last_chunk) = r
        .split_once("\r\n0\r\n")
        .unwrap_or_else(|| panic!("not chunked: {r}"));
    assert!(
        after_last_chunk
            .to_ascii_lowercase()
            .contains("x-sum: abc123"),
        "{r}"
    );
    // Without `TE: trailers`, no trailer section (HTTP/1.1 forbids sending it unasked).
    let r = raw(
        s.addr,
        b"GET /trailers HTTP/1.1\r\nhost: web.localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(!r.to_ascii_lowercase().contains("x-sum: abc123"), "{r}");
    assert!(r.ends_with("\r\n\r\n3\r\nok\n\r\n0\r\n\r\n"), "{r}");
    // An h2 client saying `te: trailers`, as gRPC's do.
    let (mut h2, _conn) = h2_client(s.addr).await;
    let req = http::Request::builder()
        .uri("http://web.localhost/trailers")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (resp, _) = h2.send_request(req, true).expect("send");
    let resp = resp.await.expect("response");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    while let Some(d) = body.data().await {
        let d = d.expect("data");
        let _ = body.flow_control().release_capacity(d.len());
    }
    let t = body.trailers().await.expect("trailers").expect("some");
    assert_eq!(t["x-sum"], "abc123");
    still_serves(&s).await;
}

/// The sum of a gauge's samples over every label set, from Prometheus text.
fn gauge_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_are_counted_per_worker_in_the_metrics() {
    let s = setup("workers").await;
    // Two keep-alive connections, each answered once and held open.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(s.addr)
            .await
            .expect("connect");
        c.write_all(b"GET /held HTTP/1.1\r\nhost: web.localhost\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 1024];
        let n = c.read(&mut buf).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        held.push(c);
    }
    let text = s.proxy.render_metrics();
    let workers = ProxyConfig::default().workers;
    for w in 0..workers {
        let line = format!("hangar_proxy_worker_connections{{region=\"local\",worker=\"{w}\"}}");
        assert!(text.contains(&line), "{line} missing:\n{text}");
    }
    assert_eq!(
        gauge_sum(&text, "hangar_proxy_worker_connections"),
        2.0,
        "{text}"
    );
    assert_eq!(gauge_sum(&text, "hangar_proxy_worker_handoff_queue"), 0.0);
    assert!(text.contains("hangar_proxy_connections_moved_total{region=\"local\"}"));
    // Closed, they are uncounted (the serving task notices the close first).
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while gauge_sum(&s.proxy.render_metrics(), "hangar_proxy_worker_connections") != 0.0 {
        assert!(
            Instant::now() < deadline,
            "closed connections still counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads what comes until `n` complete answers of `ok\n` (or heads of HEADs) are there.
async fn answers(c: &mut tokio::net::TcpStream, n: usize) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if text.matches("HTTP/1.1 ").count() >= n
            && (text.ends_with("ok\n") || text.ends_with("\r\n\r\n"))
        {
            return text;
        }
        match tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await {
            Ok(Ok(k)) if k > 0 => got.extend_from_slice(&buf[..k]),
            other => panic!("{other:?} after {text:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let s = setup("pipeline").await;
    // Three requests in one write; the last asks to close.
    let r = raw(
        s.addr,
        b"GET /p1 HTTP/1.1\r\nhost: web.localhost\r\n\r\n\
          GET /p2?x=1 HTTP/1.1\r\nhost: web.localhost\r\nconnection: keep-alive\r\n\r\n\
          HEAD /p3 HTTP/1.1\r\nhost: web.localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    let heads: Vec<&str> = r.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(heads.len(), 3, "{r}");
    for h in &heads {
        assert!(h.starts_with("200 OK\r\n"), "{r}");
        assert!(h.contains("\r\ncontent-length: 3\r\n"), "{r}");
        assert!(h.contains("\r\ndate: "), "{r}");
        assert!(h.contains("\r\nfly-request-id: "), "{r}");
    }
    assert!(
        heads[0].ends_with("\r\n\r\nok\n") && heads[1].ends_with("\r\n\r\nok\n"),
        "{r}"
    );
    // The HEAD's answer has no body, and the connection closed after it.
    assert!(heads[2].ends_with("\r\n\r\n"), "{r}");
    assert!(heads[2].contains("\r\nconnection: close\r\n"), "{r}");
    let seen = s.seen.lock().expect("lock").clone();
    let order: Vec<&String> = seen.iter().filter(|l| l.contains(" /p")).collect();
    assert_eq!(
        order,
        [
            "GET /p1 HTTP/1.1",
            "GET /p2?x=1 HTTP/1.1",
            "HEAD /p3 HTTP/1.1"
        ],
        "{seen:?}"
    );
    still_serves(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_after_plain_requests_keeps_the_connection() {
    let s = setup("handover").await;
    let mut c = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    c.write_all(b"GET /k1 HTTP/1.1\r\nhost: web.localhost\r\n\r\n")
        .await
        .expect("write");
    let first = answers(&mut c, 1).await;
    assert_eq!(status(&first), 200, "{first}");
    // A small body by its length: still the fast path.
    c.write_all(b"POST /k2 HTTP/1.1\r\nhost: web.localhost\r\ncontent-length: 5\r\n\r\nhello")
        .await
        .expect("write");
    let second = answers(&mut c, 1).await;
    assert_eq!(status(&second), 200, "{second}");
    // A chunked body: served by hyper's server on the same connection, then a plain request.
    c.write_all(
        b"PUT /k3 HTTP/1.1\r\nhost: web.localhost\r\ntransfer-encoding: chunked\r\n\r\n\
          3\r\nabc\r\n0\r\n\r\nGET /k4 HTTP/1.1\r\nhost: web.localhost\r\n\r\n",
    )
    .await
    .expect("write");
    let more = answers(&mut c, 2).await;
    assert_eq!(more.matches("HTTP/1.1 200 OK").count(), 2, "{more}");
    let seen = s.seen.lock().expect("lock").clone();
    for want in [
        "POST /k2 HTTP/1.1 body=hello",
        "PUT /k3 HTTP/1.1 body=abc",
        "GET /k4 HTTP/1.1",
    ] {
        assert!(seen.contains(&want.to_string()), "{want}: {seen:?}");
    }
    let metrics = s.proxy.render_metrics();
    let handoffs = gauge_sum(&metrics, "hangar_proxy_http1_handoffs_total");
    assert_eq!(handoffs, 1.0, "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_to_an_app_on_another_network_is_refused() {
    // `web` (network `default`) replays to `near` (the same network) and to `far` (another
    // network of the same org): the first is served, the second gets 502 PA05.
    let (_dir, store) = store_with_web("replay-net");
    let (backend, seen) = backend_with(false).await;
    store
        .insert_machine(&machine("0123456789abc0", "web", backend, None))
        .expect("machine");
    for (i, (app, network)) in [("near", "default"), ("far", "other")]
        .into_iter()
        .enumerate()
    {
        add_app(&store, app, network);
        store
            .insert_machine(&machine(&format!("0123456789abd{i}"), app, backend, None))
            .expect("machine");
    }
    let (_proxy, addr) = start(store, config()).await;
    let get = |path: &str| {
        format!("GET {path} HTTP/1.1\r\nhost: web.localhost\r\nconnection: close\r\n\r\n")
    };
    // The same backend serves all three apps: `near`'s machine is asked `/replay?app=near`
    // again and answers with a replay once more, until the replay limit; what matters is
    // that it was replayed to at all, and `far` never.
    let r = raw(addr, get("/replay?app=near").as_bytes()).await;
    assert_ne!(status(&r), 0, "{r}");
    assert!(!r.contains("PA05"), "{r}");
    let near = seen.lock().expect("lock").len();
    assert!(near >= 2, "replayed to near: {near} requests");
    let r = raw(addr, get("/replay?app=far").as_bytes()).await;
    assert_eq!(status(&r), 502, "{r}");
    assert!(r.contains("PA05"), "{r}");
    assert_eq!(
        seen.lock().expect("lock").len(),
        near + 1,
        "far got nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_woke_a_machine_together_respect_its_hard_limit() {
    // One stopped machine, hard limit 2: six requests arrive together and wake it. At most
    // two may be on it at once; the rest queue and are served as slots free.
    let (_dir, store) = store_with_web("wake-hard");
    let now = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (n, m) = (now.clone(), most.clone());
    let backend = serve(false, move |_req| {
        let (n, m) = (n.clone(), m.clone());
        async move {
            use http_body_util::BodyExt;
            use std::sync::atomic::Ordering::SeqCst;
            let here = n.fetch_add(1, SeqCst) + 1;
            m.fetch_max(here, SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            n.fetch_sub(1, SeqCst);
            hyper::Response::new(
                http_body_util::Full::new(bytes::Bytes::from_static(b"ok\n")).boxed(),
            )
        }
    })
    .await;
    let mut rec = machine("0123456789abcf", "web", backend, None);
    rec.state = State::Stopped;
    rec.config.services[0].concurrency = Some(hangar_api_types::MachineServiceConcurrency {
        r#type: Some(hangar_api_types::ConcurrencyType::Requests),
        soft_limit: Some(1),
        hard_limit: Some(2),
    });
    store.insert_machine(&rec).expect("machine");
    // The agent's part: what the proxy starts is started.
    let agent_store = store.clone();
    let id = rec.id.clone();
    let agent = tokio::spawn(async move {
        loop {
            if let Ok(Some(mut m)) = agent_store.find_machine(&id)
                && m.state == State::Starting
            {
                m.state = State::Started;
                let _ = agent_store.update_machine(&m, m.revision);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let (_proxy, addr) = start(store.clone(), config()).await;
    let requests: Vec<_> = (0..6)
        .map(|i| {
            tokio::spawn(async move {
                let req = format!(
                    "GET /{i} HTTP/1.1\r\nhost: web.localhost\r\nconnection: close\r\n\r\n"
                );
                status(&raw(addr, req.as_bytes()).await)
            })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.expect("join"), 200);
    }
    agent.abort();
    let most = most.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        most <= 2,
        "{most} requests on the machine at once, hard limit 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_budget_spent_before_the_replays_timeout_falls_back_at_once() {
    // As below, with a replay timeout (10 s) longer than the wake timeout (300 ms): the
    // fallback comes when the wake gives up, not at the replay's deadline.
    let (_dir, store) = store_with_web("replay-wake-budget");
    let (backend, _seen) = backend_with(false).await;
    let me = "0123456789abe2";
    store
        .insert_machine(&machine(me, "web", backend, None))
        .expect("machine");
    // Nothing listens at its address (the wake probes it from the recorded start).
    let mut cold = machine(
        "0123456789abe3",
        "web",
        "127.0.0.1:9".parse().expect("addr"),
        None,
    );
    cold.state = State::Stopped;
    store.insert_machine(&cold).expect("machine");
    let (_proxy, addr) = start(
        store,
        ProxyConfig {
            wake_timeout: Duration::from_millis(300),
            ..config()
        },
    )
    .await;
    let t = Instant::now();
    let r = raw(
        addr,
        format!(
            "GET /replay?instance={};timeout=10s;fallback=force_self HTTP/1.1\r\n\
             host: web.localhost\r\nfly-force-instance-id: {me}\r\nconnection: close\r\n\r\n",
            cold.id
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.contains("reason=retries_exhausted"), "{r}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_target_that_does_not_come_up_in_its_timeout_falls_back() {
    // `web` has a started machine (the backend) and a stopped one nothing will start. The
    // started one replays to the stopped one with a 300 ms timeout and `force_self`.
    let (_dir, store) = store_with_web("replay-fallback");
    let (backend, _seen) = backend_with(false).await;
    let me = "0123456789abe0";
    store
        .insert_machine(&machine(me, "web", backend, None))
        .expect("machine");
    // Nothing listens at its address (the wake probes it from the recorded start).
    let mut cold = machine(
        "0123456789abe1",
        "web",
        "127.0.0.1:9".parse().expect("addr"),
        None,
    );
    cold.state = State::Stopped;
    store.insert_machine(&cold).expect("machine");
    let (_proxy, addr) = start(store, config()).await;
    let t = Instant::now();
    let r = raw(
        addr,
        format!(
            "GET /replay?instance={};timeout=300ms;fallback=force_self HTTP/1.1\r\n\
             host: web.localhost\r\nfly-force-instance-id: {me}\r\nconnection: close\r\n\r\n",
            cold.id
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status(&r), 200, "{r}");
    let want = format!(
        "fell back: instance={};replay_source={me};reason=timeout;elapsed_ms=",
        cold.id
    );
    assert!(r.contains(&want), "{r}");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(280) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    // No such machine: the fallback at once, with that reason.
    let get = |path: &str| {
        format!(
            "GET {path}?instance=00000000000000;fallback=force_self HTTP/1.1\r\n\
             host: web.localhost\r\nfly-force-instance-id: {me}\r\nconnection: close\r\n\r\n"
        )
    };
    let r = raw(addr, get("/replay").as_bytes()).await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.contains("reason=no_candidate"), "{r}");
    // A fallback request may not replay again (§3.6).
    let r = raw(addr, get("/replay-always").as_bytes()).await;
    assert_eq!(status(&r), 502, "{r}");
    assert!(r.contains("PA03"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_told_when_its_preferred_machine_was_not_the_one() {
    let s = setup("prefer").await;
    let ask = |prefer: &str| {
        format!(
            "GET / HTTP/1.1\r\nhost: web.localhost\r\nfly-prefer-instance-id: {prefer}\r\n\
             connection: close\r\n\r\n"
        )
    };
    let r = raw(s.addr, ask("0123456789abcd").as_bytes()).await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(
        !r.to_ascii_lowercase()
            .contains("fly-preferred-instance-unavailable"),
        "{r}"
    );
    let r = raw(s.addr, ask("00000000000000").as_bytes()).await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(
        r.to_ascii_lowercase()
            .contains("fly-preferred-instance-unavailable: true"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_that_does_not_come_up_is_waited_for_once() {
    // A stopped machine and no agent: the proxy records the start, and nothing ever starts
    // it. The request gets 503 PM03 after the wake timeout, not after a retry of it.
    let (_dir, store) = store_with_web("wake-timeout");
    let mut m = machine(
        "0123456789abce",
        "web",
        "127.0.0.1:9".parse().expect("addr"),
        None,
    );
    m.state = State::Stopped;
    store.insert_machine(&m).expect("machine");
    let (proxy, addr) = start(
        store.clone(),
        ProxyConfig {
            wake_timeout: Duration::from_secs(1),
            ..config()
        },
    )
    .await;
    let t = Instant::now();
    let r = raw(
        addr,
        b"GET / HTTP/1.1\r\nhost: web.localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&r), 503, "{r}");
    assert!(r.contains("PM03"), "{r}");
    assert!(r.to_ascii_lowercase().contains("retry-after: 1"), "{r}");
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "answered after {waited:?}"
    );
    let m = store.find_machine(&m.id).expect("read").expect("machine");
    assert_eq!(m.state, State::Starting, "the start was recorded once");
    drop(proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ports_headers_read_timeout_replaces_the_proxys() {
    // The proxy gives a head 1 s; this port's app asks for 4 s.
    let s = setup_opts(
        "head-timeout",
        false,
        Some(HttpOptions {
            headers_read_timeout: Some(4),
            ..Default::default()
        }),
    )
    .await;
    let mut c = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    // A head trickled over 2 s: past the proxy's 1 s, within the port's 4 s.
    let started = Instant::now();
    c.write_all(b"GET /trickled HTTP/1.1\r\nhost: web.localhost\r\n")
        .await
        .expect("write");
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.write_all(b"x-slow: 1\r\n").await.expect("write");
    }
    c.write_all(b"\r\n").await.expect("write");
    let r = answers(&mut c, 1).await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(started.elapsed() >= Duration::from_secs(2));
    // The same bound on the wait for the next head of the kept-alive connection.
    let idle = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
        .await
        .expect("the idle connection was kept past 10 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", &buf[..n]);
    let after = idle.elapsed();
    assert!(
        after >= Duration::from_millis(3900),
        "closed after {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_after_the_head_timeout() {
    let s = setup("idle").await;
    let mut c = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    c.write_all(b"GET /i HTTP/1.1\r\nhost: web.localhost\r\n\r\n")
        .await
        .expect("write");
    let r = answers(&mut c, 1).await;
    assert_eq!(status(&r), 200, "{r}");
    // headers_read_timeout is 1 s here: no next head in time, the proxy closes.
    let idle = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("the idle connection was kept past 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", &buf[..n]);
    let after = idle.elapsed();
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while s.proxy.connections() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.proxy.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_cancels_its_request() {
    let s = setup("leaves").await;
    let mut c = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    // The machine takes 3 s to answer /slow.
    c.write_all(b"GET /slow HTTP/1.1\r\nhost: web.localhost\r\n\r\n")
        .await
        .expect("write");
    let deadline = Instant::now() + Duration::from_secs(2);
    while !s
        .seen
        .lock()
        .expect("lock")
        .iter()
        .any(|l| l.contains("/slow"))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(c);
    let gone = Instant::now();
    while s.proxy.connections() > 0 && gone.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        s.proxy.connections(),
        0,
        "the request outlived its client by {:?}",
        gone.elapsed()
    );
    still_serves(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_short_is_cut_off_and_never_sent() {
    let s = setup("shortbody").await;
    let mut c = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    // Ten bytes promised, two sent: the head timeout (1 s here) covers the body too.
    c.write_all(b"POST /short HTTP/1.1\r\nhost: web.localhost\r\ncontent-length: 10\r\n\r\nab")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf))
        .await
        .expect("the connection was kept past 5 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    assert!(started.elapsed() >= Duration::from_millis(900));
    let seen = s.seen.lock().expect("lock").clone();
    assert!(!seen.iter().any(|l| l.contains("/short")), "{seen:?}");
    still_serves(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_whose_handlers_change_keeps_its_socket() {
    let (_dir, store) = store_with_web("rekind");
    let (backend, _seen) = backend_with(false).await;
    let m = machine("0123456789abcf", "web", backend, None);
    store.insert_machine(&m).expect("machine");
    let (proxy, addr) = start(Arc::clone(&store), config()).await;
    let get = b"GET /k HTTP/1.1\r\nhost: web.localhost\r\nconnection: close\r\n\r\n";
    let r = raw(addr, get).await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.to_ascii_lowercase().contains("fly-request-id"), "{r}");
    // The same port, now raw TCP (no handlers): the bytes go to the machine as they are.
    let mut rec = store.find_machine(&m.id).expect("read").expect("machine");
    rec.config.services[0].ports[0].handlers.clear();
    store.update_machine(&rec, rec.revision).expect("update");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // Served from the same socket all along: never refused, never moved.
        assert_eq!(proxy.listening().get(&80), Some(&addr), "the port moved");
        let r = raw(addr, get).await;
        assert_eq!(status(&r), 200, "{r}");
        if !r.to_ascii_lowercase().contains("fly-request-id") {
            break;
        }
        assert!(Instant::now() < deadline, "still served as http: {r}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
