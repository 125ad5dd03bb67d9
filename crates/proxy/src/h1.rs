//! The HTTP/1.1 server side (clients over plain TCP or TLS), for the common request: an
//! HTTP/1.1 head with no body or a small one by `Content-Length` (up to [`FAST_BODY`]). Such requests are parsed and answered here, without hyper's
//! server machinery (its dispatcher, service future and encoder were a fifth of the proxy's
//! user time per request). Anything else (a chunked or larger body, an upgrade, `Expect`, `TE`, HTTP/1.0, h2 by
//! prior knowledge or ALPN, a head this parser refuses or that outgrows [`FAST_HEAD`]) goes,
//! with the bytes read so far, to hyper's server, which keeps the connection from then on and
//! answers as it always did (400, 431, …).
//!
//! Like hyper's server: the head must arrive within the port's `headers_read_timeout`
//! ([`Proxy::head_timeout`]) of the wait for it (idle keep-alive connections included); a client that closes (or half-closes) while its
//! request is served cancels it; pipelined requests are answered in order.

use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Body as _;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Proxy;
use crate::http::Body;
use crate::proxy_proto::Prefixed;

/// Heads longer than this (still incomplete) go to hyper's server, which enforces
/// `max_header_bytes` (431).
pub const FAST_HEAD: usize = 8 * 1024;
/// Most header fields of a head served here; more go to hyper's server.
pub const FAST_HEADERS: usize = 64;
/// Longest request body (by `Content-Length`) read here; longer ones go to hyper's server.
pub const FAST_BODY: usize = 16 * 1024;
/// Response bytes gathered before they are written.
const WRITE_CHUNK: usize = 64 * 1024;

/// What the bytes read so far hold.
// Returned once per request and matched at once: boxing the request would cost an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Head {
    /// A complete head this path serves; `close`: the client asked to close after it;
    /// `body`: the length of the body that follows it in the buffer (read, then set as the
    /// request's body, by the caller).
    Request {
        req: Request<Body>,
        close: bool,
        body: usize,
    },
    /// Not complete yet.
    Partial,
    /// Something for hyper's server.
    Other,
}

/// Where one header field lies in the buffer.
#[derive(Clone, Copy, Default)]
struct Field {
    name: (usize, usize),
    value: (usize, usize),
}

fn span(base: &[u8], part: &[u8]) -> (usize, usize) {
    (part.as_ptr() as usize - base.as_ptr() as usize, part.len())
}

/// Parses the head at the start of `buf`; a served head is taken out of `buf`.
pub fn parse(buf: &mut BytesMut) -> Head {
    let mut raw = [httparse::EMPTY_HEADER; FAST_HEADERS];
    let mut r = httparse::Request::new(&mut raw);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < FAST_HEAD => return Head::Partial,
        _ => return Head::Other,
    };
    let (Some(method), Some(path), Some(1)) = (r.method, r.path, r.version) else {
        return Head::Other;
    };
    if !path.starts_with('/') {
        return Head::Other;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Head::Other;
    };
    let mut close = false;
    let mut lengths = 0;
    let mut body = 0usize;
    let mut fields = [Field::default(); FAST_HEADERS];
    let n = r.headers.len();
    for (h, f) in r.headers.iter().zip(fields.iter_mut()) {
        let name = h.name.as_bytes();
        let value = h.value.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            // One length, digits only, small: read here. A second length, anything else in
            // the value or a large body: hyper's server frames it.
            lengths += 1;
            let digits =
                !value.is_empty() && value.len() <= 6 && value.iter().all(u8::is_ascii_digit);
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|_| digits)
                .and_then(|v| v.parse::<usize>().ok());
            match n {
                Some(n) if n <= FAST_BODY && lengths == 1 => body = n,
                _ => return Head::Other,
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            if value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if !value.eq_ignore_ascii_case(b"keep-alive") {
                return Head::Other;
            }
        } else if [
            &b"transfer-encoding"[..],
            b"upgrade",
            b"expect",
            b"te",
            b"http2-settings",
        ]
        .iter()
        .any(|n| name.eq_ignore_ascii_case(n))
        {
            return Head::Other;
        }
        *f = Field {
            name: span(buf, name),
            value: span(buf, h.value),
        };
    }
    let path = span(buf, path.as_bytes());
    // The head's bytes are shared by the URI and the header values (no copies).
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path.0..path.0 + path.1)) else {
        return unparsed(buf, head);
    };
    let mut headers = HeaderMap::with_capacity(n);
    for f in &fields[..n] {
        let name = HeaderName::from_bytes(&head[f.name.0..f.name.0 + f.name.1]);
        let value = HeaderValue::from_maybe_shared(head.slice(f.value.0..f.value.0 + f.value.1));
        match (name, value) {
            (Ok(k), Ok(v)) => {
                headers.append(k, v);
            }
            _ => return unparsed(buf, head),
        }
    }
    let mut req = Request::new(Empty::<Bytes>::new().map_err(|e| match e {}).boxed());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    Head::Request { req, close, body }
}

