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
    // 3: custom hostnames and their certificates (private keys sealed), ACME accounts.
    r#"
    CREATE TABLE certificates (
        hostname TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        acme_requested INTEGER NOT NULL DEFAULT 0,
        custom_chain TEXT,
        custom_key BLOB,
        custom_not_after INTEGER,
        custom_issuer TEXT,
        custom_created_at INTEGER,
        acme_chain TEXT,
        acme_key BLOB,
        acme_not_after INTEGER,
        acme_issuer TEXT,
        acme_created_at INTEGER,
        acme_status TEXT NOT NULL DEFAULT '',
        acme_challenge TEXT,
        acme_attempts INTEGER NOT NULL DEFAULT 0,
        acme_next_attempt_at INTEGER NOT NULL DEFAULT 0,
        acme_error TEXT,
        acme_error_at INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        revision INTEGER NOT NULL
    );
    CREATE INDEX certificates_app ON certificates(app);
    CREATE TABLE acme_accounts (
        directory TEXT PRIMARY KEY,
        key BLOB NOT NULL,
        url TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    "#,
    // 4: volumes (host-local disks, one per machine) and their snapshots.
    r#"
    CREATE TABLE volumes (
        id TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        region TEXT NOT NULL,
        zone TEXT NOT NULL,
        host TEXT NOT NULL,
        size_gb INTEGER NOT NULL,
        state TEXT NOT NULL,
        encrypted INTEGER NOT NULL,
        fstype TEXT NOT NULL,
        attached_machine_id TEXT,
        snapshot_retention INTEGER NOT NULL,
        auto_backup_enabled INTEGER NOT NULL,
        source_volume_id TEXT,
        source_snapshot_id TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        revision INTEGER NOT NULL
    );
    CREATE INDEX volumes_app ON volumes(app);
    CREATE UNIQUE INDEX volumes_attached ON volumes(attached_machine_id)
        WHERE attached_machine_id IS NOT NULL;
    CREATE TABLE volume_snapshots (
        id TEXT PRIMARY KEY,
        volume_id TEXT NOT NULL,
        status TEXT NOT NULL,
        size INTEGER NOT NULL,
        volume_size INTEGER NOT NULL,
        digest TEXT NOT NULL,
        retention_days INTEGER NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX volume_snapshots_volume ON volume_snapshots(volume_id, created_at);
    "#,
    // 5: custom private networks (§4.4); ids share one sequence with org ids, never reused.
    r#"
    CREATE TABLE networks (
        id INTEGER PRIMARY KEY,
        org_slug TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (org_slug, name)
    );
    "#,
    // 6: app secrets, sealed by the caller; one version counter per app.
    r#"
    CREATE TABLE app_secrets (
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        sealed BLOB NOT NULL,
        digest TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (app, name)
    );
    CREATE TABLE app_secrets_version (
        app TEXT PRIMARY KEY,
        version INTEGER NOT NULL
    );
    "#,
    // 7: IP assignments (§2.10): Flycast addresses (`private_v6`) and public ones; a Flycast
    // address is reachable from `network_id` only, is unique, and an app has at most one per
    // network; public addresses are the host's own, shared by the apps that record them.
    r#"
    CREATE TABLE ip_assignments (
        app TEXT NOT NULL,
        ip TEXT NOT NULL,
        kind TEXT NOT NULL,
        region TEXT NOT NULL,
        network_id INTEGER,
        service_name TEXT,
        shared INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (app, ip)
    );
    CREATE UNIQUE INDEX ip_assignments_flycast_ip ON ip_assignments(ip)
        WHERE kind = 'private_v6';
    CREATE UNIQUE INDEX ip_assignments_flycast_network ON ip_assignments(app, network_id)
        WHERE kind = 'private_v6';
    "#,
    // 8: WireGuard peers (§4.5): one /120 per peer in its org's network; the private key is
    // never stored.
    r#"
    CREATE TABLE wireguard_peers (
        org_slug TEXT NOT NULL,
        name TEXT NOT NULL,
        network TEXT NOT NULL,
        network_id INTEGER NOT NULL,
        region TEXT NOT NULL,
        public_key TEXT NOT NULL UNIQUE,
        peer_ip TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (org_slug, name)
    );
    "#,
    // 9: the row the WAL checkpointer writes to restart the WAL after a complete checkpoint
    // (crate::checkpoint), so that the next real write does not pay for the restart.
    r#"
    CREATE TABLE wal_restarts (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        n INTEGER NOT NULL
    );
    "#,
];
