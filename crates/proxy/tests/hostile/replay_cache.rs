//! fly-replay caching against the real proxy and real HTTP servers on loopback (in this
//! binary for its harness, and to save CI a link): an `origin` app whose answers replay to a
//! `target` app, with path-based caching (header and JSON forms), session rules, bypass,
//! invalidation, uncacheable replays, and a cached target that can no longer take requests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hangar_api_types::{HttpOptions, ReplayCache};
use hangar_proxy::Proxy;
use hangar_store::{SqliteStore, Store};

use super::{TempDir, machine, raw, serve, start, status};

type Seen = Arc<Mutex<Vec<String>>>;

/// An app's answer to a path: headers and body.
type Answer = (Vec<(&'static str, String)>, String);

/// A server on `[::1]:0` answering with `answer(path)`, recording each request as
/// `"<path> status=<fly-replay-cache-status or -> src=<yes|no>"`.
async fn server(answer: fn(&str) -> Answer) -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let addr = serve(false, move |req: hyper::Request<hyper::body::Incoming>| {
        use http_body_util::BodyExt;
        let h = req.headers();
        let line = format!(
            "{} status={} src={}",
            req.uri().path(),
            h.get("fly-replay-cache-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-"),
            if h.contains_key("fly-replay-src") {
                "yes"
            } else {
                "no"
            },
        );
        s.lock().expect("lock").push(line);
        let (headers, body) = answer(req.uri().path());
        let mut r =
            hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)).boxed());
        for (k, v) in headers {
            r.headers_mut()
                .insert(k, hyper::header::HeaderValue::from_str(&v).expect("value"));
        }
        std::future::ready(r)
    })
    .await;
    (addr, seen)
}

/// The origin app's answers: a replay to `target` (or the app `gone`), cached or not.
fn origin(path: &str) -> Answer {
    let to = |app: &str| ("fly-replay", format!("app={app}"));
    let cache = |p: &str| ("fly-replay-cache", p.to_string());
    let ttl = ("fly-replay-cache-ttl-secs", "60".to_string());
    let headers = match path.split('/').nth(1).unwrap_or_default() {
        "p" => vec![to("target"), cache("/p/*"), ttl],
        "b" => vec![
            to("target"),
            cache("/b/*"),
            ttl,
            ("fly-replay-cache-allow-bypass", "yes".into()),
        ],
        // Cached by the session rule of the origin's port.
        "s" => vec![to("target")],
        // Not cacheable: it carries state.
        "st" => vec![
            ("fly-replay", "app=target;state=x".into()),
            cache("/st/*"),
            ttl,
        ],
        // A pattern that does not cover the request: not cached.
        "n" => vec![to("target"), cache("/elsewhere/*"), ttl],
        "g" => vec![to("gone"), cache("/g/*"), ttl],
        "j" => {
            return (
                vec![(
                    "content-type",
                    "application/vnd.fly.replay+json".to_string(),
                )],
                r#"{"app":"target","cache":{"prefix":"/j/*","ttl":60}}"#.to_string(),
            );
        }
        _ => Vec::new(),
    };
    (headers, "origin\n".into())
}

/// The target app's answers: `/p/inv` also drops the cached decision that led to it.
fn target(path: &str) -> Answer {
    if path == "/p/inv" {
        return (
            vec![("fly-replay-cache", "invalidate".into())],
            "target\n".into(),
        );
    }
    (Vec::new(), "target\n".into())
}

struct Apps {
    _dir: TempDir,
    proxy: Arc<Proxy>,
    addr: SocketAddr,
    origin: Seen,
    target: Seen,
}

