//! Errors of the KMS service, its agent and their storage.

use std::path::PathBuf;

/// An error of the root KMS or the participant agent.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// A key id is not `owner/purpose` with valid parts.
    #[error("key id {key_id:?}: {reason}")]
    BadKeyId {
        /// The text given.
        key_id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A key pair that should be new already exists.
    #[error("key {key_id} already exists; add a version with `sotto kms rotate --key {key_id}`")]
    KeyExists {
        /// The key id.
        key_id: String,
    },
    /// No such key pair (or version).
    #[error("unknown key {key_id}{}", version.map(|v| format!(" v{v}")).unwrap_or_default())]
    UnknownKey {
        /// The key id.
        key_id: String,
        /// The version asked for, if any.
        version: Option<u32>,
    },
    /// The key version was retired and decrypts nothing.
    #[error("key {key_id} v{version} is retired and decrypts nothing; escrow again under the newest version (rewrap before retiring)")]
    RetiredKey {
        /// The key id.
        key_id: String,
        /// The retired version.
        version: u32,
    },
    /// The caller does not own what it asked for.
    #[error("{caller} may not use {what}: it belongs to {owner}")]
    NotOwner {
        /// The authenticated caller.
        caller: String,
        /// The owner recorded in the key id or envelope.
        owner: String,
        /// What was asked for.
        what: String,
    },
    /// Only the operator may do this.
    #[error("{caller} is not the KMS operator; operator commands use the KMS's own home")]
    NotOperator {
        /// The authenticated caller.
        caller: String,
    },
    /// A recovery named a reply channel that the KMS does not hold.
    #[error("reply channel {channel} is not open at the KMS (expired, closed for a newer one, or the KMS restarted); open a new channel and ask again")]
    UnknownChannel {
        /// The channel named.
        channel: sotto_crypto::ids::ReplyChannelId,
    },
    /// The participant exceeded its recovery rate.
    #[error("{participant} exceeded its recovery rate ({rate}/s, burst {burst}); retry later")]
    RateLimited {
        /// The participant.
        participant: String,
        /// Sustained recoveries per second.
        rate: u32,
        /// Burst size.
        burst: u32,
    },
    /// An escrow envelope does not open.
    #[error(transparent)]
    Escrow(#[from] crate::escrow::EscrowError),
    /// A password-sealed bundle does not open.
    #[error(transparent)]
    Password(#[from] crate::password::PasswordError),
    /// Input from a file, an object or a peer is malformed.
    #[error("{what}: {reason}")]
    Malformed {
        /// What was being read (file, object, field).
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// An escrow that should be new would overwrite another.
    #[error("secret {secret} is already escrowed at {location} {object}; pass --replace to overwrite it")]
    AlreadyEscrowed {
        /// The secret id.
        secret: String,
        /// The store.
        location: String,
        /// The object.
        object: String,
    },
    /// A secret over the size a recovery can carry.
    #[error("secret {secret} is {len} bytes, over the {max}-byte limit of an escrowed secret; encrypt the data under a key and escrow the key instead")]
    SecretTooLarge {
        /// The secret id.
        secret: String,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The agent is not configured for what was asked.
    #[error("{path}: {missing}; run `sotto secrets init`{hint}")]
    NotConfigured {
        /// The agent's configuration file.
        path: PathBuf,
        /// What is missing.
        missing: &'static str,
        /// The option that provides it, if any.
        hint: &'static str,
    },
    /// The KMS's own state is inconsistent.
    #[error("KMS state is corrupt: {0}")]
    Corrupt(String),
    /// The KMS database failed.
    #[error("KMS database {path}: {reason}")]
    Database {
        /// The file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// A KMS home that should be new already holds a KMS.
    #[error("{path} already exists; this home already holds a KMS (restore into a fresh home)")]
    AlreadyInitialized {
        /// The database file.
        path: PathBuf,
    },
    /// The home holds no KMS yet.
    #[error("{path} does not exist; create the KMS with `sotto kms init` or rebuild it with `sotto kms restore`")]
    NotInitialized {
        /// The database file.
        path: PathBuf,
    },
    /// The third environment holds a bundle this KMS must not replace.
    #[error("backup location {location} already holds {found}; refusing to overwrite it. Give this KMS a location of its own (--backup), or move that object away if it is really garbage")]
    BackupInUse {
        /// The location.
        location: String,
        /// What is there.
        found: String,
    },
    /// The third environment holds a newer bundle of this same KMS: its
    /// database was rolled back, or a second instance of it is running.
    #[error("backup location {location} holds this KMS's bundle at generation {found}, newer than this KMS's state (generation {ours}); a second instance of this KMS is running, or this database was rolled back. Stop, and restore from the newest bundle with `sotto kms restore`")]
    BundleAhead {
        /// The location.
        location: String,
        /// The generation found there.
        found: u64,
        /// This KMS's generation.
        ours: u64,
    },
    /// An object store failed.
    #[error("object store {location}: {reason}")]
    Store {
        /// The location.
        location: String,
        /// What failed.
        reason: String,
    },
    /// The connection to the KMS failed.
    #[error("{peer}: transport: {reason}")]
    Transport {
        /// Who.
        peer: String,
        /// What failed.
        reason: String,
    },
    /// The KMS refused the request.
    #[error("{kms} refused: {reason}")]
    Refused {
        /// The KMS.
        kms: String,
        /// Its reason.
        reason: String,
    },
    /// The KMS's answer failed verification.
    #[error("answer from {kms} refused: {reason}")]
    BadAnswer {
        /// The KMS.
        kms: String,
        /// What failed.
        reason: String,
    },
    /// The node home failed.
    #[error(transparent)]
    Node(#[from] sotto_node::NodeError),
    /// TLS material is unusable.
    #[error(transparent)]
    Net(#[from] sotto_net::NetError),
}
