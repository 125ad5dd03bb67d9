//! Legacy and alias shapes rewritten into the current shape (PLATFORM.md §1.1), on the
//! position-carrying tree so findings still point at what the user wrote.
//!
//! Every patch is liberal: it accepts what the reference accepts (and a little more where
//! that is harmless, e.g. a single `[[files]]` written as `[files]`), and reports what it
//! cannot make sense of as an error finding while dropping only the offending value.

use crate::source::{Entry, Node, Pos, Value};

/// A value a patch could not interpret.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PatchError {
    pub pos: Pos,
    pub path: String,
    pub message: String,
    pub hint: Option<String>,
}

type Errors = Vec<PatchError>;

fn err(errors: &mut Errors, node: &Node, path: &str, message: String, hint: Option<&str>) {
    errors.push(PatchError {
        pos: node.pos,
        path: path.to_string(),
        message,
        hint: hint.map(str::to_string),
    });
}

/// Applies every patch to the root table. Non-table roots are left to typed decoding.
pub(crate) fn apply(root: &mut Node) -> Errors {
    let mut errors = Vec::new();
    if root.entries().is_none() {
        return errors;
    }
    patch_env(root, &mut errors);
    patch_processes(root, &mut errors);
    // `[compute]`, `[[computes]]` and a single `[vm]` table all become the `[[vm]]` array.
    patch_arrays(root, &["compute", "computes", "vm"], "vm", &mut errors);
    patch_arrays(root, &["mount", "mounts"], "mounts", &mut errors);
    patch_arrays(root, &["metric", "metrics"], "metrics", &mut errors);
    for key in ["files", "restart", "statics", "machine_checks"] {
        patch_arrays(root, &[key], key, &mut errors);
    }
    patch_experimental(root, &mut errors);
    patch_top_level_checks(root, &mut errors);
    patch_services(root, &mut errors);
    patch_http_service(root, &mut errors);
    patch_mounts(root, &mut errors);
    patch_build(root);
    if let Some(node) = root.get_mut("kill_timeout") {
        int_to_duration(node, "s");
    }
    for (i, vm) in array_items_mut(root, "vm").enumerate() {
        stringify_number(vm, "memory", &mut errors, &format!("vm[{i}].memory"));
    }
    if let Some(vm) = root
        .get_mut("deploy")
        .and_then(|d| d.get_mut("release_command_vm"))
    {
        stringify_number(
            vm,
            "memory",
            &mut errors,
            "deploy.release_command_vm.memory",
        );
    }
    errors
}

fn array_items_mut<'a>(root: &'a mut Node, key: &str) -> impl Iterator<Item = &'a mut Node> {
    root.get_mut(key)
        .and_then(|n| match &mut n.value {
            Value::Array(items) => Some(items.iter_mut()),
            _ => None,
        })
        .into_iter()
        .flatten()
}

/// Go's `%v` rendering of a scalar, which is how the reference stringifies env values.
fn go_string(node: &Node) -> String {
    match &node.value {
        Value::Null => "<nil>".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => go_float(*f),
        Value::Str(s) => s.clone(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().map(go_string).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::Table(entries) => {
            let mut parts: Vec<String> = entries
                .iter()
                .map(|e| format!("{}:{}", e.key, go_string(&e.node)))
                .collect();
            parts.sort();
            format!("map[{}]", parts.join(" "))
        }
    }
}

fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        let s = format!("{f:e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{:0>2}", e),
            Some((m, e)) => format!("{m}e-{:0>2}", &e[1..]),
            None => s,
        }
    } else {
        format!("{f}")
    }
}

fn patch_env(root: &mut Node, errors: &mut Errors) {
    let Some(env) = root.get_mut("env") else {
        return;
    };
    let mut out: Vec<Entry> = Vec::new();
    fn collect(node: &Node, out: &mut Vec<Entry>, errors: &mut Errors) {
        match &node.value {
            Value::Table(entries) => {
                for e in entries {
                    let value = Node::at(e.node.pos, Value::Str(go_string(&e.node)));
                    out.push(Entry {
                        key: e.key.clone(),
                        key_pos: e.key_pos,
                        node: value,
                    });
                }
            }
            Value::Array(items) => {
                for item in items {
                    collect(item, out, errors);
                }
            }
            other => err(
                errors,
                node,
                "env",
                format!(
                    "[env] must be a table of NAME = \"value\", not {}",
                    other.kind()
                ),
                Some("write [env] followed by lines like LOG_LEVEL = \"info\""),
            ),
        }
    }
    collect(env, &mut out, errors);
    // A name written again (in a later [[env]] table) wins, at its later place. Linear, so a
    // large hostile [env] stays cheap.
    let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, e) in out.iter().enumerate() {
        last.insert(e.key.as_str(), i);
    }
    let keep: Vec<bool> = out
        .iter()
        .enumerate()
        .map(|(i, e)| last.get(e.key.as_str()) == Some(&i))
        .collect();
    drop(last);
    let mut keep = keep.into_iter();
    out.retain(|_| keep.next().unwrap_or(true));
    env.value = Value::Table(out);
}

