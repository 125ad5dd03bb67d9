//! `fly-replay` (PLATFORM.md §3.6): the header form `k=v;k=v` and the JSON form
//! (`Content-Type: application/vnd.fly.replay+json`), parsed into one [`Replay`]. Pure and
//! bounded; fuzzed.

use std::time::Duration;

use serde::Deserialize;

/// Header names a replay's `transform` may neither set nor delete: the request's framing, the
/// connection's hop-by-hop fields, `Host` (the proxy sends the name it routed by) and the
/// replay headers the proxy writes itself.
const TRANSFORM_RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "fly-replay-src",
    "fly-replay-failed",
];

/// Longest `fly-replay` value or JSON body read.
pub const MAX_REPLAY_LEN: usize = 16 * 1024;

/// Where to send a request again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    /// Regions in preference order (`any` = every region).
    pub regions: Vec<String>,
    /// Exactly this machine.
    pub instance: Option<String>,
    /// This machine if possible.
    pub prefer_instance: Option<String>,
    /// Another app (same org).
    pub app: Option<String>,
    /// Opaque, echoed in `fly-replay-src`.
    pub state: Option<String>,
    /// Not the machine that replayed.
    pub elsewhere: bool,
    /// How long to keep trying the target.
    pub timeout: Option<Duration>,
    /// What to do when the target can not be reached.
    pub fallback: Option<Fallback>,
    /// Rewrites of the replayed request (JSON form only).
    pub transform: Transform,
    /// What to cache of it (JSON form's `cache` and `allow_bypass`; the header form's are
    /// headers of their own, [`crate::replay_cache::from_headers`]).
    pub cache: Option<crate::replay_cache::Directive>,
}

/// `fallback` of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Back to the machine that replayed, exactly.
    ForceSelf,
    /// That machine, else any machine of the original app.
    PreferSelf,
}

/// `transform` of the JSON form.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transform {
    /// New path and query.
    pub path: Option<String>,
    /// Headers removed.
    pub delete_headers: Vec<String>,
    /// Headers set.
    pub set_headers: Vec<(String, String)>,
}

/// Why a replay instruction is invalid (`PA03`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fly-replay: {0}")]
pub struct ReplayError(pub String);

fn err(msg: impl Into<String>) -> ReplayError {
    ReplayError(msg.into())
}

/// Splits `k=v;k="v;w"` respecting double quotes.
fn fields(s: &str) -> Result<Vec<(String, String)>, ReplayError> {
    let mut out = Vec::new();
    let mut key = String::new();
    let mut val = String::new();
    let mut in_val = false;
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    let push = |key: &mut String, val: &mut String, out: &mut Vec<(String, String)>| {
        let k = key.trim().to_ascii_lowercase();
        if !k.is_empty() {
            out.push((k, std::mem::take(val).trim().to_string()));
        }
        key.clear();
        val.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '"' if in_val => quoted = !quoted,
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    val.push(n);
                }
            }
            ';' if !quoted => {
                if !in_val && !key.trim().is_empty() {
                    return Err(err(format!("field {:?} has no value", key.trim())));
                }
                push(&mut key, &mut val, &mut out);
                in_val = false;
            }
            '=' if !in_val => in_val = true,
            c if in_val => val.push(c),
            c => key.push(c),
        }
    }
    if quoted {
        return Err(err("unterminated quote"));
    }
    if !in_val && !key.trim().is_empty() {
        return Err(err(format!("field {:?} has no value", key.trim())));
    }
    push(&mut key, &mut val, &mut out);
    Ok(out)
}

fn region_list(v: &str) -> Result<Vec<String>, ReplayError> {
    let mut out = Vec::new();
    for r in v.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        if r.len() > 32 || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(err(format!("region {r:?}")));
        }
        out.push(r.to_ascii_lowercase());
    }
    if out.is_empty() {
        return Err(err("empty region list"));
    }
    Ok(out)
}

fn ident(what: &str, v: &str) -> Result<String, ReplayError> {
    if v.is_empty()
        || v.len() > 64
        || !v
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(err(format!("{what} {v:?}")));
    }
    Ok(v.to_string())
}

fn boolean(v: &str) -> Result<bool, ReplayError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(err(format!("boolean {v:?}"))),
    }
}

