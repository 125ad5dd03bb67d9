//! The document tree every input format is read into before anything else looks at it.
//!
//! TOML, JSON and YAML files all become the same [`Node`] tree, in which every value and
//! every key remembers the line and column it came from. Patches (legacy shapes) rewrite
//! this tree in place and keep those positions, so a finding about a normalised field can
//! still point at the text the user wrote.

mod json;
mod toml;
mod yaml;

pub(crate) use yaml::plain_is_string;

use std::collections::HashMap;
use std::fmt;

/// Locates many paths in one tree: a large table is indexed the first time it is searched,
/// so n lookups cost O(n · depth) rather than O(n · table size) (a hostile file with 100k
/// keys and as many findings stays fast). Answers exactly as [`Node::locate_key`].
pub(crate) struct Locator<'a> {
    root: &'a Node,
    index: HashMap<*const Node, HashMap<&'a str, usize>>,
}

impl<'a> Locator<'a> {
    /// Tables this small are searched linearly.
    const SMALL: usize = 16;

    pub(crate) fn new(root: &'a Node) -> Self {
        Self {
            root,
            index: HashMap::new(),
        }
    }

    /// See [`Node::locate`].
    pub(crate) fn locate(&mut self, path: &[Seg]) -> Pos {
        self.locate_key(path).0
    }

    /// See [`Node::locate_key`].
    pub(crate) fn locate_key(&mut self, path: &[Seg]) -> (Pos, Option<Pos>) {
        let mut node = self.root;
        let mut key_pos = None;
        for seg in path {
            let next = match (seg, &node.value) {
                (Seg::Key(k), Value::Table(entries)) => {
                    let found = if entries.len() <= Self::SMALL {
                        entries.iter().rposition(|e| &e.key == k)
                    } else {
                        // Later duplicates overwrite earlier ones: the last one wins.
                        let index =
                            self.index
                                .entry(std::ptr::from_ref(node))
                                .or_insert_with(|| {
                                    entries
                                        .iter()
                                        .enumerate()
                                        .map(|(i, e)| (e.key.as_str(), i))
                                        .collect()
                                });
                        index.get(k.as_str()).copied()
                    };
                    found.map(|i| {
                        key_pos = Some(entries[i].key_pos);
                        &entries[i].node
                    })
                }
                (Seg::Index(i), Value::Array(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return (node.pos, None),
            }
        }
        (node.pos, key_pos)
    }
}

/// A 1-based line and column in the source text. `Pos::default()` (0:0) means "unknown".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    /// 1-based line number.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub col: u32,
}

impl Pos {
    /// Builds a position from 1-based line and column.
    pub fn new(line: u32, col: u32) -> Self {
        Self { line, col }
    }

    /// Position of byte `offset` in `text`.
    pub fn of_offset(text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = &text[..floor_char_boundary(text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        Self::new(saturate(line), saturate(col))
    }

    /// True when the position is known.
    pub fn is_known(&self) -> bool {
        self.line > 0
    }
}

/// Byte offset → line and column in O(log n), for readers that need many positions.
#[derive(Debug, Clone)]
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self { text, starts }
    }

    pub(crate) fn pos(&self, offset: usize) -> Pos {
        let offset = floor_char_boundary(self.text, offset.min(self.text.len()));
        let line = self.starts.partition_point(|s| *s <= offset);
        let start = self.starts[line.saturating_sub(1)];
        let col = self.text[start..offset].chars().count() + 1;
        Pos::new(saturate(line), saturate(col))
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

pub(crate) fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// The file formats a manifest may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `fly.toml`, the default.
    Toml,
    /// `fly.json`: keyed exactly as the TOML form.
    Json,
    /// `fly.yaml` / `fly.yml`: keyed exactly as the TOML form.
    Yaml,
}

impl Format {
    /// The format implied by a file name's extension; TOML unless it ends in `.json`, `.yaml` or `.yml`.
    pub fn from_path(path: &std::path::Path) -> Self {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("json") => Format::Json,
            Some("yaml" | "yml") => Format::Yaml,
            _ => Format::Toml,
        }
    }

    /// Lower-case name (`toml`, `json`, `yaml`).
    pub fn as_str(&self) -> &'static str {
        match self {
            Format::Toml => "toml",
            Format::Json => "json",
            Format::Yaml => "yaml",
        }
    }
}

/// A syntax error: the text is not valid in its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What it found wrong.
    pub message: String,
}

/// A value with the position it was written at.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the value starts.
    pub pos: Pos,
    /// The value.
    pub value: Value,
}

/// One key of a table with its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The key as written (after unquoting).
    pub key: String,
    /// Where the key was written.
    pub key_pos: Pos,
    /// The value.
    pub node: Node,
}

/// A format-independent value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// JSON `null` / YAML `~`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer that fits in 64 bits.
    Int(i64),
    /// Any other number.
    Float(f64),
    /// A string (TOML datetimes are kept as their text).
    Str(String),
    /// An array.
    Array(Vec<Node>),
    /// A table, in source order.
    Table(Vec<Entry>),
}

impl Value {
    /// Name of the value's kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::Table(_) => "table",
        }
    }
}

/// One step of a path into the tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

impl fmt::Display for Seg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Seg::Key(k) => f.write_str(k),
            Seg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Renders a path the way a user writes it: `services[0].ports[1].port`.
pub fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

impl Node {
    /// A node with an unknown position.
    pub fn new(value: Value) -> Self {
        Self {
            pos: Pos::default(),
            value,
        }
    }

