//! ACME (RFC 8555) certificates for custom hostnames: a small client (JWS ES256 with ring,
//! over reqwest) and the manager that issues and renews.
//!
//! The manager follows the catalog: every hostname with `acme_requested` that has no ACME
//! certificate, or one expiring within `renew_before`, and whose `acme_next_attempt_at` has
//! come, gets an order (a few at once). Challenges are answered by this proxy: TLS-ALPN-01
//! by the TLS listeners ([`crate::tls`], ALPN `acme-tls/1`), HTTP-01 by the `http` handler
//! (`/.well-known/acme-challenge/<token>`), DNS-01 by the ACME DNS zone's own server
//! ([`crate::acme_dns`]): the hostname's `_acme-challenge` record is a CNAME the user set to
//! [`hangar_domain::tls::acme_dns_target`] in that zone. The preferred challenge types are
//! tried in turn, one per attempt; a wildcard name (`*.example.com`) can only be validated
//! by DNS-01, so it gets DNS-01 alone (and fails with the reason when no zone is set). A
//! success stores the chain and the sealed key (a `certificate` change: served within
//! milliseconds); a failure records the error, counts the attempt and
//! sets the next one with exponential backoff (`retry_base` doubling up to `retry_max`);
//! after `max_attempts` in a row the hostname is `failed` and retried daily, or at once by
//! `POST …/certificates/{hostname}/check`. The account key is kept sealed in the store, one
//! account per directory URL.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hangar_domain::tls::CertInfo;
use hangar_store::{AcmeAccountRecord, CertificateRecord, Sealer, Store, StoreError, StoredCert};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use rustls::sign::CertifiedKey;
use serde_json::{Value, json};

use crate::Proxy;
use crate::tls::now_ms;

/// A challenge type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// `http-01`: a token over plain HTTP on port 80.
    Http01,
    /// `tls-alpn-01`: a certificate over TLS with ALPN `acme-tls/1` on port 443.
    TlsAlpn01,
    /// `dns-01`: a TXT record at `_acme-challenge.<name>`, through the user's CNAME to the
    /// ACME DNS zone.
    Dns01,
}

impl Challenge {
    /// The ACME name.
    pub fn as_str(self) -> &'static str {
        match self {
            Challenge::Http01 => "http-01",
            Challenge::TlsAlpn01 => "tls-alpn-01",
            Challenge::Dns01 => "dns-01",
        }
    }

    /// From the ACME name.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "http-01" => Some(Challenge::Http01),
            "tls-alpn-01" => Some(Challenge::TlsAlpn01),
            "dns-01" => Some(Challenge::Dns01),
            _ => None,
        }
    }
}

/// ACME settings.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The directory URL.
    pub directory: String,
    /// Account contacts (`mailto:…`).
    pub contact: Vec<String>,
    /// Extra CA certificates (PEM) trusted for talking to the directory (a private CA).
    pub trust_pem: Option<String>,
    /// Challenge types in order of preference; attempts go round them.
    pub challenges: Vec<Challenge>,
    /// Renew a certificate this long before it expires.
    pub renew_before: Duration,
    /// Wait after the first failure; doubles with each further one…
    pub retry_base: Duration,
    /// …up to this.
    pub retry_max: Duration,
    /// Failures in a row before a hostname is `failed` (then retried daily, or by `check`).
    pub max_attempts: u32,
    /// Between polls of authorizations and orders.
    pub poll_interval: Duration,
    /// Longest an order may take, start to certificate.
    pub order_timeout: Duration,
    /// Orders at once.
    pub max_concurrent: usize,
    /// The zone whose server this proxy is, for DNS-01 (none: no DNS-01).
    pub dns: Option<AcmeDns>,
}

/// The ACME DNS zone: the operator delegates it (NS) to this host, and users point their
/// `_acme-challenge` names into it (CNAME).
#[derive(Debug, Clone)]
pub struct AcmeDns {
    /// The zone (`acme.hangar.example.net`).
    pub zone: String,
    /// Where its server listens (UDP and TCP): the address the zone's NS names, port 53;
    /// port 0 in tests.
    pub listen: std::net::SocketAddr,
}

impl Default for AcmeConfig {
    fn default() -> Self {
        Self {
            directory: String::new(),
            contact: Vec::new(),
            trust_pem: None,
            challenges: vec![Challenge::TlsAlpn01, Challenge::Http01],
            renew_before: Duration::from_secs(30 * 86_400),
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            max_attempts: 8,
            poll_interval: Duration::from_secs(1),
            order_timeout: Duration::from_secs(180),
            max_concurrent: 4,
            dns: None,
        }
    }
}