/// `10s`, `800ms`, `1m`, or a number of seconds.
fn duration(v: &str) -> Result<Duration, ReplayError> {
    let v = v.trim();
    let (num, unit) = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((v, "s"), |i| (&v[..i], &v[i..]));
    let n: f64 = num.parse().map_err(|_| err(format!("timeout {v:?}")))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(err(format!("timeout unit {unit:?}"))),
    };
    if !(0.0..=3600.0).contains(&secs) {
        return Err(err(format!("timeout {v:?} out of range")));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn fallback(v: &str) -> Result<Fallback, ReplayError> {
    match v {
        "force_self" => Ok(Fallback::ForceSelf),
        "prefer_self" => Ok(Fallback::PreferSelf),
        _ => Err(err(format!("fallback {v:?}"))),
    }
}

impl Replay {
    /// Parses the header form.
    pub fn from_header(value: &[u8]) -> Result<Replay, ReplayError> {
        if value.len() > MAX_REPLAY_LEN {
            return Err(err("too long"));
        }
        let s = std::str::from_utf8(value).map_err(|_| err("not UTF-8"))?;
        let mut r = Replay::default();
        for (k, v) in fields(s)? {
            match k.as_str() {
                "region" => r.regions = region_list(&v)?,
                "instance" => r.instance = Some(ident("instance", &v)?),
                "prefer_instance" => r.prefer_instance = Some(ident("prefer_instance", &v)?),
                "app" => r.app = Some(ident("app", &v)?),
                "state" => {
                    if v.len() > 1024 {
                        return Err(err("state longer than 1024 bytes"));
                    }
                    r.state = Some(v);
                }
                "elsewhere" => r.elsewhere = boolean(&v)?,
                "timeout" => r.timeout = Some(duration(&v)?),
                "fallback" => r.fallback = Some(fallback(&v)?),
                // Unknown keys are ignored, as newer fields are by older proxies.
                _ => {}
            }
        }
        r.check()?;
        Ok(r)
    }

    /// Parses the JSON form (a response body).
    pub fn from_json(body: &[u8]) -> Result<Replay, ReplayError> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Regions {
            One(String),
            Many(Vec<String>),
        }
        #[derive(Deserialize)]
        struct Header {
            name: String,
            value: String,
        }
        #[derive(Deserialize, Default)]
        struct JsonTransform {
            path: Option<String>,
            #[serde(default)]
            delete_headers: Vec<String>,
            #[serde(default)]
            set_headers: Vec<Header>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Ttl {
            Secs(i64),
            Text(String),
        }
        #[derive(Deserialize)]
        struct JsonCache {
            prefix: Option<String>,
            ttl: Option<Ttl>,
            #[serde(default)]
            invalidate: bool,
        }
        #[derive(Deserialize)]
        struct Json {
            region: Option<Regions>,
            instance: Option<String>,
            prefer_instance: Option<String>,
            app: Option<String>,
            state: Option<String>,
            #[serde(default)]
            elsewhere: bool,
            timeout: Option<String>,
            fallback: Option<String>,
            transform: Option<JsonTransform>,
            cache: Option<JsonCache>,
            #[serde(default)]
            allow_bypass: bool,
        }
        if body.len() > MAX_REPLAY_LEN {
            return Err(err("too long"));
        }
        let j: Json = serde_json::from_slice(body).map_err(|e| err(e.to_string()))?;
        let mut r = Replay {
            regions: match j.region {
                None => Vec::new(),
                Some(Regions::One(s)) => region_list(&s)?,
                Some(Regions::Many(v)) => region_list(&v.join(","))?,
            },
            instance: j.instance.map(|v| ident("instance", &v)).transpose()?,
            prefer_instance: j
                .prefer_instance
                .map(|v| ident("prefer_instance", &v))
                .transpose()?,
            app: j.app.map(|v| ident("app", &v)).transpose()?,
            state: j.state,
            elsewhere: j.elsewhere,
            timeout: j.timeout.map(|v| duration(&v)).transpose()?,
            fallback: j.fallback.map(|v| fallback(&v)).transpose()?,
            transform: Transform::default(),
            cache: None,
        };
        if let Some(c) = j.cache {
            let ttl = match c.ttl {
                None => None,
                Some(Ttl::Secs(n)) => Some(n),
                Some(Ttl::Text(t)) => Some(duration(&t)?.as_secs() as i64),
            };
            r.cache = crate::replay_cache::from_json(
                c.prefix.as_deref(),
                ttl,
                c.invalidate,
                j.allow_bypass,
            )
            .map_err(err)?;
        }
        if let Some(t) = j.transform {
            if let Some(p) = &t.path
                && (!p.starts_with('/') || p.bytes().any(|b| b.is_ascii_control() || b == b' '))
            {
                return Err(err(format!("transform.path {p:?}")));
            }
            // Framing, hop-by-hop and routing headers are the proxy's: a replay that set
            // `transfer-encoding` beside the proxy's `content-length` would desync a pooled
            // connection, a second `host` would be refused by strict servers.
            let valid_name = |n: &str| {
                !n.is_empty()
                    && n.len() <= 128
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    && !TRANSFORM_RESERVED.iter().any(|r| r.eq_ignore_ascii_case(n))
            };
            for n in t
                .delete_headers
                .iter()
                .chain(t.set_headers.iter().map(|h| &h.name))
            {
                if !valid_name(n) {
                    return Err(err(format!("header name {n:?}")));
                }
            }
            if t.set_headers
                .iter()
                .any(|h| h.value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0))
            {
                return Err(err("header value with a line break"));
            }
            r.transform = Transform {
                path: t.path,
                delete_headers: t.delete_headers,
                set_headers: t
                    .set_headers
                    .into_iter()
                    .map(|h| (h.name, h.value))
                    .collect(),
            };
        }
        if r.state.as_ref().is_some_and(|s| s.len() > 1024) {
            return Err(err("state longer than 1024 bytes"));
        }
        r.check()?;
        Ok(r)
    }

    fn check(&self) -> Result<(), ReplayError> {
        if self.regions.is_empty()
            && self.instance.is_none()
            && self.prefer_instance.is_none()
            && self.app.is_none()
            && !self.elsewhere
        {
            return Err(err(
                "no target (region, instance, prefer_instance, app or elsewhere)",
            ));
        }
        Ok(())
    }
}

