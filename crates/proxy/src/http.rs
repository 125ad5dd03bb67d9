//! The `http` handler: HTTP/1.1 and h2 from clients, HTTP/1.1 to machines; routing by
//! `Host` (`<app>.<domain>` or a custom hostname), balancing, autostart, queueing at the hard
//! limit, `fly-replay`, the §3.5 headers, upgrades (websockets), ACME HTTP-01 responses.

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};

use crate::Proxy;
use crate::balance::{Pick, Prefs, Slot};
use crate::catalog::{AppEntry, MachineEntry};
use crate::replay::{Fallback, MAX_REPLAY_LEN, Replay, replay_src};
use crate::replay_cache;

/// Boxed error of bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body of requests and responses on both sides.
pub type Body = BoxBody<Bytes, BoxError>;

const FLY_REQUEST_ID: HeaderName = HeaderName::from_static("fly-request-id");

/// Most `fly-replay`s one request follows (the reference's limit; then `PA02`).
pub const MAX_REPLAYS: usize = 10;
/// Connect attempts on other machines after a failed connect.
pub const MAX_CONNECT_RETRIES: usize = 5;

/// What the proxy knows about the client connection.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The client.
    pub peer: SocketAddr,
    /// Public service port the connection came to.
    pub port: u16,
    /// Whether the client connection is TLS.
    pub tls: bool,
    /// The app of the Flycast address the connection came to (routing ignores `Host`, and
    /// `force_https` does not apply); `None` on public listeners.
    pub app: Option<String>,
    /// The client's address as text, and the forwarded headers that are the same for every
    /// request of the connection, written once.
    ip_text: String,
    fixed_headers: Vec<u8>,
}

impl Conn {
    /// A client connection of this proxy (`region`: the proxy's).
    pub fn new(peer: SocketAddr, port: u16, tls: bool, app: Option<String>, region: &str) -> Self {
        let ip_text = peer.ip().to_canonical().to_string();
        let fixed_headers = format!(
            "fly-client-ip: {ip_text}\r\nx-forwarded-proto: {}\r\nfly-forwarded-port: {port}\r\n\
             x-forwarded-ssl: {}\r\nfly-region: {region}\r\n",
            if tls { "https" } else { "http" },
            if tls { "on" } else { "off" },
        )
        .into_bytes();
        Self {
            peer,
            port,
            tls,
            app,
            ip_text,
            fixed_headers,
        }
    }
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

/// A plain-text error response carrying the reference's error code.
fn error(status: StatusCode, code: &str, msg: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{msg} ({code})\n")));
    *r.status_mut() = status;
    r.extensions_mut().insert(ProxyError(code.to_string()));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(code) {
        h.insert("fly-error-code", v);
    }
    r
}

/// Marks a response the proxy made for an error (§3.3 code); never sent on the wire.
#[derive(Debug, Clone)]
struct ProxyError(String);

/// Codes route() already wrote to the app's stream, with the machine, before answering
/// with them: the connection and wake failures, a bad fly-replay, a machine that did not
/// answer (`PU02` with 502; an incomplete client body is a 400 and logged at the end).
fn logged_in_route(code: &str, status: StatusCode) -> bool {
    code.starts_with("PM")
        || matches!(
            code,
            "PC01" | "PC02" | "PC03" | "PC04" | "PC05" | "PC06" | "PA03"
        )
        || (code == "PU02" && status == StatusCode::BAD_GATEWAY)
}

fn request_log<'a>(
    rid: &'a str,
    parts: &'a hyper::http::request::Parts,
    url: &'a str,
    status: Option<u16>,
) -> crate::RequestLog<'a> {
    crate::RequestLog {
        id: rid,
        method: parts.method.as_str(),
        url,
        status,
    }
}

fn overloaded(code: &str, msg: &str) -> Response<Body> {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, code, msg);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// Where a replayed request goes back to when the replay's target can not take it (the
/// replay's `fallback`), and what the replay changed, to undo.
struct ReplayFallback {
    how: Fallback,
    /// The replay's target as `instance=…;app=…;region=…` (what was asked for).
    asked: String,
    from_id: String,
    from_app: Arc<AppEntry>,
    since: Instant,
    /// The request's path and the lengths of the header edits before the replay.
    path: String,
    delete_len: usize,
    extra_len: usize,
}

impl ReplayFallback {
    /// `fly-replay-failed` (§3.5): what the replay asked for, the machine that replayed, why
    /// it failed and how long the proxy tried.
    fn failed_header(&self, reason: &str) -> String {
        format!(
            "{}replay_source={};reason={reason};elapsed_ms={}",
            self.asked,
            self.from_id,
            self.since.elapsed().as_millis()
        )
    }
}

/// A replay's target as `instance=…;app=…;region=…;` (the fields it set), for
/// `fly-replay-failed`.
fn replay_asked(r: &Replay) -> String {
    let mut out = String::new();
    if let Some(i) = r.instance.as_ref().or(r.prefer_instance.as_ref()) {
        out.push_str(&format!("instance={i};"));
    }
    if let Some(a) = &r.app {
        out.push_str(&format!("app={a};"));
    }
    if !r.regions.is_empty() {
        out.push_str(&format!("region={};", r.regions.join(",")));
    }
    out
}

/// Waits in `app`'s bounded queue until a machine frees a slot (at most 100 ms per look);
/// `Err` with the 503 (`PR04`) when the queue is full or the request has waited the queue
/// timeout since it first queued (`queued_since`).
async fn wait_in_queue(
    proxy: &Proxy,
    app: &str,
    queued_since: &mut Option<Instant>,
) -> Result<(), Response<Body>> {
    let cfg = &proxy.config;
    let since = *queued_since.get_or_insert_with(Instant::now);
    if since.elapsed() >= cfg.queue_timeout {
        return Err(overloaded(
            "PR04",
            "every machine of the app is at its hard limit",
        ));
    }
    let Some(_waiting) = proxy.metrics.wait_slot(app, cfg.max_queue_per_app) else {
        return Err(overloaded(
            "PR04",
            "too many requests are waiting for this app",
        ));
    };
    let left = cfg.queue_timeout.saturating_sub(since.elapsed());
    let _ = tokio::time::timeout(
        left.min(Duration::from_millis(100)),
        proxy.loads.any_freed(),
    )
    .await;
    Ok(())
}

/// The whole of `body`, if it is no longer than `limit` and arrives complete.
async fn collect_limited(mut body: Body, limit: usize) -> Option<Bytes> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            if out.len() + data.len() > limit {
                return None;
            }
            out.extend_from_slice(&data);
        }
    }
    Some(out.freeze())
}

pub(crate) fn incoming_body(b: Incoming) -> Body {
    Body::new(b.map_err(|e| -> BoxError { Box::new(e) }))
}

/// Holds a machine's load slot until the response body is done (or dropped).
struct SlotBody {
    inner: Body,
    _slot: Slot,
}

impl hyper::body::Body for SlotBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Connection-specific fields (RFC 9110 §7.6.1), not forwarded. `Trailer` is not one: it
/// declares a response's trailer fields, which hyper's HTTP/1.1 server sends only if declared.
pub(crate) const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

