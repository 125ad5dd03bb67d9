//! A parser for the text format as apps serve it, good enough to relabel and re-expose what
//! it reads. Lenient where the format is ambiguous, strict where re-exposing would break:
//! a line that does not parse is skipped and counted, the rest of the input still counts.
//! Linear in the input; the number of samples, families and labels kept is bounded.

use std::collections::HashMap;

use crate::{Family, Labels, MetricType, Sample, valid_metric_name};

/// Bounds on what [`parse`] keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Samples kept; later ones are dropped (and counted).
    pub max_samples: usize,
    /// Families kept; samples and HELP/TYPE lines of further ones are dropped.
    pub max_families: usize,
    /// Labels per sample; a sample with more is malformed.
    pub max_labels: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self {
            max_samples: 100_000,
            max_families: 10_000,
            max_labels: 64,
        }
    }
}

/// What [`parse`] read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    /// The families, in the order they first appeared (each name once).
    pub families: Vec<Family>,
    /// Samples kept, over all families.
    pub samples: usize,
    /// Lines that did not parse (skipped).
    pub malformed_lines: usize,
    /// Samples and HELP/TYPE lines dropped by the [`ParseLimits`].
    pub over_limit: usize,
}

/// Reads a text exposition. Never fails and never panics: malformed lines are counted in
/// [`Parsed::malformed_lines`] and skipped.
///
/// A sample joins the family whose HELP/TYPE came last if it belongs to it (its name, or a
/// histogram's/summary's suffixed names), else the family of that name (or, for suffixed
/// names, of the histogram/summary it belongs to), else a new untyped family of its own.
pub fn parse(text: &str, limits: &ParseLimits) -> Parsed {
    let mut p = Parser {
        limits: *limits,
        out: Parsed::default(),
        index: HashMap::new(),
        typed: Vec::new(),
        current: None,
    };
    for raw in text.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            p.comment(rest);
        } else {
            match sample(line, limits.max_labels) {
                Some(s) => p.add(s),
                None => p.out.malformed_lines += 1,
            }
        }
    }
    p.out
}

/// Sets `labels` on every sample, replacing same-named labels the sample already has (the
/// platform's labels win over the app's).
pub fn relabel(families: &mut [Family], labels: &[(&str, &str)]) {
    for s in families.iter_mut().flat_map(|f| f.samples.iter_mut()) {
        for (k, v) in labels {
            match s.labels.iter_mut().find(|(name, _)| name == k) {
                Some(l) => l.1 = (*v).to_string(),
                None => s.labels.push(((*k).to_string(), (*v).to_string())),
            }
        }
    }
}

struct Parser {
    limits: ParseLimits,
    out: Parsed,
    index: HashMap<String, usize>,
    /// Whether a family had its TYPE line.
    typed: Vec<bool>,
    /// The family whose HELP/TYPE/sample came last.
    current: Option<usize>,
}

impl Parser {
    /// The family `name` for a HELP or TYPE line, made if new (and within the limit).
    fn meta_family(&mut self, name: &str) -> Option<usize> {
        if let Some(&i) = self.index.get(name) {
            return Some(i);
        }
        self.new_family(name)
    }

    fn new_family(&mut self, name: &str) -> Option<usize> {
        if self.out.families.len() >= self.limits.max_families {
            self.out.over_limit += 1;
            return None;
        }
        self.out
            .families
            .push(Family::new(name, "", MetricType::Untyped));
        self.typed.push(false);
        let i = self.out.families.len() - 1;
        self.index.insert(name.to_string(), i);
        Some(i)
    }

    fn comment(&mut self, rest: &str) {
        let rest = rest.trim_start_matches([' ', '\t']);
        let (word, after) = token(rest);
        let help = match word {
            "HELP" => true,
            "TYPE" => false,
            // Any other comment.
            _ => return,
        };
        let after = after.trim_start_matches([' ', '\t']);
        let (name, after) = token(after);
        if !valid_metric_name(name) {
            self.out.malformed_lines += 1;
            return;
        }
        let after = after.trim_start_matches([' ', '\t']);
        if help {
            let Some(i) = self.meta_family(name) else {
                return;
            };
            let f = &mut self.out.families[i];
            if f.help.is_some() {
                self.out.malformed_lines += 1;
                return;
            }
            f.help = Some(unescape_help(after));
            self.current = Some(i);
        } else {
            let (word, tail) = token(after);
            let Some(kind) = MetricType::from_type_word(word) else {
                self.out.malformed_lines += 1;
                return;
            };
            if !tail.trim_start_matches([' ', '\t']).is_empty() {
                self.out.malformed_lines += 1;
                return;
            }
            let Some(i) = self.meta_family(name) else {
                return;
            };
            if self.typed[i] || !self.out.families[i].samples.is_empty() {
                // A second TYPE, or a TYPE after the family's samples.
                self.out.malformed_lines += 1;
                return;
            }
            self.typed[i] = true;
            self.out.families[i].kind = kind;
            self.current = Some(i);
        }
    }

