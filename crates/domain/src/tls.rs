//! Host names and X.509 facts that the API (certificate import) and the proxy (serving, ACME)
//! agree on: which host names may get a certificate, how a certificate name matches a host,
//! and the few fields of a DER certificate Hangar reads (validity, DNS names, issuer).
//! Pure: bytes in, facts out.

use thiserror::Error;

/// Why a host name or a certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TlsNameError {
    /// Not a DNS host name Hangar can serve.
    #[error("invalid hostname '{0}': {1}")]
    Hostname(String, &'static str),
    /// The DER is not an X.509 certificate Hangar can read.
    #[error("malformed certificate: {0}")]
    Certificate(&'static str),
}

/// Normalises and checks a host name for a certificate: lowercase, no trailing dot, at most
/// 253 characters, two labels or more of letters, digits and dashes (not at either end of a
/// label, at most 63 each), a leftmost `*` label allowed (a wildcard), not an IP address.
pub fn parse_hostname(input: &str) -> Result<String, TlsNameError> {
    let shown = || {
        input
            .chars()
            .take(80)
            .flat_map(char::escape_default)
            .collect()
    };
    let h = input.trim().trim_end_matches('.').to_ascii_lowercase();
    if h.is_empty() || h.len() > 253 {
        return Err(TlsNameError::Hostname(shown(), "1 to 253 characters"));
    }
    let labels: Vec<&str> = h.split('.').collect();
    if labels.len() < 2 {
        return Err(TlsNameError::Hostname(shown(), "needs a domain (a dot)"));
    }
    for (i, l) in labels.iter().enumerate() {
        if i == 0 && *l == "*" {
            continue;
        }
        let ok = (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-');
        if !ok {
            return Err(TlsNameError::Hostname(
                shown(),
                "labels are letters, digits and inner dashes, 1 to 63 each (a wildcard only as `*.` first)",
            ));
        }
    }
    if labels
        .last()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(TlsNameError::Hostname(
            shown(),
            "an IP address is not a hostname",
        ));
    }
    if labels.len() == 2 && labels[0] == "*" {
        return Err(TlsNameError::Hostname(
            shown(),
            "a wildcard needs at least two labels after `*.`",
        ));
    }
    Ok(h)
}

/// Whether `host` is a wildcard name (`*.example.com`).
pub fn is_wildcard(host: &str) -> bool {
    host.starts_with("*.")
}

/// The host of a `Host` header or SNI value: port and trailing dot removed, lowercase; `None`
/// for IP literals, empty or overlong values.
pub fn normalize_host(host: &str) -> Option<String> {
    let host = host.trim();
    if host.starts_with('[') {
        return None;
    }
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() || host.len() > 253 || host.contains(':') {
        return None;
    }
    Some(host.to_ascii_lowercase())
}

/// Whether a certificate name (exact or `*.` wildcard of one label) covers `host`; both
/// lowercase.
pub fn name_matches(pattern: &str, host: &str) -> bool {
    if pattern == host {
        return true;
    }
    match (pattern.strip_prefix("*."), host.split_once('.')) {
        (Some(rest), Some((first, tail))) => !first.is_empty() && tail == rest,
        _ => false,
    }
}

/// The wildcard name that would cover `host` (`a.b.c` → `*.b.c`).
pub fn wildcard_for(host: &str) -> Option<String> {
    let (_, rest) = host.split_once('.')?;
    rest.contains('.').then(|| format!("*.{rest}"))
}

/// Where a custom hostname's `_acme-challenge` record must point (a CNAME) for DNS-01: a name
/// in the operator's ACME DNS zone (`hangard --acme-dns-zone`), which hangard answers. The
/// label is the first 96 bits (hex) of SHA-256 over the lowercase base name and the app that
/// holds it:
///
/// - the same for `host` and `*.host` of one app (their challenges share
///   `_acme-challenge.host`);
/// - stable, so a record once set keeps working for renewals;
/// - bound to the app: another tenant who adds `*.host` (or `host`) gets another target, so
///   the CNAME one user set can not validate a certificate for someone else.
pub fn acme_dns_target(host: &str, app: &str, zone: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let base = host.trim_start_matches("*.").trim_end_matches('.');
    let mut h = Sha256::new();
    h.update(b"hangar-acme-dns\0");
    h.update(base.to_ascii_lowercase().as_bytes());
    h.update(b"\0");
    h.update(app.as_bytes());
    let d = h.finalize();
    let label: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{label}.{}",
        zone.trim_end_matches('.').to_ascii_lowercase()
    )
}

