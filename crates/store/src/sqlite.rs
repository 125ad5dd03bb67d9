//! The embedded SQLite implementation (WAL mode; one writer connection behind a mutex).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};
use tokio::sync::watch;

use crate::checkpoint::Checkpointer;
use crate::model::NetworkRecord;
use crate::model::{
    AcmeAccountRecord, AppRecord, CertificateRecord, Change, CheckRecord, EventRecord, LeaseRecord,
    MachineRecord, OrgRecord, SecretRecord, SnapshotRecord, StoredCert, TokenScope, VersionRecord,
    VolumeRecord,
};
use crate::schema::MIGRATIONS;
use crate::{Result, Store, StoreError, WalStats};

/// Events kept per machine; older ones are dropped.
pub const MAX_EVENTS_PER_MACHINE: i64 = 100;
/// Change-log entries kept; consumers further behind resync from a full read.
pub const CHANGE_LOG_RETAINED: u64 = 100_000;

/// SQLite-backed [`Store`].
#[derive(Debug)]
pub struct SqliteStore {
    /// Shared (weakly) with the checkpointer, which restarts the WAL through it.
    conn: Arc<Mutex<Connection>>,
    revision: watch::Sender<u64>,
    /// File-backed stores only: the WAL checkpoints, off the write path.
    checkpointer: Option<Checkpointer>,
}

fn corrupt(what: &'static str) -> impl Fn(serde_json::Error) -> StoreError {
    move |e| StoreError::Corrupt {
        what,
        message: e.to_string(),
    }
}

/// Appends an event to a machine, dropping its oldest past [`MAX_EVENTS_PER_MACHINE`].
fn insert_event(tx: &Transaction<'_>, e: &EventRecord, request: Option<&str>) -> Result<()> {
    tx.exec(
        "INSERT INTO machine_events (id, machine_id, kind, status, source, timestamp, request) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![e.id, e.machine_id, e.kind, e.status, e.source, e.timestamp, request],
    )?;
    tx.exec(
        "DELETE FROM machine_events WHERE machine_id = ?1 AND seq <= (SELECT seq FROM machine_events WHERE machine_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        params![e.machine_id, MAX_EVENTS_PER_MACHINE],
    )?;
    Ok(())
}

/// Statements through the connection's statement cache: each SQL text is compiled once, not on
/// every call. A machine's write runs six statements; compiling them anew each time was a
/// quarter of the write (44 against 32 µs per find-and-update, warm).
pub(crate) trait Cached {
    /// `Connection::execute`, cached.
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    /// `Connection::query_row`, cached.
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// Statements kept compiled per connection: more than the store has (rusqlite's default, 16,
/// made the API's, the agent's and the proxy's statements evict each other).
const STATEMENT_CACHE: usize = 256;

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt {
        what: "value to store",
        message: e.to_string(),
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies migrations.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Checkpoints are the checkpointer's; the writer's own only bound the WAL.
        conn.pragma_update(None, "wal_autocheckpoint", crate::BACKSTOP_PAGES)?;
        let mut store = Self::init(conn)?;
        store.checkpointer = Checkpointer::start(path, Arc::downgrade(&store.conn))?;
        if store.checkpointer.is_none() {
            store
                .lock()
                .pragma_update(None, "wal_autocheckpoint", 1000)?;
        }
        Ok(store)
    }

    /// An in-memory store (tests, benchmarks).
    pub fn in_memory() -> Result<Self> {
        Self::init(Connection::open_in_memory()?)
    }

    /// What the WAL checkpointer has done (`None` for an in-memory store).
    pub fn wal_stats(&self) -> Option<&WalStats> {
        self.checkpointer.as_ref().map(|c| &*c.stats)
    }

