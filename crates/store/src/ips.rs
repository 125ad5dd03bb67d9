//! IP assignments (PLATFORM.md §2.10): an app's Flycast addresses (`private_v6`, one per app
//! and network that reaches it, each address unique) and its records of public addresses
//! (`v6`, `shared_v4`: the host's own addresses, shared by the apps that record them).
//!
//! Every write logs an `ip_assignment` change keyed by the app, so the proxy's catalog, the
//! DNS view and the agent reload that app's assignments; deleting an app removes its rows and
//! logs the same change.

use rusqlite::{OptionalExtension as _, Transaction, params};

use crate::sqlite::{Cached as _, SqliteStore};
use crate::{Result, StoreError};

/// The `kind` of a Flycast address.
pub const FLYCAST: &str = "private_v6";

/// An address assigned to an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpAssignmentRecord {
    /// The address, in its canonical text form.
    pub ip: String,
    /// The app.
    pub app: String,
    /// `private_v6` (Flycast), `v6` or `shared_v4`.
    pub kind: String,
    /// Region (`global` unless the caller named one).
    pub region: String,
    /// Flycast: the 6PN network whose machines reach it; `None` for public addresses.
    pub network_id: Option<u32>,
    /// The service it was allocated for (recorded, not used for routing).
    pub service_name: Option<String>,
    /// A shared address (public addresses on a self-hosted box always are).
    pub shared: bool,
    /// ms epoch.
    pub created_at: i64,
}

impl IpAssignmentRecord {
    /// Whether this is a Flycast address.
    pub fn is_flycast(&self) -> bool {
        self.kind == FLYCAST
    }
}

const COLUMNS: &str = "ip, app, kind, region, network_id, service_name, shared, created_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<IpAssignmentRecord> {
    Ok(IpAssignmentRecord {
        ip: r.get(0)?,
        app: r.get(1)?,
        kind: r.get(2)?,
        region: r.get(3)?,
        network_id: r.get::<_, Option<i64>>(4)?.map(|n| n as u32),
        service_name: r.get(5)?,
        shared: r.get(6)?,
        created_at: r.get(7)?,
    })
}

/// The app's assignments go with it (in the app's delete; logs the change when it had any).
pub(crate) fn delete_app_ips(tx: &Transaction<'_>, app: &str) -> rusqlite::Result<()> {
    if tx.exec("DELETE FROM ip_assignments WHERE app = ?1", [app])? > 0 {
        crate::volumes::log_change(tx, "ip_assignment", app)?;
    }
    Ok(())
}

impl SqliteStore {
    pub(crate) fn ip_create(&self, r: &IpAssignmentRecord) -> Result<()> {
        self.write("ip_assignment", &r.app, |tx, _rev| {
            let app: Option<String> = tx
                .row("SELECT name FROM apps WHERE name = ?1", [&r.app], |x| {
                    x.get(0)
                })
                .optional()?;
            if app.is_none() {
                return Err(StoreError::NotFound("app"));
            }
            tx.exec(
                &format!(
                    "INSERT INTO ip_assignments ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
                ),
                params![
                    r.ip,
                    r.app,
                    r.kind,
                    r.region,
                    r.network_id.map(i64::from),
                    r.service_name,
                    r.shared,
                    r.created_at
                ],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StoreError::NameTaken {
                        what: "ip address",
                        name: r.ip.clone(),
                    }
                }
                e => e.into(),
            })?;
            Ok(())
        })
    }

    pub(crate) fn ip_list(&self, app: Option<&str>) -> Result<Vec<IpAssignmentRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM ip_assignments WHERE ?1 IS NULL OR app = ?1 ORDER BY app, created_at, rowid"
        ))?;
        let rows = stmt
            .query_map([app], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub(crate) fn ip_delete(&self, app: &str, ip: &str) -> Result<bool> {
        // Nothing logged when there was nothing to delete.
        let exists: Option<String> = self
            .lock()
            .row(
                "SELECT ip FROM ip_assignments WHERE app = ?1 AND ip = ?2",
                params![app, ip],
                |x| x.get(0),
            )
            .optional()?;
        if exists.is_none() {
            return Ok(false);
        }
        self.write("ip_assignment", app, |tx, _rev| {
            Ok(tx.exec(
                "DELETE FROM ip_assignments WHERE app = ?1 AND ip = ?2",
                params![app, ip],
            )? > 0)
        })
    }
}