/// Puts a head taken out of `buf` back in front of it: it goes to hyper's server.
fn unparsed(buf: &mut BytesMut, head: Bytes) -> Head {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(&head);
    whole.extend_from_slice(buf);
    *buf = whole;
    Head::Other
}

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304): the fields are written as they are.
    None,
    Length(u64),
    Chunked,
}

/// Writes a response's head into `out`: the framing is decided here (a body's exact size, or
/// its single valid `Content-Length`, else chunked); `date` is added when missing, and
/// `connection: close` when the connection closes after it. Returns the framing and whether
/// the connection closes after this response.
pub fn encode_head(
    out: &mut Vec<u8>,
    resp: &Response<Body>,
    head_request: bool,
    mut close: bool,
) -> (Framing, bool) {
    let status = resp.status();
    let h = resp.headers();
    let no_content = status.is_informational() || status == StatusCode::NO_CONTENT;
    let framing = if no_content || head_request || status == StatusCode::NOT_MODIFIED {
        Framing::None
    } else if let Some(n) = resp.body().size_hint().exact() {
        Framing::Length(n)
    } else {
        let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
        match (lengths.next(), lengths.next()) {
            (Some(v), None) => std::str::from_utf8(v.as_bytes())
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map_or(Framing::Chunked, Framing::Length),
            _ => Framing::Chunked,
        }
    };
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    let mut has_connection = false;
    for (k, v) in h {
        if k == header::CONTENT_LENGTH || k == header::TRANSFER_ENCODING {
            // Written below for a body; a body-less status carries none.
            if framing != Framing::None || no_content {
                continue;
            }
        } else if k == header::DATE {
            has_date = true;
        } else if k == header::CONNECTION {
            has_connection = true;
            close |= v
                .as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"));
        }
        out.extend_from_slice(k.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    if close && !has_connection {
        out.extend_from_slice(b"connection: close\r\n");
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None => {}
    }
    out.extend_from_slice(b"\r\n");
    (framing, close)
}

/// Appends the current time as an HTTP date, formatted once a second per thread.
fn date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs || c.1.is_empty() {
            *c = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(c.1.as_bytes());
    });
}

/// A client connection the fast path serves: plain TCP, or TLS over it.
pub(crate) trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// The TCP connection underneath (to see a client leave).
    fn tcp(&self) -> &TcpStream;
}

impl ClientIo for Prefixed<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref()
    }
}

impl ClientIo for tokio_rustls::server::TlsStream<Prefixed<TcpStream>> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0.get_ref()
    }
}

