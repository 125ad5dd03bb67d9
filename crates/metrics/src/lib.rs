//! `hangar-metrics`: the Prometheus text exposition format (0.0.4) without a client library.
//!
//! - [`Families`]: the metric families of one exposition, written by [`Families::render`]
//!   (HELP and TYPE headers, label and help escaping, every family once, its samples together).
//! - [`Registry`]: long-lived [`Counter`]s, [`Gauge`]s and [`Histogram`]s (atomics) that are
//!   collected into [`Families`] at each exposition.
//! - [`parse`]: reads the text format as apps serve it into families: comments, escapes,
//!   timestamps, `NaN`/`±Inf`; malformed lines are skipped and counted, never fatal; sizes
//!   are bounded by [`ParseLimits`]. [`relabel`] then sets the platform's labels.
//!
//! Whatever [`parse`] returns renders to text that parses back to the same families (a fixed
//! point: the fuzz target `metrics_text` checks it).
//!
//! Must not: do IO, spawn tasks, or know about machines (callers add those labels).

mod parse;
mod registry;
mod write;

pub use parse::{ParseLimits, Parsed, parse, relabel};
pub use registry::{
    Counter, DURATION_BUCKETS, Gauge, Histogram, Registry, SHARDS, set_thread_shard,
};

use std::collections::HashMap;

/// The `Content-Type` of a text exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The kind of a metric family (its `# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// Only goes up (resets on restart).
    Counter,
    /// Any value.
    Gauge,
    /// Cumulative buckets (`_bucket{le}`), `_sum` and `_count`.
    Histogram,
    /// Quantiles (`{quantile}`), `_sum` and `_count`.
    Summary,
    /// Unknown.
    Untyped,
}

impl MetricType {
    /// The word used in `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
        }
    }

    /// The type a `# TYPE` line names; OpenMetrics-only types are read as untyped.
    pub fn from_type_word(word: &str) -> Option<Self> {
        Some(match word {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" | "unknown" | "info" | "stateset" | "gaugehistogram" => MetricType::Untyped,
            _ => return None,
        })
    }
}

/// Label pairs of a sample, in order.
pub type Labels = Vec<(String, String)>;

/// One line of an exposition: a value of one series.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's metric name (a histogram's `x_bucket`, `x_sum`, …).
    pub name: String,
    /// Its labels.
    pub labels: Labels,
    /// Its value.
    pub value: f64,
    /// Milliseconds since the epoch, when the exposition gave one.
    pub timestamp_ms: Option<i64>,
}

/// A metric family: a name, its help and type, and its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The family name.
    pub name: String,
    /// `# HELP` text.
    pub help: Option<String>,
    /// `# TYPE`.
    pub kind: MetricType,
    /// Its samples, in order.
    pub samples: Vec<Sample>,
}

impl Family {
    /// An empty family.
    pub fn new(name: &str, help: &str, kind: MetricType) -> Self {
        Self {
            name: name.to_string(),
            help: (!help.is_empty()).then(|| help.to_string()),
            kind,
            samples: Vec::new(),
        }
    }

    /// Adds a sample named like the family.
    pub fn add(&mut self, labels: &[(&str, &str)], value: f64) {
        let name = self.name.clone();
        self.add_named(&name, labels, value);
    }

    /// Adds a sample with its own name (a histogram's `_bucket`, `_sum`, `_count`).
    pub fn add_named(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.samples.push(Sample {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            value,
            timestamp_ms: None,
        });
    }

    /// Whether a sample called `sample` belongs to this family: its own name, or for
    /// histograms `_bucket`/`_sum`/`_count`, for summaries `_sum`/`_count`.
    pub fn owns(&self, sample: &str) -> bool {
        if sample == self.name {
            return true;
        }
        let Some(suffix) = sample.strip_prefix(self.name.as_str()) else {
            return false;
        };
        match self.kind {
            MetricType::Histogram => matches!(suffix, "_bucket" | "_sum" | "_count"),
            MetricType::Summary => matches!(suffix, "_sum" | "_count"),
            _ => false,
        }
    }
}

/// The families of one exposition, in the order they were first added; each name once.
#[derive(Debug, Clone, Default)]
pub struct Families {
    list: Vec<Family>,
    index: HashMap<String, usize>,
}

