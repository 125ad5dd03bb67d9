//! `/v1/platform/*`.

use axum::Json;
use axum::extract::State;
use hangar_api_types::{Region, RegionsResponse};

use crate::auth::Caller;
use crate::{ApiError, ApiState};

pub(crate) async fn regions(
    State(s): State<ApiState>,
    _c: Caller,
) -> Result<Json<RegionsResponse>, ApiError> {
    Ok(Json(RegionsResponse {
        regions: s
            .config
            .regions
            .iter()
            .map(|r| Region {
                code: r.clone(),
                name: r.clone(),
                gateway_available: Some(true),
                ..Region::default()
            })
            .collect(),
        nearest: Some(s.config.region.clone()),
    }))
}
