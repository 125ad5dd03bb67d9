//! `/v1/apps/{app}/certificates` (§2.10): custom hostnames of an app and their certificates.
//!
//! The API only records what is wanted: a hostname (routed to the app by the proxy as soon as
//! it exists), an imported certificate (checked here: it parses, its key matches, it names the
//! host and has not expired; the key is sealed before it is stored), or a request for ACME.
//! The proxy's ACME manager, following the store, issues and renews; `check` makes it retry
//! now. Every write is a `certificate` change the proxy picks up within milliseconds.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hangar_api_types::{
    AcmeChallengeRequirement, CertificateDetail, CertificateDetailResponse, CertificateSummary,
    CertificateValidation, CreateCertificateRequest, DnsRequirements, ImportCertificateRequest,
    IssuedCertificate, ListCertificatesResponse, OwnershipRequirement, ValidationError,
};
use hangar_domain::time::rfc3339;
use hangar_domain::tls::{CertInfo, is_wildcard, parse_hostname};
use hangar_store::{AppRecord, CertificateRecord, StoreError, StoredCert};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::apps::visible_app;
use crate::auth::Caller;
use crate::json::Body;
use crate::util::now_ms;
use crate::{ApiError, ApiState};

/// Most certificates in an imported chain.
const MAX_CHAIN: usize = 10;
/// Attempts at a read-modify-write racing the ACME manager.
const WRITE_ATTEMPTS: usize = 5;

fn leaf_info(c: &StoredCert) -> Option<CertInfo> {
    let der = CertificateDer::pem_slice_iter(c.chain_pem.as_bytes())
        .next()?
        .ok()?;
    CertInfo::from_der(&der).ok()
}

fn cert_detail(source: &str, c: &StoredCert, now: i64) -> CertificateDetail {
    let expires = rfc3339(c.not_after);
    let key_type = leaf_info(c).map_or("ecdsa", |i| i.key_type);
    CertificateDetail {
        source: source.into(),
        status: if c.not_after > now {
            "active"
        } else {
            "expired"
        }
        .into(),
        expires_at: Some(expires.clone()),
        issuer: (!c.issuer.is_empty()).then(|| c.issuer.clone()),
        issued: vec![IssuedCertificate {
            kind: key_type.into(),
            expires_at: expires,
            certificate_authority: (!c.issuer.is_empty()).then(|| c.issuer.clone()),
        }],
    }
}

fn valid(c: &Option<StoredCert>, now: i64) -> bool {
    c.as_ref().is_some_and(|c| c.not_after > now)
}

/// The record's overall status, as the reference names it.
fn status(r: &CertificateRecord, now: i64) -> &'static str {
    if valid(&r.custom, now) || valid(&r.acme, now) {
        "active"
    } else if r.acme_requested && r.acme_status == "failed" {
        "failed"
    } else if r.acme_requested {
        "pending_validation"
    } else if r.custom.is_some() || r.acme.is_some() {
        "expired"
    } else {
        "not_configured"
    }
}

