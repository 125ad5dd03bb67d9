//! The PROXY protocol. Written: the `proxy_proto` handler sends the header (v1 text or v2
//! binary, per `proxy_proto_options.version`) to the machine before the client's bytes, so the
//! app learns the client's address on a raw TCP service. Read ([`parse`]): a public listener
//! behind a load balancer of the operator's (`--proxy-protocol-from`) takes the client's
//! address from the header the balancer sends first.

use std::net::SocketAddr;

/// PROXY protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `PROXY TCP4 …\r\n`.
    V1,
    /// The binary form.
    V2,
}

impl Version {
    /// From `proxy_proto_options.version` (`v1` default, `v2`).
    pub fn parse(s: Option<&str>) -> Version {
        match s {
            Some("v2") => Version::V2,
            _ => Version::V1,
        }
    }
}

const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];

/// The header for a connection from `src` to `dst`.
pub fn header(v: Version, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    // Mixed families (an IPv4 client on an IPv6 listener) are sent as IPv6.
    let (src, dst) = match (src, dst) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => (SocketAddr::V4(s), SocketAddr::V4(d)),
        (s, d) => (
            SocketAddr::new(s.ip().to_canonical().to_ipv6(), s.port()),
            SocketAddr::new(d.ip().to_canonical().to_ipv6(), d.port()),
        ),
    };
    match v {
        Version::V1 => {
            let fam = if src.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {fam} {} {} {} {}\r\n",
                src.ip(),
                dst.ip(),
                src.port(),
                dst.port()
            )
            .into_bytes()
        }
        Version::V2 => {
            let mut out = V2_SIGNATURE.to_vec();
            out.push(0x21); // version 2, PROXY command
            match (src, dst) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                    out.push(0x11); // TCP over IPv4
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.ip().octets());
                    out.extend_from_slice(&d.ip().octets());
                    out.extend_from_slice(&s.port().to_be_bytes());
                    out.extend_from_slice(&d.port().to_be_bytes());
                }
                (s, d) => {
                    out.push(0x21); // TCP over IPv6
                    out.extend_from_slice(&36u16.to_be_bytes());
                    for a in [s.ip(), d.ip()] {
                        let v6 = match a {
                            std::net::IpAddr::V6(v) => v,
                            std::net::IpAddr::V4(v) => v.to_ipv6_mapped(),
                        };
                        out.extend_from_slice(&v6.octets());
                    }
                    out.extend_from_slice(&s.port().to_be_bytes());
                    out.extend_from_slice(&d.port().to_be_bytes());
                }
            }
            out
        }
    }
}

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A proxied TCP connection from `src` to `dst`.
    Proxied {
        /// The client.
        src: SocketAddr,
        /// Where it connected.
        dst: SocketAddr,
    },
    /// The balancer's own connection (v2 `LOCAL`, v1 `UNKNOWN`, or a family other than TCP
    /// over IPv4/IPv6): the connection's own addresses stand.
    Local,
}

/// Why a PROXY header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not a PROXY header at all.
    #[error("no PROXY protocol header")]
    Missing,
    /// Malformed.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

/// Longest v1 header (the spec's 107 bytes, CRLF included).
pub const V1_MAX: usize = 107;
/// Longest v2 header accepted (16 + addresses + TLVs).
pub const V2_MAX: usize = 16 + 2048;

