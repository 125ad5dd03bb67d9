//! Hangar's own admin endpoints: orgs and org tokens (admin token only).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use hangar_domain::OrgSlug;
use hangar_store::TokenScope;
use serde::{Deserialize, Serialize};

use crate::auth::Caller;
use crate::json::Body;
use crate::util::{hash_token, new_token, now_ms};
use crate::{ApiError, ApiState};

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CreateOrg {
    slug: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct OrgView {
    slug: String,
    name: String,
    internal_numeric_id: i64,
}

fn admin(c: &Caller) -> Result<(), ApiError> {
    if c.is_admin() {
        Ok(())
    } else {
        Err(ApiError::not_found("route"))
    }
}

pub(crate) async fn list(
    State(s): State<ApiState>,
    c: Caller,
) -> Result<Json<Vec<OrgView>>, ApiError> {
    let orgs = s.store.list_orgs()?;
    Ok(Json(
        orgs.into_iter()
            .filter(|o| c.sees(&o.slug))
            .map(|o| OrgView {
                slug: o.slug,
                name: o.name,
                internal_numeric_id: o.numeric_id,
            })
            .collect(),
    ))
}

pub(crate) async fn create(
    State(s): State<ApiState>,
    c: Caller,
    Body(req): Body<CreateOrg>,
) -> Result<(StatusCode, Json<OrgView>), ApiError> {
    admin(&c)?;
    let slug = OrgSlug::parse(&req.slug).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let name = req.name.unwrap_or_else(|| slug.to_string());
    let o = s.store.create_org(slug.as_str(), &name, now_ms())?;
    Ok((
        StatusCode::CREATED,
        Json(OrgView {
            slug: o.slug,
            name: o.name,
            internal_numeric_id: o.numeric_id,
        }),
    ))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CreateToken {
    org_slug: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct TokenView {
    token: String,
    org_slug: String,
}

pub(crate) async fn create_token(
    State(s): State<ApiState>,
    c: Caller,
    Body(req): Body<CreateToken>,
) -> Result<(StatusCode, Json<TokenView>), ApiError> {
    admin(&c)?;
    if s.store.get_org(&req.org_slug)?.is_none() {
        return Err(ApiError::not_found("org"));
    }
    let token = new_token();
    let name = req.name.unwrap_or_else(|| "token".into());
    s.store.create_token(
        &hash_token(&token),
        &TokenScope::Org(req.org_slug.clone()),
        &name,
        now_ms(),
    )?;
    Ok((
        StatusCode::CREATED,
        Json(TokenView {
            token,
            org_slug: req.org_slug,
        }),
    ))
}