/// A protocol switch the proxy carries (websockets and the like). `h2c` is not one: the proxy
/// does not pass on `HTTP2-Settings`, and a machine that switched anyway would give the
/// client a tunnel that no longer carries the proxy's headers; such a request is served as
/// a plain HTTP/1.1 one (RFC 9110 lets a server ignore `Upgrade`).
fn is_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && !req.headers().get_all(header::UPGRADE).iter().any(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"h2c"))
        })
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// The app a `Host` names: `<app>.<domain>` (port ignored, case-insensitive).
pub fn app_from_host(host: &str, domain: &str) -> Option<String> {
    let host = host.trim().trim_end_matches('.');
    let host = match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(']') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    if host.len() > 253 {
        return None;
    }
    let host = host.to_ascii_lowercase();
    let app = host.strip_suffix(domain)?.strip_suffix('.')?;
    let valid = !app.is_empty()
        && app.len() <= 63
        && !app.starts_with('-')
        && app
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    valid.then(|| app.to_string())
}

/// A header value as text, trimmed; values that are not text count as absent.
fn text(v: Option<&HeaderValue>) -> Option<&[u8]> {
    v.and_then(|v| v.to_str().ok()).map(|v| v.trim().as_bytes())
}

fn header_str<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn list(h: &HeaderMap, name: &str) -> Vec<String> {
    header_str(h, name)
        .map(|v| {
            v.split(',')
                .map(|r| r.trim().to_ascii_lowercase())
                .filter(|r| !r.is_empty())
                .take(16)
                .collect()
        })
        .unwrap_or_default()
}

fn prefs_from(h: &HeaderMap) -> Prefs {
    // One pass over the request's headers (most requests have none of these) rather than a
    // lookup of each name.
    if !h.keys().any(|n| n.as_str().starts_with("fly-")) {
        return Prefs::default();
    }
    Prefs {
        force_instance: header_str(h, "fly-force-instance-id").map(str::to_string),
        prefer_instance: header_str(h, "fly-prefer-instance-id").map(str::to_string),
        force_regions: list(h, "fly-force-region"),
        prefer_regions: list(h, "fly-prefer-region"),
        exclude: Vec::new(),
    }
}

/// A request id: 20 random hex digits and the region. The randomness comes from a per-thread
/// generator seeded once from the OS (not a syscall per request); ids need to be unique, not
/// secret.
fn request_id(region: &str) -> String {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let mut seed = [0u8; 8];
            let _ = getrandom::fill(&mut seed);
            u64::from_le_bytes(seed) | 1
        });
    }
    // splitmix64: every output of a 2^64 period, well mixed.
    let next = || {
        STATE.with(|s| {
            let x = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
            s.set(x);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        })
    };
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (a, b) = (next(), next());
    let mut out = String::with_capacity(21 + region.len());
    for i in 0..16 {
        out.push(HEX[((a >> (60 - 4 * i)) & 0xf) as usize] as char);
    }
    for i in 0..4 {
        out.push(HEX[((b >> (60 - 4 * i)) & 0xf) as usize] as char);
    }
    out.push('-');
    out.push_str(region);
    out
}

/// Per-port options of the app (from its first machine serving the port).
#[derive(Debug, Default, Clone)]
struct PortOptions {
    force_https: bool,
    pristine: bool,
    response_headers: Vec<(String, Option<String>)>,
    /// Session-based `fly-replay` caching rules (crate::replay_cache).
    replay_cache: Vec<hangar_api_types::ReplayCache>,
    /// `http_options.idle_timeout`: how long the machine may stay silent on a request.
    idle_timeout: Option<Duration>,
}

fn port_options(app: &AppEntry, port: u16) -> PortOptions {
    let Some(mp) = app.machines.iter().find_map(|m| {
        m.service_for(port)
            .and_then(|s| crate::catalog::port_entry(s, port))
    }) else {
        return PortOptions::default();
    };
    let resp = mp.http_options.as_ref().and_then(|o| o.response.as_ref());
    let mut response_headers = Vec::new();
    if let Some(r) = resp {
        for (k, v) in &r.headers {
            match v {
                serde_json::Value::Bool(false) => response_headers.push((k.clone(), None)),
                serde_json::Value::String(s) => response_headers.push((k.clone(), Some(s.clone()))),
                serde_json::Value::Array(a) => {
                    let joined: Vec<String> = a
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect();
                    response_headers.push((k.clone(), Some(joined.join(", "))));
                }
                other => response_headers.push((k.clone(), Some(other.to_string()))),
            }
        }
    }
    PortOptions {
        force_https: mp.force_https.unwrap_or(false),
        pristine: resp.and_then(|r| r.pristine).unwrap_or(false),
        response_headers,
        replay_cache: mp
            .http_options
            .as_ref()
            .map(|o| o.replay_cache.clone())
            .unwrap_or_default(),
        idle_timeout: mp
            .http_options
            .as_ref()
            .and_then(|o| o.idle_timeout)
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(u64::from(s))),
    }
}

/// The request body: kept in memory (replayable, retryable) when small, else streamed once.
enum ReqBody {
    Buffered(Bytes),
    Stream(Option<Body>),
}

impl ReqBody {
    fn take(&mut self) -> Option<Body> {
        match self {
            ReqBody::Buffered(b) => Some(full(b.clone())),
            ReqBody::Stream(s) => s.take(),
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, ReqBody::Buffered(_))
    }
}

async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
) -> Result<ReqBody, Response<Body>> {
    if hyper::body::Body::is_end_stream(&body) {
        return Ok(ReqBody::Buffered(Bytes::new()));
    }
    let len = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    match len {
        Some(n) if n as usize <= limit && !chunked => {
            let b = collect_limited(body, limit)
                .await
                .ok_or_else(|| error(StatusCode::BAD_REQUEST, "PU02", "incomplete request body"))?;
            Ok(ReqBody::Buffered(b))
        }
        // Unknown length (chunked, or h2 without content-length): streamed once.
        _ => Ok(ReqBody::Stream(Some(body))),
    }
}

/// Serves one request (its body: hyper's, or a small one read whole by the HTTP/1.1 fast
/// path, crate::h1).
pub async fn handle(
    proxy: &Arc<Proxy>,
    conn: &Conn,
    req: Request<Body>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let rid = request_id(&proxy.config.region);
    if let Some(r) = acme_http01(proxy, &req) {
        return Ok(r);
    }
    let (method, uri) = (req.method().clone(), req.uri().clone());
    let (app_name, mut resp) = route(proxy, conn, req, &rid).await;
    let status = resp.status();
    if let Some(ProxyError(code)) = resp.extensions().get::<ProxyError>()
        && !logged_in_route(code, status)
    {
        let url = uri.to_string();
        let request = crate::RequestLog {
            id: &rid,
            method: method.as_str(),
            url: &url,
            status: Some(status.as_u16()),
        };
        proxy.log_error(&app_name, None, code, "", Some(&request));
    }
    proxy
        .metrics
        .http_response(&app_name, status.as_u16(), started.elapsed());
    let h = resp.headers_mut();
    if !h.contains_key(&FLY_REQUEST_ID)
        && let Ok(v) = HeaderValue::from_str(&rid)
    {
        h.insert(FLY_REQUEST_ID, v);
    }
    Ok(resp)
}

/// The answer to an ACME HTTP-01 validation (`/.well-known/acme-challenge/<token>` for a
/// token out now, at its hostname), before any routing or redirect.
fn acme_http01<B>(proxy: &Proxy, req: &Request<B>) -> Option<Response<Body>> {
    let token = req
        .uri()
        .path()
        .strip_prefix("/.well-known/acme-challenge/")?;
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| header_str(req.headers(), "host"))
        .and_then(hangar_domain::tls::normalize_host)?;
    let ka = proxy.challenges.http01(token, &host)?;
    let mut r = Response::new(full(ka));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Some(r)
}