async fn apps() -> Apps {
    let dir =
        std::env::temp_dir().join(format!("hangar-proxy-replay-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let store = Arc::new(SqliteStore::open(&dir.join("state.db")).expect("store"));
    store.create_org("o", "O", 1).expect("org");
    for name in ["origin", "target", "gone"] {
        super::add_app(&store, name, "default");
    }
    let (a, origin_seen) = server(origin).await;
    let (b, target_seen) = server(target).await;
    let session = HttpOptions {
        replay_cache: vec![ReplayCache {
            path_prefix: "/s".into(),
            ttl_seconds: 60,
            r#type: "header".into(),
            name: "X-Tenant".into(),
            allow_bypass: None,
        }],
        ..HttpOptions::default()
    };
    // Two machines in the origin app, both the same server: a client may name either.
    for id in ["0123456789aaaa", "0123456789cccc"] {
        store
            .insert_machine(&machine(id, "origin", a, Some(session.clone())))
            .expect("origin machine");
    }
    store
        .insert_machine(&machine("0123456789bbbb", "target", b, None))
        .expect("target machine");
    let (proxy, addr) = start(store, super::config()).await;
    Apps {
        _dir: TempDir(dir),
        proxy,
        addr,
        origin: origin_seen,
        target: target_seen,
    }
}

impl Apps {
    /// GETs `path` from the origin app with extra header lines; the whole response.
    async fn get(&self, path: &str, headers: &str) -> String {
        raw(
            self.addr,
            format!(
                "GET {path} HTTP/1.1\r\nhost: origin.localhost\r\n{headers}connection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
    }

    /// How many requests the origin app saw under `prefix`.
    fn asked(&self, prefix: &str) -> usize {
        let seen = self.origin.lock().expect("lock");
        seen.iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// What the target saw of its last request.
    fn last_target(&self) -> String {
        self.target
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_decisions_are_cached_invalidated_and_bypassed() {
    let s = apps().await;

    // Path-based: the first request asks the origin (miss, with fly-replay-src), the next
    // ones under the prefix go to the target directly (hit, no fly-replay-src).
    let r = s.get("/p/1", "").await;
    assert_eq!(status(&r), 200, "{r}");
    assert!(r.ends_with("target\n"), "{r}");
    assert_eq!(s.last_target(), "/p/1 status=miss src=yes");
    let r = s.get("/p/2/deeper", "").await;
    assert!(r.ends_with("target\n"), "{r}");
    assert_eq!(s.last_target(), "/p/2/deeper status=hit src=no");
    assert_eq!(s.asked("/p/"), 1);
    // A client's own fly-replay-cache-status does not reach the app; an entry without
    // allow-bypass ignores a client's skip.
    s.get(
        "/p/3",
        "fly-replay-cache-status: forged\r\nfly-replay-cache-control: skip\r\n",
    )
    .await;
    assert_eq!(s.last_target(), "/p/3 status=hit src=no");
    assert_eq!(s.asked("/p/"), 1);

    // A client that names a machine (fly-force-instance-id) gets only that machine's own
    // decision: naming the other one asks it, and its answer is kept from then on.
    let force = |m: &str| format!("fly-force-instance-id: 0123456789{m}\r\n");
    s.get("/p/f1", &force("cccc")).await;
    let asked = s.asked("/p/");
    s.get("/p/f2", &force("cccc")).await;
    assert_eq!(s.last_target(), "/p/f2 status=hit src=no");
    s.get("/p/f3", &force("aaaa")).await;
    assert_eq!(s.last_target(), "/p/f3 status=miss src=yes");
    assert_eq!(s.asked("/p/"), asked + 1);
    s.get("/p/f4", &force("aaaa")).await;
    assert_eq!(s.last_target(), "/p/f4 status=hit src=no");
    s.get("/p/f5", "").await;
    assert_eq!(s.last_target(), "/p/f5 status=hit src=no");
    assert_eq!(s.asked("/p/"), asked + 1);

    // The target invalidates: the next request asks the origin again.
    let r = s.get("/p/inv", "").await;
    assert!(r.ends_with("target\n"), "{r}");
    assert!(!r.to_ascii_lowercase().contains("fly-replay-cache"), "{r}");
    let asked = s.asked("/p/");
    s.get("/p/4", "").await;
    assert_eq!(s.last_target(), "/p/4 status=miss src=yes");
    assert_eq!(s.asked("/p/"), asked + 1);

    // Bypass, allowed by the entry: the origin is asked, the target told so.
    s.get("/b/1", "").await;
    s.get("/b/2", "fly-replay-cache-control: skip\r\n").await;
    assert_eq!(s.last_target(), "/b/2 status=bypass src=yes");
    assert_eq!(s.asked("/b/"), 2);
    s.get("/b/3", "").await;
    assert_eq!(s.last_target(), "/b/3 status=hit src=no");
    assert_eq!(s.asked("/b/"), 2);

    // The JSON form.
    s.get("/j/1", "").await;
    s.get("/j/2", "").await;
    assert_eq!(s.last_target(), "/j/2 status=hit src=no");
    assert_eq!(s.asked("/j/"), 1);

    // Session rules: keyed on the header's value.
    s.get("/s/1", "x-tenant: t1\r\n").await;
    assert_eq!(s.last_target(), "/s/1 status=miss src=yes");
    s.get("/s/2", "x-tenant: t1\r\n").await;
    assert_eq!(s.last_target(), "/s/2 status=hit src=no");
    s.get("/s/3", "x-tenant: t2\r\n").await;
    assert_eq!(s.last_target(), "/s/3 status=miss src=yes");
    // Without the header the rule does not apply: replayed, nothing cached.
    s.get("/s/4", "").await;
    assert_eq!(s.last_target(), "/s/4 status=- src=yes");
    assert_eq!(s.asked("/s/"), 3);

    // Not cached: a replay with state, a pattern that does not cover the request.
    for p in ["/st/1", "/st/2", "/n/1", "/n/2"] {
        s.get(p, "").await;
        assert!(
            s.last_target()
                .starts_with(&format!("{p} status=- src=yes"))
        );
    }
    assert_eq!(s.asked("/st/"), 2);
    assert_eq!(s.asked("/n/"), 2);

    // A target that can take nothing (the app has no machines): its decision is not kept,
    // and the origin is asked every time.
    for i in 1..=2 {
        let r = s.get("/g/1", "").await;
        assert_eq!(status(&r), 503, "{r}");
        assert_eq!(s.asked("/g/"), i);
    }

    let m = s.proxy.render_metrics();
    assert!(
        m.lines()
            .any(|l| l.starts_with("hangar_proxy_replay_cache_lookups_total")
                && l.contains("result=\"hit\"")
                && !l.ends_with(" 0")),
        "{m}"
    );
    // Kept: /p, /b, /j and two sessions. Not: /st, /n, nor /g (its target never answered).
    assert!(
        m.lines()
            .any(|l| l.starts_with("hangar_proxy_replay_cache_entries") && l.ends_with(" 5")),
        "{m}"
    );
}

/// Serves `[::1]:0` with `answer` like [`server`], all of it (listener and connections) in
/// the returned task: aborting it makes the machine unreachable at once.
async fn abortable(answer: &'static str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("[::1]:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, _)) = listener.accept().await {
            conns.spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    use http_body_util::BodyExt;
                    let body =
                        http_body_util::Full::new(bytes::Bytes::from_static(answer.as_bytes()));
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(body.boxed()))
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_target_that_can_not_be_reached_sends_the_request_back_to_its_app() {
    let dir = std::env::temp_dir().join(format!(
        "hangar-proxy-replay-unreachable-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let _dir = TempDir(dir.clone());
    let store = Arc::new(SqliteStore::open(&dir.join("state.db")).expect("store"));
    store.create_org("o", "O", 1).expect("org");
    for name in ["origin", "flaky"] {
        super::add_app(&store, name, "default");
    }
    // The origin replays /u/* to `flaky`, cached.
    fn to_flaky(_: &str) -> Answer {
        (
            vec![
                ("fly-replay", "app=flaky".into()),
                ("fly-replay-cache", "/u/*".into()),
                ("fly-replay-cache-ttl-secs", "60".into()),
            ],
            "origin\n".into(),
        )
    }
    let (a, origin_seen) = server(to_flaky).await;
    let (b, flaky) = abortable("flaky\n").await;
    store
        .insert_machine(&machine("0123456789aaaa", "origin", a, None))
        .expect("origin machine");
    store
        .insert_machine(&machine("0123456789bbbb", "flaky", b, None))
        .expect("flaky machine");
    let (_proxy, addr) = start(store, super::config()).await;
    let get = |path: &str| {
        let req =
            format!("GET {path} HTTP/1.1\r\nhost: origin.localhost\r\nconnection: close\r\n\r\n");
        async move { raw(addr, req.as_bytes()).await }
    };
    let asked = || origin_seen.lock().expect("lock").len();
    let r = get("/u/1").await;
    assert!(r.ends_with("flaky\n"), "{r}");
    let r = get("/u/2").await;
    assert!(r.ends_with("flaky\n"), "{r}");
    assert_eq!(asked(), 1, "the second request came from the cache");
    // `flaky` can no longer be reached: the cached decision is dropped and the origin asked
    // (which replays there again, and that fails: 502).
    flaky.abort();
    let _ = flaky.await;
    let r = get("/u/3").await;
    assert_eq!(status(&r), 502, "{r}");
    assert_eq!(asked(), 2, "the origin was asked again");
    get("/u/4").await;
    assert_eq!(asked(), 3, "the decision was not kept");
}
