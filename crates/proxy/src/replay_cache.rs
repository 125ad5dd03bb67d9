//! `fly-replay` caching (PLATFORM.md §3.6): the proxy remembers where an app's answer sent a
//! request and sends the next matching requests there directly, without asking the app again.
//!
//! - **Path-based:** a replaying answer carries `fly-replay-cache: [host]/path/*` (an implicit
//!   trailing `/*`; the host, without a port, defaults to the request's),
//!   `fly-replay-cache-ttl-secs: N` (at least 10) and optionally
//!   `fly-replay-cache-allow-bypass: yes`; the JSON form says the same with `cache.prefix`,
//!   `cache.ttl` and `allow_bypass`. The pattern must match the request it came with.
//! - **Session-based:** the service's `http_options.replay_cache` rules (`path_prefix`,
//!   `ttl_seconds`, `type` `cookie` or `header`, `name`, `allow_bypass`) key the decision on
//!   that cookie's or header's value as well; the longest matching prefix wins.
//! - Only plain decisions are cached: a replay with `state`, a `transform`, a `timeout` or a
//!   `fallback` is followed but not remembered.
//! - A request served from the cache carries `fly-replay-cache-status: hit` and no
//!   `fly-replay-src`; one that filled it, `miss`; one whose client sent
//!   `fly-replay-cache-control: skip` for an entry that allows it, `bypass` (it goes to the
//!   app as if nothing were cached).
//! - `fly-replay-cache: invalidate` (JSON: `cache.invalidate`) in any answer to a request
//!   drops the entry that request matched.
//! - A decision is kept once its target has answered; a cached one whose target can take
//!   nothing any more sends the request back to the app, and is dropped.
//!
//! Bounded: at most [`MAX_ENTRIES`] decisions, [`MAX_ENTRIES_PER_APP`] per app, each living
//! at most [`MAX_TTL`]; when full, expired ones are swept and a new one that still does not
//! fit is not cached (and counted).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hangar_api_types::ReplayCache as Rule;

use crate::replay::Replay;

/// Most decisions kept.
pub const MAX_ENTRIES: usize = 10_000;
/// Most decisions kept for one app: an app whose rules key on something its clients choose
/// (a header) can not take the whole cache from the others.
pub const MAX_ENTRIES_PER_APP: usize = MAX_ENTRIES / 4;
/// Shortest lifetime of a decision (the reference's minimum).
pub const MIN_TTL: Duration = Duration::from_secs(10);
/// Longest lifetime of a decision.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// Longest path prefix or host name kept.
const MAX_PREFIX: usize = 1024;
/// Longest session key (cookie or header value) kept.
const MAX_SESSION: usize = 512;
/// Deepest prefix (in path segments) a decision may have: a lookup tries each prefix of the
/// request's path down to this depth, so a path of thousands of segments costs no more.
const MAX_DEPTH: usize = 32;

/// What an answer says about caching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    /// Remember this replay for requests to `host` (the request's when `None`) whose path
    /// is under `prefix` (`""` = every path).
    Store {
        host: Option<String>,
        prefix: String,
        ttl: Duration,
        allow_bypass: bool,
    },
    /// Forget the decision the request matched.
    Invalidate,
}

/// Parses `[host]/path/*` into the host (lower case) and the path prefix without its
/// trailing `/*` (`/api/*` and `/api` both cover `/api` and everything under `/api/`).
pub fn parse_pattern(s: &str) -> Result<(Option<String>, String), String> {
    let s = s.trim();
    let slash = s
        .find('/')
        .ok_or_else(|| format!("pattern {s:?} has no path"))?;
    let (host, path) = s.split_at(slash);
    let host = if host.is_empty() {
        None
    } else {
        if host.len() > 253
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(format!("host {host:?} (a name, no port)"));
        }
        Some(host.to_ascii_lowercase())
    };
    let path = path.strip_suffix('*').unwrap_or(path);
    let path = path.trim_end_matches('/');
    if path.len() > MAX_PREFIX
        || path.matches('/').count() > MAX_DEPTH
        || path
            .bytes()
            .any(|b| !b.is_ascii_graphic() || b == b'*' || b == b'?' || b == b'#')
    {
        return Err(format!("path {path:?}"));
    }
    Ok((host, path.to_string()))
}

/// Whether `path` is `prefix` or under it.
pub fn covers(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => false,
    }
}