fn patch_processes(root: &mut Node, errors: &mut Errors) {
    let Some(node) = root.get_mut("processes") else {
        return;
    };
    match &node.value {
        Value::Table(_) => {}
        Value::Array(items) => {
            // `processes = []` (old GraphQL output) means none; `[[processes]]` with
            // name/command items is the old list shape.
            let mut map = Vec::new();
            for item in items {
                let name = item.get("name").and_then(Node::as_str);
                let command = item.get("command");
                match (name, command) {
                    (Some(name), Some(cmd)) => map.push(Entry {
                        key: name.to_string(),
                        key_pos: item.pos,
                        node: cmd.clone(),
                    }),
                    _ => err(
                        errors,
                        item,
                        "processes",
                        "a [[processes]] item needs a string `name` and a `command`".into(),
                        Some("use the map form: [processes] web = \"bin/server\""),
                    ),
                }
            }
            if map.is_empty() {
                root.remove("processes");
            } else {
                node.value = Value::Table(map);
            }
        }
        other => {
            let kind = other.kind();
            err(
                errors,
                node,
                "processes",
                format!("[processes] must be a table of group = \"command\", not {kind}"),
                None,
            );
            root.remove("processes");
        }
    }
}

/// Merges the listed keys (single table or array of tables) into one array under `target`.
fn patch_arrays(root: &mut Node, keys: &[&str], target: &str, errors: &mut Errors) {
    let mut items = Vec::new();
    let mut first_pos = None;
    for key in keys {
        if let Some(entry) = root.remove(key) {
            first_pos.get_or_insert(entry.key_pos);
            match entry.node.value {
                Value::Table(_) => items.push(entry.node),
                Value::Array(list) => items.extend(list),
                ref other => err(
                    errors,
                    &entry.node,
                    key,
                    format!(
                        "[{key}] must be a table or an array of tables, not {}",
                        other.kind()
                    ),
                    Some(&format!("write [[{target}]] followed by its keys")),
                ),
            }
        }
    }
    if let Some(pos) = first_pos {
        let array_pos = items.first().map_or(pos, |n| n.pos);
        root.set(target, pos, Node::at(array_pos, Value::Array(items)));
    }
}

fn stringify_number(table: &mut Node, key: &str, errors: &mut Errors, path: &str) {
    if let Some(node) = table.get_mut(key) {
        match node.value {
            Value::Int(i) => node.value = Value::Str(i.to_string()),
            Value::Float(f) => node.value = Value::Str(go_float(f)),
            Value::Str(_) | Value::Null => {}
            ref other => {
                let kind = other.kind();
                err(
                    errors,
                    node,
                    path,
                    format!("`{key}` must be a number or a string with a unit, not {kind}"),
                    None,
                );
                table.remove(key);
            }
        }
    }
}

fn patch_mounts(root: &mut Node, errors: &mut Errors) {
    for (i, mount) in array_items_mut(root, "mounts").enumerate() {
        for key in [
            "initial_size",
            "auto_extend_size_increment",
            "auto_extend_size_limit",
        ] {
            stringify_number(mount, key, errors, &format!("mounts[{i}].{key}"));
        }
    }
}

