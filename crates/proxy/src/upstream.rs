//! HTTP/1.1 to machines, run inside the request's own task: the request head and body are
//! written in one go on a pooled connection, the response head is parsed (`httparse`) and the
//! body is read by the response body itself as the client side asks for it, the connection
//! going back to the pool ([`crate::pool`]) when the body is complete. No task per connection
//! and no channel between the request and its connection, unlike hyper's client; hyper's
//! client still carries upgrades (websockets) and h2c.
//!
//! The machine is not trusted more than it must be: a response head over [`MAX_HEAD`] bytes or
//! [`MAX_HEADERS`] headers, conflicting framing (`Transfer-Encoding` with `Content-Length`,
//! differing lengths), a malformed chunk or an unexpected `101` end the request with `PU02`
//! and the connection is closed, so that one response can never be read as part of another.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::http::BoxError;
use crate::pool::{ConnectError, Pool};

/// Largest response head read from a machine.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most headers in a response head.
pub const MAX_HEADERS: usize = 128;
/// Informational (1xx) responses skipped before the final one.
const MAX_INFORMATIONAL: usize = 16;
/// Longest chunk-size line (with extensions) and trailer section of a chunked body.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;
/// Bytes read from the machine at a time.
const READ_SIZE: usize = 16 * 1024;

