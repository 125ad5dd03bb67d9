//! TLS termination: ports whose handlers are `tls` then `http` serve the `http` handler over
//! TLS; ports whose only handler is `tls` pass the plaintext to the machine as raw TCP, and
//! so do `pg_tls` ports once PostgreSQL's negotiation is done ([`crate::pg_tls`]).
//!
//! rustls (ring), TLS 1.2 and 1.3 only (a port's `tls_options.versions` may narrow that),
//! ALPN from `tls_options.alpn` (`h2`, `http/1.1` on `http` ports by default; none on `tls`
//! ports; `postgresql` on `pg_tls` ports). The ClientHello is read first, then a configuration is picked for its SNI:
//!
//! 1. `<app>.<domain>` of an existing app: a certificate for that name issued on the spot by
//!    the host CA (kept in `ca_dir`; trust its `ca.pem` to verify them), cached, re-issued
//!    before it expires;
//! 2. a custom hostname (the certificates store; exact, then `*.` wildcard): its imported
//!    certificate while valid, else its ACME one, else — when the app's port has
//!    `tls_options.default_self_signed` — a host-CA certificate for the name, else the
//!    handshake fails (PT06);
//! 3. anything else (unknown or no SNI): the first app (by name) on this port with
//!    `default_self_signed` gets the connection with its `<app>.<domain>` certificate; without
//!    one the handshake fails (PT05).
//!
//! A ClientHello offering `acme-tls/1` is answered with the TLS-ALPN-01 challenge
//! certificate of its SNI, if the ACME manager has one out ([`crate::acme`]). Handshakes are
//! bounded by `handshake_timeout` (PT08) and counted: `fly_edge_tls_handshake_time_seconds`
//! by version, `fly_edge_tls_handshake_errors` by server name (known names only, else
//! `unknown`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hangar_api_types::TlsOptions;
use hangar_store::{CertificateRecord, Sealer, StoredCert};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedProtocolVersion};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

/// A client connection (bytes after a PROXY header, if one was read, come first).
pub(crate) type Client = crate::proxy_proto::Prefixed<TcpStream>;

use crate::Proxy;
use crate::catalog::{AppEntry, Catalog};
use crate::http::app_from_host;

/// The ALPN protocol of TLS-ALPN-01 (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";
/// Lifetime of host-CA certificates; re-issued when less than a third is left.
const LEAF_LIFETIME: Duration = Duration::from_secs(90 * 86_400);
/// Bound of each cache (certificates by name, parsed stored certificates, configurations).
const CACHE_LIMIT: usize = 4096;

/// TLS settings of the proxy.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Where the host CA lives (`ca.pem`, `ca.key` mode 0600; made on first use). `None`: a
    /// CA in memory, new at every start.
    pub ca_dir: Option<PathBuf>,
    /// Opens the private keys of stored certificates (imported and ACME); without it only
    /// host-CA certificates are served and ACME is off.
    pub sealer: Option<Arc<Sealer>>,
    /// A client must finish its handshake within this.
    pub handshake_timeout: Duration,
    /// ACME issuance for custom hostnames (off when `None`).
    pub acme: Option<crate::acme::AcmeConfig>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            ca_dir: None,
            sealer: None,
            handshake_timeout: Duration::from_secs(10),
            acme: None,
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn offset(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A private key (PKCS#8 DER) as rustls signs with it.
pub(crate) fn signing_key(
    pkcs8: Vec<u8>,
) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
    rustls::crypto::ring::sign::any_supported_type(&PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        pkcs8,
    )))
}

/// The host's certificate authority: signs the automatic certificates of `<app>.<domain>`
/// and `default_self_signed` names.
pub struct HostCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl std::fmt::Debug for HostCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostCa").finish_non_exhaustive()
    }
}

