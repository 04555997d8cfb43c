//! The enclave abstraction every backend implements: a measurement of the
//! code, evidence binding 64 bytes of caller data (a key, a nonce) to that
//! measurement, and sealing bound to it.

use crate::error::TeeError;
use crate::evidence::Platform;

/// A trusted execution environment as the rest of sotto uses it.
pub trait Enclave {
    /// The platform.
    fn platform(&self) -> Platform;
    /// The measurement of the code running inside.
    fn measurement(&self) -> Vec<u8>;
    /// Evidence binding `report_data` to this enclave's measurement.
    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TeeError>;
    /// Encrypts `plaintext` so that only this code on this platform can
    /// decrypt it; `aad` is bound too.
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, TeeError>;
    /// Decrypts what [`Enclave::seal`] produced with the same `aad`.
    fn unseal(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, TeeError>;
}
