//! TLS clients for tests (rustls on ring): connect with chosen SNI, ALPN, versions and trust,
//! see what the server sent, speak HTTP/1.1 over it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// How to connect.
#[derive(Debug, Clone, Default)]
pub struct TlsClient {
    /// Server name to send (and verify); `None` sends no SNI (and verifies nothing).
    pub sni: Option<String>,
    /// Trusted roots, PEM; empty = accept any certificate.
    pub roots: Vec<String>,
    /// ALPN protocols offered.
    pub alpn: Vec<String>,
    /// Only this version (`Some(12)` or `Some(13)`); `None` = 1.2 and 1.3.
    pub version: Option<u8>,
}

/// A verifier that accepts every certificate (to look at what a server sends).
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS connection to a test server.
pub type Tls = TlsStream<TcpStream>;

/// Connects to `addr` and completes the handshake (bounded to 10 s).
pub async fn connect(addr: SocketAddr, c: &TlsClient) -> Result<Tls, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match c.version {
        Some(12) => vec![&rustls::version::TLS12],
        Some(13) => vec![&rustls::version::TLS13],
        _ => vec![&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?;
    let mut config = if c.roots.is_empty() || c.sni.is_none() {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for pem in &c.roots {
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots
                    .add(cert.map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = c.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = match &c.sni {
        Some(n) => ServerName::try_from(n.clone()).map_err(|e| e.to_string())?,
        None => {
            config.enable_sni = false;
            ServerName::IpAddress(addr.ip().into())
        }
    };
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timeout".to_string())?
        .map_err(|e| format!("handshake: {e}"))
}

/// The negotiated ALPN protocol.
pub fn alpn(s: &Tls) -> Option<String> {
    s.get_ref()
        .1
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned())
}

/// The negotiated version: `12` or `13`.
pub fn version(s: &Tls) -> Option<u8> {
    match s.get_ref().1.protocol_version()? {
        rustls::ProtocolVersion::TLSv1_2 => Some(12),
        rustls::ProtocolVersion::TLSv1_3 => Some(13),
        _ => None,
    }
}

/// The certificates the server sent, leaf first.
pub fn peer_chain(s: &Tls) -> Vec<CertificateDer<'static>> {
    s.get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default()
}

/// One HTTP/1.1 response read to its end.
#[derive(Debug)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// The head.
    pub head: String,
    /// The body (de-chunked).
    pub body: String,
}

impl HttpReply {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Sends `GET path` with `Host: host` (`connection: close`) over `s` and reads the answer.
pub async fn get<S>(s: &mut S, host: &str, path: &str) -> Result<HttpReply, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    // A TLS peer may close without close_notify; what was read counts.
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "read timeout".to_string())?;
    if let Err(e) = read
        && buf.is_empty()
    {
        return Err(e.to_string());
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        crate::http::dechunk(body)
    } else {
        body.to_string()
    };
    Ok(HttpReply {
        status,
        head: head.to_string(),
        body,
    })
}

/// `GET https://<sni>/<path>` at `addr`, trusting `roots`.
pub async fn https_get(
    addr: SocketAddr,
    sni: &str,
    roots: &[String],
    path: &str,
) -> Result<HttpReply, String> {
    let mut s = connect(
        addr,
        &TlsClient {
            sni: Some(sni.into()),
            roots: roots.to_vec(),
            alpn: vec!["http/1.1".into()],
            version: None,
        },
    )
    .await?;
    get(&mut s, sni, path).await
}
