//! Realistic reference payloads (PLATFORM.md §2) round-trip byte-for-byte as JSON values.

use hangar_api_types::*;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::fixtures;

/// Deserialises `payload` as `T`, serialises it back and requires the same JSON value.
fn round_trip<T>(payload: &Value) -> T
where
    T: Serialize + DeserializeOwned,
{
    let typed: T = serde_json::from_value(payload.clone())
        .unwrap_or_else(|e| panic!("deserialise {}: {e}", std::any::type_name::<T>()));
    let back = serde_json::to_value(&typed).expect("serialise");
    assert_eq!(
        &back,
        payload,
        "{} did not round-trip.\n got: {back:#}\nwant: {payload:#}",
        std::any::type_name::<T>()
    );
    typed
}

fn machine_payload() -> Value {
    json!({
        "id": "3d8d413b29d089",
        "name": "quiet-sun-1234",
        "state": "started",
        "region": "ord",
        "instance_id": "01HQZ5K6T3W1V2X3Y4Z5A6B7C8",
        "private_ip": "fdaa:0:3ec2:a7b:5adc:6068:5b85:2",
        "config": {
            "init": {},
            "env": {"PRIMARY_REGION": "ord", "FLY_PROCESS_GROUP": "app"},
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256},
            "metadata": {
                "fly_flyctl_version": "0.2.17",
                "fly_platform_version": "v2",
                "fly_process_group": "app",
                "fly_release_id": "Rel_xyz",
                "fly_release_version": "7"
            },
            "services": [{
                "protocol": "tcp",
                "internal_port": 8080,
                "autostop": true,
                "autostart": true,
                "min_machines_running": 0,
                "ports": [
                    {"port": 80, "handlers": ["http"], "force_https": true},
                    {"port": 443, "handlers": ["tls", "http"],
                     "http_options": {"response": {"headers": {"Server": false, "X-Thing": ["a", "b"]}}}}
                ],
                "checks": [{
                    "type": "http", "interval": "15s", "timeout": "2s", "grace_period": "5s",
                    "method": "GET", "path": "/healthz", "protocol": "http",
                    "headers": [{"name": "Host", "values": ["example.com"]}]
                }],
                "concurrency": {"type": "connections", "hard_limit": 25, "soft_limit": 20},
                "force_instance_key": "01HQZ5K6T3"
            }],
            "checks": {"alive": {"type": "tcp", "port": 8080, "interval": "15s", "timeout": "10s", "kind": "readiness"}},
            "image": "registry.fly.io/my-app:deployment-01HQZ5",
            "restart": {"policy": "on-failure", "max_retries": 10},
            "mounts": [{"encrypted": true, "path": "/data", "size_gb": 1, "volume": "vol_1234567890abcdef", "name": "data"}],
            "dns": {},
            "stop_config": {"timeout": "5m0s", "signal": "SIGTERM"},
            "files": [{"guest_path": "/etc/motd", "raw_value": "aGVsbG8K"}],
            "statics": [{"guest_path": "/app/public", "url_prefix": "/static"}],
            "metrics": {"port": 9091, "path": "/metrics"}
        },
        "image_ref": {
            "registry": "registry.fly.io",
            "repository": "my-app",
            "tag": "deployment-01HQZ5",
            "digest": "sha256:6f4b2c1a0e9d8c7b",
            "labels": {"fly.version": "7"}
        },
        "created_at": "2024-03-01T10:00:00Z",
        "updated_at": "2024-03-01T10:00:05Z",
        "events": [
            {"id": "01HQZ5M9", "type": "start", "status": "started", "source": "flyd", "timestamp": 1709287205123_i64},
            {"id": "01HQZ5M8", "type": "exit", "status": "stopped", "source": "flyd", "timestamp": 1709287204000_i64,
             "request": {
                 "exit_event": {"exit_code": 0, "exited_at": "2024-03-01T10:00:04.001Z", "guest_exit_code": 0,
                                "guest_signal": -1, "oom_killed": false, "requested_stop": true,
                                "restarting": false, "signal": -1},
                 "restart_count": 0
             }},
            {"id": "01HQZ5M7", "type": "launch", "status": "created", "source": "user", "timestamp": 1709287200000_i64}
        ],
        "checks": [
            {"name": "servicecheck-00-http-8080", "status": "passing", "output": "Success", "updated_at": "2024-03-01T10:00:20.123Z"},
            {"name": "alive", "status": "critical", "output": "dial tcp: connection refused", "updated_at": "2024-03-01T10:00:21Z"}
        ],
        "host_status": "ok"
    })
}

