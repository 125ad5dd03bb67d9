//! Secrets at rest: private keys of certificates and ACME accounts are stored sealed with
//! AES-256-GCM under a host key kept in a file of the data dir (mode 0600, created on first
//! use). Each sealed value is bound to what it is (the associated data names the row), so a
//! sealed key moved to another row does not open.
//!
//! Format: `hgs1` ‖ 12-byte random nonce ‖ ciphertext ‖ 16-byte tag.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};
use thiserror::Error;

const MAGIC: &[u8; 4] = b"hgs1";

/// Why a sealed value does not open.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SealError {
    /// Not something [`Sealer::seal`] made.
    #[error("not a sealed value")]
    Format,
    /// Another key, another context, or tampered with.
    #[error("the sealed value does not open with this key and context")]
    Open,
    /// The OS random generator failed.
    #[error("no randomness available")]
    Random,
}

/// Seals and opens secrets with the host key.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer { .. }")
    }
}

impl Sealer {
    /// A sealer with this 256-bit key.
    pub fn from_key(key: &[u8; 32]) -> Self {
        // A 32-byte key is always valid for AES-256-GCM.
        let unbound = UnboundKey::new(&AES_256_GCM, key).expect("32-byte AES-256 key");
        Self {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    /// Loads the key file at `path` (64 hex digits), creating it (mode 0600, its directory
    /// 0700) with a random key if it does not exist. A key file readable by group or others is
    /// refused.
    pub fn load_or_create(path: &Path) -> std::io::Result<Self> {
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        if !path.exists() {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
                let mut p = std::fs::metadata(dir)?.permissions();
                if p.mode() & 0o077 != 0 {
                    p.set_mode(0o700);
                    std::fs::set_permissions(dir, p)?;
                }
            }
            let mut key = [0u8; 32];
            SystemRandom::new()
                .fill(&mut key)
                .map_err(|_| invalid("no randomness available".into()))?;
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            // Written whole under a temporary name, then linked into place: a concurrent
            // creator either wins the link or reads the winner's complete file.
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            writeln!(f, "{hex}")?;
            f.sync_all()?;
            drop(f);
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let meta = std::fs::metadata(path)?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(invalid(format!(
                "{} is readable by others (mode {:o}); it must be 0600",
                path.display(),
                meta.permissions().mode() & 0o777
            )));
        }
        let text = std::fs::read_to_string(path)?;
        let text = text.trim();
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "{}: expected 64 hex digits",
                path.display()
            )));
        }
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|e| invalid(e.to_string()))?;
        }
        Ok(Self::from_key(&key))
    }

    /// Seals `plaintext`, bound to `context`.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut body,
            )
            .map_err(|_| SealError::Open)?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Opens what [`Sealer::seal`] made with the same key and `context`.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let rest = sealed.strip_prefix(MAGIC).ok_or(SealError::Format)?;
        if rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SealError::Format);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Format)?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context), &mut body)
            .map_err(|_| SealError::Open)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let s = Sealer::from_key(&[7u8; 32]);
        let a = s.seal(b"cert:a.example", b"secret key").expect("seal");
        let b = s.seal(b"cert:a.example", b"secret key").expect("seal");
        assert_ne!(a, b, "a fresh nonce every time");
        assert_eq!(s.open(b"cert:a.example", &a).expect("open"), b"secret key");
        assert_eq!(s.open(b"cert:b.example", &a), Err(SealError::Open));
        assert_eq!(
            Sealer::from_key(&[8u8; 32]).open(b"cert:a.example", &a),
            Err(SealError::Open)
        );
        let mut t = a.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert_eq!(s.open(b"cert:a.example", &t), Err(SealError::Open));
        assert_eq!(s.open(b"x", b"hgs1"), Err(SealError::Format));
        assert_eq!(s.open(b"x", b"nope"), Err(SealError::Format));
        assert!(!a.windows(10).any(|w| w == b"secret key"));
    }
}
