//! Errors of evidence verification, policies and the software enclave.

use std::path::PathBuf;

use crate::evidence::Platform;

/// Why evidence, a policy or an enclave operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum TeeError {
    /// A file could not be read or written.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// Evidence or collateral that cannot be parsed.
    #[error("{what}: {reason}")]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// Evidence whose signatures, certificate chain or collateral do not
    /// verify.
    #[error("{platform} evidence does not verify: {reason}")]
    Verification {
        /// The platform the evidence claims.
        platform: Platform,
        /// What failed.
        reason: String,
    },
    /// A policy file that cannot be used.
    #[error("{path}: {reason}")]
    Policy {
        /// The policy file.
        path: PathBuf,
        /// What is wrong, with line and column where TOML says so.
        reason: String,
    },
    /// A sealed blob that does not open under this enclave.
    #[error("sealed data does not open: {0}")]
    Unseal(String),
}