fn ttl_secs(n: i64) -> Result<Duration, String> {
    let d = Duration::from_secs(u64::try_from(n).unwrap_or(0));
    if d < MIN_TTL {
        return Err(format!("ttl {n} s is under {} s", MIN_TTL.as_secs()));
    }
    Ok(d.min(MAX_TTL))
}

/// The header form: `fly-replay-cache`, `fly-replay-cache-ttl-secs`,
/// `fly-replay-cache-allow-bypass`. `Ok(None)` when there is no `fly-replay-cache`.
pub fn from_headers(
    cache: Option<&[u8]>,
    ttl: Option<&[u8]>,
    allow_bypass: Option<&[u8]>,
) -> Result<Option<Directive>, String> {
    let Some(cache) = cache else { return Ok(None) };
    let cache = std::str::from_utf8(cache).map_err(|_| "fly-replay-cache is not UTF-8")?;
    if cache.trim().eq_ignore_ascii_case("invalidate") {
        return Ok(Some(Directive::Invalidate));
    }
    let (host, prefix) = parse_pattern(cache)?;
    let ttl = ttl
        .and_then(|t| std::str::from_utf8(t).ok())
        .ok_or("fly-replay-cache without fly-replay-cache-ttl-secs")?;
    let ttl = ttl_secs(
        ttl.trim()
            .parse()
            .map_err(|_| format!("fly-replay-cache-ttl-secs {ttl:?}"))?,
    )?;
    let allow_bypass = allow_bypass.is_some_and(|v| {
        matches!(
            std::str::from_utf8(v).map(|s| s.trim().to_ascii_lowercase()),
            Ok(s) if s == "yes" || s == "true" || s == "1"
        )
    });
    Ok(Some(Directive::Store {
        host,
        prefix,
        ttl,
        allow_bypass,
    }))
}

/// The JSON form's `cache` object (with the body's `allow_bypass`).
pub(crate) fn from_json(
    prefix: Option<&str>,
    ttl: Option<i64>,
    invalidate: bool,
    allow_bypass: bool,
) -> Result<Option<Directive>, String> {
    if invalidate {
        return Ok(Some(Directive::Invalidate));
    }
    let Some(prefix) = prefix else {
        return Ok(None);
    };
    let (host, prefix) = parse_pattern(prefix)?;
    let ttl = ttl_secs(ttl.ok_or("cache.prefix without cache.ttl")?)?;
    Ok(Some(Directive::Store {
        host,
        prefix,
        ttl,
        allow_bypass,
    }))
}

/// The part of a replay that may be cached: `None` when it carries anything per request
/// (`state`, a transform, a timeout, a fallback) or names no target of its own.
pub fn cacheable(r: &Replay) -> Option<Replay> {
    let plain = r.state.is_none()
        && r.transform == Default::default()
        && r.timeout.is_none()
        && r.fallback.is_none();
    let target = r.app.is_some()
        || r.instance.is_some()
        || r.prefer_instance.is_some()
        || !r.regions.is_empty();
    (plain && target).then(|| Replay {
        regions: r.regions.clone(),
        instance: r.instance.clone(),
        prefer_instance: r.prefer_instance.clone(),
        app: r.app.clone(),
        // Served from the cache, no machine replayed: nothing to keep away from.
        elsewhere: false,
        ..Replay::default()
    })
}

/// A session rule that applies to a request: its prefix and the request's key for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The rule's path prefix (normalised as [`parse_pattern`]'s).
    pub prefix: String,
    /// The cookie's or header's value.
    pub value: String,
    /// The rule's lifetime.
    pub ttl: Duration,
    /// Whether clients may bypass it.
    pub allow_bypass: bool,
}

/// The session rule with the longest prefix covering `path`, with the request's value for
/// it; `None` when no rule covers the path, the request lacks the cookie or header, or the
/// rule is unusable (a TTL under 10 s, an unknown type, no name).
pub fn session_for(
    rules: &[Rule],
    path: &str,
    header: &dyn Fn(&str) -> Vec<String>,
) -> Option<Session> {
    let (rule, prefix) = rules
        .iter()
        .filter_map(|r| {
            let (_, prefix) = parse_pattern(&r.path_prefix).ok()?;
            covers(&prefix, path).then_some((r, prefix))
        })
        .max_by_key(|(_, p)| p.len())?;
    let ttl = ttl_secs(rule.ttl_seconds).ok()?;
    if rule.name.is_empty() {
        return None;
    }
    let value = match rule.r#type.as_str() {
        "cookie" => header("cookie").iter().find_map(|line| {
            line.split(';').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k.trim() == rule.name).then(|| v.trim().to_string())
            })
        })?,
        "header" => header(&rule.name.to_ascii_lowercase()).into_iter().next()?,
        _ => return None,
    };
    if value.is_empty() || value.len() > MAX_SESSION {
        return None;
    }
    Some(Session {
        prefix,
        value,
        ttl,
        allow_bypass: rule.allow_bypass.unwrap_or(false),
    })
}

