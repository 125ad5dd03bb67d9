//! `/v1/orgs/{org}/wireguard[/{name}]`: WireGuard peers of an org (PLATFORM.md §4.5; the
//! reference does this over GraphQL, docs/compat.md has this shape).
//!
//! The client makes the key pair and sends only the public key. A peer gets a `/120` of its
//! network (`hangar_domain::sixpn::peer_addr`); the answer has what its wg-quick config needs:
//! its address, the gateway's endpoint and public key, the DNS address (the host's service
//! address on the network) and the network's `/48` as AllowedIPs. The gateway (hangard's
//! WireGuard role) follows the store and puts the peer on its interface.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine as _;
use hangar_api_types::{CreateWireguardPeerRequest, WireguardPeer};
use hangar_domain::{PeerName, sixpn};
use hangar_store::{StoreError, WireguardPeerRecord};

use crate::auth::Caller;
use crate::json::Body;
use crate::util::{now_ms, random};
use crate::{ApiError, ApiState};

/// The org of the path, when the caller may see it and it exists (`personal`: an org
/// token's own org, as for apps).
fn org(s: &ApiState, c: &Caller, org: &str) -> Result<String, ApiError> {
    let org = match (&c.scope, org) {
        (hangar_store::TokenScope::Org(own), "personal") => own.as_str(),
        (_, o) => o,
    };
    if !c.sees(org) || s.store.get_org(org)?.is_none() {
        return Err(ApiError::not_found("org"));
    }
    Ok(org.to_string())
}

fn view(s: &ApiState, p: &WireguardPeerRecord) -> WireguardPeer {
    let gw = s.config.wireguard.as_ref();
    WireguardPeer {
        name: p.name.clone(),
        org: p.org_slug.clone(),
        network: p.network.clone(),
        region: p.region.clone(),
        public_key: p.public_key.clone(),
        peer_ip: p.peer_ip.clone(),
        prefix_len: sixpn::PEER_PREFIX_LEN,
        endpoint: gw.map(|g| g.endpoint.clone()).unwrap_or_default(),
        server_public_key: gw.map(|g| g.public_key.clone()).unwrap_or_default(),
        dns: sixpn::service_addr(p.network_id, s.config.host_id).to_string(),
        allowed_ips: vec![format!("{}/48", sixpn::network_prefix(p.network_id))],
        created_at: hangar_domain::time::rfc3339(p.created_at),
    }
}

pub(crate) async fn list(
    State(s): State<ApiState>,
    c: Caller,
    Path(o): Path<String>,
) -> Result<Json<Vec<WireguardPeer>>, ApiError> {
    let o = org(&s, &c, &o)?;
    let peers = s.store.list_wireguard_peers(Some(&o))?;
    Ok(Json(peers.iter().map(|p| view(&s, p)).collect()))
}

pub(crate) async fn get(
    State(s): State<ApiState>,
    c: Caller,
    Path((o, name)): Path<(String, String)>,
) -> Result<Json<WireguardPeer>, ApiError> {
    let o = org(&s, &c, &o)?;
    match s.store.get_wireguard_peer(&o, &name)? {
        Some(p) => Ok(Json(view(&s, &p))),
        None => Err(ApiError::not_found("peer")),
    }
}

pub(crate) async fn create(
    State(s): State<ApiState>,
    c: Caller,
    Path(o): Path<String>,
    Body(req): Body<CreateWireguardPeerRequest>,
) -> Result<(StatusCode, Json<WireguardPeer>), ApiError> {
    let o = org(&s, &c, &o)?;
    let name = PeerName::parse(&req.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(req.public_key.trim())
        .ok()
        .filter(|k| k.len() == 32)
        .ok_or_else(|| {
            ApiError::bad_request(
                "public_key: expected a WireGuard public key (base64 of 32 bytes, `wg pubkey`)",
            )
        })?;
    let region = req.region.unwrap_or_else(|| s.config.region.clone());
    if !s.config.regions.contains(&region) {
        return Err(ApiError::bad_request(format!(
            "region '{region}': not a region of this platform ({})",
            s.config.regions.join(", ")
        )));
    }
    if s.config.wireguard.is_none() {
        return Err(ApiError::not_implemented(
            "WireGuard on this host (hangard runs with --no-wireguard)",
        ));
    }
    let network = req
        .network
        .unwrap_or_else(|| hangar_store::DEFAULT_NETWORK.to_string());
    let network_id = s
        .store
        .list_networks()?
        .into_iter()
        .find(|n| n.org_slug == o && n.name == network)
        .map(|n| n.id)
        .ok_or_else(|| ApiError::not_found("network"))?;
    let now = now_ms();
    let mut tries = 0;
    loop {
        let rec = WireguardPeerRecord {
            org_slug: o.clone(),
            name: name.to_string(),
            network: network.clone(),
            network_id,
            region: region.clone(),
            public_key: base64::engine::general_purpose::STANDARD.encode(&key),
            peer_ip: sixpn::peer_addr(network_id, u32::from_le_bytes(random::<4>())).to_string(),
            created_at: now,
        };
        match s.store.create_wireguard_peer(&rec) {
            Ok(()) => return Ok((StatusCode::CREATED, Json(view(&s, &rec)))),
            // A random address someone has: draw again (2^32 per network; rare).
            Err(StoreError::NameTaken {
                what: "peer address",
                ..
            }) if tries < 8 => tries += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

pub(crate) async fn delete(
    State(s): State<ApiState>,
    c: Caller,
    Path((o, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let o = org(&s, &c, &o)?;
    if s.store.delete_wireguard_peer(&o, &name)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("peer"))
    }
}
