//! `…/lease` (PLATFORM.md §2.8).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use hangar_api_types::{Lease, LeaseData, LeaseRequest};
use hangar_store::LeaseRecord;

use super::apps::visible_app;
use super::machines::{new_lease, query_pairs};
use crate::auth::Caller;
use crate::json::Body;
use crate::util::now_ms;
use crate::{ApiError, ApiState};

const DEFAULT_TTL_SECS: i64 = 30;

fn ok(l: &LeaseRecord) -> Lease {
    Lease {
        status: "success".into(),
        data: Some(LeaseData {
            nonce: l.nonce.clone(),
            expires_at: l.expires_at_ms / 1000,
            owner: l.owner.clone(),
            description: l.description.clone(),
            version: l.version.clone(),
        }),
        message: None,
        code: None,
    }
}

fn machine(
    s: &ApiState,
    c: &Caller,
    app: &str,
    id: &str,
) -> Result<hangar_store::MachineRecord, ApiError> {
    let a = visible_app(s, c, app)?;
    s.store
        .get_machine(&a.name, id)?
        .ok_or_else(|| ApiError::not_found("machine"))
}

pub(crate) async fn acquire(
    State(s): State<ApiState>,
    c: Caller,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    Body(req): Body<LeaseRequest>,
) -> Result<(StatusCode, Json<Lease>), ApiError> {
    let m = machine(&s, &c, &app, &id)?;
    let q = query_pairs(raw.as_deref());
    let ttl = match q.iter().find(|(k, _)| k == "ttl") {
        Some((_, v)) => v
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request("ttl must be a number of seconds"))?,
        None => req.ttl.unwrap_or(DEFAULT_TTL_SECS),
    };
    if ttl <= 0 {
        return Err(ApiError::bad_request("ttl must be positive"));
    }
    let lease = new_lease(&c, &m, ttl, req.description.unwrap_or_default());
    let holder = headers
        .get("fly-machine-lease-nonce")
        .and_then(|v| v.to_str().ok());
    let stored = s.store.acquire_lease(&lease, holder, now_ms())?;
    Ok((StatusCode::CREATED, Json(ok(&stored))))
}

pub(crate) async fn get(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<Lease>, ApiError> {
    let m = machine(&s, &c, &app, &id)?;
    let lease = s
        .store
        .get_lease(&m.id, now_ms())?
        .ok_or_else(|| ApiError::not_found("lease"))?;
    Ok(Json(ok(&lease)))
}

pub(crate) async fn release(
    State(s): State<ApiState>,
    c: Caller,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let m = machine(&s, &c, &app, &id)?;
    let nonce = headers
        .get("fly-machine-lease-nonce")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("fly-machine-lease-nonce header is required"))?;
    match s.store.release_lease(&m.id, nonce, now_ms()) {
        Ok(()) => Ok(Json(serde_json::json!({"status": "success"}))),
        Err(hangar_store::StoreError::LeaseMismatch) => {
            Err(ApiError::bad_request("lease nonce does not match"))
        }
        Err(e) => Err(e.into()),
    }
}
