//! Domain-separated SHA-256 over length-prefixed fields.

use sha2::{Digest, Sha256};

/// A SHA-256 hasher that starts with a domain tag and frames every field with
/// its length, so that no two different field lists hash the same.
#[derive(Clone)]
pub struct FieldHasher(Sha256);

impl FieldHasher {
    /// Starts a hash under `domain` (for example `"sotto/psi/transcript/v1"`).
    pub fn new(domain: &str) -> Self {
        let mut hasher = FieldHasher(Sha256::new());
        hasher.field(domain.as_bytes());
        hasher
    }

    /// Appends one field, framed by its 8-byte length.
    pub fn field(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_be_bytes());
        self.0.update(bytes);
        self
    }

    /// Finishes the hash.
    pub fn finish(self) -> [u8; 32] {
        self.0.finalize().into()
    }
}

/// Plain SHA-256 of a byte string (for digests of element lists and files).
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_separates_field_boundaries() {
        let mut a = FieldHasher::new("d");
        a.field(b"ab").field(b"c");
        let mut b = FieldHasher::new("d");
        b.field(b"a").field(b"bc");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn domains_separate() {
        let mut a = FieldHasher::new("d1");
        a.field(b"x");
        let mut b = FieldHasher::new("d2");
        b.field(b"x");
        assert_ne!(a.finish(), b.finish());
    }
}
