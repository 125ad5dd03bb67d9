//! Debian's `pebble` (a test ACME CA, RFC 8555) for end-to-end tests, with a tiny DNS server
//! of our own answering `127.0.0.1` for the test's hostnames (pebble's validation authority
//! resolves through it with `-dnsserver`).
//!
//! For DNS-01 it also plays the customer's DNS and a recursive resolver: a name given to
//! [`Pebble::delegate_acme_challenge`] is a CNAME to a name in the proxy's ACME DNS zone, and
//! a TXT query for it is answered with the CNAME and the TXT records the zone's server (the
//! proxy's, over UDP) gives for the target.
//!
//! Two steps, because pebble must know the proxy's ports and the proxy must know pebble's
//! directory: [`PebblePlan::new`] picks pebble's ports, starts the DNS server and makes
//! pebble's own HTTPS certificate (trust [`PebblePlan::trust_pem`] to talk to it); once the
//! proxy listens, [`PebblePlan::start`] runs pebble with `httpPort`/`tlsPort` pointing at the
//! proxy's HTTP and TLS listeners. Dropping [`Pebble`] kills it and removes its files.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hangar_image::testing::TempDir;

/// Pebble's ports, certificate and DNS, before it runs.
#[derive(Debug)]
pub struct PebblePlan {
    /// The ACME directory URL pebble will serve.
    pub directory: String,
    /// The CA that signed pebble's HTTPS certificate (PEM).
    pub trust_pem: String,
    listen: SocketAddr,
    management: SocketAddr,
    dns: SocketAddr,
    names: Arc<Mutex<HashSet<String>>>,
    delegations: Delegations,
    dns_task: AbortOnDrop,
    dir: TempDir,
}

/// `_acme-challenge.<name>` → (CNAME target, the target zone's server).
type Delegations = Arc<Mutex<HashMap<String, (String, SocketAddr)>>>;

/// A task stopped when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running pebble (killed when dropped).
#[derive(Debug)]
pub struct Pebble {
    /// The ACME directory URL.
    pub directory: String,
    /// The CA of pebble's HTTPS certificate (PEM).
    pub trust_pem: String,
    management: SocketAddr,
    names: Arc<Mutex<HashSet<String>>>,
    delegations: Delegations,
    child: tokio::process::Child,
    _dns_task: AbortOnDrop,
    dir: TempDir,
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

/// Answers A queries for `names` with 127.0.0.1 (AAAA and others: no records; other names:
/// NXDOMAIN). Enough for pebble's resolver (Go's).
async fn dns_server(
    sock: tokio::net::UdpSocket,
    names: Arc<Mutex<HashSet<String>>>,
    delegations: Delegations,
) {
    let sock = Arc::new(sock);
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let query = buf[..n].to_vec();
        if let Some((target, server)) = delegated(&query, &delegations) {
            let sock = sock.clone();
            tokio::spawn(async move {
                if let Some(reply) = follow_cname(&query, &target, server).await {
                    let _ = sock.send_to(&reply, from).await;
                }
            });
        } else if let Some(reply) = dns_reply(&query, &names) {
            let _ = sock.send_to(&reply, from).await;
        }
    }
}

/// The delegation of a TXT query's name, if it has one.
fn delegated(query: &[u8], delegations: &Delegations) -> Option<(String, SocketAddr)> {
    use hickory_proto::op::Message;
    use hickory_proto::rr::RecordType;
    let m = Message::from_vec(query).ok()?;
    let q = m.queries.first()?;
    if q.query_type() != RecordType::TXT {
        return None;
    }
    let name = q.name().to_ascii().to_ascii_lowercase();
    delegations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name.trim_end_matches('.'))
        .cloned()
}

/// What a recursive resolver answers for a TXT query of a name that is a CNAME to
/// `target`: the CNAME, then the TXT records (and the response code) `server` gives for
/// `target`.
async fn follow_cname(query: &[u8], target: &str, server: SocketAddr) -> Option<Vec<u8>> {
    use hickory_proto::op::{Message, OpCode, Query};
    use hickory_proto::rr::rdata::CNAME;
    use hickory_proto::rr::{Name, RData, Record, RecordType};
    let asked = Message::from_vec(query).ok()?;
    let q = asked.queries.first()?.clone();
    let target_name = Name::from_ascii(format!("{target}.")).ok()?;
    let mut upstream = Message::query();
    upstream.metadata.id = asked.metadata.id ^ 0x5a5a;
    upstream.add_query(Query::query(target_name.clone(), RecordType::TXT));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.ok()?;
    sock.send_to(&upstream.to_vec().ok()?, server).await.ok()?;
    let mut buf = [0u8; 1500];
    let n = tokio::time::timeout(Duration::from_secs(2), sock.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    let got = Message::from_vec(&buf[..n]).ok()?;
    let mut reply = Message::response(asked.metadata.id, OpCode::Query);
    reply.metadata.recursion_desired = asked.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.response_code = got.metadata.response_code;
    reply.add_query(q.clone());
    reply.add_answer(Record::from_rdata(
        q.name().clone(),
        60,
        RData::CNAME(CNAME(target_name)),
    ));
    for r in got.answers {
        reply.add_answer(r);
    }
    reply.to_vec().ok()
}

fn dns_reply(q: &[u8], names: &Mutex<HashSet<String>>) -> Option<Vec<u8>> {
    if q.len() < 12 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question_end = i + 4;
    if q.len() < question_end {
        return None;
    }
    let name = labels.join(".");
    let known = names
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&name);
    let answer = known && qtype == 1;
    // QR, AA, RD as asked, RA; NXDOMAIN for unknown names.
    let flags: u16 =
        0x8000 | 0x0400 | (u16::from(q[2] & 0x01) << 8) | 0x0080 | (u16::from(!known) * 3);
    let mut r = Vec::with_capacity(question_end + 16);
    r.extend_from_slice(&q[..2]);
    r.extend_from_slice(&flags.to_be_bytes());
    r.extend_from_slice(&[0, 1, 0, u8::from(answer), 0, 0, 0, 0]);
    r.extend_from_slice(&q[12..question_end]);
    if answer {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4]);
        r.extend_from_slice(&Ipv4Addr::LOCALHOST.octets());
    }
    Some(r)
}

