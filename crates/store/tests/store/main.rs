//! The SQLite store against a real database file.

use std::path::PathBuf;
use std::sync::Arc;

use hangar_api_types::MachineConfig;
use hangar_domain::State;
use hangar_store::{
    AppRecord, EventRecord, LeaseRecord, MachineRecord, PendingOp, SqliteStore, Store, StoreError,
    TokenScope,
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
