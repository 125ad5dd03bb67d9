//! A tiny Swagger 2.0 schema checker, enough for the Machines API definitions.
//!
//! Supports `$ref` (`#/definitions/...`), `allOf`, `type`, `properties`, `items`,
//! `enum`, `additionalProperties` and `required`. It is stricter than Swagger in one
//! way: an object schema that lists `properties` but says nothing about
//! `additionalProperties` rejects other keys, so fields the 2024 swagger does not know
//! show up as [`Kind::UnknownProperty`] and must be allowed explicitly.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// Location of the swagger copy: `/work/shared` sits beside the repository root.
pub fn spec_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/spec/machines-openapi.json")
}

/// What kind of mismatch was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// JSON type differs from the schema `type`.
    Type,
    /// Value not in the schema `enum`.
    Enum,
    /// Key not declared in `properties` (and no `additionalProperties` schema).
    UnknownProperty,
    /// Key present although `additionalProperties` is `false`.
    AdditionalProperty,
    /// Key listed in `required` is absent.
    MissingRequired,
}

/// One mismatch between a value and a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// JSON pointer into the validated value.
    pub path: String,
    /// `Definition.property` that declares the offending value (or the definition name at the root).
    pub at: String,
    /// Kind of mismatch.
    pub kind: Kind,
    /// Human-readable detail.
    pub detail: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "{path} [{} {:?}]: {}", self.at, self.kind, self.detail)
    }
}

/// Result of [`Spec::property_coverage`] over one or more values.
#[derive(Debug, Default)]
pub struct Coverage {
    /// `Definition.property` written by at least one value.
    pub present: BTreeSet<String>,
    /// `Definition.property` absent from at least one value.
    pub missing: BTreeSet<String>,
    /// Definitions reached.
    pub visited: BTreeSet<String>,
}

impl Coverage {
    /// Properties no value wrote.
    pub fn never_written(&self) -> Vec<String> {
        self.missing.difference(&self.present).cloned().collect()
    }
}

/// A loaded Swagger 2.0 document.
pub struct Spec {
    root: Value,
}

fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn unescape_pointer(segment: &str) -> String {
    segment.replace("~1", "/").replace("~0", "~")
}

fn push(out: &mut Vec<Mismatch>, kind: Kind, at: &str, path: String, detail: String) {
    out.push(Mismatch {
        path,
        at: at.to_owned(),
        kind,
        detail,
    });
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        // Unknown type keyword: do not judge.
        _ => true,
    }
}

