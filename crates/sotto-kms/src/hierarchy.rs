//! The participant's key hierarchy: a random 256-bit business root key per
//! business flow, and sub-keys derived from it with HKDF-SHA256 and a label
//! (per task, step or peer) that encrypt the flow's data.

use rand_core::{CryptoRng, RngCore};
use sotto_crypto::kdf::hkdf_key;
use sotto_crypto::secret::SecretBytes;

/// A business flow's root key.
pub struct BusinessRootKey(SecretBytes<32>);

impl BusinessRootKey {
    /// A fresh random root key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        Self(SecretBytes::new(key))
    }

    /// A root key from its bytes (recovered from escrow).
    pub fn from_bytes(bytes: SecretBytes<32>) -> Self {
        Self(bytes)
    }

    /// The key bytes, to escrow.
    pub fn expose(&self) -> &[u8; 32] {
        self.0.expose()
    }

    /// The sub-key for `label`: `HKDF-SHA256(ikm = root, info =
    /// "sotto/kms/sub-key/v1" || flow || label)`.
    pub fn sub_key(&self, flow: &str, label: &str) -> SecretBytes<32> {
        let mut info = b"sotto/kms/sub-key/v1".to_vec();
        for part in [flow, label] {
            info.extend_from_slice(&(part.len() as u32).to_be_bytes());
            info.extend_from_slice(part.as_bytes());
        }
        hkdf_key(None, self.0.expose(), &info)
    }
}

impl std::fmt::Debug for BusinessRootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BusinessRootKey(redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn sub_keys_are_stable_per_label_and_distinct_across_labels_and_flows() {
        let root = BusinessRootKey::generate(&mut OsRng);
        assert_eq!(root.sub_key("f", "task-1"), root.sub_key("f", "task-1"));
        assert_ne!(root.sub_key("f", "task-1"), root.sub_key("f", "task-2"));
        assert_ne!(root.sub_key("f", "task-1"), root.sub_key("g", "task-1"));
        assert_ne!(root.sub_key("ab", "c"), root.sub_key("a", "bc"));
        let restored = BusinessRootKey::from_bytes(SecretBytes::new(*root.expose()));
        assert_eq!(restored.sub_key("f", "x"), root.sub_key("f", "x"));
        assert_eq!(format!("{root:?}"), "BusinessRootKey(redacted)");
    }
}
