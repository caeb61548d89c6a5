//! API keys: `sk_live_` followed by 32 lowercase hex characters (SPEC §3.9).
//!
//! A key is shown once, when it is created; the store keeps only its SHA-256 digest, and a
//! presented key is looked up by digest and then compared in constant time.

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};

pub(crate) const PREFIX: &str = "sk_live_";

/// A well-formed API key. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(sk_live_****)")
    }
}

impl ApiKey {
    /// Parses a bearer token; `None` when it is not shaped like a cloro key.
    pub fn parse(token: &str) -> Option<ApiKey> {
        let hex = token.strip_prefix(PREFIX)?;
        let ok = hex.len() == 32
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| ApiKey(token.to_owned()))
    }

    /// A fresh key from the operating system's CSPRNG (128 random bits).
    pub(crate) fn generate() -> ApiKey {
        let mut bytes = [0u8; 16];
        rand::rng().fill_bytes(&mut bytes);
        ApiKey(format!("{PREFIX}{}", hex::encode(bytes)))
    }

    /// The secret itself, for printing once at creation.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 digest stored at rest.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

/// Compares two byte strings in time that depends only on their length.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_parses_back() {
        let k = ApiKey::generate();
        assert_eq!(ApiKey::parse(k.expose()), Some(k));
    }

    #[test]
    fn uppercase_hex_short_keys_and_other_prefixes_are_rejected() {
        assert!(ApiKey::parse("sk_live_1234567890abcdef1234567890abcdef").is_some());
        assert!(ApiKey::parse("sk_live_1234567890ABCDEF1234567890abcdef").is_none());
        assert!(ApiKey::parse("sk_live_1234567890abcdef1234567890abcde").is_none());
        assert!(ApiKey::parse("sk_test_1234567890abcdef1234567890abcdef").is_none());
        assert!(ApiKey::parse("").is_none());
    }

    #[test]
    fn debug_never_prints_the_secret() {
        let k = ApiKey::generate();
        assert!(!format!("{k:?}").contains(&k.expose()[8..]));
    }

    #[test]
    fn constant_time_eq_compares_contents() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
