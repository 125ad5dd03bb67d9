//! Go-compatible durations (`fly.Duration` on the wire).
//!
//! The reference platform serialises durations with Go's `time.Duration.String()`
//! (`"1m30s"`, `"500ms"`) and reads either such a string or a JSON number of
//! nanoseconds. [`Duration`] reproduces both directions exactly.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const NANOSECOND: u64 = 1;
const MICROSECOND: u64 = 1_000 * NANOSECOND;
const MILLISECOND: u64 = 1_000 * MICROSECOND;
const SECOND: u64 = 1_000 * MILLISECOND;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

/// `1 << 63`, the magnitude of `i64::MIN`; Go's parser works in `uint64` up to this bound.
const LIMIT: u64 = 1 << 63;

/// A signed span of time in nanoseconds, formatted and parsed like Go's `time.Duration`.
///
/// JSON: written as the Go string form (`"15s"`); read from a Go duration string or
/// from a JSON number meaning nanoseconds (the fly-go rule). `null` reads as zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub i64);

impl Duration {
    /// The zero duration (`"0s"`).
    pub const ZERO: Duration = Duration(0);

    /// A duration of `nanos` nanoseconds.
    pub const fn from_nanos(nanos: i64) -> Self {
        Duration(nanos)
    }

    /// A duration of `micros` microseconds (saturating on overflow).
    pub const fn from_micros(micros: i64) -> Self {
        Duration(micros.saturating_mul(MICROSECOND as i64))
    }

    /// A duration of `millis` milliseconds (saturating on overflow).
    pub const fn from_millis(millis: i64) -> Self {
        Duration(millis.saturating_mul(MILLISECOND as i64))
    }

    /// A duration of `secs` seconds (saturating on overflow).
    pub const fn from_secs(secs: i64) -> Self {
        Duration(secs.saturating_mul(SECOND as i64))
    }

    /// A duration of `mins` minutes (saturating on overflow).
    pub const fn from_mins(mins: i64) -> Self {
        Duration(mins.saturating_mul(MINUTE as i64))
    }

    /// A duration of `hours` hours (saturating on overflow).
    pub const fn from_hours(hours: i64) -> Self {
        Duration(hours.saturating_mul(HOUR as i64))
    }

    /// The length in nanoseconds.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// The length in whole milliseconds, truncated toward zero.
    pub const fn as_millis(self) -> i64 {
        self.0 / MILLISECOND as i64
    }

    /// The length in whole seconds, truncated toward zero.
    pub const fn as_secs(self) -> i64 {
        self.0 / SECOND as i64
    }

    /// The length in seconds as a float.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / SECOND as f64
    }

    /// Whether the duration is below zero.
    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    /// Converts to a [`std::time::Duration`]; `None` when negative.
    pub fn to_std(self) -> Option<std::time::Duration> {
        u64::try_from(self.0)
            .ok()
            .map(std::time::Duration::from_nanos)
    }

    /// Converts from a [`std::time::Duration`]; `None` when it exceeds `i64::MAX` nanoseconds.
    pub fn from_std(d: std::time::Duration) -> Option<Self> {
        i64::try_from(d.as_nanos()).ok().map(Duration)
    }

    /// Parses a duration string exactly like Go's `time.ParseDuration`.
    ///
    /// Accepts a signed sequence of decimal numbers, each with an optional fraction
    /// and a unit suffix (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`), such as
    /// `"300ms"`, `"-1.5h"` or `"2h45m"`. A bare `"0"` is zero; any other number
    /// needs a unit.
    pub fn parse_go(input: &str) -> Result<Duration, DurationError> {
        parse_go(input)
    }
}

impl fmt::Display for Duration {
    /// Formats exactly like Go's `time.Duration.String()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Largest output is "-2562047h47m16.854775808s" (25 bytes).
        let mut buf = [0u8; 32];
        let start = format_go(self.0, &mut buf);
        let text = std::str::from_utf8(&buf[start..]).map_err(|_| fmt::Error)?;
        f.write_str(text)
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_go(s)
    }
}

impl From<Duration> for i64 {
    fn from(d: Duration) -> i64 {
        d.0
    }
}

