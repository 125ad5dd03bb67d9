//! Names that are not Hangar's go to the host's resolvers.
//!
//! The query is sent as the client sent it, with a fresh random id, from a fresh socket
//! connected to the upstream (so only that upstream's answer with that id is taken), to each
//! upstream in turn until one answers within the timeout; the answer goes back with the
//! client's id. A query that came over TCP is forwarded over TCP. At most `max_in_flight`
//! forwards run at once (the caller holds the permits); what finds no upstream gets SERVFAIL.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Upstream resolvers and how long each gets.
#[derive(Debug, Clone)]
pub struct Forwarder {
    /// The resolvers, asked in order.
    pub upstreams: Vec<SocketAddr>,
    /// How long one upstream gets to answer.
    pub timeout: Duration,
}

/// The `nameserver` lines of a resolv.conf (at most 3, as the C library reads; zone ids
/// dropped), on port 53.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        .filter_map(|a| a.split('%').next()?.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .take(3)
        .collect()
}

fn random_id() -> u16 {
    let mut b = [0u8; 2];
    if getrandom::fill(&mut b).is_err() {
        use std::sync::atomic::{AtomicU16, Ordering};
        static N: AtomicU16 = AtomicU16::new(0x5a5a);
        return N.fetch_add(0x9e37, Ordering::Relaxed);
    }
    u16::from_be_bytes(b)
}

impl Forwarder {
    /// The upstreams' answer to `query` (with the query's id), or `None` when none answered.
    pub async fn forward(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        if query.len() < 12 {
            return None;
        }
        let client_id = [query[0], query[1]];
        let mut q = query.to_vec();
        for up in &self.upstreams {
            let id = random_id().to_be_bytes();
            q[0] = id[0];
            q[1] = id[1];
            let got = tokio::time::timeout(self.timeout, async {
                if tcp {
                    ask_tcp(*up, &q).await
                } else {
                    ask_udp(*up, &q).await
                }
            })
            .await;
            if let Ok(Some(mut answer)) = got
                && answer.len() >= 12
                && answer[..2] == id
                && answer[2] & 0x80 != 0
            {
                answer[0] = client_id[0];
                answer[1] = client_id[1];
                return Some(answer);
            }
        }
        None
    }
}

async fn ask_udp(up: SocketAddr, q: &[u8]) -> Option<Vec<u8>> {
    let local: SocketAddr = if up.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = UdpSocket::bind(local).await.ok()?;
    s.connect(up).await.ok()?;
    s.send(q).await.ok()?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = s.recv(&mut buf).await.ok()?;
        // Anything that is not the answer (wrong id) is ignored; the timeout bounds the wait.
        if n >= 12 && buf[..2] == q[..2] {
            buf.truncate(n);
            return Some(buf);
        }
    }
}

async fn ask_tcp(up: SocketAddr, q: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(up).await.ok()?;
    let len = u16::try_from(q.len()).ok()?;
    let mut out = Vec::with_capacity(q.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(q);
    s.write_all(&out).await.ok()?;
    let n = s.read_u16().await.ok()?;
    let mut buf = vec![0u8; usize::from(n)];
    s.read_exact(&mut buf).await.ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.1\nnameserver fe80::1%eth0\n\
                    nameserver ::1\nnameserver 10.0.0.4\noptions ndots:2\nnameserver bad\n";
        let got = parse_resolv_conf(text);
        assert_eq!(
            got,
            vec![
                "10.0.0.1:53".parse::<SocketAddr>().expect("a"),
                "[fe80::1]:53".parse().expect("b"),
                "[::1]:53".parse().expect("c"),
            ]
        );
        assert!(parse_resolv_conf("").is_empty());
    }
}