fn ca_params(key: &rcgen::KeyPair) -> rcgen::CertificateParams {
    use ring::digest::{SHA256, digest};
    let id: String = digest(&SHA256, key.public_key_raw()).as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut p = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, format!("Hangar host CA {id}"));
    dn.push(rcgen::DnType::OrganizationName, "Hangar");
    p.distinguished_name = dn;
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let now = now_ms();
    p.not_before = offset(now - 86_400_000);
    p.not_after = offset(now + 20 * 365 * 86_400_000);
    p
}

impl HostCa {
    /// A CA in memory.
    pub fn ephemeral() -> Result<Self, rcgen::Error> {
        let key = rcgen::KeyPair::generate()?;
        let params = ca_params(&key);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// The CA of `dir` (`ca.key` 0600 and `ca.pem`), made if missing.
    pub fn load_or_create(dir: &Path) -> std::io::Result<Self> {
        use std::io::Write as _;
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let err = |e: rcgen::Error| std::io::Error::other(e.to_string());
        std::fs::create_dir_all(dir)?;
        let key_path = dir.join("ca.key");
        let cert_path = dir.join("ca.pem");
        let key = if key_path.exists() {
            let mode = std::fs::metadata(&key_path)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{} must be mode 0600", key_path.display()),
                ));
            }
            rcgen::KeyPair::from_pem(&std::fs::read_to_string(&key_path)?).map_err(err)?
        } else {
            let key = rcgen::KeyPair::generate().map_err(err)?;
            let tmp = dir.join(format!(".ca.key.{}", std::process::id()));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(key.serialize_pem().as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &key_path)?;
            let _ = std::fs::remove_file(&cert_path);
            key
        };
        let params = ca_params(&key);
        let (cert_pem, cert_der) = match std::fs::read_to_string(&cert_path).ok().and_then(|p| {
            let der = CertificateDer::from_pem_slice(p.as_bytes()).ok()?;
            Some((p, der))
        }) {
            Some(c) => c,
            None => {
                let cert = params.self_signed(&key).map_err(err)?;
                std::fs::write(&cert_path, cert.pem())?;
                (cert.pem(), cert.der().clone())
            }
        };
        Ok(Self {
            cert_pem,
            cert_der,
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for `name` valid for `lifetime` (chain: leaf, CA).
    fn issue(&self, name: &str, lifetime: Duration) -> Result<(CertifiedKey, i64), String> {
        let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
        let mut p =
            rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, name);
        p.distinguished_name = dn;
        let now = now_ms();
        let not_after = now + lifetime.as_millis() as i64;
        p.not_before = offset(now - 3_600_000);
        p.not_after = offset(not_after);
        p.use_authority_key_identifier_extension = true;
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &self.issuer).map_err(|e| e.to_string())?;
        let signing = signing_key(key.serialize_der()).map_err(|e| e.to_string())?;
        Ok((
            CertifiedKey::new(vec![cert.der().clone(), self.cert_der.clone()], signing),
            not_after,
        ))
    }
}

/// A certificate ready to serve.
#[derive(Debug, Clone)]
pub(crate) struct Served {
    id: u64,
    key: Arc<CertifiedKey>,
    not_after: i64,
}

/// Serves one fixed certificate.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Which configuration a connection gets.
struct Choice {
    app: String,
    cert: Served,
    options: TlsOptions,
}

/// Why a handshake did not complete.
#[derive(Debug)]
enum Fail {
    /// No certificate for a known name (PT06).
    NoCert,
    /// An unknown or absent name (PT05).
    UnknownName,
    /// The TLS exchange failed (PT04).
    Handshake(std::io::Error),
}

type ConfigKey = (u64, u8, Vec<Vec<u8>>);
/// (hostname, source, record revision)
type StoredKey = (String, &'static str, u64);

/// Certificates and configurations of the proxy.
pub(crate) struct TlsState {
    pub(crate) ca: HostCa,
    provider: Arc<CryptoProvider>,
    next_id: AtomicU64,
    /// Host-CA certificates by name.
    minted: Mutex<HashMap<String, Served>>,
    /// Stored certificates by (hostname, source, record revision); `None` = unusable.
    stored: Mutex<HashMap<StoredKey, Option<Served>>>,
    configs: Mutex<HashMap<ConfigKey, Arc<ServerConfig>>>,
    sealer: Option<Arc<Sealer>>,
}

impl std::fmt::Debug for TlsState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsState").finish_non_exhaustive()
    }
}

