//! TLS at the edge in front of real machines: automatic certificates from the host CA, ALPN
//! and versions, `force_https`, `tls`-only ports, custom hostnames from the certificates
//! API (routing by SNI and `Host`), and ACME against Debian's `pebble` with HTTP-01 and
//! TLS-ALPN-01, renewal and backoff.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hangar_domain::tls::CertInfo;
use hangar_proxy::acme::{AcmeConfig, AcmeDns, Challenge};
use hangar_proxy::tls::TlsConfig;
use hangar_proxy::{Proxy, ProxyConfig};
use hangar_store::Store as _;
use hangar_testkit::pebble::PebblePlan;
use hangar_testkit::tls::{self, TlsClient};
use hangar_testkit::{ACME_DNS_ZONE, Client, TEST_IMAGE, TestCluster};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::app;
use super::proxy::{get, listening, machine, web};

/// A service like fly.toml's `[http_service]`: 80 `http` (maybe `force_https`) and 443
/// `tls`+`http`, with `tls_options` on 443.
fn https_web(force_https: bool, tls_options: Value) -> Value {
    let mut s = json!({
        "protocol": "tcp",
        "internal_port": 8080,
        "ports": [
            {"port": 80, "handlers": ["http"], "force_https": force_https},
            {"port": 443, "handlers": ["tls", "http"]},
        ],
    });
    if !tls_options.is_null() {
        s["ports"][1]["tls_options"] = tls_options;
    }
    web(s)
}

fn config() -> ProxyConfig {
    ProxyConfig {
        port_map: HashMap::from([(80, 0), (443, 0), (15443, 0)]),
        autostop_interval: Duration::from_secs(3600),
        ..ProxyConfig::default()
    }
}

fn client(sni: &str, roots: &[&str], alpn: &[&str]) -> TlsClient {
    TlsClient {
        sni: Some(sni.into()),
        roots: roots.iter().map(|r| r.to_string()).collect(),
        alpn: alpn.iter().map(|a| a.to_string()).collect(),
        version: None,
    }
}

fn leaf(s: &tls::Tls) -> CertInfo {
    CertInfo::from_der(&tls::peer_chain(s)[0]).expect("a leaf certificate")
}

