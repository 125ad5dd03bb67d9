//! The JSON body extractor: size-limited, tolerant of empty bodies, errors as §2.1 bodies.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use crate::{ApiError, ApiState};

/// A JSON request body; an empty body reads as `T::default()` (clients differ in sending
/// `{}`, nothing, or `null`).
#[derive(Debug)]
pub(crate) struct Body<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<ApiState> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        let limit = state.config.max_body_bytes;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::too_large(limit))?;
        if bytes.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        let trimmed = bytes.trim_ascii();
        if trimmed.is_empty() || trimmed == b"null" {
            return Ok(Body(T::default()));
        }
        serde_json::from_slice(trimmed)
            .map(Body)
            .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))
    }
}