/// A connection to a machine.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    /// Bytes read and not yet used.
    buf: BytesMut,
    /// When it was last given back to the pool.
    pub(crate) idle_since: std::time::Instant,
    /// How long the machine may stay silent while a request waits on it, and until when
    /// (set when a read first finds nothing, cleared when one finds something).
    silence: std::time::Duration,
    deadline: Option<tokio::time::Instant>,
    /// The connection's one timer for that wait: made at the first wait and moved only when
    /// it fires before the deadline, so that a request does not touch the timer wheel.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Conn {
    /// A new connection (connected, `TCP_NODELAY`).
    pub fn new(io: TcpStream) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            idle_since: std::time::Instant::now(),
            silence: std::time::Duration::from_secs(600),
            deadline: None,
            timer: None,
        }
    }

    /// The machine may stay silent for `silence` at a time on the request just sent.
    fn allow(&mut self, silence: std::time::Duration) {
        self.silence = silence;
        self.deadline = None;
    }

    /// Ready once the machine has been silent past the deadline: the wait starts (the clock
    /// is read) only when a read first finds nothing.
    fn poll_silent(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let silence = self.silence;
        let deadline = *self.deadline.get_or_insert_with(|| {
            let now = tokio::time::Instant::now();
            // A silence too long to add (seconds from a config) is as good as a year.
            now.checked_add(silence)
                .unwrap_or_else(|| now + std::time::Duration::from_secs(365 * 86_400))
        });
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // Set for a longer allowance than this request's (another port's): moved earlier.
        if timer.deadline() > deadline {
            timer.as_mut().reset(deadline);
        }
        loop {
            ready!(timer.as_mut().poll(cx));
            if tokio::time::Instant::now() >= deadline {
                return Poll::Ready(());
            }
            timer.as_mut().reset(deadline);
        }
    }

    /// Reads more of the machine's answer into the buffer (`Ok(0)`: it closed); `None` when
    /// it stayed silent too long.
    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<Option<std::io::Result<usize>>> {
        if let Poll::Ready(r) = poll_fill(self, cx) {
            // Heard from (or failed): the next wait starts its own allowance.
            self.deadline = None;
            return Poll::Ready(Some(r));
        }
        self.poll_silent(cx).map(|()| None)
    }

    /// Whether this idle connection can carry a request: the machine has neither closed it
    /// nor sent anything since its last answer (bytes no request asked for would be read as
    /// the next request's answer). The reactor has seen either as the socket turning
    /// readable, so this reads the socket only when it says so.
    pub(crate) fn idle_intact(&mut self) -> bool {
        // `try_read` reads only when the reactor has the socket readable (else `WouldBlock` at
        // once, no system call, no waker registered); a read that finds nothing clears it.
        let mut b = [0u8; 1];
        matches!(self.io.try_read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// Why a request to a machine failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be had.
    #[error("connect: {0:?}")]
    Connect(ConnectError),
    /// The request could not be sent or the answer was not a usable response.
    #[error("{0}")]
    Send(String),
    /// The machine stayed silent longer than it may (no answer's head in time).
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// Sends one request (`head` is the whole request head, `body` its body, framed by the head's
/// `content-length`) to `addr`, on a pooled connection or a new one. A reused connection the
/// machine had closed is replaced once by a new one when nothing of the answer came back and
/// either nothing could be written or `retry_safe` (the method is idempotent). The machine
/// may stay `silent` that long before its answer's head and between reads of its body.
#[allow(clippy::too_many_arguments)]
pub async fn send(
    pool: &Arc<Pool>,
    addr: SocketAddr,
    connect_timeout: std::time::Duration,
    silent: std::time::Duration,
    head: &[u8],
    body: &Bytes,
    head_request: bool,
    retry_safe: bool,
) -> Result<Response<ResponseBody>, SendError> {
    // After a pooled connection turned out closed, the next try is on a new one.
    let mut fresh_only = false;
    loop {
        let pooled = if fresh_only {
            None
        } else {
            pool.take_conn(addr)
        };
        let (mut conn, reused) = match pooled {
            Some(c) => (c, true),
            None => {
                let io = crate::pool::connect(addr, connect_timeout)
                    .await
                    .map_err(SendError::Connect)?;
                (Conn::new(io), false)
            }
        };
        let (write_failed, answer) = match write_request(&mut conn.io, head, body).await {
            Ok(()) => {
                conn.allow(silent);
                (false, read_head(&mut conn, head_request).await)
            }
            Err(e) => (
                true,
                Err(HeadError::Nothing(format!("writing the request: {e}"))),
            ),
        };
        match answer {
            Ok((parts, framing)) => {
                let body = ResponseBody::new(conn, framing, pool.local(), addr);
                return Ok(Response::from_parts(parts, body));
            }
            // Closed while idle in the pool: once more on a new connection.
            Err(HeadError::Nothing(_)) if reused && (retry_safe || write_failed) => {
                fresh_only = true;
                continue;
            }
            Err(HeadError::Nothing(m) | HeadError::Bad(m)) => return Err(SendError::Send(m)),
            Err(HeadError::Silent) => return Err(SendError::Timeout(silent)),
        }
    }
}

async fn write_request(io: &mut TcpStream, head: &[u8], body: &Bytes) -> std::io::Result<()> {
    if body.is_empty() {
        io.write_all(head).await
    } else {
        let mut bufs = [std::io::IoSlice::new(head), std::io::IoSlice::new(body)];
        let mut bufs: &mut [std::io::IoSlice<'_>] = &mut bufs;
        while !bufs.is_empty() {
            let n = io.write_vectored(bufs).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            std::io::IoSlice::advance_slices(&mut bufs, n);
        }
        Ok(())
    }
}

enum HeadError {
    /// Nothing of a response came back.
    Nothing(String),
    /// Something came back that is not a usable response.
    Bad(String),
    /// The machine stayed silent too long.
    Silent,
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the machine closes the connection.
    Close,
}

async fn read_head(
    conn: &mut Conn,
    head_request: bool,
) -> Result<(hyper::http::response::Parts, (Framing, bool)), HeadError> {
    let mut informational = 0;
    let mut got_any = false;
    loop {
        if !conn.buf.is_empty() {
            got_any = true;
            match parse_head(&mut conn.buf, head_request) {
                Ok(Some(Parsed::Informational)) => {
                    informational += 1;
                    if informational > MAX_INFORMATIONAL {
                        return Err(HeadError::Bad("too many 1xx responses".into()));
                    }
                    continue;
                }
                Ok(Some(Parsed::Final(parts, framing, keep_alive))) => {
                    return Ok((parts, (framing, keep_alive)));
                }
                Ok(None) => {}
                Err(e) => return Err(HeadError::Bad(e)),
            }
        }
        let Some(read) = std::future::poll_fn(|cx| conn.poll_read_more(cx)).await else {
            return Err(HeadError::Silent);
        };
        match read {
            Ok(0) if got_any => {
                return Err(HeadError::Bad(
                    "connection closed in the response head".into(),
                ));
            }
            Ok(0) => return Err(HeadError::Nothing("connection closed".into())),
            Ok(_) => {}
            Err(e) if got_any => return Err(HeadError::Bad(format!("reading: {e}"))),
            Err(e) => return Err(HeadError::Nothing(format!("reading: {e}"))),
        }
    }
}

/// A parsed response head.
#[derive(Debug)]
pub enum Parsed {
    /// A 1xx other than 101, consumed.
    Informational,
    /// The final response: its head, how its body is delimited, whether the connection can
    /// carry another request afterwards.
    Final(hyper::http::response::Parts, Framing, bool),
}

/// Parses a response head at the start of `buf`, consuming it when complete (`Ok(None)`:
/// more bytes are needed). Errors name what is wrong.
pub fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Parsed>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let n = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err("response head too large".into());
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("invalid response head: {e}")),
    };
    if n > MAX_HEAD {
        return Err("response head too large".into());
    }
    let code = r.code.unwrap_or(0);
    let version = if r.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    if code == 101 {
        return Err("unexpected 101 Switching Protocols".into());
    }
    if (100..200).contains(&code) {
        buf.advance(n);
        return Ok(Some(Parsed::Informational));
    }
    let status = StatusCode::from_u16(code).map_err(|_| format!("invalid status {code}"))?;
    // The head's bytes stay shared by the header values (no copy per value): their offsets
    // are taken before the head is split off the buffer.
    let count = r.headers.len();
    let mut idx = [(0usize, 0usize, 0usize, 0usize); MAX_HEADERS];
    let base = buf.as_ptr() as usize;
    for (slot, h) in idx.iter_mut().zip(r.headers.iter()) {
        let ns = h.name.as_ptr() as usize - base;
        let vs = h.value.as_ptr() as usize - base;
        *slot = (ns, ns + h.name.len(), vs, vs + h.value.len());
    }
    let head = buf.split_to(n).freeze();
    let mut map = HeaderMap::with_capacity(count);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te = false;
    let mut keep_alive = version == Version::HTTP_11;
    for &(ns, ne, vs, ve) in &idx[..count] {
        let name = HeaderName::from_bytes(&head[ns..ne])
            .map_err(|_| "invalid header name in the response".to_string())?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| "invalid header value in the response".to_string())?;
        if name == hyper::header::CONTENT_LENGTH {
            let v = parse_length(value.as_bytes()).ok_or("invalid content-length")?;
            if length.is_some_and(|l| l != v) {
                return Err("conflicting content-length".into());
            }
            length = Some(v);
        } else if name == hyper::header::TRANSFER_ENCODING {
            te = true;
            // Chunked must be the final coding; anything after it means read to the close.
            chunked = value
                .to_str()
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name == hyper::header::CONNECTION {
            // By bytes: a value with obs-text in it must not hide its `close`.
            if value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            {
                keep_alive = false;
            }
        }
        map.append(name, value);
    }
    if te && length.is_some() {
        return Err("transfer-encoding with content-length".into());
    }
    let framing = if head_request || code == 204 || code == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if te {
        Framing::Close
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    if framing == Framing::Close {
        keep_alive = false;
    }
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    *resp.version_mut() = version;
    *resp.headers_mut() = map;
    let (parts, ()) = resp.into_parts();
    Ok(Some(Parsed::Final(parts, framing, keep_alive)))
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Decodes a chunked body.
#[derive(Debug, Default, Clone)]
pub struct Chunked {
    state: ChunkState,
    /// Bytes of the current size line or of the trailers seen so far.
    line: usize,
    /// The trailer section's raw lines (empty, and unallocated, without trailers).
    trailers: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// The chunk size (hex digits), then extensions up to CRLF.
    #[default]
    Size,
    SizeExt(u64),
    SizeLf(u64),
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines up to an empty one (`at_line_start`).
    Trailers {
        at_line_start: bool,
        cr: bool,
    },
    Done,
}

impl Chunked {
    /// Whether the last chunk and the trailers were read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// The trailer fields, once the body is done and if it had any. Fields that frame or
    /// route a message (RFC 9110 §6.5.1: length, coding, host, connection options) are not
    /// allowed there and are left out; so is what does not parse.
    pub fn take_trailers(&mut self) -> Option<HeaderMap> {
        if !self.is_done() || self.trailers.is_empty() {
            return None;
        }
        let raw = std::mem::take(&mut self.trailers);
        let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let httparse::Status::Complete((_, parsed)) =
            httparse::parse_headers(&raw, &mut fields).ok()?
        else {
            return None;
        };
        let mut map = HeaderMap::new();
        for f in parsed {
            let Ok(name) = HeaderName::from_bytes(f.name.as_bytes()) else {
                continue;
            };
            // Connection-specific fields (`te`, `transfer-encoding`, ...) are the proxy's list.
            let framing = matches!(
                name.as_str(),
                "content-length"
                    | "host"
                    | "trailer"
                    | "content-encoding"
                    | "content-type"
                    | "content-range"
            ) || crate::http::HOP_BY_HOP.contains(&name.as_str());
            if let (false, Ok(v)) = (framing, HeaderValue::from_bytes(f.value)) {
                map.append(name, v);
            }
        }
        (!map.is_empty()).then_some(map)
    }

    /// Takes from `buf` what it can: `Ok(Some(data))` for body bytes, `Ok(None)` when more
    /// input is needed (or the body is done).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, String> {
        // The size's digits stay in `buf` until the first byte after them, and are scanned
        // again from the start of the line on the next call (at most 16 of them).
        let mut size: u64 = 0;
        let mut digits = 0usize;
        loop {
            match self.state {
                ChunkState::Done => return Ok(None),
                ChunkState::Size => {
                    let Some(&b) = buf.get(digits) else {
                        if digits > 16 {
                            return Err("chunk size too long".into());
                        }
                        return Ok(None);
                    };
                    match (b as char).to_digit(16) {
                        Some(d) => {
                            digits += 1;
                            if digits > 16 {
                                return Err("chunk size too long".into());
                            }
                            size = size * 16 + u64::from(d);
                        }
                        None if digits == 0 => return Err("invalid chunk size".into()),
                        None => {
                            buf.advance(digits);
                            self.line = digits;
                            self.state = ChunkState::SizeExt(size);
                        }
                    }
                }
                ChunkState::SizeExt(n) => {
                    let Some(&b) = buf.first() else {
                        return Ok(None);
                    };
                    buf.advance(1);
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return Err("chunk size line too long".into());
                    }
                    match b {
                        b'\r' => self.state = ChunkState::SizeLf(n),
                        b'\n' => return Err("bare LF in a chunk size line".into()),
                        _ => {}
                    }
                }
                ChunkState::SizeLf(n) => {
                    let Some(&b) = buf.first() else {
                        return Ok(None);
                    };
                    if b != b'\n' {
                        return Err("expected LF after a chunk size".into());
                    }
                    buf.advance(1);
                    self.line = 0;
                    self.state = if n == 0 {
                        ChunkState::Trailers {
                            at_line_start: true,
                            cr: false,
                        }
                    } else {
                        ChunkState::Data(n)
                    };
                }
                ChunkState::Data(n) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                    return Ok(Some(data));
                }
                ChunkState::DataCr | ChunkState::DataLf => {
                    let Some(&b) = buf.first() else {
                        return Ok(None);
                    };
                    let want = if self.state == ChunkState::DataCr {
                        b'\r'
                    } else {
                        b'\n'
                    };
                    if b != want {
                        return Err("expected CRLF after chunk data".into());
                    }
                    buf.advance(1);
                    self.state = if want == b'\r' {
                        ChunkState::DataLf
                    } else {
                        ChunkState::Size
                    };
                }
                ChunkState::Trailers { at_line_start, cr } => {
                    let Some(&b) = buf.first() else {
                        return Ok(None);
                    };
                    buf.advance(1);
                    self.line += 1;
                    if self.line > MAX_TRAILERS {
                        return Err("trailers too long".into());
                    }
                    // Kept for take_trailers, with the final empty line that ends them.
                    if !(at_line_start && self.trailers.is_empty() && (b == b'\r' || b == b'\n')) {
                        self.trailers.push(b);
                    }
                    self.state = match (b, cr) {
                        (b'\n', true) if at_line_start => ChunkState::Done,
                        (b'\n', true) => ChunkState::Trailers {
                            at_line_start: true,
                            cr: false,
                        },
                        (b'\n', false) => return Err("bare LF in trailers".into()),
                        (b'\r', false) => ChunkState::Trailers {
                            at_line_start,
                            cr: true,
                        },
                        (_, true) => return Err("CR without LF in trailers".into()),
                        _ => ChunkState::Trailers {
                            at_line_start: false,
                            cr: false,
                        },
                    };
                }
            }
        }
    }
}