/// A GET over h2 (the client spoke ALPN `h2`); the body.
async fn h2_get(s: tls::Tls, host: &str, path: &str) -> (u16, String) {
    use http_body_util::BodyExt as _;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri(format!("https://{host}{path}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = sender.send_request(req).await.expect("h2 response");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Sends a ClientHello offering only TLS 1.`minor - 1` (no supported_versions extension)
/// and returns what the server answered.
async fn legacy_hello(addr: SocketAddr, minor: u8, sni: &str) -> Vec<u8> {
    let mut ext = Vec::new();
    let name = sni.as_bytes();
    let sni_len = name.len() as u16;
    ext.extend_from_slice(&[0x00, 0x00]);
    ext.extend_from_slice(&(sni_len + 5).to_be_bytes());
    ext.extend_from_slice(&(sni_len + 3).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&sni_len.to_be_bytes());
    ext.extend_from_slice(name);
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17]);
    ext.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    // signature_algorithms (ecdsa_secp256r1_sha256, rsa_pss_rsae_sha256), so that the version
    // is all that is wrong (without it rustls answers handshake_failure, also a refusal).
    ext.extend_from_slice(&[0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x08, 0x04]);
    let mut body = vec![0x03, minor];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    // Suites rustls has for TLS 1.2 (ECDHE AES-GCM), so that only the version is wrong.
    body.extend_from_slice(&[0x00, 0x06, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x13]);
    body.extend_from_slice(&[0x01, 0x00]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01, 0, 0, 0];
    hs[1..4].copy_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(&rec).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    buf
}

async fn wait_for<F, Fut, T>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The value of the proxy's first metric line starting with `prefix` (0 when none).
pub(crate) fn metric(proxy: &Arc<Proxy>, prefix: &str) -> f64 {
    let text = proxy.render_metrics();
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_gets_the_automatic_certificate_and_the_app_sees_https() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "tls-web").await;
    machine(&c, "tls-web", https_web(true, Value::Null)).await;
    let proxy = cluster.start_proxy(ProxyConfig {
        tls: TlsConfig {
            handshake_timeout: Duration::from_secs(1),
            ..TlsConfig::default()
        },
        ..config()
    });
    let https = listening(&proxy, 443).await;
    let http = listening(&proxy, 80).await;
    let ca = proxy.ca_certificate_pem();
    assert!(
        std::fs::read_to_string(cluster.path().join("tls/ca.pem")).is_ok_and(|p| p == ca),
        "the host CA lives in the data dir"
    );
    let host = "tls-web.localhost";

    // h2 by ALPN; the certificate verifies against the host CA.
    let s = tls::connect(https, &client(host, &[&ca], &["h2", "http/1.1"]))
        .await
        .expect("handshake");
    assert_eq!(tls::alpn(&s).as_deref(), Some("h2"));
    assert_eq!(tls::version(&s), Some(13));
    assert_eq!(leaf(&s).dns_names, vec![host.to_string()]);
    let (status, body) = h2_get(s, host, "/cgi-bin/info").await;
    assert_eq!(status, 200, "{body}");
    for want in [
        "HTTP_X_FORWARDED_PROTO=https",
        "HTTP_X_FORWARDED_SSL=on",
        "HTTP_FLY_FORWARDED_PORT=443",
        "HTTP_VIA=2 hangar",
    ] {
        assert!(body.contains(want), "{want} missing:\n{body}");
    }
    // HTTP/1.1 over TLS 1.2.
    let mut s = tls::connect(
        https,
        &TlsClient {
            version: Some(12),
            ..client(host, &[&ca], &["http/1.1"])
        },
    )
    .await
    .expect("TLS 1.2 handshake");
    assert_eq!(
        (tls::version(&s), tls::alpn(&s).as_deref()),
        (Some(12), Some("http/1.1"))
    );
    let r = tls::get(&mut s, host, "/cgi-bin/info").await.expect("get");
    assert_eq!(r.status, 200, "{}", r.head);
    assert!(
        r.body.contains("HTTP_X_FORWARDED_PROTO=https"),
        "{}",
        r.body
    );
    assert!(r.body.contains("HTTP_VIA=1.1 hangar"), "{}", r.body);
    // Keep-alive HTTP/1.1 over TLS: a plain request, one with a small body, then one with a
    // chunked body (handed from the fast path to hyper's server on the same connection),
    // pipelined.
    let mut s = tls::connect(https, &client(host, &[&ca], &["http/1.1"]))
        .await
        .expect("handshake");
    let reqs = format!(
        "GET /cgi-bin/info?first HTTP/1.1\r\nhost: {host}\r\n\r\n\
         POST /cgi-bin/info?second HTTP/1.1\r\nhost: {host}\r\ncontent-length: 5\r\n\r\nhello\
         POST /cgi-bin/info?third HTTP/1.1\r\nhost: {host}\r\ntransfer-encoding: chunked\r\n\
         connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    );
    s.write_all(reqs.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert_eq!(got.matches("HTTP/1.1 200 OK").count(), 3, "{got}");
    assert_eq!(
        got.matches("HTTP_X_FORWARDED_PROTO=https").count(),
        3,
        "{got}"
    );
    // The last answer closes the connection, as its request asked.
    let last = got.rfind("HTTP/1.1 200 OK").expect("last");
    assert!(got[last..].contains("\r\nconnection: close\r\n"), "{got}");

    // force_https: plain HTTP is redirected, HTTPS is served.
    let r = get(http, host, "/cgi-bin/info?x=1", &[]).await;
    assert_eq!(r.status, 301, "{}", r.head);
    assert_eq!(
        r.header("location").as_deref(),
        Some("https://tls-web.localhost/cgi-bin/info?x=1")
    );

    // Names nobody serves, and no name at all: no handshake.
    for sni in ["nope.localhost", "www.example.test"] {
        let r = tls::connect(https, &client(sni, &[], &[])).await;
        assert!(r.is_err(), "{sni} got a handshake");
    }
    assert!(
        tls::connect(https, &TlsClient::default()).await.is_err(),
        "no SNI, no default_self_signed: refused"
    );
    // TLS 1.0 and 1.1: a protocol_version alert, never a ServerHello.
    for minor in [1u8, 2] {
        let reply = legacy_hello(https, minor, host).await;
        assert_eq!(reply.first(), Some(&0x15), "TLS 1.{}: {reply:?}", minor - 1);
        assert_eq!(reply.get(6), Some(&70), "protocol_version: {reply:?}");
    }
    // A client that never says hello is dropped after the handshake timeout.
    let mut idle = tokio::net::TcpStream::connect(https)
        .await
        .expect("connect");
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the idle client was never dropped");
    assert!(
        t0.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t0.elapsed()
    );

    metrics_with(
        &proxy,
        &[
            "fly_edge_tls_handshake_time_seconds_count{region=\"local\",version=\"TLSv1.3\"}",
            "fly_edge_tls_handshake_time_seconds_count{region=\"local\",version=\"TLSv1.2\"}",
            "fly_edge_tls_handshake_errors{region=\"local\",servername=\"unknown\"}",
            "fly_edge_tls_handshake_errors{region=\"local\",servername=\"tls-web.localhost\"}",
            "hangar_proxy_errors_total{app=\"\",region=\"local\",code=\"PT08\"}",
        ],
    )
    .await;
}

/// The proxy's metrics once they hold every line of `want`. A failed handshake is counted by
/// the worker that served it after the alert went out, so the client can see the failure
/// first: waited for (10 s at most), not assumed.
async fn metrics_with(proxy: &Arc<Proxy>, want: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = proxy.render_metrics();
        match want.iter().find(|w| !text.contains(*w)) {
            None => return text,
            Some(w) if std::time::Instant::now() > deadline => panic!("{w} missing:\n{text}"),
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_only_port_passes_the_plaintext_to_a_raw_tcp_machine() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "tls-raw").await;
    machine(
        &c,
        "tls-raw",
        json!({
            "image": TEST_IMAGE,
            "init": {"cmd": ["nc", "-ll", "-p", "7000", "-e", "cat"]},
            "services": [{"protocol": "tcp", "internal_port": 7000, "ports": [{
                "port": 15443, "handlers": ["tls"],
                "tls_options": {"alpn": ["echo/1"], "versions": ["TLSv1.3"]},
            }]}],
        }),
    )
    .await;
    let proxy = cluster.start_proxy(config());
    let addr = listening(&proxy, 15443).await;
    let ca = proxy.ca_certificate_pem();
    let host = "tls-raw.localhost";
    let mut s = tls::connect(addr, &client(host, &[&ca], &["echo/1"]))
        .await
        .expect("handshake");
    assert_eq!(
        (tls::alpn(&s).as_deref(), tls::version(&s)),
        (Some("echo/1"), Some(13))
    );
    s.write_all(b"ping over tls\n").await.expect("write");
    let mut buf = vec![0u8; 14];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(&buf, b"ping over tls\n");
    // The port allows TLS 1.3 only.
    let r = tls::connect(
        addr,
        &TlsClient {
            version: Some(12),
            ..client(host, &[&ca], &["echo/1"])
        },
    )
    .await;
    assert!(r.is_err(), "TLS 1.2 on a TLSv1.3-only port");
    metrics_with(
        &proxy,
        &["fly_edge_tls_handshake_errors{region=\"local\",servername=\"tls-raw.localhost\"} 1"],
    )
    .await;
}

/// A CA of the test's own and a certificate for `names` signed by it: (CA PEM, chain, key).
fn test_certificate(names: &[&str]) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca = rcgen::CertificateParams::default();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, "Custom Test CA");
    ca.distinguished_name = dn;
    let ca_cert = ca.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let leaf =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("leaf");
    (
        ca_cert.pem(),
        format!("{}{}", leaf.pem(), ca_cert.pem()),
        key.serialize_pem(),
    )
}

