//! Migrations, applied in order at open; the applied count is kept in `PRAGMA user_version`.

pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    CREATE TABLE orgs (
        slug TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        numeric_id INTEGER NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE tokens (
        hash TEXT PRIMARY KEY,
        org_slug TEXT,            -- NULL = admin
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE apps (
        name TEXT PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        org_slug TEXT NOT NULL REFERENCES orgs(slug),
        network TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX apps_org ON apps(org_slug);
    CREATE TABLE machines (
        id TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        region TEXT NOT NULL,
        state TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        config TEXT NOT NULL,
        image_ref TEXT,
        private_ip TEXT NOT NULL,
        host TEXT NOT NULL,
        cordoned INTEGER NOT NULL DEFAULT 0,
        pending TEXT,
        restart_count INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        revision INTEGER NOT NULL
    );
    CREATE INDEX machines_app ON machines(app);
    CREATE UNIQUE INDEX machines_live_name ON machines(app, name) WHERE state != 'destroyed';
    CREATE TABLE machine_versions (
        machine_id TEXT NOT NULL,
        instance_id TEXT NOT NULL,
        config TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (machine_id, instance_id)
    );
    CREATE TABLE machine_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        machine_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        status TEXT NOT NULL,
        source TEXT NOT NULL,
        timestamp INTEGER NOT NULL,
        request TEXT
    );
    CREATE INDEX machine_events_machine ON machine_events(machine_id, seq);
    CREATE TABLE leases (
        machine_id TEXT PRIMARY KEY,
        nonce TEXT NOT NULL,
        owner TEXT NOT NULL,
        description TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        version TEXT NOT NULL
    );
    CREATE TABLE changes (
        revision INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        key TEXT NOT NULL
    );
    "#,
    // 2: health check results (written by the host that runs the checks).
    r#"
    CREATE TABLE machine_checks (
        machine_id TEXT NOT NULL,
        name TEXT NOT NULL,
        status TEXT NOT NULL,
        output TEXT NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (machine_id, name)
    );
    "#,
];