/// Parses the PROXY header at the start of `buf`: `Ok(None)` while more bytes are needed,
/// `Ok(Some((what, length)))` once complete (`length`: the header's bytes, the client's data
/// follows), an error for anything else. Never reads past [`V1_MAX`] / [`V2_MAX`].
pub fn parse(buf: &[u8]) -> Result<Option<(Parsed, usize)>, ParseError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        return if n < V2_SIGNATURE.len() {
            Ok(None)
        } else {
            parse_v2(buf)
        };
    }
    let n = buf.len().min(6);
    if buf[..n] != b"PROXY "[..n] {
        return Err(ParseError::Missing);
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Parsed, usize)>, ParseError> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ParseError::Malformed("v1 header longer than 107 bytes"))
        } else {
            Ok(None)
        };
    };
    if end + 2 > V1_MAX {
        return Err(ParseError::Malformed("v1 header longer than 107 bytes"));
    }
    let line =
        std::str::from_utf8(&buf[..end]).map_err(|_| ParseError::Malformed("v1 not ASCII"))?;
    let words: Vec<&str> = line.split(' ').collect();
    let parsed = match words[..] {
        ["PROXY", "UNKNOWN", ..] => Parsed::Local,
        ["PROXY", fam @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |s: &str| -> Result<std::net::IpAddr, ParseError> {
                let a: std::net::IpAddr =
                    s.parse().map_err(|_| ParseError::Malformed("v1 address"))?;
                if a.is_ipv4() != (fam == "TCP4") {
                    return Err(ParseError::Malformed("v1 address of the wrong family"));
                }
                Ok(a)
            };
            let port = |s: &str| -> Result<u16, ParseError> {
                // Decimal without leading zeros or signs, as the spec writes them.
                if s.is_empty() || (s.len() > 1 && s.starts_with('0')) {
                    return Err(ParseError::Malformed("v1 port"));
                }
                if !s.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ParseError::Malformed("v1 port"));
                }
                s.parse().map_err(|_| ParseError::Malformed("v1 port"))
            };
            Parsed::Proxied {
                src: SocketAddr::new(ip(src)?, port(sport)?),
                dst: SocketAddr::new(ip(dst)?, port(dport)?),
            }
        }
        _ => return Err(ParseError::Malformed("v1 fields")),
    };
    Ok(Some((parsed, end + 2)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Parsed, usize)>, ParseError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ParseError::Malformed("v2 version"));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if 16 + len > V2_MAX {
        return Err(ParseError::Malformed("v2 header too long"));
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let body = &buf[16..16 + len];
    let total = 16 + len;
    match ver_cmd & 0x0f {
        0 => return Ok(Some((Parsed::Local, total))),
        1 => {}
        _ => return Err(ParseError::Malformed("v2 command")),
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let parsed = match buf[13] {
        0x11 => {
            if body.len() < 12 {
                return Err(ParseError::Malformed("v2 IPv4 addresses truncated"));
            }
            let a = |b: &[u8]| std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Parsed::Proxied {
                src: SocketAddr::new(a(&body[0..4]).into(), port(&body[8..10])),
                dst: SocketAddr::new(a(&body[4..8]).into(), port(&body[10..12])),
            }
        }
        0x21 => {
            if body.len() < 36 {
                return Err(ParseError::Malformed("v2 IPv6 addresses truncated"));
            }
            let a = |b: &[u8]| {
                let mut o = [0u8; 16];
                o.copy_from_slice(b);
                std::net::Ipv6Addr::from(o)
            };
            Parsed::Proxied {
                src: SocketAddr::new(a(&body[0..16]).into(), port(&body[32..34])),
                dst: SocketAddr::new(a(&body[16..32]).into(), port(&body[34..36])),
            }
        }
        // UNSPEC, UDP, unix sockets: nothing for a TCP proxy to use.
        _ => Parsed::Local,
    };
    Ok(Some((parsed, total)))
}

/// A client connection with bytes already read from it (after a PROXY header) served first.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, whose next bytes are `prefix`.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }

    /// Puts `bytes`, just read from it, back: they are read again first.
    pub fn unread(&mut self, bytes: &[u8]) {
        let mut prefix = Vec::with_capacity(bytes.len() + self.prefix.len() - self.pos);
        prefix.extend_from_slice(bytes);
        prefix.extend_from_slice(&self.prefix[self.pos..]);
        self.prefix = prefix;
        self.pos = 0;
    }

    /// The stream after the prefix.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.pos);
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Reads the PROXY header a trusted balancer sends first: what it says, and the client's bytes
/// read past it. Bounded by [`V2_MAX`] bytes (and by the caller's timeout).
pub async fn read_header<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(Parsed, Vec<u8>), ParseError> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| ParseError::Malformed("connection failed before the header"))?;
        if n == 0 {
            return Err(ParseError::Malformed("connection closed before the header"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some((parsed, len)) = parse(&buf)? {
            return Ok((parsed, buf.split_off(len)));
        }
        if buf.len() >= V2_MAX {
            return Err(ParseError::Malformed("header too long"));
        }
    }
}

/// Networks a PROXY header is expected from (the operator's load balancers), as `IP/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    len: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = s.split_once('/').unwrap_or((s, ""));
        let addr: std::net::IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?}: expected IP/LEN (e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = if l.is_empty() {
            max
        } else {
            l.parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?
        };
        Ok(Self { addr, len })
    }
}

impl Cidr {
    /// Whether `ip` is in this network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let bits = |a: std::net::IpAddr| -> u128 {
            match a.to_canonical() {
                std::net::IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
                std::net::IpAddr::V6(v) => u128::from(v),
            }
        };
        let (a, b) = (self.addr.to_canonical(), ip.to_canonical());
        if a.is_ipv4() != b.is_ipv4() {
            return false;
        }
        let len = self.len;
        if len == 0 {
            return true;
        }
        let mask = u128::MAX << (128 - u32::from(len));
        (bits(a) & mask) == (bits(b) & mask)
    }
}

trait ToIpv6 {
    fn to_ipv6(self) -> std::net::IpAddr;
}