impl PebblePlan {
    /// Picks ports, starts the DNS server for `names`, makes pebble's HTTPS certificate.
    pub async fn new(names: &[&str]) -> Result<Self, String> {
        let dir = TempDir::new("hangar-pebble").map_err(|e| e.to_string())?;
        let names = Arc::new(Mutex::new(
            names.iter().map(|n| n.to_ascii_lowercase()).collect(),
        ));
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let dns = sock.local_addr().map_err(|e| e.to_string())?;
        let delegations = Delegations::default();
        let dns_task = AbortOnDrop(tokio::spawn(dns_server(
            sock,
            names.clone(),
            delegations.clone(),
        )));
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let management = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        // pebble's HTTPS certificate, from a CA of the test's own.
        let e = |e: rcgen::Error| e.to_string();
        let ca_key = rcgen::KeyPair::generate().map_err(e)?;
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, "pebble test front CA");
        ca.distinguished_name = dn;
        let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().map_err(e)?;
        let leaf = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .map_err(e)?
            .signed_by(&key, &issuer)
            .map_err(e)?;
        std::fs::write(dir.join("cert.pem"), leaf.pem()).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).map_err(|e| e.to_string())?;
        Ok(Self {
            directory: format!("https://{listen}/dir"),
            trust_pem: ca_cert.pem(),
            listen,
            management,
            dns,
            names,
            delegations,
            dns_task,
            dir,
        })
    }

    /// Runs pebble, validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port` of the
    /// names' address (127.0.0.1), and waits until its directory answers.
    pub async fn start(self, http_port: u16, tls_port: u16) -> Result<Pebble, String> {
        let config = serde_json::json!({"pebble": {
            "listenAddress": self.listen.to_string(),
            "managementListenAddress": self.management.to_string(),
            "certificate": self.dir.join("cert.pem"),
            "privateKey": self.dir.join("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_path = self.dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(self.dir.join("pebble.log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = tokio::process::Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .arg("-dnsserver")
            .arg(self.dns.to_string())
            // Validate at once (pebble otherwise sleeps up to 15 s first).
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("running pebble (apt-get install pebble): {e}"))?;
        let mut p = Pebble {
            directory: self.directory,
            trust_pem: self.trust_pem,
            management: self.management,
            names: self.names,
            delegations: self.delegations,
            child,
            _dns_task: self.dns_task,
            dir: self.dir,
        };
        let listen = self.listen;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match crate::tls::https_get(listen, "localhost", &[p.trust_pem.clone()], "/dir").await {
                Ok(r) if r.status == 200 => return Ok(p),
                _ => {}
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                return Err(format!("pebble exited ({status}):\n{}", p.log()));
            }
            if Instant::now() > deadline {
                return Err(format!("pebble never answered:\n{}", p.log()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Pebble {
    /// pebble's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// Makes the DNS server answer for `name` too.
    pub fn add_name(&self, name: &str) {
        self.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_ascii_lowercase());
    }

    /// Makes `_acme-challenge.<name>` a CNAME to `target`, a name of the zone `server`
    /// answers (the proxy's ACME DNS zone), as the user of a custom hostname would.
    pub fn delegate_acme_challenge(&self, name: &str, target: &str, server: SocketAddr) {
        self.delegations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                format!("_acme-challenge.{}", name.to_ascii_lowercase()),
                (target.to_ascii_lowercase(), server),
            );
    }

    /// The root of the certificates pebble issues (random at every start), PEM.
    pub async fn root_pem(&self) -> Result<String, String> {
        let r = crate::tls::https_get(
            self.management,
            "localhost",
            std::slice::from_ref(&self.trust_pem),
            "/roots/0",
        )
        .await?;
        if r.status != 200 || !r.body.contains("BEGIN CERTIFICATE") {
            return Err(format!("pebble's root: {} {}", r.status, r.body));
        }
        Ok(r.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_answers_known_names_only() {
        let names = Mutex::new(HashSet::from(["a.test".to_string()]));
        // id 0x1234, RD, one question: a.test A IN
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x01a\x04test\x00\x00\x01\x00\x01");
        let r = dns_reply(&q, &names).expect("reply");
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[3] & 0x0f, 0, "NOERROR");
        assert_eq!(&r[6..8], &[0, 1], "one answer");
        assert_eq!(&r[r.len() - 4..], &[127, 0, 0, 1]);
        let mut other = q.clone();
        other[13] = b'b';
        let r = dns_reply(&other, &names).expect("reply");
        assert_eq!(r[3] & 0x0f, 3, "NXDOMAIN");
        assert!(dns_reply(&q[..5], &names).is_none());
    }
}
