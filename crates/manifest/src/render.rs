//! The normalised model written back out as TOML, JSON or YAML (`hangar config show`).

use thiserror::Error;

use crate::model::Config;
use crate::source::Format;

/// The model could not be written (only possible for values TOML can not hold).
#[derive(Debug, Error)]
#[error("can not write the configuration as {format}: {message}")]
pub struct RenderError {
    /// Target format.
    pub format: &'static str,
    /// Why.
    pub message: String,
}

/// Writes `config` in `format`; TOML starts with a comment header like the reference's.
pub fn render(config: &Config, format: Format) -> Result<String, RenderError> {
    let err = |message: String| RenderError {
        format: format.as_str(),
        message,
    };
    match format {
        Format::Toml => {
            let body = toml::to_string_pretty(config).map_err(|e| err(e.to_string()))?;
            // A comment can not hold control characters (a newline would end it).
            let name: String = config
                .app
                .as_deref()
                .unwrap_or("")
                .chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect();
            Ok(format!(
                "# fly.toml app configuration file generated for {name} by hangar\n#\n# See https://fly.io/docs/reference/configuration/ for information about how to use this file.\n#\n\n{body}"
            ))
        }
        Format::Json => serde_json::to_string_pretty(config)
            .map(|s| s + "\n")
            .map_err(|e| err(e.to_string())),
        Format::Yaml => {
            let json = serde_json::to_value(config).map_err(|e| err(e.to_string()))?;
            let mut out = String::from("---\n");
            yaml_document(&mut out, &json);
            Ok(out)
        }
    }
}

/// Block-style YAML. Written here rather than with `yaml-rust2`'s emitter, whose quoting lets
/// through strings that read back as something else (`0o17`, `+.inf`, control characters):
/// a string is written plain only when it is unambiguous, else double-quoted with escapes.
fn yaml_document(out: &mut String, v: &serde_json::Value) {
    use serde_json::Value as J;
    match v {
        J::Object(m) if !m.is_empty() => yaml_entries(out, m, 0, false),
        J::Array(a) if !a.is_empty() => yaml_items(out, a, 0),
        _ => {
            yaml_scalar(out, v);
            out.push('\n');
        }
    }
}

/// `key: value` lines at `indent`; with `after_dash` the first one continues a `- ` line.
fn yaml_entries(
    out: &mut String,
    m: &serde_json::Map<String, serde_json::Value>,
    indent: usize,
    after_dash: bool,
) {
    for (i, (k, v)) in m.iter().enumerate() {
        if i > 0 || !after_dash {
            out.push_str(&" ".repeat(indent));
        }
        yaml_string(out, k);
        out.push(':');
        yaml_value(out, v, indent, false);
    }
}

/// `- item` lines at `indent`.
fn yaml_items(out: &mut String, a: &[serde_json::Value], indent: usize) {
    for v in a {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        yaml_value(out, v, indent, true);
    }
}

/// The rest of a `key:` or `-` line: a scalar, or a nested block.
fn yaml_value(out: &mut String, v: &serde_json::Value, indent: usize, item: bool) {
    use serde_json::Value as J;
    match v {
        J::Object(m) if !m.is_empty() && item => {
            out.push(' ');
            yaml_entries(out, m, indent + 2, true);
        }
        J::Object(m) if !m.is_empty() => {
            out.push('\n');
            yaml_entries(out, m, indent + 2, false);
        }
        J::Array(a) if !a.is_empty() => {
            out.push('\n');
            yaml_items(out, a, indent + 2);
        }
        _ => {
            out.push(' ');
            yaml_scalar(out, v);
            out.push('\n');
        }
    }
}

fn yaml_scalar(out: &mut String, v: &serde_json::Value) {
    use serde_json::Value as J;
    match v {
        J::Null => out.push('~'),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Number(n) => match n.as_i64() {
            Some(i) => out.push_str(&i.to_string()),
            // Debug keeps a decimal point or exponent, so the value reads back as a float.
            None => out.push_str(&format!("{:?}", n.as_f64().unwrap_or(0.0))),
        },
        J::String(s) => yaml_string(out, s),
        J::Array(_) => out.push_str("[]"),
        J::Object(_) => out.push_str("{}"),
    }
}

fn yaml_string(out: &mut String, s: &str) {
    let plain_char = |c: char| c.is_ascii_alphanumeric() || " _-./+=$()~^;,".contains(c);
    // Also quoted: words and numbers a YAML 1.1 reader (PyYAML, older tools) would not read
    // as a string, so the file means the same everywhere.
    let yaml11 = matches!(
        s.to_ascii_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off"
    ) || s.bytes().all(|b| b.is_ascii_digit() || b == b'_');
    let plain = s.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '/' || c == '_')
        && !s.ends_with(' ')
        && !yaml11
        && s.chars().all(plain_char)
        && crate::source::plain_is_string(s);
    if plain {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