/// Challenge responses out now, for the listeners to answer.
#[derive(Debug, Default)]
pub struct Challenges {
    /// token → (hostname, key authorization)
    http: Mutex<HashMap<String, (String, String)>>,
    /// hostname → TLS-ALPN-01 certificate
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// DNS-01 record name (in the ACME DNS zone, lowercase) → TXT values, one per
    /// challenge out (a name and its wildcard can be validated at once)
    dns: Mutex<HashMap<String, Vec<String>>>,
    /// Where the ACME DNS zone's server listens, once it does.
    dns_addr: Mutex<Option<std::net::SocketAddr>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Challenges {
    /// The key authorization for an HTTP-01 `token` asked for at `host`.
    pub fn http01(&self, token: &str, host: &str) -> Option<String> {
        lock(&self.http)
            .get(token)
            .filter(|(h, _)| h == host)
            .map(|(_, ka)| ka.clone())
    }

    /// The TLS-ALPN-01 certificate for `host`.
    pub(crate) fn alpn(&self, host: &str) -> Option<Arc<CertifiedKey>> {
        lock(&self.alpn).get(host).cloned()
    }

    /// The DNS-01 TXT values out for `name` (lowercase, no trailing dot).
    pub fn dns01(&self, name: &str) -> Vec<String> {
        lock(&self.dns).get(name).cloned().unwrap_or_default()
    }

    /// Where the ACME DNS zone's server listens (UDP and TCP), once it does.
    pub fn dns_addr(&self) -> Option<std::net::SocketAddr> {
        *lock(&self.dns_addr)
    }

    pub(crate) fn set_dns_addr(&self, addr: Option<std::net::SocketAddr>) {
        *lock(&self.dns_addr) = addr;
    }

    /// Puts DNS-01 TXT `value` out at `name`.
    pub fn put_dns01(&self, name: &str, value: &str) {
        lock(&self.dns)
            .entry(name.to_string())
            .or_default()
            .push(value.to_string());
    }

    /// Withdraws one DNS-01 TXT `value` from `name`.
    pub(crate) fn take_dns01(&self, name: &str, value: &str) {
        let mut dns = lock(&self.dns);
        if let Some(values) = dns.get_mut(name) {
            if let Some(i) = values.iter().position(|v| v == value) {
                values.remove(i);
            }
            if values.is_empty() {
                dns.remove(name);
            }
        }
    }
}

/// A challenge response, withdrawn when dropped.
struct Installed<'a> {
    challenges: &'a Challenges,
    token: Option<String>,
    host: Option<String>,
    /// (record name, TXT value)
    txt: Option<(String, String)>,
}

impl Drop for Installed<'_> {
    fn drop(&mut self) {
        if let Some(t) = &self.token {
            lock(&self.challenges.http).remove(t);
        }
        if let Some(h) = &self.host {
            lock(&self.challenges.alpn).remove(h);
        }
        if let Some((name, value)) = &self.txt {
            self.challenges.take_dns01(name, value);
        }
    }
}

/// The TXT value of a DNS-01 challenge (RFC 8555 §8.4): base64url of the SHA-256 of the key
/// authorization.
pub fn dns01_value(key_authorization: &str) -> String {
    b64(ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes()).as_ref())
}

/// What went wrong talking ACME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeError {
    /// The problem type (`urn:ietf:params:acme:error:…`), when the server sent one.
    pub code: Option<String>,
    /// What happened.
    pub message: String,
}

impl std::fmt::Display for AcmeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.code {
            Some(c) => write!(f, "{c} {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn err(message: impl Into<String>) -> AcmeError {
    AcmeError {
        code: None,
        message: message.into(),
    }
}

fn problem(v: &Value, fallback: &str) -> AcmeError {
    let mut message = v["detail"].as_str().unwrap_or(fallback).to_string();
    if let Some(subs) = v["subproblems"].as_array() {
        for s in subs.iter().take(4) {
            if let Some(d) = s["detail"].as_str() {
                message.push_str("; ");
                message.push_str(d);
            }
        }
    }
    AcmeError {
        code: v["type"].as_str().map(str::to_string),
        message: message.chars().take(1000).collect(),
    }
}

/// An error with its causes (reqwest's own message leaves them out).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn b64(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

/// An ECDSA P-256 account key: signs JWS (ES256) and names itself as a JWK.
pub struct AccountKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
    rng: SystemRandom,
}

impl std::fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountKey")
            .field("jwk", &self.jwk())
            .finish_non_exhaustive()
    }
}