fn patch_experimental(root: &mut Node, errors: &mut Errors) {
    let Some(exp) = root.get_mut("experimental") else {
        return;
    };
    if exp.entries().is_none() {
        let kind = exp.value.kind();
        err(
            errors,
            exp,
            "experimental",
            format!("[experimental] must be a table, not {kind}"),
            None,
        );
        root.remove("experimental");
        return;
    }
    for key in ["cmd", "entrypoint", "exec"] {
        if let Some(node) = exp.get_mut(key)
            && let Value::Str(s) = &node.value
        {
            let item = Node::at(node.pos, Value::Str(s.clone()));
            node.value = Value::Array(vec![item]);
        }
    }
    let metrics_port = exp.remove("metrics_port");
    let metrics_path = exp.remove("metrics_path");
    let kill_timeout = exp.remove("kill_timeout");
    let empty = exp.entries().is_some_and(<[Entry]>::is_empty);
    if empty {
        root.remove("experimental");
    }
    if (metrics_port.is_some() || metrics_path.is_some()) && root.get("metrics").is_none() {
        let pos = metrics_port
            .as_ref()
            .or(metrics_path.as_ref())
            .map_or(Pos::default(), |e| e.key_pos);
        let mut table = Node::at(pos, Value::Table(Vec::new()));
        if let Some(e) = metrics_port {
            table.set("port", e.key_pos, e.node);
        }
        if let Some(e) = metrics_path {
            table.set("path", e.key_pos, e.node);
        }
        root.set("metrics", pos, Node::at(pos, Value::Array(vec![table])));
    }
    if let Some(e) = kill_timeout
        && root.get("kill_timeout").is_none()
    {
        root.set("kill_timeout", e.key_pos, e.node);
    }
}

/// Integers in a duration field mean `unit` (`s` for kill_timeout, `ms` for check timings).
fn int_to_duration(node: &mut Node, unit: &str) {
    if let Value::Int(i) = node.value {
        node.value = Value::Str(format!("{i}{unit}"));
    }
}

fn patch_check(check: &mut Node) {
    for key in ["interval", "timeout", "grace_period"] {
        if let Some(node) = check.get_mut(key) {
            int_to_duration(node, "ms");
        }
    }
    let mut drop_headers = false;
    if let Some(headers) = check.get_mut("headers")
        && let Value::Array(items) = &headers.value
    {
        if items.is_empty() {
            drop_headers = true;
        } else if items.iter().all(|i| i.get("name").is_some()) {
            // [{name = "X", value = "y"}] → {X = "y"}
            let entries = items
                .iter()
                .filter_map(|i| {
                    let name = i.get("name")?.as_str()?.to_string();
                    let value = i
                        .get("value")
                        .cloned()
                        .unwrap_or_else(|| Node::at(i.pos, Value::Str(String::new())));
                    Some(Entry {
                        key: name,
                        key_pos: i.pos,
                        node: value,
                    })
                })
                .collect();
            headers.value = Value::Table(entries);
        }
    }
    if drop_headers {
        check.remove("headers");
    }
}

fn patch_top_level_checks(root: &mut Node, errors: &mut Errors) {
    let Some(checks) = root.get_mut("checks") else {
        return;
    };
    if let Value::Array(items) = &checks.value {
        // [[checks]] with `name` → [checks.<name>]
        let mut map = Vec::new();
        for item in items {
            match item.get("name").and_then(Node::as_str) {
                Some(name) => {
                    let mut check = item.clone();
                    check.remove("name");
                    let key_pos = item.entry("name").map_or(item.pos, |e| e.key_pos);
                    map.push(Entry {
                        key: name.to_string(),
                        key_pos,
                        node: check,
                    });
                }
                None => err(
                    errors,
                    item,
                    "checks",
                    "a [[checks]] item needs a string `name`".into(),
                    Some("use the map form: [checks.alive] type = \"tcp\" port = 8080"),
                ),
            }
        }
        checks.value = Value::Table(map);
    }
    match &mut checks.value {
        Value::Table(entries) => {
            for e in entries.iter_mut() {
                patch_check(&mut e.node);
            }
            if entries.is_empty() {
                root.remove("checks");
            }
        }
        other => {
            let kind = other.kind();
            err(
                errors,
                checks,
                "checks",
                format!("[checks] must be a table of named checks, not {kind}"),
                None,
            );
            root.remove("checks");
        }
    }
}

/// `"20,25"` → `{type = "requests", soft_limit = 20, hard_limit = 25}`.
fn patch_concurrency(service: &mut Node, path: &str, errors: &mut Errors) {
    let Some(node) = service.get_mut("concurrency") else {
        return;
    };
    let Value::Str(s) = &node.value else {
        return;
    };
    let parsed = s
        .split_once(',')
        .and_then(|(a, b)| Some((a.trim().parse::<i64>().ok()?, b.trim().parse::<i64>().ok()?)));
    match parsed {
        Some((soft, hard)) => {
            let pos = node.pos;
            node.value = Value::Table(vec![
                entry("type", pos, Value::Str("requests".into())),
                entry("hard_limit", pos, Value::Int(hard)),
                entry("soft_limit", pos, Value::Int(soft)),
            ]);
        }
        None => {
            err(
                errors,
                node,
                &format!("{path}.concurrency"),
                format!("unknown value '{s}' for concurrency limits"),
                Some(
                    "write concurrency as a table: type = \"connections\", soft_limit = 20, hard_limit = 25",
                ),
            );
            service.remove("concurrency");
        }
    }
}

