//! Malformed JSON and wrong types give serde errors, never panics.

use hangar_api_types::*;
use serde::de::DeserializeOwned;
use serde_json::json;

fn rejects<T: DeserializeOwned + std::fmt::Debug>(text: &str) -> String {
    match serde_json::from_str::<T>(text) {
        Ok(v) => panic!(
            "{text} should not parse as {}: {v:?}",
            std::any::type_name::<T>()
        ),
        Err(e) => e.to_string(),
    }
}

#[test]
fn malformed_json_is_an_error() {
    for text in [
        "",
        "{",
        "{\"image\":",
        "[1,2",
        "nul",
        "{\"image\": \"x\",}",
        "\u{0}",
        "{'a': 1}",
    ] {
        rejects::<MachineConfig>(text);
        rejects::<Machine>(text);
        rejects::<CreateMachineRequest>(text);
    }
}

#[test]
fn wrong_types_are_errors_with_paths() {
    let e = rejects::<MachineConfig>(r#"{"image": 5}"#);
    assert!(e.contains("invalid type"), "{e}");
    let e = rejects::<MachineConfig>(r#"{"image": "x", "guest": {"cpus": "one"}}"#);
    assert!(e.contains("invalid type"), "{e}");
    let e = rejects::<MachineConfig>(r#"{"image": "x", "services": {"protocol": "tcp"}}"#);
    assert!(e.contains("invalid type"), "{e}");
    let e = rejects::<MachineConfig>(r#"{"image": "x", "env": {"A": 1}}"#);
    assert!(e.contains("invalid type"), "{e}");
    let e = rejects::<MachineConfig>(
        r#"{"image": "x", "services": [{"protocol": "tcp", "internal_port": 80, "autostop": "later"}]}"#,
    );
    assert!(e.contains("autostop"), "{e}");
    let e = rejects::<MachineConfig>(r#"{"image": "x", "stop_config": {"timeout": "5 minutes"}}"#);
    assert!(e.contains("time: "), "{e}");
    let e = rejects::<MachineConfig>(r#"{"image": "x", "checks": {"a": {"interval": true}}}"#);
    assert!(e.contains("Go duration"), "{e}");
    let e = rejects::<MachineConfig>(r#"{"image": "x", "restart": {"policy": 3}}"#);
    assert!(e.contains("invalid type"), "{e}");
    let e = rejects::<MachineConfig>(r#"{"image": "x", "files": [{"mode": -1}]}"#);
    assert!(e.contains("invalid value"), "{e}");
    let e = rejects::<Machine>(r#"{"events": [{"timestamp": "yesterday"}]}"#);
    assert!(e.contains("invalid type"), "{e}");
    let e = rejects::<Machine>(r#"{"state": null}"#);
    assert!(e.contains("invalid type"), "{e}");
    let e = rejects::<LeaseData>(r#"{"expires_at": 1.5}"#);
    assert!(e.contains("invalid type"), "{e}");
    let e = rejects::<SetSecretsRequest>(r#"{"values": {"A": 1}}"#);
    assert!(e.contains("invalid type"), "{e}");
    let e = rejects::<ExtendVolumeRequest>(r#"{"size_gb": "10"}"#);
    assert!(e.contains("invalid type"), "{e}");
    let e = rejects::<HttpOptions>(r#"{"idle_timeout": -1}"#);
    assert!(e.contains("invalid value"), "{e}");
    let e = rejects::<Vec<Machine>>(r#"{"id": "x"}"#);
    assert!(e.contains("invalid type"), "{e}");
}

#[test]
fn truncated_documents_never_panic() {
    let full = serde_json::to_string(&crate::fixtures::machine()).expect("serialise");
    let bytes = full.as_bytes();
    for cut in 0..bytes.len() {
        if let Ok(prefix) = std::str::from_utf8(&bytes[..cut]) {
            // Every strict prefix of a JSON object is invalid JSON.
            assert!(
                serde_json::from_str::<Machine>(prefix).is_err(),
                "prefix {cut} parsed"
            );
        }
    }
    assert!(serde_json::from_str::<Machine>(&full).is_ok());
}

#[test]
fn mutated_values_never_panic() {
    // Replace every leaf of a fully populated Machine with values of other types.
    let base = serde_json::to_value(crate::fixtures::machine()).expect("serialise");
    let replacements = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1.5),
        json!(u64::MAX),
        json!("zzz"),
        json!([]),
        json!({}),
    ];
    let mut pointers = Vec::new();
    collect_pointers(&base, String::new(), &mut pointers);
    assert!(pointers.len() > 100, "walked {} leaves", pointers.len());
    for pointer in &pointers {
        for r in &replacements {
            let mut v = base.clone();
            if let Some(slot) = v.pointer_mut(pointer) {
                *slot = r.clone();
            }
            // Ok or Err are both fine; the point is no panic.
            let _ = serde_json::from_value::<Machine>(v);
        }
    }
}

fn collect_pointers(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                let key = k.replace('~', "~0").replace('/', "~1");
                collect_pointers(child, format!("{at}/{key}"), out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                collect_pointers(child, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}
