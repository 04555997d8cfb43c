//! Errors raised by the crypto layer.

/// An error from a cryptographic operation or from decoding key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Bytes that should encode a key, point or signature have the wrong length.
    #[error("{what}: expected {expected} bytes, got {got}")]
    BadLength {
        /// What was being decoded.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length found.
        got: usize,
    },
    /// Bytes of the right length that do not encode a valid value.
    #[error("{what}: not a valid encoding")]
    BadEncoding {
        /// What was being decoded.
        what: &'static str,
    },
    /// A signature did not verify.
    #[error("{what}: signature does not verify")]
    BadSignature {
        /// What the signature was over.
        what: &'static str,
    },
    /// A BLS proof of possession did not verify.
    #[error("BLS key {index}: proof of possession does not verify")]
    BadProofOfPossession {
        /// Index of the key in the signer's key set.
        index: usize,
    },
    /// A hexadecimal string could not be parsed.
    #[error("{what}: not valid hexadecimal ({reason})")]
    BadHex {
        /// What was being parsed.
        what: &'static str,
        /// Why parsing failed.
        reason: String,
    },
}
