//! WireGuard peers (PLATFORM.md §4.5): a client's public key and its address in one of its
//! org's networks. The private key never reaches the server, so it is never stored.
//!
//! Every write logs a `wireguard` change keyed `<org>/<name>`, so the gateway (which adds and
//! removes the peer on its interface) and the DNS view (`_peer.internal`) follow it.

use rusqlite::{OptionalExtension as _, params};

use crate::sqlite::{Cached as _, SqliteStore};
use crate::{Result, StoreError};

/// A WireGuard peer of an org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireguardPeerRecord {
    /// Owning org.
    pub org_slug: String,
    /// Name, unique in the org (`hangar_domain::PeerName`).
    pub name: String,
    /// The network's name in the org (`default` or a custom one).
    pub network: String,
    /// The network's 32-bit id.
    pub network_id: u32,
    /// The region whose gateway it connects to.
    pub region: String,
    /// Its public key (standard base64 of 32 bytes), unique.
    pub public_key: String,
    /// Its 6PN address (`hangar_domain::sixpn::peer_addr`), unique.
    pub peer_ip: String,
    /// ms epoch.
    pub created_at: i64,
}

const COLUMNS: &str =
    "org_slug, name, network, network_id, region, public_key, peer_ip, created_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WireguardPeerRecord> {
    Ok(WireguardPeerRecord {
        org_slug: r.get(0)?,
        name: r.get(1)?,
        network: r.get(2)?,
        network_id: r.get::<_, i64>(3)? as u32,
        region: r.get(4)?,
        public_key: r.get(5)?,
        peer_ip: r.get(6)?,
        created_at: r.get(7)?,
    })
}

/// The change-log key of a peer.
pub fn peer_key(org: &str, name: &str) -> String {
    format!("{org}/{name}")
}

impl SqliteStore {
    pub(crate) fn wg_create(&self, p: &WireguardPeerRecord) -> Result<()> {
        self.write("wireguard", &peer_key(&p.org_slug, &p.name), |tx, _rev| {
            let org: Option<String> = tx
                .row("SELECT slug FROM orgs WHERE slug = ?1", [&p.org_slug], |x| {
                    x.get(0)
                })
                .optional()?;
            if org.is_none() {
                return Err(StoreError::NotFound("org"));
            }
            // Which unique column is taken decides the message.
            let taken = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> rusqlite::Result<bool> {
                Ok(tx
                    .row(sql, args, |x| x.get::<_, i64>(0))
                    .optional()?
                    .is_some())
            };
            let checks: [(&'static str, &str, &str, bool); 3] = [
                (
                    "peer name",
                    &p.name,
                    "SELECT 1 FROM wireguard_peers WHERE org_slug = ?1 AND name = ?2",
                    true,
                ),
                (
                    "public key",
                    &p.public_key,
                    "SELECT 1 FROM wireguard_peers WHERE public_key = ?1",
                    false,
                ),
                (
                    "peer address",
                    &p.peer_ip,
                    "SELECT 1 FROM wireguard_peers WHERE peer_ip = ?1",
                    false,
                ),
            ];
            for (what, value, sql, with_org) in checks {
                let hit = if with_org {
                    taken(sql, &[&p.org_slug, &value])?
                } else {
                    taken(sql, &[&value])?
                };
                if hit {
                    return Err(StoreError::NameTaken {
                        what,
                        name: value.to_string(),
                    });
                }
            }
            tx.exec(
                &format!(
                    "INSERT INTO wireguard_peers ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    p.org_slug,
                    p.name,
                    p.network,
                    i64::from(p.network_id),
                    p.region,
                    p.public_key,
                    p.peer_ip,
                    p.created_at
                ],
            )?;
            Ok(())
        })
    }

    pub(crate) fn wg_get(&self, org: &str, name: &str) -> Result<Option<WireguardPeerRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM wireguard_peers WHERE org_slug = ?1 AND name = ?2"
        ))?;
        Ok(stmt.query_row(params![org, name], row).optional()?)
    }

    pub(crate) fn wg_list(&self, org: Option<&str>) -> Result<Vec<WireguardPeerRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM wireguard_peers WHERE ?1 IS NULL OR org_slug = ?1 \
             ORDER BY org_slug, name"
        ))?;
        let rows = stmt
            .query_map(params![org], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub(crate) fn wg_delete(&self, org: &str, name: &str) -> Result<bool> {
        if self.wg_get(org, name)?.is_none() {
            return Ok(false);
        }
        self.write("wireguard", &peer_key(org, name), |tx, _rev| {
            Ok(tx.exec(
                "DELETE FROM wireguard_peers WHERE org_slug = ?1 AND name = ?2",
                params![org, name],
            )? > 0)
        })
    }
}
