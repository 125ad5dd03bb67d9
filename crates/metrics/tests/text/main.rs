//! The text format end to end: what is rendered parses back the same, whatever is parsed
//! renders to something that parses back the same, and hostile input neither panics nor
//! takes more than linear time.

use std::time::{Duration, Instant};

use hangar_metrics::{Families, Family, MetricType, ParseLimits, Parsed, Sample, parse, relabel};
use proptest::prelude::*;

/// Families without samples are not rendered; NaN equals NaN here.
fn same(a: &[Family], b: &[Family]) -> Result<(), String> {
    let a: Vec<&Family> = a.iter().filter(|f| !f.samples.is_empty()).collect();
    let b: Vec<&Family> = b.iter().filter(|f| !f.samples.is_empty()).collect();
    if a.len() != b.len() {
        return Err(format!("{} families vs {}", a.len(), b.len()));
    }
    for (x, y) in a.iter().zip(&b) {
        let meta = (&x.name, &x.help, x.kind) == (&y.name, &y.help, y.kind);
        let samples = x.samples.len() == y.samples.len()
            && x.samples.iter().zip(&y.samples).all(|(s, t)| {
                s.name == t.name
                    && s.labels == t.labels
                    && s.timestamp_ms == t.timestamp_ms
                    && (s.value == t.value || (s.value.is_nan() && t.value.is_nan()))
            });
        if !meta || !samples {
            return Err(format!("{x:?}\n!=\n{y:?}"));
        }
    }
    Ok(())
}

fn render(families: &[Family]) -> String {
    let mut f = Families::new();
    for fam in families {
        f.merge(fam.clone());
    }
    f.render()
}

fn reparse(p: &Parsed) -> Parsed {
    parse(&render(&p.families), &ParseLimits::default())
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        (-1_000_000i64..1_000_000).prop_map(|i| i as f64),
        Just(-0.0),
    ]
}

fn kind() -> impl Strategy<Value = MetricType> {
    prop_oneof![
        Just(MetricType::Counter),
        Just(MetricType::Gauge),
        Just(MetricType::Histogram),
        Just(MetricType::Summary),
        Just(MetricType::Untyped),
    ]
}

prop_compose! {
    fn family()(
        name in "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}",
        // No leading blanks, no CR (the format can not carry them in HELP).
        help in proptest::option::of("([^ \t\r][^\r]{0,30})?"),
        kind in kind(),
        samples in proptest::collection::vec(
            (
                prop_oneof![Just(""), Just("_bucket"), Just("_sum"), Just("_count")],
                proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,6}", any::<String>(), 0..4),
                value(),
                proptest::option::of(any::<i64>()),
            ),
            1..5,
        ),
    ) -> Family {
        let mut f = Family { name: name.clone(), help, kind, samples: Vec::new() };
        for (suffix, labels, value, timestamp_ms) in samples {
            let sample = format!("{name}{suffix}");
            if f.owns(&sample) {
                f.samples.push(Sample {
                    name: sample,
                    labels: labels.into_iter().collect(),
                    value,
                    timestamp_ms,
                });
            }
        }
        f
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rendered_families_parse_back(fams in proptest::collection::vec(family(), 0..6)) {
        // Names may repeat: merge them the way an exposition would.
        let mut set = Families::new();
        for f in fams {
            set.merge(f);
        }
        let text = set.render();
        let parsed = parse(&text, &ParseLimits::default());
        prop_assert_eq!(parsed.malformed_lines, 0, "{}", text);
        let want: Vec<Family> = set.iter().cloned().collect();
        if let Err(e) = same(&want, &parsed.families) {
            return Err(TestCaseError::fail(format!("{e}\ntext:\n{text}")));
        }
    }

    #[test]
    fn parsing_anything_is_a_fixed_point(text in "(([a-z_{}=\",# \\\\\t.0-9nN+IEe-]|HELP|TYPE|histogram|_sum|_bucket)*\n){0,12}") {
        let first = parse(&text, &ParseLimits::default());
        let second = reparse(&first);
        prop_assert_eq!(second.malformed_lines, 0);
        if let Err(e) = same(&first.families, &second.families) {
            return Err(TestCaseError::fail(e));
        }
    }

    #[test]
    fn arbitrary_unicode_never_panics(text in any::<String>()) {
        let first = parse(&text, &ParseLimits::default());
        let second = reparse(&first);
        prop_assert_eq!(second.malformed_lines, 0);
        prop_assert!(same(&first.families, &second.families).is_ok());
    }
}

/// Parses within a bound generous enough for a debug build on a loaded host (each input is
/// 16 MiB or so: anything worse than linear would take hours).
fn timed(what: &str, text: &str) -> Parsed {
    let t = Instant::now();
    let p = parse(text, &ParseLimits::default());
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "{what}: {:?}",
        t.elapsed()
    );
    p
}

#[test]
fn hostile_inputs_stay_bounded() {
    // 16 MiB in one line, in many tiny lines, deep in a label value, as HELP lines.
    let mib = 16 << 20;
    let one_line = "a".repeat(mib);
    let p = timed("one long name", &one_line);
    assert_eq!((p.samples, p.malformed_lines), (0, 1));

    let p = timed("many samples", &"x 1\n".repeat(mib / 4));
    assert_eq!(p.samples, ParseLimits::default().max_samples);
    assert_eq!(p.over_limit, mib / 4 - p.samples);

    let p = timed(
        "many families",
        &(0..1_000_000)
            .map(|i| format!("m{i} 1\n"))
            .collect::<String>(),
    );
    assert_eq!(p.families.len(), ParseLimits::default().max_families);

    let value = format!("x{{a=\"{}\"}} 1\n", "\\\\".repeat(mib / 2));
    let p = timed("long escaped label value", &value);
    assert_eq!(p.samples, 1);
    assert_eq!(p.families[0].samples[0].labels[0].1.len(), mib / 2);

    let unterminated = format!("x{{a=\"{}", "b".repeat(mib));
    let p = timed("unterminated label value", &unterminated);
    assert_eq!((p.samples, p.malformed_lines), (0, 1));

    let labels = format!(
        "x{{{}}} 1\n",
        (0..100_000)
            .map(|i| format!("l{i}=\"v\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let p = timed("many labels", &labels);
    assert_eq!((p.samples, p.malformed_lines), (0, 1));

    let p = timed("many help lines", &"# HELP h x\n".repeat(mib / 11));
    assert_eq!(p.families.len(), 1);
    assert_eq!(p.malformed_lines, mib / 11 - 1);

    let p = timed(
        "binary",
        &String::from_utf8_lossy(&[0xff, 0, b'{', b'"', b'\n'].repeat(100_000)),
    );
    assert_eq!(p.samples, 0);

    let p = timed("only newlines", &"\n".repeat(mib));
    assert_eq!((p.samples, p.malformed_lines), (0, 0));
}

#[test]
fn relabelled_scrape_renders_with_platform_labels() {
    let mut p = parse(
        "# TYPE app_hits counter\napp_hits{instance=\"spoof\",path=\"/\"} 7\n",
        &ParseLimits::default(),
    );
    relabel(
        &mut p.families,
        &[("app", "web"), ("region", "ams"), ("instance", "abc")],
    );
    assert_eq!(
        render(&p.families),
        "# TYPE app_hits counter\napp_hits{instance=\"abc\",path=\"/\",app=\"web\",region=\"ams\"} 7\n"
    );
}
