//! Organization API keys: `ak_` + 32 random bytes (base64url), shown once, stored only as
//! a SHA-256 hash.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of every API key.
pub const PREFIX: &str = "ak_";

/// A freshly generated key: the secret to show once, its hash and display prefix.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// The full key, `ak_…`.
    pub secret: String,
    /// Hex SHA-256 of the key.
    pub hash: String,
    /// First characters, safe to show and log.
    pub prefix: String,
}

/// Generates a key.
pub fn generate() -> NewKey {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    NewKey {
        hash: hash(&secret),
        prefix: secret.chars().take(10).collect(),
        secret,
    }
}

/// Hex SHA-256 of a secret (API key or invitation token).
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A random URL-safe token with `prefix` (invitation tokens).
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_prefixed_random_and_hashed() {
        let a = generate();
        let b = generate();
        assert!(a.secret.starts_with(PREFIX));
        assert_ne!(a.secret, b.secret);
        assert_eq!(a.hash, hash(&a.secret));
        assert_eq!(a.hash.len(), 64);
        assert!(!a.hash.contains(&a.secret));
    }
}
