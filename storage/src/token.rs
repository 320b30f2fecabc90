//! Sealed storage tokens: what the spec calls the "JWT with encrypted
//! storage credentials", made stricter. A token carries a backend's
//! configuration (credentials included), an expiry and a scope (the path
//! prefixes its holder may read and may write), sealed with AES-256-GCM
//! under a key derived from `PIPEWEAVE_SECRET_KEY`. The orchestrator seals
//! one per attempt; a host or worker with the same secret opens it and
//! talks to storage directly.
//!
//! The text form is `pwst1.` followed by base64url (no padding) of a random
//! 96-bit nonce and the ciphertext with its 128-bit tag. The key is
//! HKDF-SHA256 of the secret with the label `pipeweave storage token v1`,
//! and the prefix `pwst1` is authenticated too, so a token cannot be
//! replayed under another version's rules. Opening refuses, each with its
//! own error, a text that is not a token, a token altered or sealed under
//! another secret (GCM cannot tell those apart), and an expired one.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

use crate::backend::BackendConfig;
use crate::scope::Scope;

/// The token text's prefix, which names the format version.
const PREFIX: &str = "pwst1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const KEY_LABEL: &[u8] = b"pipeweave storage token v1";

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grant {
    /// The backend, with its credentials.
    pub backend: BackendConfig,
    /// Which paths the holder may read and write.
    pub scope: Scope,
    /// The run it was issued for (for logs and errors).
    pub run_id: String,
    /// The attempt it was issued for.
    pub attempt: u32,
    /// Seconds since the Unix epoch after which it is refused.
    pub expires_at: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The text is not a storage token at all.
    #[error("not a PipeWeave storage token (expected `pwst1.` and base64url): {0}")]
    Malformed(&'static str),
    /// Decryption failed: the token was altered, or sealed with another key.
    #[error(
        "the storage token was altered or sealed with a different PIPEWEAVE_SECRET_KEY; \
         the orchestrator and every host and worker must share the same key"
    )]
    Unsealable,
    /// The token is past its expiry.
    #[error(
        "the storage token expired at {expired_at} (Unix seconds), {ago} s ago; the attempt must get a new one"
    )]
    Expired {
        /// When it expired.
        expired_at: i64,
        /// How long ago.
        ago: i64,
    },
}

/// Seals and opens tokens with one secret.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<key>)")
    }
}

impl Sealer {
    /// A sealer for the 32-byte `PIPEWEAVE_SECRET_KEY`.
    pub fn new(secret: &[u8; 32]) -> Self {
        let mut key = [0_u8; 32];
        hkdf::Hkdf::<sha2::Sha256>::new(None, secret)
            .expand(KEY_LABEL, &mut key)
            .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 output length"));
        Self {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// Seals a grant into token text.
    pub fn seal(&self, grant: &Grant) -> Result<String, SealError> {
        let plaintext = serde_json::to_vec(grant).map_err(|e| SealError(e.to_string()))?;
        let mut nonce = [0_u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| SealError(e.to_string()))?;
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &plaintext,
                    aad: PREFIX.as_bytes(),
                },
            )
            .map_err(|_| SealError("encryption failed".into()))?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(format!("{PREFIX}.{}", URL_SAFE_NO_PAD.encode(sealed)))
    }

    /// Opens token text, refusing it if it is altered, sealed under another
    /// key, or expired at `now` (Unix seconds).
    pub fn open(&self, token: &str, now: i64) -> Result<Grant, TokenError> {
        let body = token
            .trim()
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .ok_or(TokenError::Malformed("it does not start with `pwst1.`"))?;
        let sealed = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| TokenError::Malformed("it is not base64url"))?;
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(TokenError::Malformed("it is too short"));
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| TokenError::Malformed("it is too short"))?;
        let plaintext = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: PREFIX.as_bytes(),
                },
            )
            .map_err(|_| TokenError::Unsealable)?;
        // Authentic, so the JSON is ours; a failure here is a version skew.
        let grant: Grant = serde_json::from_slice(&plaintext).map_err(|_| {
            TokenError::Malformed("its contents are not a grant this version reads")
        })?;
        if now >= grant.expires_at {
            return Err(TokenError::Expired {
                expired_at: grant.expires_at,
                ago: now - grant.expires_at,
            });
        }
        Ok(grant)
    }
}