impl Families {
    /// No families.
    pub fn new() -> Self {
        Self::default()
    }

    /// The family `name`, made (with `help` and `kind`) if it is not there yet. An existing
    /// family keeps its own help and type.
    pub fn family(&mut self, name: &str, help: &str, kind: MetricType) -> &mut Family {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.list.push(Family::new(name, help, kind));
                self.index.insert(name.to_string(), self.list.len() - 1);
                self.list.len() - 1
            }
        };
        &mut self.list[i]
    }

    /// Adds a gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.family(name, help, MetricType::Gauge)
            .add(labels, value);
    }

    /// Adds a counter sample.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.family(name, help, MetricType::Counter)
            .add(labels, value);
    }

    /// Adds a whole family (e.g. a scraped one): its samples join a same-named family of the
    /// same type. Returns how many samples were dropped because a same-named family has
    /// another type.
    pub fn merge(&mut self, family: Family) -> usize {
        match self.index.get(&family.name) {
            Some(&i) => {
                let have = &mut self.list[i];
                if have.kind != family.kind {
                    return family.samples.len();
                }
                if have.help.is_none() {
                    have.help = family.help;
                }
                have.samples.extend(family.samples);
                0
            }
            None => {
                self.index.insert(family.name.clone(), self.list.len());
                self.list.push(family);
                0
            }
        }
    }

    /// The family `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Family> {
        self.index.get(name).map(|&i| &self.list[i])
    }

    /// The families in order.
    pub fn iter(&self) -> impl Iterator<Item = &Family> {
        self.list.iter()
    }

    /// Number of families.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether there is no family.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Number of samples over all families.
    pub fn sample_count(&self) -> usize {
        self.list.iter().map(|f| f.samples.len()).sum()
    }

    /// The text exposition (format 0.0.4). Families without a writable sample are left out;
    /// samples with invalid names, duplicate or invalid label names, or a name that does not
    /// belong to their family are skipped, so the output always parses.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for f in &self.list {
            write::family(&mut out, f);
        }
        out
    }
}

/// Whether `name` is a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn valid_metric_name(name: &str) -> bool {
    let mut b = name.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// Whether `name` is a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn valid_label_name(name: &str) -> bool {
    let mut b = name.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_metric_name("fly_instance_up"));
        assert!(valid_metric_name(":a:b_1"));
        assert!(!valid_metric_name("1a"));
        assert!(!valid_metric_name(""));
        assert!(!valid_metric_name("a-b"));
        assert!(!valid_metric_name("é"));
        assert!(valid_label_name("_x1"));
        assert!(!valid_label_name("a:b"));
        assert!(!valid_label_name(""));
    }

    #[test]
    fn ownership_by_type() {
        let h = Family::new("x", "", MetricType::Histogram);
        assert!(h.owns("x") && h.owns("x_bucket") && h.owns("x_sum") && h.owns("x_count"));
        assert!(!h.owns("x_total") && !h.owns("xy_sum") && !h.owns("y"));
        let s = Family::new("x", "", MetricType::Summary);
        assert!(s.owns("x_sum") && !s.owns("x_bucket"));
        let g = Family::new("x", "", MetricType::Gauge);
        assert!(g.owns("x") && !g.owns("x_sum"));
    }

    #[test]
    fn merge_joins_same_type_and_drops_conflicts() {
        let mut fams = Families::new();
        fams.gauge("a", "first", &[("k", "1")], 1.0);
        let mut other = Family::new("a", "second", MetricType::Gauge);
        other.add(&[("k", "2")], 2.0);
        assert_eq!(fams.merge(other), 0);
        let a = fams.get("a").expect("a");
        assert_eq!(a.samples.len(), 2);
        assert_eq!(a.help.as_deref(), Some("first"));
        let mut c = Family::new("a", "", MetricType::Counter);
        c.add(&[], 1.0);
        c.add(&[], 2.0);
        assert_eq!(fams.merge(c), 2);
        assert_eq!(fams.sample_count(), 2);
        let mut b = Family::new("b", "", MetricType::Counter);
        b.add(&[], 1.0);
        assert_eq!(fams.merge(b), 0);
        assert_eq!(fams.len(), 2);
    }
}