#[test]
fn machine_round_trips() {
    let m: Machine = round_trip(&machine_payload());
    assert_eq!(m.state, MachineState::Started);
    let cfg = m.config.as_ref().expect("config");
    assert_eq!(cfg.services[0].autostop, Some(Autostop::Stop));
    assert_eq!(
        cfg.services[0].checks[0].interval,
        Some(Duration::from_secs(15))
    );
    assert_eq!(cfg.checks["alive"].kind, Some(CheckKind::Readiness));
    assert_eq!(
        cfg.stop_config.as_ref().and_then(|s| s.timeout),
        Some(Duration::from_mins(5))
    );
    assert_eq!(m.events[0].timestamp, 1_709_287_205_123);
    assert_eq!(
        m.events[1]
            .request
            .as_ref()
            .and_then(|r| r.exit_event.as_ref())
            .and_then(|e| e.requested_stop),
        Some(true)
    );
    assert_eq!(m.checks[1].status, CheckStatus::Critical);
    assert_eq!(m.process_group(), Some("app"));
    assert_eq!(m.host_status, Some(HostStatus::Ok));
}

#[test]
fn machine_with_suspend_and_newer_fields_round_trips() {
    let mut payload = machine_payload();
    payload["config"]["services"][0]["autostop"] = json!("suspend");
    payload["state"] = json!("suspended");
    payload["cordoned"] = json!(true);
    payload["nonce"] = json!("a1b2c3d4");
    payload["version"] = json!("01HQZ5K6T3W1V2X3Y4Z5A6B7C8");
    payload["containers"] = json!([{"name": "app", "state": "running"}]);
    payload["config"]["rootfs"] = json!({"persist": "restart", "size_gb": 4});
    payload["config"]["guest"]["persist_rootfs"] = json!("always");
    payload["events"][1]["request"]["MonitorEvent"] = json!({"exit_event": {"exit_code": 1}});
    payload["events"][2]["request"] = json!({"config": {"image": "x"}, "restart_count": 0});
    let m: Machine = round_trip(&payload);
    assert_eq!(
        m.config.as_ref().and_then(|c| c.services[0].autostop),
        Some(Autostop::Suspend)
    );
    let launch = m.events[2].request.as_ref().expect("request");
    assert_eq!(launch.extra["config"], json!({"image": "x"}));
}

#[test]
fn unreachable_host_machine_round_trips() {
    let payload = json!({
        "id": "148e272b7d0d89", "name": "old-wave-9", "state": "started", "region": "ams",
        "instance_id": "01HR", "private_ip": "fdaa::3", "created_at": "2024-01-01T00:00:00Z",
        "updated_at": "2024-01-01T00:00:00Z",
        "incomplete_config": {"image": "registry.fly.io/app:v1", "metadata": {"fly_process_group": "worker"}},
        "host_status": "unreachable"
    });
    let m: Machine = round_trip(&payload);
    assert_eq!(m.process_group(), Some("worker"));
    assert_eq!(m.host_status, Some(HostStatus::Unreachable));
}

#[test]
fn fully_populated_values_round_trip() {
    fn again<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
        let json = serde_json::to_value(v).expect("serialise");
        let back: T = serde_json::from_value(json.clone()).expect("deserialise");
        assert_eq!(&back, v);
        assert_eq!(serde_json::to_value(&back).expect("serialise"), json);
    }
    again(&fixtures::machine());
    again(&fixtures::create_request(Some("v1".into())));
    again(&fixtures::volume());
    again(&fixtures::create_volume_request());
    again(&fixtures::snapshot());
    again(&fixtures::app());
    again(&fixtures::list_apps());
    again(&fixtures::create_app_request());
    again(&fixtures::exec_request());
    again(&fixtures::process_stat());
    again(&Lease::success(fixtures::lease_data()));
}

