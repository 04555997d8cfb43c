//! Errors of the PKI and transport layer.

use std::path::PathBuf;

/// An error issuing certificates or setting up mutual TLS.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A CA directory that should be new already holds a CA.
    #[error("{path} already holds a consortium CA; refusing to overwrite it")]
    CaExists {
        /// The directory.
        path: PathBuf,
    },
    /// The directory is not a CA directory.
    #[error("{path} is not a consortium CA directory (no ca.pem/ca.key); create one with `sotto ca init --dir {path}`")]
    NotACa {
        /// The directory.
        path: PathBuf,
    },
    /// The node has no TLS certificate yet.
    #[error("{path}: no TLS certificate; have the consortium CA issue one with `sotto ca issue --dir CA --home HOME`")]
    NoCertificate {
        /// The missing file.
        path: PathBuf,
    },
    /// Certificate generation or parsing failed.
    #[error("{what}: {reason}")]
    Certificate {
        /// What was being done.
        what: &'static str,
        /// The cause.
        reason: String,
    },
    /// The certificate presented by a peer is unusable.
    #[error("peer certificate refused: {0}")]
    PeerCertificate(String),
    /// The node home failed.
    #[error(transparent)]
    Node(#[from] sotto_node::NodeError),
    /// The crypto layer failed.
    #[error(transparent)]
    Crypto(#[from] sotto_crypto::CryptoError),
}

impl NetError {
    pub(crate) fn cert(what: &'static str) -> impl FnOnce(rcgen::Error) -> NetError {
        move |e| NetError::Certificate {
            what,
            reason: e.to_string(),
        }
    }
}