impl AccountKey {
    /// A new random key.
    pub fn generate() -> Result<Self, AcmeError> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| err("generating the account key"))?;
        Self::from_pkcs8(doc.as_ref())
    }

    /// The key from its PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, AcmeError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| err(format!("account key: {e}")))?;
        Ok(Self {
            pair,
            pkcs8: der.to_vec(),
            rng,
        })
    }

    /// The PKCS#8 DER (to store, sealed).
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    fn xy(&self) -> (String, String) {
        // Uncompressed point: 0x04 ‖ X (32) ‖ Y (32).
        let p = self.pair.public_key().as_ref();
        (b64(&p[1..33]), b64(&p[33..65]))
    }

    /// The public key as a JWK (RFC 7518 §6.2).
    pub fn jwk(&self) -> Value {
        let (x, y) = self.xy();
        json!({"crv": "P-256", "kty": "EC", "x": x, "y": y})
    }

    /// The JWK thumbprint (RFC 7638): SHA-256 of the canonical JWK, base64url.
    pub fn thumbprint(&self) -> String {
        let (x, y) = self.xy();
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        b64(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// `token.thumbprint` (RFC 8555 §8.1).
    pub fn key_authorization(&self, token: &str) -> String {
        format!("{token}.{}", self.thumbprint())
    }

    /// A flattened JWS (RFC 8555 §6.2): `protected` header as given, `payload` (none for
    /// POST-as-GET), ES256 signature.
    pub fn sign(&self, protected: &Value, payload: Option<&Value>) -> Result<Value, AcmeError> {
        let protected = b64(protected.to_string().as_bytes());
        let payload = payload.map_or(String::new(), |p| b64(p.to_string().as_bytes()));
        let input = format!("{protected}.{payload}");
        let sig = self
            .pair
            .sign(&self.rng, input.as_bytes())
            .map_err(|_| err("signing"))?;
        Ok(json!({"protected": protected, "payload": payload, "signature": b64(sig.as_ref())}))
    }
}

/// A reply from the ACME server.
struct Reply {
    status: u16,
    location: Option<String>,
    retry_after: Option<Duration>,
    nonce: Option<String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Result<Value, AcmeError> {
        serde_json::from_slice(&self.body)
            .map_err(|e| err(format!("invalid JSON from the CA: {e}")))
    }
}

/// A session with one directory as one account.
struct Session {
    http: reqwest::Client,
    new_nonce: String,
    new_account: String,
    new_order: String,
    key: AccountKey,
    kid: String,
    nonces: Mutex<Vec<String>>,
}

/// Most response bytes read from the CA.
const MAX_REPLY: usize = 1 << 20;

async fn read(resp: reqwest::Response) -> Result<Reply, AcmeError> {
    let status = resp.status().as_u16();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let location = header("location");
    let retry_after = header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let nonce = header("replay-nonce");
    let mut body = Vec::new();
    let mut resp = resp;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| err(format!("reading from the CA: {}", chain(&e))))?
    {
        if body.len() + chunk.len() > MAX_REPLY {
            return Err(err("the CA's reply is too large"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        location,
        retry_after,
        nonce,
        body,
    })
}

fn http_client(cfg: &AcmeConfig) -> Result<reqwest::Client, AcmeError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("hangar/", env!("CARGO_PKG_VERSION"), " acme"));
    if let Some(pem) = &cfg.trust_pem {
        for c in reqwest::Certificate::from_pem_bundle(pem.as_bytes())
            .map_err(|e| err(format!("trusted CA certificates: {e}")))?
        {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(|e| err(format!("HTTP client: {e}")))
}

impl Session {
    /// Fetches the directory and finds (or registers) the account.
    async fn open(cfg: &AcmeConfig, store: &dyn Store, sealer: &Sealer) -> Result<Self, AcmeError> {
        let http = http_client(cfg)?;
        let dir = http
            .get(&cfg.directory)
            .send()
            .await
            .map_err(|e| err(format!("ACME directory {}: {}", cfg.directory, chain(&e))))?;
        let dir = read(dir).await?;
        if dir.status != 200 {
            return Err(err(format!(
                "ACME directory {} answered {}",
                cfg.directory, dir.status
            )));
        }
        let d = dir.json()?;
        let url = |k: &str| {
            d[k].as_str()
                .map(str::to_string)
                .ok_or_else(|| err(format!("the ACME directory has no {k}")))
        };
        let ctx = AcmeAccountRecord::key_context(&cfg.directory);
        let stored = store
            .acme_account(&cfg.directory)
            .map_err(|e| err(format!("store: {e}")))?;
        let (key, kid) = match stored.and_then(|a| {
            let der = sealer.open(&ctx, &a.key_sealed).ok()?;
            Some((AccountKey::from_pkcs8(&der).ok()?, a.url))
        }) {
            Some((k, kid)) => (k, kid),
            None => (AccountKey::generate()?, String::new()),
        };
        let mut s = Self {
            http,
            new_nonce: url("newNonce")?,
            new_account: url("newAccount")?,
            new_order: url("newOrder")?,
            key,
            kid,
            nonces: Mutex::new(Vec::new()),
        };
        // Registering is idempotent for a known key (the CA answers 200 with its URL), so an
        // account the CA forgot (a test CA restarted) is registered again.
        let mut payload = json!({"termsOfServiceAgreed": true});
        if !cfg.contact.is_empty() {
            payload["contact"] = json!(cfg.contact);
        }
        s.kid.clear();
        let r = s.post(&s.new_account.clone(), Some(&payload)).await?;
        if !(r.status == 200 || r.status == 201) {
            return Err(problem(&r.json().unwrap_or(Value::Null), "account refused"));
        }
        s.kid = r
            .location
            .clone()
            .ok_or_else(|| err("the CA gave the account no URL"))?;
        let sealed = sealer
            .seal(&ctx, s.key.pkcs8())
            .map_err(|e| err(e.to_string()))?;
        store
            .put_acme_account(&AcmeAccountRecord {
                directory: cfg.directory.clone(),
                key_sealed: sealed,
                url: s.kid.clone(),
                created_at: now_ms(),
            })
            .map_err(|e| err(format!("store: {e}")))?;
        Ok(s)
    }

    async fn nonce(&self) -> Result<String, AcmeError> {
        if let Some(n) = lock(&self.nonces).pop() {
            return Ok(n);
        }
        let r = self
            .http
            .head(&self.new_nonce)
            .send()
            .await
            .map_err(|e| err(format!("newNonce: {}", chain(&e))))?;
        r.headers()
            .get("replay-nonce")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| err("the CA gave no nonce"))
    }

    /// A signed POST (`payload` None: POST-as-GET), retried on `badNonce`.
    async fn post(&self, url: &str, payload: Option<&Value>) -> Result<Reply, AcmeError> {
        for _ in 0..6 {
            let nonce = self.nonce().await?;
            let mut protected = json!({"alg": "ES256", "nonce": nonce, "url": url});
            if self.kid.is_empty() {
                protected["jwk"] = self.key.jwk();
            } else {
                protected["kid"] = json!(self.kid);
            }
            let body = self.key.sign(&protected, payload)?;
            let resp = self
                .http
                .post(url)
                .header("content-type", "application/jose+json")
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| err(format!("{url}: {}", chain(&e))))?;
            let r = read(resp).await?;
            if let Some(n) = r.nonce.clone() {
                let mut ns = lock(&self.nonces);
                ns.push(n);
                if ns.len() > 16 {
                    ns.remove(0);
                }
            }
            if r.status >= 400 {
                let p = problem(&r.json().unwrap_or(Value::Null), "request refused");
                if p.code.as_deref() == Some("urn:ietf:params:acme:error:badNonce") {
                    continue;
                }
                return Err(AcmeError {
                    message: format!("{} (HTTP {})", p.message, r.status),
                    ..p
                });
            }
            return Ok(r);
        }
        Err(err("the CA kept refusing our nonces"))
    }

    /// Polls a resource (POST-as-GET) until `done` says it is done, bounded by `deadline`.
    async fn poll(
        &self,
        url: &str,
        interval: Duration,
        deadline: tokio::time::Instant,
        what: &str,
        done: impl Fn(&Value) -> Result<bool, AcmeError>,
    ) -> Result<Value, AcmeError> {
        loop {
            let r = self.post(url, None).await?;
            let v = r.json()?;
            if done(&v)? {
                return Ok(v);
            }
            let wait = r
                .retry_after
                .unwrap_or(interval)
                .clamp(interval, Duration::from_secs(10));
            if tokio::time::Instant::now() + wait > deadline {
                return Err(err(format!(
                    "{what} still {} after the order timeout",
                    v["status"].as_str().unwrap_or("?")
                )));
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One order for `host`, answering with `prefer`'s first offered type.
    async fn issue(
        &self,
        host: &str,
        app: &str,
        prefer: &[Challenge],
        challenges: &Challenges,
        cfg: &AcmeConfig,
    ) -> Result<Issued, AcmeError> {
        // The CA offers every type, so the first one is what this attempt uses. Found out
        // before the CA is asked: a doomed order counts against its limits.
        if prefer.first() == Some(&Challenge::Dns01) {
            if cfg.dns.is_none() {
                return Err(err(format!(
                    "{host}: DNS-01 needs an ACME DNS zone (hangard --acme-dns-zone)"
                )));
            }
            if challenges.dns_addr().is_none() {
                return Err(err(format!(
                    "{host}: the ACME DNS zone's server is not listening (see hangard's log)"
                )));
            }
        }
        let deadline = tokio::time::Instant::now() + cfg.order_timeout;
        let r = self
            .post(
                &self.new_order.clone(),
                Some(&json!({"identifiers": [{"type": "dns", "value": host}]})),
            )
            .await?;
        let order_url = r
            .location
            .clone()
            .ok_or_else(|| err("the CA gave the order no URL"))?;
        let order = r.json()?;
        let mut used = None;
        let authzs: Vec<String> = order["authorizations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        for authz_url in authzs {
            let authz = self.post(&authz_url, None).await?.json()?;
            match authz["status"].as_str() {
                Some("valid") => continue,
                Some("pending") => {}
                other => {
                    return Err(err(format!(
                        "authorization for {host} is {}",
                        other.unwrap_or("?")
                    )));
                }
            }
            let offered = authz["challenges"].as_array().cloned().unwrap_or_default();
            let (kind, ch) = prefer
                .iter()
                .find_map(|k| {
                    offered
                        .iter()
                        .find(|c| c["type"] == k.as_str())
                        .map(|c| (*k, c.clone()))
                })
                .ok_or_else(|| {
                    err(format!(
                        "the CA offers none of the challenge types {:?} for {host}",
                        prefer.iter().map(|c| c.as_str()).collect::<Vec<_>>()
                    ))
                })?;
            let token = ch["token"]
                .as_str()
                .filter(|t| {
                    !t.is_empty()
                        && t.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
                .ok_or_else(|| err("a challenge without a valid token"))?
                .to_string();
            let ch_url = ch["url"]
                .as_str()
                .ok_or_else(|| err("a challenge without a URL"))?
                .to_string();
            let ka = self.key.key_authorization(&token);
            let _installed = match kind {
                Challenge::Http01 => {
                    lock(&challenges.http).insert(token.clone(), (host.to_string(), ka));
                    Installed {
                        challenges,
                        token: Some(token),
                        host: None,
                        txt: None,
                    }
                }
                Challenge::TlsAlpn01 => {
                    let cert = alpn_certificate(host, &ka)?;
                    lock(&challenges.alpn).insert(host.to_string(), Arc::new(cert));
                    Installed {
                        challenges,
                        token: None,
                        host: Some(host.to_string()),
                        txt: None,
                    }
                }
                Challenge::Dns01 => {
                    let zone = cfg.dns.as_ref().ok_or_else(|| {
                        err("DNS-01 needs an ACME DNS zone (hangard --acme-dns-zone)")
                    })?;
                    let name = hangar_domain::tls::acme_dns_target(host, app, &zone.zone);
                    let value = dns01_value(&ka);
                    challenges.put_dns01(&name, &value);
                    Installed {
                        challenges,
                        token: None,
                        host: None,
                        txt: Some((name, value)),
                    }
                }
            };
            self.post(&ch_url, Some(&json!({}))).await?;
            self.poll(
                &authz_url,
                cfg.poll_interval,
                deadline,
                "authorization",
                |v| match v["status"].as_str() {
                    Some("valid") => Ok(true),
                    Some("pending" | "processing") => Ok(false),
                    _ => {
                        let detail = v["challenges"]
                            .as_array()
                            .and_then(|cs| cs.iter().find(|c| c["error"].is_object()))
                            .map(|c| problem(&c["error"], "validation failed"));
                        Err(detail.unwrap_or_else(|| {
                            err(format!(
                                "authorization for {host} is {}",
                                v["status"].as_str().unwrap_or("?")
                            ))
                        }))
                    }
                },
            )
            .await?;
            used = Some(kind);
        }
        let order = self
            .poll(
                &order_url,
                cfg.poll_interval,
                deadline,
                "order",
                |v| match v["status"].as_str() {
                    Some("ready" | "valid") => Ok(true),
                    Some("pending" | "processing") => Ok(false),
                    _ => Err(problem(&v["error"], "the order is invalid")),
                },
            )
            .await?;
        let key = rcgen::KeyPair::generate().map_err(|e| err(e.to_string()))?;
        let mut cert_url = order["certificate"].as_str().map(str::to_string);
        if order["status"] == "ready" {
            let mut p = rcgen::CertificateParams::new(vec![host.to_string()])
                .map_err(|e| err(e.to_string()))?;
            let mut dn = rcgen::DistinguishedName::new();
            dn.push(rcgen::DnType::CommonName, host);
            p.distinguished_name = dn;
            let csr = p.serialize_request(&key).map_err(|e| err(e.to_string()))?;
            let finalize = order["finalize"]
                .as_str()
                .ok_or_else(|| err("the order has no finalize URL"))?;
            self.post(finalize, Some(&json!({"csr": b64(csr.der())})))
                .await?;
            let done = self
                .poll(
                    &order_url,
                    cfg.poll_interval,
                    deadline,
                    "order",
                    |v| match v["status"].as_str() {
                        Some("valid") => Ok(true),
                        Some("processing" | "ready") => Ok(false),
                        _ => Err(problem(&v["error"], "the order is invalid")),
                    },
                )
                .await?;
            cert_url = done["certificate"].as_str().map(str::to_string);
        }
        let cert_url = cert_url.ok_or_else(|| err("the order has no certificate URL"))?;
        let chain = self.post(&cert_url, None).await?;
        let chain_pem = String::from_utf8(chain.body).map_err(|_| err("certificate not PEM"))?;
        let key_pem = key.serialize_pem();
        let info = check_issued(host, &chain_pem, &key.serialize_der())?;
        Ok(Issued {
            chain_pem,
            key_pem,
            info,
            challenge: used,
        })
    }
}

/// A certificate just issued.
struct Issued {
    chain_pem: String,
    key_pem: String,
    info: CertInfo,
    challenge: Option<Challenge>,
}

/// The certificate answering TLS-ALPN-01 for `host` (RFC 8737 §3): self-signed, the name as
/// its only SAN, the SHA-256 of the key authorization in a critical acmeIdentifier.
pub fn alpn_certificate(host: &str, key_authorization: &str) -> Result<CertifiedKey, AcmeError> {
    let key = rcgen::KeyPair::generate().map_err(|e| err(e.to_string()))?;
    let mut p =
        rcgen::CertificateParams::new(vec![host.to_string()]).map_err(|e| err(e.to_string()))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
    p.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest.as_ref())];
    let cert = p.self_signed(&key).map_err(|e| err(e.to_string()))?;
    let signing = crate::tls::signing_key(key.serialize_der()).map_err(|e| err(e.to_string()))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

/// Checks a downloaded chain: PEM, for `host`, matching the key we made.
fn check_issued(host: &str, chain_pem: &str, key_pkcs8: &[u8]) -> Result<CertInfo, AcmeError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("the issued chain is not PEM: {e}")))?;
    let leaf = chain
        .first()
        .ok_or_else(|| err("the CA issued an empty chain"))?;
    let info = CertInfo::from_der(leaf).map_err(|e| err(e.to_string()))?;
    if !info.covers(host) {
        return Err(err(format!("the issued certificate does not name {host}")));
    }
    let signing = crate::tls::signing_key(key_pkcs8.to_vec()).map_err(|e| err(e.to_string()))?;
    CertifiedKey::new(chain, signing)
        .keys_match()
        .map_err(|e| err(format!("the issued certificate is not for our key: {e}")))?;
    Ok(info)
}

/// Delay before attempt `attempts + 1` after `attempts` failures in a row.
pub fn backoff(cfg: &AcmeConfig, attempts: u32) -> Duration {
    if attempts >= cfg.max_attempts {
        return cfg.retry_max.max(Duration::from_secs(86_400));
    }
    let factor = 1u32 << attempts.saturating_sub(1).min(20);
    (cfg.retry_base * factor).min(cfg.retry_max)
}

/// Whether a hostname needs an order now.
pub fn due(rec: &CertificateRecord, cfg: &AcmeConfig, now: i64) -> bool {
    rec.acme_requested
        && rec.acme_next_attempt_at <= now
        && rec
            .acme
            .as_ref()
            .is_none_or(|c| c.not_after - now < cfg.renew_before.as_millis() as i64)
}

/// Re-reads a hostname and applies `f` until the write wins; `None` when it is gone or no
/// longer wants ACME.
fn update(
    store: &dyn Store,
    hostname: &str,
    f: impl Fn(&mut CertificateRecord),
) -> Option<CertificateRecord> {
    for _ in 0..8 {
        let mut r = store.get_certificate(hostname).ok()??;
        if !r.acme_requested {
            return None;
        }
        let rev = r.revision;
        f(&mut r);
        r.updated_at = now_ms();
        match store.update_certificate(&r, rev) {
            Ok(r) => return Some(r),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => {
                eprintln!("hangar-proxy: acme: recording {hostname}: {e}");
                return None;
            }
        }
    }
    None
}

type SessionCell = Arc<tokio::sync::Mutex<Option<Arc<Session>>>>;

/// Issues (or renews) the certificate of one hostname and records the outcome.
async fn order_one(proxy: Arc<Proxy>, cfg: AcmeConfig, sessions: SessionCell, hostname: String) {
    let store = proxy.store.clone();
    let Some(sealer) = proxy.config.tls.sealer.clone() else {
        return;
    };
    // The catalog may lag the store by a few milliseconds (e.g. just after this manager's own
    // last write): decide on the stored record.
    match store.get_certificate(&hostname) {
        Ok(Some(fresh)) if due(&fresh, &cfg, now_ms()) => {}
        _ => return,
    }
    let Some(rec) = update(store.as_ref(), &hostname, |r| {
        r.acme_status = "issuing".into();
    }) else {
        return;
    };
    let renewal = rec.acme.is_some();
    let prefer: Vec<Challenge> = if hangar_domain::tls::is_wildcard(&hostname) {
        // Only DNS-01 validates a wildcard (RFC 8555 §7.1.3); without a zone the order fails
        // with the reason.
        vec![Challenge::Dns01]
    } else {
        let n = cfg.challenges.len().max(1);
        let start = rec.acme_attempts as usize % n;
        cfg.challenges[start..]
            .iter()
            .chain(&cfg.challenges[..start])
            .copied()
            .collect()
    };
    let session = {
        let mut cell = sessions.lock().await;
        match cell.as_ref() {
            Some(s) => Ok(s.clone()),
            None => match Session::open(&cfg, store.as_ref(), &sealer).await {
                Ok(s) => {
                    let s = Arc::new(s);
                    *cell = Some(s.clone());
                    Ok(s)
                }
                Err(e) => Err(e),
            },
        }
    };
    let result = match session {
        Ok(s) => {
            s.issue(&hostname, &rec.app, &prefer, &proxy.challenges, &cfg)
                .await
        }
        Err(e) => Err(e),
    };
    let kind = if renewal { "renew" } else { "issue" };
    match result {
        Ok(issued) => {
            let sealed = match sealer.seal(
                &CertificateRecord::key_context(&hostname, "acme"),
                issued.key_pem.as_bytes(),
            ) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("hangar-proxy: acme: sealing the key of {hostname}: {e}");
                    return;
                }
            };
            let now = now_ms();
            let cert = StoredCert {
                chain_pem: issued.chain_pem,
                key_sealed: sealed,
                not_after: issued.info.not_after_ms,
                issuer: issued.info.issuer.clone().unwrap_or_default(),
                created_at: now,
            };
            let recorded = update(store.as_ref(), &hostname, |r| {
                r.acme = Some(cert.clone());
                r.acme_status = "ready".into();
                if let Some(c) = issued.challenge {
                    r.acme_challenge = Some(c.as_str().into());
                }
                r.acme_attempts = 0;
                r.acme_next_attempt_at = 0;
                r.acme_error = None;
                r.acme_error_at = None;
            });
            proxy.metrics.acme_order(kind, recorded.is_some());
            eprintln!(
                "hangar-proxy: acme: {kind} {hostname}: certificate until {}",
                hangar_domain::time::rfc3339(issued.info.not_after_ms)
            );
        }
        Err(e) => {
            if e.code.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist")
                || e.code.as_deref() == Some("urn:ietf:params:acme:error:unauthorized")
            {
                // Open the session again next time (a CA that forgot us registers us anew).
                *sessions.lock().await = None;
            }
            proxy.metrics.acme_order(kind, false);
            eprintln!("hangar-proxy: acme: {kind} {hostname}: {e}");
            let now = now_ms();
            update(store.as_ref(), &hostname, |r| {
                r.acme_attempts = r.acme_attempts.saturating_add(1);
                r.acme_next_attempt_at = now + backoff(&cfg, r.acme_attempts).as_millis() as i64;
                r.acme_status = if r.acme_attempts >= cfg.max_attempts {
                    "failed".into()
                } else if r.acme.is_some() {
                    "ready".into()
                } else {
                    "pending".into()
                };
                r.acme_error = Some(e.to_string());
                r.acme_error_at = Some(now);
            });
        }
    }
}