#[test]
fn empty_values_are_omitted() {
    assert_eq!(
        serde_json::to_value(MachineConfig::default()).ok(),
        Some(json!({"image": ""}))
    );
    assert_eq!(
        serde_json::to_value(MachineService::default()).ok(),
        Some(json!({"protocol": "", "internal_port": 0}))
    );
    assert_eq!(
        serde_json::to_value(MachineGuest::default()).ok(),
        Some(json!({}))
    );
    assert_eq!(
        serde_json::to_value(MachinePort::default()).ok(),
        Some(json!({}))
    );
    assert_eq!(
        serde_json::to_value(MachineCheck::default()).ok(),
        Some(json!({}))
    );
    assert_eq!(
        serde_json::to_value(StopRequest::default()).ok(),
        Some(json!({}))
    );
    assert_eq!(
        serde_json::to_value(CreateMachineRequest::default()).ok(),
        Some(json!({"config": {"image": ""}}))
    );
}

#[test]
fn go_nulls_read_as_empty() {
    let cfg: MachineConfig = serde_json::from_value(json!({
        "image": "x", "env": null, "metadata": null, "services": null, "checks": null,
        "mounts": null, "init": null, "guest": null, "standbys": null
    }))
    .expect("nulls");
    assert_eq!(
        cfg,
        MachineConfig {
            image: "x".into(),
            ..MachineConfig::default()
        }
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let cfg: MachineConfig = serde_json::from_value(json!({
        "image": "x",
        "spot": {"max_price_fraction": 0.5},
        "future_field": [1, 2, 3],
        "guest": {"cpus": 1, "new_knob": true},
        "services": [{"protocol": "tcp", "internal_port": 80, "brand_new": {}}]
    }))
    .expect("unknown fields");
    assert_eq!(cfg.guest.as_ref().and_then(|g| g.cpus), Some(1));
    assert_eq!(cfg.services[0].internal_port, 80);
    let back = serde_json::to_value(&cfg).expect("ser");
    assert!(back.get("future_field").is_none());
}

#[test]
fn create_and_update_requests_round_trip() {
    let create = json!({
        "name": "web-1",
        "region": "ord",
        "config": {
            "image": "registry.fly.io/my-app:v2",
            "guest": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 512},
            "services": [{"protocol": "tcp", "internal_port": 8080, "autostop": false,
                          "ports": [{"port": 443, "handlers": ["tls", "http"]}]}],
            "restart": {"policy": "always"}
        },
        "skip_launch": true,
        "lease_ttl": 30,
        "min_secrets_version": 3
    });
    let req: CreateMachineRequest = round_trip(&create);
    assert_eq!(req.config.services[0].autostop, Some(Autostop::Off));
    assert_eq!(
        req.config.restart.as_ref().and_then(|r| r.policy.clone()),
        Some(RestartPolicy::Always)
    );

    let mut update = create.clone();
    update["current_version"] = json!("01HQZ5K6T3");
    let up: UpdateMachineRequest = round_trip(&update);
    assert_eq!(up.current_version.as_deref(), Some("01HQZ5K6T3"));
}

#[test]
fn lease_bodies_round_trip() {
    let ok = json!({
        "status": "success",
        "data": {
            "nonce": "7f0e2f1c9a3b",
            "expires_at": 1709287300,
            "owner": "user@example.com",
            "description": "flyctl deploy",
            "version": "01HQZ5K6T3W1V2X3Y4Z5A6B7C8"
        }
    });
    let lease: Lease = round_trip(&ok);
    assert!(lease.is_success());
    assert_eq!(lease, Lease::success(lease.data.clone().expect("data")));

    let conflict = json!({
        "status": "error",
        "message": "failed to acquire lease: lease currently held by other@example.com, expires at 2024-03-01T10:01:40Z",
        "code": "invalid"
    });
    let lease: Lease = round_trip(&conflict);
    assert!(!lease.is_success());
    assert_eq!(
        lease,
        Lease::conflict(lease.message.clone().expect("message"))
    );

    let req: LeaseRequest = round_trip(&json!({"ttl": 30, "description": "deploy"}));
    assert_eq!(req.ttl, Some(30));
}