async fn route(
    proxy: &Arc<Proxy>,
    conn: &Conn,
    mut req: Request<Body>,
    rid: &str,
) -> (String, Response<Body>) {
    let cfg = &proxy.config;
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    // Routed by the request target's authority (absolute form, h2's `:authority`): the
    // machine gets that name as `Host` too, never a different one the client also sent (RFC
    // 9112 §3.2.2: a proxy replaces `Host` with the target's host).
    if req.uri().authority().is_some()
        && let Ok(v) = HeaderValue::from_str(&host)
    {
        req.headers_mut().insert(header::HOST, v);
    }
    let snap = proxy.catalog.view();
    let flycast = conn.app.is_some();
    let Some(name) = conn
        .app
        .clone()
        .or_else(|| app_from_host(&host, &cfg.domain))
        .or_else(|| snap.app_for_host(&host))
    else {
        return (
            String::new(),
            error(
                StatusCode::NOT_FOUND,
                "PR02",
                "no app is served at this host name",
            ),
        );
    };
    // Borrowed from this thread's view of the catalog; owned only after a replay to another
    // app (the workers would otherwise write the entry's reference count per request).
    let mut app: Cow<'_, Arc<AppEntry>> = match snap.apps.get(&name) {
        Some(a) => Cow::Borrowed(a),
        None => return (name, error(StatusCode::NOT_FOUND, "PR02", "app not found")),
    };
    let opts = port_options(&app, conn.port);
    let silent = opts.idle_timeout.unwrap_or(cfg.upstream_idle_timeout);
    if opts.force_https && !conn.tls && !flycast {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let host_only = host.split(':').next().unwrap_or_default();
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::MOVED_PERMANENTLY;
        if let Ok(v) = HeaderValue::from_str(&format!("https://{host_only}{path}")) {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return (name, r);
    }
    let mut prefs = prefs_from(req.headers());
    let upgrade = is_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    // No body at all (HTTP/1.1 without Content-Length or Transfer-Encoding, h2 ended with its
    // headers): nothing to read.
    let bodiless = hyper::body::Body::is_end_stream(&body);
    if upgrade && !bodiless {
        // Its body would not be sent (the connection is spliced once the machine switches),
        // and the machine, told of one by the head, would read the next request as it.
        return (
            name,
            error(
                StatusCode::BAD_REQUEST,
                "PU04",
                "an upgrade request must not carry a body",
            ),
        );
    }
    let mut body = if upgrade || bodiless {
        ReqBody::Buffered(Bytes::new())
    } else {
        match Box::pin(read_body(body, &parts.headers, cfg.replay_body_limit)).await {
            Ok(b) => b,
            Err(r) => return (name, r),
        }
    };
    let mut path_and_query = parts
        .uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    // From fly-replay transforms (and the fallback's fly-replay-failed): set last, over
    // everything, and removed (after the forwarded headers).
    let mut extra_headers: Vec<(HeaderName, HeaderValue)> = Vec::new();
    let mut delete_headers: Vec<HeaderName> = Vec::new();
    let mut head_buf: Vec<u8> = Vec::with_capacity(1024);
    let mut backend_upgrade: Option<hyper::upgrade::OnUpgrade> = None;
    let mut replays = 0usize;
    let mut retries = 0usize;
    let mut src: Option<String> = None;
    // The last replay's `fallback` (what to undo, where to go back to) and `timeout`.
    let mut fallback: Option<ReplayFallback> = None;
    let mut replay_deadline: Option<Instant> = None;
    // A fallback request may not replay again (§3.6).
    let mut fell_back = false;
    let mut cold: Option<Duration> = None;
    let mut queued_since: Option<Instant> = None;
    // Every wake of this request together is bounded by the wake timeout: a machine that
    // did not come up in time is not waited for again.
    let mut waking_since: Option<Instant> = None;
    let mut preferred_unavailable: bool;
    // Machines that just failed this request (connect, wake, send): tried elsewhere first,
    // then again after a pause when there is nowhere else (a busy machine's full accept
    // queue is not a reason to give up on an app with one machine).
    let mut failed: Vec<String> = Vec::new();
    // fly-replay caching (crate::replay_cache), only looked at when something is cached or
    // the port has session rules: the decision this request matched (dropped on an
    // `invalidate`), and, while a cached target has not answered, where to go back to when
    // it can not be reached.
    // (Made only when needed: this is every request's path.)
    let cache_host = || {
        host.split(':')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    let session = if opts.replay_cache.is_empty() {
        None
    } else {
        replay_cache::session_for(&opts.replay_cache, parts.uri.path(), &|n| {
            parts
                .headers
                .get_all(n)
                .iter()
                .filter_map(|v| v.to_str().ok().map(str::to_string))
                .collect()
        })
    };
    let mut cache_key: Option<replay_cache::Key> = None;
    let mut cache_origin: Option<(Arc<AppEntry>, Prefs)> = None;
    // The origin's decision, kept once its target answers (one that can take nothing is not).
    let mut to_cache: Option<(replay_cache::Key, replay_cache::Decision)> = None;
    if !proxy.replay_cache.is_empty() {
        let skip = parts
            .headers
            .get("fly-replay-cache-control")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"skip"));
        match proxy.replay_cache.lookup(
            &app.name,
            &cache_host(),
            parts.uri.path(),
            session.as_ref(),
            skip,
            // A client that names its machine (`fly-force-instance-id`) gets a decision only
            // if that machine made it: another machine's stands for its own answer.
            prefs.force_instance.as_deref(),
        ) {
            replay_cache::Lookup::Hit(key, r) => {
                let target = match &r.app {
                    None => Some(Arc::clone(&app)),
                    Some(t) => snap
                        .apps
                        .get(t)
                        .filter(|t| t.org == app.org && t.network == app.network)
                        .map(Arc::clone),
                };
                match target {
                    Some(t) => {
                        cache_origin = Some((Arc::clone(&app), prefs.clone()));
                        app = Cow::Owned(t);
                        prefs = replay_prefs(&r, None);
                        replays = 1;
                        cache_key = Some(key);
                        set_header(&mut extra_headers, FLY_REPLAY_CACHE_STATUS, "hit");
                    }
                    // The target app is gone: ask the app again.
                    None => proxy.replay_cache.remove(&key),
                }
            }
            replay_cache::Lookup::Bypass(key) => {
                cache_key = Some(key);
                set_header(&mut extra_headers, FLY_REPLAY_CACHE_STATUS, "bypass");
            }
            replay_cache::Lookup::Miss => {}
        }
    }
    // The replay target can not take the request: back to the machine that replayed, with
    // what the replay changed undone and `fly-replay-failed` saying why; `false` when the
    // replay named no fallback.
    macro_rules! fall_back {
        ($reason:expr) => {
            match fallback.take() {
                None => false,
                Some(fb) => {
                    let failed_value = fb.failed_header($reason);
                    app = Cow::Owned(fb.from_app);
                    prefs = Prefs {
                        force_instance: (fb.how == Fallback::ForceSelf).then(|| fb.from_id.clone()),
                        prefer_instance: Some(fb.from_id),
                        ..Prefs::default()
                    };
                    path_and_query = fb.path;
                    delete_headers.truncate(fb.delete_len);
                    extra_headers.truncate(fb.extra_len);
                    if let Ok(v) = HeaderValue::from_str(&failed_value) {
                        extra_headers.push((HeaderName::from_static("fly-replay-failed"), v));
                    }
                    src = None;
                    replay_deadline = None;
                    fell_back = true;
                    failed.clear();
                    retries = 0;
                    true
                }
            }
        };
    }
    // A cached replay's target can not take the request: the decision is forgotten and the
    // app the client asked for is asked again; `false` when the request did not come from
    // the cache.
    macro_rules! back_to_origin {
        () => {
            match cache_origin.take() {
                None => false,
                Some((origin, origin_prefs)) => {
                    if let Some(k) = cache_key.take() {
                        proxy.replay_cache.remove(&k);
                    }
                    app = Cow::Owned(origin);
                    prefs = origin_prefs;
                    replays = 0;
                    extra_headers.retain(|(k, _)| k != FLY_REPLAY_CACHE_STATUS);
                    failed.clear();
                    retries = 0;
                    true
                }
            }
        };
    }
    loop {
        if replay_deadline.is_some_and(|d| Instant::now() >= d) {
            if fall_back!("timeout") {
                continue;
            }
            return (
                name,
                overloaded("PR01", "the replay target did not take the request in time"),
            );
        }
        let effective = Prefs {
            exclude: prefs.exclude.iter().chain(failed.iter()).cloned().collect(),
            ..prefs.clone()
        };
        let choice = crate::balance::pick(
            &app,
            conn.port,
            &effective,
            &proxy.loads,
            &proxy.regions,
            &|m, p| proxy.healthy(m, p),
        );
        // The request's place on the machine, taken within its hard limit as it is chosen.
        let slot: crate::balance::Slot;
        let machine: Cow<'_, Arc<MachineEntry>> = match choice {
            Pick::Route(m) => {
                // The pick read the load; the slot is taken within the hard limit in one
                // step (another worker may have taken the last one since).
                let (_, hard) = crate::balance::limits(m, conn.port);
                match proxy.loads.try_acquire(&m.id, hard) {
                    Some(s) => slot = s,
                    None => {
                        tokio::task::yield_now().await;
                        continue;
                    }
                }
                Cow::Borrowed(m)
            }
            Pick::Wake(m) => {
                let Some(svc) = m.service_for(conn.port) else {
                    return (
                        name,
                        error(StatusCode::SERVICE_UNAVAILABLE, "PR01", "no service"),
                    );
                };
                let internal = u16::try_from(svc.internal_port).unwrap_or(0);
                let _waiting = match proxy.metrics.wait_slot(&app.name, cfg.max_queue_per_app) {
                    Some(w) => w,
                    None => {
                        return (
                            name,
                            overloaded("PR04", "too many requests are waiting for this app"),
                        );
                    }
                };
                let since = *waking_since.get_or_insert_with(Instant::now);
                let mut left = cfg.wake_timeout.saturating_sub(since.elapsed());
                // A replay's `timeout` bounds the wake of its target too (then its fallback).
                if let Some(d) = replay_deadline {
                    left = left.min(d.saturating_duration_since(Instant::now()));
                }
                if left.is_zero() {
                    if replay_deadline.is_some_and(|d| Instant::now() >= d) {
                        // The loop's first check falls back (or fails) for the timeout.
                        continue;
                    }
                    // The wake budget is spent before the replay's timeout: no waiting on
                    // (this turned into a busy loop until the replay's deadline).
                    if fall_back!("retries_exhausted") {
                        continue;
                    }
                    return (
                        name,
                        overloaded("PM03", "the machine could not be started in time"),
                    );
                }
                let _waking = proxy.loads.get(&m.id).wait_for_wake();
                // Rare paths' futures are boxed: the request's own future, moved per
                // request, stays small.
                match Box::pin(proxy.wakes.wake(
                    &proxy.store,
                    &proxy.catalog,
                    &m.id,
                    (m.addr, internal),
                    left,
                    Some(&proxy.pool),
                ))
                .await
                {
                    Ok(d) => {
                        proxy.metrics.cold_start(&app.name, d);
                        cold = Some(cold.unwrap_or_default() + d);
                        // Route to the machine just woken (the catalog has it started)...
                        let Some(fresh) =
                            proxy.catalog.snapshot().machines.get(&m.id).map(Arc::clone)
                        else {
                            continue;
                        };
                        // ...unless the requests that waited for it together already fill
                        // it to its hard limit: the rest queue, as for a full machine.
                        let (_, hard) = crate::balance::limits(&fresh, conn.port);
                        let Some(s) = proxy.loads.try_acquire(&fresh.id, hard) else {
                            drop((_waiting, _waking));
                            if let Err(r) =
                                Box::pin(wait_in_queue(proxy, &app.name, &mut queued_since)).await
                            {
                                return (name, r);
                            }
                            continue;
                        };
                        slot = s;
                        Cow::Owned(fresh)
                    }
                    Err(e) => {
                        let request = request_log(rid, &parts, &path_and_query, None);
                        proxy.log_error(
                            &app.name,
                            Some(&m.id),
                            e.code(),
                            &format!("{e:?}"),
                            Some(&request),
                        );
                        failed.push(m.id.clone());
                        if retries < MAX_CONNECT_RETRIES {
                            retries += 1;
                            continue;
                        }
                        if fall_back!("retries_exhausted") {
                            continue;
                        }
                        return (
                            name,
                            overloaded(e.code(), "the machine could not be started in time"),
                        );
                    }
                }
            }
            Pick::Full => {
                if let Err(r) = Box::pin(wait_in_queue(proxy, &app.name, &mut queued_since)).await {
                    return (name, r);
                }
                continue;
            }
            Pick::None => {
                if !failed.is_empty() && retries <= MAX_CONNECT_RETRIES {
                    tokio::time::sleep(Duration::from_millis(25 * retries as u64)).await;
                    failed.clear();
                    continue;
                }
                if back_to_origin!() || fall_back!("no_candidate") {
                    continue;
                }
                return (
                    name,
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "PR01",
                        "no machine of the app can take the request",
                    ),
                );
            }
        };
        // The machine the request goes to now: not the preferred one (a client's
        // fly-prefer-instance-id, a replay's prefer_instance) tells the client so.
        preferred_unavailable = prefs
            .prefer_instance
            .as_ref()
            .is_some_and(|want| *want != machine.id);
        let Some(svc) = machine.service_for(conn.port) else {
            prefs.exclude.push(machine.id.clone());
            continue;
        };
        let internal = u16::try_from(svc.internal_port).unwrap_or(0);
        let target = SocketAddr::new(machine.addr.into(), internal);
        // h2c to the machine when its service asks for it (never for upgrades: those are
        // HTTP/1.1).
        let h2 = !upgrade
            && svc
                .ports
                .iter()
                .any(|p| p.http_options.as_ref().and_then(|o| o.h2_backend) == Some(true));
        let idempotent = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        let outgoing = Outgoing {
            parts: &parts,
            path_and_query: &path_and_query,
            host: &host,
            conn,
            region: &cfg.region,
            rid,
            delete: &delete_headers,
            extra: &extra_headers,
            src: src.as_deref(),
        };
        let outcome = match (&body, h2 || upgrade) {
            // The common case: HTTP/1.1 in this task (crate::upstream).
            (ReqBody::Buffered(b), false) => {
                head_buf.clear();
                encode_head(&mut head_buf, &outgoing, b.len());
                let sent = crate::upstream::send(
                    &proxy.pool,
                    target,
                    cfg.connect_timeout,
                    silent,
                    &head_buf,
                    b,
                    parts.method == Method::HEAD,
                    idempotent,
                )
                .await;
                match sent {
                    Ok(r) => Ok(r.map(Body::new)),
                    Err(crate::upstream::SendError::Connect(e)) => Err(Failure::Connect(e)),
                    Err(crate::upstream::SendError::Send(m)) => Err(Failure::Send(m)),
                    Err(crate::upstream::SendError::Timeout(d)) => Err(Failure::Timeout(d)),
                }
            }
            _ => {
                let r = Box::pin(send_hyper(
                    proxy, target, h2, &mut body, &outgoing, upgrade, silent,
                ))
                .await;
                match r {
                    Ok(mut resp) => {
                        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                            backend_upgrade = Some(hyper::upgrade::on(&mut resp));
                        }
                        Ok(resp.map(incoming_body))
                    }
                    Err(f) => Err(f),
                }
            }
        };
        let resp = match outcome {
            Ok(r) => r,
            Err(Failure::Connect(e)) => {
                let request = request_log(rid, &parts, &path_and_query, None);
                proxy.log_error(
                    &app.name,
                    Some(&machine.id),
                    e.code(),
                    &format!("{e:?}"),
                    Some(&request),
                );
                drop(slot);
                failed.push(machine.id.clone());
                retries += 1;
                if retries > MAX_CONNECT_RETRIES {
                    if back_to_origin!() || fall_back!("retries_exhausted") {
                        continue;
                    }
                    return (
                        name,
                        error(StatusCode::BAD_GATEWAY, "PC07", "could not reach a machine"),
                    );
                }
                continue;
            }
            Err(Failure::BodyGone) => {
                return (
                    name,
                    error(
                        StatusCode::BAD_GATEWAY,
                        "PA01",
                        "the request body can not be sent twice",
                    ),
                );
            }
            Err(Failure::Timeout(d)) => {
                let request = request_log(rid, &parts, &path_and_query, None);
                let msg = format!("the machine sent no answer within {d:?}");
                proxy.log_error(&app.name, Some(&machine.id), "PC05", &msg, Some(&request));
                return (
                    name,
                    error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "PC05",
                        "the machine did not answer in time",
                    ),
                );
            }
            Err(Failure::Send(e)) => {
                let request = request_log(rid, &parts, &path_and_query, None);
                proxy.log_error(&app.name, Some(&machine.id), "PU02", &e, Some(&request));
                if idempotent && body.replayable() && retries < MAX_CONNECT_RETRIES {
                    retries += 1;
                    failed.push(machine.id.clone());
                    continue;
                }
                return (
                    name,
                    error(
                        StatusCode::BAD_GATEWAY,
                        "PU02",
                        "the machine did not answer",
                    ),
                );
            }
        };
        // One pass over the answer's headers: fly-replay (header or JSON form), hop-by-hop.
        let (mut header_replay, mut json_replay, mut hop_by_hop) = (false, false, false);
        let mut cache_header = false;
        // The cached target answered: no going back to the app from here. A replay target
        // answered: the decision that sent the request there is kept from now on.
        cache_origin = None;
        if let Some((key, decision)) = to_cache.take() {
            proxy.replay_cache.insert(key, decision);
        }
        for (n, v) in resp.headers() {
            match n.as_str() {
                "fly-replay" => header_replay = true,
                "fly-replay-cache" => cache_header = true,
                "content-type" => {
                    json_replay |= v.as_bytes().starts_with(b"application/vnd.fly.replay+json");
                }
                n if HOP_BY_HOP.contains(&n) => hop_by_hop = true,
                _ => {}
            }
        }
        if header_replay || json_replay {
            // The header form's caching instructions, read before the body is.
            let cache_headers = (cache_header && !json_replay).then(|| {
                let h = resp.headers();
                let get = |n: &str| h.get(n).map(|v| v.as_bytes().to_vec());
                (
                    get("fly-replay-cache"),
                    get("fly-replay-cache-ttl-secs"),
                    get("fly-replay-cache-allow-bypass"),
                )
            });
            let parsed = if json_replay {
                // The proxy's own client bounds each read of a body by `silent`; hyper's
                // (h2c, streamed bodies) does not: the whole body within it.
                let body =
                    tokio::time::timeout(silent, collect_limited(resp.into_body(), MAX_REPLAY_LEN));
                match Box::pin(body).await {
                    Ok(Some(b)) => Replay::from_json(&b),
                    Ok(None) => Err(crate::replay::ReplayError("body too large".into())),
                    Err(_) => Err(crate::replay::ReplayError(format!(
                        "body not complete within {silent:?}"
                    ))),
                }
            } else {
                let v = resp
                    .headers()
                    .get("fly-replay")
                    .map(|v| v.as_bytes().to_vec());
                Replay::from_header(&v.unwrap_or_default())
            };
            drop(slot);
            if fell_back {
                let request = request_log(rid, &parts, &path_and_query, Some(502));
                let msg = "a fallback request may not replay again";
                proxy.log_error(&app.name, Some(&machine.id), "PA03", msg, Some(&request));
                return (
                    name,
                    error(StatusCode::BAD_GATEWAY, "PA03", "invalid fly-replay"),
                );
            }
            let r = match parsed {
                Ok(r) => r,
                Err(e) => {
                    let request = request_log(rid, &parts, &path_and_query, Some(502));
                    proxy.log_error(
                        &app.name,
                        Some(&machine.id),
                        "PA03",
                        &e.to_string(),
                        Some(&request),
                    );
                    return (
                        name,
                        error(StatusCode::BAD_GATEWAY, "PA03", "invalid fly-replay"),
                    );
                }
            };
            if !body.replayable() {
                return (
                    name,
                    error(
                        StatusCode::BAD_GATEWAY,
                        "PA01",
                        "the request body is too large to replay",
                    ),
                );
            }
            // Answered by the app the client asked for, not by a replay target: its decision
            // may be cached for the requests that come after.
            let from_origin = replays == 0;
            let directive = match (&cache_headers, json_replay) {
                (_, true) => r.cache.clone(),
                (Some((c, t, b)), false) => {
                    replay_cache::from_headers(c.as_deref(), t.as_deref(), b.as_deref())
                        .unwrap_or_else(|e| {
                            proxy.log_error(&app.name, Some(&machine.id), "PA03", &e, None);
                            None
                        })
                }
                (None, false) => None,
            };
            to_cache = remember_replay(
                proxy,
                &r,
                directive,
                from_origin.then_some(machine.id.as_str()),
                (&app.name, &cache_host(), parts.uri.path()),
                session.as_ref(),
                &mut cache_key,
                &mut extra_headers,
            );
            replays += 1;
            if replays > MAX_REPLAYS {
                return (
                    name,
                    error(StatusCode::BAD_GATEWAY, "PA02", "too many fly-replays"),
                );
            }
            // Owned from here: `app` may be switched below.
            let machine = machine.into_owned();
            let from_app = Arc::clone(&app);
            if let Some(target) = &r.app {
                let snap = proxy.catalog.snapshot();
                match snap.apps.get(target) {
                    None => {
                        return (
                            name,
                            error(
                                StatusCode::BAD_GATEWAY,
                                "PA04",
                                "replay target app not found",
                            ),
                        );
                    }
                    // Same org and same private network (§3.6); Hangar has no org toggle
                    // for cross-network or cross-org replays.
                    Some(t) if t.org != app.org || t.network != app.network => {
                        return (
                            name,
                            error(
                                StatusCode::BAD_GATEWAY,
                                "PA05",
                                "replay target app is in another org or network",
                            ),
                        );
                    }
                    Some(t) => app = Cow::Owned(Arc::clone(t)),
                }
            }
            prefs = replay_prefs(&r, Some(&machine.id));
            fallback = r.fallback.map(|how| ReplayFallback {
                how,
                asked: replay_asked(&r),
                from_id: machine.id.clone(),
                from_app,
                since: Instant::now(),
                path: path_and_query.clone(),
                delete_len: delete_headers.len(),
                extra_len: extra_headers.len(),
            });
            replay_deadline = r.timeout.map(|t| Instant::now() + t);
            src = Some(replay_src(
                &machine.id,
                &machine.region,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros()),
                r.state.as_deref(),
            ));
            // Checked by the parser; what hyper's URI would refuse is not sent either.
            if let Some(p) = r.transform.path
                && p.parse::<hyper::http::uri::PathAndQuery>().is_ok()
            {
                path_and_query = p;
            }
            delete_headers.extend(
                r.transform
                    .delete_headers
                    .iter()
                    .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()),
            );
            extra_headers.extend(r.transform.set_headers.iter().filter_map(|(k, v)| {
                Some((
                    HeaderName::from_bytes(k.as_bytes()).ok()?,
                    HeaderValue::from_str(v).ok()?,
                ))
            }));
            retries = 0;
            // Each hop queues and wakes on its own budget.
            queued_since = None;
            waking_since = None;
            continue;
        }
        let status = resp.status();
        // A websocket (or other) upgrade: splice the two connections while holding the slot.
        if status == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client) = client_upgrade
            && let Some(backend) = backend_upgrade.take()
        {
            let load = slot.load().clone();
            let websocket = resp
                .headers()
                .get(header::UPGRADE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
            tokio::spawn(async move {
                let _slot = slot;
                if let (Ok(c), Ok(b)) = (client.await, backend.await) {
                    let mut c = hyper_util::rt::TokioIo::new(c);
                    let mut b = hyper_util::rt::TokioIo::new(b);
                    let _ = if websocket {
                        crate::ws::splice(c, b, &load).await
                    } else {
                        crate::tcp::splice(&mut c, &mut b, &load).await
                    };
                }
            });
            let (mut p, _) = resp.into_parts();
            response_headers(&mut p.headers, &opts, rid, cold, preferred_unavailable);
            return (name, Response::from_parts(p, full(Bytes::new())));
        }
        let (mut p, incoming) = resp.into_parts();
        if hop_by_hop {
            strip_hop_by_hop(&mut p.headers);
        }
        if cache_header {
            // `fly-replay-cache: invalidate` from the target: the decision that led here
            // goes. The caching headers are for the proxy, not the client.
            let invalidate = p.headers.get("fly-replay-cache").is_some_and(|v| {
                v.as_bytes()
                    .trim_ascii()
                    .eq_ignore_ascii_case(b"invalidate")
            });
            if invalidate && let Some(k) = cache_key.take() {
                proxy.replay_cache.remove(&k);
            }
            for h in [
                "fly-replay-cache",
                "fly-replay-cache-ttl-secs",
                "fly-replay-cache-allow-bypass",
            ] {
                p.headers.remove(h);
            }
        }
        response_headers(&mut p.headers, &opts, rid, cold, preferred_unavailable);
        let body = SlotBody {
            inner: incoming,
            _slot: slot,
        }
        .boxed();
        return (name, Response::from_parts(p, body));
    }
}