/// Why a Go duration string could not be parsed; messages match Go's `time` package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Empty input, stray characters, a number without digits, or overflow.
    #[error("time: invalid duration {}", go_quote(.0))]
    Invalid(String),
    /// A number with no unit after it (`"10"`).
    #[error("time: missing unit in duration {}", go_quote(.0))]
    MissingUnit(String),
    /// A unit outside `ns us µs μs ms s m h`.
    #[error(
        "time: unknown unit {} in duration {}",
        go_quote(unit),
        go_quote(input)
    )]
    UnknownUnit {
        /// The unrecognised unit text.
        unit: String,
        /// The whole input.
        input: String,
    },
}

/// Go's `time.quote`: ASCII printable as-is (escaping `"` and `\`), everything else as `\xNN` bytes.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if (c as u32) >= 0x80 || c < ' ' {
            let mut bytes = [0u8; 4];
            for b in c.encode_utf8(&mut bytes).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out.push('"');
    out
}

fn unit_nanos(unit: &[u8]) -> Option<u64> {
    match unit {
        b"ns" => Some(NANOSECOND),
        // "us", U+00B5 micro sign, U+03BC Greek small letter mu.
        b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => Some(MICROSECOND),
        b"ms" => Some(MILLISECOND),
        b"s" => Some(SECOND),
        b"m" => Some(MINUTE),
        b"h" => Some(HOUR),
        _ => None,
    }
}

/// Consumes leading `[0-9]*`; `None` on overflow past `1 << 63`.
fn leading_int(s: &[u8]) -> Option<(u64, &[u8])> {
    let mut x: u64 = 0;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if !c.is_ascii_digit() {
            break;
        }
        if x > LIMIT / 10 {
            return None;
        }
        x = x * 10 + u64::from(c - b'0');
        if x > LIMIT {
            return None;
        }
        i += 1;
    }
    Some((x, &s[i..]))
}

/// Consumes leading `[0-9]*` after a decimal point; stops gaining precision on overflow.
fn leading_fraction(s: &[u8]) -> (u64, f64, &[u8]) {
    let mut x: u64 = 0;
    let mut scale = 1.0_f64;
    let mut overflow = false;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if !c.is_ascii_digit() {
            break;
        }
        i += 1;
        if overflow {
            continue;
        }
        if x > (LIMIT - 1) / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + u64::from(c - b'0');
        if y > LIMIT {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[i..])
}

fn parse_go(orig: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(orig.to_owned());
    let mut s = orig.as_bytes();
    let mut d: u64 = 0;
    let mut neg = false;

    if let Some(&c) = s.first()
        && (c == b'-' || c == b'+')
    {
        neg = c == b'-';
        s = &s[1..];
    }
    if s == b"0" {
        return Ok(Duration(0));
    }
    if s.is_empty() {
        return Err(invalid());
    }
    while !s.is_empty() {
        let c = s[0];
        if !(c == b'.' || c.is_ascii_digit()) {
            return Err(invalid());
        }
        let before = s.len();
        let (mut v, rest) = leading_int(s).ok_or_else(invalid)?;
        s = rest;
        let pre = before != s.len();

        let mut f: u64 = 0;
        let mut scale = 1.0_f64;
        let mut post = false;
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let before = s.len();
            let (frac, sc, rest) = leading_fraction(s);
            f = frac;
            scale = sc;
            s = rest;
            post = before != s.len();
        }
        if !pre && !post {
            return Err(invalid());
        }

        let i = s
            .iter()
            .position(|&c| c == b'.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if i == 0 {
            return Err(DurationError::MissingUnit(orig.to_owned()));
        }
        let (unit_text, rest) = s.split_at(i);
        s = rest;
        let unit = unit_nanos(unit_text).ok_or_else(|| DurationError::UnknownUnit {
            unit: String::from_utf8_lossy(unit_text).into_owned(),
            input: orig.to_owned(),
        })?;
        if v > LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            // Same float arithmetic as Go: nanosecond-accurate for fractions of hours.
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        // Go adds in uint64 and can wrap here for absurd inputs (two terms of 2^63);
        // we report overflow instead.
        d = d.checked_add(v).ok_or_else(invalid)?;
        if d > LIMIT {
            return Err(invalid());
        }
    }
    if neg {
        // d <= 2^63, so the cast wraps 2^63 to i64::MIN, and negating it stays i64::MIN (as in Go).
        return Ok(Duration((d as i64).wrapping_neg()));
    }
    if d > LIMIT - 1 {
        return Err(invalid());
    }
    Ok(Duration(d as i64))
}

