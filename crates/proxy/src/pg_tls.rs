//! The `pg_tls` handler: TLS for PostgreSQL clients, terminated at the edge, the plaintext
//! passed to the machine's server as raw TCP.
//!
//! PostgreSQL negotiates TLS in band: a client sends an 8-byte `SSLRequest`, the server
//! answers one byte (`S` to go on with a TLS handshake, `N` to refuse), and the protocol's
//! `StartupMessage` then comes inside TLS. A plain TLS terminator sees a packet that is not a
//! ClientHello and fails, which is why this handler exists. The proxy reads the client's
//! first message (bounded by the TLS handshake timeout) and:
//!
//! - `SSLRequest`: answers `S`; then the TLS handshake as on a `tls` port (certificate by
//!   SNI, which libpq sends, `tls_options`), with ALPN `postgresql`, and the decrypted stream
//!   goes to a machine of the SNI's app, whose server sees an ordinary unencrypted client;
//! - a TLS ClientHello straight away (PostgreSQL 17's `sslnegotiation=direct`): the same, but
//!   the client must agree on ALPN `postgresql`, as PostgreSQL's own server demands;
//! - `GSSENCRequest`: answers `N` (no GSSAPI encryption here); libpq then sends an
//!   `SSLRequest` or its startup on the same connection;
//! - `CancelRequest` (libpq before 17 sends its cancels without TLS, on a new connection):
//!   sent to the machine whose server gave out that key. The proxy reads each `pg_tls`
//!   connection's `BackendKeyData` as it relays the server's first messages ([`KeyWatch`],
//!   until `ReadyForQuery`), and keeps key → machine while the connection is open
//!   ([`CancelKeys`], bounded); a cancel with a key it does not know is dropped, so a cancel
//!   reaches neither another tenant's server nor a machine that does not run the query;
//! - a plaintext `StartupMessage` (`sslmode=disable`): read to its end, then refused with a
//!   PostgreSQL `ErrorResponse` (FATAL, SQLSTATE 28000) saying TLS is required, which `psql`
//!   prints;
//! - anything else: closed.
//!
//! The first message and the TLS handshake share one deadline, the TLS handshake timeout.
//! Failures count as TLS handshake errors (`PT04`, `PT08` on timeout) of the port; cancels
//! are counted by outcome (`hangar_proxy_pg_cancels_total{result}`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

use crate::Proxy;
use crate::tls::{Client, Then};

/// `SSLRequest`'s code.
pub const SSL_REQUEST: u32 = 80_877_103;
/// `GSSENCRequest`'s code.
pub const GSSENC_REQUEST: u32 = 80_877_104;
/// `CancelRequest`'s code.
pub const CANCEL_REQUEST: u32 = 80_877_102;
/// The largest startup packet PostgreSQL's server accepts.
const MAX_STARTUP: u32 = 10_000;
/// The longest `CancelRequest`: protocol 3.2 (PostgreSQL 18) keys are up to 256 bytes.
const MAX_CANCEL: u32 = 8 + 4 + 256;
/// Cancel keys kept at once (one per open `pg_tls` connection; past this, new connections'
/// cancels are not routed).
const MAX_KEYS: usize = 65_536;
/// Server bytes read for a `BackendKeyData` before giving up on one.
const MAX_WATCHED: usize = 64 * 1024;

/// A client's first message, from its first 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// `SSLRequest`.
    SslRequest,
    /// `GSSENCRequest`.
    GssEncRequest,
    /// A TLS handshake record: TLS without an `SSLRequest`.
    DirectTls,
    /// `CancelRequest` (16 bytes in all; up to 268 with protocol 3.2's longer keys).
    Cancel,
    /// A `StartupMessage` (protocol 2 or 3) in plaintext.
    Startup,
    /// Not PostgreSQL.
    Invalid,
}