impl ToIpv6 for std::net::IpAddr {
    fn to_ipv6(self) -> std::net::IpAddr {
        match self {
            std::net::IpAddr::V4(v) => std::net::IpAddr::V6(v.to_ipv6_mapped()),
            v6 => v6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unread_bytes_come_back_before_what_the_prefix_still_held() {
        use tokio::io::AsyncReadExt as _;
        // After a PROXY header: "abcdef" read from the socket with it, then "ghi" on it.
        let (mut tx, rx) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"ghi")
            .await
            .expect("write");
        drop(tx);
        let mut p = Prefixed::new(b"abcdef".to_vec(), rx);
        let mut head = [0u8; 4];
        p.read_exact(&mut head).await.expect("read");
        assert_eq!(&head, b"abcd");
        p.unread(&head);
        let mut all = Vec::new();
        p.read_to_end(&mut all).await.expect("read");
        assert_eq!(all, b"abcdefghi");
    }

    #[test]
    fn v1_and_v2() {
        let s: SocketAddr = "192.0.2.1:5555".parse().expect("addr");
        let d: SocketAddr = "198.51.100.2:443".parse().expect("addr");
        assert_eq!(
            header(Version::V1, s, d),
            b"PROXY TCP4 192.0.2.1 198.51.100.2 5555 443\r\n"
        );
        let v2 = header(Version::V2, s, d);
        assert_eq!(&v2[..12], &V2_SIGNATURE);
        assert_eq!(&v2[12..16], &[0x21, 0x11, 0, 12]);
        assert_eq!(&v2[16..20], &[192, 0, 2, 1]);
        assert_eq!(&v2[24..26], &5555u16.to_be_bytes());
        let s6: SocketAddr = "[2001:db8::1]:1".parse().expect("addr");
        assert_eq!(
            header(Version::V1, s6, d),
            b"PROXY TCP6 2001:db8::1 ::ffff:198.51.100.2 1 443\r\n"
        );
        let v2 = header(Version::V2, s6, d);
        assert_eq!(v2.len(), 16 + 36);
        assert_eq!(Version::parse(Some("v2")), Version::V2);
        assert_eq!(Version::parse(None), Version::V1);
    }

    #[test]
    fn what_is_written_parses_back_in_any_split() {
        let pairs: [(&str, &str); 3] = [
            ("192.0.2.1:5555", "198.51.100.2:443"),
            ("[2001:db8::1]:1", "[2001:db8::2]:65535"),
            ("192.0.2.1:0", "[2001:db8::2]:80"),
        ];
        for (s, d) in pairs {
            let (s, d): (SocketAddr, SocketAddr) = (s.parse().expect("s"), d.parse().expect("d"));
            for v in [Version::V1, Version::V2] {
                let mut h = header(v, s, d);
                let len = h.len();
                h.extend_from_slice(b"GET / HTTP/1.1\r\n");
                for cut in 0..len {
                    assert_eq!(parse(&h[..cut]), Ok(None), "{v:?} cut at {cut}");
                }
                let (p, n) = parse(&h).expect("parses").expect("complete");
                assert_eq!(n, len);
                let Parsed::Proxied { src, dst } = p else {
                    panic!("{p:?}")
                };
                assert_eq!(src.port(), s.port());
                assert_eq!(dst.port(), d.port());
                assert_eq!(src.ip().to_canonical(), s.ip().to_canonical());
                assert_eq!(dst.ip().to_canonical(), d.ip().to_canonical());
            }
        }
    }

    #[test]
    fn cidrs() {
        let c: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(c.contains("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("11.0.0.1".parse().expect("ip")));
        assert!(!c.contains("::1".parse().expect("ip")));
        let c: Cidr = "::1".parse().expect("cidr");
        assert!(c.contains("::1".parse().expect("ip")));
        assert!(!c.contains("::2".parse().expect("ip")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains("192.0.2.1".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "nope", "::/129", "1.2.3.4/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_header_then_the_clients_bytes() {
        use tokio::io::AsyncReadExt;
        let mut input = header(
            Version::V2,
            "192.0.2.1:5555".parse().expect("s"),
            "198.51.100.2:443".parse().expect("d"),
        );
        input.extend_from_slice(b"hello");
        let mut r = &input[..];
        let (p, rest) = read_header(&mut r).await.expect("header");
        assert!(matches!(p, Parsed::Proxied { .. }));
        let mut s = Prefixed::new(rest, r);
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        assert_eq!(out, "hello");
        let mut none = &b"GET / HTTP/1.1\r\n"[..];
        assert_eq!(read_header(&mut none).await, Err(ParseError::Missing));
    }

    #[test]
    fn local_unknown_and_bad_headers() {
        assert_eq!(parse(b"PROXY UNKNOWN\r\nx"), Ok(Some((Parsed::Local, 15))));
        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local), Ok(Some((Parsed::Local, 16))));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Err(ParseError::Missing));
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'x'; 120]].concat();
        assert!(matches!(parse(&long), Err(ParseError::Malformed(_))));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(parse(&huge), Err(ParseError::Malformed(_))));
        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(matches!(parse(&short), Err(ParseError::Malformed(_))));
    }
}
