//! `/v1/orgs/{org}/wireguard` (PLATFORM.md §4.5): WireGuard peers of an org, and the
//! wg-quick config of a new one. The key pair is made here, on the client: only the public
//! key is sent; the private key goes into the config and nowhere else.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hangar_api_types::{CreateWireguardPeerRequest, WireguardPeer};

use crate::api::{Client, ClientError, Result, enc};

/// A Curve25519 key pair in WireGuard's base64.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// The private key (`[Interface] PrivateKey`).
    pub private_key: String,
    /// The public key (what the server learns).
    pub public_key: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// A new key pair from the OS's randomness (`wg genkey | wg pubkey`).
pub fn generate_keypair() -> Result<KeyPair> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| ClientError::Decode(format!("no randomness: {e}")))?;
    let secret = x25519_dalek::StaticSecret::from(secret);
    let public = x25519_dalek::PublicKey::from(&secret);
    Ok(KeyPair {
        private_key: STANDARD.encode(secret.to_bytes()),
        public_key: STANDARD.encode(public.to_bytes()),
    })
}

/// The wg-quick config of `peer` with its private key (PLATFORM.md §4.5's format).
pub fn wg_quick_config(peer: &WireguardPeer, private_key: &str) -> String {
    format!(
        "[Interface]\n\
         PrivateKey = {private_key}\n\
         Address = {}/{}\n\
         DNS = {}\n\
         \n\
         [Peer]\n\
         PublicKey = {}\n\
         AllowedIPs = {}\n\
         Endpoint = {}\n\
         PersistentKeepalive = 15\n",
        peer.peer_ip,
        peer.prefix_len,
        peer.dns,
        peer.server_public_key,
        peer.allowed_ips.join(", "),
        peer.endpoint,
    )
}

fn path(org: &str) -> String {
    format!("/v1/orgs/{}/wireguard", enc(org))
}

impl Client {
    /// `POST /v1/orgs/{org}/wireguard` with a key pair made here; the answer and the pair.
    pub async fn create_wireguard_peer(
        &self,
        org: &str,
        name: &str,
        region: Option<&str>,
        network: Option<&str>,
    ) -> Result<(WireguardPeer, KeyPair)> {
        let keys = generate_keypair()?;
        let peer = self
            .post(
                &path(org),
                &CreateWireguardPeerRequest {
                    name: name.to_string(),
                    region: region.map(str::to_string),
                    public_key: keys.public_key.clone(),
                    network: network.map(str::to_string),
                },
            )
            .await?;
        Ok((peer, keys))
    }

    /// `GET /v1/orgs/{org}/wireguard`.
    pub async fn wireguard_peers(&self, org: &str) -> Result<Vec<WireguardPeer>> {
        self.get(&path(org)).await
    }

    /// `DELETE /v1/orgs/{org}/wireguard/{name}`.
    pub async fn remove_wireguard_peer(&self, org: &str, name: &str) -> Result<()> {
        self.delete(&format!("{}/{}", path(org), enc(name))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_pair_up_and_the_config_has_every_line() {
        let k = generate_keypair().expect("keys");
        let secret: [u8; 32] = STANDARD
            .decode(&k.private_key)
            .expect("b64")
            .try_into()
            .expect("32");
        let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret));
        assert_eq!(STANDARD.encode(public.to_bytes()), k.public_key);
        assert!(!format!("{k:?}").contains(&k.private_key));
        let peer = WireguardPeer {
            name: "laptop".into(),
            peer_ip: "fdaa:0:5::1:102".into(),
            prefix_len: 120,
            endpoint: "gw.example:51820".into(),
            server_public_key: "SERVER=".into(),
            dns: "fdaa:0:5:0:1::3".into(),
            allowed_ips: vec!["fdaa:0:5::/48".into()],
            ..WireguardPeer::default()
        };
        let c = wg_quick_config(&peer, "PRIVATE=");
        for line in [
            "[Interface]",
            "PrivateKey = PRIVATE=",
            "Address = fdaa:0:5::1:102/120",
            "DNS = fdaa:0:5:0:1::3",
            "[Peer]",
            "PublicKey = SERVER=",
            "AllowedIPs = fdaa:0:5::/48",
            "Endpoint = gw.example:51820",
            "PersistentKeepalive = 15",
        ] {
            assert!(c.lines().any(|l| l == line), "{line}\n{c}");
        }
    }
}
