//! Our serialisation checked against the 2024 swagger (`machines-openapi.json`).
//!
//! Every deviation must be listed in [`ALLOWED`] with its reason (and in
//! `docs/compat.md`). Unused allowances fail the test too, so the list stays honest.

use std::collections::BTreeSet;

use hangar_api_types::*;
use serde::Serialize;
use serde_json::{Value, json};

use crate::fixtures;
use crate::swagger::{Coverage, Kind, Mismatch, Spec};

/// A known, deliberate deviation from the 2024 swagger: (`Definition.property`, kind, reason).
struct Allowed {
    at: &'static str,
    kind: Kind,
    reason: &'static str,
}

const DURATION: &str = "swag renders fly.Duration as an object wrapping time.Duration; the wire \
     form (fly-go MarshalJSON) is a Go duration string such as \"15s\"";
const NEWER: &str = "field added to the API after the March 2024 swagger (current fly-go / docs)";

const fn allow(at: &'static str, kind: Kind, reason: &'static str) -> Allowed {
    Allowed { at, kind, reason }
}

const ALLOWED: &[Allowed] = &[
    // Durations are strings on the wire.
    allow("fly.MachineCheck.interval", Kind::Type, DURATION),
    allow("fly.MachineCheck.timeout", Kind::Type, DURATION),
    allow("fly.MachineCheck.grace_period", Kind::Type, DURATION),
    allow("fly.StopConfig.timeout", Kind::Type, DURATION),
    allow("StopRequest.timeout", Kind::Type, DURATION),
    // autostop became bool-or-string when suspend was added.
    allow(
        "fly.MachineService.autostop",
        Kind::Type,
        "the 2024 swagger types autostop as boolean; \"suspend\" is a valid value today \
         (fly-go writes false/true/\"suspend\")",
    ),
    // Error status codes grew.
    allow(
        "ErrorResponse.status",
        Kind::Enum,
        "main.statusCode lists only unknown and insufficient_capacity; the API also \
         returns name_taken (HTTP 422) on app creation",
    ),
    // Newer fields.
    allow("fly.MachineConfig.containers", Kind::UnknownProperty, NEWER),
    allow("fly.MachineConfig.volumes", Kind::UnknownProperty, NEWER),
    allow("fly.MachineConfig.rootfs", Kind::UnknownProperty, NEWER),
    allow(
        "fly.MachineConfig.cache_drive",
        Kind::UnknownProperty,
        NEWER,
    ),
    allow(
        "fly.MachineGuest.max_memory_mb",
        Kind::UnknownProperty,
        NEWER,
    ),
    allow(
        "fly.MachineGuest.persist_rootfs",
        Kind::UnknownProperty,
        NEWER,
    ),
    allow("fly.MachineMetrics.https", Kind::UnknownProperty, NEWER),
    allow("fly.MachineProcess.env_from", Kind::UnknownProperty, NEWER),
    allow("fly.File.image_config", Kind::UnknownProperty, NEWER),
    allow("fly.File.mode", Kind::UnknownProperty, NEWER),
    allow(
        "fly.DNSConfig.dns_forward_rules",
        Kind::UnknownProperty,
        NEWER,
    ),
    allow("fly.DNSConfig.hostname", Kind::UnknownProperty, NEWER),
    allow("fly.DNSConfig.hostname_fqdn", Kind::UnknownProperty, NEWER),
    allow("fly.HTTPOptions.idle_timeout", Kind::UnknownProperty, NEWER),
    allow(
        "fly.HTTPOptions.headers_read_timeout",
        Kind::UnknownProperty,
        NEWER,
    ),
    allow("fly.HTTPOptions.replay_cache", Kind::UnknownProperty, NEWER),
    allow(
        "fly.HTTPResponseOptions.pristine",
        Kind::UnknownProperty,
        NEWER,
    ),
    allow("fly.Static.index_document", Kind::UnknownProperty, NEWER),
    allow("fly.MachineCheck.kind", Kind::UnknownProperty, NEWER),
    allow("Machine.version", Kind::UnknownProperty, NEWER),
    allow("Machine.incomplete_config", Kind::UnknownProperty, NEWER),
    allow("Machine.host_status", Kind::UnknownProperty, NEWER),
    allow("Machine.cordoned", Kind::UnknownProperty, NEWER),
    allow("Machine.containers", Kind::UnknownProperty, NEWER),
    allow(
        "CreateMachineRequest.skip_secrets",
        Kind::UnknownProperty,
        NEWER,
    ),
    allow(
        "CreateMachineRequest.min_secrets_version",
        Kind::UnknownProperty,
        NEWER,
    ),
    allow(
        "UpdateMachineRequest.skip_secrets",
        Kind::UnknownProperty,
        NEWER,
    ),
    allow(
        "UpdateMachineRequest.min_secrets_version",
        Kind::UnknownProperty,
        NEWER,
    ),
    allow("MachineExecRequest.container", Kind::UnknownProperty, NEWER),
    allow("MachineExecRequest.stdin", Kind::UnknownProperty, NEWER),
    allow("Volume.host_dedication_id", Kind::UnknownProperty, NEWER),
    allow("Volume.host_status", Kind::UnknownProperty, NEWER),
    allow(
        "CreateVolumeRequest.unique_zone_app_wide",
        Kind::UnknownProperty,
        NEWER,
    ),
    allow(
        "CreateVolumeRequest.auto_backup_enabled",
        Kind::UnknownProperty,
        NEWER,
    ),
    allow(
        "CreateVolumeRequest.compute_image",
        Kind::UnknownProperty,
        NEWER,
    ),
    allow("VolumeSnapshot.volume_size", Kind::UnknownProperty, NEWER),
    allow(
        "VolumeSnapshot.retention_days",
        Kind::UnknownProperty,
        NEWER,
    ),
    allow("App.network", Kind::UnknownProperty, NEWER),
    allow("App.internal_numeric_id", Kind::UnknownProperty, NEWER),
    allow("App.machine_count", Kind::UnknownProperty, NEWER),
    allow("App.volume_count", Kind::UnknownProperty, NEWER),
    allow("App.cname_target", Kind::UnknownProperty, NEWER),
    allow("App.app_role", Kind::UnknownProperty, NEWER),
    allow(
        "Organization.internal_numeric_id",
        Kind::UnknownProperty,
        NEWER,
    ),
    allow("ListApp.volume_count", Kind::UnknownProperty, NEWER),
    allow(
        "CreateAppRequest.name",
        Kind::UnknownProperty,
        "fly-go sends `name` instead of the documented `app_name`",
    ),
    allow("CreateAppRequest.app_role_id", Kind::UnknownProperty, NEWER),
];

