//! The SQLite store against a real database file.

mod ips;
mod wireguard;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hangar_api_types::MachineConfig;
use hangar_domain::State;
use hangar_store::{
    AcmeAccountRecord, AppRecord, CHECKPOINT_EVERY, CertificateRecord, EventRecord, LeaseRecord,
    MachineRecord, PendingOp, Sealer, SnapshotRecord, SqliteStore, Store, StoreError, StoredCert,
    TokenScope, VolumeRecord,
};

struct TempDb(PathBuf);

impl TempDb {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("hangar-store-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
    fn path(&self) -> PathBuf {
        self.0.join("state.db")
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn app(name: &str, org: &str) -> AppRecord {
    AppRecord {
        id: format!("id-{name}"),
        name: name.into(),
        org_slug: org.into(),
        network: "default".into(),
        created_at: 1,
    }
}

fn machine(id: &str, app: &str, name: &str) -> MachineRecord {
    MachineRecord {
        id: id.into(),
        app: app.into(),
        name: name.into(),
        region: "local".into(),
        state: State::Created,
        instance_id: "01HZZZZZZZZZZZZZZZZZZZZZZZ".into(),
        config: MachineConfig {
            image: "img:1".into(),
            ..MachineConfig::default()
        },
        image_ref: None,
        private_ip: "fdaa::2".into(),
        host: "h1".into(),
        cordoned: false,
        pending: Some(PendingOp::Start),
        restart_count: 0,
        created_at: 10,
        updated_at: 10,
        revision: 0,
    }
}

fn setup(s: &SqliteStore) {
    s.create_org("acme", "Acme", 1).expect("org");
    s.create_app(&app("web", "acme")).expect("app");
}

#[test]
fn orgs_apps_and_tokens() {
    let db = TempDb::new("orgs");
    let s = SqliteStore::open(&db.path()).expect("open");
    setup(&s);
    let other = s.create_org("other", "Other", 2).expect("org");
    assert_eq!(other.numeric_id, 2);
    assert!(matches!(
        s.create_org("acme", "x", 3),
        Err(StoreError::NameTaken { .. })
    ));
    assert!(
        matches!(
            s.create_app(&app("web", "other")),
            Err(StoreError::NameTaken { .. })
        ),
        "app names are global"
    );
    s.create_app(&app("api", "other")).expect("app");
    assert_eq!(s.list_apps(Some("acme")).expect("list").len(), 1);
    assert_eq!(s.list_apps(None).expect("list").len(), 2);
    assert!(!s.has_admin_token().expect("q"));
    s.create_token("h-admin", &TokenScope::Admin, "admin", 1)
        .expect("token");
    s.create_token("h-acme", &TokenScope::Org("acme".into()), "deploy", 1)
        .expect("token");
    assert!(s.has_admin_token().expect("q"));
    assert_eq!(
        s.token_scope("h-acme").expect("q"),
        Some(TokenScope::Org("acme".into()))
    );
    assert_eq!(s.token_scope("nope").expect("q"), None);
    assert!(s.delete_app("api").expect("delete"));
    assert!(!s.delete_app("api").expect("delete"));
}

#[test]
fn machines_names_revisions_and_reopen() {
    let db = TempDb::new("machines");
    {
        let s = SqliteStore::open(&db.path()).expect("open");
        setup(&s);
        s.insert_machine(&machine("aaaaaaaaaaaaaa", "web", "one"))
            .expect("insert");
        assert!(matches!(
            s.insert_machine(&machine("bbbbbbbbbbbbbb", "web", "one")),
            Err(StoreError::NameTaken { .. })
        ));
        let m = s
            .get_machine("web", "aaaaaaaaaaaaaa")
            .expect("get")
            .expect("exists");
        assert_eq!(m.pending, Some(PendingOp::Start));
        let mut next = m.clone();
        next.state = State::Starting;
        let stored = s.update_machine(&next, m.revision).expect("update");
        assert!(stored.revision > m.revision);
        // A writer that read the old revision loses.
        assert!(matches!(
            s.update_machine(&next, m.revision),
            Err(StoreError::Conflict { .. })
        ));
        // Destroyed machines free their name and are listed only on request.
        let mut gone = stored.clone();
        gone.state = State::Destroyed;
        s.update_machine(&gone, stored.revision).expect("destroy");
        s.insert_machine(&machine("bbbbbbbbbbbbbb", "web", "one"))
            .expect("name reusable");
        assert_eq!(s.list_machines("web", false).expect("list").len(), 1);
        assert_eq!(s.list_machines("web", true).expect("list").len(), 2);
        assert_eq!(s.versions("bbbbbbbbbbbbbb").expect("versions").len(), 1);
    }
    // Reopening applies no migration twice and keeps data and the revision.
    let s = SqliteStore::open(&db.path()).expect("reopen");
    assert!(s.revision() > 0);
    assert_eq!(s.all_live_machines().expect("live").len(), 1);
    assert_eq!(
        s.get_machine("web", "aaaaaaaaaaaaaa")
            .expect("get")
            .map(|m| m.state),
        Some(State::Destroyed)
    );
}

#[test]
fn leases_follow_the_reference_rules() {
    let s = SqliteStore::in_memory().expect("store");
    setup(&s);
    let lease = |nonce: &str, exp: i64| LeaseRecord {
        machine_id: "aaaaaaaaaaaaaa".into(),
        nonce: nonce.into(),
        owner: "alice@example.com".into(),
        description: "deploy".into(),
        expires_at_ms: exp,
        version: "v1".into(),
    };
    let held = s
        .acquire_lease(&lease("n1", 10_000), None, 0)
        .expect("acquire");
    assert_eq!(held.nonce, "n1");
    match s.acquire_lease(&lease("n2", 10_000), None, 5) {
        Err(StoreError::LeaseHeld { owner, expires_at }) => {
            assert_eq!(owner, "alice@example.com");
            assert_eq!(expires_at, 10);
        }
        other => panic!("expected conflict, got {other:?}"),
    }
    // Refresh with the nonce keeps the nonce and extends.
    let refreshed = s
        .acquire_lease(&lease("ignored", 20_000), Some("n1"), 5)
        .expect("refresh");
    assert_eq!(refreshed.nonce, "n1");
    assert!(matches!(
        s.release_lease("aaaaaaaaaaaaaa", "wrong", 6),
        Err(StoreError::LeaseMismatch)
    ));
    s.release_lease("aaaaaaaaaaaaaa", "n1", 6).expect("release");
    assert!(s.get_lease("aaaaaaaaaaaaaa", 7).expect("get").is_none());
    // Expired leases are free to take.
    s.acquire_lease(&lease("n3", 100), None, 50)
        .expect("acquire");
    s.acquire_lease(&lease("n4", 1000), None, 200)
        .expect("expired lease is taken over");
}

#[test]
fn events_are_capped_and_changes_replay_in_order() {
    let s = SqliteStore::in_memory().expect("store");
    setup(&s);
    let start = s.revision();
    let mut rx = s.subscribe();
    for i in 0..150 {
        s.add_event(&EventRecord {
            id: format!("e{i}"),
            machine_id: "m".into(),
            kind: "start".into(),
            status: "started".into(),
            source: "user".into(),
            timestamp: i,
            request: None,
        })
        .expect("event");
    }
    let events = s.events("m", 1000).expect("events");
    assert_eq!(events.len(), 100);
    assert_eq!(events[0].id, "e149", "newest first");
    assert!(rx.has_changed().expect("sender alive"));
    assert_eq!(*rx.borrow_and_update(), s.revision());
    let changes = s.changes_since(start, 1000).expect("changes");
    assert_eq!(changes.len(), 150);
    assert!(changes.windows(2).all(|w| w[0].revision < w[1].revision));
    assert_eq!(s.changes_since(start, 10).expect("page").len(), 10);
}

#[test]
fn a_transition_and_its_event_commit_together_or_not_at_all() {
    let s = SqliteStore::in_memory().expect("store");
    setup(&s);
    s.insert_machine(&machine("aaaaaaaaaaaaaa", "web", "one"))
        .expect("insert");
    let m = s
        .find_machine("aaaaaaaaaaaaaa")
        .expect("read")
        .expect("machine");
    let event = |id: &str| EventRecord {
        id: id.into(),
        machine_id: m.id.clone(),
        kind: "start".into(),
        status: "starting".into(),
        source: "fly-proxy".into(),
        timestamp: 5,
        request: None,
    };
    let before = s.revision();
    let mut next = m.clone();
    next.state = State::Starting;
    let stored = s
        .update_machine_with_event(&next, m.revision, &event("e1"))
        .expect("update");
    // One change for watchers, the row and the event both there.
    assert_eq!(s.changes_since(before, 10).expect("changes").len(), 1);
    assert_eq!(stored.revision, s.revision());
    let got = s.find_machine(&m.id).expect("read").expect("machine");
    assert_eq!(got.state, State::Starting);
    assert_eq!(s.events(&m.id, 10).expect("events")[0].id, "e1");
    // A stale revision: neither the row nor the event is written.
    let mut stale = next.clone();
    stale.state = State::Stopping;
    assert!(matches!(
        s.update_machine_with_event(&stale, m.revision, &event("e2")),
        Err(StoreError::Conflict { .. })
    ));
    let got = s.find_machine(&m.id).expect("read").expect("machine");
    assert_eq!(got.state, State::Starting);
    assert_eq!(s.events(&m.id, 10).expect("events").len(), 1);
}

#[test]
fn concurrent_writers_never_lose_a_machine() {
    let db = TempDb::new("concurrent");
    let s = Arc::new(SqliteStore::open(&db.path()).expect("open"));
    setup(&s);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..50 {
                    let id = format!("{t:02x}{i:012x}");
                    s.insert_machine(&machine(&id, "web", &format!("m-{t}-{i}")))
                        .expect("insert");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    assert_eq!(s.list_machines("web", false).expect("list").len(), 200);
}

#[test]
fn check_results_are_kept_per_machine_and_announced() {
    let db = TempDb::new("checks");
    let s = SqliteStore::open(&db.path()).expect("open");
    s.create_org("o", "O", 1).expect("org");
    s.create_app(&app("a", "o")).expect("app");
    s.insert_machine(&machine("m1", "a", "n1"))
        .expect("machine");
    let rev = s.revision();
    let rec = |name: &str, status: &str| hangar_store::CheckRecord {
        name: name.into(),
        status: status.into(),
        output: format!("{name} is {status}"),
        updated_at: 5,
    };
    s.set_check("m1", &rec("servicecheck-00-http-8080", "critical"))
        .expect("set");
    s.set_check("m1", &rec("alive", "passing")).expect("set");
    s.set_check("m1", &rec("servicecheck-00-http-8080", "passing"))
        .expect("update");
    let checks = s.checks("m1").expect("checks");
    assert_eq!(
        checks
            .iter()
            .map(|c| (c.name.as_str(), c.status.as_str()))
            .collect::<Vec<_>>(),
        [
            ("alive", "passing"),
            ("servicecheck-00-http-8080", "passing")
        ]
    );
    // Each write is a `machine` change, so watchers (the API's views) see it.
    let changes = s.changes_since(rev, 10).expect("changes");
    assert_eq!(changes.len(), 3);
    assert!(changes.iter().all(|c| c.kind == "machine" && c.key == "m1"));
    s.clear_checks("m1").expect("clear");
    assert!(s.checks("m1").expect("checks").is_empty());
    // Clearing nothing writes nothing.
    let rev = s.revision();
    s.clear_checks("m1").expect("clear");
    assert_eq!(s.revision(), rev);
    // They go with the app.
    s.set_check("m1", &rec("alive", "passing")).expect("set");
    s.delete_app("a").expect("delete");
    assert!(s.checks("m1").expect("checks").is_empty());
}

#[test]
fn certificates_are_unique_per_host_follow_revisions_and_go_with_their_app() {
    let db = TempDb::new("certs");
    let s = SqliteStore::open(&db.path()).expect("open");
    setup(&s);
    s.create_app(&app("api", "acme")).expect("app");
    let sealer = Sealer::load_or_create(&db.0.join("tls/seal.key")).expect("sealer");
    let before = s.revision();
    let mut rec = CertificateRecord::new("www.example.com", "web", 5);
    rec.acme_requested = true;
    rec.acme_status = "pending".into();
    let stored = s.create_certificate(&rec).expect("create");
    assert!(stored.revision > before);
    let changes = s.changes_since(before, 10).expect("changes");
    assert_eq!(
        (changes[0].kind.as_str(), changes[0].key.as_str()),
        ("certificate", "www.example.com")
    );
    // One app per hostname, and only for apps that exist.
    assert!(matches!(
        s.create_certificate(&CertificateRecord::new("www.example.com", "api", 6)),
        Err(StoreError::NameTaken { .. })
    ));
    assert!(matches!(
        s.create_certificate(&CertificateRecord::new("x.example.com", "nope", 6)),
        Err(StoreError::NotFound("app"))
    ));
    // A certificate with its key sealed; stale writers lose.
    let ctx = CertificateRecord::key_context("www.example.com", "custom");
    let mut next = stored.clone();
    next.custom = Some(StoredCert {
        chain_pem: "-----BEGIN CERTIFICATE-----\n...".into(),
        key_sealed: sealer.seal(&ctx, b"pkcs8 bytes").expect("seal"),
        not_after: 9_000,
        issuer: "Test CA".into(),
        created_at: 7,
    });
    next.acme_attempts = 2;
    next.acme_error = Some("timeout".into());
    next.acme_error_at = Some(8);
    let updated = s
        .update_certificate(&next, stored.revision)
        .expect("update");
    assert!(matches!(
        s.update_certificate(&next, stored.revision),
        Err(StoreError::Conflict { .. })
    ));
    let mut moved = updated.clone();
    moved.app = "api".into();
    assert!(
        s.update_certificate(&moved, updated.revision).is_err(),
        "a hostname does not move between apps by update"
    );
    let got = s
        .get_certificate("www.example.com")
        .expect("get")
        .expect("exists");
    assert_eq!(got, updated);
    let custom = got.custom.as_ref().expect("custom");
    assert_eq!(
        sealer.open(&ctx, &custom.key_sealed).expect("open"),
        b"pkcs8 bytes"
    );
    assert!(got.acme.is_none());
    // Survives reopening; the key file is 0600 and reloads to the same key.
    drop(s);
    let s = SqliteStore::open(&db.path()).expect("reopen");
    let sealer2 = Sealer::load_or_create(&db.0.join("tls/seal.key")).expect("sealer");
    let again = s.get_certificate("www.example.com").expect("get");
    let again = again.expect("exists");
    let key = &again.custom.as_ref().expect("custom").key_sealed;
    assert_eq!(sealer2.open(&ctx, key).expect("open"), b"pkcs8 bytes");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(db.0.join("tls/seal.key"))
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::set_permissions(
            db.0.join("tls/seal.key"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        assert!(
            Sealer::load_or_create(&db.0.join("tls/seal.key")).is_err(),
            "a key file others can read is refused"
        );
    }
    s.create_certificate(&CertificateRecord::new("api.example.com", "api", 9))
        .expect("create");
    assert_eq!(s.list_certificates(None).expect("list").len(), 2);
    assert_eq!(s.list_certificates(Some("api")).expect("list").len(), 1);
    assert!(s.delete_certificate("api.example.com").expect("delete"));
    assert!(!s.delete_certificate("api.example.com").expect("delete"));
    // Deleting the app takes its hostnames.
    assert!(s.delete_app("web").expect("delete"));
    assert!(s.get_certificate("www.example.com").expect("get").is_none());
    // ACME accounts by directory.
    let dir = "https://acme.test/dir";
    assert!(s.acme_account(dir).expect("get").is_none());
    let acct = AcmeAccountRecord {
        directory: dir.into(),
        key_sealed: sealer
            .seal(&AcmeAccountRecord::key_context(dir), b"account key")
            .expect("seal"),
        url: "https://acme.test/acct/1".into(),
        created_at: 1,
    };
    s.put_acme_account(&acct).expect("put");
    assert_eq!(s.acme_account(dir).expect("get"), Some(acct));
}

fn volume(id: &str, app: &str, name: &str) -> VolumeRecord {
    VolumeRecord {
        id: id.into(),
        app: app.into(),
        name: name.into(),
        region: "local".into(),
        zone: "h1".into(),
        host: "h1".into(),
        size_gb: 1,
        state: "creating".into(),
        encrypted: true,
        fstype: "ext4".into(),
        attached_machine_id: None,
        snapshot_retention: 5,
        auto_backup_enabled: true,
        source_volume_id: None,
        source_snapshot_id: None,
        created_at: 10,
        updated_at: 10,
        revision: 0,
    }
}

fn snapshot(id: &str, volume: &str, at: i64) -> SnapshotRecord {
    SnapshotRecord {
        id: id.into(),
        volume_id: volume.into(),
        status: "running".into(),
        size: 0,
        volume_size: 1 << 30,
        digest: String::new(),
        retention_days: 5,
        created_at: at,
    }
}

const VOL_A: &str = "vol_aaaaaaaaaaaaaaaa";
const VOL_B: &str = "vol_bbbbbbbbbbbbbbbb";

#[test]
fn volumes_attach_once_detach_with_their_machine_and_log_changes() {
    let db = TempDb::new("volumes");
    let s = SqliteStore::open(&db.path()).expect("open");
    setup(&s);
    assert!(matches!(
        s.create_volume(&volume(VOL_A, "nope", "data")),
        Err(StoreError::NotFound("app"))
    ));
    let a = s.create_volume(&volume(VOL_A, "web", "data")).expect("a");
    let b = s.create_volume(&volume(VOL_B, "web", "data")).expect("b");
    assert!(matches!(
        s.create_volume(&volume(VOL_A, "web", "again")),
        Err(StoreError::NameTaken { .. })
    ));
    assert_eq!(s.list_volumes(Some("web")).expect("list").len(), 2);
    assert_eq!(s.list_volumes(None).expect("list").len(), 2);
    assert!(s.list_volumes(Some("other")).expect("list").is_empty());

    // Attaching logs the volume and the machine; a stale revision is refused.
    s.insert_machine(&machine("aaaaaaaaaaaaaa", "web", "one"))
        .expect("machine");
    let before = s.revision();
    let mut attach = a.clone();
    attach.attached_machine_id = Some("aaaaaaaaaaaaaa".into());
    let a = s.update_volume(&attach, a.revision).expect("attach");
    let changes = s.changes_since(before, 10).expect("changes");
    let kinds: Vec<(&str, &str)> = changes
        .iter()
        .map(|c| (c.kind.as_str(), c.key.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![("volume", VOL_A), ("machine", "aaaaaaaaaaaaaa")],
        "{changes:?}"
    );
    assert_eq!(s.revision(), changes.last().expect("last").revision);
    assert!(matches!(
        s.update_volume(&attach, attach.revision),
        Err(StoreError::Conflict { .. })
    ));
    // One volume per machine.
    let mut second = b.clone();
    second.attached_machine_id = Some("aaaaaaaaaaaaaa".into());
    assert!(matches!(
        s.update_volume(&second, b.revision),
        Err(StoreError::NameTaken { .. })
    ));

    // The machine is destroyed: its volume is free, and the agent hears of it.
    let m = s
        .get_machine("web", "aaaaaaaaaaaaaa")
        .expect("get")
        .expect("m");
    let mut gone = m.clone();
    gone.state = State::Destroyed;
    gone.pending = None;
    let before = s.revision();
    s.update_machine(&gone, m.revision).expect("destroyed");
    let freed = s.get_volume(VOL_A).expect("get").expect("a");
    assert_eq!(freed.attached_machine_id, None);
    assert!(freed.revision > a.revision);
    let kinds: Vec<String> = s
        .changes_since(before, 10)
        .expect("changes")
        .iter()
        .map(|c| format!("{}:{}", c.kind, c.key))
        .collect();
    assert_eq!(
        kinds,
        vec![
            "machine:aaaaaaaaaaaaaa".to_string(),
            format!("volume:{VOL_A}")
        ]
    );

    // Snapshots: newest first, updated in place, deleted with their volume.
    assert!(matches!(
        s.create_snapshot(&snapshot("vs_1", "vol_nope", 1)),
        Err(StoreError::NotFound("volume"))
    ));
    s.create_snapshot(&snapshot("vs_1", VOL_A, 100))
        .expect("snap");
    s.create_snapshot(&snapshot("vs_2", VOL_A, 200))
        .expect("snap");
    s.create_snapshot(&snapshot("vs_3", VOL_B, 300))
        .expect("snap");
    let ids: Vec<String> = s
        .list_snapshots(VOL_A)
        .expect("list")
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(ids, vec!["vs_2", "vs_1"]);
    let mut done = snapshot("vs_1", VOL_A, 100);
    done.status = "created".into();
    done.size = 42;
    done.digest = "sha256:00".into();
    let before = s.revision();
    s.update_snapshot(&done).expect("update");
    assert_eq!(s.get_snapshot("vs_1").expect("get"), Some(done));
    assert_eq!(
        s.changes_since(before, 10).expect("changes")[0].key,
        VOL_A,
        "a snapshot change is a change of its volume"
    );
    assert!(s.delete_snapshot("vs_2").expect("delete"));
    assert!(!s.delete_snapshot("vs_2").expect("delete"));
    assert!(s.delete_volume(VOL_A).expect("delete"));
    assert!(!s.delete_volume(VOL_A).expect("delete"));
    assert_eq!(s.get_snapshot("vs_1").expect("get"), None);
    assert!(matches!(
        s.update_snapshot(&snapshot("vs_1", VOL_A, 100)),
        Err(StoreError::NotFound("snapshot"))
    ));

    // An app takes its volumes and their snapshots with it.
    assert!(s.delete_app("web").expect("delete app"));
    assert_eq!(s.get_volume(VOL_B).expect("get"), None);
    assert_eq!(s.get_snapshot("vs_3").expect("get"), None);
}

#[test]
fn volumes_survive_a_reopen() {
    let db = TempDb::new("volumes-reopen");
    {
        let s = SqliteStore::open(&db.path()).expect("open");
        setup(&s);
        let mut v = volume(VOL_A, "web", "data");
        v.source_snapshot_id = Some("vs_1".into());
        v.auto_backup_enabled = false;
        s.create_volume(&v).expect("create");
    }
    let s = SqliteStore::open(&db.path()).expect("reopen");
    let v = s.get_volume(VOL_A).expect("get").expect("there");
    assert_eq!(v.source_snapshot_id.as_deref(), Some("vs_1"));
    assert!(!v.auto_backup_enabled);
    assert!(v.encrypted);
    assert_eq!(v.fstype, "ext4");
}

#[test]
fn networks_get_ids_of_their_own_never_reused() {
    let db = TempDb::new("networks");
    let s = SqliteStore::open(&db.path()).expect("open");
    setup(&s);
    let acme = s.get_org("acme").expect("q").expect("org").numeric_id as u32;
    assert_eq!(s.network_id("acme", "default", 1).expect("default"), acme);
    // A custom network gets its id with its first app, from the org sequence.
    let before = s.revision();
    let mut blue = app("blue-a", "acme");
    blue.network = "blue".into();
    s.create_app(&blue).expect("app");
    let changes = s.changes_since(before, 10).expect("changes");
    assert!(
        changes
            .iter()
            .any(|c| c.kind == "network" && c.key == "acme/blue"),
        "{changes:?}"
    );
    let blue_id = s.network_id("acme", "blue", 2).expect("blue");
    assert_ne!(blue_id, acme);
    let mut blue2 = app("blue-b", "acme");
    blue2.network = "blue".into();
    s.create_app(&blue2).expect("app");
    assert_eq!(s.network_id("acme", "blue", 3).expect("same"), blue_id);
    // Later orgs never take a network's id; the same name in another org is another network.
    let other = s.create_org("other", "Other", 4).expect("org");
    assert!(other.numeric_id as u32 > blue_id);
    let other_blue = s.network_id("other", "blue", 5).expect("other blue");
    assert!(![acme, blue_id, other.numeric_id as u32].contains(&other_blue));
    // Apps go, networks (and their ids) stay.
    assert!(s.delete_app("blue-a").expect("delete"));
    assert!(s.delete_app("blue-b").expect("delete"));
    assert_eq!(s.network_id("acme", "blue", 6).expect("kept"), blue_id);
    assert!(matches!(
        s.network_id("nobody", "default", 7),
        Err(StoreError::NotFound("org"))
    ));
    let all = s.list_networks().expect("list");
    let names: Vec<(String, String, u32)> = all
        .iter()
        .map(|n| (n.org_slug.clone(), n.name.clone(), n.id))
        .collect();
    assert_eq!(
        names,
        vec![
            ("acme".into(), "default".into(), acme),
            ("acme".into(), "blue".into(), blue_id),
            ("other".into(), "default".into(), other.numeric_id as u32),
            ("other".into(), "blue".into(), other_blue),
        ]
    );
    drop(s);
    let s = SqliteStore::open(&db.path()).expect("reopen");
    assert_eq!(s.list_networks().expect("list").len(), 4);
}

#[test]
fn secrets_are_versioned_per_app_and_go_with_it() {
    let db = TempDb::new("secrets");
    let s = SqliteStore::open(&db.path()).expect("open");
    s.create_org("o", "O", 1).expect("org");
    s.create_app(&app("a", "o")).expect("app");
    let v = s
        .set_secrets(
            "a",
            &[
                ("A".into(), Some((b"sealed-a".to_vec(), "da".into()))),
                ("B".into(), Some((b"sealed-b".to_vec(), "db".into()))),
            ],
            5,
        )
        .expect("set");
    assert_eq!(v, 1);
    let v = s
        .set_secrets(
            "a",
            &[
                ("A".into(), None),
                ("C".into(), Some((vec![1], "dc".into()))),
            ],
            6,
        )
        .expect("set");
    assert_eq!(v, 2);
    let (list, version) = s.secrets("a").expect("list");
    assert_eq!(version, 2);
    assert_eq!(
        list.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        ["B", "C"]
    );
    assert_eq!(list[0].sealed, b"sealed-b");
    assert_eq!(s.secrets("other").expect("none"), (Vec::new(), 0));
    s.delete_app("a").expect("delete");
    assert_eq!(s.secrets("a").expect("gone"), (Vec::new(), 0));
}

#[test]
fn an_apps_events_and_checks_come_in_one_query_each_as_per_machine() {
    let s = SqliteStore::in_memory().expect("store");
    s.create_org("o", "O", 1).expect("org");
    s.create_app(&app("a", "o")).expect("app");
    s.create_app(&app("b", "o")).expect("app");
    for (id, app_name) in [("m1", "a"), ("m2", "a"), ("m3", "a"), ("x1", "b")] {
        s.insert_machine(&machine(id, app_name, &format!("n-{id}")))
            .expect("machine");
    }
    for (i, m) in ["m1", "m1", "m1", "m2", "x1"].iter().enumerate() {
        s.add_event(&EventRecord {
            id: format!("e{i}"),
            machine_id: (*m).into(),
            kind: "start".into(),
            status: "started".into(),
            source: "user".into(),
            timestamp: i as i64,
            request: Some(serde_json::json!({"n": i})),
        })
        .expect("event");
    }
    let check = |name: &str| hangar_store::CheckRecord {
        name: name.into(),
        status: "passing".into(),
        output: String::new(),
        updated_at: 1,
    };
    s.set_check("m2", &check("b")).expect("check");
    s.set_check("m2", &check("a")).expect("check");
    s.set_check("x1", &check("a")).expect("check");

    let events = s.app_events("a", 2).expect("events");
    assert_eq!(events.len(), 2, "machines with events, of app a only");
    for m in ["m1", "m2"] {
        let ids: Vec<_> = events[m].iter().map(|e| e.id.clone()).collect();
        let one: Vec<_> = s
            .events(m, 2)
            .expect("events")
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, one, "{m}: the newest two, newest first");
    }
    assert_eq!(events["m1"][0].request, Some(serde_json::json!({"n": 2})));
    let checks = s.app_checks("a").expect("checks");
    assert_eq!(checks.len(), 1);
    assert_eq!(
        checks["m2"]
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert!(s.app_checks("nope").expect("checks").is_empty());
}

/// The WAL header's salts: SQLite draws new ones whenever it starts the WAL over.
fn wal_salts(db: &std::path::Path) -> [u8; 8] {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let bytes = std::fs::read(&wal).expect("the WAL");
    bytes[16..24].try_into().expect("a WAL header")
}

#[test]
fn the_checkpointer_restarts_the_wal_itself_so_the_next_write_only_appends() {
    let db = TempDb::new("walrestart");
    let s = SqliteStore::open(&db.path()).expect("open");
    setup(&s);
    s.insert_machine(&machine("dddddddddddddd", "web", "walrestart"))
        .expect("insert");
    let stats = s.wal_stats().expect("a file store checkpoints");
    let deadline = Instant::now() + CHECKPOINT_EVERY * 5;
    while stats.restarts.load(Ordering::Relaxed) == 0 {
        assert!(
            Instant::now() < deadline,
            "the checkpointer never restarted the WAL"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // A write now appends to the WAL the checkpointer started: same salts. (An observation
    // during which the checkpointer ran again says nothing and is made again.)
    let mut m = s
        .find_machine("dddddddddddddd")
        .expect("read")
        .expect("machine");
    let mut clean = 0;
    for i in 0..5 {
        let restarts = stats.restarts.load(Ordering::Relaxed);
        let before = wal_salts(&db.path());
        m.restart_count = i;
        m = s.update_machine(&m, m.revision).expect("update");
        let after = wal_salts(&db.path());
        if stats.restarts.load(Ordering::Relaxed) != restarts {
            continue;
        }
        assert_eq!(before, after, "the write restarted the WAL");
        clean += 1;
    }
    assert!(clean > 0, "the checkpointer ran during every write");
    // That write is checkpointed and the WAL restarted again; then, with nothing written,
    // the checkpointer leaves the WAL (its own page) alone.
    let deadline = Instant::now() + CHECKPOINT_EVERY * 5;
    let restarts = stats.restarts.load(Ordering::Relaxed);
    while stats.restarts.load(Ordering::Relaxed) == restarts {
        assert!(Instant::now() < deadline, "the write was not checkpointed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (checkpoints, restarts) = (
        stats.checkpoints.load(Ordering::Relaxed),
        stats.restarts.load(Ordering::Relaxed),
    );
    std::thread::sleep(CHECKPOINT_EVERY * 2 + CHECKPOINT_EVERY / 2);
    assert_eq!(stats.checkpoints.load(Ordering::Relaxed), checkpoints);
    assert_eq!(stats.restarts.load(Ordering::Relaxed), restarts);
    assert_eq!(stats.failures.load(Ordering::Relaxed), 0);
    drop(s);
    let s = SqliteStore::open(&db.path()).expect("reopen");
    assert_eq!(
        s.find_machine("dddddddddddddd")
            .expect("read")
            .expect("machine")
            .restart_count,
        4
    );
}

#[test]
fn the_wal_is_checkpointed_off_the_write_path_and_the_thread_stops_with_the_store() {
    let db = TempDb::new("wal");
    let s = SqliteStore::open(&db.path()).expect("open");
    setup(&s);
    s.insert_machine(&machine("cccccccccccccc", "web", "wal"))
        .expect("insert");
    let mut m = s
        .find_machine("cccccccccccccc")
        .expect("read")
        .expect("machine");
    // Enough writes to pass SQLite's own threshold (1,000 pages) several times over.
    m.config.env.insert("PAD".into(), "x".repeat(3000));
    for i in 0..1500 {
        m.restart_count = i;
        m = s.update_machine(&m, m.revision).expect("update");
    }
    let stats = s.wal_stats().expect("a file store checkpoints");
    let deadline = Instant::now() + CHECKPOINT_EVERY * 5;
    while stats.checkpoints.load(Ordering::Relaxed) == 0
        || stats.pending_pages.load(Ordering::Relaxed) > 0
    {
        assert!(Instant::now() < deadline, "no complete checkpoint");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(stats.failures.load(Ordering::Relaxed), 0);
    // Dropping the store stops and joins the thread; the data is all there on reopen.
    let started = Instant::now();
    drop(s);
    assert!(
        started.elapsed() < CHECKPOINT_EVERY,
        "drop waited for the next beat"
    );
    let s = SqliteStore::open(&db.path()).expect("reopen");
    let back = s
        .find_machine("cccccccccccccc")
        .expect("read")
        .expect("machine");
    assert_eq!(back.restart_count, 1499);
    assert!(
        SqliteStore::in_memory()
            .expect("memory")
            .wal_stats()
            .is_none()
    );
}
