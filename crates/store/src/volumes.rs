//! Volumes and their snapshots (the SQL behind the `Store` methods of the same names).
//!
//! A volume write logs a `volume` change; when it changes which machine a volume is attached
//! to, it also logs a `machine` change for each machine concerned (their view of the volume
//! changed). A machine reaching `destroyed` detaches its volume in the same transaction
//! ([`detach_from`]).

use rusqlite::{OptionalExtension, Row, Transaction, params};

use crate::model::{SnapshotRecord, VolumeRecord};
use crate::sqlite::{Cached as _, SqliteStore};
use crate::{Result, StoreError};

const VOLUME_COLS: &str = "id, app, name, region, zone, host, size_gb, state, encrypted, fstype, attached_machine_id, snapshot_retention, auto_backup_enabled, source_volume_id, source_snapshot_id, created_at, updated_at, revision";

const SNAPSHOT_COLS: &str =
    "id, volume_id, status, size, volume_size, digest, retention_days, created_at";

fn volume_row(r: &Row<'_>) -> rusqlite::Result<VolumeRecord> {
    Ok(VolumeRecord {
        id: r.get(0)?,
        app: r.get(1)?,
        name: r.get(2)?,
        region: r.get(3)?,
        zone: r.get(4)?,
        host: r.get(5)?,
        size_gb: r.get(6)?,
        state: r.get(7)?,
        encrypted: r.get(8)?,
        fstype: r.get(9)?,
        attached_machine_id: r.get(10)?,
        snapshot_retention: r.get(11)?,
        auto_backup_enabled: r.get(12)?,
        source_volume_id: r.get(13)?,
        source_snapshot_id: r.get(14)?,
        created_at: r.get(15)?,
        updated_at: r.get(16)?,
        revision: r.get::<_, i64>(17)? as u64,
    })
}

fn snapshot_row(r: &Row<'_>) -> rusqlite::Result<SnapshotRecord> {
    Ok(SnapshotRecord {
        id: r.get(0)?,
        volume_id: r.get(1)?,
        status: r.get(2)?,
        size: r.get(3)?,
        volume_size: r.get(4)?,
        digest: r.get(5)?,
        retention_days: r.get(6)?,
        created_at: r.get(7)?,
    })
}

/// Appends one more entry to the change log of the running write transaction.
pub(crate) fn log_change(tx: &Transaction<'_>, kind: &str, key: &str) -> rusqlite::Result<()> {
    tx.exec(
        "INSERT INTO changes (kind, key) VALUES (?1, ?2)",
        params![kind, key],
    )?;
    Ok(())
}

/// A machine went away: its volume (if any) is free again.
pub(crate) fn detach_from(tx: &Transaction<'_>, machine_id: &str, rev: i64) -> Result<()> {
    let ids: Vec<String> = {
        let mut stmt =
            tx.prepare_cached("SELECT id FROM volumes WHERE attached_machine_id = ?1")?;
        stmt.query_map([machine_id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    for id in ids {
        tx.exec(
            "UPDATE volumes SET attached_machine_id = NULL, revision = ?2 WHERE id = ?1",
            params![id, rev],
        )?;
        log_change(tx, "volume", &id)?;
    }
    Ok(())
}

/// Everything of an app's volumes goes with the app.
pub(crate) fn delete_app_volumes(tx: &Transaction<'_>, app: &str) -> rusqlite::Result<()> {
    tx.exec(
        "DELETE FROM volume_snapshots WHERE volume_id IN (SELECT id FROM volumes WHERE app = ?1)",
        [app],
    )?;
    tx.exec("DELETE FROM volumes WHERE app = ?1", [app])?;
    Ok(())
}

fn attach_conflict(e: rusqlite::Error, machine: Option<&str>) -> StoreError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::NameTaken {
                what: "machine volume",
                name: machine.unwrap_or_default().to_string(),
            }
        }
        e => e.into(),
    }
}

/// Inserts (`insert`) or updates every column of `v` with revision `rev`. Never `INSERT OR
/// REPLACE`: that would resolve a second attachment by deleting the other volume.
fn put_volume(tx: &Transaction<'_>, v: &VolumeRecord, rev: i64, insert: bool) -> Result<()> {
    let sql = if insert {
        format!(
            "INSERT INTO volumes ({VOLUME_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
        )
    } else {
        "UPDATE volumes SET app = ?2, name = ?3, region = ?4, zone = ?5, host = ?6, size_gb = ?7, state = ?8, encrypted = ?9, fstype = ?10, attached_machine_id = ?11, snapshot_retention = ?12, auto_backup_enabled = ?13, source_volume_id = ?14, source_snapshot_id = ?15, created_at = ?16, updated_at = ?17, revision = ?18 WHERE id = ?1".to_string()
    };
    tx.exec(
        &sql,
        params![
            v.id,
            v.app,
            v.name,
            v.region,
            v.zone,
            v.host,
            v.size_gb,
            v.state,
            v.encrypted,
            v.fstype,
            v.attached_machine_id,
            v.snapshot_retention,
            v.auto_backup_enabled,
            v.source_volume_id,
            v.source_snapshot_id,
            v.created_at,
            v.updated_at,
            rev
        ],
    )
    .map_err(|e| attach_conflict(e, v.attached_machine_id.as_deref()))?;
    Ok(())
}

