//! The gRPC driver: the coordinator's server ([`coordinator::serve`]) and the
//! client ([`client::join`]) over mutual TLS. Clients connect out to the
//! coordinator only; the lead's shares for the other clients pass through
//! the coordinator sealed end to end.

pub mod client;
pub mod coordinator;
pub mod frames;

use sotto_net::NetError;
use sotto_node::NodeError;

use crate::error::{ProtocolError, TableError};
use crate::joblog::LogError;

/// An error of an online job, naming the party at fault.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// TLS material or a peer certificate is unusable.
    #[error(transparent)]
    Net(#[from] NetError),
    /// The node home could not be read.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A client table or the query is unusable.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The job log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The connection failed.
    #[error("{peer}: transport: {reason}")]
    Transport {
        /// Who.
        peer: String,
        /// What failed.
        reason: String,
    },
    /// Clients missed a step's deadline or left; the attempt was aborted.
    #[error("job aborted: {}; no result was released", describe_missing(.missing))]
    Missing {
        /// Each missing client and what it failed to do.
        missing: Vec<(String, String)>,
    },
    /// A peer sent a message the protocol refuses.
    #[error("job aborted: {0}; no result was released")]
    Protocol(#[from] ProtocolError),
    /// A peer sent a frame that cannot be decoded.
    #[error("job aborted: {peer} sent {reason}; no result was released")]
    Malformed {
        /// Who.
        peer: String,
        /// What was wrong.
        reason: String,
    },
    /// The other side aborted.
    #[error("{peer} aborted the job: {reason}")]
    Aborted {
        /// Who.
        peer: String,
        /// Why.
        reason: String,
    },
    /// Nothing arrived within the deadline.
    #[error("no message from {peer} within {seconds} s while waiting for {waiting_for}; is the coordinator running and this client in the job?")]
    Timeout {
        /// Who.
        peer: String,
        /// What was awaited.
        waiting_for: &'static str,
        /// The deadline.
        seconds: u64,
    },
    /// The coordinator was asked to stop.
    #[error("the coordinator was shut down before the job finished; no result was released")]
    Shutdown,
    /// The job refers to a client this coordinator has not pinned.
    #[error("client {client} of the job is not a pinned peer of this node: pin its profile with `sotto peer add`")]
    NotPinned {
        /// The client.
        client: String,
    },
    /// This node is not the one the job names for this role.
    #[error("this node is {node}, but the job names {expected} as {role}")]
    WrongRole {
        /// This node.
        node: String,
        /// The job's node for the role.
        expected: String,
        /// The role.
        role: &'static str,
    },
}

fn describe_missing(missing: &[(String, String)]) -> String {
    missing
        .iter()
        .map(|(client, what)| format!("client {client} {what}"))
        .collect::<Vec<_>>()
        .join(", ")
}
