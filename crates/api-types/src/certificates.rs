//! Certificates of custom hostnames (§2.10, current fly-go `CertificateDetailResponse` and
//! friends; not in the 2024 swagger).

use serde::{Deserialize, Serialize};

use crate::serde_util::null_default;

/// Body of `POST /apps/{app}/certificates/acme`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CreateCertificateRequest {
    /// The custom hostname.
    #[serde(default)]
    pub hostname: String,
}

/// Body of `POST /apps/{app}/certificates/custom`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImportCertificateRequest {
    /// The custom hostname.
    #[serde(default)]
    pub hostname: String,
    /// The chain, leaf first, PEM.
    #[serde(default)]
    pub fullchain: String,
    /// The leaf's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub private_key: String,
}

/// Response of `GET /apps/{app}/certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListCertificatesResponse {
    /// One entry per hostname.
    #[serde(default, deserialize_with = "null_default")]
    pub certificates: Vec<CertificateSummary>,
    /// How many hostnames match (before `limit`).
    #[serde(default)]
    pub total_count: i64,
}

/// A hostname in the list.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CertificateSummary {
    /// The hostname.
    #[serde(default)]
    pub hostname: String,
    /// Overall status (see [`CertificateDetailResponse::status`]).
    #[serde(default)]
    pub status: String,
    /// DNS provider of the name (unknown to Hangar: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_provider: Option<String>,
    /// The name was validated with DNS-01.
    #[serde(default)]
    pub acme_dns_configured: bool,
    /// The name was validated with TLS-ALPN-01.
    #[serde(default)]
    pub acme_alpn_configured: bool,
    /// The name was validated with HTTP-01.
    #[serde(default)]
    pub acme_http_configured: bool,
    /// `_fly-ownership` TXT verified (not checked by Hangar: false).
    #[serde(default)]
    pub ownership_txt_configured: bool,
    /// A valid certificate is being served for the name.
    #[serde(default)]
    pub configured: bool,
    /// ACME issuance was asked for.
    #[serde(default)]
    pub acme_requested: bool,
    /// A custom certificate was imported.
    #[serde(default)]
    pub has_custom_certificate: bool,
    /// An ACME certificate was issued.
    #[serde(default)]
    pub has_fly_certificate: bool,
    /// RFC 3339.
    #[serde(default)]
    pub created_at: String,
    /// RFC 3339.
    #[serde(default)]
    pub updated_at: String,
}

/// Response of `GET`/`POST …/certificates/{hostname}[/check]`, `POST …/acme`, `…/custom`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CertificateDetailResponse {
    /// The hostname.
    #[serde(default)]
    pub hostname: String,
    /// A valid certificate is being served for the name.
    #[serde(default)]
    pub configured: bool,
    /// ACME issuance was asked for.
    #[serde(default)]
    pub acme_requested: bool,
    /// `active` (a valid certificate is served), `pending_validation` (ACME issuance under
    /// way or waiting to retry), `failed` (ACME gave up; `check` retries), `expired`, or
    /// `not_configured` (no certificate and no ACME).
    #[serde(default)]
    pub status: String,
    /// DNS provider of the name (unknown to Hangar: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_provider: Option<String>,
    /// Until when issuance is held back (RFC 3339): the next ACME attempt after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited_until: Option<String>,
    /// The certificates of the name: `custom` first, then `fly` (ACME).
    #[serde(default, deserialize_with = "null_default")]
    pub certificates: Vec<CertificateDetail>,
    /// How the name was validated.
    #[serde(default)]
    pub validation: CertificateValidation,
    /// DNS records the name needs.
    #[serde(default)]
    pub dns_requirements: DnsRequirements,
    /// Records seen in DNS (Hangar does not look: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_records: Option<serde_json::Value>,
    /// Why issuance failed, most recent first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation_errors: Vec<ValidationError>,
}