/// `fly-replay-cache-status` of a request sent on by the cache (`hit`, `miss`, `bypass`).
const FLY_REPLAY_CACHE_STATUS: HeaderName = HeaderName::from_static("fly-replay-cache-status");

/// Sets a header the proxy adds to the request (replacing its earlier value).
fn set_header(extra: &mut Vec<(HeaderName, HeaderValue)>, name: HeaderName, v: &'static str) {
    extra.retain(|(k, _)| *k != name);
    extra.push((name, HeaderValue::from_static(v)));
}

/// Where a replay sends the request: its machine, regions and `elsewhere` (not `from`, the
/// machine that replayed).
fn replay_prefs(r: &Replay, from: Option<&str>) -> Prefs {
    Prefs {
        force_instance: r.instance.clone(),
        prefer_instance: r.prefer_instance.clone(),
        force_regions: if r.regions.iter().any(|x| x == "any") {
            Vec::new()
        } else {
            r.regions.clone()
        },
        prefer_regions: Vec::new(),
        exclude: match from {
            Some(id) if r.elsewhere => vec![id.to_string()],
            _ => Vec::new(),
        },
    }
}

/// What a replaying answer says about caching: an `invalidate` drops the decision the
/// request matched; the origin app's decision is returned, to be kept once its target
/// answers (path-based when the answer asks for it and its pattern covers the request, else
/// session-based when a rule covers it), and the replayed request is marked `miss`.
/// `origin`: the origin app's machine that answered (None: a replay target answered).
#[allow(clippy::too_many_arguments)]
fn remember_replay(
    proxy: &Proxy,
    r: &Replay,
    directive: Option<replay_cache::Directive>,
    origin: Option<&str>,
    (app, host, path): (&str, &str, &str),
    session: Option<&replay_cache::Session>,
    matched: &mut Option<replay_cache::Key>,
    extra: &mut Vec<(HeaderName, HeaderValue)>,
) -> Option<(replay_cache::Key, replay_cache::Decision)> {
    let (key, ttl, allow_bypass) = match directive {
        Some(replay_cache::Directive::Invalidate) => {
            if let Some(k) = matched.take() {
                proxy.replay_cache.remove(&k);
            }
            return None;
        }
        _ if origin.is_none() => return None,
        Some(replay_cache::Directive::Store {
            host: want,
            prefix,
            ttl,
            allow_bypass,
        }) => {
            if want.as_deref().is_some_and(|w| w != host) || !replay_cache::covers(&prefix, path) {
                return None;
            }
            (
                replay_cache::Key::path(app, host, &prefix),
                ttl,
                allow_bypass,
            )
        }
        None => match session {
            Some(s) => (
                replay_cache::Key::session(app, host, s),
                s.ttl,
                s.allow_bypass,
            ),
            None => return None,
        },
    };
    let replay = replay_cache::cacheable(r)?;
    let from = origin?.to_string(); // (Some: a target's answer returned above.)
    // (A request that bypassed the cache refreshes the decision and stays `bypass`.)
    if !extra.iter().any(|(k, _)| *k == FLY_REPLAY_CACHE_STATUS) {
        set_header(extra, FLY_REPLAY_CACHE_STATUS, "miss");
    }
    let decision = replay_cache::Decision {
        replay,
        from,
        ttl,
        allow_bypass,
    };
    Some((key, decision))
}

