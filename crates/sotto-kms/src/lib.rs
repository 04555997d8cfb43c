//! Hierarchical key management (see `shared/specs/kms.md`): the sans-IO
//! building blocks of the root KMS and the participant agent.
//!
//! - [`escrow`]: secrets sealed to a KMS key pair with HPKE, their kind,
//!   owner, key id and version bound as associated data; layered (every key
//!   of a chain needed) and mirrored (either copy recovers).
//! - [`hierarchy`]: a business root key per flow and HKDF sub-keys by label.
//! - [`password`]: key bundles sealed under an operator password with
//!   Argon2id (at least 64 MiB, 3 passes) and AES-256-GCM.
//! - [`audit`]: the hash-chained audit log and its verification.

pub mod audit;
pub mod escrow;
pub mod hierarchy;
pub mod password;
