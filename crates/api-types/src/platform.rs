//! IP assignments and platform regions (§2.10, current fly-go; not in the 2024 swagger).

use serde::{Deserialize, Serialize};

use crate::serde_util::null_default;

/// An IP address assigned to an app.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpAssignment {
    /// The address; Flycast addresses start with `fdaa:`.
    #[serde(default)]
    pub ip: String,
    /// Region (`global` for anycast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Service the address is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    /// Shared IPv4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<bool>,
    /// RFC 3339 creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// Egress address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<bool>,
    /// Network of a Flycast address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<IpAssignmentNetwork>,
}

impl IpAssignment {
    /// Whether this is a private Flycast address.
    pub fn is_flycast(&self) -> bool {
        self.ip.starts_with("fdaa:")
    }
}

/// The 6PN network of a Flycast address.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct IpAssignmentNetwork {
    /// Network name; empty for the organization default.
    #[serde(default)]
    pub name: String,
    /// Organization slug.
    #[serde(default)]
    pub org_slug: String,
}

/// Response of `GET /apps/{app}/ip_assignments`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ListIpAssignmentsResponse {
    /// The addresses (always written).
    #[serde(default, deserialize_with = "null_default")]
    pub ips: Vec<IpAssignment>,
}

/// Body of `POST /apps/{app}/ip_assignments`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AllocateIpRequest {
    /// `v4`, `v6`, `shared_v4`, `private_v6`, `egress_v4`, `egress_v6`, `egress_pair`.
    #[serde(default)]
    pub r#type: String,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Organization slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_slug: Option<String>,
    /// 6PN network (Flycast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Service to bind to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
}

/// A region, as listed by `GET /platform/regions`.
///
/// Go decodes JSON keys case-insensitively, so the capitalised spellings are accepted too.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Region {
    /// Region code, e.g. `ams`.
    #[serde(default, alias = "Code")]
    pub code: String,
    /// Display name.
    #[serde(default, alias = "Name")]
    pub name: String,
    /// Latitude.
    #[serde(default, alias = "Latitude", skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    /// Longitude.
    #[serde(default, alias = "Longitude", skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    /// WireGuard gateway available.
    #[serde(
        default,
        alias = "GatewayAvailable",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_available: Option<bool>,
    /// Needs a paid plan.
    #[serde(
        default,
        alias = "RequiresPaidPlan",
        skip_serializing_if = "Option::is_none"
    )]
    pub requires_paid_plan: Option<bool>,
    /// Deprecated region.
    #[serde(default, alias = "Deprecated", skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<bool>,
}

/// Response of `GET /platform/regions` (fly-go `RegionData`: capitalised keys).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RegionsResponse {
    /// All regions.
    #[serde(
        rename = "Regions",
        alias = "regions",
        default,
        deserialize_with = "null_default"
    )]
    pub regions: Vec<Region>,
    /// Region nearest to the caller.
    #[serde(
        rename = "Nearest",
        alias = "nearest",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub nearest: Option<String>,
}
