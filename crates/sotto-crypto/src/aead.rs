//! AES-256-GCM for end-to-end payloads that pass through an untrusted hop.
//! The sealed form is `nonce (12 bytes) || ciphertext || tag (16 bytes)`;
//! the associated data binds the payload to its context.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand_core::{CryptoRng, RngCore};

use crate::secret::SecretBytes;
use crate::CryptoError;

/// Length of the nonce prefix.
pub const NONCE_LEN: usize = 12;
/// Length of the authentication tag.
pub const TAG_LEN: usize = 16;

/// Encrypts `plaintext` under `key` with a fresh random nonce.
pub fn seal<R: RngCore + CryptoRng>(
    key: &SecretBytes<32>,
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, CryptoError> {
    let cipher = Aes256Gcm::new(key.expose().into());
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let body = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| CryptoError::BadEncoding {
            what: "AES-GCM plaintext (too long)",
        })?;
    let mut out = Vec::with_capacity(NONCE_LEN + body.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decrypts what [`seal`] produced; any change to the key, the associated
/// data or a single byte of `sealed` is refused.
pub fn open(key: &SecretBytes<32>, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::BadLength {
            what: "sealed payload",
            expected: NONCE_LEN + TAG_LEN,
            got: sealed.len(),
        });
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    Aes256Gcm::new(key.expose().into())
        .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
        .map_err(|_| CryptoError::BadSignature {
            what: "sealed payload (AES-GCM tag)",
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn round_trip_and_every_tamper_refused() {
        let key = SecretBytes::new([3; 32]);
        let sealed = seal(&key, b"ctx", b"hello vector", &mut OsRng).expect("seal");
        assert_eq!(open(&key, b"ctx", &sealed).expect("open"), b"hello vector");
        assert!(open(&key, b"other ctx", &sealed).is_err());
        assert!(open(&SecretBytes::new([4; 32]), b"ctx", &sealed).is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(open(&key, b"ctx", &bad).is_err(), "flip at {i} accepted");
        }
        assert!(matches!(
            open(&key, b"ctx", &sealed[..10]),
            Err(CryptoError::BadLength { .. })
        ));
    }
}