#[test]
fn app_bodies_round_trip() {
    let get = json!({
        "id": "my-app",
        "name": "my-app",
        "organization": {"name": "Personal", "slug": "personal", "internal_numeric_id": 42},
        "status": "deployed",
        "network": "default",
        "internal_numeric_id": 1234,
        "machine_count": 2,
        "volume_count": 1,
        "cname_target": "9ql2n.my-app.fly.dev",
        "app_role": ""
    });
    round_trip::<App>(&get);

    let list = json!({
        "total_apps": 2,
        "apps": [
            {"id": "my-app", "name": "my-app", "machine_count": 2, "volume_count": 1, "network": "default"},
            {"id": "db", "name": "db", "machine_count": 3, "volume_count": 3, "network": "default"}
        ]
    });
    let l: ListAppsResponse = round_trip(&list);
    assert_eq!(l.apps.len(), 2);
    round_trip::<ListAppsResponse>(&json!({"total_apps": 0, "apps": []}));

    let docs: CreateAppRequest = round_trip(&json!({"app_name": "my-app", "org_slug": "personal"}));
    assert_eq!(docs.effective_name(), Some("my-app"));
    let flygo: CreateAppRequest = round_trip(&json!({
        "name": "my-app", "org_slug": "personal", "network": "", "app_role_id": ""
    }));
    assert_eq!(flygo.effective_name(), Some("my-app"));
    assert_eq!(flygo.effective_network(), None);
    let both: CreateAppRequest =
        round_trip(&json!({"app_name": "", "name": "fallback", "org_slug": "o"}));
    assert_eq!(both.effective_name(), Some("fallback"));
}

#[test]
fn volume_bodies_round_trip() {
    let vol = json!({
        "id": "vol_1234567890abcdef",
        "name": "data",
        "state": "created",
        "size_gb": 1,
        "region": "ord",
        "zone": "e1a2",
        "encrypted": true,
        "attached_machine_id": "3d8d413b29d089",
        "attached_alloc_id": "3d8d413b29d089",
        "created_at": "2024-03-01T09:59:00.000Z",
        "blocks": 252918,
        "block_size": 4096,
        "blocks_free": 252900,
        "blocks_avail": 239974,
        "fstype": "ext4",
        "snapshot_retention": 5,
        "auto_backup_enabled": true,
        "host_status": "ok"
    });
    let v: Volume = round_trip(&vol);
    assert_eq!(v.size_gb, 1);

    round_trip::<CreateVolumeRequest>(&json!({
        "name": "data", "region": "ord", "size_gb": 1, "encrypted": true,
        "require_unique_zone": true, "snapshot_retention": 5,
        "compute": {"cpu_kind": "shared", "cpus": 1, "memory_mb": 256}
    }));
    round_trip::<UpdateVolumeRequest>(
        &json!({"snapshot_retention": 7, "auto_backup_enabled": false}),
    );
    round_trip::<ExtendVolumeRequest>(&json!({"size_gb": 10}));
    round_trip::<ExtendVolumeResponse>(&json!({"volume": vol, "needs_restart": true}));
    round_trip::<Vec<VolumeSnapshot>>(&json!([
        {"id": "vs_1", "size": 123456, "volume_size": 1073741824, "digest": "sha256:ab",
         "created_at": "2024-03-02T00:00:00Z", "status": "created", "retention_days": 5}
    ]));
}