/// What Hangar reads from a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Start of validity, Unix ms.
    pub not_before_ms: i64,
    /// End of validity, Unix ms.
    pub not_after_ms: i64,
    /// `dNSName`s of the subject alternative names, lowercase.
    pub dns_names: Vec<String>,
    /// Subject common name, if any.
    pub subject_cn: Option<String>,
    /// Issuer common name (or organisation), if any.
    pub issuer: Option<String>,
    /// Serial number, hex.
    pub serial_hex: String,
    /// Public key type: `ecdsa`, `rsa`, `ed25519` or `other`.
    pub key_type: &'static str,
}

impl CertInfo {
    /// Reads a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, TlsNameError> {
        let bad = TlsNameError::Certificate;
        let mut outer = Der(der);
        let mut cert = outer.expect(0x30).ok_or(bad("not a SEQUENCE"))?;
        let mut tbs = cert.expect(0x30).ok_or(bad("no tbsCertificate"))?;
        if tbs.peek() == Some(0xa0) {
            tbs.any().ok_or(bad("version"))?;
        }
        let serial = tbs.expect(0x02).ok_or(bad("serial"))?;
        tbs.expect(0x30).ok_or(bad("signature algorithm"))?;
        let issuer = tbs.expect(0x30).ok_or(bad("issuer"))?;
        let mut validity = tbs.expect(0x30).ok_or(bad("validity"))?;
        let not_before = time(&mut validity).ok_or(bad("notBefore"))?;
        let not_after = time(&mut validity).ok_or(bad("notAfter"))?;
        let subject = tbs.expect(0x30).ok_or(bad("subject"))?;
        let mut spki = tbs.expect(0x30).ok_or(bad("subjectPublicKeyInfo"))?;
        let key_oid = spki
            .expect(0x30)
            .and_then(|mut alg| alg.expect(0x06))
            .ok_or(bad("subjectPublicKeyInfo algorithm"))?;
        let key_type = match key_oid.0 {
            [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01] => "ecdsa",
            [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01] => "rsa",
            [0x2b, 0x65, 0x70] => "ed25519",
            _ => "other",
        };
        let mut dns_names = Vec::new();
        while let Some((tag, body)) = tbs.any() {
            if tag != 0xa3 {
                continue;
            }
            let mut exts = Der(body).expect(0x30).ok_or(bad("extensions"))?;
            while let Some(mut ext) = exts.expect(0x30) {
                let oid = ext.expect(0x06).ok_or(bad("extension id"))?;
                if ext.peek() == Some(0x01) {
                    ext.any();
                }
                let value = ext.expect(0x04).ok_or(bad("extension value"))?;
                // subjectAltName 2.5.29.17
                if oid.0 == [0x55, 0x1d, 0x11] {
                    let mut names = Der(value.0).expect(0x30).ok_or(bad("subjectAltName"))?;
                    while let Some((tag, v)) = names.any() {
                        if tag == 0x82 {
                            let n = std::str::from_utf8(v).map_err(|_| bad("dNSName"))?;
                            dns_names.push(n.to_ascii_lowercase());
                        }
                    }
                }
            }
        }
        Ok(Self {
            not_before_ms: not_before,
            not_after_ms: not_after,
            dns_names,
            subject_cn: name_attr(subject, &[0x55, 0x04, 0x03]),
            issuer: name_attr(issuer.clone(), &[0x55, 0x04, 0x03])
                .or_else(|| name_attr(issuer, &[0x55, 0x04, 0x0a])),
            serial_hex: serial.0.iter().map(|b| format!("{b:02x}")).collect(),
            key_type,
        })
    }

    /// Whether the certificate names `host` (SANs; the CN only when there are none).
    pub fn covers(&self, host: &str) -> bool {
        if self.dns_names.is_empty() {
            return self
                .subject_cn
                .as_deref()
                .is_some_and(|cn| name_matches(&cn.to_ascii_lowercase(), host));
        }
        self.dns_names.iter().any(|n| name_matches(n, host))
    }
}