fn detail(s: &ApiState, app: &AppRecord, r: &CertificateRecord) -> CertificateDetailResponse {
    let now = now_ms();
    let mut certificates = Vec::new();
    if let Some(c) = &r.custom {
        certificates.push(cert_detail("custom", c, now));
    }
    match &r.acme {
        Some(c) => certificates.push(cert_detail("fly", c, now)),
        None if r.acme_requested => certificates.push(CertificateDetail {
            source: "fly".into(),
            status: "pending".into(),
            ..CertificateDetail::default()
        }),
        None => {}
    }
    let mut validation_errors = Vec::new();
    if r.acme_requested && !s.config.acme_enabled {
        validation_errors.push(ValidationError {
            code: Some("acme_disabled".into()),
            message: "this host does not issue certificates over ACME".into(),
            remediation: Some(
                "start hangard with --acme-directory, or import a certificate (POST …/certificates/custom)"
                    .into(),
            ),
            timestamp: rfc3339(now),
        });
    }
    let host = r.hostname.trim_start_matches("*.");
    let dns_target = s
        .config
        .acme_dns_zone
        .as_deref()
        .map(|zone| hangar_domain::tls::acme_dns_target(host, &app.name, zone));
    if r.acme_requested
        && let Some(e) = &r.acme_error
    {
        let remediation = match &dns_target {
            _ if !hangar_domain::tls::is_wildcard(&r.hostname) => format!(
                "point {} at this host (CNAME {}.{}, or A/AAAA), make ports 80 and 443 reach it, then POST …/certificates/{}/check",
                r.hostname, app.name, s.config.domain, r.hostname
            ),
            Some(t) => format!(
                "a wildcard is validated by DNS-01 only: set CNAME _acme-challenge.{host} {t}, then POST …/certificates/{}/check",
                r.hostname
            ),
            None => "a wildcard is validated by DNS-01 only, which this host does not serve (hangard --acme-dns-zone); import a certificate instead (POST …/certificates/custom)".to_string(),
        };
        validation_errors.push(ValidationError {
            code: e
                .split_once(' ')
                .map(|(c, _)| c)
                .filter(|c| c.starts_with("urn:"))
                .map(str::to_string),
            message: e.clone(),
            remediation: Some(remediation),
            timestamp: rfc3339(r.acme_error_at.unwrap_or(r.updated_at)),
        });
    }
    let rate_limited_until =
        (r.acme_requested && r.acme_attempts > 0 && r.acme_next_attempt_at > now)
            .then(|| rfc3339(r.acme_next_attempt_at));
    let challenge = r.acme_challenge.as_deref();
    CertificateDetailResponse {
        hostname: r.hostname.clone(),
        configured: valid(&r.custom, now) || valid(&r.acme, now),
        acme_requested: r.acme_requested,
        status: status(r, now).into(),
        dns_provider: None,
        rate_limited_until,
        certificates,
        validation: CertificateValidation {
            dns_configured: challenge == Some("dns-01"),
            alpn_configured: challenge == Some("tls-alpn-01"),
            http_configured: challenge == Some("http-01"),
            ownership_txt_configured: false,
        },
        dns_requirements: DnsRequirements {
            a: Vec::new(),
            aaaa: Vec::new(),
            cname: format!("{}.{}", app.name, s.config.domain),
            acme_challenge: AcmeChallengeRequirement {
                name: format!("_acme-challenge.{host}"),
                target: dns_target.unwrap_or_default(),
            },
            ownership: OwnershipRequirement {
                name: format!("_fly-ownership.{host}"),
                app_value: app.id.clone(),
                org_value: app.org_slug.clone(),
            },
        },
        dns_records: None,
        validation_errors,
    }
}

fn summary(r: &CertificateRecord) -> CertificateSummary {
    let now = now_ms();
    CertificateSummary {
        hostname: r.hostname.clone(),
        status: status(r, now).into(),
        dns_provider: None,
        acme_dns_configured: r.acme_challenge.as_deref() == Some("dns-01"),
        acme_alpn_configured: r.acme_challenge.as_deref() == Some("tls-alpn-01"),
        acme_http_configured: r.acme_challenge.as_deref() == Some("http-01"),
        ownership_txt_configured: false,
        configured: valid(&r.custom, now) || valid(&r.acme, now),
        acme_requested: r.acme_requested,
        has_custom_certificate: r.custom.is_some(),
        has_fly_certificate: r.acme.is_some(),
        created_at: rfc3339(r.created_at),
        updated_at: rfc3339(r.updated_at),
    }
}

/// A hostname from a request body: valid, and not one of the platform's own names.
fn requested_hostname(s: &ApiState, raw: &str) -> Result<String, ApiError> {
    let h = parse_hostname(raw).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let domain = s.config.domain.trim_matches('.').to_ascii_lowercase();
    if h == domain || h.ends_with(&format!(".{domain}")) {
        return Err(ApiError::bad_request(format!(
            "{h} is under the platform's domain {domain}: <app>.{domain} is served automatically"
        )));
    }
    Ok(h)
}

/// The app's record of `hostname` (from a path); 404 when another app has it or none does.
fn record_of(s: &ApiState, app: &AppRecord, hostname: &str) -> Result<CertificateRecord, ApiError> {
    let h = parse_hostname(hostname).map_err(|_| ApiError::not_found("certificate"))?;
    match s.store.get_certificate(&h)? {
        Some(r) if r.app == app.name => Ok(r),
        _ => Err(ApiError::not_found("certificate")),
    }
}

