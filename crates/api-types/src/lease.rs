//! Machine leases (§2.8).

use serde::{Deserialize, Serialize};

/// Body of `POST …/lease` (fly-go may send `ttl` as a query parameter instead).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LeaseRequest {
    /// Lease lifetime in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    /// Why the lease is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Lease envelope: `{status:"success", data}` on 201/200, `{status:"error", message, code}` on 409.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Lease {
    /// `success` or `error`.
    #[serde(default)]
    pub status: String,
    /// The lease, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<LeaseData>,
    /// Human-readable error, e.g. who holds the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Error code, e.g. `invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl Lease {
    /// `status` of a successful lease response.
    pub const STATUS_SUCCESS: &'static str = "success";
    /// `status` of a failed lease response.
    pub const STATUS_ERROR: &'static str = "error";
    /// `code` of a 409 conflict.
    pub const CODE_INVALID: &'static str = "invalid";

    /// A success envelope around `data`.
    pub fn success(data: LeaseData) -> Self {
        Lease {
            status: Self::STATUS_SUCCESS.to_owned(),
            data: Some(data),
            message: None,
            code: None,
        }
    }

    /// A 409 envelope: lease held by someone else.
    pub fn conflict(message: impl Into<String>) -> Self {
        Lease {
            status: Self::STATUS_ERROR.to_owned(),
            data: None,
            message: Some(message.into()),
            code: Some(Self::CODE_INVALID.to_owned()),
        }
    }

    /// Whether `status` is `success`.
    pub fn is_success(&self) -> bool {
        self.status == Self::STATUS_SUCCESS
    }
}

/// A held lease. All fields are always written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LeaseData {
    /// Pass back in `fly-machine-lease-nonce`.
    #[serde(default)]
    pub nonce: String,
    /// Unix time (seconds) when the lease lapses.
    #[serde(default)]
    pub expires_at: i64,
    /// Holder identity.
    #[serde(default)]
    pub owner: String,
    /// Why the lease is held.
    #[serde(default)]
    pub description: String,
    /// Machine version the lease was taken on.
    #[serde(default)]
    pub version: String,
}
