//! `Duration`: Go `time.ParseDuration` / `Duration.String()` parity and JSON forms.

use hangar_api_types::{Duration, DurationError};
use serde_json::json;

const NS: i64 = 1;
const US: i64 = 1_000;
const MS: i64 = 1_000_000;
const S: i64 = 1_000_000_000;
const M: i64 = 60 * S;
const H: i64 = 60 * M;

/// Valid cases from Go's `time` package tests, plus a few of ours.
const PARSE_OK: &[(&str, i64)] = &[
    // simple
    ("0", 0),
    ("5s", 5 * S),
    ("30s", 30 * S),
    ("1478s", 1478 * S),
    // sign
    ("-5s", -5 * S),
    ("+5s", 5 * S),
    ("-0", 0),
    ("+0", 0),
    // decimal
    ("5.0s", 5 * S),
    ("5.6s", 5 * S + 600 * MS),
    ("5.s", 5 * S),
    (".5s", 500 * MS),
    ("1.0s", S),
    ("1.00s", S),
    ("1.004s", S + 4 * MS),
    ("1.0040s", S + 4 * MS),
    ("100.00100s", 100 * S + MS),
    ("1.5h", H + 30 * M),
    // units
    ("10ns", 10 * NS),
    ("11us", 11 * US),
    ("12\u{00b5}s", 12 * US),
    ("12\u{03bc}s", 12 * US),
    ("13ms", 13 * MS),
    ("14s", 14 * S),
    ("15m", 15 * M),
    ("16h", 16 * H),
    // composite
    ("3h30m", 3 * H + 30 * M),
    ("10.5s4m", 4 * M + 10 * S + 500 * MS),
    ("-2m3.4s", -(2 * M + 3 * S + 400 * MS)),
    (
        "1h2m3s4ms5us6ns",
        H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS,
    ),
    ("39h9m14.425s", 39 * H + 9 * M + 14 * S + 425 * MS),
    ("1m21s", 81 * S),
    // large
    ("52763797000ns", 52_763_797_000),
    ("0.3333333333333333333h", 20 * M),
    ("9007199254740993ns", (1 << 53) + 1),
    ("9223372036854775807ns", i64::MAX),
    ("9223372036854775.807us", i64::MAX),
    ("9223372036s854ms775us807ns", i64::MAX),
    ("-9223372036854775808ns", i64::MIN),
    ("-9223372036854775.808us", i64::MIN),
    ("-9223372036s854ms775us808ns", i64::MIN),
    ("-2562047h47m16.854775808s", i64::MIN),
    ("0.100000000000000000000h", 6 * M),
    ("0.830103483285477580700h", 49 * M + 48 * S + 372_539_827),
];

