//! YAML text → [`Node`], built from `yaml-rust2`'s marked event stream with an explicit
//! stack (no recursion), so deep nesting cannot overflow. Aliases are refused: a manifest
//! has no use for them and they are the classic YAML expansion bomb.

use super::{Entry, Node, Pos, SyntaxError, Value, saturate};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

const MAX_DEPTH: usize = 128;

pub(super) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(text);
    // Events are pulled one by one rather than with `Parser::load`, which recurses once per
    // nesting level (a stack overflow on `- - - …`); the builder's depth limit stops us first.
    // Only the first document is read.
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| SyntaxError {
            pos: Pos::new(saturate(e.marker().line()), saturate(e.marker().col() + 1)),
            message: e.info().to_string(),
        })?;
        let last = matches!(ev, Event::DocumentEnd | Event::StreamEnd);
        builder.on_event(ev, mark);
        if let Some(err) = builder.error.take() {
            return Err(err);
        }
        if last {
            break;
        }
    }
    Ok(builder
        .root
        .unwrap_or_else(|| Node::at(Pos::new(1, 1), Value::Table(Vec::new()))))
}

enum Frame {
    Seq(Pos, Vec<Node>),
    Map(Pos, Vec<Entry>, Option<(String, Pos)>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    root: Option<Node>,
    error: Option<SyntaxError>,
    done: bool,
}

impl Builder {
    fn fail(&mut self, pos: Pos, message: &str) {
        if self.error.is_none() {
            self.error = Some(SyntaxError {
                pos,
                message: message.to_string(),
            });
        }
    }

    fn push_value(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
                self.done = true;
            }
            Some(Frame::Seq(_, items)) => items.push(node),
            Some(Frame::Map(_, entries, key)) => match key.take() {
                None => {
                    let key_pos = node.pos;
                    match node.value {
                        Value::Str(s) => *key = Some((s, key_pos)),
                        Value::Int(i) => *key = Some((i.to_string(), key_pos)),
                        Value::Bool(b) => *key = Some((b.to_string(), key_pos)),
                        Value::Float(f) => *key = Some((f.to_string(), key_pos)),
                        Value::Null => *key = Some(("null".to_string(), key_pos)),
                        _ => self.fail(key_pos, "mapping keys must be scalars"),
                    }
                }
                Some((k, key_pos)) => entries.push(Entry {
                    key: k,
                    key_pos,
                    node,
                }),
            },
        }
    }
}

fn scalar(s: String, style: TScalarStyle) -> Value {
    if style != TScalarStyle::Plain {
        return Value::Str(s);
    }
    match s.as_str() {
        "~" | "null" | "Null" | "NULL" | "" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => {
            if let Ok(i) = s.parse::<i64>() {
                Value::Int(i)
            } else if let Some(h) = s
                .strip_prefix("0x")
                .and_then(|h| i64::from_str_radix(h, 16).ok())
            {
                Value::Int(h)
            } else if let Some(o) = s
                .strip_prefix("0o")
                .and_then(|o| i64::from_str_radix(o, 8).ok())
            {
                Value::Int(o)
            } else if looks_like_float(&s) {
                s.parse::<f64>().map(Value::Float).unwrap_or(Value::Str(s))
            } else {
                match s.as_str() {
                    ".inf" | ".Inf" | ".INF" | "+.inf" => Value::Float(f64::INFINITY),
                    "-.inf" | "-.Inf" | "-.INF" => Value::Float(f64::NEG_INFINITY),
                    ".nan" | ".NaN" | ".NAN" => Value::Float(f64::NAN),
                    _ => Value::Str(s),
                }
            }
        }
    }
}

/// True when `s`, written as a plain (unquoted) scalar, reads back as the same string.
pub(crate) fn plain_is_string(s: &str) -> bool {
    matches!(scalar(s.to_string(), TScalarStyle::Plain), Value::Str(ref v) if v == s)
}

fn looks_like_float(s: &str) -> bool {
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    !t.is_empty()
        && t.chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '.')
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = Pos::new(saturate(mark.line()), saturate(mark.col() + 1));
        if self.done && !matches!(ev, Event::DocumentEnd | Event::StreamEnd) {
            return;
        }
        match ev {
            Event::Alias(_) => self.fail(pos, "YAML aliases are not supported in a manifest"),
            Event::Scalar(s, style, _, _) => self.push_value(Node::at(pos, scalar(s, style))),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(pos, "nesting is deeper than 128 levels");
                    return;
                }
                self.stack.push(if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq(pos, Vec::new())
                } else {
                    Frame::Map(pos, Vec::new(), None)
                });
            }
            Event::SequenceEnd | Event::MappingEnd => match self.stack.pop() {
                Some(Frame::Seq(p, items)) => self.push_value(Node::at(p, Value::Array(items))),
                Some(Frame::Map(p, entries, _)) => {
                    self.push_value(Node::at(p, Value::Table(entries)))
                }
                None => self.fail(pos, "unbalanced YAML structure"),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_are_typed_like_yaml_1_2_core() {
        let n = parse("a: 1\nb: '1'\nc: true\nd: 1.5\ne: ~\nf: hello\n").expect("ok");
        let j = n.to_json();
        assert_eq!(j["a"], 1);
        assert_eq!(j["b"], "1");
        assert_eq!(j["c"], true);
        assert_eq!(j["d"], 1.5);
        assert!(j["e"].is_null());
        assert_eq!(j["f"], "hello");
    }

    #[test]
    fn hostile_yaml_is_refused() {
        assert!(parse("a: &x [1]\nb: *x\n").is_err());
        assert!(parse(&"[".repeat(5000)).is_err());
        assert!(parse(&"- ".repeat(100_000)).is_err());
        assert!(parse("a: [1, 2\n").is_err());
    }
}