/// Which decision a request matched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    app: String,
    host: String,
    prefix: String,
    session: Option<String>,
}

impl Key {
    /// A path-based decision.
    pub fn path(app: &str, host: &str, prefix: &str) -> Self {
        Self {
            app: app.to_string(),
            host: host.to_ascii_lowercase(),
            prefix: prefix.to_string(),
            session: None,
        }
    }

    /// A session-based decision.
    pub fn session(app: &str, host: &str, s: &Session) -> Self {
        Self {
            session: Some(s.value.clone()),
            ..Self::path(app, host, &s.prefix)
        }
    }
}

#[derive(Debug)]
struct Entry {
    replay: Arc<Replay>,
    /// The machine whose answer this is.
    from: Box<str>,
    allow_bypass: bool,
    expires: Instant,
}

/// A decision to keep: where the requests it covers go, the machine that said so, for how
/// long (clamped to MIN_TTL..=MAX_TTL), and whether a client may skip it.
#[derive(Debug)]
pub struct Decision {
    pub replay: Replay,
    pub from: String,
    pub ttl: Duration,
    pub allow_bypass: bool,
}

/// What the cache says about a request.
#[derive(Debug)]
pub enum Lookup {
    /// Send it here (`fly-replay-cache-status: hit`).
    Hit(Key, Arc<Replay>),
    /// A decision exists but the client skipped it (`bypass`); the key is what an
    /// `invalidate` in the app's answer drops.
    Bypass(Key),
    /// Nothing cached.
    Miss,
}

/// A full cache looks for expired decisions to drop at most this often: a client who keeps
/// refused inserts coming (choosing new session keys) does not make every request walk the
/// whole map under the lock.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The decisions, and how many each app has.
#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Key, Entry>,
    per_app: HashMap<String, usize>,
    /// When a full cache last dropped its expired decisions.
    swept: Option<Instant>,
}

impl Entries {
    fn remove(&mut self, key: &Key) {
        if self.map.remove(key).is_some()
            && let Some(n) = self.per_app.get_mut(&key.app)
        {
            *n -= 1;
            if *n == 0 {
                self.per_app.remove(&key.app);
            }
        }
    }

    /// Keeps the decisions `keep` says to, recounting.
    fn retain(&mut self, keep: impl Fn(&Key, &Entry) -> bool) {
        self.map.retain(|k, e| keep(k, e));
        self.per_app.clear();
        for k in self.map.keys() {
            *self.per_app.entry(k.app.clone()).or_default() += 1;
        }
    }
}

/// The cached decisions of every app.
#[derive(Debug, Default)]
pub struct ReplayCache {
    entries: Mutex<Entries>,
    len: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    refused: AtomicU64,
}

