//! Volumes at the API edge (§2.9): the wire format against the swagger, validation, org
//! isolation, and the rules machines' mounts follow. The host side (disks, snapshots) is
//! tested end to end in hangar-testkit; here the agent's reports are written to the store.

use hangar_domain::Action;
use hangar_store::Store;
use serde_json::{Value, json};

use super::{ACME, OTHER, advance, assert_error, create_app, server};
use crate::client::Client;
#[path = "../../../api-types/tests/wire/swagger.rs"]
#[allow(dead_code)]
mod swagger;

/// Fields newer than the 2024 swagger (listed in docs/compat.md).
const NEWER: &[&str] = &[
    "Volume.host_status",
    "VolumeSnapshot.volume_size",
    "VolumeSnapshot.retention_days",
];

fn conforms(spec: &swagger::Spec, definition: &str, v: &Value) {
    let bad: Vec<String> = spec
        .validate(definition, v)
        .into_iter()
        .filter(|m| !(m.kind == swagger::Kind::UnknownProperty && NEWER.contains(&m.at.as_str())))
        .map(|m| m.to_string())
        .collect();
    assert!(bad.is_empty(), "{definition} {v}: {bad:?}");
}

async fn create_volume(c: &Client, app: &str, body: Value) -> Value {
    let r = c.post(&format!("/v1/apps/{app}/volumes"), &body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json()
}

fn machine_with(volume: &str, path: &str) -> Value {
    json!({"config": {"image": "img:1", "mounts": [{"volume": volume, "path": path}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_follow_the_swagger_and_the_reference_rules() {
    let spec = swagger::Spec::load();
    let s = server("volumes").await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "web").await;

    // Create: the reference's defaults, in the swagger's shape.
    let v = create_volume(&c, "web", json!({"name": "data", "region": "local"})).await;
    conforms(&spec, "Volume", &v);
    let id = v["id"].as_str().expect("id").to_string();
    assert!(id.starts_with("vol_") && id.len() == 20, "{id}");
    assert_eq!(v["state"], "creating");
    assert_eq!(v["size_gb"], 1);
    assert_eq!(v["encrypted"], true);
    assert_eq!(v["snapshot_retention"], 5);
    assert_eq!(v["fstype"], "ext4");
    assert!(v.get("attached_machine_id").is_none(), "{v}");
    let list = c.get("/v1/apps/web/volumes").await.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    conforms(&spec, "Volume", &list[0]);
    assert_eq!(c.get("/v1/apps/web").await.json()["volume_count"], 1);

    // Bad input is a 400 with a message.
    for bad in [
        json!({"name": "Data!", "region": "local"}),
        json!({"name": "", "region": "local"}),
        json!({"name": "a_very_long_volume_name_over_30_chars", "region": "local"}),
        json!({"name": "data", "region": "mars"}),
        json!({"name": "data", "size_gb": 0}),
        json!({"name": "data", "size_gb": 501}),
        json!({"name": "data", "snapshot_retention": 61}),
        json!({"name": "data", "fstype": "xfs"}),
        json!({"name": "data", "snapshot_id": "vs_x", "source_volume_id": "vol_y"}),
        json!({"name": "data", "size_gb": "10"}),
    ] {
        assert_error(&c.post("/v1/apps/web/volumes", &bad).await, 400);
    }
    assert_error(
        &c.post(
            "/v1/apps/web/volumes",
            &json!({"name": "d", "snapshot_id": "vs_nope"}),
        )
        .await,
        404,
    );

    // The host made it.
    let mut rec = s.store.get_volume(&id).expect("get").expect("there");
    rec.state = "created".into();
    s.store.update_volume(&rec, rec.revision).expect("created");

    // Update (PUT, and POST as the older spec has it).
    let r = c
        .put(
            &format!("/v1/apps/web/volumes/{id}"),
            &json!({"snapshot_retention": 10, "auto_backup_enabled": false}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    conforms(&spec, "Volume", &r.json());
    assert_eq!(r.json()["snapshot_retention"], 10);
    assert_eq!(r.json()["auto_backup_enabled"], false);
    let r = c
        .post(
            &format!("/v1/apps/web/volumes/{id}"),
            &json!({"snapshot_retention": 0}),
        )
        .await;
    assert_error(&r, 400);

    // Extend: grow only, within bounds.
    let ext = format!("/v1/apps/web/volumes/{id}/extend");
    assert_error(&c.put(&ext, &json!({"size_gb": 1})).await, 400);
    assert_error(&c.put(&ext, &json!({"size_gb": 900})).await, 400);
    let r = c.put(&ext, &json!({"size_gb": 3})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    conforms(&spec, "ExtendVolumeResponse", &r.json());
    assert_eq!(r.json()["volume"]["size_gb"], 3);
    assert_eq!(r.json()["volume"]["state"], "extending");
    assert_eq!(r.json()["needs_restart"], false, "nothing mounts it");

    // Snapshots: one at a time, in the swagger's shape.
    let snaps = format!("/v1/apps/web/volumes/{id}/snapshots");
    let r = c.post(&snaps, &json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    conforms(&spec, "VolumeSnapshot", &r.json());
    assert_eq!(r.json()["status"], "running");
    let sid = r.json()["id"].as_str().expect("id").to_string();
    assert!(sid.starts_with("vs_"), "{sid}");
    assert_error(&c.post(&snaps, &json!({})).await, 429);
    let list = c.get(&snaps).await.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    conforms(&spec, "VolumeSnapshot", &list[0]);
    // Restoring needs a finished snapshot.
    let restore = json!({"name": "copy", "snapshot_id": sid});
    assert_error(&c.post("/v1/apps/web/volumes", &restore).await, 412);
    let mut snap = s.store.get_snapshot(&sid).expect("get").expect("there");
    snap.status = "created".into();
    snap.volume_size = 3 << 30;
    s.store.update_snapshot(&snap).expect("done");
    assert_error(
        &c.post(
            "/v1/apps/web/volumes",
            &json!({"name": "copy", "snapshot_id": sid, "size_gb": 2}),
        )
        .await,
        400,
    );
    let restored = create_volume(&c, "web", restore).await;
    assert_eq!(restored["size_gb"], 3, "the snapshot's size by default");
    assert_eq!(restored["state"], "creating");
    let forked = create_volume(&c, "web", json!({"source_volume_id": id})).await;
    assert_eq!(forked["name"], "data", "a fork keeps the name by default");
    assert_eq!(forked["size_gb"], 3);

    // Another org sees none of it, and can not copy it.
    let other = Client::new(s.addr, Some(OTHER));
    create_app(&other, "theirs").await;
    for path in [
        format!("/v1/apps/web/volumes/{id}"),
        format!("/v1/apps/web/volumes/{id}/snapshots"),
        "/v1/apps/web/volumes".to_string(),
    ] {
        assert_error(&other.get(&path).await, 404);
    }
    assert_error(
        &other.delete(&format!("/v1/apps/web/volumes/{id}")).await,
        404,
    );
    assert_error(
        &other
            .put(
                &format!("/v1/apps/web/volumes/{id}/extend"),
                &json!({"size_gb": 9}),
            )
            .await,
        404,
    );
    assert_error(
        &other
            .post(
                "/v1/apps/theirs/volumes",
                &json!({"name": "x", "source_volume_id": id}),
            )
            .await,
        404,
    );
    assert_error(
        &other
            .post(
                "/v1/apps/theirs/volumes",
                &json!({"name": "x", "snapshot_id": sid}),
            )
            .await,
        404,
    );
    assert_error(
        &other
            .post("/v1/apps/theirs/machines", &machine_with(&id, "/data"))
            .await,
        422,
    );
    assert_error(
        &c.get("/v1/apps/web/volumes/vol_zzzzzzzzzzzzzzzz").await,
        404,
    );
    assert_error(&c.get("/v1/apps/web/volumes/not-an-id").await, 404);

    // Delete: pending until the host removed it.
    let fid = forked["id"].as_str().expect("id");
    let r = c.delete(&format!("/v1/apps/web/volumes/{fid}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    conforms(&spec, "Volume", &r.json());
    assert_eq!(r.json()["state"], "pending_destroy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machines_mount_one_free_volume_of_their_app() {
    let s = server("volume-mounts").await;
    let c = Client::new(s.addr, Some(ACME));
    create_app(&c, "web").await;
    create_app(&c, "api").await;
    let v = create_volume(&c, "web", json!({"name": "data", "region": "ams"})).await;
    let id = v["id"].as_str().expect("id").to_string();
    let elsewhere = create_volume(&c, "api", json!({"name": "data"})).await;

    // Bad mounts.
    let bad_path = machine_with(&id, "/");
    assert_error(&c.post("/v1/apps/web/machines", &bad_path).await, 400);
    let relative = machine_with(&id, "data");
    assert_error(&c.post("/v1/apps/web/machines", &relative).await, 400);
    let no_volume = json!({"config": {"image": "img:1", "mounts": [{"path": "/data"}]}});
    assert_error(&c.post("/v1/apps/web/machines", &no_volume).await, 400);
    let two = json!({"config": {"image": "img:1", "mounts": [
        {"volume": id, "path": "/a"}, {"volume": id, "path": "/b"}]}});
    assert_error(&c.post("/v1/apps/web/machines", &two).await, 400);
    let unknown = machine_with("vol_zzzzzzzzzzzzzzzz", "/data");
    assert_error(&c.post("/v1/apps/web/machines", &unknown).await, 422);
    let other_app = machine_with(elsewhere["id"].as_str().expect("id"), "/data");
    assert_error(&c.post("/v1/apps/web/machines", &other_app).await, 422);
    let mut wrong_region = machine_with(&id, "/data");
    wrong_region["region"] = json!("local");
    assert_error(&c.post("/v1/apps/web/machines", &wrong_region).await, 422);

    // A machine mounts it, in the volume's region; the volume is attached.
    let r = c
        .post("/v1/apps/web/machines", &machine_with(&id, "/data"))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let m = r.json();
    let mid = m["id"].as_str().expect("id").to_string();
    assert_eq!(m["region"], "ams");
    assert_eq!(m["config"]["mounts"][0]["name"], "data");
    let got = c.get(&format!("/v1/apps/web/volumes/{id}")).await.json();
    assert_eq!(got["attached_machine_id"], mid.as_str());
    assert_eq!(got["attached_alloc_id"], mid.as_str());
    // Not twice, and not deleted while attached.
    assert_error(
        &c.post("/v1/apps/web/machines", &machine_with(&id, "/data"))
            .await,
        409,
    );
    assert_error(&c.delete(&format!("/v1/apps/web/volumes/{id}")).await, 412);

    // Updates keep the volume (the path may move); they can not swap or drop it.
    let upd = format!("/v1/apps/web/machines/{mid}");
    advance(
        &s.store,
        "web",
        &mid,
        &[Action::Created { skip_launch: true }],
    );
    let keep = json!({"config": {"image": "img:2", "mounts": [{"path": "/srv", "name": "data"}]}});
    let r = c.post(&upd, &keep).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["config"]["mounts"][0]["volume"], id.as_str());
    assert_eq!(r.json()["config"]["mounts"][0]["path"], "/srv");
    advance(&s.store, "web", &mid, &[Action::Updated { launch: false }]);
    let drop = json!({"config": {"image": "img:2"}});
    assert_error(&c.post(&upd, &drop).await, 400);
    let swap = machine_with(elsewhere["id"].as_str().expect("id"), "/srv");
    assert_error(&c.post(&upd, &swap).await, 400);

    // Extending a volume a running machine uses asks for a restart.
    advance(&s.store, "web", &mid, &[Action::Start, Action::Running]);
    let r = c
        .put(
            &format!("/v1/apps/web/volumes/{id}/extend"),
            &json!({"size_gb": 2}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["needs_restart"], true);

    // Destroyed: the volume is free again (and can be deleted).
    advance(
        &s.store,
        "web",
        &mid,
        &[Action::Destroy { force: true }, Action::Removed],
    );
    let got = c.get(&format!("/v1/apps/web/volumes/{id}")).await.json();
    assert!(got.get("attached_machine_id").is_none(), "{got}");
    // A machine without a volume gets one by an update.
    let bare = c
        .post(
            "/v1/apps/web/machines",
            &json!({"config": {"image": "img:1"}, "region": "ams"}),
        )
        .await
        .json();
    let bid = bare["id"].as_str().expect("id").to_string();
    advance(
        &s.store,
        "web",
        &bid,
        &[Action::Created { skip_launch: true }],
    );
    let r = c
        .post(
            &format!("/v1/apps/web/machines/{bid}"),
            &machine_with(&id, "/data"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let got = c.get(&format!("/v1/apps/web/volumes/{id}")).await.json();
    assert_eq!(got["attached_machine_id"], bid.as_str());
    advance(
        &s.store,
        "web",
        &bid,
        &[
            Action::Updated { launch: false },
            Action::Destroy { force: true },
            Action::Removed,
        ],
    );
    let r = c.delete(&format!("/v1/apps/web/volumes/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json()["state"], "pending_destroy");
    // Pending destroy: no machine may take it.
    assert_error(
        &c.post("/v1/apps/web/machines", &machine_with(&id, "/data"))
            .await,
        422,
    );
}
