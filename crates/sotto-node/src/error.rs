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
    /// An output path names one of the same command's inputs.
    #[error("{output} is also an input of this command ({input}); writing it would destroy that input: choose another output path")]
    OutputIsInput {
        /// The output as given.
        output: PathBuf,
        /// The input it resolves to.
        input: PathBuf,
    },
    /// An output path lies inside a node home or a CA directory.
    #[error("{output} lies inside {dir}, which holds keys and node state; outputs never go there (choose a path outside it)")]
    OutputInProtectedDir {
        /// The output as given.
        output: PathBuf,
        /// The node home or CA directory.
        dir: PathBuf,
    },
    /// An output file exists and `--force` was not given.
    #[error("{path} already exists; refusing to overwrite it (choose another path, or pass --force to replace it)")]
    OutputExists {
        /// The existing file.
        path: PathBuf,
    },
    /// The directory an output goes into does not exist.
    #[error("cannot write {output}: directory {dir} does not exist (mistyped? create it first)")]
    OutputDirMissing {
        /// The output as given.
        output: PathBuf,
        /// The missing directory.
        dir: PathBuf,
    },
    /// An output path names a directory.
    #[error("{path} is a directory; give a file name for this output")]
    OutputIsDirectory {
        /// The path given.
        path: PathBuf,
    },
    /// Two outputs of one command name the same file.
    #[error(
        "{first} and {second} are the same file; every output of a command needs its own path"
    )]
    OutputsCollide {
        /// The first output.
        first: PathBuf,
        /// The second output, the same file.
        second: PathBuf,
    },
    /// `peer add` was given this node's own profile (or one under its name).
    #[error("{path} is the profile of this node {name:?} itself (or uses its name); pin the peer's profile, the file its `sotto identity export` wrote")]
    OwnProfile {
        /// The profile file.
        path: PathBuf,
        /// This node's name.
        name: String,
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
