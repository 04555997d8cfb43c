//! Fixed-size secret byte strings: zeroized on drop, redacted in `Debug`,
//! compared in constant time.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// `N` secret bytes (a key, a salt, a seed).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretBytes<const N: usize>([u8; N]);

impl<const N: usize> SecretBytes<N> {
    /// Takes ownership of secret bytes.
    pub fn new(bytes: [u8; N]) -> Self {
        Self(bytes)
    }

    /// Copies secret bytes from a slice of exactly `N` bytes.
    pub fn from_slice(what: &'static str, bytes: &[u8]) -> Result<Self, crate::CryptoError> {
        let array: [u8; N] = bytes
            .try_into()
            .map_err(|_| crate::CryptoError::BadLength {
                what,
                expected: N,
                got: bytes.len(),
            })?;
        Ok(Self(array))
    }

    /// Borrows the secret bytes. Callers must not copy them into
    /// long-lived, non-zeroizing storage.
    pub fn expose(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> fmt::Debug for SecretBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes<{N}>(redacted)")
    }
}

impl<const N: usize> PartialEq for SecretBytes<N> {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl<const N: usize> Eq for SecretBytes<N> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_bytes() {
        let s = SecretBytes::new([0xab; 4]);
        let shown = format!("{s:?}");
        assert!(!shown.contains("ab") && !shown.contains("171"));
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn equality_compares_contents() {
        assert_eq!(SecretBytes::new([1u8; 8]), SecretBytes::new([1u8; 8]));
        assert_ne!(SecretBytes::new([1u8; 8]), SecretBytes::new([2u8; 8]));
    }
}