/// Swagger properties our fully populated values deliberately do not write, as
/// `Definition.property`, with reasons. Empty: we write every 2024 property.
const OMITTED: &[(&str, &str)] = &[];

/// Definitions the coverage walk may not reach, with reasons.
const UNVISITED: &[(&str, &str)] = &[
    (
        "fly.Duration",
        "swag artefact; durations are strings on the wire, there is no object to walk",
    ),
    (
        "main.statusCode",
        "a string enum, not an object (checked by validation of ErrorResponse.status)",
    ),
];

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("wire types always serialise")
}

/// (swagger definition, our serialised value) pairs.
fn cases() -> Vec<(&'static str, Value)> {
    let machine = fixtures::machine();
    vec![
        ("Machine", to_value(&machine)),
        (
            "fly.MachineConfig",
            to_value(&fixtures::config(Autostop::Off)),
        ),
        (
            "CreateMachineRequest",
            to_value(&fixtures::create_request(None)),
        ),
        (
            "UpdateMachineRequest",
            to_value(&fixtures::create_request(Some("01HQZ5K6T3".to_owned()))),
        ),
        ("MachineEvent", to_value(&machine.events[0])),
        ("CheckStatus", to_value(&machine.checks[0])),
        ("ImageRef", to_value(&machine.image_ref)),
        (
            "MachineVersion",
            to_value(&MachineVersion {
                version: "01HQZ5K6T3".to_owned(),
                user_config: Some(fixtures::config(Autostop::Stop)),
            }),
        ),
        (
            "StopRequest",
            to_value(&StopRequest {
                signal: Some("SIGTERM".to_owned()),
                timeout: Some(Duration::from_secs(30)),
            }),
        ),
        (
            "SignalRequest",
            to_value(&SignalRequest {
                signal: "SIGHUP".to_owned(),
            }),
        ),
        ("MachineExecRequest", to_value(&fixtures::exec_request())),
        ("ProcessStat", to_value(&fixtures::process_stat())),
        ("Lease", to_value(&fixtures::lease_data())),
        (
            "CreateLeaseRequest",
            to_value(&LeaseRequest {
                ttl: Some(30),
                description: Some("deploy".to_owned()),
            }),
        ),
        ("Volume", to_value(&fixtures::volume())),
        (
            "CreateVolumeRequest",
            to_value(&fixtures::create_volume_request()),
        ),
        (
            "UpdateVolumeRequest",
            to_value(&UpdateVolumeRequest {
                snapshot_retention: Some(10),
                auto_backup_enabled: Some(false),
            }),
        ),
        (
            "ExtendVolumeRequest",
            to_value(&ExtendVolumeRequest { size_gb: 10 }),
        ),
        (
            "ExtendVolumeResponse",
            to_value(&ExtendVolumeResponse {
                volume: fixtures::volume(),
                needs_restart: true,
            }),
        ),
        ("VolumeSnapshot", to_value(&fixtures::snapshot())),
        ("App", to_value(&fixtures::app())),
        ("ListAppsResponse", to_value(&fixtures::list_apps())),
        (
            "CreateAppRequest",
            to_value(&fixtures::create_app_request()),
        ),
        (
            "ErrorResponse",
            to_value(
                &ErrorBody::with_status(
                    "no capacity in ord",
                    ErrorBody::STATUS_INSUFFICIENT_CAPACITY,
                )
                .details(json!({"region": "ord"})),
            ),
        ),
        (
            "ErrorResponse",
            to_value(&ErrorBody::with_status(
                "app name already taken",
                ErrorBody::STATUS_NAME_TAKEN,
            )),
        ),
    ]
}

