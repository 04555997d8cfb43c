//! The online driver: a session is one bidirectional gRPC stream over mutual
//! TLS. The async side only moves frames; each session's protocol steps run
//! synchronously on a blocking thread, with the same engine and steps as the
//! offline driver.
//!
//! A batch that fails verification is answered with a NACK naming the stream,
//! the batch and the failing positions; the sender resends that stream from
//! that batch (go-back-N), and the receiver ignores batches still in flight
//! until the resent one arrives. A receiver that sees no correct batch within
//! `verify_timeout`, or more than `max_retries` failures of one batch, aborts
//! the session; nothing from a refused batch is ever used.

mod link;
mod provider;
mod relay;
mod requester;
mod streams;

use std::time::Duration;

use sotto_crypto::ids::SessionId;

use crate::error::{DecodeError, EngineError, TableError};

pub use provider::{prepare, serve, PreparedProvider, ProviderConfig};
pub use relay::{serve_relay, Direction, FrameHook, RelayConfig, TARGET_HEADER};
pub use requester::{run, RequesterConfig};

/// Timing and retry limits of a session.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest wait for any frame from the peer.
    pub idle_timeout: Duration,
    /// Longest wait for a correct retransmission after a NACK.
    pub verify_timeout: Duration,
    /// Failures of one batch tolerated before aborting.
    pub max_retries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            verify_timeout: Duration::from_secs(60),
            max_retries: 3,
        }
    }
}

/// An error of an online session. A failed session writes no output.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// The connection to the peer could not be made or broke.
    #[error("peer {peer}: {reason}")]
    Transport {
        /// The peer (name or address).
        peer: String,
        /// What failed, as the transport reports it.
        reason: String,
    },
    /// The peer refused the session at the RPC level (certificate, pinning,
    /// allow list).
    #[error("peer {peer} refused the session: {reason}")]
    Refused {
        /// The peer.
        peer: String,
        /// Its reason.
        reason: String,
    },
    /// The peer aborted the session.
    #[error("peer {peer} aborted the session: {reason}")]
    PeerAborted {
        /// The peer.
        peer: String,
        /// Its reason.
        reason: String,
    },
    /// Nothing arrived in time.
    #[error("peer {peer}: no {waiting_for} within {seconds} s; session aborted")]
    Timeout {
        /// The peer.
        peer: String,
        /// What was awaited.
        waiting_for: String,
        /// The limit that ran out.
        seconds: u64,
    },
    /// The peer went away.
    #[error("peer {peer} closed the connection while this side waited for {waiting_for}; session aborted")]
    Disconnected {
        /// The peer.
        peer: String,
        /// What was awaited.
        waiting_for: String,
    },
    /// The peer went away while this side was sending.
    #[error("peer {peer} closed the connection during {sending}; session aborted")]
    ClosedWhileSending {
        /// The peer.
        peer: String,
        /// What was being sent (with its round).
        sending: String,
    },
    /// A batch kept failing verification.
    #[error("peer {peer}: batch failed verification {attempts} times, giving up: {last}")]
    TooManyRetries {
        /// The peer.
        peer: String,
        /// Failed attempts.
        attempts: u32,
        /// The last failure.
        last: EngineError,
    },
    /// The peer sent a frame that does not belong at this point.
    #[error("peer {peer}: unexpected {found} while waiting for {waiting_for}")]
    Unexpected {
        /// The peer.
        peer: String,
        /// What came.
        found: &'static str,
        /// What was awaited.
        waiting_for: String,
    },
    /// A hello or receipt could not be decoded.
    #[error("peer {peer}: {what}: {source}")]
    Decode {
        /// The peer.
        peer: String,
        /// The message.
        what: &'static str,
        /// Where decoding failed.
        source: DecodeError,
    },
    /// The protocol refused a message.
    #[error("session {sid}: {source}")]
    Protocol {
        /// The session (all zero before the handshake).
        sid: SessionId,
        /// What the engine refused.
        source: EngineError,
    },
    /// The provider accepted this session before (a replayed hello).
    #[error("peer {peer}: {source}")]
    Replayed {
        /// Who sent the hello.
        peer: String,
        /// The earlier acceptance.
        source: crate::error::Replayed,
    },
    /// An output was asked for that the session cannot produce.
    #[error("{reason}; nothing was sent")]
    OutputUnavailable {
        /// Why, and what to drop.
        reason: String,
    },
    /// The provider's configuration cannot work (checked before listening).
    #[error("{0}")]
    Config(String),
    /// The input or an output failed.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The node home failed.
    #[error(transparent)]
    Node(#[from] sotto_node::NodeError),
    /// TLS material is missing or unusable.
    #[error(transparent)]
    Net(#[from] sotto_net::NetError),
}

/// An error inside a streaming step: from the engine, or from the link the
/// step was sending on.
pub(crate) enum StepError {
    /// The engine refused.
    Engine(EngineError),
    /// The link failed.
    Online(OnlineError),
}

impl From<EngineError> for StepError {
    fn from(e: EngineError) -> Self {
        StepError::Engine(e)
    }
}

impl StepError {
    /// The error as the driver reports it.
    pub(crate) fn into_online(self, sid: SessionId) -> OnlineError {
        match self {
            StepError::Engine(source) => OnlineError::Protocol { sid, source },
            StepError::Online(e) => e,
        }
    }
}