fn bounded<K, V>(m: &mut HashMap<K, V>) {
    if m.len() >= CACHE_LIMIT {
        m.clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TlsState {
    pub(crate) fn new(config: &TlsConfig) -> Result<Self, String> {
        let ca = match &config.ca_dir {
            Some(dir) => HostCa::load_or_create(dir)
                .map_err(|e| format!("host CA in {}: {e}", dir.display()))?,
            None => HostCa::ephemeral().map_err(|e| e.to_string())?,
        };
        Ok(Self {
            ca,
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            next_id: AtomicU64::new(1),
            minted: Mutex::new(HashMap::new()),
            stored: Mutex::new(HashMap::new()),
            configs: Mutex::new(HashMap::new()),
            sealer: config.sealer.clone(),
        })
    }

    fn served(&self, key: CertifiedKey, not_after: i64) -> Served {
        Served {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            key: Arc::new(key),
            not_after,
        }
    }

    /// The host-CA certificate of `name` (issued now if missing or past two thirds of its
    /// life).
    fn minted(&self, name: &str) -> Option<Served> {
        let now = now_ms();
        let renew_at = (LEAF_LIFETIME.as_millis() / 3) as i64;
        if let Some(s) = lock(&self.minted).get(name)
            && s.not_after - now > renew_at
        {
            return Some(s.clone());
        }
        match self.ca.issue(name, LEAF_LIFETIME) {
            Ok((key, not_after)) => {
                let s = self.served(key, not_after);
                let mut m = lock(&self.minted);
                bounded(&mut m);
                m.insert(name.to_string(), s.clone());
                Some(s)
            }
            Err(e) => {
                eprintln!("hangar-proxy: issuing a host-CA certificate for {name}: {e}");
                None
            }
        }
    }

    fn load_stored(&self, hostname: &str, source: &str, c: &StoredCert) -> Result<Served, String> {
        let sealer = self.sealer.as_ref().ok_or("no key to open stored keys")?;
        let chain = CertificateDer::pem_slice_iter(c.chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("chain: {e}"))?;
        if chain.is_empty() {
            return Err("empty chain".into());
        }
        let key_pem = sealer
            .open(
                &CertificateRecord::key_context(hostname, source),
                &c.key_sealed,
            )
            .map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("key: {e}"))?;
        let key = CertifiedKey::from_der(chain, key, &self.provider).map_err(|e| e.to_string())?;
        Ok(self.served(key, c.not_after))
    }

    /// The stored certificate to serve for a custom hostname: custom while valid, then ACME.
    fn stored_for(&self, rec: &CertificateRecord, now: i64) -> Option<Served> {
        for (source, c) in [("custom", &rec.custom), ("acme", &rec.acme)] {
            let Some(c) = c.as_ref().filter(|c| c.not_after > now) else {
                continue;
            };
            let k = (rec.hostname.clone(), source, rec.revision);
            if let Some(hit) = lock(&self.stored).get(&k) {
                match hit {
                    Some(s) => return Some(s.clone()),
                    None => continue,
                }
            }
            let loaded = self.load_stored(&rec.hostname, source, c);
            if let Err(e) = &loaded {
                eprintln!(
                    "hangar-proxy: the {source} certificate of {} can not be served: {e}",
                    rec.hostname
                );
            }
            let loaded = loaded.ok();
            let mut m = lock(&self.stored);
            bounded(&mut m);
            m.insert(k, loaded.clone());
            if loaded.is_some() {
                return loaded;
            }
        }
        None
    }

    fn config(
        &self,
        cert: &Served,
        versions: &[&'static SupportedProtocolVersion],
        alpn: Vec<Vec<u8>>,
    ) -> Result<Arc<ServerConfig>, rustls::Error> {
        let bits = versions
            .iter()
            .map(|v| {
                if v.version == rustls::ProtocolVersion::TLSv1_3 {
                    2
                } else {
                    1
                }
            })
            .fold(0u8, |a, b| a | b);
        let key = (cert.id, bits, alpn.clone());
        if let Some(c) = lock(&self.configs).get(&key) {
            return Ok(c.clone());
        }
        let mut c = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(cert.key.clone())));
        c.alpn_protocols = alpn;
        let c = Arc::new(c);
        let mut m = lock(&self.configs);
        bounded(&mut m);
        m.insert(key, c.clone());
        Ok(c)
    }

    /// The configuration answering a TLS-ALPN-01 validation with `cert`.
    fn challenge_config(
        &self,
        cert: Arc<CertifiedKey>,
    ) -> Result<Arc<ServerConfig>, rustls::Error> {
        let mut c = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(rustls::ALL_VERSIONS)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Fixed(cert)));
        c.alpn_protocols = vec![ACME_TLS_ALPN.to_vec()];
        Ok(Arc::new(c))
    }

    /// Picks the app, certificate and options for a ClientHello's SNI on `port`.
    fn choose(
        &self,
        snap: &Catalog,
        domain: &str,
        sni: Option<&str>,
        port: u16,
        seen: &mut String,
    ) -> Result<Choice, Fail> {
        let now = now_ms();
        if let Some(h) = sni {
            if let Some(app) = app_from_host(h, domain)
                && let Some(entry) = snap.apps.get(&app)
            {
                seen.clear();
                seen.push_str(h);
                return Ok(Choice {
                    cert: self.minted(h).ok_or(Fail::NoCert)?,
                    options: tls_options(entry, port),
                    app,
                });
            }
            if let Some(rec) = snap.hostname(h) {
                seen.clear();
                seen.push_str(h);
                let options = snap
                    .apps
                    .get(&rec.app)
                    .map(|a| tls_options(a, port))
                    .unwrap_or_default();
                let cert = match self.stored_for(rec, now) {
                    Some(c) => c,
                    None if options.default_self_signed == Some(true) => {
                        self.minted(h).ok_or(Fail::NoCert)?
                    }
                    None => return Err(Fail::NoCert),
                };
                return Ok(Choice {
                    app: rec.app.clone(),
                    cert,
                    options,
                });
            }
        }
        let mut apps: Vec<&Arc<AppEntry>> = snap.apps.values().collect();
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        for a in apps {
            let options = tls_options(a, port);
            if options.default_self_signed == Some(true) {
                let name = format!("{}.{domain}", a.name);
                return Ok(Choice {
                    app: a.name.clone(),
                    cert: self.minted(&name).ok_or(Fail::NoCert)?,
                    options,
                });
            }
        }
        Err(Fail::UnknownName)
    }
}