#[derive(Debug)]
enum BodyState {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

/// A response body read from the machine's connection as it is polled; the connection goes
/// back to the pool once the body is complete (and is closed if the body is dropped early).
#[derive(Debug)]
pub struct ResponseBody {
    conn: Option<Conn>,
    state: BodyState,
    keep_alive: bool,
    pool: Arc<crate::pool::Idle>,
    addr: SocketAddr,
}

impl ResponseBody {
    fn new(
        conn: Conn,
        (framing, keep_alive): (Framing, bool),
        pool: Arc<crate::pool::Idle>,
        addr: SocketAddr,
    ) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(Chunked::default()),
            Framing::Close => BodyState::Close,
        };
        let mut b = Self {
            conn: Some(conn),
            state,
            keep_alive,
            pool,
            addr,
        };
        if matches!(b.state, BodyState::Done) {
            b.finish();
        }
        b
    }

    /// The body is complete: the connection goes back if it can carry another request.
    fn finish(&mut self) {
        self.state = BodyState::Done;
        if let Some(c) = self.conn.take()
            && self.keep_alive
            && c.buf.is_empty()
        {
            self.pool.put_conn(self.addr, c);
        }
    }

    fn fail(&mut self, msg: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = BodyState::Done;
        self.conn = None;
        Poll::Ready(Some(Err(msg.into())))
    }
}