/// Serves a client connection of the `http` handler (plain, or TLS already terminated).
pub(crate) async fn serve<S: ClientIo>(proxy: Arc<Proxy>, mut tcp: S, conn: crate::http::Conn) {
    let mut buf = BytesMut::with_capacity(FAST_HEAD);
    let mut out: Vec<u8> = Vec::with_capacity(1024);
    let timeout = proxy.head_timeout(conn.port, conn.app.as_deref());
    // One timer for the connection, moved only when it fires early: a request does not
    // touch the timer wheel.
    let timer = tokio::time::sleep(timeout);
    tokio::pin!(timer);
    loop {
        let deadline = tokio::time::Instant::now() + timeout;
        let (mut req, close, body_len) = loop {
            match parse(&mut buf) {
                Head::Request { req, close, body } => break (req, close, body),
                Head::Partial => {}
                Head::Other => {
                    proxy.metrics.http1_handoff();
                    let rest = Prefixed::new(buf.to_vec(), tcp);
                    crate::serve_http_conn(proxy, rest, conn).await;
                    return;
                }
            }
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(4096);
            }
            if !read_by(&mut tcp, &mut buf, timer.as_mut(), deadline).await {
                return;
            }
        };
        // The body (by its length, at most FAST_BODY), under the same deadline as the head.
        while buf.len() < body_len {
            buf.reserve(body_len - buf.len());
            if !read_by(&mut tcp, &mut buf, timer.as_mut(), deadline).await {
                return;
            }
        }
        if body_len > 0 {
            let data = buf.split_to(body_len).freeze();
            *req.body_mut() = Full::new(data).map_err(|e| match e {}).boxed();
        }
        let head_request = req.method() == Method::HEAD;
        let resp = {
            let served = crate::http::handle(&proxy, &conn, req);
            tokio::pin!(served);
            tokio::select! {
                biased;
                r = &mut served => r,
                () = client_gone(tcp.tcp()) => return,
            }
        };
        let Ok(resp) = resp;
        out.clear();
        let (framing, close) = encode_head(&mut out, &resp, head_request, close);
        let mut body = resp.into_body();
        if write_body(&mut tcp, &mut out, &mut body, framing)
            .await
            .is_err()
        {
            return;
        }
        drop(body);
        if close {
            let _ = tcp.shutdown().await;
            return;
        }
    }
}