/// The `tls_options` of `app`'s service on public `port` (from its first machine serving it).
pub(crate) fn tls_options(app: &AppEntry, port: u16) -> TlsOptions {
    let p = i64::from(port);
    app.machines
        .iter()
        .find_map(|m| {
            m.service_for(port).and_then(|s| {
                s.ports
                    .iter()
                    .find(|mp| {
                        mp.port == Some(p)
                            || matches!((mp.start_port, mp.end_port), (Some(a), Some(b)) if a <= p && p <= b)
                    })
                    .and_then(|mp| mp.tls_options.clone())
            })
        })
        .unwrap_or_default()
}

fn versions(o: &TlsOptions) -> Vec<&'static SupportedProtocolVersion> {
    let mut out = Vec::new();
    for v in &o.versions {
        let v = v.trim().to_ascii_lowercase().replace(['_', ' '], "");
        let pick = match v.trim_start_matches("tlsv").trim_start_matches("tls") {
            "1.2" | "12" => &rustls::version::TLS12,
            "1.3" | "13" => &rustls::version::TLS13,
            _ => continue,
        };
        if !out
            .iter()
            .any(|x: &&SupportedProtocolVersion| x.version == pick.version)
        {
            out.push(pick);
        }
    }
    if out.is_empty() {
        out = vec![&rustls::version::TLS13, &rustls::version::TLS12];
    }
    out
}

