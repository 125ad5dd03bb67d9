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
//! amplifier. TCP connections are bounded: 64 at once, 5 s each, up to 16 queries each.
//! Counted by `hangar_acme_dns_queries_total{rcode}`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

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
    if query.len() < 12 || query[2] & 0x80 != 0 {
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
    let limit = if tcp {
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

/// Serves the zone on `udp` and `tcp` until `shutdown` resolves; `count` is told each
/// answer's code.
pub(crate) async fn serve(
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    zone: Zone,
    challenges: Arc<Challenges>,
    count: impl Fn(ResponseCode) + Clone + Send + 'static,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
    let mut conns = tokio::task::JoinSet::new();
    let mut buf = vec![0u8; 4096];
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            r = udp.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                if let Some((bytes, rcode)) = answer(&buf[..n], &zone, &challenges, false) {
                    count(rcode);
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
    count: impl Fn(ResponseCode),
) -> std::io::Result<()> {
    for _ in 0..TCP_QUERIES {
        let len = usize::from(stream.read_u16().await?);
        let mut query = vec![0u8; len];
        stream.read_exact(&mut query).await?;
        let Some((bytes, rcode)) = answer(&query, zone, challenges, true) else {
            return Ok(());
        };
        count(rcode);
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(&bytes[..usize::from(len)]).await?;
    }
    Ok(())
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
