//! Ids and names, each a newtype with `parse` that says exactly what is wrong.

use std::fmt;

use thiserror::Error;

/// Why a string is not a valid id or name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {what} '{input}': {reason}")]
pub struct IdError {
    /// Which kind of id.
    pub what: &'static str,
    /// The rejected input, with control characters escaped.
    pub input: String,
    /// What rule it breaks.
    pub reason: &'static str,
}

fn err(what: &'static str, input: &str, reason: &'static str) -> IdError {
    let shown: String = input
        .chars()
        .take(80)
        .flat_map(char::escape_default)
        .collect();
    IdError {
        what,
        input: shown,
        reason,
    }
}

macro_rules! string_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
    };
}

string_id!(
    /// A machine id: 14 lowercase hex characters, e.g. `3d8d413b29d089`.
    MachineId
);
string_id!(
    /// An app name: 1–63 of `a-z`, `0-9`, `-`, not starting or ending with `-`. Unique across orgs.
    AppName
);
string_id!(
    /// An organisation slug (same alphabet as app names).
    OrgSlug
);
string_id!(
    /// A machine name: unique within its app; 1–63 of letters, digits, `-`, `_`, `.`.
    MachineName
);
string_id!(
    /// A volume id: `vol_` followed by 16 lowercase base-32 characters.
    VolumeId
);
string_id!(
    /// A WireGuard peer's name (PLATFORM.md §4.5): 1–15 of `a-z`, `0-9`, `-`, not starting or
    /// ending with `-`: it names the client's Linux interface (`wg-quick` takes the file name)
    /// and is a DNS label (`<peer>._peer.internal`). Unique within its org.
    PeerName
);
string_id!(
    /// A machine version id: a 26-character ULID, new on every update.
    InstanceId
);

const HEX: &[u8; 16] = b"0123456789abcdef";
const CROCKFORD: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const BASE32_LOWER: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

fn dns_label(what: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(err(what, s, "must not be empty"));
    }
    if s.len() > 63 {
        return Err(err(what, s, "must be at most 63 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(err(
            what,
            s,
            "may contain only lowercase letters, digits and '-'",
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(err(what, s, "must not start or end with '-'"));
    }
    Ok(())
}

impl MachineId {
    /// Parses a machine id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() != 14 || !s.bytes().all(|b| HEX.contains(&b)) {
            return Err(err("machine id", s, "must be 14 lowercase hex characters"));
        }
        Ok(Self(s.to_string()))
    }

    /// The id made of seven random bytes.
    pub fn from_bytes(b: [u8; 7]) -> Self {
        let mut s = String::with_capacity(14);
        for byte in b {
            s.push(HEX[usize::from(byte >> 4)] as char);
            s.push(HEX[usize::from(byte & 15)] as char);
        }
        Self(s)
    }
}

impl AppName {
    /// Parses an app name.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        dns_label("app name", s)?;
        Ok(Self(s.to_string()))
    }
}

impl OrgSlug {
    /// Parses an org slug.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        dns_label("org slug", s)?;
        Ok(Self(s.to_string()))
    }
}

impl PeerName {
    /// Parses a peer name.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        dns_label("peer name", s)?;
        if s.len() > 15 {
            return Err(err(
                "peer name",
                s,
                "must be at most 15 characters (it names a Linux interface)",
            ));
        }
        Ok(Self(s.to_string()))
    }

    /// Auto-named peers (`interactive-…`, made by tools for one session) are left out of
    /// `_peer.internal`.
    pub fn is_interactive(&self) -> bool {
        self.0.starts_with("interactive-")
    }
}

impl MachineName {
    /// Parses a machine name.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.is_empty() || s.len() > 63 {
            return Err(err("machine name", s, "must be 1 to 63 characters"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(err(
                "machine name",
                s,
                "may contain only letters, digits, '-', '_' and '.'",
            ));
        }
        if s.starts_with('.') || s.contains("..") {
            return Err(err(
                "machine name",
                s,
                "must not start with '.' or contain '..'",
            ));
        }
        Ok(Self(s.to_string()))
    }

