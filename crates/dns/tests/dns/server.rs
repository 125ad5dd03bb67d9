//! The server on real sockets (the operators' listener on 127.0.0.1:0) over a real store: a
//! change is answered within milliseconds, other names go to a fake upstream on loopback,
//! forwards and TCP connections are bounded, malformed queries get FORMERR.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_dns::{Dns, DnsConfig};
use hangar_domain::State;
use hangar_store::{SqliteStore, Store};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::{HOST, aaaa, addr, app, machine, query};

struct Server {
    dns: Arc<Dns>,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    async fn start(store: Arc<SqliteStore>, config: DnsConfig) -> Server {
        let dns = Dns::new(store, config);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(hangar_dns::run(dns.clone(), async move {
            let _ = rx.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(5);
        let addr = loop {
            if let Some(a) = dns.operator_addr() {
                break a;
            }
            assert!(Instant::now() < deadline, "the server never listened");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        Server {
            dns,
            addr,
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("join").expect("run");
        }
    }
}

fn config() -> DnsConfig {
    DnsConfig {
        host_id: HOST,
        operator_listen: Some("127.0.0.1:0".parse().expect("addr")),
        upstreams: Vec::new(),
        forward_timeout: Duration::from_millis(300),
        tcp_idle_timeout: Duration::from_millis(300),
        ..DnsConfig::default()
    }
}

async fn udp(server: SocketAddr, q: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    s.send_to(q, server).await.expect("send");
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(Duration::from_secs(1), s.recv(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

async fn ask(server: SocketAddr, name: &str, t: RecordType) -> Message {
    let b = udp(server, &query(name, t, None)).await.expect("an answer");
    Message::from_vec(&b).expect("decode")
}

fn store() -> Arc<SqliteStore> {
    let s = Arc::new(SqliteStore::in_memory().expect("store"));
    s.create_org("acme", "Acme", 1).expect("org");
    s.create_app(&app("web", "acme", "default")).expect("app");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_answered_within_milliseconds() {
    let store = store();
    let net = store.network_id("acme", "default", 1).expect("net");
    let m = machine("0000000000000a", "web", net, 1, "ams", State::Started, &[]);
    store.insert_machine(&m).expect("machine");
    let server = Server::start(store.clone(), config()).await;
    assert_eq!(
        aaaa(&ask(server.addr, "web.internal", RecordType::AAAA).await),
        vec![addr(net, 1)]
    );
    // Stopped: out of the answers at once.
    let mut rec = store.get_machine("web", &m.id).expect("q").expect("m");
    rec.state = State::Stopped;
    let t0 = Instant::now();
    store.update_machine(&rec, rec.revision).expect("stop");
    loop {
        let got = aaaa(&ask(server.addr, "web.internal", RecordType::AAAA).await);
        if got.is_empty() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(2), "still answered");
    }
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(100), "took {took:?}");
    // A new app and a second machine appear as fast; a destroyed machine's name goes.
    store
        .create_app(&app("api", "acme", "default"))
        .expect("app");
    let m2 = machine("0000000000000b", "api", net, 2, "ams", State::Started, &[]);
    store.insert_machine(&m2).expect("machine");
    let t0 = Instant::now();
    while aaaa(&ask(server.addr, "api.internal", RecordType::AAAA).await).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
    assert!(
        t0.elapsed() < Duration::from_millis(100),
        "took {:?}",
        t0.elapsed()
    );
    let mut rec = store.get_machine("api", &m2.id).expect("q").expect("m");
    rec.state = State::Destroyed;
    store.update_machine(&rec, rec.revision).expect("destroy");
    let t0 = Instant::now();
    loop {
        let m = ask(
            server.addr,
            "0000000000000b.vm.api.internal",
            RecordType::AAAA,
        )
        .await;
        if m.metadata.response_code == ResponseCode::NXDomain {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
    // The metrics count what was answered.
    let mut f = hangar_metrics::Families::new();
    server.dns.collect_metrics(&mut f);
    let text = f.render();
    assert!(
        text.contains("hangar_dns_queries_total{type=\"AAAA\",rcode=\"NOERROR\"}"),
        "{text}"
    );
    assert!(text.contains("rcode=\"NXDOMAIN\""), "{text}");
    server.stop().await;
}

/// A fake resolver on loopback: answers `A 192.0.2.1` to every query, after `delay`, and
/// reports the ids it saw.
async fn upstream(delay: Duration) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<u16>) {
    let s = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    let addr = s.local_addr().expect("addr");
    let tcp = tokio::net::TcpListener::bind(addr).await.expect("tcp");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let answer = |q: &[u8]| -> Vec<u8> {
        let m = Message::from_vec(q).expect("query");
        let mut r = Message::response(m.metadata.id, m.metadata.op_code);
        r.add_query(m.queries[0].clone());
        r.add_answer(Record::from_rdata(
            m.queries[0].name().clone(),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        ));
        r.to_vec().expect("encode")
    };
    let tx2 = tx.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, src)) = s.recv_from(&mut buf).await {
            let q = buf[..n].to_vec();
            let _ = tx2.send(u16::from_be_bytes([q[0], q[1]]));
            let s = s.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = s.send_to(&answer(&q), src).await;
            });
        }
    });
    tokio::spawn(async move {
        while let Ok((mut c, _)) = tcp.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(n) = c.read_u16().await else { return };
                let mut q = vec![0u8; usize::from(n)];
                if c.read_exact(&mut q).await.is_err() {
                    return;
                }
                let _ = tx.send(u16::from_be_bytes([q[0], q[1]]));
                let a = answer(&q);
                let mut out = (a.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&a);
                let _ = c.write_all(&out).await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_names_go_upstream_bounded_and_in_time() {
    let (up, mut seen) = upstream(Duration::ZERO).await;
    let server = Server::start(
        store(),
        DnsConfig {
            upstreams: vec![up],
            ..config()
        },
    )
    .await;
    let m = ask(server.addr, "example.com", RecordType::A).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.metadata.id, 0x4242, "the client's id comes back");
    assert!(matches!(m.answers[0].data, RData::A(_)));
    let _ = seen.recv().await.expect("the upstream was asked");
    // Over TCP, forwarded over TCP.
    let m = tcp_ask(server.addr, &query("example.com", RecordType::A, None)).await;
    assert!(matches!(m.answers[0].data, RData::A(_)));
    server.stop().await;

    // A silent upstream: SERVFAIL after the timeout; beyond max_forwards at once, at once.
    let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let server = Server::start(
        store(),
        DnsConfig {
            upstreams: vec![silent.local_addr().expect("addr")],
            max_forwards: 1,
            ..config()
        },
    )
    .await;
    let a = server.addr;
    let first = tokio::spawn(async move {
        let t0 = Instant::now();
        (
            ask(a, "slow.example.com", RecordType::A).await,
            t0.elapsed(),
        )
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t0 = Instant::now();
    let second = ask(a, "other.example.com", RecordType::A).await;
    assert_eq!(second.metadata.response_code, ResponseCode::ServFail);
    assert!(
        t0.elapsed() < Duration::from_millis(200),
        "busy: {:?}",
        t0.elapsed()
    );
    let (first, took) = first.await.expect("join");
    assert_eq!(first.metadata.response_code, ResponseCode::ServFail);
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // Local names are answered meanwhile.
    assert_eq!(
        ask(a, "web.internal", RecordType::AAAA)
            .await
            .metadata
            .response_code,
        ResponseCode::NoError
    );
    server.stop().await;
}

async fn tcp_ask(server: SocketAddr, q: &[u8]) -> Message {
    let mut c = TcpStream::connect(server).await.expect("connect");
    let mut out = (q.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(q);
    c.write_all(&out).await.expect("write");
    let n = c.read_u16().await.expect("len");
    let mut b = vec![0u8; usize::from(n)];
    c.read_exact(&mut b).await.expect("read");
    Message::from_vec(&b).expect("decode")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_malformed_queries_and_idle_connections() {
    let store = store();
    let net = store.network_id("acme", "default", 1).expect("net");
    for i in 0..100u32 {
        store
            .insert_machine(&machine(
                &format!("{i:014x}"),
                "web",
                net,
                i + 1,
                "ams",
                State::Started,
                &[],
            ))
            .expect("machine");
    }
    let server = Server::start(store, config()).await;
    // Too big for UDP: truncated; over TCP: whole.
    let m = ask(server.addr, "web.internal", RecordType::AAAA).await;
    assert!(m.metadata.truncation);
    let m = tcp_ask(server.addr, &query("web.internal", RecordType::AAAA, None)).await;
    assert_eq!(aaaa(&m).len(), 100);
    // Several queries on one connection.
    let mut c = TcpStream::connect(server.addr).await.expect("connect");
    for _ in 0..3 {
        let q = query("vms.web.internal", RecordType::TXT, None);
        let mut out = (q.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&q);
        c.write_all(&out).await.expect("write");
        let n = c.read_u16().await.expect("len");
        let mut b = vec![0u8; usize::from(n)];
        c.read_exact(&mut b).await.expect("read");
    }
    // Idle: closed by the server.
    let t0 = Instant::now();
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("read");
    assert_eq!(n, 0);
    assert!(t0.elapsed() < Duration::from_secs(2));
    // Garbage: FORMERR with the id; too short: nothing.
    let mut bad = query("web.internal", RecordType::AAAA, None);
    bad.truncate(20);
    let b = udp(server.addr, &bad).await.expect("formerr");
    let m = Message::from_vec(&b).expect("decode");
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(m.metadata.id, 0x4242);
    assert!(udp(server.addr, &[1, 2, 3]).await.is_none());
    // Still serving.
    assert_eq!(
        ask(server.addr, "_apps.internal", RecordType::TXT)
            .await
            .metadata
            .response_code,
        ResponseCode::NoError
    );
    server.stop().await;
}