/// What the first 8 bytes of a connection open. A PostgreSQL message here starts with its
/// length (big-endian, at most 10,000, so a zero first byte), a TLS record with 0x16.
pub fn classify(head: &[u8; 8]) -> Opening {
    if head[0] == 0x16 {
        return Opening::DirectTls;
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    match (len, code) {
        (8, SSL_REQUEST) => Opening::SslRequest,
        (8, GSSENC_REQUEST) => Opening::GssEncRequest,
        (16..=MAX_CANCEL, CANCEL_REQUEST) => Opening::Cancel,
        (9..=MAX_STARTUP, c) if matches!(c >> 16, 2 | 3) => Opening::Startup,
        _ => Opening::Invalid,
    }
}

/// The `ErrorResponse` a plaintext startup gets.
pub fn tls_required() -> Vec<u8> {
    let mut fields = Vec::new();
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "28000"),
        (
            b'M',
            "this port accepts TLS connections only (handler pg_tls): connect with \
             sslmode=require or stricter",
        ),
    ] {
        fields.push(tag);
        fields.extend_from_slice(value.as_bytes());
        fields.push(0);
    }
    fields.push(0);
    let mut out = vec![b'E'];
    // The length counts itself; the fields are a few hundred bytes.
    out.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(&fields);
    out
}

/// Serves one client connection to a `pg_tls` port.
pub(crate) async fn serve(
    proxy: Arc<Proxy>,
    mut stream: Client,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    port: u16,
) {
    let deadline = tokio::time::Instant::now() + proxy.config.tls.handshake_timeout;
    // At most a GSSENCRequest, then the message that follows it.
    for _ in 0..2 {
        let mut head = [0u8; 8];
        match tokio::time::timeout_at(deadline, stream.read_exact(&mut head)).await {
            Ok(Ok(_)) => {}
            // A client that closed or failed before a whole message: nothing to count.
            Ok(Err(_)) => return,
            Err(_) => return refused(&proxy, "PT08"),
        }
        let then = match classify(&head) {
            Opening::SslRequest => {
                if stream.write_all(b"S").await.is_err() {
                    return;
                }
                Then::Postgres { direct: false }
            }
            Opening::DirectTls => {
                stream.unread(&head);
                Then::Postgres { direct: true }
            }
            Opening::GssEncRequest => {
                if stream.write_all(b"N").await.is_err() {
                    return;
                }
                continue;
            }
            Opening::Cancel => {
                let addrs = local.map(|local| (peer, local));
                return cancel(&proxy, stream, &head, addrs, deadline).await;
            }
            Opening::Startup => {
                // Read to its end first: closing on unread bytes resets the connection, and
                // the client may never see the reason.
                let rest = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) - 8;
                let mut sink = tokio::io::sink();
                let mut body = (&mut stream).take(u64::from(rest));
                let _ =
                    tokio::time::timeout_at(deadline, tokio::io::copy(&mut body, &mut sink)).await;
                let _ = tokio::time::timeout_at(deadline, stream.write_all(&tls_required())).await;
                let _ = tokio::time::timeout_at(deadline, stream.shutdown()).await;
                return refused(&proxy, "PT04");
            }
            Opening::Invalid => return refused(&proxy, "PT04"),
        };
        return crate::tls::serve(proxy, stream, peer, local, port, then, deadline).await;
    }
    refused(&proxy, "PT04")
}

fn refused(proxy: &Proxy, code: &str) {
    proxy.metrics.tls_handshake_error("unknown");
    proxy.metrics.error("", code);
}

