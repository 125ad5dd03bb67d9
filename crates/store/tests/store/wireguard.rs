//! WireGuard peers: unique names per org, unique keys and addresses everywhere, every write
//! announced in the change log.

use hangar_store::{SqliteStore, Store, StoreError, WireguardPeerRecord};

use super::TempDb;

fn peer(org: &str, name: &str, key: &str, ip: &str) -> WireguardPeerRecord {
    WireguardPeerRecord {
        org_slug: org.into(),
        name: name.into(),
        network: "default".into(),
        network_id: 1,
        region: "local".into(),
        public_key: key.into(),
        peer_ip: ip.into(),
        created_at: 5,
    }
}

#[test]
fn peers_are_unique_per_org_key_and_address_and_logged() {
    let db = TempDb::new("wireguard");
    let s = SqliteStore::open(&db.path()).expect("open");
    s.create_org("o", "O", 1).expect("org");
    s.create_org("p", "P", 2).expect("org");
    let rev = s.revision();
    let a = peer("o", "laptop", "k1", "fdaa:0:1::1:102");
    s.create_wireguard_peer(&a).expect("create");
    let changes: Vec<(String, String)> = s
        .changes_since(rev, 10)
        .expect("changes")
        .into_iter()
        .map(|c| (c.kind, c.key))
        .collect();
    assert_eq!(changes, vec![("wireguard".into(), "o/laptop".into())]);
    assert_eq!(
        s.get_wireguard_peer("o", "laptop").expect("get"),
        Some(a.clone())
    );
    // The same name in another org is fine; the same key or address anywhere is not.
    s.create_wireguard_peer(&peer("p", "laptop", "k2", "fdaa:0:2::1:102"))
        .expect("other org");
    for (bad, what) in [
        (peer("o", "laptop", "k3", "fdaa:0:1::3:102"), "peer name"),
        (peer("o", "desk", "k1", "fdaa:0:1::3:102"), "public key"),
        (peer("o", "desk", "k3", "fdaa:0:1::1:102"), "peer address"),
    ] {
        match s.create_wireguard_peer(&bad) {
            Err(StoreError::NameTaken { what: w, .. }) => assert_eq!(w, what),
            other => panic!("{what}: {other:?}"),
        }
    }
    assert!(matches!(
        s.create_wireguard_peer(&peer("nope", "x", "k9", "fdaa:0:9::1:102")),
        Err(StoreError::NotFound("org"))
    ));
    assert_eq!(s.list_wireguard_peers(Some("o")).expect("list").len(), 1);
    assert_eq!(s.list_wireguard_peers(None).expect("list").len(), 2);
    let rev = s.revision();
    assert!(s.delete_wireguard_peer("o", "laptop").expect("delete"));
    assert!(!s.delete_wireguard_peer("o", "laptop").expect("again"));
    assert_eq!(s.changes_since(rev, 10).expect("changes").len(), 1);
    assert_eq!(s.get_wireguard_peer("o", "laptop").expect("get"), None);
}