    /// A node at `pos`.
    pub fn at(pos: Pos, value: Value) -> Self {
        Self { pos, value }
    }

    /// Parses `text` in `format` into a tree.
    pub fn parse(text: &str, format: Format) -> Result<Node, SyntaxError> {
        match format {
            Format::Toml => toml::parse(text),
            Format::Json => json::parse(text),
            Format::Yaml => yaml::parse(text),
        }
    }

    /// The table's entries, if this is a table.
    pub fn entries(&self) -> Option<&[Entry]> {
        match &self.value {
            Value::Table(e) => Some(e),
            _ => None,
        }
    }

    /// Mutable table entries, if this is a table.
    pub fn entries_mut(&mut self) -> Option<&mut Vec<Entry>> {
        match &mut self.value {
            Value::Table(e) => Some(e),
            _ => None,
        }
    }

    /// The value under `key` in a table (the last one, if a format allowed duplicates).
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?
            .iter()
            .rev()
            .find(|e| e.key == key)
            .map(|e| &e.node)
    }

    /// The mutable value under `key` in a table.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        self.entries_mut()?
            .iter_mut()
            .rev()
            .find(|e| e.key == key)
            .map(|e| &mut e.node)
    }

    /// The entry for `key` (with its key position).
    pub fn entry(&self, key: &str) -> Option<&Entry> {
        self.entries()?.iter().rev().find(|e| e.key == key)
    }

    /// Removes every entry named `key` and returns the last one.
    pub fn remove(&mut self, key: &str) -> Option<Entry> {
        let entries = self.entries_mut()?;
        // One pass: a format that allows duplicate keys may repeat one thousands of times.
        let mut found = None;
        let mut kept = Vec::with_capacity(entries.len());
        for e in entries.drain(..) {
            if e.key == key {
                found = Some(e);
            } else {
                kept.push(e);
            }
        }
        *entries = kept;
        found
    }

    /// Sets `key` to `node`, replacing an existing entry in place or appending.
    pub fn set(&mut self, key: &str, key_pos: Pos, node: Node) {
        if let Some(entries) = self.entries_mut() {
            if let Some(e) = entries.iter_mut().rev().find(|e| e.key == key) {
                e.node = node;
            } else {
                entries.push(Entry {
                    key: key.to_string(),
                    key_pos,
                    node,
                });
            }
        }
    }

    /// The string, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The best-known position of `path`: the value's own position when the whole path
    /// exists, else the deepest part that does.
    pub fn locate(&self, path: &[Seg]) -> Pos {
        self.locate_key(path).0
    }

    /// Like [`Node::locate`], also telling the position of the last key (useful for
    /// "unknown key" findings, which should point at the key, not its value).
    pub fn locate_key(&self, path: &[Seg]) -> (Pos, Option<Pos>) {
        let mut node = self;
        let mut key_pos = None;
        for seg in path {
            let next = match (seg, &node.value) {
                (Seg::Key(k), Value::Table(entries)) => {
                    entries.iter().rev().find(|e| &e.key == k).map(|e| {
                        key_pos = Some(e.key_pos);
                        &e.node
                    })
                }
                (Seg::Index(i), Value::Array(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => return (node.pos, None),
            }
        }
        (node.pos, key_pos)
    }

    /// Converts the tree to a JSON value (last duplicate key wins).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Array(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Table(entries) => {
                let mut map = serde_json::Map::with_capacity(entries.len());
                for e in entries {
                    map.insert(e.key.clone(), e.node.to_json());
                }
                J::Object(map)
            }
        }
    }

    /// Builds a tree (with unknown positions) from a JSON value.
    pub fn from_json(value: &serde_json::Value) -> Node {
        use serde_json::Value as J;
        Node::new(match value {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            J::String(s) => Value::Str(s.clone()),
            J::Array(items) => Value::Array(items.iter().map(Node::from_json).collect()),
            J::Object(map) => Value::Table(
                map.iter()
                    .map(|(k, v)| Entry {
                        key: k.clone(),
                        key_pos: Pos::default(),
                        node: Node::from_json(v),
                    })
                    .collect(),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_line_and_column() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(Pos::of_offset(text, 0), Pos::new(1, 1));
        assert_eq!(Pos::of_offset(text, 6), Pos::new(2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(Pos::of_offset(text, 9), Pos::new(2, 3));
        assert_eq!(Pos::of_offset(text, 999), Pos::new(3, 1));
        let idx = LineIndex::new(text);
        for off in 0..text.len() + 3 {
            assert_eq!(idx.pos(off), Pos::of_offset(text, off), "offset {off}");
        }
    }

    #[test]
    fn same_tree_from_every_format() {
        let t = Node::parse("app = \"x\"\n[env]\nA = \"1\"\n", Format::Toml).expect("toml");
        let j = Node::parse(r#"{"app": "x", "env": {"A": "1"}}"#, Format::Json).expect("json");
        let y = Node::parse("app: x\nenv:\n  A: \"1\"\n", Format::Yaml).expect("yaml");
        assert_eq!(t.to_json(), j.to_json());
        assert_eq!(t.to_json(), y.to_json());
        assert_eq!(
            t.locate(&[Seg::Key("env".into()), Seg::Key("A".into())]),
            Pos::new(3, 5)
        );
        assert_eq!(
            j.locate(&[Seg::Key("env".into()), Seg::Key("A".into())]),
            Pos::new(1, 27)
        );
        assert_eq!(
            y.locate(&[Seg::Key("env".into()), Seg::Key("A".into())]),
            Pos::new(3, 6)
        );
    }
}
