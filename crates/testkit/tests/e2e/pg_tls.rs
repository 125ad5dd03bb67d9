//! The `pg_tls` handler in front of a real PostgreSQL server: Debian's `psql` negotiates TLS
//! in band with the proxy (verifying the host CA's certificate for the app's name) while the
//! server in the machine's network namespace sees a plain connection; a plaintext client is
//! refused with a message `psql` prints; GSSAPI encryption is declined; a client starting
//! with TLS directly must agree on ALPN `postgresql`; and libpq's plaintext cancel request
//! reaches the server that runs the query, though two apps share the port (a cancel
//! routed by port alone would reach the other app's server).
//!
//! The server is a host process run inside the machine's namespace (busybox has no
//! PostgreSQL): the proxy's path to it is the real one, over the machine's bridge.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Output;
use std::time::{Duration, Instant};

use hangar_image::testing::TempDir;
use hangar_proxy::ProxyConfig;
use hangar_testkit::postgres::Postgres;
use hangar_testkit::tls::{self, TlsClient};
use hangar_testkit::{TEST_IMAGE, TestCluster};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::app;
use super::proxy::{listening, machine};
use super::tls::metric;

const PORT: u16 = 15432;
const HOST: &str = "pg-edge.localhost";

/// A libpq connection string to the proxy's `pg_tls` port for `host` with `sslmode`.
fn conninfo_for(host: &str, addr: SocketAddr, ca: &std::path::Path, sslmode: &str) -> String {
    format!(
        "hostaddr=127.0.0.1 host={host} port={} user=postgres dbname=postgres \
         sslmode={sslmode} sslrootcert={} gssencmode=disable connect_timeout=10",
        addr.port(),
        ca.display()
    )
}

fn conninfo(addr: SocketAddr, ca: &std::path::Path, sslmode: &str) -> String {
    conninfo_for(HOST, addr, ca, sslmode)
}

