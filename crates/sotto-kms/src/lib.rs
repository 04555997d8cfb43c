//! Hierarchical key management (see `shared/specs/kms.md` and `docs/kms.md`).
//!
//! Building blocks, free of I/O:
//! - [`escrow`]: secrets sealed to KMS key pairs with HPKE, kind, owner,
//!   secret id, key id and version bound as associated data; layered (every
//!   key of a chain needed) and mirrored (either copy recovers).
//! - [`hierarchy`]: a business root key per flow and HKDF sub-keys by label.
//! - [`password`]: bundles sealed under an operator password with Argon2id
//!   (at least 64 MiB, 3 passes) and AES-256-GCM; [`bundle`] is what the
//!   root KMS seals that way.
//! - [`audit`]: the hash-chained audit log and its verification.
//! - [`keys`]: key ids, versions and the key ring; [`reply`]: signed public
//!   key statements and signed, sealed recovery answers; [`reply_channel`]:
//!   the ephemeral key agreement those answers travel under; [`limiter`]
//!   (sotto-node's): the per-participant recovery rate; [`engine`]: the KMS's rules.
//!
//! Drivers:
//! - [`db`] (redb) and [`audit_writer`] (group commit) hold the KMS's state;
//!   [`lifecycle`] creates and restores it; [`server`] serves it over gRPC
//!   with mutual TLS.
//! - [`objects`] (object_store: local directory or S3) is the second and
//!   third environment; [`client`] talks to the KMS; [`agent`] is the
//!   participant's side.

pub mod agent;
pub mod audit;
pub mod audit_writer;
pub mod bundle;
pub mod client;
pub mod db;
pub mod engine;
mod error;
pub mod escrow;
pub mod hierarchy;
pub mod keys;
pub mod lifecycle;
pub use sotto_node::limiter;
pub mod objects;
pub mod password;
pub mod reply;
pub mod reply_channel;
pub mod server;

pub use error::KmsError;
