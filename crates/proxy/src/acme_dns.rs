//! The ACME DNS zone's server, for DNS-01 (the only way to validate a wildcard name).
//!
//! The operator delegates a zone to the host (`acme.hangar.example.net NS` this host) and
//! runs hangard with `--acme-dns-zone`; each custom hostname's user points
//! `_acme-challenge.<hostname>` at its name in the zone (a CNAME, shown by the certificates
//! API as `dns_requirements.acme_challenge.target`). The CA's resolver follows the CNAME
//! here, and this server answers, authoritatively, only what the ACME manager has out:
//!
//! - TXT at a name with challenges out: one record per value (TTL 0: a retried validation
//!   must see the new value);
//! - SOA and NS at the apex: this host is `ns.<zone>`, whose A or AAAA is the address the
//!   server listens on (delegate with `<zone> NS ns.<zone>` and that address as glue);
//! - other types at an existing name: no data, the SOA in the authority section;
//! - other names in the zone: NXDOMAIN with the SOA;
//! - names outside the zone: REFUSED (it is no resolver); unreadable queries: FORMERR;
//!   responses and other opcodes are never answered.
//!
//! UDP answers fit in 512 bytes or the client's EDNS size, else are truncated (TC); they are
//! about the size of the query plus a few TXT values of 43 bytes, so the server is a poor
//! amplifier, and a rate-limited one: each client prefix (IPv4 /24, IPv6 /56) gets 20 UDP
//! answers a second after a burst of 40. Past that, every second answer is a truncated one
//! (header and question, no bigger than the query: a real resolver retries over TCP) and
//! the rest are dropped, so forged sources can not aim the server at a victim. At most
//! 16,384 prefixes are tracked; when more send at once, new ones get truncated answers
//! only. TCP connections are bounded: 64 at once, 5 s each, up to 16 queries each.
//! Counted by `hangar_acme_dns_queries_total{rcode}` and
//! `hangar_acme_dns_rate_limited_total{action}`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::acme::Challenges;

/// TCP connections served at once.
const MAX_TCP: usize = 64;
/// A TCP connection's time for its queries and answers.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// Queries answered on one TCP connection.
const TCP_QUERIES: usize = 16;
/// The largest UDP answer sent to an EDNS client.
const MAX_UDP_PAYLOAD: u16 = 1232;
/// TTL of the apex records.
const APEX_TTL: u32 = 300;
/// UDP answers a second to one client prefix, once its burst is spent.
const RRL_RATE: f64 = 20.0;
/// UDP answers one client prefix may have at once.
const RRL_BURST: f64 = 40.0;
/// Client prefixes tracked at once.
const RRL_PREFIXES: usize = 16_384;

/// The zone a server answers.
#[derive(Debug, Clone)]
pub struct Zone {
    /// Lowercase, no trailing dot.
    pub name: String,
    /// The address of `ns.<zone>` (the server's own, when it listens on one).
    pub ns_addr: Option<IpAddr>,
}

impl Zone {
    /// `zone` (any case, maybe a trailing dot), served at `listen`.
    pub fn new(zone: &str, listen: SocketAddr) -> Self {
        let ip = listen.ip();
        Self {
            name: zone.trim_end_matches('.').to_ascii_lowercase(),
            ns_addr: (!ip.is_unspecified()).then_some(ip),
        }
    }
}

/// The answer to one query, or `None` when none is due (a response, or too short to
/// answer).
pub fn answer(
    query: &[u8],
    zone: &Zone,
    challenges: &Challenges,
    tcp: bool,
) -> Option<(Vec<u8>, ResponseCode)> {
    respond(query, zone, challenges, tcp, false)
}

/// Whether a datagram is a query that may get an answer (not a response, not too short).
fn answerable(query: &[u8]) -> bool {
    query.len() >= 12 && query[2] & 0x80 == 0
}