/// What a TLS port serves once the handshake is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Then {
    /// The `http` handler (`tls` + `http`).
    Http,
    /// Raw TCP to the app of the SNI (`tls` alone).
    Tcp,
    /// PostgreSQL (`pg_tls`): raw TCP, with ALPN `postgresql`. `direct`: the client began
    /// with TLS rather than an `SSLRequest`, and then (as PostgreSQL 17 demands, against
    /// cross-protocol attacks) it must have agreed on ALPN `postgresql`.
    Postgres { direct: bool },
}

/// ALPN `postgresql` (PostgreSQL 17's registered protocol name).
pub const POSTGRES_ALPN: &[u8] = b"postgresql";

fn alpn(o: &TlsOptions, then: Then) -> Vec<Vec<u8>> {
    if !o.alpn.is_empty() {
        let mut out: Vec<Vec<u8>> = o.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        // PostgreSQL 17 clients offer `postgresql` and refuse a server that picks another.
        if matches!(then, Then::Postgres { .. }) && !out.iter().any(|p| p == POSTGRES_ALPN) {
            out.push(POSTGRES_ALPN.to_vec());
        }
        return out;
    }
    match then {
        Then::Http => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        Then::Tcp => Vec::new(),
        Then::Postgres { .. } => vec![POSTGRES_ALPN.to_vec()],
    }
}

/// A finished handshake.
enum Accepted {
    /// A TLS-ALPN-01 validation was answered; nothing more to do.
    Challenge,
    /// A client connection to serve.
    Conn {
        stream: Box<tokio_rustls::server::TlsStream<Client>>,
        app: String,
        version: &'static str,
    },
}

async fn handshake(
    proxy: &Arc<Proxy>,
    stream: Client,
    port: u16,
    then: Then,
    seen: &mut String,
) -> Result<Accepted, Fail> {
    let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream)
        .await
        .map_err(Fail::Handshake)?;
    let hello = start.client_hello();
    let sni = hello.server_name().map(str::to_ascii_lowercase);
    let offers_acme = hello
        .alpn()
        .is_some_and(|mut a| a.any(|p| p == ACME_TLS_ALPN));
    let tls = &proxy.tls;
    if offers_acme {
        let cert = sni
            .as_deref()
            .and_then(|h| proxy.challenges.alpn(h))
            .ok_or(Fail::UnknownName)?;
        let cfg = tls
            .challenge_config(cert)
            .map_err(|e| Fail::Handshake(std::io::Error::other(e)))?;
        let mut s = start.into_stream(cfg).await.map_err(Fail::Handshake)?;
        let _ = s.shutdown().await;
        return Ok(Accepted::Challenge);
    }
    let snap = proxy.catalog.view();
    let choice = tls.choose(&snap, &proxy.config.domain, sni.as_deref(), port, seen)?;
    let cfg = tls
        .config(
            &choice.cert,
            &versions(&choice.options),
            alpn(&choice.options, then),
        )
        .map_err(|e| Fail::Handshake(std::io::Error::other(e)))?;
    let stream = start.into_stream(cfg).await.map_err(Fail::Handshake)?;
    if then == (Then::Postgres { direct: true })
        && stream.get_ref().1.alpn_protocol() != Some(POSTGRES_ALPN)
    {
        return Err(Fail::Handshake(std::io::Error::other(
            "direct TLS to a pg_tls port without ALPN postgresql",
        )));
    }
    let version = match stream.get_ref().1.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "other",
    };
    Ok(Accepted::Conn {
        stream: Box::new(stream),
        app: choice.app,
        version,
    })
}