impl ReplayCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Nothing cached (one atomic read: the request path's only cost while unused).
    pub fn is_empty(&self) -> bool {
        self.len.load(Ordering::Relaxed) == 0
    }

    /// Decisions kept (expired ones included until swept).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Looks up a request to `app` at `host` for `path`: its session rule's decision first,
    /// else the path decision with the longest prefix covering `path`. `skip`: the client
    /// sent `fly-replay-cache-control: skip`. `forced`: the machine the client named
    /// (`fly-force-instance-id`); only that machine's own decision stands for its answer.
    pub fn lookup(
        &self,
        app: &str,
        host: &str,
        path: &str,
        session: Option<&Session>,
        skip: bool,
        forced: Option<&str>,
    ) -> Lookup {
        let now = Instant::now();
        let mut entries = self.lock();
        // Other apps' decisions cost a request one lookup, not a walk of its path.
        if !entries.per_app.contains_key(app) {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Miss;
        }
        // The session's decision, else each prefix of the path (at most MAX_DEPTH segments
        // deep), longest first: `/a/b`, `/a`, ``.
        let path = path.trim_end_matches('/');
        let deepest = path
            .match_indices('/')
            .nth(MAX_DEPTH)
            .map_or(path.len(), |(i, _)| i);
        let prefixes = std::iter::successors(Some(deepest), |&end| {
            (end > 0).then(|| path[..end].rfind('/').unwrap_or(0))
        })
        .map(|end| Key::path(app, host, &path[..end]));
        let Some((key, e)) = session
            .map(|s| Key::session(app, host, s))
            .into_iter()
            .chain(prefixes)
            .find_map(|k| entries.map.get(&k).map(|e| (k, e)))
        else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Miss;
        };
        if e.expires <= now {
            entries.remove(&key);
            self.len.store(entries.map.len(), Ordering::Relaxed);
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Miss;
        }
        if forced.is_some_and(|m| *m != *e.from) {
            self.misses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Miss;
        }
        if skip && e.allow_bypass {
            self.bypasses.fetch_add(1, Ordering::Relaxed);
            return Lookup::Bypass(key);
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        Lookup::Hit(key, Arc::clone(&e.replay))
    }

    /// Remembers a decision. Returns whether it was kept (not when the cache is full of live
    /// decisions, or the key is too long).
    pub fn insert(&self, key: Key, d: Decision) -> bool {
        if key.host.len() > MAX_PREFIX || key.prefix.len() > MAX_PREFIX {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        let full = |e: &Entries| {
            e.map.len() >= MAX_ENTRIES
                || e.per_app.get(&key.app).copied().unwrap_or(0) >= MAX_ENTRIES_PER_APP
        };
        if !entries.map.contains_key(&key) && full(&entries) {
            if entries
                .swept
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY)
            {
                entries.swept = Some(now);
                entries.retain(|_, e| e.expires > now);
            }
            if full(&entries) {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        let app = key.app.clone();
        let entry = Entry {
            replay: Arc::new(d.replay),
            from: d.from.into(),
            allow_bypass: d.allow_bypass,
            expires: now + d.ttl.clamp(MIN_TTL, MAX_TTL),
        };
        if entries.map.insert(key, entry).is_none() {
            *entries.per_app.entry(app).or_default() += 1;
        }
        self.len.store(entries.map.len(), Ordering::Relaxed);
        true
    }

    /// Forgets a decision.
    pub fn remove(&self, key: &Key) {
        let mut entries = self.lock();
        entries.remove(key);
        self.len.store(entries.map.len(), Ordering::Relaxed);
    }

    /// Forgets every decision of `app` (the app is gone).
    pub fn forget_app(&self, app: &str) {
        let mut entries = self.lock();
        entries.retain(|k, _| k.app != app);
        self.len.store(entries.map.len(), Ordering::Relaxed);
    }

    /// `(hits, misses, bypasses, refused)` so far.
    pub fn counts(&self) -> (u64, u64, u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
            self.bypasses.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        assert_eq!(parse_pattern("/api/*"), Ok((None, "/api".into())));
        assert_eq!(parse_pattern("/api"), Ok((None, "/api".into())));
        assert_eq!(parse_pattern("/*"), Ok((None, String::new())));
        assert_eq!(parse_pattern("/"), Ok((None, String::new())));
        assert_eq!(
            parse_pattern("Example.COM/t/1/*"),
            Ok((Some("example.com".into()), "/t/1".into()))
        );
        for bad in [
            "",
            "api",
            "example.com:443/x",
            "/a*/b",
            "/a b",
            "/a?x=1",
            "ex ample.com/x",
        ] {
            assert!(parse_pattern(bad).is_err(), "{bad:?}");
        }
        assert!(parse_pattern(&format!("/{}", "a".repeat(MAX_PREFIX + 1))).is_err());
    }

    #[test]
    fn prefixes_cover_whole_segments() {
        assert!(covers("/api", "/api"));
        assert!(covers("/api", "/api/x/y"));
        assert!(!covers("/api", "/apix"));
        assert!(covers("", "/anything"));
        assert!(!covers("/api", "/"));
    }

    #[test]
    fn header_directives() {
        assert_eq!(
            from_headers(Some(b"/t/*"), Some(b"60"), Some(b"yes")),
            Ok(Some(Directive::Store {
                host: None,
                prefix: "/t".into(),
                ttl: Duration::from_secs(60),
                allow_bypass: true,
            }))
        );
        assert_eq!(
            from_headers(Some(b" Invalidate "), None, None),
            Ok(Some(Directive::Invalidate))
        );
        assert_eq!(from_headers(None, Some(b"60"), None), Ok(None));
        // A lifetime under the minimum, missing or not a number; a bad pattern.
        for (c, t) in [
            (&b"/t/*"[..], Some(&b"9"[..])),
            (b"/t/*", None),
            (b"/t/*", Some(b"soon")),
            (b"/t/*", Some(b"-5")),
            (b"t", Some(b"60")),
            (b"\xff/", Some(b"60")),
        ] {
            assert!(from_headers(Some(c), t, None).is_err(), "{c:?} {t:?}");
        }
        // Capped.
        assert!(matches!(
            from_headers(Some(b"/"), Some(b"99999999999"), None),
            Ok(Some(Directive::Store { ttl, .. })) if ttl == MAX_TTL
        ));
    }

    #[test]
    fn only_plain_replays_are_cached() {
        let to_app = Replay {
            app: Some("b".into()),
            elsewhere: true,
            ..Replay::default()
        };
        let kept = cacheable(&to_app).expect("plain");
        assert_eq!(kept.app.as_deref(), Some("b"));
        assert!(!kept.elsewhere);
        for r in [
            Replay {
                state: Some("s".into()),
                ..to_app.clone()
            },
            Replay {
                timeout: Some(Duration::from_secs(1)),
                ..to_app.clone()
            },
            Replay {
                fallback: Some(crate::replay::Fallback::PreferSelf),
                ..to_app.clone()
            },
            Replay {
                transform: crate::replay::Transform {
                    path: Some("/x".into()),
                    ..Default::default()
                },
                ..to_app.clone()
            },
            // No target of its own.
            Replay {
                elsewhere: true,
                ..Replay::default()
            },
        ] {
            assert!(cacheable(&r).is_none(), "{r:?}");
        }
    }

    fn rule(prefix: &str, kind: &str, name: &str, ttl: i64) -> Rule {
        Rule {
            path_prefix: prefix.into(),
            ttl_seconds: ttl,
            r#type: kind.into(),
            name: name.into(),
            allow_bypass: None,
        }
    }

    #[test]
    fn session_rules_pick_the_longest_prefix_and_read_the_key() {
        let rules = [
            rule("/", "header", "X-Tenant", 60),
            rule("/app/*", "cookie", "sid", 30),
        ];
        let headers = |name: &str| match name {
            "cookie" => vec!["a=1; sid=abc ; b=2".to_string()],
            "x-tenant" => vec!["t1".to_string()],
            _ => Vec::new(),
        };
        let s = session_for(&rules, "/app/x", &headers).expect("cookie rule");
        assert_eq!((s.prefix.as_str(), s.value.as_str()), ("/app", "abc"));
        assert_eq!(s.ttl, Duration::from_secs(30));
        let s = session_for(&rules, "/other", &headers).expect("header rule");
        assert_eq!((s.prefix.as_str(), s.value.as_str()), ("", "t1"));
        // The longest rule wins even when the request lacks its cookie.
        assert!(session_for(&rules, "/app", &|_: &str| Vec::new()).is_none());
        // Unusable rules.
        for r in [
            rule("/", "header", "x", 5),
            rule("/", "query", "x", 60),
            rule("/", "header", "", 60),
        ] {
            assert!(session_for(&[r], "/", &|_: &str| vec!["v".into()]).is_none());
        }
    }

    /// A decision of machine `m` for MIN_TTL.
    fn by_m(r: &Replay, allow_bypass: bool) -> Decision {
        Decision {
            replay: r.clone(),
            from: "m".into(),
            ttl: MIN_TTL,
            allow_bypass,
        }
    }

    #[test]
    fn lookups_hits_expiry_bypass_and_bounds() {
        let c = ReplayCache::default();
        assert!(c.is_empty());
        let to_b = Replay {
            app: Some("b".into()),
            ..Replay::default()
        };
        assert!(c.insert(Key::path("a", "a.localhost", "/t"), by_m(&to_b, false)));
        assert!(!c.is_empty());
        assert!(matches!(
            c.lookup("a", "a.localhost", "/t/1/2", None, false, None),
            Lookup::Hit(_, r) if *r == to_b
        ));
        assert!(matches!(
            c.lookup("a", "a.localhost", "/tx", None, false, None),
            Lookup::Miss
        ));
        assert!(matches!(
            c.lookup("a", "other.localhost", "/t", None, false, None),
            Lookup::Miss
        ));
        assert!(matches!(
            c.lookup("z", "a.localhost", "/t", None, false, None),
            Lookup::Miss
        ));
        // A client naming the machine that decided gets its decision; naming another, not.
        assert!(matches!(
            c.lookup("a", "a.localhost", "/t", None, false, Some("m")),
            Lookup::Hit(..)
        ));
        assert!(matches!(
            c.lookup("a", "a.localhost", "/t", None, false, Some("other")),
            Lookup::Miss
        ));
        // Not bypassable: skip is ignored.
        assert!(matches!(
            c.lookup("a", "a.localhost", "/t", None, true, None),
            Lookup::Hit(..)
        ));
        // The longest prefix wins; a bypassable one is skipped on request.
        let to_c = Replay {
            app: Some("c".into()),
            ..Replay::default()
        };
        c.insert(Key::path("a", "a.localhost", "/t/1"), by_m(&to_c, true));
        assert!(matches!(
            c.lookup("a", "a.localhost", "/t/1/2", None, false, None),
            Lookup::Hit(_, r) if *r == to_c
        ));
        assert!(matches!(
            c.lookup("a", "a.localhost", "/t/1/2", None, true, None),
            Lookup::Bypass(_)
        ));
        // A session's decision comes before the path's.
        let s = Session {
            prefix: String::new(),
            value: "u1".into(),
            ttl: MIN_TTL,
            allow_bypass: false,
        };
        c.insert(Key::session("a", "a.localhost", &s), by_m(&to_b, false));
        assert!(matches!(
            c.lookup("a", "a.localhost", "/t/1/2", Some(&s), false, None),
            Lookup::Hit(_, r) if *r == to_b
        ));
        // Removal and expiry.
        c.remove(&Key::path("a", "a.localhost", "/t/1"));
        assert!(matches!(
            c.lookup("a", "a.localhost", "/t/1/2", None, false, None),
            Lookup::Hit(_, r) if *r == to_b
        ));
        c.lock()
            .map
            .values_mut()
            .for_each(|e| e.expires = Instant::now());
        assert!(matches!(
            c.lookup("a", "a.localhost", "/t", None, false, None),
            Lookup::Miss
        ));
        c.forget_app("a");
        assert!(c.is_empty());
        // Bounded per app: one app full of live decisions is refused more, others are not.
        let fill = |app: &str, n: usize| {
            for i in 0..n {
                assert!(c.insert(Key::path(app, "h", &format!("/{i}")), by_m(&to_b, false)));
            }
        };
        fill("a", MAX_ENTRIES_PER_APP);
        assert!(!c.insert(Key::path("a", "h", "/new"), by_m(&to_b, false)));
        // (Replacing one of its own is not a new one.)
        assert!(c.insert(Key::path("a", "h", "/0"), by_m(&to_b, false)));
        // And in all: full of live decisions, a new one is refused.
        fill("b", MAX_ENTRIES_PER_APP);
        fill("c", MAX_ENTRIES_PER_APP);
        fill("d", MAX_ENTRIES - 3 * MAX_ENTRIES_PER_APP);
        assert_eq!(c.len(), MAX_ENTRIES);
        assert!(!c.insert(Key::path("e", "h", "/new"), by_m(&to_b, false)));
        // Removing one frees its app's place.
        c.remove(&Key::path("a", "h", "/0"));
        assert!(c.insert(Key::path("a", "h", "/new"), by_m(&to_b, false)));
        // Expired ones make room, looked for at most once a second: the refusal above
        // just looked.
        c.lock()
            .map
            .values_mut()
            .for_each(|e| e.expires = Instant::now());
        assert!(!c.insert(Key::path("e", "h", "/new"), by_m(&to_b, false)));
        assert_eq!(c.len(), MAX_ENTRIES);
        let last = c.lock().swept.expect("swept");
        c.lock().swept = last.checked_sub(SWEEP_EVERY);
        assert!(c.insert(Key::path("e", "h", "/new"), by_m(&to_b, false)));
        assert_eq!(c.len(), 1);
        assert_eq!(c.lock().per_app.get("e"), Some(&1));
        assert_eq!(c.lock().per_app.len(), 1);
        assert_eq!(c.counts().3, 3);
    }
}
