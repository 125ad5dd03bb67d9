//! `/v1/apps`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hangar_api_types::{App, AppOrganization, CreateAppRequest, ListApp, ListAppsResponse};
use hangar_domain::AppName;
use hangar_store::{AppRecord, TokenScope};
use serde::Deserialize;

use crate::auth::Caller;
use crate::json::Body;
use crate::util::{now_ms, random};
use crate::{ApiError, ApiState};

/// Loads an app the caller may see; 404 otherwise (a foreign org's app does not exist for them).
pub(crate) fn visible_app(s: &ApiState, c: &Caller, name: &str) -> Result<AppRecord, ApiError> {
    match s.store.get_app(name)? {
        Some(a) if c.sees(&a.org_slug) => Ok(a),
        _ => Err(ApiError::not_found("app")),
    }
}

/// The org a request names: `personal` means the caller's own org.
fn resolve_org(s: &ApiState, c: &Caller, slug: &str) -> Result<String, ApiError> {
    let slug = match (&c.scope, slug) {
        (TokenScope::Org(own), "personal" | "") => own.clone(),
        (_, "") => "personal".to_string(),
        (_, s) => s.to_string(),
    };
    if !c.sees(&slug) {
        return Err(ApiError::not_found("org"));
    }
    if s.store.get_org(&slug)?.is_none() {
        if slug == "personal" && c.is_admin() {
            s.store.create_org("personal", "Personal", now_ms())?;
        } else {
            return Err(ApiError::not_found("org"));
        }
    }
    Ok(slug)
}

fn counts(s: &ApiState, app: &str) -> Result<i64, ApiError> {
    Ok(s.store.list_machines(app, false)?.len() as i64)
}

fn view(s: &ApiState, a: &AppRecord) -> Result<App, ApiError> {
    let org = s.store.get_org(&a.org_slug)?;
    Ok(App {
        id: a.id.clone(),
        name: a.name.clone(),
        organization: org.map(|o| AppOrganization {
            name: o.name,
            slug: o.slug,
            internal_numeric_id: Some(o.numeric_id),
        }),
        status: Some("deployed".into()),
        network: Some(a.network.clone()),
        machine_count: Some(counts(s, &a.name)?),
        volume_count: Some(super::volumes::count(s, &a.name)?),
        ..App::default()
    })
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    org_slug: Option<String>,
}

pub(crate) async fn list(
    State(s): State<ApiState>,
    c: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListAppsResponse>, ApiError> {
    let org = match q.org_slug.as_deref() {
        Some(o) => Some(resolve_org(&s, &c, o)?),
        None => match &c.scope {
            TokenScope::Org(o) => Some(o.clone()),
            TokenScope::Admin => None,
        },
    };
    let apps = s.store.list_apps(org.as_deref())?;
    let apps = apps
        .iter()
        .map(|a| {
            Ok(ListApp {
                id: a.id.clone(),
                name: a.name.clone(),
                machine_count: Some(counts(&s, &a.name)?),
                volume_count: Some(super::volumes::count(&s, &a.name)?),
                network: Some(a.network.clone()),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(ListAppsResponse {
        total_apps: apps.len() as i64,
        apps,
    }))
}

fn valid_network(n: &str) -> bool {
    (1..=63).contains(&n.len())
        && n.starts_with(|c: char| c.is_ascii_alphabetic())
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub(crate) async fn create(
    State(s): State<ApiState>,
    c: Caller,
    Body(req): Body<CreateAppRequest>,
) -> Result<(StatusCode, Json<App>), ApiError> {
    let name = req.effective_name().unwrap_or_default().to_string();
    let name = AppName::parse(&name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let org = resolve_org(&s, &c, &req.org_slug)?;
    let network = req.network.clone().unwrap_or_else(|| "default".into());
    if !valid_network(&network) {
        return Err(ApiError::bad_request(format!(
            "invalid network '{}': letters, digits and dashes, starting with a letter",
            network
                .chars()
                .take(64)
                .collect::<String>()
                .escape_default()
        )));
    }
    let id: String = random::<8>().iter().map(|b| format!("{b:02x}")).collect();
    let rec = AppRecord {
        id,
        name: name.to_string(),
        org_slug: org,
        network,
        created_at: now_ms(),
    };
    s.store.create_app(&rec)?;
    Ok((StatusCode::CREATED, Json(view(&s, &rec)?)))
}

pub(crate) async fn get(
    State(s): State<ApiState>,
    c: Caller,
    Path(app): Path<String>,
) -> Result<Json<App>, ApiError> {
    let a = visible_app(&s, &c, &app)?;
    Ok(Json(view(&s, &a)?))
}

pub(crate) async fn delete(
    State(s): State<ApiState>,
    c: Caller,
    Path(app): Path<String>,
) -> Result<StatusCode, ApiError> {
    let a = visible_app(&s, &c, &app)?;
    // Machine rows go with the app; the host agent removes containers it no longer finds
    // in the store (its garbage collection), so nothing stays on the host.
    s.store.delete_app(&a.name)?;
    Ok(StatusCode::ACCEPTED)
}
