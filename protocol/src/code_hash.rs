//! The identity of a task's code: the lowercase hex SHA-256 of the
//! component's bytes. The orchestrator versions tasks by it and hosts key
//! their compiled-component caches by it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256 of a WebAssembly component's bytes (64 characters).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CodeHash(String);

/// A string that is not 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid code hash {0:?}: expected 64 lowercase hex digits (a SHA-256)")]
pub struct InvalidCodeHash(String);

impl CodeHash {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let digest = Sha256::digest(bytes);
        let mut hex = String::with_capacity(64);
        for byte in digest.iter() {
            hex.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
            hex.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
        }
        Self(hex)
    }

    /// The 64 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 16 hex digits, the form the spec prints next to task ids.
    pub fn short(&self) -> &str {
        &self.0[..16]
    }
}

impl FromStr for CodeHash {
    type Err = InvalidCodeHash;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let valid = s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidCodeHash(s.to_owned()))
        }
    }
}

impl TryFrom<String> for CodeHash {
    type Error = InvalidCodeHash;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<CodeHash> for String {
    fn from(hash: CodeHash) -> Self {
        hash.0
    }
}

impl fmt::Display for CodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CodeHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CodeHash({})", self.short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_the_sha256_test_vector() {
        assert_eq!(
            CodeHash::of(b"abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn same_bytes_give_the_same_hash_and_different_bytes_a_different_one() {
        assert_eq!(CodeHash::of(b"module"), CodeHash::of(b"module"));
        assert_ne!(CodeHash::of(b"module"), CodeHash::of(b"module "));
    }

    #[test]
    fn parsing_accepts_only_lowercase_hex_of_the_right_length() {
        let hash = CodeHash::of(b"x");
        assert_eq!(hash.as_str().parse::<CodeHash>(), Ok(hash.clone()));
        assert!(hash.as_str().to_uppercase().parse::<CodeHash>().is_err());
        assert!(hash.as_str()[..63].parse::<CodeHash>().is_err());
        assert!("g".repeat(64).parse::<CodeHash>().is_err());
    }
}