    fn add(&mut self, s: Sample) {
        if self.out.samples >= self.limits.max_samples {
            self.out.over_limit += 1;
            return;
        }
        let i = match self.current {
            Some(i) if self.out.families[i].owns(&s.name) => i,
            _ => match self.lookup(&s.name) {
                Some(i) => i,
                None => match self.new_family(&s.name) {
                    Some(i) => i,
                    None => return,
                },
            },
        };
        self.out.families[i].samples.push(s);
        self.out.samples += 1;
        self.current = Some(i);
    }

    /// The family a sample name belongs to, outside the current one.
    fn lookup(&self, name: &str) -> Option<usize> {
        if let Some(&i) = self.index.get(name) {
            return Some(i);
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = name.strip_suffix(suffix)?;
            let &i = self.index.get(base)?;
            self.out.families[i].owns(name).then_some(i)
        })
    }
}

/// The text up to the first blank or tab, and the rest.
fn token(s: &str) -> (&str, &str) {
    match s.find([' ', '\t']) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    }
}

/// HELP text: `\\` and `\n` are escapes; any other backslash stays as it is.
fn unescape_help(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                Some('n') => {
                    out.push('\n');
                    chars.next();
                }
                _ => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while b.get(i).copied().is_some_and(is_blank) {
        i += 1;
    }
    i
}

/// `name [{labels}] value [timestamp]`, or `None` if the line is malformed.
fn sample(line: &str, max_labels: usize) -> Option<Sample> {
    let b = line.as_bytes();
    let mut i = 0;
    while b
        .get(i)
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b':')
    {
        i += 1;
    }
    let name = line.get(..i)?;
    if !valid_metric_name(name) {
        return None;
    }
    // The name ends at a blank or the label set.
    if !matches!(b.get(i), Some(b'{' | b' ' | b'\t')) {
        return None;
    }
    i = skip_blanks(b, i);
    let mut labels: Labels = Vec::new();
    if b.get(i) == Some(&b'{') {
        i = label_set(line, i + 1, max_labels, &mut labels)?;
        i = skip_blanks(b, i);
    }
    let start = i;
    while b.get(i).is_some_and(|c| !is_blank(*c)) {
        i += 1;
    }
    let value = parse_value(line.get(start..i)?)?;
    i = skip_blanks(b, i);
    let mut timestamp_ms = None;
    if i < b.len() {
        let start = i;
        while b.get(i).is_some_and(|c| !is_blank(*c)) {
            i += 1;
        }
        timestamp_ms = Some(line.get(start..i)?.parse::<i64>().ok()?);
        if skip_blanks(b, i) < b.len() {
            return None;
        }
    }
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp_ms,
    })
}

/// Reads `name="value", …}` from `i` (just after `{`); returns the index after `}`.
fn label_set(line: &str, mut i: usize, max_labels: usize, labels: &mut Labels) -> Option<usize> {
    let b = line.as_bytes();
    loop {
        i = skip_blanks(b, i);
        match b.get(i)? {
            b'}' => return Some(i + 1),
            c if c.is_ascii_alphabetic() || *c == b'_' => {}
            _ => return None,
        }
        let start = i;
        while b
            .get(i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            i += 1;
        }
        let name = line.get(start..i)?;
        i = skip_blanks(b, i);
        if b.get(i) != Some(&b'=') {
            return None;
        }
        i = skip_blanks(b, i + 1);
        if b.get(i) != Some(&b'"') {
            return None;
        }
        i += 1;
        let mut value = String::new();
        loop {
            match b.get(i)? {
                b'"' => {
                    i += 1;
                    break;
                }
                b'\\' => {
                    value.push(match b.get(i + 1)? {
                        b'\\' => '\\',
                        b'"' => '"',
                        b'n' => '\n',
                        _ => return None,
                    });
                    i += 2;
                }
                _ => {
                    let start = i;
                    while b.get(i).is_some_and(|c| *c != b'"' && *c != b'\\') {
                        i += 1;
                    }
                    value.push_str(line.get(start..i)?);
                }
            }
        }
        if labels.len() >= max_labels || labels.iter().any(|(n, _)| n == name) {
            return None;
        }
        labels.push((name.to_string(), value));
        i = skip_blanks(b, i);
        match b.get(i)? {
            b',' => i += 1,
            b'}' => return Some(i + 1),
            _ => return None,
        }
    }
}

