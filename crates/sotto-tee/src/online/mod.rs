//! The registration center over gRPC with mutual TLS: the server
//! ([`center::serve`]) around the [`crate::registry::Registry`] engine, its
//! state in redb, and the node's client ([`node::CenterClient`]).

pub mod center;
pub mod node;
pub mod peer;

use sotto_net::NetError;
use sotto_node::NodeError;

/// An error of the online registry.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// TLS material or a certificate is unusable.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The node home failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// Evidence, policy or enclave failure on this side.
    #[error(transparent)]
    Tee(#[from] crate::TeeError),
    /// The registry database failed.
    #[error("registry database {path}: {reason}")]
    Database {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        reason: String,
    },
    /// The connection failed.
    #[error("{peer}: transport: {reason}")]
    Transport {
        /// Who.
        peer: String,
        /// What failed.
        reason: String,
    },
    /// The center refused the request.
    #[error("{center} refused: {reason}")]
    Refused {
        /// The center.
        center: String,
        /// Its reason.
        reason: String,
    },
    /// The center's answer does not verify or decode.
    #[error("the answer from {center} is not valid: {reason}")]
    BadAnswer {
        /// The center.
        center: String,
        /// Why.
        reason: String,
    },
}
