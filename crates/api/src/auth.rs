//! Bearer tokens: every request but `/` needs one; each token is scoped to one org (or admin).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use hangar_store::TokenScope;

use crate::util::hash_token;
use crate::{ApiError, ApiState};

/// Who is calling.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub scope: TokenScope,
}

impl Caller {
    /// May this caller see `org`'s resources?
    pub fn sees(&self, org: &str) -> bool {
        match &self.scope {
            TokenScope::Admin => true,
            TokenScope::Org(o) => o == org,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.scope == TokenScope::Admin
    }

    /// Name recorded as a lease owner.
    pub fn owner(&self) -> String {
        match &self.scope {
            TokenScope::Admin => "admin".into(),
            TokenScope::Org(o) => format!("{o}@hangar"),
        }
    }
}

/// Extracts the token from `Authorization: Bearer X` or `Authorization: FlyV1 X`.
fn token(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get("authorization")?.to_str().ok()?.trim();
    let (scheme, rest) = v.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("flyv1") {
        let t = rest.trim();
        (!t.is_empty()).then_some(t)
    } else {
        None
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let t = token(parts).ok_or_else(ApiError::unauthorized)?;
        if t.len() > 4096 {
            return Err(ApiError::unauthorized());
        }
        let hash = hash_token(t);
        let scope = state
            .store
            .token_scope(&hash)?
            .ok_or_else(ApiError::unauthorized)?;
        if !state.limiter.allow(&hash) {
            return Err(ApiError::rate_limited());
        }
        Ok(Caller { scope })
    }
}

/// Token buckets per token; bounded: at most `MAX_BUCKETS` tokens tracked (oldest evicted).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: Option<(u32, u32)>,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

const MAX_BUCKETS: usize = 10_000;

impl RateLimiter {
    pub fn new(limit: Option<(u32, u32)>) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn allow(&self, key: &str) -> bool {
        let Some((rate, burst)) = self.limit else {
            return true;
        };
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() >= MAX_BUCKETS
            && !b.contains_key(key)
            && let Some(oldest) = b.iter().min_by_key(|(_, v)| v.1).map(|(k, _)| k.clone())
        {
            b.remove(&oldest);
        }
        let entry = b.entry(key.to_string()).or_insert((f64::from(burst), now));
        let refill = now.duration_since(entry.1).as_secs_f64() * f64::from(rate);
        entry.0 = (entry.0 + refill).min(f64::from(burst));
        entry.1 = now;
        if entry.0 >= 1.0 {
            entry.0 -= 1.0;
            true
        } else {
            false
        }
    }
}
