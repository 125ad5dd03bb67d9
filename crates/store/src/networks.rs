//! Private networks (PLATFORM.md §4.4): the 32-bit ids of 6PN addresses.
//!
//! An org's `default` network has the org's numeric id. A custom network (an app created with
//! `network`) gets an id of its own the first time its org names it, from the same sequence as
//! org ids, so no two networks ever share one; rows are never deleted, so ids are never reused.
//! Allocating logs a `network` change keyed `<org>/<name>`.

use rusqlite::{OptionalExtension, Transaction, params};

use crate::Result;
use crate::model::NetworkRecord;
use crate::sqlite::{Cached as _, SqliteStore};

/// The name of every org's own network.
pub const DEFAULT_NETWORK: &str = "default";

/// The next unused id of the org/network sequence.
pub(crate) fn next_id(tx: &Transaction<'_>) -> rusqlite::Result<i64> {
    tx.row(
        "SELECT MAX(COALESCE((SELECT MAX(numeric_id) FROM orgs), 0), \
                    COALESCE((SELECT MAX(id) FROM networks), 0)) + 1",
        [],
        |r| r.get(0),
    )
}

/// The id of `org`'s network `name`, if it has one.
fn lookup(conn: &rusqlite::Connection, org: &str, name: &str) -> Result<Option<u32>> {
    let org_id: Option<i64> = conn
        .row("SELECT numeric_id FROM orgs WHERE slug = ?1", [org], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(org_id) = org_id else {
        return Err(crate::StoreError::NotFound("org"));
    };
    if name == DEFAULT_NETWORK {
        return Ok(Some(org_id as u32));
    }
    let id: Option<i64> = conn
        .row(
            "SELECT id FROM networks WHERE org_slug = ?1 AND name = ?2",
            params![org, name],
            |r| r.get(0),
        )
        .optional()?;
    Ok(id.map(|i| i as u32))
}

/// The id of `org`'s network `name`, allocated now if it has none (in the running write;
/// `log`: also log the `network` change, when the write logs another kind).
pub(crate) fn ensure(
    tx: &Transaction<'_>,
    org: &str,
    name: &str,
    now_ms: i64,
    log: bool,
) -> Result<u32> {
    if let Some(id) = lookup(tx, org, name)? {
        return Ok(id);
    }
    let id = next_id(tx)?;
    tx.exec(
        "INSERT INTO networks (id, org_slug, name, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![id, org, name, now_ms],
    )?;
    if log {
        crate::volumes::log_change(tx, "network", &format!("{org}/{name}"))?;
    }
    Ok(id as u32)
}

impl SqliteStore {
    pub(crate) fn network_ensure(&self, org: &str, name: &str, now_ms: i64) -> Result<u32> {
        if let Some(id) = lookup(&self.lock(), org, name)? {
            return Ok(id);
        }
        self.write("network", &format!("{org}/{name}"), |tx, _rev| {
            ensure(tx, org, name, now_ms, false)
        })
    }

    pub(crate) fn network_list(&self) -> Result<Vec<NetworkRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT slug, ?1, numeric_id, created_at FROM orgs \
             UNION ALL SELECT org_slug, name, id, created_at FROM networks ORDER BY 3",
        )?;
        let rows = stmt
            .query_map([DEFAULT_NETWORK], |r| {
                Ok(NetworkRecord {
                    org_slug: r.get(0)?,
                    name: r.get(1)?,
                    id: r.get::<_, i64>(2)? as u32,
                    created_at: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}
