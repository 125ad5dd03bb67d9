//! Every real fly.toml of `shared/conformance/flytoml/real/` gets a verdict; the verdicts are
//! a reviewed snapshot (`verdicts.txt`). A panic, a finding without a position, or a change
//! of verdict fails the test. `UPDATE_SNAPSHOTS=1` rewrites the snapshot for review.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hangar_manifest::{ConvertOptions, ValidateOptions, load, machine_configs};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/flytoml/real")
}

fn verdict(path: &Path) -> String {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .to_string();
    let mut out = String::new();
    let m = match load(path) {
        Ok(m) => m,
        Err(e) => {
            let _ = writeln!(out, "{name}: unreadable: {e}");
            return out;
        }
    };
    let report = m.validate(ValidateOptions::default());
    let strict = m.validate(ValidateOptions { strict: true });
    let verdict = if !report.is_valid() {
        "rejected"
    } else if report.warnings().next().is_some() {
        "warned"
    } else {
        "accepted"
    };
    let _ = writeln!(out, "{name}: {verdict}");
    for f in &strict.findings {
        assert!(
            f.line > 0 && f.column > 0,
            "{name}: finding without a position: {f}"
        );
        let strict_only = !report.findings.contains(f);
        let tag = if strict_only { "strict " } else { "" };
        let _ = writeln!(
            out,
            "  {}:{} {tag}{} {}: {}",
            f.line,
            f.column,
            f.severity.as_str(),
            f.path,
            f.message
        );
    }
    if report.is_valid() {
        // Every accepted file converts into machine configs.
        let read = |_: &str| Ok(b"file-content".to_vec());
        let opts = ConvertOptions {
            image: Some("registry.example/app:1"),
            read_file: Some(&read),
        };
        if let Err(e) = machine_configs(&m.config, opts) {
            panic!("{name}: valid but conversion failed: {e}");
        }
    }
    out
}

#[test]
fn every_real_config_has_the_reviewed_verdict() {
    let dir = corpus_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus missing at {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 70,
        "expected the full corpus, found {}",
        files.len()
    );
    let actual: String = files.iter().map(|p| verdict(p)).collect();
    let snapshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/verdicts.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&snapshot, &actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&snapshot).unwrap_or_default();
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .filter(|(a, b)| a != b)
            .take(10)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .collect();
        panic!(
            "verdicts changed (run with UPDATE_SNAPSHOTS=1 and review the diff):\n{}",
            diff.join("\n")
        );
    }
}