/// `psql` with `args`, killed if the test ends first.
fn psql_cmd(pg: &Postgres, conninfo: String, args: &[&str]) -> tokio::process::Command {
    let mut cmd = pg.psql();
    cmd.arg("-d").arg(conninfo).args(args);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

async fn psql(pg: &Postgres, conninfo: String, args: &[&str]) -> Output {
    let run = psql_cmd(pg, conninfo, args).output();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("psql in time")
        .expect("psql runs")
}

/// A machine of `app` serving `pg_tls` on [`PORT`], with a PostgreSQL server in it.
async fn pg_machine(c: &hangar_testkit::Client, app_name: &str) -> Postgres {
    app(c, app_name).await;
    let id = machine(
        c,
        app_name,
        json!({
            "image": TEST_IMAGE,
            "init": {"cmd": ["sleep", "3600"]},
            "services": [{"protocol": "tcp", "internal_port": 5432, "ports": [{
                "port": PORT, "handlers": ["pg_tls"],
            }]}],
        }),
    )
    .await;
    let netns = format!("hgr-{id}");
    tokio::task::spawn_blocking(move || Postgres::start(&netns, 5432))
        .await
        .expect("join")
        .expect("postgres")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A protocol 3.0 `StartupMessage` for user and database `postgres`.
fn startup() -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    body.extend_from_slice(b"user\0postgres\0database\0postgres\0\0");
    let mut m = (body.len() as u32 + 4).to_be_bytes().to_vec();
    m.extend_from_slice(&body);
    m
}

/// 8-byte negotiation message with `code`.
fn request(code: u32) -> [u8; 8] {
    let mut m = [0u8; 8];
    m[..4].copy_from_slice(&8u32.to_be_bytes());
    m[4..].copy_from_slice(&code.to_be_bytes());
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_clients_get_tls_at_the_edge_and_the_server_a_plain_connection() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    let pg = pg_machine(&c, "pg-edge").await;
    // A second app on the same port, after the first by name.
    let second = pg_machine(&c, "pg-second").await;
    let proxy = cluster.start_proxy(ProxyConfig {
        port_map: HashMap::from([(PORT, 0)]),
        autostop_interval: Duration::from_secs(3600),
        ..ProxyConfig::default()
    });
    let addr = listening(&proxy, PORT).await;
    let ca_pem = proxy.ca_certificate_pem();
    let files = TempDir::new("pg-ca").expect("temp dir");
    let ca = files.path().join("ca.pem");
    std::fs::write(&ca, &ca_pem).expect("write CA");

    // psql with full verification: TLS 1.3 with the proxy, which holds the app name's
    // certificate; the server itself sees no TLS.
    let out = psql(
        &pg,
        conninfo(addr, &ca, "verify-full"),
        &[
            "-c",
            "select 'server side ssl: ' || ssl from pg_stat_ssl where pid = pg_backend_pid()",
            "-c",
            "\\conninfo",
        ],
    )
    .await;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "psql: {stderr}\nserver: {}", pg.log());
    assert!(stdout.contains("server side ssl: false"), "{stdout}");
    assert!(
        stdout.contains("SSL connection (protocol: TLSv1.3"),
        "{stdout}"
    );

    // sslmode=disable: refused, with the proxy's reason in psql's error.
    let out = psql(&pg, conninfo(addr, &ca, "disable"), &["-c", "select 1"]).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("accepts TLS connections only (handler pg_tls)"),
        "{}",
        text(&out.stderr)
    );

    // GSSENCRequest is declined; the client goes on with an SSLRequest on the same
    // connection and is told to start TLS.
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut answer = [0u8; 1];
    s.write_all(&request(hangar_proxy::pg_tls::GSSENC_REQUEST))
        .await
        .expect("write");
    s.read_exact(&mut answer).await.expect("read");
    assert_eq!(&answer, b"N");
    s.write_all(&request(hangar_proxy::pg_tls::SSL_REQUEST))
        .await
        .expect("write");
    s.read_exact(&mut answer).await.expect("read");
    assert_eq!(&answer, b"S");
    drop(s);

    // Direct TLS (PostgreSQL 17's sslnegotiation=direct) with ALPN postgresql: the server
    // answers the startup inside it (AuthenticationOk, 'R').
    let direct = |alpn: &[&str]| TlsClient {
        sni: Some(HOST.into()),
        roots: vec![ca_pem.clone()],
        alpn: alpn.iter().map(|a| a.to_string()).collect(),
        version: None,
    };
    let mut s = tls::connect(addr, &direct(&["postgresql"]))
        .await
        .expect("direct handshake");
    assert_eq!(tls::alpn(&s).as_deref(), Some("postgresql"));
    s.write_all(&startup()).await.expect("startup");
    let mut first = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut first))
        .await
        .expect("answer in time")
        .expect("answer");
    assert_eq!(&first, b"R");
    drop(s);
    // Without ALPN the connection is closed before anything reaches the server.
    if let Ok(mut s) = tls::connect(addr, &direct(&[])).await {
        let _ = s.write_all(&startup()).await;
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("closed in time");
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "direct TLS without ALPN was served"
        );
    }

    // libpq (before 17) sends a cancel without TLS: it goes to the machine whose server runs
    // the query, the second app's here (the port's first app by name is the other one).
    let mut child = psql_cmd(
        &second,
        conninfo_for("pg-second.localhost", addr, &ca, "verify-full"),
        &["-c", "select pg_sleep(60)"],
    )
    .spawn()
    .expect("psql");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running = second
            .query_local(
                "select count(*) from pg_stat_activity \
                 where query = 'select pg_sleep(60)' and state = 'active'",
            )
            .expect("local query");
        if running == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "the sleep never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id().expect("pid").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        tokio::time::timeout(Duration::from_secs(30), e.read_to_string(&mut stderr))
            .await
            .expect("cancelled in time")
            .expect("stderr");
    }
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
    let _ = child.wait().await;
    assert_eq!(
        metric(
            &proxy,
            "hangar_proxy_pg_cancels_total{region=\"local\",result=\"sent\"}"
        ),
        1.0
    );
    // A key no server gave out goes nowhere.
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut forged = 16u32.to_be_bytes().to_vec();
    forged.extend_from_slice(&hangar_proxy::pg_tls::CANCEL_REQUEST.to_be_bytes());
    forged.extend_from_slice(&[0, 0, 0, 1, 2, 3, 4, 5]);
    s.write_all(&forged).await.expect("write");
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest))
        .await
        .expect("closed in time")
        .expect("read");
    assert!(rest.is_empty());
    assert_eq!(
        metric(
            &proxy,
            "hangar_proxy_pg_cancels_total{region=\"local\",result=\"unknown\"}"
        ),
        1.0
    );
}