/// Why sending a request to a machine failed.
enum Failure {
    /// No connection (`PC0x`): tried on another machine.
    Connect(crate::pool::ConnectError),
    /// Sent, or not, with no usable answer (`PU02`).
    Send(String),
    /// A streamed body was already sent once.
    BodyGone,
    /// The machine took the request and stayed silent too long (`PC05`): not retried.
    Timeout(Duration),
}

/// What goes to the machine: the client's request, rewritten.
struct Outgoing<'a> {
    parts: &'a hyper::http::request::Parts,
    path_and_query: &'a str,
    /// The client's `Host` (or authority), added when the request had no `Host`.
    host: &'a str,
    conn: &'a Conn,
    region: &'a str,
    rid: &'a str,
    delete: &'a [HeaderName],
    extra: &'a [(HeaderName, HeaderValue)],
    src: Option<&'a str>,
}

/// This proxy's `Via` entry for a request of `version`.
fn via_token(version: Version) -> &'static str {
    match version {
        Version::HTTP_2 => "2 hangar",
        Version::HTTP_10 => "1.0 hangar",
        _ => "1.1 hangar",
    }
}

impl Outgoing<'_> {
    /// The §3.5 headers the proxy sets (over the client's), each handed to `f`.
    fn forwarded(&self, mut f: impl FnMut(&'static str, std::fmt::Arguments<'_>)) {
        let h = &self.parts.headers;
        let conn = self.conn;
        let ip = conn.peer.ip().to_canonical();
        match header_str(h, "x-forwarded-for") {
            Some(prev) if !prev.is_empty() => f("x-forwarded-for", format_args!("{prev}, {ip}")),
            _ => f("x-forwarded-for", format_args!("{ip}")),
        }
        f("fly-client-ip", format_args!("{ip}"));
        f(
            "x-forwarded-proto",
            format_args!("{}", if conn.tls { "https" } else { "http" }),
        );
        match header_str(h, "x-forwarded-port") {
            Some(p) => f("x-forwarded-port", format_args!("{p}")),
            None => f("x-forwarded-port", format_args!("{}", conn.port)),
        }
        f("fly-forwarded-port", format_args!("{}", conn.port));
        f(
            "x-forwarded-ssl",
            format_args!("{}", if conn.tls { "on" } else { "off" }),
        );
        f("fly-region", format_args!("{}", self.region));
        let via = via_token(self.parts.version);
        match header_str(h, "via") {
            Some(prev) if !prev.is_empty() => f("via", format_args!("{prev}, {via}")),
            _ => f("via", format_args!("{via}")),
        }
        f("fly-request-id", format_args!("{}", self.rid));
    }

    /// Whether a header of the client's request is not passed on as it is: hop-by-hop,
    /// set by the proxy, or removed by a replay.
    fn replaced(&self, name: &HeaderName, connection_named: &[&str]) -> bool {
        matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "proxy-connection"
                | "te"
                | "trailer"
                | "transfer-encoding"
                | "upgrade"
                | "proxy-authorization"
                | "content-length"
                | "expect"
                | "x-forwarded-for"
                | "fly-client-ip"
                | "x-forwarded-proto"
                | "x-forwarded-port"
                | "fly-forwarded-port"
                | "x-forwarded-ssl"
                | "fly-region"
                | "via"
                | "fly-request-id"
                | "fly-replay-src"
                | "fly-replay-cache-status"
        ) || connection_named
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name.as_str()))
            || self.delete.contains(name)
            || self.extra.iter().any(|(k, _)| k == name)
    }
}

