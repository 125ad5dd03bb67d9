//! Size units as the reference CLI reads them (PLATFORM.md §1.2).
//!
//! A bare number is already in the field's unit (MB for memory, GB for volumes). A string
//! with a unit is read like docker's `go-units`: memory with binary multipliers
//! (`RAMInBytes`: `"1gb"` = 1024 MB), volume sizes with decimal ones (`FromHumanSize`:
//! `"30gb"` = 30 GB).

use thiserror::Error;

/// A size string that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid size '{input}': {reason}")]
pub struct SizeError {
    /// What was given.
    pub input: String,
    /// Why it failed.
    pub reason: &'static str,
}

const MIB: u64 = 1024 * 1024;
const GB: u64 = 1_000_000_000;

/// Memory in MB from a `[[vm]] memory` value: a bare number is MB, else binary units.
pub fn memory_mb(input: &str) -> Result<i64, SizeError> {
    parse_size(input, 1024, MIB)
}

/// Volume size in GB from `initial_size` and friends: a bare number is GB, else decimal units.
pub fn volume_gb(input: &str) -> Result<i64, SizeError> {
    parse_size(input, 1000, GB)
}

fn parse_size(input: &str, base: u64, unit: u64) -> Result<i64, SizeError> {
    let s = input.trim();
    let err = |reason| SizeError {
        input: input.to_string(),
        reason,
    };
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    // ^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, rest) = s.split_at(num_end);
    if num.is_empty() || num.starts_with('.') || num.ends_with('.') || num.contains("..") {
        return Err(err(
            "expected a number followed by an optional unit such as mb or gb",
        ));
    }
    let number: f64 = num.parse().map_err(|_| err("not a number"))?;
    let mut rest = rest.strip_prefix(' ').unwrap_or(rest).chars().peekable();
    let power = match rest.peek().map(char::to_ascii_lowercase) {
        Some('k') => 1,
        Some('m') => 2,
        Some('g') => 3,
        Some('t') => 4,
        Some('p') => 5,
        _ => 0,
    };
    if power > 0 {
        rest.next();
    }
    if rest.peek().is_some_and(|c| c.eq_ignore_ascii_case(&'i')) {
        rest.next();
    }
    if rest.peek().is_some_and(|c| c.eq_ignore_ascii_case(&'b')) {
        rest.next();
    }
    if rest.next().is_some() {
        return Err(err(
            "unknown unit; use one of k, m, g, t, p (optionally followed by b)",
        ));
    }
    let bytes = number * (base as f64).powi(power);
    if !bytes.is_finite() || bytes > i64::MAX as f64 {
        return Err(err("too large"));
    }
    Ok((bytes as u64 / unit) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_binary() {
        assert_eq!(memory_mb("512"), Ok(512));
        assert_eq!(memory_mb("512mb"), Ok(512));
        assert_eq!(memory_mb("1gb"), Ok(1024));
        assert_eq!(memory_mb("1GB"), Ok(1024));
        assert_eq!(memory_mb("8g"), Ok(8192));
        assert_eq!(memory_mb("2 GiB"), Ok(2048));
        assert_eq!(memory_mb("1.5gb"), Ok(1536));
        assert!(memory_mb("lots").is_err());
        assert!(memory_mb("1xb").is_err());
        assert!(memory_mb("").is_err());
    }

    #[test]
    fn volumes_are_decimal() {
        assert_eq!(volume_gb("30gb"), Ok(30));
        assert_eq!(volume_gb("20GB"), Ok(20));
        assert_eq!(volume_gb("10"), Ok(10));
        assert_eq!(volume_gb("500mb"), Ok(0));
        assert!(volume_gb("ten").is_err());
    }
}