/// Writes `v / 10^prec` as a fraction (".123", trailing zeros and bare "." omitted)
/// into the tail of `buf[..w]`; returns the new start and `v / 10^prec`.
fn fmt_frac(buf: &mut [u8], mut w: usize, mut v: u64, prec: usize) -> (usize, u64) {
    let mut print = false;
    for _ in 0..prec {
        let digit = (v % 10) as u8;
        print = print || digit != 0;
        if print {
            w -= 1;
            buf[w] = digit + b'0';
        }
        v /= 10;
    }
    if print {
        w -= 1;
        buf[w] = b'.';
    }
    (w, v)
}

/// Writes `v` in decimal into the tail of `buf[..w]`; returns the new start.
fn fmt_int(buf: &mut [u8], mut w: usize, mut v: u64) -> usize {
    if v == 0 {
        w -= 1;
        buf[w] = b'0';
    } else {
        while v > 0 {
            w -= 1;
            buf[w] = (v % 10) as u8 + b'0';
            v /= 10;
        }
    }
    w
}

/// Port of Go's `Duration.format`; returns where the text starts in `buf`.
fn format_go(d: i64, buf: &mut [u8; 32]) -> usize {
    let mut w = buf.len();
    let neg = d < 0;
    let mut u = d.unsigned_abs();

    if u < SECOND {
        // Below one second: use ns, µs or ms with a fraction, like "1.2ms".
        w -= 1;
        buf[w] = b's';
        w -= 1;
        let prec;
        if u == 0 {
            buf[w] = b'0';
            return w;
        } else if u < MICROSECOND {
            prec = 0;
            buf[w] = b'n';
        } else if u < MILLISECOND {
            prec = 3;
            // U+00B5 micro sign, two bytes.
            w -= 1;
            buf[w..w + 2].copy_from_slice("µ".as_bytes());
        } else {
            prec = 6;
            buf[w] = b'm';
        }
        let (nw, nu) = fmt_frac(buf, w, u, prec);
        w = fmt_int(buf, nw, nu);
    } else {
        w -= 1;
        buf[w] = b's';
        let (nw, nu) = fmt_frac(buf, w, u, 9);
        w = nw;
        u = nu;
        // u is now whole seconds.
        w = fmt_int(buf, w, u % 60);
        u /= 60;
        if u > 0 {
            // Minutes.
            w -= 1;
            buf[w] = b'm';
            w = fmt_int(buf, w, u % 60);
            u /= 60;
            if u > 0 {
                // Hours; Go stops here because days vary in length.
                w -= 1;
                buf[w] = b'h';
                w = fmt_int(buf, w, u);
            }
        }
    }
    if neg {
        w -= 1;
        buf[w] = b'-';
    }
    w
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Go duration string such as \"1m30s\" or an integer number of nanoseconds")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        Ok(Duration(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        i64::try_from(v)
            .map(Duration)
            .map_err(|_| E::custom(format!("duration of {v} nanoseconds overflows int64")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        // fly-go converts float64 to int64 nanoseconds, truncating toward zero.
        // 2^63 is exactly representable as f64; the valid range is [-2^63, 2^63).
        const TWO_POW_63: f64 = 9_223_372_036_854_775_808_u64 as f64;
        if (-TWO_POW_63..TWO_POW_63).contains(&v) {
            Ok(Duration(v as i64))
        } else {
            Err(E::custom(format!(
                "duration of {v} nanoseconds overflows int64"
            )))
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_go(v).map_err(E::custom)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Duration, E> {
        // fly-go: `null` means zero.
        Ok(Duration(0))
    }

    fn visit_none<E: de::Error>(self) -> Result<Duration, E> {
        Ok(Duration(0))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }
}