/// Reads more of the client's bytes into `buf` before `deadline`, on the connection's one
/// `timer` (moved to the deadline when it fires early); `false` when the client closed,
/// failed or missed the deadline: the connection then ends without an answer.
async fn read_by<S: AsyncRead + Unpin>(
    tcp: &mut S,
    buf: &mut BytesMut,
    mut timer: Pin<&mut tokio::time::Sleep>,
    deadline: tokio::time::Instant,
) -> bool {
    loop {
        tokio::select! {
            biased;
            r = tcp.read_buf(buf) => return matches!(r, Ok(n) if n > 0),
            () = timer.as_mut() => {
                if tokio::time::Instant::now() >= deadline {
                    return false;
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
}

/// Resolves when the client closed its side (or the connection broke); never when it sent
/// more (a pipelined request, read after this one).
async fn client_gone(tcp: &TcpStream) {
    let mut b = [0u8; 1];
    match tcp.peek(&mut b).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// Writes `out` (the head) and the body after it, framed; `Err` when the connection can not
/// carry another response (a write failed, or the body failed or did not match its length).
async fn write_body(
    tcp: &mut (impl AsyncWrite + Unpin),
    out: &mut Vec<u8>,
    body: &mut Body,
    framing: Framing,
) -> Result<(), ()> {
    let mut left = match framing {
        Framing::None => {
            return tcp.write_all(out).await.map_err(|_| ());
        }
        Framing::Length(n) => n,
        Framing::Chunked => 0,
    };
    loop {
        // What is ready goes out with the head; before waiting for more, what is gathered
        // is written (a streamed answer reaches the client as it comes).
        let polled = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx)));
        let frame = match polled.await {
            Poll::Ready(f) => f,
            Poll::Pending => {
                if !out.is_empty() {
                    tcp.write_all(out).await.map_err(|_| ())?;
                    out.clear();
                }
                body.frame().await
            }
        };
        let Some(frame) = frame else { break };
        let Ok(data) = frame.map_err(|_| ())?.into_data() else {
            // Trailers: this client did not ask for them (`TE` goes to hyper's server).
            continue;
        };
        match framing {
            Framing::Length(_) => {
                let n = data.len() as u64;
                if n > left {
                    return Err(());
                }
                left -= n;
                out.extend_from_slice(&data);
            }
            _ if data.is_empty() => {}
            _ => {
                out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                out.extend_from_slice(&data);
                out.extend_from_slice(b"\r\n");
            }
        }
        if out.len() >= WRITE_CHUNK {
            tcp.write_all(out).await.map_err(|_| ())?;
            out.clear();
        }
    }
    match framing {
        Framing::Length(_) if left > 0 => {
            // Short: what came goes out, and the connection closes (the client sees it).
            let _ = tcp.write_all(out).await;
            return Err(());
        }
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        _ => {}
    }
    tcp.write_all(out).await.map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;
    use hyper::body::Frame;

    fn served(head: &[u8]) -> (Request<Body>, bool, BytesMut) {
        let mut buf = BytesMut::from(head);
        match parse(&mut buf) {
            Head::Request { req, close, .. } => (req, close, buf),
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(head)),
        }
    }

    #[test]
    fn a_bodiless_head_is_served_and_what_follows_stays() {
        let (req, close, rest) = served(
            b"GET /a?b=1 HTTP/1.1\r\nHost: web.localhost\r\nX-Two: 1\r\nx-two: 2\r\n\
              content-length: 0\r\n\r\nGET /next HTTP/1.1\r\n",
        );
        assert!(!close);
        assert_eq!(req.method(), Method::GET);
        assert_eq!(
            req.uri().path_and_query().map(|p| p.as_str()),
            Some("/a?b=1")
        );
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "web.localhost");
        let twos: Vec<_> = req.headers().get_all("x-two").iter().collect();
        assert_eq!(twos, ["1", "2"]);
        assert!(req.body().is_end_stream());
        assert_eq!(&rest[..], b"GET /next HTTP/1.1\r\n");
        let (_, close, _) = served(b"DELETE /x HTTP/1.1\r\nConnection: Close\r\n\r\n");
        assert!(close);
        let (_, close, _) = served(b"HEAD / HTTP/1.1\r\nconnection: keep-alive\r\n\r\n");
        assert!(!close);
    }

    #[test]
    fn a_small_body_by_its_length_stays_in_the_buffer_for_the_caller() {
        let mut buf = BytesMut::from(
            &b"POST /p HTTP/1.1\r\nhost: a\r\nContent-Length:  5 \r\n\r\nhelloGET"[..],
        );
        match parse(&mut buf) {
            Head::Request { req, body, .. } => {
                assert_eq!(req.method(), Method::POST);
                assert_eq!(body, 5);
                assert_eq!(req.headers()["content-length"], "5");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(&buf[..], b"helloGET");
        let mut at_limit = BytesMut::from(
            format!("PUT / HTTP/1.1\r\ncontent-length: {FAST_BODY}\r\n\r\n").as_bytes(),
        );
        assert!(matches!(
            parse(&mut at_limit),
            Head::Request {
                body: FAST_BODY,
                ..
            }
        ));
    }

    #[test]
    fn everything_else_goes_to_hypers_server_untouched() {
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..FAST_HEADERS + 1 {
            big.extend_from_slice(format!("x-{i}: y\r\n").as_bytes());
        }
        big.extend_from_slice(b"\r\n");
        let mut long = b"GET / HTTP/1.1\r\nx-pad: ".to_vec();
        long.resize(FAST_HEAD + 10, b'a');
        let cases: Vec<&[u8]> = vec![
            b"POST / HTTP/1.1\r\ncontent-length: 16385\r\n\r\nhello",
            b"POST / HTTP/1.1\r\ncontent-length: 0\r\ncontent-length: 0\r\n\r\n",
            b"POST / HTTP/1.1\r\ncontent-length: 5, 5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\ncontent-length: +5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\ncontent-length: 0x5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\ncontent-length:\r\n\r\nhello",
            b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            b"GET / HTTP/1.1\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nconnection: close, te\r\n\r\n",
            b"PUT / HTTP/1.1\r\nexpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.1\r\nTE: trailers\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET http://web.localhost/ HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"GET / HTTP/1.1\r\nx-folded: a\r\n  b\r\n\r\n",
            b"GET / HTTP/1.1\r\nbad header: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nx-del: a\x7fb\r\n\r\n",
            &big,
            &long,
        ];
        for case in cases {
            let mut buf = BytesMut::from(case);
            let got = parse(&mut buf);
            assert!(
                matches!(got, Head::Other),
                "{got:?} for {:?}",
                String::from_utf8_lossy(case)
            );
            assert_eq!(&buf[..], case, "bytes lost for hyper's server");
        }
    }

    #[test]
    fn incomplete_heads_wait_for_more() {
        let whole = b"GET / HTTP/1.1\r\nhost: a.localhost\r\n\r\n";
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert!(matches!(parse(&mut buf), Head::Partial), "cut at {cut}");
            assert_eq!(buf.len(), cut);
        }
    }

    fn response(status: u16, body: Body, headers: &[(&str, &str)]) -> Response<Body> {
        let mut r = Response::new(body);
        *r.status_mut() = StatusCode::from_u16(status).expect("status");
        for (k, v) in headers {
            r.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        r
    }

    fn full(s: &'static str) -> Body {
        Full::new(Bytes::from_static(s.as_bytes()))
            .map_err(|e| match e {})
            .boxed()
    }

    /// A body of ready frames whose size is not known in advance.
    fn streamed(parts: &'static [&'static str]) -> Body {
        Frames(parts.iter()).boxed()
    }

    struct Frames(std::slice::Iter<'static, &'static str>);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = crate::http::BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(
                self.0
                    .next()
                    .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes())))),
            )
        }
    }

    fn head_of(r: &Response<Body>, head_request: bool, close: bool) -> (String, Framing, bool) {
        let mut out = Vec::new();
        let (f, c) = encode_head(&mut out, r, head_request, close);
        (String::from_utf8(out).expect("utf-8"), f, c)
    }

    #[test]
    fn framing_follows_the_body_and_the_status() {
        // An exact size replaces whatever length the fields claimed.
        let r = response(
            200,
            full("hello"),
            &[("content-length", "99"), ("x-a", "1")],
        );
        let (h, f, close) = head_of(&r, false, false);
        assert_eq!(f, Framing::Length(5));
        assert!(!close);
        assert!(h.starts_with("HTTP/1.1 200 OK\r\nx-a: 1\r\ndate: "), "{h}");
        assert!(h.ends_with("content-length: 5\r\n\r\n"), "{h}");
        assert_eq!(h.matches("content-length").count(), 1, "{h}");
        // A streamed body: its single length, else chunked.
        let r = response(200, streamed(&["a"]), &[("content-length", "1")]);
        assert_eq!(head_of(&r, false, false).1, Framing::Length(1));
        let r = response(200, streamed(&["a"]), &[("content-length", "1, 1")]);
        let (h, f, _) = head_of(&r, false, false);
        assert_eq!(f, Framing::Chunked);
        assert!(h.ends_with("transfer-encoding: chunked\r\n\r\n") && !h.contains("content-length"));
        // HEAD and 304 keep the fields as they are; 204 has none.
        let r = response(200, full(""), &[("content-length", "42")]);
        let (h, f, _) = head_of(&r, true, false);
        assert_eq!(f, Framing::None);
        assert!(h.contains("content-length: 42\r\n"), "{h}");
        let r = response(304, full(""), &[("content-length", "42")]);
        assert!(
            head_of(&r, false, false)
                .0
                .contains("content-length: 42\r\n")
        );
        let r = response(204, full(""), &[("content-length", "0")]);
        let (h, f, _) = head_of(&r, false, false);
        assert_eq!(f, Framing::None);
        assert!(!h.contains("content-length"), "{h}");
    }

    #[test]
    fn date_once_and_close_when_either_side_says_so() {
        let r = response(404, full(""), &[("date", "Sun, 06 Nov 1994 08:49:37 GMT")]);
        let (h, _, close) = head_of(&r, false, true);
        assert_eq!(h.matches("date: ").count(), 1, "{h}");
        assert!(h.starts_with("HTTP/1.1 404 Not Found\r\n"), "{h}");
        assert!(close && h.contains("connection: close\r\n"), "{h}");
        let r = response(200, full(""), &[("connection", "keep-alive, Close")]);
        let (h, _, close) = head_of(&r, false, false);
        assert!(close);
        assert_eq!(h.matches("connection").count(), 1, "{h}");
        let r = response(200, full(""), &[]);
        let (h, _, close) = head_of(&r, false, false);
        assert!(!close && !h.contains("connection"), "{h}");
        let d = h
            .lines()
            .find_map(|l| l.strip_prefix("date: "))
            .expect("date");
        assert!(httpdate::parse_http_date(d).is_ok(), "{d}");
    }

    async fn written(r: Response<Body>, head_request: bool) -> Vec<u8> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let client = tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.expect("connect");
            let mut got = Vec::new();
            let _ = c.read_to_end(&mut got).await;
            got
        });
        let (mut s, _) = l.accept().await.expect("accept");
        let mut out = Vec::new();
        let (framing, _) = encode_head(&mut out, &r, head_request, true);
        let mut body = r.into_body();
        let ok = write_body(&mut s, &mut out, &mut body, framing).await;
        drop(s);
        let got = client.await.expect("client");
        assert!(ok.is_ok() || framing != Framing::Chunked);
        got
    }

    fn body_of(wire: &[u8]) -> &[u8] {
        let at = wire
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("head");
        &wire[at + 4..]
    }

    #[tokio::test]
    async fn bodies_go_out_framed() {
        let w = written(response(200, streamed(&["ab", "", "cde"]), &[]), false).await;
        assert_eq!(body_of(&w), b"2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n");
        let w = written(response(200, full("hello"), &[]), false).await;
        assert_eq!(body_of(&w), b"hello");
        let w = written(response(200, full(""), &[("content-length", "5")]), true).await;
        assert_eq!(body_of(&w), b"");
        // Longer than gathered at once: all of it, in order.
        let big: &'static str = Box::leak("x".repeat(3 * WRITE_CHUNK + 7).into_boxed_str());
        let parts: &'static [&'static str] = Box::leak(vec![big, "yz"].into_boxed_slice());
        let w = written(response(200, streamed(parts), &[]), false).await;
        let b = body_of(&w);
        assert!(b.ends_with(b"yz\r\n0\r\n\r\n"));
        assert_eq!(
            b.iter().filter(|c| **c == b'x').count(),
            3 * WRITE_CHUNK + 7
        );
    }

    #[tokio::test]
    async fn a_body_that_breaks_its_length_fails_the_connection() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let _c = TcpStream::connect(addr).await.expect("connect");
        let (mut s, _) = l.accept().await.expect("accept");
        for (declared, parts) in [("1", &["ab"][..]), ("5", &["ab"][..])] {
            let r = response(200, streamed(parts), &[("content-length", declared)]);
            let mut out = Vec::new();
            let (framing, _) = encode_head(&mut out, &r, false, false);
            assert_eq!(framing, Framing::Length(declared.parse().expect("n")));
            let mut body = r.into_body();
            assert!(
                write_body(&mut s, &mut out, &mut body, framing)
                    .await
                    .is_err()
            );
        }
    }
}