impl Spec {
    /// Loads the swagger file; panics with a clear message if it is missing or invalid.
    pub fn load() -> Spec {
        let path = spec_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read the Machines API swagger at {} ({e}); it is expected at \
                 /work/shared/spec/machines-openapi.json beside the repository root. \
                 This test must not be skipped.",
                path.display()
            )
        });
        let root: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()));
        assert_eq!(
            root.get("swagger").and_then(Value::as_str),
            Some("2.0"),
            "{} is not a Swagger 2.0 document",
            path.display()
        );
        Spec { root }
    }

    /// Builds a spec from an in-memory document (for testing the checker itself).
    pub fn from_value(root: Value) -> Spec {
        Spec { root }
    }

    /// Names of all definitions.
    pub fn definition_names(&self) -> BTreeSet<String> {
        self.root
            .get("definitions")
            .and_then(Value::as_object)
            .map(|defs| defs.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The schema of `#/definitions/<name>`; panics if absent.
    pub fn definition(&self, name: &str) -> &Value {
        self.root
            .get("definitions")
            .and_then(|d| d.get(name))
            .unwrap_or_else(|| panic!("swagger has no definition {name:?}"))
    }

    /// Resolves a local `$ref` to (definition name, schema).
    fn resolve<'a>(&'a self, reference: &str) -> (String, &'a Value) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("only local $refs are supported, got {reference:?}"));
        let target = self
            .root
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {reference:?}"));
        let name = pointer
            .strip_prefix("/definitions/")
            .map(unescape_pointer)
            .unwrap_or_else(|| pointer.to_owned());
        (name, target)
    }

    /// Follows `$ref` and single-element `allOf` wrappers to a definition, if any.
    pub fn ref_target<'a>(&'a self, schema: &'a Value) -> Option<(String, &'a Value)> {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            return Some(self.resolve(r));
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array)
            && let [only] = all.as_slice()
        {
            return self.ref_target(only);
        }
        None
    }

    /// Validates `value` against `#/definitions/<name>`.
    pub fn validate(&self, name: &str, value: &Value) -> Vec<Mismatch> {
        let mut out = Vec::new();
        self.check(self.definition(name), value, "", name, name, &mut out);
        out
    }

    fn check(
        &self,
        schema: &Value,
        value: &Value,
        path: &str,
        def: &str,
        at: &str,
        out: &mut Vec<Mismatch>,
    ) {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let (name, target) = self.resolve(r);
            self.check(target, value, path, &name, at, out);
            return;
        }
        if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.check(sub, value, path, def, at, out);
            }
        }

        if let Some(expected) = schema.get("type").and_then(Value::as_str)
            && !type_matches(expected, value)
        {
            push(
                out,
                Kind::Type,
                at,
                path.to_owned(),
                format!("expected {expected}, got {} {value}", json_type(value)),
            );
            return;
        }

        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            push(
                out,
                Kind::Enum,
                at,
                path.to_owned(),
                format!("{value} is not one of {}", Value::Array(allowed.clone())),
            );
        }

        if let Value::Object(map) = value {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, child) in map {
                let child_path = format!("{path}/{}", escape_pointer(key));
                if let Some(prop_schema) = props.and_then(|p| p.get(key)) {
                    let child_at = format!("{def}.{key}");
                    self.check(prop_schema, child, &child_path, def, &child_at, out);
                    continue;
                }
                match additional {
                    Some(Value::Bool(false)) => push(
                        out,
                        Kind::AdditionalProperty,
                        &format!("{def}.{key}"),
                        child_path,
                        "additionalProperties is false".to_owned(),
                    ),
                    Some(Value::Object(extra)) => {
                        let child_at = format!("{at}{{}}");
                        self.check(
                            &Value::Object(extra.clone()),
                            child,
                            &child_path,
                            def,
                            &child_at,
                            out,
                        );
                    }
                    Some(_) => {}
                    None if props.is_some() => push(
                        out,
                        Kind::UnknownProperty,
                        &format!("{def}.{key}"),
                        child_path,
                        format!("{def} declares no property {key:?}"),
                    ),
                    None => {}
                }
            }
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for key in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(key) {
                        push(
                            out,
                            Kind::MissingRequired,
                            &format!("{def}.{key}"),
                            format!("{path}/{}", escape_pointer(key)),
                            format!("{def} requires {key:?}"),
                        );
                    }
                }
            }
        }

        if let (Value::Array(items), Some(item_schema)) = (value, schema.get("items")) {
            let item_at = format!("{at}[]");
            for (i, item) in items.iter().enumerate() {
                self.check(
                    item_schema,
                    item,
                    &format!("{path}/{i}"),
                    def,
                    &item_at,
                    out,
                );
            }
        }
    }

    /// Walks `value` alongside `#/definitions/<name>` (recursively, through `$ref`s,
    /// arrays and maps) and records, as `Definition.property`, every swagger property
    /// the value writes (`present`) or lacks (`missing`), plus the definitions visited.
    pub fn property_coverage(&self, name: &str, value: &Value, cov: &mut Coverage) {
        self.walk_properties(name, self.definition(name), value, cov);
    }

    fn walk_properties(&self, def: &str, schema: &Value, value: &Value, cov: &mut Coverage) {
        cov.visited.insert(def.to_owned());
        let Some(obj) = value.as_object() else {
            return;
        };
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        for (key, prop_schema) in props {
            let Some(child) = obj.get(key) else {
                cov.missing.insert(format!("{def}.{key}"));
                continue;
            };
            cov.present.insert(format!("{def}.{key}"));
            self.walk_child(prop_schema, child, cov);
        }
    }

    fn walk_child(&self, schema: &Value, value: &Value, cov: &mut Coverage) {
        if let Some((name, target)) = self.ref_target(schema) {
            self.walk_properties(&name, target, value, cov);
            return;
        }
        if let (Some(items), Some(first)) = (
            schema.get("items"),
            value.as_array().and_then(|a| a.first()),
        ) {
            self.walk_child(items, first, cov);
        }
        if let (Some(extra @ Value::Object(_)), Some(first)) = (
            schema.get("additionalProperties"),
            value.as_object().and_then(|m| m.values().next()),
        ) {
            self.walk_child(extra, first, cov);
        }
    }
}
