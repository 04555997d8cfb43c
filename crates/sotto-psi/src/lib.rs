//! Verifiable ECDH-PSI.
//!
//! - [`engine`]: the sans-IO protocol (handshake, signed batches, matching,
//!   receipts). No files, no sockets.
//! - [`wire`] and [`codec`]: the versioned binary messages.
//! - [`table`]: reading identifier columns from CSV and writing the outputs;
//!   [`keystore`]: the compact store of distinct keys.
//! - [`local`]: both roles in one process (benchmarks, tests).
//! - [`aligned`]: outputs aligned row for row for federated learning.
//! - [`accepted`]: the provider's durable memory of accepted sessions
//!   (replayed hellos are refused).
//! - [`offline`]: the file-based driver: each step reads the previous file and
//!   writes the next, with session state kept in the node home.
//! - [`online`]: the gRPC driver over mutual TLS: `serve` (provider) and
//!   `run` (requester), with retransmission of refused batches.

pub mod accepted;
pub mod aligned;
pub mod codec;
pub mod engine;
pub mod error;
pub mod files;
pub mod keystore;
pub mod local;
pub mod offline;
pub mod online;
pub mod report;
pub mod steps;
pub mod table;
pub mod wire;

pub use error::{DecodeError, EngineError, Rejection, Replayed, TableError};