/// Runs the manager until `shutdown` resolves.
pub(crate) async fn run(
    proxy: Arc<Proxy>,
    cfg: AcmeConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    if proxy.config.tls.sealer.is_none() {
        eprintln!("hangar-proxy: acme is off: no key to seal certificate keys with");
        return;
    }
    let (stop_dns, dns_stopped) = tokio::sync::oneshot::channel::<()>();
    let dns = match &cfg.dns {
        None => None,
        Some(d) => match crate::acme_dns::bind(d.listen).await {
            Ok((udp, tcp)) => {
                proxy.challenges.set_dns_addr(udp.local_addr().ok());
                let p = proxy.clone();
                let zone = crate::acme_dns::Zone::new(&d.zone, d.listen);
                Some(tokio::spawn(crate::acme_dns::serve(
                    udp,
                    tcp,
                    zone,
                    proxy.challenges.clone(),
                    move |c| p.metrics.acme_dns_query(c),
                    async {
                        let _ = dns_stopped.await;
                    },
                )))
            }
            Err(e) => {
                // DNS-01 orders then fail, each with the CA's reason.
                eprintln!(
                    "hangar-proxy: acme: the DNS zone {} can not listen on {}: {e}",
                    d.zone, d.listen
                );
                None
            }
        },
    };
    let sessions: SessionCell = Arc::default();
    let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut changes = proxy.catalog.subscribe();
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let snap = proxy.catalog.snapshot();
        let now = now_ms();
        let mut names: Vec<&String> = snap.hostnames.keys().collect();
        names.sort();
        for name in names {
            let Some(rec) = snap.hostnames.get(name) else {
                continue;
            };
            if !due(rec, &cfg, now) {
                continue;
            }
            {
                let mut f = lock(&in_flight);
                if f.contains(name) || f.len() >= cfg.max_concurrent.max(1) {
                    continue;
                }
                f.insert(name.clone());
            }
            let (p, c, s, f, h) = (
                proxy.clone(),
                cfg.clone(),
                sessions.clone(),
                in_flight.clone(),
                name.clone(),
            );
            tasks.spawn(async move {
                order_one(p, c, s, h.clone()).await;
                lock(&f).remove(&h);
            });
        }
        tokio::select! {
            () = &mut shutdown => break,
            r = changes.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            Some(_) = tasks.join_next() => {}
        }
    }
    tasks.abort_all();
    let _ = stop_dns.send(());
    if let Some(d) = dns {
        let _ = d.await;
    }
    proxy.challenges.set_dns_addr(None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};

    fn unb64(s: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(s).expect("base64url")
    }

    /// RFC 7515 Appendix A.3: the ES256 example key.
    const X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
    const D: &str = "jpsQnnGQmL-YBIffH1136cspYG6-0iY7X1fCE9-E9LI";

    fn rfc_key() -> AccountKey {
        let mut public = vec![4u8];
        public.extend(unb64(X));
        public.extend(unb64(Y));
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &unb64(D),
            &public,
            &rng,
        )
        .expect("the RFC key");
        AccountKey {
            pair,
            pkcs8: Vec::new(),
            rng,
        }
    }

    #[test]
    fn jws_is_es256_over_the_encoded_header_and_payload() {
        let k = rfc_key();
        assert_eq!(
            k.jwk(),
            json!({"crv": "P-256", "kty": "EC", "x": X, "y": Y})
        );
        let protected = json!({"alg": "ES256", "nonce": "n1", "url": "https://ca/new-order", "kid": "https://ca/acct/1"});
        let payload = json!({"identifiers": [{"type": "dns", "value": "a.example"}]});
        let jws = k.sign(&protected, Some(&payload)).expect("sign");
        let p = jws["protected"].as_str().expect("protected");
        let b = jws["payload"].as_str().expect("payload");
        let sig = unb64(jws["signature"].as_str().expect("signature"));
        assert_eq!(sig.len(), 64, "r ‖ s, 32 bytes each");
        let header: Value = serde_json::from_slice(&unb64(p)).expect("header");
        assert_eq!(header, protected);
        let body: Value = serde_json::from_slice(&unb64(b)).expect("payload");
        assert_eq!(body, payload);
        let mut public = vec![4u8];
        public.extend(unb64(X));
        public.extend(unb64(Y));
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public)
            .verify(format!("{p}.{b}").as_bytes(), &sig)
            .expect("verifies with the public key");
        assert!(
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public)
                .verify(format!("{p}.x{b}").as_bytes(), &sig)
                .is_err()
        );
        // POST-as-GET: an empty payload.
        let get = k.sign(&protected, None).expect("sign");
        assert_eq!(get["payload"], "");
    }

    #[test]
    fn the_dns01_value_is_the_base64url_sha256_of_the_key_authorization() {
        // Computed apart (Python's hashlib and base64).
        assert_eq!(
            dns01_value(
                "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA.\
                 9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
            ),
            "lCM7cZyQXcVHK2nnW3jjAhNT3Fvm18UN-kWZZknKoYM"
        );
    }

    #[test]
    fn thumbprint_and_key_authorization() {
        let k = rfc_key();
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{X}","y":"{Y}"}}"#);
        let want = b64(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref());
        assert_eq!(k.thumbprint(), want);
        assert_eq!(want.len(), 43);
        assert_eq!(k.key_authorization("tok_1"), format!("tok_1.{want}"));
        // A generated key round-trips through PKCS#8.
        let g = AccountKey::generate().expect("generate");
        let again = AccountKey::from_pkcs8(g.pkcs8()).expect("reload");
        assert_eq!(g.thumbprint(), again.thumbprint());
    }

    #[test]
    fn the_alpn_certificate_carries_the_digest() {
        let cert = alpn_certificate("a.example.com", "tok.thumb").expect("cert");
        let der = cert.cert[0].as_ref();
        let digest = ring::digest::digest(&ring::digest::SHA256, b"tok.thumb");
        // acmeIdentifier 1.3.6.1.5.5.7.1.31, critical, OCTET STRING (OCTET STRING digest).
        let oid = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x1f];
        let at = der
            .windows(oid.len())
            .position(|w| w == oid)
            .expect("acmeIdentifier present");
        let rest = &der[at + oid.len()..];
        assert_eq!(&rest[..3], &[0x01, 0x01, 0xff], "critical");
        assert_eq!(&rest[3..7], &[0x04, 0x22, 0x04, 0x20]);
        assert_eq!(&rest[7..39], digest.as_ref());
        let info = CertInfo::from_der(der).expect("parses");
        assert_eq!(info.dns_names, vec!["a.example.com".to_string()]);
    }

    #[test]
    fn backoff_doubles_to_a_cap_then_waits_a_day() {
        let cfg = AcmeConfig {
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(600),
            max_attempts: 6,
            ..AcmeConfig::default()
        };
        let waits: Vec<u64> = (1..=6).map(|n| backoff(&cfg, n).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 86_400]);
        assert_eq!(backoff(&cfg, 100).as_secs(), 86_400);
    }

    #[test]
    fn due_when_missing_expiring_and_not_backing_off() {
        let cfg = AcmeConfig::default();
        let mut r = CertificateRecord::new("a.example.com", "app", 0);
        let now = 1_000_000_000_000;
        assert!(!due(&r, &cfg, now), "not requested");
        r.acme_requested = true;
        assert!(due(&r, &cfg, now));
        r.acme_next_attempt_at = now + 1;
        assert!(!due(&r, &cfg, now), "backing off");
        r.acme_next_attempt_at = 0;
        r.acme = Some(StoredCert {
            chain_pem: String::new(),
            key_sealed: Vec::new(),
            not_after: now + 60 * 86_400_000,
            issuer: String::new(),
            created_at: 0,
        });
        assert!(!due(&r, &cfg, now), "valid for long");
        if let Some(c) = r.acme.as_mut() {
            c.not_after = now + 10 * 86_400_000;
        }
        assert!(due(&r, &cfg, now), "renewal window");
    }

    #[test]
    fn problems_read_type_detail_and_subproblems() {
        let p = problem(
            &json!({"type": "urn:ietf:params:acme:error:rejectedIdentifier", "detail": "no",
                    "subproblems": [{"detail": "bad name"}]}),
            "x",
        );
        assert_eq!(
            p.code.as_deref(),
            Some("urn:ietf:params:acme:error:rejectedIdentifier")
        );
        assert_eq!(p.message, "no; bad name");
        assert_eq!(problem(&Value::Null, "fallback").message, "fallback");
    }
}
