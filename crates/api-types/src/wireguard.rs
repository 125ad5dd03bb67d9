//! WireGuard peers (PLATFORM.md §4.5). The reference manages them over GraphQL; Hangar's REST
//! shape is `/v1/orgs/{org}/wireguard[/{name}]` (docs/compat.md). The client makes the key
//! pair and sends only the public key; the private key never reaches the server.

use serde::{Deserialize, Serialize};

/// `POST /v1/orgs/{org}/wireguard`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateWireguardPeerRequest {
    /// Peer name: 1–15 of `a-z`, `0-9`, `-` (a Linux interface name and a DNS label).
    pub name: String,
    /// The region whose gateway the peer uses (default: the host's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The peer's public key (base64 of 32 bytes).
    pub public_key: String,
    /// The org's network the peer joins (default `default`; a custom network of an app
    /// created with `network`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

/// A peer and everything its wg-quick config needs but the private key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireguardPeer {
    /// Name, unique in the org.
    pub name: String,
    /// Org slug.
    pub org: String,
    /// Network name in the org.
    pub network: String,
    /// Region of its gateway.
    pub region: String,
    /// The peer's public key (base64).
    pub public_key: String,
    /// The peer's 6PN address (`Address = <peer_ip>/<prefix_len>`).
    pub peer_ip: String,
    /// Prefix length of the peer's range (120).
    pub prefix_len: u8,
    /// The gateway's `host:port` (`Endpoint =`).
    pub endpoint: String,
    /// The gateway's public key (base64; `[Peer] PublicKey =`).
    pub server_public_key: String,
    /// The resolver for `.internal` names through the tunnel (`DNS =`): the host's service
    /// address on the peer's network.
    pub dns: String,
    /// What the tunnel carries (`AllowedIPs =`): the network's `/48`.
    pub allowed_ips: Vec<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
}