/// [`answer`]; `slip`: the header and question alone, with TC set.
fn respond(
    query: &[u8],
    zone: &Zone,
    challenges: &Challenges,
    tcp: bool,
    slip: bool,
) -> Option<(Vec<u8>, ResponseCode)> {
    if !answerable(query) {
        return None;
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    let opcode = OpCode::from_u8((query[2] >> 3) & 0x0f);
    let msg = match Message::from_vec(query) {
        Ok(m) if m.metadata.message_type == MessageType::Query => m,
        Ok(_) => return None,
        Err(_) => return error(id, opcode, ResponseCode::FormErr),
    };
    if msg.metadata.op_code != OpCode::Query {
        return error(id, msg.metadata.op_code, ResponseCode::NotImp);
    }
    if msg.queries.len() != 1 {
        return error(id, opcode, ResponseCode::FormErr);
    }
    let q = &msg.queries[0];
    let mut resp = Message::response(id, OpCode::Query);
    resp.metadata.recursion_desired = msg.metadata.recursion_desired;
    resp.metadata.authoritative = true;
    resp.add_query(q.clone());
    let limit = if slip {
        0
    } else if tcp {
        usize::from(u16::MAX)
    } else {
        match &msg.edns {
            Some(e) => usize::from(e.max_payload().clamp(512, MAX_UDP_PAYLOAD)),
            None => 512,
        }
    };
    if msg.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(MAX_UDP_PAYLOAD);
        resp.set_edns(e);
    }
    let name = q.name().to_ascii().to_ascii_lowercase();
    let name = name.trim_end_matches('.');
    let (ns_addr, zone) = (zone.ns_addr, zone.name.as_str());
    let in_zone = name == zone || name.ends_with(&format!(".{zone}"));
    if !in_zone || q.query_class() != DNSClass::IN {
        resp.metadata.authoritative = false;
        resp.metadata.response_code = ResponseCode::Refused;
        return finish(resp, limit);
    }
    let qtype = q.query_type();
    let soa = soa(zone);
    if name == zone {
        match qtype {
            RecordType::SOA => resp.add_answer(soa),
            RecordType::NS => resp.add_answer(ns(zone)),
            _ => resp.add_authority(soa),
        };
        return finish(resp, limit);
    }
    if name == format!("ns.{zone}") && ns_addr.is_some() {
        match (qtype, ns_addr) {
            (RecordType::A, Some(IpAddr::V4(a))) => resp.add_answer(Record::from_rdata(
                q.name().clone(),
                APEX_TTL,
                RData::A(A(a)),
            )),
            (RecordType::AAAA, Some(IpAddr::V6(a))) => resp.add_answer(Record::from_rdata(
                q.name().clone(),
                APEX_TTL,
                RData::AAAA(AAAA(a)),
            )),
            _ => resp.add_authority(soa),
        };
        return finish(resp, limit);
    }
    let values = challenges.dns01(name);
    if values.is_empty() {
        resp.metadata.response_code = ResponseCode::NXDomain;
        resp.add_authority(soa);
    } else if matches!(qtype, RecordType::TXT | RecordType::ANY) {
        for v in values {
            resp.add_answer(Record::from_rdata(
                q.name().clone(),
                0,
                RData::TXT(TXT::new(vec![v])),
            ));
        }
    } else {
        resp.add_authority(soa);
    }
    finish(resp, limit)
}

fn name(s: &str) -> Name {
    Name::from_ascii(format!("{s}.")).unwrap_or_else(|_| Name::root())
}

fn soa(zone: &str) -> Record {
    Record::from_rdata(
        name(zone),
        APEX_TTL,
        RData::SOA(SOA::new(
            name(&format!("ns.{zone}")),
            name(&format!("hostmaster.{zone}")),
            1,
            3600,
            600,
            86_400,
            0,
        )),
    )
}

fn ns(zone: &str) -> Record {
    Record::from_rdata(
        name(zone),
        APEX_TTL,
        RData::NS(NS(name(&format!("ns.{zone}")))),
    )
}