/// `PIPEWEAVE_SECRET_KEY` is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}; generate one with `openssl rand -hex 32`")]
pub struct InvalidSecretKey(String);

/// Reads `PIPEWEAVE_SECRET_KEY`: 64 hex digits, the 32 bytes every
/// orchestrator, host and worker of a deployment shares.
pub fn parse_secret_key(text: &str) -> Result<[u8; 32], InvalidSecretKey> {
    let text = text.trim();
    if text.len() != 64 {
        return Err(InvalidSecretKey(format!(
            "expected 64 hex digits, got {} characters",
            text.chars().count()
        )));
    }
    let mut key = [0_u8; 32];
    for (byte, pair) in key.iter_mut().zip(text.as_bytes().chunks(2)) {
        let hex = std::str::from_utf8(pair).map_err(|_| InvalidSecretKey("not hex".into()))?;
        *byte = u8::from_str_radix(hex, 16).map_err(|_| InvalidSecretKey("not hex".into()))?;
    }
    Ok(key)
}

/// A grant could not be sealed (the system's random source failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot seal a storage token: {0}")]
pub struct SealError(String);

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        let mut backend = BackendConfig::local("local", "/tmp/pw", "data");
        backend.credentials.secret_access_key = Some("very-secret".into());
        Grant {
            backend,
            scope: Scope {
                read: vec!["standalone/trun_1/".into()],
                write: vec!["runs/trun_1/".into()],
            },
            run_id: "trun_1".into(),
            attempt: 1,
            expires_at: 1_000,
        }
    }

    #[test]
    fn a_sealed_grant_opens_with_the_same_secret() -> Result<(), Box<dyn std::error::Error>> {
        let sealer = Sealer::new(&[7; 32]);
        let token = sealer.seal(&grant())?;
        assert!(token.starts_with("pwst1."), "{token}");
        assert!(!token.contains("very-secret"));
        assert_eq!(sealer.open(&token, 999)?, grant());
        assert_ne!(
            sealer.seal(&grant())?,
            token,
            "every seal has a fresh nonce"
        );
        Ok(())
    }

    #[test]
    fn a_tampered_token_is_refused() -> Result<(), SealError> {
        let sealer = Sealer::new(&[7; 32]);
        let token = sealer.seal(&grant())?;
        let body = token.trim_start_matches("pwst1.");
        for position in [0, body.len() / 2, body.len() - 2] {
            let mut bytes = body.as_bytes().to_vec();
            bytes[position] = if bytes[position] == b'A' { b'B' } else { b'A' };
            let altered = format!("pwst1.{}", String::from_utf8_lossy(&bytes));
            assert!(
                matches!(
                    sealer.open(&altered, 0),
                    Err(TokenError::Unsealable | TokenError::Malformed(_))
                ),
                "position {position}"
            );
        }
        assert_eq!(
            sealer.open(&token.replace("pwst1.", "pwst2."), 0),
            Err(TokenError::Malformed("it does not start with `pwst1.`"))
        );
        Ok(())
    }

    #[test]
    fn a_token_sealed_with_another_secret_is_refused() -> Result<(), SealError> {
        let token = Sealer::new(&[7; 32]).seal(&grant())?;
        assert_eq!(
            Sealer::new(&[8; 32]).open(&token, 0),
            Err(TokenError::Unsealable)
        );
        Ok(())
    }

    #[test]
    fn an_expired_token_is_refused() -> Result<(), SealError> {
        let sealer = Sealer::new(&[7; 32]);
        let token = sealer.seal(&grant())?;
        assert_eq!(
            sealer.open(&token, 1_030),
            Err(TokenError::Expired {
                expired_at: 1_000,
                ago: 30
            })
        );
        Ok(())
    }

    #[test]
    fn text_that_is_not_a_token_is_refused() {
        let sealer = Sealer::new(&[7; 32]);
        for text in [
            "",
            "pwst1.",
            "pwst1.!!!",
            "eyJhbGciOi.jwt.looking",
            "pwst1.AAAA",
        ] {
            assert!(
                matches!(sealer.open(text, 0), Err(TokenError::Malformed(_))),
                "{text:?}"
            );
        }
    }
}
