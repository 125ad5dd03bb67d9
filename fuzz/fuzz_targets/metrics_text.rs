//! Any bytes, read as a Prometheus text exposition (as a scraped app might serve them):
//! parsing must return, never panic or hang, and what it returns must render to text that
//! parses back to the same families with no malformed line, also after relabelling.
#![no_main]

use hangar_metrics::{Families, Family, ParseLimits, parse, relabel};
use libfuzzer_sys::fuzz_target;

fn render(families: &[Family]) -> String {
    let mut set = Families::new();
    for f in families {
        set.merge(f.clone());
    }
    set.render()
}

fn same(a: &[Family], b: &[Family]) -> bool {
    let a: Vec<&Family> = a.iter().filter(|f| !f.samples.is_empty()).collect();
    let b: Vec<&Family> = b.iter().filter(|f| !f.samples.is_empty()).collect();
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            (&x.name, &x.help, x.kind) == (&y.name, &y.help, y.kind)
                && x.samples.len() == y.samples.len()
                && x.samples.iter().zip(&y.samples).all(|(s, t)| {
                    s.name == t.name
                        && s.labels == t.labels
                        && s.timestamp_ms == t.timestamp_ms
                        && (s.value == t.value || (s.value.is_nan() && t.value.is_nan()))
                })
        })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let limits = ParseLimits {
        max_samples: 1000,
        max_families: 100,
        max_labels: 16,
    };
    let mut first = parse(&text, &limits);
    let text2 = render(&first.families);
    let second = parse(&text2, &ParseLimits::default());
    assert_eq!(
        second.malformed_lines, 0,
        "rendered text did not parse:\n{text2}"
    );
    assert!(
        same(&first.families, &second.families),
        "not a fixed point:\n{text2}"
    );

    relabel(
        &mut first.families,
        &[("app", "a"), ("region", "r"), ("instance", "i\"\\\n")],
    );
    let text3 = render(&first.families);
    let third = parse(&text3, &ParseLimits::default());
    assert_eq!(
        third.malformed_lines, 0,
        "relabelled text did not parse:\n{text3}"
    );
    assert!(
        same(&first.families, &third.families),
        "relabel broke it:\n{text3}"
    );
});