/// A sample value: a float as Go's `ParseFloat` reads it, `NaN`, `Inf`, `+Inf`, `-Inf`.
fn parse_value(s: &str) -> Option<f64> {
    // Rust's parser also takes "infinity" and "nan" in any case; Go's takes the same words.
    // It rejects what Go rejects here except hex floats and `_` separators (Go needs a base
    // prefix for those), which no exporter writes.
    if s.len() > 64 {
        return None;
    }
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Parsed {
        parse(text, &ParseLimits::default())
    }

    fn labels(s: &Sample) -> Vec<(&str, &str)> {
        s.labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn a_typical_exposition() {
        let text = "\
# HELP http_requests_total The total number of HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000
http_requests_total{method=\"post\",code=\"400\"}    3 1395066363000

# Escaping in label values:
msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\"} 1.458255915e9

# Minimalistic line:
metric_without_timestamp_and_labels 12.47

# A weird metric from before the epoch:
something_weird{problem=\"division by zero\"} +Inf -3982045

# A histogram, which has a pretty complex representation in the text format:
# HELP http_request_duration_seconds A histogram of the request duration.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le=\"0.05\"} 24054
http_request_duration_seconds_bucket{le=\"+Inf\"} 144320
http_request_duration_seconds_sum 53423
http_request_duration_seconds_count 144320

# Finally a summary, which has a complex representation, too:
# HELP rpc_duration_seconds A summary of the RPC duration in seconds.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile=\"0.01\"} 3102
rpc_duration_seconds{quantile=\"0.99\"} 76656
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
";
        let r = p(text);
        assert_eq!(r.malformed_lines, 0);
        assert_eq!(r.samples, 13);
        let names: Vec<(&str, MetricType, usize)> = r
            .families
            .iter()
            .map(|f| (f.name.as_str(), f.kind, f.samples.len()))
            .collect();
        assert_eq!(
            names,
            [
                ("http_requests_total", MetricType::Counter, 2),
                ("msdos_file_access_time_seconds", MetricType::Untyped, 1),
                (
                    "metric_without_timestamp_and_labels",
                    MetricType::Untyped,
                    1
                ),
                ("something_weird", MetricType::Untyped, 1),
                ("http_request_duration_seconds", MetricType::Histogram, 4),
                ("rpc_duration_seconds", MetricType::Summary, 4),
            ]
        );
        let first = &r.families[0].samples[1];
        assert_eq!(first.value, 3.0);
        assert_eq!(first.timestamp_ms, Some(1_395_066_363_000));
        assert_eq!(labels(first), [("method", "post"), ("code", "400")]);
        let dos = &r.families[1].samples[0];
        assert_eq!(
            labels(dos),
            [
                ("path", "C:\\DIR\\FILE.TXT"),
                ("error", "Cannot find file:\n\"FILE.TXT\"")
            ]
        );
        assert_eq!(r.families[3].samples[0].value, f64::INFINITY);
        assert_eq!(r.families[3].samples[0].timestamp_ms, Some(-3_982_045));
        assert_eq!(
            r.families[0].help.as_deref(),
            Some("The total number of HTTP requests.")
        );
    }

    #[test]
    fn values_and_whitespace() {
        let r = p("a NaN\nb -Inf\nc Inf\nd\t1e3\t\te 1\nf{} .5\ng {x=\"1\" , } 2 \r\n  h 1\r\n");
        let got: Vec<(&str, f64)> = r
            .families
            .iter()
            .map(|f| (f.name.as_str(), f.samples[0].value))
            .collect();
        assert!(got[0].1.is_nan());
        assert_eq!(
            got[1..],
            [
                ("b", f64::NEG_INFINITY),
                ("c", f64::INFINITY),
                ("f", 0.5),
                ("g", 2.0),
                ("h", 1.0)
            ]
        );
        assert_eq!(r.malformed_lines, 1, "`d 1e3 e 1` has a bad timestamp");
    }

    #[test]
    fn malformed_lines_are_counted_and_skipped() {
        let bad = [
            "1abc 1",
            "a",
            "a 1 2 3",
            "a{ 1",
            "a{b} 1",
            "a{b=1} 1",
            "a{b=\"1} 1",
            "a{b=\"\\x\"} 1",
            "a{b=\"1\",b=\"2\"} 1",
            "a{b=\"1\"c=\"2\"} 1",
            "a{1b=\"1\"} 1",
            "a 1_000",
            "a 0x10",
            "a 1 1.5",
            "a-b 1",
            "é 1",
            "a{} ",
            "# TYPE a nonsense",
            "# TYPE 1a gauge",
            "# TYPE a gauge extra",
            "# HELP",
        ];
        for line in bad {
            let r = p(&format!("{line}\nok 1\n"));
            assert_eq!(r.malformed_lines, 1, "{line:?}");
            assert_eq!(r.samples, 1, "{line:?}");
        }
        let r = p("# just a comment\n#\n# HELPER x\n#TYPE a gauge\na 1\n");
        assert_eq!(r.malformed_lines, 0);
        assert_eq!(r.families[0].kind, MetricType::Gauge);
    }

    #[test]
    fn type_and_help_rules() {
        // A second TYPE, a TYPE after samples and a second HELP are malformed.
        let r = p(
            "a 1\n# TYPE a gauge\n# TYPE b gauge\n# TYPE b counter\n# HELP b x\n# HELP b y\nb 2\n",
        );
        assert_eq!(r.malformed_lines, 3);
        assert_eq!(r.families[0].kind, MetricType::Untyped);
        assert_eq!(r.families[1].kind, MetricType::Gauge);
        assert_eq!(r.families[1].help.as_deref(), Some("x"));
        // Help escapes: \\ and \n; anything else stays.
        let r = p("# HELP a  x\\\\y\\nz\\q\\\n");
        assert_eq!(r.families[0].help.as_deref(), Some("x\\y\nz\\q\\"));
        // OpenMetrics types are untyped here.
        let r = p("# TYPE a unknown\na 1\n# EOF\n");
        assert_eq!(r.families[0].kind, MetricType::Untyped);
        assert_eq!(r.malformed_lines, 0);
    }

    #[test]
    fn samples_find_their_family() {
        let r = p("\
# TYPE h histogram
h_bucket{le=\"1\"} 1
x 1
h_sum 2
h_count 1
h_total 1
# TYPE g gauge
g_sum 1
");
        let fams: Vec<(&str, usize)> = r
            .families
            .iter()
            .map(|f| (f.name.as_str(), f.samples.len()))
            .collect();
        assert_eq!(
            fams,
            [("h", 3), ("x", 1), ("h_total", 1), ("g", 0), ("g_sum", 1)]
        );
    }

    #[test]
    fn limits() {
        let limits = ParseLimits {
            max_samples: 3,
            max_families: 2,
            max_labels: 2,
        };
        let r = parse("a 1\na 2\nb 1\nc 1\nb 2\nb 3\n", &limits);
        assert_eq!(r.samples, 3);
        assert_eq!(r.families.len(), 2);
        assert_eq!(r.over_limit, 3);
        let r = parse(
            "a{x=\"1\",y=\"2\"} 1\na{x=\"1\",y=\"2\",z=\"3\"} 1\n",
            &limits,
        );
        assert_eq!((r.samples, r.malformed_lines), (1, 1));
        let r = parse("# HELP a x\n# HELP b x\n# HELP c x\n", &limits);
        assert_eq!((r.families.len(), r.over_limit), (2, 1));
    }

    #[test]
    fn relabel_overwrites_and_adds() {
        let mut r = p("a{app=\"evil\",x=\"1\"} 1\nb 2\n");
        relabel(
            &mut r.families,
            &[("app", "web"), ("region", "ams"), ("instance", "m1")],
        );
        assert_eq!(
            labels(&r.families[0].samples[0]),
            [
                ("app", "web"),
                ("x", "1"),
                ("region", "ams"),
                ("instance", "m1")
            ]
        );
        assert_eq!(
            labels(&r.families[1].samples[0]),
            [("app", "web"), ("region", "ams"), ("instance", "m1")]
        );
    }
}
