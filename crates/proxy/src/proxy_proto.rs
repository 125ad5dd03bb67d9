//! The `proxy_proto` handler: the PROXY protocol header (v1 text or v2 binary, per
//! `proxy_proto_options.version`) written to the machine before the client's bytes, so the
//! app learns the client's address on a raw TCP service.

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
}
