//! IP assignments: Flycast addresses unique and one per app and network, public records
//! shared, every write announced in the change log, everything gone with the app.

use hangar_store::{IpAssignmentRecord, SqliteStore, Store, StoreError};

use super::{TempDb, app};

fn ip(app: &str, ip: &str, kind: &str, network: Option<u32>) -> IpAssignmentRecord {
    IpAssignmentRecord {
        ip: ip.into(),
        app: app.into(),
        kind: kind.into(),
        region: "global".into(),
        network_id: network,
        service_name: None,
        shared: kind != "private_v6",
        created_at: 7,
    }
}

fn changes_of(s: &SqliteStore, since: u64) -> Vec<(String, String)> {
    s.changes_since(since, 100)
        .expect("changes")
        .into_iter()
        .map(|c| (c.kind, c.key))
        .collect()
}

#[test]
fn flycast_addresses_are_unique_public_ones_shared_and_all_go_with_the_app() {
    let db = TempDb::new("ips");
    let s = SqliteStore::open(&db.path()).expect("open");
    s.create_org("o", "O", 1).expect("org");
    s.create_app(&app("a", "o")).expect("app a");
    s.create_app(&app("b", "o")).expect("app b");

    let rev = s.revision();
    let f1 = ip("a", "fdaa:0:1::1:0:11", "private_v6", Some(1));
    s.create_ip_assignment(&f1).expect("flycast");
    assert_eq!(
        changes_of(&s, rev),
        [("ip_assignment".to_string(), "a".to_string())]
    );
    // One Flycast address per app and network; a Flycast address belongs to one app.
    let again = ip("a", "fdaa:0:1::2:0:11", "private_v6", Some(1));
    assert!(matches!(
        s.create_ip_assignment(&again),
        Err(StoreError::NameTaken { .. })
    ));
    let theirs = ip("b", "fdaa:0:1::1:0:11", "private_v6", Some(1));
    assert!(matches!(
        s.create_ip_assignment(&theirs),
        Err(StoreError::NameTaken { .. })
    ));
    // Another network is another address.
    let f2 = ip("a", "fdaa:0:9::3:0:11", "private_v6", Some(9));
    s.create_ip_assignment(&f2).expect("for network 9");
    // The host's public address, recorded by two apps.
    s.create_ip_assignment(&ip("a", "192.0.2.1", "shared_v4", None))
        .expect("a v4");
    s.create_ip_assignment(&ip("b", "192.0.2.1", "shared_v4", None))
        .expect("b v4");
    assert!(matches!(
        s.create_ip_assignment(&ip("b", "192.0.2.1", "shared_v4", None)),
        Err(StoreError::NameTaken { .. })
    ));
    assert!(matches!(
        s.create_ip_assignment(&ip("nope", "192.0.2.1", "shared_v4", None)),
        Err(StoreError::NotFound("app"))
    ));

    let a: Vec<_> = s.list_ip_assignments(Some("a")).expect("list a");
    assert_eq!(a.len(), 3);
    assert_eq!(a[0], f1);
    assert!(a[0].is_flycast() && !a[2].is_flycast());
    assert_eq!(s.list_ip_assignments(None).expect("all").len(), 4);

    // Release: announced when something went, silent otherwise.
    let rev = s.revision();
    assert!(s.delete_ip_assignment("a", &f2.ip).expect("delete"));
    assert!(!s.delete_ip_assignment("a", &f2.ip).expect("delete again"));
    assert!(!s.delete_ip_assignment("b", &f1.ip).expect("not b's"));
    assert_eq!(
        changes_of(&s, rev),
        [("ip_assignment".to_string(), "a".to_string())]
    );

    // Gone with the app, and said so.
    let rev = s.revision();
    s.delete_app("a").expect("delete app");
    assert!(
        changes_of(&s, rev).contains(&("ip_assignment".to_string(), "a".to_string())),
        "{:?}",
        changes_of(&s, rev)
    );
    assert!(s.list_ip_assignments(Some("a")).expect("none").is_empty());
    assert_eq!(s.list_ip_assignments(None).expect("b's").len(), 1);
    // The address is free again.
    s.create_ip_assignment(&ip("b", &f1.ip, "private_v6", Some(1)))
        .expect("reused by b");
    drop(s);
    let s = SqliteStore::open(&db.path()).expect("reopen");
    assert_eq!(s.list_ip_assignments(Some("b")).expect("kept").len(), 2);
}