fn error(id: u16, opcode: OpCode, rcode: ResponseCode) -> Option<(Vec<u8>, ResponseCode)> {
    Message::error_msg(id, opcode, rcode)
        .to_vec()
        .ok()
        .map(|b| (b, rcode))
}

/// Encodes `resp`; over `limit`, the header and question alone with TC set.
fn finish(resp: Message, limit: usize) -> Option<(Vec<u8>, ResponseCode)> {
    let rcode = resp.metadata.response_code;
    let id = resp.metadata.id;
    match resp.to_vec() {
        Ok(b) if b.len() <= limit => Some((b, rcode)),
        Ok(_) => resp.truncate().to_vec().ok().map(|b| (b, rcode)),
        Err(_) => error(id, OpCode::Query, ResponseCode::ServFail),
    }
}

/// Binds the zone's UDP and TCP sockets at `listen` (TCP on the port UDP got, when `listen`
/// asks for port 0).
pub(crate) async fn bind(
    listen: SocketAddr,
) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let udp = tokio::net::UdpSocket::bind(listen).await?;
    let tcp = tokio::net::TcpListener::bind(udp.local_addr()?).await?;
    Ok((udp, tcp))
}

/// What became of a query, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// Answered, with this code.
    Answered(ResponseCode),
    /// Over its prefix's rate: answered truncated (TC, no records).
    Slipped,
    /// Over its prefix's rate: not answered.
    Dropped,
}

/// Serves the zone on `udp` and `tcp` until `shutdown` resolves; `count` is told what
/// became of each query.
pub(crate) async fn serve(
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    zone: Zone,
    challenges: Arc<Challenges>,
    count: impl Fn(Counted) + Clone + Send + 'static,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
    let mut conns = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 4096];
    let mut limit = RateLimit::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            r = udp.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                let query = &buf[..n];
                if !answerable(query) {
                    continue;
                }
                let slip = match limit.check(from.ip(), Instant::now()) {
                    Verdict::Answer => false,
                    Verdict::Slip => true,
                    Verdict::Drop => {
                        count(Counted::Dropped);
                        continue;
                    }
                };
                if let Some((bytes, rcode)) = respond(query, &zone, &challenges, false, slip) {
                    count(if slip { Counted::Slipped } else { Counted::Answered(rcode) });
                    let _ = udp.send_to(&bytes, from).await;
                }
            }
            r = tcp.accept() => {
                let Ok((stream, _)) = r else {
                    // Out of descriptors, say: do not spin on it.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                // Over the bound, the connection is closed at once.
                let Ok(permit) = slots.clone().try_acquire_owned() else { continue };
                let (zone, challenges, count) = (zone.clone(), challenges.clone(), count.clone());
                conns.spawn(async move {
                    let _permit = permit;
                    let _ = tokio::time::timeout(
                        TCP_TIMEOUT,
                        serve_tcp(stream, &zone, &challenges, count),
                    )
                    .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    conns.abort_all();
}

/// Queries one after another on one connection (RFC 7766), up to [`TCP_QUERIES`].
async fn serve_tcp(
    mut stream: tokio::net::TcpStream,
    zone: &Zone,
    challenges: &Challenges,
    count: impl Fn(Counted),
) -> std::io::Result<()> {
    for _ in 0..TCP_QUERIES {
        let len = usize::from(stream.read_u16().await?);
        let mut query = vec![0u8; len];
        stream.read_exact(&mut query).await?;
        let Some((bytes, rcode)) = answer(&query, zone, challenges, true) else {
            return Ok(());
        };
        count(Counted::Answered(rcode));
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(&bytes[..usize::from(len)]).await?;
    }
    Ok(())
}

/// What to do with a UDP query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Answer,
    /// A truncated answer.
    Slip,
    Drop,
}

/// Response-rate limiting of UDP answers: a token bucket per client prefix.
#[derive(Debug, Default)]
struct RateLimit {
    buckets: HashMap<IpAddr, Bucket>,
    /// When full buckets were last forgotten (at most once a second, when the table is full).
    pruned: Option<Instant>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    /// Queries over the rate so far: every other one slips.
    over: u64,
}

impl Bucket {
    fn tokens_at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * RRL_RATE).min(RRL_BURST)
    }
}