/// Invalid cases with Go's exact error text.
const PARSE_ERR: &[(&str, &str)] = &[
    ("", r#"time: invalid duration """#),
    ("3", r#"time: missing unit in duration "3""#),
    ("-", r#"time: invalid duration "-""#),
    ("s", r#"time: invalid duration "s""#),
    (".", r#"time: invalid duration ".""#),
    ("-.", r#"time: invalid duration "-.""#),
    (".s", r#"time: invalid duration ".s""#),
    ("+.s", r#"time: invalid duration "+.s""#),
    ("1d", r#"time: unknown unit "d" in duration "1d""#),
    ("1.5", r#"time: missing unit in duration "1.5""#),
    ("1sec", r#"time: unknown unit "sec" in duration "1sec""#),
    ("1 s", r#"time: unknown unit " s" in duration "1 s""#),
    ("\u{FFFD}", r#"time: invalid duration "\xef\xbf\xbd""#),
    (
        "\u{FFFD} hello \u{FFFD} world",
        r#"time: invalid duration "\xef\xbf\xbd hello \xef\xbf\xbd world""#,
    ),
    (
        "1µx",
        r#"time: unknown unit "\xc2\xb5x" in duration "1\xc2\xb5x""#,
    ),
    (
        "9223372036854775810ns",
        r#"time: invalid duration "9223372036854775810ns""#,
    ),
    (
        "9223372036854775808ns",
        r#"time: invalid duration "9223372036854775808ns""#,
    ),
    (
        "9223372036854775.808us",
        r#"time: invalid duration "9223372036854775.808us""#,
    ),
    (
        "9223372036854ms775us808ns",
        r#"time: invalid duration "9223372036854ms775us808ns""#,
    ),
    (
        "99999999999999999999h",
        r#"time: invalid duration "99999999999999999999h""#,
    ),
    ("3000000h", r#"time: invalid duration "3000000h""#),
    ("\"1s\"", r#"time: invalid duration "\"1s\"""#),
];

/// `Duration.String()` cases from Go plus the forms the platform emits.
const FORMAT: &[(i64, &str)] = &[
    (0, "0s"),
    (NS, "1ns"),
    (1100 * NS, "1.1\u{00b5}s"),
    (2 * US, "2\u{00b5}s"),
    (2200 * US, "2.2ms"),
    (500 * MS, "500ms"),
    (1500 * MS, "1.5s"),
    (3300 * MS, "3.3s"),
    (15 * S, "15s"),
    (81 * S, "1m21s"),
    (4 * M + 5 * S, "4m5s"),
    (4 * M + 5001 * MS, "4m5.001s"),
    (5 * M, "5m0s"),
    (H, "1h0m0s"),
    (90 * M, "1h30m0s"),
    (5 * H + 6 * M + 7001 * MS, "5h6m7.001s"),
    (8 * M + NS, "8m0.000000001s"),
    (-M, "-1m0s"),
    (-NS, "-1ns"),
    (-1500 * US, "-1.5ms"),
    (i64::MAX, "2562047h47m16.854775807s"),
    (i64::MIN, "-2562047h47m16.854775808s"),
];

#[test]
fn parse_go_valid_table() {
    for (input, want) in PARSE_OK {
        let got = Duration::parse_go(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(got, Duration(*want), "parse {input:?}");
        // FromStr agrees.
        assert_eq!(input.parse::<Duration>().ok(), Some(Duration(*want)));
    }
}

#[test]
fn parse_go_invalid_table_with_go_messages() {
    for (input, message) in PARSE_ERR {
        let err = Duration::parse_go(input).expect_err(input);
        assert_eq!(err.to_string(), *message, "error for {input:?}");
    }
    assert_eq!(
        Duration::parse_go("7x"),
        Err(DurationError::UnknownUnit {
            unit: "x".into(),
            input: "7x".into()
        })
    );
    assert_eq!(
        Duration::parse_go("12"),
        Err(DurationError::MissingUnit("12".into()))
    );
}

#[test]
fn display_matches_go_string() {
    for (nanos, want) in FORMAT {
        assert_eq!(Duration(*nanos).to_string(), *want, "format {nanos}ns");
    }
}

#[test]
fn display_then_parse_round_trips() {
    let mut values: Vec<i64> = FORMAT.iter().map(|(n, _)| *n).collect();
    values.extend(PARSE_OK.iter().map(|(_, n)| *n));
    // A spread of magnitudes and odd digits.
    let mut x: i64 = 1;
    while x < i64::MAX / 7 {
        values.push(x);
        values.push(-x);
        values.push(x + 123_456_789);
        x *= 7;
    }
    for v in values {
        let text = Duration(v).to_string();
        assert_eq!(Duration::parse_go(&text), Ok(Duration(v)), "{v} -> {text}");
    }
}

#[test]
fn helpers() {
    assert_eq!(Duration::from_secs(90).to_string(), "1m30s");
    assert_eq!(Duration::from_millis(250).as_nanos(), 250 * MS);
    assert_eq!(Duration::from_mins(2).as_secs(), 120);
    assert_eq!(Duration::from_hours(1), Duration(H));
    assert_eq!(Duration::from_micros(3).as_nanos(), 3_000);
    assert_eq!(
        Duration::from_secs(i64::MAX),
        Duration(i64::MAX),
        "saturates"
    );
    assert_eq!(
        Duration::from_secs(3).to_std(),
        Some(std::time::Duration::from_secs(3))
    );
    assert_eq!(Duration(-1).to_std(), None);
    assert_eq!(
        Duration::from_std(std::time::Duration::from_millis(5)),
        Some(Duration::from_millis(5))
    );
    assert_eq!(Duration::from_std(std::time::Duration::MAX), None);
    assert_eq!(Duration::default(), Duration::ZERO);
}

#[test]
fn json_writes_go_string() {
    assert_eq!(
        serde_json::to_value(Duration::from_secs(15)).ok(),
        Some(json!("15s"))
    );
    assert_eq!(serde_json::to_value(Duration(0)).ok(), Some(json!("0s")));
    assert_eq!(
        serde_json::to_value(Duration::from_mins(-1)).ok(),
        Some(json!("-1m0s"))
    );
    assert_eq!(
        serde_json::to_string(&Duration::from_micros(2))
            .ok()
            .as_deref(),
        Some("\"2\u{00b5}s\"")
    );
}

#[test]
fn json_reads_strings_and_nanosecond_numbers() {
    let read =
        |v: serde_json::Value| serde_json::from_value::<Duration>(v).map_err(|e| e.to_string());
    assert_eq!(read(json!("1m21s")), Ok(Duration(81 * S)));
    assert_eq!(read(json!("0")), Ok(Duration(0)));
    assert_eq!(read(json!(5_000_000_000_i64)), Ok(Duration(5 * S)));
    assert_eq!(read(json!(-7)), Ok(Duration(-7)));
    assert_eq!(
        read(json!(u64::try_from(i64::MAX).expect("fits"))),
        Ok(Duration(i64::MAX))
    );
    // Floats truncate toward zero, like Go's float64 -> int64 conversion.
    assert_eq!(read(json!(1.9)), Ok(Duration(1)));
    assert_eq!(read(json!(-1.9)), Ok(Duration(-1)));
    assert_eq!(read(json!(1e9)), Ok(Duration(S)));
    // fly-go: null is zero.
    assert_eq!(read(json!(null)), Ok(Duration(0)));
    // From a JSON text (exercises the borrowed-string path).
    assert_eq!(
        serde_json::from_str::<Duration>("\"1.5h\"").ok(),
        Some(Duration(90 * M))
    );
}

#[test]
fn json_rejects_garbage_with_clear_errors() {
    let err = |v: serde_json::Value| {
        serde_json::from_value::<Duration>(v)
            .expect_err("must fail")
            .to_string()
    };
    assert_eq!(err(json!("10")), r#"time: missing unit in duration "10""#);
    assert_eq!(err(json!("soon")), r#"time: invalid duration "soon""#);
    assert!(err(json!(u64::MAX)).contains("overflows int64"));
    assert!(err(json!(1e19)).contains("overflows int64"));
    assert!(err(json!(true)).contains("a Go duration string"));
    assert!(err(json!([1])).contains("a Go duration string"));
    assert!(err(json!({"time.Duration": 1})).contains("a Go duration string"));
    // Position information survives for text input.
    let e = serde_json::from_str::<Duration>("\"5 parsecs\"").expect_err("must fail");
    assert!(e.to_string().contains("unknown unit"), "{e}");
}

#[test]
fn json_round_trip() {
    for (nanos, _) in FORMAT {
        let d = Duration(*nanos);
        let text = serde_json::to_string(&d).expect("serialise");
        assert_eq!(
            serde_json::from_str::<Duration>(&text).ok(),
            Some(d),
            "{text}"
        );
    }
}
