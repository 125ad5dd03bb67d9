//! The text exposition writer.

use std::fmt::Write as _;

use crate::{Family, Sample, valid_label_name, valid_metric_name};

/// Whether a sample can be written under `f`'s header and parse back into `f`.
fn writable(f: &Family, s: &Sample) -> bool {
    valid_metric_name(&s.name)
        && f.owns(&s.name)
        && s.labels
            .iter()
            .enumerate()
            .all(|(i, (k, _))| valid_label_name(k) && !s.labels[..i].iter().any(|(k2, _)| k2 == k))
}

/// Writes one family (nothing if it has no writable sample).
pub(crate) fn family(out: &mut String, f: &Family) {
    if !valid_metric_name(&f.name) || !f.samples.iter().any(|s| writable(f, s)) {
        return;
    }
    if let Some(help) = &f.help {
        out.push_str("# HELP ");
        out.push_str(&f.name);
        out.push(' ');
        escape_help(out, help);
        out.push('\n');
    }
    out.push_str("# TYPE ");
    out.push_str(&f.name);
    out.push(' ');
    out.push_str(f.kind.as_str());
    out.push('\n');
    for s in f.samples.iter().filter(|s| writable(f, s)) {
        sample(out, s);
    }
}

fn sample(out: &mut String, s: &Sample) {
    out.push_str(&s.name);
    if !s.labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in s.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    value(out, s.value);
    if let Some(ts) = s.timestamp_ms {
        let _ = write!(out, " {ts}");
    }
    out.push('\n');
}

/// A value as the text format writes it: `NaN`, `+Inf`, `-Inf`, integers without a
/// fraction, anything else in Rust's shortest round-trip form (`0.25`, `1e-7`).
pub(crate) fn value(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else if v.fract() == 0.0 && v.abs() < 9_007_199_254_740_992.0 {
        let _ = write!(out, "{}", v as i64);
    } else {
        let _ = write!(out, "{v:?}");
    }
}

fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Families, Family, MetricType, Sample};

    fn v(x: f64) -> String {
        let mut s = String::new();
        super::value(&mut s, x);
        s
    }

    #[test]
    fn values() {
        assert_eq!(v(1.0), "1");
        assert_eq!(v(-3.0), "-3");
        assert_eq!(v(-0.0), "0");
        assert_eq!(v(0.25), "0.25");
        assert_eq!(v(1e-7), "1e-7");
        assert_eq!(v(1e300), "1e300");
        assert_eq!(v(f64::NAN), "NaN");
        assert_eq!(v(f64::INFINITY), "+Inf");
        assert_eq!(v(f64::NEG_INFINITY), "-Inf");
        assert_eq!(v(9_007_199_254_740_991.0), "9007199254740991");
    }

    #[test]
    fn exposition_shape() {
        let mut fams = Families::new();
        fams.gauge(
            "fly_instance_up",
            "1 when the machine runs.\nElse 0 \\o/",
            &[("app", "web"), ("instance", "a\"b\\c\nd")],
            1.0,
        );
        fams.counter("hangar_x_total", "", &[], 5.0);
        let h = fams.family("lat_seconds", "Latency.", MetricType::Histogram);
        h.add_named("lat_seconds_bucket", &[("le", "+Inf")], 2.0);
        h.add_named("lat_seconds_sum", &[], 0.5);
        h.add_named("lat_seconds_count", &[], 2.0);
        let text = fams.render();
        assert_eq!(
            text,
            "# HELP fly_instance_up 1 when the machine runs.\\nElse 0 \\\\o/\n\
             # TYPE fly_instance_up gauge\n\
             fly_instance_up{app=\"web\",instance=\"a\\\"b\\\\c\\nd\"} 1\n\
             # TYPE hangar_x_total counter\n\
             hangar_x_total 5\n\
             # HELP lat_seconds Latency.\n\
             # TYPE lat_seconds histogram\n\
             lat_seconds_bucket{le=\"+Inf\"} 2\n\
             lat_seconds_sum 0.5\n\
             lat_seconds_count 2\n"
        );
    }

    #[test]
    fn unwritable_samples_are_skipped() {
        let mut f = Family::new("g", "", MetricType::Gauge);
        let bad = |name: &str, labels: &[(&str, &str)]| Sample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            value: 1.0,
            timestamp_ms: None,
        };
        f.samples.push(bad("g", &[("a", "1"), ("a", "2")]));
        f.samples.push(bad("g", &[("1a", "1")]));
        f.samples.push(bad("other", &[]));
        f.samples.push(bad("g_sum", &[]));
        let mut fams = Families::new();
        fams.merge(f.clone());
        assert_eq!(fams.render(), "", "nothing writable: no header either");
        f.samples.push(Sample {
            timestamp_ms: Some(-5),
            ..bad("g", &[("ok", "")])
        });
        let mut fams = Families::new();
        fams.merge(f);
        assert_eq!(fams.render(), "# TYPE g gauge\ng{ok=\"\"} 1 -5\n");
        let mut fams = Families::new();
        fams.gauge("bad name", "", &[], 1.0);
        assert_eq!(fams.render(), "");
    }
}