    /// A generated name from two words and a number, like `quiet-river-4821`.
    pub fn generate(seed: u64) -> Self {
        const ADJ: [&str; 16] = [
            "quiet", "bold", "calm", "dark", "eager", "fancy", "gentle", "happy", "icy", "jolly",
            "kind", "lively", "misty", "noble", "proud", "rapid",
        ];
        const NOUN: [&str; 16] = [
            "river", "cloud", "field", "forest", "harbor", "island", "lake", "meadow", "moon",
            "ocean", "pine", "rain", "sea", "sky", "star", "wave",
        ];
        let a = ADJ[(seed & 15) as usize];
        let n = NOUN[((seed >> 4) & 15) as usize];
        Self(format!("{a}-{n}-{}", (seed >> 8) % 10_000))
    }
}

impl VolumeId {
    /// Parses a volume id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = s.len() == 20
            && s.starts_with("vol_")
            && s[4..].bytes().all(|b| BASE32_LOWER.contains(&b));
        if !ok {
            return Err(err(
                "volume id",
                s,
                "must be vol_ followed by 16 base-32 characters",
            ));
        }
        Ok(Self(s.to_string()))
    }

    /// The id made of ten random bytes.
    pub fn from_bytes(b: [u8; 10]) -> Self {
        let n = b.iter().fold(0u128, |acc, x| (acc << 8) | u128::from(*x));
        let mut s = String::from("vol_");
        for i in (0..16).rev() {
            s.push(BASE32_LOWER[((n >> (i * 5)) & 31) as usize] as char);
        }
        Self(s)
    }
}

impl InstanceId {
    /// Parses a ULID.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        if s.len() != 26 || !s.bytes().all(|b| CROCKFORD.contains(&b)) {
            return Err(err("instance id", s, "must be a 26-character ULID"));
        }
        Ok(Self(s.to_string()))
    }

    /// A ULID from a millisecond timestamp and 80 random bits; ids sort by time.
    pub fn new(unix_ms: u64, random: u128) -> Self {
        let value = (u128::from(unix_ms & 0xFFFF_FFFF_FFFF) << 80) | (random & ((1u128 << 80) - 1));
        let mut s = String::with_capacity(26);
        for i in (0..26).rev() {
            s.push(CROCKFORD[((value >> (i * 5)) & 31) as usize] as char);
        }
        Self(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_names() {
        for ok in [
            "laptop",
            "a",
            "ci-runner-01",
            "interactive-x",
            "abcdefghijklmno",
        ] {
            assert!(PeerName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Laptop",
            "a_b",
            "a.b",
            "abcdefghijklmnop",
            "a/b",
        ] {
            assert!(PeerName::parse(bad).is_err(), "{bad}");
        }
        assert!(
            PeerName::parse("interactive-x")
                .expect("name")
                .is_interactive()
        );
        assert!(!PeerName::parse("laptop").expect("name").is_interactive());
    }

    #[test]
    fn machine_ids() {
        let id = MachineId::from_bytes([0x3d, 0x8d, 0x41, 0x3b, 0x29, 0xd0, 0x89]);
        assert_eq!(id.as_str(), "3d8d413b29d089");
        assert_eq!(MachineId::parse("3d8d413b29d089"), Ok(id));
        for bad in [
            "",
            "3d8d413b29d08",
            "3D8D413B29D089",
            "3d8d413b29d08g",
            "../../etc/pass",
        ] {
            assert!(MachineId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_reject_traversal_and_control_characters() {
        for bad in [
            "../x",
            "a/b",
            "a\u{0}b",
            "a\nb",
            "",
            "-a",
            "A",
            &"a".repeat(64),
        ] {
            assert!(AppName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AppName::parse("my-app-2").is_ok());
        for bad in ["..", "../etc", "a b", "a\tb", ".hidden"] {
            assert!(MachineName::parse(bad).is_err(), "{bad:?}");
        }
        let e = MachineName::parse("a\u{7}b").expect_err("bell");
        assert!(e.to_string().contains("\\u{7}"), "{e}");
        assert!(MachineName::parse(MachineName::generate(12345).as_str()).is_ok());
    }

    #[test]
    fn ulids_sort_by_time_and_volume_ids_parse() {
        let a = InstanceId::new(1_700_000_000_000, 99);
        let b = InstanceId::new(1_700_000_000_001, 1);
        assert!(a < b);
        assert!(InstanceId::parse(a.as_str()).is_ok());
        let v = VolumeId::from_bytes([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        assert_eq!(VolumeId::parse(v.as_str()), Ok(v));
    }
}