/// Serves one client connection to a TLS port: the handshake (done by `deadline`), then the
/// `http` handler or raw TCP to the chosen app's machine, as `then` says.
pub(crate) async fn serve(
    proxy: Arc<Proxy>,
    stream: Client,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    port: u16,
    then: Then,
    deadline: tokio::time::Instant,
) {
    let started = Instant::now();
    let addrs = local.map(|local| (peer, local));
    let mut seen = "unknown".to_string();
    let outcome =
        tokio::time::timeout_at(deadline, handshake(&proxy, stream, port, then, &mut seen)).await;
    let (code, _why) = match outcome {
        Ok(Ok(Accepted::Challenge)) => return,
        Ok(Ok(Accepted::Conn {
            stream,
            app,
            version,
        })) => {
            proxy.metrics.tls_handshake(version, started.elapsed());
            if then == Then::Http {
                let conn = crate::http::Conn::new(peer, port, true, None, &proxy.config.region);
                crate::h1::serve(proxy, *stream, conn).await;
            } else {
                let pg = matches!(then, Then::Postgres { .. });
                crate::tcp::serve(proxy, *stream, port, Some(app), addrs, pg).await;
            }
            return;
        }
        Err(_) => ("PT08", "handshake timeout".to_string()),
        Ok(Err(Fail::NoCert)) => ("PT06", "no certificate for the name".to_string()),
        Ok(Err(Fail::UnknownName)) => ("PT05", "unknown server name".to_string()),
        Ok(Err(Fail::Handshake(e))) => ("PT04", e.to_string()),
    };
    proxy.metrics.tls_handshake_error(&seen);
    proxy.metrics.error("", code);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier as _;

    #[test]
    fn versions_and_alpn_follow_the_options() {
        let o = TlsOptions {
            alpn: vec!["http/1.1".into()],
            versions: vec!["TLSv1.3".into()],
            default_self_signed: None,
        };
        let v = versions(&o);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].version, rustls::ProtocolVersion::TLSv1_3);
        assert_eq!(alpn(&o, Then::Http), vec![b"http/1.1".to_vec()]);
        let d = TlsOptions::default();
        assert_eq!(versions(&d).len(), 2);
        assert_eq!(
            alpn(&d, Then::Http),
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(alpn(&d, Then::Tcp).is_empty());
        assert_eq!(
            alpn(&d, Then::Postgres { direct: true }),
            vec![b"postgresql".to_vec()]
        );
        assert_eq!(
            alpn(&o, Then::Postgres { direct: false }),
            vec![b"http/1.1".to_vec(), b"postgresql".to_vec()]
        );
        let junk = TlsOptions {
            versions: vec!["TLSv1.0".into(), "SSLv3".into()],
            ..TlsOptions::default()
        };
        assert_eq!(versions(&junk).len(), 2, "only 1.2 and 1.3 exist here");
    }

    #[test]
    fn the_host_ca_persists_and_signs_names() {
        let dir = std::env::temp_dir().join(format!("hangar-proxy-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = HostCa::load_or_create(&dir).expect("ca");
        let b = HostCa::load_or_create(&dir).expect("ca again");
        assert_eq!(a.pem(), b.pem(), "the same CA after a restart");
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join("ca.key"))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (key, not_after) = b.issue("web.localhost", LEAF_LIFETIME).expect("issue");
        assert!(not_after > now_ms());
        let info = hangar_domain::tls::CertInfo::from_der(&key.cert[0]).expect("parse");
        assert_eq!(info.dns_names, vec!["web.localhost".to_string()]);
        assert!(
            info.issuer
                .is_some_and(|i| i.starts_with("Hangar host CA "))
        );
        assert_eq!(info.key_type, "ecdsa");
        assert!(key.keys_match().is_ok());
        // A client trusting ca.pem verifies it.
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(a.pem().as_bytes()).expect("pem"))
            .expect("root");
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let name = rustls::pki_types::ServerName::try_from("web.localhost").expect("name");
        verifier
            .verify_server_cert(
                &key.cert[0],
                &key.cert[1..],
                &name,
                &[],
                rustls::pki_types::UnixTime::now(),
            )
            .expect("verifies");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
