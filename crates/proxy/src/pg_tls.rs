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
//! - `CancelRequest`: passed to the port's app as it came (libpq before 17 sends its cancels
//!   without TLS; a cancel carries no data but the backend's key);
//! - a plaintext `StartupMessage` (`sslmode=disable`): refused with a PostgreSQL
//!   `ErrorResponse` (FATAL, SQLSTATE 28000) saying TLS is required, which `psql` prints;
//! - anything else: closed.
//!
//! Failures count as TLS handshake errors (`PT04`, `PT08` on timeout) of the port.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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

/// A client's first message, from its first 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// `SSLRequest`.
    SslRequest,
    /// `GSSENCRequest`.
    GssEncRequest,
    /// A TLS handshake record: TLS without an `SSLRequest`.
    DirectTls,
    /// `CancelRequest` (16 bytes in all).
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
        (16, CANCEL_REQUEST) => Opening::Cancel,
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
        let opening = classify(&head);
        match opening {
            Opening::SslRequest => {
                if stream.write_all(b"S").await.is_err() {
                    return;
                }
                let then = Then::Postgres { direct: false };
                return crate::tls::serve(proxy, stream, peer, local, port, then).await;
            }
            Opening::DirectTls => {
                stream.unread(&head);
                let then = Then::Postgres { direct: true };
                return crate::tls::serve(proxy, stream, peer, local, port, then).await;
            }
            Opening::GssEncRequest => {
                if stream.write_all(b"N").await.is_err() {
                    return;
                }
            }
            Opening::Cancel => {
                stream.unread(&head);
                let addrs = local.map(|local| (peer, local));
                return crate::tcp::serve(proxy, stream, port, None, addrs).await;
            }
            Opening::Startup => {
                let _ = tokio::time::timeout_at(deadline, stream.write_all(&tls_required())).await;
                let _ = tokio::time::timeout_at(deadline, stream.shutdown()).await;
                return refused(&proxy, "PT04");
            }
            Opening::Invalid => return refused(&proxy, "PT04"),
        }
    }
    refused(&proxy, "PT04")
}

fn refused(proxy: &Proxy, code: &str) {
    proxy.metrics.tls_handshake_error("unknown");
    proxy.metrics.error("", code);
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