impl SqliteStore {
    pub(crate) fn volume_create(&self, v: &VolumeRecord) -> Result<VolumeRecord> {
        self.write("volume", &v.id, |tx, rev| {
            let app: Option<String> = tx
                .row("SELECT name FROM apps WHERE name = ?1", [&v.app], |r| {
                    r.get(0)
                })
                .optional()?;
            if app.is_none() {
                return Err(StoreError::NotFound("app"));
            }
            let taken: bool = tx.row(
                "SELECT EXISTS(SELECT 1 FROM volumes WHERE id = ?1)",
                [&v.id],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StoreError::NameTaken {
                    what: "volume id",
                    name: v.id.clone(),
                });
            }
            put_volume(tx, v, rev, true)?;
            if let Some(m) = &v.attached_machine_id {
                log_change(tx, "machine", m)?;
            }
            let mut stored = v.clone();
            stored.revision = rev as u64;
            Ok(stored)
        })
    }

    pub(crate) fn volume_get(&self, id: &str) -> Result<Option<VolumeRecord>> {
        let conn = self.lock();
        Ok(conn
            .row(
                &format!("SELECT {VOLUME_COLS} FROM volumes WHERE id = ?1"),
                [id],
                volume_row,
            )
            .optional()?)
    }

    pub(crate) fn volume_list(&self, app: Option<&str>) -> Result<Vec<VolumeRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {VOLUME_COLS} FROM volumes WHERE ?1 IS NULL OR app = ?1 ORDER BY created_at, id"
        ))?;
        let rows = stmt
            .query_map([app], volume_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub(crate) fn volume_update(
        &self,
        v: &VolumeRecord,
        expected_revision: u64,
    ) -> Result<VolumeRecord> {
        self.write("volume", &v.id, |tx, rev| {
            let current: Option<(String, i64, Option<String>)> = tx
                .row(
                    "SELECT app, revision, attached_machine_id FROM volumes WHERE id = ?1",
                    [&v.id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let (app, actual, attached) = current.ok_or(StoreError::NotFound("volume"))?;
            if actual as u64 != expected_revision || app != v.app {
                return Err(StoreError::Conflict {
                    expected: expected_revision,
                    actual: actual as u64,
                });
            }
            put_volume(tx, v, rev, false)?;
            if attached != v.attached_machine_id {
                for m in [&attached, &v.attached_machine_id].into_iter().flatten() {
                    log_change(tx, "machine", m)?;
                }
            }
            let mut stored = v.clone();
            stored.revision = rev as u64;
            Ok(stored)
        })
    }

    pub(crate) fn volume_delete(&self, id: &str) -> Result<bool> {
        self.write("volume", id, |tx, _rev| {
            let attached: Option<Option<String>> = tx
                .row(
                    "SELECT attached_machine_id FROM volumes WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .optional()?;
            tx.exec("DELETE FROM volume_snapshots WHERE volume_id = ?1", [id])?;
            let n = tx.exec("DELETE FROM volumes WHERE id = ?1", [id])?;
            if let Some(Some(m)) = attached {
                log_change(tx, "machine", &m)?;
            }
            Ok(n > 0)
        })
    }

    pub(crate) fn snapshot_create(&self, s: &SnapshotRecord) -> Result<()> {
        self.write("volume", &s.volume_id, |tx, _rev| {
            let exists: bool = tx.row(
                "SELECT EXISTS(SELECT 1 FROM volumes WHERE id = ?1)",
                [&s.volume_id],
                |r| r.get(0),
            )?;
            if !exists {
                return Err(StoreError::NotFound("volume"));
            }
            tx.exec(
                &format!("INSERT INTO volume_snapshots ({SNAPSHOT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"),
                params![s.id, s.volume_id, s.status, s.size, s.volume_size, s.digest, s.retention_days, s.created_at],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StoreError::NameTaken { what: "snapshot id", name: s.id.clone() }
                }
                e => e.into(),
            })?;
            Ok(())
        })
    }

    pub(crate) fn snapshot_get(&self, id: &str) -> Result<Option<SnapshotRecord>> {
        let conn = self.lock();
        Ok(conn
            .row(
                &format!("SELECT {SNAPSHOT_COLS} FROM volume_snapshots WHERE id = ?1"),
                [id],
                snapshot_row,
            )
            .optional()?)
    }

    pub(crate) fn snapshot_list(&self, volume_id: &str) -> Result<Vec<SnapshotRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {SNAPSHOT_COLS} FROM volume_snapshots WHERE volume_id = ?1 ORDER BY created_at DESC, id DESC"
        ))?;
        let rows = stmt
            .query_map([volume_id], snapshot_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub(crate) fn snapshot_update(&self, s: &SnapshotRecord) -> Result<()> {
        self.write("volume", &s.volume_id, |tx, _rev| {
            let n = tx.exec(
                "UPDATE volume_snapshots SET status = ?3, size = ?4, volume_size = ?5, digest = ?6, retention_days = ?7 WHERE id = ?1 AND volume_id = ?2",
                params![s.id, s.volume_id, s.status, s.size, s.volume_size, s.digest, s.retention_days],
            )?;
            if n == 0 {
                return Err(StoreError::NotFound("snapshot"));
            }
            Ok(())
        })
    }

    pub(crate) fn snapshot_delete(&self, id: &str) -> Result<bool> {
        let Some(s) = self.snapshot_get(id)? else {
            return Ok(false);
        };
        self.write("volume", &s.volume_id, |tx, _rev| {
            Ok(tx.exec("DELETE FROM volume_snapshots WHERE id = ?1", [id])? > 0)
        })
    }
}
