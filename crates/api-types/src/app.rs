//! Apps (§2.2).

use serde::{Deserialize, Serialize};

use crate::serde_util::null_default;

/// Body of `POST /apps`. The docs send `app_name`; fly-go sends `name` (and `app_role_id`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CreateAppRequest {
    /// App name (docs spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_name: Option<String>,
    /// Organization slug (`personal` allowed).
    #[serde(default)]
    pub org_slug: String,
    /// Custom 6PN network name, fixed at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// App name (fly-go spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// App role, e.g. `postgres_cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_role_id: Option<String>,
}

impl CreateAppRequest {
    /// The requested name: non-empty `app_name`, else non-empty `name`.
    pub fn effective_name(&self) -> Option<&str> {
        [self.app_name.as_deref(), self.name.as_deref()]
            .into_iter()
            .flatten()
            .find(|n| !n.is_empty())
    }

    /// The custom network, treating `""` (sent by fly-go) as none.
    pub fn effective_network(&self) -> Option<&str> {
        self.network.as_deref().filter(|n| !n.is_empty())
    }
}

/// Response of `GET /apps/{app}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct App {
    /// App ID.
    #[serde(default)]
    pub id: String,
    /// App name.
    #[serde(default)]
    pub name: String,
    /// Owning organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<AppOrganization>,
    /// `pending`, `deployed`, `suspended`, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// 6PN network name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Numeric app ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_numeric_id: Option<i64>,
    /// Number of Machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_count: Option<i64>,
    /// Number of volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_count: Option<i64>,
    /// CNAME target for custom domains (`<hash>.<app>.fly.dev`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cname_target: Option<String>,
    /// App role, e.g. `postgres_cluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_role: Option<String>,
}

/// Organization summary inside [`App`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppOrganization {
    /// Display name.
    #[serde(default)]
    pub name: String,
    /// Slug.
    #[serde(default)]
    pub slug: String,
    /// Numeric organization ID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_numeric_id: Option<i64>,
}

/// One item of `GET /apps`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListApp {
    /// App ID.
    #[serde(default)]
    pub id: String,
    /// App name.
    #[serde(default)]
    pub name: String,
    /// Number of Machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_count: Option<i64>,
    /// Number of volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_count: Option<i64>,
    /// 6PN network name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// Response of `GET /apps?org_slug=`. Both fields are always written.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListAppsResponse {
    /// Number of apps.
    #[serde(default)]
    pub total_apps: i64,
    /// The apps.
    #[serde(default, deserialize_with = "null_default")]
    pub apps: Vec<ListApp>,
}
