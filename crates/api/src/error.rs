//! Errors → HTTP status + JSON body (PLATFORM.md §2.1): one mapping for every handler.

use axum::Json;
use axum::http::{StatusCode, header};
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

    /// 409: the resource is in use (e.g. a volume attached to another machine).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message, None)
    }

    /// 422: the request is well-formed but names something it can not use.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message, None)
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

    /// 429 for a bounded resource that is full.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(StatusCode::TOO_MANY_REQUESTS, message, None)
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

/// Every 4xx/5xx leaves as a §2.1 JSON body, whoever made it: the handlers already do, and
/// this turns what axum answers by itself (405 for a method a route lacks, its path and query
/// rejections, the body-limit backstop) into `{"error": "<its text>"}` with the same status
/// and headers (`Allow` stays).
pub(crate) async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // axum's own messages are short plain text; anything longer is cut, not buffered.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let error = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_ascii_lowercase()
    } else {
        text
    };
    let body = ErrorBody {
        error,
        status: None,
        details: None,
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error\":\"error\"}".to_vec());
    Response::from_parts(parts, axum::body::Body::from(bytes))
}
