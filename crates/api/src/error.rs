//! Errors → HTTP status + JSON body (PLATFORM.md §2.1): one mapping for every handler.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hangar_api_types::{ErrorBody, Lease};
use hangar_store::StoreError;

/// An error a handler returns.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: Box<Body>,
}

#[derive(Debug)]
enum Body {
    Error(ErrorBody),
    Lease(Lease),
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>, code: Option<&str>) -> Self {
        Self {
            status,
            body: Box::new(Body::Error(ErrorBody {
                error: message.into(),
                status: code.map(str::to_string),
                details: None,
            })),
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message, None)
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "missing or invalid token: send Authorization: Bearer <token>",
            None,
        )
    }

    /// 404 for `what`.
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"), None)
    }

    /// 408.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(StatusCode::REQUEST_TIMEOUT, message, None)
    }

    /// 409 with the lease body flyctl expects.
    pub fn lease_held(owner: &str, expires_at: i64) -> Self {
        Self {
            status: StatusCode::CONFLICT,
            body: Box::new(Body::Lease(Lease {
                status: "error".into(),
                data: None,
                message: Some(format!(
                    "failed to acquire lease: lease currently held by {owner}, expires at {expires_at}"
                )),
                code: Some("invalid".into()),
            })),
        }
    }

    /// 412: the machine's state does not allow the action.
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            message,
            Some("failed_precondition"),
        )
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {limit} bytes"),
            None,
        )
    }

    /// 422 `name_taken`.
    pub fn name_taken(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            message,
            Some("name_taken"),
        )
    }

    /// 429.
    pub fn rate_limited() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit exceeded; retry later",
            None,
        )
    }

    /// 501.
    pub fn not_implemented(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("{what} is not implemented yet"),
            None,
        )
    }

    /// 500 (details stay in the log, not in the response).
    pub fn internal(message: impl std::fmt::Display) -> Self {
        eprintln!("hangar-api: internal error: {message}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            Some("unknown"),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken { what, name } => {
                ApiError::name_taken(format!("{what} '{name}' is already taken"))
            }
            StoreError::NotFound(what) => ApiError::not_found(what),
            StoreError::LeaseHeld { owner, expires_at } => ApiError::lease_held(&owner, expires_at),
            StoreError::Conflict { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "machine changed concurrently; retry",
                None,
            ),
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match *self.body {
            Body::Error(b) => (self.status, Json(b)).into_response(),
            Body::Lease(l) => (self.status, Json(l)).into_response(),
        }
    }
}