#[test]
fn swagger_file_is_present() {
    let path = crate::swagger::spec_path();
    assert!(
        path.is_file(),
        "Machines API swagger missing at {}: the schema tests need it and must not be skipped",
        path.display()
    );
}

#[test]
fn our_types_validate_against_swagger_definitions() {
    let spec = Spec::load();
    let mut unexpected: Vec<String> = Vec::new();
    let mut used: BTreeSet<(&str, Kind)> = BTreeSet::new();

    for (def, value) in cases() {
        for m in spec.validate(def, &value) {
            match ALLOWED.iter().find(|a| a.at == m.at && a.kind == m.kind) {
                Some(a) => {
                    used.insert((a.at, a.kind));
                }
                None => unexpected.push(format!("{def}: {m}")),
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "mismatches against the swagger that are not in ALLOWED:\n  {}",
        unexpected.join("\n  ")
    );

    let stale: Vec<String> = ALLOWED
        .iter()
        .filter(|a| !used.contains(&(a.at, a.kind)))
        .map(|a| format!("{} {:?} ({})", a.at, a.kind, a.reason))
        .collect();
    assert!(
        stale.is_empty(),
        "ALLOWED entries no longer needed (remove them here and in docs/compat.md):\n  {}",
        stale.join("\n  ")
    );
}

#[test]
fn every_swagger_property_is_written_by_a_fully_populated_value() {
    let spec = Spec::load();
    let mut cov = Coverage::default();
    for (def, value) in cases() {
        spec.property_coverage(def, &value, &mut cov);
    }
    let missing: Vec<String> = cov
        .never_written()
        .into_iter()
        .filter(|prop| !OMITTED.iter().any(|(p, _)| p == prop))
        .collect();
    assert!(
        missing.is_empty(),
        "swagger properties missing from our serialisation (add the field or list it in OMITTED):\n  {}",
        missing.join("\n  ")
    );
    assert!(
        cov.present.len() > 150,
        "walked only {} properties",
        cov.present.len()
    );

    let unvisited: Vec<String> = spec
        .definition_names()
        .into_iter()
        .filter(|d| !cov.visited.contains(d) && !UNVISITED.iter().any(|(u, _)| u == d))
        .collect();
    assert!(
        unvisited.is_empty(),
        "swagger definitions not covered by any case: {unvisited:?}"
    );
}

#[test]
fn validator_reports_json_pointer_paths() {
    let spec = Spec::from_value(json!({
        "swagger": "2.0",
        "definitions": {
            "Outer": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "inner": {"allOf": [{"$ref": "#/definitions/Inner"}]},
                    "list": {"type": "array", "items": {"$ref": "#/definitions/Inner"}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "closed": {"type": "object", "properties": {"a": {"type": "integer"}},
                               "additionalProperties": false}
                }
            },
            "Inner": {
                "type": "object",
                "properties": {
                    "n": {"type": "integer"},
                    "mode": {"type": "string", "enum": ["a", "b"]}
                }
            }
        }
    }));
    let value = json!({
        "inner": {"n": "x", "mode": "c", "extra": 1},
        "list": [{"n": 1}, {"n": 1.5}],
        "labels": {"k": 1},
        "closed": {"a": 1, "b": 2}
    });
    let got: Vec<(String, String, Kind)> = spec
        .validate("Outer", &value)
        .into_iter()
        .map(|m: Mismatch| (m.path, m.at, m.kind))
        .collect();
    let want = vec![
        ("/inner/n".into(), "Inner.n".into(), Kind::Type),
        ("/inner/mode".into(), "Inner.mode".into(), Kind::Enum),
        (
            "/inner/extra".into(),
            "Inner.extra".into(),
            Kind::UnknownProperty,
        ),
        ("/list/1/n".into(), "Inner.n".into(), Kind::Type),
        ("/labels/k".into(), "Outer.labels{}".into(), Kind::Type),
        (
            "/closed/b".into(),
            "Outer.b".into(),
            Kind::AdditionalProperty,
        ),
        ("/name".into(), "Outer.name".into(), Kind::MissingRequired),
    ];
    let mut got_sorted = got.clone();
    got_sorted.sort();
    let mut want_sorted: Vec<(String, String, Kind)> = want;
    want_sorted.sort();
    assert_eq!(got_sorted, want_sorted, "full report: {got:#?}");

    // Paths escape JSON-pointer specials.
    let odd = json!({"name": "x", "labels": {"a/b~c": 1}});
    let report = spec.validate("Outer", &odd);
    assert_eq!(report.len(), 1);
    assert_eq!(report[0].path, "/labels/a~1b~0c");
}
