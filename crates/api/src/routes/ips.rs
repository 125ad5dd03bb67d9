//! `/v1/apps/{app}/ip_assignments` (PLATFORM.md §2.10, §4.3).
//!
//! `private_v6` allocates a Flycast address, `fdaa:<network>:0:0:<n>:11`
//! (`hangar_domain::sixpn::flycast_addr`, `n` random), reachable through the proxy from the
//! machines of one network: the app's own by default, another org's `default` network with
//! `org_slug`, or a custom network with `network` (in the app's org, or in `org_slug`'s).
//! An app has at most one per network. The caller must see the org it names.
//!
//! Public addresses on a self-hosted box are the host's own (`ApiConfig::public_ips`): `v6`
//! and `shared_v4` record the first of that family for the app (shared, idempotent); a
//! dedicated `v4` and egress addresses are refused, saying what to use instead.

use std::net::IpAddr;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hangar_api_types::{
    AllocateIpRequest, IpAssignment, IpAssignmentNetwork, ListIpAssignmentsResponse,
};
use hangar_domain::sixpn;
use hangar_domain::time::rfc3339;
use hangar_store::{AppRecord, FLYCAST, IpAssignmentRecord, NetworkRecord, StoreError, TokenScope};

use super::apps::visible_app;
use crate::auth::Caller;
use crate::json::Body;
use crate::util::{now_ms, random};
use crate::{ApiError, ApiState};

/// Attempts at a Flycast address nobody has (32 random bits each).
const ATTEMPTS: usize = 8;

fn view(r: &IpAssignmentRecord, networks: &[NetworkRecord]) -> IpAssignment {
    IpAssignment {
        ip: r.ip.clone(),
        region: Some(r.region.clone()),
        service_name: r.service_name.clone(),
        shared: Some(r.shared),
        created_at: Some(rfc3339(r.created_at)),
        egress: None,
        network: r.network_id.and_then(|id| {
            networks
                .iter()
                .find(|n| n.id == id)
                .map(|n| IpAssignmentNetwork {
                    name: n.name.clone(),
                    org_slug: n.org_slug.clone(),
                })
        }),
    }
}

pub(crate) async fn list(
    State(s): State<ApiState>,
    c: Caller,
    Path(app): Path<String>,
) -> Result<Json<ListIpAssignmentsResponse>, ApiError> {
    let a = visible_app(&s, &c, &app)?;
    let networks = s.store.list_networks()?;
    Ok(Json(ListIpAssignmentsResponse {
        ips: s
            .store
            .list_ip_assignments(Some(&a.name))?
            .iter()
            .map(|r| view(r, &networks))
            .collect(),
    }))
}

