//! The patched tree → the typed [`Config`], collecting type errors and unknown keys.
//!
//! A value of the wrong type does not sink the whole file: it is reported at its position,
//! dropped, and decoding runs again (a bounded number of times), so the user sees every
//! mistake at once and validation still checks the rest.

use crate::model::Config;
use std::collections::HashSet;

use crate::source::{Locator, Node, Pos, Seg, Value, path_string};

/// A value typed decoding rejected.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TypeError {
    pub path: Vec<Seg>,
    pub pos: Pos,
    pub message: String,
}

/// A key typed decoding did not recognise.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UnknownKey {
    pub path: Vec<Seg>,
    pub pos: Pos,
}

/// Most distinct type errors reported before the rest of the file is given up on.
const MAX_TYPE_ERRORS: usize = 64;

pub(crate) fn decode(tree: &Node) -> (Config, Vec<TypeError>, Vec<UnknownKey>) {
    let mut json = tree.to_json();
    let mut errors = Vec::new();
    if !json.is_object() {
        errors.push(TypeError {
            path: Vec::new(),
            pos: tree.pos,
            message: format!(
                "the manifest must be a table of sections and keys, not {}",
                tree.value.kind()
            ),
        });
        return (Config::default(), errors, Vec::new());
    }
    let mut locator = Locator::new(tree);
    let mut non_finite = Vec::new();
    find_non_finite(tree, &mut Vec::new(), &mut non_finite);
    // In reverse document order, so removing an array item does not shift the later paths.
    for e in non_finite.iter().rev() {
        remove_at(&mut json, &e.path);
    }
    errors.extend(non_finite);
    loop {
        let mut ignored: Vec<Vec<Seg>> = Vec::new();
        let result: Result<Config, _> = {
            let mut record = |p: serde_ignored::Path<'_>| ignored.push(ignored_path(&p));
            let de = serde_ignored::Deserializer::new(&json, &mut record);
            serde_path_to_error::deserialize(de)
        };
        match result {
            Ok(config) => {
                let unknown = ignored
                    .into_iter()
                    .map(|path| {
                        let (pos, key_pos) = locator.locate_key(&path);
                        UnknownKey {
                            pos: key_pos.unwrap_or(pos),
                            path,
                        }
                    })
                    .collect();
                return (config, errors, unknown);
            }
            Err(e) => {
                let path = error_path(e.path());
                let message = clean_message(&e.inner().to_string());
                let removed = remove_at(&mut json, &path);
                errors.push(TypeError {
                    pos: locator.locate(&path),
                    path,
                    message,
                });
                if !removed || errors.len() >= MAX_TYPE_ERRORS {
                    return (Config::default(), errors, Vec::new());
                }
            }
        }
    }
}

/// Non-finite floats (`nan`, `inf`, `1e999`) have no JSON form and would silently read as
/// "not set": each one is reported. Only the entry that counts of a duplicated key is looked at.
fn find_non_finite(node: &Node, path: &mut Vec<Seg>, out: &mut Vec<TypeError>) {
    match &node.value {
        Value::Float(f) if !f.is_finite() => out.push(TypeError {
            path: path.clone(),
            pos: node.pos,
            message: format!("{f} is not a finite number"),
        }),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                find_non_finite(item, path, out);
                path.pop();
            }
        }
        Value::Table(entries) => {
            let mut seen = HashSet::new();
            let mut found = Vec::new();
            for e in entries.iter().rev().filter(|e| seen.insert(e.key.as_str())) {
                path.push(Seg::Key(e.key.clone()));
                find_non_finite(&e.node, path, &mut found);
                path.pop();
            }
            out.extend(found.into_iter().rev());
        }
        _ => {}
    }
}

fn ignored_path(p: &serde_ignored::Path<'_>) -> Vec<Seg> {
    use serde_ignored::Path;
    let mut out = match p {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => ignored_path(parent),
    };
    match p {
        Path::Seq { index, .. } => out.push(Seg::Index(*index)),
        Path::Map { key, .. } => out.push(Seg::Key(key.clone())),
        _ => {}
    }
    out
}

fn error_path(p: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    p.iter()
        .filter_map(|s| match s {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

fn clean_message(m: &str) -> String {
    let m = m.split(" at line ").next().unwrap_or(m);
    m.replace("i64", "an integer")
        .replace("u32", "a non-negative integer")
        .replace("f64", "a number")
}

/// Removes the value at `path`; false when there is nothing to remove (the root).
fn remove_at(json: &mut serde_json::Value, path: &[Seg]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = json;
    for seg in parents {
        let next = match (seg, cur) {
            (Seg::Key(k), serde_json::Value::Object(m)) => m.get_mut(k),
            (Seg::Index(i), serde_json::Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    match (last, cur) {
        (Seg::Key(k), serde_json::Value::Object(m)) => m.shift_remove(k).is_some(),
        (Seg::Index(i), serde_json::Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

/// `path` rendered for messages.
pub(crate) fn render(path: &[Seg]) -> String {
    path_string(path)
}