fn entry(key: &str, pos: Pos, value: Value) -> Entry {
    Entry {
        key: key.into(),
        key_pos: pos,
        node: Node::at(pos, value),
    }
}

/// `"8080"` (or `8080.0`) → `8080`.
fn cast_int(table: &mut Node, key: &str, path: &str, errors: &mut Errors) {
    let Some(node) = table.get_mut(key) else {
        return;
    };
    match &node.value {
        Value::Str(s) => match s.trim().parse::<i64>() {
            Ok(i) => node.value = Value::Int(i),
            Err(_) => {
                err(
                    errors,
                    node,
                    &format!("{path}.{key}"),
                    format!("can not convert '{s}' to an integer"),
                    Some("write the port as a number, e.g. 8080"),
                );
                table.remove(key);
            }
        },
        Value::Float(f) if f.is_finite() && f.abs() < 9.2e18 => node.value = Value::Int(*f as i64),
        _ => {}
    }
}

fn ensure_array(node: &mut Node) {
    if let Value::Table(_) = node.value {
        let inner = std::mem::replace(&mut node.value, Value::Null);
        let pos = node.pos;
        node.value = Value::Array(vec![Node::at(pos, inner)]);
    }
}

fn patch_check_list(service: &mut Node, key: &str) {
    let Some(list) = service.get_mut(key) else {
        return;
    };
    ensure_array(list);
    let empty = match &mut list.value {
        Value::Array(items) => {
            items.iter_mut().for_each(patch_check);
            items.is_empty()
        }
        _ => false,
    };
    if empty {
        service.remove(key);
    }
}

fn patch_services(root: &mut Node, errors: &mut Errors) {
    let Some(services) = root.get_mut("services") else {
        return;
    };
    ensure_array(services);
    let Value::Array(items) = &mut services.value else {
        return;
    };
    for (i, svc) in items.iter_mut().enumerate() {
        let path = format!("services[{i}]");
        if svc.entries().is_none() {
            continue;
        }
        patch_concurrency(svc, &path, errors);
        if let Some(ports) = svc.get_mut("ports") {
            ensure_array(ports);
            if let Value::Array(list) = &mut ports.value {
                for (j, port) in list.iter_mut().enumerate() {
                    for key in ["port", "start_port", "end_port"] {
                        cast_int(port, key, &format!("{path}.ports[{j}]"), errors);
                    }
                }
            }
        }
        patch_check_list(svc, "tcp_checks");
        patch_check_list(svc, "http_checks");
        cast_int(svc, "internal_port", &path, errors);
    }
    // Empty `[[services]]` tables are dropped, as the reference does.
    items.retain(|s| s.entries().is_none_or(|e| !e.is_empty()));
}

fn patch_http_service(root: &mut Node, errors: &mut Errors) {
    let Some(svc) = root.get_mut("http_service") else {
        return;
    };
    if svc.entries().is_none() {
        return;
    }
    patch_concurrency(svc, "http_service", errors);
    patch_check_list(svc, "checks");
    cast_int(svc, "internal_port", "http_service", errors);
}

fn patch_build(root: &mut Node) {
    if let Some(build) = root.get_mut("build")
        && build.get("build-target").is_none()
        && let Some(e) = build.remove("build_target")
    {
        build.set("build-target", e.key_pos, e.node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Format;

    fn patched(text: &str) -> (serde_json::Value, Errors) {
        let mut n = Node::parse(text, Format::Toml).expect("valid toml");
        let errors = apply(&mut n);
        (n.to_json(), errors)
    }

    #[test]
    fn go_formats_floats_like_percent_v() {
        assert_eq!(go_float(1.5), "1.5");
        assert_eq!(go_float(3.0), "3");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(1e-7), "1e-07");
    }

    #[test]
    fn env_table_array_and_non_strings() {
        let (j, e) = patched("[[env]]\nA = 1\nB = true\n[[env]]\nC = 1.5\nA = \"x\"\n");
        assert!(e.is_empty());
        assert_eq!(
            j["env"],
            serde_json::json!({"B": "true", "C": "1.5", "A": "x"})
        );
        let (_, e) = patched("env = 3\n");
        assert_eq!(e.len(), 1);
    }
}
