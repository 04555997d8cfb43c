//! Errors of the node home.

use std::path::PathBuf;

/// An error reading, writing or checking a node home or a profile.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A file or directory could not be read or written.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `init` was pointed at a directory that already holds a node.
    #[error("{path} already holds a node home; refusing to overwrite it (choose another --home or remove it yourself)")]
    HomeExists {
        /// The existing home.
        path: PathBuf,
    },
    /// The directory is not a node home.
    #[error("{path} is not a sotto node home (no node.toml); create one with `sotto init --home {path} --name NAME`")]
    NotAHome {
        /// The directory given.
        path: PathBuf,
    },
    /// A file in the home or a profile is malformed.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column where known.
        reason: String,
    },
    /// A node name does not follow the naming rule.
    #[error("invalid node name {name:?}: {reason}")]
    BadName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A profile's signature or one of its proofs of possession is invalid.
    #[error("{path}: profile of {name:?} does not verify: {source}")]
    ProfileInvalid {
        /// The profile file.
        path: PathBuf,
        /// The name the profile claims.
        name: String,
        /// The failing check.
        source: sotto_crypto::CryptoError,
    },
    /// A different profile is already pinned under the same name.
    #[error("a different profile is already pinned as {name:?} (identity {pinned}); remove {path} first if the peer really changed its keys")]
    PeerConflict {
        /// The peer name.
        name: String,
        /// Identity key of the pinned profile.
        pinned: String,
        /// Where the pinned profile is.
        path: PathBuf,
    },
    /// No pinned peer has the given name or identity.
    #[error("no pinned peer {what}; pin it first with `sotto peer add --home HOME PROFILE`")]
    UnknownPeer {
        /// The name or identity key looked for.
        what: String,
    },
}

impl NodeError {
    /// Wraps an I/O error with its path and action.
    pub fn io(path: impl Into<PathBuf>, action: &'static str, source: std::io::Error) -> Self {
        NodeError::Io {
            path: path.into(),
            action,
            source,
        }
    }
}