/// The prefix a client's answers are counted under: IPv4 /24, IPv6 /56 (what one site
/// usually has).
fn prefix(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(a.to_bits() & !0xff)),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => prefix(IpAddr::V4(v4)),
            None => IpAddr::V6(Ipv6Addr::from(a.to_bits() & !((1u128 << 72) - 1))),
        },
    }
}

impl RateLimit {
    fn check(&mut self, from: IpAddr, now: Instant) -> Verdict {
        let key = prefix(from);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= RRL_PREFIXES {
            if self
                .pruned
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
            {
                self.pruned = Some(now);
                self.buckets.retain(|_, b| b.tokens_at(now) < RRL_BURST);
            }
            if self.buckets.len() >= RRL_PREFIXES {
                // Many sources at once (forged, most likely): answers no bigger than the
                // query, which a real resolver takes to TCP.
                return Verdict::Slip;
            }
        }
        let b = self.buckets.entry(key).or_insert(Bucket {
            tokens: RRL_BURST,
            at: now,
            over: 0,
        });
        b.tokens = b.tokens_at(now);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Verdict::Answer;
        }
        b.over += 1;
        if b.over % 2 == 1 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    const ZONE: &str = "acme.hangar.test";

    fn zone() -> Zone {
        Zone::new("ACME.hangar.test.", "192.0.2.53:53".parse().expect("addr"))
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 7;
        m.add_query(Query::query(Name::from_ascii(name).expect("name"), t));
        m.to_vec().expect("encode")
    }

    fn ask(c: &Challenges, name: &str, t: RecordType) -> Message {
        let (bytes, _) = answer(&query(name, t), &zone(), c, false).expect("an answer");
        Message::from_vec(&bytes).expect("decode")
    }

    #[test]
    fn txt_values_out_are_answered_and_nothing_else_exists() {
        let c = Challenges::default();
        let target = hangar_domain::tls::acme_dns_target("*.example.com", "web", ZONE);
        c.put_dns01(&target, "v1");
        c.put_dns01(&target, "v2");
        let m = ask(&c, &format!("{}.", target.to_uppercase()), RecordType::TXT);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        let txts: Vec<String> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(t) => Some(t.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(txts, ["v1", "v2"]);
        assert!(m.answers.iter().all(|r| r.ttl == 0));
        // Another type at the name: no data, with the SOA.
        let m = ask(&c, &format!("{target}."), RecordType::A);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
        // A name with nothing out, the apex, a name outside the zone.
        let m = ask(&c, &format!("nothing.{ZONE}."), RecordType::TXT);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let m = ask(&c, &format!("{ZONE}."), RecordType::NS);
        assert_eq!(m.answers[0].record_type(), RecordType::NS);
        let m = ask(&c, &format!("{ZONE}."), RecordType::SOA);
        assert_eq!(m.answers[0].record_type(), RecordType::SOA);
        // The name server the NS names has the server's address.
        let m = ask(&c, &format!("ns.{ZONE}."), RecordType::A);
        assert_eq!(m.answers[0].data, RData::A(A([192, 0, 2, 53].into())));
        let m = ask(&c, &format!("ns.{ZONE}."), RecordType::AAAA);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        let m = ask(&c, "example.com.", RecordType::TXT);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.authoritative);
        // A lookalike suffix is outside too.
        let m = ask(&c, &format!("x.evil{ZONE}."), RecordType::TXT);
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    }

