//! App secrets (§2.10, current fly-go; not in the 2024 swagger).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::serde_util::null_default;

/// A secret as listed; `value` only with `show_secrets=true`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Secret {
    /// Secret name.
    #[serde(default)]
    pub name: String,
    /// Digest of the value.
    #[serde(default)]
    pub digest: String,
    /// Plain value (only when requested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// RFC 3339 last update time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// Response of `GET /apps/{app}/secrets`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SecretsListResponse {
    /// The secrets (always written).
    #[serde(default, deserialize_with = "null_default")]
    pub secrets: Vec<Secret>,
}

/// Body of `POST /apps/{app}/secrets`: a value sets, `null` deletes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SetSecretsRequest {
    /// Name → new value, or `None` (JSON `null`) to delete.
    #[serde(default, deserialize_with = "null_default")]
    pub values: BTreeMap<String, Option<String>>,
}

/// Response of `POST /apps/{app}/secrets`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SetSecretsResponse {
    /// Secrets after the write (always written).
    #[serde(default, deserialize_with = "null_default")]
    pub secrets: Vec<Secret>,
    /// New secrets version.
    #[serde(default)]
    pub version: u64,
}

/// Body of `POST /apps/{app}/secrets/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SetSecretRequest {
    /// New value.
    #[serde(default)]
    pub value: String,
}

/// Response of `POST /apps/{app}/secrets/{name}`: the secret plus the new version.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SetSecretResponse {
    /// The secret.
    #[serde(flatten)]
    pub secret: Secret,
    /// New secrets version.
    #[serde(default)]
    pub version: u64,
}

/// Response of `DELETE /apps/{app}/secrets/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeleteSecretResponse {
    /// New secrets version.
    #[serde(default)]
    pub version: u64,
}