/// A DER cursor: single-byte tags, definite lengths up to 4 bytes.
#[derive(Clone)]
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn peek(&self) -> Option<u8> {
        self.0.first().copied()
    }

    fn any(&mut self) -> Option<(u8, &'a [u8])> {
        let (&tag, rest) = self.0.split_first()?;
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |a, &b| (a << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        let (body, rest) = rest.split_at(len);
        self.0 = rest;
        Some((tag, body))
    }

    fn expect(&mut self, tag: u8) -> Option<Der<'a>> {
        match self.any()? {
            (t, body) if t == tag => Some(Der(body)),
            _ => None,
        }
    }
}

/// The first attribute `oid` of a Name, as text.
fn name_attr(mut name: Der<'_>, oid: &[u8]) -> Option<String> {
    while let Some(mut rdn) = name.expect(0x31) {
        while let Some(mut atv) = rdn.expect(0x30) {
            let t = atv.expect(0x06)?;
            let (_, v) = atv.any()?;
            if t.0 == oid {
                return String::from_utf8(v.to_vec()).ok();
            }
        }
    }
    None
}

/// A UTCTime or GeneralizedTime (`Z` form) as Unix ms.
fn time(d: &mut Der<'_>) -> Option<i64> {
    let (tag, v) = d.any()?;
    let s = std::str::from_utf8(v).ok()?;
    let s = s.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 if s.len() == 12 => {
            let yy: i64 = s[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        0x18 if s.len() == 14 => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (mo, d, h, mi, se) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let days = days_from_civil(year, mo, d);
    Some(((days * 86_400) + h * 3600 + mi * 60 + se) * 1000)
}

/// (year, month, day) → days since 1970-01-01 (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dns01_target_is_stable_per_app_and_shared_by_a_name_and_its_wildcard() {
        let t = acme_dns_target("Example.COM", "web", "acme.hangar.example.net.");
        assert_eq!(
            t,
            acme_dns_target("*.example.com", "web", "acme.hangar.example.net")
        );
        assert!(t.ends_with(".acme.hangar.example.net"), "{t}");
        // SHA-256("hangar-acme-dns\0example.com\0web"), first 12 bytes: a change here
        // breaks the CNAMEs users have set.
        assert_eq!(t, "87055a2f351d6a1e4ab0c4a4.acme.hangar.example.net");
        assert_ne!(
            t,
            acme_dns_target("example.org", "web", "acme.hangar.example.net")
        );
        // Another app's wildcard of the same name does not share it.
        assert_ne!(
            t,
            acme_dns_target("*.example.com", "evil", "acme.hangar.example.net")
        );
    }

    #[test]
    fn hostnames() {
        assert_eq!(
            parse_hostname("WWW.Example.com.").as_deref(),
            Ok("www.example.com")
        );
        assert_eq!(
            parse_hostname("*.example.com").as_deref(),
            Ok("*.example.com")
        );
        for bad in [
            "",
            "localhost",
            "*.com",
            "a.*.com",
            "-a.example.com",
            "a-.example.com",
            "a_b.example.com",
            "1.2.3.4",
            "exa mple.com",
            &format!("{}.com", "a".repeat(64)),
            &format!("{}com", "a.".repeat(130)),
        ] {
            assert!(parse_hostname(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching() {
        assert!(name_matches("a.example.com", "a.example.com"));
        assert!(name_matches("*.example.com", "a.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(!name_matches("*.example.com", "a.b.example.com"));
        assert_eq!(
            wildcard_for("a.example.com").as_deref(),
            Some("*.example.com")
        );
        assert_eq!(wildcard_for("example.com"), None);
        assert_eq!(
            normalize_host("WWW.x.test:443").as_deref(),
            Some("www.x.test")
        );
        assert_eq!(normalize_host("x.test.").as_deref(), Some("x.test"));
        assert_eq!(normalize_host("[::1]:80"), None);
        assert_eq!(normalize_host(""), None);
    }

    #[test]
    fn times() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        let mut d = Der(b"\x17\x0d491231235959Z");
        assert_eq!(time(&mut d), Some(2_524_607_999_000));
        let mut d = Der(b"\x18\x0f20500101000000Z");
        assert_eq!(time(&mut d), Some(2_524_608_000_000));
        let mut d = Der(b"\x17\x0d991301000000Z");
        assert_eq!(time(&mut d), None);
    }

    #[test]
    fn hostile_der_is_refused_not_panicked() {
        for bytes in [
            &b""[..],
            b"\x30",
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x03\x30\x01",
            b"\x1f\x00",
            b"\x30\x80",
        ] {
            assert!(CertInfo::from_der(bytes).is_err());
        }
    }
}