fn machine_of(body: &str) -> String {
    body.lines()
        .find_map(|l| l.strip_prefix("machine="))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_hostnames_route_by_sni_and_host_and_follow_the_store() {
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "tls-custom").await;
    app(&c, "tls-dss").await;
    let custom_m = machine(&c, "tls-custom", https_web(false, Value::Null)).await;
    let dss_m = machine(
        &c,
        "tls-dss",
        https_web(false, json!({"default_self_signed": true})),
    )
    .await;
    let proxy = cluster.start_proxy(config());
    let https = listening(&proxy, 443).await;
    let http = listening(&proxy, 80).await;
    let ca = proxy.ca_certificate_pem();
    let name = "www.custom.test";
    assert_eq!(get(http, name, "/", &[]).await.status, 404);

    // Import: served over SNI within milliseconds, and routed by Host too.
    let (test_ca, chain, key) = test_certificate(&[name]);
    let r = c
        .post(
            "/v1/apps/tls-custom/certificates/custom",
            &json!({"hostname": name, "fullchain": chain, "private_key": key}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let t0 = Instant::now();
    let mut s = wait_for(
        "the imported certificate served",
        Duration::from_secs(5),
        || {
            let cl = client(name, &[&test_ca], &["http/1.1"]);
            async move { tls::connect(https, &cl).await }
        },
    )
    .await;
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(leaf(&s).dns_names, vec![name.to_string()]);
    assert_eq!(leaf(&s).issuer.as_deref(), Some("Custom Test CA"));
    let r = tls::get(&mut s, name, "/cgi-bin/info").await.expect("get");
    assert_eq!((r.status, machine_of(&r.body)), (200, custom_m.clone()));
    let r = get(http, name, "/cgi-bin/info", &[]).await;
    assert_eq!((r.status, machine_of(&r.body)), (200, custom_m.clone()));

    // A hostname waiting for ACME (none here): routed over HTTP, no TLS certificate.
    let r = c
        .post(
            "/v1/apps/tls-custom/certificates/acme",
            &json!({"hostname": "pending.custom.test"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = wait_for(
        "routing pending.custom.test",
        Duration::from_secs(5),
        || async {
            let r = get(http, "pending.custom.test", "/cgi-bin/info", &[]).await;
            if r.status == 200 { Ok(r) } else { Err(r.head) }
        },
    )
    .await;
    assert_eq!(machine_of(&r.body), custom_m);
    assert!(
        tls::connect(https, &client("pending.custom.test", &[], &[]))
            .await
            .is_err(),
        "no certificate yet, no default_self_signed: no handshake"
    );

    // The default_self_signed app: its hostnames get a host-CA certificate…
    let r = c
        .post(
            "/v1/apps/tls-dss/certificates/acme",
            &json!({"hostname": "dss.custom.test"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let mut s = wait_for("dss.custom.test", Duration::from_secs(5), || {
        let cl = client("dss.custom.test", &[&ca], &["http/1.1"]);
        async move { tls::connect(https, &cl).await }
    })
    .await;
    let r = tls::get(&mut s, "dss.custom.test", "/cgi-bin/info")
        .await
        .expect("get");
    assert_eq!((r.status, machine_of(&r.body)), (200, dss_m.clone()));
    // …and names nobody has get its default certificate.
    let s = tls::connect(https, &client("who.knows.test", &[], &[]))
        .await
        .expect("the default certificate");
    assert_eq!(leaf(&s).dns_names, vec!["tls-dss.localhost".to_string()]);

    // Removed: no longer routed, its certificate no longer served.
    let r = c
        .delete(&format!("/v1/apps/tls-custom/certificates/{name}"))
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    wait_for(
        "the removal reaching the proxy",
        Duration::from_secs(5),
        || async {
            match get(http, name, "/", &[]).await.status {
                404 => Ok(()),
                s => Err(format!("status {s}")),
            }
        },
    )
    .await;
    let s = tls::connect(https, &client(name, &[], &[]))
        .await
        .expect("default certificate");
    assert_eq!(leaf(&s).dns_names, vec!["tls-dss.localhost".to_string()]);
}

/// Polls the certificate detail until its status is `want`.
async fn wait_status(
    c: &Client,
    app: &str,
    host: &str,
    want: &str,
    pebble_log: &dyn Fn() -> String,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let d = c
            .get(&format!("/v1/apps/{app}/certificates/{host}"))
            .await
            .json();
        if d["status"] == want {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "{host} never {want}: {d}\npebble:\n{}",
            pebble_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn acme_config(plan: &PebblePlan, challenge: Challenge) -> ProxyConfig {
    ProxyConfig {
        tls: TlsConfig {
            acme: Some(AcmeConfig {
                directory: plan.directory.clone(),
                trust_pem: Some(plan.trust_pem.clone()),
                contact: vec!["mailto:ops@hangar.test".into()],
                challenges: vec![challenge],
                retry_base: Duration::from_millis(300),
                retry_max: Duration::from_secs(1),
                max_attempts: 2,
                poll_interval: Duration::from_millis(100),
                ..AcmeConfig::default()
            }),
            ..TlsConfig::default()
        },
        ..config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_http01_with_pebble_issues_serves_and_renews() {
    let host = "www.acme-http.test";
    let plan = PebblePlan::new(&[host]).await.expect("pebble plan");
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "acme-http").await;
    // force_https on 80: the challenge is answered before any redirect.
    let m = machine(&c, "acme-http", https_web(true, Value::Null)).await;
    let proxy = cluster.start_proxy(acme_config(&plan, Challenge::Http01));
    let http = listening(&proxy, 80).await;
    let https = listening(&proxy, 443).await;
    let pebble = plan.start(http.port(), https.port()).await.expect("pebble");
    let root = pebble.root_pem().await.expect("pebble's root");
    let log = || pebble.log();

    let r = c
        .post(
            "/v1/apps/acme-http/certificates/acme",
            &json!({"hostname": host}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let d = wait_status(&c, "acme-http", host, "active", &log).await;
    assert_eq!(d["configured"], true);
    assert_eq!(d["validation"]["http_configured"], true, "{d}");
    assert_eq!(d["certificates"][0]["source"], "fly");
    assert!(
        d["certificates"][0]["issued"][0]["certificate_authority"]
            .as_str()
            .is_some_and(|ca| ca.contains("ebble")),
        "{d}"
    );
    // A real client trusting pebble's root gets the app over HTTPS.
    let mut s = tls::connect(https, &client(host, &[&root], &["http/1.1"]))
        .await
        .expect("verified against pebble's root");
    let first = leaf(&s).serial_hex;
    let r = tls::get(&mut s, host, "/cgi-bin/info").await.expect("get");
    assert_eq!((r.status, machine_of(&r.body)), (200, m));
    assert!(
        r.body.contains("HTTP_X_FORWARDED_PROTO=https"),
        "{}",
        r.body
    );
    assert_eq!(
        metric(
            &proxy,
            "hangar_acme_orders_total{region=\"local\",kind=\"issue\",result=\"ok\"}"
        ),
        1.0
    );
    // The key is sealed in the store.
    let rec = cluster
        .store
        .get_certificate(host)
        .expect("get")
        .expect("exists");
    let acme = rec.acme.clone().expect("acme certificate");
    assert!(!String::from_utf8_lossy(&acme.key_sealed).contains("PRIVATE KEY"));

    // Close to expiry: renewed, and the new certificate served.
    for _ in 0..10 {
        let mut rec = cluster
            .store
            .get_certificate(host)
            .expect("get")
            .expect("exists");
        let rev = rec.revision;
        if let Some(a) = rec.acme.as_mut() {
            a.not_after = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
                + 86_400_000;
        }
        if cluster.store.update_certificate(&rec, rev).is_ok() {
            break;
        }
    }
    let renewed = wait_for(
        "a renewed certificate served",
        Duration::from_secs(90),
        || async {
            let s = tls::connect(https, &client(host, &[&root], &[])).await?;
            let serial = leaf(&s).serial_hex;
            if serial == first {
                Err(format!("still {serial}\npebble:\n{}", log()))
            } else {
                Ok(serial)
            }
        },
    )
    .await;
    assert_ne!(renewed, first);
    assert_eq!(
        metric(
            &proxy,
            "hangar_acme_orders_total{region=\"local\",kind=\"renew\",result=\"ok\"}"
        ),
        1.0
    );
    let text = proxy.render_metrics();
    assert!(
        text.contains(&format!(
            "hangar_acme_consecutive_failures{{app=\"acme-http\",hostname=\"{host}\"}} 0"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_tls_alpn01_with_pebble_backs_off_on_failure_and_check_retries() {
    let host = "www.acme-alpn.test";
    let unresolved = "late.acme-alpn.test";
    let plan = PebblePlan::new(&[host]).await.expect("pebble plan");
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "acme-alpn").await;
    let m = machine(&c, "acme-alpn", https_web(false, Value::Null)).await;
    let proxy = cluster.start_proxy(acme_config(&plan, Challenge::TlsAlpn01));
    let http = listening(&proxy, 80).await;
    let https = listening(&proxy, 443).await;
    let pebble = plan.start(http.port(), https.port()).await.expect("pebble");
    let root = pebble.root_pem().await.expect("pebble's root");
    let log = || pebble.log();

    // A name the CA can not resolve: two failures in a row (backing off), then `failed`.
    let r = c
        .post(
            "/v1/apps/acme-alpn/certificates/acme",
            &json!({"hostname": unresolved}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let d = wait_status(&c, "acme-alpn", unresolved, "failed", &log).await;
    let errors = d["validation_errors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        errors.iter().any(|e| e["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("urn:ietf:params:acme:error:"))),
        "{d}"
    );
    assert!(d["rate_limited_until"].is_string(), "{d}");
    assert!(
        metric(
            &proxy,
            "hangar_acme_orders_total{region=\"local\",kind=\"issue\",result=\"error\"}"
        ) >= 2.0
    );
    let text = proxy.render_metrics();
    assert!(
        text.contains(&format!(
            "hangar_acme_consecutive_failures{{app=\"acme-alpn\",hostname=\"{unresolved}\"}} 2"
        )),
        "{text}"
    );
    // Fixed (the name resolves now): `check` retries at once.
    pebble.add_name(unresolved);
    let r = c
        .post(
            &format!("/v1/apps/acme-alpn/certificates/{unresolved}/check"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = wait_status(&c, "acme-alpn", unresolved, "active", &log).await;
    assert_eq!(d["validation"]["alpn_configured"], true, "{d}");

    // The main name, straight through with TLS-ALPN-01.
    let r = c
        .post(
            "/v1/apps/acme-alpn/certificates/acme",
            &json!({"hostname": host}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let d = wait_status(&c, "acme-alpn", host, "active", &log).await;
    assert_eq!(d["validation"]["alpn_configured"], true, "{d}");
    // Real clients get h2 with pebble's certificate; the app sees HTTPS.
    let s = tls::connect(https, &client(host, &[&root], &["h2", "http/1.1"]))
        .await
        .expect("verified against pebble's root");
    assert_eq!(tls::alpn(&s).as_deref(), Some("h2"));
    let (status, body) = h2_get(s, host, "/cgi-bin/info").await;
    assert_eq!((status, machine_of(&body)), (200, m));
    assert!(body.contains("HTTP_X_FORWARDED_PROTO=https"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_dns01_with_pebble_issues_a_wildcard_through_the_users_cname() {
    let wildcard = "*.acme-dns.test";
    let plan = PebblePlan::new(&[]).await.expect("pebble plan");
    let mut cluster = TestCluster::start().await.expect("cluster");
    let c = cluster.client();
    app(&c, "acme-dns").await;
    let m = machine(&c, "acme-dns", https_web(false, Value::Null)).await;
    let mut config = acme_config(&plan, Challenge::TlsAlpn01);
    if let Some(acme) = config.tls.acme.as_mut() {
        acme.dns = Some(AcmeDns {
            zone: ACME_DNS_ZONE.into(),
            listen: "127.0.0.1:0".parse().expect("addr"),
        });
    }
    let proxy = cluster.start_proxy(config);
    let http = listening(&proxy, 80).await;
    let https = listening(&proxy, 443).await;
    let zone_server = wait_for(
        "the ACME DNS zone's server",
        Duration::from_secs(10),
        || async { proxy.challenges.dns_addr().ok_or("not yet".to_string()) },
    )
    .await;
    let pebble = plan.start(http.port(), https.port()).await.expect("pebble");
    let root = pebble.root_pem().await.expect("pebble's root");
    let log = || pebble.log();

    // The API tells the user which CNAME to set.
    let r = c
        .post(
            "/v1/apps/acme-dns/certificates/acme",
            &json!({"hostname": wildcard}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let need = r.json()["dns_requirements"]["acme_challenge"].clone();
    assert_eq!(need["name"], "_acme-challenge.acme-dns.test", "{need}");
    let target = need["target"].as_str().expect("target").to_string();
    assert!(target.ends_with(&format!(".{ACME_DNS_ZONE}")), "{target}");

    // Before the CNAME is set the CA finds no TXT: failed, with the record to set.
    let d = wait_status(&c, "acme-dns", wildcard, "failed", &log).await;
    let errors = d["validation_errors"].to_string();
    assert!(
        errors.contains(&format!("CNAME _acme-challenge.acme-dns.test {target}")),
        "{d}"
    );
    // Set (as the user would at their DNS provider), then `check`.
    pebble.delegate_acme_challenge("acme-dns.test", &target, zone_server);
    let r = c
        .post(
            &format!("/v1/apps/acme-dns/certificates/{wildcard}/check"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let d = wait_status(&c, "acme-dns", wildcard, "active", &log).await;
    assert_eq!(d["validation"]["dns_configured"], true, "{d}");
    let list = c.get("/v1/apps/acme-dns/certificates").await.json();
    assert_eq!(
        list["certificates"][0]["acme_dns_configured"], true,
        "{list}"
    );
    // The challenge's record is withdrawn once the order is done.
    assert!(proxy.challenges.dns01(&target).is_empty());
    assert!(
        metric(
            &proxy,
            "hangar_acme_dns_queries_total{region=\"local\",rcode=\"NOERROR\"}"
        ) >= 1.0
    );

    // Any name under the wildcard: pebble's certificate, the app behind it.
    for host in ["api.acme-dns.test", "www.acme-dns.test"] {
        let mut s = tls::connect(https, &client(host, &[&root], &["http/1.1"]))
            .await
            .expect("verified against pebble's root");
        assert!(leaf(&s).dns_names.contains(&wildcard.to_string()));
        let r = tls::get(&mut s, host, "/cgi-bin/info").await.expect("get");
        assert_eq!((r.status, machine_of(&r.body)), (200, m.clone()));
    }
}
