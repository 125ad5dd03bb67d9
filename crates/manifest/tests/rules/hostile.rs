//! Hostile input: whatever the bytes, reading and validating returns an error or findings,
//! never panics, never overflows the stack, and finishes quickly.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hangar_manifest::{
    ConvertOptions, Format, LoadError, MAX_MANIFEST_BYTES, ValidateOptions, load, machine_configs,
    parse,
};

use crate::dump;

/// Anything below this is "quick" even in a debug build on a loaded machine; what it guards
/// against is quadratic behaviour, which takes minutes on these inputs.
const QUICK: Duration = Duration::from_secs(10);

const FORMATS: [Format; 3] = [Format::Toml, Format::Json, Format::Yaml];

/// A file in the temp dir, removed on drop (even when the test fails).
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("hangar-rules-{}-{n}-{name}", std::process::id()));
        std::fs::write(&path, bytes).expect("write temp file");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Parses, validates (strict) and converts; returns "error" or "findings", failing the test
/// when the input is silently accepted with no finding at all, or when it takes too long.
fn survive(text: &str, format: Format) -> &'static str {
    let start = Instant::now();
    let outcome = match parse(text, format, "fly.hostile") {
        Err(e) => {
            let f = e.finding().expect("syntax errors carry a finding");
            assert!(
                f.line > 0 && f.column > 0,
                "syntax error without a position: {f}"
            );
            "error"
        }
        Ok(m) => {
            let r = m.validate(ValidateOptions { strict: true });
            assert!(
                !r.findings.is_empty(),
                "{}: accepted without any finding",
                format.as_str()
            );
            assert!(
                r.findings.iter().all(|f| f.line > 0 && f.column > 0),
                "{}",
                dump(&r)
            );
            let read = |_: &str| Ok(b"x".to_vec());
            let _ = machine_configs(
                &m.config,
                ConvertOptions {
                    image: Some("img:1"),
                    read_file: Some(&read),
                },
            );
            "findings"
        }
    };
    assert!(
        start.elapsed() < QUICK,
        "{}: took {:?}",
        format.as_str(),
        start.elapsed()
    );
    outcome
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn junk(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn binary_junk_is_an_error_or_findings_in_every_format() {
    for seed in 1..=20 {
        let bytes = junk(4096, seed);
        let text = String::from_utf8_lossy(&bytes);
        for format in FORMATS {
            survive(&text, format);
        }
    }
    // Printable junk with the punctuation of all three formats.
    let alphabet = b"[]{}=:,\"'#-\n \t.1aZ&*!|>";
    for seed in 1..=50 {
        let text: String = junk(2048, seed)
            .iter()
            .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
            .collect();
        for format in FORMATS {
            survive(&text, format);
        }
    }
}

#[test]
fn binary_file_is_an_error_on_load() {
    let mut bytes = b"app = \"x\"\n\xff".to_vec();
    bytes.extend(junk(1024, 7).iter().map(|b| b | 0x80));
    let f = TempFile::new("junk.toml", &bytes);
    let err = load(f.path()).expect_err("binary is not a manifest");
    let finding = err.finding().expect("a finding");
    assert_eq!((finding.line, finding.column), (2, 1), "{finding}");
}

#[test]
fn invalid_utf8_is_an_error_with_its_position() {
    let f = TempFile::new("bad-utf8.toml", b"app = \"x\"\n[env]\nA = \"caf\xe9\"\n");
    let err = load(f.path()).expect_err("invalid UTF-8");
    let finding = err.finding().expect("a finding");
    assert_eq!(finding.message, "the file is not valid UTF-8 text");
    assert_eq!((finding.line, finding.column), (3, 9), "{finding}");
    assert_eq!(finding.file, f.path().display().to_string());
    // Same through a .json and a .yaml name.
    for name in ["bad.json", "bad.yaml"] {
        let f = TempFile::new(name, b"{\"app\": \"\xff\"}");
        let err = load(f.path()).expect_err("invalid UTF-8");
        assert!(matches!(err, LoadError::Syntax(_)), "{err}");
    }
}

#[test]
fn a_missing_file_is_an_io_error() {
    let path = std::env::temp_dir().join(format!(
        "hangar-rules-{}-does-not-exist.toml",
        std::process::id()
    ));
    let err = load(&path).expect_err("missing");
    assert!(matches!(err, LoadError::Io { .. }), "{err}");
    assert!(err.finding().is_none());
}

#[test]
fn a_10mb_file_is_refused_for_its_size_quickly() {
    let mut text = String::from("app = \"big\"\n[env]\n");
    let mut i = 0;
    while text.len() < 10 * 1024 * 1024 {
        text.push_str(&format!("K{i} = \"{}\"\n", "v".repeat(100)));
        i += 1;
    }
    let start = Instant::now();
    let err = parse(&text, Format::Toml, "fly.toml").expect_err("too large");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let f = err.finding().expect("a finding");
    assert!(f.message.contains("a manifest may be at most"), "{f}");
    assert_eq!((f.line, f.column), (1, 1));

    let file = TempFile::new("big.toml", text.as_bytes());
    let start = Instant::now();
    let err = load(file.path()).expect_err("too large");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    let f = err.finding().expect("a finding");
    assert!(
        f.message.contains(&format!(
            "a manifest may be at most {MAX_MANIFEST_BYTES} bytes"
        )),
        "{f}"
    );
}

#[test]
fn just_under_the_size_limit_is_still_read() {
    let mut text = String::from("app = \"big\"\n[env]\n");
    let mut i = 0;
    while text.len() < MAX_MANIFEST_BYTES - 200 {
        text.push_str(&format!("K{i} = \"v\"\n"));
        i += 1;
    }
    let start = Instant::now();
    let m = parse(&text, Format::Toml, "fly.toml").expect("under the limit");
    assert_eq!(m.config.env.len(), i);
    let _ = m.validate(ValidateOptions { strict: true });
    assert!(start.elapsed() < QUICK, "{:?}", start.elapsed());
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let n = 100_000;
    let cases = [
        (Format::Toml, format!("a = {}", "[".repeat(n))),
        (
            Format::Toml,
            format!("a = {}1{}", "[".repeat(n), "]".repeat(n)),
        ),
        (Format::Toml, format!("a = {}", "{b = ".repeat(n))),
        (Format::Toml, format!("a{} = 1", ".b".repeat(n))),
        (Format::Toml, format!("[a{}]", ".b".repeat(n))),
        (Format::Json, "[".repeat(n)),
        (Format::Json, format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        (Format::Json, "{\"a\":".repeat(n)),
        (Format::Yaml, "[".repeat(n)),
        (Format::Yaml, format!("{}1{}", "[".repeat(n), "]".repeat(n))),
        (Format::Yaml, "{a: ".repeat(n)),
        (Format::Yaml, "- ".repeat(n)),
        (
            Format::Yaml,
            (0..1_000)
                .map(|i| format!("{}k:\n", " ".repeat(i)))
                .collect::<String>(),
        ),
    ];
    for (format, text) in cases {
        // Every one is refused as too deep, with a position.
        assert_eq!(survive(&text, format), "error", "{}", format.as_str());
    }
}

#[test]
fn nesting_within_the_limit_is_read() {
    for format in FORMATS {
        let text = match format {
            Format::Toml => format!(
                "app = \"x\"\n[build.settings]\nk = {}1{}\n",
                "[".repeat(60),
                "]".repeat(60)
            ),
            Format::Json => format!(
                "{{\"app\": \"x\", \"build\": {{\"settings\": {{\"k\": {}1{}}}}}}}",
                "[".repeat(60),
                "]".repeat(60)
            ),
            Format::Yaml => format!(
                "app: x\nbuild:\n  settings:\n    k: {}1{}\n",
                "[".repeat(60),
                "]".repeat(60)
            ),
        };
        let m = parse(&text, format, "f").unwrap_or_else(|e| panic!("{}: {e}", format.as_str()));
        assert!(m.parse_findings.is_empty(), "{:?}", m.parse_findings);
        let settings = &m.config.build.expect("build").settings;
        assert!(settings.contains_key("k"), "{}", format.as_str());
    }
}

#[test]
fn huge_integers_are_findings() {
    // (format, text, an error rather than only a warning)
    for (format, text, error) in [
        (
            Format::Toml,
            "app = \"x\"\nswap_size_mb = 99999999999999999999\n",
            true,
        ),
        (
            Format::Toml,
            "app = \"x\"\n[[services]]\ninternal_port = 99999999999999999999\n[[services.ports]]\nport = -99999999999999999999\n",
            true,
        ),
        (
            Format::Toml,
            "app = \"x\"\nkill_timeout = 9223372036854775807\n",
            true,
        ),
        // i64::MAX MB is a number Hangar reads; it is only outside the per-CPU bounds.
        (
            Format::Toml,
            "app = \"x\"\n[[vm]]\nmemory = 9223372036854775807\n",
            false,
        ),
        (
            Format::Toml,
            "app = \"x\"\n[[vm]]\nmemory = 99999999999999999999\n",
            true,
        ),
        (
            Format::Toml,
            "app = \"x\"\n[[vm]]\nmemory = \"99999999999999999999gb\"\n",
            true,
        ),
        (
            Format::Toml,
            "app = \"x\"\n[[mounts]]\nsource = \"d\"\ndestination = \"/d\"\ninitial_size = \"1e30gb\"\n",
            true,
        ),
        (
            Format::Toml,
            "app = \"x\"\nkill_timeout = \"9999999999999h\"\n",
            true,
        ),
        (
            Format::Json,
            "{\"app\": \"x\", \"swap_size_mb\": 99999999999999999999}",
            true,
        ),
        (
            Format::Json,
            "{\"app\": \"x\", \"kill_timeout\": -99999999999999999999}",
            true,
        ),
        (
            Format::Yaml,
            "app: x\nswap_size_mb: 99999999999999999999\n",
            true,
        ),
        (
            Format::Yaml,
            "app: x\nhttp_service:\n  internal_port: 1e300\n",
            true,
        ),
    ] {
        let m = parse(text, format, "f").unwrap_or_else(|e| panic!("{text}: {e}"));
        let r = m.validate(ValidateOptions::default());
        assert!(!r.findings.is_empty(), "{text}: accepted silently");
        assert_eq!(!r.is_valid(), error, "{text}:\n{}", dump(&r));
        assert!(r.findings.iter().all(|f| f.line > 0), "{}", dump(&r));
    }
}

#[test]
fn nan_and_infinite_floats_are_findings() {
    for (format, text, at) in [
        (
            Format::Toml,
            "app = \"x\"\n[deploy]\nmax_unavailable = nan\n",
            (3, 19),
        ),
        (
            Format::Toml,
            "app = \"x\"\n[deploy]\nmax_unavailable = inf\n",
            (3, 19),
        ),
        (
            Format::Toml,
            "app = \"x\"\n[deploy]\nmax_unavailable = -inf\n",
            (3, 19),
        ),
        (Format::Toml, "app = \"x\"\nkill_timeout = nan\n", (2, 16)),
        (
            Format::Toml,
            "app = \"x\"\n[http_service]\ninternal_port = inf\n",
            (3, 17),
        ),
        (Format::Toml, "app = \"x\"\n[[vm]]\nmemory = nan\n", (3, 10)),
        (
            Format::Toml,
            "app = \"x\"\n[deploy]\nmax_unavailable = 1e999\n",
            (3, 19),
        ),
        (
            Format::Yaml,
            "app: x\ndeploy:\n  max_unavailable: .nan\n",
            (3, 20),
        ),
        (
            Format::Yaml,
            "app: x\ndeploy:\n  max_unavailable: -.inf\n",
            (3, 20),
        ),
        (
            Format::Json,
            "{\"app\": \"x\", \"deploy\": {\"max_unavailable\": 1e999}}",
            (1, 44),
        ),
    ] {
        let m = parse(text, format, "f").unwrap_or_else(|e| panic!("{text}: {e}"));
        let r = m.validate(ValidateOptions::default());
        let errors: Vec<_> = r.errors().collect();
        assert_eq!(errors.len(), 1, "{text}:\n{}", dump(&r));
        assert_eq!(
            (errors[0].line, errors[0].column),
            at,
            "{text}:\n{}",
            dump(&r)
        );
    }
    // JSON has no NaN literal at all.
    assert!(
        parse(
            "{\"deploy\": {\"max_unavailable\": NaN}}",
            Format::Json,
            "f"
        )
        .is_err()
    );
    // In [env] a non-finite float is just text, as Go prints it.
    let m = parse("app = \"x\"\n[env]\nA = nan\nB = -inf\n", Format::Toml, "f").expect("parses");
    assert_eq!(m.config.env.get("A").map(String::as_str), Some("NaN"));
    assert_eq!(m.config.env.get("B").map(String::as_str), Some("-Inf"));
}

#[test]
fn empty_and_comment_only_files_are_findings_or_errors() {
    assert_eq!(survive("", Format::Toml), "findings");
    assert_eq!(survive("# just a comment\n", Format::Toml), "findings");
    assert_eq!(survive("\n\n   \n", Format::Toml), "findings");
    assert_eq!(survive("", Format::Yaml), "findings");
    assert_eq!(survive("# just a comment\n", Format::Yaml), "findings");
    assert_eq!(survive("", Format::Json), "error");
    assert_eq!(survive("// comment\n", Format::Json), "error");
    // The finding is the missing app name, at the top of the file.
    let r = parse("# just a comment\n", Format::Toml, "fly.toml")
        .expect("parses")
        .validate(ValidateOptions::default());
    assert_eq!(r.findings.len(), 1, "{}", dump(&r));
    assert_eq!(
        (r.findings[0].path.as_str(), r.findings[0].line),
        ("app", 1)
    );
}

#[test]
fn non_table_documents_are_findings() {
    for (format, text) in [
        (Format::Json, "[1, 2]"),
        (Format::Json, "\"fly\""),
        (Format::Json, "null"),
        (Format::Yaml, "- a\n- b\n"),
        (Format::Yaml, "just text"),
        (Format::Yaml, "~"),
    ] {
        let m = parse(text, format, "f").expect("syntactically valid");
        let r = m.validate(ValidateOptions::default());
        assert!(!r.is_valid(), "{text}");
        assert!(
            r.findings[0].message.contains("must be a table"),
            "{}",
            dump(&r)
        );
    }
}

#[test]
fn keys_with_control_characters_are_handled() {
    let cases = [
        (
            Format::Toml,
            "app = \"x\"\n\"a\\u0000b\" = 1\n[env]\n\"K\\u0000\" = \"v\"\n\"A=B\\n\" = \"v\"\n\"\\u001b[31m\" = \"red\"\n",
        ),
        (Format::Toml, "app = \"x\"\na\u{0}b = 1\n"),
        (Format::Toml, "app = \"x\"\n[env]\nA = \"\u{1}\"\n"),
        (
            Format::Json,
            "{\"app\": \"x\", \"a\\u0000\": 1, \"env\": {\"K\\u0000\": \"v\", \"\\u001b\": \"v\"}}",
        ),
        (Format::Json, "{\"app\": \"x\", \"a\u{1}\": 1}"),
        (
            Format::Yaml,
            "app: x\n\"a\\0b\": 1\nenv:\n  \"K\\0\": v\n  \"\\e\": v\n",
        ),
        (Format::Yaml, "app: x\na\u{1}b: 1\n"),
        (Format::Yaml, "app: x\n? [complex, key]\n: 1\n"),
    ];
    for (format, text) in cases {
        survive(text, format);
    }
    // NUL in an env name is an error at the key's value.
    let m = parse(cases[0].1, Format::Toml, "fly.toml").expect("parses");
    let r = m.validate(ValidateOptions { strict: true });
    let env_errors: Vec<_> = r.errors().filter(|f| f.path.starts_with("env.")).collect();
    assert_eq!(env_errors.len(), 2, "{}", dump(&r));
    assert!(
        r.findings
            .iter()
            .any(|f| f.message.contains("unrecognized section or key 'a\0b'")),
        "{}",
        dump(&r)
    );
}

#[test]
fn yaml_alias_bomb_is_refused_quickly() {
    let bomb = r#"a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"#;
    assert_eq!(survive(bomb, Format::Yaml), "error");
    let f = parse(bomb, Format::Yaml, "fly.yaml").expect_err("aliases refused");
    let f = f.finding().expect("finding");
    assert!(f.message.contains("aliases are not supported"), "{f}");
    assert_eq!((f.line, f.column), (2, 8), "{f}");
    // Anchors alone are harmless, and merge keys are plain keys.
    let m = parse("app: x\nenv: &e\n  A: b\n", Format::Yaml, "fly.yaml").expect("anchors are fine");
    assert_eq!(m.config.env.get("A").map(String::as_str), Some("b"));
    let r = parse("app: x\n<<: {a: 1}\n", Format::Yaml, "fly.yaml")
        .expect("parses")
        .validate(ValidateOptions { strict: true });
    assert!(r.findings.iter().any(|f| f.path == "<<"), "{}", dump(&r));
}

#[test]
fn multi_document_yaml_reads_only_the_first() {
    let m = parse("app: one\n---\napp: two\n", Format::Yaml, "fly.yaml").expect("parses");
    assert_eq!(m.config.app.as_deref(), Some("one"));
}

#[test]
fn long_strings_and_many_keys_are_fine() {
    let long = "x".repeat(500_000);
    survive(&format!("app = \"{long}\"\n"), Format::Toml);
    survive(&format!("app: {long}\n"), Format::Yaml);
    survive(&format!("{{\"app\": \"{long}\"}}"), Format::Json);
    let many: String = (0..20_000)
        .map(|i| format!("[[services]]\ninternal_port = {i}\n"))
        .collect();
    survive(&many, Format::Toml);
    let statics: String = (0..5_000)
        .map(|i| format!("[[statics]]\nguest_path = \"/p\"\nurl_prefix = \"/p{i}\"\n"))
        .collect();
    survive(&statics, Format::Toml);
}

#[test]
fn large_files_of_one_kind_stay_fast() {
    /// A file just under the size limit: `head`, then `a(i)` up to `split` bytes, then `b(i)`.
    fn fill(
        head: &str,
        split: usize,
        a: &dyn Fn(usize) -> String,
        b: &dyn Fn(usize) -> String,
    ) -> String {
        let mut text = String::from(head);
        let mut i = 0;
        while text.len() < split {
            text.push_str(&a(i));
            i += 1;
        }
        let mut j = 0;
        while text.len() < MAX_MANIFEST_BYTES - 200 {
            text.push_str(&b(j));
            j += 1;
        }
        text
    }
    let all = MAX_MANIFEST_BYTES - 200;
    let half = MAX_MANIFEST_BYTES / 2;
    let none = |_: usize| String::new();
    let process = |i: usize| {
        if i == 0 {
            "[processes]\n".to_string()
        } else {
            format!("p{i} = \"\"\n")
        }
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "reserved env names",
            fill(
                "app = \"x\"\n[env]\n",
                all,
                &|i| format!("FLY_{i} = \"v\"\n"),
                &none,
            ),
        ),
        (
            "duplicate env names",
            fill(
                "app = \"x\"\n",
                all,
                &|i| format!("[[env]]\nK{} = {i}\n", i % 7),
                &none,
            ),
        ),
        (
            "unknown keys",
            fill("app = \"x\"\n", all, &|i| format!("k{i} = 1\n"), &none),
        ),
        (
            "checks",
            fill("app = \"x\"\n", all, &|i| format!("[checks.c{i}]\n"), &none),
        ),
        (
            "statics",
            fill(
                "app = \"x\"\n",
                all,
                &|i| format!("[[statics]]\nguest_path = \"/p\"\nurl_prefix = \"/p{i}\"\n"),
                &none,
            ),
        ),
        (
            "same static",
            fill(
                "app = \"x\"\n",
                all,
                &|_| "[[statics]]\nguest_path = \"/p\"\nurl_prefix = \"/p\"\n".into(),
                &none,
            ),
        ),
        (
            "services",
            fill(
                "app = \"x\"\n",
                all,
                &|i| format!("[[services]]\ninternal_port = {i}\n"),
                &none,
            ),
        ),
        (
            "groups and metrics",
            fill("app = \"x\"\n", half, &process, &|_| "[[metrics]]\n".into()),
        ),
        (
            "groups and vms",
            fill("app = \"x\"\n", half, &process, &|i| {
                format!("[[vm]]\nprocesses = [\"p{}\"]\n", i % 9 + 1)
            }),
        ),
        (
            "groups and mounts",
            fill("app = \"x\"\n", half, &process, &|_| "[[mounts]]\n".into()),
        ),
        (
            "groups and services",
            fill("app = \"x\"\n", half, &process, &|i| {
                format!("[[services]]\nprocesses = [\"nope{i}\"]\n")
            }),
        ),
    ];
    for (name, text) in cases {
        let start = Instant::now();
        let m = parse(&text, Format::Toml, "fly.toml").unwrap_or_else(|e| panic!("{name}: {e}"));
        let r = m.validate(ValidateOptions::default());
        let plain = start.elapsed();
        assert!(plain < QUICK, "{name}: {plain:?}");
        // --strict adds a "did you mean" search per unknown key: allow a debug build more.
        let strict = m.validate(ValidateOptions { strict: true });
        assert!(strict.findings.len() >= r.findings.len(), "{name}");
        assert!(start.elapsed() < 2 * QUICK, "{name}: {:?}", start.elapsed());
    }
    // JSON and YAML allow a key twice: thousands of legacy `mount` / `metric` keys.
    let mut json = String::from("{\"app\": \"x\"");
    let mut yaml = String::from("app: x\n");
    while json.len() < MAX_MANIFEST_BYTES - 200 {
        json.push_str(", \"mount\": {}, \"metric\": {}");
        yaml.push_str("mount: {}\nmetric: {}\n");
    }
    json.push('}');
    assert_eq!(survive(&json, Format::Json), "findings");
    assert_eq!(survive(&yaml, Format::Yaml), "findings");
}