/// Passes a plaintext `CancelRequest` (its first 8 bytes in `head`) to the machine whose
/// server gave out its key, if an open connection holds it; with a PROXY header first where
/// the port has `proxy_proto` (`addrs`: the client's and the address it came to).
async fn cancel<S: AsyncRead + Unpin>(
    proxy: &Proxy,
    mut stream: S,
    head: &[u8; 8],
    addrs: Option<(SocketAddr, SocketAddr)>,
    deadline: tokio::time::Instant,
) {
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let mut msg = vec![0u8; len];
    msg[..8].copy_from_slice(head);
    if !matches!(
        tokio::time::timeout_at(deadline, stream.read_exact(&mut msg[8..])).await,
        Ok(Ok(_))
    ) {
        return proxy.metrics.pg_cancel("incomplete");
    }
    let Some(target) = proxy.pg_keys.get(&msg[8..]) else {
        return proxy.metrics.pg_cancel("unknown");
    };
    let sent = tokio::time::timeout(proxy.config.connect_timeout, async {
        let mut s = tokio::net::TcpStream::connect(target.addr).await?;
        if let (Some(v), Some((src, dst))) = (target.proxy_proto, addrs) {
            s.write_all(&crate::proxy_proto::header(v, src, dst))
                .await?;
        }
        s.write_all(&msg).await?;
        s.shutdown().await
    })
    .await;
    proxy.metrics.pg_cancel(if matches!(sent, Ok(Ok(()))) {
        "sent"
    } else {
        "failed"
    });
}

/// Where a cancel goes: the server's address (6PN, internal port), and the PROXY header it
/// expects first, if its port has `proxy_proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelTarget {
    /// The machine's address and internal port.
    pub addr: SocketAddr,
    /// `proxy_proto`'s version, where the port has it.
    pub proxy_proto: Option<crate::proxy_proto::Version>,
}

/// Cancel keys of open `pg_tls` connections → the server that gave them out.
#[derive(Debug, Default)]
pub struct CancelKeys(Mutex<HashMap<Vec<u8>, CancelTarget>>);