    #[test]
    fn garbage_responses_and_other_opcodes_are_handled() {
        let c = Challenges::default();
        assert!(answer(&[0; 5], &zone(), &c, false).is_none());
        let mut q = query(&format!("{ZONE}."), RecordType::SOA);
        q[2] |= 0x80;
        assert!(answer(&q, &zone(), &c, false).is_none(), "a response");
        let mut q = query(&format!("{ZONE}."), RecordType::SOA);
        q[2] |= 2 << 3;
        let (_, rcode) = answer(&q, &zone(), &c, false).expect("answer");
        assert_eq!(rcode, ResponseCode::NotImp);
        let mut junk = query(&format!("{ZONE}."), RecordType::SOA);
        junk.truncate(14);
        let (_, rcode) = answer(&junk, &zone(), &c, false).expect("answer");
        assert_eq!(rcode, ResponseCode::FormErr);
    }

    #[test]
    fn withdrawn_values_disappear() {
        let c = Challenges::default();
        let name = format!("a.{ZONE}");
        c.put_dns01(&name, "v1");
        c.take_dns01(&name, "v1");
        assert!(c.dns01(&name).is_empty());
        let m = ask(&c, &format!("{name}."), RecordType::TXT);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn rate_limit_per_prefix_with_burst_refill_and_slip() {
        let mut rl = RateLimit::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.7".parse().expect("ip");
        let same_24: IpAddr = "192.0.2.200".parse().expect("ip");
        let other: IpAddr = "198.51.100.1".parse().expect("ip");
        for _ in 0..40 {
            assert_eq!(rl.check(a, t0), Verdict::Answer);
        }
        // Over the burst: every other one slips, the rest are dropped; the /24 shares it.
        let over: Vec<Verdict> = (0..6).map(|_| rl.check(same_24, t0)).collect();
        assert_eq!(
            over,
            [
                Verdict::Slip,
                Verdict::Drop,
                Verdict::Slip,
                Verdict::Drop,
                Verdict::Slip,
                Verdict::Drop
            ]
        );
        // Another prefix is not touched.
        assert_eq!(rl.check(other, t0), Verdict::Answer);
        // 20 a second come back, and no more than the burst.
        let t1 = t0 + Duration::from_millis(500);
        let answered = (0..20)
            .filter(|_| rl.check(a, t1) == Verdict::Answer)
            .count();
        assert_eq!(answered, 10);
        let t2 = t1 + Duration::from_secs(3600);
        let answered = (0..100)
            .filter(|_| rl.check(a, t2) == Verdict::Answer)
            .count();
        assert_eq!(answered, 40);
    }

    #[test]
    fn rate_limit_prefixes_v6_and_mapped() {
        assert_eq!(
            prefix("2001:db8:1:2ff:1:2:3:4".parse().expect("ip")),
            "2001:db8:1:200::".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(
            prefix("::ffff:192.0.2.9".parse().expect("ip")),
            "192.0.2.0".parse::<IpAddr>().expect("ip")
        );
        let mut rl = RateLimit::default();
        let t = Instant::now();
        for _ in 0..40 {
            assert_eq!(
                rl.check("2001:db8:1:2ff::1".parse().expect("ip"), t),
                Verdict::Answer
            );
        }
        // Same /56, spent; the next /56 is not.
        assert_eq!(
            rl.check("2001:db8:1:200::99".parse().expect("ip"), t),
            Verdict::Slip
        );
        assert_eq!(
            rl.check("2001:db8:1:300::1".parse().expect("ip"), t),
            Verdict::Answer
        );
    }

    #[test]
    fn rate_limit_table_is_bounded() {
        let mut rl = RateLimit::default();
        let t0 = Instant::now();
        let ip = |i: usize| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | ((i as u32) << 8)));
        for i in 0..RRL_PREFIXES {
            assert_eq!(rl.check(ip(i), t0), Verdict::Answer);
        }
        // Full, and every bucket was used just now: a new prefix gets truncated answers.
        assert_eq!(rl.check(ip(RRL_PREFIXES), t0), Verdict::Slip);
        assert_eq!(rl.buckets.len(), RRL_PREFIXES);
        // Once the buckets are full again they are forgotten, and new prefixes are tracked.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(rl.check(ip(RRL_PREFIXES), later), Verdict::Answer);
        assert_eq!(rl.buckets.len(), 1);
    }