#[test]
fn secrets_and_platform_bodies_round_trip() {
    round_trip::<SecretsListResponse>(&json!({
        "secrets": [
            {"name": "DATABASE_URL", "digest": "c0ffee", "created_at": "2024-03-01T00:00:00Z", "updated_at": "2024-03-02T00:00:00Z"},
            {"name": "API_KEY", "digest": "beef", "value": "s3cr3t", "created_at": "2024-03-01T00:00:00Z", "updated_at": "2024-03-01T00:00:00Z"}
        ]
    }));
    let set: SetSecretsRequest = round_trip(&json!({"values": {"A": "1", "B": null}}));
    assert_eq!(set.values["B"], None);
    assert_eq!(set.values["A"].as_deref(), Some("1"));
    round_trip::<SetSecretsResponse>(&json!({
        "secrets": [{"name": "A", "digest": "d1", "created_at": "t", "updated_at": "t"}],
        "version": 9
    }));
    round_trip::<SetSecretRequest>(&json!({"value": "v"}));
    let one: SetSecretResponse = round_trip(&json!({
        "name": "A", "digest": "d1", "created_at": "t", "updated_at": "t", "version": 10
    }));
    assert_eq!(one.secret.name, "A");
    round_trip::<DeleteSecretResponse>(&json!({"version": 11}));

    let ips: ListIpAssignmentsResponse = round_trip(&json!({"ips": [
        {"ip": "2a09:8280:1::1", "region": "global", "service_name": "", "shared": false, "created_at": "2024-03-01T00:00:00Z"},
        {"ip": "fdaa:0:1::2", "region": "global", "service_name": "", "shared": false, "created_at": "2024-03-01T00:00:00Z",
         "network": {"name": "", "org_slug": "personal"}}
    ]}));
    assert!(ips.ips[1].is_flycast());
    round_trip::<AllocateIpRequest>(
        &json!({"type": "shared_v4", "region": "", "org_slug": "personal"}),
    );
    let regions: RegionsResponse = round_trip(&json!({
        "Regions": [{"code": "ams", "name": "Amsterdam, Netherlands", "latitude": 52.374342, "longitude": 4.895439,
                     "gateway_available": true, "requires_paid_plan": false}],
        "Nearest": "ams"
    }));
    assert_eq!(regions.regions[0].code, "ams");
    // Go decodes case-insensitively; we accept the capitalised spelling too.
    let caps: Region =
        serde_json::from_value(json!({"Code": "ord", "Name": "Chicago"})).expect("caps");
    assert_eq!(caps.code, "ord");
}

#[test]
fn small_machine_bodies_round_trip() {
    round_trip::<StopRequest>(&json!({"signal": "SIGTERM", "timeout": "30s"}));
    let stop: StopRequest =
        serde_json::from_value(json!({"timeout": 30_000_000_000_i64})).expect("ns");
    assert_eq!(stop.timeout, Some(Duration::from_secs(30)));
    round_trip::<SignalRequest>(&json!({"signal": "SIGHUP"}));
    round_trip::<ExecRequest>(&json!({"command": ["ls", "-la"], "timeout": 10}));
    round_trip::<ExecRequest>(&json!({"cmd": "ls -la", "container": "app", "stdin": "x"}));
    round_trip::<ExecResponse>(&json!({"exit_code": 0, "stdout": "ok\n", "stderr": ""}));
    let start: StartResponse =
        round_trip(&json!({"previous_state": "stopped", "migrated": false, "new_host": ""}));
    assert_eq!(start.previous_state, Some(MachineState::Stopped));
    round_trip::<WaitResponse>(&json!({"ok": true}));
    round_trip::<MetadataValue>(&json!({"value": "blue"}));
    round_trip::<OkResponse>(&json!({"ok": true}));
    assert_eq!(
        serde_json::to_value(OkResponse::OK).ok(),
        Some(json!({"ok": true}))
    );
    round_trip::<Vec<MachineVersion>>(&json!([
        {"version": "01HQ", "user_config": {"image": "x", "env": {"A": "1"}}}
    ]));
    round_trip::<Vec<ProcessStat>>(&json!([
        {"pid": 1, "stime": 3, "rtime": 4, "command": "/init", "directory": "/", "cpu": 0, "rss": 1024,
         "listen_sockets": [{"proto": "tcp", "address": "[::]:8080"}]}
    ]));
    round_trip::<std::collections::BTreeMap<String, String>>(&json!({"fly_process_group": "app"}));
}

#[test]
fn error_bodies_round_trip() {
    let e: ErrorBody = round_trip(
        &json!({"error": "could not reserve resource for machine: insufficient memory available to fulfill request", "status": "insufficient_capacity"}),
    );
    assert_eq!(
        e.status.as_deref(),
        Some(ErrorBody::STATUS_INSUFFICIENT_CAPACITY)
    );
    assert_eq!(e.to_string(), e.error);
    round_trip::<ErrorBody>(
        &json!({"error": "Validation failed: Name has already been taken", "status": "name_taken"}),
    );
    round_trip::<ErrorBody>(&json!({"error": "machine not found"}));
    round_trip::<ErrorBody>(&json!({"error": "bad", "details": {"field": "config.image"}}));
    assert_eq!(
        serde_json::to_value(ErrorBody::new("nope")).ok(),
        Some(json!({"error": "nope"}))
    );
}