/// Re-reads and applies `f` until the write wins over a concurrent writer (the ACME manager).
fn modify(
    s: &ApiState,
    app: &AppRecord,
    hostname: &str,
    f: impl Fn(&mut CertificateRecord),
) -> Result<CertificateRecord, ApiError> {
    for _ in 0..WRITE_ATTEMPTS {
        let mut r = record_of(s, app, hostname)?;
        let rev = r.revision;
        f(&mut r);
        r.updated_at = now_ms();
        match s.store.update_certificate(&r, rev) {
            Ok(r) => return Ok(r),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::busy(
        "the certificate is being changed concurrently; retry",
    ))
}

fn taken(hostname: &str) -> ApiError {
    ApiError::name_taken(format!(
        "hostname '{hostname}' is already taken by another app"
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

pub(crate) async fn list(
    State(s): State<ApiState>,
    c: Caller,
    Path(app): Path<String>,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListCertificatesResponse>, ApiError> {
    let app = visible_app(&s, &c, &app)?;
    let filter = q.filter.unwrap_or_default().to_ascii_lowercase();
    let all: Vec<CertificateRecord> = s
        .store
        .list_certificates(Some(&app.name))?
        .into_iter()
        .filter(|r| r.hostname.contains(&filter))
        .collect();
    let total = all.len() as i64;
    // Sorted by hostname; the cursor is the last hostname of the previous page.
    let cursor = q.cursor.unwrap_or_default();
    let certificates = all
        .iter()
        .filter(|r| cursor.is_empty() || r.hostname.as_str() > cursor.as_str())
        .take(q.limit.filter(|l| *l > 0).unwrap_or(usize::MAX))
        .map(summary)
        .collect();
    Ok(Json(ListCertificatesResponse {
        certificates,
        total_count: total,
    }))
}

pub(crate) async fn create_acme(
    State(s): State<ApiState>,
    c: Caller,
    Path(app): Path<String>,
    Body(req): Body<CreateCertificateRequest>,
) -> Result<(StatusCode, Json<CertificateDetailResponse>), ApiError> {
    let app = visible_app(&s, &c, &app)?;
    let h = requested_hostname(&s, &req.hostname)?;
    if is_wildcard(&h) && s.config.acme_dns_zone.is_none() {
        return Err(ApiError::bad_request(format!(
            "{h}: wildcard certificates need DNS-01, which needs an ACME DNS zone on this host (hangard --acme-dns-zone); or import one with POST …/certificates/custom"
        )));
    }
    let request = |r: &mut CertificateRecord| {
        if !r.acme_requested || r.acme_status == "failed" {
            r.acme_requested = true;
            r.acme_status = "pending".into();
            r.acme_attempts = 0;
            r.acme_next_attempt_at = 0;
            r.acme_error = None;
            r.acme_error_at = None;
        }
    };
    match s.store.get_certificate(&h)? {
        Some(r) if r.app != app.name => Err(taken(&h)),
        Some(_) => {
            let r = modify(&s, &app, &h, request)?;
            Ok((StatusCode::OK, Json(detail(&s, &app, &r))))
        }
        None => {
            let mut r = CertificateRecord::new(&h, &app.name, now_ms());
            request(&mut r);
            let r = s.store.create_certificate(&r).map_err(|e| match e {
                StoreError::NameTaken { .. } => taken(&h),
                e => e.into(),
            })?;
            Ok((StatusCode::CREATED, Json(detail(&s, &app, &r))))
        }
    }
}

/// Checks an imported certificate and seals its key.
fn import(
    s: &ApiState,
    hostname: &str,
    req: &ImportCertificateRequest,
) -> Result<StoredCert, ApiError> {
    let sealer = s
        .sealer
        .as_ref()
        .ok_or_else(|| ApiError::not_implemented("certificate import on this host"))?;
    let chain = CertificateDer::pem_slice_iter(req.fullchain.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request(format!("fullchain: not PEM certificates: {e}")))?;
    if chain.is_empty() || chain.len() > MAX_CHAIN {
        return Err(ApiError::bad_request(format!(
            "fullchain: 1 to {MAX_CHAIN} PEM certificates, leaf first"
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(req.private_key.as_bytes())
        .map_err(|e| ApiError::bad_request(format!("private_key: not a PEM private key: {e}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| {
        ApiError::bad_request(format!(
            "private_key: unsupported (ECDSA P-256/P-384, RSA and Ed25519 are): {e}"
        ))
    })?;
    rustls::sign::CertifiedKey::new(chain.clone(), signing)
        .keys_match()
        .map_err(|e| {
            ApiError::bad_request(format!(
                "private_key does not belong to the first certificate of fullchain: {e}"
            ))
        })?;
    let info = CertInfo::from_der(&chain[0])
        .map_err(|e| ApiError::bad_request(format!("fullchain: {e}")))?;
    if !info.covers(hostname) {
        return Err(ApiError::bad_request(format!(
            "the certificate does not name {hostname} (it names {})",
            if info.dns_names.is_empty() {
                info.subject_cn.clone().unwrap_or_default()
            } else {
                info.dns_names.join(", ")
            }
        )));
    }
    let now = now_ms();
    if info.not_after_ms <= now {
        return Err(ApiError::bad_request(format!(
            "the certificate expired at {}",
            rfc3339(info.not_after_ms)
        )));
    }
    let key_sealed = sealer
        .seal(
            &CertificateRecord::key_context(hostname, "custom"),
            req.private_key.trim().as_bytes(),
        )
        .map_err(ApiError::internal)?;
    Ok(StoredCert {
        chain_pem: req.fullchain.trim().to_string() + "\n",
        key_sealed,
        not_after: info.not_after_ms,
        issuer: info.issuer.unwrap_or_default(),
        created_at: now,
    })
}

pub(crate) async fn import_custom(
    State(s): State<ApiState>,
    c: Caller,
    Path(app): Path<String>,
    Body(req): Body<ImportCertificateRequest>,
) -> Result<(StatusCode, Json<CertificateDetailResponse>), ApiError> {
    let app = visible_app(&s, &c, &app)?;
    let h = requested_hostname(&s, &req.hostname)?;
    let cert = import(&s, &h, &req)?;
    match s.store.get_certificate(&h)? {
        Some(r) if r.app != app.name => Err(taken(&h)),
        Some(_) => {
            let r = modify(&s, &app, &h, |r| r.custom = Some(cert.clone()))?;
            Ok((StatusCode::OK, Json(detail(&s, &app, &r))))
        }
        None => {
            let mut r = CertificateRecord::new(&h, &app.name, now_ms());
            r.custom = Some(cert);
            let r = s.store.create_certificate(&r).map_err(|e| match e {
                StoreError::NameTaken { .. } => taken(&h),
                e => e.into(),
            })?;
            Ok((StatusCode::CREATED, Json(detail(&s, &app, &r))))
        }
    }
}

pub(crate) async fn show(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, hostname)): Path<(String, String)>,
) -> Result<Json<CertificateDetailResponse>, ApiError> {
    let app = visible_app(&s, &c, &app)?;
    let r = record_of(&s, &app, &hostname)?;
    Ok(Json(detail(&s, &app, &r)))
}

pub(crate) async fn check(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, hostname)): Path<(String, String)>,
) -> Result<Json<CertificateDetailResponse>, ApiError> {
    let app = visible_app(&s, &c, &app)?;
    let r = record_of(&s, &app, &hostname)?;
    // ACME waiting for a retry (or given up): try again now.
    let retry = r.acme_requested
        && r.acme_status != "issuing"
        && (r.acme_status == "failed" || r.acme_attempts > 0 || !valid(&r.acme, now_ms()));
    let r = if retry {
        modify(&s, &app, &hostname, |r| {
            r.acme_attempts = 0;
            r.acme_next_attempt_at = 0;
            if r.acme_status == "failed" {
                r.acme_status = "pending".into();
            }
        })?
    } else {
        r
    };
    Ok(Json(detail(&s, &app, &r)))
}

pub(crate) async fn delete(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, hostname)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let app = visible_app(&s, &c, &app)?;
    let r = record_of(&s, &app, &hostname)?;
    s.store.delete_certificate(&r.hostname)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn delete_acme(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, hostname)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let app = visible_app(&s, &c, &app)?;
    modify(&s, &app, &hostname, |r| {
        r.acme_requested = false;
        r.acme = None;
        r.acme_status = String::new();
        r.acme_challenge = None;
        r.acme_attempts = 0;
        r.acme_next_attempt_at = 0;
        r.acme_error = None;
        r.acme_error_at = None;
    })?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn delete_custom(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, hostname)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let app = visible_app(&s, &c, &app)?;
    modify(&s, &app, &hostname, |r| r.custom = None)?;
    Ok(StatusCode::NO_CONTENT)
}