/// `fly-replay-src` of a replayed request: `instance=…;region=…;t=<µs epoch>;state=…`.
/// The state is echoed byte for byte where a header value can carry it; only what it can
/// not is percent-encoded: `;` (which would end it), control characters, bytes outside
/// ASCII (UTF-8 from the JSON form) and a trailing space (which parsers trim). The header is
/// then always sent.
pub fn replay_src(instance: &str, region: &str, t_us: u128, state: Option<&str>) -> String {
    use std::fmt::Write as _;
    let mut s = format!("instance={instance};region={region};t={t_us}");
    if let Some(st) = state {
        s.push_str(";state=");
        let bytes = st.as_bytes();
        // Where the trailing spaces begin.
        let end = bytes.len() - bytes.iter().rev().take_while(|&&c| c == b' ').count();
        for (i, &b) in bytes.iter().enumerate() {
            if (0x20..=0x7e).contains(&b) && b != b';' && i < end {
                s.push(char::from(b));
            } else {
                let _ = write!(s, "%{b:02X}");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_form() {
        let r = Replay::from_header(b"region=sjc;state=abc").expect("parse");
        assert_eq!(r.regions, ["sjc"]);
        assert_eq!(r.state.as_deref(), Some("abc"));
        let r = Replay::from_header(br#"region="iad,ord" ; elsewhere=true; timeout=800ms"#)
            .expect("parse");
        assert_eq!(r.regions, ["iad", "ord"]);
        assert!(r.elsewhere);
        assert_eq!(r.timeout, Some(Duration::from_millis(800)));
        let r =
            Replay::from_header(b"instance=3d8d413b29d089;fallback=prefer_self").expect("parse");
        assert_eq!(r.instance.as_deref(), Some("3d8d413b29d089"));
        assert_eq!(r.fallback, Some(Fallback::PreferSelf));
        let r = Replay::from_header(b"app=other-app;future_key=1").expect("parse");
        assert_eq!(r.app.as_deref(), Some("other-app"));
        for bad in [
            &b""[..],
            b"state=x",
            b"region=",
            b"region",
            b"region=\"iad",
            b"timeout=10x;region=a",
            b"fallback=maybe;region=a",
            b"instance=../x",
            b"elsewhere=perhaps",
            b"region=a b",
            b"\xff\xfe",
        ] {
            assert!(
                Replay::from_header(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(Replay::from_header(&vec![b'a'; MAX_REPLAY_LEN + 1]).is_err());
    }

    #[test]
    fn json_form() {
        let r = Replay::from_json(
            br#"{"region":"ams","transform":{"path":"/x?y=1","delete_headers":["cookie"],"set_headers":[{"name":"x-a","value":"b"}]}}"#,
        )
        .expect("parse");
        assert_eq!(r.regions, ["ams"]);
        assert_eq!(r.transform.path.as_deref(), Some("/x?y=1"));
        assert_eq!(r.transform.set_headers, [("x-a".into(), "b".into())]);
        let r = Replay::from_json(br#"{"region":["iad","ord"],"app":"b"}"#).expect("parse");
        assert_eq!(r.regions, ["iad", "ord"]);
        assert_eq!(r.cache, None);
        // Caching: a prefix with a lifetime in seconds or as a duration, or an invalidation.
        use crate::replay_cache::Directive;
        let r = Replay::from_json(
            br#"{"app":"b","cache":{"prefix":"/t/*","ttl":60},"allow_bypass":true}"#,
        )
        .expect("parse");
        assert_eq!(
            r.cache,
            Some(Directive::Store {
                host: None,
                prefix: "/t".into(),
                ttl: Duration::from_secs(60),
                allow_bypass: true,
            })
        );
        let r = Replay::from_json(br#"{"app":"b","cache":{"prefix":"h.example/","ttl":"2m"}}"#)
            .expect("parse");
        assert!(matches!(r.cache, Some(Directive::Store { ttl, .. }) if ttl.as_secs() == 120));
        let r = Replay::from_json(br#"{"app":"b","cache":{"invalidate":true}}"#).expect("parse");
        assert_eq!(r.cache, Some(Directive::Invalidate));
        for bad in [
            &br#"{}"#[..],
            br#"{"state":"x"}"#,
            br#"{"app":"a","transform":{"path":"no-slash"}}"#,
            br#"{"app":"a","transform":{"set_headers":[{"name":"x","value":"a\r\nb"}]}}"#,
            br#"{"app":"a","transform":{"set_headers":[{"name":"bad name","value":"v"}]}}"#,
            // The proxy's own framing and routing headers.
            br#"{"app":"a","transform":{"set_headers":[{"name":"Host","value":"b.internal"}]}}"#,
            br#"{"app":"a","transform":{"set_headers":[{"name":"transfer-encoding","value":"chunked"}]}}"#,
            br#"{"app":"a","transform":{"set_headers":[{"name":"Content-Length","value":"0"}]}}"#,
            br#"{"app":"a","transform":{"delete_headers":["connection"]}}"#,
            br#"{"app":"a","transform":{"set_headers":[{"name":"fly-replay-src","value":"x"}]}}"#,
            b"not json",
            br#"{"app": 5}"#,
            br#"{"app":"b","cache":{"prefix":"/t","ttl":5}}"#,
            br#"{"app":"b","cache":{"prefix":"/t"}}"#,
            br#"{"app":"b","cache":{"prefix":"no-slash","ttl":60}}"#,
        ] {
            assert!(
                Replay::from_json(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn src_header() {
        assert_eq!(
            replay_src("abc", "ams", 5, Some("a=b,c")),
            "instance=abc;region=ams;t=5;state=a=b,c"
        );
        // What a header value can carry is echoed as it is, `%` and inner spaces included.
        assert_eq!(
            replay_src("abc", "ams", 5, Some("a%20b c")),
            "instance=abc;region=ams;t=5;state=a%20b c"
        );
        let odd = replay_src("abc", "ams", 5, Some("x;y é\r\n  "));
        assert_eq!(
            odd,
            "instance=abc;region=ams;t=5;state=x%3By %C3%A9%0D%0A%20%20"
        );
        // Always a valid header value: the header is never dropped for its state.
        assert!(hyper::header::HeaderValue::from_str(&odd).is_ok());
    }
}