fn valid_label(n: &str) -> bool {
    (1..=63).contains(&n.len())
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn shown(v: &str) -> String {
    v.chars()
        .take(64)
        .collect::<String>()
        .escape_default()
        .to_string()
}

fn region(s: &ApiState, req: &AllocateIpRequest) -> Result<String, ApiError> {
    match req.region.as_deref().map(str::trim) {
        None | Some("") | Some("global") => Ok("global".into()),
        Some(r) if s.config.regions.iter().any(|x| x == r) => Ok(r.to_string()),
        Some(r) => Err(ApiError::bad_request(format!(
            "unknown region '{}': one of global, {}",
            shown(r),
            s.config.regions.join(", ")
        ))),
    }
}

/// The network a Flycast address is allocated for: `(org, name)` and its id.
fn flycast_network(
    s: &ApiState,
    c: &Caller,
    a: &AppRecord,
    req: &AllocateIpRequest,
) -> Result<NetworkRecord, ApiError> {
    let org = match req.org_slug.as_deref().map(str::trim) {
        None | Some("") => a.org_slug.clone(),
        Some("personal") if matches!(&c.scope, TokenScope::Org(_)) => a.org_slug.clone(),
        Some(o) => o.to_string(),
    };
    if org != a.org_slug && (!c.sees(&org) || s.store.get_org(&org)?.is_none()) {
        return Err(ApiError::not_found("org"));
    }
    let name = match req.network.as_deref().map(str::trim) {
        Some(n) if !n.is_empty() => {
            if !valid_label(n) {
                return Err(ApiError::bad_request(format!(
                    "invalid network '{}': letters, digits and dashes",
                    shown(n)
                )));
            }
            n.to_string()
        }
        // Another org: its default network; the app's own org: the app's own network.
        _ if org != a.org_slug => hangar_store::DEFAULT_NETWORK.to_string(),
        _ => a.network.clone(),
    };
    s.store
        .list_networks()?
        .into_iter()
        .find(|n| n.org_slug == org && n.name == name)
        .ok_or_else(|| {
            ApiError::unprocessable(format!(
                "org '{org}' has no network '{name}' (a network is made when the first app is \
                 created in it: POST /v1/apps with \"network\")"
            ))
        })
}

fn allocate_flycast(
    s: &ApiState,
    c: &Caller,
    a: &AppRecord,
    req: &AllocateIpRequest,
    service_name: Option<String>,
) -> Result<IpAssignmentRecord, ApiError> {
    let network = flycast_network(s, c, a, req)?;
    let region = region(s, req)?;
    let existing = |s: &ApiState| -> Result<Option<IpAssignmentRecord>, ApiError> {
        Ok(s.store
            .list_ip_assignments(Some(&a.name))?
            .into_iter()
            .find(|r| r.is_flycast() && r.network_id == Some(network.id)))
    };
    let taken = |r: IpAssignmentRecord| {
        ApiError::unprocessable(format!(
            "app '{}' already has the Flycast address {} for network '{}' of org '{}'; release it \
             first (DELETE /v1/apps/{}/ip_assignments/{})",
            a.name, r.ip, network.name, network.org_slug, a.name, r.ip
        ))
    };
    if let Some(r) = existing(s)? {
        return Err(taken(r));
    }
    for _ in 0..ATTEMPTS {
        let n = u32::from_le_bytes(random::<4>()).max(1);
        let rec = IpAssignmentRecord {
            ip: sixpn::flycast_addr(network.id, n).to_string(),
            app: a.name.clone(),
            kind: FLYCAST.into(),
            region: region.clone(),
            network_id: Some(network.id),
            service_name: service_name.clone(),
            shared: false,
            created_at: now_ms(),
        };
        match s.store.create_ip_assignment(&rec) {
            Ok(()) => return Ok(rec),
            // Someone else's address (or a concurrent allocation for this network).
            Err(StoreError::NameTaken { .. }) => {
                if let Some(r) = existing(s)? {
                    return Err(taken(r));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal("no free Flycast address found"))
}

fn record_public(
    s: &ApiState,
    a: &AppRecord,
    req: &AllocateIpRequest,
    v6: bool,
    service_name: Option<String>,
) -> Result<IpAssignmentRecord, ApiError> {
    let region = region(s, req)?;
    let Some(ip) = s
        .config
        .public_ips
        .iter()
        .find(|ip| ip.is_ipv6() == v6)
        .copied()
    else {
        let family = if v6 { "IPv6" } else { "IPv4" };
        return Err(ApiError::unprocessable(format!(
            "this server has no public {family} address configured: the operator starts hangard \
             with --public-ip <address> (the address its proxy answers on); apps are reachable \
             at <app>.<domain> on the proxy's address meanwhile"
        )));
    };
    let kind = if v6 { "v6" } else { "shared_v4" };
    let ip = ip.to_string();
    if let Some(r) = s
        .store
        .list_ip_assignments(Some(&a.name))?
        .into_iter()
        .find(|r| r.ip == ip)
    {
        return Ok(r);
    }
    let rec = IpAssignmentRecord {
        ip,
        app: a.name.clone(),
        kind: kind.into(),
        region,
        network_id: None,
        service_name,
        shared: true,
        created_at: now_ms(),
    };
    match s.store.create_ip_assignment(&rec) {
        Ok(()) => Ok(rec),
        // Recorded by a concurrent call: the same answer.
        Err(StoreError::NameTaken { .. }) => Ok(rec),
        Err(e) => Err(e.into()),
    }
}

pub(crate) async fn create(
    State(s): State<ApiState>,
    c: Caller,
    Path(app): Path<String>,
    Body(req): Body<AllocateIpRequest>,
) -> Result<Json<IpAssignment>, ApiError> {
    let a = visible_app(&s, &c, &app)?;
    let service_name = match req.service_name.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(n) if valid_label(n) => Some(n.to_string()),
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "invalid service_name '{}'",
                shown(n)
            )));
        }
    };
    let rec = match req.r#type.trim() {
        "private_v6" => allocate_flycast(&s, &c, &a, &req, service_name)?,
        "v6" => record_public(&s, &a, &req, true, service_name)?,
        "shared_v4" => record_public(&s, &a, &req, false, service_name)?,
        "v4" => {
            return Err(ApiError::unprocessable(
                "dedicated IPv4 addresses are not available on a self-hosted server: every app \
                 shares the host's addresses (routing by host name, and one app per raw TCP \
                 port); allocate a shared one (type shared_v4, hangar ips allocate-v4 --shared)",
            ));
        }
        t @ ("egress_v4" | "egress_v6" | "egress_pair") => {
            return Err(ApiError::unprocessable(format!(
                "{t}: static egress addresses are not available; machines reach the internet \
                 through the host's IPv4 (NAT)"
            )));
        }
        t => {
            return Err(ApiError::bad_request(format!(
                "invalid type '{}': one of private_v6 (Flycast), v6, shared_v4",
                shown(t)
            )));
        }
    };
    Ok(Json(view(&rec, &s.store.list_networks()?)))
}

pub(crate) async fn delete(
    State(s): State<ApiState>,
    c: Caller,
    Path((app, ip)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let a = visible_app(&s, &c, &app)?;
    let parsed: IpAddr = ip
        .trim()
        .parse()
        .map_err(|_| ApiError::bad_request(format!("'{}' is not an IP address", shown(&ip))))?;
    if !s.store.delete_ip_assignment(&a.name, &parsed.to_string())? {
        return Err(ApiError::not_found("ip address"));
    }
    Ok(StatusCode::NO_CONTENT)
}
