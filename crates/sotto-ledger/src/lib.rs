//! The privacy ledger's sans-IO core.
//!
//! The ledger separates four roles: compute enclaves run contracts on
//! encrypted requests and TEE-sign the resulting packets; endorsers check
//! the TEE signature and the signer's membership and endorse packets for
//! named business nodes; a Raft ordering service sequences transactions
//! into hash-chained blocks; business nodes validate every transaction and
//! keep the chain and world state. This crate holds what every role must
//! agree on, with no I/O: the genesis configuration, endorsement policies,
//! the signed messages of one transaction, blocks, and validation as a pure
//! function of the block sequence.

pub mod block;
pub mod clear;
pub mod code;
pub mod compute;
pub mod config;
pub mod contracts;
pub mod endorse;
pub mod genesis;
pub mod group;
pub mod keys;
pub mod memory;
pub mod online;
pub mod packet;
pub mod policy;
pub mod request;
pub mod store;
pub mod tx;
pub mod validate;

pub use code::ValidationCode;
pub use config::LedgerConfig;
pub use genesis::GenesisError;