/// One certificate of a hostname.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CertificateDetail {
    /// `custom` (imported) or `fly` (ACME).
    #[serde(default)]
    pub source: String,
    /// `active`, `pending` (being issued) or `expired`.
    #[serde(default)]
    pub status: String,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Issuer's common name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The issued certificates (one per key type; Hangar issues ECDSA only).
    #[serde(default, deserialize_with = "null_default")]
    pub issued: Vec<IssuedCertificate>,
}

/// An issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IssuedCertificate {
    /// Key type: `ecdsa`, `rsa`, `ed25519`.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// RFC 3339.
    #[serde(default)]
    pub expires_at: String,
    /// Issuer's common name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
}

/// How the name was validated.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CertificateValidation {
    /// DNS-01.
    #[serde(default)]
    pub dns_configured: bool,
    /// TLS-ALPN-01.
    #[serde(default)]
    pub alpn_configured: bool,
    /// HTTP-01.
    #[serde(default)]
    pub http_configured: bool,
    /// `_fly-ownership` TXT (never checked by Hangar).
    #[serde(default)]
    pub ownership_txt_configured: bool,
}

/// DNS records a custom hostname needs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DnsRequirements {
    /// A records (the host's public IPv4 addresses, when known).
    #[serde(default, deserialize_with = "null_default")]
    pub a: Vec<String>,
    /// AAAA records.
    #[serde(default, deserialize_with = "null_default")]
    pub aaaa: Vec<String>,
    /// CNAME target: `<app>.<domain>`.
    #[serde(default)]
    pub cname: String,
    /// The `_acme-challenge` CNAME for DNS-01 (its target is empty where the host serves no
    /// ACME DNS zone).
    #[serde(default)]
    pub acme_challenge: AcmeChallengeRequirement,
    /// The `_fly-ownership` TXT record.
    #[serde(default)]
    pub ownership: OwnershipRequirement,
}

/// The `_acme-challenge` record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AcmeChallengeRequirement {
    /// Record name.
    #[serde(default)]
    pub name: String,
    /// CNAME target.
    #[serde(default)]
    pub target: String,
}

/// The `_fly-ownership` record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OwnershipRequirement {
    /// Record name.
    #[serde(default)]
    pub name: String,
    /// TXT value naming the app.
    #[serde(default)]
    pub app_value: String,
    /// TXT value naming the org.
    #[serde(default)]
    pub org_value: String,
}

/// Why issuance failed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ValidationError {
    /// Machine-readable code (the ACME problem type), if any.
    #[serde(default)]
    pub code: Option<String>,
    /// What happened.
    #[serde(default)]
    pub message: String,
    /// What to do about it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub timestamp: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_list_example() {
        let v: ListCertificatesResponse = serde_json::from_str(
            r#"{"certificates": [{"hostname": "example.com", "status": "active",
            "dns_provider": "enom", "acme_dns_configured": true, "acme_alpn_configured": true,
            "acme_http_configured": true, "ownership_txt_configured": true, "configured": true,
            "acme_requested": true, "has_custom_certificate": false, "has_fly_certificate": true,
            "created_at": "2024-01-15T10:30:00Z", "updated_at": "2024-01-15T12:00:00Z"}],
            "total_count": 1}"#,
        )
        .expect("decodes");
        assert_eq!(v.certificates[0].status, "active");
        assert!(v.certificates[0].has_fly_certificate);
        let back = serde_json::to_value(&v).expect("encodes");
        assert_eq!(back["certificates"][0]["dns_provider"], "enom");
        assert_eq!(back["total_count"], 1);
    }

    #[test]
    fn detail_always_writes_what_fly_go_reads_without_omitempty() {
        let v = serde_json::to_value(CertificateDetailResponse::default()).expect("encodes");
        for k in [
            "hostname",
            "configured",
            "acme_requested",
            "status",
            "certificates",
            "validation",
            "dns_requirements",
        ] {
            assert!(v.get(k).is_some(), "{k} missing: {v}");
        }
        assert!(v.get("validation_errors").is_none());
        assert_eq!(v["dns_requirements"]["ownership"]["app_value"], "");
    }
}
