//! `/v1/apps/{app}/secrets` (PLATFORM.md §2.10): app secrets, sealed at rest with the host
//! key, versioned, values never returned unless `show_secrets=true`, injected by the agent
//! as environment variables when a machine is (re)made.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use hangar_api_types::{
    DeleteSecretResponse, Secret, SecretsListResponse, SetSecretRequest, SetSecretResponse,
    SetSecretsRequest, SetSecretsResponse,
};
use hangar_domain::time::rfc3339;
use hangar_store::SecretRecord;
use sha2::{Digest as _, Sha256};

use super::apps::visible_app;
use super::machines::{first, flag, query_pairs};
use crate::auth::Caller;
use crate::json::Body;
use crate::util::now_ms;
use crate::{ApiError, ApiState};

/// Most secrets per app, and the longest value.
const MAX_SECRETS: usize = 500;
const MAX_VALUE: usize = 64 * 1024;

fn sealer(s: &ApiState) -> Result<&hangar_store::Sealer, ApiError> {
    s.sealer
        .as_deref()
        .ok_or_else(|| ApiError::not_implemented("secrets on a server without a sealing key"))
}

use hangar_store::secret_context as context;

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 256
        && !n.as_bytes()[0].is_ascii_digit()
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn view(s: &ApiState, app: &str, r: &SecretRecord, show: bool) -> Secret {
    let value = show
        .then(|| {
            s.sealer.as_deref().and_then(|k| {
                k.open(&context(app, &r.name), &r.sealed)
                    .ok()
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
            })
        })
        .flatten();
    Secret {
        name: r.name.clone(),
        digest: r.digest.clone(),
        value,
        created_at: Some(rfc3339(r.created_at)),
        updated_at: Some(rfc3339(r.updated_at)),
    }
}

fn set(s: &ApiState, app: &str, values: Vec<(String, Option<String>)>) -> Result<u64, ApiError> {
    let k = sealer(s)?;
    let mut changes = Vec::new();
    for (name, value) in values {
        if !valid_name(&name) {
            return Err(ApiError::bad_request(format!(
                "secret name '{}' is not a valid environment variable name",
                name.chars().take(64).collect::<String>()
            )));
        }
        let sealed = match value {
            None => None,
            Some(v) => {
                if v.len() > MAX_VALUE || v.contains('\0') {
                    return Err(ApiError::bad_request(format!(
                        "secret {name}: values are at most {MAX_VALUE} bytes, without NUL"
                    )));
                }
                let digest: String = Sha256::digest(v.as_bytes())
                    .iter()
                    .take(8)
                    .map(|b| format!("{b:02x}"))
                    .collect();
                let sealed = k
                    .seal(&context(app, &name), v.as_bytes())
                    .map_err(ApiError::internal)?;
                Some((sealed, digest))
            }
        };
        changes.push((name, sealed));
    }
    let (existing, _) = s.store.secrets(app)?;
    let adding = changes
        .iter()
        .filter(|(n, v)| v.is_some() && !existing.iter().any(|e| e.name == *n))
        .count();
    if existing.len() + adding > MAX_SECRETS {
        return Err(ApiError::bad_request(format!(
            "an app has at most {MAX_SECRETS} secrets"
        )));
    }
    Ok(s.store.set_secrets(app, &changes, now_ms())?)
}

pub(crate) async fn list(
    State(s): State<ApiState>,
    c: Caller,
    Path(app): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SecretsListResponse>, ApiError> {
    let a = visible_app(&s, &c, &app)?;
    let q = query_pairs(raw.as_deref());
    let show = flag(&q, "show_secrets")?;
    let _ = first(&q, "version");
    let (records, _) = s.store.secrets(&a.name)?;
    Ok(Json(SecretsListResponse {
        secrets: records.iter().map(|r| view(&s, &a.name, r, show)).collect(),
    }))
}

pub(crate) async fn set_many(
    State(s): State<ApiState>,
    c: Caller,
    Path(app): Path<String>,
    Body(req): Body<SetSecretsRequest>,
) -> Result<Json<SetSecretsResponse>, ApiError> {
    let a = visible_app(&s, &c, &app)?;
    let version = set(&s, &a.name, req.values.into_iter().collect())?;
    let (records, _) = s.store.secrets(&a.name)?;
    Ok(Json(SetSecretsResponse {
        secrets: records
            .iter()
            .map(|r| view(&s, &a.name, r, false))
            .collect(),
        version,
    }))
}

pub(crate) async fn get_one(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, name)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Secret>, ApiError> {
    let a = visible_app(&s, &c, &app)?;
    let show = flag(&query_pairs(raw.as_deref()), "show_secrets")?;
    let (records, _) = s.store.secrets(&a.name)?;
    let r = records
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ApiError::not_found("secret"))?;
    Ok(Json(view(&s, &a.name, r, show)))
}

pub(crate) async fn set_one(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, name)): Path<(String, String)>,
    Body(req): Body<SetSecretRequest>,
) -> Result<Json<SetSecretResponse>, ApiError> {
    let a = visible_app(&s, &c, &app)?;
    let version = set(&s, &a.name, vec![(name.clone(), Some(req.value))])?;
    let (records, _) = s.store.secrets(&a.name)?;
    let r = records
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ApiError::internal("secret vanished"))?;
    Ok(Json(SetSecretResponse {
        secret: view(&s, &a.name, r, false),
        version,
    }))
}

pub(crate) async fn delete_one(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, name)): Path<(String, String)>,
) -> Result<Json<DeleteSecretResponse>, ApiError> {
    let a = visible_app(&s, &c, &app)?;
    let (records, _) = s.store.secrets(&a.name)?;
    if !records.iter().any(|r| r.name == name) {
        return Err(ApiError::not_found("secret"));
    }
    let version = set(&s, &a.name, vec![(name, None)])?;
    Ok(Json(DeleteSecretResponse { version }))
}
