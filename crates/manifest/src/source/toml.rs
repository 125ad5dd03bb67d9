//! TOML text → [`Node`], keeping spans (via the `toml` crate's spanned parser, which also
//! bounds nesting depth).

use super::{Entry, LineIndex, Node, Pos, SyntaxError, Value};
use ::toml::Spanned;
use ::toml::de::{DeTable, DeValue};

pub(super) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let table = DeTable::parse(text).map_err(|e| SyntaxError {
        pos: e
            .span()
            .map_or(Pos::new(1, 1), |s| Pos::of_offset(text, s.start)),
        message: e.message().trim().to_string(),
    })?;
    let index = LineIndex::new(text);
    let pos = index.pos(table.span().start);
    Ok(Node::at(pos, table_value(&index, table.get_ref())))
}

fn table_value(text: &LineIndex<'_>, table: &DeTable<'_>) -> Value {
    Value::Table(
        table
            .iter()
            .map(|(k, v)| Entry {
                key: k.get_ref().to_string(),
                key_pos: text.pos(k.span().start),
                node: node(text, v),
            })
            .collect(),
    )
}

fn node(text: &LineIndex<'_>, v: &Spanned<DeValue<'_>>) -> Node {
    let pos = text.pos(v.span().start);
    let value = match v.get_ref() {
        DeValue::String(s) => Value::Str(s.to_string()),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Value::Int(n),
            // Out of i64 range: keep the magnitude as a float so it fails typed decoding
            // with a clear "invalid type" rather than silently wrapping.
            Err(_) => Value::Float(i.as_str().parse::<f64>().unwrap_or(f64::MAX)),
        },
        DeValue::Float(f) => Value::Float(f.as_str().parse::<f64>().unwrap_or(f64::NAN)),
        DeValue::Boolean(b) => Value::Bool(*b),
        DeValue::Datetime(d) => Value::Str(d.to_string()),
        DeValue::Array(items) => Value::Array(items.iter().map(|i| node(text, i)).collect()),
        DeValue::Table(t) => table_value(text, t),
    };
    Node::at(pos, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse("app = \"a\"\n[env\nX=1").expect_err("broken");
        assert_eq!(err.pos.line, 2);
        let err = parse("a = 1\na = 2\n").expect_err("duplicate");
        assert_eq!(err.pos.line, 2, "{err:?}");
    }

    #[test]
    fn integers_in_every_radix() {
        let n = parse("a = 0x10\nb = 1_000\nc = -5\n").expect("ok");
        assert_eq!(n.get("a").map(|n| &n.value), Some(&Value::Int(16)));
        assert_eq!(n.get("b").map(|n| &n.value), Some(&Value::Int(1000)));
        assert_eq!(n.get("c").map(|n| &n.value), Some(&Value::Int(-5)));
    }
}