/// Reads what is there into the connection's buffer: `Ok(0)` at the end of the stream.
/// Through `AsyncRead` (a `read_buf` future, stateless, made per poll): a read that comes
/// back short tells the reactor the socket is drained, so that [`Conn::idle_intact`] and
/// the next read do not start with a read that finds nothing.
fn poll_fill(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
    conn.buf.reserve(READ_SIZE);
    let read = tokio::io::AsyncReadExt::read_buf(&mut conn.io, &mut conn.buf);
    std::pin::pin!(read).poll(cx)
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.state {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Length(left) => {
                    if !conn.buf.is_empty() {
                        let take = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(conn.buf.len());
                        let data = conn.buf.split_to(take).freeze();
                        *left -= take as u64;
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                BodyState::Chunked(dec) => match dec.decode(&mut conn.buf) {
                    Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(None) if dec.is_done() => {
                        let trailers = dec.take_trailers();
                        this.finish();
                        return Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))));
                    }
                    Ok(None) => {}
                    Err(e) => return this.fail(format!("machine's chunked body: {e}")),
                },
                BodyState::Close => {
                    if !conn.buf.is_empty() {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match conn.poll_read_more(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    let silence = conn.silence;
                    return this.fail(format!("the machine was silent for {silence:?} mid-body"));
                }
                Poll::Ready(Some(Ok(0))) => {
                    if matches!(this.state, BodyState::Close) {
                        this.state = BodyState::Done;
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                    return this.fail("the machine closed the connection mid-body".into());
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => return this.fail(format!("reading the body: {e}")),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Done => SizeHint::with_exact(0),
            BodyState::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod wire_tests {
    //! The client against real TCP servers on loopback.
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server answering each request on a connection with the next of `answers` (cycled),
    /// closing after one answer when `close_after_one`; counts connections accepted.
    async fn server(
        answers: Vec<&'static [u8]>,
        close_after_one: bool,
    ) -> (SocketAddr, Arc<AtomicUsize>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let a = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut next = 0usize;
            while let Ok((mut s, _)) = l.accept().await {
                a.fetch_add(1, Ordering::SeqCst);
                let answers = answers.clone();
                let start = next;
                next += 1;
                tokio::spawn(async move {
                    let mut i = start;
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        // One request: a head (these tests send no bodies).
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(0);
                        buf.drain(..end + 4);
                        if s.write_all(answers[i % answers.len()]).await.is_err() {
                            return;
                        }
                        i += 1;
                        if close_after_one {
                            return;
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    const GET: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";

    async fn send_get(
        pool: &Arc<Pool>,
        addr: SocketAddr,
    ) -> Result<Response<ResponseBody>, SendError> {
        send_get_within(pool, addr, Duration::from_secs(60)).await
    }

    /// A GET whose machine may stay `silent` that long.
    async fn send_get_within(
        pool: &Arc<Pool>,
        addr: SocketAddr,
        silent: Duration,
    ) -> Result<Response<ResponseBody>, SendError> {
        send(
            pool,
            addr,
            Duration::from_secs(2),
            silent,
            GET,
            &Bytes::new(),
            false,
            true,
        )
        .await
    }

    async fn get(pool: &Arc<Pool>, addr: SocketAddr) -> Result<(StatusCode, Bytes), String> {
        let r = send_get(pool, addr).await.map_err(|e| e.to_string())?;
        let status = r.status();
        let body = r
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, body))
    }

    #[tokio::test]
    async fn trailers_of_a_chunked_answer_are_the_last_frame_and_the_connection_is_reused() {
        let (addr, accepted) = server(
            vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n\
                  3\r\nabc\r\n0\r\nx-sum: 900150983cd24fb0\r\n\r\n",
            ],
            false,
        )
        .await;
        let pool = Arc::new(Pool::new(0));
        for _ in 0..2 {
            let r = send_get(&pool, addr).await.expect("answer");
            let collected = r.into_body().collect().await.expect("body");
            let trailers = collected.trailers().cloned().expect("trailers");
            assert_eq!(trailers["x-sum"], "900150983cd24fb0");
            assert_eq!(collected.to_bytes(), "abc");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "kept alive after the trailers"
        );
    }

    #[tokio::test]
    async fn keep_alive_connections_are_reused_across_framings() {
        let (addr, accepted) = server(
            vec![
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
                b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                b"HTTP/1.1 204 No Content\r\n\r\n",
            ],
            false,
        )
        .await;
        let pool = Arc::new(Pool::new(0));
        assert_eq!(
            get(&pool, addr).await,
            Ok((StatusCode::OK, Bytes::from("hello")))
        );
        assert_eq!(
            get(&pool, addr).await,
            Ok((StatusCode::CREATED, Bytes::from("abcde")))
        );
        assert_eq!(
            get(&pool, addr).await,
            Ok((StatusCode::NO_CONTENT, Bytes::new()))
        );
        assert_eq!(
            get(&pool, addr).await,
            Ok((StatusCode::OK, Bytes::from("hello")))
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "one connection for all");
        // Kept while its machine lives, closed when it goes.
        assert_eq!(pool.idle_count(), 1);
        pool.prune(|a| *a == addr);
        assert_eq!(pool.idle_count(), 1);
        pool.prune(|_| false);
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_connection_the_machine_closed_is_replaced_and_close_delimited_bodies_end_it() {
        // The server answers once per connection and closes: every reuse finds it closed.
        let (addr, accepted) = server(
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"],
            true,
        )
        .await;
        let pool = Arc::new(Pool::new(0));
        for _ in 0..3 {
            assert_eq!(
                get(&pool, addr).await,
                Ok((StatusCode::OK, Bytes::from("ok")))
            );
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        // Read to the close: the body is all of it, the connection is not kept.
        let (addr, accepted) = server(vec![b"HTTP/1.1 200 OK\r\n\r\nuntil the end"], true).await;
        let pool = Arc::new(Pool::new(0));
        assert_eq!(
            get(&pool, addr).await,
            Ok((StatusCode::OK, Bytes::from("until the end")))
        );
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(get(&pool, addr).await.map(|r| r.0), Ok(StatusCode::OK));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_the_machine_wrote_on_or_closed_is_not_reused() {
        // Each connection: an answer, then (late, unasked) bytes that look like another
        // answer, or its close after one answer.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let n = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let i = n.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut chunk = [0u8; 4096];
                    let mut buf = Vec::new();
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    match i {
                        0 => {
                            let late = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate";
                            let _ = s.write_all(late).await;
                        }
                        // A close (FIN) while idle in the pool.
                        1 => return,
                        _ => {}
                    }
                    let _ = s.read(&mut chunk).await;
                });
            }
        });
        let pool = Arc::new(Pool::new(0));
        for round in 1..=3 {
            assert_eq!(
                get(&pool, addr).await,
                Ok((StatusCode::NO_CONTENT, Bytes::new())),
                "round {round}"
            );
            assert_eq!(pool.idle_count(), 1, "round {round}");
            // The late bytes (round 1) or the close (round 2) arrive while it is idle.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            3,
            "one new connection per round"
        );
    }

    #[tokio::test]
    async fn a_silent_machine_times_out_before_its_head_and_mid_body() {
        // Connection 0 never answers; connection 1 sends a head and half its body, then
        // nothing; both stay open.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut i = 0;
            while let Ok((mut s, _)) = listener.accept().await {
                let first = i == 0;
                i += 1;
                tokio::spawn(async move {
                    let mut chunk = [0u8; 4096];
                    let _ = s.read(&mut chunk).await;
                    if !first {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf.")
                            .await;
                    }
                    tokio::time::sleep(Duration::from_secs(30)).await;
                });
            }
        });
        let pool = Arc::new(Pool::new(0));
        let silent = Duration::from_millis(300);
        let t = std::time::Instant::now();
        let e = send_get_within(&pool, addr, silent)
            .await
            .expect_err("no answer");
        assert!(matches!(e, SendError::Timeout(d) if d == silent), "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        let r = send_get_within(&pool, addr, silent).await.expect("a head");
        let e = r.into_body().collect().await.expect_err("a cut body");
        assert!(e.to_string().contains("silent"), "{e}");
        assert_eq!(pool.idle_count(), 0, "neither connection is kept");
    }

    #[tokio::test]
    async fn bad_answers_fail_and_their_connection_is_not_kept() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
            b"garbage\r\n\r\n",
        ] {
            let (addr, _) = server(vec![bad], true).await;
            let pool = Arc::new(Pool::new(0));
            assert!(get(&pool, addr).await.is_err(), "{bad:?}");
            assert_eq!(pool.idle_count(), 0, "{bad:?}");
        }
        // Nothing listens: a connect error, told apart from a bad answer.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        let pool = Arc::new(Pool::new(0));
        let e = send_get(&pool, addr).await.expect_err("refused");
        assert!(
            matches!(e, SendError::Connect(ConnectError::Refused)),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn a_body_dropped_half_read_closes_its_connection() {
        static BIG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let big = BIG.get_or_init(|| {
            let mut v = b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n".to_vec();
            v.resize(v.len() + 1_000_000, b'x');
            v
        });
        let (addr, accepted) = server(vec![big.as_slice()], false).await;
        let pool = Arc::new(Pool::new(0));
        let r = send_get(&pool, addr).await.expect("head");
        assert_eq!(
            hyper::body::Body::size_hint(r.body()).exact(),
            Some(1_000_000)
        );
        let mut body = r.into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.into_data().is_ok_and(|d| !d.is_empty()));
        drop(body);
        assert_eq!(pool.idle_count(), 0);
        // The next request opens a new connection and gets the whole body.
        let (s, b) = get(&pool, addr).await.expect("second");
        assert_eq!((s, b.len()), (StatusCode::OK, 1_000_000));
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle_count(), 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str, head: bool) -> Result<Option<Parsed>, String> {
        parse_head(&mut BytesMut::from(s), head)
    }

    fn framing(s: &str) -> (Framing, bool) {
        match parse(s, false) {
            Ok(Some(Parsed::Final(_, f, k))) => (f, k),
            other => panic!("{s:?}: {other:?}"),
        }
    }

    #[test]
    fn framing_follows_the_head() {
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
            (Framing::Length(5), true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            (Framing::Chunked, true)
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            (Framing::Close, false)
        );
        assert_eq!(framing("HTTP/1.1 200 OK\r\n\r\n"), (Framing::Close, false));
        assert_eq!(
            framing("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n"),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\ncontent-length: 1\r\n\r\n"
            ),
            (Framing::Length(1), false)
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n"),
            (Framing::Length(1), false)
        );
        match parse("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true) {
            Ok(Some(Parsed::Final(p, Framing::Empty, true))) => {
                assert_eq!(p.headers["content-length"], "5");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx: a\r\n b\r\n\r\n",
        ] {
            assert!(parse(bad, false).is_err(), "{bad:?} accepted");
        }
        // Same length twice is one length.
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n").0,
            Framing::Length(5)
        );
    }

    #[test]
    fn heads_are_bounded_and_informational_ones_skipped() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        );
        assert!(matches!(
            parse_head(&mut buf, false),
            Ok(Some(Parsed::Informational))
        ));
        assert!(matches!(
            parse_head(&mut buf, false),
            Ok(Some(Parsed::Final(_, Framing::Length(0), true)))
        ));
        assert!(buf.is_empty());
        assert!(matches!(
            parse("HTTP/1.1 200 OK\r\nx: y\r\n", false),
            Ok(None)
        ));
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD));
        assert!(parse(&huge, false).is_err());
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        assert!(parse(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), false).is_err());
    }

    fn dechunk(input: &[u8], step: usize) -> Result<(Vec<u8>, bool, usize), String> {
        let mut dec = Chunked::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(step.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(d) = dec.decode(&mut buf)? {
                out.extend_from_slice(&d);
            }
        }
        Ok((out, dec.is_done(), buf.len()))
    }

    #[test]
    fn chunked_bodies_decode_in_any_split() {
        let body = b"5\r\nhello\r\nA;ext=1\r\n0123456789\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        for step in 1..body.len() {
            let (out, done, left) = dechunk(body, step).expect("valid");
            assert_eq!(out, b"hello0123456789", "step {step}");
            assert!(done);
            assert_eq!(left, 4, "the next response's bytes stay");
        }
        let (out, done, _) = dechunk(b"0\r\n\r\n", 1).expect("empty");
        assert!(out.is_empty() && done);
        for step in [1, 3, 100] {
            let mut dec = Chunked::default();
            let mut buf = BytesMut::new();
            let body = b"2\r\nhi\r\n0\r\nx-sum: abc\r\ncontent-length: 9\r\nx-sum: def\r\n\r\n";
            for piece in body.chunks(step) {
                buf.extend_from_slice(piece);
                while dec.decode(&mut buf).expect("valid").is_some() {}
            }
            let t = dec.take_trailers().expect("trailers");
            let sums: Vec<_> = t.get_all("x-sum").iter().collect();
            assert_eq!(sums, ["abc", "def"], "step {step}");
            assert!(
                !t.contains_key("content-length"),
                "framing fields are not trailers"
            );
            assert!(dec.take_trailers().is_none(), "taken once");
        }
        let mut dec = Chunked::default();
        let mut buf = BytesMut::from(&b"0\r\n\r\n"[..]);
        while dec.decode(&mut buf).expect("valid").is_some() {}
        assert!(
            dec.is_done() && dec.take_trailers().is_none(),
            "none sent, none made"
        );
        let (_, done, _) = dechunk(b"5\r\nhel", 3).expect("partial");
        assert!(!done);
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"11111111111111111\r\n",
            b"0\r\nx: y\n\r\n",
            b"0\r\n\rx",
        ] {
            assert!(dechunk(bad, 1).is_err(), "{bad:?}");
        }
        let long_ext = format!("5;{}\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert!(dechunk(long_ext.as_bytes(), 64).is_err());
    }
}