/// Writes the HTTP/1.1 request head for the machine into `buf` (the body, `body_len` bytes,
/// follows it as is).
fn encode_head(buf: &mut Vec<u8>, o: &Outgoing<'_>, body_len: usize) {
    use std::io::Write;
    let h = &o.parts.headers;
    buf.extend_from_slice(o.parts.method.as_str().as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(o.path_and_query.as_bytes());
    buf.extend_from_slice(b" HTTP/1.1\r\n");
    let connection_named: Vec<&str> = if h.contains_key(header::CONNECTION) {
        h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    let mut has_host = false;
    // `TE: trailers` from the client is passed on: the answer's trailers reach it.
    let mut te_trailers = false;
    // The client's values the forwarded headers extend (the first of each, as `get`).
    let (mut xff, mut xfp, mut via) = (None, None, None);
    for (name, value) in h {
        let slot = match name.as_str() {
            "x-forwarded-for" => Some(&mut xff),
            "x-forwarded-port" => Some(&mut xfp),
            "via" => Some(&mut via),
            _ => None,
        };
        if let Some(s) = slot
            && s.is_none()
        {
            *s = Some(value);
        }
        if o.replaced(name, &connection_named) {
            te_trailers |= name == header::TE
                && value
                    .as_bytes()
                    .split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
            continue;
        }
        has_host |= name == header::HOST;
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    if !has_host && HeaderValue::from_str(o.host).is_ok() {
        let _ = write!(buf, "host: {}\r\n", o.host);
    }
    if te_trailers {
        buf.extend_from_slice(b"te: trailers\r\n");
    }
    if o.delete.is_empty() && o.extra.is_empty() {
        // The common case, without formatting: the connection's fixed headers, then the
        // four that depend on the request.
        let c = o.conn;
        buf.extend_from_slice(&c.fixed_headers);
        buf.extend_from_slice(b"x-forwarded-for: ");
        if let Some(prev) = text(xff).filter(|p| !p.is_empty()) {
            buf.extend_from_slice(prev);
            buf.extend_from_slice(b", ");
        }
        buf.extend_from_slice(c.ip_text.as_bytes());
        buf.extend_from_slice(b"\r\nx-forwarded-port: ");
        match text(xfp) {
            Some(p) => buf.extend_from_slice(p),
            None => {
                let _ = write!(buf, "{}", c.port);
            }
        }
        buf.extend_from_slice(b"\r\nvia: ");
        if let Some(prev) = text(via).filter(|p| !p.is_empty()) {
            buf.extend_from_slice(prev);
            buf.extend_from_slice(b", ");
        }
        buf.extend_from_slice(via_token(o.parts.version).as_bytes());
        buf.extend_from_slice(b"\r\nfly-request-id: ");
        buf.extend_from_slice(o.rid.as_bytes());
        buf.extend_from_slice(b"\r\n");
    } else {
        o.forwarded(|name, value| {
            let name = HeaderName::from_static(name);
            if o.delete.contains(&name) || o.extra.iter().any(|(k, _)| *k == name) {
                return;
            }
            let _ = write!(buf, "{name}: {value}\r\n");
        });
    }
    for (k, v) in o.extra {
        buf.extend_from_slice(k.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(v.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    if let Some(s) = o.src
        && HeaderValue::from_str(s).is_ok()
    {
        let _ = write!(buf, "fly-replay-src: {s}\r\n");
    }
    let bodiless = matches!(
        o.parts.method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    if body_len > 0 || !bodiless {
        let _ = write!(buf, "content-length: {body_len}\r\n");
    }
    buf.extend_from_slice(b"\r\n");
}

/// Sends through hyper's client: upgrades (websockets), h2c machines, streamed bodies.
async fn send_hyper(
    proxy: &Arc<Proxy>,
    target: SocketAddr,
    h2: bool,
    body: &mut ReqBody,
    o: &Outgoing<'_>,
    upgrade: bool,
    silent: Duration,
) -> Result<Response<Incoming>, Failure> {
    let mut sender = proxy
        .pool
        .sender(target, h2, proxy.config.connect_timeout)
        .await
        .map_err(Failure::Connect)?;
    let req_body = body.take().ok_or(Failure::BodyGone)?;
    let mut out = Request::new(req_body);
    *out.method_mut() = o.parts.method.clone();
    *out.uri_mut() = o
        .path_and_query
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    let mut h = o.parts.headers.clone();
    let upgrade_headers = upgrade.then(|| {
        (
            h.get(header::UPGRADE).cloned(),
            h.get(header::CONNECTION).cloned(),
        )
    });
    strip_hop_by_hop(&mut h);
    if let Some((Some(up), _)) = upgrade_headers {
        h.insert(header::UPGRADE, up);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if !h.contains_key(header::HOST)
        && let Ok(v) = HeaderValue::from_str(o.host)
    {
        h.insert(header::HOST, v);
    }
    o.forwarded(|name, value| {
        if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
            h.insert(HeaderName::from_static(name), v);
        }
    });
    for n in o.delete {
        h.remove(n);
    }
    for (k, v) in o.extra {
        h.insert(k.clone(), v.clone());
    }
    if let Some(s) = o.src
        && let Ok(v) = HeaderValue::from_str(s)
    {
        h.insert("fly-replay-src", v);
    }
    *out.headers_mut() = h;
    if sender.is_h2() {
        // HTTP/2 carries the target in :scheme and :authority.
        let authority = out
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_string();
        if let Ok(u) = format!("http://{authority}{}", o.path_and_query).parse() {
            *out.uri_mut() = u;
        }
        *out.version_mut() = Version::HTTP_2;
        out.headers_mut().remove(header::HOST);
    }
    // The answer's head within `silent` (what follows it is the body's or, after a switch,
    // the tunnel's, and goes at the client's pace).
    let Ok(sent) = tokio::time::timeout(silent, sender.send(out)).await else {
        return Err(Failure::Timeout(silent));
    };
    if let crate::pool::Sender::H1(s) = sender {
        proxy.pool.put(target, s);
    }
    sent.map_err(|e| Failure::Send(e.to_string()))
}

fn response_headers(
    h: &mut HeaderMap,
    opts: &PortOptions,
    rid: &str,
    cold: Option<Duration>,
    preferred_unavailable: bool,
) {
    if !opts.pristine {
        h.insert(
            header::SERVER,
            HeaderValue::from_static(concat!("Hangar/", env!("CARGO_PKG_VERSION"))),
        );
        let via = match h.get(header::VIA).and_then(|v| v.to_str().ok()) {
            Some(prev) => HeaderValue::from_str(&format!("{prev}, 1.1 hangar")).ok(),
            None => Some(HeaderValue::from_static("1.1 hangar")),
        };
        if let Some(v) = via {
            h.insert(header::VIA, v);
        }
        if let Ok(v) = HeaderValue::from_str(rid) {
            h.insert(FLY_REQUEST_ID, v);
        }
    }
    // Tenths of a millisecond: a resume from suspended takes one or two.
    if let Some(d) = cold
        && let Ok(v) = HeaderValue::from_str(&format!("{:.1}ms", d.as_secs_f64() * 1000.0))
    {
        h.insert("hangar-cold-start", v);
    }
    if preferred_unavailable {
        h.insert(
            "fly-preferred-instance-unavailable",
            HeaderValue::from_static("true"),
        );
    }
    for (k, v) in &opts.response_headers {
        let Ok(name) = HeaderName::from_bytes(k.as_bytes()) else {
            continue;
        };
        match v {
            None => {
                h.remove(name);
            }
            Some(v) => {
                if let Ok(v) = HeaderValue::from_str(v) {
                    h.insert(name, v);
                }
            }
        }
    }
}

/// Whether the load of a machine counts as idle (nothing in flight, nothing for `idle`).
pub fn idle(load: &crate::balance::Load, idle_for: Duration) -> bool {
    load.in_flight() == 0
        && load.waking() == 0
        && crate::balance::now_ms().saturating_sub(load.last_active_ms())
            >= idle_for.as_millis() as u64
}

/// Keeps the draining flag honest in one place.
pub fn set_draining(load: &crate::balance::Load, on: bool) {
    load.draining.store(on, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        assert_eq!(
            app_from_host("web.localhost", "localhost").as_deref(),
            Some("web")
        );
        assert_eq!(
            app_from_host("WEB.localhost:8080", "localhost").as_deref(),
            Some("web")
        );
        assert_eq!(
            app_from_host("web.localhost.", "localhost").as_deref(),
            Some("web")
        );
        assert_eq!(app_from_host("a.b.localhost", "localhost"), None);
        assert_eq!(app_from_host("localhost", "localhost"), None);
        assert_eq!(app_from_host(".localhost", "localhost"), None);
        assert_eq!(app_from_host("-x.localhost", "localhost"), None);
        assert_eq!(app_from_host("web.example.com", "localhost"), None);
        assert_eq!(app_from_host("we_b.localhost", "localhost"), None);
        assert_eq!(app_from_host("[::1]:80", "localhost"), None);
        assert_eq!(app_from_host(&"a".repeat(300), "localhost"), None);
        assert_eq!(app_from_host("", "localhost"), None);
    }

    #[test]
    fn the_fast_forwarded_headers_are_the_general_ones() {
        for (tls, version, prev) in [
            (false, Version::HTTP_11, false),
            (true, Version::HTTP_2, true),
            (false, Version::HTTP_10, true),
        ] {
            let mut req = Request::new(());
            *req.version_mut() = version;
            if prev {
                let h = req.headers_mut();
                h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
                h.insert("via", HeaderValue::from_static("1.1 lb"));
                h.insert("x-forwarded-port", HeaderValue::from_static("8443"));
                h.insert("fly-region", HeaderValue::from_static("spoofed"));
            }
            let (parts, ()) = req.into_parts();
            let conn = Conn::new(
                "[::ffff:192.0.2.7]:5555".parse().expect("addr"),
                443,
                tls,
                None,
                "ams",
            );
            let o = Outgoing {
                parts: &parts,
                path_and_query: "/",
                host: "a.localhost",
                conn: &conn,
                region: "ams",
                rid: "0123456789abcdef0123-ams",
                delete: &[],
                extra: &[],
                src: None,
            };
            let mut fast = Vec::new();
            encode_head(&mut fast, &o, 0);
            let fast = String::from_utf8(fast).expect("utf-8");
            let mut fast: Vec<&str> = fast
                .lines()
                .filter(|l| !l.starts_with("GET ") && !l.starts_with("host:") && !l.is_empty())
                .collect();
            fast.sort_unstable();
            let mut general = Vec::new();
            o.forwarded(|name, value| general.push(format!("{name}: {value}")));
            general.sort_unstable();
            assert_eq!(fast, general, "tls {tls}, {version:?}, prev {prev}");
            assert!(fast.contains(&"fly-client-ip: 192.0.2.7"));
            assert!(fast.contains(&"fly-region: ams"));
        }
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}

#[cfg(test)]
mod request_id_tests {
    #[test]
    fn ids_are_twenty_hex_digits_and_the_region_and_do_not_repeat() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = super::request_id("ams");
            let (hex, region) = id.split_once('-').expect("dash");
            assert_eq!(region, "ams");
            assert_eq!(hex.len(), 20);
            assert!(
                hex.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert!(seen.insert(id));
        }
    }
}
