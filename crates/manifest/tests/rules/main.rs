//! Rule-by-rule tests of the fly.toml engine against PLATFORM.md §1: every legacy shape
//! (`legacy`), every validation rule with its position (`validation`), machine-config
//! conversion as reviewed golden files (`convert`), the three input formats and rendering
//! round trips (`formats`), and hostile input (`hostile`).
//!
//! `UPDATE_SNAPSHOTS=1 cargo test -p hangar-manifest --test rules` rewrites the golden files
//! of `convert` for review.

mod convert;
mod formats;
mod hostile;
mod legacy;
mod validation;

use hangar_manifest::{Finding, Format, Manifest, Report, Severity, ValidateOptions, parse};

/// Parses TOML text named `fly.toml`; panics on a syntax error.
pub fn manifest(toml: &str) -> Manifest {
    parse(toml, Format::Toml, "fly.toml").expect("the test manifest parses")
}

/// Parses and validates TOML text with the default (non-strict) rules.
pub fn check(toml: &str) -> Report {
    manifest(toml).validate(ValidateOptions::default())
}

/// Parses and validates TOML text with `--strict`.
pub fn check_strict(toml: &str) -> Report {
    manifest(toml).validate(ValidateOptions { strict: true })
}

/// Every finding, one per line, for failure messages.
pub fn dump(r: &Report) -> String {
    r.findings.iter().map(|f| format!("{f}\n")).collect()
}

/// The one finding whose message contains `needle`; fails when there are none or several.
pub fn find<'a>(r: &'a Report, needle: &str) -> &'a Finding {
    let hits: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.message.contains(needle))
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "expected exactly one finding containing {needle:?}, got:\n{}",
        dump(r)
    );
    hits[0]
}

/// Asserts the one finding at `path` whose message contains `needle` has this severity and
/// 1-based position.
pub fn assert_finding(r: &Report, severity: Severity, path: &str, at: (u32, u32), needle: &str) {
    let hits: Vec<&Finding> = r
        .findings
        .iter()
        .filter(|f| f.path == path && f.message.contains(needle))
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "expected one finding at {path} containing {needle:?}, got:\n{}",
        dump(r)
    );
    let f = hits[0];
    assert_eq!(
        (f.severity, (f.line, f.column)),
        (severity, at),
        "finding {needle:?} in:\n{}",
        dump(r)
    );
}

/// Asserts the errors are exactly one per needle (each error message contains its needle).
pub fn assert_errors(r: &Report, needles: &[&str]) {
    let errors: Vec<&Finding> = r.errors().collect();
    assert_eq!(
        errors.len(),
        needles.len(),
        "expected errors {needles:?}, got:\n{}",
        dump(r)
    );
    for needle in needles {
        assert_eq!(
            errors.iter().filter(|f| f.message.contains(needle)).count(),
            1,
            "expected one error containing {needle:?}, got:\n{}",
            dump(r)
        );
    }
}

/// Asserts there is no error finding (warnings are allowed).
pub fn assert_no_errors(r: &Report) {
    assert!(r.is_valid(), "unexpected errors:\n{}", dump(r));
}

/// Asserts there is no finding at all.
pub fn assert_clean(r: &Report) {
    assert!(r.findings.is_empty(), "unexpected findings:\n{}", dump(r));
}
