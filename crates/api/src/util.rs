//! Randomness, time and token helpers.

use sha2::{Digest, Sha256};

/// `N` random bytes from the OS.
pub(crate) fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS RNG failing is not recoverable in a meaningful way; fall back to time-derived
    // bytes only so that id generation never panics (ids are unique-checked by the store).
    if getrandom::fill(&mut b).is_err() {
        let t = now_ms().to_le_bytes();
        for (i, x) in b.iter_mut().enumerate() {
            *x = t[i % 8] ^ (i as u8);
        }
    }
    b
}

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new API token secret: `hgr_` + 64 hex characters.
pub fn new_token() -> String {
    format!("hgr_{}", hex(&random::<32>()))
}

/// The stored form of a token: SHA-256, hex.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// A random lease nonce.
pub(crate) fn nonce() -> String {
    hex(&random::<16>())
}

/// A new ULID for versions and events.
pub(crate) fn ulid() -> hangar_domain::InstanceId {
    let r = random::<16>();
    hangar_domain::InstanceId::new(now_ms().max(0) as u64, u128::from_le_bytes(r))
}
