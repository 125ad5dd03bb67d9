//! The proxy's parsers of untrusted input: `Host` → app name, the `fly-replay` header and its
//! JSON form (written by apps), the routing request headers, the PROXY protocol header (sent
//! by a load balancer in front), machines' response heads and chunked bodies (read by the
//! HTTP/1.1 client, `hangar_proxy::upstream`), and clients' request heads (the HTTP/1.1 fast
//! path, `hangar_proxy::h1`), `fly-replay` caching instructions
//! (`hangar_proxy::replay_cache`), a `pg_tls` client's first message and a server's first
//! messages (`hangar_proxy::pg_tls`) and queries to the ACME DNS zone's server
//! (`hangar_proxy::acme_dns`, on a public port 53). None may panic; what they accept must be
//! well-formed.
#![no_main]

use hangar_proxy::http::app_from_host;
use hangar_proxy::replay::Replay;
use hangar_proxy::replay_cache::{self, Directive};
use libfuzzer_sys::fuzz_target;

/// A cache directive taken from untrusted bytes is well-formed: a prefix that covers itself
/// and is no path's tail of slashes, a host without a port, a bounded lifetime.
fn cache_directive(d: &Directive) {
    if let Directive::Store {
        host, prefix, ttl, ..
    } = d
    {
        assert!(prefix.is_empty() || prefix.starts_with('/'));
        assert!(!prefix.ends_with('/'));
        assert!(replay_cache::covers(prefix, &format!("{prefix}/x")));
        assert!(host.as_ref().is_none_or(|h| !h.is_empty() && !h.contains(':')));
        assert!((replay_cache::MIN_TTL..=replay_cache::MAX_TTL).contains(ttl));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 9 {
        7 => {
            if let Ok(head) = <[u8; 8]>::try_from(rest.get(..8).unwrap_or_default()) {
                let _ = hangar_proxy::pg_tls::classify(&head);
            }
            // The same bytes as a (tenant-written) server's first messages, in pieces.
            let mut sniffer = hangar_proxy::pg_tls::KeySniffer::default();
            for piece in rest.chunks(usize::from(which >> 4).max(1)) {
                if let Some(key) = sniffer.feed(piece) {
                    assert!((8..=260).contains(&key.len()));
                }
            }
        }
        8 => {
            // A DNS query (UDP unless the top bit says TCP): any answer decodes and fits.
            let tcp = which & 0x80 != 0;
            let challenges = hangar_proxy::acme::Challenges::default();
            challenges.put_dns01("x.acme.hangar.test", "value");
            let zone = hangar_proxy::acme_dns::Zone::new(
                "acme.hangar.test",
                std::net::SocketAddr::from(([192, 0, 2, 53], 53)),
            );
            if let Some((bytes, _)) = hangar_proxy::acme_dns::answer(rest, &zone, &challenges, tcp)
            {
                assert!(tcp || bytes.len() <= 1232);
                assert!(hangar_dns::hickory_proto::op::Message::from_vec(&bytes).is_ok());
            }
        }
        0 => {
            if let Ok(s) = std::str::from_utf8(rest)
                && let Some(app) = app_from_host(s, "localhost")
            {
                assert!(!app.is_empty() && app.len() <= 63);
                assert!(app
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            }
        }
        1 => {
            if let Ok(r) = Replay::from_header(rest) {
                for id in r.instance.iter().chain(r.app.iter()) {
                    assert!(!id.is_empty() && id.len() <= 64);
                }
                assert!(r.state.as_ref().is_none_or(|s| s.len() <= 1024));
            }
            // The same bytes as a `fly-replay-cache` pattern.
            if let Ok(Some(d)) = replay_cache::from_headers(Some(rest), Some(b"60"), None) {
                cache_directive(&d);
            }
        }
        6 => {
            // A client's request head (the HTTP/1.1 fast path): taken out only when it is
            // served there; otherwise every byte stays for hyper's server.
            let mut buf = bytes::BytesMut::from(rest);
            match hangar_proxy::h1::parse(&mut buf) {
                hangar_proxy::h1::Head::Request { req, body, .. } => {
                    assert!(buf.len() < rest.len() && rest.ends_with(&buf));
                    // A body only by one small length, left in the buffer.
                    assert!(body <= hangar_proxy::h1::FAST_BODY);
                    assert!(req.headers().get_all("content-length").iter().count() <= 1);
                    for framing in ["transfer-encoding", "upgrade", "expect", "te"] {
                        assert!(!req.headers().contains_key(framing));
                    }
                    assert!(req.uri().path().starts_with('/'));
                }
                _ => assert_eq!(&buf[..], rest),
            }
        }
        4 => {
            // A machine's response head: consumed only when complete, never past the input.
            let mut buf = bytes::BytesMut::from(rest);
            let before = buf.len();
            if let Ok(Some(p)) = hangar_proxy::upstream::parse_head(&mut buf, which & 0x80 != 0)
            {
                assert!(buf.len() < before);
                if let hangar_proxy::upstream::Parsed::Final(parts, _, _) = p {
                    assert!(parts.status.as_u16() >= 200);
                }
            }
        }
        5 => {
            // A chunked body fed in two pieces: what comes out is never more than went in.
            let split = usize::from(which >> 3).min(rest.len());
            let mut dec = hangar_proxy::upstream::Chunked::default();
            let mut buf = bytes::BytesMut::from(&rest[..split]);
            let mut out = 0usize;
            let mut ok = true;
            for more in [&rest[split..], &[][..]] {
                buf.extend_from_slice(more);
                loop {
                    match dec.decode(&mut buf) {
                        Ok(Some(d)) => out += d.len(),
                        Ok(None) => break,
                        Err(_) => {
                            ok = false;
                            break;
                        }
                    }
                }
                if !ok {
                    break;
                }
            }
            assert!(out <= rest.len());
            // Trailers only once done; never a framing field among them.
            if let Some(t) = dec.take_trailers() {
                assert!(ok && dec.is_done());
                assert!(!t.contains_key("content-length") && !t.contains_key("transfer-encoding"));
            }
        }
        3 => {
            if let Ok(Some((_, n))) = hangar_proxy::proxy_proto::parse(rest) {
                assert!(n <= rest.len());
                assert!(n <= hangar_proxy::proxy_proto::V2_MAX);
            }
        }
        _ => {
            if let Ok(r) = Replay::from_json(rest) {
                for (k, v) in &r.transform.set_headers {
                    assert!(!k.is_empty());
                    assert!(!v.contains(['\r', '\n', '\0']));
                }
                if let Some(p) = &r.transform.path {
                    assert!(p.starts_with('/'));
                }
                if let Some(d) = &r.cache {
                    cache_directive(d);
                }
            }
        }
    }
});