    fn init(mut conn: Connection) -> Result<Self> {
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // Query planner stability: cached statements are not re-prepared on every run (the
        // benchmarks found 40 % of a busy daemon's time in sqlite3Reprepare without it).
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let applied: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied.max(0) as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        let rev: i64 = conn.row("SELECT COALESCE(MAX(revision), 0) FROM changes", [], |r| {
            r.get(0)
        })?;
        let (revision, _) = watch::channel(rev as u64);
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            revision,
            checkpointer: None,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (transactions roll
        // back on drop), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces a machine row (optimistic concurrency), then runs `then` in the same
    /// transaction.
    fn update_machine_then(
        &self,
        m: &MachineRecord,
        expected_revision: u64,
        then: impl FnOnce(&Transaction<'_>) -> Result<()>,
    ) -> Result<MachineRecord> {
        let config = json(&m.config)?;
        let image_ref = m.image_ref.as_ref().map(json).transpose()?;
        let pending = m.pending.as_ref().map(json).transpose()?;
        self.write("machine", &m.id, |tx, rev| {
            let actual: Option<i64> = tx
                .row("SELECT revision FROM machines WHERE id = ?1", [&m.id], |r| r.get(0))
                .optional()?;
            let actual = actual.ok_or(StoreError::NotFound("machine"))? as u64;
            if actual != expected_revision {
                return Err(StoreError::Conflict { expected: expected_revision, actual });
            }
            tx.exec(
                "UPDATE machines SET name = ?2, region = ?3, state = ?4, instance_id = ?5, config = ?6, image_ref = ?7, private_ip = ?8, host = ?9, cordoned = ?10, pending = ?11, restart_count = ?12, updated_at = ?13, revision = ?14 WHERE id = ?1",
                params![
                    m.id, m.name, m.region, m.state.as_str(), m.instance_id, config, image_ref, m.private_ip,
                    m.host, m.cordoned, pending, m.restart_count, m.updated_at, rev
                ],
            )
            .map_err(|e| if is_unique_violation(&e) { StoreError::NameTaken { what: "machine name", name: m.name.clone() } } else { e.into() })?;
            if m.state == hangar_domain::State::Destroyed {
                crate::volumes::detach_from(tx, &m.id, rev)?;
            }
            then(tx)?;
            let mut stored = m.clone();
            stored.revision = rev as u64;
            Ok(stored)
        })
    }

    /// Runs `f` in a write transaction that logs `(kind, key)` as a change (`f` may log more,
    /// [`crate::volumes::log_change`]).
    pub(crate) fn write<T>(
        &self,
        kind: &str,
        key: &str,
        f: impl FnOnce(&Transaction<'_>, i64) -> Result<T>,
    ) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.exec(
            "INSERT INTO changes (kind, key) VALUES (?1, ?2)",
            params![kind, key],
        )?;
        let rev = tx.last_insert_rowid() as u64;
        let out = f(&tx, rev as i64)?;
        let last: i64 = tx.row("SELECT MAX(revision) FROM changes", [], |r| r.get(0))?;
        let last = (last as u64).max(rev);
        if rev.is_multiple_of(1000) && rev > CHANGE_LOG_RETAINED {
            tx.exec(
                "DELETE FROM changes WHERE revision <= ?1",
                params![(rev - CHANGE_LOG_RETAINED) as i64],
            )?;
        }
        tx.commit()?;
        drop(conn);
        self.revision.send_replace(last);
        Ok(out)
    }
}

fn org_row(r: &Row<'_>) -> rusqlite::Result<OrgRecord> {
    Ok(OrgRecord {
        slug: r.get(0)?,
        name: r.get(1)?,
        numeric_id: r.get(2)?,
        created_at: r.get(3)?,
    })
}

fn app_row(r: &Row<'_>) -> rusqlite::Result<AppRecord> {
    Ok(AppRecord {
        name: r.get(0)?,
        id: r.get(1)?,
        org_slug: r.get(2)?,
        network: r.get(3)?,
        created_at: r.get(4)?,
    })
}

const MACHINE_COLS: &str = "id, app, name, region, state, instance_id, config, image_ref, private_ip, host, cordoned, pending, restart_count, created_at, updated_at, revision";

struct RawMachine {
    id: String,
    app: String,
    name: String,
    region: String,
    state: String,
    instance_id: String,
    config: String,
    image_ref: Option<String>,
    private_ip: String,
    host: String,
    cordoned: bool,
    pending: Option<String>,
    restart_count: i64,
    created_at: i64,
    updated_at: i64,
    revision: i64,
}

fn raw_machine(r: &Row<'_>) -> rusqlite::Result<RawMachine> {
    Ok(RawMachine {
        id: r.get(0)?,
        app: r.get(1)?,
        name: r.get(2)?,
        region: r.get(3)?,
        state: r.get(4)?,
        instance_id: r.get(5)?,
        config: r.get(6)?,
        image_ref: r.get(7)?,
        private_ip: r.get(8)?,
        host: r.get(9)?,
        cordoned: r.get(10)?,
        pending: r.get(11)?,
        restart_count: r.get(12)?,
        created_at: r.get(13)?,
        updated_at: r.get(14)?,
        revision: r.get(15)?,
    })
}

impl RawMachine {
    fn decode(self) -> Result<MachineRecord> {
        Ok(MachineRecord {
            state: hangar_domain::State::parse(&self.state).ok_or_else(|| StoreError::Corrupt {
                what: "machine state",
                message: self.state.clone(),
            })?,
            config: serde_json::from_str(&self.config).map_err(corrupt("machine config"))?,
            image_ref: self
                .image_ref
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(corrupt("image ref"))?,
            pending: self
                .pending
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(corrupt("pending operation"))?,
            id: self.id,
            app: self.app,
            name: self.name,
            region: self.region,
            instance_id: self.instance_id,
            private_ip: self.private_ip,
            host: self.host,
            cordoned: self.cordoned,
            restart_count: self.restart_count,
            created_at: self.created_at,
            updated_at: self.updated_at,
            revision: self.revision as u64,
        })
    }
}

const CERT_COLS: &str = "hostname, app, acme_requested, custom_chain, custom_key, custom_not_after, custom_issuer, custom_created_at, acme_chain, acme_key, acme_not_after, acme_issuer, acme_created_at, acme_status, acme_challenge, acme_attempts, acme_next_attempt_at, acme_error, acme_error_at, created_at, updated_at, revision";

/// A stored certificate from five columns starting at `i` (all set, or none).
fn stored_cert(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<StoredCert>> {
    let chain: Option<String> = r.get(i)?;
    let key: Option<Vec<u8>> = r.get(i + 1)?;
    Ok(match (chain, key) {
        (Some(chain_pem), Some(key_sealed)) => Some(StoredCert {
            chain_pem,
            key_sealed,
            not_after: r.get::<_, Option<i64>>(i + 2)?.unwrap_or(0),
            issuer: r.get::<_, Option<String>>(i + 3)?.unwrap_or_default(),
            created_at: r.get::<_, Option<i64>>(i + 4)?.unwrap_or(0),
        }),
        _ => None,
    })
}

fn cert_row(r: &Row<'_>) -> rusqlite::Result<CertificateRecord> {
    Ok(CertificateRecord {
        hostname: r.get(0)?,
        app: r.get(1)?,
        acme_requested: r.get(2)?,
        custom: stored_cert(r, 3)?,
        acme: stored_cert(r, 8)?,
        acme_status: r.get(13)?,
        acme_challenge: r.get(14)?,
        acme_attempts: r.get::<_, i64>(15)?.clamp(0, i64::from(u32::MAX)) as u32,
        acme_next_attempt_at: r.get(16)?,
        acme_error: r.get(17)?,
        acme_error_at: r.get(18)?,
        created_at: r.get(19)?,
        updated_at: r.get(20)?,
        revision: r.get::<_, i64>(21)? as u64,
    })
}

/// Writes every column of `c` (insert or replace) with revision `rev`.
fn put_cert(tx: &Transaction<'_>, c: &CertificateRecord, rev: i64) -> rusqlite::Result<usize> {
    let part = |s: &Option<StoredCert>| {
        (
            s.as_ref().map(|s| s.chain_pem.clone()),
            s.as_ref().map(|s| s.key_sealed.clone()),
            s.as_ref().map(|s| s.not_after),
            s.as_ref().map(|s| s.issuer.clone()),
            s.as_ref().map(|s| s.created_at),
        )
    };
    let (cc, ck, cn, ci, cw) = part(&c.custom);
    let (ac, ak, an, ai, aw) = part(&c.acme);
    tx.exec(
        &format!("INSERT OR REPLACE INTO certificates ({CERT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)"),
        params![
            c.hostname, c.app, c.acme_requested, cc, ck, cn, ci, cw, ac, ak, an, ai, aw,
            c.acme_status, c.acme_challenge, i64::from(c.acme_attempts), c.acme_next_attempt_at,
            c.acme_error, c.acme_error_at, c.created_at, c.updated_at, rev
        ],
    )
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

impl SqliteStore {
    fn machines_where(
        &self,
        clause: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<MachineRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {MACHINE_COLS} FROM machines WHERE {clause}"
        ))?;
        let raws = stmt
            .query_map(args, raw_machine)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(stmt);
        drop(conn);
        raws.into_iter().map(RawMachine::decode).collect()
    }
}

impl Store for SqliteStore {
    fn create_org(&self, slug: &str, name: &str, now_ms: i64) -> Result<OrgRecord> {
        self.write("org", slug, |tx, _rev| {
            // One sequence for org and custom network ids (6PN network ids).
            let next: i64 = crate::networks::next_id(tx)?;
            tx.exec(
                "INSERT INTO orgs (slug, name, numeric_id, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![slug, name, next, now_ms],
            )
            .map_err(|e| {
                if is_unique_violation(&e) {
                    StoreError::NameTaken {
                        what: "org",
                        name: slug.into(),
                    }
                } else {
                    e.into()
                }
            })?;
            Ok(OrgRecord {
                slug: slug.into(),
                name: name.into(),
                numeric_id: next,
                created_at: now_ms,
            })
        })
    }

    fn get_org(&self, slug: &str) -> Result<Option<OrgRecord>> {
        let conn = self.lock();
        Ok(conn
            .row(
                "SELECT slug, name, numeric_id, created_at FROM orgs WHERE slug = ?1",
                [slug],
                org_row,
            )
            .optional()?)
    }

    fn list_orgs(&self) -> Result<Vec<OrgRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT slug, name, numeric_id, created_at FROM orgs ORDER BY numeric_id",
        )?;
        let rows = stmt
            .query_map([], org_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn create_token(&self, hash: &str, scope: &TokenScope, name: &str, now_ms: i64) -> Result<()> {
        let org = match scope {
            TokenScope::Admin => None,
            TokenScope::Org(o) => Some(o.as_str()),
        };
        self.write("token", name, |tx, _rev| {
            tx.exec(
                "INSERT INTO tokens (hash, org_slug, name, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![hash, org, name, now_ms],
            )?;
            Ok(())
        })
    }

    fn token_scope(&self, hash: &str) -> Result<Option<TokenScope>> {
        let conn = self.lock();
        let row: Option<Option<String>> = conn
            .row("SELECT org_slug FROM tokens WHERE hash = ?1", [hash], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(row.map(|org| org.map_or(TokenScope::Admin, TokenScope::Org)))
    }

    fn has_admin_token(&self) -> Result<bool> {
        let conn = self.lock();
        Ok(conn.row(
            "SELECT EXISTS(SELECT 1 FROM tokens WHERE org_slug IS NULL)",
            [],
            |r| r.get(0),
        )?)
    }

    fn create_app(&self, app: &AppRecord) -> Result<()> {
        self.write("app", &app.name, |tx, _rev| {
            tx.exec(
                "INSERT INTO apps (name, id, org_slug, network, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![app.name, app.id, app.org_slug, app.network, app.created_at],
            )
            .map_err(|e| if is_unique_violation(&e) { StoreError::NameTaken { what: "app", name: app.name.clone() } } else { e.into() })?;
            // The app's network exists (with its id) from the app's creation on.
            crate::networks::ensure(tx, &app.org_slug, &app.network, app.created_at, true)?;
            Ok(())
        })
    }

    fn get_app(&self, name: &str) -> Result<Option<AppRecord>> {
        let conn = self.lock();
        Ok(conn
            .row(
                "SELECT name, id, org_slug, network, created_at FROM apps WHERE name = ?1",
                [name],
                app_row,
            )
            .optional()?)
    }

    fn list_apps(&self, org: Option<&str>) -> Result<Vec<AppRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT name, id, org_slug, network, created_at FROM apps WHERE ?1 IS NULL OR org_slug = ?1 ORDER BY created_at, name",
        )?;
        let rows = stmt
            .query_map([org], app_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn delete_app(&self, name: &str) -> Result<bool> {
        self.write("app", name, |tx, _rev| {
            let n = tx.exec("DELETE FROM apps WHERE name = ?1", [name])?;
            tx.exec(
                "DELETE FROM machine_events WHERE machine_id IN (SELECT id FROM machines WHERE app = ?1)",
                [name],
            )?;
            tx.exec(
                "DELETE FROM machine_versions WHERE machine_id IN (SELECT id FROM machines WHERE app = ?1)",
                [name],
            )?;
            tx.exec("DELETE FROM leases WHERE machine_id IN (SELECT id FROM machines WHERE app = ?1)", [name])?;
            tx.exec("DELETE FROM machine_checks WHERE machine_id IN (SELECT id FROM machines WHERE app = ?1)", [name])?;
            tx.exec("DELETE FROM app_secrets WHERE app = ?1", [name])?;
            tx.exec("DELETE FROM app_secrets_version WHERE app = ?1", [name])?;
            tx.exec("DELETE FROM machines WHERE app = ?1", [name])?;
            tx.exec("DELETE FROM certificates WHERE app = ?1", [name])?;
            crate::volumes::delete_app_volumes(tx, name)?;
            crate::ips::delete_app_ips(tx, name)?;
            Ok(n > 0)
        })
    }

    fn insert_machine(&self, m: &MachineRecord) -> Result<()> {
        let config = json(&m.config)?;
        let image_ref = m.image_ref.as_ref().map(json).transpose()?;
        let pending = m.pending.as_ref().map(json).transpose()?;
        self.write("machine", &m.id, |tx, rev| {
            tx.exec(
                &format!("INSERT INTO machines ({MACHINE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"),
                params![
                    m.id, m.app, m.name, m.region, m.state.as_str(), m.instance_id, config, image_ref,
                    m.private_ip, m.host, m.cordoned, pending, m.restart_count, m.created_at, m.updated_at, rev
                ],
            )
            .map_err(|e| if is_unique_violation(&e) { StoreError::NameTaken { what: "machine name", name: m.name.clone() } } else { e.into() })?;
            tx.exec(
                "INSERT INTO machine_versions (machine_id, instance_id, config, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![m.id, m.instance_id, config, m.created_at],
            )?;
            Ok(())
        })
    }

    fn get_machine(&self, app: &str, id: &str) -> Result<Option<MachineRecord>> {
        Ok(self
            .machines_where("app = ?1 AND id = ?2", &[&app, &id])?
            .pop())
    }

    fn find_machine(&self, id: &str) -> Result<Option<MachineRecord>> {
        Ok(self.machines_where("id = ?1", &[&id])?.pop())
    }

    fn list_machines(&self, app: &str, include_destroyed: bool) -> Result<Vec<MachineRecord>> {
        self.machines_where(
            "app = ?1 AND (?2 OR state != 'destroyed') ORDER BY created_at, id",
            &[&app, &include_destroyed],
        )
    }

    fn all_live_machines(&self) -> Result<Vec<MachineRecord>> {
        self.machines_where("state != 'destroyed' ORDER BY created_at, id", &[])
    }

    fn update_machine(&self, m: &MachineRecord, expected_revision: u64) -> Result<MachineRecord> {
        self.update_machine_then(m, expected_revision, |_| Ok(()))
    }

    fn update_machine_with_event(
        &self,
        m: &MachineRecord,
        expected_revision: u64,
        e: &EventRecord,
    ) -> Result<MachineRecord> {
        let request = e.request.as_ref().map(json).transpose()?;
        self.update_machine_then(m, expected_revision, |tx| {
            insert_event(tx, e, request.as_deref())
        })
    }

    fn add_version(&self, v: &VersionRecord) -> Result<()> {
        let config = json(&v.config)?;
        self.write("machine", &v.machine_id, |tx, _rev| {
            tx.exec(
                "INSERT OR REPLACE INTO machine_versions (machine_id, instance_id, config, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![v.machine_id, v.instance_id, config, v.created_at],
            )?;
            Ok(())
        })
    }

    fn versions(&self, machine_id: &str) -> Result<Vec<VersionRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT machine_id, instance_id, config, created_at FROM machine_versions WHERE machine_id = ?1 ORDER BY created_at DESC, instance_id DESC",
        )?;
        let rows = stmt
            .query_map([machine_id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter()
            .map(|(machine_id, instance_id, config, created_at)| {
                Ok(VersionRecord {
                    machine_id,
                    instance_id,
                    config: serde_json::from_str(&config).map_err(corrupt("machine version"))?,
                    created_at,
                })
            })
            .collect()
    }

    fn add_event(&self, e: &EventRecord) -> Result<()> {
        let request = e.request.as_ref().map(json).transpose()?;
        self.write("machine", &e.machine_id, |tx, _rev| {
            insert_event(tx, e, request.as_deref())
        })
    }

    fn set_check(&self, machine_id: &str, check: &CheckRecord) -> Result<()> {
        self.write("machine", machine_id, |tx, _rev| {
            tx.exec(
                "INSERT INTO machine_checks (machine_id, name, status, output, updated_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (machine_id, name) DO UPDATE SET status = excluded.status, output = excluded.output, updated_at = excluded.updated_at",
                params![machine_id, check.name, check.status, check.output, check.updated_at],
            )?;
            Ok(())
        })
    }

    fn clear_checks(&self, machine_id: &str) -> Result<()> {
        let present: i64 = self.lock().row(
            "SELECT COUNT(*) FROM machine_checks WHERE machine_id = ?1",
            params![machine_id],
            |r| r.get(0),
        )?;
        if present == 0 {
            return Ok(());
        }
        self.write("machine", machine_id, |tx, _rev| {
            tx.exec(
                "DELETE FROM machine_checks WHERE machine_id = ?1",
                params![machine_id],
            )?;
            Ok(())
        })
    }

    fn checks(&self, machine_id: &str) -> Result<Vec<CheckRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT name, status, output, updated_at FROM machine_checks WHERE machine_id = ?1 ORDER BY name",
        )?;
        let rows = stmt
            .query_map(params![machine_id], |r| {
                Ok(CheckRecord {
                    name: r.get(0)?,
                    status: r.get(1)?,
                    output: r.get(2)?,
                    updated_at: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn events(&self, machine_id: &str, limit: usize) -> Result<Vec<EventRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, machine_id, kind, status, source, timestamp, request FROM machine_events WHERE machine_id = ?1 ORDER BY seq DESC LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![machine_id, limit as i64], event_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(event_record).collect()
    }

    fn app_events(
        &self,
        app: &str,
        limit: usize,
    ) -> Result<std::collections::HashMap<String, Vec<EventRecord>>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, machine_id, kind, status, source, timestamp, request FROM (
                SELECT e.*, ROW_NUMBER() OVER (PARTITION BY e.machine_id ORDER BY e.seq DESC) AS n
                FROM machine_events e JOIN machines m ON m.id = e.machine_id WHERE m.app = ?1
             ) WHERE n <= ?2 ORDER BY machine_id, seq DESC",
        )?;
        let rows = stmt
            .query_map(params![app, limit as i64], event_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out: std::collections::HashMap<String, Vec<EventRecord>> =
            std::collections::HashMap::new();
        for row in rows {
            let e = event_record(row)?;
            out.entry(e.machine_id.clone()).or_default().push(e);
        }
        Ok(out)
    }

    fn app_checks(&self, app: &str) -> Result<std::collections::HashMap<String, Vec<CheckRecord>>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT c.machine_id, c.name, c.status, c.output, c.updated_at
             FROM machine_checks c JOIN machines m ON m.id = c.machine_id
             WHERE m.app = ?1 ORDER BY c.machine_id, c.name",
        )?;
        let rows = stmt
            .query_map(params![app], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    CheckRecord {
                        name: r.get(1)?,
                        status: r.get(2)?,
                        output: r.get(3)?,
                        updated_at: r.get(4)?,
                    },
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out: std::collections::HashMap<String, Vec<CheckRecord>> =
            std::collections::HashMap::new();
        for (id, c) in rows {
            out.entry(id).or_default().push(c);
        }
        Ok(out)
    }

    fn acquire_lease(
        &self,
        lease: &LeaseRecord,
        holder_nonce: Option<&str>,
        now_ms: i64,
    ) -> Result<LeaseRecord> {
        self.write("lease", &lease.machine_id, |tx, _rev| {
            let current: Option<(String, String, i64)> = tx
                .row(
                    "SELECT nonce, owner, expires_at FROM leases WHERE machine_id = ?1",
                    [&lease.machine_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            let mut stored = lease.clone();
            if let Some((nonce, owner, expires)) = current
                && expires > now_ms {
                    match holder_nonce {
                        Some(n) if n == nonce => stored.nonce = nonce,
                        _ => return Err(StoreError::LeaseHeld { owner, expires_at: expires / 1000 }),
                    }
                }
            tx.exec(
                "INSERT OR REPLACE INTO leases (machine_id, nonce, owner, description, expires_at, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![stored.machine_id, stored.nonce, stored.owner, stored.description, stored.expires_at_ms, stored.version],
            )?;
            Ok(stored)
        })
    }

    fn get_lease(&self, machine_id: &str, now_ms: i64) -> Result<Option<LeaseRecord>> {
        let conn = self.lock();
        Ok(conn
            .row(
                "SELECT machine_id, nonce, owner, description, expires_at, version FROM leases WHERE machine_id = ?1 AND expires_at > ?2",
                params![machine_id, now_ms],
                |r| {
                    Ok(LeaseRecord {
                        machine_id: r.get(0)?,
                        nonce: r.get(1)?,
                        owner: r.get(2)?,
                        description: r.get(3)?,
                        expires_at_ms: r.get(4)?,
                        version: r.get(5)?,
                    })
                },
            )
            .optional()?)
    }

    fn release_lease(&self, machine_id: &str, nonce: &str, now_ms: i64) -> Result<()> {
        self.write("lease", machine_id, |tx, _rev| {
            let current: Option<(String, i64)> = tx
                .row(
                    "SELECT nonce, expires_at FROM leases WHERE machine_id = ?1",
                    [machine_id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match current {
                Some((n, exp)) if exp > now_ms && n == nonce => {
                    tx.exec("DELETE FROM leases WHERE machine_id = ?1", [machine_id])?;
                    Ok(())
                }
                Some((_, exp)) if exp > now_ms => Err(StoreError::LeaseMismatch),
                _ => Err(StoreError::NotFound("lease")),
            }
        })
    }

    fn create_certificate(&self, c: &CertificateRecord) -> Result<CertificateRecord> {
        self.write("certificate", &c.hostname, |tx, rev| {
            let app: Option<String> = tx
                .row("SELECT name FROM apps WHERE name = ?1", [&c.app], |r| {
                    r.get(0)
                })
                .optional()?;
            if app.is_none() {
                return Err(StoreError::NotFound("app"));
            }
            let taken: bool = tx.row(
                "SELECT EXISTS(SELECT 1 FROM certificates WHERE hostname = ?1)",
                [&c.hostname],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StoreError::NameTaken {
                    what: "hostname",
                    name: c.hostname.clone(),
                });
            }
            put_cert(tx, c, rev)?;
            let mut stored = c.clone();
            stored.revision = rev as u64;
            Ok(stored)
        })
    }

    fn get_certificate(&self, hostname: &str) -> Result<Option<CertificateRecord>> {
        let conn = self.lock();
        Ok(conn
            .row(
                &format!("SELECT {CERT_COLS} FROM certificates WHERE hostname = ?1"),
                [hostname],
                cert_row,
            )
            .optional()?)
    }

    fn list_certificates(&self, app: Option<&str>) -> Result<Vec<CertificateRecord>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {CERT_COLS} FROM certificates WHERE ?1 IS NULL OR app = ?1 ORDER BY hostname"
        ))?;
        let rows = stmt
            .query_map([app], cert_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn update_certificate(
        &self,
        c: &CertificateRecord,
        expected_revision: u64,
    ) -> Result<CertificateRecord> {
        self.write("certificate", &c.hostname, |tx, rev| {
            let current: Option<(String, i64)> = tx
                .row(
                    "SELECT app, revision FROM certificates WHERE hostname = ?1",
                    [&c.hostname],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (app, actual) = current.ok_or(StoreError::NotFound("certificate"))?;
            if actual as u64 != expected_revision || app != c.app {
                return Err(StoreError::Conflict {
                    expected: expected_revision,
                    actual: actual as u64,
                });
            }
            put_cert(tx, c, rev)?;
            let mut stored = c.clone();
            stored.revision = rev as u64;
            Ok(stored)
        })
    }

    fn delete_certificate(&self, hostname: &str) -> Result<bool> {
        self.write("certificate", hostname, |tx, _rev| {
            Ok(tx.exec("DELETE FROM certificates WHERE hostname = ?1", [hostname])? > 0)
        })
    }

    fn acme_account(&self, directory: &str) -> Result<Option<AcmeAccountRecord>> {
        let conn = self.lock();
        Ok(conn
            .row(
                "SELECT directory, key, url, created_at FROM acme_accounts WHERE directory = ?1",
                [directory],
                |r| {
                    Ok(AcmeAccountRecord {
                        directory: r.get(0)?,
                        key_sealed: r.get(1)?,
                        url: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                },
            )
            .optional()?)
    }

    fn put_acme_account(&self, a: &AcmeAccountRecord) -> Result<()> {
        self.write("acme_account", &a.directory, |tx, _rev| {
            tx.exec(
                "INSERT OR REPLACE INTO acme_accounts (directory, key, url, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![a.directory, a.key_sealed, a.url, a.created_at],
            )?;
            Ok(())
        })
    }

    fn create_volume(&self, v: &VolumeRecord) -> Result<VolumeRecord> {
        self.volume_create(v)
    }

    fn get_volume(&self, id: &str) -> Result<Option<VolumeRecord>> {
        self.volume_get(id)
    }

    fn list_volumes(&self, app: Option<&str>) -> Result<Vec<VolumeRecord>> {
        self.volume_list(app)
    }

    fn update_volume(&self, v: &VolumeRecord, expected_revision: u64) -> Result<VolumeRecord> {
        self.volume_update(v, expected_revision)
    }

    fn delete_volume(&self, id: &str) -> Result<bool> {
        self.volume_delete(id)
    }

    fn create_snapshot(&self, s: &SnapshotRecord) -> Result<()> {
        self.snapshot_create(s)
    }

    fn get_snapshot(&self, id: &str) -> Result<Option<SnapshotRecord>> {
        self.snapshot_get(id)
    }

    fn list_snapshots(&self, volume_id: &str) -> Result<Vec<SnapshotRecord>> {
        self.snapshot_list(volume_id)
    }

    fn update_snapshot(&self, s: &SnapshotRecord) -> Result<()> {
        self.snapshot_update(s)
    }

    fn delete_snapshot(&self, id: &str) -> Result<bool> {
        self.snapshot_delete(id)
    }

    fn network_id(&self, org: &str, network: &str, now_ms: i64) -> Result<u32> {
        self.network_ensure(org, network, now_ms)
    }

    fn list_networks(&self) -> Result<Vec<NetworkRecord>> {
        self.network_list()
    }

    fn set_secrets(&self, app: &str, changes: &[crate::SecretChange], now_ms: i64) -> Result<u64> {
        self.write("secret", app, |tx, _rev| {
            for (name, value) in changes {
                match value {
                    Some((sealed, digest)) => {
                        tx.exec(
                            "INSERT INTO app_secrets (app, name, sealed, digest, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                             ON CONFLICT (app, name) DO UPDATE SET sealed = excluded.sealed, digest = excluded.digest, updated_at = excluded.updated_at",
                            params![app, name, sealed, digest, now_ms],
                        )?;
                    }
                    None => {
                        tx.exec(
                            "DELETE FROM app_secrets WHERE app = ?1 AND name = ?2",
                            params![app, name],
                        )?;
                    }
                }
            }
            tx.exec(
                "INSERT INTO app_secrets_version (app, version) VALUES (?1, 1)
                 ON CONFLICT (app) DO UPDATE SET version = version + 1",
                params![app],
            )?;
            let v: i64 = tx.row(
                "SELECT version FROM app_secrets_version WHERE app = ?1",
                params![app],
                |r| r.get(0),
            )?;
            Ok(v.max(0) as u64)
        })
    }

    fn secrets(&self, app: &str) -> Result<(Vec<SecretRecord>, u64)> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT name, sealed, digest, created_at, updated_at FROM app_secrets WHERE app = ?1 ORDER BY name",
        )?;
        let rows = stmt
            .query_map(params![app], |r| {
                Ok(SecretRecord {
                    name: r.get(0)?,
                    sealed: r.get(1)?,
                    digest: r.get(2)?,
                    created_at: r.get(3)?,
                    updated_at: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let version: i64 = conn
            .row(
                "SELECT version FROM app_secrets_version WHERE app = ?1",
                params![app],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        Ok((rows, version.max(0) as u64))
    }

    fn create_ip_assignment(&self, r: &crate::IpAssignmentRecord) -> Result<()> {
        self.ip_create(r)
    }

    fn list_ip_assignments(&self, app: Option<&str>) -> Result<Vec<crate::IpAssignmentRecord>> {
        self.ip_list(app)
    }

    fn delete_ip_assignment(&self, app: &str, ip: &str) -> Result<bool> {
        self.ip_delete(app, ip)
    }

    fn create_wireguard_peer(&self, p: &crate::WireguardPeerRecord) -> Result<()> {
        self.wg_create(p)
    }

    fn get_wireguard_peer(
        &self,
        org: &str,
        name: &str,
    ) -> Result<Option<crate::WireguardPeerRecord>> {
        self.wg_get(org, name)
    }

    fn list_wireguard_peers(&self, org: Option<&str>) -> Result<Vec<crate::WireguardPeerRecord>> {
        self.wg_list(org)
    }

    fn delete_wireguard_peer(&self, org: &str, name: &str) -> Result<bool> {
        self.wg_delete(org, name)
    }

    fn revision(&self) -> u64 {
        *self.revision.borrow()
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    fn changes_since(&self, revision: u64, limit: usize) -> Result<Vec<Change>> {
        let conn = self.lock();
        let oldest: Option<i64> =
            conn.row("SELECT MIN(revision) FROM changes", [], |r| r.get(0))?;
        if let Some(oldest) = oldest
            && (revision as i64) < oldest - 1
        {
            return Err(StoreError::Compacted {
                oldest: oldest as u64,
            });
        }
        let mut stmt = conn.prepare_cached("SELECT revision, kind, key FROM changes WHERE revision > ?1 ORDER BY revision LIMIT ?2")?;
        let rows = stmt
            .query_map(params![revision as i64, limit as i64], |r| {
                Ok(Change {
                    revision: r.get::<_, i64>(0)? as u64,
                    kind: r.get(1)?,
                    key: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

/// An event row (`id, machine_id, kind, status, source, timestamp, request`) with its request
/// still as text.
fn event_row(r: &Row<'_>) -> rusqlite::Result<(EventRecord, Option<String>)> {
    Ok((
        EventRecord {
            id: r.get(0)?,
            machine_id: r.get(1)?,
            kind: r.get(2)?,
            status: r.get(3)?,
            source: r.get(4)?,
            timestamp: r.get(5)?,
            request: None,
        },
        r.get(6)?,
    ))
}

/// The event of an [`event_row`], its request parsed.
fn event_record((mut e, req): (EventRecord, Option<String>)) -> Result<EventRecord> {
    e.request = req
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(corrupt("event request"))?;
    Ok(e)
}
