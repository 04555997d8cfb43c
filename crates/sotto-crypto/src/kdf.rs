//! Ephemeral X25519 key agreement expanded with HKDF-SHA256: the PSI
//! per-session salt (bound to the session id) and keys for the other
//! protocols' end-to-end channels (bound to whatever their `info` names).

use hkdf::Hkdf;
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::ids::SessionId;
use crate::secret::SecretBytes;
use crate::CryptoError;

/// HKDF info prefix for the PSI salt.
const SALT_INFO: &[u8] = b"sotto/psi/salt/v1";

/// A 32-byte key `HKDF-SHA256(salt, ikm, info)`; `info` carries the domain
/// tag and everything the key is bound to.
pub fn hkdf_key(salt: Option<&[u8]>, ikm: &[u8], info: &[u8]) -> SecretBytes<32> {
    let hkdf = Hkdf::<Sha256>::new(salt, ikm);
    let mut key = [0u8; 32];
    if hkdf.expand(info, &mut key).is_err() {
        // HKDF-SHA256 refuses only outputs over 8160 bytes; this one is 32.
        unreachable!("HKDF-SHA256 output of 32 bytes");
    }
    SecretBytes::new(key)
}

/// HKDF-SHA256 with its extract step done once: many keys from one input
/// key, each [`hkdf_key`]`(None, ikm, info)` for its `info` at the cost of
/// the expand step only. The extracted key is zeroized on drop.
pub struct KeyExpander(SecretBytes<32>);

impl KeyExpander {
    /// Extracts from `ikm` (no salt).
    pub fn new(ikm: &[u8]) -> Self {
        let (prk, _) = Hkdf::<Sha256>::extract(None, ikm);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&prk);
        Self(SecretBytes::new(bytes))
    }

    /// The 32-byte key for `info`.
    pub fn key(&self, info: &[u8]) -> [u8; 32] {
        let mut key = [0u8; 32];
        let expanded =
            Hkdf::<Sha256>::from_prk(self.0.expose()).map(|hkdf| hkdf.expand(info, &mut key));
        if !matches!(expanded, Ok(Ok(()))) {
            // A 32-byte PRK is long enough and 32 bytes of output are
            // within HKDF-SHA256's limit.
            unreachable!("HKDF-SHA256 with a 32-byte PRK and output");
        }
        key
    }
}

impl std::fmt::Debug for KeyExpander {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyExpander(redacted)")
    }
}

/// An ephemeral X25519 key for one session (kept in the private session state
/// between offline steps). x25519-dalek zeroizes it on drop.
pub struct EphemeralKey(StaticSecret);

impl EphemeralKey {
    /// Generates a fresh key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self(StaticSecret::random_from_rng(rng))
    }

    /// Restores a key saved with [`EphemeralKey::to_bytes`].
    pub fn from_bytes(bytes: &SecretBytes<32>) -> Self {
        Self(StaticSecret::from(*bytes.expose()))
    }

    /// The secret bytes, for the private session state.
    pub fn to_bytes(&self) -> SecretBytes<32> {
        SecretBytes::new(self.0.to_bytes())
    }

    /// The public key to send to the peer.
    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.0).to_bytes()
    }

    /// Derives the session salt from the peer's ephemeral public key:
    /// `HKDF-SHA256(ikm = X25519(self, peer), info = "sotto/psi/salt/v1" || sid)`.
    /// Refuses a peer key that yields an all-zero shared secret.
    pub fn derive_salt(
        &self,
        peer_public: &[u8; 32],
        sid: &SessionId,
    ) -> Result<SecretBytes<32>, CryptoError> {
        let mut info = Vec::with_capacity(SALT_INFO.len() + SessionId::LEN);
        info.extend_from_slice(SALT_INFO);
        info.extend_from_slice(sid.as_bytes());
        self.derive_key(peer_public, &info)
    }

    /// Derives a 32-byte key shared with the holder of `peer_public`:
    /// `HKDF-SHA256(ikm = X25519(self, peer), info)`. The caller's `info`
    /// carries the domain tag and everything the key is bound to. Refuses a
    /// peer key that yields an all-zero shared secret.
    pub fn derive_key(
        &self,
        peer_public: &[u8; 32],
        info: &[u8],
    ) -> Result<SecretBytes<32>, CryptoError> {
        let shared = self.0.diffie_hellman(&PublicKey::from(*peer_public));
        if !shared.was_contributory() {
            return Err(CryptoError::BadEncoding {
                what: "peer ephemeral key (low order point)",
            });
        }
        Ok(hkdf_key(None, shared.as_bytes(), info))
    }
}

impl std::fmt::Debug for EphemeralKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "EphemeralKey(public={}, secret=redacted)",
            hex::encode(self.public())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expander_gives_the_keys_of_hkdf_key() {
        let expander = KeyExpander::new(b"input key");
        for info in [&b"a"[..], b"sotto/share/id-tag/v1 customer-1", b""] {
            assert_eq!(
                &expander.key(info),
                hkdf_key(None, b"input key", info).expose()
            );
        }
    }
    use rand_core::OsRng;

    #[test]
    fn both_sides_derive_the_same_salt_bound_to_the_session() {
        let a = EphemeralKey::generate(&mut OsRng);
        let b = EphemeralKey::generate(&mut OsRng);
        let sid = SessionId::from_bytes([1; 16]);
        let salt_a = a.derive_salt(&b.public(), &sid).expect("contributory");
        let salt_b = b.derive_salt(&a.public(), &sid).expect("contributory");
        assert_eq!(salt_a, salt_b);
        let other = a
            .derive_salt(&b.public(), &SessionId::from_bytes([2; 16]))
            .expect("ok");
        assert_ne!(salt_a, other);
    }

    #[test]
    fn low_order_peer_key_is_refused() {
        let a = EphemeralKey::generate(&mut OsRng);
        let sid = SessionId::from_bytes([1; 16]);
        assert!(a.derive_salt(&[0u8; 32], &sid).is_err());
    }
}
