//! Task secrets kept by the orchestrator: sealed at rest in its database,
//! and sealed again for each dispatch, so only a host or worker holding the
//! deployment's `PIPEWEAVE_SECRET_KEY` can read the values an attempt gets.
//!
//! Both use AES-256-GCM with a random 96-bit nonce, under keys derived from
//! the secret key with HKDF-SHA256 and labels of their own (`pipeweave
//! secret at rest v1`, `pipeweave dispatch secrets v1`), so neither can be
//! taken for the other or for a storage token. A value at rest is bound to
//! its name (the associated data), so a row's value cannot be moved to
//! another name; the secrets of a dispatch are bound to its run and
//! attempt. The dispatch form is text: `pwss1.` and base64url (no padding)
//! of the nonce and the ciphertext of a JSON object of names to values.

use std::collections::BTreeMap;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const PREFIX: &str = "pwss1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const AT_REST_LABEL: &[u8] = b"pipeweave secret at rest v1";
const DISPATCH_LABEL: &[u8] = b"pipeweave dispatch secrets v1";

/// Why sealed secrets could not be opened or sealed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretBoxError {
    /// The text or bytes are not sealed secrets at all.
    #[error("not sealed secrets: {0}")]
    Malformed(&'static str),
    /// Decryption failed: altered, sealed for another run or attempt (or
    /// name), or sealed with another key.
    #[error(
        "the secrets were altered, sealed for something else, or sealed with a different \
         PIPEWEAVE_SECRET_KEY; the orchestrator and every host and worker must share the same key"
    )]
    Unsealable,
    /// The system's random source failed.
    #[error("cannot seal secrets: {0}")]
    Seal(String),
}

/// Seals and opens task secrets with one `PIPEWEAVE_SECRET_KEY`.
#[derive(Clone)]
pub struct SecretBox {
    at_rest: Aes256Gcm,
    dispatch: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<key>)")
    }
}

fn derive(secret: &[u8; 32], label: &[u8]) -> Aes256Gcm {
    let mut key = [0_u8; 32];
    hkdf::Hkdf::<sha2::Sha256>::new(None, secret)
        .expand(label, &mut key)
        .unwrap_or_else(|_| unreachable!("32 bytes is a valid HKDF-SHA256 output length"));
    Aes256Gcm::new(&key.into())
}

fn seal(cipher: &Aes256Gcm, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SecretBoxError> {
    let mut nonce = [0_u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| SecretBoxError::Seal(e.to_string()))?;
    let ciphertext = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| SecretBoxError::Seal("encryption failed".into()))?;
    let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    Ok(sealed)
}

fn open(cipher: &Aes256Gcm, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, SecretBoxError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(SecretBoxError::Malformed("too short"));
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| SecretBoxError::Malformed("too short"))?;
    cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| SecretBoxError::Unsealable)
}

fn dispatch_aad(run_id: &str, attempt: u32) -> Vec<u8> {
    format!("{PREFIX}/{run_id}/{attempt}").into_bytes()
}

impl SecretBox {
    /// A box for the 32-byte `PIPEWEAVE_SECRET_KEY`.
    pub fn new(secret: &[u8; 32]) -> Self {
        Self {
            at_rest: derive(secret, AT_REST_LABEL),
            dispatch: derive(secret, DISPATCH_LABEL),
        }
    }

    /// Seals one secret's value for the database, bound to its name.
    pub fn seal_value(&self, name: &str, value: &str) -> Result<Vec<u8>, SecretBoxError> {
        seal(&self.at_rest, value.as_bytes(), name.as_bytes())
    }

    /// Opens a value sealed by [`Self::seal_value`] for `name`.
    pub fn open_value(&self, name: &str, sealed: &[u8]) -> Result<String, SecretBoxError> {
        let plaintext = open(&self.at_rest, sealed, name.as_bytes())?;
        String::from_utf8(plaintext).map_err(|_| SecretBoxError::Malformed("not UTF-8"))
    }

    /// Seals the secrets one attempt gets into dispatch text.
    pub fn seal_dispatch(
        &self,
        secrets: &BTreeMap<String, String>,
        run_id: &str,
        attempt: u32,
    ) -> Result<String, SecretBoxError> {
        let plaintext =
            serde_json::to_vec(secrets).map_err(|e| SecretBoxError::Seal(e.to_string()))?;
        let sealed = seal(&self.dispatch, &plaintext, &dispatch_aad(run_id, attempt))?;
        Ok(format!("{PREFIX}.{}", URL_SAFE_NO_PAD.encode(sealed)))
    }

    /// Opens dispatch text sealed for this run and attempt.
    pub fn open_dispatch(
        &self,
        text: &str,
        run_id: &str,
        attempt: u32,
    ) -> Result<BTreeMap<String, String>, SecretBoxError> {
        let body = text
            .trim()
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.strip_prefix('.'))
            .ok_or(SecretBoxError::Malformed("it does not start with `pwss1.`"))?;
        let sealed = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SecretBoxError::Malformed("it is not base64url"))?;
        let plaintext = open(&self.dispatch, &sealed, &dispatch_aad(run_id, attempt))?;
        serde_json::from_slice(&plaintext)
            .map_err(|_| SecretBoxError::Malformed("its contents are not a map of secrets"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    #[test]
    fn a_value_opens_only_under_its_own_name_and_key() -> Result<(), SecretBoxError> {
        let sealed_box = SecretBox::new(&KEY);
        let sealed = sealed_box.seal_value("api-token", "tok-123")?;
        assert!(!sealed.windows(7).any(|w| w == b"tok-123"));
        assert_eq!(sealed_box.open_value("api-token", &sealed)?, "tok-123");
        assert_eq!(
            sealed_box.open_value("other", &sealed),
            Err(SecretBoxError::Unsealable)
        );
        assert_eq!(
            SecretBox::new(&[8; 32]).open_value("api-token", &sealed),
            Err(SecretBoxError::Unsealable)
        );
        Ok(())
    }

    #[test]
    fn dispatch_secrets_open_only_for_their_run_and_attempt() -> Result<(), SecretBoxError> {
        let sealed_box = SecretBox::new(&KEY);
        let secrets = BTreeMap::from([("api-token".to_owned(), "tok-123".to_owned())]);
        let text = sealed_box.seal_dispatch(&secrets, "trun_1", 2)?;
        assert!(text.starts_with("pwss1.") && !text.contains("tok-123"));
        assert_eq!(sealed_box.open_dispatch(&text, "trun_1", 2)?, secrets);
        assert_eq!(
            sealed_box.open_dispatch(&text, "trun_1", 3),
            Err(SecretBoxError::Unsealable)
        );
        assert_eq!(
            sealed_box.open_dispatch(&text, "trun_2", 2),
            Err(SecretBoxError::Unsealable)
        );
        assert!(matches!(
            sealed_box.open_dispatch("pwst1.abc", "trun_1", 2),
            Err(SecretBoxError::Malformed(_))
        ));
        Ok(())
    }
}
