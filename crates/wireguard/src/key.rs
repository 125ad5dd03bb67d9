//! Curve25519 keys as WireGuard writes them: standard base64 of 32 bytes in configs and the
//! API, lowercase hex on the UAPI socket.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use boringtun::x25519::{PublicKey, StaticSecret};

use crate::{Error, Result};

/// A 32-byte key (private or public).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub [u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material by accident (a private key looks like any other).
        write!(f, "Key({}…)", &self.to_hex()[..8])
    }
}

impl Key {
    /// A new random private key (clamped as X25519 wants it).
    pub fn generate() -> Result<Self> {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| Error::Key(format!("no randomness: {e}")))?;
        b[0] &= 248;
        b[31] &= 127;
        b[31] |= 64;
        Ok(Self(b))
    }

    /// The public key of this private key.
    pub fn public(&self) -> Key {
        Key(PublicKey::from(&StaticSecret::from(self.0)).to_bytes())
    }

    /// Parses base64 (what `wg genkey` and configs use).
    pub fn from_base64(s: &str) -> Result<Self> {
        let bytes = STANDARD
            .decode(s.trim())
            .map_err(|_| Error::Key("not base64".into()))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::Key("not 32 bytes".into()))?;
        Ok(Self(arr))
    }

    /// Parses 64 hex digits (the UAPI's form).
    pub fn from_hex(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.len() != 64 {
            return Err(Error::Key("not 64 hex digits".into()));
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hi = (chunk[0] as char).to_digit(16);
            let lo = (chunk[1] as char).to_digit(16);
            match (hi, lo) {
                (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
                _ => return Err(Error::Key("not 64 hex digits".into())),
            }
        }
        Ok(Self(out))
    }

    /// Base64.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether all bytes are zero (the UAPI's "no key").
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 32]
    }

    /// Reads the private key in `path` (base64), or makes one and writes it there (mode 0600,
    /// its directory made as needed).
    pub fn load_or_create(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                Self::from_base64(&text).map_err(|e| Error::Key(format!("{}: {e}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let key = Self::generate()?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                }
                let tmp = path.with_extension("tmp");
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .write(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(|e| Error::io(&tmp, e))?;
                f.write_all(format!("{}\n", key.to_base64()).as_bytes())
                    .and_then(|()| f.sync_all())
                    .map_err(|e| Error::io(&tmp, e))?;
                std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
                Ok(key)
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_round_trip_and_bad_keys_are_errors() {
        let k = Key::generate().expect("key");
        assert_eq!(Key::from_base64(&k.to_base64()).expect("b64"), k);
        assert_eq!(Key::from_hex(&k.to_hex()).expect("hex"), k);
        assert_ne!(k.public(), k);
        // RFC 7748's test vector (Alice).
        let alice =
            Key::from_hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .expect("hex");
        assert_eq!(
            alice.public().to_hex(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        for bad in ["", "abc", "!!!!", &"A".repeat(44)] {
            assert!(Key::from_base64(bad).is_err(), "{bad}");
        }
        assert!(Key::from_hex(&"g".repeat(64)).is_err());
        assert!(Key::from_hex("00").is_err());
        assert!(!format!("{k:?}").contains(&k.to_hex()));
    }
}