impl CancelKeys {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, CancelTarget>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes `key`; false when full (or the key is someone else's already).
    pub fn insert(&self, key: Vec<u8>, target: CancelTarget) -> bool {
        let mut m = self.lock();
        if m.len() >= MAX_KEYS || m.contains_key(&key) {
            return false;
        }
        m.insert(key, target);
        true
    }

    /// Where `key`'s server is.
    pub fn get(&self, key: &[u8]) -> Option<CancelTarget> {
        self.lock().get(key).copied()
    }

    /// Forgets `key`.
    pub fn remove(&self, key: &[u8]) {
        self.lock().remove(key);
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the PostgreSQL backend messages a server sends first, for its `BackendKeyData`:
/// fed the server's bytes as they pass, it yields the key (process id and secret) and stops
/// at `ReadyForQuery` or `ErrorResponse`, after [`MAX_WATCHED`] bytes, or at anything that
/// is not a backend message.
#[derive(Debug, Default)]
pub struct KeySniffer {
    head: [u8; 5],
    have: usize,
    kind: u8,
    left: usize,
    key: Vec<u8>,
    seen: usize,
    done: bool,
}

impl KeySniffer {
    /// Whether it has stopped looking.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Takes the next bytes from the server; the key, once its message is complete.
    pub fn feed(&mut self, mut data: &[u8]) -> Option<Vec<u8>> {
        let mut found = None;
        self.seen += data.len();
        if self.seen > MAX_WATCHED {
            self.done = true;
        }
        while !self.done && !data.is_empty() {
            if self.have < 5 {
                let n = (5 - self.have).min(data.len());
                self.head[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have < 5 {
                    break;
                }
                self.kind = self.head[0];
                let len =
                    u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]])
                        as usize;
                if !(4..=MAX_WATCHED).contains(&len) {
                    self.done = true;
                    break;
                }
                self.left = len - 4;
                self.key.clear();
            }
            let n = self.left.min(data.len());
            if self.kind == b'K' && self.left <= MAX_CANCEL as usize {
                self.key.extend_from_slice(&data[..n]);
            }
            self.left -= n;
            data = &data[n..];
            if self.left == 0 {
                match self.kind {
                    b'K' if (8..=MAX_CANCEL as usize - 8).contains(&self.key.len()) => {
                        found = Some(std::mem::take(&mut self.key));
                    }
                    b'Z' | b'E' => self.done = true,
                    _ => {}
                }
                self.have = 0;
            }
        }
        found
    }
}

/// A connection to a machine's PostgreSQL server that notes the cancel key its server gives
/// out (in [`CancelKeys`], as the machine's) and forgets it when dropped.
#[derive(Debug)]
pub struct KeyWatch<S> {
    inner: S,
    sniffer: KeySniffer,
    proxy: Arc<Proxy>,
    target: CancelTarget,
    held: Option<Vec<u8>>,
}

impl<S> KeyWatch<S> {
    /// `inner`, connected to `target`.
    pub(crate) fn new(inner: S, proxy: Arc<Proxy>, target: CancelTarget) -> Self {
        Self {
            inner,
            sniffer: KeySniffer::default(),
            proxy,
            target,
            held: None,
        }
    }
}

impl<S> Drop for KeyWatch<S> {
    fn drop(&mut self) {
        if let Some(k) = self.held.take() {
            self.proxy.pg_keys.remove(&k);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for KeyWatch<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && !self.sniffer.is_done() {
            let this = &mut *self;
            if let Some(key) = this.sniffer.feed(&buf.filled()[before..])
                && this.held.is_none()
                && this.proxy.pg_keys.insert(key.clone(), this.target)
            {
                this.held = Some(key);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for KeyWatch<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(len: u32, code: u32) -> [u8; 8] {
        let mut m = [0u8; 8];
        m[..4].copy_from_slice(&len.to_be_bytes());
        m[4..].copy_from_slice(&code.to_be_bytes());
        m
    }

    #[test]
    fn the_openings_postgres_clients_send_are_told_apart() {
        assert_eq!(classify(&msg(8, SSL_REQUEST)), Opening::SslRequest);
        assert_eq!(classify(&msg(8, GSSENC_REQUEST)), Opening::GssEncRequest);
        assert_eq!(classify(&msg(16, CANCEL_REQUEST)), Opening::Cancel);
        // Protocol 3.0 and 3.2 startups, and a protocol 2 one.
        assert_eq!(classify(&msg(84, 196_608)), Opening::Startup);
        assert_eq!(classify(&msg(84, 196_610)), Opening::Startup);
        assert_eq!(classify(&msg(296, 131_072)), Opening::Startup);
        // A TLS 1.x ClientHello record.
        assert_eq!(
            classify(&[0x16, 3, 1, 0, 0xc8, 1, 0, 0]),
            Opening::DirectTls
        );
        // Lengths that do not fit their code, HTTP, an oversized startup.
        assert_eq!(classify(&msg(9, SSL_REQUEST)), Opening::Invalid);
        assert_eq!(classify(&msg(8, CANCEL_REQUEST)), Opening::Invalid);
        assert_eq!(classify(b"GET / HT"), Opening::Invalid);
        assert_eq!(classify(&msg(10_001, 196_608)), Opening::Invalid);
        assert_eq!(classify(&msg(8, 196_608)), Opening::Invalid);
    }

    fn backend(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn the_key_is_read_from_the_servers_first_messages_however_they_are_split() {
        let mut stream = backend(b'R', &0u32.to_be_bytes());
        stream.extend(backend(b'S', b"server_version\x0015.18\x00"));
        stream.extend(backend(b'K', &[0, 0, 0x30, 0x39, 9, 8, 7, 6]));
        stream.extend(backend(b'Z', b"I"));
        // A query's answer after ReadyForQuery is not looked at.
        stream.extend(backend(b'K', &[1; 8]));
        for split in [1, 2, 3, 5, 7, 64, stream.len()] {
            let mut s = KeySniffer::default();
            let mut keys = Vec::new();
            for piece in stream.chunks(split) {
                keys.extend(s.feed(piece));
            }
            assert_eq!(keys, [vec![0, 0, 0x30, 0x39, 9, 8, 7, 6]], "split {split}");
            assert!(s.is_done());
        }
        // Protocol 3.2's longer key.
        let mut s = KeySniffer::default();
        let mut body = vec![0, 0, 0, 1];
        body.extend([7u8; 32]);
        assert_eq!(s.feed(&backend(b'K', &body)), Some(body));
        // Not PostgreSQL: given up on.
        let mut s = KeySniffer::default();
        assert_eq!(s.feed(b"HTTP/1.1 400 Bad Request\r\n"), None);
        assert!(s.is_done());
        // An error before any key ends the watch.
        let mut s = KeySniffer::default();
        assert_eq!(s.feed(&backend(b'E', b"SFATAL\x00\x00")), None);
        assert!(s.is_done());
    }

    #[test]
    fn cancel_keys_are_bounded_and_never_taken_over() {
        let keys = CancelKeys::default();
        let to = |a: &str| CancelTarget {
            addr: a.parse().expect("addr"),
            proxy_proto: None,
        };
        let (a, b) = (to("[fdaa::2]:5432"), to("[fdaa::3]:5432"));
        assert!(keys.insert(vec![1; 8], a));
        assert!(!keys.insert(vec![1; 8], b), "a second holder of one key");
        assert_eq!(keys.get(&[1; 8]), Some(a));
        keys.remove(&[1; 8]);
        assert!(keys.is_empty());
        assert_eq!(classify(&msg(16, CANCEL_REQUEST)), Opening::Cancel);
        assert_eq!(classify(&msg(268, CANCEL_REQUEST)), Opening::Cancel);
        assert_eq!(classify(&msg(269, CANCEL_REQUEST)), Opening::Invalid);
    }

    #[tokio::test]
    async fn a_cancel_goes_to_the_keys_server_with_its_proxy_header() {
        let store: Arc<dyn hangar_store::Store> =
            Arc::new(hangar_store::SqliteStore::in_memory().expect("store"));
        let proxy = Proxy::new(store, crate::ProxyConfig::default());
        // The "server": a listener that keeps what it gets.
        let server = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let key = vec![0, 0, 0x30, 0x39, 1, 2, 3, 4];
        assert!(proxy.pg_keys.insert(
            key.clone(),
            CancelTarget {
                addr: server.local_addr().expect("addr"),
                proxy_proto: Some(crate::proxy_proto::Version::V1),
            },
        ));
        let mut msg = 16u32.to_be_bytes().to_vec();
        msg.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
        msg.extend_from_slice(&key);
        let (mut client, ours) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, &msg[8..])
            .await
            .expect("write");
        let head: [u8; 8] = msg[..8].try_into().expect("head");
        let peer: SocketAddr = "198.51.100.7:40000".parse().expect("addr");
        let local: SocketAddr = "203.0.113.1:5432".parse().expect("addr");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let sent = tokio::spawn({
            let proxy = Arc::clone(&proxy);
            async move { cancel(&proxy, ours, &head, Some((peer, local)), deadline).await }
        });
        let (mut conn, _) = server.accept().await.expect("accept");
        let mut got = Vec::new();
        conn.read_to_end(&mut got).await.expect("read");
        sent.await.expect("join");
        let text = String::from_utf8_lossy(&got);
        assert!(
            text.starts_with("PROXY TCP4 198.51.100.7 203.0.113.1 40000 5432\r\n"),
            "{text}"
        );
        assert!(got.ends_with(&msg));
    }

    #[test]
    fn the_refusal_is_a_well_formed_error_response() {
        let e = tls_required();
        assert_eq!(e[0], b'E');
        let len = u32::from_be_bytes([e[1], e[2], e[3], e[4]]) as usize;
        assert_eq!(len, e.len() - 1);
        assert_eq!(*e.last().expect("terminator"), 0);
        let fields: Vec<&[u8]> = e[5..e.len() - 1]
            .split(|b| *b == 0)
            .filter(|f| !f.is_empty())
            .collect();
        assert_eq!(fields[0], b"SFATAL");
        assert_eq!(fields[2], b"C28000");
        assert!(fields[3].starts_with(b"Mthis port accepts TLS"));
    }
}