    #[tokio::test]
    async fn a_flood_from_one_address_is_answered_at_the_rate_then_truncated_or_dropped() {
        let (udp, tcp) = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = udp.local_addr().expect("addr");
        let c = Arc::new(Challenges::default());
        let name = format!("f.{ZONE}");
        c.put_dns01(&name, "value");
        let counted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = counted.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            udp,
            tcp,
            Zone::new(ZONE, addr),
            c,
            move |x| seen.lock().expect("lock").push(x),
            async {
                let _ = rx.await;
            },
        ));
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let started = Instant::now();
        let q = query(&format!("{name}."), RecordType::TXT);
        for _ in 0..100 {
            client.send_to(&q, addr).await.expect("send");
        }
        let (mut full, mut truncated) = (0usize, 0usize);
        let mut buf = [0u8; 512];
        while let Ok(r) =
            tokio::time::timeout(Duration::from_millis(500), client.recv(&mut buf)).await
        {
            let n = r.expect("recv");
            let m = Message::from_vec(&buf[..n]).expect("decode");
            if m.metadata.truncation {
                assert!(
                    n <= q.len(),
                    "a truncated answer is no bigger than the query"
                );
                assert!(m.answers.is_empty());
                assert_eq!(m.queries.len(), 1);
                truncated += 1;
            } else {
                assert_eq!(m.answers.len(), 1);
                full += 1;
            }
        }
        // The burst, and what the rate gave back while the flood was read.
        let refill = (started.elapsed().as_secs_f64() * RRL_RATE).ceil() as usize;
        assert!((40..=40 + refill).contains(&full), "{full} full answers");
        let over = 100 - full;
        assert!(
            (over / 2..=over.div_ceil(2)).contains(&truncated),
            "{truncated} truncated of {over} over the rate"
        );
        let counted = counted.lock().expect("lock").clone();
        let n = |x: Counted| counted.iter().filter(|&&y| y == x).count();
        assert_eq!(n(Counted::Answered(ResponseCode::NoError)), full);
        assert_eq!(n(Counted::Slipped), truncated);
        assert_eq!(n(Counted::Dropped), over - truncated);
        let _ = tx.send(());
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("stops on shutdown")
            .expect("join");
    }

    #[tokio::test]
    async fn udp_and_tcp_on_one_port() {
        let (udp, tcp) = bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let addr = udp.local_addr().expect("addr");
        assert_eq!(tcp.local_addr().expect("addr"), addr);
        let c = Arc::new(Challenges::default());
        let name = format!("b.{ZONE}");
        c.put_dns01(&name, "value");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            udp,
            tcp,
            Zone::new(ZONE, addr),
            c.clone(),
            |_| {},
            async {
                let _ = rx.await;
            },
        ));
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        client
            .send_to(&query(&format!("{name}."), RecordType::TXT), addr)
            .await
            .expect("send");
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("in time")
            .expect("recv");
        let m = Message::from_vec(&buf[..n]).expect("decode");
        assert_eq!(m.answers.len(), 1);
        // Two queries on one TCP connection.
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        for _ in 0..2 {
            let q = query(&format!("{name}."), RecordType::TXT);
            s.write_all(&(q.len() as u16).to_be_bytes())
                .await
                .expect("len");
            s.write_all(&q).await.expect("query");
            let len = s.read_u16().await.expect("len");
            let mut a = vec![0u8; usize::from(len)];
            s.read_exact(&mut a).await.expect("answer");
            assert_eq!(Message::from_vec(&a).expect("decode").answers.len(), 1);
        }
        let _ = tx.send(());
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("stops on shutdown")
            .expect("join");
    }
}
